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

use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use touchgate::{ErrorCode, ErrorReply};

use crate::audit::{AuditCaller, Head, Record};
use crate::caller::Caller;
use crate::config::format_duration;
use crate::key::{KeyError, SecurityKey};
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
/// `gone` resolves (the caller hung up) it is cancelled too.
pub async fn run<T, F>(
    key: Arc<dyn SecurityKey>,
    timeout: Duration,
    on_touch_needed: impl FnOnce(),
    gone: impl Future<Output = ()>,
    op: F,
) -> Result<T, ErrorReply>
where
    T: Send + 'static,
    F: FnOnce(&dyn SecurityKey) -> Result<T, KeyError> + Send + 'static,
{
    run_raw(key, timeout, on_touch_needed, gone, op)
        .await?
        .map_err(key_error)
}

/// Like [`run`], but hands back the key's own error (so a caller can react to
/// `PinRequired`); the outer error is the timeout, the caller gone or a crashed task.
pub async fn run_raw<T, F>(
    key: Arc<dyn SecurityKey>,
    timeout: Duration,
    on_touch_needed: impl FnOnce(),
    gone: impl Future<Output = ()>,
    op: F,
) -> Result<Result<T, KeyError>, ErrorReply>
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
                    Err(e) => Err(ErrorReply::new(ErrorCode::Internal, format!("security key task failed: {e}"))),
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
fn caller_gone() -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Key,
        "the caller hung up while the security key waited: the key operation was cancelled",
    )
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

/// What a challenge is made of: why, a nonce, the time and either free-form
/// parts (v1, kept to verify old logs) or the audit head it follows (v2: the
/// rest is the record's own content, see [`Approved`]). Kept in the audit log
/// so the key's signature can be checked again later.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChallengeInputs {
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<String>,
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Unix seconds.
    pub time: u64,
    /// v2: the audit log's head when the challenge was made; the touch signs the
    /// whole history before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
}

/// What a touch approves, as its audit record says it: the record's own fields
/// that are known before the touch. A v2 challenge is computed from these, so
/// an edit of any of them in the record breaks the key's signature.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Approved {
    pub caller: Option<AuditCaller>,
    pub profile: Option<String>,
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    pub lifetime: Option<u64>,
    /// The sealed credential, or the key a key operation is about.
    pub credential: Option<String>,
}

impl Approved {
    /// A key operation's approval: who asks, and the credential (or key) it is about.
    pub fn by(caller: &Caller, credential: Option<String>) -> Approved {
        Approved {
            caller: Some(caller.into()),
            credential,
            ..Default::default()
        }
    }

    /// What `r`'s touch (made for `purpose`) approved, read back from the record.
    /// For enrolments and added keys the credential is the new key, unknown at
    /// the touch, so it is not bound.
    pub fn of(r: &Record, purpose: &str) -> Approved {
        Approved {
            caller: r.caller.clone(),
            profile: r.profile.clone(),
            service_account: r.service_account.clone(),
            scopes: r.scopes.clone(),
            lifetime: r.lifetime,
            credential: match purpose {
                "replace-vault" | "add-key" => None,
                _ => r.credential.clone(),
            },
        }
    }

    /// A record carrying these fields (event, time and touch still to fill in).
    pub fn record(&self) -> Record {
        Record {
            caller: self.caller.clone(),
            profile: self.profile.clone(),
            service_account: self.service_account.clone(),
            scopes: self.scopes.clone(),
            lifetime: self.lifetime,
            credential: self.credential.clone(),
            ..Default::default()
        }
    }
}

/// The events a touch made for `purpose` may stand in (a token touch may end
/// in a failed mint).
pub fn events_for(purpose: &str) -> &'static [&'static str] {
    match purpose {
        "get-token" => &["issued", "failed"],
        "replace-vault" => &["enrolled"],
        "add-key" => &["key-added"],
        "remove-key" => &["key-removed"],
        "trust-key" => &["key-trusted"],
        "import" => &["imported"],
        "unlock" => &["unlocked"],
        _ => &[],
    }
}

impl ChallengeInputs {
    /// A v1 challenge over free-form parts (for touches no record keeps).
    pub fn fresh(purpose: &str, parts: &[&str], now_unix: u64) -> ChallengeInputs {
        ChallengeInputs {
            purpose: purpose.to_owned(),
            parts: parts.iter().map(|p| (*p).to_owned()).collect(),
            nonce: fresh_nonce(),
            time: now_unix,
            head: None,
        }
    }

