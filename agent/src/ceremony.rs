//! Running one operation on the security key: off the async runtime, with the
//! agent's own touch timeout (which cancels the operation on the key), and a
//! "touch your key" signal when the key has not answered after a moment.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use touchgate::{ErrorCode, ErrorReply};

use crate::config::format_duration;
use crate::key::{KeyError, SecurityKey};

/// How long a key operation may run before we tell the user to touch.
pub const TOUCH_SIGNAL_AFTER: Duration = Duration::from_millis(300);

/// Run `op` on the key. `on_touch_needed` fires once if the key has not
/// answered after [`TOUCH_SIGNAL_AFTER`]. After `timeout` the operation is
/// cancelled on the key and the caller gets a `TouchTimeout` error.
pub async fn run<T, F>(
    key: Arc<dyn SecurityKey>,
    timeout: Duration,
    on_touch_needed: impl FnOnce(),
    op: F,
) -> Result<T, ErrorReply>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecurityKey) -> Result<T, KeyError> + Send + 'static,
{
    run_raw(key, timeout, on_touch_needed, op)
        .await?
        .map_err(key_error)
}

/// Like [`run`], but hands back the key's own error (so a caller can react to
/// `PinRequired`); the outer error is the timeout or a crashed task.
pub async fn run_raw<T, F>(
    key: Arc<dyn SecurityKey>,
    timeout: Duration,
    on_touch_needed: impl FnOnce(),
    op: F,
) -> Result<Result<T, KeyError>, ErrorReply>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecurityKey) -> Result<T, KeyError> + Send + 'static,
{
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
                    Err(e) => Err(ErrorReply::new(ErrorCode::Internal, format!("security key task failed: {e}"))),
                };
            }
            _ = &mut nudge, if signal.is_some() => {
                if let Some(f) = signal.take() { f(); }
            }
            _ = &mut deadline => {
                key.cancel();
                // Wait for the key to give up so the next operation starts clean.
                let _ = task.await;
                return Err(ErrorReply::new(
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

/// Map a key error to the protocol's typed error.
pub fn key_error(e: KeyError) -> ErrorReply {
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
    ErrorReply::new(code, msg)
}

/// A challenge bound to one request: who asks, for what, a nonce and the time.
/// Returns (challenge, clientDataHash = SHA-256(challenge)).
pub fn challenge(purpose: &str, parts: &[&str], now_unix: u64) -> ([u8; 32], [u8; 32]) {
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    let mut h = Sha256::new();
    h.update(b"touchgate/v1/");
    h.update(purpose.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.update(nonce);
    h.update(now_unix.to_be_bytes());
    let challenge: [u8; 32] = h.finalize().into();
    let cdh = crate::key::client_data_hash(&challenge);
    (challenge, cdh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_fresh_and_bound() {
        let (a, ah) = challenge("get-token", &["p"], 1);
        let (b, _) = challenge("get-token", &["p"], 1);
        assert_ne!(a, b, "nonce makes every challenge unique");
        assert_eq!(ah, <[u8; 32]>::from(Sha256::digest(a)));
    }
}
