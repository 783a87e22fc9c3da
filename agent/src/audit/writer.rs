//! The audit writer: one thread that owns the open log file and is the only
//! one to write it.
//!
//! Invariants:
//! - The file is opened once (append, 0600, its directory created), and again
//!   only after a failure left it unknown; every (re)open reads the chain's
//!   head from the file and cuts a torn last line, writing a `repaired` record
//!   that says how many bytes were cut and their SHA-256 (never their content).
//! - Group commit: everything queued when the thread wakes is one write and
//!   one `fdatasync`; each waiter is answered only after that, with the
//!   outcome of that write.
//! - The head ([`Head`]) moves only over lines made durable; a write that
//!   fails is taken back (the file is cut to its last durable length), so no
//!   torn line stays and the next record chains to the last durable one.
//! - Window-hit counts ([`Reuses`]) are drained a second after the first hit
//!   since the last drain, at every flush barrier and at close; records no one
//!   waits for (those counts, a lock) are kept across a failed write and
//!   retried each second, so the log recovers on its own once it can be
//!   written. A waited-for record that fails is answered with the error.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use touchgate::sync::MutexExt;

use super::coalesce::Reuses;
use super::{line_hash, Head, HeadSink, Record, GENESIS};

/// How often window-hit counts are written.
const TICK: Duration = Duration::from_secs(1);
/// At most this many unwaited records (window-hit counts, locks) are kept
/// across failed writes for the next one.
const MAX_CARRY: usize = 10_000;

/// A record that could not be made durable: the file and the OS error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot write the audit log {}: {error}", path.display())]
pub struct AuditFailure {
    pub path: PathBuf,
    pub error: String,
}

/// The answer to a waiter: its record (or barrier) is durable, or why not.
pub(super) type Ack = oneshot::Sender<Result<(), AuditFailure>>;

pub(super) enum Job {
    /// A record to write; its seq and prev are filled in by the writer.
    Append(Box<Record>, Option<Ack>),
    /// Write the window-hit counts now; answer once all before is durable.
    Flush(Option<Ack>),
    /// The first window hit since the last drain: write the counts in a second.
    Wake,
    /// Write what is pending and stop.
    Close,
}

/// What the writer shares with [`super::AuditLog`].
pub(super) struct Shared {
    pub(super) head: Mutex<Head>,
    pub(super) sinks: Mutex<Vec<Arc<dyn HeadSink>>>,
    /// Whether the last write was made durable.
    pub(super) healthy: AtomicBool,
    pub(super) reuses: Reuses,
}

pub(super) struct Writer {
    path: PathBuf,
    file: Option<File>,
    /// Length of the file up to its last durable line.
    len: u64,
    /// The next seq and the hash of the last durable line.
    seq: u64,
    last: String,
    shared: Arc<Shared>,
    /// Records no one waits for, kept from a failed write for the next one.
    carry: Vec<Record>,
}

impl Writer {
    /// Open the log (cutting a torn tail); on failure the writer starts
    /// without a file and tries again at the next write.
    pub(super) fn open(path: &Path, shared: Arc<Shared>) -> Writer {
        let mut w = Writer {
            path: path.to_owned(),
            file: None,
            len: 0,
            seq: 0,
            last: GENESIS.to_owned(),
            shared,
            carry: Vec::new(),
        };
        if let Err(e) = w.reopen() {
            w.shared.healthy.store(false, Ordering::SeqCst);
            tracing::error!("{}", w.failure(&e));
        }
        w
    }

    fn failure(&self, e: &std::io::Error) -> AuditFailure {
        AuditFailure {
            path: self.path.clone(),
            error: e.to_string(),
        }
    }

