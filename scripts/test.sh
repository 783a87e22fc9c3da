#!/usr/bin/env bash
# The test command (the same as CI): formatting, lints, every binary, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
# What the build and the tests need, installed only when missing (says what and
# why), and the Python venv and Node modules of the end-to-end tests (quick when there).
./scripts/system-deps.sh test
./scripts/python-venv.sh
./scripts/node-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The macOS code paths compile and are lint-clean (checked, not run: no Mac here).
./scripts/check-macos.sh
# End-to-end tests run the real binaries of every crate: build them all first.
cargo build --workspace --bins
# tests/tests/clients/install.rs installs and packages a release build (scripts/install.sh,
# scripts/package.sh): build it once here, so those scripts find it up to date.
cargo build --release --locked -p touchgate-cli -p touchgate-agent -p touchgate-shim --bins
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
