//! Who owns a loopback TCP socket, for the shim (who is calling it?) and for
//! its clients (is the shim at this address ours?): `/proc/net/tcp{,6}` on
//! Linux, `lsof` ([`crate::lsof`]) where there is no `/proc` (macOS).
//!
//! The kernel lists every TCP socket of this network namespace in
//! `/proc/net/tcp` and `/proc/net/tcp6` with its owner's uid and inode. The
//! client's socket is the one whose local address is the peer address we see
//! and whose remote address is our listening address.
//!
//! A client checks a listener through the very connection it will use
//! ([`connect_own`]): the server end of that connection carries the uid of the
//! listening socket (the kernel copies it onto each accepted socket, even one
//! not yet accepted), so there is no race between checking and using it. Only
//! an ESTABLISHED server end counts: a socket its owner already closed is
//! listed under uid 0. Nothing is written to a connection before its owner is
//! known to be us; not knowing is a refusal.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::ops::ControlFlow;
use std::path::Path;
use std::time::Duration;

/// The kernel's number for an established TCP connection.
pub const ESTABLISHED: u8 = 0x01;

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
    /// The TCP state, as the kernel numbers it ([`ESTABLISHED`], `0A` listen, …).
    pub state: u8,
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
        state: u8::from_str_radix(f[3], 16).ok()?,
        uid: f[7].parse().ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// Parse the text of `/proc/net/tcp` or `/proc/net/tcp6` (header line skipped).
#[cfg(test)]
fn parse_table(text: &str) -> Vec<TcpRow> {
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

/// Every row of the socket table at `path`, in order, until `visit` says
/// stop: the file is read only as far as that. Every `read` of these files
/// costs the kernel a walk of the connection hash (about 2 ms on a large
/// machine, however few sockets are wanted), so a caller that wants several
/// rows asks for them in one scan. An unreadable table has no rows.
pub fn scan_table(path: &Path, mut visit: impl FnMut(TcpRow) -> ControlFlow<()>) {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(path) else {
        return;
    };
    let mut chunk = vec![0u8; 1 << 20];
    let mut pending: Vec<u8> = Vec::new();
    let mut header = true;
    loop {
        let Ok(n) = f.read(&mut chunk) else {
            return;
        };
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
                if visit(row).is_break() {
                    return;
                }
            }
        }
        if n == 0 {
            return;
        }
    }
}

/// The first row of the socket table at `path` that `want` accepts.
fn find_in_table(path: &Path, want: &dyn Fn(&TcpRow) -> bool) -> Option<TcpRow> {
    let mut found = None;
    scan_table(path, |row| {
        if want(&row) {
            found = Some(row);
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// The row of the client end of `peer` → `server` under `proc_root` (`/proc`):
/// local = `peer`, remote = `server`, a live socket (inode not 0). An IPv4
/// client is in `tcp`; `tcp6` (IPv6, or IPv4-mapped sockets) only when it is not there.
pub fn client_end(proc_root: &Path, peer: SocketAddr, server: SocketAddr) -> Option<TcpRow> {
    let want = |r: &TcpRow| find_row(std::slice::from_ref(r), peer, server).is_some();
    ["tcp", "tcp6"]
        .iter()
        .find_map(|t| find_in_table(&proc_root.join("net").join(t), &want))
}

/// Why a loopback listener may not be used.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("nothing listens on {addr}")]
    NothingListens { addr: SocketAddr },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} is held by uid {owner}, not by you (uid {me})")]
    Foreign {
        addr: SocketAddr,
        owner: u32,
        me: u32,
    },
    #[error("cannot tell who listens on {addr} ({why}), so it is not trusted")]
    Unknown { addr: SocketAddr, why: String },
}

/// Connect to the loopback `addr` and make sure the listener is ours before
/// the caller writes a byte. Refused when another uid holds it, or when its
/// owner cannot be found.
pub fn connect_own(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, OwnerError> {
    if !addr.ip().is_loopback() {
        return Err(OwnerError::Unknown {
            addr,
            why: "not a loopback address".into(),
        });
    }
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|source| {
        if source.kind() == std::io::ErrorKind::ConnectionRefused {
            OwnerError::NothingListens { addr }
        } else {
            OwnerError::Connect { addr, source }
        }
    })?;
    let local = s
        .local_addr()
        .map_err(|source| OwnerError::Connect { addr, source })?;
    let me = crate::paths::current_uid();
    match server_end_uid(addr, local) {
        Ok(uid) if uid == me => Ok(s),
        Ok(owner) => Err(OwnerError::Foreign { addr, owner, me }),
        Err(why) => Err(OwnerError::Unknown { addr, why }),
    }
}

/// The uid of the server end of our connection `local` → `server`.
fn server_end_uid(server: SocketAddr, local: SocketAddr) -> Result<u32, String> {
    let proc_root = Path::new("/proc");
    if proc_root.join("net/tcp").is_file() {
        let (server, local) = (canon(server), canon(local));
        let want = |r: &TcpRow| r.local == server && r.remote == local && r.state == ESTABLISHED;
        return ["tcp", "tcp6"]
            .iter()
            .find_map(|t| find_in_table(&proc_root.join("net").join(t), &want))
            .map(|r| r.uid)
            .ok_or_else(|| "its end of the connection is not in /proc/net/tcp".into());
    }
    // lsof run by a user lists only that user's sockets: found means ours.
    let lsof = crate::lsof::find()
        .ok_or_else(|| "lsof not found on PATH or in /usr/sbin; install lsof".to_owned())?;
    crate::lsof::lookup(&lsof, server, local)
        .map(|p| p.uid)
        .ok_or_else(|| "lsof does not list it among this user's sockets".into())
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
        assert_eq!((rows[0].state, rows[1].state), (0x0A, ESTABLISHED));
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
    fn our_own_listener_is_ours_even_before_it_accepts() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Not accepted yet: the server end exists only in the kernel's queue.
        let s = connect_own(addr, Duration::from_secs(2)).unwrap();
        drop(s);
        drop(listener);
        assert!(matches!(
            connect_own(addr, Duration::from_secs(2)),
            Err(OwnerError::NothingListens { .. })
        ));
    }
}
