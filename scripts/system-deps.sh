#!/usr/bin/env bash
# Install the system packages a job needs, only those missing, saying what and
# why: apt-get (Debian, Ubuntu) or dnf (Fedora), as root or through sudo.
# Quick and silent when everything is there.
#
#   scripts/system-deps.sh demo   # what the demo needs: build (libudev) and curl
#   scripts/system-deps.sh test   # and what the tests run: setpriv, dbus-daemon, lsof, …
set -euo pipefail
job="${1:-}"
case "$job" in
  demo | test) ;;
  *) echo "usage: scripts/system-deps.sh demo|test" >&2; exit 2 ;;
esac

# Each need: a check, the Debian package, the Fedora package, and why.
missing_deb=() missing_rpm=() why=()
need() {
  if ! sh -c "$1" >/dev/null 2>&1; then
    missing_deb+=("$2") missing_rpm+=("$3") why+=("$2 ($4)")
  fi
}
need 'command -v pkg-config' pkg-config pkgconf-pkg-config "finds libudev for the build"
need 'pkg-config --exists libudev' libudev-dev systemd-devel "hidapi, the security-key library, is built against it"
need 'command -v curl' curl curl "the demo's real client"
need 'test -s /etc/ssl/certs/ca-certificates.crt || test -s /etc/pki/tls/certs/ca-bundle.crt' \
  ca-certificates ca-certificates "TLS roots"
if [ "$job" = test ]; then
  need 'command -v setpriv' util-linux util-linux "tests run another user's processes"
  need 'command -v script' bsdutils util-linux-script "tests give a program a terminal"
  need 'command -v openssl' openssl openssl "tests make TLS certificates"
  need 'command -v dbus-daemon' dbus dbus-daemon "tests run a private session bus"
  need 'command -v lsof' lsof lsof "the shim's macOS way of naming callers, tested here"
  need 'command -v systemd-socket-activate && command -v systemd-analyze' systemd systemd \
    "tests of the service units"
  need 'command -v dpkg-deb' dpkg dpkg "tests build the .deb (scripts/package.sh) and unpack it"
  need 'command -v node' nodejs nodejs "tests run Node's google-auth-library"
  need 'command -v npm' npm nodejs-npm "installs google-auth-library for the tests (scripts/node-deps.sh)"
fi
[ ${#missing_deb[@]} -eq 0 ] && exit 0

sudo_=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo_="sudo"
  else
    echo "system-deps.sh: missing: ${why[*]}; install them as root (no sudo here)" >&2
    exit 1
  fi
fi
echo "system-deps.sh: installing ${why[*]}" >&2
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo_ apt-get update -qq >&2
  $sudo_ apt-get install -y -qq --no-install-recommends "${missing_deb[@]}" >/dev/null
elif command -v dnf >/dev/null 2>&1; then
  $sudo_ dnf install -y -q "${missing_rpm[@]}" >&2
else
  echo "system-deps.sh: no apt-get or dnf here: install ${why[*]} yourself" >&2
  exit 1
fi
