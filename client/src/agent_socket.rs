//! Which agent socket a client may talk to, checked before a byte is sent.
//!
//! Invariants, in order:
//! - the socket's directory is ours and closed to everyone else (no group or
//!   other bits, 0700): nobody else can have put a socket in it, or swap ours;
//! - the process listening on the socket is ours (`SO_PEERCRED` on Linux,
//!   `getpeereid` on macOS, through tokio's `peer_cred`).
//!
//! Without them another user who gets to a socket path first (a shared temp
//! dir, a careless `TOUCHGATE_SOCK`) would receive what we send, the plaintext
//! credential of `touchgate import` included. The agent checks the other way
//! round (it serves only its own uid); this is the client's half.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tokio::net::UnixStream;

use crate::ClientError;

/// The directory a socket path lives in (`.` for a bare file name).
pub fn socket_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The socket's directory is ours and 0700. No socket there means no agent
/// runs, which is said first (nothing would be sent anyway).
pub fn check_dir(path: &Path) -> Result<(), ClientError> {
    let not_running = || ClientError::NotRunning {
        path: path.to_owned(),
    };
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        return Err(not_running());
    }
    let dir = socket_dir(path);
    let meta = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_running()),
        Err(source) => {
            return Err(ClientError::Connect {
                path: path.to_owned(),
                source,
            })
        }
    };
    let me = crate::paths::current_uid();
    if meta.uid() != me {
        return Err(ClientError::ForeignDir {
            path: path.to_owned(),
            dir: dir.to_owned(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(ClientError::LooseDir {
            path: path.to_owned(),
            dir: dir.to_owned(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(())
}

/// The process that accepted `stream` is ours.
pub fn check_peer(stream: &UnixStream, path: &Path) -> Result<(), ClientError> {
    let me = crate::paths::current_uid();
    let cred = stream.peer_cred().map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })?;
    if cred.uid() != me {
        return Err(ClientError::ForeignPeer {
            path: PathBuf::from(path),
            owner: cred.uid(),
            me,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_directory_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let sock = d.path().join("agent.sock");
        assert!(matches!(
            check_dir(&sock),
            Err(ClientError::NotRunning { .. })
        ));
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(check_dir(&sock).is_ok());
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = check_dir(&sock).unwrap_err().to_string();
        assert!(e.contains("has mode 0750"), "{e}");
        assert!(
            e.contains(&format!("chmod 700 {}", d.path().display())),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let missing = d.path().join("gone").join("agent.sock");
        assert!(matches!(
            check_dir(&missing),
            Err(ClientError::NotRunning { .. })
        ));
    }

    #[test]
    fn a_bare_file_name_lives_in_the_current_directory() {
        assert_eq!(socket_dir(Path::new("a.sock")), Path::new("."));
        assert_eq!(socket_dir(Path::new("/run/a.sock")), Path::new("/run"));
    }

    #[tokio::test]
    async fn our_own_listener_passes_the_peer_check() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("agent.sock");
        let _l = tokio::net::UnixListener::bind(&sock).unwrap();
        let s = UnixStream::connect(&sock).await.unwrap();
        assert!(check_peer(&s, &sock).is_ok());
    }
}
