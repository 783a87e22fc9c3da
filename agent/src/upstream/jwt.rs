//! The RS256 JWT a service account signs to ask Google's token endpoint for an
//! access token (the OAuth 2.0 JWT bearer grant, RFC 7523), and the key that signs it.
//!
//! Invariants:
//! - The RSA private-key operation is ring's (constant-time, blinded), not the `rsa`
//!   crate's, whose signing leaks timing (RUSTSEC-2023-0071, "Marvin").
//! - Only unencrypted PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, what Google's key
//!   files hold) of an RSA key of 2048 to 8192 bits is accepted; anything else gets a
//!   [`KeyError`] that names the fix and none of the key.
//! - The DER decoded from the PEM lives only in a zeroized buffer.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use zeroize::Zeroizing;

/// The fix offered for a key touchgate cannot sign with.
const NEW_KEY: &str = "create a new key with `gcloud iam service-accounts keys create` and \
                       import that file unchanged";

/// Why a `private_key` cannot sign; each reads after "the private_key of …" and
/// says how to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("is not an RSA key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----): {NEW_KEY}")]
    NotPkcs8Pem,
    #[error(
        "is PKCS#1 (-----BEGIN RSA PRIVATE KEY-----), not PKCS#8 (-----BEGIN PRIVATE KEY-----): \
         convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem` and put \
         NEW.pem in the file, or {NEW_KEY}"
    )]
    Pkcs1,
    #[error("is an encrypted PKCS#8 key (-----BEGIN ENCRYPTED PRIVATE KEY-----): {NEW_KEY}")]
    Encrypted,
    #[error("is not an RSA key (PKCS#8 of another algorithm): {NEW_KEY}")]
    NotRsa,
    #[error(
        "is an RSA key shorter than 2048 bits, which is too weak to sign with: {NEW_KEY} \
         (Google's are 2048 bits)"
    )]
    TooSmall,
    #[error("is an RSA key longer than 8192 bits: {NEW_KEY} (Google's are 2048 bits)")]
    TooLarge,
}

/// A service account's RSA key, ready to sign RS256.
///
/// ring does not wipe the key's limbs when this is dropped; keep it only for one
/// signature.
#[derive(Debug)]
pub struct SigningKey(RsaKeyPair);

impl SigningKey {
    /// Parses PKCS#8 PEM. The error names the problem, never any of the key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let mut decoder =
            pem_rfc7468::Decoder::new(pem.as_bytes()).map_err(|_| KeyError::NotPkcs8Pem)?;
        match decoder.type_label() {
            "PRIVATE KEY" => {}
            "RSA PRIVATE KEY" => return Err(KeyError::Pkcs1),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            _ => return Err(KeyError::NotPkcs8Pem),
        }
        let mut der = Zeroizing::new(vec![0u8; decoder.remaining_len()]);
        let len = decoder
            .decode(&mut der)
            .map_err(|_| KeyError::NotPkcs8Pem)?
            .len();
        if !decoder.is_finished() {
            return Err(KeyError::NotPkcs8Pem);
        }
        // ring names why it rejected a key only through `KeyRejected`'s Display; an
        // unknown name falls back to the general message.
        RsaKeyPair::from_pkcs8(&der[..len])
            .map(SigningKey)
            .map_err(|e| match e.to_string().as_str() {
                "TooSmall" => KeyError::TooSmall,
                "TooLarge" => KeyError::TooLarge,
                "WrongAlgorithm" => KeyError::NotRsa,
                _ => KeyError::NotPkcs8Pem,
            })
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `msg`.
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut sig = vec![0u8; self.0.public().modulus_len()];
        self.0
            .sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), msg, &mut sig)
            .map_err(|_| SignError)?;
        Ok(sig)
    }

    /// The public key as DER `RSAPublicKey` (PKCS#1), for tests that verify.
    #[cfg(test)]
    fn public_key_der(&self) -> &[u8] {
        use ring::signature::KeyPair;
        self.0.public_key().as_ref()
    }
}

/// The system's random source failed while blinding the RSA operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot sign the service-account JWT: the system random source failed; check that \
     /dev/urandom (getrandom) works for the agent"
)]
pub struct SignError;

