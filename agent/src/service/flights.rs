//! Single flight: concurrent asks for the same (window, profile, scopes)
//! share one [`Flight`] — one touch and one upstream mint, whose result every
//! waiter gets.
//!
//! [`Flights`] owns the map of flights in progress; its state is private.
//! Invariants: callers join under the map's lock and their count is read
//! under it too, so a flight every caller has left is out of the map before
//! anyone can join it, and whoever asks next starts a flight (and a touch) of
//! their own; a flight is only ever taken out by its own key and identity, so
//! a newer flight under the same key stays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use touchgate::sync::MutexExt;
use touchgate::TokenReply;

use crate::service::error::AgentError;
use crate::service::session::CacheKey;

/// A flight's result once it has one.
pub(super) type Outcome = Option<Result<TokenReply, AgentError>>;

/// One issuance in progress, shared by every caller that asks for the same
/// thing meanwhile: each subscribes ([`Flights::join_or_start`]). Its touch
/// is cancelled on the key once every one of them has hung up.
pub(super) struct Flight {
    pub(super) result: watch::Sender<Outcome>,
    /// The touch prompt, once the key waits for a touch.
    pub(super) touch: watch::Sender<Option<String>>,
}

/// One caller's place in a [`Flight`]; dropping it is leaving (see
/// [`Flights::leave`] for leaving early).
pub(super) struct Joined {
    pub(super) result: watch::Receiver<Outcome>,
    pub(super) touch: watch::Receiver<Option<String>>,
    flight: Arc<Flight>,
}

impl Flight {
    fn join(self: &Arc<Self>) -> Joined {
        Joined {
            result: self.result.subscribe(),
            touch: self.touch.subscribe(),
            flight: self.clone(),
        }
    }
}

/// The flights in progress, by key.
#[derive(Default)]
pub(super) struct Flights {
    map: Mutex<HashMap<CacheKey, Arc<Flight>>>,
}

impl Flights {
    /// Join the flight for `key`, or start one: then the new flight comes
    /// back too, for its task to run.
    pub(super) fn join_or_start(&self, key: &CacheKey) -> (Joined, Option<Arc<Flight>>) {
        let mut map = self.map.locked();
        if let Some(f) = map.get(key) {
            return (f.join(), None);
        }
        let flight = Arc::new(Flight {
            result: watch::Sender::new(None),
            touch: watch::Sender::new(None),
        });
        let joined = flight.join();
        map.insert(key.clone(), flight.clone());
        (joined, Some(flight))
    }

    /// A caller leaves its flight before the result: the last to leave takes
    /// the flight out of the map at once, so whoever asks next starts a flight
    /// (and a touch) of their own rather than joining one being cancelled.
    pub(super) fn leave(&self, key: &CacheKey, joined: Joined) {
        let flight = joined.flight.clone();
        let mut map = self.map.locked();
        drop(joined);
        if flight.result.receiver_count() == 0 {
            remove_if_same(&mut map, key, &flight);
        }
    }

    /// Take `flight` out of the map (if it is still there: a flight everyone
    /// left is taken out early, and another may stand in its place).
    pub(super) fn finish(&self, key: &CacheKey, flight: &Arc<Flight>) {
        remove_if_same(&mut self.map.locked(), key, flight);
    }

    /// Resolves once every caller has left `flight`; it is then out of the map.
    pub(super) async fn abandoned(&self, key: &CacheKey, flight: &Arc<Flight>) {
        loop {
            flight.result.closed().await;
            let mut map = self.map.locked();
            if flight.result.receiver_count() == 0 {
                remove_if_same(&mut map, key, flight);
                return;
            }
        }
    }
}

fn remove_if_same(map: &mut HashMap<CacheKey, Arc<Flight>>, key: &CacheKey, flight: &Arc<Flight>) {
    if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
        map.remove(key);
    }
}
