//! The RS256 JWT a service account signs to ask Google's token endpoint for an
//! access token (the OAuth 2.0 JWT bearer grant, RFC 7523).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use sha2::Sha256;
use zeroize::Zeroizing;

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

/// `header.claims.signature`, base64url without padding, signed RS256
/// (RSASSA-PKCS1-v1_5 with SHA-256). `kid` is the key file's `private_key_id`.
pub fn sign(key: RsaPrivateKey, kid: &str, claims: &Claims) -> Zeroizing<String> {
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": kid});
    let claims = serde_json::to_vec(claims).expect("claims serialise");
    let mut jwt = Zeroizing::new(String::with_capacity(1024));
    URL_SAFE_NO_PAD.encode_string(header.to_string(), &mut jwt);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&claims, &mut jwt);
    let signature = SigningKey::<Sha256>::new(key).sign(jwt.as_bytes());
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.to_bytes(), &mut jwt);
    jwt
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1v15::{Signature, VerifyingKey};
    use rsa::signature::Verifier;

    #[test]
    fn signs_a_verifiable_rs256_jwt() {
        let key = RsaPrivateKey::new(&mut rand::thread_rng(), 1024).unwrap();
        let claims = Claims::new(
            "bot@p.iam.gserviceaccount.com",
            &["a".into(), "b".into()],
            "http://127.0.0.1:1/token",
            1_800_000_000,
        );
        let jwt = sign(key.clone(), "kid-1", &claims);
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
        let sig =
            Signature::try_from(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().as_slice()).unwrap();
        let signed = &jwt[..parts[0].len() + 1 + parts[1].len()];
        VerifyingKey::<Sha256>::new(key.to_public_key())
            .verify(signed.as_bytes(), &sig)
            .unwrap();
    }
}
