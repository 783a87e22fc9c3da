//! What the emulator knows: service accounts and their keys, OAuth clients and
//! refresh tokens, issued access tokens, IAM grants (token creator, Vertex AI
//! roles, extended lifetimes), injected faults, its clock and the calls it saw.
//!
//! Tokens and secrets are kept only as SHA-256 digests; call records carry
//! fingerprints, never a token.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use touchgate_agent::clock::Clock;

/// Lifetime of tokens from the token endpoint, as Google reports it.
pub const TOKEN_EXPIRES_IN: u64 = 3599;
/// Longest `generateAccessToken` lifetime, and with the extended-lifetime flag.
pub const MAX_LIFETIME_SECS: u64 = 3600;
pub const MAX_EXTENDED_LIFETIME_SECS: u64 = 43200;
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Which API a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CallKind {
    /// OAuth `POST /token`.
    Token,
    /// IAM Credentials `…/serviceAccounts/{sa}:generateAccessToken`.
    GenerateAccessToken,
    /// Vertex AI REST.
    Vertex,
    /// `/__emulator/…` (listing the calls is not recorded).
    Admin,
    /// OAuth authorization endpoint `GET /o/oauth2/auth` (the browser's visit).
    Authorize,
    /// OAuth device authorization `POST /device/code`.
    DeviceCode,
    Other,
    /// IAM Credentials `…/serviceAccounts/{sa}:generateIdToken`.
    GenerateIdToken,
}

/// One request the emulator answered. Never holds a token, only fingerprints
/// (`touchgate::secret::fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query, with token-like parameters redacted.
    pub query: Option<String>,
    pub status: u16,
    pub kind: CallKind,
    /// `grant_type` of a token request.
    pub grant_type: Option<String>,
    /// Who made the call: the JWT's `iss`, the refresh token's user, or the
    /// principal of the bearer token.
    pub principal: Option<String>,
    /// Service account a `generateAccessToken` / `generateIdToken` call asked for.
    pub target: Option<String>,
    pub bearer_fingerprint: Option<String>,
    /// Fingerprint of the access token this call issued.
    pub issued_fingerprint: Option<String>,
    /// Lifetime of the token this call issued.
    pub lifetime_secs: Option<u64>,
    /// `x-goog-user-project` (the quota project the call was billed to).
    #[serde(default)]
    pub user_project: Option<String>,
    /// Vertex AI: the permission the call needed (`aiplatform.endpoints.predict`).
    #[serde(default)]
    pub permission: Option<String>,
    /// Vertex AI: the resource it was asked on (`projects/P/locations/L/endpoints/E`).
    #[serde(default)]
    pub resource: Option<String>,
    /// The injected fault that answered this call instead (`HTTP 503`, `reset`, `slow 2s`).
    #[serde(default)]
    pub fault: Option<String>,
}

impl CallRecord {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An access token the emulator issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub principal: String,
    pub scopes: Vec<String>,
    pub expires_at: SystemTime,
    /// Digest of the refresh token it came from, if any.
    pub(crate) from_refresh: Option<String>,
}

impl IssuedToken {
    pub fn has_scope(&self, any_of: &[&str]) -> bool {
        self.scopes.iter().any(|s| any_of.contains(&s.as_str()))
    }
}

/// A Vertex AI role. Custom roles `inference` and `training` are what a
/// project would define for a predict-only and a training service account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VertexRole {
    /// `roles/aiplatform.user`: everything here.
    User,
    /// List models and predict.
    Inference,
    /// Inference, and create custom (training) jobs.
    Training,
}

/// The Vertex AI permissions the emulator checks.
pub const MODELS_LIST: &str = "aiplatform.models.list";
pub const ENDPOINTS_PREDICT: &str = "aiplatform.endpoints.predict";
pub const CUSTOM_JOBS_CREATE: &str = "aiplatform.customJobs.create";

