//! The agent's answers to requests: [`agent::Agent`] receives each request
//! from the daemon, issues tokens ([`issue`]), runs the key ceremonies
//! ([`enrol`], [`ceremony`]) and keeps approval windows and cached tokens
//! ([`session`]).
//!
//! Invariant: the service is called by [`crate::daemon`] and calls only the
//! leaves below it (policy, fido, vault, audit, upstream, notify, caller,
//! clock); none of those imports the service.

pub mod agent;
mod ceremony;
mod enrol;
pub mod error;
mod issue;
pub(crate) mod lock;
mod session;
