//! Checks on the security key's answers, done before anything is unsealed.
//!
//! [`verify_assertion`] checks a getAssertion answer against the enrolment
//! (credential, relying party, flags, signature, signature counter);
//! [`check_attestation`] checks a makeCredential answer is self-consistent
//! (the attested credential data in authData is the credential and key the
//! backend reported, and the self-attestation signature holds).
//!
//! Each failed check has its own [`VerifyError`] variant with a one-line
//! message naming what failed. Malformed input from the key is an error,
//! never a panic. The CBOR in authData (COSE key, extensions) is read with
//! ciborium, the codec the emulated key uses too; a map holding a key twice,
//! at any depth, is refused ([`VerifyError::DuplicateKey`]).

use ciborium::value::{Integer, Value};
use p256::ecdsa::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::fido::key::{flags, Assertion, Attestation};

/// rpIdHash(32) ‖ flags(1) ‖ signCount(4).
const AUTH_DATA_MIN: usize = 37;

/// COSE algorithm ES256 (ECDSA P-256 with SHA-256).
const COSE_ES256: i64 = -7;

/// What the enrolment says the answer must match.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub rp_id: &'a str,
    pub credential_id: &'a [u8],
    /// Uncompressed SEC1 P-256 point stored at enrolment.
    pub public_key_sec1: &'a [u8],
    /// The last counter seen from this credential.
    pub stored_sign_count: u32,
    pub require_uv: bool,
}

/// What a verified assertion tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// The new counter: store it as the enrolment's `sign_count`.
    pub sign_count: u32,
    pub user_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the security key answered with a credential other than the enrolled one")]
    WrongCredential,
    #[error(
        "the authenticator data is {len} bytes, shorter than the {AUTH_DATA_MIN} it must have"
    )]
    AuthDataTooShort { len: usize },
    #[error("the authenticator data is not for relying party \"{rp_id}\" (rpIdHash differs)")]
    RpIdMismatch { rp_id: String },
    #[error("the security key did not report user presence (UP flag clear)")]
    UserNotPresent,
    #[error(
        "user verification was required but the security key did not report it (UV flag clear)"
    )]
    UserNotVerified,
    #[error(
        "the security key's signature counter did not increase (stored {stored}, got {got}): \
         the security key may be cloned"
    )]
    CounterNotIncreased { stored: u32, got: u32 },
    #[error("the enrolled public key is not a valid P-256 point")]
    BadPublicKey,
    #[error("the signature is not a DER-encoded ECDSA P-256 signature")]
    MalformedSignature,
    #[error("the assertion signature does not verify with the enrolled public key")]
    BadSignature,
    #[error("the authenticator data carries no attested credential data (AT flag clear)")]
    AttestedDataMissing,
    #[error("malformed attested credential data: {what}")]
    MalformedAttestedData { what: &'static str },
    #[error("the credential id in the authenticator data differs from the one the key reported")]
    AttestedCredentialMismatch,
    #[error("the public key in the authenticator data differs from the one the key reported")]
    AttestedKeyMismatch,
    #[error("the AAGUID in the authenticator data differs from the one the key reported")]
    AaguidMismatch,
    #[error(
        "{map} in the authenticator data hold the key {key} twice: a duplicate CBOR map key is \
         malformed (the security key is faulty or not genuine)"
    )]
    DuplicateKey { map: &'static str, key: String },
    #[error("the key reported hmac-secret but its authenticator data does not confirm it")]
    HmacSecretNotConfirmed,
    #[error("unsupported attestation format {format:?} (supported: packed, none)")]
    UnsupportedAttestationFormat { format: String },
    #[error("the self-attestation signature does not verify with the credential's public key")]
    BadAttestationSignature,
    #[error("enrolment asked for user verification but the attestation's authenticator data does not report it (UV flag clear): refused; check the key's PIN or built-in verification and enrol again")]
    EnrolmentNotUserVerified,
    #[error("the packed attestation statement names algorithm {} but {key} is ES256 (-7): refused", alg.map_or("(none)".to_string(), |a| format!("alg {a}")))]
    StatementAlgMismatch { alg: Option<i64>, key: &'static str },
    #[error("the security key's attestation certificate is unusable: {reason}")]
    AttestationCertificate { reason: String },
    #[error(
        "the attestation signature does not verify with the attestation certificate's public key"
    )]
    BadCertificateAttestationSignature,
}

/// Check a getAssertion answer. In order: the credential is the enrolled
/// one; authData is long enough; rpIdHash is SHA-256(`rp_id`); UP is set; UV
/// is set if required; the signature over `authData ‖ clientDataHash` holds
/// with the enrolled key; the counter went up.
///
/// The signature is checked before the counter, so only a genuinely signed
/// answer can raise the "may be cloned" alarm: a forged or corrupted answer
/// with a low counter is reported as a bad signature.
pub fn verify_assertion(
    expected: &Expected,
    client_data_hash: &[u8; 32],
    a: &Assertion,
) -> Result<Verified, VerifyError> {
    if a.credential_id != expected.credential_id {
        return Err(VerifyError::WrongCredential);
    }
    let header = Header::parse(&a.auth_data)?;
    header.check_rp(expected.rp_id)?;
    if header.flags & flags::UP == 0 {
        return Err(VerifyError::UserNotPresent);
    }
    let user_verified = header.flags & flags::UV != 0;
    if expected.require_uv && !user_verified {
        return Err(VerifyError::UserNotVerified);
    }
    if header.flags & flags::ED != 0 && header.flags & flags::AT == 0 {
        check_assertion_extensions(&a.auth_data)?;
    }
    let key = on_curve(expected.public_key_sec1).ok_or(VerifyError::BadPublicKey)?;
    if !signature_holds(&key, &a.auth_data, client_data_hash, &a.signature)? {
        return Err(VerifyError::BadSignature);
    }
    let (stored, got) = (expected.stored_sign_count, header.sign_count);
    // Both zero: a key that keeps no counter (allowed by WebAuthn).
    if !(stored == 0 && got == 0) && got <= stored {
        return Err(VerifyError::CounterNotIncreased { stored, got });
    }
    Ok(Verified {
        sign_count: got,
        user_verified,
    })
}

