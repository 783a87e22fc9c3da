//! The CTAP2 command layer of the emulated security key (feature `ctap`): an
//! [`Authenticator`] answering CTAPHID_CBOR requests the way a FIDO2 key
//! does, as much as ctap-hid-fido2 3.6.1 and touchgate use, on top of a
//! [`SoftKey`] (so credentials, counter, signatures and hmac-secret outputs
//! are the soft key's own: the same credential answers the same here as
//! through [`SoftKey::authenticate`]). A CTAPHID transport (the tests' USB
//! device) hands it each request with an [`OpContext`] through [`CborHandler`].
//!
//! Commands: makeCredential (0x01), getAssertion (0x02), getInfo (0x04),
//! clientPIN (0x06, protocols 1 and 2), reset (0x07), selection (0x0B);
//! getNextAssertion (0x08) is CTAP2_ERR_NOT_ALLOWED (credentials are never
//! discoverable), anything else CTAP1_ERR_INVALID_COMMAND. No input panics.
//!
//! User presence comes from the [`TouchSource`]; while it waits, KEEPALIVE
//! UPNEEDED goes out every 100 ms through [`OpContext::keepalive`], and
//! [`OpContext::cancel`] ends the wait with CTAP2_ERR_KEEPALIVE_CANCEL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ciborium::value::Value;

use crate::cbor::{encode, int, int_map, text, text_map};
use crate::touch::{CancelFlag, TouchSource};
use crate::SoftKey;

mod client_pin;
mod get_assertion;
mod make_credential;
pub mod params;
mod protocol;
mod status;
mod touch;

pub use status::{CtapResult, Status};

/// CTAPHID_KEEPALIVE status codes.
pub const KEEPALIVE_PROCESSING: u8 = 1;
pub const KEEPALIVE_UPNEEDED: u8 = 2;

/// What the transport gives the authenticator for one CBOR request.
pub struct OpContext {
    /// Set when the host sends CTAPHID_CANCEL on this channel (or the device is unplugged).
    pub cancel: Arc<CancelFlag>,
    /// Ask the transport to send a KEEPALIVE with this status now (the transport also sends
    /// them on its own every ~100 ms while a request is being processed).
    pub keepalive: Box<dyn Fn(u8) + Send + Sync>,
}

/// The CTAP2 command layer behind a CTAPHID transport.
pub trait CborHandler: Send + Sync + 'static {
    /// `request` is the CTAPHID_CBOR payload: command byte ‖ CBOR parameters. Returns the
    /// response payload: status byte ‖ CBOR (CTAP2_OK = 0x00, CTAP2_ERR_KEEPALIVE_CANCEL = 0x2D, …).
    fn handle_cbor(&self, request: &[u8], ctx: &OpContext) -> Vec<u8>;
    /// CTAPHID_WINK: blink (no-op is fine).
    fn wink(&self) {}
}

use client_pin::PinState;
use params::{as_bytes, Options, Params};
use protocol::PinProtocol;

/// The attestation a new credential gets.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum Attestation {
    /// `packed` self attestation: `{alg: -7, sig}` by the credential key.
    #[default]
    SelfPacked,
    /// `none`: an empty statement.
    None,
    /// `packed` full attestation, as a vendor-attested key answers:
    /// `{alg: -7, sig, x5c: chain}`, `sig` by `leaf_key` (the key of
    /// `chain[0]`). See `certs::attestation_chain` (feature `certs`).
    Certificate {
        /// DER certificates, leaf first (the root is normally left out).
        chain: Vec<Vec<u8>>,
        leaf_key: p256::ecdsa::SigningKey,
    },
}

impl std::fmt::Debug for Attestation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Attestation::SelfPacked => f.write_str("SelfPacked"),
            Attestation::None => f.write_str("None"),
            Attestation::Certificate { chain, .. } => f
                .debug_struct("Certificate")
                .field("chain_len", &chain.len())
                .finish_non_exhaustive(),
        }
    }
}

/// How the emulated key presents itself.
#[derive(Clone)]
pub struct AuthenticatorOptions {
    /// A PIN already set on the key; `None`: no PIN (clientPin: false).
    pub pin: Option<String>,
    /// The AAGUID in getInfo and in new credentials; `None`: the soft key's.
    pub aaguid: Option<[u8; 16]>,
    /// Offer hmac-secret. When false, getInfo omits it and requests for it
    /// are ignored (no output), like a key without the extension.
    pub hmac_secret: bool,
    /// Built-in user verification (like a fingerprint key): the `uv`
    /// option is honoured with a touch, getInfo says `uv: true`, and
    /// getPinUvAuthTokenUsingUvWithPermissions works.
    pub built_in_uv: bool,
    pub attestation: Attestation,
    /// Misbehave: leave the UV flag out of makeCredential's authenticator
    /// data even when the user was verified (signed as sent).
    pub omit_uv_flag_in_attestation: bool,
    /// Misbehave: the packed statement names this `alg` (the signature stays ES256).
    pub misstate_packed_alg: Option<i64>,
    /// Misbehave: write one key of the makeCredential response twice, with the
    /// same value: a top-level member by its name (`"fmt"`, `"authData"`,
    /// `"attStmt"`) or a member of the packed statement (`"alg"`, `"sig"`, `"x5c"`).
    pub duplicate_response_key: Option<&'static str>,
    /// Misbehave: write authData (key 2) of getAssertion responses twice.
    pub duplicate_assertion_auth_data: bool,
    /// How long a touch is waited for before CTAP2_ERR_USER_ACTION_TIMEOUT
    /// (ctap-hid-fido2 itself gives up after ~50 s).
    pub touch_timeout: Duration,
}

