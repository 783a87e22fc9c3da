#!/usr/bin/env bash
# Install the Node client the end-to-end tests drive (tests/tests/clients/shim_id_tokens.rs):
# google-auth-library from the package registry, in target/node. Idempotent: when it is
# there, it returns at once.
#
# The tests find it at $TOUCHGATE_TEST_NODE_MODULES, else target/node/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${TOUCHGATE_NODE_PREFIX:-target/node}"
if [ -f "$prefix/node_modules/google-auth-library/package.json" ]; then
  echo "node modules ready: $prefix (google-auth-library $(node -p "require('./$prefix/node_modules/google-auth-library/package.json').version" 2>/dev/null || echo '?'))"
  exit 0
fi
for tool in node npm; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "node-modules.sh: $tool not found: install Node.js 18+ and npm (e.g. apt-get install nodejs npm)" >&2
    exit 1
  }
done
mkdir -p "$prefix"
npm install --silent --no-audit --no-fund --prefix "$prefix" google-auth-library
echo "node modules ready: $prefix"
