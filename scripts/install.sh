#!/usr/bin/env bash
# Install touchgate from this repository (a release build), or remove exactly
# what an earlier run installed.
#
#   scripts/install.sh [--prefix DIR]               # default: ~/.local
#   scripts/install.sh [--prefix DIR] --uninstall   # removes what the manifest lists
#   scripts/install.sh --prefix /usr --destdir DIR  # for packages: DIR/usr/…, no manifest
#
# What goes where (PREFIX/…):
#   bin/touchgate, bin/touchgate-agent, bin/touchgate-shim   side by side: the
#       agent believes only the touchgate-shim beside it, touchgate finds both there
#   bin/docker-credential-touchgate -> the absolute path of the installed shim
#       (what `touchgate setup docker` makes, so it sees its own link)
#   share/bash-completion/completions, share/zsh/site-functions,
#   share/fish/vendor_completions.d   completions; share/man/man1   man pages
#   systemd user units: PREFIX/share/systemd/user for a prefix in your home
#       (where systemd --user looks: ~/.local/share/systemd/user), else
#       PREFIX/lib/systemd/user; ExecStart= names PREFIX/bin/touchgate-agent
#   macOS: ~/Library/LaunchAgents/dev.touchgate.agent.plist (unless one is there)
#   share/touchgate/install-manifest   what this run created: --uninstall removes
#       those files (not one a user changed since), then the directories it
#       created when empty, so PREFIX is as before. Running it twice is safe.
# A file already at PREFIX that no earlier run installed is never replaced.
set -euo pipefail
# Installed files are readable by all (programs, pages, units), whatever the caller's umask.
umask 022
repo="$(cd "$(dirname "$0")/.." && pwd)"
me="install.sh"
die() { echo "$me: $*" >&2; exit 1; }

prefix="" destdir="" uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#--prefix=}"; shift ;;
    --destdir) [ $# -ge 2 ] || die "--destdir needs a directory"; destdir="$2"; shift 2 ;;
    --uninstall) uninstall=1; shift ;;
    -h | --help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1: use --prefix DIR, --uninstall or --destdir DIR (see --help)" ;;
  esac
