//! Who is on the other end of a loopback TCP connection: the socket tables
//! (`/proc/net/tcp{,6}`, or `lsof`) are read by [`touchgate::tcp_owner`] and
//! [`touchgate::lsof`]; here one [`Finder`] chooses between them and the
//! process is named. A client socket's inode names its process: the one with a
//! `/proc/PID/fd/N` link to `socket:[INODE]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use touchgate::process;
pub use touchgate::tcp_owner::Peer;

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
    let row = touchgate::tcp_owner::client_end(proc_root, peer, server)?;
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

    /// Who holds the client end of `peer` → `server`; its process is looked for
    /// when the uid is `my_uid` (another uid is refused anyway).
    pub fn owner(&self, peer: SocketAddr, server: SocketAddr, my_uid: u32) -> Option<Peer> {
        match self {
            Finder::Proc(root) => lookup_in(root, peer, server, Some(my_uid)),
            Finder::Lsof(lsof) => touchgate::lsof::lookup(lsof, peer, server),
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
