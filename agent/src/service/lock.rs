//! [`LockState`]: whether the agent is locked, and why; how many times it was
//! locked; when a token was last asked for; whether the key was plugged in.
//!
//! Its state is private: the agent locks and unlocks through it, and an
//! issuance notes [`LockState::count`] before its touch and mint and asks
//! [`LockState::still_unlocked`] after, so a lock that came and went
//! meanwhile still stops the token. Invariant: the reason is set before the
//! count moves, so an issuance that noted the old count before checking the
//! reason sees one or the other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;
use touchgate::sync::MutexExt;
use touchgate::ErrorCode;

use crate::service::error::AgentError;

pub(crate) struct LockState {
    /// Why the agent is locked, when it is.
    why: Mutex<Option<String>>,
    /// How many times the agent was locked; a lock also ends a pending mint at once.
    count: watch::Sender<u64>,
    /// When a client last asked for a token (for the idle lock).
    last_use: Mutex<SystemTime>,
    /// Whether the key was seen plugged in at the last check.
    key_was_present: AtomicBool,
}

impl LockState {
    /// Unlocked, last used `now`.
    pub(crate) fn new(now: SystemTime) -> LockState {
        LockState {
            why: Mutex::new(None),
            count: watch::Sender::new(0),
            last_use: Mutex::new(now),
            key_was_present: AtomicBool::new(false),
        }
    }

    /// Lock for `why` (again, if locked already: the count still moves).
    pub(crate) fn lock(&self, why: &str) {
        *self.why.locked() = Some(why.to_owned());
        self.count.send_modify(|n| *n += 1);
    }

    pub(crate) fn unlock(&self) {
        *self.why.locked() = None;
    }

    /// Why the agent is locked, if it is.
    pub(crate) fn reason(&self) -> Option<String> {
        self.why.locked().clone()
    }

    pub(crate) fn is_locked(&self) -> bool {
        self.why.locked().is_some()
    }

    /// The error every token request gets while locked.
    pub(crate) fn check(&self) -> Result<(), AgentError> {
        match &*self.why.locked() {
            None => Ok(()),
            Some(why) => Err(AgentError::new(
                ErrorCode::Locked,
                format!("the agent is locked ({why}): run touchgate unlock and touch your key"),
            )),
        }
    }

    /// The lock count, to hand to [`LockState::still_unlocked`] after a touch
    /// or a mint. Noted before checking that the agent is unlocked.
    pub(crate) fn count(&self) -> Result<u64, AgentError> {
        let n = *self.count.borrow();
        self.check()?;
        Ok(n)
    }

    /// Whether nothing locked the agent since [`LockState::count`] said `since`.
    pub(crate) fn still_unlocked(&self, since: u64) -> Result<(), AgentError> {
        self.check()?;
        if *self.count.borrow() != since {
            return Err(locked_meanwhile());
        }
        Ok(())
    }

    /// Resolves once the agent is locked after [`LockState::count`] said
    /// `since`, with the error for the caller.
    pub(crate) async fn locked_since(&self, since: u64) -> AgentError {
        let mut rx = self.count.subscribe();
        // The sender lives as long as `self`: it cannot close while we borrow it.
        let _ = rx.wait_for(|n| *n != since).await;
        self.check().err().unwrap_or_else(locked_meanwhile)
    }

    /// Note a token request (for the idle lock).
    pub(crate) fn note_use(&self, now: SystemTime) {
        *self.last_use.locked() = now;
    }

    /// When a token was last asked for.
    pub(crate) fn last_use(&self) -> SystemTime {
        *self.last_use.locked()
    }

    /// Note whether the key is plugged in now; true when it was and is gone.
    pub(crate) fn key_removed(&self, present: bool) -> bool {
        self.key_was_present.swap(present, Ordering::SeqCst) && !present
    }
}

fn locked_meanwhile() -> AgentError {
    AgentError::new(
        ErrorCode::Locked,
        "the agent was locked while this token was being made, so it was not handed out: run the command again",
    )
}
