//! touchgate-agent: a per-user daemon that keeps a FIDO2 security-key session
//! and hands out short-lived Google Cloud access tokens over a Unix socket,
//! each only after the touch the user's policy asks for.
//!
//! # Layout
//!
//! Modules are arranged by role and import one way only, from the daemon
//! down to the leaves (a test in `agent/tests/` fails on any import cycle):
//!
//! - [`daemon`] — the process: socket, admission, activation, hardening,
//!   session lock, assembly from config.
//! - `service` (private) — the answers to requests: [`Agent`] dispatches
//!   each one to issuance, the key ceremonies, the lock, approval windows and
//!   the token cache; every failure is an [`AgentError`], made a wire reply
//!   at one point.
//! - leaves: [`policy`] (who may have which token, whose window a touch
//!   opens), `fido` (the security key and checking its answers; re-exported
//!   as [`key`], [`verify`], [`attestation`]), [`vault`] (sealed upstream
//!   credentials, the keys' signature counters), [`audit`] (the signed
//!   audit log), [`upstream`] (Google), [`notify`], [`caller`], [`clock`],
//!   [`config`], [`state_dir`].
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod audit;
pub mod caller;
pub mod clock;
pub mod config;
pub mod daemon;
mod fido;
pub mod notify;
pub mod policy;
mod service;
pub mod state_dir;
pub mod upstream;
pub mod vault;

pub use daemon::server;
pub use fido::{attestation, key, pin, verify};
pub use service::agent::{Agent, StatePaths};
pub use service::error::AgentError;
