//! The platform side of PIN/UV auth protocols 1 and 2, written after
//! ctap-hid-fido2 3.6.1 (`encrypt/shared_secret.rs`, `shared_secret2.rs`,
//! `pin_uv_auth_protocol.rs`, `hmac_ext.rs`), whose own types are private.
//! Independent of the authenticator's `protocol` module on purpose.

use aes::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use ciborium::value::Value;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use p256::ecdh::EphemeralSecret;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::PublicKey;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// `PinUvAuthSharedSecret` of ctap-hid-fido2: our COSE key and the secret
/// (32 bytes for protocol 1; HMAC key ‖ AES key for protocol 2).
pub struct PlatformSecret {
    pub version: u8,
    /// Our public key, COSE `{1: 2, 3: -25, -1: 1, -2: x, -3: y}` as the crate sends it.
    pub public_key: Value,
    secret: Vec<u8>,
}

fn map_get(v: &Value, key: i64) -> &Value {
    v.as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k.as_integer().map(i128::from) == Some(key.into()))
        .map(|(_, v)| v)
        .unwrap()
}

impl PlatformSecret {
    /// `PinUvAuthSharedSecret::new(version, key_agreement)`.
    pub fn new(version: u8, authenticator_key: &Value) -> PlatformSecret {
        let coord = |k| map_get(authenticator_key, k).as_bytes().unwrap().clone();
        let peer = PublicKey::from_sec1_bytes(&[vec![4], coord(-2), coord(-3)].concat()).unwrap();
        let ours = EphemeralSecret::random(&mut OsRng);
        let z = ours.diffie_hellman(&peer);
        let z = z.raw_secret_bytes();
        let secret = match version {
            1 => Sha256::digest(z).to_vec(),
            _ => {
                let hk = Hkdf::<Sha256>::new(Some(&[0u8; 32]), z);
                let mut s = vec![0u8; 64];
                hk.expand(b"CTAP2 HMAC key", &mut s[..32]).unwrap();
                hk.expand(b"CTAP2 AES key", &mut s[32..]).unwrap();
                s
            }
        };
        let point = ours.public_key().to_encoded_point(false);
        let public_key = Value::Map(vec![
            (1.into(), 2.into()),
            (3.into(), (-25).into()),
            ((-1).into(), 1.into()),
            ((-2).into(), Value::Bytes(point.x().unwrap().to_vec())),
            ((-3).into(), Value::Bytes(point.y().unwrap().to_vec())),
        ]);
        PlatformSecret {
            version,
            public_key,
            secret,
        }
    }

    fn aes_key(&self) -> &[u8] {
        if self.version == 1 {
            &self.secret
        } else {
            &self.secret[32..]
        }
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; 16];
        if self.version == 2 {
            OsRng.fill_bytes(&mut iv);
        }
        let mut buf = plaintext.to_vec();
        let len = buf.len();
        cbc::Encryptor::<aes::Aes256>::new_from_slices(self.aes_key(), &iv)
            .unwrap()
            .encrypt_padded_mut::<NoPadding>(&mut buf, len)
            .unwrap();
        if self.version == 1 {
            buf
        } else {
            [&iv[..], &buf].concat()
        }
    }

    pub fn decrypt(&self, ciphertext: &[u8]) -> Vec<u8> {
        let (iv, ct) = if self.version == 1 {
            (&[0u8; 16][..], ciphertext)
        } else {
            ciphertext.split_at(16)
        };
        let mut buf = ct.to_vec();
        cbc::Decryptor::<aes::Aes256>::new_from_slices(self.aes_key(), iv)
            .unwrap()
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .unwrap();
        buf
    }

    /// `authenticate`: pinUvAuthParam with the shared secret's HMAC key.
    pub fn authenticate(&self, message: &[u8]) -> Vec<u8> {
        pin_uv_auth_param(&self.secret[..32], message, self.version)
    }

    /// `encrypt_pin`: LEFT(SHA-256(pin), 16), encrypted.
    pub fn encrypt_pin(&self, pin: &str) -> Vec<u8> {
        self.encrypt(&Sha256::digest(pin.as_bytes())[..16])
    }

    /// `padding_pin_64` then encrypt.
    pub fn encrypt_new_pin(&self, pin: &str) -> Vec<u8> {
        let mut padded = [0u8; 64];
        padded[..pin.len()].copy_from_slice(pin.as_bytes());
        self.encrypt(&padded)
    }
}

/// `compute_pin_uv_auth_param`: HMAC-SHA-256, first 16 bytes for protocol 1.
pub fn pin_uv_auth_param(key: &[u8], message: &[u8], version: u8) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message);
    let tag = mac.finalize().into_bytes().to_vec();
    if version == 1 {
        tag[..16].to_vec()
    } else {
        tag
    }
}
