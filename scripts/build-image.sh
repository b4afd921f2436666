#!/usr/bin/env bash
# The controller's container image (see Dockerfile and docs/controller.md).
#
#   scripts/build-image.sh [IMAGE]
#       With docker (or podman): builds the Dockerfile into IMAGE
#       (default ghcr.io/modekeeper/modekeeper:v<version in Cargo.toml>).
#   scripts/build-image.sh --binary-only
#       Without a container engine: builds the same static musl binary on this machine
#       (target/x86_64-unknown-linux-musl/dist/kubectl-modekeeper) and checks that it is static.
#       Needs `rustup target add x86_64-unknown-linux-musl` and musl-gcc (Debian: musl-tools).
#
# Environment: CONTAINER_ENGINE (docker or podman; default: the first found), CARGO_TARGET_DIR as for
# cargo, CARGO_PROFILE (default dist; `release` builds three times faster, `dev` faster still).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-image.sh: $*" >&2; exit 2; }
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)
[ -n "$version" ] || die "no version in Cargo.toml"

if [ "${1:-}" = "--binary-only" ]; then
  target=x86_64-unknown-linux-musl
  profile=${CARGO_PROFILE:-dist}
  grep -qx "$target" <<<"$(rustup target list --installed 2>/dev/null)" \
    || die "the $target standard library is not installed: rustup target add $target"
  command -v musl-gcc >/dev/null || die "musl-gcc not found (Debian/Ubuntu: apt-get install musl-tools)"
  cargo build --locked --profile "$profile" --target "$target" --bin kubectl-modekeeper
  dir=$profile; [ "$profile" = dev ] && dir=debug   # cargo's directory for the dev profile
  bin="${CARGO_TARGET_DIR:-target}/$target/$dir/kubectl-modekeeper"
  # A static executable has no program interpreter (no dynamic loader to run it).
  headers=$(readelf -l "$bin") || die "readelf could not read $bin"
  if grep -q 'INTERP' <<<"$headers"; then
    die "$bin is dynamically linked"
  fi
  echo "$bin: static, $(wc -c <"$bin") bytes"
  exit 0
fi

image=${1:-ghcr.io/modekeeper/modekeeper:v$version}
case "$image" in -*) die "unknown option $image" ;; esac
engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
  for e in docker podman; do
    if command -v "$e" >/dev/null; then engine=$e; break; fi
  done
fi
[ -n "$engine" ] || die "no docker or podman found; scripts/build-image.sh --binary-only builds the binary alone"
"$engine" build --tag "$image" .
echo "built $image; install it with: kubectl modekeeper install --image $image"
