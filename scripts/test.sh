#!/usr/bin/env bash
# The test command (the same as CI): formatting, lints, every binary, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# End-to-end tests run the real binaries of every crate: build them all first.
cargo build --workspace --bins
cargo test --workspace
