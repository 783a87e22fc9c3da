//! The real upstream: Google's OAuth token endpoint and the IAM Credentials API,
//! as plain REST over reqwest. Every endpoint is configurable ([`Endpoints`], or
//! the credential file's `token_uri` / impersonation URL), so the emulator in
//! `tests/` can stand in for Google.
//!
//! 1. Base token: a service account signs an RS256 JWT (jwt-bearer grant); an
//!    `authorized_user` credential uses its refresh token (refresh_token grant);
//!    an `impersonated_service_account` file uses its source credential.
//! 2. With `impersonate` (or an impersonation file), the base token (scope
//!    cloud-platform) buys a token for the service account from
//!    `generateAccessToken`, with the asked lifetime and delegates, billed to the
//!    quota project if there is one (`x-goog-user-project`).
//! 3. ID tokens take the same steps with `generateIdToken`, or the grant's own
//!    `id_token` without impersonation (see `id_token`).
//!
//! Transient failures (network, HTTP 5xx, 429) are retried with exponential
//! backoff and full jitter, `Retry-After` honoured, under one deadline per mint
//! ([`Retry`]). Errors are one line, say what to do, and never carry a token, an
//! assertion, a secret or a success body. The text of an error reply is quoted
//! only from a Google host ([`Endpoints::is_google`]), scrubbed of what was sent
//! in every encoding ([`touchgate::secret::scrub`]); from any other host only
//! its error code and status, so a hostile endpoint cannot write into the
//! client's error or the audit log.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderValue, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, StatusCode, Url};
use secrecy::ExposeSecret;
use serde_json::Value;
use touchgate::text::one_line;
use touchgate::Secret;
use zeroize::Zeroizing;

use super::credential::{AuthorizedUser, ServiceAccountKey, UpstreamCredential};
use super::retry::{parse_retry_after, Retry, Sleeper, TokioSleeper};
use super::{
    attempts_text, jwt, BoxFuture, Endpoints, IdTokenRequest, MintRequest, MintedToken, Upstream,
    UpstreamError, CLOUD_PLATFORM,
};
use crate::clock::Clock;

mod id_token;

/// Longest a single request may take (the mint's deadline usually ends it sooner).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of establishing the connection (TCP + TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The role a principal needs on a service account to impersonate it.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// The header that bills a call to a quota project.
pub const USER_PROJECT_HEADER: &str = "x-goog-user-project";
/// Longest `generateAccessToken` lifetime without the extended-lifetime org policy.
pub const MAX_STANDARD_LIFETIME_SECS: u64 = 3600;
/// Replies larger than this are refused (a token reply is well under 4 KiB).
const MAX_REPLY_BYTES: usize = 1 << 20;
/// A request that timed out this close to the deadline ran out of it.
const DEADLINE_SLACK: Duration = Duration::from_millis(20);
/// Google's messages are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;
const SCOPES_HINT: &str = "fix scopes in the profile (full URLs such as \
                           https://www.googleapis.com/auth/cloud-platform)";

/// Google (or an emulator), over HTTPS.
pub struct GoogleUpstream {
    endpoints: Endpoints,
    retry: Retry,
    clock: Arc<dyn Clock>,
    sleeper: Arc<dyn Sleeper>,
    /// The client, or why it could not be built (reported at mint time).
    http: Result<Client, String>,
}

