#!/usr/bin/env bash
# The images deploy/docker-compose.yml takes from a registry besides its own, redis and nginx,
# built locally as stand-ins: no image registry is reachable from CI, the Debian mirror is.
# Each is the CI base image (deploy/ci/base-image.sh, which must have run) plus the Debian
# package, deploy/ci/stand-ins/<name>.Containerfile, tagged with the exact name the Compose
# file uses (docker.io/library/redis:7, …). The Compose file itself is unchanged: a user of
# it gets the official images.
#
# Built only when missing or when their inputs changed: each image carries a label with the
# hash of its Containerfile, this script and the base image's root filesystem, and is kept
# in podman's storage between runs like the product image's layer cache.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/ci/podman-env.sh
source deploy/ci/podman-env.sh

base_layer="$(podman image inspect --format '{{index .RootFS.Layers 0}}' "$PORTCULLIS_CI_BASE_IMAGE")"
for name in redis nginx; do
  containerfile="deploy/ci/stand-ins/$name.Containerfile"
  image="$(sed -n "s/^    image: \\($name:[^ ]*\\)\$/\\1/p" deploy/docker-compose.yml)"
  [ -n "$image" ] || { echo "stand-ins: deploy/docker-compose.yml names no $name image" >&2; exit 1; }
  image="docker.io/library/$image"
  key="$( (sha256sum "$containerfile" deploy/ci/stand-in-images.sh | cut -d' ' -f1; echo "$base_layer") | sha256sum | cut -c1-16)"
  if [ "$(podman image inspect --format '{{index .Labels "io.portcullis.ci.key"}}' "$image" 2>/dev/null)" = "$key" ]; then
    echo "stand-ins: $image cached"
    continue
  fi
  start=$SECONDS
  podman build --pull=never --network host --format docker --quiet \
    --build-arg "BASE=$PORTCULLIS_CI_BASE_IMAGE" --label "io.portcullis.ci.key=$key" \
    --file "$containerfile" --tag "$image" deploy/ci/stand-ins >/dev/null
  echo "stand-ins: built $image in $((SECONDS - start))s"
done
