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
pub mod retry;

pub use credential::{CredentialError, UpstreamCredential};
#[cfg(any(test, feature = "testing"))]
pub use retry::RecordingSleeper;
pub use retry::{Retry, Sleeper, TokioSleeper};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub use touchgate::google::{CLOUD_PLATFORM, DEFAULT_TOKEN_URI, DEFAULT_UNIVERSE_DOMAIN};

/// What to mint.
#[derive(Debug, Clone, PartialEq)]
pub struct MintRequest {
    pub scopes: Vec<String>,
    /// Service account to impersonate with `generateAccessToken`, if any.
    pub impersonate: Option<String>,
    /// Lifetime asked of `generateAccessToken` (ignored without impersonation).
    pub lifetime: Duration,
    pub delegates: Vec<String>,
    /// Project billed for the IAM Credentials calls (`x-goog-user-project`).
    /// Wins over the credential's own `quota_project_id`.
    pub quota_project: Option<String>,
}

impl Default for MintRequest {
    /// Scope cloud-platform, no impersonation, an hour.
    fn default() -> Self {
        MintRequest {
            scopes: vec![CLOUD_PLATFORM.to_owned()],
            impersonate: None,
            lifetime: Duration::from_secs(3600),
            delegates: Vec::new(),
            quota_project: None,
        }
    }
}

/// What ID token to mint: for `audience`, as the credential's principal or,
/// with `impersonate`, as that service account (through `delegates`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdTokenRequest {
    pub audience: String,
    pub impersonate: Option<String>,
    pub delegates: Vec<String>,
    /// Project billed for the IAM Credentials call (`x-goog-user-project`).
    pub quota_project: Option<String>,
}

/// A minted token.
#[derive(Debug, Clone)]
pub struct MintedToken {
    pub access_token: Secret,
    pub expires_at: SystemTime,
    /// The principal the token acts as (service account email or user).
    pub principal: String,
}

/// Where the Google endpoints are, and how hard to try them (`[google]` in the
/// config). Defaults are Google's.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Endpoints {
    /// The universe the default endpoints live in (`oauth2.UNIVERSE`,
    /// `iamcredentials.UNIVERSE`). Default `googleapis.com`.
    pub universe_domain: String,
    /// OAuth token endpoint. For credential files the file's `token_uri` wins
    /// unless this is set explicitly in config. Default `https://oauth2.UNIVERSE/token`.
    pub token_uri: Option<String>,
    /// IAM Credentials API base URL. Default: the one an
    /// `impersonated_service_account` file names, else `https://iamcredentials.UNIVERSE`.
    pub iam_credentials: Option<String>,
    /// Attempts per call when Google fails transiently (network, HTTP 5xx, 429). Default 4.
    pub max_attempts: u32,
    /// Time one mint may take, retries and waits included. Default `20s`.
    #[serde(with = "touchgate::duration::google_deadline")]
    pub deadline: Duration,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            universe_domain: DEFAULT_UNIVERSE_DOMAIN.into(),
            token_uri: None,
            iam_credentials: None,
            max_attempts: Retry::DEFAULT_MAX_ATTEMPTS,
            deadline: Retry::DEFAULT_DEADLINE,
        }
    }
}

impl Endpoints {
    /// Endpoints of an emulator (or any one host) at `base_url`: token endpoint
    /// `BASE/token`, IAM Credentials at `BASE`.
    pub fn at(base_url: &str) -> Self {
        let base = base_url.trim_end_matches('/');
        Endpoints {
            token_uri: Some(format!("{base}/token")),
            iam_credentials: Some(base.to_owned()),
            ..Endpoints::default()
        }
    }

    /// The universe's token endpoint (`https://oauth2.UNIVERSE/token`).
    pub fn default_token_uri(&self) -> String {
        format!("https://oauth2.{}/token", self.universe())
    }

    /// The configured IAM Credentials base URL, else the universe's.
    pub fn iam_credentials_url(&self) -> String {
        match &self.iam_credentials {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://iamcredentials.{}", self.universe()),
        }
    }