impl fmt::Debug for GoogleUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleUpstream")
            .field("endpoints", &self.endpoints)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl GoogleUpstream {
    /// Retries as `endpoints` says (`max_attempts`, `deadline`), waiting for real.
    pub fn new(endpoints: Endpoints, clock: Arc<dyn Clock>) -> Self {
        let http = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("touchgate/", env!("CARGO_PKG_VERSION")))
            // Google's endpoints do not redirect; never carry credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| error_chain(&e));
        GoogleUpstream {
            retry: endpoints.retry(),
            endpoints,
            clock,
            sleeper: Arc::new(TokioSleeper),
            http,
        }
    }

    /// Waits between attempts with `sleeper` (tests: a recording one).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// Replaces the retry policy taken from the endpoints.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = Retry {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        };
        self
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// The token endpoint used for `credential`: the configured one if set, else
    /// the credential file's `token_uri`, else the universe's.
    pub fn token_uri_for(&self, credential: &UpstreamCredential) -> String {
        self.endpoints
            .token_uri
            .clone()
            .or_else(|| credential.token_uri().map(str::to_owned))
            .unwrap_or_else(|| self.endpoints.default_token_uri())
    }

    /// The IAM Credentials base URL used for `credential`: the configured one if
    /// set, else the one an impersonation file points at, else the universe's.
    pub fn iam_credentials_for(&self, credential: &UpstreamCredential) -> String {
        match (&self.endpoints.iam_credentials, credential) {
            (None, UpstreamCredential::Impersonated(i)) => {
                i.iam_credentials_base().trim_end_matches('/').to_owned()
            }
            _ => self.endpoints.iam_credentials_url(),
        }
    }

    async fn mint_inner(
        &self,
        credential: &UpstreamCredential,
        request: &MintRequest,
    ) -> Result<MintedToken, UpstreamError> {
        self.endpoints.check()?;
        let budget = Budget::start(self.retry.deadline);
        let scopes = if request.scopes.is_empty() {
            vec![CLOUD_PLATFORM.to_owned()]
        } else {
            request.scopes.clone()
        };
        // Refuse a bad target, delegate, endpoint or quota project before minting anything.
        let plan = self.impersonation_plan(credential, request, "generateAccessToken")?;
        let quota_project = match &request.quota_project {
            Some(p) => Some(p.as_str()),
            None => credential.quota_project(),
        };
        let quota_header = quota_project.map(check_quota_project).transpose()?;
        let base_scopes = match plan {
            Some(_) => vec![CLOUD_PLATFORM.to_owned()],
            None => scopes.clone(),
        };
        let source = match credential {
            UpstreamCredential::Impersonated(i) => &*i.source,
            other => other,
        };
        let token_uri = self.token_uri_for(source);
        let base = match source {
            UpstreamCredential::ServiceAccount(key) => {
                self.service_account_token(key, &token_uri, &base_scopes, &budget)
                    .await?
            }
            UpstreamCredential::AuthorizedUser(user) => {
                self.refresh_token_grant(user, &token_uri, &budget).await?
            }
            UpstreamCredential::Impersonated(_) => {
                return Err(UpstreamError::Protocol(
                    "an impersonated_service_account credential cannot be the source of \
                     another: import its source credential instead"
                        .into(),
                ))
            }
        };
        match plan {
            None => Ok(MintedToken {
                access_token: Secret::new(base.token.as_str()),
                expires_at: base.expires_at,
                principal: credential.principal(),
            }),
            Some(plan) => {
                self.generate_access_token(
                    source,
                    &base.token,
                    &plan,
                    &scopes,
                    request.lifetime,
                    quota_header,
                    &budget,
                )
                .await
            }
        }
        // `base.token` (Zeroizing) is wiped here.
    }

    /// Whom `method` (`generateAccessToken`, `generateIdToken`) is asked for,
    /// through whom, and where.
    fn impersonation_plan(
        &self,
        credential: &UpstreamCredential,
        request: &MintRequest,
        method: &str,
    ) -> Result<Option<Plan>, UpstreamError> {
        let (target, delegates) = match (credential, &request.impersonate) {
            // The file's account is a hop on the way to the profile's.
            (UpstreamCredential::Impersonated(i), Some(profile_sa)) => {
                let mut chain = i.delegates.clone();
                chain.push(i.target.clone());
                chain.extend(request.delegates.iter().map(|d| plain_account(d)));
                (profile_sa.clone(), chain)
            }
            (UpstreamCredential::Impersonated(i), None) => (i.target.clone(), i.delegates.clone()),
            (_, Some(target)) => (
                target.clone(),
                request.delegates.iter().map(|d| plain_account(d)).collect(),
            ),
            (_, None) => return Ok(None),
        };
        check_account(&target, "service account to impersonate")?;
        for d in &delegates {
            check_account(d, "delegate")?;
        }
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{target}:{method}",
            self.iam_credentials_for(credential)
        );
        check_url(&url)?;
        Ok(Some(Plan {
            target,
            delegates,
            url,
        }))
    }

    /// jwt-bearer grant with an RS256 assertion signed by the key file's key.
    async fn service_account_token(
        &self,
        key: &ServiceAccountKey,
        token_uri: &str,
        scopes: &[String],
        budget: &Budget,
    ) -> Result<BaseToken, UpstreamError> {
        check_url(token_uri)?;
        let signing_key = key
            .signing_key()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let claims = jwt::Claims::new(&key.client_email, scopes, token_uri, self.clock.unix_now());
        let assertion = jwt::sign(&signing_key, &key.private_key_id, &claims)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        drop(signing_key);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let who = Who::ServiceAccount {
            email: &key.client_email,
            key_id: &key.private_key_id,
        };
        self.token_grant(token_uri, &form, who, &[assertion.as_str()], budget)
            .await
        // `assertion` (Zeroizing) is wiped here.
    }

    /// refresh_token grant of an `authorized_user` credential.
    async fn refresh_token_grant(
        &self,
        user: &AuthorizedUser,
        token_uri: &str,
        budget: &Budget,
    ) -> Result<BaseToken, UpstreamError> {
        check_url(token_uri)?;
        let secret = user.client_secret.expose_secret();
        let refresh = user.refresh_token.expose_secret();
        let form = [
            ("grant_type", "refresh_token"),
            ("client_id", user.client_id.as_str()),
            ("client_secret", secret),
            ("refresh_token", refresh),
        ];
        let who = Who::User {
            client_id: &user.client_id,
        };
        self.token_grant(token_uri, &form, who, &[secret, refresh], budget)
            .await
    }

    async fn token_grant(
        &self,
        url: &str,
        form: &[(&str, &str)],
        who: Who<'_>,
        secrets: &[&str],
        budget: &Budget,
    ) -> Result<BaseToken, UpstreamError> {
        let sent_at = self.clock.now();
        let reply = self
            .call(Api::Token, url, budget, |http| http.post(url).form(form))
            .await?;
        if !reply.status.is_success() {
            let shown = Shown::for_url(&self.endpoints, url);
            return Err(token_error(
                url,
                reply.status,
                &reply.body,
                &who,
                secrets,
                &shown,
            ));
        }
        parse_token_reply(url, reply.status, &reply.body, sent_at)
    }

    #[allow(clippy::too_many_arguments)]
    async fn generate_access_token(
        &self,
        source: &UpstreamCredential,
        base_token: &Zeroizing<String>,
        plan: &Plan,
        scopes: &[String],
        lifetime: Duration,
        quota_header: Option<HeaderValue>,
        budget: &Budget,
    ) -> Result<MintedToken, UpstreamError> {
        let lifetime = lifetime.as_secs();
        let delegates: Vec<String> = plan
            .delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect();
        let body = serde_json::json!({
            "scope": scopes,
            "lifetime": format!("{lifetime}s"),
            "delegates": delegates,
        });
        let url = plan.url.as_str();
        let reply = self
            .call(Api::Iam, url, budget, |http| {
                let mut b = http.post(url).bearer_auth(base_token.as_str()).json(&body);
                if let Some(q) = &quota_header {
                    b = b.header(USER_PROJECT_HEADER, q.clone());
                }
                b
            })
            .await?;
        let status = reply.status;
        if !status.is_success() {
            return Err(impersonation_error(
                source,
                plan,
                lifetime,
                status,
                &reply.body,
                &[base_token.as_str()],
                &Shown::for_url(&self.endpoints, url),
            ));
        }
        let target = &plan.target;
        let what = format!("generateAccessToken for {target}");
        let reply: GenerateReply = serde_json::from_slice(&reply.body)
            .map_err(|_| not_json(&what, url, status, "accessToken and expireTime"))?;
        let access_token = reply
            .access_token
            .ok_or_else(|| missing_field(&what, url, status, "accessToken"))?;
        let expire_time = match reply.expire_time {
            Some(Value::String(s)) => s,
            _ => return Err(missing_field(&what, url, status, "expireTime")),
        };
        let expires_at = time::OffsetDateTime::parse(
            &expire_time,
            &time::format_description::well_known::Rfc3339,
        )
        .map(SystemTime::from)
        .map_err(|_| {
            UpstreamError::Protocol(format!(
                "{what} at {url} answered with an expireTime that is not an RFC 3339 time: \
                 is iam_credentials set to the IAM Credentials API?"
            ))
        })?;
        Ok(MintedToken {
            access_token,
            expires_at,
            principal: target.clone(),
        })
    }

    /// Sends what `build` makes, again on transient failures (network, 5xx, 429)
    /// while attempts and the deadline last. Any other reply is returned as is.
    async fn call(
        &self,
        api: Api,
        url: &str,
        budget: &Budget,
        build: impl Fn(&Client) -> RequestBuilder,
    ) -> Result<Reply, UpstreamError> {
        let http = self.client()?;
        let mut attempts = 0u32;
        let mut last: Option<Failure> = None;
        loop {
            let remaining = budget.remaining();
            if remaining.is_zero() {
                return Err(deadline_error(api, url, budget.deadline, attempts, &last));
            }
            attempts += 1;
            let builder = build(http).timeout(remaining.min(REQUEST_TIMEOUT));
            let failure = match send(url, builder, self.clock.unix_now()).await {
                Ok(reply) if transient_status(reply.status) => Failure::Status {
                    code: reply.status.as_u16(),
                    retry_after: reply.retry_after,
                },
                Ok(reply) => return Ok(reply),
                Err(SendError::Fatal(e)) => return Err(e),
                Err(SendError::Network { timed_out, .. })
                    if timed_out && budget.remaining() <= DEADLINE_SLACK =>
                {
                    return Err(deadline_error(api, url, budget.deadline, attempts, &last));
                }
                Err(SendError::Network { reason, .. }) => Failure::Network(reason),
            };
            if attempts >= self.retry.max_attempts {
                return Err(exhausted(api, url, &failure, attempts, None));
            }
            let (delay, asked) = match &failure {
                Failure::Status {
                    retry_after: Some(d),
                    ..
                } => (*d, true),
                _ => (self.retry.backoff(attempts + 1), false),
            };
            if delay >= budget.remaining() {
                let beyond = asked.then_some((delay, budget.deadline));
                return Err(exhausted(api, url, &failure, attempts, beyond));
            }
            tracing::warn!(
                endpoint = url,
                attempt = attempts,
                failure = %failure,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Google failed transiently; trying again"
            );
            last = Some(failure);
            self.sleeper.sleep(delay).await;
        }
    }

    fn client(&self) -> Result<&Client, UpstreamError> {
        self.http.as_ref().map_err(|e| {
            UpstreamError::Protocol(format!(
                "cannot set up the HTTPS client ({e}): check the system's CA certificates"
            ))
        })
    }
}

