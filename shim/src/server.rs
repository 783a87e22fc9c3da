//! The loopback HTTP server's rules for every request: no proxies, no
//! ambiguous or foreign `Host`, the caller named; and what every response
//! carries. Who may hold a connection at all is decided at accept
//! ([`crate::accept`]): a request reaches these rules only from our own user.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
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
    /// Also answer to `Host: metadata.google.internal`, `metadata` and
    /// `169.254.169.254` (for set-ups that point those names at the shim).
    pub allow_metadata_hostnames: bool,
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
    pub(crate) my_uid: u32,
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

/// The caller of one request, as its connection's owner was found.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub pid: Option<u32>,
    pub program: Option<String>,
    /// The caller's display and terminal, for a PIN dialog.
    pub env: CallerHint,
}

impl Caller {
    /// The caller holding a connection of ours: its program's name and where
    /// its user sits (blocking: reads `/proc`).
    pub fn of(p: &peer::Peer) -> Caller {
        Caller {
            pid: p.pid,
            program: p.pid.and_then(peer::program_name),
            env: p.pid.map(caller_env).unwrap_or_else(CallerHint::from_env),
        }
    }

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

/// The 403 a request without `Metadata-Flavor: Google` gets, as on GCE (a
/// browser page cannot set the header), or `None` when it has it.
pub fn without_metadata_flavor(headers: &HeaderMap) -> Option<Response> {
    let flavored = headers
        .get("metadata-flavor")
        .is_some_and(|v| v.as_bytes() == b"Google");
    (!flavored).then(|| {
        json_error(
            StatusCode::FORBIDDEN,
            "touchgate-shim: missing header Metadata-Flavor: Google",
        )
    })
}

/// Every request: no proxy headers, one loopback `Host` (no DNS rebinding);
/// every response says `Metadata-Flavor: Google`.
async fn guard(
    State(shim): State<Arc<Shim>>,
    Extension(caller): Extension<Caller>,
    req: Request,
    next: Next,
) -> Response {
    // Path only in the log (never a query or a body).
    let mut log = RequestLog {
        on: shim.log_requests,
        line: format!("{} {}", req.method(), req.uri().path()),
        who: format!(
            "{} (pid {})",
            caller.program.as_deref().unwrap_or("unknown program"),
            caller.pid.map_or("?".into(), |p| p.to_string())
        ),
        status: None,
    };
    let hosts = HostRules {
        port: shim.server.port(),
        metadata_names: shim.opts.allow_metadata_hostnames,
    };
    let mut resp = match hosts.check(req.uri(), req.headers()) {
        Ok(()) => next.run(req).await,
        Err(why) => json_error(StatusCode::FORBIDDEN, &why),
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

/// Headers a proxy adds (`X-Forwarded-For` and the rest): a request carrying
/// one came through a proxy, or pretends to.
const PROXY_HEADERS: [&str; 6] = [
    "Forwarded",
    "X-Forwarded-For",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Real-IP",
    "Via",
];

/// The metadata server's names, answered to only when asked for by name.
const METADATA_NAMES: [&str; 3] = ["metadata.google.internal", "metadata", "169.254.169.254"];

/// Echoed input is cut to this many characters.
const ECHO_MAX: usize = 64;

/// Which `Host` (and request-line host) values a request may carry.
struct HostRules {
    /// Our port, for the fix in an error.
    port: u16,
    /// `--allow-metadata-hostnames`.
    metadata_names: bool,
}

impl HostRules {
    /// `Err`: the one-line reason the request is refused.
    fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), String> {
        let port = self.port;
        if let Some(h) = PROXY_HEADERS.iter().find(|h| headers.contains_key(**h)) {
            return Err(format!(
                "touchgate-shim: request carries {h}; proxied requests are refused: call http://127.0.0.1:{port} directly (add 127.0.0.1 to NO_PROXY)"
            ));
        }
        let mut hosts = headers.get_all(header::HOST).iter();
        let host = hosts.next();
        if hosts.next().is_some() {
            return Err(
                "touchgate-shim: request has two Host headers; an ambiguous request is refused"
                    .into(),
            );
        }
        if let Some(a) = uri.authority() {
            self.check_name(a.as_str(), "request line names host")?;
        }
        if let Some(h) = host {
            self.check_name(&String::from_utf8_lossy(h.as_bytes()), "Host")?;
        }
        Ok(())
    }

    fn check_name(&self, host: &str, what: &str) -> Result<(), String> {
        let port = self.port;
        let name = host_name(host).to_ascii_lowercase();
        if matches!(name.as_str(), "127.0.0.1" | "localhost" | "::1") {
            return Ok(());
        }
        let shown = echo(host);
        if METADATA_NAMES.contains(&name.as_str()) {
            if self.metadata_names {
                return Ok(());
            }
            return Err(format!(
                "touchgate-shim: {what} {shown} is the metadata server's name, answered to only when the shim runs with --allow-metadata-hostnames; use http://127.0.0.1:{port}"
            ));
        }
        Err(format!(
            "touchgate-shim: {what} {shown} is not a loopback name; use http://127.0.0.1:{port}"
        ))
    }
}

/// The name in a `Host` value: `[::1]:80` → `::1`, `localhost:80` → `localhost`.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    }
}

/// Input quoted for an error: escaped, and cut to [`ECHO_MAX`] characters.
fn echo(s: &str) -> String {
    let cut: String = s.chars().take(ECHO_MAX).collect();
    let more = if cut.len() < s.len() { "…" } else { "" };
    format!("\"{}{more}\"", cut.escape_debug())
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

    fn rules(metadata_names: bool) -> HostRules {
        HostRules {
            port: 8946,
            metadata_names,
        }
    }

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn only_loopback_hosts_unless_metadata_names_are_asked_for() {
        let uri = Uri::from_static("/");
        for h in ["127.0.0.1:8946", "localhost", "LOCALHOST:1", "[::1]:80"] {
            assert!(rules(false).check(&uri, &host(h)).is_ok(), "{h}");
        }
        for h in ["metadata.google.internal", "metadata:80", "169.254.169.254"] {
            let e = rules(false).check(&uri, &host(h)).unwrap_err();
            assert!(e.contains("--allow-metadata-hostnames"), "{e}");
            assert!(rules(true).check(&uri, &host(h)).is_ok(), "{h}");
        }
        for h in ["evil.example:8946", "10.0.0.1", "127.0.0.1.nip.io:8946"] {
            let e = rules(true).check(&uri, &host(h)).unwrap_err();
            assert!(e.contains("not a loopback name"), "{e}");
        }
        assert!(rules(false).check(&uri, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn proxied_and_ambiguous_requests_are_refused() {
        let uri = Uri::from_static("/");
        for h in PROXY_HEADERS {
            let mut m = host("127.0.0.1:8946");
            m.insert(h, HeaderValue::from_static("x"));
            let e = rules(true).check(&uri, &m).unwrap_err();
            assert!(e.contains(h) && e.contains("NO_PROXY"), "{e}");
        }
        let mut m = host("127.0.0.1:8946");
        m.append(header::HOST, HeaderValue::from_static("127.0.0.1:8946"));
        let e = rules(true).check(&uri, &m).unwrap_err();
        assert!(e.contains("two Host headers"), "{e}");
        let uri = Uri::from_static("http://evil.example/x");
        let e = rules(true).check(&uri, &host("127.0.0.1")).unwrap_err();
        assert!(
            e.contains("request line names host \"evil.example\""),
            "{e}"
        );
    }

    #[test]
    fn echoed_hosts_are_cut_and_escaped() {
        let long = "a".repeat(10_000);
        let e = rules(false)
            .check(&Uri::from_static("/"), &host(&long))
            .unwrap_err();
        assert!(e.len() < 300, "{}", e.len());
        assert_eq!(echo("a\"b"), "\"a\\\"b\"");
    }

    #[test]
    fn subjects_are_random() {
        let (a, b) = (random_hex(32), random_hex(32));
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
