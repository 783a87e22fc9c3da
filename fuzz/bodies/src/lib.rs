//! The bodies of the fuzz targets, one module per target: each `run` takes the
//! fuzzer's bytes, drives the real parser or checker, and asserts what must
//! hold (panicking when it does not). The cargo-fuzz targets in `fuzz/` (a
//! nightly workspace of its own) call them, and so do this package's tests,
//! which replay every seed in `fuzz/corpus-seed/` on stable in the normal
//! `cargo test`, with the outcome each seed is kept for.
//!
//! # Layout
//!
//! - What touchgate's own side writes: [`frame`], [`config`], [`audit`], [`glob`].
//! - What a security key or a server sends: [`auth_data`], [`attestation`] and
//!   [`chain`] (both read an [`attestation_object`]), [`credential`],
//!   [`error_body`].
//! - [`seeds`]: the seed corpus of a target, for the tests.
#![forbid(unsafe_code)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod attestation;
pub mod attestation_object;
pub mod audit;
pub mod auth_data;
pub mod chain;
pub mod config;
pub mod credential;
pub mod error_body;
pub mod frame;
pub mod glob;
pub mod seeds;
