//! The audit head in the systemd journal: a copy of where the chain stands
//! that the log's owner cannot rewrite, so a cut or replaced tail is found.
//!
//! Writing ([`JournalSink`]): after durable writes the newest head goes, as one
//! native-protocol datagram, to journald's socket from a thread of its own — an
//! issuance never waits for it, and at most one head a second is sent (the
//! newest; a burst costs one message). No socket, no sink. The head held back
//! in the quiet second is not lost at shutdown: it is sent when the thread
//! that reported it (the audit writer, which ends only when the log is
//! closed) ends, and when the sink is dropped.
//!
//! Reading ([`JournalHeads`]): `journalctl -o json`, matched on our fields and
//! on the uid that owns the log (journald sets `_UID`; the user cannot).
//! Every head found must agree with the log: a user can add messages to the
//! journal but not take the agent's out.

use std::cell::RefCell;
use std::io::BufRead;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use touchgate::sync::MutexExt;

use super::{Head, HeadSink, Verified};

/// journald's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Tests only: another socket in place of [`JOURNAL_SOCKET`]. A release build
/// (without the `testing` feature) does not read it, so nobody who can set the
/// agent's environment can send its heads elsewhere.
#[cfg(any(test, feature = "testing"))]
pub const SOCKET_ENV: &str = "TOUCHGATE_TEST_JOURNAL_SOCKET";
/// At most one head per this long reaches the journal.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
const IDENTIFIER: &str = "touchgate-agent";

/// Sends the newest head to the journal, off the caller's thread.
pub struct JournalSink {
    inner: Arc<Inner>,
}

/// What the sink, its thread and the flush at a thread's end share.
struct Inner {
    /// The newest head not sent yet.
    pending: Mutex<Option<Head>>,
    wake: Condvar,
    sock: UnixDatagram,
    to: PathBuf,
    /// The log's name in the journal ([`journal_name`]).
    file: String,
    warned: AtomicBool,
}

impl Inner {
    fn send(&self, head: &Head) {
        if let Err(e) = self.sock.send_to(&datagram(head, &self.file), &self.to) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot send the audit head to the journal ({}): {e}; further failures are not logged",
                    self.to.display()
                );
            }
        }
    }

    /// Send the held-back head now, quiet second or not.
    fn flush(&self) {
        let head = self.pending.locked().take();
        if let Some(h) = head {
            self.send(&h);
        }
    }
}

thread_local! {
    /// The sinks this thread told a head, flushed when the thread ends: the
    /// audit writer ends only when the log is closed (shutdown), and
    /// `AuditLog::close` waits for it, so the final head is sent before the
    /// agent exits instead of dying in the quiet second.
    static FLUSH_AT_THREAD_END: FlushAtThreadEnd = const { FlushAtThreadEnd(RefCell::new(Vec::new())) };
}

struct FlushAtThreadEnd(RefCell<Vec<Weak<Inner>>>);

impl Drop for FlushAtThreadEnd {
    fn drop(&mut self) {
        for sink in self.0.get_mut().drain(..) {
            if let Some(s) = sink.upgrade() {
                s.flush();
            }
        }
    }
}

impl JournalSink {
    /// A sink for the log at `file`, when a journal listens (else `None`).
    pub fn start(file: &Path) -> Option<Arc<JournalSink>> {
        #[cfg(any(test, feature = "testing"))]
        if let Some(s) = std::env::var_os(SOCKET_ENV) {
            tracing::warn!(
                "audit heads go to {} ({SOCKET_ENV}, for tests), not to the system journal",
                Path::new(&s).display()
            );
            return Self::start_at(PathBuf::from(s), file);
        }
        Self::start_at(PathBuf::from(JOURNAL_SOCKET), file)
    }