/// Check a makeCredential answer: rpIdHash, UP, UV if `require_uv` (the
/// enrolment asked for it), AT; the attested credential
/// data in authData holds exactly `a.credential_id`, `a.aaguid` and
/// `a.public_key_sec1` (as an ES256 COSE key); if `a.hmac_secret` the
/// extensions confirm `"hmac-secret": true`; and the attestation statement:
///
/// * `packed`: the statement's `alg` is ES256 (-7), the algorithm of the
///   signing key (the credential key, or the x5c leaf's P-256 key).
/// * `packed` without `x5c` (self attestation): the signature over
///   `authData ‖ clientDataHash` must verify with the credential key itself.
/// * `none`: nothing more to check.
/// * `packed` with `x5c` (full attestation by a hardware key): the signature
///   must verify with the P-256 key of the leaf certificate (`x5c[0]`).
///   Whether the chain leads to a trusted root is policy, checked by
///   [`crate::fido::attestation::verify_packed_chain`] when `key.attestation_roots`
///   is set.
///
/// Any other format is refused.
pub fn check_attestation(
    a: &Attestation,
    client_data_hash: &[u8; 32],
    rp_id: &str,
    require_uv: bool,
) -> Result<(), VerifyError> {
    let header = Header::parse(&a.auth_data)?;
    header.check_rp(rp_id)?;
    if header.flags & flags::UP == 0 {
        return Err(VerifyError::UserNotPresent);
    }
    if require_uv && header.flags & flags::UV == 0 {
        return Err(VerifyError::EnrolmentNotUserVerified);
    }
    if header.flags & flags::AT == 0 {
        return Err(VerifyError::AttestedDataMissing);
    }
    let attested = AttestedData::parse(&a.auth_data, header.flags & flags::ED != 0)?;
    if attested.credential_id != a.credential_id.as_slice() {
        return Err(VerifyError::AttestedCredentialMismatch);
    }
    if attested.aaguid != a.aaguid {
        return Err(VerifyError::AaguidMismatch);
    }
    if attested.public_key_sec1[..] != a.public_key_sec1[..] {
        return Err(VerifyError::AttestedKeyMismatch);
    }
    let key = on_curve(&attested.public_key_sec1).ok_or(VerifyError::MalformedAttestedData {
        what: "the COSE key is not a point on P-256",
    })?;
    if a.hmac_secret && !attested.hmac_secret {
        return Err(VerifyError::HmacSecretNotConfirmed);
    }
    match a.format.as_str() {
        "packed" if a.x5c.is_empty() => {
            check_statement_alg(a.statement_alg, "the credential key")?;
            if signature_holds(
                &key,
                &a.auth_data,
                client_data_hash,
                &a.attestation_signature,
            )? {
                Ok(())
            } else {
                Err(VerifyError::BadAttestationSignature)
            }
        }
        // Full attestation: signed by the leaf certificate's key (chain
        // trust is crate::fido::attestation's, when roots are configured).
        "packed" => {
            let leaf = crate::fido::attestation::leaf_verifying_key(&a.x5c[0])
                .map_err(|reason| VerifyError::AttestationCertificate { reason })?;
            check_statement_alg(a.statement_alg, "the attestation certificate's P-256 key")?;
            if signature_holds(
                leaf.to_encoded_point(false).as_bytes(),
                &a.auth_data,
                client_data_hash,
                &a.attestation_signature,
            )? {
                Ok(())
            } else {
                Err(VerifyError::BadCertificateAttestationSignature)
            }
        }
        "none" => Ok(()),
        other => Err(VerifyError::UnsupportedAttestationFormat {
            format: other.chars().take(32).collect(),
        }),
    }
}

/// The packed statement's `alg` is ES256 (-7), the only algorithm of
/// `key` (the credential key for self attestation, the leaf's for x5c).
fn check_statement_alg(alg: Option<i64>, key: &'static str) -> Result<(), VerifyError> {
    if alg == Some(COSE_ES256) {
        Ok(())
    } else {
        Err(VerifyError::StatementAlgMismatch { alg, key })
    }
}

/// The extensions of an assertion's authData (ED set, AT clear): one CBOR
/// map, no duplicate key at any depth, nothing after it. (The backend reads
/// the hmac-secret output from them; a second `hmac-secret` would let a key
/// choose which one is used.)
fn check_assertion_extensions(auth_data: &[u8]) -> Result<(), VerifyError> {
    let malformed = |what| VerifyError::MalformedAttestedData { what };
    let mut r = auth_data.get(AUTH_DATA_MIN..).unwrap_or_default();
    let ext = read_item(
        &mut r,
        "the extensions",
        "the extensions are not valid CBOR",
    )?;
    if !matches!(ext, Value::Map(_)) {
        return Err(malformed("the extensions are not a CBOR map"));
    }
    if !r.is_empty() {
        return Err(malformed("unexpected bytes after the extensions"));
    }
    Ok(())
}

/// What a makeCredential authData says of the new credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestedCredential {
    pub flags: u8,
    pub sign_count: u32,
    pub aaguid: [u8; 16],
    pub credential_id: Vec<u8>,
    /// 0x04 ‖ x ‖ y from the ES256 COSE key.
    pub public_key_sec1: [u8; 65],
    /// The extensions hold `"hmac-secret": true`.
    pub hmac_secret: bool,
}

/// Parse a makeCredential authData on its own (no relying party, flag or
/// signature check beyond AT being set): header, attested credential data,
/// COSE key, extensions, with the same checks and errors as
/// [`check_attestation`].
pub fn attested_credential(auth_data: &[u8]) -> Result<AttestedCredential, VerifyError> {
    let header = Header::parse(auth_data)?;
    if header.flags & flags::AT == 0 {
        return Err(VerifyError::AttestedDataMissing);
    }
    let d = AttestedData::parse(auth_data, header.flags & flags::ED != 0)?;
    VerifyingKey::from_sec1_bytes(&d.public_key_sec1).map_err(|_| {
        VerifyError::MalformedAttestedData {
            what: "the COSE key is not a point on P-256",
        }
    })?;
    Ok(AttestedCredential {
        flags: header.flags,
        sign_count: header.sign_count,
        aaguid: d.aaguid,
        credential_id: d.credential_id.to_vec(),
        public_key_sec1: d.public_key_sec1,
        hmac_secret: d.hmac_secret,
    })
}

/// The fixed start of authenticator data.
struct Header {
    rp_id_hash: [u8; 32],
    flags: u8,
    sign_count: u32,
}

