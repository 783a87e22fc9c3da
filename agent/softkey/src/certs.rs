//! Test certificates for packed attestation (feature `certs`): a root CA,
//! intermediates and attestation leaves (P-256, or RSA or P-384 for CAs),
//! with the FIDO AAGUID extension, built with RustCrypto `x509-cert` and
//! written as DER or PEM. [`CertParams`] can also break one rule at a time
//! (version, pathLen, keyUsage, extra or critical extensions, ECDSA
//! parameters) for the chain checks' tests.
//!
//! One builder for both sides: the emulated key's full attestation
//! (`ctap::Attestation::Certificate`) takes its chain from here, and
//! the agent's attestation checks test against the same certificates (a
//! dev-dependency of the agent).

use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::EncodePublicKey as _;
use sha2::Sha256;
use x509_cert::der::asn1::{Any, BitString, ObjectIdentifier, OctetString};
use x509_cert::der::{Decode as _, Encode as _};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::{Time, Validity};
use x509_cert::{Certificate, TbsCertificate, Version};

/// id-fido-gen-ce-aaguid.
pub const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_CE_BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const ID_CE_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// The key of a certificate's subject (and, for a CA, what it signs with).
#[derive(Clone)]
pub enum CertKey {
    P256(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
    /// A P-384 key as PKCS#8 (signs with ECDSA SHA-384).
    P384(Vec<u8>),
}

impl std::fmt::Debug for CertKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertKey::P256(_) => "CertKey::P256(..)",
            CertKey::Rsa(_) => "CertKey::Rsa(..)",
            CertKey::P384(_) => "CertKey::P384(..)",
        })
    }
}

impl CertKey {
    /// A fresh random P-256 key.
    pub fn p256() -> CertKey {
        CertKey::P256(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// A fresh random 2048-bit RSA key.
    pub fn rsa() -> CertKey {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("RSA key");
        CertKey::Rsa(Box::new(key))
    }

    /// A fresh random P-384 key.
    pub fn p384() -> CertKey {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &rng,
        )
        .expect("P-384 key");
        CertKey::P384(pkcs8.as_ref().to_vec())
    }

    /// The P-256 key, if this is one.
    pub fn p256_key(&self) -> Option<&p256::ecdsa::SigningKey> {
        match self {
            CertKey::P256(k) => Some(k),
            CertKey::Rsa(_) | CertKey::P384(_) => None,
        }
    }

    fn p384_pair(pkcs8: &[u8]) -> ring::signature::EcdsaKeyPair {
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .expect("P-384 PKCS#8")
    }

    fn spki(&self) -> SubjectPublicKeyInfoOwned {
        let der = match self {
            CertKey::P256(k) => k.verifying_key().to_public_key_der(),
            CertKey::Rsa(k) => rsa::pkcs8::EncodePublicKey::to_public_key_der(&k.to_public_key()),
            CertKey::P384(pkcs8) => {
                use ring::signature::KeyPair as _;
                let pair = CertKey::p384_pair(pkcs8);
                return SubjectPublicKeyInfoOwned {
                    algorithm: AlgorithmIdentifierOwned {
                        oid: ID_EC_PUBLIC_KEY,
                        parameters: Some(Any::from(&SECP384R1)),
                    },
                    subject_public_key: BitString::from_bytes(pair.public_key().as_ref())
                        .expect("point bits"),
                };
            }
        }
        .expect("public key DER");
        SubjectPublicKeyInfoOwned::from_der(der.as_bytes()).expect("SPKI")
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            CertKey::P256(_) => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
            CertKey::Rsa(_) => AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(Any::null()),
            },
            CertKey::P384(_) => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA384,
                parameters: None,
            },
        }
    }

    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            CertKey::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
            CertKey::Rsa(k) => {
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone());
                let sig: rsa::pkcs1v15::Signature = signer.sign(msg);
                rsa::signature::SignatureEncoding::to_vec(&sig)
            }
            CertKey::P384(pkcs8) => CertKey::p384_pair(pkcs8)
                .sign(&ring::rand::SystemRandom::new(), msg)
                .expect("P-384 signature")
                .as_ref()
                .to_vec(),
        }
    }
}

/// What goes into one certificate.
#[derive(Debug, Clone)]
pub struct CertParams {
    /// RFC 4514, e.g. `CN=touchgate test root,O=touchgate tests`.
    pub subject: String,
    pub serial: u64,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// basicConstraints cA (always present, critical).
    pub ca: bool,
    /// The id-fido-gen-ce-aaguid extension.
    pub aaguid: Option<[u8; 16]>,
    /// Mark the AAGUID extension critical (packed forbids it).
    pub aaguid_critical: bool,
    /// basicConstraints pathLenConstraint.
    pub path_len: Option<u8>,
    /// The keyUsage extension (critical), if any. CAs get keyCertSign and cRLSign.
    pub key_usage: Option<KeyUsage>,
    /// Further extensions, as given.
    pub extra_extensions: Vec<Extension>,
    pub version: Version,
    /// The issuer's ECDSA signature algorithm with an explicit NULL parameter
    /// (which RFC 5758 forbids).
    pub ecdsa_params_null: bool,
}

const DAY: Duration = Duration::from_secs(86_400);

