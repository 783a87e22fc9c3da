//! `touchgate-bench`: how much touchgate adds to getting a token, measured
//! against a peer (the same job without touchgate) in the same run, on
//! loopback with the Google emulator and the software key (touches approved
//! at once). Sections:
//!
//! - **agent**: the agent in process, over its socket with the client library:
//!   window hit and every-token issuance vs minting straight from Google;
//! - **gcloud**: the real `gcloud auth print-access-token`, each set-up in a
//!   private CLOUDSDK_CONFIG: peers with their own credentials vs gcloud through
//!   a real agent and `touchgate-shim` (metadata route and the
//!   `touchgate setup gcloud` credential-file route), window hit and every-token;
//! - **python**: google-auth `credentials.refresh()` in a loop, peers vs the
//!   metadata route;
//! - **hot**: a real agent's hot path: a window hit vs a bare framed Unix-socket
//!   echo, 64 concurrent clients, RSS idle and after `--hits` window hits, the
//!   audit log one 1,000 tokens/s client makes it write, ready after start;
//! - **cli**: `touchgate token` and the docker helper's `get` as whole processes
//!   vs `gcloud auth print-access-token` and `docker-credential-gcloud get`
//!   printing a static token file (this section fails if they are missing);
//! - **metadata**: the shim's token route, 64 keep-alive clients.
//!
//! The performance goals are printed last, each figure next to its
//! peer, the ratio and "meets"/"MISSES" — a report, never a failure.
//!
//! Each row: median and p90 per token, the ratio of the medians to the
//! section's peer, the upstream token calls per run. Timing is reported, never
//! judged; but every token is checked with the emulator, and one it does not
//! accept ends the bench with an error, so no number comes from a broken path.
//!
//! By default every section that can run here runs, and the others are named
//! with the reason; a section asked for with `--only` that cannot run makes
//! the exit status non-zero.

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::process::ExitCode;

use bench::world::{self, Bins, Touchgate};
use clap::{Parser, ValueEnum};
use touchgate_tests::emulator::Emulator;

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
enum Section {
    Agent,
    Gcloud,
    Python,
    Hot,
    Cli,
    Metadata,
}

#[derive(Parser, Debug)]
#[command(
    name = "touchgate-bench",
    about = "Time touchgate against a peer, on loopback"
)]
struct Args {
    /// Run only these sections (repeatable); a section named here that cannot run is an error.
    #[arg(long, value_enum)]
    only: Vec<Section>,
    /// Tokens per row in the agent section.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// gcloud invocations per row (each a process, ~0.5-1 s); also the runs of each cli row.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Timed window hits (and echo round trips) for the hot section's latency figures.
    #[arg(long, default_value_t = 10_000)]
    latency_rounds: usize,
    /// Window hits by 64 clients in the hot section (tokens/s, and the RSS after them).
    #[arg(long, default_value_t = 1_000_000)]
    hits: u64,
    /// Seconds of the 1,000 tokens/s client whose audit log the hot section measures.
    #[arg(long, default_value_t = 10)]
    audit_seconds: u64,
    /// Agent starts timed in the hot section.
    #[arg(long, default_value_t = 10)]
    starts: usize,
    /// Where the bench's agent keeps its state, socket and audit log (default: the temp dir);
    /// e.g. /dev/shm to see the hot path without the disk's fsync.
    #[arg(long, value_name = "DIR")]
    state_in: Option<PathBuf>,
    /// Token requests by 64 keep-alive clients in the metadata section.
    #[arg(long, default_value_t = 200_000)]
    requests: u64,
    /// refresh() calls per row in the python section.
    #[arg(long, default_value_t = 50)]
    refreshes: usize,
    /// Where touchgate-agent, touchgate and touchgate-shim are (default: this binary's directory).
    #[arg(long, env = "TOUCHGATE_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The gcloud to run (default: /usr/bin/gcloud, else PATH).
    #[arg(long, env = "TOUCHGATE_GCLOUD")]
    gcloud: Option<PathBuf>,
    /// A python with google-auth (default: target/pyvenv/bin/python, made by scripts/python-venv.sh).
    #[arg(long, env = "TOUCHGATE_TEST_PYTHON")]
    python: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    // The hot path's echo peer runs as this binary in a process of its own.
    let argv: Vec<_> = std::env::args_os().collect();
    if argv.len() == 3 && argv[1] == bench::hot::ECHO_SERVER_ARG {
        bench::hot::serve_echo(std::path::Path::new(&argv[2]))?;
        return Ok(ExitCode::SUCCESS);
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let wanted = |s: Section| args.only.is_empty() || args.only.contains(&s);
    let mut not_run: Vec<(Section, String)> = vec![];

    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .expect("an executable lives in a directory")
            .to_owned(),
    };
    let bins = Bins::find(&bin_dir);
    let gcloud = bench::gcloud::find(args.gcloud.as_deref());
    let python = bench::python::find(args.python.as_deref());