impl Header {
    fn parse(auth_data: &[u8]) -> Result<Header, VerifyError> {
        if auth_data.len() < AUTH_DATA_MIN {
            return Err(VerifyError::AuthDataTooShort {
                len: auth_data.len(),
            });
        }
        let mut rp_id_hash = [0u8; 32];
        rp_id_hash.copy_from_slice(&auth_data[..32]);
        let mut count = [0u8; 4];
        count.copy_from_slice(&auth_data[33..37]);
        Ok(Header {
            rp_id_hash,
            flags: auth_data[32],
            sign_count: u32::from_be_bytes(count),
        })
    }

    fn check_rp(&self, rp_id: &str) -> Result<(), VerifyError> {
        if self.rp_id_hash[..] == Sha256::digest(rp_id.as_bytes())[..] {
            Ok(())
        } else {
            Err(VerifyError::RpIdMismatch {
                rp_id: rp_id.to_string(),
            })
        }
    }
}

/// Whether `der` is a valid signature over `auth_data ‖ client_data_hash` by
/// the P-256 key whose uncompressed SEC1 point is `public_key_sec1` (checked
/// to be on the curve by the caller). A malformed DER is an error, not a
/// "no". The check itself is ring's: on the every-token path it is the
/// agent's own share of a touch, and ring's P-256 takes a fraction of the
/// pure-Rust arithmetic's time.
fn signature_holds(
    public_key_sec1: &[u8],
    auth_data: &[u8],
    client_data_hash: &[u8; 32],
    der: &[u8],
) -> Result<bool, VerifyError> {
    Signature::from_der(der).map_err(|_| VerifyError::MalformedSignature)?;
    let mut msg = Vec::with_capacity(auth_data.len() + 32);
    msg.extend_from_slice(auth_data);
    msg.extend_from_slice(client_data_hash);
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        public_key_sec1,
    );
    Ok(key.verify(&msg, der).is_ok())
}

/// Whether `der` is a valid signature over `auth_data ‖ client_data_hash` by the
/// P-256 key whose SEC1 point is `public_key_sec1` (for re-checking audit records).
pub fn signature_holds_sec1(
    public_key_sec1: &[u8],
    auth_data: &[u8],
    client_data_hash: &[u8; 32],
    der: &[u8],
) -> Result<bool, VerifyError> {
    let key = on_curve(public_key_sec1).ok_or(VerifyError::BadPublicKey)?;
    signature_holds(&key, auth_data, client_data_hash, der)
}

/// `sec1` as an uncompressed point, if it is one on P-256 (compressed points
/// are decompressed: ring takes only the uncompressed form).
fn on_curve(sec1: &[u8]) -> Option<Vec<u8>> {
    let key = VerifyingKey::from_sec1_bytes(sec1).ok()?;
    Some(key.to_encoded_point(false).as_bytes().to_vec())
}

/// Attested credential data (and extensions) from authData.
struct AttestedData<'a> {
    aaguid: [u8; 16],
    credential_id: &'a [u8],
    /// 0x04 ‖ x ‖ y from the COSE key.
    public_key_sec1: [u8; 65],
    /// The extensions hold `"hmac-secret": true`.
    hmac_secret: bool,
}

impl<'a> AttestedData<'a> {
    /// Parse what follows the 37-byte header: aaguid(16) ‖ credIdLen(2, BE) ‖
    /// credId ‖ COSE_Key ‖ [extensions if ED]. Nothing may follow.
    fn parse(auth_data: &'a [u8], has_extensions: bool) -> Result<Self, VerifyError> {
        let malformed = |what| VerifyError::MalformedAttestedData { what };
        let mut r = auth_data.get(AUTH_DATA_MIN..).unwrap_or_default();
        let (aaguid, rest) = r
            .split_first_chunk::<16>()
            .ok_or(malformed("too short for the AAGUID"))?;
        let (len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(malformed("too short for the credential id length"))?;
        let len = usize::from(u16::from_be_bytes(*len));
        let (credential_id, rest) = rest
            .split_at_checked(len)
            .ok_or(malformed("shorter than its credential id length says"))?;
        let aaguid = *aaguid;
        r = rest;
        let cose = read_item(&mut r, "the COSE key", "the COSE key is not valid CBOR")?;
        let public_key_sec1 = cose_es256_point(&cose).ok_or(malformed(
            "the COSE key is not an ES256 P-256 key (kty 2, alg -7, crv 1, 32-byte x and y)",
        ))?;
        let mut hmac_secret = false;
        if has_extensions {
            let ext = read_item(
                &mut r,
                "the extensions",
                "the extensions are not valid CBOR",
            )?;
            let Value::Map(entries) = ext else {
                return Err(malformed("the extensions are not a CBOR map"));
            };
            hmac_secret = entries
                .iter()
                .any(|(k, v)| k.as_text() == Some("hmac-secret") && *v == Value::Bool(true));
        }
        if !r.is_empty() {
            return Err(malformed("unexpected bytes after the credential data"));
        }
        Ok(AttestedData {
            aaguid,
            credential_id,
            public_key_sec1,
            hmac_secret,
        })
    }
}

/// The uncompressed point of an ES256 COSE key `{1: 2, 3: -7, -1: 1, -2: x, -3: y}`
/// (keys are unique: [`read_item`] refused duplicates).
fn cose_es256_point(cose: &Value) -> Option<[u8; 65]> {
    let entries = cose.as_map()?;
    let get = |key: i64| {
        entries
            .iter()
            .find(|(k, _)| k.as_integer() == Some(Integer::from(key)))
            .map(|(_, v)| v)
    };
    let int = |key: i64| get(key).and_then(Value::as_integer).map(i128::from);
    if int(1) != Some(2) || int(3) != Some(-7) || int(-1) != Some(1) {
        return None;
    }
    let (Some(Value::Bytes(x)), Some(Value::Bytes(y))) = (get(-2), get(-3)) else {
        return None;
    };
    if x.len() != 32 || y.len() != 32 {
        return None;
    }
    let mut point = [0u8; 65];
    point[0] = 0x04;
    point[1..33].copy_from_slice(x);
    point[33..].copy_from_slice(y);
    Some(point)
}

/// Nesting deeper than this is refused (authenticator data needs 2-3).
const CBOR_MAX_DEPTH: usize = 16;

/// Read one CBOR data item, `map` (named in errors), from the front of
/// `data` and advance past it. A map holding a key twice, at any depth, is
/// [`VerifyError::DuplicateKey`]; other malformed or truncated CBOR is
/// `MalformedAttestedData { what: malformed }`.
fn read_item(
    data: &mut &[u8],
    map: &'static str,
    malformed: &'static str,
) -> Result<Value, VerifyError> {
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut *data, CBOR_MAX_DEPTH)
        .map_err(|_| VerifyError::MalformedAttestedData { what: malformed })?;
    match duplicate_key(&value) {
        Some(key) => Err(VerifyError::DuplicateKey { map, key }),
        None => Ok(value),
    }
}

