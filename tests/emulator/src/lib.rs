//! A Google emulator on 127.0.0.1: the OAuth token endpoint, user logins (the
//! authorization endpoint with PKCE and the device flow), IAM Credentials
//! `generateAccessToken` and `generateIdToken`, ID tokens signed with its own
//! key (JWKS published), and a little of Vertex AI REST (models list, endpoint
//! predict, custom jobs, each behind its role), faithful enough that the agent's
//! real upstream code cannot tell it from Google. Faults (5xx, 429 with
//! Retry-After, slow answers, connection resets, a hostile echo of the
//! request) can be injected per test
//! ([`EmulatorState::inject`]). Admin routes under `/__emulator/` set it up and
//! read what it saw.
//!
//! # Layout
//!
//! A package of its own (`touchgate-emulator`): the tests link this library,
//! and `touchgate demo` starts its program, `touchgate-google-emulator`
//! (`src/main.rs`), found beside its own executable.
//!
//! - this file — [`Emulator`] (listener, fault-injecting connections, the
//!   router) and the call recorder.
//! - `state` — what the emulator knows ([`EmulatorState`]): accounts, keys,
//!   clients, tokens, grants, faults, its clock, the calls it saw.
//! - routes: `oauth` (`POST /token`), `authorize` (a user login with PKCE),
//!   `device` (the device flow), `iam` (IAM Credentials), `vertex` (Vertex AI
//!   REST), `admin` (`/__emulator/…`).
//! - `idtoken` — ID tokens: the emulator's RS256 key, its JWKS
//!   ([`JWKS_PATH`]) and [`verify_id_token`].
//! - `client` — [`EmulatorClient`], the admin routes from another process.
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

mod admin;
mod authorize;
mod client;
mod device;
mod iam;
mod idtoken;
mod oauth;
mod state;
mod vertex;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::IncomingStream;
use axum::{Json, Router};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use authorize::{LoginDecision, AUTH_CODE_LIFETIME};
pub use client::EmulatorClient;
pub use device::{DEFAULT_DEVICE_INTERVAL, DEVICE_CODE_EXPIRES_IN};
pub use idtoken::{verify_id_token, ID_TOKEN_ISSUER, ID_TOKEN_LIFETIME, JWKS_PATH};
pub use state::{
    CallKind, CallRecord, EmulatorState, Fault, FaultRule, IssuedToken, VertexRole, CLOUD_PLATFORM,
    CUSTOM_JOBS_CREATE, ENDPOINTS_PREDICT, MAX_EXTENDED_LIFETIME_SECS, MAX_LIFETIME_SECS,
    MODELS_LIST, TOKEN_EXPIRES_IN,
};

/// Starts emulators.
pub struct Emulator;

impl Emulator {
    /// Listens on `listen` (a loopback address such as `127.0.0.1:0`) and serves on
    /// the current tokio runtime until [`EmulatorHandle::shutdown`].
    pub async fn start(listen: &str) -> anyhow::Result<EmulatorHandle> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        if !addr.ip().is_loopback() {
            anyhow::bail!(
                "refusing to listen on {addr}: the emulator hands out fake credentials to anyone; \
                 use a 127.0.0.1 address"
            );
        }
        let state = Arc::new(EmulatorState::new(format!("http://{addr}")));
        let (tx, rx) = oneshot::channel::<()>();
        let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<Conn>();
        let stopping = Arc::clone(&state);
        let task = tokio::spawn(async move {
            axum::serve(FaultListener(listener), app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                    stopping.stop();
                })
                .await
        });
        Ok(EmulatorHandle {
            addr,
            state,
            stop: Some(tx),
            task: Some(task),
        })
    }
}

/// A running emulator. Dropping it stops the server too (without waiting).
pub struct EmulatorHandle {
    pub addr: SocketAddr,
    state: Arc<EmulatorState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.state.base_url().to_owned()
    }

    pub fn state(&self) -> Arc<EmulatorState> {
        Arc::clone(&self.state)
    }

    /// An admin client for this emulator.
    pub fn client(&self) -> EmulatorClient {
        EmulatorClient::new(self.base_url())
    }

    /// Stops accepting, lets open requests finish (at most 5 s), and returns.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            match tokio::time::timeout(Duration::from_secs(5), &mut task).await {
                Ok(joined) => joined.context("emulator task failed")??,
                Err(_) => task.abort(),
            }
        }
        Ok(())
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.state.stop();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The TCP listener, handing out connections a fault can cut.
struct FaultListener(TcpListener);

/// One connection, as the handlers see it: its peer and its kill switch.
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    #[allow(dead_code)]
    peer: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Conn {
    /// Closes the connection without an answer: whatever is written next fails
    /// and the server drops the socket.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }
}

