#!/usr/bin/env bash
# Release packages in target/dist/ (or --out DIR): a .deb for Debian/Ubuntu and
# a tarball, both from one release build and the file tree scripts/install.sh
# lays out (so the packages hold exactly what an install holds).
#
#   scripts/package.sh [--out DIR]
#
# touchgate_VERSION_ARCH.deb (dpkg-deb; prefix /usr):
#   /usr/bin/touchgate, touchgate-agent, touchgate-shim, docker-credential-touchgate
#   /usr/lib/systemd/user/touchgate-agent.{socket,service}   (enable per user:
#       systemctl --user enable --now touchgate-agent.socket)
#   /usr/lib/udev/rules.d/70-touchgate-fido.rules   (packaging/: FIDO keys for the seat's user)
#   /usr/share/man/man1/*.1.gz, bash/zsh/fish completions, /usr/share/doc/touchgate/copyright
# touchgate-VERSION-ARCH-linux.tar.gz: one directory holding bin/, share/, lib/
#   (prefix /usr/local: units and the docker helper link name /usr/local/bin),
#   LICENSE and README.md: tar -C /usr/local --strip-components=1 -xzf FILE
set -euo pipefail
umask 022
repo="$(cd "$(dirname "$0")/.." && pwd)"
me="package.sh"
die() { echo "$me: $*" >&2; exit 1; }

out="$repo/target/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || die "--out needs a directory"; out="$2"; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1: use --out DIR (see --help)" ;;
  esac
done
command -v dpkg-deb >/dev/null || die "dpkg-deb is needed for the .deb: apt-get install dpkg"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# ---- the .deb -------------------------------------------------------------
deb="$work/deb"
"$repo/scripts/install.sh" --prefix /usr --destdir "$deb" >&2
version="$("$deb/usr/bin/touchgate" --version | awk '{ print $2 }')"
[ -n "$version" ] || die "internal: no version from touchgate --version"
arch="$(dpkg --print-architecture 2>/dev/null || uname -m)"
install -D -m 0644 "$repo/packaging/70-touchgate-fido.rules" "$deb/usr/lib/udev/rules.d/70-touchgate-fido.rules"
install -D -m 0644 "$repo/LICENSE" "$deb/usr/share/doc/touchgate/copyright"
gzip -9n "$deb"/usr/share/man/man1/*.1
# Shared libraries the programs link, as package dependencies (dpkg-shlibdeps
# when it is there, else the three the programs link on Linux: libc, libgcc_s
# for unwinding, and libudev for the security-key library).
depends="libc6, libgcc-s1, libudev1"
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$work/shlibs/debian"
  printf 'Source: touchgate\n\nPackage: touchgate\nArchitecture: any\n' >"$work/shlibs/debian/control"
  depends="$(cd "$work/shlibs" && dpkg-shlibdeps -O "$deb"/usr/bin/touchgate "$deb"/usr/bin/touchgate-agent \
    "$deb"/usr/bin/touchgate-shim 2>/dev/null | sed -n 's/^shlibs:Depends=//p')"
  [ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies: is dpkg-dev complete?"
fi
size="$(du -sk "$deb/usr" | cut -f1)"
mkdir -p "$deb/DEBIAN"
cat >"$deb/DEBIAN/control" <<EOF
Package: touchgate
Version: $version
Architecture: $arch
Maintainer: touchgate developers <touchgate@users.noreply.invalid>
Installed-Size: $size
Depends: $depends
Section: utils
Priority: optional
Description: ssh-agent for Google Cloud: touch-gated tokens from a FIDO2 key
 touchgate-agent keeps a FIDO2 security-key session and hands out short-lived
 Google Cloud access tokens over a Unix socket, each only after the key touch
 your policy asks for. touchgate-shim serves them to gcloud, Google client
 libraries (ADC), docker and kubectl; touchgate is the command line.
EOF
(cd "$deb" && find usr -type f -exec md5sum {} + | sort -k2 >DEBIAN/md5sums)
debfile="$out/touchgate_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$deb" "$debfile" >/dev/null

# ---- the tarball ------------------------------------------------------------
name="touchgate-$version-$(uname -m)-$(uname -s | tr '[:upper:]' '[:lower:]')"
tree="$work/tar"
"$repo/scripts/install.sh" --prefix /usr/local --destdir "$tree" >&2
mv "$tree/usr/local" "$tree/$name"
install -m 0644 "$repo/LICENSE" "$repo/README.md" "$tree/$name/"
tarball="$out/$name.tar.gz"
tar -C "$tree" --owner=0 --group=0 -czf "$tarball" "$name"

echo "$debfile"
echo "$tarball"
