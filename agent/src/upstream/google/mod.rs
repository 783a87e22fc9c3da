//! The real upstream: Google's OAuth token endpoint and the IAM Credentials API,
//! as plain REST over reqwest. Every endpoint is configurable ([`Endpoints`], or
//! the credential file's `token_uri` / impersonation URL), so the emulator in
//! `tests/` can stand in for Google.
//!
//! Transient failures (network, HTTP 5xx, 429) are retried under one deadline
//! per mint ([`Retry`]). Errors are one line, say what to do, and never carry a
//! token, an assertion, a secret or a success body; the text of an error reply
//! is quoted only from a Google host ([`Endpoints::is_google`]), scrubbed.
//!
//! # Layout
//!
//! - `mod.rs`: [`GoogleUpstream`], its settings, and [`Upstream`] for it.
//! - `grants.rs`: access tokens: the jwt-bearer and refresh_token grants, and
//!   `generateAccessToken` for impersonation; checks of accounts, delegates and
//!   quota projects.
//! - `id_token.rs`: ID tokens, by the same grants or `generateIdToken`.
//! - `http.rs`: `Http`, the HTTPS client with its retry policy and sleeper: one
//!   call with retries under the deadline, reading replies; which URLs may
//!   carry credentials.
//! - `advice.rs`: error replies → one line of advice, scrubbed of secrets
//!   ([`error_reply_detail`]).
//!
//! Arrows point one way: `mod.rs` → `id_token` → `grants` → `http` → `advice`.
//! `grants` and `id_token` add the minting methods to [`GoogleUpstream`] (they
//! read its endpoints and clock); `http` and `advice` know nothing of it, so a
//! change to how requests are sent or errors worded stays in one file.

use std::fmt;
use std::sync::Arc;

use self::http::Http;
use super::credential::UpstreamCredential;
use super::retry::{Retry, Sleeper};
use super::{
    BoxFuture, Endpoints, IdTokenRequest, MintRequest, MintedToken, Upstream, UpstreamError,
};
use crate::clock::Clock;

mod advice;
mod grants;
mod http;
mod id_token;

pub use self::advice::{error_reply_detail, MAX_STANDARD_LIFETIME_SECS, TOKEN_CREATOR_ROLE};
pub use self::grants::USER_PROJECT_HEADER;
pub use self::http::{CONNECT_TIMEOUT, REQUEST_TIMEOUT};

/// Google (or an emulator), over HTTPS.
pub struct GoogleUpstream {
    endpoints: Endpoints,
    clock: Arc<dyn Clock>,
    /// Every request goes through here, retried as the endpoints say.
    http: Http,
}

impl fmt::Debug for GoogleUpstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GoogleUpstream")
            .field("endpoints", &self.endpoints)
            .field("retry", &self.http.retry())
            .finish_non_exhaustive()
    }
}

impl GoogleUpstream {
    /// Retries as `endpoints` says (`max_attempts`, `deadline`), waiting for real.
    pub fn new(endpoints: Endpoints, clock: Arc<dyn Clock>) -> Self {
        GoogleUpstream {
            http: Http::new(endpoints.retry(), clock.clone()),
            endpoints,
            clock,
        }
    }

    /// Waits between attempts with `sleeper` (tests: a recording one).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.http.set_sleeper(sleeper);
        self
    }

    /// Replaces the retry policy taken from the endpoints.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.http.set_retry(Retry {
            max_attempts: retry.max_attempts.max(1),
            ..retry
        });
        self
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn retry(&self) -> Retry {
        self.http.retry()
    }

    /// The token endpoint used for `credential`: the configured one if set, else
    /// the credential file's `token_uri`, else the universe's.
    pub fn token_uri_for(&self, credential: &UpstreamCredential) -> String {
        self.endpoints
            .token_uri
            .clone()
            .or_else(|| credential.token_uri().map(str::to_owned))
            .unwrap_or_else(|| self.endpoints.default_token_uri())
    }

    /// The IAM Credentials base URL used for `credential`: the configured one if
    /// set, else the one an impersonation file points at, else the universe's.
    pub fn iam_credentials_for(&self, credential: &UpstreamCredential) -> String {
        match (&self.endpoints.iam_credentials, credential) {
            (None, UpstreamCredential::Impersonated(i)) => {
                i.iam_credentials_base().trim_end_matches('/').to_owned()
            }
            _ => self.endpoints.iam_credentials_url(),
        }
    }
}

impl Upstream for GoogleUpstream {
    fn mint<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a MintRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>> {
        Box::pin(self.mint_inner(credential, request))
    }

    fn mint_id_token<'a>(
        &'a self,
        credential: &'a UpstreamCredential,
        request: &'a IdTokenRequest,
    ) -> BoxFuture<'a, Result<MintedToken, UpstreamError>> {
        Box::pin(self.mint_id_token_inner(credential, request))
    }
}

#[cfg(test)]
mod tests {
    /// The files, lowest first: each may import only those before it, and
    /// `http` and `advice` not [`super::GoogleUpstream`] either.
    const FILES: [(&str, &str); 4] = [
        ("advice", include_str!("advice.rs")),
        ("http", include_str!("http.rs")),
        ("grants", include_str!("grants.rs")),
        ("id_token", include_str!("id_token.rs")),
    ];

    /// The siblings (and `GoogleUpstream`) that `text` names through `super::`,
    /// above its `#[cfg(test)]` tail.
    fn imports(text: &str) -> Vec<&'static str> {
        let code = text.split("#[cfg(test)]").next().unwrap_or(text);
        FILES
            .iter()
            .map(|(name, _)| *name)
            .chain(["GoogleUpstream"])
            .filter(|name| code.contains(&format!("super::{name}")))
            .collect()
    }

    #[test]
    fn the_files_import_one_way() {
        for (i, (name, text)) in FILES.iter().enumerate() {
            for import in imports(text) {
                let below = FILES[..i].iter().any(|(n, _)| *n == import);
                let owner = import == "GoogleUpstream" && i >= 2;
                assert!(
                    below || owner,
                    "{name}.rs imports {import}: the arrows in upstream/google point \
                     id_token → grants → http → advice; move what both need down"
                );
            }
        }
        // The scanner sees the arrows that are there.
        assert_eq!(imports(FILES[1].1), ["advice"]);
        assert_eq!(imports(FILES[3].1), ["http", "grants", "GoogleUpstream"]);
    }
}
