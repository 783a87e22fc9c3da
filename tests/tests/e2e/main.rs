//! End-to-end tests of the agent and the CLI, as one test binary: the real
//! `touchgate-agent` and `touchgate` (in-process or as the built programs), the
//! software key, the Google emulator on 127.0.0.1. One module per feature.
//!
//! Invariants: no test changes its own process's environment, working directory
//! or umask (those are set on the child processes it starts), because the tests
//! of all these modules share one process. The shared harness is `common`
//! (tests/tests/common/), declared once here.

// The harness is shared by the three test binaries of this package (e2e, hid,
// clients). It is test code (it panics on a failure) that the library, linked
// into the emulator and bench programs, should not carry; so it stays beside the
// tests and each binary declares it once, by path inside this package.
#[path = "../common/mod.rs"]
mod common;

mod agent_cli;
mod agent_e2e;
mod audit_e2e;
mod emulator;
mod id_tokens;
mod json_exit;
mod lock_e2e;
mod login;
mod memory_e2e;
mod notify_e2e;
mod policy_e2e;
mod profiles_vertex;
mod protocol_e2e;
mod reload_e2e;
mod service_units;
mod session_lock_e2e;
mod upstream_faults;
mod upstream_google;
