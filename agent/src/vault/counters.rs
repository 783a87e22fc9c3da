//! The enrolled keys' signature counters, in a file of their own next to the
//! vault (`sign-counters`).
//!
//! Every touch raises its key's counter, and the counter must be on disk
//! before the touch's token is handed out: a key whose counter ever goes back
//! is a possible clone. Rewriting the whole vault for it (write, fsync,
//! rename, directory fsync) took longer than the rest of a touch, so a touch
//! appends one line, `CREDENTIAL-ID-HEX COUNTER`, and makes it durable with
//! one `fdatasync`. The vault file keeps the counters as of its last save.
//!
//! Reading takes each enrolled key's highest counter from the vault and the
//! lines; a last line without its newline (a crash mid-append) is left out,
//! since its touch's token was never handed out. A complete line that does
//! not parse is an error naming the file and the line. At open (unless it
//! already is), and when the file grows past [`COMPACT_AFTER`] lines, it is
//! rewritten atomically to one line per enrolled key.
//!
//! Same-user tampering is no worse than with the counters in the vault: the
//! user who can lower a line could put back an older vault file just as well.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::{write_private_atomic, VaultError, VaultFile};

/// Lines after which the file is rewritten to one line per key.
pub const COMPACT_AFTER: usize = 4096;

/// The counters file, open for appending.
#[derive(Debug)]
pub struct CounterLog {
    path: PathBuf,
    /// Opened at the first append after a rewrite.
    file: Option<File>,
    lines: usize,
}

impl CounterLog {
    /// Read the counters file at `path` (a missing one holds nothing), raise
    /// each of `vault`'s enrolments to the highest counter found for it, and
    /// rewrite the file to those (when it exists).
    pub fn open(path: &Path, vault: &mut VaultFile) -> Result<CounterLog, VaultError> {
        let found = match std::fs::read(path) {
            Ok(bytes) => Some((parse(path, &bytes)?, bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(err) => {
                return Err(VaultError::Io {
                    op: "read",
                    path: path.to_path_buf(),
                    err,
                })
            }
        };
        let mut log = CounterLog {
            path: path.to_path_buf(),
            file: None,
            lines: 0,
        };
        if let Some((found, bytes)) = found {
            for e in &mut vault.enrolments {
                if let Some(&n) = found.get(&e.credential_id) {
                    e.sign_count = e.sign_count.max(n);
                }
            }
            if bytes == compacted(vault).as_bytes() {
                log.lines = vault.enrolments.len();
            } else {
                log.compact(vault)?;
            }
        }
        Ok(log)
    }

    /// Append `credential_id`'s new counter and make it durable. `vault`
    /// (holding that counter already) is what a rewrite keeps, once the file
    /// has grown past [`COMPACT_AFTER`] lines.
    pub fn record(
        &mut self,
        credential_id: &[u8],
        count: u32,
        vault: &VaultFile,
    ) -> Result<(), VaultError> {
        if self.lines >= COMPACT_AFTER {
            return self.compact(vault);
        }
        let io_error = |err| VaultError::Io {
            op: "write",
            path: self.path.clone(),
            err,
        };
        if self.file.is_none() {
            self.file = Some(open_append(&self.path).map_err(io_error)?);
        }
        let file = self.file.as_mut().expect("opened above");
        let line = format!("{} {count}\n", hex::encode(credential_id));
        if let Err(err) = file
            .write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
        {
            // Whatever was written after the last good line: open afresh, so
            // the next append cannot continue a torn one.
            self.file = None;
            self.lines = COMPACT_AFTER;
            return Err(io_error(err));
        }
        self.lines += 1;
        Ok(())
    }

    /// Rewrite the file atomically to one line per enrolled key of `vault`.
    fn compact(&mut self, vault: &VaultFile) -> Result<(), VaultError> {
        self.file = None;
        write_private_atomic(&self.path, compacted(vault).as_bytes()).map_err(|err| {
            VaultError::Io {
                op: "write",
                path: self.path.clone(),
                err,
            }
        })?;
        self.lines = vault.enrolments.len();
        Ok(())
    }
}

/// The file as [`CounterLog::compact`] writes it: one line per enrolled key.
fn compacted(vault: &VaultFile) -> String {
    let mut text = String::new();
    for e in &vault.enrolments {
        text.push_str(&format!(
            "{} {}\n",
            hex::encode(&e.credential_id),
            e.sign_count
        ));
    }
    text
}

/// Open for appending (mode 0600, never through a symlink); a file created
/// here has its directory entry made durable too.
fn open_append(path: &Path) -> io::Result<File> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if !existed {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(file)
}

/// The highest counter per credential in `bytes`.
fn parse(path: &Path, bytes: &[u8]) -> Result<HashMap<Vec<u8>, u32>, VaultError> {
    let mut out: HashMap<Vec<u8>, u32> = HashMap::new();
    // A last line without its newline was torn by a crash: its touch's token
    // was never handed out.
    let complete = match bytes.iter().rposition(|&b| b == b'\n') {
        Some(end) => &bytes[..=end],
        None => &[][..],
    };
    for (n, line) in complete.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let (id, count) = parse_line(line).ok_or_else(|| VaultError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "line {} is not `CREDENTIAL-ID-HEX COUNTER`: move the file aside to go on with the vault's counters",
                n + 1
            ),
        })?;
        let best = out.entry(id).or_insert(count);
        *best = (*best).max(count);
    }
    Ok(out)
}