    fn start_at(socket: PathBuf, file: &Path) -> Option<Arc<JournalSink>> {
        if !socket.exists() {
            return None;
        }
        let sock = UnixDatagram::unbound().ok()?;
        sock.set_nonblocking(true).ok()?;
        let inner = Arc::new(Inner {
            pending: Mutex::new(None),
            wake: Condvar::new(),
            sock,
            to: socket,
            file: canonical(file).display().to_string(),
            warned: AtomicBool::new(false),
        });
        let i = inner.clone();
        std::thread::Builder::new()
            .name("audit-journal".into())
            .spawn(move || send_loop(&i))
            .ok()?;
        Some(Arc::new(JournalSink { inner }))
    }
}

impl HeadSink for JournalSink {
    fn durable(&self, head: &Head) {
        *self.inner.pending.locked() = Some(head.clone());
        self.inner.wake.notify_one();
        let me = Arc::downgrade(&self.inner);
        let _ = FLUSH_AT_THREAD_END.try_with(|f| {
            if let Ok(mut sinks) = f.0.try_borrow_mut() {
                if !sinks.iter().any(|s| Weak::ptr_eq(s, &me)) {
                    sinks.push(me);
                }
            }
        });
    }
}

impl Drop for JournalSink {
    fn drop(&mut self) {
        self.inner.flush();
    }
}

fn send_loop(inner: &Inner) {
    loop {
        let head = {
            let mut p = inner.pending.locked();
            loop {
                if let Some(h) = p.take() {
                    break h;
                }
                p = match inner.wake.wait(p) {
                    Ok(p) => p,
                    Err(_) => return,
                };
            }
        };
        inner.send(&head);
        std::thread::sleep(MIN_INTERVAL);
    }
}

/// One journal entry in the native protocol (a value with a newline is sent
/// in its length-prefixed form).
fn datagram(head: &Head, file: &str) -> Vec<u8> {
    let mut d = Vec::new();
    let msg = format!("audit log {file}: head seq {} hash {}", head.seq, head.hash);
    for (k, v) in [
        ("MESSAGE", msg.as_str()),
        ("SYSLOG_IDENTIFIER", IDENTIFIER),
        ("TOUCHGATE_AUDIT_SEQ", &head.seq.to_string()),
        ("TOUCHGATE_AUDIT_HASH", &head.hash),
        ("TOUCHGATE_AUDIT_FILE", file),
    ] {
        d.extend_from_slice(k.as_bytes());
        if v.contains('\n') {
            d.push(b'\n');
            d.extend_from_slice(&(v.len() as u64).to_le_bytes());
        } else {
            d.push(b'=');
        }
        d.extend_from_slice(v.as_bytes());
        d.push(b'\n');
    }
    d
}

/// The path as the agent and the verifier both name it.
fn canonical(file: &Path) -> PathBuf {
    match (file.parent(), file.file_name()) {
        (Some(dir), Some(name)) => std::fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .map(|d| d.join(name))
        .unwrap_or_else(|_| file.to_owned()),
        _ => file.to_owned(),
    }
}

/// Where the journal's heads for one log come from.
pub trait JournalHeads {
    /// Every head recorded for `file` (canonical path) by `uid`, oldest first.
    fn heads(&self, file: &str, uid: u32) -> Result<Vec<Head>, String>;
}

/// The real journal, through `journalctl` (optionally on a journal directory).
pub struct Journalctl {
    pub directory: Option<PathBuf>,
}

impl JournalHeads for Journalctl {
    fn heads(&self, file: &str, uid: u32) -> Result<Vec<Head>, String> {
        let mut cmd = std::process::Command::new("journalctl");
        cmd.args(["--no-pager", "-q", "-o", "json"]);
        if let Some(d) = &self.directory {
            cmd.arg("-D").arg(d);
        }
        cmd.arg(format!("SYSLOG_IDENTIFIER={IDENTIFIER}"))
            .arg(format!("TOUCHGATE_AUDIT_FILE={file}"))
            .arg(format!("_UID={uid}"));
        let out = cmd.output().map_err(|e| {
            format!("--journal: cannot run journalctl: {e}; install systemd's journalctl, or verify without --journal")
        })?;
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "--journal: journalctl failed: {}",
                why.lines().next().unwrap_or("no reason given").trim()
            ));
        }
        parse_json_heads(&out.stdout[..])
    }
}

