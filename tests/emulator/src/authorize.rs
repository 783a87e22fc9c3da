//! The OAuth authorization endpoint `GET /o/oauth2/auth` of an installed-app
//! login, and the `authorization_code` grant that ends it at `POST /token`.
//!
//! The emulator plays the browser too: a visit is approved for the principal set
//! with [`EmulatorState::set_login_user`] (302 back to the loopback
//! `redirect_uri` with `code` and `state`), refused after
//! [`EmulatorState::deny_login`] (302 with `error=access_denied`), or, with
//! neither, answered with a sign-in page that goes nowhere (a user who has not
//! acted yet). Requests Google would refuse get Google's error page ("Error 400:
//! redirect_uri_mismatch"), never a redirect.

use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::device::DeviceGrant;
use super::oauth::{check_client, err, grant, required, OAuthError};
use super::state::{digest, known_scope, numeric_id, random_bytes, EmulatorState};
use super::{AppState, Details};

/// How long an authorization code can be exchanged.
pub const AUTH_CODE_LIFETIME: Duration = Duration::from_secs(600);

/// What the emulated browser does at the authorization endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LoginDecision {
    /// Nobody signed in: a sign-in page, no redirect.
    #[default]
    SignIn,
    /// Signed in as this principal, consents to everything asked.
    Approve(String),
    /// The user clicks "Cancel" on the consent screen.
    Deny,
}

/// A code handed to the browser, waiting for its exchange.
pub(crate) struct AuthCode {
    client_id: String,
    redirect_uri: String,
    principal: String,
    scopes: Vec<String>,
    /// (`code_challenge_method`, `code_challenge`).
    challenge: Option<(String, String)>,
    /// `access_type=offline`: the exchange also returns a refresh token.
    offline: bool,
    expires_at: SystemTime,
}

/// Logins in progress (under its own lock; never take the state's main lock
/// while holding it).
#[derive(Default)]
pub(crate) struct LoginState {
    pub decision: LoginDecision,
    /// digest of the code → the code.
    pub codes: HashMap<String, AuthCode>,
    /// digest of the device_code → the device grant.
    pub devices: HashMap<String, DeviceGrant>,
    /// `interval` the device endpoint hands out (default 5 s, as Google).
    pub device_interval: Option<u64>,
    /// (principal, refresh token) of every login that ended with a refresh token.
    pub issued: Vec<(String, String)>,
}

impl EmulatorState {
    pub(crate) fn login_state(&self) -> MutexGuard<'_, LoginState> {
        self.login.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The emulated browser is signed in as `email` and approves every consent screen.
    pub fn set_login_user(&self, email: &str) {
        self.login_state().decision = LoginDecision::Approve(email.to_owned());
    }

    /// The emulated user declines every consent screen (`error=access_denied`).
    pub fn deny_login(&self) {
        self.login_state().decision = LoginDecision::Deny;
    }

    /// Nobody is signed in: the authorization endpoint shows a sign-in page.
    pub fn clear_login(&self) {
        self.login_state().decision = LoginDecision::SignIn;
    }

    pub fn login_decision(&self) -> LoginDecision {
        self.login_state().decision.clone()
    }

