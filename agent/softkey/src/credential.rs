//! Stateless credentials, as real keys make them: a credential id is
//! `seed(32) ‖ HMAC-SHA256(master, label ‖ seed ‖ rpIdHash)[..16]`, and the
//! credential's P-256 private scalar is re-derived from the master secret and
//! the seed on every use (HKDF-SHA256), so the key stores no credential.
//!
//! The MAC's label says the credential's credProtect level (`cred-mac`, or
//! `cred-mac-uvreq` for userVerificationRequired), so a credential that needs
//! user verification is known without storing anything. hmac-secret has two
//! CredRandom values per credential, one for use with user verification and
//! one without, as the spec requires.

use std::fmt;

use ciborium::value::Value;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdsa::SigningKey;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cbor::{encode, int, int_map};

type HmacSha256 = Hmac<Sha256>;

/// COSE algorithm ES256.
pub const ALG_ES256: i64 = -7;
/// Length of the random part of a credential id.
const SEED_LEN: usize = 32;
/// Length of the truncated MAC that ends a credential id.
const CRED_MAC_LEN: usize = 16;
/// Length of a credential id made by this key.
pub const CREDENTIAL_ID_LEN: usize = SEED_LEN + CRED_MAC_LEN;

const INFO_CRED_MAC: &[u8] = b"cred-mac";
/// The MAC label of credentials made with credProtect userVerificationRequired.
const INFO_CRED_MAC_UV_REQUIRED: &[u8] = b"cred-mac-uvreq";
const INFO_CRED_KEY: &[u8] = b"touchgate-soft-cred";
const INFO_CRED_RANDOM_UV: &[u8] = b"touchgate-soft-credrandom-uv";
const INFO_CRED_RANDOM_NO_UV: &[u8] = b"touchgate-soft-credrandom-nouv";

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// The MAC that binds a credential id to this key and this relying party
/// (and, by its label, to its credProtect level).
fn cred_mac(
    master: &[u8; 32],
    seed: &[u8],
    rp_id_hash: &[u8; 32],
    uv_required: bool,
) -> HmacSha256 {
    let label = if uv_required {
        INFO_CRED_MAC_UV_REQUIRED
    } else {
        INFO_CRED_MAC
    };
    hmac_sha256(master, &[label, seed, rp_id_hash])
}

/// The credential behind `cred_id`, if this key made it for this relying
/// party. A credential that requires UV is skipped when `uv` is false, as if
/// it were not there (credProtect level 3).
pub(crate) fn own_credential(
    master: &[u8; 32],
    cred_id: &[u8],
    rp_id_hash: &[u8; 32],
    uv: bool,
) -> Option<Credential> {
    if cred_id.len() != CREDENTIAL_ID_LEN {
        return None;
    }
    let (seed, tag) = cred_id.split_at(SEED_LEN);
    // Constant-time comparison.
    let matches = |uv_required| {
        cred_mac(master, seed, rp_id_hash, uv_required)
            .verify_truncated_left(tag)
            .is_ok()
    };
    let uv_required = if matches(false) {
        false
    } else if matches(true) {
        true
    } else {
        return None;
    };
    if uv_required && !uv {
        return None;
    }
    Some(Credential {
        id: cred_id.to_vec(),
        rp_id_hash: *rp_id_hash,
        uv_required,
    })
}

/// The credential's private scalar: HKDF-SHA256(master, info
/// "touchgate-soft-cred" ‖ seed ‖ rpIdHash [‖ retry counter]), retried until
/// it is a valid P-256 scalar. Checking the range costs no point
/// multiplication (a [`SigningKey`] would compute its public key).
fn cred_scalar(master: &[u8; 32], seed: &[u8], rp_id_hash: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, &master[..]);
    for retry in 0u8..=255 {
        let mut okm = Zeroizing::new([0u8; 32]);
        let retry_byte = [retry];
        let mut info: Vec<&[u8]> = vec![INFO_CRED_KEY, seed, rp_id_hash];
        if retry > 0 {
            info.push(&retry_byte);
        }
        hk.expand_multi_info(&info, &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        if p256::SecretKey::from_slice(&okm[..]).is_ok() {
            return okm;
        }
    }
    // Each try fails with probability ~2^-128.
    unreachable!("256 HKDF outputs in a row were not P-256 scalars")
}

/// CredRandom for hmac-secret: one for use with UV, another without.
fn cred_random(master: &[u8; 32], seed: &[u8], uv: bool) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(None, &master[..]);
    let label = if uv {
        INFO_CRED_RANDOM_UV
    } else {
        INFO_CRED_RANDOM_NO_UV
    };
    let mut out = Zeroizing::new([0u8; 32]);
    hk.expand_multi_info(&[label, seed], &mut out[..])
        .expect("32 bytes is a valid HKDF-SHA256 length");
    out
}

