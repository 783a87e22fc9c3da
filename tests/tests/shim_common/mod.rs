//! Support for the shim tests: a `touchgate-shim serve` child, an enrolled
//! agent, the real clients and what the emulator saw.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use touchgate::{CallerHint, Secret};
use touchgate_agent::key::soft::ScriptedTouch;
use touchgate_tests::emulator::{CallKind, CallRecord, EmulatorHandle};

use crate::common::{self, AgentProc, INFERENCE};

pub const PROJECT: &str = "touchgate-test";

/// A `touchgate-shim serve --listen 127.0.0.1:0` child; killed on drop.
pub struct ShimProc {
    pub child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    pub stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ShimProc {
    /// Start the shim against the agent socket `socket`, waiting for its ready line.
    pub fn start(socket: &Path, extra: &[&str]) -> ShimProc {
        ShimProc::start_wrapped(&[], socket, extra)
    }

    /// [`ShimProc::start`], run through `wrapper` (a program that execs the
    /// rest of its arguments, e.g. `prlimit --nofile=1024:1024 --`).
    pub fn start_wrapped(wrapper: &[&str], socket: &Path, extra: &[&str]) -> ShimProc {
        let dir = tempfile::tempdir().unwrap();
        let stderr_path = dir.path().join("shim.stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let shim = common::bin("touchgate-shim");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&shim);
                c
            }
            None => Command::new(&shim),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .env("TOUCHGATE_SOCK", socket)
            .env_remove("TOUCHGATE_SHIM_ADDR")
            .env("TOUCHGATE_SHIM_LOG", "requests")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let line = common::first_line(&mut child);
        let url = line
            .trim()
            .strip_prefix("touchgate-shim listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "shim did not start: {line:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            })
            .to_owned();
        let addr = url.trim_start_matches("http://").to_owned();
        ShimProc {
            child,
            url,
            addr,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The ADC file for this shim (`touchgate-shim adc-file`), written into `dir`.
    pub fn adc_file(&self, dir: &Path, profile: Option<&str>) -> PathBuf {
        let mut cmd = Command::new(common::bin("touchgate-shim"));
        cmd.args(["adc-file", "--listen", &self.addr]);
        if let Some(p) = profile {
            cmd.args(["--profile", p]);
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "adc-file: {}", common::stderr(&o));
        let path = dir.join("touchgate-adc.json");
        std::fs::write(&path, &o.stdout).unwrap();
        path
    }
}

impl Drop for ShimProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An agent child with the soft key enrolled and the runner key imported;
/// `touch` is the soft key's mode from then on (`auto`, `deny`, …).
pub fn enrolled_agent(emu: &EmulatorHandle, key_json: &str, touch: &str, rule: &str) -> AgentProc {
    let mut agent = AgentProc::start(&common::config_text(&emu.base_url(), "auto", rule, ""));
    let o = agent.cli(&["enroll"]);
    assert!(o.status.success(), "enroll: {}", common::stderr(&o));
    let f = agent.dir.path().join("sa-key.json");
    std::fs::write(&f, key_json).unwrap();
    let o = agent.cli(&["import", f.to_str().unwrap()]);
    assert!(o.status.success(), "import: {}", common::stderr(&o));
    std::fs::remove_file(&f).unwrap();
    if touch != "auto" {
        agent.stop();
        std::fs::write(
            agent.dir.path().join("config.toml"),
            common::config_text(&emu.base_url(), touch, rule, ""),
        )
        .unwrap();
        agent.child = Some(agent.spawn_agent("info"));
    }
    agent
}

/// An agent in this process whose touches the test gives (`config` names
/// the soft key), enrolled and with the runner key imported (two touches
/// given); the touches asked for so far are `touch.requested()`.
pub async fn enrolled_in_process(
    config: &str,
    key_json: &str,
) -> (common::InProcess, std::sync::Arc<ScriptedTouch>) {
    let touch = std::sync::Arc::new(ScriptedTouch::new());
    let agent = common::InProcess::start(config, touch.clone()).await;
    let mut c = agent.client().await;
    let key_json = key_json.to_owned();
    let enrol = tokio::spawn(async move {
        c.enroll(false, false, CallerHint::default()).await.unwrap();
        c.import("default", Secret::new(key_json), CallerHint::default())
            .await
            .unwrap();
    });
    touch.approve();
    touch.approve();
    enrol.await.unwrap();
    (agent, touch)
}

/// Run a command off the async runtime (the emulator serves on it meanwhile).
pub async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.stdin(Stdio::null()).output().unwrap())
        .await
        .unwrap()
}

/// The successful Vertex calls that carried a token the agent minted (its
/// `generateAccessToken` answer), made as the inference service account.
pub fn vertex_calls_with_agent_token(emu: &EmulatorHandle) -> Vec<CallRecord> {
    let calls = emu.state().calls();
    let minted: Vec<String> = calls
        .iter()
        .filter(|c| c.kind == CallKind::GenerateAccessToken && c.ok())
        .filter_map(|c| c.issued_fingerprint.clone())
        .collect();
    calls
        .into_iter()
        .filter(|c| {
            c.kind == CallKind::Vertex
                && c.ok()
                && c.principal.as_deref() == Some(INFERENCE)
                && c.bearer_fingerprint
                    .as_ref()
                    .is_some_and(|f| minted.contains(f))
        })
        .collect()
}

/// A one-line summary of the emulator's calls, for assertion messages.
pub fn calls_summary(emu: &EmulatorHandle) -> String {
    emu.state()
        .calls()
        .iter()
        .map(|c| format!("{} {} {} {:?}", c.method, c.path, c.status, c.principal))
        .collect::<Vec<_>>()
        .join("; ")
}
