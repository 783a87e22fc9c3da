//! The agent alone, in process, over its real Unix socket with the client
//! library: a token from an open approval window and a full every-token
//! issuance, against the peer — minting straight from (emulated) Google with
//! the same credential, a JWT grant plus `generateAccessToken`, what any
//! client without touchgate pays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use touchgate::{CallerHint, Secret};
use touchgate_agent::clock::SystemClock;
use touchgate_agent::config::Config;
use touchgate_agent::key::soft::{self, AutoTouch};
use touchgate_agent::upstream::google::GoogleUpstream;
use touchgate_agent::upstream::{MintRequest, Upstream, UpstreamCredential};
use touchgate_agent::{Agent, StatePaths};
use touchgate_tests::emulator::EmulatorHandle;

use super::goals::{self, Bound, Goal};
use super::stats::{self, Row, Table};
use super::world::{self, Accounts, TARGET};

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

/// Time `op` `rounds` times; each token it returns is checked afterwards.
async fn timed<F, Fut>(
    emu: &EmulatorHandle,
    label: &str,
    rounds: usize,
    mut op: F,
) -> anyhow::Result<(Row, Vec<String>)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let before = world::upstream_calls(emu);
    let (mut times, mut tokens) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        let t = Instant::now();
        let tok = op().await?;
        times.push(t.elapsed());
        tokens.push(tok);
    }
    let upstream = world::upstream_calls(emu) - before;
    for tok in &tokens {
        world::check_token(emu, tok, TARGET, label)?;
    }
    let row = Row {
        label: label.to_owned(),
        times,
        upstream_per_run: upstream as f64 / rounds.max(1) as f64,
    };
    Ok((row, tokens))
}

/// The table, and the goal of every-token issuance against a direct mint.
pub async fn run(
    emu: &EmulatorHandle,
    acc: &Accounts,
    rounds: usize,
) -> anyhow::Result<(Table, Vec<Goal>)> {
    let dir = tempfile::tempdir()?;
    let cfg = Config::parse(&config(&emu.base_url()), &dir.path().join("config.toml"))?;
    let clock = Arc::new(SystemClock);
    let key = Arc::new(soft::open(
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
    let socket = dir.path().join("run").join("agent.sock");
    let listener = touchgate_agent::server::bind(&socket).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(touchgate_agent::server::serve(agent, listener, async {
        let _ = stopped.await;
    }));

    let mut c = touchgate::Client::connect(&socket).await?;
    c.enroll(false, false, CallerHint::default()).await?;
    c.import(
        "default",
        Secret::new(acc.runner_key.as_str()),
        CallerHint::default(),
    )
    .await?;

    let mut table = Table::new(format!(
        "agent in process, client library over the socket, {rounds} rounds each"
    ));
    // Peer: mint directly, as a client without touchgate would.
    let cred = UpstreamCredential::parse(&acc.runner_key)?;
    let req = MintRequest {
        impersonate: Some(TARGET.into()),
        lifetime: Duration::from_secs(900),
        ..MintRequest::default()
    };
    let (peer, tokens) = timed(emu, "peer: direct mint, no touchgate", rounds, || async {
        Ok(upstream
            .mint(&cred, &req)
            .await?
            .access_token
            .expose()
            .to_owned())
    })
    .await?;
    world::check_fresh(&tokens, "direct mint")?;
    table.push(peer, true);

    // Window: the first ask touches, the rest are answered from the window.
    c.get_token(Some("window"), &[], CallerHint::default())
        .await?;
    let c = tokio::sync::Mutex::new(c);
    let (window, _) = timed(emu, "window hit", rounds, || async {
        let tok = c
            .lock()
            .await
            .get_token(Some("window"), &[], CallerHint::default())
            .await?;
        if !tok.from_cache {
            bail!("window hit: the agent minted instead of answering from the window");
        }
        Ok(tok.access_token.expose().to_owned())
    })
    .await?;
    table.push(window, false);

    // Every token: touch, verify, unseal, mint.
    let (every, tokens) = timed(emu, "every-token (touch+unseal+mint)", rounds, || async {
        let tok = c
            .lock()
            .await
            .get_token(Some("every"), &[], CallerHint::default())
            .await?;
        Ok(tok.access_token.expose().to_owned())
    })
    .await?;
    world::check_fresh(&tokens, "every-token")?;
    let mut goals = vec![];
    if let (Some((every_m, _)), Some((peer_m, _))) = (
        stats::summary(&every.times),
        stats::summary(&table.rows[0].times),
    ) {
        goals.push(
            Goal::ratio(
                "every-token issuance, soft key (median)",
                goals::ms(every_m),
                goals::ms(peer_m),
                "<= 2x a direct mint of the same token",
                Bound::AtMost(2.0),
            )
            .note("each issuance's record is made durable: depends on the audit writer"),
        );
    }
    table.push(every, false);

    drop(c);
    let _ = stop.send(());
    server.await?;
    Ok((table, goals))
}
