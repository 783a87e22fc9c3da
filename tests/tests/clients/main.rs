//! The clients of the agent, as one test binary: the shim (metadata server,
//! limits, docker/kubectl helpers) with the real gcloud and Python clients,
//! `touchgate setup` / `exec`, `doctor`, and the install scripts and manifest
//! that ship them.
//!
//! Invariants: no test changes its own process's environment or working
//! directory (they are set on the child processes it starts), because the
//! tests of all these modules share one process. The shared harnesses are
//! `common` and `shim_common` (tests/tests/), each declared once here.

// The harnesses are shared by the test binaries of this package (e2e, hid,
// clients). They are test code (they panic on a failure) that the library, linked
// into the emulator and bench programs, should not carry; so they stay beside the
// tests and each binary declares them once, by path inside this package.
#[path = "../common/mod.rs"]
mod common;
#[path = "../shim_common/mod.rs"]
mod shim_common;

mod doctor_e2e;
mod install;
mod kubectl_window;
mod manifest;
mod setup_exec;
mod shim_gcloud;
mod shim_helpers;
mod shim_id_tokens;
mod shim_limits;
mod shim_metadata;
mod shim_node;
mod shim_python;
