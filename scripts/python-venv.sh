#!/usr/bin/env bash
# Make the Python venv the end-to-end tests use (tests/tests/clients/shim_python.rs):
# google-auth, google-cloud-aiplatform and requests from the package index, in
# target/pyvenv. Idempotent: when the venv already has them, it returns at once.
#
#   scripts/python-venv.sh            # make or check target/pyvenv
#   PYTHON=python3.12 scripts/python-venv.sh
#
# The tests find the interpreter at $TOUCHGATE_TEST_PYTHON, else target/pyvenv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TOUCHGATE_PYVENV:-target/pyvenv}"
py="${PYTHON:-python3}"
packages=(google-auth google-cloud-aiplatform requests)
check='import google.auth, google.cloud.aiplatform_v1, requests'

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" 2>/dev/null; then
  echo "python venv ready: $venv ($("$venv/bin/python" -c 'import google.auth as a; print("google-auth", a.__version__)'))"
  exit 0
fi
command -v "$py" >/dev/null 2>&1 || {
  echo "python-venv.sh: $py not found: install Python 3.9+ with venv (e.g. apt-get install python3-venv)" >&2
  exit 1
}
mkdir -p "$(dirname "$venv")"
"$py" -m venv "$venv" || {
  echo "python-venv.sh: '$py -m venv' failed: install the venv module (e.g. apt-get install python3-venv)" >&2
  exit 1
}
"$venv/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/python" -m pip install --quiet "${packages[@]}"
"$venv/bin/python" -c "$check"
echo "python venv ready: $venv ($("$venv/bin/python" -c 'import google.auth as a; print("google-auth", a.__version__)'))"
