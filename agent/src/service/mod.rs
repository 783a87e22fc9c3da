//! The agent's answers to requests: [`agent::Agent`] receives each request
//! from the daemon and dispatches it: tokens are issued in `issue` (one
//! flight per ask in `flights`), the key ceremonies run in `enrol` and
//! `ceremony`, approval windows and cached tokens live in `session`, the
//! lock in `lock`, each with its own private state. Every failure is an
//! [`error::AgentError`], made a wire reply at one point.
//!
//! Invariant: the service is called by [`crate::daemon`] and calls only the
//! leaves below it (policy, fido, vault, audit, upstream, notify, caller,
//! clock); none of those imports the service.

pub mod agent;
mod ceremony;
mod enrol;
pub mod error;
mod flights;
mod issue;
pub(crate) mod lock;
mod session;
