//! What a touch's challenge is made of, kept in its audit record so the key's
//! signature can be checked again later.
//!
//! v2 (`touchgate/v2`): purpose, nonce, time, the log's head just before the
//! touch, and the record's own fields known before the touch ([`Approved`]) —
//! read back from the record at verification, never stored twice, so editing
//! any of them breaks the signature. v1 (`touchgate/v1`, free-form parts) is
//! kept only to verify old logs and for touches no record keeps.

use sha2::{Digest, Sha256};

use super::{AuditCaller, Head, Record};
use crate::caller::Caller;

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
    /// An ID token's audience. Absent (and so outside the challenge) for access
    /// tokens, whose challenges stay what they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
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
            audience: r.audience.clone(),
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
            audience: self.audience.clone(),
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
        crate::fido::key::client_data_hash(&self.challenge_for(approved))
    }
}

fn fresh_nonce() -> String {
    let mut nonce = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut nonce);
    hex::encode(nonce)
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
}
