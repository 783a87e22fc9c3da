//! What every section shares: the emulator with its accounts, the check that
//! a token is one the emulator accepts, and — for the real clients — a real
//! `touchgate-agent` (software key, touches approved at once) with one
//! `touchgate-shim serve` per profile.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{bail, Context};
use tempfile::TempDir;
use touchgate_tests::emulator::{CallKind, EmulatorHandle};

/// The service account whose key touchgate holds (and the peers use).
pub const RUNNER: &str = "bench-runner@touchgate-bench.iam.gserviceaccount.com";
/// The service account every touchgate profile impersonates.
pub const TARGET: &str = "bench-target@touchgate-bench.iam.gserviceaccount.com";
/// A user whose refresh token the user-credential peers hold.
pub const USER: &str = "bench-user@example.com";
pub const PROJECT: &str = "touchgate-bench";

/// The accounts, made once per run.
pub struct Accounts {
    /// RUNNER's key file (JSON).
    pub runner_key: String,
    /// USER's `authorized_user` file (JSON), token_uri the emulator's.
    pub user_json: String,
}

pub fn accounts(emu: &EmulatorHandle) -> Accounts {
    let s = emu.state();
    let runner_key = s.add_service_account(RUNNER);
    s.add_service_account(TARGET);
    s.grant_token_creator(RUNNER, TARGET);
    let user_json = s.add_authorized_user(USER);
    Accounts {
        runner_key,
        user_json,
    }
}

/// Fail unless the emulator accepts `token` (issued by it, unexpired) as `principal`.
pub fn check_token(
    emu: &EmulatorHandle,
    token: &str,
    principal: &str,
    what: &str,
) -> anyhow::Result<()> {
    match emu.state().valid_access_token(token) {
        Some(t) if t.principal == principal => Ok(()),
        Some(t) => bail!(
            "{what}: the token acts as {}, not {principal}: the numbers would not come from the path named",
            t.principal
        ),
        None => bail!(
            "{what}: the emulator does not accept the token it got ({:?}…): the numbers would come from a broken path",
            token.get(..16).unwrap_or(token)
        ),
    }
}

/// Fail unless every token differs: each run minted afresh, nothing was cached.
pub fn check_fresh(tokens: &[String], what: &str) -> anyhow::Result<()> {
    let mut t = tokens.to_vec();
    t.sort();
    t.dedup();
    if t.len() != tokens.len() {
        bail!(
            "{what}: {} runs got only {} distinct tokens: a cache answered, so this is not a fresh-token timing",
            tokens.len(),
            t.len()
        );
    }
    Ok(())
}

/// Token calls the emulator answered with a token so far (OAuth token endpoint and generateAccessToken).
pub fn upstream_calls(emu: &EmulatorHandle) -> usize {
    let s = emu.state();
    s.count_ok(CallKind::Token) + s.count_ok(CallKind::GenerateAccessToken)
}

/// The three touchgate binaries, from one directory.
pub struct Bins {
    pub agent: PathBuf,
    pub cli: PathBuf,
    pub shim: PathBuf,
}

impl Bins {
    /// The binaries in `dir`, or why not.
    pub fn find(dir: &Path) -> Result<Bins, String> {
        let p = |n: &str| dir.join(n);
        let missing: Vec<&str> = ["touchgate-agent", "touchgate", "touchgate-shim"]
            .into_iter()
            .filter(|n| !p(n).is_file())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "{} missing in {}: build them (`cargo build --workspace --bins`, or scripts/bench.sh for release) or pass --bin-dir",
                missing.join(", "),
                dir.display()
            ));
        }
        Ok(Bins {
            agent: p("touchgate-agent"),
            cli: p("touchgate"),
            shim: p("touchgate-shim"),
        })
    }
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_owned()
}

/// A child killed (and reaped) on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawn `cmd` with stdout piped and stderr to `log`; return it and its first stdout line.
pub fn spawn_ready(mut cmd: Command, log: &Path) -> anyhow::Result<(Proc, String)> {
    let stderr = std::fs::File::create(log)?;
    let mut child = Proc(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot run {:?}", cmd.get_program()))?,
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("piped"))
        .read_line(&mut line)
        .context("reading the ready line")?;
    Ok((child, line.trim().to_owned()))
}

/// A shim serving one profile.
pub struct Shim {
    _proc: Proc,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// The `external_account` file for this shim (the `touchgate setup gcloud` route).
    pub adc_file: PathBuf,
}

