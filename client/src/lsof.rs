//! Who is on the other end of a loopback TCP connection, asking `lsof` — the
//! way on macOS, which has no `/proc/net/tcp`.
//!
//! `lsof -nP -w -iTCP@ADDR:PORT -F pun` lists every TCP socket with an end at the
//! peer's address, one field per line: `p` starts a process, `u` is its uid, `f`
//! a descriptor, `n` the socket's `local->remote` addresses. The client's socket
//! is the one whose local end is the peer address we see and whose remote end is
//! our listening address (our own accepted socket is the mirror image).
//!
//! Run by an ordinary user, macOS `lsof` sees only that user's processes: a
//! connection from another user is simply not found, and the shim (or a client
//! checking the shim) refuses what it cannot name. The same code runs on Linux when asked (`--callers-from lsof`),
//! which is how the tests exercise it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::tcp_owner::{canon, Peer};

/// Where lsof is: on `PATH`, else macOS's `/usr/sbin/lsof`.
pub fn find() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("lsof"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        ["/usr/sbin/lsof", "/usr/bin/lsof"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// The `-i` selector for sockets with an end at `addr`.
fn selector(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => format!("-iTCP@{ip}:{}", addr.port()),
        IpAddr::V6(ip) => format!("-iTCP@[{ip}]:{}", addr.port()),
    }
}

/// Ask `lsof` who holds the client end of `peer` → `server`. `None` when no
/// process of ours holds it, or lsof could not run.
pub fn lookup(lsof: &Path, peer: SocketAddr, server: SocketAddr) -> Option<Peer> {
    let out = Command::new(lsof)
        .args(["-nP", "-w", &selector(peer), "-F", "pun"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    // lsof exits 1 when it found nothing; its output is what counts.
    parse(&String::from_utf8_lossy(&out.stdout), peer, server)
}

/// The process whose socket is `peer` → `server`, from `lsof -F pun` output.
pub fn parse(out: &str, peer: SocketAddr, server: SocketAddr) -> Option<Peer> {
    let (peer, server) = (canon(peer), canon(server));
    let mut pid: Option<u32> = None;
    let mut uid: Option<u32> = None;
    for line in out.lines() {
        let Some(tag) = line.chars().next() else {
            continue;
        };
        let value = &line[tag.len_utf8()..];
        match tag {
            'p' => {
                pid = value.parse().ok();
                uid = None;
            }
            'u' => uid = value.parse().ok(),
            'n' => {
                let Some((local, remote)) = value.split_once("->") else {
                    continue;
                };
                let (Ok(local), Ok(remote)) =
                    (local.parse::<SocketAddr>(), remote.parse::<SocketAddr>())
                else {
                    continue;
                };
                if canon(local) == peer && canon(remote) == server {
                    return Some(Peer { uid: uid?, pid });
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn picks_the_client_end_not_our_accepted_socket() {
        let out = "p900\nu501\nf12\nn127.0.0.1:8946->127.0.0.1:53122\n\
                   p4242\nu501\nf7\nn127.0.0.1:53122->127.0.0.1:8946\n";
        let p = parse(out, a("127.0.0.1:53122"), a("127.0.0.1:8946")).unwrap();
        assert_eq!(
            p,
            Peer {
                uid: 501,
                pid: Some(4242)
            }
        );
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let out = "p77\nu0\nf3\nn[::1]:40000->[::1]:8946\n";
        let p = parse(out, a("[::1]:40000"), a("[::1]:8946")).unwrap();
        assert_eq!(p.pid, Some(77));
        let out = "p78\nu0\nf3\nn127.0.0.1:40001->127.0.0.1:8946\n";
        let p = parse(out, a("[::ffff:127.0.0.1]:40001"), a("127.0.0.1:8946")).unwrap();
        assert_eq!(p.pid, Some(78));
    }

    #[test]
    fn nothing_found_or_no_uid_is_none() {
        let (peer, server) = (a("127.0.0.1:53122"), a("127.0.0.1:8946"));
        assert_eq!(parse("", peer, server), None);
        assert_eq!(
            parse("p1\nu5\nf3\nn127.0.0.1:1->127.0.0.1:8946\n", peer, server),
            None,
            "another connection"
        );
        assert_eq!(
            parse("p1\nf3\nn127.0.0.1:53122->127.0.0.1:8946\n", peer, server),
            None,
            "a socket without an owner uid is not believed"
        );
        assert_eq!(
            parse("p2\nu5\nf3\nn*:8946\nnlocalhost:x->y\n", peer, server),
            None
        );
    }

    #[test]
    fn a_new_process_forgets_the_last_uid() {
        let out =
            "p1\nu0\nf3\nn127.0.0.1:9->127.0.0.1:10\np2\nf4\nn127.0.0.1:53122->127.0.0.1:8946\n";
        assert_eq!(parse(out, a("127.0.0.1:53122"), a("127.0.0.1:8946")), None);
    }

    #[test]
    fn selectors() {
        assert_eq!(selector(a("127.0.0.1:5")), "-iTCP@127.0.0.1:5");
        assert_eq!(selector(a("[::1]:5")), "-iTCP@[::1]:5");
    }

    /// The real lsof finds this process as the client of a real connection.
    #[test]
    fn real_lsof_finds_this_process() {
        let lsof = find().expect("lsof is needed by this test: apt-get install lsof");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let server = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(server).unwrap();
        let (_conn, peer) = listener.accept().unwrap();
        let p = lookup(&lsof, peer, server).expect("lsof lists our connection");
        assert_eq!(p.pid, Some(std::process::id()));
        assert_eq!(p.uid, crate::paths::current_uid());
        drop(client);
    }
}
