//! Time, behind a trait so tests can move it.

#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;
#[cfg(any(test, feature = "testing"))]
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

#[cfg(any(test, feature = "testing"))]
use touchgate::sync::MutexExt;

pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;

    fn unix_now(&self) -> u64 {
        unix(self.now())
    }
}

pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

#[cfg(any(test, feature = "testing"))]
/// A clock that only moves when told to.
#[derive(Debug)]
pub struct TestClock(Mutex<SystemTime>);

#[cfg(any(test, feature = "testing"))]
impl TestClock {
    pub fn new(start: SystemTime) -> Self {
        TestClock(Mutex::new(start))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.locked() += by;
    }

    pub fn set(&self, to: SystemTime) {
        *self.0.locked() = to;
    }
}

#[cfg(any(test, feature = "testing"))]
impl Default for TestClock {
    fn default() -> Self {
        TestClock::new(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
    }
}

#[cfg(any(test, feature = "testing"))]
impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.locked()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_clock_moves_only_when_told() {
        let c = TestClock::default();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(Duration::from_secs(61));
        assert_eq!(c.unix_now(), unix(t0) + 61);
    }
}
