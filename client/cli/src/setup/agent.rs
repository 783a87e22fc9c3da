//! `touchgate setup agent`: run touchgate-agent as a service of the user's
//! service manager — systemd user units (socket activated) on Linux, a
//! LaunchAgent on macOS — naming the installed `touchgate-agent`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};

use super::backup::Backup;

/// The units as shipped in `systemd/` and `launchd/` (what packages install).
pub const SERVICE_UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../systemd/touchgate-agent.service"
));
pub const SOCKET_UNIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../systemd/touchgate-agent.socket"
));
pub const PLIST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../launchd/dev.touchgate.agent.plist"
));

const SERVICE: &str = "touchgate-agent.service";
const SOCKET: &str = "touchgate-agent.socket";
const LABEL: &str = "dev.touchgate.agent";
/// The agent path in the shipped files, replaced by the installed one.
const SHIPPED_UNIT_EXE: &str = "ExecStart=/usr/bin/touchgate-agent ";
const SHIPPED_PLIST_EXE: &str = "<string>/usr/local/bin/touchgate-agent</string>";
const SHIPPED_PLIST_HOME: &str = "/Users/YOU/";

/// Which service manager to write for: this system's, or
/// `TOUCHGATE_SERVICE_MANAGER` (`systemd` or `launchd`, e.g. to prepare files
/// for another machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

pub fn manager() -> anyhow::Result<Manager> {
    match std::env::var("TOUCHGATE_SERVICE_MANAGER").ok().as_deref() {
        None | Some("") => Ok(if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }),
        Some("systemd") => Ok(Manager::Systemd),
        Some("launchd") => Ok(Manager::Launchd),
        Some(other) => bail!("TOUCHGATE_SERVICE_MANAGER={other:?} is not a service manager: use systemd or launchd (or unset it)"),
    }
}

pub fn install(backup: &mut Backup) -> anyhow::Result<()> {
    let exe = agent_exe()?;
    match manager()? {
        Manager::Systemd => systemd(backup, &exe),
        Manager::Launchd => launchd(backup, &exe),
    }
}

/// Refuse to undo while the units are still enabled (their symlinks would dangle).
pub fn before_undo() -> anyhow::Result<()> {
    if manager()? != Manager::Systemd {
        return Ok(());
    }
    for (target, unit) in [("sockets.target", SOCKET), ("default.target", SERVICE)] {
        let link = systemd_dir()?.join(format!("{target}.wants")).join(unit);
        if link.symlink_metadata().is_ok() {
            bail!(
                "{unit} is still enabled ({}): run systemctl --user disable --now {SOCKET} {SERVICE} first",
                link.display()
            );
        }
    }
    Ok(())
}

/// What to tell the user after an undo.
pub fn after_undo() -> anyhow::Result<Option<String>> {
    Ok(match manager()? {
        Manager::Systemd => Some("then: systemctl --user daemon-reload".to_owned()),
        Manager::Launchd => Some(format!(
            "if it was loaded: launchctl bootout gui/{}/{LABEL} (launchd keeps a loaded agent until then)",
            touchgate::paths::current_uid()
        )),
    })
}

/// `$XDG_CONFIG_HOME/systemd/user`.
fn systemd_dir() -> anyhow::Result<PathBuf> {
    Ok(super::xdg("XDG_CONFIG_HOME", ".config")?
        .join("systemd")
        .join("user"))
}

fn systemd(backup: &mut Backup, exe: &Path) -> anyhow::Result<()> {
    let dir = super::absolute(&systemd_dir()?)?;
    let service = service_unit(exe)?;
    let socket_path = dir.join(SOCKET);
    backup.write(&socket_path, SOCKET_UNIT.as_bytes())?;
    println!(
        "wrote {}: systemd user socket unit listening on %t/touchgate/agent.sock ($XDG_RUNTIME_DIR/touchgate/agent.sock, where touchgate looks)",
        socket_path.display()
    );
    let service_path = dir.join(SERVICE);
    backup.write(&service_path, service.as_bytes())?;
    println!(
        "wrote {}: systemd user service running {} --foreground",
        service_path.display(),
        exe.display()
    );
    println!(
        "next: systemctl --user daemon-reload && systemctl --user enable --now {SOCKET} (stop an agent you started by hand first)"
    );
    println!(
        "to remove: systemctl --user disable --now {SOCKET} {SERVICE}, then touchgate setup --undo agent"
    );
    Ok(())
}

