//! IAM Service Account Credentials:
//! `POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken` and
//! `…:generateIdToken`.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::idtoken::IdClaims;
use super::state::{
    known_scope, numeric_id, EmulatorState, IssuedToken, CLOUD_PLATFORM, MAX_LIFETIME_SECS,
};
use super::{authenticate, google_error, rfc3339, AppState, Details};

const IAM_SCOPE: &str = "https://www.googleapis.com/auth/iam";
const DEFAULT_LIFETIME_SECS: u64 = 3600;

fn denied() -> Response {
    google_error(
        StatusCode::FORBIDDEN,
        "PERMISSION_DENIED",
        "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
    )
}

fn invalid(message: &str) -> Response {
    google_error(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
}

fn not_found(email: &str) -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        &format!("Not found; Gaia id not found for email {email}"),
    )
}

/// `{name}` is the whole last segment, `EMAIL:METHOD` (routes cannot split on `:`).
pub(crate) async fn service_account_method(
    State(state): State<AppState>,
    Path((_project, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut details = Details::default();
    let response = match name.rsplit_once(':') {
        Some((email, "generateAccessToken")) => {
            details.target = Some(email.to_owned());
            generate_access_token(&state, email, &headers, &body, &mut details)
                .unwrap_or_else(|r| r)
        }
        Some((email, "generateIdToken")) => {
            details.target = Some(email.to_owned());
            generate_id_token(&state, email, &headers, &body, &mut details).unwrap_or_else(|r| r)
        }
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Method not found."),
    };
    details.respond(response)
}

/// Why a caller may not act as a service account through delegates.
enum Chain<'a> {
    /// A delegate that does not exist.
    Unknown(&'a str),
    /// A hop without the Token Creator grant.
    Denied,
}

/// caller → delegate 1 → … → delegate n → `target`: every delegate exists and
/// each hop holds the grant.
fn check_chain<'a>(
    state: &EmulatorState,
    caller: &'a str,
    delegates: &'a [String],
    target: &'a str,
) -> Result<(), Chain<'a>> {
    if let Some(missing) = delegates.iter().find(|d| !state.has_service_account(d)) {
        return Err(Chain::Unknown(missing));
    }
    let mut chain = Vec::with_capacity(delegates.len() + 2);
    chain.push(caller);
    chain.extend(delegates.iter().map(String::as_str));
    chain.push(target);
    if chain
        .windows(2)
        .any(|hop| !state.has_token_creator(hop[0], hop[1]))
    {
        return Err(Chain::Denied);
    }
    Ok(())
}

/// An IAM Credentials call's bearer (with the scopes IAM asks for) and its
/// JSON object body.
// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn iam_request(
    state: &EmulatorState,
    headers: &HeaderMap,
    body: &[u8],
    details: &mut Details,
) -> Result<(IssuedToken, Value), Response> {
    let caller = authenticate(state, headers, details, &[CLOUD_PLATFORM, IAM_SCOPE])?;
    let request: Value = serde_json::from_slice(body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| invalid("Invalid JSON payload received."))?;
    Ok((caller, request))
}

