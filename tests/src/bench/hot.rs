//! The hot path of a real `touchgate-agent` process: a window hit over its
//! socket against a bare length-framed echo between two tokio tasks (its
//! server in a process of its own, as the agent is; between two tasks of one
//! process it is printed too), 64 clients at once, its RSS idle and after many window hits, the audit log a
//! steady client makes it write, and how soon it accepts after a start.
//!
//! Every window-hit figure first checks that the answer came from the window
//! (`from_cache`) and that the emulator accepts the token, so no figure comes
//! from a path other than the one named.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use touchgate::{CallerHint, Client};
use touchgate_tests::emulator::EmulatorHandle;

use super::goals::{self, Bound, Goal};
use super::world::{self, Bins, Touchgate, TARGET};

/// The counts of this section (from the command line).
pub struct Counts {
    /// Timed window hits for the latency figures (and echo round trips).
    pub rounds: usize,
    /// Window hits before the second RSS reading (64 clients; also the tokens/s figure).
    pub hits: u64,
    /// Seconds of the 1,000 tokens/s client whose audit log is measured.
    pub audit_seconds: u64,
    /// Agent starts timed.
    pub starts: usize,
    /// The agent's RSS read just after it started (bytes).
    pub rss_idle: u64,
}

/// Concurrent clients of the throughput figure.
const CLIENTS: usize = 64;
/// The body the echo peer sends: about a window hit's answer.
const ECHO_BODY: usize = 256;

fn pct(times: &mut [Duration], q: f64) -> Duration {
    times.sort();
    let n = times.len();
    times[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

/// One round trip of a 4-byte big-endian length and `ECHO_BODY` bytes.
async fn echo_once(s: &mut UnixStream, buf: &mut [u8]) -> std::io::Result<()> {
    s.write_all(&(buf.len() as u32).to_be_bytes()).await?;
    s.write_all(buf).await?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    s.read_exact(&mut buf[..u32::from_be_bytes(len) as usize])
        .await?;
    Ok(())
}

/// The echo side: read a frame, write it back, until the peer closes.
async fn echo_server(mut s: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = (u32::from_be_bytes(len) as usize).min(buf.len());
        if s.read_exact(&mut buf[..n]).await.is_err()
            || s.write_all(&len).await.is_err()
            || s.write_all(&buf[..n]).await.is_err()
        {
            return;
        }
    }
}

/// Round-trip times of a bare framed echo between two tokio tasks.
async fn echo_times(rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let (mut a, b) = UnixStream::pair()?;
    let server = tokio::spawn(echo_server(b));
    let mut buf = vec![7u8; ECHO_BODY];
    for _ in 0..rounds / 10 + 1 {
        echo_once(&mut a, &mut buf).await?;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        echo_once(&mut a, &mut buf).await?;
        times.push(t.elapsed());
    }
    drop(a);
    server.await?;
    Ok(times)
}

/// The hidden argument that makes `touchgate-bench` the echo peer in a process
/// of its own (see [`serve_echo`]).
pub const ECHO_SERVER_ARG: &str = "--echo-server";

/// The echo peer as a process, like the agent: the same multi-thread tokio
/// runtime, listening on `sock`, echoing each connection until it closes. It
/// prints one line when it listens and exits when stdin closes.
pub fn serve_echo(sock: &Path) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = tokio::net::UnixListener::bind(sock)?;
        println!("listening");
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 1];
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    tokio::spawn(echo_server(accepted?.0));
                }
                _ = stdin.read(&mut sink) => return Ok(()),
            }
        }
    })
}

/// Round-trip times of the same framed echo with the server in a process of its
/// own (this binary run with [`ECHO_SERVER_ARG`]): a window hit crosses from
/// the client's process to the agent's, and so does this peer.
async fn echo_process_times(rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("echo.sock");
    let mut server = tokio::process::Command::new(std::env::current_exe()?)
        .arg(ECHO_SERVER_ARG)
        .arg(&sock)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the echo peer process")?;
    let mut ready = String::new();
    tokio::io::BufReader::new(server.stdout.take().expect("piped"))
        .read_line(&mut ready)
        .await?;
    if ready.trim() != "listening" {
        bail!("the echo peer process did not start");
    }
    let mut a = UnixStream::connect(&sock).await?;
    let mut buf = vec![7u8; ECHO_BODY];
    for _ in 0..rounds / 10 + 1 {
        echo_once(&mut a, &mut buf).await?;
    }
    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let t = Instant::now();
        echo_once(&mut a, &mut buf).await?;
        times.push(t.elapsed());
    }
    drop(a);
    drop(server.stdin.take());
    server.wait().await?;
    Ok(times)
}

async fn connect(tg: &Touchgate) -> anyhow::Result<Client> {
    Client::connect(&tg.sock)
        .await
        .context("connecting to the bench's agent")
}

