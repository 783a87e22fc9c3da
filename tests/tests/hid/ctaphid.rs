//! The emulated key's CTAPHID transport, reached through the REAL
//! ctap-hid-fido2 / hidapi: `touchgate-ctap-probe` runs with the hidraw
//! interposer in `LD_PRELOAD` and opens the device's socket by path. Raw
//! CTAPHID (no crate) checks framing and error answers.
#![cfg(target_os = "linux")]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tempfile::TempDir;
use touchgate_agent::key::soft::{self, AutoTouch, ScriptedTouch, TouchSource};
use touchgate_tests::ctap::authenticator::{Authenticator, AuthenticatorOptions};
use touchgate_tests::ctap::hid::frame::{cmd, err, BROADCAST_CID, REPORT_LEN};
use touchgate_tests::ctap::hid::host::RawHost;
use touchgate_tests::ctap::hid::standin::{
    StandInHandler, AUTHENTICATOR_GET_INFO, AUTHENTICATOR_SELECTION, CTAP2_ERR_KEEPALIVE_CANCEL,
    STANDIN_AAGUID,
};
use touchgate_tests::ctap::hid::{DeviceHandle, HidDevice};
use touchgate_tests::ctap::{preload, CborHandler, OpContext, KEEPALIVE_UPNEEDED};

/// Only reached when something is wrong.
const TIMEOUT: Duration = Duration::from_secs(30);

const PROBE: &str = env!("CARGO_BIN_EXE_touchgate-ctap-probe");
const DEVICE: &str = env!("CARGO_BIN_EXE_touchgate-ctaphid-device");

struct Key {
    _dir: TempDir,
    device: DeviceHandle,
    handler: Arc<StandInHandler>,
}

fn start_key(touch: Arc<dyn TouchSource>) -> Key {
    let dir = tempfile::tempdir().unwrap();
    let handler = Arc::new(StandInHandler::new(touch));
    let device = HidDevice::start(&dir.path().join("key.sock"), handler.clone()).unwrap();
    Key {
        _dir: dir,
        device,
        handler,
    }
}

/// `touchgate-ctap-probe` under the interposer, its JSON lines read on a thread.
struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
}

impl Probe {
    fn spawn(path: &Path, scenario: &str) -> Probe {
        let mut child = Command::new(PROBE)
            .env("LD_PRELOAD", preload::preload_env())
            .arg("--path")
            .arg(path)
            .arg(scenario)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("probe printed a non-JSON line {line:?}: {e}"));
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        Probe {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    /// The next line, which must be the event `name`.
    fn expect(&self, name: &str) -> Value {
        let value = self
            .lines
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("probe: no `{name}` line"));
        assert_eq!(value["event"], name, "probe said {value}");
        value
    }

