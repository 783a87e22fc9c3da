//! `touchgate-shim`: plugs touchgate into the clients people already run.
//!
//! - `touchgate-shim serve`: a loopback HTTP server (default `127.0.0.1:8946`,
//!   or `$TOUCHGATE_SHIM_ADDR`) speaking the GCE metadata API subset the
//!   Google clients read, and a local STS for the `external_account` ADC file.
//! - `touchgate-shim adc-file`: prints that ADC file.
//! - `touchgate-shim token`: prints a token for a profile, for scripts.
//! - `touchgate-shim docker-credential <get|store|erase|list|version>`, or the
//!   binary run as `docker-credential-touchgate`: the docker credential helper
//!   for Artifact Registry and gcr.io; `touchgate-shim docker-config` prints
//!   the `credHelpers` for docker's config.json.
//! - `touchgate-shim kubectl-credential`: a kubectl exec credential plugin.
//!
//! It talks to the agent only through the client library (`TOUCHGATE_SOCK`).
//!
//! # Layout
//!
//! - The HTTP server: `server` (the rules for every request: no proxies,
//!   loopback, headers), `accept` (who may hold a connection, how many, how
//!   long), `peer` (who is on the other end), `broker` (asking the agent on
//!   behalf of HTTP callers), and its two routes, `metadata` and `sts`;
//!   `config` (what it says about the project).
//! - The one-shot helpers: `oneshot` (one token from the agent), `docker`,
//!   `kube`.
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

mod accept;
mod broker;
mod config;
mod docker;
mod kube;
mod metadata;
mod oneshot;
mod peer;
mod server;
mod sts;

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use touchgate::{CallerHint, Client};

#[derive(Parser, Debug)]
#[command(
    name = "touchgate-shim",
    version,
    about = "Touch-gated tokens for existing Google Cloud clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print an access token for a profile on stdout, naming the parent process as the caller.
    Token {
        #[arg(long, short)]
        profile: Option<String>,
    },
    /// Serve the GCE metadata API and a local STS on loopback (default 127.0.0.1:8946).
    ///
    /// Point clients at it with GCE_METADATA_ROOT=GCE_METADATA_HOST=GCE_METADATA_IP=127.0.0.1:PORT,
    /// or use the credential file `touchgate-shim adc-file` prints.
    Serve {
        /// Loopback address to listen on (env TOUCHGATE_SHIM_ADDR; default 127.0.0.1:8946).
        #[arg(long)]
        listen: Option<String>,
        /// The profile served as the metadata service account (default: the agent's default).
        #[arg(long, short)]
        profile: Option<String>,
        /// Project id served as project/project-id (default: the profile's project).
        #[arg(long)]
        project: Option<String>,
        /// Digits served as project/numeric-project-id (default: derived from the project id).
        #[arg(long)]
        project_number: Option<u64>,
        /// How callers are told apart: proc (Linux /proc/net/tcp), lsof (macOS), or auto.
        #[arg(long, value_name = "proc|lsof|auto")]
        callers_from: Option<String>,
        /// Also answer to Host metadata.google.internal, metadata and 169.254.169.254
        /// (for /etc/hosts set-ups); unsafe: a web page under such a name reaches the shim.
        #[arg(long)]
        allow_metadata_hostnames: bool,
        /// Connections this user may hold open at once.
        #[arg(long, value_name = "N", default_value_t = accept::DEFAULT_MAX_CONNECTIONS,
              value_parser = clap::value_parser!(u32).range(1..=65536))]
        max_connections: u32,
        /// Seconds a client may take to send a request's headers (also the idle time of a kept-alive connection).
        #[arg(long, value_name = "SECONDS", default_value_t = accept::DEFAULT_HEADER_TIMEOUT_SECS,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        header_timeout: u64,
    },
    /// Print an `external_account` credential file (ADC) that gets tokens from a running shim.
    AdcFile {
        /// Profile the file's tokens come from (default: the shim's --profile, else the agent's default).
        #[arg(long, short)]
        profile: Option<String>,
        /// Address of the shim (env TOUCHGATE_SHIM_ADDR; default 127.0.0.1:8946).
        #[arg(long)]
        listen: Option<String>,
    },
    /// The docker credential helper (also: this binary named `docker-credential-touchgate`).
    DockerCredential {
        /// get, store, erase, list or version (the server URL / credentials come on stdin).
        action: String,
    },
    /// Print the `credHelpers` entries for docker's config.json (Artifact Registry and gcr.io hosts).
    DockerConfig {
        /// The helper's name: docker runs `docker-credential-NAME` from PATH.
        #[arg(long, default_value = "touchgate")]
        helper: String,
    },
    /// A kubectl exec credential plugin: print an ExecCredential with a token for a profile.
    KubectlCredential {
        #[arg(long, short)]
        profile: Option<String>,
    },
}

