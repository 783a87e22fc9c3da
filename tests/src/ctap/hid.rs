//! The CTAPHID transport of the emulated security key (CTAP 2.1 §11.2), served
//! on a SOCK_SEQPACKET Unix socket: one socket message per 64-byte HID report.
//!
//! Each accepted connection is a host that opened the device (with the
//! [`super::preload`] interposer, hidapi's `open("/path/of/socket")` connects).
//! Host writes arrive as 65 bytes (report id 0 ‖ report) or 64; the device
//! answers with 64-byte reports. Channels (CIDs) are device-wide, as on a real
//! key; a CTAPHID_CBOR request runs the [`CborHandler`] on a worker thread, so
//! the reader keeps reading CTAPHID_CANCEL (which sets the request's
//! [`CancelFlag`]) while KEEPALIVEs go out every [`KEEPALIVE_INTERVAL`].
//!
//! The device is one authenticator: while a CBOR request runs, every other
//! request on any channel or connection gets ERR_CHANNEL_BUSY (CTAPHID_INIT
//! and CTAPHID_CANCEL excepted). [`DeviceHandle::unplug`] is the key being
//! pulled out: connections are shut down (hosts read EOF, which the
//! interposer turns into EIO as hidraw does), the listener closes and the
//! socket file goes away.
//!
//! Not implemented: CTAPHID_LOCK (optional; answered ERR_INVALID_CMD) and
//! CTAP1/U2F (CAPABILITY_NMSG is set; CTAPHID_MSG gets ERR_INVALID_CMD).

pub mod frame;
pub mod host;
pub mod standin;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Shutdown;
use std::os::unix::fs::FileTypeExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use uds::{UnixSeqpacketConn, UnixSeqpacketListener};

use self::frame::{capability, cmd, err, fragment, normalise_write, Packet, BROADCAST_CID};
use super::{CancelFlag, CborHandler, OpContext, KEEPALIVE_PROCESSING};

/// The device sends a CTAPHID_KEEPALIVE whenever none has gone out for this
/// long while a CBOR request runs (the first one after this long). A handler
/// can send one at once through [`OpContext::keepalive`]; those count, so a
/// handler that sends its own every 100 ms does not double the rate.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(100);
/// A message whose continuation packets stop coming for this long is dropped
/// with ERR_MSG_TIMEOUT.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often blocked reader and listener threads look at the unplug flag and
/// at message timeouts.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A report the host does not read within this long is dropped (and the
/// connection given up on), so a stuck host cannot wedge the device.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// CTAPHID protocol version in the CTAPHID_INIT response.
pub const CTAPHID_PROTOCOL_VERSION: u8 = 2;
/// Device version (major, minor, build) in the CTAPHID_INIT response.
pub const DEVICE_VERSION: [u8; 3] = [0, 1, 0];
/// CTAP1_ERR_OTHER: the answer when the handler panics.
const CTAP1_ERR_OTHER: u8 = 0x7F;

/// What the device has seen and done, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Connections accepted: how many times a host opened the device.
    pub opens: u64,
    /// Connections ended (host closed the device, or unplug).
    pub closes: u64,
    /// Reports (host writes) received, well-formed or not.
    pub reports: u64,
    /// CTAPHID_INIT requests answered.
    pub inits: u64,
    /// First byte (the CTAP2 command) of every CTAPHID_CBOR request handed to the handler.
    pub cbor_commands: Vec<u8>,
    /// CBOR requests the handler has returned from.
    pub cbor_completed: u64,
    /// CTAPHID_CANCELs that reached a running request.
    pub cancels: u64,
    /// CTAPHID_KEEPALIVEs sent.
    pub keepalives: u64,
    /// CTAPHID_WINKs answered.
    pub winks: u64,
    /// CTAPHID_ERRORs sent: (channel, error code).
    pub errors: Vec<(u32, u8)>,
    /// Reports dropped without an answer (bad length, stray continuation packet).
    pub ignored: u64,
}

