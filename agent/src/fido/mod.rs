//! The FIDO2 side: the security key seen by the agent ([`key`]: the trait,
//! USB keys, the software key), the PIN dialog ([`pin`]), and checking what
//! a key answers ([`verify`]: signatures, challenges, flags, counters;
//! [`attestation`]: packed attestation chains).
//!
//! Invariant: a leaf. Nothing here imports the service, the daemon or the
//! audit log, so a key's answers are checked the same way wherever they are
//! used.

pub mod attestation;
pub(crate) mod ids;
pub mod key;
pub mod pin;
pub mod verify;
