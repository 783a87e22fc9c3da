//! Shared harness for the end-to-end tests: the real binaries, a real agent
//! socket, the Google emulator on 127.0.0.1.
#![allow(dead_code)]

pub mod bus;
pub mod hid;
pub mod other_uid;

pub use other_uid::{as_nobody, require_root_and_setpriv};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use tempfile::TempDir;
use touchgate_agent::clock::SystemClock;
use touchgate_agent::config::Config;
use touchgate_agent::key::soft::{self, SoftKey, TouchSource};
use touchgate_agent::key::SecurityKey;
use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::{Agent, StatePaths};
use touchgate_tests::emulator::{Emulator, EmulatorHandle};

pub const RUNNER: &str = "runner@touchgate-test.iam.gserviceaccount.com";
pub const INFERENCE: &str = "inference@touchgate-test.iam.gserviceaccount.com";

/// A binary of this workspace (built by `cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Copy the program `src` to `dst`, to be run from there. The copy is made by
/// `cp`, not in this process: a test thread that holds `dst` open for writing
/// while another thread forks lends the fd to that child, and running `dst`
/// then fails with "Text file busy" (ETXTBSY).
pub fn copy_program(src: &std::path::Path, dst: &std::path::Path) {
    let st = std::process::Command::new("cp")
        .arg("--")
        .arg(src)
        .arg(dst)
        .status()
        .expect("cp runs");
    assert!(
        st.success(),
        "cp {} {} failed",
        src.display(),
        dst.display()
    );
}

/// An emulator with a runner service account (whose key is returned) that may impersonate INFERENCE,
/// which holds the Vertex AI `inference` role (list models, predict).
pub async fn emulator() -> (EmulatorHandle, String) {
    let emu = Emulator::start("127.0.0.1:0").await.unwrap();
    let key = emu.state().add_service_account(RUNNER);
    emu.state().add_service_account(INFERENCE);
    emu.state().grant_token_creator(RUNNER, INFERENCE);
    emu.state()
        .grant_vertex(INFERENCE, touchgate_tests::emulator::VertexRole::Inference);
    (emu, key)
}

pub fn config_text(
    base_url: &str,
    touch_mode: &str,
    profile_touch: &str,
    extra_agent: &str,
) -> String {
    format!(
        r#"default_profile = "inference"

[agent]
touch_timeout = "10s"
{extra_agent}

[key]
backend = "soft"
touch = "{touch_mode}"

[google]
iam_credentials = "{base_url}"

[profiles.inference]
service_account = "{INFERENCE}"
project = "touchgate-test"
lifetime = "15m"
touch = "{profile_touch}"
"#
    )
}

/// An agent served in-process over a real socket.
pub struct InProcess {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub agent: Arc<Agent>,
    pub key: Arc<SoftKey>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl InProcess {
    pub async fn start(config: &str, touch: Arc<dyn TouchSource>) -> InProcess {
        InProcess::start_with_clock(config, touch, Arc::new(SystemClock)).await
    }

    pub async fn start_with_clock(
        config: &str,
        touch: Arc<dyn TouchSource>,
        clock: Arc<dyn touchgate_agent::clock::Clock>,
    ) -> InProcess {
        InProcess::start_with(config, touch, clock, |k| k).await
    }

    /// The agent sees the soft key through `wrap` (e.g. a key that misbehaves).
    pub async fn start_with(
        config: &str,
        touch: Arc<dyn TouchSource>,
        clock: Arc<dyn touchgate_agent::clock::Clock>,
        wrap: impl FnOnce(Arc<SoftKey>) -> Arc<dyn SecurityKey>,
    ) -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(soft::open(&dir.path().join("soft-key.json"), touch).unwrap());
        let agent_key = wrap(key.clone());
        InProcess::serve(dir, config, key, agent_key, clock).await
    }

    /// Stop, and start again on the same state directory and key: what a
    /// restart of the agent finds on disk.
    pub async fn restart(self, config: &str) -> InProcess {
        let key = self.key.clone();
        let dir = self.shutdown().await;
        InProcess::serve(dir, config, key.clone(), key, Arc::new(SystemClock)).await
    }

