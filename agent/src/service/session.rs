//! Approval windows and the token cache.
//!
//! A profile with a touch window keeps, until the window closes, the unsealed
//! upstream credential (so it can re-mint without a touch) and the tokens
//! minted under it. A window belongs to the profile, or to one program when the
//! profile says `per = "caller"`; it may also end after a number of tokens.
//! `every-token` profiles keep nothing, except a kubectl window (profile
//! `kubectl_window`): the one token a touch minted, handed again to the same
//! kubectl for the same cluster, with no credential kept — when that token is
//! spent, the next needs a touch. Locking drops it all; dropping a credential
//! zeroizes its secrets.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use touchgate::Secret;

use crate::upstream::UpstreamCredential;

/// A single-flight key: the window, the profile and its (sorted, de-duplicated)
/// scopes, or, for an ID token, its audience (and no scopes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The approval window this request belongs to (see [`crate::policy::decide`]).
    pub window: String,
    pub profile: String,
    pub scopes: Vec<String>,
    /// An ID token for this audience, not an access token.
    pub audience: Option<String>,
}

impl CacheKey {
    pub fn new(window: &str, profile: &str, scopes: &[String]) -> CacheKey {
        CacheKey {
            window: window.to_owned(),
            profile: profile.to_owned(),
            scopes: scope_set(scopes).into_owned(),
            audience: None,
        }
    }

    /// The key of an ID token for `audience`.
    pub fn id_token(window: &str, profile: &str, audience: &str) -> CacheKey {
        CacheKey {
            window: window.to_owned(),
            profile: profile.to_owned(),
            scopes: Vec::new(),
            audience: Some(audience.to_owned()),
        }
    }
}

/// `scopes` sorted and de-duplicated: the same set asked in any order is one
/// cache entry. Borrowed when already so (one scope, or the profile's own).
pub fn scope_set(scopes: &[String]) -> Cow<'_, [String]> {
    if scopes.windows(2).all(|w| w[0] < w[1]) {
        return Cow::Borrowed(scopes);
    }
    let mut sorted = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    Cow::Owned(sorted)
}

#[derive(Debug, Clone)]
pub struct CachedToken {
    pub token: Secret,
    pub expires_at: SystemTime,
}

struct Window {
    until: SystemTime,
    /// What re-mints without a touch; None for a kubectl window (its token only).
    credential: Option<Arc<UpstreamCredential>>,
    handed: u32,
    max: Option<u32>,
    /// Tokens minted under this window, by their scope set.
    tokens: HashMap<Vec<String>, CachedToken>,
    /// ID tokens minted under this window, by their audience.
    id_tokens: HashMap<String, CachedToken>,
}

impl Window {
    fn usable(&self, now: SystemTime) -> bool {
        self.until > now && self.max.is_none_or(|m| self.handed < m)
    }
}

#[derive(Default)]
pub struct Sessions {
    windows: HashMap<String, Window>,
}

impl Sessions {
    /// The credential of an open window, if it may still hand out a token.
    pub fn window_credential(
        &mut self,
        window: &str,
        now: SystemTime,
    ) -> Option<Arc<UpstreamCredential>> {
        self.purge(now);
        self.windows.get(window).and_then(|w| w.credential.clone())
    }

    pub fn open_window(
        &mut self,
        window: &str,
        now: SystemTime,
        length: Duration,
        max_tokens: Option<u32>,
        credential: Arc<UpstreamCredential>,
    ) {
        self.insert(window, now, length, max_tokens, Some(credential));
    }

    /// A window that keeps only the tokens stored under it (a kubectl window):
    /// nothing is minted under it without a touch.
    pub fn open_token_window(
        &mut self,
        window: &str,
        now: SystemTime,
        length: Duration,
        max_tokens: Option<u32>,
    ) {
        self.insert(window, now, length, max_tokens, None);
    }

    fn insert(
        &mut self,
        window: &str,
        now: SystemTime,
        length: Duration,
        max_tokens: Option<u32>,
        credential: Option<Arc<UpstreamCredential>>,
    ) {
        // A length past the end of the clock closes the window at once (fail closed);
        // the config's ranges keep real lengths far from it.
        self.windows.insert(
            window.to_owned(),
            Window {
                until: now.checked_add(length).unwrap_or(now),
                credential,
                handed: 0,
                max: max_tokens,
                tokens: HashMap::new(),
                id_tokens: HashMap::new(),
            },
        );
    }

    /// Count a token handed out under `window`.
    pub fn note_handed(&mut self, window: &str) {
        if let Some(w) = self.windows.get_mut(window) {
            w.handed += 1;
        }
    }

    /// A cached token for `scopes` (a [`scope_set`]) under `window`, only while
    /// the window is open (and under its token limit) and the token has more
    /// than `margin` left. Counts as handed out. Allocates nothing but the
    /// returned token's copy.
    pub fn token(
        &mut self,
        window: &str,
        scopes: &[String],
        now: SystemTime,
        margin: Duration,
    ) -> Option<CachedToken> {
        self.hand_out(window, now, margin, |w| w.tokens.get(scopes))
    }

    /// [`Sessions::token`] for an ID token for `audience`.
    pub fn id_token(
        &mut self,
        window: &str,
        audience: &str,
        now: SystemTime,
        margin: Duration,
    ) -> Option<CachedToken> {
        self.hand_out(window, now, margin, |w| w.id_tokens.get(audience))
    }

    /// The token `pick` finds in `window`, only while the window is open (and
    /// under its token limit) and the token has more than `margin` left.
    /// Counts as handed out.
    fn hand_out(
        &mut self,
        window: &str,
        now: SystemTime,
        margin: Duration,
        pick: impl FnOnce(&Window) -> Option<&CachedToken>,
    ) -> Option<CachedToken> {
        self.purge(now);
        let w = self.windows.get_mut(window)?;
        let t = pick(w)
            .filter(|t| now.checked_add(margin).is_some_and(|m| t.expires_at > m))
            .cloned()?;
        w.handed += 1;
        Some(t)
    }

