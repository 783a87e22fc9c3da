//! The two OAuth flows of `touchgate login`: installed app (PKCE, loopback
//! redirect) and device. Both end with a refresh token, kept in memory only.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use touchgate::text::one_line;
use touchgate::Secret;
use zeroize::Zeroizing;

use super::loopback::Loopback;
use super::settings::LoginSettings;

/// How long the installed-app flow waits for the browser.
pub const BROWSER_TIMEOUT: Duration = Duration::from_secs(300);
const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// Transient failures (network, 5xx, 429) tolerated in a row while polling.
const MAX_POLL_FAILURES: u32 = 3;
/// Scopes that only say who the user is; a consent screen may leave them out.
const IDENTITY_SCOPES: &[&str] = &[
    "openid",
    "email",
    "profile",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
];

/// What a login ends with.
pub struct Tokens {
    pub refresh_token: Secret,
    /// The user, from the ID token, when `openid email` was asked.
    pub email: Option<String>,
}

/// A successful token endpoint reply.
#[derive(Deserialize)]
struct TokenReply {
    refresh_token: Option<Secret>,
    scope: Option<String>,
    id_token: Option<Secret>,
}

#[derive(Deserialize)]
struct DeviceReply {
    device_code: Secret,
    user_code: String,
    /// Google's name; RFC 8628 says `verification_uri`.
    verification_url: Option<String>,
    verification_uri: Option<String>,
    expires_in: Option<u64>,
    interval: Option<u64>,
}

/// An OAuth error reply (`{"error": "...", "error_description": "..."}`).
struct OAuthError {
    error: String,
    description: String,
}

/// A call that got no OAuth answer.
struct HttpFailure {
    message: String,
    /// Worth another try (network error, 5xx, 429).
    transient: bool,
}

pub fn http_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("touchgate/", env!("CARGO_PKG_VERSION")))
        // OAuth endpoints do not redirect; never carry the client secret elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| anyhow::anyhow!("cannot set up HTTPS: {e}"))
}

fn random_b64(n: usize) -> Zeroizing<String> {
    let mut b = Zeroizing::new(vec![0u8; n]);
    rand::thread_rng().fill_bytes(&mut b);
    Zeroizing::new(URL_SAFE_NO_PAD.encode(&*b))
}

/// PKCE S256: `BASE64URL(SHA256(verifier))`.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string().replace('\n', " ")
}

/// Form fields that carry secrets, scrubbed from what the server answers.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "code",
    "code_verifier",
    "device_code",
    "refresh_token",
];

