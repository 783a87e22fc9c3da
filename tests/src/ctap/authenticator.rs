//! The CTAP2 command layer of the emulated security key: the
//! `touchgate-softkey` authenticator (its `ctap` module), tested here with
//! ctap-hid-fido2's own request builders and response parsers, and against
//! the agent's attestation checks.

pub use touchgate_softkey::ctap::{
    params, Attestation, Authenticator, AuthenticatorOptions, CtapResult, Status,
};

#[cfg(test)]
mod tests;