impl axum::serve::Listener for FaultListener {
    type Io = CuttableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => {
                    let cut = Arc::new(AtomicBool::new(false));
                    let io = CuttableStream {
                        inner: stream,
                        cut: Arc::clone(&cut),
                    };
                    return (io, Conn { peer, cut });
                }
                // Out of file descriptors and the like: wait a little, go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Conn {
            peer: self.0.local_addr()?,
            cut: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl axum::extract::connect_info::Connected<IncomingStream<'_, FaultListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FaultListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that fails every read and write once cut.
pub(crate) struct CuttableStream {
    inner: TcpStream,
    cut: Arc<AtomicBool>,
}

impl CuttableStream {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }
}

fn reset() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionReset, "fault injected: reset")
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.is_cut() {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

pub(crate) type AppState = Arc<EmulatorState>;

fn router(state: AppState) -> Router {
    Router::new()
        .route("/token", post(oauth::token))
        .route("/o/oauth2/auth", get(authorize::authorize))
        .route("/device/code", post(device::device_code))
        .route(idtoken::JWKS_PATH, get(idtoken::certs))
        .route(
            "/v1/projects/{project}/serviceAccounts/{name}",
            post(iam::service_account_method),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/models",
            get(vertex::list_models),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/endpoints/{name}",
            post(vertex::endpoint_method),
        )
        .route(
            "/v1/projects/{project}/locations/{location}/customJobs",
            post(vertex::create_custom_job),
        )
        .nest("/__emulator", admin::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), record))
        .with_state(state)
}

/// What a handler tells the recorder about its call (a response extension).
#[derive(Debug, Clone, Default)]
pub(crate) struct Details {
    pub grant_type: Option<String>,
    pub principal: Option<String>,
    pub target: Option<String>,
    pub bearer_fingerprint: Option<String>,
    pub issued_fingerprint: Option<String>,
    pub lifetime_secs: Option<u64>,
    /// Vertex AI permission needed, and the resource.
    pub permission: Option<String>,
    pub resource: Option<String>,
    /// Not recorded (reading the records).
    pub skip: bool,
}

impl Details {
    pub fn respond(self, response: impl IntoResponse) -> Response {
        let mut r = response.into_response();
        r.extensions_mut().insert(self);
        r
    }
}

fn kind_of(path: &str) -> CallKind {
    if path == "/token" {
        CallKind::Token
    } else if path.starts_with("/v1/projects/") && path.ends_with(":generateAccessToken") {
        CallKind::GenerateAccessToken
    } else if path.starts_with("/v1/projects/") && path.ends_with(":generateIdToken") {
        CallKind::GenerateIdToken
    } else if path == "/o/oauth2/auth" {
        CallKind::Authorize
    } else if path == "/device/code" {
        CallKind::DeviceCode
    } else if path.starts_with("/__emulator/") {
        CallKind::Admin
    } else if path.starts_with("/v1/projects/") && path.contains("/locations/") {
        CallKind::Vertex
    } else {
        CallKind::Other
    }
}

/// Query parameters that carry credentials.
const SECRET_PARAMS: &[&str] = &[
    "access_token",
    "token",
    "refresh_token",
    "id_token",
    "assertion",
    "client_secret",
    "key",
    "code",
    "code_verifier",
    "device_code",
];

fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.contains(&k) => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Answers with an injected fault if one is due, and records every call,
/// logging it (without secrets) at info.
async fn record(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(redact_query);
    let kind = kind_of(&path);
    let user_project = req
        .headers()
        .get("x-goog-user-project")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let conn = req.extensions().get::<ConnectInfo<Conn>>().cloned();
    let fault = match kind {
        CallKind::Admin | CallKind::Other => None,
        _ => state.take_fault(kind),
    };
    let response = match &fault {
        None => next.run(req).await,
        Some(Fault::Slow(delay)) => {
            tokio::select! {
                _ = tokio::time::sleep(*delay) => next.run(req).await,
                _ = state.stopped() => fault_status(503),
            }
        }
        Some(Fault::Status(code)) => fault_status(*code),
        Some(Fault::RateLimited { retry_after }) => {
            let mut r = fault_status(429);
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after.as_secs().into());
            r
        }
        Some(Fault::Reset) => {
            if let Some(ConnectInfo(conn)) = &conn {
                conn.cut();
            }
            fault_status(503)
        }
        Some(Fault::Echo { status, json }) => echo(*status, *json, req).await,
    };
    let details = response
        .extensions()
        .get::<Details>()
        .cloned()
        .unwrap_or_default();
    if details.skip {
        return response;
    }
    let status = match fault {
        Some(Fault::Reset) => 0,
        _ => response.status().as_u16(),
    };
    let call = CallRecord {
        method,
        kind,
        path,
        query,
        status,
        grant_type: details.grant_type,
        principal: details.principal,
        target: details.target,
        bearer_fingerprint: details.bearer_fingerprint,
        issued_fingerprint: details.issued_fingerprint,
        lifetime_secs: details.lifetime_secs,
        user_project,
        permission: details.permission,
        resource: details.resource,
        fault: fault.map(|f| f.to_string()),
    };
    tracing::info!(
        method = %call.method,
        path = %call.path,
        status = call.status,
        kind = ?call.kind,
        grant_type = call.grant_type.as_deref().unwrap_or("-"),
        principal = call.principal.as_deref().unwrap_or("-"),
        target = call.target.as_deref().unwrap_or("-"),
        permission = call.permission.as_deref().unwrap_or("-"),
        bearer = call.bearer_fingerprint.as_deref().unwrap_or("-"),
        issued = call.issued_fingerprint.as_deref().unwrap_or("-"),
        fault = call.fault.as_deref().unwrap_or("-"),
        "call"
    );
    state.record(call);
    response
}