impl Default for AuthenticatorOptions {
    fn default() -> Self {
        AuthenticatorOptions {
            pin: None,
            aaguid: None,
            hmac_secret: true,
            built_in_uv: false,
            attestation: Attestation::SelfPacked,
            omit_uv_flag_in_attestation: false,
            misstate_packed_alg: None,
            duplicate_response_key: None,
            duplicate_assertion_auth_data: false,
            touch_timeout: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for AuthenticatorOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatorOptions")
            .field("pin", &self.pin.as_ref().map(|_| "[REDACTED]"))
            .field("aaguid", &self.aaguid.map(hex::encode))
            .field("hmac_secret", &self.hmac_secret)
            .field("built_in_uv", &self.built_in_uv)
            .field("attestation", &self.attestation)
            .field(
                "omit_uv_flag_in_attestation",
                &self.omit_uv_flag_in_attestation,
            )
            .field("misstate_packed_alg", &self.misstate_packed_alg)
            .field("duplicate_response_key", &self.duplicate_response_key)
            .field(
                "duplicate_assertion_auth_data",
                &self.duplicate_assertion_auth_data,
            )
            .field("touch_timeout", &self.touch_timeout)
            .finish()
    }
}

/// The emulated key's CTAP2 layer. See the module docs.
pub struct Authenticator {
    key: Arc<SoftKey>,
    touch: Arc<dyn TouchSource>,
    options: AuthenticatorOptions,
    /// `options.aaguid`, or the soft key's.
    aaguid: [u8; 16],
    pin: Mutex<PinState>,
    touches: AtomicU64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("key", &self.key)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

const COMMAND_MAKE_CREDENTIAL: u8 = 0x01;
const COMMAND_GET_ASSERTION: u8 = 0x02;
const COMMAND_GET_INFO: u8 = 0x04;
const COMMAND_CLIENT_PIN: u8 = 0x06;
const COMMAND_RESET: u8 = 0x07;
const COMMAND_GET_NEXT_ASSERTION: u8 = 0x08;
const COMMAND_SELECTION: u8 = 0x0B;

impl Authenticator {
    /// A key "plugged in" (powered up) with `options`. Touches come from
    /// `touch`, not from the soft key's own touch source.
    pub fn new(
        key: Arc<SoftKey>,
        touch: Arc<dyn TouchSource>,
        options: AuthenticatorOptions,
    ) -> Authenticator {
        let pin = Mutex::new(PinState::new(options.pin.as_deref()));
        let mut options = options;
        options.pin = None; // kept only as a hash, in `pin`
        let aaguid = options.aaguid.unwrap_or_else(|| key.aaguid());
        Authenticator {
            key,
            touch,
            options,
            aaguid,
            pin,
            touches: AtomicU64::new(0),
        }
    }

    /// The soft key behind this authenticator.
    pub fn key(&self) -> &Arc<SoftKey> {
        &self.key
    }

    /// **Test only**: set the signature counter (e.g. back, to simulate a
    /// cloned key).
    #[cfg(any(test, feature = "testing"))]
    pub fn set_sign_count(&self, count: u32) -> Result<(), crate::Error> {
        self.key.set_sign_count(count)
    }

    /// **Test only**: PIN retries left.
    pub fn pin_retries(&self) -> u8 {
        self.pin().retries()
    }

    /// **Test only**: touches asked for so far (through this authenticator).
    pub fn touches_requested(&self) -> u64 {
        self.touches.load(Ordering::SeqCst)
    }

    /// **Test only**: what unplugging and plugging the key in does: clears
    /// the 3-wrong-PINs block, new key agreement key, no token.
    pub fn power_cycle(&self) {
        self.pin().power_cycle();
    }

    fn pin(&self) -> MutexGuard<'_, PinState> {
        self.pin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A PIN is set or built-in UV is on.
    fn protected(&self) -> bool {
        self.options.built_in_uv || self.pin().is_set()
    }

    /// Wait for a touch (counted); see [`touch::wait_for_touch`].
    fn require_touch(&self, ctx: &OpContext, prompt: &str) -> CtapResult<()> {
        self.touches.fetch_add(1, Ordering::SeqCst);
        touch::wait_for_touch(&*self.touch, prompt, ctx, self.options.touch_timeout)
    }

