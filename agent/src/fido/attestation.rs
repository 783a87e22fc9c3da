//! Attestation trust: the chain of a `packed` attestation with `x5c` checked
//! against the roots in `key.attestation_roots`.
//!
//! [`crate::fido::verify::check_attestation`] already checked that the answer is
//! self-consistent and that the attestation signature holds with the leaf
//! certificate's key. [`verify_packed_chain`] is the policy step, run only
//! when roots are configured. Its own checks, each refusal naming the
//! certificate ("attestation certificate 2 (CN=…)") and the rule:
//!
//! * the packed leaf (WebAuthn §8.2.1): it signed authData ‖
//!   clientDataHash with a P-256 key; version 3; subject OU "Authenticator
//!   Attestation"; not a CA; the AAGUID extension present, not critical,
//!   equal to authData's AAGUID;
//! * every certificate of `x5c`: within its validity; ECDSA signature
//!   algorithms without parameters; no critical extension outside
//!   `UNDERSTOOD_CRITICAL`;
//! * every link (RFC 5280 6.1): the issuer name is the next certificate's
//!   subject, whose key signed it; every issuer (and the root) is a CA,
//!   has keyCertSign if it has keyUsage, and a pathLenConstraint that
//!   allows the intermediates below it;
//! * the chain ends at, or is signed by, a configured root (valid now).
//!
//! Then rustls-webpki validates the same path once more (its own path
//! building, signatures, names, validity, basic constraints, critical
//! extensions, name constraints) with any or no extended key usage, as FIDO
//! leaves have none: a second, maintained implementation of the RFC 5280
//! part, whose refusal names the leaf and webpki's reason.
//!
//! Signatures checked: ECDSA P-256 or P-384 with SHA-256 or SHA-384, RSA
//! PKCS#1 v1.5 with SHA-256, SHA-384 or SHA-512. Errors are one line naming
//! the certificate and the fix; malformed input is an error, never a panic.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use ring::signature;
use sha2::{Digest as _, Sha384};
use touchgate::text::{one_line, UNCUT};
use x509_cert::der::asn1::{ObjectIdentifier, OctetString, UintRef};
use x509_cert::der::{Decode as _, Encode as _, Header, Reader as _, SliceReader};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

use crate::fido::ids::format_aaguid;
use crate::fido::key::Attestation;

// The test certificate builder is the soft key's, shared with the end-to-end tests.
#[cfg(test)]
pub(crate) use touchgate_softkey::certs as test_certs;

/// The most certificates accepted in `x5c`.
pub const MAX_CHAIN: usize = 8;
/// The largest root file read.
const MAX_ROOT_FILE: u64 = 1 << 20;

/// id-fido-gen-ce-aaguid: the key model an attestation certificate stands for.
pub const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const ID_AT_ORGANIZATIONAL_UNIT: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.11");
/// Critical extensions whose meaning is enforced (here or by webpki):
/// basicConstraints, keyUsage, extKeyUsage (any accepted), subjectAltName,
/// nameConstraints (webpki), subject/authority key identifiers.
const UNDERSTOOD_CRITICAL: [ObjectIdentifier; 7] = [
    ObjectIdentifier::new_unwrap("2.5.29.19"),
    ObjectIdentifier::new_unwrap("2.5.29.15"),
    ObjectIdentifier::new_unwrap("2.5.29.37"),
    ObjectIdentifier::new_unwrap("2.5.29.17"),
    ObjectIdentifier::new_unwrap("2.5.29.30"),
    ObjectIdentifier::new_unwrap("2.5.29.14"),
    ObjectIdentifier::new_unwrap("2.5.29.35"),
];

/// What a trusted chain was, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Subject of the attestation (leaf) certificate.
    pub leaf_subject: String,
    /// Subject of the configured root the chain ends at.
    pub root_subject: String,
    /// Certificates the key sent in `x5c`.
    pub chain_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("this security key gave no attestation certificate, but key.attestation_roots requires one: {what}; enrol a key whose vendor attests it, or remove key.attestation_roots")]
    NoCertificate { what: &'static str },
    #[error("attestation format {format:?} cannot be checked against key.attestation_roots (only packed can): use a key with packed attestation, or remove key.attestation_roots")]
    UnsupportedFormat { format: String },
    #[error("the security key sent {len} attestation certificates, more than the {MAX_CHAIN} accepted: refused")]
    ChainTooLong { len: usize },
    #[error("certificate {position} of the attestation chain (1 is the leaf) is not a valid X.509 certificate ({reason}): the security key sent a malformed chain, refused")]
    MalformedCertificate { position: usize, reason: String },
    #[error("the authenticator data is too short to hold an AAGUID: refused")]
    MalformedAuthData,
    #[error(
        "{cert} has no P-256 key ({reason}), which packed attestation with ES256 needs: refused"
    )]
    LeafKey { cert: String, reason: String },
    #[error("the attestation signature does not verify with the key of {cert}: refused")]
    BadSignature { cert: String },
    #[error("{cert} is a CA certificate, which packed attestation forbids for the leaf: refused")]
    LeafIsCa { cert: String },
    #[error("the AAGUID extension of {cert} is malformed: refused")]
    MalformedAaguid { cert: String },
    #[error(
        "{cert} is for key model {certificate} but the security key reports AAGUID {key}: refused"
    )]
    AaguidMismatch {
        cert: String,
        certificate: String,
        key: String,
    },
    #[error("{cert} expired at {not_after}: refused (if the system clock is right, the vendor's chain is out of date)")]
    Expired { cert: String, not_after: String },
    #[error("{cert} is not valid before {not_before}: check the system clock")]
    NotYetValid { cert: String, not_before: String },
    #[error(
        "{cert} is not signed by the next one in the chain, {issuer}: the chain is broken, refused"
    )]
    BrokenChain { cert: String, issuer: String },
    #[error("{cert} signs another but is not a CA (basicConstraints): refused")]
    NotCa { cert: String },
    #[error("{cert} is signed with {algorithm}, which touchgate cannot check (ECDSA P-256 or P-384 with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512): refused")]
    UnsupportedAlgorithm { cert: String, algorithm: String },
    #[error("{cert} has a key touchgate cannot check signatures with ({reason}; P-256, P-384 and RSA are supported): refused")]
    UnsupportedKey { cert: String, reason: String },
    #[error("the attestation chain ends at {cert} (issued by \"{issuer}\"), which none of the {roots} certificate(s) in key.attestation_roots signed: add that vendor's root to key.attestation_roots, or use a key from a trusted vendor")]
    Untrusted {
        cert: String,
        issuer: String,
        roots: usize,
    },
    #[error("{cert} {rule}: refused")]
    Rule { cert: String, rule: String },
    #[error("the attestation chain from {cert} fails path validation ({reason}): refused")]
    PathValidation { cert: String, reason: String },
    #[error("certificate {position} of key.attestation_roots is not a valid X.509 certificate ({reason}): fix key.attestation_roots")]
    MalformedRoot { position: usize, reason: String },
    #[error("cannot read attestation root file {path}: {reason}: fix key.attestation_roots")]
    RootFile { path: String, reason: String },
    #[error("attestation root file {path} holds no certificate (PEM or DER expected): fix key.attestation_roots")]
    RootFileEmpty { path: String },
    #[error("certificate {position} in attestation root file {path} is not a valid X.509 certificate ({reason}): fix key.attestation_roots")]
    RootFileMalformed {
        path: String,
        position: usize,
        reason: String,
    },
}