/// What a hostile endpoint that quotes its request answers (see [`Fault::Echo`]).
async fn echo(status: u16, json: bool, req: Request) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let sent = String::from_utf8_lossy(&body).into_owned();
    let pairs: Vec<(String, String)> = reqwest::Url::parse(&format!("http://echo/?{sent}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let decoded: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let map: serde_json::Map<String, serde_json::Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let escaped = serde_json::to_string(&map)
        .unwrap_or_default()
        .replace('/', "\\/");
    let text = format!(
        "ECHO authorization: {auth}; sent: {sent}; decoded: {}; json: {escaped}",
        decoded.join(" ")
    );
    if json {
        let body = serde_json::json!({"error": "invalid_request", "error_description": text});
        (code, Json(body)).into_response()
    } else {
        (code, text).into_response()
    }
}

/// An injected error reply, Google-shaped.
fn fault_status(code: u16) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (status, message) = match code.as_u16() {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => ("UNAUTHENTICATED", UNAUTHENTICATED_MESSAGE),
        403 => ("PERMISSION_DENIED", "The caller does not have permission"),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        429 => (
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute'.",
        ),
        500 => ("INTERNAL", "Internal error encountered."),
        503 => ("UNAVAILABLE", "The service is currently unavailable."),
        504 => ("DEADLINE_EXCEEDED", "The request timed out."),
        _ => ("UNKNOWN", "Unknown error."),
    };
    google_error(code, status, message)
}

/// Google's API error shape: `{"error": {"code", "message", "status"}}`.
pub(crate) fn google_error(code: StatusCode, status: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {"code": code.as_u16(), "message": message, "status": status}
    });
    (code, Json(body)).into_response()
}

async fn not_found() -> Response {
    google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found.")
}

pub(crate) const UNAUTHENTICATED_MESSAGE: &str = "Request had invalid authentication credentials. \
     Expected OAuth 2 access token, login cookie or other valid authentication credential. \
     See https://developers.google.com/identity/sign-in/web/devconsole-project.";

pub(crate) const MISSING_CREDENTIAL_MESSAGE: &str = "Request is missing required authentication \
     credential. Expected OAuth 2 access token, login cookie or other valid authentication \
     credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.";

/// Checks `Authorization: Bearer …` against the tokens the emulator issued.
/// On failure, the Google-shaped 401/403 to send back. Either way the details
/// get the bearer's fingerprint and principal.
// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
pub(crate) fn authenticate(
    state: &EmulatorState,
    headers: &HeaderMap,
    details: &mut Details,
    scopes: &[&str],
) -> Result<IssuedToken, Response> {
    let unauthenticated = |message: &str| {
        let mut r = google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
        );
        r
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthenticated(MISSING_CREDENTIAL_MESSAGE));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or("");
    if token.is_empty() {
        return Err(unauthenticated(MISSING_CREDENTIAL_MESSAGE));
    }
    details.bearer_fingerprint = Some(touchgate::secret::fingerprint(token.as_bytes()));
    let issued = state
        .valid_access_token(token)
        .ok_or_else(|| unauthenticated(UNAUTHENTICATED_MESSAGE))?;
    details.principal = Some(issued.principal.clone());
    if !issued.has_scope(scopes) {
        return Err(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Request had insufficient authentication scopes.",
        ));
    }
    Ok(issued)
}

/// RFC 3339 UTC with whole seconds, as Google writes `expireTime`.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_path() {
        assert_eq!(kind_of("/token"), CallKind::Token);
        assert_eq!(
            kind_of("/v1/projects/-/serviceAccounts/a@b:generateAccessToken"),
            CallKind::GenerateAccessToken
        );
        assert_eq!(
            kind_of("/v1/projects/p/locations/us-central1/models"),
            CallKind::Vertex
        );
        assert_eq!(kind_of("/__emulator/grants"), CallKind::Admin);
        assert_eq!(kind_of("/o/oauth2/auth"), CallKind::Authorize);
        assert_eq!(kind_of("/device/code"), CallKind::DeviceCode);
        assert_eq!(
            kind_of("/v1/projects/-/serviceAccounts/a@b:generateIdToken"),
            CallKind::GenerateIdToken
        );
        assert_eq!(kind_of("/nope"), CallKind::Other);
    }

    #[test]
    fn queries_lose_tokens() {
        assert_eq!(
            redact_query("alt=json&access_token=ya29.x&pageSize=100"),
            "alt=json&access_token=REDACTED&pageSize=100"
        );
    }
}
