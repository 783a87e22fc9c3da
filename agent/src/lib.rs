//! touchgate-agent: a per-user daemon that keeps a FIDO2 security-key session
//! and hands out short-lived Google Cloud access tokens over a Unix socket,
//! each only after the touch the user's policy asks for.
#![deny(unsafe_code)]

pub mod activation;
pub mod admission;
pub mod agent;
pub mod attestation;
pub mod audit;
pub mod caller;
pub mod ceremony;
pub mod clock;
pub mod config;
pub mod enrol;
pub mod harden;
pub mod issue;
pub mod key;
pub mod notify;
pub mod pin;
pub mod policy;
pub mod run;
pub mod server;
pub mod session;
pub mod session_lock;
pub mod state_dir;
pub mod subject;
pub mod upstream;
pub mod vault;
pub mod verify;

pub use agent::{Agent, StatePaths};