    /// Keep `token` for `key`'s scopes (or audience) while `key`'s window is open.
    pub fn store_token(&mut self, key: CacheKey, token: CachedToken) {
        if let Some(w) = self.windows.get_mut(&key.window) {
            match key.audience {
                Some(audience) => w.id_tokens.insert(audience, token),
                None => w.tokens.insert(key.scopes, token),
            };
        }
    }

    pub fn cached_tokens(&self) -> u32 {
        self.windows
            .values()
            .map(|w| (w.tokens.len() + w.id_tokens.len()) as u32)
            .sum()
    }

    /// Drop every window and token; returns how many tokens were dropped.
    pub fn lock(&mut self) -> u32 {
        let n = self.cached_tokens();
        self.windows.clear();
        n
    }

    fn purge(&mut self, now: SystemTime) {
        self.windows.retain(|_, w| w.usable(now));
        for w in self.windows.values_mut() {
            w.tokens.retain(|_, t| t.expires_at > now);
            w.id_tokens.retain(|_, t| t.expires_at > now);
        }
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
        }
    }

    #[test]
    fn cache_keys_ignore_scope_order() {
        let a = CacheKey::new("p", "p", &["b".into(), "a".into(), "a".into()]);
        assert_eq!(a, CacheKey::new("p", "p", &["a".into(), "b".into()]));
    }

    #[test]
    fn tokens_live_only_inside_the_window_and_margin() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        let k = CacheKey::new("p", "p", &[]);
        let margin = Duration::from_secs(60);
        // No window: nothing is cached.
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(3600)));
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_none());

        s.open_window("p", clock.now(), Duration::from_secs(600), None, cred());
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(300)));
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_some());
        assert!(s.window_credential("p", clock.now()).is_some());

        // Inside the window but within the margin of expiry: not handed out.
        clock.advance(Duration::from_secs(241));
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_none());
        assert!(s.window_credential("p", clock.now()).is_some());

        // Window closed: credential and tokens gone.
        clock.advance(Duration::from_secs(360));
        assert!(s.window_credential("p", clock.now()).is_none());
        assert_eq!(s.cached_tokens(), 0);
    }

    #[test]
    fn a_window_ends_after_its_token_limit() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        let k = CacheKey::new("w", "p", &[]);
        let margin = Duration::from_secs(60);
        s.open_window("w", clock.now(), Duration::from_secs(600), Some(2), cred());
        s.note_handed("w"); // the token minted with the touch
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(3600)));
        assert!(
            s.token(&k.window, &k.scopes, clock.now(), margin).is_some(),
            "second token"
        );
        assert!(
            s.token(&k.window, &k.scopes, clock.now(), margin).is_none(),
            "third needs a touch"
        );
        assert!(s.window_credential("w", clock.now()).is_none());
    }

    #[test]
    fn windows_are_separate() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        s.open_window(
            "p\0/usr/bin/gcloud",
            clock.now(),
            Duration::from_secs(600),
            None,
            cred(),
        );
        assert!(s
            .window_credential("p\0/usr/bin/python3", clock.now())
            .is_none());
    }

    #[test]
    fn id_tokens_are_kept_by_audience_apart_from_access_tokens() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        let margin = Duration::from_secs(60);
        s.open_window("p", clock.now(), Duration::from_secs(600), None, cred());
        let a = CacheKey::id_token("p", "p", "https://a.example");
        assert_ne!(a, CacheKey::new("p", "p", &[]), "separate flights");
        s.store_token(a, tok(clock.now() + Duration::from_secs(3600)));
        assert!(s
            .id_token("p", "https://a.example", clock.now(), margin)
            .is_some());
        assert!(s
            .id_token("p", "https://b.example", clock.now(), margin)
            .is_none());
        assert!(s.token("p", &[], clock.now(), margin).is_none());
        assert_eq!(s.cached_tokens(), 1);
        assert_eq!(s.lock(), 1);
        assert!(s
            .id_token("p", "https://a.example", clock.now(), margin)
            .is_none());
    }

    #[test]
    fn a_token_window_keeps_its_token_and_no_credential() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        let k = CacheKey::new("p\0kubectl", "p", &[]);
        let margin = Duration::from_secs(60);
        s.open_token_window(&k.window, clock.now(), Duration::from_secs(300), None);
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(900)));
        assert!(
            s.window_credential(&k.window, clock.now()).is_none(),
            "nothing to mint with: a spent token needs a touch"
        );
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_some());
        // The window ends before the token: no token after it.
        clock.advance(Duration::from_secs(301));
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_none());
        // A token nearer its end than the margin is not handed out inside the window.
        s.open_token_window(&k.window, clock.now(), Duration::from_secs(900), None);
        s.store_token(k.clone(), tok(clock.now() + Duration::from_secs(90)));
        clock.advance(Duration::from_secs(31));
        assert!(s.token(&k.window, &k.scopes, clock.now(), margin).is_none());
        assert_eq!(s.lock(), 1, "lock drops it too");
    }

    #[test]
    fn lock_drops_everything() {
        let clock = TestClock::default();
        let mut s = Sessions::default();
        s.open_window("p", clock.now(), Duration::from_secs(600), None, cred());
        s.store_token(
            CacheKey::new("p", "p", &[]),
            tok(clock.now() + Duration::from_secs(3600)),
        );
        assert_eq!(s.lock(), 1);
        assert!(s.window_credential("p", clock.now()).is_none());
    }
}
