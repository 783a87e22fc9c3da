//! touchgate end-to-end test support: the Google emulator.
#![deny(unsafe_code)]

pub mod ctap;
pub mod emulator;
pub mod gcloud;

pub use emulator::{CallKind, CallRecord, Emulator, EmulatorClient, EmulatorHandle, EmulatorState};
