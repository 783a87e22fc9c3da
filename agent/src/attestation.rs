//! Attestation trust: the chain of a `packed` attestation with `x5c` checked
//! against the roots in `key.attestation_roots`.
//!
//! [`crate::verify::check_attestation`] already checked that the answer is
//! self-consistent and that the attestation signature holds with the leaf
//! certificate's key. [`verify_packed_chain`] is the policy step, run only
//! when roots are configured: it checks that signature once more (so it
//! stands on its own), then the leaf (not a CA; its AAGUID extension, if
//! any, is the key's AAGUID), every link of the chain (each certificate is
//! signed by the next, which is a CA), the validity periods, and that the
//! chain ends at, or is signed by, a configured root.
//!
//! Signatures checked: ECDSA P-256 with SHA-256 or SHA-384, RSA PKCS#1 v1.5
//! with SHA-256, SHA-384 or SHA-512. Errors are one line naming the
//! certificate and the fix; malformed input is an error, never a panic.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use x509_cert::der::asn1::{ObjectIdentifier, OctetString};
use x509_cert::der::{Decode as _, Encode as _, Header, Reader as _, SliceReader};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

use crate::agent::format_aaguid;
use crate::key::Attestation;

// The test certificate builder is shared with the end-to-end tests.
#[cfg(test)]
#[allow(dead_code)]
#[path = "../../tests/src/ctap/certs.rs"]
pub(crate) mod test_certs;

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
    #[error("attestation certificate \"{subject}\" has no P-256 key ({reason}), which packed attestation with ES256 needs: refused")]
    LeafKey { subject: String, reason: String },
    #[error("the attestation signature does not verify with the key of attestation certificate \"{subject}\": refused")]
    BadSignature { subject: String },
    #[error("attestation certificate \"{subject}\" is a CA certificate, which packed attestation forbids for the leaf: refused")]
    LeafIsCa { subject: String },
    #[error("the AAGUID extension of attestation certificate \"{subject}\" is malformed: refused")]
    MalformedAaguid { subject: String },
    #[error("attestation certificate \"{subject}\" is for key model {certificate} but the security key reports AAGUID {key}: refused")]
    AaguidMismatch {
        subject: String,
        certificate: String,
        key: String,
    },
    #[error("attestation certificate \"{subject}\" expired at {not_after}: refused (if the system clock is right, the vendor's chain is out of date)")]
    Expired { subject: String, not_after: String },
    #[error("attestation certificate \"{subject}\" is not valid before {not_before}: check the system clock")]
    NotYetValid { subject: String, not_before: String },
    #[error("attestation certificate \"{subject}\" is not signed by the next one in the chain, \"{issuer}\": the chain is broken, refused")]
    BrokenChain { subject: String, issuer: String },
    #[error("attestation certificate \"{subject}\" signs another but is not a CA (basicConstraints): refused")]
    NotCa { subject: String },
    #[error("attestation certificate \"{subject}\" is signed with {algorithm}, which touchgate cannot check (ECDSA P-256 with SHA-256/384, RSA PKCS#1 v1.5 with SHA-256/384/512): refused")]
    UnsupportedAlgorithm { subject: String, algorithm: String },
    #[error("attestation certificate \"{subject}\" has a key touchgate cannot check signatures with ({reason}; P-256 and RSA are supported): refused")]
    UnsupportedKey { subject: String, reason: String },
    #[error("the attestation chain ends at \"{subject}\" (issued by \"{issuer}\"), which none of the {roots} certificate(s) in key.attestation_roots signed: add that vendor's root to key.attestation_roots, or use a key from a trusted vendor")]
    Untrusted {
        subject: String,
        issuer: String,
        roots: usize,
    },
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
}

impl<'a> Cert<'a> {
    fn parse(der: &'a [u8]) -> Result<Cert<'a>, String> {
        let cert = Certificate::from_der(der).map_err(|e| one_line(&e.to_string()))?;
        let tbs = tbs_bytes(der).map_err(|e| one_line(&e.to_string()))?;
        if cert.signature_algorithm != cert.tbs_certificate.signature {
            return Err("signatureAlgorithm differs from the signature in tbsCertificate".into());
        }
        let subject = display_name(&cert.tbs_certificate.subject);
        Ok(Cert {
            der,
            tbs,
            cert,
            subject,
        })
    }

    fn issuer(&self) -> String {
        display_name(&self.cert.tbs_certificate.issuer)
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

    /// `now` within notBefore..=notAfter.
    fn check_validity(&self, now: SystemTime) -> Result<(), AttestationError> {
        let v = &self.cert.tbs_certificate.validity;
        if now < v.not_before.to_system_time() {
            return Err(AttestationError::NotYetValid {
                subject: self.subject.clone(),
                not_before: v.not_before.to_string(),
            });
        }
        if now > v.not_after.to_system_time() {
            return Err(AttestationError::Expired {
                subject: self.subject.clone(),
                not_after: v.not_after.to_string(),
            });
        }
        Ok(())
    }

    fn public_key(&self) -> Result<PublicKey, AttestationError> {
        public_key(&self.cert).map_err(|reason| AttestationError::UnsupportedKey {
            subject: self.subject.clone(),
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
            (a, PublicKey::Rsa(k)) if *a == SHA256_WITH_RSA => {
                rsa_verify::<Sha256>(k, self.tbs, sig)
            }
            (a, PublicKey::Rsa(k)) if *a == SHA384_WITH_RSA => {
                rsa_verify::<Sha384>(k, self.tbs, sig)
            }
            (a, PublicKey::Rsa(k)) if *a == SHA512_WITH_RSA => {
                rsa_verify::<Sha512>(k, self.tbs, sig)
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
                    subject: self.subject.clone(),
                    algorithm: algorithm_name(a),
                })
            }
        };
        Ok(ok)
    }
}

enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    Rsa(Box<rsa::RsaPublicKey>),
}

