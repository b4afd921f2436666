#!/usr/bin/env bash
# Release archives and the krew manifest for kubectl-modekeeper.
#
#   scripts/release.sh --dry-run OUTDIR
#       Builds what this machine can build (always the host's target; another target only when its Rust
#       standard library and linker are installed), packages each, and writes OUTDIR/modekeeper.yaml
#       filled in for the archives it made. Platforms it could not build are left out of that manifest
#       and named in its header: no platform ever gets a made-up checksum.
#   scripts/release.sh --package TARGET OUTDIR
#       Builds one Rust target triple and packages it. A release pipeline runs this once per platform,
#       each on a runner with that target's toolchain (see docs/getting-started.md, "Releasing").
#   scripts/release.sh --manifest OUTDIR
#       Fills the manifest from the archives already in OUTDIR (the pipeline's last step). Fails unless
#       all four platforms (linux/darwin x amd64/arm64) are there.
#
# Archives: kubectl-modekeeper_<tag>_<os>_<arch>.tar.gz holding kubectl-modekeeper, LICENSE and the
# completion helper kubectl_complete-modekeeper (kubectl >= 1.26 runs it for `kubectl modekeeper <TAB>`),
# deterministic (names sorted, mtime SOURCE_DATE_EPOCH, owner and group 0, gzip without name or time),
# so the same binary always gives the same sha256.
#
# Environment:
#   MODEKEEPER_RELEASE_TAG   v<semver> (default: v + the version in Cargo.toml)
#   MODEKEEPER_RELEASE_URL   where the archives will be downloaded from (default: the GitHub release of the tag)
#   MODEKEEPER_PREBUILT_BIN  package this binary instead of building (--dry-run and --package)
#   MODEKEEPER_PRODUCTION_KEYRING  the production keyring file (public keys only, {"<kid>": "<key>"})
#                            that build.rs embeds in the binary. Required to build for --package; without
#                            it --dry-run builds archives that trust no production key (as any build
#                            from source: every license then needs --keyring). See docs/safety.md.
#   SOURCE_DATE_EPOCH        archive timestamps (default: the HEAD commit's time, else 0)
#   CARGO_TARGET_DIR         as for cargo
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "release.sh: $*" >&2; exit 2; }
usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

mode=${1:-}; [ $# -ge 2 ] || usage
case "$mode" in
  --dry-run|--manifest) [ $# -eq 2 ] || usage; out=$2 ;;
  --package) [ $# -eq 3 ] || usage; only_target=$2; out=$3 ;;
  *) usage ;;
esac
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
tag=${MODEKEEPER_RELEASE_TAG:-v$version}
[[ "$tag" =~ ^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$ ]] \
  || die "tag $tag is not v<semver> (krew requires a v prefix)"
url_base=${MODEKEEPER_RELEASE_URL:-https://github.com/modekeeper/modekeeper/releases/download/$tag}
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
fi
target_dir=${CARGO_TARGET_DIR:-target}

sha256() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi; }
gnutar() { if [[ "$(tar --version 2>/dev/null)" == *"GNU tar"* ]]; then tar "$@"; elif command -v gtar >/dev/null; then gtar "$@"; else die "GNU tar is needed (macOS: brew install gnu-tar)"; fi; }

# Rust target triple -> krew os_arch.
platform_of() {
  case "$1" in
    x86_64-unknown-linux-gnu|x86_64-unknown-linux-musl) echo linux_amd64 ;;
    aarch64-unknown-linux-gnu|aarch64-unknown-linux-musl) echo linux_arm64 ;;
    x86_64-apple-darwin) echo darwin_amd64 ;;
    aarch64-apple-darwin) echo darwin_arm64 ;;
    *) die "unsupported target $1" ;;
  esac
}
ALL_PLATFORMS="linux_amd64 linux_arm64 darwin_amd64 darwin_arm64"
host=$(rustc -vV | sed -n 's/^host: //p')

archive_name() { echo "kubectl-modekeeper_${tag}_$1.tar.gz"; }

# package BIN PLATFORM: writes OUTDIR/<archive> deterministically.
package() {
  local bin=$1 platform=$2 stage
  stage=$(mktemp -d)
  install -m 0755 "$bin" "$stage/kubectl-modekeeper"
  install -m 0644 LICENSE "$stage/LICENSE"
  install -m 0755 scripts/kubectl_complete-modekeeper "$stage/kubectl_complete-modekeeper"
  gnutar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
    --format=ustar -C "$stage" -cf - LICENSE kubectl-modekeeper kubectl_complete-modekeeper \
    | gzip -9 -n > "$out/$(archive_name "$platform")"
  rm -rf "$stage"
  echo "packaged $out/$(archive_name "$platform")"
}

# Shipped binaries are built with the dist profile (fat LTO) and carry no debug info (stripped at
# link time, so it works for every target).
export CARGO_PROFILE_DIST_DEBUG=false CARGO_PROFILE_DIST_STRIP=debuginfo

# The production keyring is not in the source tree (docs/safety.md, "Release builds and the production
# keyring"): the pipeline names it; build.rs reads it from this variable (an absolute path).
keyring=${MODEKEEPER_PRODUCTION_KEYRING:-}
if [ -n "$keyring" ]; then
  [ -f "$keyring" ] || die "MODEKEEPER_PRODUCTION_KEYRING=$keyring: no such file"
  MODEKEEPER_PRODUCTION_KEYRING="$(cd "$(dirname "$keyring")" && pwd)/$(basename "$keyring")"
  export MODEKEEPER_PRODUCTION_KEYRING
fi

