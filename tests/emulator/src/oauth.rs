//! OAuth 2.0 `POST /token`: the jwt-bearer grant (service-account JWTs, checked
//! against the account's public keys), the refresh_token grant, and the grants
//! that end a user login: authorization_code (with PKCE, see `authorize.rs`) and
//! the device_code grant (see `device.rs`).

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::{Form, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde_json::Value;
use sha2::Sha256;

/// Google's token endpoint, which real Google accepts as a JWT audience.
pub const GOOGLE_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";

use super::idtoken::IdClaims;
use super::state::{numeric_id, EmulatorState, TOKEN_EXPIRES_IN};
use super::{AppState, Details};

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Longest assertion Google accepts (`exp - iat`).
const MAX_ASSERTION_SECS: i64 = 3600;
/// How far in the future `iat` may be.
const CLOCK_SKEW_SECS: i64 = 60;

/// An OAuth error reply.
pub(super) struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

pub(super) fn err(error: &'static str, description: impl Into<String>) -> OAuthError {
    let status = if error == "invalid_client" {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::BAD_REQUEST
    };
    OAuthError {
        status,
        error,
        description: description.into(),
    }
}

/// The non-empty form field `name`, or Google's reply for a missing one.
pub(super) fn required<'a>(
    form: &'a HashMap<String, String>,
    name: &str,
) -> Result<&'a String, OAuthError> {
    form.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        err(
            "invalid_request",
            format!("Missing required parameter: {name}"),
        )
    })
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, max-age=0, must-revalidate"),
    );
    r.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) async fn token(
    State(state): State<AppState>,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let mut details = Details::default();
    let form = match form {
        Ok(Form(f)) => f,
        Err(_) => {
            let e = err(
                "invalid_request",
                "Required parameter is missing: grant_type",
            );
            return details.respond(error_response(e));
        }
    };
    details.grant_type = form.get("grant_type").cloned();
    let result = match form.get("grant_type").map(String::as_str) {
        Some(JWT_BEARER) => jwt_bearer(&state, &form, &mut details),
        Some("refresh_token") => refresh(&state, &form, &mut details),
        Some("authorization_code") => super::authorize::exchange(&state, &form, &mut details),
        Some(super::device::DEVICE_CODE_GRANT) => super::device::poll(&state, &form, &mut details),
        Some(other) => Err(err(
            "unsupported_grant_type",
            format!("Invalid grant_type: {other}"),
        )),
        None => Err(err(
            "invalid_request",
            "Required parameter is missing: grant_type",
        )),
    };
    let response = match result {
        Ok(body) => no_store(axum::response::IntoResponse::into_response(Json(body))),
        Err(e) => error_response(e),
    };
    details.respond(response)
}

pub(super) fn error_response(e: OAuthError) -> Response {
    let body = serde_json::json!({"error": e.error, "error_description": e.description});
    no_store(axum::response::IntoResponse::into_response((
        e.status,
        Json(body),
    )))
}

/// Issues a token-endpoint access token and fills in the details.
pub(super) fn grant(
    state: &EmulatorState,
    principal: &str,
    scopes: Vec<String>,
    from_refresh: Option<String>,
    details: &mut Details,
) -> Value {
    let scope = scopes.join(" ");
    let (token, _) = state.issue(
        principal,
        scopes,
        Duration::from_secs(TOKEN_EXPIRES_IN),
        from_refresh.clone(),
    );
    details.issued_fingerprint = Some(touchgate::secret::fingerprint(token.as_bytes()));
    details.lifetime_secs = Some(TOKEN_EXPIRES_IN);
    let mut body = serde_json::json!({
        "access_token": token,
        "expires_in": TOKEN_EXPIRES_IN,
        "token_type": "Bearer",
    });
    if from_refresh.is_some() {
        body["scope"] = scope.into();
    }
    body
}

fn jwt_bearer(
    state: &EmulatorState,
    form: &HashMap<String, String>,
    details: &mut Details,
) -> Result<Value, OAuthError> {
    let assertion = required(form, "assertion")?;
    let claims = verify_jwt(state, assertion, details)?;
    if let Some(audience) = &claims.target_audience {
        // An ID token for the service account: `{"id_token": …}` only, as Google answers.
        let id = numeric_id(&claims.iss);
        let (token, _) = state.sign_id_token(&IdClaims {
            audience,
            subject: &id,
            authorized_party: &claims.iss,
            email: Some(&claims.iss),
        });
        details.issued_fingerprint = Some(touchgate::secret::fingerprint(token.as_bytes()));
        return Ok(serde_json::json!({ "id_token": token }));
    }
    Ok(grant(state, &claims.iss, claims.scopes, None, details))
}

struct VerifiedClaims {
    iss: String,
    scopes: Vec<String>,
    /// `target_audience`: the assertion asks for an ID token, not an access token.
    target_audience: Option<String>,
}

fn malformed() -> OAuthError {
    err(
        "invalid_grant",
        "Invalid JWT: the assertion is not a signed JWT (header.claims.signature, base64url).",
    )
}

