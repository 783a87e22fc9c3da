//! The sections of `touchgate-bench` (see `src/bin/bench.rs`).

pub mod agent;
pub mod cli;
pub mod gcloud;
pub mod goals;
pub mod hot;
pub mod metadata;
pub mod python;
pub mod stats;
pub mod world;
