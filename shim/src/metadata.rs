//! The GCE metadata subset that gcloud, google-auth, Go, Java and Node read
//! (the README's "Using gcloud and Python" says which variable each reads): ping, project, the service account, its access
//! token and ID tokens (`identity?audience=…`).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use crate::broker::{effective_scopes, AskError};
use crate::config::derived_project_number;
use crate::server::{without_metadata_flavor, Caller, Shim};

const PREFIX: &str = "/computeMetadata/v1";

fn text(body: impl Into<String>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "not found\n",
    )
        .into_response()
}

/// Every path outside the STS routes.
pub async fn handle(
    State(shim): State<Arc<Shim>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method != Method::GET {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "only GET is served here\n",
        )
            .into_response();
    }
    let path = uri.path();
    // The ping (`GET /`) works without the header, as on GCE: clients probe with it.
    if path == "/" {
        return text("computeMetadata/\n");
    }
    if let Some(refused) = without_metadata_flavor(&headers) {
        return refused;
    }
    let Some(rest) = path.strip_prefix(PREFIX) else {
        return not_found();
    };
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    Some((k.to_owned(), percent_decode(v)?))
                })
                .collect()
        })
        .unwrap_or_default();
    let recursive = query.get("recursive").is_some_and(|v| v == "true");
    let json_alt = query.get("alt").is_some_and(|v| v == "json");
    let reply = |s: String| {
        if json_alt {
            Json(serde_json::Value::String(s)).into_response()
        } else {
            text(s)
        }
    };

    let rest = rest.trim_start_matches('/');
    match rest {
        "" => return text("instance/\nproject/\nuniverse/\n"),
        "project" | "project/" => return text("numeric-project-id\nproject-id\n"),
        "universe" | "universe/" => return text("universe-domain\n"),
        "universe/universe-domain" => {
            return reply(touchgate::google::DEFAULT_UNIVERSE_DOMAIN.into())
        }
        "instance" | "instance/" => return text("service-accounts/\n"),
        _ => {}
    }

    match rest {
        "project/project-id" => {
            return match project_id(&shim).await {
                Ok(Some(p)) => reply(p),
                Ok(None) => not_found(),
                Err(e) => agent_error(&e),
            }
        }
        "project/numeric-project-id" => {
            // Never an error: gcloud reads this to decide "on GCE" and caches a
            // "no" for 10 minutes. Without a project, any stable digits do.
            let n = match shim.opts.project_number {
                Some(n) => n,
                None => {
                    let p = project_id(&shim).await.ok().flatten();
                    derived_project_number(p.as_deref().unwrap_or("touchgate"))
                }
            };
            return reply(n.to_string());
        }
        _ => {}
    }

    let Some(sa_path) = rest.strip_prefix("instance/service-accounts") else {
        return not_found();
    };
    let profile = match shim.broker.profile(shim.opts.profile.as_deref()).await {
        Ok(p) => p,
        Err(e) => return agent_error(&e),
    };
    let email = service_account_email(&profile);
    let sa_path = sa_path.trim_start_matches('/');
    if sa_path.is_empty() {
        return text(format!("default/\n{email}/\n"));
    }
    let (account, item) = sa_path.split_once('/').unwrap_or((sa_path, ""));
    if account != "default" && account != email {
        return not_found();
    }
    match item {
        "" if recursive => Json(serde_json::json!({
            "aliases": ["default"],
            "email": email,
            "scopes": profile.scopes,
        }))
        .into_response(),
        "" => text("aliases\nemail\nidentity\nscopes\ntoken\n"),
        "aliases" => reply("default".into()),
        "email" => reply(email),
        "scopes" => text(
            profile
                .scopes
                .iter()
                .map(|s| format!("{s}\n"))
                .collect::<String>(),
        ),
        "token" => {
            let asked: Vec<String> = query
                .get("scopes")
                .map(|s| {
                    s.split([',', ' '])
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let scopes = effective_scopes(&asked, &profile.scopes);
            match shim
                .broker
                .token(Some(&profile.name), &scopes, caller.hint())
                .await
            {
                Ok(t) => Json(serde_json::json!({
                    "access_token": t.access_token.expose(),
                    "expires_in": t.expires_in(),
                    "token_type": "Bearer",
                }))
                .into_response(),
                Err(e) => agent_error(&e),
            }
        }
        "identity" => {
            // As GCE: the audience is required; `format` and `licenses` change
            // only claims Google adds on a VM, so they are accepted and ignored.
            let audience = query.get("audience").map(String::as_str).unwrap_or("");
            if audience == touchgate::google::GCLOUD_CLIENT_ID {
                return not_found();
            }
            if let Err(e) = touchgate::check_audience(audience) {
                return (
                    StatusCode::BAD_REQUEST,
                    [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                    format!("touchgate: {e}\n"),
                )
                    .into_response();
            }
            match shim
                .broker
                .id_token(Some(&profile.name), audience, caller.hint())
                .await
            {
                Ok(t) => text(t.access_token.expose().to_owned()),
                Err(e) => agent_error(&e),
            }
        }
        _ => not_found(),
    }
}

/// The project: `--project`, else the profile's.
async fn project_id(shim: &Shim) -> Result<Option<String>, AskError> {
    if let Some(p) = &shim.opts.project {
        return Ok(Some(p.clone()));
    }
    Ok(shim
        .broker
        .profile(shim.opts.profile.as_deref())
        .await?
        .project)
}

/// The profile's service account, or a placeholder naming the profile (user credentials).
pub fn service_account_email(p: &touchgate::ProfileInfo) -> String {
    p.service_account
        .clone()
        .unwrap_or_else(|| format!("touchgate-{}@touchgate.invalid", p.name))
}

/// An agent error for a metadata client. Errors a retry cannot fix (touch
/// refused or timed out, unknown profile, …) are 403, which google-auth does
/// not retry, so the client fails at once with our message; anything else
/// (agent not running, upstream trouble) is 500, which it retries.
pub fn agent_error(e: &AskError) -> Response {
    use touchgate::ErrorCode::*;
    let status = match e.code {
        Some(
            TouchDenied | TouchTimeout | PeerRefused | UnknownProfile | UnknownCredential
            | NotEnrolled | Pin | KeyVerification | Config | BadRequest,
        ) => StatusCode::FORBIDDEN,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("touchgate: {}\n", e.message),
    )
        .into_response()
}

/// Decode `%XX` and `+` in a query value; `None` if malformed.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform%2Ca+b")
                .unwrap(),
            "https://www.googleapis.com/auth/cloud-platform,a b"
        );
        assert!(percent_decode("%zz").is_none());
        assert!(percent_decode("%4").is_none());
    }
}