    /// Open the file, read the chain's head, cut a torn last line and record that.
    fn reopen(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if let Some(dir) = self.path.parent() {
            crate::state_dir::create(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        let scan = scan(&file)?;
        self.seq = scan.seq;
        self.last = scan.last;
        self.len = scan.good;
        self.file = Some(file);
        if let Some((cut, sha)) = scan.torn {
            let f = self.file.as_ref().expect("just set");
            f.set_len(scan.good)?;
            f.sync_data()?;
            tracing::warn!(
                "the audit log {} ended in a torn line: cut {cut} bytes",
                self.path.display()
            );
            let mut buf = String::new();
            self.push(
                Record {
                    time: crate::clock::unix(std::time::SystemTime::now()),
                    event: "repaired".into(),
                    reason: Some(format!(
                        "the last line was torn (no newline): cut {cut} bytes, sha256 {sha}"
                    )),
                    ..Default::default()
                },
                &mut buf,
            );
            if let Err(e) = self.write(buf.as_bytes()) {
                self.file = None;
                return Err(e);
            }
        }
        self.publish();
        self.shared.healthy.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Give `r` its seq and prev and add its line to `buf`.
    fn push(&mut self, mut r: Record, buf: &mut String) {
        r.seq = self.seq;
        r.prev = std::mem::take(&mut self.last);
        let line = match serde_json::to_string(&r) {
            Ok(l) => l,
            Err(e) => {
                // Only a bug gets here (every field is plain data).
                tracing::error!("cannot encode an audit record: {e}");
                self.last = r.prev;
                return;
            }
        };
        self.seq += 1;
        self.last = line_hash(&line);
        buf.push_str(&line);
        buf.push('\n');
        tracing::info!(
            audit_seq = r.seq,
            event = %r.event,
            profile = r.profile.as_deref().unwrap_or("-"),
            token = r.token.as_deref().unwrap_or("-"),
            count = r.count.unwrap_or(1),
            "audit"
        );
    }

    /// Append `bytes` and make them durable, or take back whatever of them reached the file.
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Err(std::io::Error::other("the file is not open"));
        };
        match f.write_all(bytes).and_then(|()| f.sync_data()) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if f.set_len(self.len).and_then(|()| f.sync_data()).is_err() {
                    // Reopened (and repaired) before the next write.
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    /// Tell the head to [`Shared`] and to every sink.
    fn publish(&self) {
        let head = Head {
            seq: self.seq,
            hash: self.last.clone(),
        };
        *self.shared.head.locked() = head.clone();
        let sinks = self.shared.sinks.locked().clone();
        for sink in sinks {
            sink.durable(&head);
        }
    }

    /// Serve `rx` until closed: group commits, and window-hit counts a second
    /// after the first hit since the last drain (no wake-ups while idle).
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let mut due: Option<Instant> = None;
        loop {
            let mut jobs = Vec::new();
            let mut closing = false;
            let got = match due {
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(j) => jobs.push(j),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => closing = true,
            }
            jobs.extend(rx.try_iter());
            let mut drain = due.is_some_and(|at| Instant::now() >= at);
            let mut acks = Vec::new();
            // Each record, and whether it is kept for a retry when the write
            // fails: no one waits for it (window-hit counts, a lock).
            let mut records = Vec::new();
            for job in jobs {
                match job {
                    Job::Append(r, ack) => {
                        if drain_first(&r) {
                            records
                                .extend(self.shared.reuses.drain().into_iter().map(|r| (r, true)));
                        }
                        records.push((*r, ack.is_none()));
                        acks.extend(ack);
                    }
                    Job::Flush(ack) => {
                        drain = true;
                        acks.extend(ack);
                    }
                    Job::Wake => {
                        due.get_or_insert_with(|| Instant::now() + TICK);
                    }
                    Job::Close => closing = true,
                }
            }
            if drain || closing {
                records.extend(self.shared.reuses.drain().into_iter().map(|r| (r, true)));
                due = None;
            }
            if !records.is_empty() || !acks.is_empty() || (drain && !self.carry.is_empty()) {
                let outcome = self.commit(records);
                for ack in acks {
                    let _ = ack.send(outcome.clone());
                }
            }
            if !self.carry.is_empty() {
                // Retried each second until the log takes them.
                due.get_or_insert_with(|| Instant::now() + TICK);
            }
            if closing {
                return;
            }
        }
    }

    /// Write what was kept from a failed write, then `records`, as one group:
    /// one write, one fdatasync.
    fn commit(&mut self, records: Vec<(Record, bool)>) -> Result<(), AuditFailure> {
        let records: Vec<(Record, bool)> = std::mem::take(&mut self.carry)
            .into_iter()
            .map(|r| (r, true))
            .chain(records)
            .collect();
        if self.file.is_none() {
            if let Err(e) = self.reopen() {
                return Err(self.keep(&e, records));
            }
        }
        if records.is_empty() {
            return match self.shared.healthy.load(Ordering::SeqCst) {
                true => Ok(()),
                false => Err(self.failure(&std::io::Error::other("the last write failed"))),
            };
        }
        let (seq, last) = (self.seq, self.last.clone());
        let mut buf = String::new();
        for (r, _) in &records {
            self.push(r.clone(), &mut buf);
        }
        match self.write(buf.as_bytes()) {
            Ok(()) => {
                self.shared.healthy.store(true, Ordering::SeqCst);
                self.publish();
                Ok(())
            }
            Err(e) => {
                self.seq = seq;
                self.last = last;
                Err(self.keep(&e, records))
            }
        }
    }

    /// After a failed write: keep what no one waits for (up to [`MAX_CARRY`]) for the next one.
    fn keep(&mut self, e: &std::io::Error, records: Vec<(Record, bool)>) -> AuditFailure {
        let n = records.len();
        self.carry = records
            .into_iter()
            .filter(|(_, keep)| *keep)
            .map(|(r, _)| r)
            .collect();
        if self.carry.len() > MAX_CARRY {
            let dropped = self.carry.len() - MAX_CARRY;
            self.carry.drain(..dropped);
            tracing::error!("{dropped} window-hit or lock record(s) dropped: the audit log has refused writes too long");
        }
        self.fail(e, n)
    }

    fn fail(&self, e: &std::io::Error, records: usize) -> AuditFailure {
        self.shared.healthy.store(false, Ordering::SeqCst);
        let f = self.failure(e);
        tracing::error!("{f} ({records} record(s) not written)");
        f
    }
}

/// Whether the window-hit counts go before `r`: before a lock or unlock, so
/// the log shows the hits before the agent locked.
fn drain_first(r: &Record) -> bool {
    matches!(r.event.as_str(), "locked" | "unlocked")
}

/// Where a log file stands.
struct Scan {
    seq: u64,
    last: String,
    /// Length up to the last newline.
    good: u64,
    /// Bytes after the last newline: how many and their SHA-256.
    torn: Option<(u64, String)>,
}

fn scan(file: &File) -> std::io::Result<Scan> {
    let mut s = Scan {
        seq: 0,
        last: GENESIS.to_owned(),
        good: 0,
        torn: None,
    };
    let mut rd = BufReader::new(file);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = rd.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(s);
        }
        if line.last() != Some(&b'\n') {
            s.torn = Some((n as u64, hex::encode(Sha256::digest(&line))));
            return Ok(s);
        }
        s.good += n as u64;
        let text = String::from_utf8_lossy(&line[..n - 1]);
        if text.is_empty() {
            continue;
        }
        s.last = line_hash(&text);
        s.seq = serde_json::from_str::<Record>(&text)
            .map(|r| r.seq + 1)
            .unwrap_or(s.seq + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::super::AuditLog;
    use super::*;

    /// Each line's seq and prev follow the one before; how many lines.
    fn chained(path: &Path) -> u64 {
        let text = std::fs::read_to_string(path).unwrap();
        let mut last = GENESIS.to_owned();
        let mut n = 0;
        for line in text.lines() {
            let r: Record = serde_json::from_str(line).unwrap();
            assert_eq!((r.seq, r.prev.as_str()), (n, last.as_str()), "{line}");
            last = line_hash(line);
            n += 1;
        }
        n
    }

    fn rec(event: &str) -> Record {
        Record {
            event: event.into(),
            ..Default::default()
        }
    }

    struct Heard(Mutex<Vec<Head>>);
    impl HeadSink for Heard {
        fn durable(&self, head: &Head) {
            self.0.locked().push(head.clone());
        }
    }

    #[tokio::test]
    async fn concurrent_records_are_durable_chained_and_told_to_sinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join("audit.jsonl");
        let log = Arc::new(AuditLog::open(&path).unwrap());
        let heard = Arc::new(Heard(Mutex::new(vec![])));
        log.add_sink(heard.clone());
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let log = log.clone();
                tokio::spawn(async move { log.commit(rec("issued")).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let head = log.head();
        assert_eq!(head.seq, 50);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(head.hash, line_hash(text.lines().last().unwrap()));
        assert_eq!(heard.0.locked().last(), Some(&head));
        assert!(heard.0.locked().len() <= 50, "one call per group commit");
        assert_eq!(chained(&path), 50);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_recorded_by_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        log.commit(rec("enrolled")).await.unwrap();
        log.close();
        let before = log.head();
        let torn = b"{\"seq\":1,\"ev";
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(torn).unwrap();
        drop(f);
        let log = AuditLog::open(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let last: Record = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(last.event, "repaired");
        assert_eq!((last.seq, last.prev.as_str()), (1, before.hash.as_str()));
        let reason = last.reason.unwrap();
        assert!(reason.contains("cut 12 bytes"), "{reason}");
        assert!(
            reason.contains(&hex::encode(Sha256::digest(torn))),
            "{reason}"
        );
        assert_eq!(log.head().seq, 2);
        assert_eq!(chained(&path), 2);
    }

    #[tokio::test]
    async fn a_log_that_cannot_be_written_fails_each_record_and_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::create_dir(&path).unwrap();
        let log = AuditLog::open(&path).unwrap();
        assert!(!log.healthy());
        let e = log.commit(rec("issued")).await.unwrap_err();
        assert_eq!(e.path, path);
        assert!(e.to_string().contains("Is a directory"), "{e}");
        std::fs::remove_dir(&path).unwrap();
        log.commit(rec("issued")).await.unwrap();
        assert!(log.healthy());
        assert_eq!(log.head().seq, 1, "the failed record took no seq");
    }

    #[tokio::test]
    async fn window_hit_counts_outlive_a_failed_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::create_dir(&path).unwrap();
        let log = AuditLog::open(&path).unwrap();
        for _ in 0..3 {
            log.reused(7, 100, || rec("reused"));
        }
        assert!(log.sync().await.is_err());
        std::fs::remove_dir(&path).unwrap();
        log.sync().await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let r: Record = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!((r.event.as_str(), r.count), ("reused", Some(3)));
    }

    #[tokio::test]
    async fn window_hits_are_one_line_per_key_and_close_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&path).unwrap();
        for _ in 0..1000 {
            log.reused(7, 100, || rec("reused"));
        }
        log.close();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].count, Some(1000));
        assert!(log.commit(rec("issued")).await.is_err(), "closed");
    }
}
