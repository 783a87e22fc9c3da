//! Re-checking a log: the chain, the sequence and every touch signature.
//!
//! Invariants: trust comes only from the public keys handed in (the vault's,
//! or a file from `touchgate keys export`), never from "enrolled" lines in the
//! log being checked. A v2 touch signs its record's own content and the head
//! of the log before it, so a touch holds only if every line before that head
//! is exactly what the key saw; [`Verified`] says how far that reaches.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{events_for, line_hash, prefix, Approved, Record, TouchEvidence, GENESIS};
use crate::fido::verify::{signature_holds_sec1, VerifyError};

/// Why a log does not verify: the line (1-based) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log {path} line {line}: {what}")]
pub struct AuditError {
    pub path: String,
    pub line: usize,
    pub what: String,
}

/// What a log that verifies proved.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verified {
    pub records: usize,
    /// Touches signed over their record and the whole history before it (v2).
    pub bound_touches: usize,
    /// Older touches, signed over their request only (v1).
    pub unbound_touches: usize,
    /// The seq of the last v2 touch's record: everything up to it is signed.
    pub last_bound: Option<u64>,
    /// SHA-256 (hex) of every line, by seq (to compare heads kept elsewhere).
    pub line_hashes: Vec<String>,
    /// Seqs of records that enrol a key the trusted keys do not hold (an old
    /// log, or a forged enrolment: it is trusted for nothing).
    pub unknown_enrolments: Vec<u64>,
}

impl Verified {
    /// The hash the chain stands on before record `seq` ([`GENESIS`] for 0),
    /// or `None` when the log has fewer than `seq` records.
    pub fn hash_before(&self, seq: u64) -> Option<&str> {
        match seq {
            0 => Some(GENESIS),
            s => self
                .line_hashes
                .get(usize::try_from(s - 1).ok()?)
                .map(String::as_str),
        }
    }

    /// In plain words: what was proved and what cannot be, from this file alone.
    pub fn summary(&self) -> String {
        let mut s = format!("{} records, chain intact; ", self.records);
        s += &format!(
            "{} touches signed by enrolled keys, each over the history before it",
            self.bound_touches
        );
        if self.unbound_touches > 0 {
            s += &format!(
                "; {} older touches signed without the history (only their own request)",
                self.unbound_touches
            );
        }
        match self.last_bound {
            Some(last) => s += &format!(
                "; records after seq {last} (the last touch) are only hash-chained: deleting them is not detectable without --journal"
            ),
            None => s += "; no touch signs the history, so every record is only hash-chained: whoever can write the file can rewrite it undetected (--journal catches a cut tail)",
        }
        if let Some(first) = self.unknown_enrolments.first() {
            s += &format!(
                "; {} records (first: seq {first}) enrol a key the trusted keys do not hold, trusted for nothing",
                self.unknown_enrolments.len()
            );
        }
        s
    }
}

/// Re-check the whole chain and every touch signature. `keys` maps credential id
/// (hex) to its SEC1 public key: the only keys trusted.
pub fn verify_file(path: &Path, keys: &HashMap<String, Vec<u8>>) -> Result<Verified, AuditError> {
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
) -> Result<Verified, AuditError> {
    let err = |line: usize, what: String| AuditError {
        path: name.to_owned(),
        line,
        what,
    };
    let mut v = Verified::default();
    for (i, line) in log.lines().enumerate() {
        let no = i + 1;
        let line = line.map_err(|e| err(no, format!("cannot read: {e}")))?;
        let r: Record = serde_json::from_str(&line)
            .map_err(|_| err(no, "not a valid audit record (edited or truncated)".into()))?;
        let prev = v.hash_before(v.records as u64).unwrap_or(GENESIS);
        if r.prev != prev {
            return Err(err(
                no,
                "does not follow the line before it (a line was edited, deleted or moved)".into(),
            ));
        }
        if r.seq != v.records as u64 {
            return Err(err(
                no,
                format!(
                    "sequence number {} where {} was expected (a line was deleted or moved)",
                    r.seq, v.records
                ),
            ));
        }
        if r.public_key.is_some() && !r.credential.as_ref().is_some_and(|c| keys.contains_key(c)) {
            v.unknown_enrolments.push(r.seq);
        }
        if let Some(t) = &r.touch {
            check_touch(&r, t, keys).map_err(|what| err(no, what))?;
            match &t.challenge.head {
                Some(head) => {
                    if head.seq > r.seq {
                        return Err(err(
                            no,
                            format!(
                                "the key signed this touch over a history of {} records, more than stand before it here: a record before it was deleted or moved",
                                head.seq
                            ),
                        ));
                    }
                    if v.hash_before(head.seq) != Some(head.hash.as_str()) {
                        return Err(err(
                            no,
                            format!(
                                "the key signed this touch over a history that differs from this log before seq {}: a record before it was edited, deleted or moved",
                                head.seq
                            ),
                        ));
                    }
                    v.bound_touches += 1;
                    v.last_bound = Some(r.seq);
                }
                None => v.unbound_touches += 1,
            }
        }
        v.line_hashes.push(line_hash(&line));
        v.records += 1;
    }
    Ok(v)
}

