//! `touchgate exec [--profile P] [--project ID] -- CMD ARGS…`: run CMD with the
//! GCE metadata variables pointed at a touchgate shim — the shared one
//! (`$TOUCHGATE_SHIM_ADDR`, default 127.0.0.1:8946) when it answers and serves
//! the profile, else a private `touchgate-shim serve` child stopped afterwards.
//! The shared shim is used only when its listener is ours
//! ([`touchgate::tcp_owner::connect_own`]): another user holding the address
//! gets nothing, not even the probe, and a private shim serves instead.

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio::signal::unix::{signal, SignalKind};
use touchgate::tcp_owner::{connect_own, OwnerError};
use touchgate::ProfileInfo;

pub use touchgate::shim::ADDR_ENV as SHIM_ADDR_ENV;

pub struct ExecArgs {
    pub profile: Option<String>,
    pub project: Option<String>,
    pub command: Vec<OsString>,
}

/// Runs the command and exits the process with its status; returns only on an
/// error before the command ran.
pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| anyhow!("nothing to run: touchgate exec [--profile P] -- CMD ARGS…"))?;

    let profile = profile_info(args.profile.as_deref()).await?;
    let project = args
        .project
        .clone()
        .or_else(|| profile.as_ref().and_then(|p| p.project.clone()));

    let shared = shared_shim_addr().filter(|a| shared_is_ours(*a));
    let use_shared = shared.is_some_and(|a| shim_serves(a, args.profile.as_deref(), &profile));
    let mut private = None;
    let addr = match (use_shared, shared) {
        (true, Some(a)) => a,
        _ => {
            let (child, addr) = start_private_shim(args.profile.as_deref(), project.as_deref())?;
            private = Some(child);
            addr
        }
    };

    let code = run_child(program, rest, addr, project.as_deref()).await;
    if let Some(mut shim) = private {
        send_signal(shim.id(), "TERM");
        let _ = shim.wait();
    }
    std::process::exit(code?)
}

/// The profile the shim will serve (None when the agent cannot be asked and no
/// profile was named). A named profile the agent does not know is an error.
async fn profile_info(name: Option<&str>) -> anyhow::Result<Option<ProfileInfo>> {
    let profiles = match crate::connect().await {
        Ok(mut c) => c.list_profiles().await,
        Err(e) => Err(e),
    };
    match profiles {
        Ok(list) => {
            let found = list
                .into_iter()
                .find(|p| name.map_or(p.is_default, |n| p.name == n));
            match (found, name) {
                (None, Some(n)) => Err(anyhow!("no profile {n} (see touchgate profiles)")),
                (f, _) => Ok(f),
            }
        }
        Err(e) => {
            eprintln!("touchgate: warning: cannot read the profiles ({e}); the project is not set");
            Ok(None)
        }
    }
}

/// `$TOUCHGATE_SHIM_ADDR` (loopback only) or 127.0.0.1:8946.
pub fn shared_shim_addr() -> Option<SocketAddr> {
    touchgate::shim::listen_addr(None).ok()
}

/// Whether the listener at `addr` is ours; another user's is named in a warning.
fn shared_is_ours(addr: SocketAddr) -> bool {
    match connect_own(addr, PROBE_TIMEOUT) {
        Ok(_) => true,
        Err(e @ (OwnerError::Foreign { .. } | OwnerError::Unknown { .. })) => {
            eprintln!("touchgate: warning: {e}: not using it, starting a private shim");
            false
        }
        Err(_) => false,
    }
}

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Whether a shim answers at `addr` and serves the wanted profile.
fn shim_serves(addr: SocketAddr, wanted: Option<&str>, profile: &Option<ProfileInfo>) -> bool {
    let Some((true, _)) = metadata_get(addr, "/") else {
        return false;
    };
    let Some(name) = wanted else {
        return true;
    };
    let Some(p) = profile else {
        return false;
    };
    let email = p
        .service_account
        .clone()
        .unwrap_or_else(|| format!("touchgate-{name}@touchgate.invalid"));
    matches!(
        metadata_get(addr, "/computeMetadata/v1/instance/service-accounts/default/email"),
        Some((true, body)) if body.trim() == email
    )
}

/// A metadata GET on loopback: (status 200 with `Metadata-Flavor: Google`, body).
fn metadata_get(addr: SocketAddr, path: &str) -> Option<(bool, String)> {
    let r =
        touchgate::shim::metadata_get(addr, path, PROBE_TIMEOUT, Duration::from_secs(3)).ok()?;
    Some((r.status == 200 && r.flavored, r.body))
}

/// `touchgate-shim` next to this executable.
pub fn shim_exe() -> anyhow::Result<std::path::PathBuf> {
    Ok(std::env::current_exe()
        .context("cannot find the touchgate executable")?
        .with_file_name("touchgate-shim"))
}

fn start_private_shim(
    profile: Option<&str>,
    project: Option<&str>,
) -> anyhow::Result<(Child, SocketAddr)> {
    let exe = shim_exe()?;
    let mut cmd = Command::new(&exe);
    cmd.args(["serve", "--listen", "127.0.0.1:0"]);
    if let Some(p) = profile {
        cmd.args(["--profile", p]);
    }
    if let Some(p) = project {
        cmd.args(["--project", p]);
    }
    let mut child = cmd
        .env_remove(SHIM_ADDR_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            anyhow!(
                "cannot run {}: {e}; install touchgate-shim next to touchgate",
                exe.display()
            )
        })?;
    // The shim's warnings go on to our stderr; its "export …" hint does not apply here.
    if let Some(err) = child.stderr.take() {
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if !line.contains("metadata route: export") {
                    eprintln!("{line}");
                }
            }
        });
    }
    let mut line = String::new();
    let read = child
        .stdout
        .take()
        .map(|out| BufReader::new(out).read_line(&mut line));
    let addr = line
        .trim()
        .strip_prefix("touchgate-shim listening on http://")
        .and_then(|a| a.parse::<SocketAddr>().ok());
    match (read, addr) {
        (Some(Ok(_)), Some(addr)) if addr.ip().is_loopback() => Ok((child, addr)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(anyhow!(
                "the private touchgate-shim did not start (see its message above)"
            ))
        }
    }
}

async fn run_child(
    program: &OsString,
    args: &[OsString],
    addr: SocketAddr,
    project: Option<&str>,
) -> anyhow::Result<i32> {
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("GCE_METADATA_ROOT", addr.to_string())
        .env("GCE_METADATA_HOST", addr.to_string())
        .env("GCE_METADATA_IP", addr.to_string());
    if let Some(p) = project {
        cmd.env("GOOGLE_CLOUD_PROJECT", p)
            .env("CLOUDSDK_CORE_PROJECT", p);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("touchgate: cannot run {}: {e}", program.to_string_lossy());
            return Ok(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let pid = child.id();
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.context("cannot wait for the command")?,
            _ = int.recv() => if let Some(p) = pid { send_signal(p, "INT") },
            _ = term.recv() => if let Some(p) = pid { send_signal(p, "TERM") },
        }
    };
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        _ => 1,
    })
}

/// `kill -s SIG PID` (no unsafe code here).
fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
