//! Who may hold one of the agent's connections, and how many.
//!
//! Invariants, so that nobody can keep the owner out:
//! - the peer's uid is checked (by the server, from SO_PEERCRED) before a
//!   connection is admitted: another user's connection never takes a slot;
//! - answering a refused connection takes one of [`REFUSING`] refusal slots
//!   (each held a second or two); with none free the connection is closed
//!   unanswered, so a flood of refusals holds a bounded number of sockets;
//! - one process holds at most half of `agent.max_connections` (at least one),
//!   so a client that leaks or hoards connections leaves room for the others;
//! - a slot is given back when its [`Ticket`] is dropped, whatever way the
//!   connection ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Refusals being answered at once; beyond this, refused connections are just closed.
pub const REFUSING: usize = 16;

/// The connection slots of one agent.
pub struct Admission {
    slots: Arc<Semaphore>,
    max: usize,
    per_process: usize,
    held: Arc<Mutex<HashMap<Option<i32>, usize>>>,
    refusing: Arc<Semaphore>,
}

/// One admitted connection's slot; given back on drop.
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    pid: Option<i32>,
    held: Arc<Mutex<HashMap<Option<i32>, usize>>>,
}

/// A slot for answering one refused connection.
pub type RefusalSlot = OwnedSemaphorePermit;

impl Admission {
    pub fn new(max_connections: usize) -> Admission {
        let max = max_connections.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_process: (max / 2).max(1),
            held: Arc::default(),
            refusing: Arc::new(Semaphore::new(REFUSING)),
        }
    }

    /// Admit a connection of our own user from process `pid`, or say why not
    /// (one line, for an `ErrorCode::Busy` reply).
    pub fn admit(&self, pid: Option<i32>) -> Result<Ticket, String> {
        let mut held = lock(&self.held);
        let mine = held.get(&pid).copied().unwrap_or(0);
        if mine >= self.per_process {
            return Err(format!(
                "this process already holds {mine} of the agent's {} connections (one process may hold half): close some, or raise agent.max_connections",
                self.max
            ));
        }
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            format!(
                "the agent is serving its maximum number of connections ({}): retry in a moment (or raise agent.max_connections)",
                self.max
            )
        })?;
        *held.entry(pid).or_insert(0) += 1;
        Ok(Ticket {
            _slot: slot,
            pid,
            held: self.held.clone(),
        })
    }

    /// A slot to answer a refused connection; `None`: close it unanswered.
    pub fn refusal_slot(&self) -> Option<RefusalSlot> {
        self.refusing.clone().try_acquire_owned().ok()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        if let Some(n) = held.get_mut(&self.pid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                held.remove(&self.pid);
            }
        }
    }
}

/// A poisoned map of counters is still a map of counters.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_holds_at_most_half_and_slots_come_back() {
        let a = Admission::new(4);
        let t1 = a.admit(Some(10)).unwrap();
        let _t2 = a.admit(Some(10)).unwrap();
        let e = a.admit(Some(10)).err().unwrap();
        assert!(
            e.contains("holds 2 of the agent's 4") && e.contains("half"),
            "{e}"
        );
        let _t3 = a.admit(Some(11)).unwrap();
        let _t4 = a.admit(Some(12)).unwrap();
        let e = a.admit(Some(13)).err().unwrap();
        assert!(e.contains("maximum number of connections (4)"), "{e}");
        drop(t1);
        assert!(
            a.admit(Some(13)).is_ok(),
            "a dropped ticket gives its slot back"
        );
        let _again = a.admit(Some(10)).unwrap();
    }

    #[test]
    fn one_slot_is_one_processs_whole_share() {
        let a = Admission::new(1);
        let t = a.admit(None).unwrap();
        assert!(a.admit(Some(1)).is_err());
        drop(t);
        assert!(a.admit(Some(1)).is_ok());
    }

    #[test]
    fn refusal_slots_are_bounded() {
        let a = Admission::new(4);
        let held: Vec<_> = (0..REFUSING).filter_map(|_| a.refusal_slot()).collect();
        assert_eq!(held.len(), REFUSING);
        assert!(a.refusal_slot().is_none());
        drop(held);
        assert!(a.refusal_slot().is_some());
    }
}
