//! authenticatorClientPIN (0x06) and the PIN / pinUvAuthToken state behind
//! makeCredential and getAssertion.
//!
//! * PIN: only `LEFT(SHA-256(pin), 16)` is kept. 8 retries in all; a wrong
//!   PIN costs one, regenerates the key agreement key and gives
//!   CTAP2_ERR_PIN_INVALID, the 3rd wrong PIN in a row CTAP2_ERR_PIN_AUTH_BLOCKED
//!   (until a power cycle), the last one CTAP2_ERR_PIN_BLOCKED. A right PIN
//!   resets the retries.
//! * pinUvAuthToken: one at a time; issuing one invalidates the previous
//!   one. It carries permissions (mc, ga), binds to the first RP it is used
//!   for, expires if unused for 30 s and at the latest 10 min after issue,
//!   and loses its mc/ga permissions once an operation collected user
//!   presence with it (CTAP 2.1 `clearPinUvAuthTokenPermissionsExceptLbw`).

use std::time::{Duration, Instant};

use ciborium::value::Value;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::params::{as_bytes, as_int, as_text, Params};
use super::protocol::{KeyAgreement, PinProtocol, SharedSecret};
use super::status::{CtapResult, Status};
use super::Authenticator;
use crate::cbor::{int, int_map};
use crate::ctap::OpContext;

/// Token permission: makeCredential.
pub(super) const PERMISSION_MC: u8 = 0x01;
/// Token permission: getAssertion.
pub(super) const PERMISSION_GA: u8 = 0x02;

/// PIN retries of a fresh PIN.
pub(super) const MAX_PIN_RETRIES: u8 = 8;
/// Wrong PINs in a row before a power cycle is needed.
const MAX_CONSECUTIVE_FAILURES: u8 = 3;
/// Minimum PIN length in bytes (CTAP: 4 code points).
const MIN_PIN_LEN: usize = 4;
const TOKEN_INITIAL_USAGE: Duration = Duration::from_secs(30);
const TOKEN_MAX_USAGE: Duration = Duration::from_secs(600);

/// The PIN, its retries, the key agreement key and the current token.
pub(super) struct PinState {
    pin_hash: Option<Zeroizing<[u8; 16]>>,
    retries: u8,
    consecutive_failures: u8,
    key_agreement: KeyAgreement,
    token: Option<Token>,
}

/// The pinUvAuthToken in use.
struct Token {
    key: Zeroizing<[u8; 32]>,
    permissions: u8,
    rp_id: Option<String>,
    /// Got through built-in UV (a touch), so it also stands for user presence.
    user_present: bool,
    issued: Instant,
    used: bool,
}

impl Token {
    fn expired(&self) -> bool {
        let age = self.issued.elapsed();
        age > TOKEN_MAX_USAGE || (!self.used && age > TOKEN_INITIAL_USAGE)
    }
}

