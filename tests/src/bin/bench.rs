//! `touchgate-bench [--rounds N]`: how much touchgate adds to getting a token.
//!
//! Everything runs here, on loopback: the Google emulator, an agent with the
//! software key (touches approved at once) served on a real Unix socket, and
//! the client library. It times, per token:
//!
//! - **peer**: minting straight from Google (emulated) with the same
//!   credential — a JWT grant plus `generateAccessToken`, what any client
//!   without touchgate pays;
//! - **window**: `GetToken` answered from an open approval window (the common
//!   case for `touch = "10m"`), over the socket;
//! - **every-token**: a full issuance — touch, verify, unseal, mint.
//!
//! and prints each with its ratio to the peer. Speed goal: a window hit costs
//! far less than the peer; a full issuance costs the peer plus the ceremony.

use std::sync::Arc;
use std::time::{Duration, Instant};

use touchgate::{CallerHint, Secret};
use touchgate_agent::clock::SystemClock;
use touchgate_agent::config::Config;
use touchgate_agent::key::soft::{AutoTouch, SoftKey};
use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::upstream::{MintRequest, Upstream, UpstreamCredential};
use touchgate_agent::{Agent, StatePaths};
use touchgate_tests::emulator::Emulator;

const RUNNER: &str = "bench-runner@touchgate-bench.iam.gserviceaccount.com";
const TARGET: &str = "bench-target@touchgate-bench.iam.gserviceaccount.com";

fn config(base: &str) -> String {
    format!(
        r#"[agent]
touch_timeout = "10s"
[key]
backend = "soft"
touch = "auto"
[google]
iam_credentials = "{base}"
[profiles.window]
service_account = "{TARGET}"
lifetime = "15m"
touch = "10m"
[profiles.every]
service_account = "{TARGET}"
lifetime = "15m"
touch = "every-token"
"#
    )
}

fn per_op(total: Duration, n: u32) -> Duration {
    total / n.max(1)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: u32 = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(50);
    let emu = Emulator::start("127.0.0.1:0").await?;
    let key_json = emu.state().add_service_account(RUNNER);
    emu.state().add_service_account(TARGET);
    emu.state().grant_token_creator(RUNNER, TARGET);

    let dir = tempfile::tempdir()?;
    let cfg = Config::parse(&config(&emu.base_url()), &dir.path().join("config.toml"))?;
    let clock = Arc::new(SystemClock);
    let key = Arc::new(SoftKey::open(
        &dir.path().join("soft-key.json"),
        Arc::new(AutoTouch),
    )?);
    let upstream = Arc::new(GoogleUpstream::new(cfg.google.clone(), clock.clone()));
    let agent = Agent::new(
        cfg.clone(),
        key,
        upstream.clone(),
        clock,
        StatePaths::in_dir(dir.path()),
    )?;
    let socket = dir.path().join("agent.sock");
    let listener = touchgate_agent::server::bind(&socket).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(touchgate_agent::server::serve(agent, listener, async {
        let _ = stopped.await;
    }));

    let mut c = touchgate::Client::connect(&socket).await?;
    c.enroll(false, false, CallerHint::default()).await?;
    c.import(
        "default",
        Secret::new(key_json.as_str()),
        CallerHint::default(),
    )
    .await?;

    // Peer: mint directly, as a client without touchgate would.
    let cred = UpstreamCredential::parse(&key_json)?;
    let req = MintRequest {
        impersonate: Some(TARGET.into()),
        lifetime: Duration::from_secs(900),
        ..MintRequest::default()
    };
    let t = Instant::now();
    for _ in 0..rounds {
        upstream.mint(&cred, &req).await?;
    }
    let peer = per_op(t.elapsed(), rounds);

    // Window: the first ask touches, the rest are answered from the window.
    c.get_token(Some("window"), &[], CallerHint::default())
        .await?;
    let t = Instant::now();
    for _ in 0..rounds {
        let tok = c
            .get_token(Some("window"), &[], CallerHint::default())
            .await?;
        assert!(tok.from_cache);
    }
    let window = per_op(t.elapsed(), rounds);

    // Every token: touch, verify, unseal, mint.
    let t = Instant::now();
    for _ in 0..rounds {
        c.get_token(Some("every"), &[], CallerHint::default())
            .await?;
    }
    let every = per_op(t.elapsed(), rounds);

    let ratio = |d: Duration| d.as_secs_f64() / peer.as_secs_f64();
    println!("touchgate-bench: {rounds} rounds each, everything on loopback");
    println!(
        "  peer (direct mint, no touchgate) {:>10.3?} per token  1.00x",
        peer
    );
    println!(
        "  window hit over the socket       {:>10.3?} per token  {:.2}x peer",
        window,
        ratio(window)
    );
    println!(
        "  every-token (touch+unseal+mint)  {:>10.3?} per token  {:.2}x peer",
        every,
        ratio(every)
    );

    drop(c);
    let _ = stop.send(());
    server.await?;
    Ok(())
}
