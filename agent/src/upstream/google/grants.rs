//! The grants that buy a token from Google:
//!
//! 1. Base token: a service account signs an RS256 JWT (jwt-bearer grant); an
//!    `authorized_user` credential uses its refresh token (refresh_token grant);
//!    an `impersonated_service_account` file uses its source credential.
//! 2. With `impersonate` (or an impersonation file), the base token (scope
//!    cloud-platform) buys a token for the service account from
//!    `generateAccessToken`, with the asked lifetime and delegates, billed to the
//!    quota project if there is one (`x-goog-user-project`).
//!
//! ID tokens take the same steps in `id_token`. Every input that goes into a
//! URL or a header (accounts, delegates, quota project, endpoints) is checked
//! before anything is minted.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderValue;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::Value;
use touchgate::text::one_line;
use touchgate::Secret;
use zeroize::Zeroizing;

use super::advice::{impersonation_error, token_error, Shown, Who};
use super::http::{check_url, Api, Budget, Reply};
use super::GoogleUpstream;
use crate::upstream::credential::{AuthorizedUser, ServiceAccountKey, UpstreamCredential};
use crate::upstream::{jwt, MintRequest, MintedToken, UpstreamError, CLOUD_PLATFORM};

/// The header that bills a call to a quota project.
pub const USER_PROJECT_HEADER: &str = "x-goog-user-project";

impl GoogleUpstream {
    pub(super) async fn mint_inner(
        &self,
        credential: &UpstreamCredential,
        request: &MintRequest,
    ) -> Result<MintedToken, UpstreamError> {
        self.endpoints.check()?;
        let budget = self.http.budget();
        let scopes = if request.scopes.is_empty() {
            vec![CLOUD_PLATFORM.to_owned()]
        } else {
            request.scopes.clone()
        };
        // Refuse a bad target, delegate, endpoint or quota project before minting anything.
        let plan = self.impersonation_plan(credential, request, "generateAccessToken")?;
        let quota_project = match &request.quota_project {
            Some(p) => Some(p.as_str()),
            None => credential.quota_project(),
        };
        let quota_header = quota_project.map(check_quota_project).transpose()?;
        let base_scopes = match plan {
            Some(_) => vec![CLOUD_PLATFORM.to_owned()],
            None => scopes.clone(),
        };
        let source = match credential {
            UpstreamCredential::Impersonated(i) => &*i.source,
            other => other,
        };
        let token_uri = self.token_uri_for(source);
        let base = match source {
            UpstreamCredential::ServiceAccount(key) => {
                self.service_account_token(key, &token_uri, &base_scopes, &budget)
                    .await?
            }
            UpstreamCredential::AuthorizedUser(user) => {
                self.refresh_token_grant(user, &token_uri, &budget).await?
            }
            UpstreamCredential::Impersonated(_) => {
                return Err(UpstreamError::Protocol(
                    "an impersonated_service_account credential cannot be the source of \
                     another: import its source credential instead"
                        .into(),
                ))
            }
        };
        match plan {
            None => Ok(MintedToken {
                access_token: Secret::new(base.token.as_str()),
                expires_at: base.expires_at,
                principal: credential.principal(),
            }),
            Some(plan) => {
                self.generate_access_token(
                    source,
                    &base.token,
                    &plan,
                    &scopes,
                    request.lifetime,
                    quota_header,
                    &budget,
                )
                .await
            }
        }
        // `base.token` (Zeroizing) is wiped here.
    }

    /// Whom `method` (`generateAccessToken`, `generateIdToken`) is asked for,
    /// through whom, and where.
    pub(super) fn impersonation_plan(
        &self,
        credential: &UpstreamCredential,
        request: &MintRequest,
        method: &str,
    ) -> Result<Option<Plan>, UpstreamError> {
        let (target, delegates) = match (credential, &request.impersonate) {
            // The file's account is a hop on the way to the profile's.
            (UpstreamCredential::Impersonated(i), Some(profile_sa)) => {
                let mut chain = i.delegates.clone();
                chain.push(i.target.clone());
                chain.extend(request.delegates.iter().map(|d| plain_account(d)));
                (profile_sa.clone(), chain)
            }
            (UpstreamCredential::Impersonated(i), None) => (i.target.clone(), i.delegates.clone()),
            (_, Some(target)) => (
                target.clone(),
                request.delegates.iter().map(|d| plain_account(d)).collect(),
            ),
            (_, None) => return Ok(None),
        };
        check_account(&target, "service account to impersonate")?;
        for d in &delegates {
            check_account(d, "delegate")?;
        }
        let url = format!(
            "{}/v1/projects/-/serviceAccounts/{target}:{method}",
            self.iam_credentials_for(credential)
        );
        check_url(&url)?;
        Ok(Some(Plan {
            target,
            delegates,
            url,
        }))
    }

