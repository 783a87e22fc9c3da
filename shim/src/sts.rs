//! The ADC-file route: a local STS (RFC 8693 token exchange) behind an
//! `external_account` credential file, which gcloud and google-auth accept with
//! no environment variable (README, "Using gcloud and Python", route 2).
//!
//! - `GET /subject` (the file's `credential_source.url`, sent with
//!   `Metadata-Flavor: Google` as the file asks) returns this run's opaque
//!   subject token: random, in memory only. It proves nothing by itself: the
//!   caller check (same uid) is the gate, the touch is the approval.
//! - `POST /sts/token` exchanges it for an access token minted by the agent,
//!   for the profile the audience names (`//touchgate.local/profile/NAME`).
//! - `POST /token_info` introspects tokens this shim issued (gcloud reads `username`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use touchgate::shim::{audience_profile, AUDIENCE_PREFIX};
use touchgate::sync::MutexExt;
use touchgate::ErrorCode;

use crate::broker::{effective_scopes, unix_now, AskError};
use crate::metadata::service_account_email;
use crate::server::{without_metadata_flavor, Caller, Shim};

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(serde_json::json!({
            "error": error,
            "error_description": description,
        })),
    )
        .into_response()
}

/// `GET /subject`
pub async fn subject(State(shim): State<Arc<Shim>>, headers: HeaderMap) -> Response {
    if let Some(refused) = without_metadata_flavor(&headers) {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        shim.subject.clone(),
    )
        .into_response()
}

/// `POST /sts/token`
pub async fn token(
    State(shim): State<Arc<Shim>>,
    Extension(caller): Extension<Caller>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != GRANT_TYPE {
        return oauth_error(
            "unsupported_grant_type",
            &format!("touchgate-shim: grant_type must be {GRANT_TYPE}"),
        );
    }
    if !constant_time_eq(field("subject_token").as_bytes(), shim.subject.as_bytes()) {
        return oauth_error(
            "invalid_grant",
            "touchgate-shim: the subject token is not this shim's; the credential file's credential_source.url must point at this shim",
        );
    }
    let rtt = field("requested_token_type");
    if !rtt.is_empty() && rtt != ACCESS_TOKEN_TYPE {
        return oauth_error(
            "invalid_request",
            &format!("touchgate-shim: only {ACCESS_TOKEN_TYPE} is issued"),
        );
    }
    let Some(profile) = audience_profile(field("audience")) else {
        return oauth_error(
            "invalid_target",
            &format!(
                "touchgate-shim: audience \"{}\" is not {AUDIENCE_PREFIX}PROFILE; regenerate the file with `touchgate-shim adc-file`",
                field("audience")
            ),
        );
    };
    let profile = profile.or_else(|| shim.opts.profile.clone());
    let info = match shim.broker.profile(profile.as_deref()).await {
        Ok(p) => p,
        Err(e) => return agent_oauth_error(&e),
    };
    let asked: Vec<String> = field("scope")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let scopes = effective_scopes(&asked, &info.scopes);
    let profile = Some(info.name);
    match shim
        .broker
        .token(profile.as_deref(), &scopes, caller.hint())
        .await
    {
        Ok(t) => {
            shim.issued.locked().retain(|_, (exp, _)| *exp > unix_now());
            shim.issued
                .locked()
                .insert(t.access_token.fingerprint(), (t.expires_at, profile));
            Json(serde_json::json!({
                "access_token": t.access_token.expose(),
                "issued_token_type": ACCESS_TOKEN_TYPE,
                "token_type": "Bearer",
                "expires_in": t.expires_in(),
            }))
            .into_response()
        }
        Err(e) => agent_oauth_error(&e),
    }
}

fn agent_oauth_error(e: &AskError) -> Response {
    let error = match e.code {
        Some(ErrorCode::TouchDenied | ErrorCode::TouchTimeout | ErrorCode::PeerRefused) => {
            "access_denied"
        }
        Some(ErrorCode::UnknownProfile) => "invalid_target",
        None => "temporarily_unavailable",
        _ => "invalid_grant",
    };
    oauth_error(error, &format!("touchgate: {}", e.message))
}

/// `POST /token_info` (form `token=…`): RFC 7662 introspection of our own tokens.
pub async fn token_info(
    State(shim): State<Arc<Shim>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let token = form.get("token").map(String::as_str).unwrap_or("");
    let fp = touchgate::secret::fingerprint(token.as_bytes());
    let found = shim.issued.locked().get(&fp).cloned();
    let Some((exp, profile)) = found.filter(|(exp, _)| *exp > unix_now()) else {
        return Json(serde_json::json!({"active": false})).into_response();
    };
    let (username, scope) = match shim.broker.profile(profile.as_deref()).await {
        Ok(p) => (service_account_email(&p), p.scopes.join(" ")),
        Err(_) => (
            format!(
                "touchgate-{}@touchgate.invalid",
                profile.as_deref().unwrap_or("default")
            ),
            String::new(),
        ),
    };
    Json(serde_json::json!({
        "active": true,
        "username": username,
        "scope": scope,
        "exp": exp,
        "token_type": "Bearer",
        "client_id": "touchgate-shim",
    }))
    .into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_subjects() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
