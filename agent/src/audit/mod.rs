//! The audit log: one JSON line per decision, each carrying the SHA-256 of the
//! line before it, so that an edited, deleted or reordered line breaks the
//! chain. Records of touches keep the assertion (credential, authenticator
//! data, signature) and the challenge inputs, so every signature can be
//! checked again with the enrolled public keys ([`verify_file`]).
//!
//! Never in a record: a token, a credential, a PIN, an hmac output — tokens
//! appear only as `sha256:` fingerprints.

//!
//! Layout: this file holds the record types and the open log ([`AuditLog`]);
//! [`challenge`] is what a touch signs (its record's fields and the head),
//! [`verify`] re-checks a log against the keys [`trust`] names, [`journal`]
//! keeps the head in the systemd journal, [`show`] prints a log, [`sample`]
//! builds a real one for tests and fuzz seeds.

mod challenge;
pub mod journal;
mod sample;
mod show;
pub mod trust;
mod verify;

pub use challenge::{events_for, Approved, ChallengeInputs};
pub use sample::sample_log;
pub use show::{show, show_as, ShowFormat};
pub use trust::keys_of;
pub use verify::{verify_file, verify_reader, AuditError, Verified};

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use touchgate::sync::MutexExt;

use crate::caller::Caller;
use crate::key::Assertion;

/// The hash that stands before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCaller {
    pub uid: u32,
    pub pid: Option<u32>,
    pub exe: Option<String>,
    /// The program a front end (the shim) asked for, as `name (pid N)`.
    pub on_behalf_of: Option<String>,
}

impl From<&Caller> for AuditCaller {
    fn from(c: &Caller) -> Self {
        AuditCaller {
            uid: c.uid,
            pid: c.pid,
            exe: c.exe.as_ref().map(|p| p.display().to_string()),
            on_behalf_of: c.on_behalf_of.as_ref().map(|h| {
                let prog = h.program.as_deref().unwrap_or("unknown program");
                match h.pid {
                    Some(p) => format!("{prog} (pid {p})"),
                    None => prog.to_owned(),
                }
            }),
        }
    }
}

/// A touch: what the key signed and what it signed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TouchEvidence {
    /// Credential id, hex.
    pub credential: String,
    /// Authenticator data, hex.
    pub auth_data: String,
    /// DER ECDSA signature over authData ‖ SHA-256(challenge), hex.
    pub signature: String,
    pub challenge: ChallengeInputs,
}

impl TouchEvidence {
    pub fn new(a: &Assertion, challenge: ChallengeInputs) -> TouchEvidence {
        TouchEvidence {
            credential: hex::encode(&a.credential_id),
            auth_data: hex::encode(&a.auth_data),
            signature: hex::encode(&a.signature),
            challenge,
        }
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Record {
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// `issued`, `reused`, `denied`, `timed-out`, `failed`, `enrolled`, `imported`,
    /// `key-added`, `key-removed`, `key-trusted`, `locked`.
    pub event: String,
    pub caller: Option<AuditCaller>,
    pub profile: Option<String>,
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    /// The lifetime asked for the token, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
    /// `sha256:` fingerprint of the token handed out.
    pub token: Option<String>,
    pub expires_at: Option<u64>,
    pub touch: Option<TouchEvidence>,
    /// For enrolled/added keys: the credential's public key (SEC1, hex), so the log
    /// can be verified on its own.
    pub public_key: Option<String>,
    pub credential: Option<String>,
    /// One-line reason for a refusal or failure.
    pub reason: Option<String>,
    /// SHA-256 (hex) of the previous line, or [`GENESIS`].
    pub prev: String,
}

/// The open log: appends records and keeps the chain.
pub struct AuditLog {
    path: PathBuf,
    /// (next seq, hash of the last line)
    state: Mutex<(u64, String)>,
    /// Told the new head after each durable write (e.g. the system journal).
    sinks: Mutex<Vec<std::sync::Arc<dyn HeadSink>>>,
}

/// Somewhere besides the file that hears where the chain stands after each
/// durable write — a record the user cannot rewrite (the system journal).
pub trait HeadSink: Send + Sync {
    fn durable(&self, head: &Head);
}

/// Where the chain stands: the seq the next record gets and the hash of the
/// line before it ([`GENESIS`] for an empty log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

impl AuditLog {
    /// Open (or start) the log at `path`, continuing its chain.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let mut seq = 0;
        let mut last = GENESIS.to_owned();
        if let Ok(f) = std::fs::File::open(path) {
            for line in BufReader::new(f).lines() {
                let line = line?;
                if line.is_empty() {
                    continue;
                }
                last = line_hash(&line);
                seq = serde_json::from_str::<Record>(&line)
                    .map(|r| r.seq + 1)
                    .unwrap_or(seq + 1);
            }
        }
        Ok(AuditLog {
            path: path.to_owned(),
            state: Mutex::new((seq, last)),
            sinks: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tell `sink` the head after every durable write from now on.
    pub fn add_sink(&self, sink: std::sync::Arc<dyn HeadSink>) {
        self.sinks.locked().push(sink);
    }

    /// Where the chain stands now (the next record follows this head).
    pub fn head(&self) -> Head {
        let st = self.state.locked();
        Head {
            seq: st.0,
            hash: st.1.clone(),
        }
    }

    /// Append `r` (its `seq` and `prev` are filled in). Failures are logged, not fatal:
    /// a full disk must not stop the agent from refusing things.
    pub fn append(&self, mut r: Record) {
        let mut st = self.state.locked();
        r.seq = st.0;
        r.prev = st.1.clone();
        let line = match serde_json::to_string(&r) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot encode an audit record: {e}");
                return;
            }
        };
        let res = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent() {
                crate::state_dir::create(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(format!("{line}\n").as_bytes())?;
            f.sync_data()
        })();
        match res {
            Ok(()) => {
                st.0 += 1;
                st.1 = line_hash(&line);
                let head = Head {
                    seq: st.0,
                    hash: st.1.clone(),
                };
                for sink in self.sinks.locked().iter() {
                    sink.durable(&head);
                }
                tracing::info!(
                    audit_seq = r.seq,
                    event = %r.event,
                    profile = r.profile.as_deref().unwrap_or("-"),
                    token = r.token.as_deref().unwrap_or("-"),
                    "audit"
                );
            }
            Err(e) => tracing::error!(
                "cannot append to the audit log {}: {e}",
                self.path.display()
            ),
        }
    }
}

pub(crate) fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// The first `n` characters of `s` (a record may hold any text, not only hex).
pub(crate) fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}
