#!/usr/bin/env bash
# Builds Basalt's container image from a static binary: the binary and
# deploy/Dockerfile go into a temporary build context, so no base image is
# pulled (FROM scratch) and nothing but the binary is in the image.
#
#   scripts/docker-build.sh [TAG]     # default basalt:dev; prints the tag
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-basalt:dev}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o "$ctx/basalt" ./cmd/basalt
cp deploy/Dockerfile "$ctx/Dockerfile"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "$tag"