    /// jwt-bearer grant with an RS256 assertion signed by the key file's key.
    pub(super) async fn service_account_token(
        &self,
        key: &ServiceAccountKey,
        token_uri: &str,
        scopes: &[String],
        budget: &Budget,
    ) -> Result<BaseToken, UpstreamError> {
        let claims = jwt::Claims::new(&key.client_email, scopes, token_uri, self.clock.unix_now());
        let sent_at = self.clock.now();
        let reply = self
            .post_jwt_bearer(key, token_uri, &claims, budget)
            .await?;
        parse_token_reply(token_uri, reply.status, &reply.body, sent_at)
    }

    /// Posts a jwt-bearer grant whose assertion, signed by the key file's key,
    /// carries `claims` (scopes, or a target audience for an ID token):
    /// Google's reply when it says yes.
    pub(super) async fn post_jwt_bearer<C: serde::Serialize>(
        &self,
        key: &ServiceAccountKey,
        token_uri: &str,
        claims: &C,
        budget: &Budget,
    ) -> Result<Reply, UpstreamError> {
        check_url(token_uri)?;
        let signing_key = key
            .signing_key()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        let assertion = jwt::sign(&signing_key, &key.private_key_id, claims)
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        drop(signing_key);
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ];
        let who = Who::ServiceAccount {
            email: &key.client_email,
            key_id: &key.private_key_id,
        };
        self.post_grant(token_uri, &form, who, &[assertion.as_str()], budget)
            .await
        // `assertion` (Zeroizing) is wiped here.
    }

    /// refresh_token grant of an `authorized_user` credential.
    pub(super) async fn refresh_token_grant(
        &self,
        user: &AuthorizedUser,
        token_uri: &str,
        budget: &Budget,
    ) -> Result<BaseToken, UpstreamError> {
        let sent_at = self.clock.now();
        let reply = self.post_refresh_grant(user, token_uri, budget).await?;
        parse_token_reply(token_uri, reply.status, &reply.body, sent_at)
    }

    /// Posts the refresh_token grant of an `authorized_user` credential:
    /// Google's reply when it says yes.
    pub(super) async fn post_refresh_grant(
        &self,
        user: &AuthorizedUser,
        token_uri: &str,
        budget: &Budget,
    ) -> Result<Reply, UpstreamError> {
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
        self.post_grant(token_uri, &form, who, &[secret, refresh], budget)
            .await
    }

    /// POSTs a token-endpoint grant: Google's reply when it says yes, else the
    /// one-line error naming who asked, with every one of `secrets` scrubbed.
    pub(super) async fn post_grant(
        &self,
        url: &str,
        form: &[(&str, &str)],
        who: Who<'_>,
        secrets: &[&str],
        budget: &Budget,
    ) -> Result<Reply, UpstreamError> {
        let reply = self
            .http
            .call(Api::Token, url, budget, |http| http.post(url).form(form))
            .await?;
        if !reply.status.is_success() {
            let shown = Shown::for_url(&self.endpoints, url);
            return Err(token_error(
                url,
                reply.status,
                &reply.body,
                &who,
                secrets,
                &shown,
            ));
        }
        Ok(reply)
    }

    /// POSTs `call.body` (with the plan's delegates added) to the IAM
    /// Credentials method at `plan.url` as the base token's owner: Google's
    /// reply when it says yes, else the impersonation error naming the source,
    /// the target and the delegates.
    pub(super) async fn call_iam(&self, call: IamCall<'_>) -> Result<Reply, UpstreamError> {
        let IamCall {
            source,
            base_token,
            plan,
            mut body,
            lifetime,
            quota_header,
            budget,
        } = call;
        body["delegates"] = plan
            .delegates
            .iter()
            .map(|d| format!("projects/-/serviceAccounts/{d}"))
            .collect::<Vec<_>>()
            .into();
        let url = plan.url.as_str();
        let reply = self
            .http
            .call(Api::Iam, url, budget, |http| {
                let mut b = http.post(url).bearer_auth(base_token.as_str()).json(&body);
                if let Some(q) = quota_header {
                    b = b.header(USER_PROJECT_HEADER, q.clone());
                }
                b
            })
            .await?;
        if !reply.status.is_success() {
            return Err(impersonation_error(
                source,
                &plan.target,
                &plan.delegates,
                lifetime,
                reply.status,
                &reply.body,
                &[base_token.as_str()],
                &Shown::for_url(&self.endpoints, url),
            ));
        }
        Ok(reply)
    }

    #[allow(clippy::too_many_arguments)]
    async fn generate_access_token(
        &self,
        source: &UpstreamCredential,
        base_token: &Zeroizing<String>,
        plan: &Plan,
        scopes: &[String],
        lifetime: Duration,
        quota_header: Option<HeaderValue>,
        budget: &Budget,
    ) -> Result<MintedToken, UpstreamError> {
        let lifetime = lifetime.as_secs();
        let body = serde_json::json!({
            "scope": scopes,
            "lifetime": format!("{lifetime}s"),
        });
        let url = plan.url.as_str();
        let reply = self
            .call_iam(IamCall {
                source,
                base_token,
                plan,
                body,
                lifetime,
                quota_header: quota_header.as_ref(),
                budget,
            })
            .await?;
        let status = reply.status;
        let target = &plan.target;
        let what = format!("generateAccessToken for {target}");
        let reply: GenerateReply = serde_json::from_slice(&reply.body)
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
            principal: target.clone(),
        })
    }
}