    let emu = Emulator::start("127.0.0.1:0").await?;
    let acc = world::accounts(&emu);
    println!(
        "touchgate-bench: {} build, binaries from {}, everything on loopback (Google emulated, software key auto-touched)",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        bin_dir.display()
    );

    let mut goals = vec![];
    if wanted(Section::Agent) {
        let (table, g) = bench::agent::run(&emu, &acc, args.rounds).await?;
        table.print();
        goals.extend(g);
    }

    let clients = [
        (
            Section::Gcloud,
            gcloud.as_ref().map(|_| ()).map_err(Clone::clone),
        ),
        (
            Section::Python,
            python.as_ref().map(|_| ()).map_err(Clone::clone),
        ),
        (Section::Hot, Ok(())),
        // Its peers are the Google Cloud CLI's: missing, the bench fails (below).
        (Section::Cli, Ok(())),
        (Section::Metadata, Ok(())),
    ];
    let mut runnable = vec![];
    for (s, ok) in clients {
        if !wanted(s) {
            continue;
        }
        match (ok, &bins) {
            (Err(why), _) => not_run.push((s, why)),
            (Ok(()), Err(why)) => not_run.push((s, why.clone())),
            (Ok(()), Ok(_)) => runnable.push(s),
        }
    }
    if let (false, Ok(bins)) = (runnable.is_empty(), &bins) {
        let tg = Touchgate::start(bins, &emu, &acc, args.state_in.as_deref())?;
        let rss_idle = bench::hot::rss(tg.agent_pid)?;
        if let (true, Ok(g)) = (runnable.contains(&Section::Gcloud), &gcloud) {
            bench::gcloud::run(g, &emu, &acc, &tg, args.runs)?.print();
        }
        if let (true, Ok(p)) = (runnable.contains(&Section::Python), &python) {
            bench::python::run(p, &emu, &acc, &tg, args.refreshes)?.print();
        }
        if runnable.contains(&Section::Cli) {
            let g = gcloud
                .as_ref()
                .map_err(|why| anyhow::anyhow!("the cli section's peer is missing: {why}"))?;
            goals.extend(bench::cli::run(&emu, bins, &tg, g, args.runs)?);
        }
        if runnable.contains(&Section::Metadata) {
            goals.extend(bench::metadata::run(&emu, &tg, args.requests).await?);
        }
        // Last: it leaves the agent with a million window hits behind it.
        if runnable.contains(&Section::Hot) {
            let counts = bench::hot::Counts {
                rounds: args.latency_rounds,
                hits: args.hits,
                audit_seconds: args.audit_seconds,
                starts: args.starts,
                rss_idle,
            };
            goals.extend(bench::hot::run(&emu, bins, &tg, &counts).await?);
        }
    }
    bench::goals::print(&goals);

    let mut failed = false;
    for (s, why) in &not_run {
        let asked = args.only.contains(s);
        failed |= asked;
        println!(
            "\nnot run: {:?} section{}: {why}",
            s,
            if asked {
                " (asked for with --only)"
            } else {
                ""
            }
        );
    }
    if args.only.is_empty() {
        println!(
            "\n(sections: agent, gcloud, python, hot, cli, metadata; --only SECTION to pick, --help for the counts)"
        );
    }
    emu.shutdown().await?;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
