//! The shipped binaries: `touchgate-agent` and `touchgate`, as a user runs them.

use crate::common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::other_uid::{Holder, Mode, Target};
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

/// Loosen everything on the way to the socket so only SO_PEERCRED stands in the way.
fn open_to_everyone(agent: &AgentProc) {
    for p in [
        agent.dir.path(),
        agent.socket.parent().unwrap(),
        agent.socket.as_path(),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
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
    open_to_everyone(&agent);
    // A client without the library's checks: the agent itself refuses.
    require_root_and_setpriv();
    let o = as_nobody(&bin("touchgate-impostor"))
        .arg("client")
        .arg(&agent.socket)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains("refused: this touchgate agent serves uid 0 only"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(agent
        .stderr()
        .contains("refused a connection from another user"));
    // The real client of that user does not even try a directory that is not its own.
    let o = as_nobody(&bin("touchgate"))
        .arg("status")
        .env("TOUCHGATE_SOCK", &agent.socket)
        .output()
        .unwrap();
    assert_one_line_error(&o, "is owned by uid 0, not by you (uid 65534)");
}

/// A credential that must never reach another user.
const MARK: &str = "impostor-must-never-see-this";

/// `touchgate import -` of a credential carrying [`MARK`], with no runtime dir,
/// the shared temp dir `tmp`, a private HOME and state dir, and `sock` if given.
fn import_marked(
    tmp: &std::path::Path,
    home: &std::path::Path,
    sock: Option<&std::path::Path>,
) -> std::process::Output {
    let mut c = Command::new(bin("touchgate"));
    c.args(["import", "-"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_STATE_HOME")
        .env_remove("TOUCHGATE_SOCK")
        .env("TMPDIR", tmp)
        .env("HOME", home)
        .env("TOUCHGATE_STATE_DIR", home.join("state"))
        .env("TOUCHGATE_CONFIG", home.join("config.toml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(s) = sock {
        c.env("TOUCHGATE_SOCK", s);
    }
    let mut child = c.spawn().unwrap();
    let json = format!(
        r#"{{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"{MARK}"}}"#
    );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A shared temp dir like /tmp (1777), where any user may create a directory first.
fn shared_tmp() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    t
}

/// Nothing the impostor read: not a byte, let alone the credential.
fn assert_nothing_reached(imp: Impostor) {
    let got = imp.finish();
    assert!(
        !got.iter().any(|l| l.contains(MARK)),
        "the credential reached another user: {got:?}"
    );
    assert!(got.is_empty(), "bytes reached another user: {got:?}");
}

/// ssh without pam_systemd, su, cron: no XDG_RUNTIME_DIR. Another user who
/// creates the old fallback `$TMPDIR/touchgate-<uid>/agent.sock` first gets nothing:
/// the default is now a private directory under the state dir.
#[test]
fn without_a_runtime_dir_a_squatted_temp_dir_gets_nothing() {
    let tmp = shared_tmp();
    let home = tempfile::tempdir().unwrap();
    let me = touchgate::paths::current_uid();
    let squatted = tmp
        .path()
        .join(format!("touchgate-{me}"))
        .join("agent.sock");
    let imp = Impostor::start("agent", squatted.to_str().unwrap());
    let o = import_marked(tmp.path(), home.path(), None);
    assert_nothing_reached(imp);
    let line = assert_one_line_error(&o, "no touchgate agent is listening at");
    assert!(
        line.contains(&home.path().join("state").display().to_string()),
        "the default socket is under the state dir: {line}"
    );

    // A state dir too deep for a socket path: the shared temp dir it is, and the
    // impostor's directory there is refused.
    let imp = Impostor::start("agent", squatted.to_str().unwrap());
    let deep = home
        .path()
        .join("d".repeat(touchgate::paths::MAX_SOCKET_PATH));
    let o = import_marked(tmp.path(), &deep, None);
    assert_nothing_reached(imp);
    let line = assert_one_line_error(&o, "is owned by uid 65534, not by you (uid 0)");
    assert!(line.contains(&squatted.display().to_string()), "{line}");
}

/// TOUCHGATE_SOCK names a socket in another user's directory: refused before connecting.
#[test]
fn a_socket_in_another_users_directory_is_refused_before_a_byte_is_sent() {
    let tmp = shared_tmp();
    let home = tempfile::tempdir().unwrap();
    let squatted = tmp.path().join("touchgate-x").join("agent.sock");
    let imp = Impostor::start("agent", squatted.to_str().unwrap());
    let o = import_marked(tmp.path(), home.path(), Some(&squatted));
    assert_nothing_reached(imp);
    let line = assert_one_line_error(&o, "is owned by uid 65534, not by you (uid 0)");
    assert!(line.contains(&squatted.display().to_string()), "{line}");
}

/// Our own 0700 directory, but another user listens on the socket in it (it
/// got in while the directory was open): SO_PEERCRED names it, nothing is sent.
#[test]
fn a_socket_served_by_another_user_is_refused_before_a_byte_is_sent() {
    let tmp = shared_tmp();
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let sock = dir.path().join("agent.sock");
    let imp = Impostor::start("agent", sock.to_str().unwrap());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = import_marked(tmp.path(), home.path(), Some(&sock));
    assert_nothing_reached(imp);
    let line = assert_one_line_error(&o, "is served by uid 65534, not by you (uid 0)");
    assert!(line.contains(&sock.display().to_string()), "{line}");
}

/// Our own agent, but its directory is open to others: the client refuses until
/// it is 0700 again, and the agent will not bind in such a directory.
#[test]
fn a_socket_directory_others_can_enter_is_refused_by_client_and_agent() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    let dir = agent.socket.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = assert_one_line_error(&agent.cli(&["status"]), "has mode 0755");
    assert!(
        line.contains(&format!("chmod 700 {}", dir.display())),
        "{line}"
    );
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    agent.ok(&["status"]);

    let loose = tempfile::tempdir().unwrap();
    std::fs::set_permissions(loose.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(loose.path().join("config.toml"), "").unwrap();
    let o = Command::new(bin("touchgate-agent"))
        .arg("--foreground")
        .env("TOUCHGATE_SOCK", loose.path().join("a.sock"))
        .env("TOUCHGATE_CONFIG", loose.path().join("config.toml"))
        .env("TOUCHGATE_STATE_DIR", loose.path().join("state"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{} has mode 0755", loose.path().display())),
        "{err}"
    );
    assert!(!loose.path().join("a.sock").exists());
}

#[test]
fn another_uids_connection_flood_does_not_keep_the_owner_out() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "max_connections = 4",
    ));
    open_to_everyone(&agent);
    // Our own client refuses a socket in a directory others can enter: it
    // reaches the same socket through a hard link in a private directory.
    let private = private_tempdir();
    let own_path = private.path().join("agent.sock");
    std::fs::hard_link(&agent.socket, &own_path).unwrap();
    // Another user keeps 50 connections open, opening a new one for each the agent closes.
    let holder = Holder::start_as_nobody(Target::Unix(&agent.socket), 50, b"", Mode::Flood);
    holder.wait_open(50);
    for _ in 0..5 {
        let o = Command::new(bin("touchgate"))
            .arg("status")
            .env("TOUCHGATE_SOCK", &own_path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "the owner is kept out by another user's connections: {}",
            stderr(&o)
        );
    }
    assert!(agent
        .stderr()
        .contains("refused a connection from another user"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_one_process_cannot_hold_them_all() {
    use touchgate::frame::{read_frame, write_frame};
    use touchgate::{ErrorCode, Hello, HelloReply};
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "max_connections = 4\nidle_connection_timeout = \"1s\"",
    ));
    // This process says hello on four connections, then sits idle.
    let mut idle = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::UnixStream::connect(&agent.socket)
            .await
            .unwrap();
        write_frame(&mut s, &Hello::ours("idle")).await.unwrap();
        match read_frame::<_, HelloReply>(&mut s).await.unwrap() {
            HelloReply::Hello(_) => idle.push(s),
            HelloReply::Error(e) => refused.push(e),
        }
    }
    let opened = std::time::Instant::now();
    assert_eq!(idle.len(), 2, "one process holds at most half: {refused:?}");
    for e in &refused {
        assert_eq!(e.code, ErrorCode::Busy, "{e:?}");
        assert!(e.message.contains("half"), "{}", e.message);
    }
    // Another process still gets in.
    let o = agent.cli(&["status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The idle connections are closed after the timeout.
    for s in &mut idle {
        let r = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            read_frame::<_, touchgate::Response>(s),
        )
        .await
        .expect("an idle connection is closed within 15 s");
        assert!(r.is_err(), "closed, not answered: {r:?}");
    }
    assert!(opened.elapsed() >= std::time::Duration::from_millis(900));
    assert!(agent.stderr().contains("idle"), "{}", agent.stderr());
}

#[test]
fn daemon_mode_prints_the_export_line() {
    let dir = private_tempdir();
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

/// `eval "$(touchgate-agent)"` with `config`'s text (None: no config file at all)
/// in `dir`; returns the daemon's pid and its start's stderr.
fn daemon(dir: &std::path::Path, config: Option<&str>) -> (u32, String) {
    if let Some(text) = config {
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }
    let o = Command::new(bin("touchgate-agent"))
        .env("TOUCHGATE_SOCK", dir.join("run/agent.sock"))
        .env("TOUCHGATE_CONFIG", dir.join("config.toml"))
        .env("TOUCHGATE_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let pid = stdout(&o)
        .lines()
        .find_map(|l| l.strip_prefix("echo Agent pid "))
        .and_then(|l| l.trim_end_matches(';').parse().ok())
        .unwrap();
    (pid, stderr(&o))
}

fn cli_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin("touchgate"))
        .args(args)
        .env("TOUCHGATE_SOCK", dir.join("run/agent.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn a_default_install_uses_the_security_key_and_says_when_there_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let (pid, start) = daemon(dir.path(), None);
    assert!(start.is_empty(), "a safe default warns of nothing: {start}");
    let st = cli_in(dir.path(), &["status"]);
    assert!(st.status.success(), "{}", stderr(&st));
    assert!(stdout(&st).contains("key backend: hid"), "{}", stdout(&st));
    assert!(!stdout(&st).contains("WARNING"), "{}", stdout(&st));
    // No key plugged in (no hidraw device here): one line naming what to do.
    let o = cli_in(dir.path(), &["enroll"]);
    let err = assert_one_line_error(&o, "no security key found");
    assert!(err.contains("plug in"), "{err}");
    assert!(err.contains("udev"), "{err}");
    assert!(!err.contains("touch was refused"), "{err}");
    sigterm(pid);
    assert!(
        !dir.path().join("state/soft-key.json").exists(),
        "a default install created a software key"
    );
}

#[test]
fn a_key_the_user_may_not_open_is_named_with_the_udev_rule() {
    use common::other_uid::NOBODY;
    require_root_and_setpriv();
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    // A device node only root may open, as a hidraw node is without the udev rule.
    let device = dir.path().join("hidraw0");
    std::fs::write(&device, "").unwrap();
    std::fs::set_permissions(&device, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!("[key]\ndevices = [\"{}\"]\n", device.display()),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(NOBODY), Some(NOBODY)).unwrap();
    let env = [
        ("TOUCHGATE_SOCK", dir.path().join("run/agent.sock")),
        ("TOUCHGATE_CONFIG", config),
        ("TOUCHGATE_STATE_DIR", dir.path().join("state")),
    ];
    let mut agent = as_nobody(&bin("touchgate-agent"))
        .args(["--foreground", "--print-sock"])
        .envs(env.clone())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = first_line(&mut agent);
    assert!(
        line.starts_with("TOUCHGATE_SOCK="),
        "agent did not start: {line:?}"
    );
    let o = as_nobody(&bin("touchgate"))
        .arg("enroll")
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let err = assert_one_line_error(
        &o,
        &format!(
            "your user may not open the security key {}",
            device.display()
        ),
    );
    assert!(err.contains("udev rule"), "{err}");
}

#[test]
fn the_software_key_is_named_and_warned_about_at_start_and_in_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[key]\nbackend = \"soft\"\ntouch = \"auto\"\n";
    let (pid, start) = daemon(dir.path(), Some(config));
    let soft_key = dir.path().join("state/soft-key.json");
    let want = format!(
        "touchgate-agent: warning: the software key (backend = \"soft\") keeps its secret in plain text in {}",
        soft_key.display()
    );
    assert!(start.starts_with(&want), "{start}");
    assert_eq!(start.lines().count(), 1, "{start}");
    let st = cli_in(dir.path(), &["status"]);
    assert!(
        stdout(&st).contains(&format!(
            "WARNING: the software key (backend = \"soft\") keeps its secret in plain text in {}",
            soft_key.display()
        )),
        "{}",
        stdout(&st)
    );
    sigterm(pid);
    let log = std::fs::read_to_string(dir.path().join("state/agent.log")).unwrap();
    assert!(log.contains("keeps its secret in plain text"), "{log}");
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

/// Client input is quoted short in errors: a 64 KiB import name (or one that
/// doubles when escaped) still gets a one-line answer, never a silent hang-up.
#[test]
fn a_64_kib_import_name_gets_a_one_line_error() {
    let agent = AgentProc::start(&config_text(
        "http://127.0.0.1:9",
        "auto",
        "every-token",
        "",
    ));
    let key = r#"{"type":"service_account"}"#;
    // Fits in a request, but escaped it is twice the frame cap.
    let quotes = "\"".repeat(32 * 1024);
    let o = agent.cli_stdin(&["import", "-", "--name", &quotes], Some(key));
    let line = assert_one_line_error(&o, "is not allowed: use up to 64 letters");
    assert!(line.len() < 400, "the name is quoted short: {line}");
    assert!(line.contains('…'), "{line}");
    // Over the frame cap by itself: refused before it is sent, saying why.
    let big = "x".repeat(64 * 1024);
    let o = agent.cli_stdin(&["import", "-", "--name", &big], Some(key));
    let line = assert_one_line_error(&o, "over the 65536-byte cap");
    assert!(line.len() < 400, "{line}");
    agent.ok(&["status"]);
}

/// `touchgate-agent` (daemonising) started under `umask 022` on `dir`'s config
/// and `dir/state`; returns its pid.
fn start_daemon_with_umask_022(dir: &std::path::Path) -> u32 {
    let o = Command::new("sh")
        .arg("-c")
        .arg("umask 022; exec \"$0\"")
        .arg(bin("touchgate-agent"))
        .env("TOUCHGATE_SOCK", dir.join("run/a.sock"))
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
            .env("TOUCHGATE_SOCK", dir.path().join("run/a.sock"))
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
