//! touchgate end-to-end test support: the emulated authenticator (`ctap`), the
//! gcloud harness, and the Google emulator (package `touchgate-emulator`,
//! re-exported as [`emulator`]).
#![deny(unsafe_code)]

pub mod ctap;
pub mod gcloud;

/// The Google emulator (package `touchgate-emulator`), under the name the tests use.
pub use touchgate_emulator as emulator;

pub use emulator::{CallKind, CallRecord, Emulator, EmulatorClient, EmulatorHandle, EmulatorState};