/// The COSE_Key of an ES256 P-256 public key, canonical CBOR:
/// `{1: 2, 3: -7, -1: 1, -2: x, -3: y}`.
pub(crate) fn cose_key(key: &SigningKey) -> Vec<u8> {
    let point = key.verifying_key().to_encoded_point(false);
    let coord = |c: Option<&p256::FieldBytes>| {
        Value::Bytes(
            c.expect("an uncompressed point has both coordinates")
                .to_vec(),
        )
    };
    encode(&int_map(vec![
        (1, int(2)),
        (3, int(ALG_ES256)),
        (-1, int(1)),
        (-2, coord(point.x())),
        (-3, coord(point.y())),
    ]))
}

/// DER ECDSA-SHA256 signature over `auth_data ‖ client_data_hash` by `cred`,
/// whose public point is `public_key_sec1` (from [`public_key_sec1`]). Signed
/// with ring, whose P-256 takes about a tenth of the time of the pure-Rust
/// arithmetic: this is most of what a touch of the soft key costs.
pub(crate) fn sign(
    master: &[u8; 32],
    cred: &Credential,
    public_key_sec1: &[u8; 65],
    auth_data: &[u8],
    client_data_hash: &[u8; 32],
) -> Vec<u8> {
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let mut msg = Vec::with_capacity(auth_data.len() + 32);
    msg.extend_from_slice(auth_data);
    msg.extend_from_slice(client_data_hash);
    let scalar = cred_scalar(master, cred.seed(), &cred.rp_id_hash);
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_private_key_and_public_key(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        &scalar[..],
        public_key_sec1,
        &rng,
    )
    .expect("the public point was derived from this scalar");
    pair.sign(&rng, &msg)
        .expect("ECDSA signing fails only without system randomness")
        .as_ref()
        .to_vec()
}

/// One of this key's credentials. Holds no
/// secret: its private key is re-derived from the master secret on each use.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    id: Vec<u8>,
    rp_id_hash: [u8; 32],
    uv_required: bool,
}

impl Credential {
    /// The credential id (seed ‖ MAC, [`CREDENTIAL_ID_LEN`] bytes).
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// SHA-256 of the relying party id it is bound to.
    pub fn rp_id_hash(&self) -> &[u8; 32] {
        &self.rp_id_hash
    }

    /// Made with credProtect userVerificationRequired (level 3).
    #[cfg(test)]
    pub fn uv_required(&self) -> bool {
        self.uv_required
    }

    fn seed(&self) -> &[u8] {
        &self.id[..SEED_LEN]
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("id", &hex::encode(&self.id))
            .field("uv_required", &self.uv_required)
            .finish()
    }
}

/// A new credential for `rp_id` under `master` (nothing is stored).
pub(crate) fn new_credential(master: &[u8; 32], rp_id: &str, uv_required: bool) -> Credential {
    let rp_id_hash = sha256(rp_id.as_bytes());
    let mut seed = [0u8; SEED_LEN];
    OsRng.fill_bytes(&mut seed);
    let tag = cred_mac(master, &seed, &rp_id_hash, uv_required)
        .finalize()
        .into_bytes();
    let mut id = Vec::with_capacity(CREDENTIAL_ID_LEN);
    id.extend_from_slice(&seed);
    id.extend_from_slice(&tag[..CRED_MAC_LEN]);
    Credential {
        id,
        rp_id_hash,
        uv_required,
    }
}

/// The credential's signing key.
pub(crate) fn signing_key(master: &[u8; 32], cred: &Credential) -> SigningKey {
    let scalar = cred_scalar(master, cred.seed(), &cred.rp_id_hash);
    SigningKey::from_slice(&scalar[..]).expect("cred_scalar returns valid scalars")
}

/// The uncompressed SEC1 point of the credential's public key: one point
/// multiplication, which is why [`crate::key::Session`] keeps it.
pub(crate) fn public_key_sec1(master: &[u8; 32], cred: &Credential) -> [u8; 65] {
    let point = signing_key(master, cred)
        .verifying_key()
        .to_encoded_point(false);
    point
        .as_bytes()
        .try_into()
        .expect("an uncompressed P-256 point is 65 bytes")
}

/// hmac-secret output `HMAC-SHA256(CredRandom, salt)`, with the CredRandom
/// for use with (`uv`) or without user verification.
pub(crate) fn hmac_secret(
    master: &[u8; 32],
    cred: &Credential,
    salt: &[u8; 32],
    uv: bool,
) -> Zeroizing<[u8; 32]> {
    let cred_random = cred_random(master, cred.seed(), uv);
    let out = hmac_sha256(&cred_random[..], &[salt])
        .finalize()
        .into_bytes();
    let mut output = Zeroizing::new([0u8; 32]);
    output.copy_from_slice(&out);
    output
}
