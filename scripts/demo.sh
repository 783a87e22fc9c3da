#!/usr/bin/env bash
# The demo: build everything, then run `touchgate demo` (pass --auto-touch for a non-interactive run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins --quiet
exec ./target/debug/touchgate demo "$@"
