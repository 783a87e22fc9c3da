//! A running agent re-reads its config on `touchgate reload` and on SIGHUP,
//! and keeps its last good config when the file is bad.

mod common;

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
