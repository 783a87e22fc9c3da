//! Where touchgate keeps its files. Environment overrides come first so tests
//! and the demo never touch the user's real directories.
//!
//! | what   | override              | default (Linux)                              |
//! |--------|-----------------------|----------------------------------------------|
//! | socket | `TOUCHGATE_SOCK`      | `$XDG_RUNTIME_DIR/touchgate/agent.sock`      |
//! |        |                       | else `STATE/run/agent.sock` (see below)      |
//! | config | `TOUCHGATE_CONFIG`    | `~/.config/touchgate/config.toml`            |
//! | state  | `TOUCHGATE_STATE_DIR` | `~/.local/state/touchgate/`                  |

use std::path::PathBuf;

fn project() -> Option<directories::ProjectDirs> {
    directories::ProjectDirs::from("", "", "touchgate")
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The longest socket path every platform binds: macOS's `sun_path` holds 104
/// bytes with the final NUL (Linux's 108).
pub const MAX_SOCKET_PATH: usize = 103;

/// The agent socket: `TOUCHGATE_SOCK`, else the runtime dir, else
/// `STATE/run/agent.sock` ([`socket_choice`]).
pub fn socket_path() -> PathBuf {
    socket_choice().0
}

/// The agent socket, and a note to log when it had to fall back to the shared
/// temp dir. Without a runtime dir (macOS, ssh without pam_systemd, su, cron,
/// containers) the socket lives in a private directory under the state dir,
/// where no other user can create it first; only when that path is too long
/// for a socket does it fall back to `$TMPDIR/touchgate-<uid>/agent.sock`,
/// which the client refuses if another user owns it (see [`crate::agent_socket`]).
pub fn socket_choice() -> (PathBuf, Option<String>) {
    if let Some(p) = env_path("TOUCHGATE_SOCK") {
        return (p, None);
    }
    if let Some(d) = project().and_then(|p| p.runtime_dir().map(|d| d.to_path_buf())) {
        return (d.join("agent.sock"), None);
    }
    let private = state_dir().join("run").join("agent.sock");
    if private.as_os_str().len() <= MAX_SOCKET_PATH {
        return (private, None);
    }
    let shared = std::env::temp_dir()
        .join(format!("touchgate-{}", current_uid()))
        .join("agent.sock");
    let note = format!(
        "the socket path {} is over the {MAX_SOCKET_PATH} bytes a socket path may have: using {} in the shared temp dir instead (clients refuse it if another user got there first); set TOUCHGATE_SOCK to choose",
        private.display(),
        shared.display()
    );
    (shared, Some(note))
}

pub fn config_path() -> PathBuf {
    if let Some(p) = env_path("TOUCHGATE_CONFIG") {
        return p;
    }
    match project() {
        Some(p) => p.config_dir().join("config.toml"),
        None => PathBuf::from("touchgate.toml"),
    }
}

pub fn state_dir() -> PathBuf {
    if let Some(p) = env_path("TOUCHGATE_STATE_DIR") {
        return p;
    }
    match project() {
        Some(p) => p
            .state_dir()
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| p.data_local_dir().to_path_buf()),
        None => PathBuf::from(".touchgate-state"),
    }
}

/// This process's user id.
pub fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions, cannot fail and touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::getuid()
    }
}