    /// A v2 challenge: bound to the audit `head` and (through
    /// [`ChallengeInputs::challenge_for`]) the record's content.
    pub fn bound(purpose: &str, head: Head, now_unix: u64) -> ChallengeInputs {
        ChallengeInputs {
            purpose: purpose.to_owned(),
            parts: Vec::new(),
            nonce: fresh_nonce(),
            time: now_unix,
            head: Some(head),
        }
    }

    /// v1: SHA-256 over a domain tag and every input, each length-prefixed.
    pub fn challenge(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"touchgate/v1");
        for p in std::iter::once(&self.purpose)
            .chain(&self.parts)
            .chain(std::iter::once(&self.nonce))
        {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        h.update(self.time.to_be_bytes());
        h.finalize().into()
    }

    /// The challenge of a recorded touch: v2 over the head and `approved`
    /// (length-prefixed, with its own domain tag), else v1.
    pub fn challenge_for(&self, approved: &Approved) -> [u8; 32] {
        let Some(head) = &self.head else {
            return self.challenge();
        };
        // Field order is fixed by the struct: the same content, the same bytes.
        let content = serde_json::to_vec(approved).unwrap_or_default();
        let mut h = Sha256::new();
        h.update(b"touchgate/v2");
        for p in [
            self.purpose.as_bytes(),
            &content,
            self.nonce.as_bytes(),
            head.hash.as_bytes(),
        ] {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        h.update(self.time.to_be_bytes());
        h.update(head.seq.to_be_bytes());
        h.finalize().into()
    }

    /// What the key signs over after the authenticator data: SHA-256(challenge).
    pub fn client_data_hash_for(&self, approved: &Approved) -> [u8; 32] {
        crate::key::client_data_hash(&self.challenge_for(approved))
    }
}

fn fresh_nonce() -> String {
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    hex::encode(nonce)
}

/// A fresh challenge bound to one request: who asks, for what, a nonce and the time.
/// Returns (challenge, clientDataHash = SHA-256(challenge)).
pub fn challenge(purpose: &str, parts: &[&str], now_unix: u64) -> ([u8; 32], [u8; 32]) {
    let c = ChallengeInputs::fresh(purpose, parts, now_unix);
    let challenge = c.challenge();
    (challenge, crate::key::client_data_hash(&challenge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_inputs_recompute_the_same_challenge() {
        let c = ChallengeInputs::fresh("get-token", &["curl (pid 1)", "p"], 7);
        let again: ChallengeInputs =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again.challenge(), c.challenge());
        let mut other = c.clone();
        other.parts[1] = "q".into();
        assert_ne!(other.challenge(), c.challenge(), "every input is bound");
        let mut later = c.clone();
        later.time += 1;
        assert_ne!(later.challenge(), c.challenge());
    }

    #[test]
    fn a_v2_challenge_binds_the_head_and_every_approved_field() {
        let head = Head {
            seq: 3,
            hash: "ab".repeat(32),
        };
        let c = ChallengeInputs::bound("get-token", head, 7);
        let a = Approved {
            profile: Some("p".into()),
            scopes: vec!["s".into()],
            lifetime: Some(600),
            ..Default::default()
        };
        let again: ChallengeInputs =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(again.challenge_for(&a), c.challenge_for(&a));
        assert_ne!(c.challenge_for(&a), c.challenge(), "not the v1 challenge");
        let mut other = a.clone();
        other.lifetime = Some(601);
        assert_ne!(c.challenge_for(&other), c.challenge_for(&a));
        let mut moved = c.clone();
        moved.head.as_mut().unwrap().seq = 2;
        assert_ne!(moved.challenge_for(&a), c.challenge_for(&a));
        let mut rewritten = c.clone();
        rewritten.head.as_mut().unwrap().hash = "cd".repeat(32);
        assert_ne!(rewritten.challenge_for(&a), c.challenge_for(&a));
        assert_eq!(Approved::of(&a.record(), "get-token"), a);
    }

    #[test]
    fn challenges_are_fresh_and_bound() {
        let (a, ah) = challenge("get-token", &["p"], 1);
        let (b, _) = challenge("get-token", &["p"], 1);
        assert_ne!(a, b, "nonce makes every challenge unique");
        assert_eq!(ah, <[u8; 32]>::from(Sha256::digest(a)));
    }
}
