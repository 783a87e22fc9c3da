//! `touchgate-google-emulator`: the Google emulator as a process, for demos and
//! tests in other languages. Listens on 127.0.0.1 only.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Parser;
use touchgate_emulator::Emulator;

/// A Google OAuth / IAM Credentials / Vertex AI emulator on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "touchgate-google-emulator", version)]
struct Args {
    /// Address to listen on (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Once listening, write the base URL (http://127.0.0.1:PORT) to this file,
    /// atomically (temp file, then rename).
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let handle = Emulator::start(&args.listen).await?;
    let base_url = handle.base_url();
    if let Some(path) = &args.ready_file {
        write_atomically(path, &base_url)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "touchgate-google-emulator listening on {base_url}")?;
        out.flush()?;
    }
    let signal = wait_for_signal().await?;
    tracing::info!("{signal}: shutting down");
    handle.shutdown().await
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Writes `text` next to `path` under a temporary name, then renames it into
/// place, so a reader sees either nothing or the whole URL.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ready".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