/// One `generateAccessToken` call: for `target`, through `delegates` (emails), at `url`.
pub(super) struct Plan {
    pub(super) target: String,
    pub(super) delegates: Vec<String>,
    pub(super) url: String,
}

/// `projects/-/serviceAccounts/EMAIL` → `EMAIL`.
fn plain_account(d: &str) -> String {
    d.strip_prefix("projects/-/serviceAccounts/")
        .unwrap_or(d)
        .to_owned()
}

/// A quota project id, as a header value.
pub(super) fn check_quota_project(project: &str) -> Result<HeaderValue, UpstreamError> {
    let ok = !project.is_empty()
        && project.len() <= 100
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:_".contains(c));
    ok.then(|| HeaderValue::from_str(project).ok())
        .flatten()
        .ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "the quota project {:?} is not a project id: fix quota_project in the profile \
                 or quota_project_id in the credential file",
                one_line(project, 100)
            ))
        })
}

pub(super) struct BaseToken {
    pub(super) token: Zeroizing<String>,
    expires_at: SystemTime,
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
    let expires_at = sent_at
        .checked_add(Duration::from_secs(expires_in))
        .ok_or_else(|| {
            UpstreamError::Protocol(format!(
                "{what} at {url} answered with expires_in {expires_in}, past the end of the \
                 clock: is this a Google endpoint?"
            ))
        })?;
    Ok(BaseToken {
        token: Zeroizing::new(token.expose().to_owned()),
        expires_at,
    })
}

pub(super) fn not_json(what: &str, url: &str, status: StatusCode, fields: &str) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "{what} at {url} answered HTTP {status} but not with a JSON object of {fields}: is the \
         endpoint configured right?"
    ))
}

pub(super) fn missing_field(
    what: &str,
    url: &str,
    status: StatusCode,
    field: &str,
) -> UpstreamError {
    UpstreamError::Protocol(format!(
        "{what} at {url} answered HTTP {status} without a valid \"{field}\": is the endpoint \
         configured right?"
    ))
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

/// One call of an IAM Credentials method (see [`GoogleUpstream::call_iam`]).
pub(super) struct IamCall<'a> {
    pub(super) source: &'a UpstreamCredential,
    pub(super) base_token: &'a Zeroizing<String>,
    pub(super) plan: &'a Plan,
    /// The method's own fields; the delegates are added.
    pub(super) body: Value,
    /// The lifetime asked for, in seconds (0 for an ID token), for the error.
    pub(super) lifetime: u64,
    pub(super) quota_header: Option<&'a HeaderValue>,
    pub(super) budget: &'a Budget,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_must_be_path_safe() {
        assert!(check_account("a-b@p.iam.gserviceaccount.com", "x").is_ok());
        assert!(check_account("123456789012345678901", "x").is_ok());
        assert!(check_account("a/b@p", "x").is_err());
        assert!(check_account("a@p?x", "x").is_err());
        assert!(check_account("", "x").is_err());
    }

    #[test]
    fn quota_projects_must_be_project_ids() {
        assert!(check_quota_project("my-proj-123").is_ok());
        assert!(check_quota_project("example.com:proj").is_ok());
        assert!(check_quota_project("").is_err());
        assert!(check_quota_project("a b").is_err());
        assert!(check_quota_project("a\r\nx-evil: 1").is_err());
    }
}
