#!/usr/bin/env bash
# Builds the RunPod worker image with its base pinned by digest.
#
#   worker/build-image.sh [--pin] [IMAGE_TAG]
#
# The Dockerfile's FROM names a tag and, once pinned, its digest (tag@sha256:…): a tag can be
# moved to another build, a digest cannot, so every image built from this file has the same
# torch, CUDA and system libraries. The build refuses an unpinned FROM, and a pinned one whose
# tag now points elsewhere (the base changed upstream: re-pin on purpose, then test). --pin
# writes the tag's current digest into the Dockerfile. Needs Docker and access to the registry.
set -euo pipefail
cd "$(dirname "$0")"
pin=0
if [ "${1:-}" = "--pin" ]; then pin=1; shift; fi
image="${1:-lora-pipeline-worker:latest}"

from="$(awk '/^FROM /{print $2; exit}' Dockerfile)"
tag="${from%%@*}"
current="$(docker buildx imagetools inspect "$tag" --format '{{json .Manifest.Digest}}' | tr -d '"')"
case "$current" in sha256:*) ;; *) echo "cannot resolve the digest of $tag" >&2; exit 1 ;; esac

if [ "$pin" = 1 ]; then
  sed -i "s#^FROM .*#FROM $tag@$current#" Dockerfile
  echo "pinned $tag@$current"
elif [ "$from" = "$tag" ]; then
  echo "the base image $tag is not pinned by digest: run worker/build-image.sh --pin" >&2
  exit 1
elif [ "$from" != "$tag@$current" ]; then
  echo "$tag now points to $current, not ${from#*@}: re-pin with --pin and test the new base" >&2
  exit 1
fi
docker build -t "$image" .
