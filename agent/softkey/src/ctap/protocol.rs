//! PIN/UV auth protocols 1 and 2 (CTAP 2.1 §6.5.6, §6.5.7), authenticator
//! side: the key agreement key, the shared secret derived from a platform
//! key, and encrypt / decrypt / verify with it.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ciborium::value::Value;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::params::{as_bytes, as_int, as_map, int_get};
use super::status::{CtapResult, Status};
use crate::cbor::{int, int_map};

type HmacSha256 = Hmac<Sha256>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

/// COSE algorithm of the key agreement key: ECDH-ES + HKDF-256.
const COSE_ALG_ECDH_ES_HKDF_256: i64 = -25;

/// A PIN/UV auth protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PinProtocol {
    One,
    Two,
}

impl PinProtocol {
    /// From a pinUvAuthProtocol parameter: 1 or 2, else CTAP1_ERR_INVALID_PARAMETER.
    pub fn from_value(v: &Value) -> CtapResult<PinProtocol> {
        match as_int(v)? {
            1 => Ok(PinProtocol::One),
            2 => Ok(PinProtocol::Two),
            _ => Err(Status::INVALID_PARAMETER),
        }
    }

    /// verify(key, message, signature): protocol 1 compares the first 16
    /// bytes of HMAC-SHA-256(key, message), protocol 2 all 32. Constant time.
    pub fn verify(self, key: &[u8], message: &[u8], signature: &[u8]) -> bool {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(message);
        match self {
            PinProtocol::One => {
                signature.len() == 16 && mac.verify_truncated_left(signature).is_ok()
            }
            PinProtocol::Two => mac.verify_slice(signature).is_ok(),
        }
    }
}

/// The authenticator's P-256 key agreement key (regenerated at power-up, on
/// reset and after a wrong PIN).
pub(super) struct KeyAgreement(SecretKey);

impl std::fmt::Debug for KeyAgreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyAgreement([REDACTED])")
    }
}

impl KeyAgreement {
    pub fn generate() -> KeyAgreement {
        KeyAgreement(SecretKey::random(&mut OsRng))
    }

    /// The public key as COSE_Key `{1: 2, 3: -25, -1: 1, -2: x, -3: y}`.
    pub fn cose_public_key(&self) -> Value {
        let point = self.0.public_key().to_encoded_point(false);
        let coord =
            |c: Option<&p256::FieldBytes>| Value::Bytes(c.expect("uncompressed point").to_vec());
        int_map(vec![
            (1, int(2)),
            (3, int(COSE_ALG_ECDH_ES_HKDF_256)),
            (-1, int(1)),
            (-2, coord(point.x())),
            (-3, coord(point.y())),
        ])
    }

    /// The shared secret with the platform key `peer` (a COSE_Key):
    /// ECDH, then SHA-256 (protocol 1) or HKDF-SHA-256 (protocol 2).
    /// A key that is not a P-256 point gives CTAP1_ERR_INVALID_PARAMETER.
    pub fn shared_secret(&self, protocol: PinProtocol, peer: &Value) -> CtapResult<SharedSecret> {
        let peer = parse_cose_p256(peer)?;
        let dh = p256::ecdh::diffie_hellman(self.0.to_nonzero_scalar(), peer.as_affine());
        let z = dh.raw_secret_bytes();
        let (mut hmac_key, mut aes_key) = (Zeroizing::new([0u8; 32]), Zeroizing::new([0u8; 32]));
        match protocol {
            PinProtocol::One => {
                let k = Sha256::digest(z.as_slice());
                hmac_key.copy_from_slice(&k);
                aes_key.copy_from_slice(&k);
            }
            PinProtocol::Two => {
                let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z.as_slice());
                hk.expand(b"CTAP2 HMAC key", &mut hmac_key[..])
                    .expect("32 bytes is a valid HKDF length");
                hk.expand(b"CTAP2 AES key", &mut aes_key[..])
                    .expect("32 bytes is a valid HKDF length");
            }
        }
        Ok(SharedSecret {
            protocol,
            hmac_key,
            aes_key,
        })
    }
}

/// A COSE_Key EC2 P-256 public key (the algorithm is not checked, as the
/// spec says).
fn parse_cose_p256(v: &Value) -> CtapResult<PublicKey> {
    let map = as_map(v)?;
    let field = |k| int_get(map, k).ok_or(Status::MISSING_PARAMETER);
    if as_int(field(1)?)? != 2 || as_int(field(-1)?)? != 1 {
        return Err(Status::INVALID_PARAMETER);
    }
    let (x, y) = (as_bytes(field(-2)?)?, as_bytes(field(-3)?)?);
    if x.len() != 32 || y.len() != 32 {
        return Err(Status::INVALID_PARAMETER);
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(0x04);
    sec1.extend_from_slice(x);
    sec1.extend_from_slice(y);
    PublicKey::from_sec1_bytes(&sec1).map_err(|_| Status::INVALID_PARAMETER)
}

/// The secret shared with the platform for one exchange.
pub(super) struct SharedSecret {
    protocol: PinProtocol,
    hmac_key: Zeroizing<[u8; 32]>,
    aes_key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSecret")
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl SharedSecret {
    /// AES-256-CBC without padding: zero IV (protocol 1), or a random IV
    /// sent in front of the ciphertext (protocol 2). `plaintext` is whole
    /// blocks.
    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        if self.protocol == PinProtocol::Two {
            OsRng.fill_bytes(&mut iv);
        }
        let mut buf = plaintext.to_vec();
        let len = buf.len();
        Aes256CbcEnc::new(self.aes_key.as_ref().into(), &iv.into())
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .expect("plaintexts are whole AES blocks");
        match self.protocol {
            PinProtocol::One => buf,
            PinProtocol::Two => [&iv[..], &buf].concat(),
        }
    }

    /// The inverse of [`SharedSecret::encrypt`]; ciphertexts that are not
    /// whole blocks (or, protocol 2, too short for the IV) give
    /// CTAP1_ERR_INVALID_PARAMETER.
    pub fn decrypt(&self, ciphertext: &[u8]) -> CtapResult<Zeroizing<Vec<u8>>> {
        let (iv, ct) = match self.protocol {
            PinProtocol::One => ([0u8; 16], ciphertext),
            PinProtocol::Two => {
                if ciphertext.len() < 16 {
                    return Err(Status::INVALID_PARAMETER);
                }
                let (iv, ct) = ciphertext.split_at(16);
                (iv.try_into().expect("16 bytes"), ct)
            }
        };
        if ct.is_empty() || ct.len() % 16 != 0 {
            return Err(Status::INVALID_PARAMETER);
        }
        let mut buf = Zeroizing::new(ct.to_vec());
        Aes256CbcDec::new(self.aes_key.as_ref().into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| Status::INVALID_PARAMETER)?;
        Ok(buf)
    }

    /// verify(sharedSecret, message, signature) with this protocol.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.protocol.verify(&self.hmac_key[..], message, signature)
    }
}
