//! touchgate-agent: a per-user daemon that keeps a FIDO2 security-key session
//! and hands out short-lived Google Cloud access tokens over a Unix socket,
//! each only after the touch the user's policy asks for.
#![deny(unsafe_code)]

pub mod clock;
pub mod key;
pub mod upstream;
pub mod vault;
pub mod verify;