/// A parsed certificate with the raw bytes its signature covers.
struct Cert<'a> {
    der: &'a [u8],
    tbs: &'a [u8],
    cert: Certificate,
    subject: String,
    /// How errors name it: "attestation certificate 2 (CN=…)" or
    /// "attestation root 1 of key.attestation_roots (CN=…)".
    label: String,
}

impl<'a> Cert<'a> {
    fn parse(der: &'a [u8]) -> Result<Cert<'a>, String> {
        let cert = Certificate::from_der(der).map_err(|e| one_line(&e.to_string(), UNCUT))?;
        let tbs = tbs_bytes(der).map_err(|e| one_line(&e.to_string(), UNCUT))?;
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err("signatureAlgorithm differs from the signature in tbsCertificate".into());
        }
        let subject = display_name(&cert.tbs_certificate.subject);
        Ok(Cert {
            der,
            tbs,
            cert,
            label: subject.clone(),
            subject,
        })
    }

    fn labelled(mut self, label: String) -> Self {
        self.label = format!("{label} ({})", self.subject);
        self
    }

    fn rule(&self, rule: impl Into<String>) -> AttestationError {
        AttestationError::Rule {
            cert: self.label.clone(),
            rule: rule.into(),
        }
    }

    fn issuer(&self) -> String {
        display_name(&self.cert.tbs_certificate.issuer)
    }

    /// Whether this certificate's issuer name is `issuer`'s subject name
    /// (compared as DER, as RFC 5280 7.1 allows).
    fn issuer_is(&self, issuer: &Cert<'_>) -> bool {
        let a = self.cert.tbs_certificate.issuer.to_der();
        let b = issuer.cert.tbs_certificate.subject.to_der();
        matches!((a, b), (Ok(a), Ok(b)) if a == b)
    }

    fn basic_constraints(&self) -> Option<BasicConstraints> {
        // A malformed or repeated extension counts as absent: the caller
        // then refuses where a CA is needed.
        self.cert
            .tbs_certificate
            .get::<BasicConstraints>()
            .ok()
            .flatten()
            .map(|(_, bc)| bc)
    }

    fn is_ca(&self) -> bool {
        self.basic_constraints().is_some_and(|bc| bc.ca)
    }

    fn extensions(&self) -> &[x509_cert::ext::Extension] {
        self.cert
            .tbs_certificate
            .extensions
            .as_deref()
            .unwrap_or_default()
    }

    /// `now` within notBefore..=notAfter.
    fn check_validity(&self, now: SystemTime) -> Result<(), AttestationError> {
        let v = &self.cert.tbs_certificate.validity;
        if now < v.not_before.to_system_time() {
            return Err(AttestationError::NotYetValid {
                cert: self.label.clone(),
                not_before: v.not_before.to_string(),
            });
        }
        if now > v.not_after.to_system_time() {
            return Err(AttestationError::Expired {
                cert: self.label.clone(),
                not_after: v.not_after.to_string(),
            });
        }
        Ok(())
    }

    /// What every certificate of `x5c` must satisfy: validity, no
    /// parameters in an ECDSA signature algorithm (RFC 5758 3.2), no
    /// critical extension touchgate (or webpki) does not enforce.
    fn check_common(&self, now: SystemTime) -> Result<(), AttestationError> {
        self.check_validity(now)?;
        let alg = &self.cert.signature_algorithm;
        if [ECDSA_WITH_SHA256, ECDSA_WITH_SHA384].contains(&alg.oid) && alg.parameters.is_some() {
            return Err(self.rule(format!(
                "is signed with {} with parameters, which must be absent for ECDSA (RFC 5758 3.2)",
                algorithm_name(&alg.oid)
            )));
        }
        if let Some(ext) = self
            .extensions()
            .iter()
            .find(|e| e.critical && !UNDERSTOOD_CRITICAL.contains(&e.extn_id))
        {
            return Err(self.rule(format!(
                "has an unknown critical extension {} (RFC 5280 4.2: a certificate with a critical extension the verifier does not process is refused)",
                algorithm_name(&ext.extn_id)
            )));
        }
        Ok(())
    }

    /// What a certificate that signs another must satisfy, with
    /// `below` intermediate CAs under it in the path (RFC 5280 6.1.4):
    /// a CA; keyCertSign if it has keyUsage; pathLenConstraint ≥ `below`.
    fn check_issuer(&self, below: usize) -> Result<(), AttestationError> {
        let Some(bc) = self.basic_constraints().filter(|bc| bc.ca) else {
            return Err(AttestationError::NotCa {
                cert: self.label.clone(),
            });
        };
        match self.cert.tbs_certificate.get::<KeyUsage>() {
            Ok(Some((_, ku))) if !ku.key_cert_sign() => {
                return Err(self.rule(
                    "has keyUsage without keyCertSign, so it may not sign certificates (RFC 5280 4.2.1.3)",
                ))
            }
            Err(_) => return Err(self.rule("has a malformed or repeated keyUsage extension")),
            Ok(_) => {}
        }
        if let Some(max) = bc.path_len_constraint {
            if usize::from(max) < below {
                return Err(self.rule(format!(
                    "has pathLenConstraint {max} but {below} intermediate CA certificate(s) below it (RFC 5280 4.2.1.9)"
                )));
            }
        }
        Ok(())
    }

    fn public_key(&self) -> Result<PublicKey, AttestationError> {
        public_key(&self.cert).map_err(|reason| AttestationError::UnsupportedKey {
            cert: self.label.clone(),
            reason,
        })
    }

    /// Whether `issuer` signed this certificate. An algorithm touchgate
    /// does not know is an error; a key of another type is "not signed".
    fn signed_by(&self, issuer: &PublicKey) -> Result<bool, AttestationError> {
        let Some(sig) = self.cert.signature.as_bytes() else {
            return Ok(false);
        };
        let alg = &self.cert.signature_algorithm.oid;
        let ok = match (alg, issuer) {
            (a, PublicKey::P256(k)) if *a == ECDSA_WITH_SHA256 => {
                p256::ecdsa::Signature::from_der(sig).is_ok_and(|s| k.verify(self.tbs, &s).is_ok())
            }
            (a, PublicKey::P256(k)) if *a == ECDSA_WITH_SHA384 => {
                p256::ecdsa::Signature::from_der(sig)
                    .is_ok_and(|s| k.verify_prehash(&Sha384::digest(self.tbs), &s).is_ok())
            }
            (a, PublicKey::P384(point)) if *a == ECDSA_WITH_SHA256 || *a == ECDSA_WITH_SHA384 => {
                let ring_alg = if *a == ECDSA_WITH_SHA256 {
                    &ring::signature::ECDSA_P384_SHA256_ASN1
                } else {
                    &ring::signature::ECDSA_P384_SHA384_ASN1
                };
                ring::signature::UnparsedPublicKey::new(ring_alg, point)
                    .verify(self.tbs, sig)
                    .is_ok()
            }
            (a, PublicKey::Rsa(k)) if *a == SHA256_WITH_RSA => {
                rsa_verify(&signature::RSA_PKCS1_2048_8192_SHA256, k, self.tbs, sig)
            }
            (a, PublicKey::Rsa(k)) if *a == SHA384_WITH_RSA => {
                rsa_verify(&signature::RSA_PKCS1_2048_8192_SHA384, k, self.tbs, sig)
            }
            (a, PublicKey::Rsa(k)) if *a == SHA512_WITH_RSA => {
                rsa_verify(&signature::RSA_PKCS1_2048_8192_SHA512, k, self.tbs, sig)
            }
            (a, _)
                if [
                    ECDSA_WITH_SHA256,
                    ECDSA_WITH_SHA384,
                    SHA256_WITH_RSA,
                    SHA384_WITH_RSA,
                    SHA512_WITH_RSA,
                ]
                .contains(a) =>
            {
                false
            }
            (a, _) => {
                return Err(AttestationError::UnsupportedAlgorithm {
                    cert: self.label.clone(),
                    algorithm: algorithm_name(a),
                })
            }
        };
        Ok(ok)
    }
}

enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    /// The uncompressed SEC1 point (checked by ring when it verifies).
    P384(Vec<u8>),
    /// DER `RSAPublicKey` (PKCS#1) of a 2048- to 8192-bit modulus.
    Rsa(Vec<u8>),
}

fn public_key(cert: &Certificate) -> Result<PublicKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let der = spki.to_der().map_err(|e| one_line(&e.to_string(), UNCUT))?;
    if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        if curve == Some(SECP384R1) {
            return spki
                .subject_public_key
                .as_bytes()
                .filter(|p| p.len() == 97 && p[0] == 0x04)
                .map(|p| PublicKey::P384(p.to_vec()))
                .ok_or_else(|| "a malformed P-384 key".into());
        }
        p256::PublicKey::from_public_key_der(&der)
            .map(|k| PublicKey::P256(k.into()))
            .map_err(|_| "an EC key on neither P-256 nor P-384".into())
    } else if spki.algorithm.oid == RSA_ENCRYPTION {
        rsa_public_key(spki.subject_public_key.raw_bytes()).map(PublicKey::Rsa)
    } else {
        Err(format!(
            "key algorithm {}",
            algorithm_name(&spki.algorithm.oid)
        ))
    }
}

/// The `RSAPublicKey` (SEQUENCE { modulus, publicExponent }) of a certificate,
/// if its modulus has the 2048 to 8192 bits ring verifies with.
fn rsa_public_key(der: &[u8]) -> Result<Vec<u8>, String> {
    let modulus_bits = SliceReader::new(der)
        .and_then(|mut r| {
            let bits = r.sequence(|r| {
                let n = UintRef::decode(r)?;
                UintRef::decode(r)?;
                let first = n.as_bytes().first().copied().unwrap_or(0);
                Ok((n.as_bytes().len() * 8).saturating_sub(first.leading_zeros() as usize))
            })?;
            r.finish(bits)
        })
        .map_err(|e| one_line(&format!("an unusable RSA key: {e}"), UNCUT))?;
    if !(2048..=8192).contains(&modulus_bits) {
        return Err(format!(
            "an RSA key of {modulus_bits} bits (2048 to 8192 are accepted)"
        ));
    }
    Ok(der.to_vec())
}

/// RSASSA-PKCS1-v1_5 verification (ring's; public-key only).
fn rsa_verify(alg: &'static signature::RsaParameters, key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(alg, key)
        .verify(msg, sig)
        .is_ok()
}

/// The DER of tbsCertificate exactly as sent (not re-encoded).
fn tbs_bytes(der: &[u8]) -> x509_cert::der::Result<&[u8]> {
    let mut r = SliceReader::new(der)?;
    Header::decode(&mut r)?;
    let h = r.peek_header()?;
    let len = (h.encoded_len()? + h.length)?;
    r.read_slice(len)
}

fn algorithm_name(oid: &ObjectIdentifier) -> String {
    match x509_cert::der::oid::db::DB.by_oid(oid) {
        Some(name) => format!("{name} ({oid})"),
        None => oid.to_string(),
    }
}

