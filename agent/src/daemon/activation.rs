//! systemd socket activation: when `LISTEN_PID` is this process and
//! `LISTEN_FDS` is at least 1, the listening socket is descriptor 3, already
//! bound by systemd (`touchgate-agent.socket`). The agent then serves it as it
//! is: it does not bind, does not check for another agent on the path, and
//! does not remove the socket file on exit (systemd owns it and keeps
//! listening while the agent restarts).
//!
//! `LISTEN_PID` naming another process means the variables were inherited and
//! are not for us: they are ignored and the agent binds its socket as usual.
//! Either way the `LISTEN_*` variables are removed from our environment so
//! programs the agent starts (pinentry) never see them.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

const VARS: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("socket activation: {var}={value:?} is not a number: fix the environment that starts touchgate-agent")]
    BadVar { var: &'static str, value: String },
    #[error("socket activation: descriptor {fd} {what}: touchgate-agent needs one listening Unix stream socket (ListenStream=%t/touchgate/agent.sock in touchgate-agent.socket)")]
    NotListener { fd: RawFd, what: String },
}

/// What the environment says about passed sockets.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No socket activation: bind as usual.
    None,
    /// `LISTEN_PID` names another process: ignored, bind as usual.
    OtherProcess(String),
    /// `n` descriptors from 3 on are ours.
    Fds(u32),
}

/// Read `LISTEN_PID` / `LISTEN_FDS` as sd_listen_fds(3) does.
pub fn decide(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    my_pid: u32,
) -> Result<Decision, ActivationError> {
    let Some(pid) = listen_pid else {
        return Ok(Decision::None);
    };
    let parsed: u32 = pid.trim().parse().map_err(|_| ActivationError::BadVar {
        var: "LISTEN_PID",
        value: pid.to_owned(),
    })?;
    if parsed != my_pid {
        return Ok(Decision::OtherProcess(pid.to_owned()));
    }
    let n: u32 = match listen_fds {
        None => 0,
        Some(v) => v.trim().parse().map_err(|_| ActivationError::BadVar {
            var: "LISTEN_FDS",
            value: v.to_owned(),
        })?,
    };
    Ok(if n == 0 {
        Decision::None
    } else {
        Decision::Fds(n)
    })
}

/// A listening socket systemd passed us.
#[derive(Debug)]
pub struct Passed {
    pub listener: UnixListener,
    pub path: PathBuf,
    /// Descriptors beyond the first that were passed and closed.
    pub extra_closed: u32,
}

/// What `from_env` found.
#[derive(Debug)]
pub enum Activation {
    None,
    /// The variables named another process (the value of `LISTEN_PID`).
    Ignored(String),
    Socket(Passed),
}

/// Look for a socket passed by systemd, take it, and clear the `LISTEN_*`
/// variables. Call once, early in `main`, while the process has one thread and
/// has opened no files of its own.
pub fn from_env() -> Result<Activation, ActivationError> {
    let get = |v: &str| std::env::var(v).ok();
    let decision = decide(
        get("LISTEN_PID").as_deref(),
        get("LISTEN_FDS").as_deref(),
        std::process::id(),
    );
    for v in VARS {
        // Single-threaded here (see above), so changing the environment is sound.
        std::env::remove_var(v);
    }
    match decision? {
        Decision::None => Ok(Activation::None),
        Decision::OtherProcess(pid) => Ok(Activation::Ignored(pid)),
        Decision::Fds(n) => {
            // Descriptors after the first are not ours to use: close them so
            // they do not leak into programs we start.
            let mut extra_closed = 0;
            for i in 1..n {
                let Ok(off) = RawFd::try_from(i) else { break };
                if take_fd(LISTEN_FDS_START + off).is_ok() {
                    extra_closed += 1;
                }
            }
            let fd = take_fd(LISTEN_FDS_START).map_err(|e| ActivationError::NotListener {
                fd: LISTEN_FDS_START,
                what: format!("is not open ({e})"),
            })?;
            let (listener, path) = listener_from(fd)?;
            Ok(Activation::Socket(Passed {
                listener,
                path,
                extra_closed,
            }))
        }
    }
}

