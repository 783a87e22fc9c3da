//! The CTAPHID tests, as one test binary: the emulated key reached through the
//! real ctap-hid-fido2 / hidapi (the hidraw interposer in `LD_PRELOAD` of the
//! child processes), and the agent with `backend = "hid"` over it.
//!
//! Invariants: `LD_PRELOAD` and every other variable is set on child processes,
//! never on this one (its tests share one process). The shared harness is
//! `common` (tests/tests/common/), declared once here.

// The harness is shared by the three test binaries of this package (e2e, hid,
// clients). It is test code (it panics on a failure) that the library, linked
// into the emulator and bench programs, should not carry; so it stays beside the
// tests and each binary declares it once, by path inside this package.
#[path = "../common/mod.rs"]
mod common;

mod ctaphid;
mod hid_attestation;
mod hid_e2e;
mod hid_keys;
