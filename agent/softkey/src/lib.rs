//! touchgate-softkey: a software FIDO2 authenticator, the test and demo
//! security key of touchgate.
//!
//! **This is not a security key.** Its master secret sits in a file on disk,
//! so anyone who can read that file as you can make every credential it ever
//! made answer without a touch. It exists so touchgate can be developed,
//! tested and demonstrated on machines without FIDO2 hardware. Never use it
//! to protect real credentials.
//!
//! What it does follow from CTAP2, so the agent sees exactly what a hardware
//! key would give it: stateless credentials derived from one master secret,
//! real authenticator data, packed attestation, hmac-secret with separate
//! outputs with and without user verification, credProtect, one global
//! signature counter persisted on every use, and user presence as an
//! explicit event that can be cancelled.
//!
//! # Layout
//!
//! - [`key`] — [`SoftKey`]: the state under one mutex, the touch, and the two
//!   ceremonies as the agent's `soft` backend asks for them
//!   ([`SoftKey::register`], [`SoftKey::authenticate`]).
//! - [`touch`] — where touches come from ([`TouchSource`], [`CancelFlag`],
//!   the terminal prompt and the fixed answers).
//! - [`auth_data`] — authenticator data, built in one function for both
//!   front ends; its [`flags`].
//! - `credential` (private) — credential ids, keys and hmac-secret outputs
//!   derived from the master secret; `state` (private) — the state file;
//!   `cbor` (private) — writing CBOR with ciborium.
//! - `ctap` (feature `ctap`) — the CTAP2 command layer for an emulated USB
//!   key: makeCredential, getAssertion, getInfo, clientPIN, packed self, none
//!   or certificate attestation, on the same [`SoftKey`].
//! - `certs` (feature `certs`) — the attestation certificate builder.
//!
//! Feature `testing` adds test knobs (`touch::ScriptedTouch`,
//! `SoftKey::set_sign_count`); nothing shipped turns it on. The crate does
//! not depend on the agent: the agent adapts [`SoftKey`] to its own
//! `SecurityKey` and writes the state file for it ([`WriteFile`]).
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod auth_data;
mod cbor;
#[cfg(feature = "certs")]
pub mod certs;
mod credential;
#[cfg(feature = "ctap")]
pub mod ctap;
pub mod key;
mod state;
pub mod touch;

pub use auth_data::flags;
pub use credential::CREDENTIAL_ID_LEN;
pub use key::{Authenticated, Authentication, Error, Registered, Registration, SoftKey, WriteFile};
pub use state::COUNTER_BLOCK;
#[cfg(any(test, feature = "testing"))]
pub use touch::ScriptedTouch;
pub use touch::{
    touch_source, AutoTouch, CancelFlag, DenyTouch, NeverTouch, PromptTouch, TouchMode,
    TouchOutcome, TouchSource,
};

/// The AAGUID a new soft key gets: "touchgate soft key" (not a registered
/// model, so an AAGUID allow-list can recognise, and refuse, the soft key).
pub const SOFT_AAGUID: [u8; 16] = *b"touchgate-soft\x00\x01";
