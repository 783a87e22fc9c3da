//! A running agent re-reads its config on `touchgate reload` and on SIGHUP,
//! and keeps its last good config when the file is bad.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use touchgate::CallerHint;

/// A fresh token's lifetime in seconds, as the agent hands it out.
async fn lifetime(agent: &AgentProc) -> u64 {
    let mut c = touchgate::Client::connect(&agent.socket).await.unwrap();
    let t = c
        .get_token(None, &[], CallerHint::default())
        .await
        .expect("the agent still serves");
    assert!(!t.from_cache, "every-token profile: a fresh mint");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    t.expires_at.saturating_sub(now)
}

fn assert_about(secs: u64, want: u64) {
    assert!(
        secs <= want && secs + 30 >= want,
        "token lifetime {secs}s, want about {want}s"
    );
}

fn with_lifetime(base: &str, lifetime: &str) -> String {
    base.replace("lifetime = \"15m\"", &format!("lifetime = \"{lifetime}\""))
}

fn sighup(pid: u32) {
    assert!(Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_applies_a_good_config_and_keeps_the_last_good_one() {
    let (emu, key_json) = emulator().await;
    let base = config_text(&emu.base_url(), "auto", "every-token", "");
    let agent = AgentProc::start(&base);
    let cfg = agent.dir.path().join("config.toml");
    assert!(agent.cli(&["enroll"]).status.success());
    let f = agent.dir.path().join("sa-key.json");
    std::fs::write(&f, &key_json).unwrap();
    assert!(agent.cli(&["import", f.to_str().unwrap()]).status.success());
    assert_about(lifetime(&agent).await, 15 * 60);

    // A good change: `touchgate reload`, and the next token has the new lifetime.
    write(&cfg, &with_lifetime(&base, "5m"));
    let o = agent.cli(&["reload"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("reloaded the config: profiles inference"));
    assert_about(lifetime(&agent).await, 5 * 60);

    // A broken file: one line naming file:line:col, and the agent keeps serving the old config.
    let broken =
        with_lifetime(&base, "5m").replace("touch = \"every-token\"", "touch = \"sometimes\"");
    let line = broken
        .lines()
        .position(|l| l.contains("sometimes"))
        .unwrap()
        + 1;
    write(&cfg, &broken);
    let o = agent.cli(&["reload"]);
    let err = assert_one_line_error(&o, &format!("config {}:{line}:9:", cfg.display()));
    assert!(err.contains("every-token"), "says how to fix it: {err}");
    assert!(err.contains("keeps its running config"), "{err}");
    assert_about(lifetime(&agent).await, 5 * 60);

    // SIGHUP does the same: a bad file is logged and the config stays ...
    let pid = agent.child.as_ref().unwrap().id();
    sighup(pid);
    agent.wait_log("reload refused", 2).await;
    assert_about(lifetime(&agent).await, 5 * 60);
    // ... a good one is applied.
    write(&cfg, &with_lifetime(&base, "10m"));
    sighup(pid);
    agent.wait_log("config reloaded", 2).await;
    assert_about(lifetime(&agent).await, 10 * 60);
    assert!(agent.cli(&["status"]).status.success());
}

/// A duration past its range (here a window of 200000000000000 days, which once
/// overflowed the clock while the session lock was held and took `status` and
/// `lock` down with it) is refused on reload and at start, with file:line:col
/// and the allowed range; the running agent keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn durations_out_of_range_are_refused_and_the_agent_keeps_serving() {
    let (emu, key_json) = emulator().await;
    let base = config_text(&emu.base_url(), "auto", "10m", "");
    let agent = AgentProc::start(&base);
    let cfg = agent.dir.path().join("config.toml");
    agent.enrol_and_import(&key_json);

    let huge = base.replace("touch = \"10m\"", "touch = \"200000000000000d\"");
    let line = huge
        .lines()
        .position(|l| l.contains("200000000000000d"))
        .unwrap()
        + 1;
    write(&cfg, &huge);
    let err = assert_one_line_error(
        &agent.cli(&["reload"]),
        &format!("config {}:{line}:9:", cfg.display()),
    );
    assert!(err.contains("1s to 1d"), "names the allowed range: {err}");

    // Still serving, with the old window: a token, status and lock all answer.
    assert!(agent.ok(&["token"]).starts_with("ya29."));
    assert!(agent.ok(&["status"]).contains("cached tokens: 1"));
    agent.ok(&["lock"]);
    assert!(agent
        .ok(&["status"])
        .contains("locked: locked by touchgate lock"));

    // An agent started with that file refuses to start, saying the same.
    let o = Command::new(bin("touchgate-agent"))
        .args(["--foreground"])
        .envs(agent.env())
        .env("TOUCHGATE_SOCK", agent.dir.path().join("second.sock"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("config {}:{line}:9:", cfg.display())) && err.contains("1s to 1d"),
        "{err}"
    );
}