done
[ -n "$prefix" ] || prefix="${HOME:?HOME is not set: pass --prefix DIR}/.local"
case "$prefix" in
  /*) ;;
  *) prefix="$(pwd)/$prefix" ;;
esac
# The prefix lands in unit files and in the manifest: keep it to plain characters.
case "$prefix" in
  *[!A-Za-z0-9/._+@-]*) die "--prefix $prefix has a space or special character: choose a plain path" ;;
esac
prefix="${prefix%/}"
[ -n "$prefix" ] || die "--prefix / is not supported: use /usr or /usr/local"
[ "$uninstall" = 0 ] || [ -z "$destdir" ] || die "--uninstall and --destdir do not go together"

manifest="$prefix/share/touchgate/install-manifest"
os="$(uname -s)"
plist="${HOME:-/nonexistent}/Library/LaunchAgents/dev.touchgate.agent.plist"

sha() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# Remove what the manifest lists; $1=quiet for an upgrade. Directories last,
# deepest first, and only when empty.
remove_installed() {
  local quiet="${1:-}" kind a b kept=0 removed=0
  local -a dirs=()
  if [ -n "$(sed -n '/^f .*\/touchgate-agent\.socket$/p' "$manifest")" ] &&
    command -v systemctl >/dev/null 2>&1 &&
    systemctl --user is-enabled --quiet touchgate-agent.socket 2>/dev/null; then
    echo "$me: stopping and disabling touchgate-agent.socket (its unit files are being removed)"
    systemctl --user disable --now touchgate-agent.socket touchgate-agent.service >/dev/null 2>&1 || true
  fi
  while read -r kind a b; do
    case "$kind" in
      f)
        if [ -f "$b" ] && [ ! -L "$b" ]; then
          if [ "$(sha "$b")" = "$a" ]; then rm -f "$b"; removed=$((removed + 1))
          else echo "$me: $b changed since it was installed: left in place" >&2; kept=1; fi
        fi ;;
      l)
        if [ -L "$b" ]; then
          if [ "$(readlink "$b")" = "$a" ]; then rm -f "$b"; removed=$((removed + 1))
          else echo "$me: $b points elsewhere since it was installed: left in place" >&2; kept=1; fi
        fi ;;
      d) dirs=("$a" ${dirs[@]+"${dirs[@]}"}) ;;
      '' | '#'*) ;;
      *) die "$manifest: unknown line '$kind $a $b': was it edited?" ;;
    esac
  done <"$manifest"
  rm -f "$manifest"
  local d
  for d in ${dirs[@]+"${dirs[@]}"}; do
    [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
  done
  [ -n "$quiet" ] || echo "$me: removed $removed files installed under $prefix"
  return "$kept"
}

if [ "$uninstall" = 1 ]; then
  if [ ! -f "$manifest" ]; then
    echo "$me: nothing to remove: no $manifest (not installed there, or already removed)"
    exit 0
  fi
  remove_installed || die "some files were left in place (see above): remove them yourself if you no longer want them"
  exit 0
fi

old=""
[ -f "$manifest" ] && old="$(cat "$manifest")"
owned() { printf '%s\n' "$old" | awk -v p="$1" '($1 == "f" || $1 == "l") && $3 == p { y = 1 } END { exit !y }'; }
# Refuse before changing anything: a file at PREFIX that no earlier run installed
# (the programs first, before a build; every file once the tree is made).
refuse_foreign() {
  local t="$prefix/$1"
  if [ -e "$t" ] || [ -L "$t" ]; then
    owned "$t" || die "$t is already there and was not installed by $me: remove it, or choose another --prefix"
  fi
}
if [ -z "$destdir" ]; then
  for f in bin/touchgate bin/touchgate-agent bin/touchgate-shim bin/docker-credential-touchgate; do refuse_foreign "$f"; done
fi

# ---- build ----------------------------------------------------------------
echo "$me: building the release binaries (cargo build --release --locked)"
# Run from a cargo test or build script, the variables cargo set for that crate
# would make some dependencies' build scripts rebuild them: not ours to pass on.
for v in $(compgen -e); do
  case "$v" in
    CARGO_MANIFEST_* | CARGO_PKG_* | CARGO_CRATE_NAME | CARGO_BIN_* | CARGO_PRIMARY_PACKAGE | CARGO_TARGET_TMPDIR | OUT_DIR) unset "$v" ;;
  esac
done
(cd "$repo" && cargo build --release --locked --quiet -p touchgate-cli -p touchgate-agent -p touchgate-shim --bins)
rel="${CARGO_TARGET_DIR:-$repo/target}/release"
bins=(touchgate touchgate-agent touchgate-shim)

# ---- stage: the whole tree, relative to PREFIX ------------------------------
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
if [ -n "$destdir" ]; then in_home=0
else
  case "$prefix/" in "${HOME:-/nonexistent}"/*) in_home=1 ;; *) in_home=0 ;; esac
fi
if [ "$in_home" = 1 ]; then unitdir="share/systemd/user"; else unitdir="lib/systemd/user"; fi
mkdir -p "$stage/bin" "$stage/share/bash-completion/completions" "$stage/share/zsh/site-functions" \
  "$stage/share/fish/vendor_completions.d" "$stage/share/man/man1"
for b in "${bins[@]}"; do
  install -m 0755 "$rel/$b" "$stage/bin/$b"
  "$rel/$b" generate bash --out-dir "$stage/share/bash-completion/completions" >/dev/null
  "$rel/$b" generate zsh --out-dir "$stage/share/zsh/site-functions" >/dev/null
  "$rel/$b" generate fish --out-dir "$stage/share/fish/vendor_completions.d" >/dev/null
  "$rel/$b" generate man --out-dir "$stage/share/man/man1" >/dev/null
done
find "$stage/share" -type f -exec chmod 0644 {} +
if [ "$os" = Linux ] || [ -n "$destdir" ]; then
  mkdir -p "$stage/$unitdir"
  # The shipped unit names /usr/bin/touchgate-agent: name the installed one.
  sed "s|^ExecStart=/usr/bin/touchgate-agent |ExecStart=$prefix/bin/touchgate-agent |" \
    "$repo/systemd/touchgate-agent.service" >"$stage/$unitdir/touchgate-agent.service"
  grep -q "^ExecStart=$prefix/bin/touchgate-agent " "$stage/$unitdir/touchgate-agent.service" ||
    die "internal: systemd/touchgate-agent.service has no ExecStart=/usr/bin/touchgate-agent line to adjust"
  install -m 0644 "$repo/systemd/touchgate-agent.socket" "$stage/$unitdir/touchgate-agent.socket"
  chmod 0644 "$stage/$unitdir/touchgate-agent.service"
fi

# ---- for a package: copy the tree under DESTDIR and stop -------------------
if [ -n "$destdir" ]; then
  mkdir -p "$destdir$prefix"
  cp -R "$stage/." "$destdir$prefix/"
  ln -s "$prefix/bin/touchgate-shim" "$destdir$prefix/bin/docker-credential-touchgate"
  exit 0
fi

# ---- install into PREFIX, recording every file and created directory --------
files=()
while IFS= read -r f; do files+=("${f#./}"); done < <(cd "$stage" && find . -type f | sort)
for f in "${files[@]}"; do refuse_foreign "$f"; done
if [ "$os" = Darwin ] && [ -e "$plist" ] && ! owned "$plist"; then
  skip_plist=1
else
  skip_plist=0
fi
# An upgrade: take the earlier install away first (what it created, unchanged).
if [ -n "$old" ]; then remove_installed quiet || die "an earlier install's files were changed (see above): remove them, then run again"; fi

new_manifest="$(mktemp)"
trap 'rm -rf "$stage" "$new_manifest"' EXIT
# mkdir -p that records each directory it creates.
mkdirs() {
  local d="$1" missing=()
  while [ ! -d "$d" ]; do missing=("$d" ${missing[@]+"${missing[@]}"}); d="$(dirname "$d")"; done
  for d in ${missing[@]+"${missing[@]}"}; do mkdir "$d"; echo "d $d" >>"$new_manifest"; done
}
put() { # put SRC DEST MODE
  mkdirs "$(dirname "$2")"
  install -m "$3" "$1" "$2"
  echo "f $(sha "$2") $2" >>"$new_manifest"
}
for f in "${files[@]}"; do
  case "$f" in bin/*) mode=0755 ;; *) mode=0644 ;; esac
  put "$stage/$f" "$prefix/$f" "$mode"
done
# The docker helper link names the shim by its real absolute path, as
# `touchgate setup docker` (which reads it back) does.
shim="$(cd "$prefix/bin" && pwd -P)/touchgate-shim"
ln -s "$shim" "$prefix/bin/docker-credential-touchgate"
echo "l $shim $prefix/bin/docker-credential-touchgate" >>"$new_manifest"
if [ "$os" = Darwin ] && [ "$skip_plist" = 0 ]; then
  tmp_plist="$stage/dev.touchgate.agent.plist"
  sed -e "s|/usr/local/bin/touchgate-agent|$prefix/bin/touchgate-agent|" -e "s|/Users/YOU|$HOME|g" \
    "$repo/launchd/dev.touchgate.agent.plist" >"$tmp_plist"
  put "$tmp_plist" "$plist" 0644
fi
mkdirs "$(dirname "$manifest")"
mv "$new_manifest" "$manifest"
chmod 0644 "$manifest"

# ---- what went where ---------------------------------------------------------
n_man=$(ls "$stage/share/man/man1" | wc -l | tr -d ' ')
cat <<EOF
installed touchgate into $prefix:
  programs       $prefix/bin/touchgate, touchgate-agent, touchgate-shim
  docker helper  $prefix/bin/docker-credential-touchgate -> $shim
  completions    $prefix/share/bash-completion/completions/, $prefix/share/zsh/site-functions/,
                 $prefix/share/fish/vendor_completions.d/
  man pages      $prefix/share/man/man1/ ($n_man pages: man touchgate)
EOF
if [ "$os" = Linux ]; then
  echo "  systemd units  $prefix/$unitdir/touchgate-agent.{socket,service}"
fi
if [ "$os" = Darwin ]; then
  if [ "$skip_plist" = 1 ]; then echo "  launchd        $plist was already there: left alone"
  else echo "  launchd        $plist"; fi
fi
echo "  manifest       $manifest (scripts/install.sh --prefix $prefix --uninstall removes it all)"
case ":${PATH:-}:" in
  *":$prefix/bin:"*) ;;
  *) echo "note: $prefix/bin is not on PATH: add it in your shell profile" ;;
esac
if [ "$os" = Linux ]; then
  case "$prefix/$unitdir" in
    "${HOME:-/nonexistent}/.local/share/systemd/user" | /usr/lib/systemd/user | /usr/local/lib/systemd/user | /lib/systemd/user)
      echo "next: systemctl --user daemon-reload && systemctl --user enable --now touchgate-agent.socket" ;;
    *) echo "note: systemd does not look in $prefix/$unitdir: run touchgate setup agent to install the units for your user" ;;
  esac
elif [ "$os" = Darwin ] && [ "$skip_plist" = 0 ]; then
  echo "next: launchctl bootstrap gui/\$(id -u) $plist"
fi
