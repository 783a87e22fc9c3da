//! Retrying Google when it fails transiently: bounded attempts, exponential
//! backoff with full jitter, `Retry-After` honoured, all under one deadline per
//! mint. The waiting itself is a [`Sleeper`], so tests can see the delays
//! asked for without spending them.

use std::fmt;
#[cfg(any(test, feature = "testing"))]
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;

use super::BoxFuture;

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts per call (at least 1).
    pub max_attempts: u32,
    /// One mint, every attempt and wait included, must finish within this.
    pub deadline: Duration,
    /// First backoff ceiling; doubles each attempt up to `cap`.
    pub base: Duration,
    pub cap: Duration,
}

impl Retry {
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(20);
    pub const DEFAULT_BASE: Duration = Duration::from_millis(200);
    pub const DEFAULT_CAP: Duration = Duration::from_secs(2);

    /// The wait before attempt `next` (2, 3, …) after a failure without
    /// `Retry-After`: uniform in `[0, min(cap, base · 2^(next-2))]` ("full jitter").
    pub fn backoff(&self, next: u32) -> Duration {
        let exp = next.saturating_sub(2).min(20);
        let ceiling = self.base.saturating_mul(1 << exp).min(self.cap);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=ms))
    }
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            deadline: Self::DEFAULT_DEADLINE,
            base: Self::DEFAULT_BASE,
            cap: Self::DEFAULT_CAP,
        }
    }
}

/// Waits between attempts.
pub trait Sleeper: Send + Sync + fmt::Debug {
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()>;
}

/// Really waits (tokio's timer).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(delay))
    }
}

#[cfg(any(test, feature = "testing"))]
/// For tests: returns at once and remembers every delay asked for.
#[derive(Debug, Default, Clone)]
pub struct RecordingSleeper {
    delays: Arc<Mutex<Vec<Duration>>>,
}

#[cfg(any(test, feature = "testing"))]
impl RecordingSleeper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The delays asked for so far, oldest first.
    pub fn delays(&self) -> Vec<Duration> {
        self.delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(any(test, feature = "testing"))]
impl Sleeper for RecordingSleeper {
    fn sleep(&self, delay: Duration) -> BoxFuture<'static, ()> {
        self.delays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(delay);
        Box::pin(std::future::ready(()))
    }
}

/// `Retry-After` as Google sends it: delay-seconds, or an HTTP date (relative to
/// `now`, Unix seconds).
pub fn parse_retry_after(value: &str, now_unix: u64) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let format = time::format_description::well_known::Rfc2822;
    let at = time::OffsetDateTime::parse(v, &format).ok()?;
    let at = u64::try_from(at.unix_timestamp()).ok()?;
    Some(Duration::from_secs(at.saturating_sub(now_unix)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_within_a_doubling_capped_ceiling() {
        let r = Retry::default();
        for _ in 0..200 {
            assert!(r.backoff(2) <= Duration::from_millis(200));
            assert!(r.backoff(3) <= Duration::from_millis(400));
            assert!(r.backoff(4) <= Duration::from_millis(800));
            assert!(r.backoff(9) <= Duration::from_secs(2));
            assert!(r.backoff(u32::MAX) <= Duration::from_secs(2));
        }
        // Jitter: not always the ceiling.
        let distinct: std::collections::HashSet<_> = (0..50).map(|_| r.backoff(9)).collect();
        assert!(distinct.len() > 1);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        // Sun, 06 Nov 1994 08:49:37 GMT = 784111777.
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_770),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", 784_111_800),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[tokio::test]
    async fn recording_sleeper_does_not_wait() {
        let s = RecordingSleeper::new();
        let started = std::time::Instant::now();
        s.sleep(Duration::from_secs(3600)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(s.delays(), vec![Duration::from_secs(3600)]);
    }
}
