//! Who is on the other end of a loopback TCP connection: Linux `/proc` here,
//! `lsof` in [`crate::lsof`], one [`Finder`] to choose between them.
//!
//! The kernel lists every TCP socket of this network namespace in
//! `/proc/net/tcp` and `/proc/net/tcp6` with its owner's uid and inode. The
//! client's socket is the one whose local address is the peer address we see
//! and whose remote address is our listening address. Its inode names the
//! process: the one with a `/proc/PID/fd/N` link to `socket:[INODE]`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use touchgate::process;

/// The owner of a TCP peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    /// The process holding the socket, when it could be found (another
    /// user's processes are not readable unless we are root).
    pub pid: Option<u32>,
}

/// One row of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub uid: u32,
    pub inode: u64,
}

/// Parse an address column: `0100007F:1F90` (IPv4) or 32 hex digits `:PORT` (IPv6).
/// Each 32-bit word is printed in host byte order, the port in plain hex.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |hex: &str| -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(hex.len() / 2);
        for i in (0..hex.len()).step_by(8) {
            let w = u32::from_str_radix(hex.get(i..i + 8)?, 16).ok()?;
            out.extend_from_slice(&w.to_ne_bytes());
        }
        Some(out)
    };
    let ip = match ip.len() {
        8 => {
            let b: [u8; 4] = words(ip)?.try_into().ok()?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        32 => {
            let b: [u8; 16] = words(ip)?.try_into().ok()?;
            let v6 = Ipv6Addr::from(b);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Parse one row of `/proc/net/tcp` or `/proc/net/tcp6`.
fn parse_row(line: &str) -> Option<TcpRow> {
    let f: Vec<&str> = line.split_whitespace().collect();
    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode …
    if f.len() < 10 {
        return None;
    }
    Some(TcpRow {
        local: parse_addr(f[1])?,
        remote: parse_addr(f[2])?,
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// Parse the text of `/proc/net/tcp` or `/proc/net/tcp6` (header line skipped).
#[cfg(test)]
pub fn parse_table(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_row).collect()
}

/// Normalise IPv4-mapped IPv6 addresses so both tables compare alike.
pub fn canon(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// The row of the client end: local = `peer`, remote = `server`.
pub fn find_row(rows: &[TcpRow], peer: SocketAddr, server: SocketAddr) -> Option<&TcpRow> {
    let (peer, server) = (canon(peer), canon(server));
    rows.iter()
        .find(|r| r.local == peer && r.remote == server && r.inode != 0)
}

/// The first process under `proc_root` owned by `uid` holding `socket:[inode]`.
pub fn find_pid(proc_root: &Path, uid: u32, inode: u64) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let want = format!("socket:[{inode}]");
    for e in std::fs::read_dir(proc_root).ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        // Only the peer's own processes can hold its socket (save for fd passing).
        match e.metadata() {
            Ok(m) if m.uid() == uid => {}
            _ => continue,
        }
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The row of the client end in the socket table at `path`, read only as far
/// as that row: every `read` of these files costs the kernel a walk of the
/// connection hash (about 2 ms on a large machine, however few sockets there
/// are), and a read may stop short of the end.
fn find_in_table(path: &Path, peer: SocketAddr, server: SocketAddr) -> Option<TcpRow> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    let mut header = true;
    loop {
        let n = f.read(&mut chunk).ok()?;
        pending.extend_from_slice(&chunk[..n]);
        // Whole lines only; at the end of the file, whatever is left.
        let end = match (n, pending.iter().rposition(|b| *b == b'\n')) {
            (0, _) => pending.len(),
            (_, Some(i)) => i + 1,
            (_, None) => continue,
        };
        let lines: Vec<u8> = pending.drain(..end).collect();
        for line in String::from_utf8_lossy(&lines).lines() {
            if std::mem::take(&mut header) {
                continue;
            }
            if let Some(row) = parse_row(line) {
                if find_row(std::slice::from_ref(&row), peer, server).is_some() {
                    return Some(row);
                }
            }
        }
        if n == 0 {
            return None;
        }
    }
}

/// Who holds the client end of the connection `peer` → `server`, from
/// `proc_root` (`/proc`). `None` when no such socket is listed (the client
/// already hung up, or no `/proc`). The process is searched for only when the
/// socket's uid is `pid_if_uid` (another user's processes need not be read).
pub fn lookup_in(
    proc_root: &Path,
    peer: SocketAddr,
    server: SocketAddr,
    pid_if_uid: Option<u32>,
) -> Option<Peer> {
    // An IPv4 client is in `tcp`; `tcp6` (IPv6, or IPv4-mapped sockets) only
    // when it is not there.
    let row = ["tcp", "tcp6"]
        .iter()
        .find_map(|t| find_in_table(&proc_root.join("net").join(t), peer, server))?;
    let row = &row;
    let pid = if pid_if_uid == Some(row.uid) {
        find_pid(proc_root, row.uid, row.inode)
    } else {
        None
    };
    Some(Peer { uid: row.uid, pid })
}

/// A process's program for a touch prompt: the executable's name, and for an
/// interpreter (python, node, …) the script it runs, e.g. `python3.11 gcloud.py`.
pub fn program_name(pid: u32) -> Option<String> {
    let exe: PathBuf = process::exe_of(pid)?;
    let name = exe.file_name()?.to_string_lossy().into_owned();
    let interpreter = [
        "python", "node", "ruby", "perl", "java", "bash", "sh", "dash",
    ]
    .iter()
    .any(|i| name.starts_with(i));
    if !interpreter {
        return Some(name);
    }
    let args = process::args_of(pid).unwrap_or_default();
    Some(match script_of(&args) {
        Some(s) => format!("{name} {s}"),
        None => name,
    })
}

/// How the shim tells who holds a connection's client end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finder {
    /// `/proc/net/tcp{,6}` and `/proc/PID/fd` under this root (Linux).
    Proc(PathBuf),
    /// The `lsof` program at this path (macOS; Linux on request).
    Lsof(PathBuf),
}

impl Finder {
    /// `choice`: `proc`, `lsof`, or `auto`/`None` (`/proc` where it lists TCP
    /// sockets, else lsof). An error names what is missing and how to fix it.
    pub fn choose(choice: Option<&str>) -> Result<Finder, String> {
        let proc_root = PathBuf::from("/proc");
        let has_proc = proc_root.join("net/tcp").is_file();
        let lsof = || {
            crate::lsof::find().ok_or_else(|| {
                "cannot tell callers apart: lsof not found on PATH or in /usr/sbin; install lsof".to_owned()
            })
        };
        match choice.unwrap_or("auto") {
            "proc" if has_proc => Ok(Finder::Proc(proc_root)),
            "proc" => Err(
                "--callers-from proc: /proc/net/tcp is not readable here; use --callers-from lsof"
                    .into(),
            ),
            "lsof" => lsof().map(Finder::Lsof),
            "auto" if has_proc => Ok(Finder::Proc(proc_root)),
            "auto" => lsof().map(Finder::Lsof),
            other => Err(format!(
                "--callers-from {other:?}: expected proc, lsof or auto"
            )),
        }
    }

    /// Who holds the client end of `peer` → `server`; its process is looked for
    /// when the uid is `my_uid` (another uid is refused anyway).
    pub fn owner(&self, peer: SocketAddr, server: SocketAddr, my_uid: u32) -> Option<Peer> {
        match self {
            Finder::Proc(root) => lookup_in(root, peer, server, Some(my_uid)),
            Finder::Lsof(lsof) => crate::lsof::lookup(lsof, peer, server),
        }
    }

    /// Where a connection that was not found was looked for, for the error.
    pub fn source(&self) -> &'static str {
        match self {
            Finder::Proc(_) => "connection not in /proc/net/tcp",
            Finder::Lsof(_) => "lsof does not list the connection among this user's processes",
        }
    }
}

/// The script or module an interpreter's argv names: the first non-option
/// argument (base name), or the module after `-m`.
fn script_of(args: &[String]) -> Option<String> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "-m" {
            return it.next().cloned();
        }
        if a == "-c" {
            return Some("-c".into());
        }
        if a.starts_with('-') {
            continue;
        }
        return Path::new(a)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:22F2 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:A1B2 0100007F:22F2 01 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:22F2 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 3003 1 0000000000000000 20 4 30 10 -1
";

    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:C350 00000000000000000000000001000000:22F2 01 00000000:00000000 00:00000000 00000000 65534        0 4004 1 0000000000000000 20 4 0 10 -1
   1: 0000000000000000FFFF00000100007F:C351 0000000000000000FFFF00000100007F:22F2 01 00000000:00000000 00:00000000 00000000 65534        0 5005 1 0000000000000000 20 4 0 10 -1
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_ipv4_rows_and_finds_the_client_end() {
        let rows = parse_table(TCP);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].local, sa("127.0.0.1:8946"));
        let r = find_row(&rows, sa("127.0.0.1:41394"), sa("127.0.0.1:8946")).unwrap();
        assert_eq!((r.uid, r.inode), (1000, 2002), "the client end, not ours");
        assert!(find_row(&rows, sa("127.0.0.1:1"), sa("127.0.0.1:8946")).is_none());
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn parses_ipv6_rows_and_mapped_ipv4() {
        let rows = parse_table(TCP6);
        assert_eq!(rows[0].local, sa("[::1]:50000"));
        assert_eq!(rows[1].local, sa("127.0.0.1:50001"), "v4-mapped becomes v4");
        let r = find_row(&rows, sa("[::ffff:127.0.0.1]:50001"), sa("127.0.0.1:8946")).unwrap();
        assert_eq!(r.uid, 65534);
        let r = find_row(&rows, sa("[::1]:50000"), sa("[::1]:8946")).unwrap();
        assert_eq!(r.inode, 4004);
    }

    #[test]
    fn junk_lines_are_skipped() {
        assert!(parse_table("header\nnot a row\n 0: zz:zz 00:00 01").is_empty());
    }

    #[test]
    fn interpreters_are_named_by_their_script() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            script_of(&a(&["python3", "-S", "/usr/lib/sdk/lib/gcloud.py", "ai"])),
            Some("gcloud.py".into())
        );
        assert_eq!(script_of(&a(&["python3", "-m", "pip"])), Some("pip".into()));
        assert_eq!(script_of(&a(&["python3"])), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn finds_this_process_as_the_peer_of_a_real_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_conn, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let me = touchgate::paths::current_uid();
        let p = lookup_in(Path::new("/proc"), peer, server, Some(me))
            .expect("the connection is in /proc/net/tcp");
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(p.uid, std::os::unix::fs::MetadataExt::uid(&me));
        assert_eq!(p.pid, Some(std::process::id()));
        let name = program_name(std::process::id()).unwrap();
        assert!(!name.is_empty());
        drop(client);
    }
}