impl Upstream for GoogleUpstream {
    fn mint<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a MintRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>> {
        Box::pin(self.mint_inner(credential, request))
    }

    fn mint_id_token<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a IdTokenRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>> {
        Box::pin(self.mint_id_token_inner(credential, request))
    }
}

/// One `generateAccessToken` call: for `target`, through `delegates` (emails), at `url`.
struct Plan {
    target: String,
    delegates: Vec<String>,
    url: String,
}

/// The time one mint may still take.
struct Budget {
    started: tokio::time::Instant,
    deadline: Duration,
}

impl Budget {
    fn start(deadline: Duration) -> Self {
        Budget {
            started: tokio::time::Instant::now(),
            deadline,
        }
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_sub(self.started.elapsed())
    }
}

/// Which Google API a call went to, for messages.
#[derive(Debug, Clone, Copy)]
enum Api {
    Token,
    Iam,
}

impl Api {
    fn name(self) -> &'static str {
        match self {
            Api::Token => "Google's token endpoint",
            Api::Iam => "Google's IAM Credentials API",
        }
    }
}

/// A transient failure of one attempt.
enum Failure {
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    Network(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status { code, .. } => write!(f, "HTTP {code}"),
            Failure::Network(reason) => f.write_str(reason),
        }
    }
}

