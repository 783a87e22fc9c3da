//! A secret string that travels in protocol frames but never prints.

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A secret (access token, credential JSON) carried over the agent socket.
///
/// `Debug` is redacted; the bytes are zeroized on drop (it wraps [`SecretString`]).
pub struct Secret(SecretString);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(SecretString::from(s.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short, non-reversible fingerprint safe for logs and audit records.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.expose().as_bytes())
    }
}

/// `sha256:` followed by the first 16 hex digits of SHA-256 of `bytes`.
pub fn fingerprint(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    format!("sha256:{}", hex::encode(&d[..8]))
}

/// What [`scrub`] puts in place of a secret.
pub const REDACTED: &str = "[REDACTED]";
/// What [`scrub`] returns when part of a secret would still show.
pub const WITHHELD: &str = "[text withheld: it quoted part of a secret]";
/// A run of this many bytes of a secret (in any form) left in scrubbed text
/// withholds the whole text.
const SECRET_RUN: usize = 16;

/// `text` without any of `secrets` (those of 4 bytes or more), in every form a
/// server may quote them back: raw, URL-encoded (form or RFC 3986, either hex
/// case) and JSON-escaped (with or without `\/`). Should a run of 16 bytes of
/// any of those forms still show (part of a secret quoted, or cut), the whole
/// text is withheld instead.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut forms: Vec<String> = secrets
        .iter()
        .filter(|s| s.len() >= 4)
        .flat_map(|s| secret_forms(s))
        .collect();
    // Longest first, so no form is left half replaced by a shorter one.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_owned();
    for f in &forms {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), REDACTED);
        }
    }
    let runs: std::collections::HashSet<&[u8]> = forms
        .iter()
        .flat_map(|f| f.as_bytes().windows(SECRET_RUN))
        .collect();
    if out.as_bytes().windows(SECRET_RUN).any(|w| runs.contains(w)) {
        return WITHHELD.to_owned();
    }
    out
}

/// The forms of `s` that [`scrub`] removes.
fn secret_forms(s: &str) -> Vec<String> {
    let json = serde_json::to_string(s).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or(s)
        .to_owned();
    let mut forms = vec![s.to_owned(), json.replace('/', "\\/"), json];
    for upper in [true, false] {
        forms.push(percent_encode(s, true, upper));
        forms.push(percent_encode(s, false, upper));
    }
    forms
}

/// `s` URL-encoded: as an HTML form does (`*` kept, space as `+`), or as
/// RFC 3986 does (`~` kept, space as `%20`).
fn percent_encode(s: &str, form: bool, upper: bool) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => out.push(b as char),
            b'*' if form => out.push('*'),
            b'~' if !form => out.push('~'),
            b' ' if form => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

impl Clone for Secret {
    fn clone(&self) -> Self {
        Secret::new(self.expose().to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        // Not constant time: used only in tests of the protocol round trip.
        self.expose() == other.expose()
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.expose())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = zeroize::Zeroizing::new(String::deserialize(d)?);
        Ok(Secret::new(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("ya29.very-secret");
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn scrub_removes_every_form_a_server_may_quote() {
        let refresh = "1//0gAbCdEfGhIjKlMnOpQrStUvWxYz+a b~*";
        let secret = "GOCSPX-aBcDeFgHiJkLmNoPqRsTuVwXyZ01";
        for quoted in [
            refresh.to_owned(),
            "1%2F%2F0gAbCdEfGhIjKlMnOpQrStUvWxYz%2Ba+b%7E*".to_owned(),
            "1%2f%2f0gAbCdEfGhIjKlMnOpQrStUvWxYz%2ba%20b~%2a".to_owned(),
            "1\\/\\/0gAbCdEfGhIjKlMnOpQrStUvWxYz+a b~*".to_owned(),
        ] {
            let text = format!("bad grant: refresh_token={quoted}&client_secret={secret}.");
            let out = scrub(&text, &[refresh, secret]);
            assert_eq!(
                out, "bad grant: refresh_token=[REDACTED]&client_secret=[REDACTED].",
                "{quoted}"
            );
        }
        // Part of a secret (cut, or in a form not known here): nothing shown.
        let cut = &secret[..20];
        assert_eq!(scrub(&format!("got {cut}…"), &[secret]), WITHHELD);
        // Text without secrets is left alone; tiny "secrets" are not hunted.
        assert_eq!(
            scrub("invalid_grant: expired", &[secret, "ab"]),
            "invalid_grant: expired"
        );
    }

    #[test]
    fn fingerprint_is_stable_and_short() {
        let a = Secret::new("tok").fingerprint();
        assert_eq!(a, Secret::new("tok").fingerprint());
        assert_ne!(a, Secret::new("tok2").fingerprint());
        assert_eq!(a.len(), "sha256:".len() + 16);
    }
}
