//! The loopback HTTP server: who may call, and what every response carries.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use touchgate::CallerHint;

use crate::broker::Broker;
use crate::{metadata, peer, sts};

/// What `serve` was told.
pub struct Options {
    pub profile: Option<String>,
    pub project: Option<String>,
    pub project_number: Option<u64>,
    /// How callers are told apart.
    pub finder: peer::Finder,
}

/// Shared state of the server.
pub struct Shim {
    pub broker: Arc<Broker>,
    pub opts: Options,
    /// Our listening address (the peer's socket has it as its remote end).
    pub server: SocketAddr,
    /// The subject token `/subject` hands out and `/sts/token` accepts: random per run.
    pub subject: String,
    /// Tokens issued through `/sts/token`, by fingerprint: (expires_at, profile) — for `/token_info`.
    pub issued: Mutex<HashMap<String, (u64, Option<String>)>>,
    my_uid: u32,
    /// Log one line per request (`TOUCHGATE_SHIM_LOG=requests`).
    log_requests: bool,
}

impl Shim {
    pub fn new(broker: Arc<Broker>, opts: Options, server: SocketAddr) -> Arc<Shim> {
        Arc::new(Shim {
            broker,
            opts,
            server,
            subject: random_hex(32),
            issued: Mutex::new(HashMap::new()),
            my_uid: touchgate::paths::current_uid(),
            log_requests: std::env::var("TOUCHGATE_SHIM_LOG").is_ok_and(|v| v == "requests"),
        })
    }
}

/// Who holds a connection's client end: its uid and process, the program's
/// name and where its user sits. `None`: it could not be found.
type Owner = Option<(peer::Peer, Option<String>, CallerHint)>;

/// One accepted connection: the peer address, and its owner once looked up.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    owner: Arc<tokio::sync::OnceCell<Owner>>,
}

/// The shim's listener: TCP, with TCP_NODELAY on every accepted connection so
/// answers go out at once (a response written in two segments would otherwise
/// wait for the client's delayed ACK, ~40 ms on Linux).
pub struct NoDelayListener(pub tokio::net::TcpListener);

impl Listener for NoDelayListener {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = Listener::accept(&mut self.0).await;
        if let Err(e) = tcp.set_nodelay(true) {
            eprintln!("touchgate-shim: warning: cannot set TCP_NODELAY: {e}");
        }
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Connected<IncomingStream<'_, NoDelayListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, NoDelayListener>) -> Conn {
        Conn {
            peer: *stream.remote_addr(),
            owner: Arc::default(),
        }
    }
}

/// The caller of one request, as its connection's owner was found.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub pid: Option<u32>,
    pub program: Option<String>,
    /// The caller's display and terminal, for a PIN dialog.
    pub env: CallerHint,
}

impl Caller {
    pub fn hint(&self) -> CallerHint {
        CallerHint {
            program: self.program.clone(),
            pid: self.pid,
            ..self.env.clone()
        }
    }
}

pub fn router(shim: Arc<Shim>) -> Router {
    Router::new()
        .route("/sts/token", post(sts::token))
        .route("/token_info", post(sts::token_info))
        .route("/subject", get(sts::subject))
        .fallback(metadata::handle)
        .layer(middleware::from_fn_with_state(shim.clone(), guard))
        .with_state(shim)
}

/// A one-line JSON error.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message });
    (status, axum::Json(body)).into_response()
}

/// Every request: loopback Host only (no DNS rebinding), no proxies, the
/// caller must be our own user; every response says `Metadata-Flavor: Google`.
async fn guard(
    State(shim): State<Arc<Shim>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    mut req: Request,
    next: Next,
) -> Response {
    // Path only in the log (never a query or a body).
    let mut log = RequestLog {
        on: shim.log_requests,
        line: format!("{} {}", req.method(), req.uri().path()),
        who: "refused caller".into(),
        status: None,
    };
    let mut resp = match check(&shim, &conn, req.headers()).await {
        Ok(caller) => {
            log.who = format!(
                "{} (pid {})",
                caller.program.as_deref().unwrap_or("unknown program"),
                caller.pid.map_or("?".into(), |p| p.to_string())
            );
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(resp) => resp,
    };
    log.status = Some(resp.status().as_u16());
    resp.headers_mut()
        .insert("metadata-flavor", HeaderValue::from_static("Google"));
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("touchgate-shim"));
    resp
}

/// One log line per request, also for a request whose client hung up first
/// (its handler is dropped mid-way; the ask to the agent goes on).
struct RequestLog {
    on: bool,
    line: String,
    who: String,
    status: Option<u16>,
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        if !self.on {
            return;
        }
        match self.status {
            Some(s) => eprintln!("touchgate-shim: {} -> {s} for {}", self.line, self.who),
            None => eprintln!(
                "touchgate-shim: {} -> client hung up before the answer, for {}",
                self.line, self.who
            ),
        }
    }
}