/// Longest lifetime Google accepts for the assertion (`exp - iat`).
pub const ASSERTION_LIFETIME_SECS: u64 = 3600;

/// What the service account asserts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims {
    pub iss: String,
    pub scope: String,
    pub aud: String,
    pub iat: u64,
    pub exp: u64,
}

impl Claims {
    /// Claims for `email` asking for `scopes` at `token_uri`, issued at `iat` (Unix seconds).
    pub fn new(email: &str, scopes: &[String], token_uri: &str, iat: u64) -> Self {
        Claims {
            iss: email.to_owned(),
            scope: scopes.join(" "),
            aud: token_uri.to_owned(),
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        }
    }
}

/// What the service account asserts to get an ID token for `target_audience`
/// (no scope: Google answers with `{"id_token"}`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub aud: String,
    pub target_audience: String,
    pub iat: u64,
    pub exp: u64,
}

impl IdTokenClaims {
    pub fn new(email: &str, target_audience: &str, token_uri: &str, iat: u64) -> Self {
        IdTokenClaims {
            iss: email.to_owned(),
            aud: token_uri.to_owned(),
            target_audience: target_audience.to_owned(),
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        }
    }
}

/// `header.claims.signature`, base64url without padding, signed RS256
/// (RSASSA-PKCS1-v1_5 with SHA-256). `kid` is the key file's `private_key_id`.
pub fn sign<C: serde::Serialize>(
    key: &SigningKey,
    kid: &str,
    claims: &C,
) -> Result<Zeroizing<String>, SignError> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let claims = serde_json::to_vec(claims).expect("claims serialise");
    let mut jwt = Zeroizing::new(String::with_capacity(1024));
    URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut jwt);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
    let signature = key.sign(jwt.as_bytes())?;
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
    Ok(jwt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    /// A test-only key (openssl genpkey, RSA 2048, PKCS#8), never used outside tests.
    const PEM: &str = include_str!("testdata/rsa-2048.pem");

    #[test]
    fn signs_a_verifiable_rs256_jwt() {
        let key = SigningKey::from_pkcs8_pem(PEM).unwrap();
        let claims = Claims::new(
            "bot@p.iam.gserviceaccount.com",
            &["a".into(), "b".into()],
            "http://127.0.0.1:1/token",
            1_800_000_000,
        );
        let jwt = sign(&key, "kid-1", &claims).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(
            header,
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        let got: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(got, claims);
        assert_eq!(got.scope, "a b");
        assert_eq!(got.exp - got.iat, 3600);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 256);
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, key.public_key_der());
        public.verify(signed.as_bytes(), &sig).unwrap();
        // The signature covers the claims: change one and it no longer verifies.
        let forged = signed.replacen(parts[1], &parts[1].replacen('e', "f", 1), 1);
        assert_ne!(forged, signed);
        assert!(public.verify(forged.as_bytes(), &sig).is_err());
    }

    #[test]
    fn keys_that_cannot_sign_say_why() {
        let key = |pem: &str| SigningKey::from_pkcs8_pem(pem).map(drop);
        assert_eq!(
            key(include_str!("testdata/rsa-1024.pem")),
            Err(KeyError::TooSmall)
        );
        let pkcs1 = include_str!("testdata/rsa-2048-pkcs1.pem");
        assert_eq!(key(pkcs1), Err(KeyError::Pkcs1));
        assert_eq!(
            key(include_str!("testdata/ec-p256.pem")),
            Err(KeyError::NotRsa)
        );
        assert_eq!(key("not pem"), Err(KeyError::NotPkcs8Pem));
        assert_eq!(
            key(&PEM.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY")),
            Err(KeyError::Encrypted)
        );
        // PKCS#1 DER relabelled as PKCS#8 is still refused.
        assert_eq!(
            key(&pkcs1.replace("RSA PRIVATE KEY", "PRIVATE KEY")),
            Err(KeyError::NotPkcs8Pem)
        );
        for e in [KeyError::TooSmall, KeyError::Pkcs1, KeyError::NotRsa] {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
