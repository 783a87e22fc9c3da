//! The audit log: one JSON line per decision, each carrying the SHA-256 of the
//! line before it, so that an edited, deleted or reordered line breaks the
//! chain. Records of touches keep the assertion (credential, authenticator
//! data, signature) and the challenge inputs, so every signature can be
//! checked again with the enrolled public keys ([`verify_file`]).
//!
//! Never in a record: a token, a credential, a PIN, an hmac output — tokens
//! appear only as `sha256:` fingerprints.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use touchgate::sync::MutexExt;

use crate::caller::Caller;
use crate::ceremony::ChallengeInputs;
use crate::key::Assertion;
use crate::verify::{signature_holds_sec1, VerifyError};

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
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// Why a log does not verify: the line (1-based) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log {path} line {line}: {what}")]
pub struct AuditError {
    pub path: String,
    pub line: usize,
    pub what: String,
}

/// Re-check the whole chain and every touch signature. `keys` maps credential id
/// (hex) to its SEC1 public key; keys enrolled in the log itself are added as
/// they appear. Returns the number of records.
pub fn verify_file(path: &Path, keys: &HashMap<String, Vec<u8>>) -> Result<usize, AuditError> {
    let f = std::fs::File::open(path).map_err(|e| AuditError {
        path: path.display().to_string(),
        line: 0,
        what: format!("cannot open: {e}"),
    })?;
    verify_reader(BufReader::new(f), &path.display().to_string(), keys)
}

/// [`verify_file`] on a log already open; `name` stands for its path in errors.
pub fn verify_reader(
    log: impl BufRead,
    name: &str,
    keys: &HashMap<String, Vec<u8>>,
) -> Result<usize, AuditError> {
    let err = |line: usize, what: String| AuditError {
        path: name.to_owned(),
        line,
        what,
    };
    let mut keys = keys.clone();
    let mut prev = GENESIS.to_owned();
    let mut n = 0;
    for (i, line) in log.lines().enumerate() {
        let no = i + 1;
        let line = line.map_err(|e| err(no, format!("cannot read: {e}")))?;
        let r: Record = serde_json::from_str(&line)
            .map_err(|_| err(no, "not a valid audit record (edited or truncated)".into()))?;
        if r.prev != prev {
            return Err(err(
                no,
                "does not follow the line before it (a line was edited, deleted or moved)".into(),
            ));
        }
        if r.seq != n as u64 {
            return Err(err(
                no,
                format!(
                    "sequence number {} where {n} was expected (a line was deleted or moved)",
                    r.seq
                ),
            ));
        }
        if let (Some(cred), Some(pk)) = (&r.credential, &r.public_key) {
            if let Ok(pk) = hex::decode(pk) {
                keys.entry(cred.clone()).or_insert(pk);
            }
        }
        if let Some(t) = &r.touch {
            check_touch(t, &keys).map_err(|what| err(no, what))?;
        }
        prev = line_hash(&line);
        n += 1;
    }
    Ok(n)
}

/// The first `n` characters of `s` (a record may hold any text, not only hex).
fn prefix(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

fn check_touch(t: &TouchEvidence, keys: &HashMap<String, Vec<u8>>) -> Result<(), String> {
    let pk = keys.get(&t.credential).ok_or_else(|| {
        format!(
            "touch by credential {} which no enrolled key matches",
            prefix(&t.credential, 16).escape_debug()
        )
    })?;
    let auth_data =
        hex::decode(&t.auth_data).map_err(|_| "authenticator data is not hex".to_string())?;
    let sig = hex::decode(&t.signature).map_err(|_| "signature is not hex".to_string())?;
    match signature_holds_sec1(pk, &auth_data, &t.challenge.client_data_hash(), &sig) {
        Ok(true) => Ok(()),
        Ok(false) => {
            Err("the key's signature does not match this record (the record was altered)".into())
        }
        Err(e) => Err(match e {
            VerifyError::BadPublicKey => "the enrolled public key is unusable".into(),
            other => other.to_string(),
        }),
    }
}

/// Print the records as a table, optionally only those at or after `since` (Unix
/// seconds or RFC 3339) and of one profile.
pub fn show(
    path: &Path,
    since: Option<&str>,
    profile: Option<&str>,
    out: &mut dyn Write,
) -> Result<(), String> {
    let since = match since {
        None => 0,
        Some(s) => s.parse::<u64>().or_else(|_| {
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp().max(0) as u64)
                .map_err(|_| format!("--since \"{s}\" is neither Unix seconds nor an RFC 3339 time like 2026-11-28T10:00:00Z"))
        })?,
    };
    let f = std::fs::File::open(path)
        .map_err(|e| format!("cannot open the audit log {}: {e}", path.display()))?;
    let w = |out: &mut dyn Write, s: String| writeln!(out, "{s}").map_err(|e| e.to_string());
    w(
        out,
        format!(
            "{:<5} {:<20} {:<11} {:<12} {:<26} {:<24} {}",
            "SEQ", "TIME (UTC)", "EVENT", "PROFILE", "CALLER", "TOKEN", "DETAIL"
        ),
    )?;
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| e.to_string())?;
        let Ok(r) = serde_json::from_str::<Record>(&line) else {
            w(
                out,
                format!("{:<5} (line {} is not a valid record)", "?", i + 1),
            )?;
            continue;
        };
        if r.time < since || profile.is_some_and(|p| r.profile.as_deref() != Some(p)) {
            continue;
        }
        let when = time::OffsetDateTime::from_unix_timestamp(r.time as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute]:[second]"
                ))
                .ok()
            })
            .unwrap_or_else(|| r.time.to_string());
        let caller = r
            .caller
            .as_ref()
            .map(|c| {
                let exe = c
                    .exe
                    .as_deref()
                    .and_then(|e| e.rsplit('/').next())
                    .unwrap_or("?");
                match (&c.on_behalf_of, c.pid) {
                    (Some(b), _) => format!("{b} via {exe}"),
                    (None, Some(p)) => format!("{exe} ({p})"),
                    (None, None) => exe.to_owned(),
                }
            })
            .unwrap_or_default();
        let detail = r
            .reason
            .clone()
            .or_else(|| r.service_account.as_ref().map(|s| format!("as {s}")))
            .or_else(|| {
                r.credential
                    .as_ref()
                    .map(|c| format!("credential {}", prefix(c, 16)))
            })
            .unwrap_or_default();
        let touched = if r.touch.is_some() { "touch" } else { "" };
        w(
            out,
            format!(
                "{:<5} {:<20} {:<11} {:<12} {:<26} {:<24} {} {}",
                r.seq,
                when,
                r.event,
                r.profile.as_deref().unwrap_or("-"),
                caller,
                r.token.as_deref().unwrap_or("-"),
                touched,
                detail
            ),
        )?;
    }
    Ok(())
}

