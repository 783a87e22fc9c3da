//! The daemon: everything about being a long-running process that is not an
//! answer to a request — the socket and its admission caps, socket
//! activation, process hardening, locking when the session locks or the
//! machine sleeps, and assembling a real agent from config.
//!
//! Invariant: arrows point down from here. The daemon calls into
//! the service (`crate::service`); nothing below imports the daemon.

pub mod activation;
pub mod admission;
pub mod harden;
pub mod run;
pub mod server;
pub mod session_lock;
