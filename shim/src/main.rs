//! `touchgate-shim`: plugs touchgate into the clients people already run.
//!
//! This release has one route: `touchgate-shim token` prints a token for a
//! profile, for scripts and `gcloud --access-token-file`-style use. The
//! loopback metadata server, the docker credential helper and the kubectl exec
//! plugin are not built yet (see the README's "not yet" list).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("touchgate-shim: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Cmd::Token { profile } = cli.command;
    let res = rt.block_on(async {
        let mut c = Client::connect_default().await?;
        c.on_touch_needed(|p| eprintln!("touchgate-shim: {p}"));
        c.get_token(profile.as_deref(), &[], parent_hint()).await
    });
    match res {
        Ok(t) => {
            println!("{}", t.access_token.expose());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("touchgate-shim: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The program that ran us, so the touch prompt names it (e.g. `python3`).
fn parent_hint() -> CallerHint {
    let ppid = std::os::unix::process::parent_id();
    let program = std::fs::read_link(format!("/proc/{ppid}/exe"))
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    CallerHint {
        program,
        pid: Some(ppid),
        ..CallerHint::from_env()
    }
}