/// The first key some map in `v` (at any depth) holds twice, named.
pub(crate) fn duplicate_key(v: &Value) -> Option<String> {
    match v {
        Value::Map(entries) => {
            for (i, (k, _)) in entries.iter().enumerate() {
                if entries[..i].iter().any(|(seen, _)| seen == k) {
                    return Some(key_text(k));
                }
            }
            entries
                .iter()
                .find_map(|(k, v)| duplicate_key(k).or_else(|| duplicate_key(v)))
        }
        Value::Array(items) => items.iter().find_map(duplicate_key),
        Value::Tag(_, inner) => duplicate_key(inner),
        _ => None,
    }
}

/// A map key as it is named in an error: `3`, `-1`, `"hmac-secret"`,
/// `h'0a0b'`, or its kind; at most 40 characters, one line.
fn key_text(k: &Value) -> String {
    let s = match k {
        Value::Integer(n) => i128::from(*n).to_string(),
        Value::Text(t) => format!("{t:?}"),
        Value::Bytes(b) => format!("h'{}'", hex::encode(b)),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        Value::Array(_) => "an array".into(),
        Value::Map(_) => "a map".into(),
        Value::Tag(..) => "a tagged item".into(),
        _ => "a float".into(),
    };
    if s.chars().count() > 40 {
        s.chars().take(37).chain("...".chars()).collect()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fido::attestation::test_certs;
    use crate::fido::key::soft::{self, AutoTouch};
    use crate::fido::key::{GetAssertionRequest, MakeCredentialRequest, SecurityKey, RP_ID};
    use p256::ecdsa::signature::Signer;
    use p256::ecdsa::SigningKey;
    use rand::{Rng, RngCore, SeedableRng};
    use std::sync::Arc;

    const CDH: [u8; 32] = [0x5A; 32];
    const CRED: &[u8] = b"test-credential-id-0001";
    const AAGUID: [u8; 16] = [0xAA; 16];

    fn test_key(n: u8) -> SigningKey {
        SigningKey::from_slice(&[n; 32]).unwrap()
    }

    fn sec1(key: &SigningKey) -> Vec<u8> {
        key.verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec()
    }

    fn sign(key: &SigningKey, auth_data: &[u8], cdh: &[u8; 32]) -> Vec<u8> {
        let msg = [auth_data, cdh].concat();
        let sig: Signature = key.sign(&msg);
        sig.to_der().as_bytes().to_vec()
    }

    fn header(rp_id: &str, fl: u8, count: u32) -> Vec<u8> {
        let mut ad = Sha256::digest(rp_id.as_bytes()).to_vec();
        ad.push(fl);
        ad.extend_from_slice(&count.to_be_bytes());
        ad
    }

    fn assertion(key: &SigningKey, rp_id: &str, fl: u8, count: u32, cdh: &[u8; 32]) -> Assertion {
        let auth_data = header(rp_id, fl, count);
        Assertion {
            credential_id: CRED.to_vec(),
            signature: sign(key, &auth_data, cdh),
            auth_data,
            hmac_secret: None,
        }
    }

    fn expected(pk: &[u8], stored: u32, require_uv: bool) -> Expected<'_> {
        Expected {
            rp_id: RP_ID,
            credential_id: CRED,
            public_key_sec1: pk,
            stored_sign_count: stored,
            require_uv,
        }
    }

    fn cose(key: &SigningKey) -> Vec<u8> {
        let p = sec1(key);
        let mut c = vec![0xA5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20];
        c.extend_from_slice(&p[1..33]);
        c.extend_from_slice(&[0x22, 0x58, 0x20]);
        c.extend_from_slice(&p[33..]);
        c
    }

    /// authData with attested credential data, built by hand.
    fn attested_auth_data(key: &SigningKey, rp_id: &str, fl: u8, tail: &[u8]) -> Vec<u8> {
        let mut ad = header(rp_id, fl, 1);
        ad.extend_from_slice(&AAGUID);
        ad.extend_from_slice(&(CRED.len() as u16).to_be_bytes());
        ad.extend_from_slice(CRED);
        ad.extend_from_slice(&cose(key));
        ad.extend_from_slice(tail);
        ad
    }

    const HMAC_EXT: &[u8] = b"\xA1\x6Bhmac-secret\xF5";

    fn attestation(key: &SigningKey, auth_data: Vec<u8>) -> Attestation {
        Attestation {
            credential_id: CRED.to_vec(),
            public_key_sec1: sec1(key),
            aaguid: AAGUID,
            attestation_signature: sign(key, &auth_data, &CDH),
            auth_data,
            sign_count: 1,
            format: "packed".into(),
            statement_alg: Some(-7),
            x5c: Vec::new(),
            hmac_secret: true,
        }
    }

    fn good_attestation(key: &SigningKey) -> Attestation {
        let fl = flags::UP | flags::AT | flags::ED;
        attestation(key, attested_auth_data(key, RP_ID, fl, HMAC_EXT))
    }

    // ---- verify_assertion ----

    #[test]
    fn good_assertion_verifies() {
        let k = test_key(1);
        let pk = sec1(&k);
        let a = assertion(&k, RP_ID, flags::UP | flags::UV, 8, &CDH);
        let v = verify_assertion(&expected(&pk, 7, true), &CDH, &a).unwrap();
        assert_eq!(
            v,
            Verified {
                sign_count: 8,
                user_verified: true
            }
        );
        let a = assertion(&k, RP_ID, flags::UP, 9, &CDH);
        let v = verify_assertion(&expected(&pk, 8, false), &CDH, &a).unwrap();
        assert!(!v.user_verified);
    }

    #[test]
    fn soft_key_answers_verify_end_to_end() {
        const CHALLENGE: [u8; 32] = [0x42; 32];
        let dir = tempfile::tempdir().unwrap();
        let key = soft::open(&dir.path().join("k.json"), Arc::new(AutoTouch)).unwrap();
        let att = key
            .make_credential(&MakeCredentialRequest {
                rp_id: RP_ID.into(),
                challenge: CHALLENGE,
                user_id: vec![1],
                user_name: "u".into(),
                hmac_secret: true,
                uv: true,
                pin: None,
                exclude: vec![],
            })
            .unwrap();
        check_attestation(
            &att,
            &crate::fido::key::client_data_hash(&CHALLENGE),
            RP_ID,
            false,
        )
        .unwrap();

        let challenge2 = [0x77; 32];
        let cdh2 = crate::fido::key::client_data_hash(&challenge2);
        let a = key
            .get_assertion(&GetAssertionRequest {
                rp_id: RP_ID.into(),
                challenge: challenge2,
                allow: vec![att.credential_id.clone()],
                hmac_salt: Some([3; 32]),
                uv: true,
                pin: None,
                up: true,
            })
            .unwrap();
        let exp = Expected {
            rp_id: RP_ID,
            credential_id: &att.credential_id,
            public_key_sec1: &att.public_key_sec1,
            stored_sign_count: att.sign_count,
            require_uv: true,
        };
        let v = verify_assertion(&exp, &cdh2, &a).unwrap();
        assert_eq!(v.sign_count, att.sign_count + 1);
        assert!(v.user_verified);
        // The same answer replayed later fails the counter check.
        let exp = Expected {
            stored_sign_count: v.sign_count,
            ..exp
        };
        assert_eq!(
            verify_assertion(&exp, &cdh2, &a).unwrap_err(),
            VerifyError::CounterNotIncreased {
                stored: v.sign_count,
                got: v.sign_count
            }
        );
    }

    #[test]
    fn other_credential_id_is_refused() {
        let k = test_key(1);
        let pk = sec1(&k);
        let mut a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
        a.credential_id[0] ^= 1;
        assert_eq!(
            verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err(),
            VerifyError::WrongCredential
        );
    }

    #[test]
    fn short_auth_data_is_refused_without_panic() {
        let k = test_key(1);
        let pk = sec1(&k);
        let full = assertion(&k, RP_ID, flags::UP, 2, &CDH);
        for len in 0..AUTH_DATA_MIN {
            let mut a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
            a.auth_data.truncate(len);
            a.signature = sign(&k, &a.auth_data, &CDH);
            assert_eq!(
                verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err(),
                VerifyError::AuthDataTooShort { len }
            );
        }
        // A truncated signature is malformed, not a panic.
        for len in 0..full.signature.len() {
            let mut a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
            a.signature.truncate(len);
            assert_eq!(
                verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err(),
                VerifyError::MalformedSignature
            );
        }
    }

    #[test]
    fn other_rp_is_refused() {
        let k = test_key(1);
        let pk = sec1(&k);
        let a = assertion(&k, "evil.example", flags::UP, 2, &CDH);
        let err = verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err();
        assert_eq!(
            err,
            VerifyError::RpIdMismatch {
                rp_id: RP_ID.into()
            }
        );
    }

    #[test]
    fn up_clear_is_refused() {
        let k = test_key(1);
        let pk = sec1(&k);
        let a = assertion(&k, RP_ID, flags::UV, 2, &CDH);
        assert_eq!(
            verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err(),
            VerifyError::UserNotPresent
        );
    }

    #[test]
    fn uv_clear_is_refused_when_required() {
        let k = test_key(1);
        let pk = sec1(&k);
        let a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
        assert_eq!(
            verify_assertion(&expected(&pk, 1, true), &CDH, &a).unwrap_err(),
            VerifyError::UserNotVerified
        );
        assert!(verify_assertion(&expected(&pk, 1, false), &CDH, &a).is_ok());
    }

    #[test]
    fn counter_must_increase_unless_never_kept() {
        let k = test_key(1);
        let pk = sec1(&k);
        let check = |stored, got| {
            let a = assertion(&k, RP_ID, flags::UP, got, &CDH);
            verify_assertion(&expected(&pk, stored, false), &CDH, &a)
        };
        for (stored, got) in [(5, 5), (5, 4), (5, 0), (u32::MAX, 1)] {
            let err = check(stored, got).unwrap_err();
            assert_eq!(err, VerifyError::CounterNotIncreased { stored, got });
            assert!(err.to_string().contains("may be cloned"), "{err}");
        }
        assert_eq!(check(0, 0).unwrap().sign_count, 0);
        assert_eq!(check(0, 1).unwrap().sign_count, 1);
        assert_eq!(check(5, 6).unwrap().sign_count, 6);
        assert_eq!(check(5, 1000).unwrap().sign_count, 1000);
    }

    #[test]
    fn forged_low_counter_is_a_bad_signature_not_a_clone_alarm() {
        let k = test_key(1);
        let pk = sec1(&k);
        let mut a = assertion(&k, RP_ID, flags::UP, 9, &CDH);
        a.auth_data[36] = 1; // counter 9 -> 1 after signing
        assert_eq!(
            verify_assertion(&expected(&pk, 5, false), &CDH, &a).unwrap_err(),
            VerifyError::BadSignature
        );
    }

    #[test]
    fn tampering_challenge_or_key_breaks_the_signature() {
        let k = test_key(1);
        let pk = sec1(&k);
        let exp = expected(&pk, 1, false);
        // Every byte of authData is covered (flags kept valid: flip UV only).
        for i in 0..AUTH_DATA_MIN {
            if i < 32 {
                continue; // rpIdHash bytes fail the rp check first
            }
            let mut a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
            a.auth_data[i] ^= if i == 32 { flags::UV } else { 0x01 };
            assert_eq!(
                verify_assertion(&exp, &CDH, &a).unwrap_err(),
                VerifyError::BadSignature,
                "byte {i}"
            );
        }
        // Signed for another challenge.
        let a = assertion(&k, RP_ID, flags::UP, 2, &[0x11; 32]);
        assert_eq!(
            verify_assertion(&exp, &CDH, &a).unwrap_err(),
            VerifyError::BadSignature
        );
        // Signed by another key.
        let a = assertion(&test_key(2), RP_ID, flags::UP, 2, &CDH);
        assert_eq!(
            verify_assertion(&exp, &CDH, &a).unwrap_err(),
            VerifyError::BadSignature
        );
        // Garbage instead of a DER signature.
        let mut a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
        a.signature = vec![0x30, 0x02, 0x01];
        assert_eq!(
            verify_assertion(&exp, &CDH, &a).unwrap_err(),
            VerifyError::MalformedSignature
        );
    }

    #[test]
    fn bad_stored_public_key_is_reported() {
        let k = test_key(1);
        let a = assertion(&k, RP_ID, flags::UP, 2, &CDH);
        for pk in [vec![], vec![4; 65], sec1(&k)[..64].to_vec()] {
            assert_eq!(
                verify_assertion(&expected(&pk, 1, false), &CDH, &a).unwrap_err(),
                VerifyError::BadPublicKey
            );
        }
    }

    #[test]
    fn error_messages_are_one_line() {
        let errs = [
            VerifyError::WrongCredential,
            VerifyError::AuthDataTooShort { len: 3 },
            VerifyError::CounterNotIncreased { stored: 3, got: 2 },
            VerifyError::MalformedAttestedData { what: "x" },
            VerifyError::UnsupportedAttestationFormat {
                format: "tpm".into(),
            },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.is_empty() && !m.contains('\n'), "{m}");
        }
    }

    // ---- check_attestation ----

    #[test]
    fn good_attestations_pass() {
        let k = test_key(3);
        check_attestation(&good_attestation(&k), &CDH, RP_ID, false).unwrap();

        // Without hmac-secret and extensions.
        let mut a = attestation(
            &k,
            attested_auth_data(&k, RP_ID, flags::UP | flags::AT, &[]),
        );
        a.hmac_secret = false;
        check_attestation(&a, &CDH, RP_ID, false).unwrap();

        // Extensions with more than hmac-secret (credProtect: 2).
        let ext = b"\xA2\x6BcredProtect\x02\x6Bhmac-secret\xF5";
        let fl = flags::UP | flags::AT | flags::ED;
        check_attestation(
            &attestation(&k, attested_auth_data(&k, RP_ID, fl, ext)),
            &CDH,
            RP_ID,
            false,
        )
        .unwrap();

        // "none": no signature to check.
        let mut a = good_attestation(&k);
        a.format = "none".into();
        a.attestation_signature.clear();
        check_attestation(&a, &CDH, RP_ID, false).unwrap();

        // Full packed attestation: signed by the certificate's key, not the credential's.
        let (a, _) = certified_attestation(&k);
        check_attestation(&a, &CDH, RP_ID, false).unwrap();
    }

    /// A good attestation of `key`'s credential, packed with an x5c chain
    /// (leaf, intermediate) under a fresh test root; and that root.
    fn certified_attestation(key: &SigningKey) -> (Attestation, Vec<u8>) {
        let root = test_certs::root_ca("CN=verify test root");
        let (chain, leaf_key) = test_certs::attestation_chain(&root, AAGUID);
        let mut a = good_attestation(key);
        a.attestation_signature = sign(&leaf_key, &a.auth_data, &CDH);
        a.x5c = chain;
        (a, root.der)
    }

    #[test]
    fn full_attestation_is_signed_by_the_leaf_certificate() {
        let k = test_key(3);
        let (good, root) = certified_attestation(&k);
        // And the chain itself holds (policy check, done by enrol).
        crate::fido::attestation::verify_packed_chain(
            &good,
            &CDH,
            &[root],
            std::time::SystemTime::now(),
        )
        .unwrap();
        // Signed by the credential key (self attestation) while sending a certificate.
        let mut a = good.clone();
        a.attestation_signature = sign(&k, &a.auth_data, &CDH);
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::BadCertificateAttestationSignature
        );
        // Another challenge.
        assert_eq!(
            check_attestation(&good, &[0; 32], RP_ID, false).unwrap_err(),
            VerifyError::BadCertificateAttestationSignature
        );
        let mut a = good.clone();
        a.attestation_signature = vec![0x30, 0x00];
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::MalformedSignature
        );
        // A leaf that is not a certificate, truncated or garbage: refused, no panic.
        for len in [0, 1, 2, 10, good.x5c[0].len() / 2, good.x5c[0].len() - 1] {
            let mut a = good.clone();
            a.x5c[0].truncate(len);
            let err = check_attestation(&a, &CDH, RP_ID, false).unwrap_err();
            assert!(
                matches!(err, VerifyError::AttestationCertificate { .. }),
                "{len}: {err}"
            );
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        // An RSA leaf cannot have made an ES256 signature.
        let rsa = test_certs::TestCert::self_signed(
            test_certs::CertParams::ca("CN=rsa"),
            test_certs::CertKey::rsa(),
        );
        let mut a = good.clone();
        a.x5c = vec![rsa.der];
        assert!(matches!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::AttestationCertificate { reason } if reason.contains("RSA")
        ));
    }

    #[test]
    fn attestation_signature_must_hold() {
        let k = test_key(3);
        let a = good_attestation(&k);
        // Wrong challenge.
        assert_eq!(
            check_attestation(&a, &[0; 32], RP_ID, false).unwrap_err(),
            VerifyError::BadAttestationSignature
        );
        // Tampered counter byte (the rest of the data still parses).
        let mut t = a.clone();
        t.auth_data[36] ^= 1;
        assert_eq!(
            check_attestation(&t, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::BadAttestationSignature
        );
        // Signed by another key.
        let mut t = a.clone();
        t.attestation_signature = sign(&test_key(4), &a.auth_data, &CDH);
        assert_eq!(
            check_attestation(&t, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::BadAttestationSignature
        );
        let mut t = a.clone();
        t.attestation_signature.clear();
        assert_eq!(
            check_attestation(&t, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::MalformedSignature
        );
    }

    #[test]
    fn attestation_header_checks() {
        let k = test_key(3);
        assert_eq!(
            check_attestation(&good_attestation(&k), &CDH, "evil.example", false).unwrap_err(),
            VerifyError::RpIdMismatch {
                rp_id: "evil.example".into()
            }
        );
        let a = attestation(
            &k,
            attested_auth_data(&k, RP_ID, flags::AT | flags::ED, HMAC_EXT),
        );
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::UserNotPresent
        );
        let a = attestation(
            &k,
            attested_auth_data(&k, RP_ID, flags::UP | flags::ED, HMAC_EXT),
        );
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::AttestedDataMissing
        );
    }

    #[test]
    fn attested_data_must_match_what_was_reported() {
        let k = test_key(3);
        let mut a = good_attestation(&k);
        a.credential_id[0] ^= 1;
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::AttestedCredentialMismatch
        );
        let mut a = good_attestation(&k);
        a.public_key_sec1 = sec1(&test_key(4));
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::AttestedKeyMismatch
        );
        let mut a = good_attestation(&k);
        a.aaguid[0] ^= 1;
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::AaguidMismatch
        );
        // hmac-secret claimed but not in the extensions.
        let mut a = attestation(
            &k,
            attested_auth_data(&k, RP_ID, flags::UP | flags::AT, &[]),
        );
        a.hmac_secret = true;
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::HmacSecretNotConfirmed
        );
        let fl = flags::UP | flags::AT | flags::ED;
        let a = attestation(
            &k,
            attested_auth_data(&k, RP_ID, fl, b"\xA1\x6Bhmac-secret\xF4"),
        );
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::HmacSecretNotConfirmed
        );
    }

    #[test]
    fn unsupported_format_is_refused() {
        let mut a = good_attestation(&test_key(3));
        a.format = "fido-u2f".into();
        assert_eq!(
            check_attestation(&a, &CDH, RP_ID, false).unwrap_err(),
            VerifyError::UnsupportedAttestationFormat {
                format: "fido-u2f".into()
            }
        );
    }

    #[test]
    fn malformed_attested_data_is_refused() {
        let k = test_key(3);
        let fl = flags::UP | flags::AT | flags::ED;
        let malformed = |ad: Vec<u8>| {
            let a = attestation(&k, ad);
            matches!(
                check_attestation(&a, &CDH, RP_ID, false),
                Err(VerifyError::MalformedAttestedData { .. })
            )
        };
        // Trailing bytes, with and without ED.
        assert!(malformed(attested_auth_data(
            &k,
            RP_ID,
            fl,
            b"\xA1\x6Bhmac-secret\xF5\x00"
        )));
        assert!(malformed(attested_auth_data(
            &k,
            RP_ID,
            flags::UP | flags::AT,
            b"\x00"
        )));
        // ED set but no extensions; extensions not a map.
        assert!(malformed(attested_auth_data(&k, RP_ID, fl, b"")));
        assert!(malformed(attested_auth_data(&k, RP_ID, fl, b"\x80")));
        // A COSE key for another algorithm (alg -8 EdDSA).
        let mut ad = attested_auth_data(&k, RP_ID, fl, HMAC_EXT);
        let alg = 37 + 16 + 2 + CRED.len() + 4;
        assert_eq!(ad[alg], 0x26);
        ad[alg] = 0x27;
        assert!(malformed(ad));
        // x not on the curve.
        let mut ad = attested_auth_data(&k, RP_ID, fl, HMAC_EXT);
        ad[37 + 16 + 2 + CRED.len() + 10] ^= 1;
        let mut a = attestation(&k, ad.clone());
        a.public_key_sec1[1] ^= 1;
        assert!(matches!(
            check_attestation(&a, &CDH, RP_ID, false),
            Err(VerifyError::MalformedAttestedData { .. })
        ));
        // Credential id length larger than the data.
        let mut ad = attested_auth_data(&k, RP_ID, fl, HMAC_EXT);
        ad[53] = 0xFF;
        assert!(malformed(ad));
    }

    #[test]
    fn truncated_or_mutated_attestations_never_panic() {
        let k = test_key(3);
        let good = good_attestation(&k);
        for len in 0..good.auth_data.len() {
            let mut a = good.clone();
            a.auth_data.truncate(len);
            assert!(
                check_attestation(&a, &CDH, RP_ID, false).is_err(),
                "len {len}"
            );
        }
        // Any single bit flip anywhere fails one check or another.
        for i in 0..good.auth_data.len() {
            for bit in [0x01, 0x80] {
                let mut a = good.clone();
                a.auth_data[i] ^= bit;
                assert!(
                    check_attestation(&a, &CDH, RP_ID, false).is_err(),
                    "byte {i}"
                );
            }
        }
        // Random bytes after a valid header: the CBOR reader must cope.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let fl = flags::UP | flags::AT | flags::ED;
        for _ in 0..3000 {
            let mut ad = header(RP_ID, fl, 1);
            let n = rng.gen_range(0..120);
            let mut tail = vec![0u8; n];
            rng.fill_bytes(&mut tail);
            // Often keep a plausible prefix so the parser gets deeper.
            if rng.gen_bool(0.5) && n > 20 {
                tail[16] = 0;
                tail[17] = rng.gen_range(0..4);
            }
            ad.extend_from_slice(&tail);
            let mut a = good.clone();
            a.auth_data = ad;
            let _ = check_attestation(&a, &CDH, RP_ID, false);
        }
        // Deep nesting and huge declared lengths.
        let mut ad = header(RP_ID, fl, 1);
        ad.extend_from_slice(&[0u8; 16]);
        ad.extend_from_slice(&[0, 0]);
        ad.extend(std::iter::repeat_n(0x81, 10_000));
        let mut a = good.clone();
        a.auth_data = ad;
        assert!(check_attestation(&a, &CDH, RP_ID, false).is_err());
        for huge in [
            &[0x5B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF][..],
            &[0x9B, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0xBA, 0xFF, 0xFF, 0xFF, 0xFF],
            &[0xBF],
        ] {
            let mut ad = header(RP_ID, fl, 1);
            ad.extend_from_slice(&[0u8; 18]);
            ad.extend_from_slice(huge);
            let mut a = good.clone();
            a.auth_data = ad;
            assert!(check_attestation(&a, &CDH, RP_ID, false).is_err());
        }
    }

    // ---- duplicate map keys (issue #12 item 3) ----

    fn duplicate(r: Result<impl std::fmt::Debug, VerifyError>, map: &'static str, key: &str) {
        let e = r.expect_err("a duplicate key must be refused");
        assert_eq!(
            e,
            VerifyError::DuplicateKey {
                map,
                key: key.to_string()
            }
        );
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn duplicate_hmac_secret_in_attestation_extensions_is_refused() {
        let k = test_key(3);
        let fl = flags::UP | flags::AT | flags::ED;
        // {"hmac-secret": true, "hmac-secret": true}: exactly one duplicate key.
        let ext = b"\xA2\x6Bhmac-secret\xF5\x6Bhmac-secret\xF5";
        let a = attestation(&k, attested_auth_data(&k, RP_ID, fl, ext));
        duplicate(
            check_attestation(&a, &CDH, RP_ID, false),
            "the extensions",
            "\"hmac-secret\"",
        );
        // The same two keys false then true: not a way to smuggle a confirmation either.
        let ext = b"\xA2\x6Bhmac-secret\xF4\x6Bhmac-secret\xF5";
        let a = attestation(&k, attested_auth_data(&k, RP_ID, fl, ext));
        duplicate(
            check_attestation(&a, &CDH, RP_ID, false),
            "the extensions",
            "\"hmac-secret\"",
        );
    }

    #[test]
    fn duplicate_key_in_cose_key_is_refused() {
        let k = test_key(3);
        let fl = flags::UP | flags::AT | flags::ED;
        // The good COSE key with its alg (3: -7) written twice: a map of 6 entries.
        let mut c = cose(&k);
        c[0] = 0xA6;
        c.extend_from_slice(&[0x03, 0x26]);
        let mut ad = header(RP_ID, fl, 1);
        ad.extend_from_slice(&AAGUID);
        ad.extend_from_slice(&(CRED.len() as u16).to_be_bytes());
        ad.extend_from_slice(CRED);
        ad.extend_from_slice(&c);
        ad.extend_from_slice(HMAC_EXT);
        let a = attestation(&k, ad);
        duplicate(
            check_attestation(&a, &CDH, RP_ID, false),
            "the COSE key",
            "3",
        );
    }

    #[test]
    fn duplicate_key_in_nested_extension_map_is_refused() {
        let k = test_key(3);
        let fl = flags::UP | flags::AT | flags::ED;
        // {"hmac-secret": true, "x": {-1: 0, -1: 0}}
        let ext = b"\xA2\x6Bhmac-secret\xF5\x61x\xA2\x20\x00\x20\x00";
        let a = attestation(&k, attested_auth_data(&k, RP_ID, fl, ext));
        duplicate(
            check_attestation(&a, &CDH, RP_ID, false),
            "the extensions",
            "-1",
        );
    }

    #[test]
    fn duplicate_hmac_secret_in_assertion_extensions_is_refused() {
        let k = test_key(1);
        let pk = sec1(&k);
        let mut auth_data = header(RP_ID, flags::UP | flags::ED, 8);
        // {"hmac-secret": h'00..', "hmac-secret": h'01..'}: two outputs to choose from.
        auth_data.extend_from_slice(b"\xA2\x6Bhmac-secret\x58\x20");
        auth_data.extend_from_slice(&[0u8; 32]);
        auth_data.extend_from_slice(b"\x6Bhmac-secret\x58\x20");
        auth_data.extend_from_slice(&[1u8; 32]);
        let a = Assertion {
            credential_id: CRED.to_vec(),
            signature: sign(&k, &auth_data, &CDH),
            auth_data,
            hmac_secret: None,
        };
        duplicate(
            verify_assertion(&expected(&pk, 7, false), &CDH, &a),
            "the extensions",
            "\"hmac-secret\"",
        );
        // One hmac-secret output in the extensions is fine.
        let mut auth_data = header(RP_ID, flags::UP | flags::ED, 8);
        auth_data.extend_from_slice(b"\xA1\x6Bhmac-secret\x58\x20");
        auth_data.extend_from_slice(&[0u8; 32]);
        let a = Assertion {
            credential_id: CRED.to_vec(),
            signature: sign(&k, &auth_data, &CDH),
            auth_data,
            hmac_secret: None,
        };
        verify_assertion(&expected(&pk, 7, false), &CDH, &a).unwrap();
    }

    #[test]
    fn cbor_items_are_read_one_at_a_time() {
        let data = [0x18, 0x2A, 0x43, 1, 2, 3, 0xA1, 0x20, 0xF5];
        let mut r = &data[..];
        let item = |r: &mut &[u8]| read_item(r, "m", "bad");
        assert_eq!(item(&mut r), Ok(Value::from(42)));
        assert_eq!(item(&mut r), Ok(Value::Bytes(vec![1, 2, 3])));
        assert_eq!(
            item(&mut r),
            Ok(Value::Map(vec![(Value::from(-1), true.into())]))
        );
        assert!(r.is_empty());
        assert!(item(&mut r).is_err());
        // Invalid UTF-8 text, reserved info, truncated lengths, too deep.
        let deep = [0x81; 40];
        for bad in [&[0x61, 0xFF][..], &[0x1C], &[0x19, 0x01], &[0x42, 1], &deep] {
            let mut r = bad;
            assert_eq!(
                item(&mut r),
                Err(VerifyError::MalformedAttestedData { what: "bad" }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn enrolment_asking_for_uv_needs_the_uv_flag() {
        let k = test_key(3);
        // UV asked, authData without UV: refused, naming the flag.
        let a = good_attestation(&k);
        let err = check_attestation(&a, &CDH, RP_ID, true).unwrap_err();
        assert_eq!(err, VerifyError::EnrolmentNotUserVerified);
        assert!(err.to_string().contains("UV flag clear"), "{err}");
        // The same answer without UV asked is fine; with UV set it passes.
        check_attestation(&a, &CDH, RP_ID, false).unwrap();
        let fl = flags::UP | flags::UV | flags::AT | flags::ED;
        let a = attestation(&k, attested_auth_data(&k, RP_ID, fl, HMAC_EXT));
        check_attestation(&a, &CDH, RP_ID, true).unwrap();
    }

    #[test]
    fn packed_alg_must_match_the_key() {
        let k = test_key(3);
        // Self attestation claiming RS256 (-257), or no alg at all.
        for alg in [Some(-257), Some(-8), Some(0), None] {
            let mut a = good_attestation(&k);
            a.statement_alg = alg;
            let err = check_attestation(&a, &CDH, RP_ID, false).unwrap_err();
            assert_eq!(
                err,
                VerifyError::StatementAlgMismatch {
                    alg,
                    key: "the credential key"
                },
                "{alg:?}"
            );
        }
        // Full attestation: the leaf's key type (P-256, ES256) decides.
        let (mut a, _) = certified_attestation(&k);
        a.statement_alg = Some(-35);
        let err = check_attestation(&a, &CDH, RP_ID, false).unwrap_err();
        assert!(
            err.to_string().contains("alg -35")
                && err.to_string().contains("attestation certificate"),
            "{err}"
        );
        // `none` carries no alg.
        let mut a = good_attestation(&k);
        a.format = "none".into();
        a.statement_alg = None;
        a.attestation_signature.clear();
        check_attestation(&a, &CDH, RP_ID, false).unwrap();
    }
}
