#!/usr/bin/env bash
# Build the bench and the binaries it runs (touchgate-agent, touchgate,
# touchgate-shim), in release by default, and run touchgate-bench with them.
#
#   scripts/bench.sh                      # release build, every section available
#   scripts/bench.sh --debug              # the debug build instead
#   scripts/bench.sh --only gcloud --runs 20
#   scripts/bench.sh --only hot --only cli --only metadata   # the performance goals
#
# Everything after --debug goes to touchgate-bench (see `--help`). The python
# section needs target/pyvenv (scripts/python-venv.sh); gcloud and cli, the
# Google Cloud CLI (cli also its docker-credential-gcloud). Timing is
# reported, never judged; a token the emulator does not accept fails the run.
# The goals are printed last with meets/MISSES: a report, not a test. The hot
# section's default --hits 1000000 takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release
if [ "${1:-}" = "--debug" ]; then
  profile=debug
  shift
fi
flags=()
[ "$profile" = release ] && flags=(--release)
# One build for all: the bench (touchgate-tests) and the agent, CLI and shim it starts.
cargo build "${flags[@]}" --workspace --bins
exec "${CARGO_TARGET_DIR:-target}/$profile/touchgate-bench" "$@"
