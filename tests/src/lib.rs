//! touchgate end-to-end test support: the emulated USB security key
//! ([`ctap`]), the gcloud harness ([`gcloud`]), and the Google emulator
//! (package `touchgate-emulator`, re-exported as [`emulator`]).
//!
//! # Layout
//!
//! - `src/` (this library): [`ctap`] — the soft key's CTAP2 authenticator
//!   behind a real CTAPHID transport and the LD_PRELOAD interposer that lets
//!   hidapi open it; [`gcloud`] — the real gcloud, isolated.
//! - `src/bin/`: `touchgate-ctaphid-device` (the emulated key as a process),
//!   `touchgate-bench` (with `src/bench/`), `touchgate-ctap-probe` (the real
//!   ctap-hid-fido2 against one key), `touchgate-impostor` (another user's
//!   programs, for the uid tests).
//! - `tests/`: three test binaries, each a `main.rs` with one module per
//!   subject — `e2e` (the agent, CLI and shim against the emulator), `hid`
//!   (the agent over the emulated USB key), `clients` (real gcloud, kubectl,
//!   docker, Python and Node, packaging and the manifests); `common/` and
//!   `shim_common/` are the helpers they share.
//! - `emulator/`: the Google emulator, a package of its own.
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod ctap;
pub mod gcloud;

/// The Google emulator (package `touchgate-emulator`), under the name the tests use.
pub use touchgate_emulator as emulator;

pub use emulator::{CallKind, CallRecord, Emulator, EmulatorClient, EmulatorHandle, EmulatorState};