/// A subject or issuer name for messages: RFC 4514, one line, bounded.
fn display_name(name: &x509_cert::name::Name) -> String {
    let s = name.to_string();
    if s.is_empty() {
        return "(empty name)".into();
    }
    let s = one_line(&s, UNCUT);
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// The attestation key of a leaf certificate: its P-256 public key. Used by
/// [`crate::fido::verify::check_attestation`] for the signature check (the
/// reason, on error, is a short phrase).
pub(crate) fn leaf_verifying_key(der: &[u8]) -> Result<p256::ecdsa::VerifyingKey, String> {
    let cert = Cert::parse(der).map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    match public_key(&cert.cert) {
        Ok(PublicKey::P256(k)) => Ok(k),
        Ok(PublicKey::Rsa(_)) => Err("its key is RSA, not P-256 (ES256)".into()),
        Ok(PublicKey::P384(_)) => Err("its key is P-384, not P-256 (ES256)".into()),
        Err(reason) => Err(format!("its key is not P-256 ({reason})")),
    }
}

/// Check a `packed` attestation with `x5c` against `roots` (DER
/// certificates, see [`load_roots`]) at time `now`: see the module docs.
/// Self attestation, `none` and other formats are refused: with roots
/// configured, a key must prove its model.
pub fn verify_packed_chain(
    att: &Attestation,
    client_data_hash: &[u8; 32],
    roots: &[Vec<u8>],
    now: SystemTime,
) -> Result<ChainInfo, AttestationError> {
    match att.format.as_str() {
        "packed" if att.x5c.is_empty() => {
            return Err(AttestationError::NoCertificate {
                what: "it used self attestation (packed without x5c)",
            })
        }
        "packed" => {}
        "none" => {
            return Err(AttestationError::NoCertificate {
                what: "its attestation format is none",
            })
        }
        other => {
            return Err(AttestationError::UnsupportedFormat {
                format: other.chars().take(32).collect(),
            })
        }
    }
    if att.x5c.len() > MAX_CHAIN {
        return Err(AttestationError::ChainTooLong { len: att.x5c.len() });
    }
    let chain = att
        .x5c
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Cert::parse(der)
                .map(|c| c.labelled(format!("attestation certificate {}", i + 1)))
                .map_err(|reason| AttestationError::MalformedCertificate {
                    position: i + 1,
                    reason,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let roots = roots
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Cert::parse(der)
                .map(|c| {
                    c.labelled(format!(
                        "attestation root {} of key.attestation_roots",
                        i + 1
                    ))
                })
                .map_err(|reason| AttestationError::MalformedRoot {
                    position: i + 1,
                    reason,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let leaf = &chain[0];
    check_leaf(leaf, att, client_data_hash)?;

    let trusted = |root: &Cert<'_>| ChainInfo {
        leaf_subject: leaf.subject.clone(),
        root_subject: root.subject.clone(),
        chain_len: chain.len(),
    };
    for (i, cert) in chain.iter().enumerate() {
        cert.check_common(now)?;
        if i > 0 {
            cert.check_issuer(i - 1)?;
        }
        // A configured certificate in the chain: trusted from here up.
        if let Some(root) = roots.iter().find(|r| r.der == cert.der) {
            if i > 0 {
                webpki_path(&chain, &roots, now)?;
            }
            return Ok(trusted(root));
        }
        if let Some(issuer) = chain.get(i + 1) {
            if !cert.issuer_is(issuer) {
                return Err(cert.rule(format!(
                    "names issuer {} but the next certificate is {}: issuer and subject names must chain (RFC 5280 6.1.3)",
                    cert.issuer(),
                    issuer.subject
                )));
            }
            if !issuer.is_ca() {
                return Err(AttestationError::NotCa {
                    cert: issuer.label.clone(),
                });
            }
            if !cert.signed_by(&issuer.public_key()?)? {
                return Err(AttestationError::BrokenChain {
                    cert: cert.label.clone(),
                    issuer: issuer.label.clone(),
                });
            }
        }
    }

    let last = chain.last().expect("x5c is not empty");
    let mut signed_under_another_name = None;
    for root in &roots {
        // A root with a key we cannot use simply did not sign it.
        let Ok(key) = root.public_key() else {
            continue;
        };
        if !last.signed_by(&key)? {
            continue;
        }
        if !last.issuer_is(root) {
            signed_under_another_name = Some(root);
            continue;
        }
        root.check_validity(now)?;
        root.check_issuer(chain.len() - 1)?;
        webpki_path(&chain, &roots, now)?;
        return Ok(trusted(root));
    }
    if let Some(root) = signed_under_another_name {
        return Err(last.rule(format!(
            "names issuer {} but is signed by the key of {}: issuer and subject names must chain (RFC 5280 6.1.3)",
            last.issuer(),
            root.label
        )));
    }
    Err(AttestationError::Untrusted {
        cert: last.label.clone(),
        issuer: last.issuer(),
        roots: roots.len(),
    })
}

/// Any extended key usage, or none: FIDO attestation leaves rarely carry
/// one, and packed attestation asks for none.
struct AnyEku;

impl webpki::ExtendedKeyUsageValidator for AnyEku {
    fn validate(&self, _: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// The signature algorithms webpki may use on the path.
static WEBPKI_ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// The path from the leaf to one of `roots` once more, by webpki (RFC 5280
/// path building and validation: names, signatures, validity, basic
/// constraints and pathLenConstraint, critical extensions, name
/// constraints), after touchgate's own checks, which name the certificate
/// and the rule, have passed.
fn webpki_path(
    chain: &[Cert<'_>],
    roots: &[Cert<'_>],
    now: SystemTime,
) -> Result<(), AttestationError> {
    let refused = |reason: String| AttestationError::PathValidation {
        cert: chain[0].label.clone(),
        reason: format!("webpki: {reason}"),
    };
    let root_ders: Vec<rustls_pki_types::CertificateDer<'_>> = roots
        .iter()
        .map(|r| rustls_pki_types::CertificateDer::from(r.der))
        .collect();
    let anchors: Vec<rustls_pki_types::TrustAnchor<'_>> = root_ders
        .iter()
        .filter_map(|d| webpki::anchor_from_trusted_cert(d).ok())
        .collect();
    let leaf = rustls_pki_types::CertificateDer::from(chain[0].der);
    let leaf = webpki::EndEntityCert::try_from(&leaf).map_err(|e| refused(format!("{e:?}")))?;
    let intermediates: Vec<rustls_pki_types::CertificateDer<'_>> = chain[1..]
        .iter()
        .map(|c| rustls_pki_types::CertificateDer::from(c.der))
        .collect();
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| refused("the system clock is before 1970".into()))?;
    leaf.verify_for_usage(
        WEBPKI_ALGORITHMS,
        &anchors,
        &intermediates,
        rustls_pki_types::UnixTime::since_unix_epoch(since_epoch),
        AnyEku,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| refused(one_line(&format!("{e:?}"), UNCUT)))
}

/// The packed leaf (WebAuthn §8.2.1): its key signed authData ‖
/// clientDataHash; no CA; version 3; subject OU "Authenticator
/// Attestation"; the AAGUID extension present, not critical, and the key's
/// AAGUID.
fn check_leaf(
    leaf: &Cert<'_>,
    att: &Attestation,
    client_data_hash: &[u8; 32],
) -> Result<(), AttestationError> {
    let key = match leaf.public_key() {
        Ok(PublicKey::P256(k)) => k,
        Ok(PublicKey::Rsa(_)) => {
            return Err(AttestationError::LeafKey {
                cert: leaf.label.clone(),
                reason: "it is RSA".into(),
            })
        }
        Ok(PublicKey::P384(_)) => {
            return Err(AttestationError::LeafKey {
                cert: leaf.label.clone(),
                reason: "it is P-384".into(),
            })
        }
        Err(e) => {
            return Err(AttestationError::LeafKey {
                cert: leaf.label.clone(),
                reason: match e {
                    AttestationError::UnsupportedKey { reason, .. } => reason,
                    other => other.to_string(),
                },
            })
        }
    };
    let msg = [att.auth_data.as_slice(), client_data_hash].concat();
    let good = p256::ecdsa::Signature::from_der(&att.attestation_signature)
        .is_ok_and(|s| key.verify(&msg, &s).is_ok());
    if !good {
        return Err(AttestationError::BadSignature {
            cert: leaf.label.clone(),
        });
    }
    if leaf.is_ca() {
        return Err(AttestationError::LeafIsCa {
            cert: leaf.label.clone(),
        });
    }
    if leaf.cert.tbs_certificate.version != x509_cert::Version::V3 {
        return Err(leaf.rule("is not an X.509 version 3 certificate, which packed attestation requires of the leaf (WebAuthn 8.2.1)"));
    }
    if !has_attestation_ou(&leaf.cert.tbs_certificate.subject) {
        return Err(leaf.rule("has no subject OU \"Authenticator Attestation\", which packed attestation requires of the leaf (WebAuthn 8.2.1)"));
    }
    let key_aaguid: [u8; 16] = att
        .auth_data
        .get(37..53)
        .and_then(|s| s.try_into().ok())
        .ok_or(AttestationError::MalformedAuthData)?;
    let mut found = leaf
        .extensions()
        .iter()
        .filter(|e| e.extn_id == ID_FIDO_GEN_CE_AAGUID);
    let (Some(ext), None) = (found.next(), found.next()) else {
        return Err(leaf.rule("has no AAGUID extension (1.3.6.1.4.1.45724.1.1.4), or more than one: touchgate requires it, to know the key model the vendor vouches for"));
    };
    if ext.critical {
        return Err(leaf.rule(
            "AAGUID extension is marked critical, which packed attestation forbids (WebAuthn 8.2.1)",
        ));
    }
    let inner = OctetString::from_der(ext.extn_value.as_bytes()).ok();
    let cert_aaguid: [u8; 16] = inner
        .as_ref()
        .and_then(|o| o.as_bytes().try_into().ok())
        .ok_or_else(|| AttestationError::MalformedAaguid {
            cert: leaf.label.clone(),
        })?;
    if cert_aaguid != key_aaguid {
        return Err(AttestationError::AaguidMismatch {
            cert: leaf.label.clone(),
            certificate: format_aaguid(&cert_aaguid),
            key: format_aaguid(&key_aaguid),
        });
    }
    Ok(())
}

/// Whether `name` has an OU attribute "Authenticator Attestation" (a
/// UTF8String or PrintableString).
fn has_attestation_ou(name: &x509_cert::name::Name) -> bool {
    use x509_cert::der::{Tag, Tagged as _};
    name.0.iter().flat_map(|rdn| rdn.0.iter()).any(|atv| {
        atv.oid == ID_AT_ORGANIZATIONAL_UNIT
            && matches!(atv.value.tag(), Tag::Utf8String | Tag::PrintableString)
            && atv.value.value() == b"Authenticator Attestation"
    })
}

/// Read the certificates of `key.attestation_roots`: each file PEM (one or
/// more `CERTIFICATE` blocks; other text is ignored) or one DER certificate.
/// Every certificate must parse; errors name the file.
pub fn load_roots(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, AttestationError> {
    let mut out = Vec::new();
    for path in paths {
        out.extend(load_root_file(path)?);
    }
    Ok(out)
}

fn load_root_file(path: &Path) -> Result<Vec<Vec<u8>>, AttestationError> {
    let name = path.display().to_string();
    let file_error = |reason: String| AttestationError::RootFile {
        path: name.clone(),
        reason: one_line(&reason, UNCUT),
    };
    let len = std::fs::metadata(path)
        .map_err(|e| file_error(e.to_string()))?
        .len();
    if len > MAX_ROOT_FILE {
        return Err(file_error(format!(
            "it is {len} bytes, more than the {MAX_ROOT_FILE} a root file may have"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| file_error(e.to_string()))?;
    let malformed = |position: usize, reason: String| AttestationError::RootFileMalformed {
        path: name.clone(),
        position,
        reason,
    };
    let ders = match std::str::from_utf8(&bytes) {
        Ok(text) if text.contains("-----BEGIN") => pem_certificates(text)
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| malformed(i + 1, e)))
            .collect::<Result<Vec<_>, _>>()?,
        _ if bytes.iter().all(u8::is_ascii_whitespace) => vec![],
        _ => vec![bytes],
    };
    if ders.is_empty() {
        return Err(AttestationError::RootFileEmpty { path: name });
    }
    for (i, der) in ders.iter().enumerate() {
        Cert::parse(der).map_err(|e| malformed(i + 1, e))?;
    }
    Ok(ders)
}

/// The DER of every `CERTIFICATE` block in PEM `text`.
fn pem_certificates(text: &str) -> Vec<Result<Vec<u8>, String>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let body_and_rest = &rest[start + BEGIN.len()..];
        let Some(end) = body_and_rest.find(END) else {
            out.push(Err("no -----END CERTIFICATE----- line".into()));
            break;
        };
        let body: String = body_and_rest[..end]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        out.push(
            base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| format!("bad base64 in the PEM block: {e}")),
        );
        rest = &body_and_rest[end + END.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::test_certs::{self, CertKey, CertParams, TestCert};
    use super::*;
    use p256::ecdsa::signature::Signer as _;
    use p256::ecdsa::SigningKey;
    use sha2::Sha256;
    use std::time::Duration;

    const CDH: [u8; 32] = [0x5A; 32];
    const AAGUID: [u8; 16] = [0xA7; 16];
    const DAY: Duration = Duration::from_secs(86_400);
    /// A leaf subject as packed attestation wants it (OU "Authenticator Attestation").
    const LEAF: &str = "CN=leaf,OU=Authenticator Attestation,O=t";

    /// authData: header, the AAGUID, an empty credential id (enough here).
    fn auth_data(aaguid: [u8; 16]) -> Vec<u8> {
        let mut ad = Sha256::digest(b"touchgate").to_vec();
        ad.push(0x41);
        ad.extend_from_slice(&1u32.to_be_bytes());
        ad.extend_from_slice(&aaguid);
        ad.extend_from_slice(&[0, 0]);
        ad
    }

    fn sign(key: &SigningKey, auth_data: &[u8]) -> Vec<u8> {
        let sig: p256::ecdsa::Signature = key.sign(&[auth_data, &CDH].concat());
        sig.to_der().as_bytes().to_vec()
    }

    fn packed(chain: Vec<Vec<u8>>, leaf_key: &SigningKey) -> Attestation {
        let auth_data = auth_data(AAGUID);
        Attestation {
            credential_id: vec![],
            public_key_sec1: vec![],
            aaguid: AAGUID,
            attestation_signature: sign(leaf_key, &auth_data),
            auth_data,
            sign_count: 1,
            format: "packed".into(),
            statement_alg: Some(-7),
            x5c: chain,
            hmac_secret: true,
        }
    }

    struct Pki {
        root: TestCert,
        inter: TestCert,
        leaf: TestCert,
    }

    impl Pki {
        fn new() -> Pki {
            Pki::with(CertParams::leaf(LEAF, Some(AAGUID)))
        }

        fn with(leaf: CertParams) -> Pki {
            let root = test_certs::root_ca("CN=root,O=t");
            let inter = root.issue(CertParams::ca("CN=inter,O=t"), CertKey::p256());
            let leaf = inter.issue(leaf, CertKey::p256());
            Pki { root, inter, leaf }
        }

        fn leaf_key(&self) -> &SigningKey {
            self.leaf.key.p256_key().unwrap()
        }

        fn attestation(&self) -> Attestation {
            packed(
                vec![self.leaf.der.clone(), self.inter.der.clone()],
                self.leaf_key(),
            )
        }

        fn roots(&self) -> Vec<Vec<u8>> {
            vec![self.root.der.clone()]
        }
    }

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn check(att: &Attestation, roots: &[Vec<u8>]) -> Result<ChainInfo, AttestationError> {
        verify_packed_chain(att, &CDH, roots, now())
    }

    #[test]
    fn a_chain_to_a_configured_root_is_trusted() {
        let pki = Pki::new();
        let info = check(&pki.attestation(), &pki.roots()).unwrap();
        assert_eq!(
            info,
            ChainInfo {
                leaf_subject: LEAF.into(),
                root_subject: "CN=root,O=t".into(),
                chain_len: 2,
            }
        );
        // Several roots: the right one is found; the root itself in x5c is fine.
        let other = test_certs::root_ca("CN=other root");
        let roots = vec![other.der.clone(), pki.root.der.clone()];
        assert!(check(&pki.attestation(), &roots).is_ok());
        let mut att = pki.attestation();
        att.x5c.push(pki.root.der.clone());
        assert_eq!(check(&att, &roots).unwrap().root_subject, "CN=root,O=t");
        // Trusting the intermediate directly works too.
        let info = check(&pki.attestation(), std::slice::from_ref(&pki.inter.der)).unwrap();
        assert_eq!(info.root_subject, "CN=inter,O=t");
    }

    #[test]
    fn rsa_keys_outside_2048_to_8192_bits_are_refused() {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        let public = |pem: &str| {
            let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem).unwrap();
            key.to_public_key().to_pkcs1_der().unwrap().into_vec()
        };
        let weak = public(include_str!("../upstream/testdata/rsa-1024.pem"));
        assert_eq!(
            rsa_public_key(&weak).unwrap_err(),
            "an RSA key of 1024 bits (2048 to 8192 are accepted)"
        );
        let good = public(include_str!("../upstream/testdata/rsa-2048.pem"));
        assert_eq!(rsa_public_key(&good).unwrap(), good);
        assert!(rsa_public_key(&good[..good.len() - 1])
            .unwrap_err()
            .starts_with("an unusable RSA key"));
    }

    #[test]
    fn leaf_signed_directly_by_an_rsa_root() {
        let root = TestCert::self_signed(CertParams::ca("CN=rsa root"), CertKey::rsa());
        let leaf = root.issue(CertParams::leaf(LEAF, Some(AAGUID)), CertKey::p256());
        let att = packed(vec![leaf.der.clone()], leaf.key.p256_key().unwrap());
        assert_eq!(
            check(&att, std::slice::from_ref(&root.der))
                .unwrap()
                .root_subject,
            "CN=rsa root"
        );
        // Same names, another RSA key: not signed by it.
        let impostor = TestCert::self_signed(CertParams::ca("CN=rsa root"), CertKey::rsa());
        assert!(matches!(
            check(&att, std::slice::from_ref(&impostor.der)),
            Err(AttestationError::Untrusted { .. })
        ));
    }

    #[test]
    fn bad_attestation_signature_is_refused() {
        let pki = Pki::new();
        let mut att = pki.attestation();
        att.attestation_signature =
            sign(&SigningKey::random(&mut rand::rngs::OsRng), &att.auth_data);
        let err = check(&att, &pki.roots()).unwrap_err();
        assert_eq!(
            err,
            AttestationError::BadSignature {
                cert: format!("attestation certificate 1 ({LEAF})")
            }
        );
        // Over other data (a flipped counter byte), or garbage.
        let mut att = pki.attestation();
        att.auth_data[36] ^= 1;
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::BadSignature { .. })
        ));
        let mut att = pki.attestation();
        att.attestation_signature = vec![0x30, 0x00];
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::BadSignature { .. })
        ));
        // Signed for another clientDataHash.
        let att = pki.attestation();
        assert!(matches!(
            verify_packed_chain(&att, &[0; 32], &pki.roots(), now()),
            Err(AttestationError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_broken_link_is_refused() {
        // Another intermediate with the same name, itself signed by the root:
        // only the link check can tell it did not sign the leaf.
        let pki = Pki::new();
        let other = pki
            .root
            .issue(CertParams::ca("CN=inter,O=t"), CertKey::p256());
        let att = packed(
            vec![pki.leaf.der.clone(), other.der.clone()],
            pki.leaf_key(),
        );
        assert_eq!(
            check(&att, &pki.roots()).unwrap_err(),
            AttestationError::BrokenChain {
                cert: format!("attestation certificate 1 ({LEAF})"),
                issuer: "attestation certificate 2 (CN=inter,O=t)".into()
            }
        );
    }

    #[test]
    fn a_chain_to_another_root_is_untrusted() {
        let pki = Pki::new();
        let other = test_certs::root_ca("CN=other root");
        let err = check(&pki.attestation(), std::slice::from_ref(&other.der)).unwrap_err();
        assert_eq!(
            err,
            AttestationError::Untrusted {
                cert: "attestation certificate 2 (CN=inter,O=t)".into(),
                issuer: "CN=root,O=t".into(),
                roots: 1
            }
        );
        assert!(err.to_string().contains("key.attestation_roots"), "{err}");
        // Same name as the real root, other key.
        let impostor = test_certs::root_ca("CN=root,O=t");
        assert!(matches!(
            check(&pki.attestation(), std::slice::from_ref(&impostor.der)),
            Err(AttestationError::Untrusted { .. })
        ));
        // A leaf alone whose issuer is not configured.
        let att = packed(vec![pki.leaf.der.clone()], pki.leaf_key());
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::Untrusted { .. })
        ));
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused() {
        let t = now();
        // The leaf.
        let pki = Pki::with(CertParams::leaf(LEAF, Some(AAGUID)).valid(t - 10 * DAY, t - DAY));
        let err = check(&pki.attestation(), &pki.roots()).unwrap_err();
        assert!(
            matches!(&err, AttestationError::Expired { cert, .. } if *cert == format!("attestation certificate 1 ({LEAF})")),
            "{err}"
        );
        let pki = Pki::with(CertParams::leaf(LEAF, Some(AAGUID)).valid(t + DAY, t + 10 * DAY));
        assert!(matches!(
            check(&pki.attestation(), &pki.roots()),
            Err(AttestationError::NotYetValid { .. })
        ));
        // The same chain checked at a time it was valid passes.
        let att = pki.attestation();
        assert!(verify_packed_chain(&att, &CDH, &pki.roots(), t + 2 * DAY).is_ok());

        // The intermediate.
        let pki = Pki::new();
        let inter = pki.root.issue(
            CertParams::ca("CN=old inter").valid(t - 10 * DAY, t - DAY),
            CertKey::p256(),
        );
        let leaf = inter.issue(CertParams::leaf(LEAF, Some(AAGUID)), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::Expired { cert, .. }) if cert == "attestation certificate 2 (CN=old inter)"
        ));

        // The configured root.
        let root = TestCert::self_signed(
            CertParams::ca("CN=old root").valid(t - 10 * DAY, t - DAY),
            CertKey::p256(),
        );
        let leaf = root.issue(CertParams::leaf(LEAF, Some(AAGUID)), CertKey::p256());
        let att = packed(vec![leaf.der.clone()], leaf.key.p256_key().unwrap());
        assert!(matches!(
            check(&att, std::slice::from_ref(&root.der)),
            Err(AttestationError::Expired { cert, .. }) if cert == "attestation root 1 of key.attestation_roots (CN=old root)"
        ));
    }

    #[test]
    fn aaguid_extension_must_match_the_key() {
        let other = [0x11; 16];
        let pki = Pki::with(CertParams::leaf(LEAF, Some(other)));
        let err = check(&pki.attestation(), &pki.roots()).unwrap_err();
        assert_eq!(
            err,
            AttestationError::AaguidMismatch {
                cert: format!("attestation certificate 1 ({LEAF})"),
                certificate: format_aaguid(&other),
                key: format_aaguid(&AAGUID),
            }
        );
        // authData too short to hold an AAGUID (signed as it is).
        let pki = Pki::new();
        let mut att = pki.attestation();
        att.auth_data.truncate(40);
        att.attestation_signature = sign(pki.leaf_key(), &att.auth_data);
        assert_eq!(
            check(&att, &pki.roots()).unwrap_err(),
            AttestationError::MalformedAuthData
        );
    }

    #[test]
    fn ca_flags_are_checked() {
        // A leaf that is a CA.
        let mut params = CertParams::leaf(LEAF, Some(AAGUID));
        params.ca = true;
        let pki = Pki::with(params);
        assert!(matches!(
            check(&pki.attestation(), &pki.roots()),
            Err(AttestationError::LeafIsCa { .. })
        ));
        // An intermediate that is not a CA (signed by the root all the same).
        let root = test_certs::root_ca("CN=root");
        let mut params = CertParams::ca("CN=not a ca");
        params.ca = false;
        let inter = root.issue(params, CertKey::p256());
        let leaf = inter.issue(CertParams::leaf(LEAF, Some(AAGUID)), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        assert_eq!(
            check(&att, std::slice::from_ref(&root.der)).unwrap_err(),
            AttestationError::NotCa {
                cert: "attestation certificate 2 (CN=not a ca)".into()
            }
        );
    }

    #[test]
    fn self_none_and_other_formats_are_refused_with_roots() {
        let pki = Pki::new();
        let mut att = pki.attestation();
        att.x5c.clear();
        let err = check(&att, &pki.roots()).unwrap_err();
        assert!(err.to_string().starts_with(
            "this security key gave no attestation certificate, but key.attestation_roots requires one: it used self attestation"
        ), "{err}");
        att.format = "none".into();
        att.attestation_signature.clear();
        let err = check(&att, &pki.roots()).unwrap_err();
        assert!(
            err.to_string().contains("its attestation format is none"),
            "{err}"
        );
        let mut att = pki.attestation();
        att.format = "tpm".into();
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::UnsupportedFormat { .. })
        ));
        let mut att = pki.attestation();
        att.x5c = vec![pki.leaf.der.clone(); MAX_CHAIN + 1];
        assert_eq!(
            check(&att, &pki.roots()).unwrap_err(),
            AttestationError::ChainTooLong { len: MAX_CHAIN + 1 }
        );
    }

    #[test]
    fn garbage_and_truncated_certificates_never_panic() {
        let pki = Pki::new();
        let good = pki.attestation();
        let malformed = |att: &Attestation, position: usize| {
            matches!(
                check(att, &pki.roots()),
                Err(AttestationError::MalformedCertificate { position: p, .. }) if p == position
            )
        };
        for len in 0..pki.leaf.der.len() {
            let mut att = good.clone();
            att.x5c[0].truncate(len);
            assert!(malformed(&att, 1), "leaf cut to {len}");
        }
        for len in (0..pki.inter.der.len()).step_by(7) {
            let mut att = good.clone();
            att.x5c[1].truncate(len);
            assert!(malformed(&att, 2), "intermediate cut to {len}");
        }
        let mut att = good.clone();
        att.x5c[0].push(0);
        assert!(malformed(&att, 1), "trailing byte");
        // Bit flips anywhere: an error of some kind, never a panic.
        for i in 0..pki.leaf.der.len() {
            let mut att = good.clone();
            att.x5c[0][i] ^= 0x04;
            assert!(check(&att, &pki.roots()).is_err(), "flip at {i}");
        }
        // Random bytes, with and without a SEQUENCE header.
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        for _ in 0..500 {
            let n = rand::Rng::gen_range(&mut rng, 0..300);
            let mut junk = vec![0u8; n];
            rand::RngCore::fill_bytes(&mut rng, &mut junk);
            if n > 4 && rand::Rng::gen_bool(&mut rng, 0.5) {
                junk[0] = 0x30;
                junk[1] = 0x82;
            }
            let mut att = good.clone();
            att.x5c[0] = junk.clone();
            assert!(check(&att, &pki.roots()).is_err());
            assert!(matches!(
                verify_packed_chain(&good, &CDH, std::slice::from_ref(&junk), now()),
                Err(AttestationError::MalformedRoot { position: 1, .. })
            ));
            let _ = leaf_verifying_key(&junk);
        }
        for junk in [
            &[][..],
            &[0x30],
            &[0x30, 0x80],
            &[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF],
        ] {
            let mut att = good.clone();
            att.x5c = vec![junk.to_vec()];
            assert!(malformed(&att, 1), "{junk:?}");
        }
    }

    #[test]
    fn leaf_verifying_key_reads_p256_only() {
        let pki = Pki::new();
        assert_eq!(
            leaf_verifying_key(&pki.leaf.der).unwrap(),
            *pki.leaf_key().verifying_key()
        );
        let rsa = TestCert::self_signed(CertParams::ca("CN=rsa"), CertKey::rsa());
        assert!(leaf_verifying_key(&rsa.der).unwrap_err().contains("RSA"));
        assert!(leaf_verifying_key(b"junk").is_err());
    }

    #[test]
    fn roots_load_from_pem_and_der_files_and_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (test_certs::root_ca("CN=a"), test_certs::root_ca("CN=b"));
        let bundle = dir.path().join("bundle.pem");
        std::fs::write(
            &bundle,
            format!("# vendor roots\n{}\nsome text\n{}", a.pem(), b.pem()),
        )
        .unwrap();
        let der = dir.path().join("c.der");
        std::fs::write(&der, &a.der).unwrap();
        let roots = load_roots(&[bundle.clone(), der.clone()]).unwrap();
        assert_eq!(roots, vec![a.der.clone(), b.der.clone(), a.der.clone()]);
        assert!(load_roots(&[]).unwrap().is_empty());

        let missing = dir.path().join("missing.pem");
        let err = load_roots(&[bundle.clone(), missing.clone()]).unwrap_err();
        assert!(
            matches!(&err, AttestationError::RootFile { path, .. } if *path == missing.display().to_string()),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "\n\n").unwrap();
        assert!(matches!(
            load_roots(std::slice::from_ref(&empty)),
            Err(AttestationError::RootFileEmpty { path }) if path == empty.display().to_string()
        ));
        let key_only = dir.path().join("key.pem");
        std::fs::write(
            &key_only,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            load_roots(&[key_only]),
            Err(AttestationError::RootFileEmpty { .. })
        ));
        let cases: Vec<(&str, Vec<u8>, usize)> = vec![
            ("garbage.der", b"\x30\x03\x02\x01".to_vec(), 1),
            ("text.txt", b"not a certificate".to_vec(), 1),
            (
                "bad64.pem",
                format!(
                    "{}-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                    a.pem()
                )
                .into_bytes(),
                2,
            ),
            (
                "unterminated.pem",
                b"-----BEGIN CERTIFICATE-----\nMIIB\n".to_vec(),
                1,
            ),
            ("notcert.pem", test_certs::pem(b"\x30\x00").into_bytes(), 1),
        ];
        for (name, content, position) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, content).unwrap();
            let err = load_roots(std::slice::from_ref(&p)).unwrap_err();
            assert!(
                matches!(&err, AttestationError::RootFileMalformed { path, position: n, .. } if *path == p.display().to_string() && *n == position),
                "{name}: {err}"
            );
        }
    }

    #[test]
    fn messages_are_one_line() {
        let errs = [
            AttestationError::NoCertificate { what: "x" },
            AttestationError::MalformedCertificate {
                position: 1,
                reason: "r".into(),
            },
            AttestationError::Untrusted {
                cert: "s".into(),
                issuer: "i".into(),
                roots: 2,
            },
            AttestationError::RootFile {
                path: "/p".into(),
                reason: "r".into(),
            },
        ];
        for e in errs {
            let m = e.to_string();
            assert!(!m.contains('\n'), "{m}");
        }
        assert_eq!(one_line("a\nb\rc", UNCUT), "a b c");
    }

    // ---- one test per chain rule: a chain built to break exactly that rule ----

    /// The refusal names `cert` ("attestation certificate 2 (CN=…)") and says `rule`.
    #[track_caller]
    fn refused(att: &Attestation, roots: &[Vec<u8>], cert: &str, rule: &str) {
        let err = match check(att, roots) {
            Ok(info) => panic!("accepted ({info:?}); expected a refusal naming {cert}: {rule}"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(cert) && err.contains(rule) && !err.contains('\n'),
            "expected {cert:?} and {rule:?} in: {err}"
        );
    }

    /// root → inter (`inter`) → leaf (`leaf`): x5c [leaf, inter].
    fn chain_with(inter: CertParams, leaf: CertParams) -> (Attestation, Vec<Vec<u8>>) {
        let root = test_certs::root_ca("CN=root,O=t");
        let inter = root.issue(inter, CertKey::p256());
        let leaf = inter.issue(leaf, CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        (att, vec![root.der])
    }

    fn good_leaf() -> CertParams {
        CertParams::leaf(LEAF, Some(AAGUID))
    }

    #[test]
    fn issuer_and_subject_names_must_chain() {
        // The leaf is signed by the intermediate's key but names another issuer.
        let root = test_certs::root_ca("CN=root,O=t");
        let inter = root.issue(CertParams::ca("CN=inter,O=t"), CertKey::p256());
        let leaf_key = CertKey::p256();
        let leaf = test_certs::build(&good_leaf(), &leaf_key, "CN=someone else,O=t", &inter.key);
        let att = packed(vec![leaf, inter.der.clone()], leaf_key.p256_key().unwrap());
        refused(
            &att,
            std::slice::from_ref(&root.der),
            "attestation certificate 1 (CN=leaf",
            "names issuer CN=someone else,O=t but the next certificate is CN=inter,O=t",
        );
        // The intermediate is signed by the root's key but names another issuer.
        let inter_key = CertKey::p256();
        let inter = test_certs::build(
            &CertParams::ca("CN=inter,O=t"),
            &inter_key,
            "CN=not the root,O=t",
            &root.key,
        );
        let inter = TestCert {
            der: inter,
            key: inter_key,
            subject: "CN=inter,O=t".into(),
        };
        let leaf = inter.issue(good_leaf(), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        refused(
            &att,
            std::slice::from_ref(&root.der),
            "attestation certificate 2 (CN=inter,O=t)",
            "names issuer CN=not the root,O=t but is signed by the key of attestation root 1",
        );
    }

    #[test]
    fn path_len_constraint_limits_the_intermediates_below() {
        // root → inter1 (pathLen 0) → inter2 → leaf: inter1 may not have inter2 below it.
        let root = test_certs::root_ca("CN=root,O=t");
        let mut p = CertParams::ca("CN=inter1,O=t");
        p.path_len = Some(0);
        let inter1 = root.issue(p, CertKey::p256());
        let inter2 = inter1.issue(CertParams::ca("CN=inter2,O=t"), CertKey::p256());
        let leaf = inter2.issue(good_leaf(), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter2.der.clone(), inter1.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        refused(
            &att,
            std::slice::from_ref(&root.der),
            "attestation certificate 3 (CN=inter1,O=t)",
            "pathLenConstraint 0",
        );
        // The root's own constraint counts too.
        let mut p = CertParams::ca("CN=root0,O=t");
        p.path_len = Some(0);
        let root0 = TestCert::self_signed(p, CertKey::p256());
        let inter = root0.issue(CertParams::ca("CN=inter,O=t"), CertKey::p256());
        let leaf = inter.issue(good_leaf(), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        refused(
            &att,
            std::slice::from_ref(&root0.der),
            "attestation root 1 of key.attestation_roots (CN=root0,O=t)",
            "pathLenConstraint 0",
        );
        // pathLen 0 on the only intermediate is fine.
        let mut p = CertParams::ca("CN=inter,O=t");
        p.path_len = Some(0);
        let (att, roots) = chain_with(p, good_leaf());
        check(&att, &roots).unwrap();
    }

    #[test]
    fn an_intermediate_with_key_usage_needs_key_cert_sign() {
        use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
        let mut p = CertParams::ca("CN=inter,O=t");
        p.key_usage = Some(KeyUsage(KeyUsages::DigitalSignature.into()));
        let (att, roots) = chain_with(p, good_leaf());
        refused(
            &att,
            &roots,
            "attestation certificate 2 (CN=inter,O=t)",
            "keyUsage without keyCertSign",
        );
        // No keyUsage at all is allowed (RFC 5280 6.1.4 (n)).
        let mut p = CertParams::ca("CN=inter,O=t");
        p.key_usage = None;
        let (att, roots) = chain_with(p, good_leaf());
        check(&att, &roots).unwrap();
    }

    fn extension(oid: &str, critical: bool) -> x509_cert::ext::Extension {
        x509_cert::ext::Extension {
            extn_id: ObjectIdentifier::new_unwrap(oid),
            critical,
            extn_value: OctetString::new(vec![0x05, 0x00]).unwrap(),
        }
    }

    #[test]
    fn unknown_critical_extensions_are_refused() {
        let mut leaf = good_leaf();
        leaf.extra_extensions = vec![extension("1.3.6.1.4.1.99999.1", true)];
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), leaf);
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf",
            "unknown critical extension 1.3.6.1.4.1.99999.1",
        );
        let mut inter = CertParams::ca("CN=inter,O=t");
        // certificatePolicies, critical: touchgate does not process policies.
        inter.extra_extensions = vec![extension("2.5.29.32", true)];
        let (att, roots) = chain_with(inter, good_leaf());
        refused(
            &att,
            &roots,
            "attestation certificate 2 (CN=inter,O=t)",
            "unknown critical extension",
        );
        // Not critical: ignored, as RFC 5280 says.
        let mut leaf = good_leaf();
        leaf.extra_extensions = vec![extension("1.3.6.1.4.1.99999.1", false)];
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), leaf);
        check(&att, &roots).unwrap();
    }

    #[test]
    fn the_leaf_must_be_version_3() {
        let mut leaf = good_leaf();
        leaf.version = x509_cert::Version::V2;
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), leaf);
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf",
            "version 3",
        );
    }

    #[test]
    fn the_leaf_subject_needs_ou_authenticator_attestation() {
        let (att, roots) = chain_with(
            CertParams::ca("CN=inter,O=t"),
            CertParams::leaf("CN=leaf,OU=Something Else,O=t", Some(AAGUID)),
        );
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf,OU=Something Else,O=t)",
            "OU \"Authenticator Attestation\"",
        );
    }

    #[test]
    fn the_leaf_aaguid_extension_is_present_and_not_critical() {
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), CertParams::leaf(LEAF, None));
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf",
            "no AAGUID extension (1.3.6.1.4.1.45724.1.1.4)",
        );
        let mut leaf = good_leaf();
        leaf.aaguid_critical = true;
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), leaf);
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf",
            "AAGUID extension is marked critical",
        );
    }

    #[test]
    fn ecdsa_algorithm_parameters_must_be_absent() {
        let mut leaf = good_leaf();
        leaf.ecdsa_params_null = true;
        let (att, roots) = chain_with(CertParams::ca("CN=inter,O=t"), leaf);
        refused(
            &att,
            &roots,
            "attestation certificate 1 (CN=leaf",
            "parameters, which must be absent",
        );
        let mut inter = CertParams::ca("CN=inter,O=t");
        inter.ecdsa_params_null = true;
        let (att, roots) = chain_with(inter, good_leaf());
        refused(
            &att,
            &roots,
            "attestation certificate 2 (CN=inter,O=t)",
            "parameters, which must be absent",
        );
    }

    #[test]
    fn p384_issuers_are_accepted() {
        // A P-384 root signing a P-256 intermediate (ECDSA with SHA-384).
        let root = TestCert::self_signed(CertParams::ca("CN=p384 root"), CertKey::p384());
        let inter = root.issue(CertParams::ca("CN=inter,O=t"), CertKey::p256());
        let leaf = inter.issue(good_leaf(), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        assert_eq!(
            check(&att, std::slice::from_ref(&root.der))
                .unwrap()
                .root_subject,
            "CN=p384 root"
        );
        // A P-384 intermediate signing the leaf.
        let inter = root.issue(CertParams::ca("CN=p384 inter"), CertKey::p384());
        let leaf = inter.issue(good_leaf(), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        check(&att, std::slice::from_ref(&root.der)).unwrap();
        // Same name, another P-384 key: untrusted.
        let impostor = TestCert::self_signed(CertParams::ca("CN=p384 root"), CertKey::p384());
        assert!(matches!(
            check(&att, std::slice::from_ref(&impostor.der)),
            Err(AttestationError::Untrusted { .. })
        ));
    }

    #[test]
    fn webpki_validates_the_path_after_touchgate_s_own_checks() {
        // A leaf with an issuerUniqueID: nothing touchgate checks itself, but
        // webpki accepts no unique identifiers, so its refusal shows it ran.
        let pki = Pki::new();
        let mut cert = Certificate::from_der(&pki.leaf.der).unwrap();
        cert.tbs_certificate.issuer_unique_id =
            Some(x509_cert::der::asn1::BitString::from_bytes(&[1, 2, 3]).unwrap());
        let leaf = test_certs::sign_tbs(cert.tbs_certificate, &pki.inter.key);
        let att = packed(vec![leaf, pki.inter.der.clone()], pki.leaf_key());
        let err = check(&att, &pki.roots()).unwrap_err();
        assert!(
            matches!(&err, AttestationError::PathValidation { cert, reason }
                if cert.starts_with("attestation certificate 1 (CN=leaf") && reason.starts_with("webpki: ")),
            "{err}"
        );
    }
}