impl VertexRole {
    /// `roles/aiplatform.user`, `inference`, `training`.
    pub fn name(self) -> &'static str {
        match self {
            VertexRole::User => "roles/aiplatform.user",
            VertexRole::Inference => "inference",
            VertexRole::Training => "training",
        }
    }

    /// By name (also `roles/inference`, `roles/training`, `user`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().trim_start_matches("roles/") {
            "aiplatform.user" | "user" => Some(VertexRole::User),
            "inference" => Some(VertexRole::Inference),
            "training" => Some(VertexRole::Training),
            _ => None,
        }
    }

    pub fn permits(self, permission: &str) -> bool {
        match self {
            VertexRole::User => true,
            VertexRole::Training => {
                [MODELS_LIST, ENDPOINTS_PREDICT, CUSTOM_JOBS_CREATE].contains(&permission)
            }
            VertexRole::Inference => [MODELS_LIST, ENDPOINTS_PREDICT].contains(&permission),
        }
    }
}

/// What an injected fault does instead of answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Answer this HTTP status, Google-shaped (`{"error":{"code","message","status"}}`).
    Status(u16),
    /// HTTP 429 RESOURCE_EXHAUSTED with `Retry-After` (whole seconds).
    RateLimited { retry_after: Duration },
    /// Wait this long, then answer normally.
    Slow(Duration),
    /// Close the connection without answering.
    Reset,
    /// A hostile endpoint: answer `status` quoting what it was sent (the
    /// `Authorization` header and the body) three ways: as sent
    /// (URL-encoded), decoded, and JSON-escaped with `\/`. `json`: inside an
    /// OAuth error (`error_description`), else as plain text.
    Echo { status: u16, json: bool },
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Status(code) => write!(f, "HTTP {code}"),
            Fault::RateLimited { retry_after } => {
                write!(f, "HTTP 429, Retry-After {}", retry_after.as_secs())
            }
            Fault::Slow(d) => write!(f, "slow {}ms", d.as_millis()),
            Fault::Reset => f.write_str("reset"),
            Fault::Echo { status, .. } => write!(f, "HTTP {status} echoing the request"),
        }
    }
}

/// `fault` answers the next `times` calls of kind `endpoint`. Rules for the same
/// endpoint are used in the order they were injected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    pub endpoint: CallKind,
    pub fault: Fault,
    pub times: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceAccount {
    pub keys: Vec<(String, RsaPublicKey)>,
}

#[derive(Debug, Clone)]
pub(crate) struct RefreshToken {
    pub principal: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub revoked: bool,
}

#[derive(Default)]
struct Inner {
    clock_offset: Duration,
    service_accounts: HashMap<String, ServiceAccount>,
    /// client_id → digest of the client secret.
    clients: HashMap<String, String>,
    /// digest → refresh token.
    refresh_tokens: HashMap<String, RefreshToken>,
    /// digest → access token.
    access_tokens: HashMap<String, IssuedToken>,
    /// (principal, service account): principal holds roles/iam.serviceAccountTokenCreator.
    grants: HashSet<(String, String)>,
    /// principal → Vertex AI roles on the project(s).
    vertex_roles: HashMap<String, HashSet<VertexRole>>,
    /// Service accounts whose tokens may live up to 12 h.
    extended_lifetime: HashSet<String>,
    faults: Vec<FaultRule>,
    calls: Vec<CallRecord>,
}

/// The emulator's world. Cheap to share (`Arc`), locked inside.
pub struct EmulatorState {
    base_url: String,
    inner: Mutex<Inner>,
    /// Authorization codes, device grants and the browser's login (never lock
    /// `inner` while holding it).
    pub(crate) login: Mutex<super::authorize::LoginState>,
    /// Set when the server stops: slow faults give up waiting.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The key that signs ID tokens (see `idtoken.rs`), made on first use.
    pub(crate) id_key: std::sync::OnceLock<super::idtoken::IdKey>,
}