fn pin_hash(pin: &[u8]) -> Zeroizing<[u8; 16]> {
    let mut h = Zeroizing::new([0u8; 16]);
    h.copy_from_slice(&Sha256::digest(pin)[..16]);
    h
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PinState {
    pub fn new(pin: Option<&str>) -> PinState {
        PinState {
            pin_hash: pin.map(|p| pin_hash(p.as_bytes())),
            retries: MAX_PIN_RETRIES,
            consecutive_failures: 0,
            key_agreement: KeyAgreement::generate(),
            token: None,
        }
    }

    pub fn is_set(&self) -> bool {
        self.pin_hash.is_some()
    }

    pub fn retries(&self) -> u8 {
        self.retries
    }

    pub fn key_agreement(&self) -> &KeyAgreement {
        &self.key_agreement
    }

    /// What a power cycle forgets: the consecutive-failure block, the key
    /// agreement key and the token.
    pub fn power_cycle(&mut self) {
        self.consecutive_failures = 0;
        self.key_agreement = KeyAgreement::generate();
        self.token = None;
    }

    /// authenticatorReset: no PIN, full retries, fresh keys.
    pub fn reset(&mut self) {
        self.pin_hash = None;
        self.retries = MAX_PIN_RETRIES;
        self.power_cycle();
    }

    /// Check a pinUvAuthParam over `client_data_hash` against the current
    /// token for `permission` and `rp_id`. Returns whether the token also
    /// stands for user presence. Any failure is CTAP2_ERR_PIN_AUTH_INVALID.
    pub fn verify_token(
        &mut self,
        protocol: PinProtocol,
        param: &[u8],
        client_data_hash: &[u8],
        permission: u8,
        rp_id: &str,
    ) -> CtapResult<bool> {
        if self.token.as_ref().is_some_and(Token::expired) {
            self.token = None;
        }
        let token = self.token.as_mut().ok_or(Status::PIN_AUTH_INVALID)?;
        if !protocol.verify(&token.key[..], client_data_hash, param)
            || token.permissions & permission == 0
            || token.rp_id.as_deref().is_some_and(|rp| rp != rp_id)
        {
            return Err(Status::PIN_AUTH_INVALID);
        }
        token.rp_id.get_or_insert_with(|| rp_id.to_owned());
        token.used = true;
        Ok(token.user_present)
    }

    /// After an operation collected user presence with the token: it no
    /// longer stands for presence, and loses its mc/ga permissions.
    pub fn consume_token(&mut self) {
        if let Some(t) = self.token.as_mut() {
            t.user_present = false;
            t.permissions &= !(PERMISSION_MC | PERMISSION_GA);
        }
    }

    /// Check `pinHashEnc` against the PIN, counting retries.
    fn check_pin(&mut self, shared: &SharedSecret, pin_hash_enc: &[u8]) -> CtapResult<()> {
        let stored = self.pin_hash.clone().ok_or(Status::PIN_NOT_SET)?;
        if self.retries == 0 {
            return Err(Status::PIN_BLOCKED);
        }
        if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            return Err(Status::PIN_AUTH_BLOCKED);
        }
        self.retries -= 1;
        let got = shared.decrypt(pin_hash_enc)?;
        if ct_eq(&got, &stored[..]) {
            self.retries = MAX_PIN_RETRIES;
            self.consecutive_failures = 0;
            return Ok(());
        }
        self.key_agreement = KeyAgreement::generate();
        self.consecutive_failures += 1;
        Err(if self.retries == 0 {
            Status::PIN_BLOCKED
        } else if self.consecutive_failures >= MAX_CONSECUTIVE_FAILURES {
            Status::PIN_AUTH_BLOCKED
        } else {
            Status::PIN_INVALID
        })
    }

    /// Decrypt a newPinEnc (64 bytes of PIN padded with zeros) and set it.
    fn set_new_pin(&mut self, shared: &SharedSecret, new_pin_enc: &[u8]) -> CtapResult<()> {
        let padded = shared.decrypt(new_pin_enc)?;
        if padded.len() != 64 {
            return Err(Status::INVALID_PARAMETER);
        }
        let len = padded.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if !(MIN_PIN_LEN..64).contains(&len) {
            return Err(Status::PIN_POLICY_VIOLATION);
        }
        self.pin_hash = Some(pin_hash(&padded[..len]));
        self.retries = MAX_PIN_RETRIES;
        self.token = None;
        Ok(())
    }

    /// Issue a new token (the old one stops working) and return it
    /// encrypted for the platform.
    fn issue_token(
        &mut self,
        shared: &SharedSecret,
        permissions: u8,
        rp_id: Option<String>,
        user_present: bool,
    ) -> Value {
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut key[..]);
        let encrypted = shared.encrypt(&key[..]);
        self.token = Some(Token {
            key,
            permissions,
            rp_id,
            user_present,
            issued: Instant::now(),
            used: false,
        });
        int_map(vec![(2, Value::Bytes(encrypted))])
    }
}

/// clientPIN subcommands.
const GET_PIN_RETRIES: i64 = 0x01;
const GET_KEY_AGREEMENT: i64 = 0x02;
const SET_PIN: i64 = 0x03;
const CHANGE_PIN: i64 = 0x04;
const GET_PIN_TOKEN: i64 = 0x05;
const GET_TOKEN_USING_UV: i64 = 0x06;
const GET_UV_RETRIES: i64 = 0x07;
const GET_TOKEN_USING_PIN: i64 = 0x09;