// The error is the ready-made HTTP reply; size does not matter here.
#[allow(clippy::result_large_err)]
fn generate_access_token(
    state: &EmulatorState,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
    details: &mut Details,
) -> Result<Response, Response> {
    let (caller, request) = iam_request(state, headers, body, details)?;

    let scopes: Vec<String> = match request.get("scope") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    if scopes.is_empty() {
        return Err(invalid("Scope required."));
    }
    if let Some(bad) = scopes.iter().find(|s| !known_scope(s)) {
        return Err(invalid(&format!(
            "Invalid value at 'scope': {bad:?} is not a valid OAuth scope."
        )));
    }
    let lifetime = match request.get("lifetime") {
        None | Some(Value::Null) => DEFAULT_LIFETIME_SECS,
        Some(Value::String(s)) => parse_duration(s).ok_or_else(|| {
            invalid(
                "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration), \
                 Field 'lifetime', Illegal duration format; duration must end with 's'",
            )
        })?,
        Some(_) => {
            return Err(invalid(
                "Invalid value at 'lifetime' (type.googleapis.com/google.protobuf.Duration)",
            ))
        }
    };

    let delegates: Vec<String> = match request.get("delegates") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|d| {
                d.strip_prefix("projects/-/serviceAccounts/")
                    .unwrap_or(d)
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    };

    if !state.has_service_account(target) {
        return Err(not_found(target));
    }
    // Up to 12 h only for accounts the extended-lifetime org policy lists.
    let max = state.max_lifetime_secs(target);
    if lifetime == 0 || lifetime > max {
        return Err(invalid(&if max == MAX_LIFETIME_SECS {
            "The lifetime must be between 1 and 3600 seconds (longer needs the org policy \
             constraints/iam.allowServiceAccountCredentialLifetimeExtension)."
                .to_owned()
        } else {
            format!("The lifetime must be between 1 and {max} seconds.")
        }));
    }
    match check_chain(state, &caller.principal, &delegates, target) {
        Err(Chain::Unknown(missing)) => return Err(not_found(missing)),
        Err(Chain::Denied) => return Err(denied()),
        Ok(()) => {}
    }

    let (token, expires_at) = state.issue(target, scopes, Duration::from_secs(lifetime), None);
    details.issued_fingerprint = Some(touchgate::secret::fingerprint(token.as_bytes()));
    details.lifetime_secs = Some(lifetime);
    Ok(Json(serde_json::json!({
        "accessToken": token,
        "expireTime": rfc3339(expires_at),
    }))
    .into_response())
}

/// `generateIdToken`: `{audience, includeEmail, delegates}` → `{token}`, an ID
/// token for the service account signed with the emulator's key. The same
/// chain of grants as `generateAccessToken`.
#[allow(clippy::result_large_err)]
fn generate_id_token(
    state: &EmulatorState,
    target: &str,
    headers: &HeaderMap,
    body: &[u8],
    details: &mut Details,
) -> Result<Response, Response> {
    let (caller, request) = iam_request(state, headers, body, details)?;
    let audience = match request.get("audience") {
        Some(Value::String(a)) if !a.is_empty() => a.clone(),
        _ => return Err(invalid("Audience required.")),
    };
    let include_email = request.get("includeEmail") == Some(&Value::Bool(true));
    let delegates = delegates_of(&request);
    if !state.has_service_account(target) {
        return Err(not_found(target));
    }
    match check_chain(state, &caller.principal, &delegates, target) {
        Err(Chain::Unknown(missing)) => return Err(not_found(missing)),
        Err(Chain::Denied) => return Err(google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Permission 'iam.serviceAccounts.getOpenIdToken' denied on resource (or it may not exist).",
        )),
        Ok(()) => {}
    }
    let id = numeric_id(target);
    let (token, _) = state.sign_id_token(&IdClaims {
        audience: &audience,
        subject: &id,
        authorized_party: &id,
        email: include_email.then_some(target),
    });
    details.issued_fingerprint = Some(touchgate::secret::fingerprint(token.as_bytes()));
    details.lifetime_secs = Some(super::idtoken::ID_TOKEN_LIFETIME.as_secs());
    Ok(Json(serde_json::json!({ "token": token })).into_response())
}

/// `delegates` as emails (the request may write `projects/-/serviceAccounts/EMAIL`).
fn delegates_of(request: &Value) -> Vec<String> {
    match request.get("delegates") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(|d| {
                d.strip_prefix("projects/-/serviceAccounts/")
                    .unwrap_or(d)
                    .to_owned()
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A protobuf JSON Duration: `"300s"`, `"1.5s"` (fractions dropped).
fn parse_duration(s: &str) -> Option<u64> {
    let n = s.strip_suffix('s')?;
    let (whole, frac) = n.split_once('.').unwrap_or((n, "0"));
    if whole.is_empty() || !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    whole.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s"), Some(300));
        assert_eq!(parse_duration("1.5s"), Some(1));
        assert_eq!(parse_duration("300"), None);
        assert_eq!(parse_duration("-3s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