async fn check(shim: &Shim, conn: &Conn, headers: &HeaderMap) -> Result<Caller, Response> {
    if headers.contains_key("x-forwarded-for") {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            "touchgate-shim: request carries X-Forwarded-For; proxied requests are refused",
        ));
    }
    if let Some(host) = headers.get(header::HOST) {
        if !host_is_local(host.to_str().unwrap_or("")) {
            return Err(json_error(
                StatusCode::FORBIDDEN,
                "touchgate-shim: Host is not a loopback name; use http://127.0.0.1:PORT",
            ));
        }
    }
    let my_uid = shim.my_uid;
    let source = shim.opts.finder.source();
    // Once per connection: its owner cannot change while it is open, and
    // clients that keep connections alive should not pay for the search again.
    let found = conn
        .owner
        .get_or_init(|| {
            let finder = shim.opts.finder.clone();
            let (peer_addr, server) = (conn.peer, shim.server);
            async move {
                tokio::task::spawn_blocking(move || {
                    // The process is only searched for when the uid is ours.
                    let p = finder.owner(peer_addr, server, my_uid)?;
                    if p.uid != my_uid {
                        return Some((p, None, CallerHint::default()));
                    }
                    let program = p.pid.and_then(peer::program_name);
                    let env = p.pid.map(caller_env).unwrap_or_else(CallerHint::from_env);
                    Some((p, program, env))
                })
                .await
                .ok()
                .flatten()
            }
        })
        .await
        .clone();
    match found {
        None => Err(json_error(
            StatusCode::FORBIDDEN,
            &format!("touchgate-shim: cannot tell which user is calling ({source})"),
        )),
        Some((p, _, _)) if p.uid != my_uid => {
            eprintln!("touchgate-shim: refused a request from uid {} (this shim serves uid {my_uid} only)", p.uid);
            Err(json_error(
                StatusCode::FORBIDDEN,
                &format!(
                    "touchgate-shim: uid {} may not use this shim; it serves uid {my_uid} only",
                    p.uid
                ),
            ))
        }
        Some((p, program, env)) => Ok(Caller {
            pid: p.pid,
            program,
            env,
        }),
    }
}

/// `127.0.0.1[:P]`, `localhost[:P]`, `[::1][:P]`, or the names GCE clients use
/// (`metadata.google.internal`, `169.254.169.254`) when the user points them here.
fn host_is_local(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "127.0.0.1"
            | "localhost"
            | "::1"
            | "metadata.google.internal"
            | "metadata"
            | "169.254.169.254"
    )
}

/// The caller's DISPLAY, WAYLAND_DISPLAY, TERM and terminal, for a PIN dialog
/// where the caller is; ours where theirs cannot be read.
fn caller_env(pid: u32) -> CallerHint {
    let ours = CallerHint::from_env();
    let environ = touchgate::process::env_of(pid).unwrap_or_default();
    let mut vars: HashMap<String, String> = HashMap::new();
    for kv in &environ {
        if let Some((k, v)) = kv.split_once('=') {
            if matches!(k, "DISPLAY" | "WAYLAND_DISPLAY" | "TERM") && !v.is_empty() {
                vars.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    // The terminal on the caller's stdin (Linux; elsewhere ours is used).
    let tty = std::fs::read_link(format!("/proc/{pid}/fd/0"))
        .ok()
        .map(|p| p.display().to_string())
        .filter(|p| p.starts_with("/dev/pts/") || p.starts_with("/dev/tty"));
    CallerHint {
        program: None,
        pid: None,
        display: vars.remove("DISPLAY").or(ours.display),
        wayland_display: vars.remove("WAYLAND_DISPLAY").or(ours.wayland_display),
        tty: tty.or(ours.tty),
        term: vars.remove("TERM").or(ours.term),
    }
}

/// `n` random bytes from the kernel, as hex.
fn random_hex(n: usize) -> String {
    use std::io::Read;
    let mut b = vec![0u8; n];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    assert!(ok, "touchgate-shim: cannot read /dev/urandom");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts() {
        for h in [
            "127.0.0.1:8946",
            "localhost",
            "[::1]:80",
            "metadata.google.internal",
            "169.254.169.254",
        ] {
            assert!(host_is_local(h), "{h}");
        }
        for h in ["evil.example:8946", "10.0.0.1", "127.0.0.1.nip.io:8946"] {
            assert!(!host_is_local(h), "{h}");
        }
    }

    #[test]
    fn subjects_are_random() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