/// authenticatorClientPIN. `None` is a success without response data.
pub(super) fn handle(
    auth: &Authenticator,
    p: &Params,
    ctx: &OpContext,
) -> CtapResult<Option<Value>> {
    let sub = as_int(p.required(0x02)?)?;
    let protocol = p.get(0x01).map(PinProtocol::from_value).transpose()?;
    let protocol = || protocol.ok_or(Status::MISSING_PARAMETER);
    let bytes = |k| p.required(k).and_then(as_bytes);
    match sub {
        GET_PIN_RETRIES => Ok(Some(int_map(vec![(3, int(auth.pin().retries().into()))]))),
        GET_KEY_AGREEMENT => {
            protocol()?;
            let key = auth.pin().key_agreement().cose_public_key();
            Ok(Some(int_map(vec![(1, key)])))
        }
        SET_PIN => {
            let (protocol, param, new_pin_enc) = (protocol()?, bytes(4)?, bytes(5)?);
            let mut pin = auth.pin();
            if pin.is_set() {
                return Err(Status::NOT_ALLOWED);
            }
            let shared = pin
                .key_agreement()
                .shared_secret(protocol, p.required(3)?)?;
            if !shared.verify(new_pin_enc, param) {
                return Err(Status::PIN_AUTH_INVALID);
            }
            pin.set_new_pin(&shared, new_pin_enc)?;
            Ok(None)
        }
        CHANGE_PIN => {
            let protocol = protocol()?;
            let (param, new_pin_enc, pin_hash_enc) = (bytes(4)?, bytes(5)?, bytes(6)?);
            let mut pin = auth.pin();
            if !pin.is_set() {
                return Err(Status::PIN_NOT_SET);
            }
            if pin.retries() == 0 {
                return Err(Status::PIN_BLOCKED);
            }
            let shared = pin
                .key_agreement()
                .shared_secret(protocol, p.required(3)?)?;
            if !shared.verify(&[new_pin_enc, pin_hash_enc].concat(), param) {
                return Err(Status::PIN_AUTH_INVALID);
            }
            pin.check_pin(&shared, pin_hash_enc)?;
            pin.set_new_pin(&shared, new_pin_enc)?;
            Ok(None)
        }
        GET_PIN_TOKEN | GET_TOKEN_USING_PIN => {
            let (protocol, pin_hash_enc) = (protocol()?, bytes(6)?);
            let (permissions, rp_id) = if sub == GET_PIN_TOKEN {
                if p.get(0x09).is_some() || p.get(0x0A).is_some() {
                    return Err(Status::INVALID_PARAMETER);
                }
                (PERMISSION_MC | PERMISSION_GA, None)
            } else {
                permissions(p)?
            };
            let mut pin = auth.pin();
            if !pin.is_set() {
                return Err(Status::PIN_NOT_SET);
            }
            let shared = pin
                .key_agreement()
                .shared_secret(protocol, p.required(3)?)?;
            pin.check_pin(&shared, pin_hash_enc)?;
            Ok(Some(pin.issue_token(&shared, permissions, rp_id, false)))
        }
        GET_TOKEN_USING_UV if auth.options.built_in_uv => {
            let protocol = protocol()?;
            let (permissions, rp_id) = permissions(p)?;
            let shared = auth
                .pin()
                .key_agreement()
                .shared_secret(protocol, p.required(3)?)?;
            auth.require_touch(ctx, "verify you on the security key")?;
            Ok(Some(auth.pin().issue_token(
                &shared,
                permissions,
                rp_id,
                true,
            )))
        }
        GET_UV_RETRIES if auth.options.built_in_uv => {
            Ok(Some(int_map(vec![(5, int(MAX_PIN_RETRIES.into()))])))
        }
        _ => Err(Status::INVALID_SUBCOMMAND),
    }
}

/// The permissions (0x09, required, only mc and ga are supported) and the
/// optional RP id (0x0A) of a token request.
fn permissions(p: &Params) -> CtapResult<(u8, Option<String>)> {
    let permissions = as_int(p.required(0x09)?)?;
    if permissions <= 0 || permissions > 0xFF {
        return Err(Status::INVALID_PARAMETER);
    }
    if permissions & !i64::from(PERMISSION_MC | PERMISSION_GA) != 0 {
        return Err(Status::UNAUTHORIZED_PERMISSION);
    }
    let rp_id = p.get(0x0A).map(as_text).transpose()?.map(str::to_owned);
    Ok((permissions as u8, rp_id))
}
