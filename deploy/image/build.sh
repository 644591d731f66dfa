#!/bin/bash
# Build the Inclavare project image with podman, the build itself offline (--network none).
#
#   deploy/image/build.sh [TAG]            (default TAG: localhost/inclavare:dev; run from anywhere, as root)
#
# Inputs come from the two package registries, through their ordinary clients, before podman runs:
#  1. a Debian bookworm base, bootstrapped with mmdebstrap (minbase + the packages below) into a
#     tarball cached by package list under $INCLAVARE_IMAGE_CACHE, and imported as
#     localhost/inclavare-debian-base:<digest> — no image registry is involved;
#  2. wheels of the project and its dependencies, made with pip from this checkout.
# Then `podman build --network none` of deploy/image/Containerfile: nothing is fetched during the build.
#
# Environment: PODMAN (default "podman"; tests pass a private --root/--runroot), PODMAN_BUILD_FLAGS
# (extra `podman build` flags, e.g. --ulimit where the default limits exceed the host's), PYTHON (a
# Python with pip; default: the checkout's .venv), INCLAVARE_IMAGE_CACHE (default /var/cache/inclavare/image).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TAG=${1:-localhost/inclavare:dev}
PODMAN=${PODMAN:-podman}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CACHE=${INCLAVARE_IMAGE_CACHE:-/var/cache/inclavare/image}
SUITE=bookworm
# python3 (+pip to install the wheels): the interpreter copied into the relocatable /opt/inclavare
# prefix; gcc + libc6-dev: the node installer compiles the static rune launcher and the static
# in-enclave tools for the host; ca-certificates: TLS to the key broker.
PACKAGES=python3,python3-pip,gcc,libc6-dev,ca-certificates

command -v mmdebstrap >/dev/null || { echo "build.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 2; }
test -x "$PYTHON" || { echo "build.sh: no Python at $PYTHON (run make setup, or set PYTHON)" >&2; exit 2; }

digest=$(printf '%s\n' "$SUITE" "$PACKAGES" minbase | sha256sum | cut -c1-12)
base_tar="$CACHE/debian-$SUITE-$digest.tar"
base_tag="localhost/inclavare-debian-base:$digest"
mkdir -p "$CACHE"
if [ ! -s "$base_tar" ]; then
  echo "build.sh: bootstrapping Debian $SUITE ($PACKAGES) into $base_tar"
  # No mirror given: mmdebstrap uses Debian's default one, plus updates and security for a stable suite.
  mmdebstrap --quiet --format=tar --variant=minbase --include="$PACKAGES" --aptopt='Acquire::Retries "3"' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    "$SUITE" "$base_tar.tmp"
  mv "$base_tar.tmp" "$base_tar"
fi
if ! $PODMAN image exists "$base_tag"; then
  $PODMAN import --quiet --change 'CMD ["/bin/bash"]' "$base_tar" "$base_tag" >/dev/null
fi

ctx=$(mktemp -d /tmp/inclavare-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
mkdir "$ctx/wheels"
# The project's wheel with its runtime dependencies, PostgreSQL's driver (the key broker's shared
# store) and grpcio/protobuf (the device plugin speaks the kubelet's gRPC API).
"$PYTHON" -m pip wheel --quiet --wheel-dir "$ctx/wheels" "$REPO[postgres]" 'grpcio>=1.60' 'protobuf>=4.25'
cp "$HERE/Containerfile" "$ctx/Containerfile"

$PODMAN build --quiet --network none --pull=never ${PODMAN_BUILD_FLAGS:-} --build-arg "BASE=$base_tag" -t "$TAG" \
  -f "$ctx/Containerfile" "$ctx"
echo "build.sh: built $TAG from $base_tag"
