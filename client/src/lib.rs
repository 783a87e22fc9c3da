//! touchgate: the wire protocol between clients and `touchgate-agent`, the
//! client library that speaks it, and the contracts the three binaries share:
//! the config file's tables ([`config`], [`duration`]), Google's default
//! endpoints ([`google`]), the shim's address and ADC file ([`shim`]) and the
//! one-line text helper ([`text`]). The `touchgate` command is the
//! `touchgate-cli` package; this library needs none of its crates.
//!
//! # Layout
//!
//! - The wire: [`protocol`] (the typed requests and replies), [`frame`]
//!   (length-prefixed postcard frames), [`secret`] (a string that travels but
//!   never prints).
//! - The client: [`client`] (connect, hello, ask), [`agent_socket`] (which
//!   socket a client may talk to, checked before a byte is sent), [`paths`]
//!   (where the files are), [`exit`] (exit codes).
//! - Contracts the binaries share: [`config`] and [`duration`] (the config
//!   file), [`google`] (endpoints and scopes), [`shim`] (the shim's address and
//!   ADC file), [`text`] and [`quote`](mod@quote) (one-line text from elsewhere).
//! - Naming callers, for the agent and the shim: [`process`], [`tcp_owner`],
//!   [`lsof`], [`refusals`], [`hidraw`]; [`sync`] (locks that outlive a panic).
//! - Test support, only with the `testing` feature: `alloc_count` (a
//!   counting allocator).
//!
//! ```no_run
//! # async fn f() -> Result<(), touchgate::ClientError> {
//! let mut agent = touchgate::Client::connect_default().await?;
//! let tok = agent.get_token(Some("inference"), &[], Default::default()).await?;
//! println!("valid until {}", tok.expires_at);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod agent_socket;
#[cfg(any(test, feature = "testing"))]
pub mod alloc_count;
pub mod client;
pub mod config;
pub mod duration;
pub mod exit;
pub mod frame;
pub mod google;
pub mod hidraw;
pub mod kube;
pub mod lsof;
pub mod paths;
pub mod process;
pub mod protocol;
pub mod quote;
pub mod refusals;
pub mod secret;
pub mod shim;
pub mod sync;
pub mod tcp_owner;
pub mod text;

pub use client::{Client, ClientError, HelloReply};
pub use exit::Exit;
pub use protocol::*;
pub use quote::quote;
pub use secret::Secret;
