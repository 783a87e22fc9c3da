//! Re-checking a log: the chain, the sequence and every touch signature.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{line_hash, prefix, Record, TouchEvidence, GENESIS};
use crate::verify::{signature_holds_sec1, VerifyError};

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

/// Public keys of the enrolled keys in a vault, by credential id (hex).
pub fn keys_of(vault: &crate::vault::VaultFile) -> HashMap<String, Vec<u8>> {
    vault
        .enrolments
        .iter()
        .map(|e| (hex::encode(&e.credential_id), e.public_key_sec1.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{sample_log, AuditLog};
    use std::path::PathBuf;

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
