//! Acting as another user (uid 65534, via `setpriv`): the tests run as root,
//! as CI does, and switch uid for the attacker's side.
//!
//! [`Holder`] is that attacker holding many connections open to a server (TCP
//! or a Unix socket), each optionally half-sent, and reporting when the server
//! closes them. It is a small Python script (`/usr/bin/python3`: a system
//! interpreter another uid can run), so one process holds a thousand sockets.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const NOBODY: u32 = 65534;

/// `program` run as uid/gid 65534 (setpriv execs it: the pid is the program's).
pub fn as_nobody(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(program);
    c
}

/// Fail (never skip) unless we are root with setpriv, as these tests need.
pub fn require_root_and_setpriv() {
    assert!(
        Command::new("setpriv").arg("--version").output().is_ok(),
        "setpriv is missing: install util-linux"
    );
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()),
        0,
        "this test runs processes as uid 65534 with setpriv and must run as root (as CI does)"
    );
}

const PYTHON: &str = "/usr/bin/python3";

/// Opens N connections, sends PAYLOAD on each, prints `open K`; then reads and
/// discards what the server sends. `hold`: prints `all closed` once the server
/// has closed every one. `flood`: reopens each one the server closes, forever.
const HOLDER: &str = r#"
import resource, select, socket, sys
kind, target, n, payload, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), bytes.fromhex(sys.argv[4]), sys.argv[5]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft < n + 64:
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
def connect():
    if kind == "tcp":
        host, port = target.rsplit(":", 1)
        s = socket.create_connection((host, int(port)))
    else:
        s = socket.socket(socket.AF_UNIX)
        s.connect(target)
    if payload:
        s.sendall(payload)
    return s
socks = {}
for _ in range(n):
    try:
        s = connect()
    except OSError as e:
        print("connect failed:", e, flush=True)
        break
    socks[s.fileno()] = s
print("open", len(socks), flush=True)
poll = select.poll()
for fd in socks:
    poll.register(fd, select.POLLIN)
while socks:
    for fd, _ in poll.poll():
        s = socks[fd]
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        if data:
            continue
        poll.unregister(fd)
        del socks[fd]
        s.close()
        if mode == "flood":
            try:
                s = connect()
            except OSError:
                continue
            socks[s.fileno()] = s
            poll.register(s.fileno(), select.POLLIN)
print("all closed", flush=True)
"#;

/// Where a [`Holder`] connects.
pub enum Target<'a> {
    /// `127.0.0.1:PORT`
    Tcp(&'a str),
    Unix(&'a Path),
}

/// Whether a [`Holder`] reopens what the server closes.
#[derive(Clone, Copy)]
pub enum Mode {
    Hold,
    Flood,
}

/// Another user's process holding connections open; killed on drop.
pub struct Holder {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Holder {
    /// Start holding `n` connections to `target` as uid 65534, each sent `payload` first.
    pub fn start_as_nobody(target: Target, n: usize, payload: &[u8], mode: Mode) -> Holder {
        require_root_and_setpriv();
        assert!(
            Path::new(PYTHON).exists(),
            "{PYTHON} is missing: install python3 (apt-get install python3)"
        );
        let (kind, target) = match target {
            Target::Tcp(a) => ("tcp", a.to_owned()),
            Target::Unix(p) => ("unix", p.display().to_string()),
        };
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        let mode = match mode {
            Mode::Hold => "hold",
            Mode::Flood => "flood",
        };
        let mut child = as_nobody(Path::new(PYTHON))
            .args(["-c", HOLDER, kind, &target, &n.to_string(), &hex, mode])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Holder { child, lines }
    }

    /// The next line starting with `prefix` within `within`, or a panic naming `what`.
    pub fn wait_line(&self, prefix: &str, within: Duration, what: &str) -> String {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => continue,
                Err(_) => panic!("{what}: no {prefix:?} from the holder within {within:?}"),
            }
        }
    }

    /// Wait until all `n` connections are open.
    pub fn wait_open(&self, n: usize) {
        let l = self.wait_line("open ", Duration::from_secs(60), "opening connections");
        assert_eq!(l, format!("open {n}"), "every connection opened");
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
