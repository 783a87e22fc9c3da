//! Google, seen by the agent: turn a sealed upstream credential into a
//! short-lived access token.
//!
//! [`Upstream`] is the trait; [`google::GoogleUpstream`] is the real
//! implementation (plain REST over reqwest, every endpoint configurable so the
//! emulator in `tests/` and other universes can stand in for Google).

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use touchgate::Secret;

pub mod credential;
pub mod google;
pub mod jwt;

pub use credential::{CredentialError, UpstreamCredential};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// What to mint.
#[derive(Debug, Clone, PartialEq)]
pub struct MintRequest {
    pub scopes: Vec<String>,
    /// Service account to impersonate with `generateAccessToken`, if any.
    pub impersonate: Option<String>,
    /// Lifetime asked of `generateAccessToken` (ignored without impersonation).
    pub lifetime: Duration,
    pub delegates: Vec<String>,
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub access_token: Secret,
    pub expires_at: SystemTime,
    /// The principal the token acts as (service account email or user).
    pub principal: String,
}

/// Where the Google endpoints are. Defaults are Google's.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    /// OAuth token endpoint. For service-account keys the key file's `token_uri` wins
    /// unless this is set explicitly in config.
    pub token_uri: Option<String>,
    /// IAM Credentials API base URL.
    pub iam_credentials: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            token_uri: None,
            iam_credentials: "https://iamcredentials.googleapis.com".into(),
        }
    }
}

pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// An upstream failure. Messages are one line, name what is wrong and what to do,
/// and never carry a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    #[error("{0}")]
    Rejected(String),
    #[error("cannot reach {url}: {reason}")]
    Network { url: String, reason: String },
    #[error("{0}")]
    Protocol(String),
}

/// Google (or its emulator).
pub trait Upstream: Send + Sync {
    fn mint<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a MintRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>>;
}