impl CertParams {
    /// A CA valid from a day ago for ten years.
    pub fn ca(subject: &str) -> CertParams {
        let now = SystemTime::now();
        CertParams {
            subject: subject.into(),
            serial: 1,
            not_before: now - DAY,
            not_after: now + 3650 * DAY,
            ca: true,
            aaguid: None,
            aaguid_critical: false,
            path_len: None,
            key_usage: Some(KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)),
            extra_extensions: Vec::new(),
            version: Version::V3,
            ecdsa_params_null: false,
        }
    }

    /// An attestation leaf (not a CA) naming `aaguid`, valid like [`CertParams::ca`].
    pub fn leaf(subject: &str, aaguid: Option<[u8; 16]>) -> CertParams {
        CertParams {
            serial: 2,
            ca: false,
            aaguid,
            key_usage: None,
            ..CertParams::ca(subject)
        }
    }

    /// Valid from `not_before` to `not_after`.
    pub fn valid(mut self, not_before: SystemTime, not_after: SystemTime) -> CertParams {
        self.not_before = not_before;
        self.not_after = not_after;
        self
    }
}

/// A certificate with its subject's key.
#[derive(Debug, Clone)]
pub struct TestCert {
    pub der: Vec<u8>,
    pub key: CertKey,
    pub subject: String,
}

impl TestCert {
    /// A self-signed certificate (a root).
    pub fn self_signed(params: CertParams, key: CertKey) -> TestCert {
        let der = build(&params, &key, &params.subject, &key);
        TestCert {
            der,
            key,
            subject: params.subject,
        }
    }

    /// A certificate for `key`, signed by this one's key.
    pub fn issue(&self, params: CertParams, key: CertKey) -> TestCert {
        let der = build(&params, &key, &self.subject, &self.key);
        TestCert {
            der,
            key,
            subject: params.subject,
        }
    }

    pub fn pem(&self) -> String {
        pem(&self.der)
    }
}

/// A self-signed P-256 root CA.
pub fn root_ca(subject: &str) -> TestCert {
    TestCert::self_signed(CertParams::ca(subject), CertKey::p256())
}

/// An attestation chain under `root`: leaf (P-256, AAGUID extension) and one
/// intermediate CA, leaf first (as `x5c` carries it; the root is left out).
/// Returns the chain and the leaf's key, which signs attestations.
pub fn attestation_chain(
    root: &TestCert,
    aaguid: [u8; 16],
) -> (Vec<Vec<u8>>, p256::ecdsa::SigningKey) {
    let inter = root.issue(
        CertParams::ca("CN=touchgate test attestation CA,O=touchgate tests"),
        CertKey::p256(),
    );
    let leaf = inter.issue(
        CertParams::leaf(
            "CN=touchgate test key attestation,OU=Authenticator Attestation,O=touchgate tests,C=DE",
            Some(aaguid),
        ),
        CertKey::p256(),
    );
    let key = leaf.key.p256_key().expect("P-256 leaf").clone();
    (vec![leaf.der, inter.der], key)
}

/// PEM of one DER certificate.
pub fn pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Write certificates as one PEM file.
pub fn write_pem(path: &Path, certs: &[&[u8]]) -> std::io::Result<()> {
    std::fs::write(path, certs.iter().map(|c| pem(c)).collect::<String>())
}

/// A DER certificate for `subject_key`, issued by `issuer` and signed with `issuer_key`.
pub fn build(
    params: &CertParams,
    subject_key: &CertKey,
    issuer: &str,
    issuer_key: &CertKey,
) -> Vec<u8> {
    let name = |s: &str| -> Name { s.parse().expect("RFC 4514 name") };
    let time = |t: SystemTime| Time::try_from(t).expect("certificate time");
    let bc = BasicConstraints {
        ca: params.ca,
        path_len_constraint: params.path_len,
    };
    let mut extensions = vec![Extension {
        extn_id: ID_CE_BASIC_CONSTRAINTS,
        critical: true,
        extn_value: OctetString::new(bc.to_der().expect("basicConstraints")).expect("octets"),
    }];
    if let Some(ku) = params.key_usage {
        extensions.push(Extension {
            extn_id: ID_CE_KEY_USAGE,
            critical: true,
            extn_value: OctetString::new(ku.to_der().expect("keyUsage")).expect("octets"),
        });
    }
    if let Some(aaguid) = params.aaguid {
        let inner = OctetString::new(aaguid.to_vec()).expect("octets");
        extensions.push(Extension {
            extn_id: ID_FIDO_GEN_CE_AAGUID,
            critical: params.aaguid_critical,
            extn_value: OctetString::new(inner.to_der().expect("aaguid")).expect("octets"),
        });
    }
    extensions.extend(params.extra_extensions.iter().cloned());
    let mut algorithm = issuer_key.algorithm();
    if params.ecdsa_params_null && matches!(issuer_key, CertKey::P256(_) | CertKey::P384(_)) {
        algorithm.parameters = Some(Any::null());
    }
    let tbs = TbsCertificate {
        version: params.version,
        serial_number: SerialNumber::from(params.serial),
        signature: algorithm,
        issuer: name(issuer),
        validity: Validity {
            not_before: time(params.not_before),
            not_after: time(params.not_after),
        },
        subject: name(&params.subject),
        subject_public_key_info: subject_key.spki(),
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    };
    sign_tbs(tbs, issuer_key)
}

/// The DER certificate of `tbs` signed with `issuer_key` (the algorithm is
/// `tbs.signature`): for tests that change a field [`build`] does not offer.
pub fn sign_tbs(tbs: TbsCertificate, issuer_key: &CertKey) -> Vec<u8> {
    let tbs_der = tbs.to_der().expect("TBS DER");
    let signature = issuer_key.sign(&tbs_der);
    Certificate {
        signature_algorithm: tbs.signature.clone(),
        tbs_certificate: tbs,
        signature: BitString::from_bytes(&signature).expect("signature bits"),
    }
    .to_der()
    .expect("certificate DER")
}