impl std::fmt::Debug for EmulatorState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmulatorState")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl EmulatorState {
    pub fn new(base_url: impl Into<String>) -> Self {
        EmulatorState {
            base_url: base_url.into(),
            inner: Mutex::new(Inner::default()),
            login: Mutex::new(Default::default()),
            stopping: tokio::sync::watch::Sender::new(false),
            id_key: std::sync::OnceLock::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking test thread must not take the emulator down with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The OAuth token endpoint, which is also the audience a JWT must name.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url)
    }

    /// The emulator's clock: the wall clock plus everything [`advance`](Self::advance)d.
    pub fn now(&self) -> SystemTime {
        SystemTime::now() + self.lock().clock_offset
    }

    pub fn advance(&self, by: Duration) {
        self.lock().clock_offset += by;
    }

    /// A [`Clock`] for the agent that follows the emulator's clock.
    pub fn clock(self: &Arc<Self>) -> Arc<dyn Clock> {
        Arc::new(EmulatorClock(Arc::clone(self)))
    }

    /// Creates the service account if new, adds a fresh RSA-2048 key to it and
    /// returns a Google-shaped key file for that key.
    pub fn add_service_account(&self, email: &str) -> String {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation");
        let pem = key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("PKCS#8 encoding of a fresh key");
        let key_id = hex::encode(random_bytes(20));
        let project_id = project_of(email);
        let client_id = numeric_id(email);
        self.lock()
            .service_accounts
            .entry(email.to_owned())
            .or_insert_with(|| ServiceAccount { keys: Vec::new() })
            .keys
            .push((key_id.clone(), key.to_public_key()));
        serde_json::to_string_pretty(&serde_json::json!({
            "type": "service_account",
            "project_id": project_id,
            "private_key_id": key_id,
            "private_key": pem.as_str(),
            "client_email": email,
            "client_id": client_id,
            "auth_uri": format!("{}/o/oauth2/auth", self.base_url),
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": format!("{}/oauth2/v1/certs", self.base_url),
            "client_x509_cert_url": format!(
                "{}/robot/v1/metadata/x509/{}",
                self.base_url,
                email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        }))
        .expect("JSON")
    }

    /// Deletes one key of a service account (as `gcloud iam service-accounts keys
    /// delete` does). Returns whether it existed.
    pub fn delete_service_account_key(&self, email: &str, key_id: &str) -> bool {
        let mut inner = self.lock();
        let Some(sa) = inner.service_accounts.get_mut(email) else {
            return false;
        };
        let before = sa.keys.len();
        sa.keys.retain(|(id, _)| id != key_id);
        sa.keys.len() != before
    }

    pub fn has_service_account(&self, email: &str) -> bool {
        self.lock().service_accounts.contains_key(email)
    }

    /// A new OAuth client and refresh token for user `principal_email` (scope
    /// cloud-platform); returns the `authorized_user` ADC file.
    pub fn add_authorized_user(&self, principal_email: &str) -> String {
        let client_id = format!(
            "{}-emu{}.apps.googleusercontent.com",
            numeric_id(principal_email),
            hex::encode(random_bytes(4))
        );
        let client_secret = format!("GOCSPX-{}", URL_SAFE_NO_PAD.encode(random_bytes(21)));
        let refresh_token = format!("1//emu.{}", URL_SAFE_NO_PAD.encode(random_bytes(48)));
        {
            let mut inner = self.lock();
            inner
                .clients
                .insert(client_id.clone(), digest(&client_secret));
            inner.refresh_tokens.insert(
                digest(&refresh_token),
                RefreshToken {
                    principal: principal_email.to_owned(),
                    client_id: client_id.clone(),
                    scopes: vec![
                        "openid".into(),
                        "https://www.googleapis.com/auth/userinfo.email".into(),
                        CLOUD_PLATFORM.into(),
                    ],
                    revoked: false,
                },
            );
        }
        serde_json::to_string_pretty(&serde_json::json!({
            "account": "",
            "client_id": client_id,
            "client_secret": client_secret,
            "refresh_token": refresh_token,
            "token_uri": self.token_url(),
            "type": "authorized_user",
            "universe_domain": "googleapis.com",
        }))
        .expect("JSON")
    }

    /// Registers a new OAuth client (a "Desktop app" client of the user's own
    /// project); returns `(client_id, client_secret)`. See
    /// [`client_secret_json`](Self::client_secret_json) for its download file.
    pub fn add_oauth_client(&self) -> (String, String) {
        let client_id = format!(
            "{}-emu{}.apps.googleusercontent.com",
            numeric_id(&hex::encode(random_bytes(8))),
            hex::encode(random_bytes(4))
        );
        let client_secret = format!("GOCSPX-{}", URL_SAFE_NO_PAD.encode(random_bytes(21)));
        self.lock()
            .clients
            .insert(client_id.clone(), digest(&client_secret));
        (client_id, client_secret)
    }

    /// Stores a new refresh token of `principal` for `client_id` and returns it.
    pub(crate) fn new_refresh_token(
        &self,
        principal: &str,
        client_id: &str,
        scopes: Vec<String>,
    ) -> (String, String) {
        let refresh_token = format!("1//emu.{}", URL_SAFE_NO_PAD.encode(random_bytes(48)));
        let d = digest(&refresh_token);
        self.lock().refresh_tokens.insert(
            d.clone(),
            RefreshToken {
                principal: principal.to_owned(),
                client_id: client_id.to_owned(),
                scopes,
                revoked: false,
            },
        );
        (refresh_token, d)
    }

    /// Revokes a refresh token and every access token minted from it. Returns
    /// whether the token was known and live.
    pub fn revoke_refresh_token(&self, refresh_token: &str) -> bool {
        let d = digest(refresh_token);
        let mut inner = self.lock();
        let Some(rt) = inner.refresh_tokens.get_mut(&d) else {
            return false;
        };
        let was_live = !rt.revoked;
        rt.revoked = true;
        inner
            .access_tokens
            .retain(|_, t| t.from_refresh.as_deref() != Some(d.as_str()));
        was_live
    }

    /// IAM binding: `principal` (user or service account email) gets
    /// roles/iam.serviceAccountTokenCreator on `target_sa`.
    pub fn grant_token_creator(&self, principal: &str, target_sa: &str) {
        self.lock()
            .grants
            .insert((principal.to_owned(), target_sa.to_owned()));
    }

    pub fn revoke_token_creator(&self, principal: &str, target_sa: &str) {
        self.lock()
            .grants
            .remove(&(principal.to_owned(), target_sa.to_owned()));
    }

    pub fn has_token_creator(&self, principal: &str, target_sa: &str) -> bool {
        self.lock()
            .grants
            .contains(&(principal.to_owned(), target_sa.to_owned()))
    }

    /// `principal` (user or service account) gets a Vertex AI role. A principal
    /// without any role is refused every Vertex call, as at Google.
    pub fn grant_vertex(&self, principal: &str, role: VertexRole) {
        self.lock()
            .vertex_roles
            .entry(principal.to_owned())
            .or_default()
            .insert(role);
    }

    pub fn revoke_vertex(&self, principal: &str, role: VertexRole) {
        if let Some(roles) = self.lock().vertex_roles.get_mut(principal) {
            roles.remove(&role);
        }
    }

    /// Whether one of `principal`'s Vertex roles grants `permission`.
    pub fn vertex_permits(&self, principal: &str, permission: &str) -> bool {
        self.lock()
            .vertex_roles
            .get(principal)
            .is_some_and(|roles| roles.iter().any(|r| r.permits(permission)))
    }

    /// Tokens of `service_account` may live up to 12 h (the org policy
    /// constraints/iam.allowServiceAccountCredentialLifetimeExtension lists it).
    pub fn allow_extended_lifetime(&self, service_account: &str) {
        self.lock()
            .extended_lifetime
            .insert(service_account.to_owned());
    }

    /// The longest lifetime `generateAccessToken` grants for `service_account`.
    pub fn max_lifetime_secs(&self, service_account: &str) -> u64 {
        if self.lock().extended_lifetime.contains(service_account) {
            MAX_EXTENDED_LIFETIME_SECS
        } else {
            MAX_LIFETIME_SECS
        }
    }

    /// Adds a fault rule (after any already waiting).
    pub fn inject(&self, rule: FaultRule) {
        if rule.times > 0 {
            self.lock().faults.push(rule);
        }
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// The fault that answers the next call of `kind`, if any; uses it up.
    pub(crate) fn take_fault(&self, kind: CallKind) -> Option<Fault> {
        let mut inner = self.lock();
        let i = inner.faults.iter().position(|r| r.endpoint == kind)?;
        let rule = &mut inner.faults[i];
        rule.times -= 1;
        let fault = rule.fault.clone();
        if rule.times == 0 {
            inner.faults.remove(i);
        }
        Some(fault)
    }

    /// Fault rules not used up yet.
    pub fn pending_faults(&self) -> Vec<FaultRule> {
        self.lock().faults.clone()
    }

    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves when the server is stopping.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.stopping.subscribe();
        let _ = rx.wait_for(|stopping| *stopping).await;
    }

    /// Issues an access token (`ya29.emu.…`) for `principal`, valid for `lifetime`
    /// by the emulator clock. Returns the token and its expiry.
    pub fn issue_access_token(
        &self,
        principal: &str,
        scopes: Vec<String>,
        lifetime: Duration,
    ) -> (String, SystemTime) {
        self.issue(principal, scopes, lifetime, None)
    }

    pub(crate) fn issue(
        &self,
        principal: &str,
        scopes: Vec<String>,
        lifetime: Duration,
        from_refresh: Option<String>,
    ) -> (String, SystemTime) {
        let token = format!("ya29.emu.{}", URL_SAFE_NO_PAD.encode(random_bytes(36)));
        let expires_at = self.now() + lifetime;
        self.lock().access_tokens.insert(
            digest(&token),
            IssuedToken {
                principal: principal.to_owned(),
                scopes,
                expires_at,
                from_refresh,
            },
        );
        (token, expires_at)
    }

    /// The token if the emulator issued it and it has not expired by its clock.
    pub fn valid_access_token(&self, token: &str) -> Option<IssuedToken> {
        let now = self.now();
        let inner = self.lock();
        inner
            .access_tokens
            .get(&digest(token))
            .filter(|t| t.expires_at > now)
            .cloned()
    }

    pub(crate) fn service_account_keys(&self, email: &str) -> Option<Vec<(String, RsaPublicKey)>> {
        self.lock()
            .service_accounts
            .get(email)
            .map(|sa| sa.keys.clone())
    }

    pub(crate) fn client_secret_matches(&self, client_id: &str, secret: &str) -> Option<bool> {
        self.lock()
            .clients
            .get(client_id)
            .map(|d| *d == digest(secret))
    }

    pub(crate) fn refresh_token(&self, token: &str) -> Option<(String, RefreshToken)> {
        let d = digest(token);
        self.lock()
            .refresh_tokens
            .get(&d)
            .cloned()
            .map(|rt| (d, rt))
    }

    pub(crate) fn record(&self, call: CallRecord) {
        self.lock().calls.push(call);
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// The calls of `kind`, oldest first, whatever their outcome.
    pub fn calls_of(&self, kind: CallKind) -> Vec<CallRecord> {
        self.calls()
            .into_iter()
            .filter(|c| c.kind == kind)
            .collect()
    }

    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Number of calls of `kind`, whatever their outcome.
    pub fn count(&self, kind: CallKind) -> usize {
        self.lock().calls.iter().filter(|c| c.kind == kind).count()
    }

    /// Number of successful (2xx) calls of `kind`: for `Token` and
    /// `GenerateAccessToken`, the number of tokens minted.
    pub fn count_ok(&self, kind: CallKind) -> usize {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.kind == kind && c.ok())
            .count()
    }
}

