//! The security key seen by the agent.
//!
//! [`SecurityKey`] is shaped after ctap-hid-fido2: every call is blocking (the
//! agent runs it on a blocking thread), may wait for a touch, may need a PIN,
//! and can be cancelled from another thread with [`SecurityKey::cancel`]. USB
//! security keys are [`hid`] (ctap-hid-fido2; the default backend); the
//! software key in [`soft`] (the `touchgate-softkey` authenticator) follows
//! CTAP2 for real and serves the demo and the tests (its secret lies in plain
//! text, so it is used only when named).

use secrecy::SecretString;
use zeroize::Zeroizing;

pub mod ctaphid;
pub mod hid;
pub mod soft;

/// The relying-party id every touchgate credential is bound to.
pub const RP_ID: &str = "touchgate";

/// authenticatorMakeCredential, as much of it as touchgate uses.
pub struct MakeCredentialRequest {
    pub rp_id: String,
    /// The challenge; the key signs over clientDataHash = SHA-256(challenge), as
    /// ctap-hid-fido2 sends it. See [`MakeCredentialRequest::client_data_hash`].
    pub challenge: [u8; 32],
    pub user_id: Vec<u8>,
    pub user_name: String,
    /// Ask for the hmac-secret extension.
    pub hmac_secret: bool,
    /// Require user verification (PIN or built-in).
    pub uv: bool,
    pub pin: Option<SecretString>,
    /// Credentials already enrolled: a key holding one of them must not be used.
    pub exclude: Vec<Vec<u8>>,
}

impl MakeCredentialRequest {
    /// SHA-256(challenge): what the key signs over, after the authenticator data.
    pub fn client_data_hash(&self) -> [u8; 32] {
        client_data_hash(&self.challenge)
    }
}

/// SHA-256 of a challenge: the clientDataHash ctap-hid-fido2 sends for it.
pub fn client_data_hash(challenge: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(challenge).into()
}

/// What makeCredential returns.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub credential_id: Vec<u8>,
    /// Uncompressed SEC1 point of the credential's P-256 public key (65 bytes).
    pub public_key_sec1: Vec<u8>,
    pub aaguid: [u8; 16],
    /// The raw authenticator data (with attested credential data).
    pub auth_data: Vec<u8>,
    pub sign_count: u32,
    /// `packed`, `none`, …
    pub format: String,
    /// Attestation signature over authData‖clientDataHash (empty for `none`).
    pub attestation_signature: Vec<u8>,
    /// The packed statement's `alg` (COSE algorithm; `None` when the format has none).
    pub statement_alg: Option<i64>,
    /// DER certificates of the attestation chain (empty for self / none attestation).
    pub x5c: Vec<Vec<u8>>,
    /// Whether the key accepted the hmac-secret extension for this credential.
    pub hmac_secret: bool,
}

/// authenticatorGetAssertion, as much of it as touchgate uses.
pub struct GetAssertionRequest {
    pub rp_id: String,
    /// The challenge; clientDataHash = SHA-256(challenge).
    pub challenge: [u8; 32],
    /// Credential ids that may answer.
    pub allow: Vec<Vec<u8>>,
    /// hmac-secret salt1; the output is `HMAC-SHA256(CredRandom, salt)`.
    pub hmac_salt: Option<[u8; 32]>,
    pub uv: bool,
    pub pin: Option<SecretString>,
    /// Require user presence (a touch). Only a silent probe sets this false.
    pub up: bool,
}

impl GetAssertionRequest {
    /// SHA-256(challenge): what the key signs over, after the authenticator data.
    pub fn client_data_hash(&self) -> [u8; 32] {
        client_data_hash(&self.challenge)
    }
}

/// What getAssertion returns.
pub struct Assertion {
    pub credential_id: Vec<u8>,
    /// rpIdHash(32) ‖ flags(1) ‖ signCount(4, big endian) ‖ \[extensions\].
    pub auth_data: Vec<u8>,
    /// DER-encoded ECDSA P-256 signature over authData ‖ clientDataHash.
    pub signature: Vec<u8>,
    /// Decrypted hmac-secret output for `hmac_salt`.
    pub hmac_secret: Option<Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion")
            .field("credential_id", &hex::encode(&self.credential_id))
            .field("auth_data_len", &self.auth_data.len())
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish()
    }
}

/// Flags in authenticator data (one definition, shared with the soft key
/// that writes them).
pub use touchgate_softkey::flags;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the touch was refused on the security key")]
    TouchDenied,
    #[error("the operation was cancelled on the security key")]
    Cancelled,
    #[error("the security key holds no touchgate credential it was asked for")]
    NoCredentials,
    #[error(
        "this security key is already enrolled with touchgate: plug in the key you want to add"
    )]
    Excluded,
    #[error("the security key needs its PIN")]
    PinRequired,
    #[error("wrong PIN for the security key ({retries} tries left)")]
    PinInvalid { retries: u32 },
    #[error("the security key's PIN is blocked: reset the key's PIN with its vendor tool")]
    PinBlocked,
    #[error("the security key {key} does not support {what}")]
    Unsupported { key: String, what: String },
    #[error("no security key found: plug in a FIDO2 security key; if one is plugged in, your user may not open it: {fix}", fix = touchgate::hidraw::UDEV_RULE_FIX)]
    NotFound,
    #[error("your user may not open the security key {path}: {fix}, or check `ls -l {path}`", fix = touchgate::hidraw::UDEV_RULE_FIX)]
    NoAccess { path: String },
    #[error("security key error: {0}")]
    Device(String),
}

/// A FIDO2 authenticator. Blocking; safe to call from several threads (the
/// implementation serialises access to the device); `cancel` may be called
/// from any thread while another call waits for a touch.
pub trait SecurityKey: Send + Sync {
    /// A human name for prompts, e.g. `soft key (/home/u/.local/state/touchgate/soft-key.json)`.
    fn name(&self) -> String;
    /// The backend kind: `soft` or `hid`.
    fn backend(&self) -> &'static str;
    fn make_credential(&self, req: &MakeCredentialRequest) -> Result<Attestation, KeyError>;
    fn get_assertion(&self, req: &GetAssertionRequest) -> Result<Assertion, KeyError>;
    /// Cancel the pending operation, if any (CTAPHID_CANCEL on hardware).
    fn cancel(&self);
    /// Whether a key is plugged in, when the backend can tell (cheaply, without
    /// talking to it); `None` when it cannot.
    fn present(&self) -> Option<bool> {
        None
    }
    /// The file holding this key's secret in plain text, for a key that has
    /// one (the software key); `None` for a real security key.
    fn plaintext_secret(&self) -> Option<std::path::PathBuf> {
        None
    }
}
