//! `/__emulator/…`: set the emulator up and read what it saw, from tests and
//! demos in other processes.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::state::{FaultRule, VertexRole};
use super::{google_error, rfc3339, AppState, Details};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewPrincipal {
    pub email: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub principal: String,
    pub service_account: String,
}

/// `POST /__emulator/vertex-grants`: `role` is `inference`, `training` or
/// `roles/aiplatform.user`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VertexGrant {
    pub principal: String,
    pub role: String,
}

/// `POST /__emulator/extended-lifetime`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtendedLifetime {
    pub service_account: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Advance {
    pub seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoke {
    pub refresh_token: String,
}

/// `POST /__emulator/login`: the emulated browser signs in as `email` and
/// approves, or (`deny`) declines, or (neither) nobody is signed in.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginUser {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub deny: bool,
}

/// `POST /__emulator/devices/approve` (with `email`) and `/devices/deny`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceDecision {
    pub user_code: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// `POST /__emulator/device-interval`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInterval {
    pub seconds: u64,
}

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/calls", get(calls))
        .route("/service-accounts", post(service_account))
        .route("/authorized-users", post(authorized_user))
        .route("/grants", post(grant))
        .route("/vertex-grants", post(vertex_grant))
        .route("/extended-lifetime", post(extended_lifetime))
        .route("/faults", post(fault).delete(clear_faults))
        .route("/advance", post(advance))
        .route("/revoke", post(revoke))
        .route("/now", get(now))
        .route("/oauth-clients", post(oauth_client))
        .route("/login", post(login))
        .route("/devices/approve", post(approve_device))
        .route("/devices/deny", post(deny_device))
        .route("/device-interval", post(device_interval))
}

fn bad_request(e: JsonRejection) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", &e.body_text())
}

// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn valid_email(email: &str) -> Result<(), Response> {
    let ok = email.split_once('@').is_some_and(|(a, b)| {
        !a.is_empty() && !b.is_empty() && !email.contains(['/', ':', '?', '#', ' '])
    });
    if ok {
        Ok(())
    } else {
        Err(google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "email must look like name@domain",
        ))
    }
}

fn json_text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn calls(State(state): State<AppState>) -> Response {
    Details {
        skip: true,
        ..Details::default()
    }
    .respond(Json(state.calls()))
}

async fn service_account(
    State(state): State<AppState>,
    body: Result<Json<NewPrincipal>, JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return bad_request(e),
    };
    if let Err(r) = valid_email(&req.email) {
        return r;
    }
    // RSA key generation: off the async threads.
    match tokio::task::spawn_blocking(move || state.add_service_account(&req.email)).await {
        Ok(key) => json_text(key),
        Err(_) => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "key generation failed",
        ),
    }
}

async fn authorized_user(
    State(state): State<AppState>,
    body: Result<Json<NewPrincipal>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(req)) => match valid_email(&req.email) {
            Ok(()) => json_text(state.add_authorized_user(&req.email)),
            Err(r) => r,
        },
        Err(e) => bad_request(e),
    }
}

async fn grant(
    State(state): State<AppState>,
    body: Result<Json<Grant>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(g)) => {
            state.grant_token_creator(&g.principal, &g.service_account);
            Json(serde_json::json!({})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn vertex_grant(
    State(state): State<AppState>,
    body: Result<Json<VertexGrant>, JsonRejection>,
) -> Response {
    let g = match body {
        Ok(Json(g)) => g,
        Err(e) => return bad_request(e),
    };
    if let Err(r) = valid_email(&g.principal) {
        return r;
    }
    match VertexRole::parse(&g.role) {
        Some(role) => {
            state.grant_vertex(&g.principal, role);
            Json(serde_json::json!({"role": role.name()})).into_response()
        }
        None => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "role must be inference, training or roles/aiplatform.user",
        ),
    }
}

async fn extended_lifetime(
    State(state): State<AppState>,
    body: Result<Json<ExtendedLifetime>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(e)) => {
            state.allow_extended_lifetime(&e.service_account);
            Json(serde_json::json!({})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn fault(
    State(state): State<AppState>,
    body: Result<Json<FaultRule>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(rule)) => {
            state.inject(rule);
            Json(serde_json::json!({})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn clear_faults(State(state): State<AppState>) -> Response {
    state.clear_faults();
    Json(serde_json::json!({})).into_response()
}

async fn advance(
    State(state): State<AppState>,
    body: Result<Json<Advance>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(a)) => {
            state.advance(Duration::from_secs(a.seconds));
            Json(serde_json::json!({"now": rfc3339(state.now())})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn revoke(
    State(state): State<AppState>,
    body: Result<Json<Revoke>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(r)) => {
            let revoked = state.revoke_refresh_token(&r.refresh_token);
            Json(serde_json::json!({"revoked": revoked})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn now(State(state): State<AppState>) -> Response {
    let now = state.now();
    Details {
        skip: true,
        ..Details::default()
    }
    .respond(Json(serde_json::json!({
        "now": rfc3339(now),
        "unix": touchgate_agent::clock::unix(now),
    })))
}

/// A new OAuth client; answers its `client_secret_….json`.
async fn oauth_client(State(state): State<AppState>) -> Response {
    let (id, secret) = state.add_oauth_client();
    json_text(state.client_secret_json(&id, &secret))
}

async fn login(
    State(state): State<AppState>,
    body: Result<Json<LoginUser>, JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(b)) => b,
        Err(e) => return bad_request(e),
    };
    match (req.email, req.deny) {
        (Some(_), true) => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "give email or deny, not both",
        ),
        (Some(email), false) => match valid_email(&email) {
            Ok(()) => {
                state.set_login_user(&email);
                Json(serde_json::json!({})).into_response()
            }
            Err(r) => r,
        },
        (None, true) => {
            state.deny_login();
            Json(serde_json::json!({})).into_response()
        }
        (None, false) => {
            state.clear_login();
            Json(serde_json::json!({})).into_response()
        }
    }
}

async fn approve_device(
    State(state): State<AppState>,
    body: Result<Json<DeviceDecision>, JsonRejection>,
) -> Response {
    let d = match body {
        Ok(Json(d)) => d,
        Err(e) => return bad_request(e),
    };
    let Some(email) = d.email else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "email is required: who approves the code",
        );
    };
    if let Err(r) = valid_email(&email) {
        return r;
    }
    let approved = state.approve_device(&d.user_code, &email);
    Json(serde_json::json!({"approved": approved})).into_response()
}

async fn deny_device(
    State(state): State<AppState>,
    body: Result<Json<DeviceDecision>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(d)) => {
            let denied = state.deny_device(&d.user_code);
            Json(serde_json::json!({"denied": denied})).into_response()
        }
        Err(e) => bad_request(e),
    }
}

async fn device_interval(
    State(state): State<AppState>,
    body: Result<Json<DeviceInterval>, JsonRejection>,
) -> Response {
    match body {
        Ok(Json(d)) => {
            state.set_device_interval(d.seconds);
            Json(serde_json::json!({})).into_response()
        }
        Err(e) => bad_request(e),
    }
}