/// 5xx (but 501, which will not change) and 429 are worth another try.
fn transient_status(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || (status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED)
}

/// Out of attempts (or of time for the next wait: `beyond` = what Google asked
/// to wait, and the deadline).
fn exhausted(
    api: Api,
    url: &str,
    failure: &Failure,
    attempts: u32,
    beyond: Option<(Duration, Duration)>,
) -> UpstreamError {
    match failure {
        Failure::Network(reason) => UpstreamError::Network {
            url: url.to_owned(),
            reason: reason.clone(),
            attempts,
        },
        Failure::Status { code, .. } => {
            let wait = match beyond {
                Some((asked, deadline)) => format!(
                    "; it asked to wait {}, beyond the {} deadline",
                    secs_text(asked),
                    secs_text(deadline)
                ),
                None => String::new(),
            };
            UpstreamError::Unavailable {
                message: format!(
                    "{} {url} kept failing (HTTP {code} after {}{wait}): try again later",
                    api.name(),
                    attempts_text(attempts)
                ),
                attempts,
            }
        }
    }
}

fn deadline_error(
    api: Api,
    url: &str,
    deadline: Duration,
    attempts: u32,
    last: &Option<Failure>,
) -> UpstreamError {
    let last = match last {
        Some(f) if attempts > 1 => format!("; before that: {f}"),
        _ => String::new(),
    };
    UpstreamError::Unavailable {
        message: format!(
            "{} {url} did not answer within the {} deadline ({}{last}): try again later, or \
             raise deadline in the [google] config",
            api.name(),
            secs_text(deadline),
            attempts_text(attempts)
        ),
        attempts,
    }
}

/// `20s`, `1.5s`.
fn secs_text(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `projects/-/serviceAccounts/EMAIL` → `EMAIL`.
fn plain_account(d: &str) -> String {
    d.strip_prefix("projects/-/serviceAccounts/")
        .unwrap_or(d)
        .to_owned()
}

/// A quota project id, as a header value.
fn check_quota_project(project: &str) -> Result<HeaderValue, UpstreamError> {
    let ok = !project.is_empty()
        && project.len() <= 100
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c));
    ok.then(|| HeaderValue::from_str(project).ok())
        .flatten()
        .ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "the quota project {:?} is not a project id: fix quota_project in the profile \
                 or quota_project_id in the credential file",
                one_line(project, 100)
            ))
        })
}

struct BaseToken {
    token: Zeroizing<String>,
    expires_at: SystemTime,
}

/// Who asked the token endpoint, for error messages.
enum Who<'a> {
    ServiceAccount { email: &'a str, key_id: &'a str },
    User { client_id: &'a str },
}

#[derive(serde::Deserialize)]
struct TokenReply {
    access_token: Option<Secret>,
    expires_in: Option<Value>,
    token_type: Option<Value>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateReply {
    access_token: Option<Secret>,
    expire_time: Option<Value>,
}

/// A whole reply, its body in memory that is wiped on drop.
struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Zeroizing<Vec<u8>>,
}

