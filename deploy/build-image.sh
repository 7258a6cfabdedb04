#!/usr/bin/env bash
# Builds the pactdb image from a binary on this machine, with no base image
# (none can be pulled): a root filesystem of the binary and exactly the
# shared libraries `ldd` says it loads, then `FROM scratch`.
#
# usage: deploy/build-image.sh BINARY IMAGE_TAG
set -euo pipefail
bin=$1 tag=$2
deploy_dir=$(cd "$(dirname "$0")" && pwd)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/data" "$ctx/rootfs/certs"
# Debug info stays on the host (the release profile keeps it for profiling).
if command -v objcopy >/dev/null; then
    objcopy --strip-debug "$bin" "$ctx/rootfs/usr/local/bin/pactdb"
else
    cp "$bin" "$ctx/rootfs/usr/local/bin/pactdb"
fi
# Every library the binary loads, and the loader itself, at the same paths.
ldd "$bin" | grep -o '/[^ ]*' | sort -u | while read -r lib; do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
cp "$deploy_dir/Dockerfile" "$ctx/Dockerfile"
timeout 300 docker build --quiet -t "$tag" "$ctx" >/dev/null
echo "built image $tag ($(du -sh "$ctx/rootfs" | cut -f1) root filesystem)"