    fn dispatch(&self, command: u8, body: &[u8], ctx: &OpContext) -> CtapResult<Option<Value>> {
        match command {
            COMMAND_MAKE_CREDENTIAL => {
                make_credential::handle(self, &Params::parse(body)?, ctx).map(Some)
            }
            COMMAND_GET_ASSERTION => {
                get_assertion::handle(self, &Params::parse(body)?, ctx).map(Some)
            }
            COMMAND_GET_INFO => Ok(Some(self.get_info())),
            COMMAND_CLIENT_PIN => client_pin::handle(self, &Params::parse(body)?, ctx),
            COMMAND_RESET => {
                self.require_touch(ctx, "reset the security key")?;
                self.pin().reset();
                Ok(None)
            }
            COMMAND_GET_NEXT_ASSERTION => Err(Status::NOT_ALLOWED),
            COMMAND_SELECTION => self
                .require_touch(ctx, "select this security key")
                .map(|()| None),
            _ => Err(Status::INVALID_COMMAND),
        }
    }

    /// authenticatorGetInfo.
    fn get_info(&self) -> Value {
        let mut extensions = Vec::new();
        if self.options.hmac_secret {
            extensions.push(text("hmac-secret"));
        }
        extensions.push(text("credProtect"));
        // Canonical order: shorter keys first, then bytewise.
        let mut options = vec![("rk", Value::Bool(false)), ("up", Value::Bool(true))];
        if self.options.built_in_uv {
            options.push(("uv", Value::Bool(true)));
        }
        options.push(("clientPin", Value::Bool(self.pin().is_set())));
        options.push(("pinUvAuthToken", Value::Bool(true)));
        int_map(vec![
            (0x01, Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")])),
            (0x02, Value::Array(extensions)),
            (0x03, Value::Bytes(self.aaguid.to_vec())),
            (0x04, text_map(options)),
            (0x05, int(1200)),
            (0x06, Value::Array(vec![int(2), int(1)])),
        ])
    }

    /// Check the user: the request's pinUvAuthParam (at `param_key`, protocol
    /// at `param_key + 1`) against the token, or the `uv` option with
    /// built-in UV. `uv_required`: without either, a protected key answers
    /// CTAP2_ERR_PUAT_REQUIRED (makeCredential).
    fn verify_user(
        &self,
        ctx: &OpContext,
        p: &Params,
        param_key: i64,
        check: UvCheck<'_>,
    ) -> CtapResult<Verification> {
        let param = p.get(param_key).map(as_bytes).transpose()?;
        let builtin = check.options.uv == Some(true) && param.is_none();
        if builtin && !self.options.built_in_uv {
            return Err(Status::INVALID_OPTION);
        }
        let Some(param) = param else {
            if !builtin && check.uv_required && self.protected() {
                return Err(Status::PUAT_REQUIRED);
            }
            return Ok(Verification {
                uv: builtin,
                builtin_uv: builtin,
                ..Verification::default()
            });
        };
        let protocol = PinProtocol::from_value(p.required(param_key + 1)?)?;
        if param.is_empty() {
            // A platform asking the user to pick a key (CTAP 2.1 §6.1.2 step 1).
            self.require_touch(ctx, "select this security key")?;
            return Err(if self.pin().is_set() {
                Status::PIN_INVALID
            } else {
                Status::PIN_NOT_SET
            });
        }
        if !self.protected() {
            return Err(Status::PIN_NOT_SET);
        }
        let token_up = self.pin().verify_token(
            protocol,
            param,
            check.client_data_hash,
            check.permission,
            check.rp_id,
        )?;
        Ok(Verification {
            uv: true,
            builtin_uv: false,
            token: true,
            token_up,
        })
    }
}

/// What [`Authenticator::verify_user`] checks against.
struct UvCheck<'a> {
    options: Options,
    client_data_hash: &'a [u8; 32],
    rp_id: &'a str,
    permission: u8,
    uv_required: bool,
}

/// How the user was verified for one request.
#[derive(Debug, Default, Clone, Copy)]
struct Verification {
    /// User verified (token or built-in): the UV flag and the UV CredRandom.
    uv: bool,
    /// Verified by built-in UV: a touch is still to come.
    builtin_uv: bool,
    /// A pinUvAuthToken was used (consume it once presence is collected).
    token: bool,
    /// The token also stands for user presence (got through built-in UV).
    token_up: bool,
}

impl CborHandler for Authenticator {
    fn handle_cbor(&self, request: &[u8], ctx: &OpContext) -> Vec<u8> {
        let result = match request.split_first() {
            Some((&command, body)) => self.dispatch(command, body, ctx),
            None => Err(Status::INVALID_COMMAND),
        };
        let command = request.first().copied().unwrap_or_default();
        match result {
            Ok(value) => {
                tracing::debug!(command, "CTAP2 command done");
                let mut out = vec![0x00];
                if let Some(v) = value {
                    out.extend_from_slice(&encode(&v));
                }
                out
            }
            Err(Status(code)) => {
                tracing::debug!(command, status = code, "CTAP2 command failed");
                vec![code]
            }
        }
    }
}
