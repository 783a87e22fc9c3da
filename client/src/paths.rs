//! Where touchgate keeps its files. Environment overrides come first so tests
//! and the demo never touch the user's real directories.
//!
//! | what   | override              | default (Linux)                              |
//! |--------|-----------------------|----------------------------------------------|
//! | socket | `TOUCHGATE_SOCK`      | `$XDG_RUNTIME_DIR/touchgate/agent.sock`      |
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

/// The agent socket: `TOUCHGATE_SOCK`, else the runtime dir, else a per-user dir under the temp dir.
pub fn socket_path() -> PathBuf {
    if let Some(p) = env_path("TOUCHGATE_SOCK") {
        return p;
    }
    if let Some(d) = project().and_then(|p| p.runtime_dir().map(|d| d.to_path_buf())) {
        return d.join("agent.sock");
    }
    // No runtime dir (macOS, minimal containers): a 0700 dir of our own under the temp dir.
    let uid = current_uid();
    std::env::temp_dir()
        .join(format!("touchgate-{uid}"))
        .join("agent.sock")
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
