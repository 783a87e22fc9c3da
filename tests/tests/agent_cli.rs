//! The shipped binaries: `touchgate-agent` and `touchgate`, as a user runs them.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::*;

fn key_file(dir: &std::path::Path, json: &str) -> String {
    let p = dir.join("sa-key.json");
    std::fs::write(&p, json).unwrap();
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_flow_through_the_cli_and_no_secret_in_logs_or_state() {
    let (emu, key_json) = emulator().await;
    let user_json = emu.state().add_authorized_user("ml-engineer@example.com");
    let cfg = config_text(&emu.base_url(), "auto", "every-token", "")
        + "\n[profiles.user]\ncredential = \"user\"\ntouch = \"every-token\"\n";
    let mut agent = AgentProc::start(&cfg);
    let o = agent.cli(&["enroll"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let f = key_file(agent.dir.path(), &key_json);
    let o = agent.cli(&["import", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::remove_file(&f).unwrap();
    let o = agent.cli_stdin(&["import", "-", "--name", "user"], Some(&user_json));
    assert!(o.status.success(), "{}", stderr(&o));

    let o = agent.cli(&["token", "--profile", "inference"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = stdout(&o).trim().to_owned();
    assert!(token.starts_with("ya29."), "stdout is only the token");
    assert_eq!(stdout(&o).lines().count(), 1);
    let o = agent.cli(&["token", "--profile", "user"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let user_token = stdout(&o).trim().to_owned();

    let o = agent.cli(&["status"]);
    assert!(
        stdout(&o).contains("sealed credentials: default, user"),
        "{}",
        stdout(&o)
    );
    assert!(agent.stop(), "clean exit on SIGTERM");
    assert!(!agent.socket.exists(), "socket removed on exit");

    // No secret in the agent's (debug-level) log, nor anywhere in its state dir.
    let key: serde_json::Value = serde_json::from_str(&key_json).unwrap();
    let user: serde_json::Value = serde_json::from_str(&user_json).unwrap();
    let pem = key["private_key"].as_str().unwrap();
    let pem_line = pem.lines().nth(3).unwrap();
    let secrets = [
        ("access token", token.as_str()),
        ("user access token", user_token.as_str()),
        ("private key", pem_line),
        ("refresh token", user["refresh_token"].as_str().unwrap()),
        ("client secret", user["client_secret"].as_str().unwrap()),
    ];
    let log = agent.stderr();
    assert!(
        log.contains("issued token"),
        "the log records issuance: {log}"
    );
    for (what, s) in secrets {
        assert!(s.len() >= 16, "{what} too short to grep for");
        assert!(!log.contains(s), "{what} in the agent log");
        for (path, bytes) in all_files(&agent.state_dir()) {
            assert!(!contains(&bytes, s), "{what} in {}", path.display());
        }
    }
    for (path, bytes) in all_files(&agent.state_dir()) {
        assert!(
            !contains(&bytes, "PRIVATE KEY"),
            "private key in {}",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denied_touch_is_a_one_line_error() {
    let (emu, key_json) = emulator().await;
    // Enrol with an approving key, then restart the agent with a key that refuses.
    let mut agent = AgentProc::start(&config_text(&emu.base_url(), "auto", "every-token", ""));
    assert!(agent.cli(&["enroll"]).status.success());
    let f = key_file(agent.dir.path(), &key_json);
    assert!(agent.cli(&["import", &f]).status.success());
    agent.stop();
    std::fs::write(
        agent.dir.path().join("config.toml"),
        config_text(&emu.base_url(), "deny", "every-token", ""),
    )
    .unwrap();
    agent.child = Some(agent.spawn_agent("info"));
    let o = agent.cli(&["token"]);
    assert_one_line_error(&o, "the touch was refused on the security key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_touch_that_never_comes_times_out_cleanly() {
    let (emu, _) = emulator().await;
    let cfg = config_text(&emu.base_url(), "never", "every-token", "")
        .replace("touch_timeout = \"10s\"", "touch_timeout = \"1s\"");
    let agent = AgentProc::start(&cfg);
    let o = agent.cli(&["enroll"]);
    assert_one_line_error(&o, "no touch on the security key within 1s");
    assert!(
        stderr(&o).starts_with("touchgate: touch your security key to enrol it"),
        "the CLI relays the agent's touch prompt: {}",
        stderr(&o)
    );
    // The agent is still there and answers.
    assert!(agent.cli(&["status"]).status.success());
}

#[test]
fn errors_say_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin("touchgate"))
        .arg("status")
        .env("TOUCHGATE_SOCK", dir.path().join("nope.sock"))
        .output()
        .unwrap();
    assert_one_line_error(&o, "no touchgate agent is listening");
    assert!(stderr(&o).contains("touchgate-agent"));

    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    let o = agent.cli_stdin(&["import", "-"], Some("{\"type\":\"service_account\"}"));
    assert!(!o.status.success());
    let o = agent.cli(&["token"]);
    assert_one_line_error(&o, "run touchgate enroll");
    let o = agent.cli(&["token", "--profile", "nope"]);
    assert_one_line_error(&o, "unknown profile \"nope\"");
}

#[test]
fn a_second_agent_on_the_same_socket_is_refused() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    let o = Command::new(bin("touchgate-agent"))
        .arg("--foreground")
        .envs(agent.env())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already serving"), "{}", stderr(&o));
    assert!(
        agent.cli(&["status"]).status.success(),
        "the first agent still serves"
    );
}

#[test]
fn another_uid_is_refused_even_with_loose_permissions() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    // Loosen everything on the way to the socket so only SO_PEERCRED stands in the way.
    for p in [
        agent.dir.path(),
        agent.socket.parent().unwrap(),
        agent.socket.as_path(),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("touchgate"))
        .arg("status")
        .env("TOUCHGATE_SOCK", &agent.socket)
        .output()
        .expect("setpriv is needed for this test: apt-get install util-linux");
    assert_one_line_error(&o, "serves uid 0 only");
    assert!(agent
        .stderr()
        .contains("refused a connection from another user"));
}

#[test]
fn daemon_mode_prints_the_export_line() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("a.sock");
    std::fs::write(dir.path().join("config.toml"), "").unwrap();
    let o = Command::new(bin("touchgate-agent"))
        .env("TOUCHGATE_SOCK", &sock)
        .env("TOUCHGATE_CONFIG", dir.path().join("config.toml"))
        .env("TOUCHGATE_STATE_DIR", dir.path().join("state"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(&format!(
            "TOUCHGATE_SOCK={}; export TOUCHGATE_SOCK;",
            sock.display()
        )),
        "{out}"
    );
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("echo Agent pid "))
        .and_then(|l| l.trim_end_matches(';').parse().ok())
        .unwrap();
    let st = Command::new(bin("touchgate"))
        .arg("status")
        .env("TOUCHGATE_SOCK", &sock)
        .output()
        .unwrap();
    assert!(st.status.success(), "{}", stderr(&st));
    sigterm(pid);
    // The agent is not our child: wait for its exit with tail --pid.
    let waited = Command::new("timeout")
        .args(["10", "tail", &format!("--pid={pid}"), "-f", "/dev/null"])
        .status()
        .unwrap();
    assert!(
        waited.success(),
        "agent did not exit within 10 s of SIGTERM"
    );
    assert!(!sock.exists(), "socket removed on SIGTERM");
    let log = std::fs::read_to_string(dir.path().join("state").join("agent.log")).unwrap();
    assert!(log.contains("shutting down"), "{log}");
}

#[test]
fn demo_auto_touch_passes() {
    let o = Command::new(bin("touchgate"))
        .args(["demo", "--auto-touch"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "demo failed: {out}\n{}", stderr(&o));
    assert!(out.contains("-> HTTP 200"), "{out}");
    assert!(out.contains("demo passed"), "{out}");
    assert!(out.contains("from cache: true"), "{out}");
    let _ = std::io::stdout().flush();
}

#[test]
fn without_a_journal_the_agent_logs_to_stderr_even_under_journal_stream() {
    // JOURNAL_STREAM says "systemd started us"; with no journald socket the agent
    // must fall back to stderr, not go silent.
    assert!(
        !std::path::Path::new("/run/systemd/journal/socket").exists(),
        "this test needs a machine without journald"
    );
    let agent = AgentProc::start_with_env(
        &config_text("http://127.0.0.1:9", "auto", "every-token", ""),
        vec![("JOURNAL_STREAM".into(), "8:12345".into())],
    );
    assert!(agent.cli(&["status"]).status.success());
    assert!(agent.stderr().contains("listening"), "{}", agent.stderr());
}

/// `touchgate-agent` (daemonising) started under `umask 022` on `dir`'s config
/// and `dir/state`; returns its pid.
fn start_daemon_with_umask_022(dir: &std::path::Path) -> u32 {
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\"")
        .arg(bin("touchgate-agent"))
        .env("TOUCHGATE_SOCK", dir.join("a.sock"))
        .env("TOUCHGATE_CONFIG", dir.join("config.toml"))
        .env("TOUCHGATE_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("echo Agent pid "))
        .and_then(|l| l.trim_end_matches(';').parse().ok())
        .expect("the agent's pid")
}

fn stop_daemon(pid: u32) {
    sigterm(pid);
    let waited = Command::new("timeout")
        .args(["10", "tail", &format!("--pid={pid}"), "-f", "/dev/null"])
        .status()
        .unwrap();
    assert!(
        waited.success(),
        "agent did not exit within 10 s of SIGTERM"
    );
}

/// The permission bits of `p`, in octal (`"600"`).
fn mode_of(p: &std::path::Path) -> String {
    let m = std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode();
    format!("{:o}", m & 0o777)
}

#[test]
fn the_state_dir_is_private_whatever_the_umask_and_stale_temp_files_go() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        config_text("http://127.0.0.1:9", "auto", "every-token", ""),
    )
    .unwrap();
    let state = dir.path().join("state");
    let cli = |args: &[&str]| {
        Command::new(bin("touchgate"))
            .args(args)
            .env("TOUCHGATE_SOCK", dir.path().join("a.sock"))
            .output()
            .unwrap()
    };

    // A fresh start under umask 022: directory and every file private.
    let pid = start_daemon_with_umask_022(dir.path());
    let o = cli(&["enroll"]);
    assert!(o.status.success(), "{}", stderr(&o));
    stop_daemon(pid);
    assert_eq!(mode_of(&state), "700", "state dir");
    for f in ["vault.json", "soft-key.json", "audit.jsonl", "agent.log"] {
        assert_eq!(mode_of(&state.join(f)), "600", "{f}");
    }

    // A loose state dir from before, and a temp file a kill -9 left behind.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["vault.json", "agent.log"] {
        std::fs::set_permissions(state.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = state.join(format!(".vault.json.tmp-{dead_pid}-00112233"));
    std::fs::write(&stale, "{\"half\":").unwrap();

    let pid = start_daemon_with_umask_022(dir.path());
    assert!(cli(&["status"]).status.success());
    stop_daemon(pid);
    assert_eq!(mode_of(&state), "700", "state dir tightened");
    for f in ["vault.json", "agent.log"] {
        assert_eq!(mode_of(&state.join(f)), "600", "{f} tightened");
    }
    assert!(!stale.exists(), "stale temp file removed");
    let log = std::fs::read_to_string(state.join("agent.log")).unwrap();
    assert!(
        log.contains("was mode 755: tightened to 700"),
        "the log says the state dir was tightened: {log}"
    );
    assert!(log.contains("interrupted write"), "{log}");
}
