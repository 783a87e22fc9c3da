//! Google's error replies, turned into one line of advice: what Google said
//! (or only its error code, from a host that is not Google's), scrubbed of the
//! secrets that were sent, and what to do about it.
//!
//! The text of an error reply is quoted only from a Google host
//! ([`Endpoints::is_google`]), scrubbed of what was sent in every encoding
//! ([`touchgate::secret::scrub`]); from any other host only its error code and
//! status, so a hostile endpoint cannot write into the client's error or the
//! audit log. [`error_reply_detail`] is the entry point of the `error_body`
//! fuzz target.
//!
//! A leaf: it knows the error shapes and the advice, not how requests are sent
//! or grants are made.

use reqwest::{StatusCode, Url};
use serde_json::Value;
use touchgate::text::one_line;

use crate::upstream::credential::UpstreamCredential;
use crate::upstream::{Endpoints, UpstreamError};

/// The role a principal needs on a service account to impersonate it.
pub const TOKEN_CREATOR_ROLE: &str = "roles/iam.serviceAccountTokenCreator";

/// Longest `generateAccessToken` lifetime without the extended-lifetime org policy.
pub const MAX_STANDARD_LIFETIME_SECS: u64 = 3600;

/// Google's messages are cut to this many characters.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;
const SCOPES_HINT: &str = "fix scopes in the profile (full URLs such as \
                           https://www.googleapis.com/auth/cloud-platform)";

/// Who asked the token endpoint, for error messages.
pub(super) enum Who<'a> {
    ServiceAccount { email: &'a str, key_id: &'a str },
    User { client_id: &'a str },
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
pub(super) enum Shown {
    /// A Google host ([`Endpoints::is_google`]): shown, without the secrets sent.
    Scrubbed,
    /// Another host (named here): only its error code and status.
    Not(String),
}

impl Shown {
    pub(super) fn for_url(endpoints: &Endpoints, url: &str) -> Shown {
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

pub(super) fn token_error(
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

#[allow(clippy::too_many_arguments)]
pub(super) fn impersonation_error(
    source: &UpstreamCredential,
    target: &str,
    delegates: &[String],
    lifetime: u64,
    status: StatusCode,
    body: &[u8],
    secrets: &[&str],
    shown: &Shown,
) -> UpstreamError {
    let detail = error_detail(status, body, secrets, shown);
    let principal = caller_name(source);
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
