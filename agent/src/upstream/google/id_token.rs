//! ID tokens from Google, one way per credential:
//!
//! - impersonation (a profile's `service_account`, or an impersonation file):
//!   the base token buys one from IAM Credentials `generateIdToken`
//!   (`includeEmail`), through the same delegates as an access token;
//! - a service-account key: the jwt-bearer grant with a `target_audience` claim
//!   (no scope), answered with `{"id_token"}`;
//! - a user credential (`authorized_user`): the refresh grant's `id_token`,
//!   which Google makes only for the OAuth client itself. Any other audience is
//!   refused before a call, with the fix (a service account).
//!
//! The token's expiry is read from its `exp` claim (not verified: it is only
//! when to stop handing it out; whoever receives the token verifies it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use touchgate::Secret;
use zeroize::Zeroizing;

use super::grants::{check_quota_project, missing_field, not_json, IamCall};
use super::http::{Budget, Reply};
use super::GoogleUpstream;
use crate::upstream::credential::{AuthorizedUser, ServiceAccountKey, UpstreamCredential};
use crate::upstream::{
    jwt, IdTokenRequest, MintRequest, MintedToken, UpstreamError, CLOUD_PLATFORM,
};

/// When the reply does not say (an `exp` that cannot be read): Google's lifetime.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

impl GoogleUpstream {
    pub(super) async fn mint_id_token_inner(
        &self,
        credential: &UpstreamCredential,
        request: &IdTokenRequest,
    ) -> Result<MintedToken, UpstreamError> {
        self.endpoints.check()?;
        touchgate::check_audience(&request.audience).map_err(UpstreamError::Protocol)?;
        let budget = self.http.budget();
        let as_mint = MintRequest {
            impersonate: request.impersonate.clone(),
            delegates: request.delegates.clone(),
            quota_project: request.quota_project.clone(),
            ..MintRequest::default()
        };
        let plan = self.impersonation_plan(credential, &as_mint, "generateIdToken")?;
        let quota_project = match &request.quota_project {
            Some(p) => Some(p.as_str()),
            None => credential.quota_project(),
        };
        let quota_header = quota_project.map(check_quota_project).transpose()?;
        let source = match credential {
            UpstreamCredential::Impersonated(i) => &*i.source,
            other => other,
        };
        let token_uri = self.token_uri_for(source);
        let Some(plan) = plan else {
            return match source {
                UpstreamCredential::ServiceAccount(key) => {
                    self.service_account_id_token(key, &token_uri, &request.audience, &budget)
                        .await
                }
                UpstreamCredential::AuthorizedUser(user) => {
                    self.user_id_token(user, &token_uri, &request.audience, &budget)
                        .await
                }
                UpstreamCredential::Impersonated(_) => Err(nested()),
            };
        };
        let cloud_platform = [CLOUD_PLATFORM.to_owned()];
        let base = match source {
            UpstreamCredential::ServiceAccount(key) => {
                self.service_account_token(key, &token_uri, &cloud_platform, &budget)
                    .await?
            }
            UpstreamCredential::AuthorizedUser(user) => {
                self.refresh_token_grant(user, &token_uri, &budget).await?
            }
            UpstreamCredential::Impersonated(_) => return Err(nested()),
        };
        let body = serde_json::json!({
            "audience": request.audience,
            "includeEmail": true,
        });
        let url = plan.url.as_str();
        let reply = self
            .call_iam(IamCall {
                source,
                base_token: &base.token,
                plan: &plan,
                body,
                lifetime: 0,
                quota_header: quota_header.as_ref(),
                budget: &budget,
            })
            .await?;
        let status = reply.status;
        let what = format!("generateIdToken for {}", plan.target);
        let token = json_field(&reply.body, "token")
            .ok_or_else(|| missing_field(&what, url, status, "token"))?;
        Ok(self.minted(token, plan.target.clone()))
    }

