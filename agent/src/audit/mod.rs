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
//! `challenge` is what a touch signs (its record's fields and the head),
//! `writer` is the one thread that writes the file (group commit, fail closed,
//! torn-line repair), `coalesce` counts window hits in memory; `verify`
//! re-checks a log against the keys [`trust`] names, [`journal`] keeps the
//! head in the systemd journal, [`show`](fn@show) prints a log, `sample` builds a real
//! one for tests and fuzz seeds.

mod challenge;
mod coalesce;
pub mod journal;
#[cfg(any(test, feature = "testing"))]
mod sample;
mod show;
pub mod trust;
mod verify;
mod writer;

pub use challenge::{events_for, Approved, ChallengeInputs};
#[cfg(any(test, feature = "testing"))]
pub use sample::sample_log;
pub use show::{show, show_as, ShowFormat};
pub use trust::keys_of;
pub use verify::{verify_file, verify_reader, AuditError, Verified};
pub use writer::AuditFailure;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use touchgate::sync::MutexExt;

use crate::caller::{Asking, Caller};
use crate::fido::key::Assertion;

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
    /// `issued`, `reused`, `denied`, `timed-out`, `failed`, `refused`, `enrolled`,
    /// `imported`, `key-added`, `key-removed`, `key-trusted`, `locked`,
    /// `unlocked`, `repaired`.
    pub event: String,
    pub caller: Option<AuditCaller>,
    pub profile: Option<String>,
    pub service_account: Option<String>,
    pub scopes: Vec<String>,
    /// The lifetime asked for the token, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<u64>,
    /// An ID token's audience (absent for access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
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
    /// `reused`: how many window hits this line stands for, and the Unix
    /// seconds of the first and the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<u64>,
    /// SHA-256 (hex) of the previous line, or [`GENESIS`].
    pub prev: String,
}

/// The open log. Records go to its writer thread (see `writer`); window hits
/// are counted in memory (see `coalesce`).
pub struct AuditLog {
    path: PathBuf,
    shared: Arc<writer::Shared>,
    /// To the writer; taken at [`AuditLog::close`].
    tx: Mutex<Option<Sender<writer::Job>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// Open (or start) the log at `path`, continuing its chain, and start its
    /// writer. A torn last line is cut and a `repaired` record says so before
    /// this returns. A file that cannot be opened is not fatal here: every
    /// record then fails (and is retried) until it can.
    pub fn open(path: &Path) -> std::io::Result<AuditLog> {
        let shared = Arc::new(writer::Shared {
            head: Mutex::new(Head {
                seq: 0,
                hash: GENESIS.to_owned(),
            }),
            sinks: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
            reuses: coalesce::Reuses::default(),
        });
        let w = writer::Writer::open(path, shared.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx))?;
        Ok(AuditLog {
            path: path.to_owned(),
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tell `sink` the head after every durable write from now on.
    pub fn add_sink(&self, sink: Arc<dyn HeadSink>) {
        self.shared.sinks.locked().push(sink);
    }

    /// Where the chain stands now: the seq the next record gets and the hash
    /// of the last line made durable.
    pub fn head(&self) -> Head {
        self.shared.head.locked().clone()
    }

    /// Whether the last write was made durable (window hits are refused
    /// meanwhile, unless the config says otherwise).
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    fn send(&self, job: writer::Job) -> bool {
        match &*self.tx.locked() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    fn stopped(&self) -> AuditFailure {
        AuditFailure {
            path: self.path.clone(),
            error: "the audit writer has stopped".into(),
        }
    }

    /// Write `r` (its `seq` and `prev` are filled in); resolves once it is
    /// durable, or with why it is not. Nothing blocks the caller meanwhile.
    pub fn commit(&self, r: Record) -> impl std::future::Future<Output = Result<(), AuditFailure>> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let sent = self.send(writer::Job::Append(Box::new(r), Some(ack)));
        let stopped = self.stopped();
        async move {
            if !sent {
                return Err(stopped);
            }
            done.await.unwrap_or(Err(stopped))
        }
    }

    /// Queue `r` without waiting for it (a failure is logged by the writer).
    pub fn append(&self, r: Record) {
        if !self.send(writer::Job::Append(Box::new(r), None)) {
            tracing::error!("{}: a record was not written", self.stopped());
        }
    }

    /// Write the window-hit counts now, without waiting.
    pub fn flush_reuse(&self) {
        self.send(writer::Job::Flush(None));
    }

    /// Write the window-hit counts now; resolves once everything queued before is durable.
    pub fn sync(&self) -> impl std::future::Future<Output = Result<(), AuditFailure>> {
        let (ack, done) = tokio::sync::oneshot::channel();
        let sent = self.send(writer::Job::Flush(Some(ack)));
        let stopped = self.stopped();
        async move {
            if !sent {
                return Err(stopped);
            }
            done.await.unwrap_or(Err(stopped))
        }
    }

    /// Count a window hit: no file system call, one short lock. `key` names
    /// the line it belongs to (see [`reuse_key`]); `record` builds that line
    /// the first time in a second.
    pub fn reused(&self, key: u64, now: u64, record: impl FnOnce() -> Record) {
        if self.shared.reuses.note(key, now, record) {
            self.send(writer::Job::Wake);
        }
    }

    /// Write what is pending (window-hit counts too) and stop the writer;
    /// waits for it. Later records fail.
    pub fn close(&self) {
        if let Some(tx) = self.tx.locked().take() {
            let _ = tx.send(writer::Job::Close);
        }
        if let Some(t) = self.thread.locked().take() {
            let _ = t.join();
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// The key of a window hit's line: caller, profile, window, scopes and token
/// (hashed from borrowed parts: nothing allocated).
pub fn reuse_key(
    caller: Asking<'_>,
    window: &str,
    profile: &str,
    scopes: &[String],
    token_expires_at: u64,
) -> u64 {
    let hint = caller.on_behalf_of().map(|h| (h.program.as_deref(), h.pid));
    let caller = caller.peer();
    coalesce::key_of(&[
        &caller.uid,
        &caller.pid,
        &caller.exe,
        &hint,
        &window,
        &profile,
        &scopes,
        &token_expires_at,
    ])
}

pub(crate) fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// The first `n` characters of `s` (a record may hold any text, not only hex).
pub(crate) fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}
