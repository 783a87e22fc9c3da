//! Running one operation on the security key: off the async runtime, with the
//! agent's own touch timeout (which cancels the operation on the key), a
//! "touch your key" signal when the key has not answered after a moment, and
//! cancelled on the key as soon as everyone who waits for it has hung up (so
//! the user's next touch never goes to an operation nobody waits for).
//!
//! An operation is over, on the key too, before [`run_raw`] returns: the next
//! one starts clean.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use touchgate::ErrorCode;

use crate::audit::ChallengeInputs;
use crate::config::format_duration;
use crate::fido::key::{KeyError, SecurityKey};
use crate::service::error::AgentError;
use crate::upstream::BoxFuture;

/// How long a key operation may run before we tell the user to touch.
pub const TOUCH_SIGNAL_AFTER: Duration = Duration::from_millis(300);

/// How often a cancel is sent again until the operation has ended: a cancel
/// that arrives before the operation reached the key is lost.
const CANCEL_AGAIN_AFTER: Duration = Duration::from_millis(50);

/// Who waits for a key operation: told once when the key wants a touch, and
/// able to say when every one of them has hung up.
#[derive(Clone)]
pub struct Waiters {
    touch_needed: Arc<dyn Fn(String) + Send + Sync>,
    gone: Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
}

impl Waiters {
    /// `gone()` resolves once no one waits any more (it may be called many times).
    pub fn new(
        touch_needed: impl Fn(String) + Send + Sync + 'static,
        gone: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
    ) -> Waiters {
        Waiters {
            touch_needed: Arc::new(touch_needed),
            gone: Arc::new(gone),
        }
    }

    pub fn touch_needed(&self, prompt: String) {
        (self.touch_needed)(prompt)
    }

    /// Resolves once every waiter has hung up.
    pub fn gone(&self) -> BoxFuture<'static, ()> {
        (self.gone)()
    }
}

/// Run `op` on the key. `on_touch_needed` fires once if the key has not
/// answered after [`TOUCH_SIGNAL_AFTER`]. After `timeout` the operation is
/// cancelled on the key and the caller gets a `TouchTimeout` error; once
/// `gone` resolves (the caller hung up) it is cancelled too. Hands back the
/// key's own error (so a caller can react to `PinRequired`); the outer error
/// is the timeout, the caller gone or a crashed task.
pub async fn run_raw<T, F>(
    key: Arc<dyn SecurityKey>,
    timeout: Duration,
    on_touch_needed: impl FnOnce(),
    gone: impl Future<Output = ()>,
    op: F,
) -> Result<Result<T, KeyError>, AgentError>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecurityKey) -> Result<T, KeyError> + Send + 'static,
{
    tokio::pin!(gone);
    // Gone already (e.g. while waiting for the vault): do not start.
    tokio::select! {
        biased;
        () = &mut gone => return Err(caller_gone()),
        () = std::future::ready(()) => {}
    }
    let k = key.clone();
    let mut task = tokio::task::spawn_blocking(move || op(k.as_ref()));
    let mut signal = Some(on_touch_needed);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let nudge = tokio::time::sleep(TOUCH_SIGNAL_AFTER.min(timeout));
    tokio::pin!(nudge);
    loop {
        tokio::select! {
            res = &mut task => {
                return match res {
                    Ok(r) => Ok(r),
                    Err(e) => Err(AgentError::new(ErrorCode::Internal, format!("security key task failed: {e}"))),
                };
            }
            _ = &mut nudge, if signal.is_some() => {
                if let Some(f) = signal.take() { f(); }
            }
            () = &mut gone => {
                tracing::info!("the caller hung up: cancelling its operation on the security key");
                cancel_until_done(key.as_ref(), &mut task).await;
                return Err(caller_gone());
            }
            _ = &mut deadline => {
                cancel_until_done(key.as_ref(), &mut task).await;
                return Err(AgentError::new(
                    ErrorCode::TouchTimeout,
                    format!(
                        "no touch on the security key within {}: run the command again and touch the key when it blinks (or raise agent.touch_timeout)",
                        format_duration(timeout)
                    ),
                ));
            }
        }
    }
}

/// Cancel the operation on the key, again and again, until it has ended.
async fn cancel_until_done<T>(key: &dyn SecurityKey, task: &mut JoinHandle<T>) {
    loop {
        key.cancel();
        tokio::select! {
            _ = &mut *task => return,
            () = tokio::time::sleep(CANCEL_AGAIN_AFTER) => {}
        }
    }
}

/// The error of an operation whose caller hung up (no one reads it; the audit log does).
fn caller_gone() -> AgentError {
    AgentError::new(
        ErrorCode::Key,
        "the caller hung up while the security key waited: the key operation was cancelled",
    )
}

/// Map a key error to the protocol's typed error.
pub fn key_error(e: KeyError) -> AgentError {
    let code = match e {
        KeyError::TouchDenied => ErrorCode::TouchDenied,
        KeyError::Cancelled => ErrorCode::TouchTimeout,
        KeyError::NoCredentials => ErrorCode::NotEnrolled,
        KeyError::PinRequired | KeyError::PinInvalid { .. } | KeyError::PinBlocked => {
            ErrorCode::Pin
        }
        _ => ErrorCode::Key,
    };
    let msg = match &e {
        KeyError::TouchDenied => {
            "the touch was refused on the security key: nothing was issued; run the command again to retry".to_string()
        }
        KeyError::NoCredentials => {
            "no plugged-in security key holds an enrolled touchgate credential: plug in an enrolled key (see touchgate keys list), or run touchgate enroll --force".to_string()
        }
        KeyError::PinInvalid { retries } => format!(
            "wrong PIN for the security key ({retries} tries left): run the command again with the right PIN"
        ),
        other => other.to_string(),
    };
    AgentError::new(code, msg)
}

/// A fresh challenge bound to one request: who asks, for what, a nonce and the time.
/// Returns (challenge, clientDataHash = SHA-256(challenge)).
pub fn challenge(purpose: &str, parts: &[&str], now_unix: u64) -> ([u8; 32], [u8; 32]) {
    let c = ChallengeInputs::fresh(purpose, parts, now_unix);
    let challenge = c.challenge();
    (challenge, crate::fido::key::client_data_hash(&challenge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn challenges_are_fresh_and_bound() {
        let (a, ah) = challenge("get-token", &["p"], 1);
        let (b, _) = challenge("get-token", &["p"], 1);
        assert_ne!(a, b, "nonce makes every challenge unique");
        assert_eq!(ah, <[u8; 32]>::from(Sha256::digest(a)));
    }
}
