//! Who is on the other end of a loopback TCP connection: the socket tables
//! (`/proc/net/tcp{,6}`, or `lsof`) are parsed by [`touchgate::tcp_owner`] and
//! [`touchgate::lsof`]; here one [`Finder`] chooses between them, many waiting
//! connections are looked up with one read of the table, and the process is
//! named. A client socket's inode names its process: the one with a
//! `/proc/PID/fd/N` link to `socket:[INODE]`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use touchgate::process;
pub use touchgate::tcp_owner::Peer;
use touchgate::tcp_owner::{canon, scan_table, TcpRow};

/// The processes under `proc_root` owned by `uid` holding each of `inodes`
/// (`socket:[INODE]`), by inode: one walk of `/proc/*/fd` for all of them.
pub fn find_pids(proc_root: &Path, uid: u32, inodes: &[u64]) -> HashMap<u64, u32> {
    use std::os::unix::fs::MetadataExt;
    let mut found = HashMap::new();
    if inodes.is_empty() {
        return found;
    }
    let wanted: HashMap<String, u64> = inodes
        .iter()
        .map(|i| (format!("socket:[{i}]"), *i))
        .collect();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for e in procs.flatten() {
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
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = link.to_str().and_then(|l| wanted.get(l)) {
                // The first process found keeps it.
                found.entry(*inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// The rows of the client ends `peers` → `server` in the socket table at
/// `path`, by client address. The table is read only as far as the last of
/// them: every `read` of these files costs the kernel a walk of the connection
/// hash (milliseconds on a large machine, however few sockets are wanted), so
/// one read serves every connection waiting to be looked up.
fn find_in_table(
    path: &Path,
    peers: &[SocketAddr],
    server: SocketAddr,
) -> HashMap<SocketAddr, TcpRow> {
    let mut found = HashMap::new();
    let wanted: std::collections::HashSet<SocketAddr> = peers.iter().map(|p| canon(*p)).collect();
    let server = canon(server);
    scan_table(path, |row| {
        if row.remote == server && row.inode != 0 && wanted.contains(&row.local) {
            found.insert(row.local, row);
        }
        if found.len() == wanted.len() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    found
}

/// Who holds the client end of each connection `peers[i]` → `server`, from
/// `proc_root` (`/proc`). `None` where no such socket is listed (the client
/// already hung up, or no `/proc`). Processes are searched for only for
/// sockets whose uid is `pid_if_uid` (another user's need not be read).
pub fn lookup_in(
    proc_root: &Path,
    peers: &[SocketAddr],
    server: SocketAddr,
    pid_if_uid: Option<u32>,
) -> Vec<Option<Peer>> {
    // An IPv4 client is in `tcp`; `tcp6` (IPv6, or IPv4-mapped sockets) only
    // for those not there.
    let net = proc_root.join("net");
    let mut rows = find_in_table(&net.join("tcp"), peers, server);
    let missing: Vec<SocketAddr> = peers
        .iter()
        .filter(|p| !rows.contains_key(&canon(**p)))
        .copied()
        .collect();
    if !missing.is_empty() {
        rows.extend(find_in_table(&net.join("tcp6"), &missing, server));
    }
    let pids = match pid_if_uid {
        Some(uid) => {
            let inodes: Vec<u64> = rows
                .values()
                .filter(|r| r.uid == uid)
                .map(|r| r.inode)
                .collect();
            find_pids(proc_root, uid, &inodes)
        }
        None => HashMap::new(),
    };
    peers
        .iter()
        .map(|p| {
            let row = rows.get(&canon(*p))?;
            Some(Peer {
                uid: row.uid,
                pid: pids.get(&row.inode).copied(),
            })
        })
        .collect()
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
            touchgate::lsof::find().ok_or_else(|| {
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

    /// Who holds the client end of each connection `peers[i]` → `server`; a
    /// process is looked for when the uid is `my_uid` (another uid is refused
    /// anyway). With `/proc`, one read of the socket table serves them all.
    pub fn owners(
        &self,
        peers: &[SocketAddr],
        server: SocketAddr,
        my_uid: u32,
    ) -> Vec<Option<Peer>> {
        match self {
            Finder::Proc(root) => lookup_in(root, peers, server, Some(my_uid)),
            Finder::Lsof(lsof) => peers
                .iter()
                .map(|p| touchgate::lsof::lookup(lsof, *p, server))
                .collect(),
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
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let found = lookup_in(Path::new("/proc"), &[gone, peer], server, Some(me));
        assert_eq!(found[0], None, "a connection that is not there");
        let p = found[1]
            .clone()
            .expect("the connection is in /proc/net/tcp");
        let me = std::fs::metadata("/proc/self").unwrap();
        assert_eq!(p.uid, std::os::unix::fs::MetadataExt::uid(&me));
        assert_eq!(p.pid, Some(std::process::id()));
        let name = program_name(std::process::id()).unwrap();
        assert!(!name.is_empty());
        drop(client);
    }
}