fn launchd(backup: &mut Backup, exe: &Path) -> anyhow::Result<()> {
    let home = super::absolute(&super::home()?)?;
    let text = plist(exe, &home)?;
    let path = home
        .join("Library")
        .join("LaunchAgents")
        .join(format!("{LABEL}.plist"));
    backup.write(&path, text.as_bytes())?;
    println!(
        "wrote {}: LaunchAgent {LABEL} running {} --foreground at login (restarted after a crash; log {})",
        path.display(),
        exe.display(),
        home.join("Library/Logs/touchgate-agent.log").display()
    );
    let uid = touchgate::paths::current_uid();
    println!("next: launchctl bootstrap gui/{uid} {}", path.display());
    println!("to remove: launchctl bootout gui/{uid}/{LABEL}, then touchgate setup --undo agent");
    Ok(())
}

/// The shipped service unit with ExecStart= naming `exe`.
pub fn service_unit(exe: &Path) -> anyhow::Result<String> {
    let quoted = systemd_quote(exe)?;
    let n = SERVICE_UNIT.matches(SHIPPED_UNIT_EXE).count();
    if n != 1 {
        bail!("internal: the shipped {SERVICE} has {n} ExecStart lines to rewrite");
    }
    Ok(SERVICE_UNIT.replace(SHIPPED_UNIT_EXE, &format!("ExecStart={quoted} ")))
}

/// The shipped plist with `exe` and the log under `home`.
pub fn plist(exe: &Path, home: &Path) -> anyhow::Result<String> {
    let exe = xml_escape(utf8(exe)?);
    let home = xml_escape(utf8(home)?);
    let home = home.trim_end_matches('/');
    Ok(PLIST
        .replace(SHIPPED_PLIST_EXE, &format!("<string>{exe}</string>"))
        .replace(SHIPPED_PLIST_HOME, &format!("{home}/")))
}

fn utf8(p: &Path) -> anyhow::Result<&str> {
    let s = p.to_str().ok_or_else(|| {
        anyhow!(
            "{} is not UTF-8, which a unit file cannot name: install touchgate-agent under a UTF-8 path",
            p.display()
        )
    })?;
    if s.chars().any(char::is_control) {
        bail!(
            "{:?} has a control character, which a unit file cannot name: install touchgate-agent under a plain path",
            s
        );
    }
    Ok(s)
}

/// An absolute path as the program of a systemd command line: `%` is doubled
/// (specifiers), and a path with blanks, quotes or backslashes is
/// double-quoted with C escapes. (`$` stays: the program path is not
/// variable-expanded.)
pub fn systemd_quote(p: &Path) -> anyhow::Result<String> {
    let s = utf8(p)?;
    let s = s.replace('%', "%%");
    if s.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'))
    {
        let mut q = String::from("\"");
        for c in s.chars() {
            if matches!(c, '"' | '\\') {
                q.push('\\');
            }
            q.push(c);
        }
        q.push('"');
        Ok(q)
    } else {
        Ok(s)
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// The installed agent: beside the running `touchgate`, else on PATH.
pub fn agent_exe() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find the touchgate executable")?;
    let beside = me.with_file_name("touchgate-agent");
    if is_executable(&beside) {
        return Ok(beside);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            if d.as_os_str().is_empty() {
                continue;
            }
            let c = d.join("touchgate-agent");
            if is_executable(&c) {
                return super::absolute(&c);
            }
        }
    }
    bail!(
        "no touchgate-agent beside {} or on PATH: install touchgate-agent, then run touchgate setup agent again",
        me.display()
    )
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_paths_for_systemd() {
        let q = |s: &str| systemd_quote(Path::new(s)).unwrap();
        assert_eq!(q("/usr/bin/touchgate-agent"), "/usr/bin/touchgate-agent");
        assert_eq!(q("/opt/a%b$c/agent"), "/opt/a%%b$c/agent");
        assert_eq!(q("/my bin/agent"), "\"/my bin/agent\"");
        assert_eq!(q("/a\"b\\c/agent"), "\"/a\\\"b\\\\c/agent\"");
        assert!(systemd_quote(Path::new("/a\nb")).is_err());
    }

    #[test]
    fn rewrites_the_shipped_files() {
        let unit = service_unit(Path::new("/home/u/.cargo/bin/touchgate-agent")).unwrap();
        assert!(unit.contains("\nExecStart=/home/u/.cargo/bin/touchgate-agent --foreground\n"));
        let p = plist(Path::new("/x&y/touchgate-agent"), Path::new("/Users/u")).unwrap();
        assert!(p.contains("<string>/x&amp;y/touchgate-agent</string>"));
        assert!(p.contains("<string>/Users/u/Library/Logs/touchgate-agent.log</string>"));
        assert!(!p.contains("YOU"));
    }
}
