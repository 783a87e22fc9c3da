//! The OAuth device flow (RFC 8628, as Google runs it): `POST /device/code`
//! hands out a device code and a user code; the device polls `POST /token` with
//! the device_code grant and gets `authorization_pending` (HTTP 428) until the
//! user code is approved ([`EmulatorState::approve_device`]) or denied
//! ([`EmulatorState::deny_device`]), `slow_down` (403, and the interval grows by
//! 5 s) when it polls faster than the interval, and `expired_token` once the code
//! has expired by the emulator's clock.
//!
//! Google limits the device flow to "TVs and Limited Input devices" clients and
//! a short list of scopes; the emulator accepts any client and known scope.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Form, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::Rng;
use serde_json::Value;

use super::authorize::finish_login;
use super::oauth::{check_client, err, error_response, required, OAuthError};
use super::state::{digest, known_scope, random_bytes, EmulatorState};
use super::{AppState, Details};

pub(crate) const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// How long a device code lives, as Google says (`expires_in`).
pub const DEVICE_CODE_EXPIRES_IN: u64 = 1800;
/// The polling interval Google hands out.
pub const DEFAULT_DEVICE_INTERVAL: u64 = 5;
/// Polls this much early still count as on time (timers and clocks differ a little).
const POLL_TOLERANCE: Duration = Duration::from_millis(100);
/// Letters of user codes (no vowels: no words).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DeviceStatus {
    Pending,
    Approved(String),
    Denied,
}

/// One device authorization, keyed by the digest of its device code.
pub(crate) struct DeviceGrant {
    client_id: String,
    scopes: Vec<String>,
    user_code: String,
    expires_at: SystemTime,
    interval: u64,
    last_poll: Option<SystemTime>,
    status: DeviceStatus,
}

impl EmulatorState {
    /// The `interval` (seconds) later device codes come with (default 5).
    pub fn set_device_interval(&self, seconds: u64) {
        self.login_state().device_interval = Some(seconds);
    }

    /// The user signs in as `principal` on the verification page, enters
    /// `user_code` and allows access. Returns whether the code was pending.
    pub fn approve_device(&self, user_code: &str, principal: &str) -> bool {
        self.decide_device(user_code, DeviceStatus::Approved(principal.to_owned()))
    }

    /// The user enters `user_code` and clicks "Cancel". Returns whether the
    /// code was pending.
    pub fn deny_device(&self, user_code: &str) -> bool {
        self.decide_device(user_code, DeviceStatus::Denied)
    }

    /// User codes still waiting for a decision and not expired.
    pub fn pending_user_codes(&self) -> Vec<String> {
        let now = self.now();
        self.login_state()
            .devices
            .values()
            .filter(|g| g.status == DeviceStatus::Pending && g.expires_at > now)
            .map(|g| g.user_code.clone())
            .collect()
    }

    fn decide_device(&self, user_code: &str, decision: DeviceStatus) -> bool {
        let wanted = normalise_user_code(user_code);
        let now = self.now();
        let mut login = self.login_state();
        match login.devices.values_mut().find(|g| {
            normalise_user_code(&g.user_code) == wanted
                && g.status == DeviceStatus::Pending
                && g.expires_at > now
        }) {
            Some(g) => {
                g.status = decision;
                true
            }
            None => false,
        }
    }
}

