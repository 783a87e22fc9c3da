//! Window hits ("reused"), counted in memory and written as one line per
//! (caller, profile, window, scopes, token) per flush, with a count and the
//! first and last time.
//!
//! Invariants: noting a hit takes one short lock on an in-memory map and
//! makes no system call; it allocates only for the first hit of a key since
//! the last flush (the template record). The writer thread drains the map
//! a second after the first hit since the last drain, and at every flush barrier (lock, reload, shutdown), so a
//! kill -9 loses at most the last second of counts — never an issuance, which
//! is written on its own and waited for.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use touchgate::sync::MutexExt;

use super::Record;

/// Hits since the last flush, keyed by a hash of what makes a line.
#[derive(Default)]
pub(super) struct Reuses {
    map: Mutex<HashMap<u64, Tally>>,
}

struct Tally {
    /// The line to write, but for its count and times.
    record: Record,
    count: u64,
    first: u64,
    last: u64,
}

/// What makes one reuse line, borrowed (hashing it allocates nothing).
pub(super) fn key_of(parts: &[&dyn HashPart]) -> u64 {
    // Fixed keys: the hash only groups hits within one process.
    let mut h = std::hash::DefaultHasher::new();
    for p in parts {
        p.feed(&mut h);
    }
    h.finish()
}

/// A piece of a reuse key.
pub(super) trait HashPart {
    fn feed(&self, h: &mut std::hash::DefaultHasher);
}

impl<T: Hash> HashPart for T {
    fn feed(&self, h: &mut std::hash::DefaultHasher) {
        self.hash(h);
    }
}

impl Reuses {
    /// Count a hit at `now` (Unix seconds); `record` builds the line the first
    /// time. True for the first hit since the last drain (the writer is to be woken).
    pub(super) fn note(&self, key: u64, now: u64, record: impl FnOnce() -> Record) -> bool {
        let mut map = self.map.locked();
        let first = map.is_empty();
        let t = map.entry(key).or_insert_with(|| Tally {
            record: record(),
            count: 0,
            first: now,
            last: now,
        });
        t.count += 1;
        t.last = t.last.max(now);
        first
    }

    /// Every line counted since the last drain, oldest first.
    pub(super) fn drain(&self) -> Vec<Record> {
        let tallies: Vec<Tally> = {
            let mut map = self.map.locked();
            if map.is_empty() {
                return Vec::new();
            }
            map.drain().map(|(_, t)| t).collect()
        };
        let mut out: Vec<Record> = tallies
            .into_iter()
            .map(|t| Record {
                time: t.last,
                count: Some(t.count),
                first: Some(t.first),
                last: Some(t.last),
                ..t.record
            })
            .collect();
        out.sort_by_key(|r| r.first);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(profile: &str) -> Record {
        Record {
            event: "reused".into(),
            profile: Some(profile.into()),
            ..Default::default()
        }
    }

    #[test]
    fn hits_of_one_key_make_one_line_with_count_and_times() {
        let r = Reuses::default();
        let a = key_of(&[&"alice", &"inference"]);
        let b = key_of(&[&"alice", &"runner"]);
        for t in 0..1000u64 {
            r.note(a, 100 + t / 400, || rec("inference"));
        }
        r.note(b, 101, || rec("runner"));
        let lines = r.drain();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].profile.as_deref(), Some("inference"));
        assert_eq!(
            (lines[0].count, lines[0].first, lines[0].last),
            (Some(1000), Some(100), Some(102))
        );
        assert_eq!(lines[1].count, Some(1));
        assert!(r.drain().is_empty(), "a drain empties the map");
    }
}
