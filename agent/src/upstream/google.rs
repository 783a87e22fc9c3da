//! The real upstream: Google's OAuth token endpoint and the IAM Credentials API,
//! as plain REST over reqwest. Every endpoint is configurable ([`Endpoints`], or
//! the key file's `token_uri`), so the emulator in `tests/` can stand in for Google.
//!
//! 1. Base token: a service account signs an RS256 JWT (jwt-bearer grant); an
//!    `authorized_user` credential uses its refresh token (refresh_token grant).
//! 2. With `impersonate`, the base token (scope cloud-platform) buys a token for
//!    the service account from `generateAccessToken`, with the asked lifetime.
//!
//! Errors are one line, say what to do, and never carry a token, an assertion, a
//! secret or a success body. No retries yet.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::{Client, RequestBuilder, StatusCode, Url};
use secrecy::ExposeSecret;
use serde_json::Value;
use touchgate::Secret;
use zeroize::Zeroizing;

use super::credential::{AuthorizedUser, ServiceAccountKey, UpstreamCredential};
use super::{
    jwt, BoxFuture, Endpoints, MintRequest, MintedToken, Upstream, UpstreamError, CLOUD_PLATFORM,
    DEFAULT_TOKEN_URI,
};
use crate::clock::Clock;

/// Whole-request timeout of every call to Google.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of establishing the connection (TCP + TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The role a principal needs on a service account to impersonate it.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";
/// Replies larger than this are refused (a token reply is well under 4 KiB).
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Google's messages are cut to this many characters.
const MAX_MESSAGE_CHARS: usize = 300;

/// Google (or an emulator), over HTTPS.
pub struct GoogleUpstream {
    endpoints: Endpoints,
    clock: Arc<dyn Clock>,
    /// The client, or why it could not be built (reported at mint time).
    http: Result<Client, String>,
}

