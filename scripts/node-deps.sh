#!/usr/bin/env bash
# The Node packages the end-to-end tests run (tests/tests/clients/shim_node.rs):
# google-auth-library from the package registry, in target/nodeenv. Idempotent:
# when it is there, it returns at once.
#
#   scripts/node-deps.sh            # make or check target/nodeenv
#
# The tests find the modules at $TOUCHGATE_TEST_NODE_MODULES, else target/nodeenv/node_modules.
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${TOUCHGATE_NODEENV:-target/nodeenv}"
packages=(google-auth-library)
check="require('google-auth-library')"

command -v node >/dev/null 2>&1 || {
  echo "node-deps.sh: node not found: install Node.js 18+ and npm (e.g. apt-get install nodejs npm)" >&2
  exit 1
}
if NODE_PATH="$prefix/node_modules" node -e "$check" 2>/dev/null; then
  echo "node modules ready: $prefix ($(NODE_PATH="$prefix/node_modules" node -p "'google-auth-library ' + require('google-auth-library/package.json').version"))"
  exit 0
fi
command -v npm >/dev/null 2>&1 || {
  echo "node-deps.sh: npm not found: install it (e.g. apt-get install npm)" >&2
  exit 1
}
mkdir -p "$prefix"
npm install --silent --no-audit --no-fund --prefix "$prefix" "${packages[@]}" >/dev/null
NODE_PATH="$prefix/node_modules" node -e "$check"
echo "node modules ready: $prefix ($(NODE_PATH="$prefix/node_modules" node -p "'google-auth-library ' + require('google-auth-library/package.json').version"))"