/// POSTs a form; `Ok(Ok(reply))` on 2xx, `Ok(Err(oauth error))` on an OAuth
/// error reply, `Err` when there was no OAuth answer at all.
async fn post_form<T: DeserializeOwned>(
    http: &reqwest::Client,
    what: &str,
    uri: &str,
    form: &[(&str, &str)],
) -> Result<Result<T, OAuthError>, HttpFailure> {
    let response = http
        .post(uri)
        .form(form)
        .send()
        .await
        .map_err(|e| HttpFailure {
            message: format!(
                "cannot reach the {what} {uri}: {}; check the network",
                root_cause(&e)
            ),
            transient: true,
        })?;
    let status = response.status();
    let body = Zeroizing::new(
        response
            .bytes()
            .await
            .map_err(|e| HttpFailure {
                message: format!(
                    "the {what} {uri} broke off its answer: {}; try again",
                    root_cause(&e)
                ),
                transient: true,
            })?
            .to_vec(),
    );
    if status.is_success() {
        return serde_json::from_slice::<T>(&body)
            .map(Ok)
            .map_err(|_| HttpFailure {
                message: format!(
                    "the {what} {uri} answered HTTP {} with something that is not an OAuth \
                     reply: is it the right endpoint?",
                    status.as_u16()
                ),
                transient: false,
            });
    }
    #[derive(Deserialize)]
    struct ErrorBody {
        error: serde_json::Value,
        error_description: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(&body) {
        if let Some(error) = e.error.as_str() {
            // A server may quote what it was sent.
            let secrets: Vec<&str> = form
                .iter()
                .filter(|(k, _)| SECRET_FIELDS.contains(k))
                .map(|(_, v)| *v)
                .collect();
            let description = e.error_description.as_deref().unwrap_or("");
            return Ok(Err(OAuthError {
                error: error.to_owned(),
                description: one_line(&touchgate::secret::scrub(description, &secrets), 200),
            }));
        }
    }
    let transient = status.is_server_error() || status.as_u16() == 429;
    Err(HttpFailure {
        message: format!(
            "the {what} {uri} answered HTTP {}{}",
            status.as_u16(),
            if transient {
                ": Google is having trouble, try again in a minute"
            } else {
                ": is it the right endpoint?"
            }
        ),
        transient,
    })
}

fn describe(e: &OAuthError) -> String {
    if e.description.is_empty() {
        e.error.clone()
    } else {
        format!("{} ({})", e.error, e.description)
    }
}

/// The installed-app flow: PKCE, loopback redirect, code exchange.
pub async fn installed(http: &reqwest::Client, s: &LoginSettings) -> anyhow::Result<Tokens> {
    let listener = Loopback::bind().await?;
    let redirect_uri = listener.redirect_uri();
    let verifier = random_b64(32);
    let state = random_b64(16);
    let scope = s.scopes.join(" ");
    let url = reqwest::Url::parse_with_params(
        &s.auth_uri,
        &[
            ("client_id", s.client.client_id.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("response_type", "code"),
            ("scope", scope.as_str()),
            ("state", state.as_str()),
            ("code_challenge", s256(&verifier).as_str()),
            ("code_challenge_method", "S256"),
            ("access_type", "offline"),
            ("prompt", "consent"),
        ],
    )
    .map_err(|_| anyhow::anyhow!("login auth_uri {:?} is not a URL", s.auth_uri))?;
    println!("Open this URL in a browser on this machine and allow access:");
    println!();
    println!("  {url}");
    println!();
    open_browser(url.as_str());
    println!(
        "waiting up to {} minutes for the browser to come back to {redirect_uri} …",
        BROWSER_TIMEOUT.as_secs() / 60
    );
    let code = listener.wait(&state, BROWSER_TIMEOUT).await?;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("client_id", s.client.client_id.as_str()),
        ("client_secret", s.client.client_secret.expose()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    match post_form::<TokenReply>(http, "token endpoint", &s.token_uri, &form).await {
        Ok(Ok(reply)) => tokens(reply, s),
        Ok(Err(e)) => Err(exchange_error(&e, s, "touchgate login")),
        Err(f) => anyhow::bail!("{}; then run touchgate login again", f.message),
    }
}

fn exchange_error(e: &OAuthError, s: &LoginSettings, again: &str) -> anyhow::Error {
    match e.error.as_str() {
        "invalid_client" | "unauthorized_client" => anyhow::anyhow!(
            "the token endpoint refused OAuth client {}: {}; check the client_id and \
             client_secret in {}",
            s.client.client_id,
            describe(e),
            s.client.source
        ),
        "invalid_grant" => anyhow::anyhow!(
            "the token endpoint refused the authorization: {}; run {again} again",
            describe(e)
        ),
        _ => anyhow::anyhow!(
            "the token endpoint refused the login: {}; run {again} again",
            describe(e)
        ),
    }
}

/// The refresh token of a token reply, after checking the user granted what was asked.
fn tokens(reply: TokenReply, s: &LoginSettings) -> anyhow::Result<Tokens> {
    if let Some(granted) = &reply.scope {
        let missing = missing_scopes(&s.scopes, granted);
        if !missing.is_empty() {
            anyhow::bail!(
                "access was granted without {}: run touchgate login again and tick every box on \
                 the consent screen",
                missing.join(", ")
            );
        }
    }
    let Some(refresh_token) = reply.refresh_token.filter(|t| !t.expose().is_empty()) else {
        anyhow::bail!(
            "the token endpoint returned no refresh token: remove the app's access at \
             https://myaccount.google.com/connections and run touchgate login again"
        );
    };
    Ok(Tokens {
        refresh_token,
        email: reply
            .id_token
            .as_ref()
            .and_then(|t| id_token_email(t.expose())),
    })
}

/// Requested scopes (other than identity ones) that `granted` lacks.
fn missing_scopes(requested: &[String], granted: &str) -> Vec<String> {
    let granted: Vec<&str> = granted.split_whitespace().collect();
    requested
        .iter()
        .filter(|s| !IDENTITY_SCOPES.contains(&s.as_str()) && !granted.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// The `email` claim of an ID token that came straight from the token endpoint
/// (over TLS, so its signature need not be checked to show who logged in).
fn id_token_email(jwt: &str) -> Option<String> {
    let claims = jwt.split('.').nth(1)?;
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?);
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let email = v.get("email")?.as_str()?;
    email
        .chars()
        .all(|c| !c.is_control() && !c.is_whitespace())
        .then(|| email.to_owned())
}

/// What to do after a device-flow poll answered `error`.
#[derive(Debug, PartialEq, Eq)]
enum PollStep {
    /// Poll again after this many seconds.
    Wait(u64),
    Fail,
}

/// RFC 8628 §3.5: `authorization_pending` → same interval, `slow_down` → 5 s more.
fn poll_step(error: &str, interval: u64) -> PollStep {
    match error {
        "authorization_pending" => PollStep::Wait(interval),
        "slow_down" => PollStep::Wait(interval + 5),
        _ => PollStep::Fail,
    }
}

/// The device flow: a code to enter on any device with a browser.
pub async fn device(http: &reqwest::Client, s: &LoginSettings) -> anyhow::Result<Tokens> {
    let scope = s.scopes.join(" ");
    let form = [
        ("client_id", s.client.client_id.as_str()),
        ("scope", scope.as_str()),
    ];
    let d = match post_form::<DeviceReply>(http, "device endpoint", &s.device_auth_uri, &form).await
    {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return Err(device_start_error(&e, s)),
        Err(f) => anyhow::bail!("{}", f.message),
    };
    let Some(url) = d.verification_url.or(d.verification_uri) else {
        anyhow::bail!(
            "the device endpoint {} gave no verification URL: is it the right endpoint?",
            s.device_auth_uri
        );
    };
    let expires_in = d.expires_in.filter(|&e| e > 0).unwrap_or(1800);
    let Some(deadline) = Instant::now().checked_add(Duration::from_secs(expires_in)) else {
        anyhow::bail!(
            "the device endpoint {} says its code lasts {expires_in}s, past the end of the clock: \
             is it the right endpoint?",
            s.device_auth_uri
        );
    };
    println!("Visit {url} and enter code {}", d.user_code);
    println!(
        "waiting for approval (the code expires in {} minutes) …",
        expires_in.div_ceil(60)
    );
    let mut interval = d.interval.unwrap_or(5).max(1);
    let mut failures = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        if Instant::now() >= deadline {
            return Err(expired(&d.user_code));
        }
        let form = [
            ("client_id", s.client.client_id.as_str()),
            ("client_secret", s.client.client_secret.expose()),
            ("device_code", d.device_code.expose()),
            ("grant_type", DEVICE_CODE_GRANT),
        ];
        match post_form::<TokenReply>(http, "token endpoint", &s.token_uri, &form).await {
            Ok(Ok(reply)) => return tokens(reply, s),
            Ok(Err(e)) => match poll_step(&e.error, interval) {
                PollStep::Wait(next) => {
                    failures = 0;
                    interval = next;
                }
                PollStep::Fail => return Err(device_poll_error(&e, s, &d.user_code)),
            },
            Err(f) if f.transient && failures < MAX_POLL_FAILURES => failures += 1,
            Err(f) => anyhow::bail!("{}; then run touchgate login --no-browser again", f.message),
        }
    }
}

fn expired(user_code: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "code {user_code} expired before it was approved: run touchgate login --no-browser \
         again and enter the new code in time"
    )
}

fn device_start_error(e: &OAuthError, s: &LoginSettings) -> anyhow::Error {
    match e.error.as_str() {
        "invalid_client" if e.description.contains("client type") => anyhow::anyhow!(
            "OAuth client {} cannot use the device flow (Google allows it only for \"TVs and \
             Limited Input devices\" clients): log in without --no-browser, or pass such a \
             client's JSON with --client-secret-file",
            s.client.client_id
        ),
        "invalid_client" | "unauthorized_client" => anyhow::anyhow!(
            "the device endpoint refused OAuth client {}: {}; check the client_id in {}",
            s.client.client_id,
            describe(e),
            s.client.source
        ),
        "invalid_scope" => anyhow::anyhow!(
            "the device endpoint refused the scopes {}: {}; Google allows only a few scopes in \
             the device flow, so log in without --no-browser on a machine with a browser",
            s.scopes.join(" "),
            describe(e)
        ),
        _ => anyhow::anyhow!(
            "the device endpoint refused the login: {}; run touchgate login --no-browser again",
            describe(e)
        ),
    }
}

fn device_poll_error(e: &OAuthError, s: &LoginSettings, user_code: &str) -> anyhow::Error {
    match e.error.as_str() {
        "access_denied" => anyhow::anyhow!(
            "access was declined for code {user_code}: run touchgate login --no-browser again \
             and allow access"
        ),
        "expired_token" => expired(user_code),
        _ => exchange_error(e, s, "touchgate login --no-browser"),
    }
}

/// Opens `url` in the user's browser when there is a display (macOS: always),
/// unless `TOUCHGATE_NO_BROWSER_OPEN` is set. The URL is printed either way.
fn open_browser(url: &str) {
    if std::env::var_os("TOUCHGATE_NO_BROWSER_OPEN").is_some() {
        return;
    }
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        let has_display = ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|v| std::env::var_os(v).is_some_and(|d| !d.is_empty()));
        if !has_display {
            return;
        }
        "xdg-open"
    };
    let child = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc7636_example() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let v = random_b64(32);
        assert_eq!(v.len(), 43, "a 43-character verifier");
    }

    #[test]
    fn polling_follows_rfc8628() {
        assert_eq!(poll_step("authorization_pending", 5), PollStep::Wait(5));
        assert_eq!(poll_step("slow_down", 5), PollStep::Wait(10));
        assert_eq!(poll_step("access_denied", 5), PollStep::Fail);
        assert_eq!(poll_step("expired_token", 5), PollStep::Fail);
    }

    #[test]
    fn consent_without_cloud_platform_is_caught() {
        let asked: Vec<String> = touchgate::google::DEFAULT_LOGIN_SCOPES
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            missing_scopes(
                &asked,
                "openid https://www.googleapis.com/auth/userinfo.email"
            ),
            vec![touchgate::google::CLOUD_PLATFORM.to_owned()]
        );
        assert!(missing_scopes(&asked, touchgate::google::CLOUD_PLATFORM).is_empty());
    }

    #[test]
    fn email_from_id_token() {
        let claims = URL_SAFE_NO_PAD.encode(r#"{"email":"ada@example.com"}"#);
        assert_eq!(
            id_token_email(&format!("h.{claims}.s")).as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(id_token_email("garbage"), None);
    }
}