enum SendError {
    /// Not worth another try (a bad URL, a huge reply).
    Fatal(UpstreamError),
    Network {
        reason: String,
        timed_out: bool,
    },
}

/// Sends, and reads the whole reply (capped).
async fn send(url: &str, builder: RequestBuilder, now_unix: u64) -> Result<Reply, SendError> {
    let mut response = builder.send().await.map_err(|e| network_error(url, &e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, now_unix));
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(url, &e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(SendError::Fatal(UpstreamError::Protocol(format!(
                "{url} answered HTTP {status} with more than {MAX_REPLY_BYTES} bytes: is this \
                 a Google endpoint?"
            ))));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

fn parse_token_reply(
    url: &str,
    status: StatusCode,
    body: &[u8],
    sent_at: SystemTime,
) -> Result<BaseToken, UpstreamError> {
    let what = "the token endpoint";
    let reply: TokenReply = serde_json::from_slice(body)
        .map_err(|_| not_json(what, url, status, "access_token, expires_in and token_type"))?;
    let token = reply
        .access_token
        .ok_or_else(|| missing_field(what, url, status, "access_token"))?;
    let expires_in = match &reply.expires_in {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| missing_field(what, url, status, "expires_in"))?;
    match &reply.token_type {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => {
            return Err(UpstreamError::Protocol(format!(
                "{what} at {url} answered with a token_type other than Bearer: touchgate only \
                 handles Bearer tokens"
            )))
        }
    }
    let expires_at = sent_at
        .checked_add(Duration::from_secs(expires_in))
        .ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "{what} at {url} answered with expires_in {expires_in}, past the end of the \
                 clock: is this a Google endpoint?"
            ))
        })?;
    Ok(BaseToken {
        token: Zeroizing::new(token.expose().to_owned()),
        expires_at,
    })
}

fn not_json(what: &str, url: &str, status: StatusCode, fields: &str) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "{what} at {url} answered HTTP {status} but not with a JSON object of {fields}: is the \
         endpoint configured right?"
    ))
}

fn missing_field(what: &str, url: &str, status: StatusCode, field: &str) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "{what} at {url} answered HTTP {status} without a valid \"{field}\": is the endpoint \
         configured right?"
    ))
}

/// The error shapes Google answers with.
enum ErrorBody {
    /// OAuth: `{"error": "invalid_grant", "error_description": "..."}`.
    OAuth {
        error: String,
        description: Option<String>,
    },
    /// APIs: `{"error": {"code": 403, "message": "...", "status": "PERMISSION_DENIED"}}`.
    Api {
        code: Option<u64>,
        status: Option<String>,
        message: Option<String>,
    },
}

fn parse_error_body(body: &[u8]) -> Option<ErrorBody> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text = |v: &Value| v.as_str().map(str::to_owned);
    match v.get("error")? {
        Value::String(error) => Some(ErrorBody::OAuth {
            error: error.clone(),
            description: v.get("error_description").and_then(text),
        }),
        e @ Value::Object(_) => Some(ErrorBody::Api {
            code: e.get("code").and_then(Value::as_u64),
            status: e.get("status").and_then(text),
            message: e.get("message").and_then(text),
        }),
        _ => None,
    }
}

/// Whether the text of an error reply may be shown (and audited).
enum Shown {
    /// A Google host ([`Endpoints::is_google`]): shown, without the secrets sent.
    Scrubbed,
    /// Another host (named here): only its error code and status.
    Not(String),
}

impl Shown {
    fn for_url(endpoints: &Endpoints, url: &str) -> Shown {
        if endpoints.is_google(url) {
            return Shown::Scrubbed;
        }
        let host = Url::parse(url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                })
            })
            .unwrap_or_else(|| "the endpoint".to_owned());
        Shown::Not(one_line(&host, 100))
    }
}

/// An error code or status name (`invalid_grant`, `PERMISSION_DENIED`): the
/// only words of another host's reply that are shown.
fn code_word(s: &str) -> Option<&str> {
    let ok =
        !s.is_empty() && s.len() <= 40 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(s)
}

/// `status: text` of an error reply, in one clean line without secrets; only
/// the error code and status when the reply is not from a Google host.
fn error_detail(status: StatusCode, body: &[u8], secrets: &[&str], shown: &Shown) -> String {
    if let Shown::Not(host) = shown {
        let code = match parse_error_body(body) {
            Some(ErrorBody::OAuth { error, .. }) => code_word(&error).map(str::to_owned),
            Some(ErrorBody::Api {
                code, status: s, ..
            }) => {
                let code = code.unwrap_or(u64::from(status.as_u16()));
                Some(match s.as_deref().and_then(code_word) {
                    Some(s) => format!("{code} {s}"),
                    None => code.to_string(),
                })
            }
            None => None,
        };
        let code = code.unwrap_or_else(|| status.to_string());
        return format!("{code} (the reply's text is not shown: {host} is not a Google host)");
    }
    let raw = match parse_error_body(body) {
        Some(ErrorBody::OAuth { error, description }) => match description {
            Some(d) if !d.is_empty() => format!("{error}: {d}"),
            _ => error,
        },
        Some(ErrorBody::Api {
            code,
            status: s,
            message,
        }) => {
            let code = code.unwrap_or(u64::from(status.as_u16()));
            let s = s.unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_owned());
            match message {
                Some(m) if !m.is_empty() => format!("{code} {s}: {m}"),
                _ => format!("{code} {s}"),
            }
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {text}")
            }
        }
    };
    // Flattened before the scrub as well as after: control characters or
    // extra whitespace inside a quoted secret must not hide it from the scrub
    // and then be removed, joining it back together.
    let flat = one_line(&raw, usize::MAX);
    one_line(&touchgate::secret::scrub(&flat, secrets), MAX_MESSAGE_CHARS)
}

