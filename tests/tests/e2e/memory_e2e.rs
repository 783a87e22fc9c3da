//! Another process of the agent's own user cannot read the agent's memory (where
//! unsealed credentials live while a window is open): the agent makes itself
//! non-dumpable at start, as ssh-agent does. Run as uid 65534 on both sides,
//! with an ordinary process of that uid as the control.

use crate::common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};

use common::other_uid::{as_nobody, require_root_and_setpriv, NOBODY};
use common::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_same_user_process_cannot_read_the_agents_memory() {
    require_root_and_setpriv();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        config_text("http://127.0.0.1:9", "auto", "every-token", ""),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = dir.path().join("run").join("agent.sock");
    let env = [
        ("TOUCHGATE_SOCK", socket.clone()),
        ("TOUCHGATE_CONFIG", config.clone()),
        ("TOUCHGATE_STATE_DIR", dir.path().join("state")),
    ];

    let mut agent = as_nobody(&bin("touchgate-agent"));
    agent
        .args(["--foreground", "--print-sock"])
        .envs(env.clone())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut agent = Killed(agent.spawn().unwrap());
    let line = first_line(&mut agent.0);
    assert!(
        line.starts_with("TOUCHGATE_SOCK="),
        "agent did not start: {line:?}"
    );
    let agent_pid = agent.0.id();

    // The control: an ordinary process of the same uid.
    // It says when it runs as 65534, then waits.
    let mut sleeper = as_nobody(Path::new("/bin/sh"));
    sleeper
        .args(["-c", "echo ready; exec sleep 600"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let mut sleeper = Killed(sleeper.spawn().unwrap());
    let line = first_line(&mut sleeper.0);
    assert_eq!(line, "ready\n");
    let sleeper_pid = sleeper.0.id();

    // Both run as 65534; only the agent's /proc entries are withheld (root's).
    for pid in [agent_pid, sleeper_pid] {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(
            status.lines().any(|l| l.starts_with("Uid:\t65534\t")),
            "pid {pid} runs as 65534: {status}"
        );
    }
    let owner = |pid: u32| std::fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid();
    assert_eq!(owner(sleeper_pid), NOBODY);
    assert_eq!(owner(agent_pid), 0, "the agent is not dumpable");

    let read_as_nobody = |pid: u32, what: &str| {
        as_nobody(Path::new("/bin/cat"))
            .arg(format!("/proc/{pid}/{what}"))
            .stdout(Stdio::null())
            .output()
            .unwrap()
    };
    for what in ["environ", "mem"] {
        let o = read_as_nobody(agent_pid, what);
        assert!(!o.status.success(), "{what} of the agent was readable");
        assert!(
            stderr(&o).contains("Permission denied"),
            "{what}: {}",
            stderr(&o)
        );
    }
    let o = read_as_nobody(sleeper_pid, "environ");
    assert!(
        o.status.success(),
        "the control process's environ is readable by its own user: {}",
        stderr(&o)
    );

    // And the agent still serves its user.
    let o = as_nobody(&bin("touchgate"))
        .arg("status")
        .envs(env)
        .output()
        .unwrap();
    assert!(o.status.success(), "status: {}", stderr(&o));
    drop(sleeper);
    drop(agent);
}
