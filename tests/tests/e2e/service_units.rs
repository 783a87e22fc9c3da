//! The agent as a service: systemd socket activation for real (through
//! `systemd-socket-activate`), what the agent does with `LISTEN_*` variables
//! that are not for it, and the units / plist `touchgate setup agent` installs.

use crate::common;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{
    all_files, as_nobody, assert_one_line_error, bin, require_root_and_setpriv, sigterm, stderr,
    stdout, AgentProc,
};

const DEADLINE: Duration = Duration::from_secs(30);

fn tool(name: &str, package: &str) -> PathBuf {
    for d in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain(["/usr/bin".into(), "/bin".into()])
    {
        let p = d.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is needed for this test: apt-get install {package}");
}

fn uid_of(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().uid()
}

fn is_socket(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_socket())
}

/// Collected stderr, with a way to wait for a line to appear.
#[derive(Clone, Default)]
struct Log(Arc<(Mutex<String>, Condvar)>);

impl Log {
    fn push(&self, s: &str) {
        self.0 .0.lock().unwrap().push_str(s);
        self.0 .1.notify_all();
    }
    fn text(&self) -> String {
        self.0 .0.lock().unwrap().clone()
    }
    /// The text, once it contains `needle` (fails after DEADLINE).
    fn wait_for(&self, needle: &str) -> String {
        let start = Instant::now();
        let mut text = self.0 .0.lock().unwrap();
        while !text.contains(needle) {
            let left = DEADLINE
                .checked_sub(start.elapsed())
                .unwrap_or_else(|| panic!("no {needle:?} in the log: {text}"));
            text = self.0 .1.wait_timeout(text, left).unwrap().0;
        }
        text.clone()
    }
}

/// `systemd-socket-activate -l SOCK [EXTRA] PROGRAM…` with the agent's dirs in
/// `dir`. Returns once the socket is listening (its "Listening on" line); the
/// rest of its and the program's stderr is collected in `log`.
struct Activator {
    child: Child,
    stdout: BufReader<ChildStdout>,
    log: Log,
}

impl Activator {
    fn start(dir: &Path, sock: &Path, extra: &[&str], program: &[&dyn AsRef<OsStr>]) -> Activator {
        // The socket's directory is private, as the unit's DirectoryMode=0700 makes it.
        let parent = sock.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut child = Command::new(tool("systemd-socket-activate", "systemd"))
            .arg("-l")
            .arg(sock)
            .args(extra)
            .args(program)
            .env("TOUCHGATE_CONFIG", dir.join("config.toml"))
            .env("TOUCHGATE_STATE_DIR", dir.join("state"))
            // Under activation the passed socket wins over TOUCHGATE_SOCK.
            .env("TOUCHGATE_SOCK", dir.join("unused.sock"))
            .env("TOUCHGATE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let log = Log::default();
        loop {
            let mut line = String::new();
            let n = err.read_line(&mut line).unwrap();
            log.push(&line);
            assert!(
                n > 0,
                "systemd-socket-activate exited before listening: {}",
                log.text()
            );
            if line.contains("Listening on") {
                break;
            }
        }
        let l = log.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).is_ok_and(|n| n > 0) {
                l.push(&line);
                line.clear();
            }
        });
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Activator { child, stdout, log }
    }

    /// The next line on stdout.
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        l.trim_end().to_owned()
    }

    fn log(&self) -> String {
        self.log.text()
    }

    fn log_with(&self, needle: &str) -> String {
        self.log.wait_for(needle)
    }
}

impl Drop for Activator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(sock: &Path) -> Output {
    Command::new(bin("touchgate"))
        .arg("status")
        .env("TOUCHGATE_SOCK", sock)
        .output()
        .unwrap()
}

fn empty_config(dir: &Path) {
    std::fs::write(dir.join("config.toml"), "").unwrap();
}