fn public_key(cert: &Certificate) -> Result<PublicKey, String> {
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let der = spki.to_der().map_err(|e| one_line(&e.to_string()))?;
    if spki.algorithm.oid == ID_EC_PUBLIC_KEY {
        p256::PublicKey::from_public_key_der(&der)
            .map(|k| PublicKey::P256(k.into()))
            .map_err(|_| "an EC key not on P-256".into())
    } else if spki.algorithm.oid == RSA_ENCRYPTION {
        rsa::pkcs8::DecodePublicKey::from_public_key_der(&der)
            .map(|k| PublicKey::Rsa(Box::new(k)))
            .map_err(|e| one_line(&format!("an unusable RSA key: {e}")))
    } else {
        Err(format!(
            "key algorithm {}",
            algorithm_name(&spki.algorithm.oid)
        ))
    }
}

fn rsa_verify<D>(key: &rsa::RsaPublicKey, msg: &[u8], sig: &[u8]) -> bool
where
    D: sha2::Digest + x509_cert::der::oid::AssociatedOid,
{
    let Ok(sig) = rsa::pkcs1v15::Signature::try_from(sig) else {
        return false;
    };
    rsa::pkcs1v15::VerifyingKey::<D>::new(key.clone())
        .verify(msg, &sig)
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
    let s = one_line(&s);
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The attestation key of a leaf certificate: its P-256 public key. Used by
/// [`crate::verify::check_attestation`] for the signature check (the
/// reason, on error, is a short phrase).
pub(crate) fn leaf_verifying_key(der: &[u8]) -> Result<p256::ecdsa::VerifyingKey, String> {
    let cert = Cert::parse(der).map_err(|e| format!("not a valid X.509 certificate ({e})"))?;
    match public_key(&cert.cert) {
        Ok(PublicKey::P256(k)) => Ok(k),
        Ok(PublicKey::Rsa(_)) => Err("its key is RSA, not P-256 (ES256)".into()),
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
            Cert::parse(der).map_err(|reason| AttestationError::MalformedCertificate {
                position: i + 1,
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let roots = roots
        .iter()
        .enumerate()
        .map(|(i, der)| {
            Cert::parse(der).map_err(|reason| AttestationError::MalformedRoot {
                position: i + 1,
                reason,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let leaf = &chain[0];
    check_leaf(leaf, att, client_data_hash)?;

    for (i, cert) in chain.iter().enumerate() {
        cert.check_validity(now)?;
        // A configured certificate in the chain: trusted from here up.
        if let Some(root) = roots.iter().find(|r| r.der == cert.der) {
            return Ok(ChainInfo {
                leaf_subject: leaf.subject.clone(),
                root_subject: root.subject.clone(),
                chain_len: chain.len(),
            });
        }
        if let Some(issuer) = chain.get(i + 1) {
            if !issuer.is_ca() {
                return Err(AttestationError::NotCa {
                    subject: issuer.subject.clone(),
                });
            }
            if !cert.signed_by(&issuer.public_key()?)? {
                return Err(AttestationError::BrokenChain {
                    subject: cert.subject.clone(),
                    issuer: issuer.subject.clone(),
                });
            }
        }
    }

    let last = chain.last().expect("x5c is not empty");
    for root in &roots {
        // A root with a key we cannot use simply did not sign it.
        let Ok(key) = root.public_key() else {
            continue;
        };
        if last.signed_by(&key)? {
            root.check_validity(now)?;
            return Ok(ChainInfo {
                leaf_subject: leaf.subject.clone(),
                root_subject: root.subject.clone(),
                chain_len: chain.len(),
            });
        }
    }
    Err(AttestationError::Untrusted {
        subject: last.subject.clone(),
        issuer: last.issuer(),
        roots: roots.len(),
    })
}

/// The leaf's key signed authData ‖ clientDataHash; it is no CA; its AAGUID
/// extension, if any, names the key's AAGUID.
fn check_leaf(
    leaf: &Cert<'_>,
    att: &Attestation,
    client_data_hash: &[u8; 32],
) -> Result<(), AttestationError> {
    let key = match leaf.public_key() {
        Ok(PublicKey::P256(k)) => k,
        Ok(PublicKey::Rsa(_)) => {
            return Err(AttestationError::LeafKey {
                subject: leaf.subject.clone(),
                reason: "it is RSA".into(),
            })
        }
        Err(e) => {
            return Err(AttestationError::LeafKey {
                subject: leaf.subject.clone(),
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
            subject: leaf.subject.clone(),
        });
    }
    if leaf.is_ca() {
        return Err(AttestationError::LeafIsCa {
            subject: leaf.subject.clone(),
        });
    }
    let key_aaguid: [u8; 16] = att
        .auth_data
        .get(37..53)
        .and_then(|s| s.try_into().ok())
        .ok_or(AttestationError::MalformedAuthData)?;
    let extensions = leaf.cert.tbs_certificate.extensions.as_deref();
    for ext in extensions
        .unwrap_or_default()
        .iter()
        .filter(|e| e.extn_id == ID_FIDO_GEN_CE_AAGUID)
    {
        let inner = OctetString::from_der(ext.extn_value.as_bytes()).ok();
        let cert_aaguid: [u8; 16] = inner
            .as_ref()
            .and_then(|o| o.as_bytes().try_into().ok())
            .ok_or_else(|| AttestationError::MalformedAaguid {
                subject: leaf.subject.clone(),
            })?;
        if cert_aaguid != key_aaguid {
            return Err(AttestationError::AaguidMismatch {
                subject: leaf.subject.clone(),
                certificate: format_aaguid(&cert_aaguid),
                key: format_aaguid(&key_aaguid),
            });
        }
    }
    Ok(())
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
        reason: one_line(&reason),
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
    use std::time::Duration;

    const CDH: [u8; 32] = [0x5A; 32];
    const AAGUID: [u8; 16] = [0xA7; 16];
    const DAY: Duration = Duration::from_secs(86_400);

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
            Pki::with(CertParams::leaf("CN=leaf,O=t", Some(AAGUID)))
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
                leaf_subject: "CN=leaf,O=t".into(),
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
        // A leaf without the AAGUID extension is fine (it is optional).
        let pki = Pki::with(CertParams::leaf("CN=leaf,O=t", None));
        assert!(check(&pki.attestation(), &pki.roots()).is_ok());
    }

    #[test]
    fn leaf_signed_directly_by_an_rsa_root() {
        let root = TestCert::self_signed(CertParams::ca("CN=rsa root"), CertKey::rsa());
        let leaf = root.issue(CertParams::leaf("CN=leaf", Some(AAGUID)), CertKey::p256());
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
                subject: "CN=leaf,O=t".into()
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
                subject: "CN=leaf,O=t".into(),
                issuer: "CN=inter,O=t".into()
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
                subject: "CN=inter,O=t".into(),
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
        let pki =
            Pki::with(CertParams::leaf("CN=leaf,O=t", Some(AAGUID)).valid(t - 10 * DAY, t - DAY));
        let err = check(&pki.attestation(), &pki.roots()).unwrap_err();
        assert!(
            matches!(&err, AttestationError::Expired { subject, .. } if subject == "CN=leaf,O=t"),
            "{err}"
        );
        let pki =
            Pki::with(CertParams::leaf("CN=leaf,O=t", Some(AAGUID)).valid(t + DAY, t + 10 * DAY));
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
        let leaf = inter.issue(CertParams::leaf("CN=leaf", Some(AAGUID)), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        assert!(matches!(
            check(&att, &pki.roots()),
            Err(AttestationError::Expired { subject, .. }) if subject == "CN=old inter"
        ));

        // The configured root.
        let root = TestCert::self_signed(
            CertParams::ca("CN=old root").valid(t - 10 * DAY, t - DAY),
            CertKey::p256(),
        );
        let leaf = root.issue(CertParams::leaf("CN=leaf", Some(AAGUID)), CertKey::p256());
        let att = packed(vec![leaf.der.clone()], leaf.key.p256_key().unwrap());
        assert!(matches!(
            check(&att, std::slice::from_ref(&root.der)),
            Err(AttestationError::Expired { subject, .. }) if subject == "CN=old root"
        ));
    }

    #[test]
    fn aaguid_extension_must_match_the_key() {
        let other = [0x11; 16];
        let pki = Pki::with(CertParams::leaf("CN=leaf,O=t", Some(other)));
        let err = check(&pki.attestation(), &pki.roots()).unwrap_err();
        assert_eq!(
            err,
            AttestationError::AaguidMismatch {
                subject: "CN=leaf,O=t".into(),
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
        let mut params = CertParams::leaf("CN=leaf,O=t", Some(AAGUID));
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
        let leaf = inter.issue(CertParams::leaf("CN=leaf", Some(AAGUID)), CertKey::p256());
        let att = packed(
            vec![leaf.der.clone(), inter.der.clone()],
            leaf.key.p256_key().unwrap(),
        );
        assert_eq!(
            check(&att, std::slice::from_ref(&root.der)).unwrap_err(),
            AttestationError::NotCa {
                subject: "CN=not a ca".into()
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
                subject: "s".into(),
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
        assert_eq!(one_line("a\nb\rc"), "a b c");
    }
}
