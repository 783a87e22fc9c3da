//! touchgate: the wire protocol between clients and `touchgate-agent`, the
//! client library that speaks it, and the contracts the three binaries share:
//! the config file's tables ([`config`], [`duration`]), Google's default
//! endpoints ([`google`]), the shim's address and ADC file ([`shim`]) and the
//! one-line text helper ([`text`]). The `touchgate` command is the
//! `touchgate-cli` package; this library needs none of its crates.
//!
//! ```no_run
//! # async fn f() -> Result<(), touchgate::ClientError> {
//! let mut agent = touchgate::Client::connect_default().await?;
//! let tok = agent.get_token(Some("inference"), &[], Default::default()).await?;
//! println!("valid until {}", tok.expires_at);
//! # Ok(()) }
//! ```
#![deny(unsafe_code)]

pub mod agent_socket;
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