/// Check that `fd` is a listening Unix stream socket with a path, and make it
/// close-on-exec (systemd passes it inheritable).
pub fn listener_from(fd: OwnedFd) -> Result<(UnixListener, PathBuf), ActivationError> {
    let raw = fd.as_raw_fd();
    let bad = |what: String| ActivationError::NotListener { fd: raw, what };
    let sock_type = sock_opt(&fd, libc::SO_TYPE).map_err(|e| {
        bad(match e.raw_os_error() {
            Some(libc::ENOTSOCK) => "is not a socket".to_owned(),
            _ => format!("cannot be read as a socket ({e})"),
        })
    })?;
    // Duplicate with close-on-exec (F_DUPFD_CLOEXEC), then close the inherited one.
    let fd = fd
        .try_clone()
        .map_err(|e| bad(format!("cannot be duplicated ({e})")))?;
    let listener = UnixListener::from(fd);
    let addr = listener.local_addr().map_err(|e| {
        bad(match e.kind() {
            std::io::ErrorKind::InvalidInput => "is not a Unix socket".to_owned(),
            _ => format!("has no address ({e})"),
        })
    })?;
    if sock_type != libc::SOCK_STREAM {
        let kind = match sock_type {
            libc::SOCK_DGRAM => "a datagram socket".to_owned(),
            libc::SOCK_SEQPACKET => "a seqpacket socket".to_owned(),
            t => format!("a socket of type {t}"),
        };
        return Err(bad(format!("is {kind}, not a stream socket")));
    }
    let listening = sock_opt(&listener, libc::SO_ACCEPTCONN)
        .map_err(|e| bad(format!("cannot be queried ({e})")))?;
    if listening == 0 {
        return Err(bad(
            "is a Unix stream socket that is not listening".to_owned()
        ));
    }
    let path = addr
        .as_pathname()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .ok_or_else(|| bad("is an unnamed or abstract Unix socket, not a path".to_owned()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bad(format!("cannot be made non-blocking ({e})")))?;
    Ok((listener, path))
}

/// An integer `SOL_SOCKET` option of `fd`.
fn sock_opt(fd: &impl AsRawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let rc = getsockopt_int(fd.as_raw_fd(), opt, &mut value, &mut len);
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

/// Socket activation's unsafe code: the two system calls std has no safe
/// wrapper for.
#[allow(unsafe_code)]
mod sys {
    use super::*;

    /// getsockopt(2) of one `c_int` at `SOL_SOCKET` level.
    pub(super) fn getsockopt_int(
        fd: RawFd,
        opt: libc::c_int,
        value: &mut libc::c_int,
        len: &mut libc::socklen_t,
    ) -> libc::c_int {
        // SAFETY: `value` and `len` are valid, writable and live for the call,
        // and `*len` is the size of `*value`, so the kernel writes within it.
        // The descriptor is only read; a closed one gives EBADF.
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (value as *mut libc::c_int).cast(),
                len,
            )
        }
    }

    /// Take ownership of a descriptor passed to us by socket activation.
    pub(super) fn take_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
        // SAFETY: F_GETFD only reads the descriptor's flags (EBADF if not open).
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is open (checked above) and LISTEN_PID named this
        // process, so systemd handed it to us to own. `from_env` runs once, at
        // the start of `main`, before any other thread or file exists, and
        // takes each descriptor once: nothing else owns or closes it. (Unit
        // tests pass descriptors they gave up with `into_raw_fd`.)
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

use sys::{getsockopt_int, take_fd};

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn decides_like_sd_listen_fds() {
        assert_eq!(decide(None, Some("1"), 7).unwrap(), Decision::None);
        assert_eq!(decide(Some("7"), Some("1"), 7).unwrap(), Decision::Fds(1));
        assert_eq!(decide(Some("7"), Some("2"), 7).unwrap(), Decision::Fds(2));
        assert_eq!(decide(Some("7"), Some("0"), 7).unwrap(), Decision::None);
        assert_eq!(decide(Some("7"), None, 7).unwrap(), Decision::None);
        assert_eq!(
            decide(Some("8"), Some("1"), 7).unwrap(),
            Decision::OtherProcess("8".into())
        );
        let e = decide(Some("x"), Some("1"), 7).unwrap_err().to_string();
        assert!(e.contains("LISTEN_PID=\"x\" is not a number"), "{e}");
        let e = decide(Some("7"), Some("-1"), 7).unwrap_err().to_string();
        assert!(e.contains("LISTEN_FDS=\"-1\""), "{e}");
    }

    /// An fd owned by nobody but the caller, as socket activation hands it over.
    fn handed_over(fd: impl IntoRawFd) -> OwnedFd {
        take_fd(fd.into_raw_fd()).unwrap()
    }

    #[test]
    fn accepts_a_listening_unix_stream_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.sock");
        let l = UnixListener::bind(&path).unwrap();
        let (listener, got) = listener_from(handed_over(l)).unwrap();
        assert_eq!(got, path);
        assert!(listener.local_addr().is_ok());
    }

    #[test]
    fn refuses_what_is_not_a_listening_unix_stream_socket() {
        let dir = tempfile::tempdir().unwrap();
        let check = |fd: OwnedFd, want: &str| {
            let e = listener_from(fd).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should say {want:?}");
            assert!(e.contains("ListenStream="), "{e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        };
        let file = std::fs::File::create(dir.path().join("f")).unwrap();
        check(handed_over(file), "is not a socket");
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        check(handed_over(a), "not listening");
        let d = std::os::unix::net::UnixDatagram::bind(dir.path().join("d")).unwrap();
        check(handed_over(d), "a datagram socket");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        check(handed_over(tcp), "is not a Unix socket");
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(format!(
                "touchgate-test-{}",
                std::process::id()
            ))
            .unwrap();
            let abs = UnixListener::bind_addr(&addr).unwrap();
            check(handed_over(abs), "abstract");
        }
    }
}
