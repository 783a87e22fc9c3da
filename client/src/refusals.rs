//! Logging refused peers without letting a flood of them flood the log: the
//! first refusal of a uid is logged, then at most one line per window with the
//! count since the last line. Shared by the agent (Unix socket) and the shim
//! (loopback TCP), which both refuse every uid but their own.
//!
//! Invariant: state is one entry per distinct refused uid; a poisoned lock is
//! still a usable map (it holds counters only).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Counts refusals per uid; says when one is worth a log line.
#[derive(Debug)]
pub struct RefusalLog {
    window: Duration,
    seen: Mutex<HashMap<u32, Seen>>,
}

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    since: u64,
}

impl RefusalLog {
    /// At most one line per `window` per uid after the first.
    pub fn new(window: Duration) -> RefusalLog {
        RefusalLog {
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Count one refusal of `uid`. `Some(n)`: log a line now, for the `n`
    /// refusals since the last line (1 for the first refusal of that uid).
    pub fn note(&self, uid: u32) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.lock();
        match seen.get_mut(&uid) {
            None => {
                seen.insert(
                    uid,
                    Seen {
                        logged_at: now,
                        since: 0,
                    },
                );
                Some(1)
            }
            Some(s) => {
                s.since += 1;
                if now.duration_since(s.logged_at) < self.window {
                    return None;
                }
                s.logged_at = now;
                Some(std::mem::take(&mut s.since))
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u32, Seen>> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_refusal_is_logged_then_counted_per_window() {
        let log = RefusalLog::new(Duration::from_secs(3600));
        assert_eq!(log.note(7), Some(1));
        assert_eq!(log.note(7), None);
        assert_eq!(log.note(7), None);
        assert_eq!(log.note(8), Some(1), "each uid on its own");
        let log = RefusalLog::new(Duration::ZERO);
        assert_eq!(log.note(7), Some(1));
        assert_eq!(log.note(7), Some(1));
        assert_eq!(log.note(7), Some(1));
    }
}
