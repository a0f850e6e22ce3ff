#!/usr/bin/env bash
# Builds the project's Dockerfile, unchanged, with podman: `deploy/ci/build-image.sh [tag]`.
# The base image must be present locally (deploy/ci/base-image.sh); nothing is pulled.
#
# Behind a TLS-inspecting proxy the build's `npm ci` must trust the proxy's CA. A directory
# holding the machine's CA bundle and an npmrc naming it as cafile is mounted read-only over
# /usr/local/etc (npm's global config directory for the /usr/local prefix) in every RUN step:
# build time only, never COPY'd into a layer. A directory the base image already has, because
# mounting onto a path that does not exist leaves an empty mountpoint file in the image.
# BUILD_CA_BUNDLE picks the bundle (default: the system's, when present; empty: mount none).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/ci/podman-env.sh
source deploy/ci/podman-env.sh

tag="${1:-localhost/portcullis:ci}"
ca_bundle="${BUILD_CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}"
volumes=()
if [ -n "$ca_bundle" ] && [ -s "$ca_bundle" ]; then
  build_etc="$PORTCULLIS_CI_CONF_DIR/build-etc"
  mkdir -p "$build_etc"
  cp "$ca_bundle" "$build_etc/ca-certificates.crt"
  printf 'cafile=/usr/local/etc/ca-certificates.crt\n' > "$build_etc/npmrc"
  volumes+=(--volume "$build_etc:/usr/local/etc:ro")
fi

start=$SECONDS
# --format docker: the OCI format has no HEALTHCHECK (podman drops it with a warning).
podman build --pull=never --network host --format docker "${volumes[@]}" --tag "$tag" .
echo "image: built $tag in $((SECONDS - start))s, $(podman image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
# Keep the layer cache (the build stage's `npm ci` layer is most of a cold build's time) but
# not without bound: untagged images a week old go.
podman image prune --force --filter until=168h >/dev/null