    async fn serve(
        dir: TempDir,
        config: &str,
        key: Arc<SoftKey>,
        agent_key: Arc<dyn SecurityKey>,
        clock: Arc<dyn touchgate_agent::clock::Clock>,
    ) -> InProcess {
        let config = Config::parse(config, &dir.path().join("config.toml")).unwrap();
        let upstream = Arc::new(GoogleUpstream::new(
            config.google.clone(),
            Arc::new(SystemClock),
        ));
        let agent = Agent::new(
            config,
            agent_key,
            upstream,
            clock,
            StatePaths::in_dir(dir.path()),
        )
        .unwrap();
        let socket = dir.path().join("run").join("agent.sock");
        let listener = touchgate_agent::server::bind(&socket).await.unwrap();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(touchgate_agent::server::serve(
            agent.clone(),
            listener,
            async {
                let _ = rx.await;
            },
        ));
        InProcess {
            dir,
            socket,
            agent,
            key,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn client(&self) -> touchgate::Client {
        touchgate::Client::connect(&self.socket).await.unwrap()
    }

    /// Stop serving; returns the temp dir (still on disk) for inspection.
    pub async fn shutdown(mut self) -> TempDir {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        self.dir
    }
}

/// A `touchgate-agent --foreground` child with its own temp dirs; SIGTERM on drop.
pub struct AgentProc {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub child: Option<Child>,
    pub stderr_path: PathBuf,
    /// Extra environment for the agent process only (e.g. LD_PRELOAD).
    pub agent_env: Vec<(String, std::ffi::OsString)>,
    /// The agent program (default: this workspace's build).
    pub exe: PathBuf,
}

impl AgentProc {
    pub fn start(config: &str) -> AgentProc {
        AgentProc::start_with_env(config, vec![])
    }

    pub fn start_with_env(config: &str, agent_env: Vec<(String, std::ffi::OsString)>) -> AgentProc {
        AgentProc::start_exe(&bin("touchgate-agent"), config, agent_env)
    }

    /// An agent from another place (e.g. an installed one).
    pub fn start_exe(
        exe: &Path,
        config: &str,
        agent_env: Vec<(String, std::ffi::OsString)>,
    ) -> AgentProc {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run").join("agent.sock");
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let stderr_path = dir.path().join("agent.stderr");
        let mut p = AgentProc {
            dir,
            socket,
            child: None,
            stderr_path,
            agent_env,
            exe: exe.to_path_buf(),
        };
        let child = p.spawn_agent("debug");
        p.child = Some(child);
        p
    }

    /// Start another agent process on the same dirs; returns its output when it exits.
    pub fn spawn_agent(&self, log: &str) -> Child {
        let stderr = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .unwrap();
        let mut child = Command::new(&self.exe)
            .args(["--foreground", "--print-sock"])
            .envs(self.env())
            .envs(self.agent_env.iter().map(|(k, v)| (k, v)))
            .env("TOUCHGATE_LOG", log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let line = first_line(&mut child);
        assert!(
            line.starts_with("TOUCHGATE_SOCK="),
            "agent did not start; its stderr: {}",
            self.stderr()
        );
        child
    }

    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        vec![
            ("TOUCHGATE_SOCK", self.socket.clone()),
            ("TOUCHGATE_CONFIG", self.dir.path().join("config.toml")),
            ("TOUCHGATE_STATE_DIR", self.dir.path().join("state")),
        ]
    }

    /// Run the `touchgate` CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_stdin(args, None)
    }

    pub fn cli_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(bin("touchgate"))
            .args(args)
            .envs(self.env())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let (Some(s), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(s.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait (30 s at most) until the agent's log has `needle` `times` times.
    pub async fn wait_log(&self, needle: &str, times: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while self.stderr().matches(needle).count() < times {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} (x{times}) in the agent log: {}",
                self.stderr()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Run the CLI, assert it succeeded (showing its and the agent's stderr if not); its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "{args:?}: {}\nagent log:\n{}",
            stderr(&o),
            self.stderr()
        );
        stdout(&o)
    }

    /// `touchgate import -` of `json` (as "default"), asserted to succeed.
    pub fn import(&self, json: &str) {
        let o = self.cli_stdin(&["import", "-"], Some(json));
        assert!(
            o.status.success(),
            "import: {}\nagent log:\n{}",
            stderr(&o),
            self.stderr()
        );
    }

    /// `touchgate enroll` then `touchgate import -` of `json`.
    pub fn enrol_and_import(&self, json: &str) {
        self.ok(&["enroll"]);
        self.import(json);
    }

    /// SIGTERM and wait; returns whether it exited successfully.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                sigterm(c.id());
                c.wait().unwrap().success()
            }
            None => true,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first line `child` writes to its piped stdout (with its newline; empty at EOF).
pub fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

pub fn sigterm(pid: u32) {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Assert `o` failed with a one-line error containing `needle` as the last line
/// of stderr (touch prompts may come before it); returns that line.
pub fn assert_one_line_error(o: &Output, needle: &str) -> String {
    let err = stderr(o);
    assert!(
        !o.status.success(),
        "expected failure, got success; stdout {}",
        stdout(o)
    );
    assert!(
        o.stdout.is_empty(),
        "nothing on stdout on error, got {}",
        stdout(o)
    );
    let lines: Vec<&str> = err.trim_end().lines().collect();
    let (last, before) = lines.split_last().expect("an error on stderr");
    for l in before {
        assert!(
            l.contains("touch your security key"),
            "only touch prompts before the error, got: {err}"
        );
    }
    assert!(
        last.contains(needle),
        "stderr {err:?} should end with an error containing {needle:?}"
    );
    last.to_string()
}

/// Every file under `dir`, read as bytes.
pub fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(b) = std::fs::read(&p) {
                out.push((p, b));
            }
        }
    }
    out
}

pub fn contains(hay: &[u8], needle: &str) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A temp dir closed to other users (0700), as an agent socket's directory must be.
pub fn private_tempdir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

/// A `touchgate-impostor` server run as uid 65534: a fake agent or shim of another user.
/// Everything it read is in [`Impostor::finish`].
pub struct Impostor {
    child: Child,
    /// Where it listens: a socket path or `127.0.0.1:PORT`.
    pub at: String,
    lines: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Impostor {
    /// `touchgate-impostor agent PATH` or `touchgate-impostor shim ADDR`, once it listens.
    pub fn start(mode: &str, at: &str) -> Impostor {
        require_root_and_setpriv();
        let mut child = as_nobody(&bin("touchgate-impostor"))
            .args([mode, at])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let at = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("touchgate-impostor did not start: {line:?}"))
            .to_owned();
        let lines = std::thread::spawn(move || out.lines().map_while(Result::ok).collect());
        Impostor {
            child,
            at,
            lines: Some(lines),
        }
    }

    /// Stop it; every `received N bytes: …` line it printed.
    pub fn finish(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.lines.take().unwrap().join().unwrap()
    }
}

impl Drop for Impostor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