/// The agent's [`Clock`] reading the emulator's clock.
struct EmulatorClock(Arc<EmulatorState>);

impl Clock for EmulatorClock {
    fn now(&self) -> SystemTime {
        self.0.now()
    }
}

/// OAuth scopes the emulator knows (Google refuses scopes it does not know).
const KNOWN_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/cloud-platform.read-only",
    "https://www.googleapis.com/auth/iam",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/compute",
    "https://www.googleapis.com/auth/compute.readonly",
    "https://www.googleapis.com/auth/bigquery",
    "https://www.googleapis.com/auth/sqlservice.admin",
    // gcloud's default scopes (googlecloudsdk/core/config.py CLOUDSDK_SCOPES).
    "https://www.googleapis.com/auth/appengine.admin",
    "https://www.googleapis.com/auth/sqlservice.login",
    "https://www.googleapis.com/auth/accounts.reauth",
    "openid",
    "email",
    "profile",
];

/// Whether Google would accept `scope` as an OAuth scope.
pub fn known_scope(scope: &str) -> bool {
    KNOWN_SCOPES.contains(&scope)
}

/// SHA-256 hex: how tokens and secrets are stored.
pub(crate) fn digest(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut b);
    b
}

/// `NAME@PROJECT.iam.gserviceaccount.com` → `PROJECT`.
fn project_of(email: &str) -> String {
    email
        .split_once('@')
        .and_then(|(_, domain)| domain.strip_suffix(".iam.gserviceaccount.com"))
        .unwrap_or("emulator-project")
        .to_owned()
}

/// A stable 21-digit id, like Google's numeric client ids.
pub(crate) fn numeric_id(seed: &str) -> String {
    let d = Sha256::digest(seed.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    format!("1{:020}", n)
}