/// A real agent and a shim per profile (`window`: touch once per 10 min,
/// `every`: a touch for every token), on the emulator.
pub struct Touchgate {
    // Dropped in this order: the shims, the agent, then its directory.
    pub window: Shim,
    pub every: Shim,
    _agent: Proc,
    /// The agent's process id (for its RSS).
    pub agent_pid: u32,
    /// The environment a `touchgate` command needs to reach this agent.
    pub env: Vec<(&'static str, PathBuf)>,
    /// The agent's socket.
    pub sock: PathBuf,
    /// The agent's audit log.
    pub audit_log: PathBuf,
    _dir: TempDir,
}

fn config(base_url: &str) -> String {
    format!(
        r#"default_profile = "window"
[agent]
touch_timeout = "10s"
# Room for the 64 concurrent clients of the hot-path section (one process may hold half).
max_connections = 256
[key]
backend = "soft"
touch = "auto"
[google]
iam_credentials = "{base_url}"
[profiles.window]
service_account = "{TARGET}"
project = "{PROJECT}"
lifetime = "15m"
touch = "10m"
[profiles.every]
service_account = "{TARGET}"
project = "{PROJECT}"
lifetime = "15m"
touch = "every-token"
"#
    )
}

impl Touchgate {
    /// Start the agent, enrol the software key, import RUNNER's key, start the
    /// shims. The agent's directory (state, socket, audit log) is made in
    /// `state_in` when given (e.g. a tmpfs, to take the disk out of the figures).
    pub fn start(
        bins: &Bins,
        emu: &EmulatorHandle,
        acc: &Accounts,
        state_in: Option<&Path>,
    ) -> anyhow::Result<Touchgate> {
        let dir = match state_in {
            Some(d) => tempfile::tempdir_in(d)
                .with_context(|| format!("cannot make the agent's directory in {}", d.display()))?,
            None => tempfile::tempdir()?,
        };
        let d = dir.path();
        std::fs::write(d.join("config.toml"), config(&emu.base_url()))?;
        let env = vec![
            ("TOUCHGATE_SOCK", d.join("run/agent.sock")),
            ("TOUCHGATE_CONFIG", d.join("config.toml")),
            ("TOUCHGATE_STATE_DIR", d.join("state")),
        ];
        let mut cmd = Command::new(&bins.agent);
        cmd.args(["--foreground", "--print-sock"]).envs(env.clone());
        let log = d.join("agent.stderr");
        let (agent, line) = spawn_ready(cmd, &log)?;
        let agent_pid = agent.0.id();
        if !line.starts_with("TOUCHGATE_SOCK=") {
            bail!(
                "touchgate-agent did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        let cli = |args: &[&str], stdin: Option<&str>| -> anyhow::Result<()> {
            let mut child = Command::new(&bins.cli)
                .args(args)
                .envs(env.clone())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut w = child.stdin.take().expect("piped");
            if let Some(s) = stdin {
                w.write_all(s.as_bytes())?;
            }
            drop(w);
            let o = child.wait_with_output()?;
            if !o.status.success() {
                bail!("touchgate {}: {}", args.join(" "), stderr_of(&o));
            }
            Ok(())
        };
        cli(&["enroll"], None)?;
        cli(&["import", "-"], Some(&acc.runner_key))?;
        let shim = |profile: &str| -> anyhow::Result<Shim> {
            let mut cmd = Command::new(&bins.shim);
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--profile", profile])
                .env("TOUCHGATE_SOCK", &env[0].1)
                .env_remove("TOUCHGATE_SHIM_ADDR")
                .env_remove("TOUCHGATE_SHIM_LOG");
            let log = d.join(format!("shim-{profile}.stderr"));
            let (proc, line) = spawn_ready(cmd, &log)?;
            let Some(url) = line.strip_prefix("touchgate-shim listening on ") else {
                bail!(
                    "touchgate-shim did not start: {line:?}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            };
            let addr = url.trim_start_matches("http://").to_owned();
            let o = Command::new(&bins.shim)
                .args(["adc-file", "--listen", &addr, "--profile", profile])
                .output()?;
            if !o.status.success() {
                bail!("touchgate-shim adc-file: {}", stderr_of(&o));
            }
            let adc_file = d.join(format!("adc-{profile}.json"));
            std::fs::write(&adc_file, &o.stdout)?;
            Ok(Shim {
                _proc: proc,
                addr,
                adc_file,
            })
        };
        let window = shim("window")?;
        let every = shim("every")?;
        Ok(Touchgate {
            window,
            every,
            _agent: agent,
            agent_pid,
            sock: env[0].1.clone(),
            audit_log: d.join("state/audit.jsonl"),
            env,
            _dir: dir,
        })
    }
}