/// Public keys of the enrolled keys in a vault, by credential id (hex).
pub fn keys_of(vault: &crate::vault::VaultFile) -> HashMap<String, Vec<u8>> {
    vault
        .enrolments
        .iter()
        .map(|e| (hex::encode(&e.credential_id), e.public_key_sec1.clone()))
        .collect()
}

/// A log at `dir/audit.jsonl`: an enrolment and two touches (profiles
/// "inference" and "train", asked by `caller` at `time`) by a new software key
/// at `dir/k.json`. For tests and the fuzz seeds; panics on any failure.
#[doc(hidden)]
pub fn sample_log(dir: &Path, caller: &str, time: u64) -> PathBuf {
    use crate::key::soft::{AutoTouch, SoftKey};
    use crate::key::{GetAssertionRequest, MakeCredentialRequest, SecurityKey, RP_ID};

    let key = SoftKey::open(&dir.join("k.json"), std::sync::Arc::new(AutoTouch))
        .expect("a software key in the sample dir");
    let att = key
        .make_credential(&MakeCredentialRequest {
            rp_id: RP_ID.into(),
            challenge: [1; 32],
            user_id: vec![1],
            user_name: "u".into(),
            hmac_secret: true,
            uv: false,
            pin: None,
            exclude: vec![],
        })
        .expect("the software key enrols");
    let path = dir.join("audit.jsonl");
    let log = AuditLog::open(&path).expect("the sample log opens");
    log.append(Record {
        time,
        event: "enrolled".into(),
        credential: Some(hex::encode(&att.credential_id)),
        public_key: Some(hex::encode(&att.public_key_sec1)),
        ..Default::default()
    });
    for profile in ["inference", "train"] {
        let c = ChallengeInputs::fresh("get-token", &[caller, profile], time);
        let a = key
            .get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge: c.challenge(),
                allow: vec![att.credential_id.clone()],
                hmac_salt: None,
                uv: false,
                pin: None,
                up: true,
            })
            .expect("the software key signs");
        log.append(Record {
            time,
            event: "issued".into(),
            profile: Some(profile.into()),
            token: Some("sha256:0011223344556677".into()),
            touch: Some(TouchEvidence::new(&a, c)),
            ..Default::default()
        });
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log with an enrolment and two touches by a real soft key.
    fn sample() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_log(dir.path(), "curl (pid 1)", 5);
        (dir, path)
    }

    fn lines(p: &Path) -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn write(p: &Path, l: &[String]) {
        std::fs::write(p, l.join("\n") + "\n").unwrap();
    }

    #[test]
    fn a_real_log_verifies_and_reopening_continues_the_chain() {
        let (_d, p) = sample();
        assert_eq!(verify_file(&p, &HashMap::new()).unwrap(), 3);
        AuditLog::open(&p).unwrap().append(Record {
            event: "locked".into(),
            ..Default::default()
        });
        assert_eq!(verify_file(&p, &HashMap::new()).unwrap(), 4);
    }

    #[test]
    fn an_edited_byte_is_found_on_its_line() {
        let (_d, p) = sample();
        let mut l = lines(&p);
        l[1] = l[1].replace("inference", "inferencf");
        write(&p, &l);
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.what.contains("signature"), "{e}");
    }

    #[test]
    fn an_edit_that_keeps_the_signature_still_breaks_the_chain() {
        let (_d, p) = sample();
        let mut l = lines(&p);
        l[1] = l[1].replace("sha256:0011223344556677", "sha256:0011223344556678");
        write(&p, &l);
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert_eq!(e.line, 3, "the next line no longer follows: {e}");
    }

    #[test]
    fn a_deleted_line_is_found() {
        let (_d, p) = sample();
        let mut l = lines(&p);
        l.remove(1);
        write(&p, &l);
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn reordered_lines_are_found() {
        let (_d, p) = sample();
        let mut l = lines(&p);
        l.swap(1, 2);
        write(&p, &l);
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn a_touch_by_an_unknown_key_is_refused() {
        let (_d, p) = sample();
        let mut l = lines(&p);
        l.remove(0);
        // Re-chain from genesis so only the key is missing.
        let mut prev = GENESIS.to_owned();
        for (i, line) in l.iter_mut().enumerate() {
            let mut r: Record = serde_json::from_str(line).unwrap();
            r.seq = i as u64;
            r.prev = prev.clone();
            *line = serde_json::to_string(&r).unwrap();
            prev = line_hash(line);
        }
        write(&p, &l);
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert!(e.what.contains("no enrolled key"), "{e}");
    }
}