/// The one-line detail of an error reply with HTTP `status` and `body`, as
/// the agent reports it: from a Google host (`other_host` `None`) scrubbed of
/// `secrets`, from another host only its error code and status. (The entry
/// point of the `error_body` fuzz target.)
pub fn error_reply_detail(
    status: u16,
    body: &[u8],
    secrets: &[&str],
    other_host: Option<&str>,
) -> String {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let shown = match other_host {
        None => Shown::Scrubbed,
        Some(host) => Shown::Not(one_line(host, 100)),
    };
    error_detail(status, body, secrets, &shown)
}

fn token_error(
    url: &str,
    status: StatusCode,
    body: &[u8],
    who: &Who<'_>,
    secrets: &[&str],
    shown: &Shown,
) -> UpstreamError {
    let detail = error_detail(status, body, secrets, shown);
    let (oauth_error, description) = match parse_error_body(body) {
        Some(ErrorBody::OAuth { error, description }) => (error, description.unwrap_or_default()),
        _ => (String::new(), String::new()),
    };
    // Google: "Invalid JWT: Token must be a short-lived token (60 minutes) and in a
    // reasonable timeframe. Check your iat and exp values in the JWT claim."
    let clock = description.contains("iat") || description.contains("timeframe");
    let msg = match (who, oauth_error.as_str()) {
        (Who::User { .. }, "invalid_grant") => format!(
            "Google refused the refresh token ({detail}): it was revoked or has expired; run \
             touchgate login again, or touchgate import a fresh ADC file"
        ),
        (Who::User { client_id }, "invalid_client" | "unauthorized_client") => format!(
            "Google refused OAuth client {client_id} ({detail}): the client was deleted or its \
             secret changed; run touchgate login again, or touchgate import a fresh ADC file"
        ),
        (Who::ServiceAccount { email, key_id }, "invalid_grant") if clock => format!(
            "Google refused the signed assertion of service account {email} (key {key_id}) \
             ({detail}): this machine's clock is off; check the system clock (NTP) and try \
             again"
        ),
        (Who::ServiceAccount { email, key_id }, "invalid_grant") => format!(
            "Google refused the signed assertion of service account {email} (key {key_id}) \
             ({detail}): the key or the account may be deleted or disabled; create a new key \
             and touchgate import it"
        ),
        (who, "invalid_scope") => format!(
            "Google refused the scopes asked for {} ({detail}): {SCOPES_HINT}",
            who.describe()
        ),
        (Who::ServiceAccount { email, .. }, "unauthorized_client" | "invalid_client") => format!(
            "Google refused service account {email} ({detail}): the account may be deleted or \
             disabled; check it in the Cloud console or import a key of a live account"
        ),
        _ if status.is_server_error() => {
            format!("Google's token endpoint {url} failed (HTTP {detail}): try again later")
        }
        (who, "") => format!(
            "the token endpoint {url} refused {} (HTTP {detail}): check token_uri in the \
             config or the credential file",
            who.describe()
        ),
        (who, _) => format!(
            "Google's token endpoint {url} refused {} ({detail}): import a fresh credential \
             with touchgate import",
            who.describe()
        ),
    };
    UpstreamError::Rejected(msg)
}

impl Who<'_> {
    fn describe(&self) -> String {
        match self {
            Who::ServiceAccount { email, .. } => format!("service account {email}"),
            Who::User { client_id } => format!("the user credential (client {client_id})"),
        }
    }
}

/// Who calls IAM Credentials, as the grant to make names them.
fn caller_name(source: &UpstreamCredential) -> String {
    match source {
        UpstreamCredential::ServiceAccount(k) => k.client_email.clone(),
        UpstreamCredential::AuthorizedUser(_) => "your Google user account".to_owned(),
        UpstreamCredential::Impersonated(i) => i.target.clone(),
    }
}