impl fmt::Debug for GoogleUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleUpstream")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl GoogleUpstream {
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
            endpoints,
            clock,
            http,
        }
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The token endpoint used for `credential`: the configured one if set, else
    /// the credential file's `token_uri`, else Google's.
    pub fn token_uri_for<'a>(&'a self, credential: &'a UpstreamCredential) -> &'a str {
        self.endpoints
            .token_uri
            .as_deref()
            .or(credential.token_uri())
            .unwrap_or(DEFAULT_TOKEN_URI)
    }

    async fn mint_inner(
        &self,
        credential: &UpstreamCredential,
        request: &MintRequest,
    ) -> Result<MintedToken, UpstreamError> {
        let scopes = if request.scopes.is_empty() {
            vec![CLOUD_PLATFORM.to_owned()]
        } else {
            request.scopes.clone()
        };
        let base_scopes = match request.impersonate {
            Some(_) => vec![CLOUD_PLATFORM.to_owned()],
            None => scopes.clone(),
        };
        // Refuse a bad target or endpoint before minting anything.
        let impersonate = match &request.impersonate {
            Some(target) => Some((target, self.generate_url(target, &request.delegates)?)),
            None => None,
        };
        let token_uri = self.token_uri_for(credential);
        let base = match credential {
            UpstreamCredential::ServiceAccount(key) => {
                self.service_account_token(key, token_uri, &base_scopes)
                    .await?
            }
            UpstreamCredential::AuthorizedUser(user) => {
                self.refresh_token_grant(user, token_uri).await?
            }
        };
        match impersonate {
            None => Ok(MintedToken {
                access_token: Secret::new(base.token.as_str()),
                expires_at: base.expires_at,
                principal: credential.principal(),
            }),
            Some((target, url)) => {
                self.generate_access_token(credential, &base.token, &url, target, &scopes, request)
                    .await
            }
        }
        // `base.token` (Zeroizing) is wiped here.
    }

    /// jwt-bearer grant with an RS256 assertion signed by the key file's key.
    async fn service_account_token(
        &self,
        key: &ServiceAccountKey,
        token_uri: &str,
        scopes: &[String],
    ) -> Result<BaseToken, UpstreamError> {
        check_url(token_uri)?;
        let rsa_key = key
            .rsa_key()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let claims = jwt::Claims::new(&key.client_email, scopes, token_uri, self.clock.unix_now());
        let assertion = jwt::sign(rsa_key, &key.private_key_id, &claims);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let who = Who::ServiceAccount {
            email: &key.client_email,
            key_id: &key.private_key_id,
        };
        self.token_grant(token_uri, &form, who, &[assertion.as_str()])
            .await
        // `assertion` (Zeroizing) is wiped here.
    }

    /// refresh_token grant of an `authorized_user` credential.
    async fn refresh_token_grant(
        &self,
        user: &AuthorizedUser,
        token_uri: &str,
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
        self.token_grant(token_uri, &form, who, &[secret, refresh])
            .await
    }

    async fn token_grant(
        &self,
        url: &str,
        form: &[(&str, &str)],
        who: Who<'_>,
        secrets: &[&str],
    ) -> Result<BaseToken, UpstreamError> {
        let sent_at = self.clock.now();
        let http = self.client()?;
        let (status, body) = send(url, http.post(url).form(form)).await?;
        if !status.is_success() {
            return Err(token_error(url, status, &body, &who, secrets));
        }
        parse_token_reply(url, status, &body, sent_at)
    }

    /// The `generateAccessToken` URL for `target`, after checking the names.
    fn generate_url(&self, target: &str, delegates: &[String]) -> Result<String, UpstreamError> {
        check_account(target, "service account to impersonate")?;
        for d in delegates {
            check_account(
                d.strip_prefix("projects/-/serviceAccounts/").unwrap_or(d),
                "delegate",
            )?;
        }
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{target}:generateAccessToken",
            self.endpoints.iam_credentials.trim_end_matches('/')
        );
        check_url(&url)?;
        Ok(url)
    }

    async fn generate_access_token(
        &self,
        credential: &UpstreamCredential,
        base_token: &Zeroizing<String>,
        url: &str,
        target: &str,
        scopes: &[String],
        request: &MintRequest,
    ) -> Result<MintedToken, UpstreamError> {
        let lifetime = request.lifetime.as_secs();
        let delegates: Vec<String> = request
            .delegates
            .iter()
            .map(|d| {
                if d.starts_with("projects/") {
                    d.clone()
                } else {
                    format!("projects/-/serviceAccounts/{d}")
                }
            })
            .collect();
        let body = serde_json::json!({
            "scope": scopes,
            "lifetime": format!("{lifetime}s"),
            "delegates": delegates,
        });
        let http = self.client()?;
        let builder = http.post(url).bearer_auth(base_token.as_str()).json(&body);
        let (status, reply) = send(url, builder).await?;
        if !status.is_success() {
            return Err(impersonation_error(
                credential,
                target,
                &request.delegates,
                lifetime,
                status,
                &reply,
                &[base_token.as_str()],
            ));
        }
        let what = format!("generateAccessToken for {target}");
        let reply: GenerateReply = serde_json::from_slice(&reply)
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
            principal: target.to_owned(),
        })
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