/// One window hit; fails unless it came from the window.
async fn hit(c: &mut Client) -> anyhow::Result<String> {
    let t = c
        .get_token(Some("window"), &[], CallerHint::default())
        .await?;
    if !t.from_cache {
        bail!("window hit: the agent minted instead of answering from the window");
    }
    Ok(t.access_token.expose().to_owned())
}

/// `hits` window hits by `CLIENTS` clients at once; the tokens per second.
async fn hammer(tg: &Touchgate, hits: u64) -> anyhow::Result<f64> {
    let left = Arc::new(AtomicU64::new(hits));
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(connect(tg).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let left = left.clone();
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    hit(&mut c).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(hits as f64 / start.elapsed().as_secs_f64())
}

/// The peer of the throughput figure: `CLIENTS` echo pairs for as many round trips.
async fn echo_rate(trips: u64) -> anyhow::Result<f64> {
    let left = Arc::new(AtomicU64::new(trips));
    let start = Instant::now();
    let mut tasks = vec![];
    for _ in 0..CLIENTS {
        let (mut a, b) = UnixStream::pair()?;
        tokio::spawn(echo_server(b));
        let left = left.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![7u8; ECHO_BODY];
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                echo_once(&mut a, &mut buf).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(trips as f64 / start.elapsed().as_secs_f64())
}

/// Resident set size of `pid`, in bytes (Linux: /proc/PID/status).
pub fn rss(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (the RSS figure needs Linux)"))?;
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kb * 1024)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// One client asking 1,000 tokens/s for `seconds`: (tokens/s reached, audit
/// bytes per hour). When the agent cannot keep up with 1,000 tokens/s the bytes
/// are scaled up to that rate (linearly: an over-estimate for a writer that
/// coalesces window hits, whose lines do not grow with the rate).
async fn audit_rate(tg: &Touchgate, seconds: u64) -> anyhow::Result<(f64, f64)> {
    let mut c = connect(tg).await?;
    hit(&mut c).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let before = file_len(&tg.audit_log);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        hit(&mut c).await?;
        n += 1;
    }
    // A writer that coalesces window hits may still hold the last second's
    // count: an error of one line, small against the interval.
    let took = start.elapsed().as_secs_f64();
    let bytes = file_len(&tg.audit_log).saturating_sub(before);
    let rate = n as f64 / took;
    // Within 5% of the asked rate counts as reaching it.
    let scale = if rate < 950.0 { 1000.0 / rate } else { 1.0 };
    Ok((rate, bytes as f64 / took * 3600.0 * scale))
}

/// From spawn to a hello answered on the socket, `starts` times (the first, which
/// creates the state directory, untimed); and the peer: `/bin/true` run to its exit.
fn start_times(bins: &Bins, base_url: &str, starts: usize) -> anyhow::Result<(Duration, Duration)> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(
        d.join("config.toml"),
        format!(
            "[key]\nbackend = \"soft\"\ntouch = \"auto\"\n[google]\niam_credentials = \"{base_url}\"\n[profiles.window]\nservice_account = \"{TARGET}\"\n"
        ),
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sock = d.join("run/agent.sock");
    let mut agent = vec![];
    for i in 0..=starts {
        let mut cmd = Command::new(&bins.agent);
        cmd.args(["--foreground", "--print-sock"])
            .env("TOUCHGATE_SOCK", &sock)
            .env("TOUCHGATE_CONFIG", d.join("config.toml"))
            .env("TOUCHGATE_STATE_DIR", d.join("state"));
        let t = Instant::now();
        let (proc, line) = world::spawn_ready(cmd, &d.join("agent.stderr"))?;
        if !line.starts_with("TOUCHGATE_SOCK=") {
            bail!(
                "touchgate-agent did not start: {}",
                std::fs::read_to_string(d.join("agent.stderr")).unwrap_or_default()
            );
        }
        rt.block_on(Client::connect(&sock))?;
        let took = t.elapsed();
        drop(proc);
        if i > 0 {
            agent.push(took);
        }
    }
    let mut peer = vec![];
    for _ in 0..starts {
        let t = Instant::now();
        let s = Command::new("/bin/true")
            .stdin(Stdio::null())
            .status()
            .context("running /bin/true (the start-up peer)")?;
        peer.push(t.elapsed());
        if !s.success() {
            bail!("/bin/true failed");
        }
    }
    Ok((pct(&mut agent, 0.5), pct(&mut peer, 0.5)))
}

pub async fn run(
    emu: &EmulatorHandle,
    bins: &Bins,
    tg: &Touchgate,
    n: &Counts,
) -> anyhow::Result<Vec<Goal>> {
    let mut goals = vec![];
    println!(
        "\nhot path: a real touchgate-agent (pid {}), client library over its socket",
        tg.agent_pid
    );

    // Latency: a window hit vs the bare framed echo, the same number of rounds.
    let mut c = connect(tg).await?;
    let tok = {
        c.get_token(Some("window"), &[], CallerHint::default())
            .await?;
        hit(&mut c).await?
    };
    world::check_token(emu, &tok, TARGET, "window hit")?;
    let rss_idle = n.rss_idle;
    let mut echo = echo_times(n.rounds).await?;
    let mut echo_proc = echo_process_times(n.rounds).await?;
    for _ in 0..n.rounds / 10 + 1 {
        hit(&mut c).await?;
    }
    let mut times = Vec::with_capacity(n.rounds);
    for _ in 0..n.rounds {
        let t = Instant::now();
        hit(&mut c).await?;
        times.push(t.elapsed());
    }
    drop(c);
    let echo_task_p50 = pct(&mut echo, 0.5);
    // The peer of the goals: the echo with its server in another process, as
    // the agent is. Between two tasks of one runtime the round trip may never
    // leave a thread (printed too, not compared).
    let echo_p50 = pct(&mut echo_proc, 0.5);
    let (p50, p99) = (pct(&mut times, 0.5), pct(&mut times, 0.99));
    println!(
        "  window hit ({} rounds): p50 {:.0} µs, p99 {:.0} µs; bare framed echo p50 {:.0} µs to another process, {:.0} µs between two tasks of this one",
        n.rounds,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        echo_p50.as_secs_f64() * 1e6,
        echo_task_p50.as_secs_f64() * 1e6
    );
    goals.push(
        Goal::ratio(
            "window hit over the socket, p50",
            goals::us(p50),
            goals::us(echo_p50),
            "<= 2x the echo's p50",
            Bound::AtMost(2.0),
        )
        .note("with each hit appending to the audit log, this depends on the audit writer"),
    );
    goals.push(
        Goal::ratio(
            "window hit over the socket, p99",
            goals::us(p99),
            goals::us(echo_p50),
            "<= 10x the echo's p50",
            Bound::AtMost(10.0),
        )
        .note("depends on the audit writer"),
    );

    // Throughput, and the RSS after it.
    let rate = hammer(tg, n.hits).await?;
    let peer_rate = echo_rate(n.hits.min(200_000)).await?;
    let rss_after = rss(tg.agent_pid)?;
    println!(
        "  {CLIENTS} clients, {} window hits: {rate:.0} tokens/s; {CLIENTS} bare echo pairs: {peer_rate:.0} round trips/s",
        n.hits
    );
    goals.push(
        Goal::absolute(
            &format!("{CLIENTS} concurrent clients, window hits"),
            rate,
            format!("{rate:.0} tokens/s"),
            &format!("{peer_rate:.0} echo round trips/s"),
            ">= 20,000 tokens/s on 2 cores",
            Bound::AtLeast(20_000.0),
        )
        .note("the bench's own 64 clients share the cores; depends on the audit writer"),
    );
    println!(
        "  agent RSS: {} idle, {} after {} window hits",
        mib(rss_idle),
        mib(rss_after),
        n.hits
    );
    for (what, b) in [
        ("agent RSS idle".to_owned(), rss_idle),
        (format!("agent RSS after {} window hits", n.hits), rss_after),
    ] {
        goals.push(Goal::absolute(
            &what,
            b as f64 / (1024.0 * 1024.0),
            mib(b),
            "-",
            "<= 15 MiB",
            Bound::AtMost(15.0),
        ));
    }

    // The audit log one steady client makes the agent write.
    let (asked, per_hour) = audit_rate(tg, n.audit_seconds).await?;
    println!(
        "  one client at {asked:.0} tokens/s for {} s: audit log grows {:.1} MB/hour at 1,000 tokens/s{}",
        n.audit_seconds,
        per_hour / 1e6,
        if asked < 950.0 { " (scaled up from the rate reached)" } else { "" }
    );
    goals.push(
        Goal::absolute(
            "audit log, one client asking 1,000 tokens/s, per hour",
            per_hour / 1e6,
            format!(
                "{:.1} MB/hour (measured at {asked:.0} tokens/s)",
                per_hour / 1e6
            ),
            "-",
            "<= 10 MB/hour",
            Bound::AtMost(10.0),
        )
        .note("depends on the audit writer's coalescing of window hits"),
    );

    // Start-up.
    let (start, peer) =
        tokio::task::block_in_place(|| start_times(bins, &emu.base_url(), n.starts))?;
    println!(
        "  agent start to a hello answered: {:.2} ms (p50 of {}); /bin/true run to exit: {:.2} ms",
        start.as_secs_f64() * 1e3,
        n.starts,
        peer.as_secs_f64() * 1e3
    );
    goals.push(Goal::absolute(
        "agent ready to accept after start",
        start.as_secs_f64() * 1e3,
        format!("{:.2} ms", start.as_secs_f64() * 1e3),
        &format!("/bin/true {:.2} ms", peer.as_secs_f64() * 1e3),
        "<= 50 ms",
        Bound::AtMost(50.0),
    ));
    Ok(goals)
}