/// The heads in `journalctl -o json` output (one entry a line).
pub fn parse_json_heads(out: impl BufRead) -> Result<Vec<Head>, String> {
    let mut heads = Vec::new();
    for line in out.lines() {
        let line = line.map_err(|e| format!("--journal: cannot read journalctl's output: {e}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .map_err(|_| "--journal: journalctl printed something that is not JSON".to_string())?;
        let seq = v["TOUCHGATE_AUDIT_SEQ"]
            .as_str()
            .and_then(|s| s.parse().ok());
        let hash = v["TOUCHGATE_AUDIT_HASH"].as_str();
        if let (Some(seq), Some(hash)) = (seq, hash) {
            heads.push(Head {
                seq,
                hash: hash.to_owned(),
            });
        }
    }
    Ok(heads)
}

/// Compare the log (as verified) with every head the journal holds for it.
/// `Ok` names the newest head; `Err` says how the log was cut or replaced.
pub fn check_against(v: &Verified, heads: &[Head], file: &str) -> Result<String, String> {
    let newest = heads.iter().map(|h| h.seq).max().ok_or_else(|| {
        format!("--journal: the journal holds no audit head for {file}: nothing to compare with (the agent sends its head only where {JOURNAL_SOCKET} exists; a user who cannot read the system journal needs the systemd-journal group)")
    })?;
    if newest > v.records as u64 {
        return Err(format!(
            "audit log {file} is truncated: it has {} records, but the journal saw the log at seq {newest} (records {}..{} were cut)",
            v.records,
            v.records,
            newest - 1
        ));
    }
    for h in heads {
        if v.hash_before(h.seq) != Some(h.hash.as_str()) {
            return Err(format!(
                "audit log {file} was replaced: the journal saw record {} with hash {}, and this log's record {} has another",
                h.seq.saturating_sub(1),
                super::prefix(&h.hash, 16).escape_debug(),
                h.seq.saturating_sub(1)
            ));
        }
    }
    Ok(format!(
        "the journal's {} heads agree with it (newest: seq {newest})",
        heads.len()
    ))
}

/// The name of `file` the agent uses in the journal.
pub fn journal_name(file: &Path) -> String {
    canonical(file).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{sample_log, verify_file, HeadSink};
    use std::collections::HashMap;

    fn fields(d: &[u8]) -> HashMap<String, String> {
        String::from_utf8(d.to_vec())
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn the_sink_sends_the_newest_head_without_blocking_and_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let file = dir.path().join("audit.jsonl");
        let sink = JournalSink::start_at(sock_path, &file).unwrap();
        let head = |seq| Head {
            seq,
            hash: format!("{seq:064}"),
        };
        sink.durable(&head(1));
        let mut buf = [0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        let f = fields(&buf[..n]);
        assert_eq!(f["SYSLOG_IDENTIFIER"], "touchgate-agent");
        assert_eq!(f["TOUCHGATE_AUDIT_SEQ"], "1");
        assert_eq!(f["TOUCHGATE_AUDIT_HASH"], head(1).hash);
        assert_eq!(f["TOUCHGATE_AUDIT_FILE"], journal_name(&file));
        assert!(f["MESSAGE"].contains("head seq 1"), "{f:?}");
        // A burst inside the quiet second: only its newest head goes out, once.
        for s in 2..=50 {
            sink.durable(&head(s));
        }
        let n = journal.recv(&mut buf).unwrap();
        assert_eq!(fields(&buf[..n])["TOUCHGATE_AUDIT_SEQ"], "50");
        journal.set_nonblocking(true).unwrap();
        assert!(journal.recv(&mut buf).is_err(), "one message for the burst");
    }

    #[test]
    fn the_held_back_head_is_sent_when_the_reporting_thread_ends() {
        let dir = tempfile::tempdir().unwrap();
        let sock_path = dir.path().join("socket");
        let journal = UnixDatagram::bind(&sock_path).unwrap();
        let sink = JournalSink::start_at(sock_path, &dir.path().join("a")).unwrap();
        let head = |seq| Head {
            seq,
            hash: format!("{seq:064}"),
        };
        sink.durable(&head(1));
        let mut buf = [0u8; 4096];
        let n = journal.recv(&mut buf).unwrap();
        assert_eq!(fields(&buf[..n])["TOUCHGATE_AUDIT_SEQ"], "1");
        // Like the audit writer at close: reports inside the quiet second, then ends.
        let s = sink.clone();
        std::thread::spawn(move || s.durable(&head(2)))
            .join()
            .unwrap();
        journal.set_nonblocking(true).unwrap();
        let n = journal
            .recv(&mut buf)
            .expect("sent before the thread ended");
        assert_eq!(fields(&buf[..n])["TOUCHGATE_AUDIT_SEQ"], "2");
    }

    #[test]
    fn no_journal_socket_means_no_sink() {
        let dir = tempfile::tempdir().unwrap();
        assert!(JournalSink::start_at(dir.path().join("none"), &dir.path().join("a")).is_none());
    }

    #[test]
    fn a_path_with_a_newline_is_sent_length_prefixed() {
        let d = datagram(
            &Head {
                seq: 1,
                hash: "ab".into(),
            },
            "/tmp/a\nb",
        );
        let at = d
            .windows(21)
            .position(|w| w == b"TOUCHGATE_AUDIT_FILE\n")
            .unwrap();
        assert_eq!(&d[at + 21..at + 29], &8u64.to_le_bytes());
        assert_eq!(&d[at + 29..at + 37], b"/tmp/a\nb");
    }

    /// `journalctl -o json` output as a real journald wrote it (trimmed).
    fn recorded(heads: &[(u64, &str)]) -> String {
        heads
            .iter()
            .map(|(s, h)| {
                format!(
                    r#"{{"_UID":"1000","SYSLOG_IDENTIFIER":"touchgate-agent","TOUCHGATE_AUDIT_SEQ":"{s}","TOUCHGATE_AUDIT_HASH":"{h}","_TRANSPORT":"journal","MESSAGE":"audit log /x: head seq {s} hash {h}","__REALTIME_TIMESTAMP":"1796626522701107"}}"#
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    }

    #[test]
    fn the_journal_finds_a_cut_tail_and_a_replaced_log() {
        let dir = tempfile::tempdir().unwrap();
        let p = sample_log(dir.path(), "curl (pid 1)", 5);
        let first: crate::audit::Record =
            serde_json::from_str(std::fs::read_to_string(&p).unwrap().lines().next().unwrap())
                .unwrap();
        let keys = HashMap::from([(
            first.credential.unwrap(),
            hex::decode(first.public_key.unwrap()).unwrap(),
        )]);
        let v = verify_file(&p, &keys).unwrap();
        let h = |seq: u64| v.hash_before(seq).unwrap().to_owned();
        let heads = |l: &[(u64, String)]| {
            let l: Vec<(u64, &str)> = l.iter().map(|(s, h)| (*s, h.as_str())).collect();
            parse_json_heads(recorded(&l).as_bytes()).unwrap()
        };
        let ok = heads(&[(0, h(0)), (2, h(2)), (3, h(3))]);
        let said = check_against(&v, &ok, "/x").unwrap();
        assert!(said.contains("newest: seq 3"), "{said}");
        // The journal saw a record this log does not have.
        let longer = heads(&[(3, h(3)), (4, "ab".repeat(32))]);
        let e = check_against(&v, &longer, "/x").unwrap_err();
        assert!(e.contains("truncated") && e.contains("3 records"), "{e}");
        // A same-user message claiming the forged head does not hide the real ones.
        let replaced = heads(&[(2, "cd".repeat(32)), (3, h(3))]);
        let e = check_against(&v, &replaced, "/x").unwrap_err();
        assert!(e.contains("replaced") && e.contains("record 1"), "{e}");
        let e = check_against(&v, &[], "/x").unwrap_err();
        assert!(e.contains("no audit head"), "{e}");
        assert!(parse_json_heads(&b"not json\n"[..]).is_err());
    }
}