/// The agent serves the socket systemd passes (not TOUCHGATE_SOCK), refuses
/// other users on it, and leaves the socket file when it exits.
#[test]
fn socket_activation_serves_the_passed_socket_and_leaves_it() {
    let dir = tempfile::tempdir().unwrap();
    empty_config(dir.path());
    let sock = dir.path().join("run").join("agent.sock");
    let agent = bin("touchgate-agent");
    let mut act = Activator::start(
        dir.path(),
        &sock,
        &[],
        &[&agent, &"--foreground", &"--print-sock"],
    );
    // systemd-socket-activate starts the agent on the first connection, which
    // then waits in the socket's queue until the agent answers.
    let o = status(&sock);
    assert!(o.status.success(), "{}\nlog:\n{}", stderr(&o), act.log());
    let pid = act.child.id();
    assert!(
        stdout(&o).contains(&format!("(pid {pid})")),
        "the agent exec'd by systemd-socket-activate answers: {}",
        stdout(&o)
    );
    assert_eq!(
        act.line(),
        format!("TOUCHGATE_SOCK={}; export TOUCHGATE_SOCK;", sock.display()),
        "the export line names the passed socket"
    );
    act.log_with("socket activation: serving the socket systemd passed");
    assert!(!dir.path().join("unused.sock").exists());

    // Another uid is refused even with the socket opened to everyone.
    let me = uid_of(dir.path());
    for p in [dir.path(), sock.parent().unwrap(), sock.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    // A client without the library's checks, so the agent's own refusal shows.
    require_root_and_setpriv();
    let o = as_nobody(&bin("touchgate-impostor"))
        .arg("client")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(
        stdout(&o).contains(&format!(
            "refused: this touchgate agent serves uid {me} only"
        )),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    act.log_with("refused a connection from another user");

    sigterm(pid);
    let st = act.child.wait().unwrap();
    assert!(st.success(), "SIGTERM is a clean exit: {st}\n{}", act.log());
    act.log_with("shutting down");
    assert!(
        is_socket(&sock),
        "the socket file belongs to systemd and stays after the agent exits"
    );
}

/// systemd's lifecycle: the socket stays open while the agent stops and a new
/// one starts on the same descriptor (the socket file exists all along).
#[test]
fn a_restarted_agent_serves_the_same_socket() {
    let dir = tempfile::tempdir().unwrap();
    empty_config(dir.path());
    let sock = dir.path().join("agent.sock");
    let agent = bin("touchgate-agent");
    // Each inner sh sets LISTEN_PID to its own pid, then becomes the agent.
    let script = r#"for i in 1 2; do
  sh -c 'LISTEN_PID=$$; export LISTEN_PID; echo "pid $$"; exec "$0" --foreground' "$0"
  echo "exit $?"
done"#;
    let mut act = Activator::start(dir.path(), &sock, &[], &[&"sh", &"-c", &script, &agent]);
    for round in 1..=2 {
        let o = status(&sock);
        assert!(
            o.status.success(),
            "round {round}: {}\n{}",
            stderr(&o),
            act.log()
        );
        let line = act.line();
        let pid: u32 = line
            .strip_prefix("pid ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("expected a pid line, got {line:?}\n{}", act.log()));
        assert!(
            stdout(&o).contains(&format!("(pid {pid})")),
            "round {round}: {}",
            stdout(&o)
        );
        sigterm(pid);
        assert_eq!(act.line(), "exit 0", "{}", act.log());
        assert!(is_socket(&sock), "round {round}: the socket file stays");
    }
    assert!(act.child.wait().unwrap().success());
    assert!(
        !act.log()
            .contains("another touchgate-agent is already serving"),
        "{}",
        act.log()
    );
}

/// Descriptor 3 that is not a listening Unix stream socket, or LISTEN_* that
/// make no sense, stop the agent with one clear line.
#[test]
fn a_passed_descriptor_that_is_not_a_stream_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    empty_config(dir.path());
    let agent = bin("touchgate-agent");
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let run = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .arg(&agent)
            .arg(&file)
            .env("TOUCHGATE_CONFIG", dir.path().join("config.toml"))
            .env("TOUCHGATE_STATE_DIR", dir.path().join("state"))
            .env("TOUCHGATE_SOCK", dir.path().join("unused.sock"))
            .output()
            .unwrap()
    };
    let one_line = |o: &Output, want: &str| {
        assert!(!o.status.success(), "{}", stdout(o));
        let err = stderr(o);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("touchgate-agent: socket activation: ") && err.contains(want),
            "{err:?} should say {want:?}"
        );
    };
    let o = run(
        r#"LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$0" --foreground 3<"$1""#,
    );
    one_line(&o, "descriptor 3 is not a socket");
    assert!(stderr(&o).contains("ListenStream="), "says how to fix it");
    let o = run(
        r#"LISTEN_PID=$$ LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$0" --foreground 3<&-"#,
    );
    one_line(&o, "descriptor 3 is not open");
    let o =
        run(r#"LISTEN_PID=pid LISTEN_FDS=1; export LISTEN_PID LISTEN_FDS; exec "$0" --foreground"#);
    one_line(&o, "LISTEN_PID=\"pid\" is not a number");
    assert!(!dir.path().join("unused.sock").exists());

    // A datagram socket, passed for real.
    let sock = dir.path().join("dgram.sock");
    let mut act = Activator::start(
        dir.path(),
        &sock,
        &["--datagram"],
        &[&agent, &"--foreground"],
    );
    // The first datagram makes systemd-socket-activate start the agent.
    std::os::unix::net::UnixDatagram::unbound()
        .unwrap()
        .send_to(b"x", &sock)
        .unwrap();
    let st = act.child.wait().unwrap();
    assert!(!st.success());
    act.log_with("descriptor 3 is a datagram socket, not a stream socket");
}

/// LISTEN_PID naming another process: the variables were inherited, not meant
/// for this agent. It binds its own socket (and removes it on exit) as usual.
#[test]
fn listen_variables_for_another_process_are_ignored() {
    let mut agent = AgentProc::start_with_env(
        "",
        vec![
            ("LISTEN_PID".into(), "1".into()),
            ("LISTEN_FDS".into(), "1".into()),
        ],
    );
    assert!(agent.ok(&["status"]).contains("agent: touchgate-agent"));
    assert!(
        agent
            .stderr()
            .contains("LISTEN_PID=1 names another process: no socket activation"),
        "{}",
        agent.stderr()
    );
    assert!(agent.stop());
    assert!(
        !agent.socket.exists(),
        "a socket the agent bound itself is removed on exit"
    );
}

// ---------------------------------------------------------------- setup agent

/// Files and directories under `dir`, for before/after comparisons.
fn snapshot(dir: &Path) -> (Vec<(PathBuf, Vec<u8>)>, Vec<PathBuf>) {
    let mut files = all_files(dir);
    files.sort();
    let mut dirs = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
                stack.push(e.path());
            }
        }
    }
    dirs.sort();
    (files, dirs)
}

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn new() -> Home {
        Home {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn config(&self) -> PathBuf {
        self.path().join("config")
    }
    fn units(&self) -> PathBuf {
        self.config().join("systemd").join("user")
    }
    /// `touchgate ARGS` (the binary at `exe`) with this home.
    fn run_with(&self, exe: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> Output {
        Command::new(exe)
            .args(args)
            .env("HOME", self.path())
            .env("XDG_CONFIG_HOME", self.config())
            .env("XDG_STATE_HOME", self.path().join("state"))
            .env_remove("TOUCHGATE_SERVICE_MANAGER")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap()
    }
    fn ok(&self, exe: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
        let o = self.run_with(exe, args, env);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    }
}

/// `systemd-analyze --user verify` of the installed units, offline (it needs
/// only a runtime dir, no running systemd).
fn verify(home: &Home, units: &[PathBuf]) -> Output {
    let rt = home.path().join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    Command::new(tool("systemd-analyze", "systemd"))
        .args(["--user", "verify"])
        .args(units)
        .env("XDG_RUNTIME_DIR", &rt)
        .env("XDG_CONFIG_HOME", home.config())
        .env("HOME", home.path())
        .output()
        .unwrap()
}

fn assert_verifies(home: &Home) {
    let units = [
        home.units().join("touchgate-agent.socket"),
        home.units().join("touchgate-agent.service"),
    ];
    let o = verify(home, &units);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        stdout(&o),
        stderr(&o)
    );
}

fn exec_start(unit: &str) -> &str {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line")
}

/// The value of `key=` in a unit's text (the last one, as systemd reads it).
fn unit_value<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn setup_agent_installs_units_that_verify_and_undo_restores_exactly() {
    let home = Home::new();
    // Something already there: another unit, and an old socket unit of ours.
    std::fs::create_dir_all(home.units()).unwrap();
    std::fs::write(
        home.units().join("other.service"),
        "[Service]\nExecStart=/bin/true\n",
    )
    .unwrap();
    let old_socket = b"# an older touchgate-agent.socket\n[Socket]\nListenStream=%t/old.sock\n";
    std::fs::write(home.units().join("touchgate-agent.socket"), old_socket).unwrap();
    let before = snapshot(home.path());

    let touchgate = bin("touchgate");
    let out = home.ok(&touchgate, &["setup", "agent"], &[]);
    assert!(
        out.contains(
            "next: systemctl --user daemon-reload && systemctl --user enable --now touchgate-agent.socket"
        ),
        "{out}"
    );
    assert!(
        out.contains("touchgate setup --undo agent restores everything above"),
        "{out}"
    );
    let service = std::fs::read_to_string(home.units().join("touchgate-agent.service")).unwrap();
    let agent = bin("touchgate-agent");
    assert_eq!(
        exec_start(&service),
        format!("{} --foreground", agent.display()),
        "the agent beside touchgate"
    );
    let socket = std::fs::read_to_string(home.units().join("touchgate-agent.socket")).unwrap();
    assert_eq!(
        unit_value(&socket, "ListenStream"),
        Some("%t/touchgate/agent.sock")
    );
    assert_eq!(unit_value(&socket, "SocketMode"), Some("0600"));
    assert_eq!(unit_value(&socket, "DirectoryMode"), Some("0700"));
    assert_eq!(
        unit_value(&service, "Requires"),
        Some("touchgate-agent.socket")
    );
    assert_verifies(&home);

    // %t/touchgate/agent.sock is where the client looks by default.
    let rt = home.path().join("rt");
    let o = Command::new(&touchgate)
        .arg("status")
        .env_remove("TOUCHGATE_SOCK")
        .env("XDG_RUNTIME_DIR", &rt)
        .output()
        .unwrap();
    assert_one_line_error(
        &o,
        &format!(
            "no touchgate agent is listening at {}",
            rt.join("touchgate/agent.sock").display()
        ),
    );

    // The check is not vacuous: a unit naming a missing agent fails it.
    let bad = home.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(
        bad.join("touchgate-agent.service"),
        service.replace(&agent.display().to_string(), "/nonexistent/touchgate-agent"),
    )
    .unwrap();
    let o = verify(&home, &[bad.join("touchgate-agent.service")]);
    assert!(!o.status.success(), "{}", stderr(&o));
    std::fs::remove_dir_all(&bad).unwrap();
    std::fs::remove_dir_all(&rt).unwrap();

    // Again: same files, the first backup kept.
    home.ok(&touchgate, &["setup", "agent"], &[]);

    // Enabled units are not pulled out from under systemd.
    let wants = home.units().join("sockets.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink(
        home.units().join("touchgate-agent.socket"),
        wants.join("touchgate-agent.socket"),
    )
    .unwrap();
    let o = home.run_with(&touchgate, &["setup", "agent", "--undo"], &[]);
    assert_one_line_error(&o, "systemctl --user disable --now touchgate-agent.socket");
    assert!(home.units().join("touchgate-agent.service").exists());
    std::fs::remove_dir_all(&wants).unwrap();

    let out = home.ok(&touchgate, &["setup", "agent", "--undo"], &[]);
    assert!(out.contains("restored"), "{out}");
    assert!(
        out.contains("then: systemctl --user daemon-reload"),
        "{out}"
    );
    let mut after = snapshot(home.path());
    // The backup root itself stays (as for every setup target).
    after
        .1
        .retain(|d| !d.starts_with(home.path().join("state")));
    let mut want = before.clone();
    want.1.retain(|d| !d.starts_with(home.path().join("state")));
    assert_eq!(after, want, "undo restores the directory byte for byte");
    assert_eq!(
        std::fs::read(home.units().join("touchgate-agent.socket")).unwrap(),
        old_socket
    );
}

/// Hard-link (same file system) or copy `src` to `dst`.
fn link(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    if std::fs::hard_link(src, dst).is_err() {
        common::copy_program(src, dst);
    }
}

#[test]
fn setup_agent_finds_the_agent_beside_it_else_on_path_and_quotes_it() {
    let home = Home::new();
    // An install dir whose name needs quoting and escaping in a unit.
    let odd = home.path().join("my bin %n $HOME");
    link(&bin("touchgate"), &odd.join("touchgate"));
    link(&bin("touchgate-agent"), &odd.join("touchgate-agent"));
    home.ok(&odd.join("touchgate"), &["setup", "agent"], &[]);
    let service = std::fs::read_to_string(home.units().join("touchgate-agent.service")).unwrap();
    assert_eq!(
        exec_start(&service),
        format!(
            "\"{}/my bin %%n $HOME/touchgate-agent\" --foreground",
            home.path().display()
        )
    );
    // systemd resolves the quoted path to the real, executable agent.
    assert_verifies(&home);
    home.ok(&odd.join("touchgate"), &["setup", "agent", "--undo"], &[]);

    // No agent beside touchgate: the one on PATH.
    let lonely = home.path().join("lonely");
    link(&bin("touchgate"), &lonely.join("touchgate"));
    let on_path = home.path().join("on-path");
    link(&bin("touchgate-agent"), &on_path.join("touchgate-agent"));
    let empty = home.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let path = std::env::join_paths([&empty, &on_path]).unwrap();
    home.ok(
        &lonely.join("touchgate"),
        &["setup", "agent"],
        &[("PATH", &path)],
    );
    let service = std::fs::read_to_string(home.units().join("touchgate-agent.service")).unwrap();
    assert_eq!(
        exec_start(&service),
        format!("{}/touchgate-agent --foreground", on_path.display())
    );
    home.ok(
        &lonely.join("touchgate"),
        &["setup", "agent", "--undo"],
        &[],
    );

    // None at all: one line, nothing written.
    let o = home.run_with(
        &lonely.join("touchgate"),
        &["setup", "agent"],
        &[("PATH", empty.as_os_str())],
    );
    assert_one_line_error(&o, "no touchgate-agent beside");
    assert!(stderr(&o).contains("or on PATH: install touchgate-agent"));
    assert!(!home.units().exists());

    let o = home.run_with(
        &bin("touchgate"),
        &["setup", "agent"],
        &[("TOUCHGATE_SERVICE_MANAGER", "upstart".as_ref())],
    );
    assert_one_line_error(
        &o,
        "TOUCHGATE_SERVICE_MANAGER=\"upstart\" is not a service manager",
    );
}

fn read_plist(path: &Path) -> serde_json::Value {
    let o = Command::new(tool("python3", "python3"))
        .args([
            "-c",
            "import json, plistlib, sys; print(json.dumps(plistlib.load(open(sys.argv[1], 'rb'))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{} does not parse: {}",
        path.display(),
        stderr(&o)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn setup_agent_writes_a_launch_agent_plist() {
    let shipped =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../launchd/dev.touchgate.agent.plist");
    assert_eq!(read_plist(&shipped)["Label"], "dev.touchgate.agent");

    let home = Home::new();
    let before = snapshot(home.path());
    let launchd = [("TOUCHGATE_SERVICE_MANAGER", "launchd".as_ref())];
    let out = home.ok(&bin("touchgate"), &["setup", "agent"], &launchd);
    let path = home
        .path()
        .join("Library/LaunchAgents/dev.touchgate.agent.plist");
    let uid = uid_of(home.path());
    assert!(
        out.contains(&format!(
            "next: launchctl bootstrap gui/{uid} {}",
            path.display()
        )),
        "{out}"
    );
    let p = read_plist(&path);
    let agent = bin("touchgate-agent");
    assert_eq!(p["Label"], "dev.touchgate.agent");
    assert_eq!(
        p["ProgramArguments"],
        serde_json::json!([agent.display().to_string(), "--foreground"])
    );
    assert_eq!(p["RunAtLoad"], true);
    assert_eq!(p["KeepAlive"], serde_json::json!({"SuccessfulExit": false}));
    let log = home.path().join("Library/Logs/touchgate-agent.log");
    assert_eq!(p["StandardErrorPath"], log.display().to_string());
    assert_eq!(p["StandardOutPath"], log.display().to_string());
    assert!(!home.units().exists(), "no systemd units for launchd");

    let out = home.ok(&bin("touchgate"), &["setup", "agent", "--undo"], &launchd);
    assert!(out.contains("launchctl bootout gui/"), "{out}");
    let mut after = snapshot(home.path());
    after
        .1
        .retain(|d| !d.starts_with(home.path().join("state")));
    assert_eq!(after, before, "undo leaves the home as it was");
}
