//! `touchgate-ctaphid-device`: an emulated FIDO2 security key on a
//! SOCK_SEQPACKET socket, speaking CTAPHID, until SIGTERM or SIGINT (then it
//! unplugs cleanly: connections closed, socket file removed).
//!
//! A host reaches it through the real ctap-hid-fido2/hidapi with the test
//! interposer preloaded: `LD_PRELOAD=<interposer> program` and the socket path
//! as the key's hidraw path (`HidParam::Path`).
//!
//! Prints `touchgate-ctaphid-device ready on PATH` on stdout once listening
//! (and writes PATH to `--ready-file`, created atomically, if given).
//!
//! The CBOR layer is the soft key's CTAP2 authenticator
//! (`touchgate_softkey::ctap`), opened as the agent's `soft` backend opens it: with
//! `--state FILE` its master secret and counter persist there (so the same
//! key can be "plugged in" again); without, it lives in a temporary file
//! removed on exit.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use touchgate_agent::key::soft::{self, touch_source, TouchMode};
use touchgate_tests::ctap::authenticator::{Authenticator, AuthenticatorOptions};
use touchgate_tests::ctap::hid::HidDevice;

#[derive(Parser)]
#[command(
    name = "touchgate-ctaphid-device",
    about = "An emulated FIDO2 key speaking CTAPHID on a Unix socket"
)]
struct Args {
    /// Where to listen: the path hosts open as the key's hidraw node.
    #[arg(long)]
    socket: PathBuf,
    /// The soft key's state file (master secret, counter); created if missing.
    #[arg(long)]
    state: Option<PathBuf>,
    /// How "touches" come: auto, deny, never, or prompt (Enter on stdin).
    #[arg(long, default_value = "auto")]
    touch: TouchMode,
    /// Give the key this clientPIN.
    #[arg(long)]
    pin: Option<String>,
    /// Do not offer the hmac-secret extension.
    #[arg(long)]
    no_hmac_secret: bool,
    /// Write the socket path to this file once listening.
    #[arg(long)]
    ready_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchgate-ctaphid-device: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let touch = touch_source(args.touch);
    let temporary_state = args.state.is_none().then(|| {
        std::env::temp_dir().join(format!(
            "touchgate-ctaphid-device-{}.state",
            std::process::id()
        ))
    });
    let state = args
        .state
        .clone()
        .or_else(|| temporary_state.clone())
        .expect("a state path");
    let key = soft::open(&state, touch.clone())
        .with_context(|| format!("opening the key state {}", state.display()))?;
    let options = AuthenticatorOptions {
        pin: args.pin.clone(),
        hmac_secret: !args.no_hmac_secret,
        ..AuthenticatorOptions::default()
    };
    let handler = Arc::new(Authenticator::new(Arc::new(key), touch, options));
    let result = serve(&args, handler);
    if let Some(state) = temporary_state {
        let _ = std::fs::remove_file(state);
    }
    result
}

fn serve(args: &Args, handler: Arc<Authenticator>) -> Result<()> {
    // Signals first, so a SIGTERM right after "ready" is not lost.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut sigterm = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    let mut sigint = runtime.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    })?;

    let device = HidDevice::start(&args.socket, handler)
        .with_context(|| format!("listening on {}", args.socket.display()))?;
    if let Some(ready) = &args.ready_file {
        let tmp = ready.with_extension("tmp");
        std::fs::write(&tmp, format!("{}\n", args.socket.display()))?;
        std::fs::rename(&tmp, ready)?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "touchgate-ctaphid-device ready on {}",
            args.socket.display()
        )?;
        out.flush()?;
    }

    runtime.block_on(async {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    });
    device.unplug();
    Ok(())
}