fn check_touch(
    r: &Record,
    t: &TouchEvidence,
    keys: &HashMap<String, Vec<u8>>,
) -> Result<(), String> {
    let pk = keys.get(&t.credential).ok_or_else(|| {
        format!(
            "touch by credential {} which no enrolled key matches (keys are trusted from the vault or --keys, never from the log)",
            prefix(&t.credential, 16).escape_debug()
        )
    })?;
    let cdh = match &t.challenge.head {
        Some(_) => {
            let purpose = t.challenge.purpose.as_str();
            if !events_for(purpose).contains(&r.event.as_str()) {
                return Err(format!(
                    "event {} is not what the touch approved ({}): the record was altered",
                    prefix(&r.event, 32).escape_debug(),
                    prefix(purpose, 32).escape_debug()
                ));
            }
            t.challenge.client_data_hash_for(&Approved::of(r, purpose))
        }
        None => crate::fido::key::client_data_hash(&t.challenge.challenge()),
    };
    let auth_data =
        hex::decode(&t.auth_data).map_err(|_| "authenticator data is not hex".to_string())?;
    let sig = hex::decode(&t.signature).map_err(|_| "signature is not hex".to_string())?;
    match signature_holds_sec1(pk, &auth_data, &cdh, &sig) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{sample_log, AuditLog, ChallengeInputs};
    use std::path::PathBuf;

    /// A log with an enrolment and two touches by a real soft key, and that
    /// key (trusted because the test says so).
    fn sample() -> (tempfile::TempDir, PathBuf, HashMap<String, Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let path = sample_log(dir.path(), "curl (pid 1)", 5);
        let first: Record = serde_json::from_str(&lines(&path)[0]).unwrap();
        let keys = HashMap::from([(
            first.credential.unwrap(),
            hex::decode(first.public_key.unwrap()).unwrap(),
        )]);
        (dir, path, keys)
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

    /// What a same-user attacker does after an edit: make seq and prev good again.
    fn rechain(l: &mut [String]) {
        let mut prev = GENESIS.to_owned();
        for (i, line) in l.iter_mut().enumerate() {
            let mut r: Record = serde_json::from_str(line).unwrap();
            r.seq = i as u64;
            r.prev = prev.clone();
            *line = serde_json::to_string(&r).unwrap();
            prev = line_hash(line);
        }
    }

    fn edit(line: &str, f: impl FnOnce(&mut Record)) -> String {
        let mut r: Record = serde_json::from_str(line).unwrap();
        f(&mut r);
        serde_json::to_string(&r).unwrap()
    }

    #[test]
    fn a_real_log_verifies_and_says_what_it_proved() {
        let (_d, p, keys) = sample();
        let v = verify_file(&p, &keys).unwrap();
        assert_eq!((v.records, v.bound_touches, v.last_bound), (3, 2, Some(2)));
        let said = v.summary();
        assert!(
            said.contains("2 touches signed by enrolled keys, each over the history before it"),
            "{said}"
        );
        assert!(
            said.contains("after seq 2 (the last touch) are only hash-chained"),
            "{said}"
        );
        AuditLog::open(&p).unwrap().append(Record {
            event: "locked".into(),
            ..Default::default()
        });
        assert_eq!(verify_file(&p, &keys).unwrap().records, 4);
    }

    #[test]
    fn an_edited_byte_is_found_on_its_line() {
        let (_d, p, keys) = sample();
        let mut l = lines(&p);
        l[1] = l[1].replace("inference", "inferencf");
        write(&p, &l);
        let e = verify_file(&p, &keys).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.what.contains("signature"), "{e}");
    }

    #[test]
    fn an_edit_that_keeps_the_signature_still_breaks_the_chain() {
        let (_d, p, keys) = sample();
        let mut l = lines(&p);
        l[1] = l[1].replace("sha256:0011223344556677", "sha256:0011223344556678");
        write(&p, &l);
        let e = verify_file(&p, &keys).unwrap_err();
        assert_eq!(e.line, 3, "the next line no longer follows: {e}");
    }

    #[test]
    fn every_approved_field_of_a_touched_record_is_signed_even_when_rechained() {
        type Edit = (&'static str, fn(&mut Record));
        let edits: [Edit; 6] = [
            ("caller", |r| {
                r.caller.as_mut().unwrap().exe = Some("/bin/sh".into())
            }),
            ("profile", |r| r.profile = Some("train".into())),
            ("service account", |r| {
                r.service_account = Some("x@p.iam.gserviceaccount.com".into())
            }),
            ("scopes", |r| r.scopes = vec!["openid".into()]),
            ("lifetime", |r| r.lifetime = Some(43200)),
            ("event", |r| r.event = "key-added".into()),
        ];
        for (what, f) in edits {
            let (_d, p, keys) = sample();
            let mut l = lines(&p);
            l[1] = edit(&l[1], f);
            rechain(&mut l);
            write(&p, &l);
            let e = verify_file(&p, &keys).unwrap_err();
            assert_eq!(e.line, 2, "{what}: {e}");
            assert!(e.what.contains("altered"), "{what}: {e}");
        }
    }

    #[test]
    fn an_edited_record_before_a_touch_breaks_that_touch_even_when_rechained() {
        let (_d, p, keys) = sample();
        let mut l = lines(&p);
        l[0] = edit(&l[0], |r| r.reason = Some("nothing happened".into()));
        rechain(&mut l);
        write(&p, &l);
        let e = verify_file(&p, &keys).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.what.contains("history"), "{e}");
    }

    #[test]
    fn a_deleted_line_is_found() {
        let (_d, p, keys) = sample();
        let mut l = lines(&p);
        l.remove(1);
        write(&p, &l.clone());
        assert_eq!(verify_file(&p, &keys).unwrap_err().line, 2);
        rechain(&mut l);
        write(&p, &l);
        let e = verify_file(&p, &keys).unwrap_err();
        assert_eq!(e.line, 2, "the next touch signed the deleted line: {e}");
        assert!(
            e.what.contains("history") || e.what.contains("moved"),
            "{e}"
        );
    }

    #[test]
    fn reordered_lines_are_found_even_when_rechained() {
        let (_d, p, keys) = sample();
        let mut l = lines(&p);
        l.swap(0, 1);
        write(&p, &l.clone());
        assert_eq!(verify_file(&p, &keys).unwrap_err().line, 1);
        rechain(&mut l);
        write(&p, &l);
        let e = verify_file(&p, &keys).unwrap_err();
        assert_eq!(e.line, 1, "{e}");
        assert!(e.what.contains("moved"), "{e}");
    }

    #[test]
    fn a_log_that_enrols_its_own_key_is_not_trusted() {
        let (_d, p, _keys) = sample();
        let e = verify_file(&p, &HashMap::new()).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.what.contains("no enrolled key"), "{e}");
        // Without its touches, it verifies, but the forged enrolment is named.
        let l = lines(&p);
        write(&p, &l[..1]);
        let v = verify_file(&p, &HashMap::new()).unwrap();
        assert_eq!(v.unknown_enrolments, [0]);
        assert!(
            v.summary()
                .contains("seq 0) enrol a key the trusted keys do not hold"),
            "{}",
            v.summary()
        );
    }

    #[test]
    fn an_old_v1_touch_still_verifies_but_is_reported_without_the_history() {
        use crate::fido::key::{GetAssertionRequest, SecurityKey, RP_ID};
        let dir = tempfile::tempdir().unwrap();
        let (key, att) = crate::audit::sample::sample_key(dir.path());
        let c = ChallengeInputs::fresh("get-token", &["curl (pid 1)", "p"], 5);
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
            .unwrap();
        let p = dir.path().join("audit.jsonl");
        AuditLog::open(&p).unwrap().append(Record {
            event: "issued".into(),
            touch: Some(TouchEvidence::new(&a, c)),
            ..Default::default()
        });
        let keys = HashMap::from([(hex::encode(&att.credential_id), att.public_key_sec1.clone())]);
        let v = verify_file(&p, &keys).unwrap();
        assert_eq!(
            (v.bound_touches, v.unbound_touches, v.last_bound),
            (0, 1, None)
        );
        assert!(
            v.summary()
                .contains("1 older touches signed without the history"),
            "{}",
            v.summary()
        );
        assert!(
            v.summary().contains("no touch signs the history"),
            "{}",
            v.summary()
        );
    }
}
