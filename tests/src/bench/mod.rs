//! The sections of `touchgate-bench` (see `src/bin/bench.rs`).

pub mod agent;
pub mod gcloud;
pub mod python;
pub mod stats;
pub mod world;
