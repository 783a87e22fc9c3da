#!/usr/bin/env bash
# Type-check and lint the whole workspace for macOS (Apple silicon) on this
# Linux machine: `cargo clippy --target aarch64-apple-darwin -- -D warnings`.
# It proves the macOS code paths (caller identity through proc_pidpath,
# proc_pidinfo and sysctl; lsof in the shim; paths; notifications) compile and
# are lint-clean. It does not link or run anything: C sources of dependencies
# (ring, hidapi) are handed to a stub compiler that writes empty objects, as no
# macOS SDK exists here. Running on a Mac is still untested.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${TOUCHGATE_MACOS_TARGET:-aarch64-apple-darwin}"
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target"
fi
stub="$(mktemp -d)"
trap 'rm -rf "$stub"' EXIT
cat >"$stub/cc" <<'STUB'
#!/bin/sh
# Stub C compiler: claims to be clang, rejects cl-style flags, writes empty outputs.
out=""; prev=""
for a in "$@"; do
  case "$a" in
    "-?") exit 1 ;;
    -E) echo '"clang"'; exit 0 ;;
  esac
  [ "$prev" = "-o" ] && out="$a"
  prev="$a"
done
[ -n "$out" ] && : >"$out"
exit 0
STUB
chmod +x "$stub/cc"
var="$(echo "$target" | tr '-' '_')"
export "CC_${var}=$stub/cc" "CXX_${var}=$stub/cc" "AR_${var}=ar"
# The product crates with their unit tests; of the test crate its library and
# binaries (emulator, bench): its end-to-end tests drive Linux-only machinery
# (an LD_PRELOAD security-key transport, /proc) and run on Linux only.
cargo clippy --target "$target" --workspace --exclude touchgate-tests --all-targets -- -D warnings
cargo clippy --target "$target" -p touchgate-tests --lib --bins -- -D warnings
echo "check-macos: $target type-checks and is clippy-clean"