fn impersonation_error(
    source: &UpstreamCredential,
    plan: &Plan,
    lifetime: u64,
    status: StatusCode,
    body: &[u8],
    secrets: &[&str],
    shown: &Shown,
) -> UpstreamError {
    let detail = error_detail(status, body, secrets, shown);
    let principal = caller_name(source);
    let target = &plan.target;
    let delegates = &plan.delegates;
    let api_disabled = detail.contains("SERVICE_DISABLED")
        || detail.contains("has not been used")
        || detail.contains("is disabled");
    let lower = detail.to_ascii_lowercase();
    let msg = match status.as_u16() {
        403 if api_disabled => format!(
            "impersonating {target} was refused ({detail}): enable the IAM Service Account \
             Credentials API (iamcredentials.googleapis.com) in the project of {principal}"
        ),
        403 if delegates.is_empty() => format!(
            "impersonating {target} was refused ({detail}): grant {principal} \
             {TOKEN_CREATOR_ROLE} on {target}"
        ),
        403 if delegates.len() == 1 => format!(
            "impersonating {target} was refused ({detail}): grant {principal} \
             {TOKEN_CREATOR_ROLE} on {}, and {} the role on {target}",
            delegates[0], delegates[0]
        ),
        403 => format!(
            "impersonating {target} was refused ({detail}): grant {principal} \
             {TOKEN_CREATOR_ROLE} on {}, each delegate the role on the next, and {} the role \
             on {target}",
            delegates[0],
            delegates[delegates.len() - 1]
        ),
        404 => format!(
            "cannot impersonate {target}: no such service account ({detail}): check the \
             service account email in the profile"
        ),
        401 => format!(
            "impersonating {target}: the IAM Credentials API did not accept the base token of \
             {principal} ({detail}): check that iam_credentials and token_uri point at the \
             same Google"
        ),
        400 if lifetime > MAX_STANDARD_LIFETIME_SECS || lower.contains("lifetime") => format!(
            "impersonating {target} for {lifetime}s was refused ({detail}): set lifetime ≤ 1h \
             or enable extended lifetimes for the service account (org policy \
             constraints/iam.allowServiceAccountCredentialLifetimeExtension)"
        ),
        400 if lower.contains("scope") => {
            format!("impersonating {target} was refused ({detail}): {SCOPES_HINT}")
        }
        400 => format!(
            "impersonating {target} was refused ({detail}): check the profile's scopes, \
             lifetime and delegates"
        ),
        s if s >= 500 => format!(
            "impersonating {target} failed (HTTP {detail}): Google had a problem; try again \
             later"
        ),
        _ => format!(
            "impersonating {target} failed (HTTP {detail}): check iam_credentials in the config"
        ),
    };
    UpstreamError::Rejected(msg)
}

fn network_error(url: &str, e: &reqwest::Error) -> SendError {
    if e.is_builder() {
        return SendError::Fatal(UpstreamError::Protocol(format!(
            "{url} is not a usable URL: fix the endpoint in the config or the credential file"
        )));
    }
    if e.is_timeout() {
        return SendError::Network {
            reason: "no answer in time".to_owned(),
            timed_out: true,
        };
    }
    SendError::Network {
        reason: error_chain(e),
        timed_out: false,
    }
}

/// The causes of `e`, most specific last, on one line (reqwest's own top-level
/// message only repeats the URL).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = e.source();
    while let Some(c) = cause {
        let s = c.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cause = c.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    one_line(&parts.join(": "), MAX_MESSAGE_CHARS)
}