/// Starts emulated devices: see [`HidDevice::start`].
pub struct HidDevice;

impl HidDevice {
    /// Listen on `socket_path` (a stale socket file there is replaced) and serve
    /// CTAPHID on std threads until the returned handle is unplugged or dropped.
    pub fn start(socket_path: &Path, handler: Arc<dyn CborHandler>) -> io::Result<DeviceHandle> {
        remove_stale_socket(socket_path)?;
        let listener = UnixSeqpacketListener::bind(socket_path)?;
        listener.set_timeout(Some(POLL_INTERVAL))?;
        let shared = Arc::new(Shared {
            path: socket_path.to_path_buf(),
            handler,
            unplugged: AtomicBool::new(false),
            next_conn_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
            channels: Mutex::new(Channels {
                next: 1,
                allocated: HashSet::new(),
            }),
            busy: Mutex::new(None),
            stats: Mutex::new(DeviceStats::default()),
            stats_changed: Condvar::new(),
            readers: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("ctaphid-accept".into())
                .spawn(move || accept_loop(&shared, listener))?
        };
        Ok(DeviceHandle {
            shared,
            acceptor: Mutex::new(Some(acceptor)),
        })
    }
}

/// A running emulated device. Dropping it unplugs the device.
pub struct DeviceHandle {
    shared: Arc<Shared>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl DeviceHandle {
    /// The socket path: the "hidraw node" a host opens.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    pub fn is_plugged(&self) -> bool {
        !self.shared.unplugged.load(Ordering::SeqCst)
    }

    /// Pull the key out: cancel the running request, shut every connection
    /// down (a host blocked in read gets an error at once), close the
    /// listener and remove the socket file. Idempotent; returns once the
    /// transport's threads are gone (a handler still running is not waited
    /// for: its answer goes nowhere).
    pub fn unplug(&self) {
        {
            let conns = lock(&self.shared.conns);
            if !self.shared.unplugged.swap(true, Ordering::SeqCst) {
                let _ = std::fs::remove_file(&self.shared.path);
            }
            for conn in conns.values() {
                let _ = conn.sock.shutdown(Shutdown::Both);
            }
        }
        if let Some(op) = lock(&self.shared.busy).clone() {
            op.cancel.cancel();
        }
        if let Some(acceptor) = lock(&self.acceptor).take() {
            let _ = acceptor.join();
        }
        let readers: Vec<_> = lock(&self.shared.readers).drain(..).collect();
        for reader in readers {
            let _ = reader.join();
        }
    }

    /// A snapshot of what the device has seen.
    pub fn stats(&self) -> DeviceStats {
        lock(&self.shared.stats).clone()
    }