/// Google takes user codes in any case, with or without the dash.
fn normalise_user_code(code: &str) -> String {
    code.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn user_code() -> String {
    let mut rng = rand::thread_rng();
    let mut letter = || USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char;
    let a: String = (0..4).map(|_| letter()).collect();
    let b: String = (0..4).map(|_| letter()).collect();
    format!("{a}-{b}")
}

/// `POST /device/code`.
pub(crate) async fn device_code(
    State(state): State<AppState>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let details = Details::default();
    let result = match form {
        Ok(Form(form)) => start(&state, &form),
        Err(_) => Err(err(
            "invalid_request",
            "Required parameter is missing: client_id",
        )),
    };
    details.respond(match result {
        Ok(body) => Json(body).into_response(),
        Err(e) => error_response(e),
    })
}

fn start(state: &EmulatorState, form: &HashMap<String, String>) -> Result<Value, OAuthError> {
    let client_id = required(form, "client_id")?;
    if state.client_secret_matches(client_id, "").is_none() {
        return Err(err("invalid_client", "The OAuth client was not found."));
    }
    let scopes: Vec<String> = form
        .get("scope")
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default();
    if scopes.is_empty() {
        return Err(err("invalid_request", "Missing required parameter: scope"));
    }
    if !scopes.iter().all(|s| known_scope(s)) {
        return Err(err("invalid_scope", "Some requested scopes were invalid."));
    }
    let device_code = format!("AH-1Ng{}", URL_SAFE_NO_PAD.encode(random_bytes(48)));
    let user_code = user_code();
    let expires_at = state.now() + Duration::from_secs(DEVICE_CODE_EXPIRES_IN);
    let mut login = state.login_state();
    let interval = login.device_interval.unwrap_or(DEFAULT_DEVICE_INTERVAL);
    login.devices.insert(
        digest(&device_code),
        DeviceGrant {
            client_id: client_id.clone(),
            scopes,
            user_code: user_code.clone(),
            expires_at,
            interval,
            last_poll: None,
            status: DeviceStatus::Pending,
        },
    );
    drop(login);
    Ok(serde_json::json!({
        "device_code": device_code,
        "user_code": user_code,
        "expires_in": DEVICE_CODE_EXPIRES_IN,
        "interval": interval,
        "verification_url": format!("{}/device", state.base_url()),
    }))
}

fn with_status(mut e: OAuthError, status: StatusCode) -> OAuthError {
    e.status = status;
    e
}

/// The device_code grant at `POST /token`.
pub(super) fn poll(
    state: &EmulatorState,
    form: &HashMap<String, String>,
    details: &mut Details,
) -> Result<Value, OAuthError> {
    let client_id = check_client(state, form)?;
    let code = required(form, "device_code")?;
    let now = state.now();
    let d = digest(code);
    let mut login = state.login_state();
    let malformed = || err("invalid_grant", "Malformed auth code.");
    let g = login.devices.get_mut(&d).ok_or_else(malformed)?;
    if g.client_id != client_id {
        return Err(malformed());
    }
    if now >= g.expires_at {
        return Err(err("expired_token", "Expired."));
    }
    let too_fast = g.last_poll.is_some_and(|last| {
        now.duration_since(last).unwrap_or_default() + POLL_TOLERANCE
            < Duration::from_secs(g.interval)
    });
    g.last_poll = Some(now);
    if too_fast {
        g.interval += 5;
        return Err(with_status(
            err("slow_down", "Forbidden"),
            StatusCode::FORBIDDEN,
        ));
    }
    match g.status.clone() {
        DeviceStatus::Pending => Err(with_status(
            err("authorization_pending", "Precondition Required"),
            StatusCode::PRECONDITION_REQUIRED,
        )),
        DeviceStatus::Denied => {
            login.devices.remove(&d);
            Err(with_status(
                err("access_denied", "Forbidden"),
                StatusCode::FORBIDDEN,
            ))
        }
        DeviceStatus::Approved(principal) => {
            let grant = login.devices.remove(&d).expect("just found");
            drop(login);
            details.principal = Some(principal.clone());
            Ok(finish_login(
                state,
                &client_id,
                &principal,
                grant.scopes,
                true,
                details,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_codes_look_like_googles() {
        let c = user_code();
        assert_eq!(c.len(), 9);
        assert_eq!(&c[4..5], "-");
        assert_eq!(normalise_user_code(&c.to_lowercase()), c.replace('-', ""));
    }
}