# check_keyring BIN: a freshly built host binary must load the embedded keyring (license verify
# without a license then fails on the license, not on the keyring).
check_keyring() {
  local tmp; tmp=$(mktemp -d)
  HOME=$tmp XDG_CONFIG_HOME=$tmp MODEKEEPER_KEYRING='' MODEKEEPER_LICENSE_PATH='' \
    "$1" license verify --out "$tmp/out" >/dev/null 2>&1 || true
  grep -q '"reason": "license_missing"' "$tmp/out/license_verify_latest.json" 2>/dev/null \
    || { rm -rf "$tmp"; die "$1 does not carry a usable production keyring"; }
  rm -rf "$tmp"
}

# build TARGET: prints the built binary's path.
build() {
  local target=$1
  if [ -n "${MODEKEEPER_PREBUILT_BIN:-}" ]; then echo "$MODEKEEPER_PREBUILT_BIN"; return; fi
  if [ -z "$keyring" ]; then
    [ "$mode" = --package ] && die "MODEKEEPER_PRODUCTION_KEYRING is not set: a release binary must embed the production keyring"
    echo "release.sh: MODEKEEPER_PRODUCTION_KEYRING is not set: these archives trust no production key" >&2
  fi
  if [ "$target" = "$host" ]; then
    cargo build --profile dist --locked --bin kubectl-modekeeper >&2
    [ -z "$keyring" ] || check_keyring "$target_dir/dist/kubectl-modekeeper"
    echo "$target_dir/dist/kubectl-modekeeper"
  else
    cargo build --profile dist --locked --bin kubectl-modekeeper --target "$target" >&2
    echo "$target_dir/$target/dist/kubectl-modekeeper"
  fi
}

# can_build TARGET: the host, or a target whose std is installed and (across OSes) linker present.
can_build() {
  local t=$1
  [ "$t" = "$host" ] && return 0
  grep -qx "$t" <<<"$(rustup target list --installed 2>/dev/null)" || return 1
  case "$t" in
    *-linux-*) [[ "$host" == *-linux-* ]] && [[ "$t" == "${host%%-*}"* ]] && return 0
               command -v "${t%%-*}-linux-gnu-gcc" >/dev/null ;;
    *-apple-darwin) [[ "$host" == *-apple-darwin ]] ;;
  esac
}

# fill_manifest STRICT: krew/modekeeper.yaml -> OUTDIR/modekeeper.yaml for the archives present.
fill_manifest() {
  local strict=$1 missing="" p
  for p in $ALL_PLATFORMS; do
    [ -f "$out/$(archive_name "$p")" ] || missing="$missing $p"
  done
  if [ "$strict" = 1 ] && [ -n "$missing" ]; then
    die "archives missing in $out for:$missing (a release needs all four platforms)"
  fi
  [ "$missing" = " linux_amd64 linux_arm64 darwin_amd64 darwin_arm64" ] && die "no archive in $out"
  local sums=""
  for p in $ALL_PLATFORMS; do
    [ -f "$out/$(archive_name "$p")" ] && sums="$sums $(archive_name "$p")=$(sha256 "$out/$(archive_name "$p")")"
  done
  awk -v tag="$tag" -v base="$url_base" -v sums="$sums" -v missing="$missing" '
    BEGIN {
      n = split(sums, kv, " ")
      for (i = 1; i <= n; i++) { split(kv[i], a, "="); sha[a[1]] = a[2] }
      print "# Generated by scripts/release.sh from krew/modekeeper.yaml for " tag "."
      if (missing != "") print "# Not built here, so not listed (a release pipeline builds them):" missing
      header = 1
    }
    header && /^#/ { next }
    { header = 0 }
    # Platform entries are buffered and printed only when their archive exists.
    /^  - selector:/ { flush(); buf = $0 "\n"; inplat = 1; keep = 0; next }
    inplat && /^[^ ]/ { flush(); inplat = 0 }
    inplat {
      line = $0
      gsub(/\{\{ \.TagName \}\}/, tag, line)
      if (line ~ /\{\{addURIAndSha "/) {
        match(line, /"[^"]*"/); url = substr(line, RSTART + 1, RLENGTH - 2)
        file = url; sub(/.*\//, "", file)
        url = base "/" file
        if (file in sha) { keep = 1; buf = buf "    uri: " url "\n    sha256: " sha[file] "\n" }
        next
      }
      buf = buf line "\n"; next
    }
    { line = $0; gsub(/\{\{ \.TagName \}\}/, tag, line); print line }
    END { flush() }
    function flush() { if (buf != "" && keep) printf "%s", buf; buf = "" }
  ' krew/modekeeper.yaml > "$out/modekeeper.yaml.tmp"
  mv "$out/modekeeper.yaml.tmp" "$out/modekeeper.yaml"
  echo "manifest $out/modekeeper.yaml"
  [ -z "$missing" ] || echo "not built here:$missing (left out of the manifest)"
}

case "$mode" in
  --package)
    bin=$(build "$only_target")
    package "$bin" "$(platform_of "$only_target")"
    ;;
  --dry-run)
    built=""
    for t in x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu x86_64-apple-darwin aarch64-apple-darwin; do
      p=$(platform_of "$t")
      case " $built " in *" $p "*) continue ;; esac
      if { [ -n "${MODEKEEPER_PREBUILT_BIN:-}" ] && [ "$t" = "$host" ]; } || { [ -z "${MODEKEEPER_PREBUILT_BIN:-}" ] && can_build "$t"; }; then
        bin=$(build "$t")
        package "$bin" "$p"
        built="$built $p"
      fi
    done
    fill_manifest 0
    ;;
  --manifest)
    fill_manifest 1
    ;;
esac