    fn send_line(&mut self) {
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    fn wait(mut self) -> ExitStatus {
        self.stdin.take();
        self.child.wait().unwrap()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_interposer_is_built() {
    let lib = preload::library_path();
    assert!(lib.is_file(), "{} missing", lib.display());
    assert!(lib.is_absolute());
}

#[test]
fn get_info_through_the_real_crate() {
    let key = start_key(Arc::new(AutoTouch));
    let probe = Probe::spawn(key.device.path(), "get-info");
    let info = probe.expect("get_info");
    assert!(probe.wait().success());
    assert_eq!(
        info["versions"],
        serde_json::json!(["FIDO_2_0", "FIDO_2_1"])
    );
    assert_eq!(info["extensions"], serde_json::json!(["hmac-secret"]));
    assert_eq!(info["aaguid"], hex::encode(STANDIN_AAGUID));
    assert_eq!(info["options"]["up"], true);
    assert_eq!(info["max_msg_size"], 1200);

    // One open, one CTAPHID_INIT, one CBOR request; the probe closed the device on exit.
    let stats = key
        .device
        .wait_until(TIMEOUT, |s| s.closes == 1)
        .expect("the probe's close reaches the device");
    assert_eq!(stats.opens, 1);
    assert_eq!(stats.inits, 1);
    assert_eq!(stats.cbor_commands, vec![AUTHENTICATOR_GET_INFO]);
    assert!(stats.errors.is_empty(), "{stats:?}");
}

#[test]
fn wink_through_the_real_crate() {
    let key = start_key(Arc::new(AutoTouch));
    let probe = Probe::spawn(key.device.path(), "wink");
    probe.expect("wink");
    assert!(probe.wait().success());
    assert_eq!(key.device.stats().winks, 1);
}

#[test]
fn cancel_from_the_host_reaches_the_handler() {
    let touch = Arc::new(ScriptedTouch::new());
    let key = start_key(touch.clone());
    let mut probe = Probe::spawn(key.device.path(), "cancel");
    probe.expect("started");
    // The handler is waiting for a touch (it asked for one: UPNEEDED keep-alive).
    assert!(touch.wait_requested(1, TIMEOUT), "no touch requested");
    probe.send_line();
    probe.expect("cancel_sent");
    let result = probe.expect("selection");
    assert_eq!(result["ok"], false);
    let error = result["error"].as_str().unwrap();
    assert!(error.contains("0x2D"), "{error}");
    assert!(probe.wait().success());

    let handled = key.handler.wait_handled(1, TIMEOUT).unwrap();
    assert_eq!(handled[0].command, AUTHENTICATOR_SELECTION);
    assert!(handled[0].cancelled, "the CancelFlag was not set");
    assert_eq!(handled[0].status, CTAP2_ERR_KEEPALIVE_CANCEL);
    let stats = key.device.stats();
    assert_eq!(stats.cancels, 1);
    // The crate can only send CANCEL between two keep-alive reads.
    assert!(stats.keepalives >= 1, "{stats:?}");
}

#[test]
fn a_touch_completes_a_waiting_request_through_the_real_crate() {
    let touch = Arc::new(ScriptedTouch::new());
    let key = start_key(touch.clone());
    let probe = Probe::spawn(key.device.path(), "selection");
    probe.expect("started");
    assert!(touch.wait_requested(1, TIMEOUT));
    touch.approve();
    let result = probe.expect("selection");
    assert_eq!(result["ok"], true, "{result}");
    assert!(probe.wait().success());
}

#[test]
fn unplug_mid_operation_fails_the_host_and_not_the_device() {
    let touch = Arc::new(ScriptedTouch::new());
    let key = start_key(touch.clone());
    let path = key.device.path().to_path_buf();
    let probe = Probe::spawn(&path, "selection");
    probe.expect("started");
    assert!(touch.wait_requested(1, TIMEOUT));

    key.device.unplug();
    assert!(!key.device.is_plugged());
    let result = probe.expect("selection");
    assert_eq!(result["ok"], false);
    // hidraw's read fails (EIO) and the crate reports a read error.
    assert!(
        result["error"].as_str().unwrap().contains("read err"),
        "{result}"
    );
    assert!(probe.wait().success());

    // The pending request was cancelled, its handler returned.
    let handled = key.handler.wait_handled(1, TIMEOUT).unwrap();
    assert!(handled[0].cancelled);
    // The key is gone: no socket, and opening it fails.
    assert!(!path.exists());
    let probe = Probe::spawn(&path, "get-info");
    let error = probe.expect("error");
    assert!(
        error["error"].as_str().unwrap().contains("Failed to open"),
        "{error}"
    );
    assert!(!probe.wait().success());
    // Unplugging again is harmless.
    key.device.unplug();
}

#[test]
fn a_host_that_dies_mid_operation_leaves_the_device_serving() {
    let touch = Arc::new(ScriptedTouch::new());
    let key = start_key(touch.clone());
    let probe = Probe::spawn(key.device.path(), "selection");
    probe.expect("started");
    assert!(touch.wait_requested(1, TIMEOUT));
    drop(probe); // SIGKILL: the host closes the device mid-request.

    let handled = key.handler.wait_handled(1, TIMEOUT).unwrap();
    assert!(
        handled[0].cancelled,
        "closing the device cancels its request"
    );
    key.device
        .wait_until(TIMEOUT, |s| s.cbor_completed == 1 && s.closes == 1)
        .unwrap();

    let probe = Probe::spawn(key.device.path(), "get-info");
    probe.expect("get_info");
    assert!(probe.wait().success());
}

#[test]
fn the_device_binary_serves_the_real_crate_and_unplugs_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("key.sock");
    let ready_file = dir.path().join("ready");
    let mut device = Command::new(DEVICE)
        .arg("--socket")
        .arg(&socket)
        .args(["--touch", "never", "--ready-file"])
        .arg(&ready_file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(device.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim_end(),
        format!("touchgate-ctaphid-device ready on {}", socket.display())
    );
    assert_eq!(
        PathBuf::from(std::fs::read_to_string(&ready_file).unwrap().trim_end()),
        socket
    );

    let probe = Probe::spawn(&socket, "get-info");
    probe.expect("get_info");
    assert!(probe.wait().success());

    // A request waiting for a touch that never comes, then SIGTERM: the host sees the key go.
    let probe = Probe::spawn(&socket, "selection");
    probe.expect("started");
    Command::new("kill")
        .args(["-TERM", &device.id().to_string()])
        .status()
        .unwrap();
    let result = probe.expect("selection");
    assert_eq!(result["ok"], false, "{result}");
    assert!(probe.wait().success());
    assert!(device.wait().unwrap().success());
    assert!(!socket.exists(), "the socket file is removed on exit");
}

// ---------------------------------------------------------------------------
// Raw CTAPHID
// ---------------------------------------------------------------------------

fn error_code(host: &RawHost, cid: u32) -> u8 {
    let msg = host.recv(TIMEOUT).unwrap();
    assert_eq!((msg.cid, msg.cmd), (cid, cmd::ERROR), "{msg:?}");
    assert_eq!(msg.payload.len(), 1);
    msg.payload[0]
}

fn ping_works(host: &RawHost, cid: u32) {
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
    host.send(cid, cmd::PING, &payload).unwrap();
    let msg = host.recv(TIMEOUT).unwrap();
    assert_eq!((msg.cid, msg.cmd), (cid, cmd::PING));
    assert_eq!(msg.payload, payload);
}

#[test]
fn init_ping_and_cbor_round_trip() {
    let key = start_key(Arc::new(AutoTouch));
    let host = RawHost::connect(key.device.path()).unwrap();

    // INIT: nonce ‖ CID ‖ protocol 2 ‖ version ‖ capabilities WINK|CBOR|NMSG.
    let nonce = *b"12345678";
    host.send(BROADCAST_CID, cmd::INIT, &nonce).unwrap();
    let init = host.recv(TIMEOUT).unwrap();
    assert_eq!((init.cid, init.cmd), (BROADCAST_CID, cmd::INIT));
    assert_eq!(init.payload.len(), 17);
    assert_eq!(init.payload[..8], nonce);
    let cid = u32::from_be_bytes(init.payload[8..12].try_into().unwrap());
    assert!(cid != 0 && cid != BROADCAST_CID);
    assert_eq!(init.payload[12], 2);
    assert_eq!(init.payload[16], 0x01 | 0x04 | 0x08);
    // A second INIT gets another channel; INIT on an allocated channel keeps it.
    let other = host.init(TIMEOUT).unwrap();
    assert_ne!(other, cid);
    host.send(cid, cmd::INIT, &nonce).unwrap();
    let resync = host.recv(TIMEOUT).unwrap();
    assert_eq!(resync.cid, cid);
    assert_eq!(resync.payload[8..12], cid.to_be_bytes());

    // PING echoes, over several continuation packets; the maximum size too.
    ping_works(&host, cid);
    let big = vec![0xEE; 7609];
    host.send(cid, cmd::PING, &big).unwrap();
    assert_eq!(host.recv(TIMEOUT).unwrap().payload, big);

    // CBOR: authenticatorGetInfo through the handler.
    host.send(cid, cmd::CBOR, &[AUTHENTICATOR_GET_INFO])
        .unwrap();
    let msg = host.recv(TIMEOUT).unwrap();
    assert_eq!((msg.cid, msg.cmd), (cid, cmd::CBOR));
    assert_eq!(msg.payload, StandInHandler::get_info());
    // WINK answers empty.
    host.send(cid, cmd::WINK, &[]).unwrap();
    let wink = host.recv(TIMEOUT).unwrap();
    assert_eq!((wink.cmd, wink.payload.len()), (cmd::WINK, 0));
    // 64-byte writes (no report id) are taken too.
    let mut report = [0u8; REPORT_LEN];
    report[..4].copy_from_slice(&cid.to_be_bytes());
    report[4] = 0x80 | cmd::PING;
    report[6] = 3;
    report[7..10].copy_from_slice(b"abc");
    host.send_raw(&report).unwrap();
    assert_eq!(host.recv(TIMEOUT).unwrap().payload, b"abc");
}

/// A handler whose request waits on the cancel flag, asking for a touch first.
struct WaitForCancel;

impl CborHandler for WaitForCancel {
    fn handle_cbor(&self, _request: &[u8], ctx: &OpContext) -> Vec<u8> {
        (ctx.keepalive)(KEEPALIVE_UPNEEDED);
        while !ctx.cancel.wait_timeout(TIMEOUT) {}
        vec![CTAP2_ERR_KEEPALIVE_CANCEL]
    }
}

#[test]
fn keepalives_busy_channels_and_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let device = HidDevice::start(&dir.path().join("key.sock"), Arc::new(WaitForCancel)).unwrap();
    let host = RawHost::connect(device.path()).unwrap();
    let cid = host.init(TIMEOUT).unwrap();
    let other = host.init(TIMEOUT).unwrap();

    host.send(cid, cmd::CBOR, &[0x01, 0xA0]).unwrap();
    // The handler's own UPNEEDED keep-alive, then periodic ones with the same status.
    for _ in 0..3 {
        let ka = host.recv(TIMEOUT).unwrap();
        assert_eq!((ka.cid, ka.cmd, ka.payload), (cid, cmd::KEEPALIVE, vec![2]));
    }
    // The device is busy: another channel, or another connection, gets CHANNEL_BUSY.
    host.send(other, cmd::PING, b"x").unwrap();
    let (msg, _) = host.recv_skipping_keepalives(TIMEOUT).unwrap();
    assert_eq!(
        (msg.cid, msg.cmd, msg.payload),
        (other, cmd::ERROR, vec![err::CHANNEL_BUSY])
    );
    let second = RawHost::connect(device.path()).unwrap();
    let cid2 = second.init(TIMEOUT).unwrap();
    second.send(cid2, cmd::CBOR, &[0x04]).unwrap();
    assert_eq!(error_code(&second, cid2), err::CHANNEL_BUSY);

    // CANCEL (no answer of its own) ends the request with KEEPALIVE_CANCEL.
    host.send(cid, cmd::CANCEL, &[]).unwrap();
    let (msg, _) = host.recv_skipping_keepalives(TIMEOUT).unwrap();
    assert_eq!(
        (msg.cid, msg.cmd, msg.payload),
        (cid, cmd::CBOR, vec![CTAP2_ERR_KEEPALIVE_CANCEL])
    );
    let stats = device
        .wait_until(TIMEOUT, |s| s.cbor_completed == 1)
        .unwrap();
    assert_eq!(stats.cancels, 1);
    // Not busy any more; a CANCEL with nothing to cancel is ignored.
    host.send(other, cmd::CANCEL, &[]).unwrap();
    ping_works(&host, other);
    ping_works(&second, cid2);
}

#[test]
fn malformed_reports_get_ctaphid_errors() {
    let key = start_key(Arc::new(AutoTouch));
    let host = RawHost::connect(key.device.path()).unwrap();
    let cid = host.init(TIMEOUT).unwrap();
    let other = host.init(TIMEOUT).unwrap();

    // Channels: reserved 0, broadcast for anything but INIT, never allocated.
    host.send(0, cmd::PING, b"x").unwrap();
    assert_eq!(error_code(&host, 0), err::INVALID_CHANNEL);
    host.send(BROADCAST_CID, cmd::CBOR, &[0x04]).unwrap();
    assert_eq!(error_code(&host, BROADCAST_CID), err::INVALID_CHANNEL);
    host.send(0x0BAD_0BAD, cmd::PING, b"x").unwrap();
    assert_eq!(error_code(&host, 0x0BAD_0BAD), err::INVALID_CHANNEL);

    // Commands: unknown, CTAP1 MSG (not supported), device-to-host ones.
    for command in [0x55, cmd::MSG, cmd::LOCK, cmd::KEEPALIVE, cmd::ERROR] {
        host.send(cid, command, &[1, 2, 3]).unwrap();
        assert_eq!(
            error_code(&host, cid),
            err::INVALID_CMD,
            "command {command:#x}"
        );
    }

    // Lengths: INIT needs 8 bytes; CBOR at least 1; WINK none; 7609 at most.
    host.send(BROADCAST_CID, cmd::INIT, &[1; 7]).unwrap();
    assert_eq!(error_code(&host, BROADCAST_CID), err::INVALID_LEN);
    host.send(cid, cmd::CBOR, &[]).unwrap();
    assert_eq!(error_code(&host, cid), err::INVALID_LEN);
    host.send(cid, cmd::WINK, &[1]).unwrap();
    assert_eq!(error_code(&host, cid), err::INVALID_LEN);
    let mut too_long = [0u8; REPORT_LEN + 1];
    too_long[1..5].copy_from_slice(&cid.to_be_bytes());
    too_long[5] = 0x80 | cmd::PING;
    too_long[6..8].copy_from_slice(&7610u16.to_be_bytes());
    host.send_raw(&too_long).unwrap();
    assert_eq!(error_code(&host, cid), err::INVALID_LEN);

    // Sequence: a skipped continuation packet, and a new message before the last ended.
    let start = |cid: u32| {
        let mut w = [0u8; REPORT_LEN + 1];
        w[1..5].copy_from_slice(&cid.to_be_bytes());
        w[5] = 0x80 | cmd::PING;
        w[6..8].copy_from_slice(&200u16.to_be_bytes());
        w
    };
    let cont = |cid: u32, seq: u8| {
        let mut w = [0u8; REPORT_LEN + 1];
        w[1..5].copy_from_slice(&cid.to_be_bytes());
        w[5] = seq;
        w
    };
    host.send_raw(&start(cid)).unwrap();
    host.send_raw(&cont(cid, 1)).unwrap();
    assert_eq!(error_code(&host, cid), err::INVALID_SEQ);
    host.send_raw(&start(cid)).unwrap();
    host.send_raw(&start(cid)).unwrap();
    assert_eq!(error_code(&host, cid), err::INVALID_SEQ);
    // Mid-message, another channel is told the device is busy.
    host.send_raw(&start(cid)).unwrap();
    host.send(other, cmd::PING, b"x").unwrap();
    assert_eq!(error_code(&host, other), err::CHANNEL_BUSY);
    // ... and the message still completes.
    for seq in 0..3 {
        host.send_raw(&cont(cid, seq)).unwrap();
    }
    let msg = host.recv(TIMEOUT).unwrap();
    assert_eq!((msg.cmd, msg.payload.len()), (cmd::PING, 200));

    // Dropped without an answer: stray continuation packets, bad write sizes, a report id.
    let ignored_before = key.device.stats().ignored;
    host.send_raw(&cont(cid, 0)).unwrap();
    host.send_raw(&[0x42]).unwrap_or(());
    host.send_raw(&[0u8; REPORT_LEN + 2]).unwrap();
    host.send_raw(&[0u8; 500]).unwrap();
    let mut with_report_id = start(cid);
    with_report_id[0] = 1;
    host.send_raw(&with_report_id).unwrap();
    // The one-byte write is a (zero-padded) continuation packet for channel 0x42000000: stray.
    key.device
        .wait_until(TIMEOUT, |s| s.ignored == ignored_before + 5)
        .expect("five reports dropped");
    ping_works(&host, cid);
    assert_eq!(key.device.stats().closes, 0, "the connection survived");
}

#[test]
fn random_reports_do_not_crash_the_device() {
    let key = start_key(Arc::new(AutoTouch));
    let fuzz = RawHost::connect(key.device.path()).unwrap();
    let good = RawHost::connect(key.device.path()).unwrap();
    let cid = good.init(TIMEOUT).unwrap();
    let fuzz_cid = fuzz.init(TIMEOUT).unwrap();
    let before = key.device.stats().reports;

    // The fuzzing host reads its answers on a thread until the device closes it.
    let fuzz = Arc::new(fuzz);
    let drain = {
        let fuzz = fuzz.clone();
        thread::spawn(move || {
            let mut answers = 0u64;
            while let Ok(Some(_)) = fuzz.recv_report(TIMEOUT) {
                answers += 1;
            }
            answers
        })
    };
    let mut rng = StdRng::seed_from_u64(0x7467);
    for _ in 0..3000 {
        let len = match rng.gen_range(0..4) {
            0 => REPORT_LEN + 1,
            1 => REPORT_LEN,
            _ => rng.gen_range(1..=80),
        };
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        if len == REPORT_LEN + 1 {
            bytes[0] = 0;
        }
        // Half of them on the fuzzer's own channel, so messages get assembled and run.
        if rng.gen_bool(0.5) && len >= 5 {
            let off = usize::from(len == REPORT_LEN + 1);
            bytes[off..off + 4].copy_from_slice(&fuzz_cid.to_be_bytes());
        }
        fuzz.send_raw(&bytes).unwrap();
    }
    // Once the device has read them all and finished what they started, it serves the other host.
    key.device
        .wait_until(TIMEOUT, |s| {
            s.reports >= before + 3000 && s.cbor_completed as usize == s.cbor_commands.len()
        })
        .expect("the device reads every report");
    ping_works(&good, cid);
    good.send(cid, cmd::CBOR, &[AUTHENTICATOR_GET_INFO])
        .unwrap();
    assert_eq!(
        good.recv(TIMEOUT).unwrap().payload,
        StandInHandler::get_info()
    );

    key.device.unplug();
    let answers = drain.join().unwrap();
    assert!(answers > 0, "the fuzzer got error answers");
}

/// A handler that panics.
struct Panics;

impl CborHandler for Panics {
    fn handle_cbor(&self, _request: &[u8], _ctx: &OpContext) -> Vec<u8> {
        panic!("handler bug");
    }
}

#[test]
fn a_panicking_handler_answers_ctap1_err_other() {
    let dir = tempfile::tempdir().unwrap();
    let device = HidDevice::start(&dir.path().join("key.sock"), Arc::new(Panics)).unwrap();
    let host = RawHost::connect(device.path()).unwrap();
    let cid = host.init(TIMEOUT).unwrap();
    for _ in 0..2 {
        host.send(cid, cmd::CBOR, &[0x04]).unwrap();
        let (msg, _) = host.recv_skipping_keepalives(TIMEOUT).unwrap();
        assert_eq!((msg.cmd, msg.payload), (cmd::CBOR, vec![0x7F]));
    }
    ping_works(&host, cid);
}

// ---------------------------------------------------------------------------
// With the real CTAP2 authenticator
// ---------------------------------------------------------------------------

fn start_authenticator(
    dir: &Path,
    options: AuthenticatorOptions,
) -> (DeviceHandle, Arc<Authenticator>) {
    let touch: Arc<dyn TouchSource> = Arc::new(AutoTouch);
    let key = soft::open(&dir.join("key.state"), touch.clone()).unwrap();
    let authenticator = Arc::new(Authenticator::new(Arc::new(key), touch, options));
    let device = HidDevice::start(&dir.join("key.sock"), authenticator.clone()).unwrap();
    (device, authenticator)
}

#[test]
fn enrol_and_hmac_secret_through_the_real_crate() {
    let dir = tempfile::tempdir().unwrap();
    let (device, _authenticator) = start_authenticator(dir.path(), AuthenticatorOptions::default());
    let probe = Probe::spawn(device.path(), "enrol-assert");
    let enrolled = probe.expect("enrolled");
    let asserted = probe.expect("asserted");
    assert!(probe.wait().success());
    assert_eq!(enrolled["flags_user_present"], true, "{enrolled}");
    assert_eq!(enrolled["hmac_secret_extension"], true, "{enrolled}");
    assert_eq!(enrolled["public_key_len"], 65, "{enrolled}");
    for field in [
        "same_salt_same_secret",
        "other_salt_other_secret",
        "signatures_verified",
        "counter_increased",
    ] {
        assert_eq!(asserted[field], true, "{field}: {asserted}");
    }
    // makeCredential, then per getAssertion a clientPIN getKeyAgreement and the assertion.
    let stats = device.stats();
    assert_eq!(stats.cbor_commands.first(), Some(&0x01), "{stats:?}");
    assert!(stats.errors.is_empty(), "{stats:?}");
}

/// A handler that asks for a keep-alive every 10 ms until cancelled.
struct ChattyKeepalives;

impl CborHandler for ChattyKeepalives {
    fn handle_cbor(&self, _request: &[u8], ctx: &OpContext) -> Vec<u8> {
        while !ctx.cancel.wait_timeout(Duration::from_millis(10)) {
            (ctx.keepalive)(KEEPALIVE_UPNEEDED);
        }
        vec![CTAP2_ERR_KEEPALIVE_CANCEL]
    }
}

#[test]
fn keepalives_are_rate_limited_so_the_crate_keeps_up() {
    let dir = tempfile::tempdir().unwrap();
    let device =
        HidDevice::start(&dir.path().join("key.sock"), Arc::new(ChattyKeepalives)).unwrap();
    let host = RawHost::connect(device.path()).unwrap();
    let cid = host.init(TIMEOUT).unwrap();
    host.send(cid, cmd::CBOR, &[0x01]).unwrap();
    let first = host.recv(TIMEOUT).unwrap();
    assert_eq!((first.cmd, first.payload), (cmd::KEEPALIVE, vec![2]));
    let start = std::time::Instant::now();
    for _ in 0..4 {
        assert_eq!(host.recv(TIMEOUT).unwrap().cmd, cmd::KEEPALIVE);
    }
    // At most one per half interval, however often the handler asks.
    assert!(
        start.elapsed() >= Duration::from_millis(4 * 50 - 10),
        "{:?}",
        start.elapsed()
    );
    host.send(cid, cmd::CANCEL, &[]).unwrap();
    let (msg, _) = host.recv_skipping_keepalives(TIMEOUT).unwrap();
    assert_eq!(msg.payload, vec![CTAP2_ERR_KEEPALIVE_CANCEL]);
}