    /// The retry policy these settings describe.
    pub fn retry(&self) -> Retry {
        Retry {
            max_attempts: self.max_attempts.max(1),
            deadline: self.deadline,
            ..Retry::default()
        }
    }

    /// Whether `url` is Google's, so that the text of its error replies may be
    /// shown and written to the audit log (scrubbed): an https host in the
    /// universe (`*.googleapis.com` by default), or the origin of an endpoint
    /// named in `[google]` (`token_uri`, `iam_credentials`; an emulator in
    /// tests). An endpoint that only a credential file names is not.
    pub fn is_google(&self, url: &str) -> bool {
        let Ok(u) = reqwest::Url::parse(url) else {
            return false;
        };
        let configured = [&self.token_uri, &self.iam_credentials]
            .into_iter()
            .flatten()
            .any(|c| reqwest::Url::parse(c).is_ok_and(|c| c.origin() == u.origin()));
        if configured {
            return true;
        }
        let universe = self.universe().to_ascii_lowercase();
        let host = u.host_str().unwrap_or("").to_ascii_lowercase();
        u.scheme() == "https" && (host == universe || host.ends_with(&format!(".{universe}")))
    }

    fn universe(&self) -> &str {
        let u = self.universe_domain.trim().trim_matches('.');
        if u.is_empty() {
            DEFAULT_UNIVERSE_DOMAIN
        } else {
            u
        }
    }

    /// Checks the universe domain is a host name.
    pub fn check(&self) -> Result<(), UpstreamError> {
        let u = self.universe();
        let ok = u.len() <= 253
            && u.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if ok {
            Ok(())
        } else {
            Err(UpstreamError::Protocol(format!(
                "universe_domain {:?} in [google] is not a domain name: write it like \
                 \"googleapis.com\"",
                u.chars().take(100).collect::<String>()
            )))
        }
    }
}

/// An upstream failure. Messages are one line, name what is wrong and what to do,
/// and never carry a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpstreamError {
    /// Google said no, and asking again will not help (4xx other than 429).
    #[error("{0}")]
    Rejected(String),
    /// The endpoint could not be reached, on every attempt.
    #[error(
        "cannot reach {url} ({reason}) after {}: check the network, proxy settings and the \
         endpoint URL",
        attempts_text(*.attempts)
    )]
    Network {
        url: String,
        reason: String,
        attempts: u32,
    },
    /// Google kept failing transiently (HTTP 5xx or 429), or did not answer
    /// within the deadline: worth trying again later.
    #[error("{message}")]
    Unavailable { message: String, attempts: u32 },
    #[error("{0}")]
    Protocol(String),
}

impl UpstreamError {
    /// Whether the failure was transient (network, 5xx, 429, deadline): the same
    /// request may well succeed later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Network { .. } | UpstreamError::Unavailable { .. }
        )
    }
}

/// `1 attempt`, `4 attempts`.
pub(crate) fn attempts_text(n: u32) -> String {
    if n == 1 {
        "1 attempt".to_owned()
    } else {
        format!("{n} attempts")
    }
}

/// Google (or its emulator).
pub trait Upstream: Send + Sync {
    fn mint<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a MintRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>>;

