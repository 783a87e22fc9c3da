//! Google-signed OpenID Connect ID tokens: the emulator's own RS256 key, its
//! JWKS at `GET /oauth2/v3/certs` (Google's path), and a verifier for tests.
//!
//! Three ways mint one, as at Google: IAM Credentials `generateIdToken` (see
//! `iam.rs`), the jwt-bearer grant with a `target_audience` claim, and the
//! refresh grant of a user whose login included `openid` (audience: the OAuth
//! client). The key is made on first use, so an emulator that never signs an
//! ID token spends no time on it.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use serde_json::{json, Value};
use sha2::Sha256;

use super::state::{random_bytes, EmulatorState};
use super::{AppState, Details};

/// The `iss` of every ID token Google signs.
pub const ID_TOKEN_ISSUER: &str = "https://accounts.google.com";
/// How long an ID token lives (Google: one hour).
pub const ID_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Where Google publishes the keys that sign ID tokens.
pub const JWKS_PATH: &str = "/oauth2/v3/certs";

/// The signing key, made once.
pub(crate) struct IdKey {
    kid: String,
    key: RsaPrivateKey,
}

pub(crate) fn id_key(cell: &OnceLock<IdKey>) -> &IdKey {
    cell.get_or_init(|| IdKey {
        kid: hex::encode(random_bytes(20)),
        key: RsaPrivateKey::new(&mut rand::thread_rng(), 2048).expect("RSA key generation"),
    })
}

/// What one ID token says.
pub(crate) struct IdClaims<'a> {
    pub audience: &'a str,
    /// The principal's numeric id (`sub`, and `azp` for service accounts).
    pub subject: &'a str,
    pub authorized_party: &'a str,
    pub email: Option<&'a str>,
}

impl EmulatorState {
    /// Signs an ID token with the emulator's key; returns it and its expiry.
    pub(crate) fn sign_id_token(&self, c: &IdClaims<'_>) -> (String, SystemTime) {
        let k = id_key(&self.id_key);
        let now = self.now();
        let iat = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let exp = iat + ID_TOKEN_LIFETIME.as_secs();
        let header = json!({"alg": "RS256", "kid": k.kid, "typ": "JWT"});
        let mut claims = json!({
            "iss": ID_TOKEN_ISSUER,
            "aud": c.audience,
            "azp": c.authorized_party,
            "sub": c.subject,
            "iat": iat,
            "exp": exp,
        });
        if let Some(email) = c.email {
            claims["email"] = email.into();
            claims["email_verified"] = true.into();
        }
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("JSON"));
        let signed = format!("{}.{}", b64(&header), b64(&claims));
        let signature = SigningKey::<Sha256>::new(k.key.clone()).sign(signed.as_bytes());
        let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        (token, now + ID_TOKEN_LIFETIME)
    }

    /// The JWKS document Google serves at [`JWKS_PATH`].
    pub fn jwks(&self) -> Value {
        let k = id_key(&self.id_key);
        let public = k.key.to_public_key();
        json!({"keys": [{
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": k.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]})
    }
}

/// `GET /oauth2/v3/certs`.
pub(crate) async fn certs(State(state): State<AppState>) -> Response {
    Details::default().respond(Json(state.jwks()).into_response())
}

/// An ID token checked against a JWKS document: RS256 signature by a key it
/// lists (by `kid`), issuer, and expiry at `now`. Returns the claims; the
/// caller checks `aud` and `email`. For tests (and anyone checking what the
/// emulator signed).
pub fn verify_id_token(jwks: &Value, token: &str, now: SystemTime) -> Result<Value, String> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("not a JWT (header.claims.signature)".into());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let b = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|e| format!("not base64url: {e}"))?;
        serde_json::from_slice(&b).map_err(|e| format!("not JSON: {e}"))
    };
    let header = decode(h)?;
    let claims = decode(c)?;
    if header["alg"] != "RS256" {
        return Err(format!("alg is {}, not RS256", header["alg"]));
    }
    let kid = header["kid"].as_str().ok_or("no kid in the header")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    let int = |name: &str| -> Result<BigUint, String> {
        let b = URL_SAFE_NO_PAD
            .decode(jwk[name].as_str().ok_or(format!("no {name} in the JWK"))?)
            .map_err(|e| format!("JWK {name}: {e}"))?;
        Ok(BigUint::from_bytes_be(&b))
    };
    let public = RsaPublicKey::new(int("n")?, int("e")?).map_err(|e| e.to_string())?;
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|e| format!("signature: {e}"))?;
    let sig = Signature::try_from(sig.as_slice()).map_err(|e| e.to_string())?;
    VerifyingKey::<Sha256>::new(public)
        .verify(&token.as_bytes()[..h.len() + 1 + c.len()], &sig)
        .map_err(|_| "bad signature".to_owned())?;
    if claims["iss"] != ID_TOKEN_ISSUER {
        return Err(format!("iss is {}", claims["iss"]));
    }
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    match claims["exp"].as_u64() {
        Some(exp) if exp > now => Ok(claims),
        Some(exp) => Err(format!("expired at {exp}, now {now}")),
        None => Err("no exp".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_and_refuses_a_forgery() {
        let state = EmulatorState::new("http://127.0.0.1:9");
        let (t, exp) = state.sign_id_token(&IdClaims {
            audience: "https://svc.example",
            subject: "1",
            authorized_party: "1",
            email: Some("sa@p.iam.gserviceaccount.com"),
        });
        let claims = verify_id_token(&state.jwks(), &t, state.now()).unwrap();
        assert_eq!(claims["aud"], "https://svc.example");
        assert_eq!(claims["email"], "sa@p.iam.gserviceaccount.com");
        assert!(exp > state.now());
        // Another emulator's key: refused.
        let other = EmulatorState::new("http://127.0.0.1:10");
        let (forged, _) = other.sign_id_token(&IdClaims {
            audience: "https://svc.example",
            subject: "1",
            authorized_party: "1",
            email: None,
        });
        let mut jwks = state.jwks();
        jwks["keys"][0]["kid"] = other.jwks()["keys"][0]["kid"].clone();
        assert_eq!(
            verify_id_token(&jwks, &forged, state.now()).unwrap_err(),
            "bad signature"
        );
        // Expired.
        let later = state.now() + ID_TOKEN_LIFETIME;
        assert!(verify_id_token(&state.jwks(), &t, later)
            .unwrap_err()
            .starts_with("expired"));
    }
}