fn main() -> ExitCode {
    // Run as `docker-credential-NAME ACTION` (a symlink or copy), be the docker helper.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with("docker-credential-") {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return docker::main(&args);
    }
    // The docker helper's own actions skip building clap's command tree (once per pull/push).
    if let Some(action) = fast_docker_action(std::env::args_os().skip(1)) {
        return docker::main(&[action]);
    }
    if let Some(code) = touchgate_generate::if_requested(Cli::command) {
        return code;
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Token { profile } => token(profile),
        Cmd::DockerCredential { action } => docker::main(&[action]),
        Cmd::DockerConfig { helper } => {
            match serde_json::to_string_pretty(&docker::config_snippet(&helper)) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Cmd::KubectlCredential { profile } => kube::main(profile),
        Cmd::Serve {
            listen,
            profile,
            project,
            project_number,
            callers_from,
            allow_metadata_hostnames,
            max_connections,
            header_timeout,
        } => {
            let addr = match config::listen_addr(listen.as_deref()) {
                Ok(a) => a,
                Err(e) => return fail(&e),
            };
            let finder = match peer::Finder::choose(callers_from.as_deref()) {
                Ok(f) => f,
                Err(e) => return fail(&e),
            };
            let opts = server::Options {
                profile,
                project,
                project_number,
                finder,
                allow_metadata_hostnames,
            };
            let limits = accept::Limits {
                max_connections: max_connections as usize,
                header_timeout: std::time::Duration::from_secs(header_timeout),
            };
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start: {e}")),
            };
            match rt.block_on(serve(addr, opts, limits)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
        Cmd::AdcFile { profile, listen } => {
            let addr = match config::listen_addr(listen.as_deref()) {
                Ok(a) => a,
                Err(e) => return fail(&e),
            };
            print!(
                "{}",
                touchgate::shim::adc_file_text(&format!("http://{addr}"), profile.as_deref())
            );
            ExitCode::SUCCESS
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("touchgate-shim: {msg}");
    ExitCode::FAILURE
}

async fn serve(
    addr: SocketAddr,
    opts: server::Options,
    limits: accept::Limits,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let broker = broker::Broker::new(None);
    // Say early if the agent is not there or has no such profile; serve anyway
    // (the agent may start later; every request asks again).
    if let Err(e) = broker.profile(opts.profile.as_deref()).await {
        eprintln!("touchgate-shim: warning: {}", e.message);
    }
    if opts.allow_metadata_hostnames {
        eprintln!(
            "touchgate-shim: warning: --allow-metadata-hostnames: answering to Host metadata.google.internal, metadata and 169.254.169.254; unless /etc/hosts maps them to 127.0.0.1, a web page whose DNS answers for those names can reach this shim (DNS rebinding)"
        );
    }
    let shim = server::Shim::new(broker, opts, local);
    let app = server::router(shim.clone());
    println!("touchgate-shim listening on http://{local}");
    eprintln!(
        "touchgate-shim: metadata route: export GCE_METADATA_ROOT={local} GCE_METADATA_HOST={local} GCE_METADATA_IP={local}"
    );
    accept::serve(listener, shim, app, limits, shutdown()).await;
    Ok(())
}

async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

fn token(profile: Option<String>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    let res = rt.block_on(async {
        let mut c = Client::connect_default_pipelined().await?;
        c.on_touch_needed(|p| eprintln!("touchgate-shim: {p}"));
        c.get_token(profile.as_deref(), &[], parent_hint()).await
    });
    match res {
        Ok(t) => {
            println!("{}", t.access_token.expose());
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string()),
    }
}

/// The program that ran us, so the touch prompt names it (e.g. `python3`).
/// `docker-credential ACTION` for one of the helper's actions: what clap would
/// hand [`docker::main`], without clap (anything else goes to clap).
fn fast_docker_action(mut args: impl Iterator<Item = std::ffi::OsString>) -> Option<String> {
    let (cmd, action) = (args.next()?, args.next()?.into_string().ok()?);
    let known = ["get", "store", "erase", "list", "version"].contains(&action.as_str());
    (cmd == "docker-credential" && known && args.next().is_none()).then_some(action)
}

fn parent_hint() -> CallerHint {
    let ppid = std::os::unix::process::parent_id();
    let program = touchgate::process::exe_of(ppid)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    CallerHint {
        program,
        pid: Some(ppid),
        ..CallerHint::from_env()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_docker_path_agrees_with_clap() {
        for action in ["get", "store", "erase", "list", "version"] {
            let args = ["docker-credential", action];
            let fast = fast_docker_action(args.iter().map(Into::into));
            let clap = Cli::try_parse_from(std::iter::once("touchgate-shim").chain(args)).unwrap();
            match clap.command {
                Cmd::DockerCredential { action: a } => assert_eq!(fast, Some(a)),
                other => panic!("{other:?}"),
            }
        }
        for args in [
            &["docker-credential"][..],
            &["docker-credential", "--help"],
            &["docker-credential", "get", "extra"],
            &["docker-credential", "fetch"],
            &["token", "get"],
            &[],
        ] {
            assert_eq!(
                fast_docker_action(args.iter().map(Into::into)),
                None,
                "{args:?} must go to clap"
            );
        }
    }
}