    /// An ID token (in [`MintedToken::access_token`]). Upstreams that cannot
    /// make one say so.
    fn mint_id_token<'a>(
        &'a self,
        _credential: &'a UpstreamCredential,
        _request: &'a IdTokenRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>> {
        Box::pin(async {
            Err(UpstreamError::Protocol(
                "this upstream cannot mint ID tokens".into(),
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Section {
        google: Endpoints,
    }

    fn parse(text: &str) -> Result<Endpoints, String> {
        toml::from_str::<Section>(text)
            .map(|s| s.google)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_derive_from_the_universe() {
        let d = Endpoints::default();
        assert_eq!(d.default_token_uri(), DEFAULT_TOKEN_URI);
        assert_eq!(
            d.iam_credentials_url(),
            "https://iamcredentials.googleapis.com"
        );
        assert_eq!(d.retry().max_attempts, 4);
        assert_eq!(d.retry().deadline, Duration::from_secs(20));

        let e = parse("[google]\nuniverse_domain = \"cloud.example.eu\"\n").unwrap();
        assert_eq!(
            e.default_token_uri(),
            "https://oauth2.cloud.example.eu/token"
        );
        assert_eq!(
            e.iam_credentials_url(),
            "https://iamcredentials.cloud.example.eu"
        );
        assert!(e.check().is_ok());

        // Explicit endpoints win.
        let e = parse(
            "[google]\nuniverse_domain = \"cloud.example.eu\"\niam_credentials = \"http://127.0.0.1:9/\"\n",
        )
        .unwrap();
        assert_eq!(e.iam_credentials_url(), "http://127.0.0.1:9");

        let bad = Endpoints {
            universe_domain: "evil.com/x?".into(),
            ..Endpoints::default()
        };
        assert!(bad
            .check()
            .unwrap_err()
            .to_string()
            .contains("not a domain"));
    }

    #[test]
    fn google_hosts_are_the_universe_and_what_the_config_names() {
        let d = Endpoints::default();
        assert!(d.is_google("https://oauth2.googleapis.com/token"));
        assert!(d.is_google("https://iamcredentials.googleapis.com/v1/x"));
        assert!(!d.is_google("http://oauth2.googleapis.com/token"));
        assert!(!d.is_google("https://oauth2.googleapis.com.evil.example/token"));
        assert!(!d.is_google("https://evilgoogleapis.com/token"));
        assert!(
            !d.is_google("http://127.0.0.1:8080/token"),
            "named only by a file"
        );
        assert!(!d.is_google("not a url"));
        let emu = Endpoints::at("http://127.0.0.1:8080/");
        assert!(emu.is_google("http://127.0.0.1:8080/token"));
        assert!(emu.is_google("http://127.0.0.1:8080/v1/projects/-/x"));
        assert!(!emu.is_google("http://127.0.0.1:8081/token"));
        let eu = parse("[google]\nuniverse_domain = \"cloud.example.eu\"\n").unwrap();
        assert!(eu.is_google("https://oauth2.cloud.example.eu/token"));
        assert!(!eu.is_google("https://oauth2.googleapis.com/token"));
    }

    #[test]
    fn retry_settings_parse() {
        let e = parse("[google]\nmax_attempts = 2\ndeadline = \"1m30s\"\n").unwrap();
        assert_eq!(e.retry().max_attempts, 2);
        assert_eq!(e.deadline, Duration::from_secs(90));
        let e = parse("[google]\ndeadline = \"750ms\"\n").unwrap();
        assert_eq!(e.deadline, Duration::from_millis(750));
        let e = parse("[google]\ndeadline = 5\nmax_attempts = 0\n").unwrap();
        assert_eq!(e.deadline, Duration::from_secs(5));
        assert_eq!(e.retry().max_attempts, 1, "at least one attempt");
        let err = parse("[google]\ndeadline = \"soon\"\n").unwrap_err();
        assert!(err.contains("\"soon\" is not a duration"), "{err}");
        let err = parse("[google]\nretries = 3\n").unwrap_err();
        assert!(err.contains("unknown field"), "{err}");
        // Round trip.
        let text = toml::to_string(&Endpoints::default()).unwrap();
        assert!(text.contains("deadline = \"20s\""), "{text}");
    }

    #[test]
    fn transient_errors_say_so() {
        let n = UpstreamError::Network {
            url: "http://127.0.0.1:9/token".into(),
            reason: "connection refused".into(),
            attempts: 4,
        };
        assert!(n.is_transient());
        assert_eq!(
            n.to_string(),
            "cannot reach http://127.0.0.1:9/token (connection refused) after 4 attempts: check \
             the network, proxy settings and the endpoint URL"
        );
        assert!(!UpstreamError::Rejected("x".into()).is_transient());
        assert!(!UpstreamError::Protocol("x".into()).is_transient());
    }
}
