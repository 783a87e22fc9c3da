//! The shim's metadata route under load: 64 HTTP/1.1 keep-alive clients asking
//! the token endpoint of the `window` profile's shim as fast as they can.
//! Requests and responses are written and read by hand (a fixed request, a
//! `Content-Length` body), so the figure is the shim's and the agent's, not an
//! HTTP client library's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use touchgate_tests::emulator::EmulatorHandle;

use super::goals::{Bound, Goal};
use super::world::{self, Touchgate, TARGET};

const CLIENTS: usize = 64;
const PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// One request on a kept-alive connection; the response body.
async fn get(s: &mut BufReader<TcpStream>, req: &[u8], body: &mut Vec<u8>) -> anyhow::Result<()> {
    s.get_mut().write_all(req).await?;
    let mut line = String::new();
    s.read_line(&mut line).await?;
    if !line.starts_with("HTTP/1.1 200") {
        bail!("the metadata route answered {:?}", line.trim());
    }
    let mut len = None;
    loop {
        line.clear();
        if s.read_line(&mut line).await? == 0 {
            bail!("the shim closed a kept-alive connection");
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse::<usize>().ok();
            }
        }
    }
    let len = len.context("a metadata answer without Content-Length")?;
    body.resize(len, 0);
    s.read_exact(body).await?;
    Ok(())
}

/// Requests per second over `requests` requests by `CLIENTS` keep-alive clients.
pub async fn run(emu: &EmulatorHandle, tg: &Touchgate, requests: u64) -> anyhow::Result<Vec<Goal>> {
    let addr = tg.window.addr.clone();
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: {addr}\r\nMetadata-Flavor: Google\r\n\r\n")
        .into_bytes();
    let req = Arc::new(req);
    let mut conns = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        let mut s = BufReader::new(TcpStream::connect(&addr).await?);
        let mut body = vec![];
        get(&mut s, &req, &mut body).await?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).context("the metadata token answer is not JSON")?;
        world::check_token(
            emu,
            v["access_token"].as_str().unwrap_or_default(),
            TARGET,
            "metadata route",
        )?;
        conns.push(s);
    }
    let left = Arc::new(AtomicU64::new(requests));
    let start = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut s| {
            let (left, req) = (left.clone(), req.clone());
            tokio::spawn(async move {
                let mut body = Vec::with_capacity(2048);
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    get(&mut s, &req, &mut body).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let rate = requests as f64 / start.elapsed().as_secs_f64();
    println!(
        "\nmetadata route: {CLIENTS} keep-alive clients, {requests} token requests: {rate:.0} req/s"
    );
    Ok(vec![Goal::absolute(
        &format!("metadata route, {CLIENTS} keep-alive clients"),
        rate,
        format!("{rate:.0} req/s"),
        "-",
        ">= 10,000 req/s (keep it)",
        Bound::AtLeast(10_000.0),
    )])
}
