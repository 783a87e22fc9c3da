//! Approval windows and the token cache.
//!
//! A profile with a touch window keeps, until the window closes, the unsealed
//! upstream credential (so it can re-mint without a touch) and the tokens
//! minted under it. `every-token` profiles keep nothing. Locking drops it all;
//! dropping a credential zeroizes its secrets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use touchgate::Secret;

use crate::upstream::UpstreamCredential;

/// A token cache key: profile and its (sorted, de-duplicated) scopes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub profile: String,
    pub scopes: Vec<String>,
}

impl CacheKey {
    pub fn new(profile: &str, scopes: &[String]) -> CacheKey {
        let mut scopes = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        CacheKey {
            profile: profile.to_owned(),
            scopes,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: Secret,
    pub expires_at: SystemTime,
    pub principal: String,
}

struct Window {
    until: SystemTime,
    credential: Arc<UpstreamCredential>,
}

#[derive(Default)]
pub struct Sessions {
    windows: HashMap<String, Window>,
    tokens: HashMap<CacheKey, CachedToken>,
}

impl Sessions {
    /// The credential of an open window for `profile`.
    pub fn window_credential(
        &mut self,
        profile: &str,
        now: SystemTime,
    ) -> Option<Arc<UpstreamCredential>> {
        self.purge(now);
        self.windows.get(profile).map(|w| w.credential.clone())
    }

    pub fn open_window(
        &mut self,
        profile: &str,
        now: SystemTime,
        length: Duration,
        credential: Arc<UpstreamCredential>,
    ) {
        self.windows.insert(
            profile.to_owned(),
            Window {
                until: now + length,
                credential,
            },
        );
    }

    /// A cached token for `key`, only while its profile's window is open and
    /// the token has more than `margin` left.
    pub fn token(
        &mut self,
        key: &CacheKey,
        now: SystemTime,
        margin: Duration,
    ) -> Option<CachedToken> {
        self.purge(now);
        if !self.windows.contains_key(&key.profile) {
            return None;
        }
        self.tokens
            .get(key)
            .filter(|t| t.expires_at > now + margin)
            .cloned()
    }

    pub fn store_token(&mut self, key: CacheKey, token: CachedToken) {
        if self.windows.contains_key(&key.profile) {
            self.tokens.insert(key, token);
        }
    }

    pub fn cached_tokens(&self) -> u32 {
        self.tokens.len() as u32
    }

    /// Drop every window and token; returns how many tokens were dropped.
    pub fn lock(&mut self) -> u32 {
        let n = self.tokens.len() as u32;
        self.tokens.clear();
        self.windows.clear();
        n
    }

    fn purge(&mut self, now: SystemTime) {
        self.windows.retain(|_, w| w.until > now);
        let windows = &self.windows;
        self.tokens
            .retain(|k, t| t.expires_at > now && windows.contains_key(&k.profile));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TestClock};

    fn cred() -> Arc<UpstreamCredential> {
        Arc::new(
            UpstreamCredential::parse(
                r#"{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"r"}"#,
            )
            .unwrap(),
        )
    }

    fn tok(exp: SystemTime) -> CachedToken {
        CachedToken {
            token: Secret::new("t"),
            expires_at: exp,
            principal: "p".into(),
        }
    }

    #[test]
    fn cache_keys_ignore_scope_order() {
        let a = CacheKey::new("p", &["b".into(), "a".into(), "a".into()]);
        assert_eq!(a, CacheKey::new("p", &["a".into(), "b".into()]));
    }

    #[test]
    fn tokens_live_only_inside_the_window_and_margin() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        let k = CacheKey::new("p", &[]);
        let margin = Duration::from_secs(60);
        // No window: nothing is cached.
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(3600)));
        assert!(s.token(&k, clock.now(), margin).is_none());

        s.open_window("p", clock.now(), Duration::from_secs(600), cred());
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(300)));
        assert!(s.token(&k, clock.now(), margin).is_some());
        assert!(s.window_credential("p", clock.now()).is_some());

        // Inside the window but within the margin of expiry: not handed out.
        clock.advance(Duration::from_secs(241));
        assert!(s.token(&k, clock.now(), margin).is_none());
        assert!(s.window_credential("p", clock.now()).is_some());

        // Window closed: credential and tokens gone.
        clock.advance(Duration::from_secs(360));
        assert!(s.window_credential("p", clock.now()).is_none());
        assert_eq!(s.cached_tokens(), 0);
    }

    #[test]
    fn lock_drops_everything() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        s.open_window("p", clock.now(), Duration::from_secs(600), cred());
        s.store_token(
            CacheKey::new("p", &[]),
            tok(clock.now() + Duration::from_secs(3600)),
        );
        assert_eq!(s.lock(), 1);
        assert!(s.window_credential("p", clock.now()).is_none());
    }
}
