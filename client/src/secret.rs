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
    fn fingerprint_is_stable_and_short() {
        let a = Secret::new("tok").fingerprint();
        assert_eq!(a, Secret::new("tok").fingerprint());
        assert_ne!(a, Secret::new("tok2").fingerprint());
        assert_eq!(a.len(), "sha256:".len() + 16);
    }
}
