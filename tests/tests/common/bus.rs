//! A private D-Bus daemon for the notification and session-lock tests.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// A private bus (dbus-daemon with the session configuration), used as the
/// agent's session or system bus; the daemon is killed on drop.
pub struct Bus {
    _dir: tempfile::TempDir,
    pub address: String,
    pub pid: u32,
}

impl Bus {
    pub fn start() -> Bus {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bus");
        let mut child = Command::new("dbus-daemon")
            .args([
                "--session",
                "--fork",
                "--nopidfile",
                &format!("--address=unix:path={}", path.display()),
                "--print-address=1",
                "--print-pid=1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon is needed for this test: install the Debian package dbus");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let (mut address, mut pid) = (String::new(), String::new());
        out.read_line(&mut address).unwrap();
        out.read_line(&mut pid).unwrap();
        assert!(
            child.wait().unwrap().success(),
            "dbus-daemon failed to start"
        );
        Bus {
            _dir: dir,
            address: address.trim().to_owned(),
            pid: pid.trim().parse().expect("dbus-daemon printed its pid"),
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        super::sigterm(self.pid);
    }
}
