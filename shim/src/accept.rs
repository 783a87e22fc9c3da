//! Accepting connections: who may hold one, how many, and for how long.
//!
//! Invariants, so that nobody can starve the owner of the shim:
//! - A connection's owner is looked up at accept, before a byte of it is read.
//!   Lookups are batched (one read of the socket table for every connection
//!   waiting, so a flood is classified at the speed of the table, not one read
//!   per connection); at most [`LOOKUPS`] connections wait for one, past that
//!   new connections wait in the kernel's queue. Another user's connection, or one whose owner cannot be
//!   found, gets a fixed 403 and is closed; at most [`REFUSING`] refusals are
//!   being answered at a time (each for at most [`REFUSAL_TIME`]), past that a
//!   refused connection is closed unanswered. Refusals are logged once per uid,
//!   then counted ([`RefusalLog`]).
//! - Our own user's connections are capped (`--max-connections`); past the cap
//!   a fixed 503 says so.
//! - Each request's headers must arrive within the header timeout
//!   (`--header-timeout`), also on a kept-alive connection waiting for its next
//!   request; a request being answered (e.g. waiting for a touch) is not timed.
//! - HTTP/1.1 only: what every metadata client speaks.
//! - On shutdown, accepting stops, idle connections close, and requests in
//!   flight are answered first.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Request, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use touchgate::refusals::RefusalLog;

use crate::server::{Caller, Shim};

/// Connections waiting for their owner to be looked up (also the largest batch).
pub const LOOKUPS: usize = 256;
/// Refused connections being answered at once.
pub const REFUSING: usize = 64;
/// How long a refused connection may take to read its answer.
pub const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// After the first refusal of a uid, one log line per this long.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How much our own user's connections may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections of our own user open at once.
    pub max_connections: usize,
    /// Time to send a request's headers (from the first byte, or from the end
    /// of the previous answer on a kept-alive connection).
    pub header_timeout: Duration,
}

/// `--max-connections` unless told otherwise: generous for one user, well
/// under a desktop's usual limit of 1024 open files.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// `--header-timeout` unless told otherwise, in seconds.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;

/// What every connection task shares.
struct Ctx {
    shim: Arc<Shim>,
    app: Router,
    limits: Limits,
    ours: Arc<Semaphore>,
    refusing: Arc<Semaphore>,
    refusals: RefusalLog,
}

/// Serve `app` on `listener` until `shutdown` resolves, then wait for the
/// connections to finish (idle ones are closed at once).
pub async fn serve(
    listener: TcpListener,
    shim: Arc<Shim>,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let ctx = Arc::new(Ctx {
        shim,
        app,
        limits,
        ours: Arc::new(Semaphore::new(limits.max_connections)),
        refusing: Arc::new(Semaphore::new(REFUSING)),
        refusals: RefusalLog::new(REFUSAL_LOG_EVERY),
    });
    let lookups = Arc::new(Semaphore::new(LOOKUPS));
    let (lookup_tx, lookup_rx) = mpsc::channel(LOOKUPS);
    let resolver = tokio::spawn(resolve(ctx.clone(), lookup_rx));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let lookup = tokio::select! {
            _ = &mut shutdown => break,
            p = lookups.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("touchgate-shim: warning: cannot set TCP_NODELAY: {e}");
        }
        let (ctx, stop, lookup_tx) = (ctx.clone(), stop_rx.clone(), lookup_tx.clone());
        tasks.spawn(async move {
            let (reply, answer) = oneshot::channel();
            let found = match lookup_tx.send(Lookup { peer, reply }).await {
                Ok(()) => answer.await.unwrap_or_else(|_| Err(STOPPED.into())),
                Err(_) => Err(STOPPED.into()),
            };
            drop(lookup);
            match found {
                Ok(caller) => connection(&ctx, tcp, caller, stop).await,
                Err(why) => refuse(&ctx, tcp, StatusCode::FORBIDDEN, &why).await,
            }
        });
    }
    drop(lookup_tx);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    resolver.abort();
}

const STOPPED: &str = "touchgate-shim: shutting down";

/// A connection waiting for its owner.
struct Lookup {
    peer: SocketAddr,
    reply: oneshot::Sender<Result<Caller, String>>,
}

/// Look up owners in batches: everything waiting when a lookup starts goes
/// into it.
async fn resolve(ctx: Arc<Ctx>, mut waiting: mpsc::Receiver<Lookup>) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        while batch.len() < LOOKUPS {
            match waiting.try_recv() {
                Ok(l) => batch.push(l),
                Err(_) => break,
            }
        }
        let peers: Vec<SocketAddr> = batch.iter().map(|l| l.peer).collect();
        let shim = &ctx.shim;
        let (finder, server, my_uid) = (shim.opts.finder.clone(), shim.server, shim.my_uid);
        let found = tokio::task::spawn_blocking(move || {
            finder
                .owners(&peers, server, my_uid)
                .into_iter()
                // The process is only looked at when the uid is ours.
                .map(|p| p.map(|p| (p.uid, (p.uid == my_uid).then(|| Caller::of(&p)))))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (i, l) in batch.into_iter().enumerate() {
            let _ = l.reply.send(judge(&ctx, found.get(i).cloned().flatten()));
        }
    }
}

/// Out of file descriptors (or another passing trouble): say so, wait a
/// little for connections to close, go on.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused
    ) {
        return;
    }
    eprintln!("touchgate-shim: warning: cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The connection's caller if it is our own user; otherwise the one-line
/// reason it is refused. `found`: the owner's uid, and the caller when ours.
fn judge(ctx: &Ctx, found: Option<(u32, Option<Caller>)>) -> Result<Caller, String> {
    let my_uid = ctx.shim.my_uid;
    match found {
        Some((_, Some(caller))) => Ok(caller),
        Some((uid, None)) => {
            if let Some(n) = ctx.refusals.note(uid) {
                eprintln!("touchgate-shim: refused a connection from uid {uid} (this shim serves uid {my_uid} only; {n} refused since the last such line)");
            }
            Err(format!(
                "touchgate-shim: uid {uid} may not use this shim; it serves uid {my_uid} only"
            ))
        }
        None => Err(format!(
            "touchgate-shim: cannot tell which user is calling ({})",
            ctx.shim.opts.finder.source()
        )),
    }
}

/// Serve one connection of our own user, within the cap and the header timeout.
async fn connection(ctx: &Ctx, tcp: TcpStream, caller: Caller, mut stop: watch::Receiver<bool>) {
    let Ok(_slot) = ctx.ours.clone().try_acquire_owned() else {
        let max = ctx.limits.max_connections;
        let msg = format!(
            "touchgate-shim: this user already holds {max} connections to the shim: close some, or start it with a larger --max-connections"
        );
        refuse(ctx, tcp, StatusCode::SERVICE_UNAVAILABLE, &msg).await;
        return;
    };
    let app = TowerToHyperService::new(ctx.app.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(caller.clone());
        app.call(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.limits.header_timeout)
        .serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            // Close when idle; a request in flight is answered first.
            conn.as_mut().graceful_shutdown();
            let _ = conn.as_mut().await;
        }
    }
}

/// Answer `status` with a JSON `{"error": message}` without reading the
/// request, then close. Past [`REFUSING`] refusals at once, close unanswered.
async fn refuse(ctx: &Ctx, mut tcp: TcpStream, status: StatusCode, message: &str) {
    let Ok(_slot) = ctx.refusing.clone().try_acquire_owned() else {
        return;
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nmetadata-flavor: Google\r\nserver: touchgate-shim\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read (and drop) what the client sent until it closes, so that our
        // close does not reset the connection before the answer is read.
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}