/// Sends, and reads the whole reply (capped) into memory that is wiped on drop.
async fn send(
    url: &str,
    builder: RequestBuilder,
) -> Result<(StatusCode, Zeroizing<Vec<u8>>), UpstreamError> {
    let mut response = builder.send().await.map_err(|e| network_error(url, &e))?;
    let status = response.status();
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(url, &e))? {
        if body.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(UpstreamError::Protocol(format!(
                "{url} answered HTTP {status} with more than {MAX_REPLY_BYTES} bytes: is this \
                 a Google endpoint?"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
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
    Ok(BaseToken {
        token: Zeroizing::new(token.expose().to_owned()),
        expires_at: sent_at + Duration::from_secs(expires_in),
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

/// `status: text` of an error reply, in one clean line without secrets.
fn error_detail(status: StatusCode, body: &[u8], secrets: &[&str]) -> String {
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
    one_line(&scrub(&raw, secrets), MAX_MESSAGE_CHARS)
}

fn token_error(
    url: &str,
    status: StatusCode,
    body: &[u8],
    who: &Who<'_>,
    secrets: &[&str],
) -> UpstreamError {
    let detail = error_detail(status, body, secrets);
    let oauth_error = match parse_error_body(body) {
        Some(ErrorBody::OAuth { error, .. }) => error,
        _ => String::new(),
    };
    let msg = match (who, oauth_error.as_str()) {
        (Who::User { .. }, "invalid_grant") => format!(
            "Google refused the refresh token ({detail}): import a fresh credential with \
             touchgate import"
        ),
        (Who::User { client_id }, "invalid_client" | "unauthorized_client") => format!(
            "Google refused OAuth client {client_id} ({detail}): the client was deleted or its \
             secret changed; import a fresh credential with touchgate import"
        ),
        (Who::ServiceAccount { email, key_id }, "invalid_grant") => format!(
            "Google refused the signed assertion of service account {email} (key {key_id}) \
             ({detail}): the key may be deleted or disabled, or this machine's clock is \
             skewed; check the clock, or create a new key and touchgate import it"
        ),
        (Who::ServiceAccount { email, .. }, "invalid_scope") => format!(
            "Google refused the scopes asked for {email} ({detail}): check the profile's scopes"
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

fn impersonation_error(
    credential: &UpstreamCredential,
    target: &str,
    delegates: &[String],
    lifetime: u64,
    status: StatusCode,
    body: &[u8],
    secrets: &[&str],
) -> UpstreamError {
    let detail = error_detail(status, body, secrets);
    let principal = match credential {
        UpstreamCredential::ServiceAccount(k) => k.client_email.clone(),
        UpstreamCredential::AuthorizedUser(_) => "your Google user account".to_owned(),
    };
    let api_disabled = detail.contains("SERVICE_DISABLED")
        || detail.contains("has not been used")
        || detail.contains("is disabled");
    let msg = match status.as_u16() {
        403 if api_disabled => format!(
            "impersonating {target} was refused ({detail}): enable the IAM Service Account \
             Credentials API (iamcredentials.googleapis.com) in the project of {principal}"
        ),
        403 if delegates.is_empty() => format!(
            "impersonating {target} was refused ({detail}): grant {principal} \
             {TOKEN_CREATOR_ROLE} on {target}"
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
        400 if lifetime > 3600 => format!(
            "impersonating {target} was refused ({detail}): a lifetime over 3600s needs the \
             org policy constraints/iam.allowServiceAccountCredentialLifetimeExtension; ask \
             for 3600s or less"
        ),
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

fn network_error(url: &str, e: &reqwest::Error) -> UpstreamError {
    if e.is_builder() {
        return UpstreamError::Protocol(format!(
            "{url} is not a usable URL: fix the endpoint in the config or the credential file"
        ));
    }
    let reason = if e.is_timeout() {
        format!(
            "no answer within {}s (connect timeout {}s); check the network and proxy settings",
            REQUEST_TIMEOUT.as_secs(),
            CONNECT_TIMEOUT.as_secs()
        )
    } else {
        format!(
            "{}; check the network, proxy settings and the endpoint URL",
            error_chain(e)
        )
    };
    UpstreamError::Network {
        url: url.to_owned(),
        reason,
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

/// Removes any of `secrets` from `text` (a server may echo what it was sent).
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(*s) {
            out = out.replace(*s, "[REDACTED]");
        }
    }
    out
}

/// One printable line of at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = collapsed
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    if collapsed.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_cuts_and_flattens() {
        assert_eq!(one_line("a\n  b\tc", 300), "a b c");
        let long = "x".repeat(400);
        assert_eq!(one_line(&long, 300).chars().count(), 301);
    }

    #[test]
    fn scrub_removes_secrets() {
        assert_eq!(
            scrub("bad token ya29.abc here", &["ya29.abc"]),
            "bad token [REDACTED] here"
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
    fn error_details_from_both_shapes() {
        let s = StatusCode::BAD_REQUEST;
        let oauth = br#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        assert_eq!(
            error_detail(s, oauth, &[]),
            "invalid_grant: Token has been expired or revoked."
        );
        let api = br#"{"error":{"code":403,"message":"denied\nnow","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            error_detail(StatusCode::FORBIDDEN, api, &[]),
            "403 PERMISSION_DENIED: denied now"
        );
        assert_eq!(
            error_detail(StatusCode::BAD_GATEWAY, b"<html>\n<b>oops</b></html>", &[]),
            "502 Bad Gateway: <html> <b>oops</b></html>"
        );
    }
}