fn parse_line(line: &[u8]) -> Option<(Vec<u8>, u32)> {
    let text = std::str::from_utf8(line).ok()?;
    let (id, count) = text.split_once(' ')?;
    let id = hex::decode(id).ok().filter(|id| !id.is_empty())?;
    let count = count.parse().ok()?;
    Some((id, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::Enrolment;

    fn vault_with(ids: &[(&[u8], u32)]) -> VaultFile {
        let mut v = VaultFile::default();
        for (id, count) in ids {
            v.enrolments.push(Enrolment {
                credential_id: id.to_vec(),
                public_key_sec1: vec![4; 65],
                aaguid: [0; 16],
                sign_count: *count,
                key_name: "test key".into(),
                hmac_salt: [0; 32],
                uv: false,
                attestation_format: "none".into(),
                created_at: 0,
                attestation_cert: vec![],
                suspect: None,
            });
        }
        v
    }

    #[test]
    fn the_highest_counter_of_vault_and_file_wins_and_the_file_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        std::fs::write(&path, "aa01 5\nbb02 9\naa01 7\naa01 6\ncc03 100\n").unwrap();
        let mut v = vault_with(&[(&[0xaa, 0x01], 3), (&[0xbb, 0x02], 12)]);
        CounterLog::open(&path, &mut v).unwrap();
        assert_eq!(v.enrolments[0].sign_count, 7, "the file's highest");
        assert_eq!(v.enrolments[1].sign_count, 12, "the vault's, higher");
        // One line per enrolled key; a key not enrolled is dropped.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "aa01 7\nbb02 12\n");
    }

    #[test]
    fn a_file_that_is_already_compact_is_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        std::fs::write(&path, "aa01 7\n").unwrap();
        let before = std::fs::metadata(&path).unwrap();
        let mut v = vault_with(&[(&[0xaa, 0x01], 3)]);
        let log = CounterLog::open(&path, &mut v).unwrap();
        assert_eq!(v.enrolments[0].sign_count, 7);
        assert_eq!(log.lines, 1);
        let after = std::fs::metadata(&path).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            before.ino(),
            after.ino(),
            "rewritten (a new file took its place)"
        );
    }

    #[test]
    fn appended_counters_are_read_back_and_a_torn_last_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        let mut v = vault_with(&[(&[0xaa], 1)]);
        let mut log = CounterLog::open(&path, &mut v).unwrap();
        assert!(!path.exists(), "nothing to write yet");
        for n in 2..=4 {
            log.record(&[0xaa], n, &v).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"aa 99").unwrap();
        drop(f);
        let mut again = vault_with(&[(&[0xaa], 1)]);
        CounterLog::open(&path, &mut again).unwrap();
        assert_eq!(again.enrolments[0].sign_count, 4);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "aa 4\n");
    }

    #[test]
    fn a_garbled_line_is_an_error_naming_the_file_and_line_and_the_file_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        std::fs::write(&path, "aa 1\nnot a counter\n").unwrap();
        let e = CounterLog::open(&path, &mut vault_with(&[(&[0xaa], 0)])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("sign-counters") && text.contains("line 2"),
            "{text}"
        );
        assert!(!text.contains('\n'), "{text}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "aa 1\nnot a counter\n"
        );
    }

    #[test]
    fn the_file_is_rewritten_once_it_grows_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        let mut v = vault_with(&[(&[0xaa], 0)]);
        let mut log = CounterLog::open(&path, &mut v).unwrap();
        for n in 1..=(COMPACT_AFTER as u32 + 1) {
            v.enrolments[0].sign_count = n;
            log.record(&[0xaa], n, &v).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("aa {}\n", COMPACT_AFTER + 1));
    }

    #[test]
    fn a_symlink_in_its_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sign-counters");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let v = vault_with(&[(&[0xaa], 0)]);
        let mut log = CounterLog {
            path: path.clone(),
            file: None,
            lines: 0,
        };
        assert!(log.record(&[0xaa], 1, &v).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }
}
