#!/usr/bin/env bash
# Builds the Runnel image (deploy/Dockerfile) from target/release/runnel, idempotently.
#
# The base image is the first of these that works: BASE_IMAGE (default debian:bookworm-slim)
# when present or pullable; otherwise a local Debian bookworm made with
# `debootstrap --variant=minbase` and `docker import` (about a minute, about 200 MB), built
# once and reused as runnel-base:bookworm. Machines without a reachable registry need it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-runnel:latest}
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
LOCAL_BASE=${LOCAL_BASE:-runnel-base:bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

if [ ! -x target/release/runnel ]; then
    echo "docker-image: target/release/runnel is missing; run 'make build' first" >&2
    exit 1
fi

base=""
if have_image "$BASE_IMAGE"; then
    base=$BASE_IMAGE
elif have_image "$LOCAL_BASE"; then
    base=$LOCAL_BASE
elif docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
    base=$BASE_IMAGE
else
    echo "docker-image: cannot pull $BASE_IMAGE; building $LOCAL_BASE with debootstrap"
    if ! command -v debootstrap >/dev/null 2>&1; then
        $SUDO apt-get install -y debootstrap || { $SUDO apt-get update && $SUDO apt-get install -y debootstrap; }
    fi
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/runnel-base.XXXXXX")
    trap '$SUDO rm -rf "$rootfs"' EXIT
    $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$DEBIAN_MIRROR" >"$rootfs.log" 2>&1 || {
        echo "docker-image: debootstrap failed; its log:" >&2
        tail -n 30 "$rootfs.log" >&2
        exit 1
    }
    rm -f "$rootfs.log"
    # Package caches and lists are not needed at run time.
    $SUDO rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    $SUDO tar -C "$rootfs" -c . | docker import - "$LOCAL_BASE" >/dev/null
    base=$LOCAL_BASE
fi

# The release profile keeps debug info for profiling; the image does not need it (135 MB -> ~15 MB).
mkdir -p target/docker
objcopy --strip-debug target/release/runnel target/docker/runnel.tmp
mv target/docker/runnel.tmp target/docker/runnel

echo "docker-image: building $IMAGE on $base"
docker build -q --build-arg "BASE_IMAGE=$base" --build-arg RUNNEL_BINARY=target/docker/runnel \
    -f deploy/Dockerfile -t "$IMAGE" . >/dev/null
echo "docker-image: $IMAGE is $(docker image inspect -f '{{.Id}}' "$IMAGE" | cut -c8-19), $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%d MB", $1 / 1000000 }')"
