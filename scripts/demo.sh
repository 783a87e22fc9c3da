#!/usr/bin/env bash
# The demo: build everything, then run `touchgate demo` (pass --auto-touch for a non-interactive run).
set -euo pipefail
cd "$(dirname "$0")/.."
# libudev and curl, installed only when missing (says what and why).
./scripts/system-deps.sh demo
cargo build --workspace --bins --quiet
exec ./target/debug/touchgate demo "$@"