/// Credentials go to Google over HTTPS only; plain http only to this machine
/// (emulators).
fn check_url(url: &str) -> Result<(), UpstreamError> {
    let parsed = Url::parse(url).map_err(|_| {
        UpstreamError::Protocol(format!(
            "{} is not a valid URL: fix the endpoint in the config or the credential file",
            one_line(url, 200)
        ))
    })?;
    let loopback = parsed.host_str().is_some_and(|h| {
        h.eq_ignore_ascii_case("localhost")
            || h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(UpstreamError::Protocol(format!(
            "refusing to send credentials to {}: use an https:// endpoint (plain http is \
             allowed only to 127.0.0.1, [::1] or localhost)",
            one_line(url, 200)
        ))),
    }
}

/// A service-account email (or unique id) that is safe in a URL path.
fn check_account(account: &str, what: &str) -> Result<(), UpstreamError> {
    let ok = !account.is_empty()
        && account.len() <= 254
        && account
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@.-_+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(UpstreamError::Protocol(format!(
            "the {what} {:?} is not a service account email: fix it in the profile",
            one_line(account, 100)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_of_other_hosts_is_not_shown() {
        let oauth = br#"{"error":"invalid_grant","error_description":"you sent 1%2F%2Fabc"}"#;
        let theirs = Shown::Not("evil.example:8443".into());
        assert_eq!(
            error_detail(StatusCode::BAD_REQUEST, oauth, &[], &theirs),
            "invalid_grant (the reply's text is not shown: evil.example:8443 is not a Google host)"
        );
        let api = br#"{"error":{"code":403,"message":"secret here","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            error_detail(StatusCode::FORBIDDEN, api, &[], &theirs),
            "403 PERMISSION_DENIED (the reply's text is not shown: evil.example:8443 is not a \
             Google host)"
        );
        let odd = br#"{"error":"<b>sent you: x</b>"}"#;
        assert_eq!(
            error_detail(StatusCode::BAD_REQUEST, odd, &[], &theirs),
            "400 Bad Request (the reply's text is not shown: evil.example:8443 is not a Google \
             host)"
        );
        // A Google host's text is shown, without the secrets sent to it.
        let echo =
            br#"{"error":"invalid_request","error_description":"got refresh_token=1%2F%2Fabcdef"}"#;
        assert_eq!(
            error_detail(
                StatusCode::BAD_REQUEST,
                echo,
                &["1//abcdef"],
                &Shown::Scrubbed
            ),
            "invalid_request: got refresh_token=[REDACTED]"
        );
    }

    #[test]
    fn only_https_or_loopback_http() {
        assert!(check_url("https://oauth2.googleapis.com/token").is_ok());
        assert!(check_url("http://127.0.0.1:8080/token").is_ok());
        assert!(check_url("http://localhost/token").is_ok());
        assert!(check_url("http://[::1]:1/token").is_ok());
        assert!(check_url("http://oauth2.googleapis.com/token").is_err());
        assert!(check_url("not a url").is_err());
    }

    #[test]
    fn accounts_must_be_path_safe() {
        assert!(check_account("a-b@p.iam.gserviceaccount.com", "x").is_ok());
        assert!(check_account("123456789012345678901", "x").is_ok());
        assert!(check_account("a/b@p", "x").is_err());
        assert!(check_account("a@p?x", "x").is_err());
        assert!(check_account("", "x").is_err());
    }

    #[test]
    fn which_statuses_are_retried() {
        for code in [429, 500, 502, 503, 504] {
            assert!(
                transient_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
        for code in [200, 400, 401, 403, 404, 409, 501] {
            assert!(
                !transient_status(StatusCode::from_u16(code).unwrap()),
                "{code}"
            );
        }
    }

    #[test]
    fn out_of_attempts_messages() {
        let url = "https://oauth2.googleapis.com/token";
        let busy = Failure::Status {
            code: 503,
            retry_after: None,
        };
        assert_eq!(
            exhausted(Api::Token, url, &busy, 4, None).to_string(),
            "Google's token endpoint https://oauth2.googleapis.com/token kept failing (HTTP 503 \
             after 4 attempts): try again later"
        );
        let limited = Failure::Status {
            code: 429,
            retry_after: Some(Duration::from_secs(90)),
        };
        let e = exhausted(
            Api::Iam,
            url,
            &limited,
            1,
            Some((Duration::from_secs(90), Duration::from_millis(20_500))),
        );
        assert_eq!(
            e.to_string(),
            "Google's IAM Credentials API https://oauth2.googleapis.com/token kept failing (HTTP \
             429 after 1 attempt; it asked to wait 90s, beyond the 20.5s deadline): try again \
             later"
        );
        assert!(e.is_transient());
        let e = deadline_error(Api::Token, url, Duration::from_secs(20), 3, &Some(busy));
        assert_eq!(
            e.to_string(),
            "Google's token endpoint https://oauth2.googleapis.com/token did not answer within \
             the 20s deadline (3 attempts; before that: HTTP 503): try again later, or raise \
             deadline in the [google] config"
        );
        let net = Failure::Network("connection reset".into());
        assert_eq!(
            exhausted(Api::Token, url, &net, 2, None),
            UpstreamError::Network {
                url: url.into(),
                reason: "connection reset".into(),
                attempts: 2
            }
        );
    }

    #[test]
    fn quota_projects_must_be_project_ids() {
        assert!(check_quota_project("my-proj-123").is_ok());
        assert!(check_quota_project("example.com:proj").is_ok());
        assert!(check_quota_project("").is_err());
        assert!(check_quota_project("a b").is_err());
        assert!(check_quota_project("a\r\nx-evil: 1").is_err());
    }

    #[test]
    fn error_details_from_both_shapes() {
        let s = StatusCode::BAD_REQUEST;
        let oauth = br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        assert_eq!(
            error_detail(s, oauth, &[], &Shown::Scrubbed),
            "invalid_grant: Token has been expired or revoked."
        );
        let api = br#"{"error":{"code":403,"message":"denied\nnow","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            error_detail(StatusCode::FORBIDDEN, api, &[], &Shown::Scrubbed),
            "403 PERMISSION_DENIED: denied now"
        );
        assert_eq!(
            error_detail(
                StatusCode::BAD_GATEWAY,
                b"<html>\n<b>oops</b></html>",
                &[],
                &Shown::Scrubbed
            ),
            "502 Bad Gateway: <html> <b>oops</b></html>"
        );
    }
}
