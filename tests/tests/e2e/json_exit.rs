//! What scripts rely on: `--json` documents (status, profiles, keys list, audit
//! show, doctor, policy check) that parse with their documented fields and hold
//! no secret, and one exit code per reason a command failed (the table in
//! `touchgate --help` and the README).

use crate::common;

use std::process::{Command, Output};

use common::*;
use serde_json::Value;
use touchgate::Exit;

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

/// `o`'s stdout as one JSON document.
fn json(o: &Output) -> Value {
    let out = stdout(o);
    assert_eq!(
        out.trim_end().lines().count(),
        1,
        "one JSON document on one line, got {out:?} (stderr {})",
        stderr(o)
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// Assert `o` exited with `want` and, when it printed JSON, that it is the error document for it.
fn assert_exit(o: &Output, want: Exit, what: &str) {
    assert_eq!(
        code(o),
        want.code() as i32,
        "{what}: stdout {} stderr {}",
        stdout(o),
        stderr(o)
    );
}

fn assert_error_doc(o: &Output, want: Exit) -> Value {
    assert_exit(o, want, "json error");
    let v = json(o);
    assert_eq!(v["error"]["exit"], want.code() as u64, "{v}");
    assert_eq!(v["error"]["kind"], want.name(), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    v
}

fn agent_tool(agent: &AgentProc, args: &[&str]) -> Output {
    Command::new(bin("touchgate-agent"))
        .args(args)
        .envs(agent.env())
        .output()
        .unwrap()
}

/// Restart `agent` on the same state with another config.
fn restart_with(agent: &mut AgentProc, config: &str) {
    assert!(agent.stop(), "agent stopped cleanly: {}", agent.stderr());
    std::fs::write(agent.dir.path().join("config.toml"), config).unwrap();
    agent.child = Some(agent.spawn_agent("debug"));
}

#[test]
fn no_agent_and_usage_have_their_own_codes() {
    let dir = private_tempdir();
    let sock = dir.path().join("agent.sock");
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["token"],
        &["profiles", "--json"],
        &["keys", "list", "--json"],
    ] {
        let o = Command::new(bin("touchgate"))
            .args(args)
            .env("TOUCHGATE_SOCK", &sock)
            .output()
            .unwrap();
        assert_exit(&o, Exit::NoAgent, &format!("{args:?}"));
        if args.contains(&"--json") {
            let v = assert_error_doc(&o, Exit::NoAgent);
            assert!(v["error"]["code"].is_null(), "not the agent's code: {v}");
        } else {
            assert!(o.stdout.is_empty(), "{}", stdout(&o));
        }
    }
    for args in [&["status", "--bogus"][..], &["nonsense"], &["token", "-p"]] {
        let o = Command::new(bin("touchgate")).args(args).output().unwrap();
        assert_exit(&o, Exit::Usage, &format!("{args:?}"));
    }
    // The table is in the long help, so a man page made from it has it too.
    let help = Command::new(bin("touchgate"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        stdout(&help).contains(touchgate::exit::TABLE),
        "{}",
        stdout(&help)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn json_documents_parse_with_their_fields_and_hold_no_secret() {
    let (emu, key_json) = emulator().await;
    let cfg = config_text(&emu.base_url(), "auto", "10m", "");
    let agent = AgentProc::start(&cfg);

    // Nothing enrolled yet.
    let o = agent.cli(&["token"]);
    assert_exit(&o, Exit::NotEnrolled, "token before enrol");

    agent.enrol_and_import(&key_json);
    let token = agent.ok(&["token"]).trim().to_owned();
    assert!(token.len() > 20, "a token: {token}");

    let status = json(&agent.cli(&["status", "--json"]));
    assert_eq!(status["key_backend"], "soft", "{status}");
    assert!(status["pid"].as_u64().is_some(), "{status}");
    assert!(status["agent_version"].is_string(), "{status}");
    assert!(status["enrolled"]["credential"].is_string(), "{status}");
    assert_eq!(status["credentials"], serde_json::json!(["default"]));
    assert_eq!(status["profiles"][0]["name"], "inference", "{status}");
    assert_eq!(status["cached_tokens"], 1, "{status}");
    assert!(status["locked"].is_null(), "{status}");
    assert!(
        status["warnings"][0]["SoftKey"]["state_file"].is_string(),
        "{status}"
    );

    let profiles = json(&agent.cli(&["profiles", "--json"]));
    assert_eq!(profiles[0]["name"], "inference", "{profiles}");
    assert_eq!(profiles[0]["is_default"], true, "{profiles}");
    assert_eq!(profiles[0]["touch"], "10m", "{profiles}");
    assert_eq!(profiles[0]["service_account"], INFERENCE, "{profiles}");
    assert_eq!(
        profiles[0].get("kubectl_window_secs"),
        Some(&Value::Null),
        "a window profile has no kubectl window: {profiles}"
    );

    let keys = json(&agent.cli(&["keys", "list", "--json"]));
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    assert_eq!(
        keys[0]["credential"], status["enrolled"]["credential"],
        "{keys}"
    );
    assert!(keys[0]["sign_count"].is_u64(), "{keys}");
    assert!(keys[0]["suspect"].is_null(), "{keys}");

    // JSON lines: each line one record as stored; the token only as its fingerprint.
    let audit = agent.cli(&["audit", "show", "--json"]);
    assert_exit(&audit, Exit::Ok, "audit show --json");
    let records: Vec<Value> = stdout(&audit)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let events: Vec<&str> = records.iter().filter_map(|r| r["event"].as_str()).collect();
    // The token asked for before enrolment failed, and is in the log too.
    assert_eq!(
        events,
        ["failed", "enrolled", "imported", "issued"],
        "{records:?}"
    );
    let issued = &records[3];
    assert_eq!(issued["profile"], "inference");
    assert!(issued["token"].as_str().unwrap().starts_with("sha256:"));
    assert!(issued["seq"].is_u64() && issued["prev"].is_string());
    let only = agent.cli(&["audit", "show", "--json", "--profile", "inference"]);
    assert_eq!(stdout(&only).lines().count(), 2, "{}", stdout(&only));

    // The soft key is a FAIL for doctor: exit 10, the same checks as a document.
    let doctor = agent.cli(&["doctor", "--json"]);
    assert_exit(&doctor, Exit::DoctorFailed, "doctor --json");
    let d = json(&doctor);
    assert_eq!(d["ok"], false, "{d}");
    let checks = d["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["status"] == "ok"), "{d}");
    let fail = checks
        .iter()
        .find(|c| c["status"] == "fail")
        .unwrap_or_else(|| panic!("a failed check: {d}"));
    assert!(fail["what"].is_string() && fail["why"].is_string() && fail["fix"].is_string());
    let text = agent.cli(&["doctor"]);
    assert_exit(&text, Exit::DoctorFailed, "doctor");
    assert_eq!(
        stdout(&text).lines().count(),
        checks.len(),
        "the same checks: {}",
        stdout(&text)
    );

    for (what, out) in [
        ("status", &status),
        ("profiles", &profiles),
        ("keys", &keys),
        ("doctor", &d),
    ] {
        assert!(!out.to_string().contains(&token), "{what} shows the token");
    }
    assert!(!stdout(&audit).contains(&token), "audit shows the token");

    // Locked: its own code; status says why.
    agent.ok(&["lock"]);
    assert_exit(&agent.cli(&["token"]), Exit::Locked, "token when locked");
    let status = json(&agent.cli(&["status", "--json"]));
    assert!(status["locked"].is_string(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_touch_and_upstream_refusals_have_their_own_codes() {
    let (emu, key_json) = emulator().await;
    let base = config_text(&emu.base_url(), "auto", "every-token", "");
    // The inference profile is the config's last table: the line joins it.
    let cfg = base.clone()
        + "kubectl_window = \"5m\"\n"
        + &format!(
            "\n[profiles.train]\nservice_account = \"{INFERENCE}\"\ntouch = \"every-token\"\ncallers = [\"*/bin/gcloud\"]\n\
             \n[profiles.stranger]\nservice_account = \"stranger@touchgate-test.iam.gserviceaccount.com\"\ntouch = \"every-token\"\n"
        );
    let mut agent = AgentProc::start(&cfg);
    agent.enrol_and_import(&key_json);

    // Refused by policy: the agent and `policy check` agree on the code.
    let o = agent.cli(&["token", "--profile", "train"]);
    assert_exit(&o, Exit::PolicyRefused, "token from a refused caller");
    let check = agent.cli(&[
        "policy",
        "check",
        "--profile",
        "train",
        "--exe",
        "/bin/true",
        "--json",
    ]);
    assert_exit(&check, Exit::PolicyRefused, "policy check refuse");
    let v = json(&check);
    assert_eq!(v["decision"], "refuse", "{v}");
    assert_eq!(v["rule"], "profiles.train.callers", "{v}");
    assert!(v["reason"].is_string() && v["window"].is_null(), "{v}");
    assert_eq!(v["profile"], "train");
    assert_eq!(v.get("kubectl_window"), Some(&Value::Null), "{v}");
    let text = agent_tool(
        &agent,
        &[
            "policy",
            "check",
            "--profile",
            "train",
            "--exe",
            "/bin/true",
        ],
    );
    assert_exit(&text, Exit::PolicyRefused, "policy check refuse (text)");
    let allow = agent.cli(&[
        "policy",
        "check",
        "--profile",
        "inference",
        "--exe",
        "/bin/true",
        "--json",
    ]);
    assert_exit(&allow, Exit::Ok, "policy check allow");
    let v = json(&allow);
    assert_eq!(v["decision"], "allow", "{v}");
    assert_eq!(v["touch"], "every-token", "{v}");
    assert_eq!(v["kubectl_window"], "5m", "{v}");
    assert!(v["window"].is_string() && v["reason"].is_null(), "{v}");
    let text = agent_tool(
        &agent,
        &[
            "policy",
            "check",
            "--profile",
            "inference",
            "--exe",
            "/bin/true",
        ],
    );
    assert_exit(&text, Exit::Ok, "policy check allow (text)");
    assert!(
        stdout(&text)
            .contains("touch: every-token; kubectl window: 5m (one kubectl binary and cluster);"),
        "{}",
        stdout(&text)
    );

    // The profiles show the kubectl window where one is set, and only there.
    let profiles = json(&agent.cli(&["profiles", "--json"]));
    let named = |n: &str| {
        profiles
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == n))
            .unwrap_or_else(|| panic!("profile {n} in {profiles}"))
            .clone()
    };
    assert_eq!(named("inference")["kubectl_window_secs"], 300, "{profiles}");
    assert_eq!(
        named("train").get("kubectl_window_secs"),
        Some(&Value::Null),
        "{profiles}"
    );
    let text = agent.ok(&["profiles"]);
    let line = |n: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("profile {n}")))
            .unwrap_or_else(|| panic!("profile {n} in {text}"))
    };
    assert!(
        line("inference")
            .contains("lifetime 900s, kubectl window 5m (one kubectl binary and cluster)"),
        "{text}"
    );
    assert!(!line("train").contains("kubectl"), "{text}");

    // Google refuses the impersonation.
    let o = agent.cli(&["token", "--profile", "stranger"]);
    assert_exit(&o, Exit::Upstream, "token Google refuses");

    // The touch is refused, then never comes.
    restart_with(
        &mut agent,
        &base.replace("touch = \"auto\"", "touch = \"deny\""),
    );
    assert_exit(&agent.cli(&["token"]), Exit::TouchDenied, "touch denied");
    restart_with(
        &mut agent,
        &base
            .replace("touch = \"auto\"", "touch = \"never\"")
            .replace("touch_timeout = \"10s\"", "touch_timeout = \"1s\""),
    );
    assert_exit(&agent.cli(&["token"]), Exit::TouchTimeout, "touch timeout");
}

#[test]
fn the_readme_has_the_same_exit_code_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md at the workspace root");
    for e in Exit::ALL {
        let row = format!("| {} | {} |", e.code(), e.meaning());
        assert!(readme.contains(&row), "README.md lacks the row {row}");
    }
}