    /// The refresh tokens that logins (authorization_code or device grant) gave
    /// `principal`, oldest first, in the clear: tests look for them on disk. The
    /// emulator's own bookkeeping keeps only digests.
    pub fn login_refresh_tokens(&self, principal: &str) -> Vec<String> {
        self.login_state()
            .issued
            .iter()
            .filter(|(p, _)| p == principal)
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// The `client_secret_….json` Google offers for a "Desktop app" OAuth client,
    /// with this emulator's endpoints.
    pub fn client_secret_json(&self, client_id: &str, client_secret: &str) -> String {
        serde_json::to_string(&serde_json::json!({
            "installed": {
                "client_id": client_id,
                "project_id": "touchgate-test",
                "auth_uri": format!("{}/o/oauth2/auth", self.base_url()),
                "token_uri": self.token_url(),
                "auth_provider_x509_cert_url": format!("{}/oauth2/v1/certs", self.base_url()),
                "client_secret": client_secret,
                "redirect_uris": ["http://localhost"],
            }
        }))
        .expect("JSON")
    }
}

/// Google's error page for a request it will not redirect back.
fn error_page(status: StatusCode, error: &str, description: &str) -> Response {
    let code = status.as_u16();
    let body = format!(
        "<!doctype html><html><head><title>Error {code}: {error}</title></head><body>\
         <h1>Access blocked: authorization error</h1><p>{}</p>\
         <p>Error {code}: {error}</p></body></html>",
        html_escape(description)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `http://127.0.0.1[:port]/…`, `http://[::1]…` or `http://localhost…`: what
/// Google accepts as a desktop client's redirect.
pub(crate) fn is_loopback_redirect(uri: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(uri) else {
        return false;
    };
    let host_ok = match u.host_str() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    u.scheme() == "http" && host_ok && u.fragment().is_none() && u.username().is_empty()
}

/// A `redirect_uri` with the answer's parameters added.
fn redirect(redirect_uri: &str, params: &[(&str, &str)]) -> Response {
    let mut u = reqwest::Url::parse(redirect_uri).expect("checked before");
    u.query_pairs_mut().extend_pairs(params);
    (StatusCode::FOUND, [(header::LOCATION, u.to_string())]).into_response()
}

pub(crate) async fn authorize(
    State(state): State<AppState>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let mut details = Details::default();
    let response = match query {
        Ok(Query(q)) => visit(&state, &q, &mut details),
        Err(_) => error_page(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is malformed.",
        ),
    };
    details.respond(response)
}

fn visit(state: &EmulatorState, q: &HashMap<String, String>, details: &mut Details) -> Response {
    let param = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let bad =
        |description: &str| error_page(StatusCode::BAD_REQUEST, "invalid_request", description);
    let Some(client_id) = param("client_id") else {
        return bad("Missing required parameter: client_id");
    };
    if state.client_secret_matches(client_id, "").is_none() {
        return error_page(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let Some(redirect_uri) = param("redirect_uri") else {
        return bad("Missing required parameter: redirect_uri");
    };
    if !is_loopback_redirect(redirect_uri) {
        return error_page(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 \
             policy. A desktop app must redirect to a loopback address \
             (http://127.0.0.1:PORT or http://[::1]:PORT).",
        );
    }
    match param("response_type") {
        None => return bad("Missing required parameter: response_type"),
        Some("code") => {}
        Some(other) => {
            return error_page(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                &format!("Invalid response_type: {other}"),
            )
        }
    }
    let Some(scope) = param("scope") else {
        return bad("Missing required parameter: scope");
    };
    let scopes: Vec<String> = scope.split_whitespace().map(str::to_owned).collect();
    let invalid: Vec<&str> = scopes
        .iter()
        .map(String::as_str)
        .filter(|s| !known_scope(s))
        .collect();
    if scopes.is_empty() || !invalid.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "Some requested scopes were invalid. {{invalid=[{}]}}",
                invalid.join(", ")
            ),
        );
    }
    let challenge = match (param("code_challenge"), param("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => return bad("Missing required parameter: code_challenge"),
        (Some(c), method) => {
            let method = method.unwrap_or("plain");
            if method != "S256" && method != "plain" {
                return bad("Invalid code_challenge_method value.");
            }
            if !(43..=128).contains(&c.len()) {
                return bad("Invalid code_challenge length.");
            }
            Some((method.to_owned(), c.to_owned()))
        }
    };
    let state_param = param("state").unwrap_or("");
    let decision = state.login_decision();
    match decision {
        LoginDecision::SignIn => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<!doctype html><html><head><title>Sign in - Google Accounts</title></head>\
             <body><h1>Sign in</h1><p>to continue to the app</p></body></html>",
        )
            .into_response(),
        LoginDecision::Deny => redirect(
            redirect_uri,
            &[("error", "access_denied"), ("state", state_param)],
        ),
        LoginDecision::Approve(principal) => {
            details.principal = Some(principal.clone());
            let code = format!("4/0Aemu{}", URL_SAFE_NO_PAD.encode(random_bytes(40)));
            details.issued_fingerprint = Some(touchgate::secret::fingerprint(code.as_bytes()));
            let expires_at = state.now() + AUTH_CODE_LIFETIME;
            state.login_state().codes.insert(
                digest(&code),
                AuthCode {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    principal,
                    scopes,
                    challenge,
                    offline: param("access_type") == Some("offline"),
                    expires_at,
                },
            );
            redirect(
                redirect_uri,
                &[("state", state_param), ("code", &code), ("scope", scope)],
            )
        }
    }
}

/// The `authorization_code` grant.
pub(super) fn exchange(
    state: &EmulatorState,
    form: &HashMap<String, String>,
    details: &mut Details,
) -> Result<Value, OAuthError> {
    let client_id = check_client(state, form)?;
    let code = required(form, "code")?;
    let now = state.now();
    // Single use: a code is gone once presented, whatever the outcome.
    let entry = state.login_state().codes.remove(&digest(code));
    let entry = entry
        .filter(|c| c.expires_at > now && c.client_id == client_id)
        .ok_or_else(|| err("invalid_grant", "Bad Request"))?;
    details.principal = Some(entry.principal.clone());
    let redirect_uri = form
        .get("redirect_uri")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| err("invalid_request", "Missing parameter: redirect_uri"))?;
    if *redirect_uri != entry.redirect_uri {
        return Err(err("redirect_uri_mismatch", "Bad Request"));
    }
    let verifier = form.get("code_verifier").filter(|v| !v.is_empty());
    match (&entry.challenge, verifier) {
        (None, None) => {}
        (None, Some(_)) => {
            return Err(err(
                "invalid_request",
                "code_verifier or verifier is not needed.",
            ))
        }
        (Some(_), None) => return Err(err("invalid_grant", "Missing code verifier.")),
        (Some((method, challenge)), Some(v)) => {
            let well_formed = (43..=128).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
            let derived = if method == "S256" {
                URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
            } else {
                v.clone()
            };
            if !well_formed || derived != *challenge {
                return Err(err("invalid_grant", "Invalid code verifier."));
            }
        }
    }
    Ok(finish_login(
        state,
        &client_id,
        &entry.principal,
        entry.scopes,
        entry.offline,
        details,
    ))
}

/// The token reply that ends a login: an access token, a refresh token if
/// `offline`, the granted `scope`, and an `id_token` if `openid` was asked.
pub(super) fn finish_login(
    state: &EmulatorState,
    client_id: &str,
    principal: &str,
    scopes: Vec<String>,
    offline: bool,
    details: &mut Details,
) -> Value {
    let scope = scopes.join(" ");
    let refresh = offline.then(|| state.new_refresh_token(principal, client_id, scopes.clone()));
    let openid = scopes.iter().any(|s| s == "openid");
    let mut body = grant(
        state,
        principal,
        scopes,
        refresh.as_ref().map(|(_, d)| d.clone()),
        details,
    );
    body["scope"] = scope.into();
    if let Some((token, _)) = refresh {
        state
            .login_state()
            .issued
            .push((principal.to_owned(), token.clone()));
        body["refresh_token"] = token.into();
    }
    if openid {
        body["id_token"] = id_token(state, client_id, principal).into();
    }
    body
}

/// An OpenID Connect ID token shaped like Google's. Its signature is random
/// bytes: the emulator has no Google signing key, so nothing may rely on
/// verifying it.
fn id_token(state: &EmulatorState, client_id: &str, principal: &str) -> String {
    let now = touchgate_agent::clock::unix(state.now());
    let header = serde_json::json!({"alg": "RS256", "kid": "emulator", "typ": "JWT"});
    let claims = serde_json::json!({
        "iss": "https://accounts.google.com",
        "azp": client_id,
        "aud": client_id,
        "sub": numeric_id(principal),
        "email": principal,
        "email_verified": true,
        "iat": now,
        "exp": now + 3600,
    });
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(random_bytes(256))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects() {
        assert!(is_loopback_redirect("http://127.0.0.1:8085/"));
        assert!(is_loopback_redirect("http://[::1]:9/cb"));
        assert!(is_loopback_redirect("http://localhost"));
        assert!(!is_loopback_redirect("https://127.0.0.1:8085/"));
        assert!(!is_loopback_redirect("http://example.com/"));
        assert!(!is_loopback_redirect("http://127.0.0.1.example.com/"));
        assert!(!is_loopback_redirect("urn:ietf:wg:oauth:2.0:oob"));
        assert!(!is_loopback_redirect("http://127.0.0.1/#frag"));
    }
}