    /// Wait (without polling) until `pred` holds for the stats, up to
    /// `timeout`. Returns the stats that satisfied it, or `None` on timeout.
    pub fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&DeviceStats) -> bool,
    ) -> Option<DeviceStats> {
        let deadline = Instant::now() + timeout;
        let mut stats = lock(&self.shared.stats);
        loop {
            if pred(&stats) {
                return Some(stats.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            stats = self
                .shared
                .stats_changed
                .wait_timeout(stats, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for DeviceHandle {
    fn drop(&mut self) {
        self.unplug();
    }
}

// ---------------------------------------------------------------------------
// Device state
// ---------------------------------------------------------------------------

struct Shared {
    path: PathBuf,
    handler: Arc<dyn CborHandler>,
    unplugged: AtomicBool,
    next_conn_id: AtomicU64,
    /// Open connections. `unplugged` is set under this lock, and new
    /// connections are added under it only while plugged.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    channels: Mutex<Channels>,
    /// The CBOR request being processed, if any: the device is busy.
    busy: Mutex<Option<Arc<Op>>>,
    stats: Mutex<DeviceStats>,
    stats_changed: Condvar,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut DeviceStats)) {
        f(&mut lock(&self.stats));
        self.stats_changed.notify_all();
    }

    fn is_allocated(&self, cid: u32) -> bool {
        lock(&self.channels).allocated.contains(&cid)
    }

    fn allocate_channel(&self) -> u32 {
        let mut channels = lock(&self.channels);
        let cid = channels.next;
        channels.next = match cid.wrapping_add(1) {
            0 | BROADCAST_CID => 1,
            next => next,
        };
        channels.allocated.insert(cid);
        cid
    }

    /// The running request, if it belongs to this connection and channel.
    fn op_on(&self, conn: &Conn, cid: u32) -> Option<Arc<Op>> {
        lock(&self.busy)
            .as_ref()
            .filter(|op| op.conn.id == conn.id && op.cid == cid)
            .cloned()
    }

    fn send(&self, conn: &Conn, cid: u32, command: u8, payload: &[u8]) {
        // A host that went away or stopped reading is the reader's business.
        let _ = conn.send_message(cid, command, payload);
    }

    fn send_error(&self, conn: &Conn, cid: u32, code: u8) {
        // Counted before it is sent, as every count here: a host that saw
        // the message sees the count too.
        self.record(|s| s.errors.push((cid, code)));
        self.send(conn, cid, cmd::ERROR, &[code]);
    }
}

struct Channels {
    next: u32,
    allocated: HashSet<u32>,
}

/// One host's open of the device.
struct Conn {
    id: u64,
    sock: UnixSeqpacketConn,
    /// Held while the reports of one message go out, so messages never interleave.
    send_lock: Mutex<()>,
}

impl Conn {
    fn send_message(&self, cid: u32, command: u8, payload: &[u8]) -> io::Result<()> {
        let _guard = lock(&self.send_lock);
        for report in fragment(cid, command, payload) {
            self.sock.send(&report)?;
        }
        Ok(())
    }
}

/// A CBOR request being processed.
struct Op {
    conn: Arc<Conn>,
    cid: u32,
    cancel: Arc<CancelFlag>,
    state: Mutex<OpState>,
    /// Signalled when the request is done (stops the keep-alive ticker).
    finished: Condvar,
}

struct OpState {
    done: bool,
    /// The answer must not be sent (the channel was re-initialised or the host left).
    discarded: bool,
    /// Status of the periodic keep-alives: the last one the handler asked for.
    status: u8,
    /// When the last keep-alive went out (from the ticker or the handler).
    last_sent: Option<Instant>,
}

impl Op {
    /// The handler asks for a KEEPALIVE with `status` (which also becomes the
    /// periodic one). Sent at once unless one with the same status went out
    /// less than half an interval ago: ctap-hid-fido2 reads one keep-alive per
    /// ~100 ms, so keep-alives sent faster would pile up in front of the answer.
    fn keepalive(&self, shared: &Shared, status: u8) {
        let mut state = lock(&self.state);
        let recent = state
            .last_sent
            .is_some_and(|t| t.elapsed() < KEEPALIVE_INTERVAL / 2);
        let same = state.status == status;
        state.status = status;
        if !(recent && same) {
            self.send_keepalive(shared, &mut state);
        }
    }

    fn send_keepalive(&self, shared: &Shared, state: &mut OpState) {
        if !state.done && !state.discarded {
            shared.record(|s| s.keepalives += 1);
            shared.send(&self.conn, self.cid, cmd::KEEPALIVE, &[state.status]);
            state.last_sent = Some(Instant::now());
        }
    }

    fn discard(&self) {
        lock(&self.state).discarded = true;
        self.cancel.cancel();
    }
}

/// A message being assembled from an init packet and its continuation packets.
struct Assembly {
    cid: u32,
    command: u8,
    len: usize,
    data: Vec<u8>,
    next_seq: u8,
    last_packet: Instant,
}

// ---------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------

fn accept_loop(shared: &Arc<Shared>, listener: UnixSeqpacketListener) {
    while !shared.unplugged.load(Ordering::SeqCst) {
        let sock = match listener.accept_unix_addr() {
            Ok((sock, _addr)) => sock,
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // E.g. EMFILE: keep the device alive and try again.
                tracing::warn!("ctaphid device: accept failed: {e}");
                thread::sleep(POLL_INTERVAL);
                continue;
            }
        };
        if sock.set_read_timeout(Some(POLL_INTERVAL)).is_err()
            || sock.set_write_timeout(Some(WRITE_TIMEOUT)).is_err()
        {
            continue;
        }
        let conn = Arc::new(Conn {
            id: shared.next_conn_id.fetch_add(1, Ordering::SeqCst),
            sock,
            send_lock: Mutex::new(()),
        });
        {
            let mut conns = lock(&shared.conns);
            if shared.unplugged.load(Ordering::SeqCst) {
                break;
            }
            conns.insert(conn.id, conn.clone());
        }
        shared.record(|s| s.opens += 1);
        let reader = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("ctaphid-conn-{}", conn.id))
                .spawn(move || serve_conn(&shared, &conn))
        };
        match reader {
            Ok(reader) => lock(&shared.readers).push(reader),
            Err(e) => tracing::warn!("ctaphid device: cannot spawn a reader: {e}"),
        }
    }
    // The listener closes here.
}