fn verify_jwt(
    state: &EmulatorState,
    assertion: &str,
    details: &mut Details,
) -> Result<VerifiedClaims, OAuthError> {
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header_b64, claims_b64, sig_b64] = parts[..] else {
        return Err(malformed());
    };
    let decode_json = |s: &str| -> Result<Value, OAuthError> {
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| malformed())?;
        serde_json::from_slice::<Value>(&bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(malformed)
    };
    let header = decode_json(header_b64)?;
    let claims = decode_json(claims_b64)?;
    let signature = URL_SAFE_NO_PAD.decode(sig_b64).map_err(|_| malformed())?;

    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(err(
            "invalid_grant",
            "Invalid JWT: the signing algorithm (alg) must be RS256.",
        ));
    }
    let iss = claims
        .get("iss")
        .and_then(Value::as_str)
        .ok_or_else(|| err("invalid_grant", "Invalid JWT: no iss claim."))?;
    details.principal = Some(iss.to_owned());
    let keys = state
        .service_account_keys(iss)
        .ok_or_else(|| err("invalid_grant", "Invalid grant: account not found"))?;

    // Signature: the key named by kid, else every key of the account.
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<_> = match kid {
        Some(kid) if keys.iter().any(|(id, _)| id == kid) => {
            keys.iter().filter(|(id, _)| id == kid).collect()
        }
        _ => keys.iter().collect(),
    };
    let signed = &assertion[..header_b64.len() + 1 + claims_b64.len()];
    let signature = Signature::try_from(signature.as_slice())
        .map_err(|_| err("invalid_grant", "Invalid JWT Signature."))?;
    let verified = candidates.iter().any(|(_, public)| {
        VerifyingKey::<Sha256>::new(public.clone())
            .verify(signed.as_bytes(), &signature)
            .is_ok()
    });
    if !verified {
        return Err(err("invalid_grant", "Invalid JWT Signature."));
    }

    // Google accepts its own token URL as the audience wherever the grant is
    // posted (gcloud and google-auth sign for it); ours is accepted too.
    let token_url = state.token_url();
    let aud = claims.get("aud").and_then(Value::as_str);
    if aud != Some(token_url.as_str()) && aud != Some(GOOGLE_TOKEN_URL) {
        return Err(err(
            "invalid_grant",
            format!("Invalid JWT: Failed audience check. The right audience is {token_url}"),
        ));
    }
    let now = touchgate_agent::clock::unix(state.now()) as i64;
    let iat = claims.get("iat").and_then(Value::as_i64);
    let exp = claims.get("exp").and_then(Value::as_i64);
    let sane = match (iat, exp) {
        (Some(iat), Some(exp)) => {
            exp > now
                && exp > iat
                && exp - iat <= MAX_ASSERTION_SECS
                && iat <= now + CLOCK_SKEW_SECS
        }
        _ => false,
    };
    if !sane {
        return Err(err(
            "invalid_grant",
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable \
             timeframe. Check your iat and exp values in the JWT claim.",
        ));
    }
    if let Some(sub) = claims.get("sub").and_then(Value::as_str) {
        if sub != iss {
            return Err(err(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client \
                 not authorized for any of the scopes requested.",
            ));
        }
    }
    let target_audience = claims
        .get("target_audience")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .map(str::to_owned);
    let scopes: Vec<String> = claims
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let scopes_ok = !scopes.is_empty() && scopes.iter().all(|s| super::state::known_scope(s));
    if target_audience.is_none() && !scopes_ok {
        return Err(err(
            "invalid_scope",
            "Invalid OAuth scope or ID token audience provided.",
        ));
    }
    Ok(VerifiedClaims {
        iss: iss.to_owned(),
        scopes,
        target_audience,
    })
}

/// The request's `client_id`, if it names a known client and `client_secret` is its secret.
pub(super) fn check_client(
    state: &EmulatorState,
    form: &HashMap<String, String>,
) -> Result<String, OAuthError> {
    let client_id = form
        .get("client_id")
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            err(
                "invalid_request",
                "Could not determine client ID from request.",
            )
        })?;
    let secret = form.get("client_secret").map(String::as_str).unwrap_or("");
    match state.client_secret_matches(client_id, secret) {
        None => return Err(err("invalid_client", "The OAuth client was not found.")),
        Some(false) => return Err(err("invalid_client", "Unauthorized")),
        Some(true) => {}
    }
    Ok(client_id.clone())
}

fn refresh(
    state: &EmulatorState,
    form: &HashMap<String, String>,
    details: &mut Details,
) -> Result<Value, OAuthError> {
    let client_id = check_client(state, form)?;
    let token = required(form, "refresh_token")?;
    let (digest, rt) = state
        .refresh_token(token)
        .ok_or_else(|| err("invalid_grant", "Token has been expired or revoked."))?;
    details.principal = Some(rt.principal.clone());
    if rt.revoked {
        return Err(err("invalid_grant", "Token has been expired or revoked."));
    }
    if rt.client_id != client_id {
        return Err(err("unauthorized_client", "Unauthorized"));
    }
    let openid = rt.scopes.iter().any(|s| s == "openid");
    let email = rt
        .scopes
        .iter()
        .any(|s| s == "email" || s == "https://www.googleapis.com/auth/userinfo.email");
    let mut body = grant(state, &rt.principal, rt.scopes, Some(digest), details);
    if openid {
        // As Google: a login that included `openid` refreshes with an ID token
        // whose audience is the OAuth client, never anything else.
        let id = numeric_id(&rt.principal);
        let (token, _) = state.sign_id_token(&IdClaims {
            audience: &client_id,
            subject: &id,
            authorized_party: &client_id,
            email: email.then_some(rt.principal.as_str()),
        });
        body["id_token"] = token.into();
    }
    Ok(body)
}