    /// jwt-bearer grant whose assertion names `target_audience` instead of scopes.
    async fn service_account_id_token(
        &self,
        key: &ServiceAccountKey,
        token_uri: &str,
        audience: &str,
        budget: &Budget,
    ) -> Result<MintedToken, UpstreamError> {
        let claims = jwt::IdTokenClaims::new(
            &key.client_email,
            audience,
            token_uri,
            self.clock.unix_now(),
        );
        let reply = self
            .post_jwt_bearer(key, token_uri, &claims, budget)
            .await?;
        let token = id_token_of(token_uri, &reply)?;
        Ok(self.minted(token, key.client_email.clone()))
    }

    /// The refresh grant's `id_token`: its audience is the OAuth client, so only
    /// that audience can be had this way.
    async fn user_id_token(
        &self,
        user: &AuthorizedUser,
        token_uri: &str,
        audience: &str,
        budget: &Budget,
    ) -> Result<MintedToken, UpstreamError> {
        if audience != user.client_id {
            return Err(UpstreamError::Rejected(format!(
                "Google makes ID tokens for a user credential only with its own OAuth client as \
                 the audience ({}), not for another service: give the profile a service_account \
                 to impersonate (its ID tokens may name any audience)",
                user.client_id
            )));
        }
        let token = self
            .post_refresh_grant(user, token_uri, budget)
            .await
            .and_then(|reply| id_token_of(token_uri, &reply))
            .map_err(|e| match e {
                UpstreamError::Protocol(m) if m.contains("\"id_token\"") => {
                    UpstreamError::Rejected(
                        "Google gave this user credential no ID token (its login did not include \
                         the openid scope): log in again with `touchgate login`, or give the \
                         profile a service_account to impersonate"
                            .into(),
                    )
                }
                other => other,
            })?;
        Ok(self.minted(token, format!("user (client {})", user.client_id)))
    }

    fn minted(&self, token: Secret, principal: String) -> MintedToken {
        let expires_at =
            expiry_of(token.expose()).unwrap_or_else(|| self.clock.now() + DEFAULT_LIFETIME);
        MintedToken {
            access_token: token,
            expires_at,
            principal,
        }
    }
}

/// The `id_token` of a token endpoint's reply.
fn id_token_of(url: &str, reply: &Reply) -> Result<Secret, UpstreamError> {
    let what = "the token endpoint";
    if serde_json::from_slice::<Value>(&reply.body).is_err() {
        return Err(not_json(what, url, reply.status, "id_token"));
    }
    json_field(&reply.body, "id_token")
        .ok_or_else(|| missing_field(what, url, reply.status, "id_token"))
}

fn nested() -> UpstreamError {
    UpstreamError::Protocol(
        "an impersonated_service_account credential cannot be the source of another: import \
         its source credential instead"
            .into(),
    )
}

/// A non-empty string field of a JSON object reply, kept as a secret.
fn json_field(body: &[u8], name: &str) -> Option<Secret> {
    #[derive(serde::Deserialize)]
    struct Reply {
        token: Option<Secret>,
        id_token: Option<Secret>,
    }
    let r: Reply = serde_json::from_slice(body).ok()?;
    let v = match name {
        "token" => r.token,
        _ => r.id_token,
    }?;
    (!v.expose().is_empty()).then_some(v)
}

/// The `exp` claim of a JWT, unverified.
fn expiry_of(jwt: &str) -> Option<SystemTime> {
    let claims = jwt.split('.').nth(1)?;
    let bytes = Zeroizing::new(URL_SAFE_NO_PAD.decode(claims).ok()?);
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(v.get("exp")?.as_u64()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_the_claims() {
        let claims = URL_SAFE_NO_PAD.encode(br#"{"exp":1800000000,"aud":"x"}"#);
        let jwt = format!("e30.{claims}.sig");
        assert_eq!(
            expiry_of(&jwt),
            Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        );
        assert_eq!(expiry_of("not-a-jwt"), None);
        assert_eq!(expiry_of("a.%%%.c"), None);
    }

    #[test]
    fn fields_must_be_non_empty_strings() {
        assert!(json_field(br#"{"token":"t"}"#, "token").is_some());
        assert!(json_field(br#"{"token":""}"#, "token").is_none());
        assert!(json_field(br#"{"id_token":"t"}"#, "token").is_none());
        assert!(json_field(br#"{"id_token":"t"}"#, "id_token").is_some());
        assert!(json_field(b"[]", "id_token").is_none());
    }
}