/// Read reports from one host until it closes the device or the device is unplugged.
fn serve_conn(shared: &Arc<Shared>, conn: &Arc<Conn>) {
    let mut assembly: Option<Assembly> = None;
    // Larger than any valid write, so an oversized one shows as too long
    // (SOCK_SEQPACKET truncates it to the buffer).
    let mut buf = [0u8; 2 * frame::REPORT_LEN];
    while !shared.unplugged.load(Ordering::SeqCst) {
        match conn.sock.recv(&mut buf) {
            // End of stream: the host closed the device (a zero-length write
            // looks the same; hidapi never makes one).
            Ok(0) => break,
            Ok(n) => {
                match normalise_write(&buf[..n]) {
                    Some(report) => handle_report(shared, conn, &mut assembly, &report),
                    None => shared.record(|s| s.ignored += 1),
                }
                shared.record(|s| s.reports += 1);
            }
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
        if let Some(a) = &assembly {
            if a.last_packet.elapsed() >= MESSAGE_TIMEOUT {
                let cid = a.cid;
                assembly = None;
                shared.send_error(conn, cid, err::MSG_TIMEOUT);
            }
        }
    }
    // The host is gone: its running request is cancelled and its answer dropped.
    let running = lock(&shared.busy)
        .as_ref()
        .filter(|op| op.conn.id == conn.id)
        .cloned();
    if let Some(op) = running {
        op.discard();
    }
    lock(&shared.conns).remove(&conn.id);
    let _ = conn.sock.shutdown(Shutdown::Both);
    shared.record(|s| s.closes += 1);
}

fn handle_report(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    assembly: &mut Option<Assembly>,
    report: &[u8; frame::REPORT_LEN],
) {
    match Packet::parse(report) {
        Packet::Init {
            cid,
            cmd: command,
            bcnt,
            data,
        } => {
            let len = usize::from(bcnt);
            if command == cmd::INIT {
                return handle_init(shared, conn, assembly, cid, len, &data);
            }
            if cid == 0 || cid == BROADCAST_CID || !shared.is_allocated(cid) {
                return shared.send_error(conn, cid, err::INVALID_CHANNEL);
            }
            if command == cmd::CANCEL {
                // No answer to CANCEL itself; the cancelled request answers
                // (CTAP2_ERR_KEEPALIVE_CANCEL). A CANCEL with nothing to
                // cancel is ignored.
                if let Some(op) = shared.op_on(conn, cid) {
                    // Counted before the operation can see it.
                    shared.record(|s| s.cancels += 1);
                    op.cancel.cancel();
                }
                if assembly.as_ref().is_some_and(|a| a.cid == cid) {
                    *assembly = None;
                }
                return;
            }
            if let Some(a) = assembly.as_ref() {
                if a.cid != cid {
                    // Another channel is mid-transaction.
                    return shared.send_error(conn, cid, err::CHANNEL_BUSY);
                }
                // A new message before the last one was complete.
                *assembly = None;
                return shared.send_error(conn, cid, err::INVALID_SEQ);
            }
            if len > frame::MAX_MESSAGE_LEN {
                return shared.send_error(conn, cid, err::INVALID_LEN);
            }
            if lock(&shared.busy).is_some() {
                return shared.send_error(conn, cid, err::CHANNEL_BUSY);
            }
            if len <= frame::INIT_DATA_LEN {
                dispatch(shared, conn, cid, command, &data[..len]);
            } else {
                *assembly = Some(Assembly {
                    cid,
                    command,
                    len,
                    data: data.to_vec(),
                    next_seq: 0,
                    last_packet: Instant::now(),
                });
            }
        }
        Packet::Cont { cid, seq, data } => {
            let Some(a) = assembly.as_mut().filter(|a| a.cid == cid) else {
                // Not part of a transaction: ignored, as the spec says.
                return shared.record(|s| s.ignored += 1);
            };
            if seq != a.next_seq {
                *assembly = None;
                return shared.send_error(conn, cid, err::INVALID_SEQ);
            }
            a.next_seq += 1;
            a.last_packet = Instant::now();
            a.data.extend_from_slice(&data);
            if a.data.len() >= a.len {
                let a = assembly.take().expect("assembly present");
                dispatch(shared, conn, a.cid, a.command, &a.data[..a.len]);
            }
        }
    }
}

fn handle_init(
    shared: &Arc<Shared>,
    conn: &Arc<Conn>,
    assembly: &mut Option<Assembly>,
    cid: u32,
    len: usize,
    data: &[u8],
) {
    if cid == 0 || (cid != BROADCAST_CID && !shared.is_allocated(cid)) {
        return shared.send_error(conn, cid, err::INVALID_CHANNEL);
    }
    if len != 8 {
        return shared.send_error(conn, cid, err::INVALID_LEN);
    }
    if assembly.as_ref().is_some_and(|a| a.cid == cid) {
        *assembly = None;
    }
    let new_cid = if cid == BROADCAST_CID {
        shared.allocate_channel()
    } else {
        // Resynchronise an allocated channel: abort what runs on it, keep the CID.
        if let Some(op) = shared.op_on(conn, cid) {
            op.discard();
        }
        cid
    };
    let mut response = Vec::with_capacity(17);
    response.extend_from_slice(&data[..8]);
    response.extend_from_slice(&new_cid.to_be_bytes());
    response.push(CTAPHID_PROTOCOL_VERSION);
    response.extend_from_slice(&DEVICE_VERSION);
    response.push(capability::WINK | capability::CBOR | capability::NMSG);
    shared.record(|s| s.inits += 1);
    shared.send(conn, cid, cmd::INIT, &response);
}

/// A complete message on an allocated channel, device not busy.
fn dispatch(shared: &Arc<Shared>, conn: &Arc<Conn>, cid: u32, command: u8, payload: &[u8]) {
    match command {
        cmd::PING => shared.send(conn, cid, cmd::PING, payload),
        cmd::WINK if !payload.is_empty() => shared.send_error(conn, cid, err::INVALID_LEN),
        cmd::WINK => {
            shared.handler.wink();
            shared.record(|s| s.winks += 1);
            shared.send(conn, cid, cmd::WINK, &[]);
        }
        cmd::CBOR if payload.is_empty() => shared.send_error(conn, cid, err::INVALID_LEN),
        cmd::CBOR => start_cbor(shared, conn, cid, payload.to_vec()),
        // MSG (CTAP1/U2F, not supported: NMSG), LOCK (optional, not
        // implemented), device-to-host commands and unknown ones.
        _ => shared.send_error(conn, cid, err::INVALID_CMD),
    }
}

fn start_cbor(shared: &Arc<Shared>, conn: &Arc<Conn>, cid: u32, request: Vec<u8>) {
    let op = Arc::new(Op {
        conn: conn.clone(),
        cid,
        cancel: Arc::new(CancelFlag::new()),
        state: Mutex::new(OpState {
            done: false,
            discarded: false,
            status: KEEPALIVE_PROCESSING,
            last_sent: None,
        }),
        finished: Condvar::new(),
    });
    {
        let mut busy = lock(&shared.busy);
        if busy.is_some() {
            drop(busy);
            return shared.send_error(conn, cid, err::CHANNEL_BUSY);
        }
        *busy = Some(op.clone());
    }
    shared.record(|s| s.cbor_commands.push(request[0]));
    let worker = {
        let shared = shared.clone();
        let op = op.clone();
        thread::Builder::new()
            .name("ctaphid-cbor".into())
            .spawn(move || run_cbor(&shared, &op, &request))
    };
    if worker.is_err() {
        *lock(&shared.busy) = None;
        shared.send_error(conn, cid, err::OTHER);
    }
}

/// Worker thread of one CBOR request: keep-alive ticker, handler, answer.
fn run_cbor(shared: &Arc<Shared>, op: &Arc<Op>, request: &[u8]) {
    let ticker = {
        let shared = shared.clone();
        let op = op.clone();
        thread::Builder::new()
            .name("ctaphid-keepalive".into())
            .spawn(move || keepalive_ticker(&shared, &op))
            .ok()
    };
    let ctx = OpContext {
        cancel: op.cancel.clone(),
        keepalive: {
            let shared = shared.clone();
            let op = op.clone();
            Box::new(move |status| op.keepalive(&shared, status))
        },
    };
    let response = catch_unwind(AssertUnwindSafe(|| {
        shared.handler.handle_cbor(request, &ctx)
    }))
    .unwrap_or_else(|_| {
        tracing::error!("ctaphid device: the CBOR handler panicked");
        vec![CTAP1_ERR_OTHER]
    });
    drop(ctx);
    {
        let mut state = lock(&op.state);
        state.done = true;
        // Free the device before the host can see the answer and send the next request.
        {
            let mut busy = lock(&shared.busy);
            if busy.as_ref().is_some_and(|b| Arc::ptr_eq(b, op)) {
                *busy = None;
            }
        }
        shared.record(|s| s.cbor_completed += 1);
        if !state.discarded {
            shared.send(&op.conn, op.cid, cmd::CBOR, &response);
        }
        op.finished.notify_all();
    }
    if let Some(ticker) = ticker {
        let _ = ticker.join();
    }
}

/// Send a KEEPALIVE whenever none has gone out for [`KEEPALIVE_INTERVAL`],
/// until the request is done.
fn keepalive_ticker(shared: &Shared, op: &Op) {
    let start = Instant::now();
    let mut state = lock(&op.state);
    loop {
        if state.done {
            return;
        }
        let next = state.last_sent.unwrap_or(start) + KEEPALIVE_INTERVAL;
        let now = Instant::now();
        if now >= next {
            if state.discarded {
                // Nothing to tell anyone any more: wait for the handler to return.
                state = op.finished.wait(state).unwrap_or_else(|e| e.into_inner());
            } else {
                op.send_keepalive(shared, &mut state);
            }
            continue;
        }
        state = op
            .finished
            .wait_timeout(state, next - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every lock here guards plain data that stays consistent across a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Remove a socket file left by a device that is gone (nobody accepts on it).
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => match UnixSeqpacketConn::connect(path) {
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is in use by another device", path.display()),
            )),
            Err(_) => std::fs::remove_file(path),
        },
        _ => Ok(()),
    }
}
