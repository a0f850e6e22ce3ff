#!/usr/bin/env bash
# CI's image step: the container image built from the unchanged Dockerfile and tested running.
#   1. podman, configured for this machine        (deploy/ci/podman-env.sh)
#   2. the base image, node:<line>-trixie-slim     (deploy/ci/base-image.sh; cached)
#   3. the image                                  (deploy/ci/build-image.sh)
#   4. test/image/container.test.ts against it, in a private network namespace: the
#      container listens on 127.0.0.1:8080 (the port its HEALTHCHECK asks) without taking
#      that port from anything else on the machine.
#   5. deploy/docker-compose.yml with podman-compose (deploy/ci/podman-compose.sh), on stand-ins
#      for the registry images it names (deploy/ci/stand-in-images.sh; cached):
#      test/image/compose.test.ts, in the machine's network (the example MCP server's npx
#      fetches it from the npm registry), its ports free ones on 127.0.0.1.
# Run as root (podman, debootstrap, unshare): `bash deploy/ci/image.sh`.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/ci/podman-env.sh
source deploy/ci/podman-env.sh

export PORTCULLIS_IMAGE="${PORTCULLIS_IMAGE:-localhost/portcullis:ci}"
step_start=$SECONDS
bash deploy/ci/base-image.sh
echo "image step: base ready after $((SECONDS - step_start))s"
bash deploy/ci/build-image.sh "$PORTCULLIS_IMAGE"
echo "image step: image built after $((SECONDS - step_start))s"
# No network in there: tap from node_modules, not through npx.
unshare --net -- bash -c 'ip link set lo up && exec node_modules/.bin/tap --disable-coverage test/image/container.test.ts'
echo "image step: container tested after $((SECONDS - step_start))s"
bash deploy/ci/stand-in-images.sh
PORTCULLIS_PODMAN_COMPOSE="$(bash deploy/ci/podman-compose.sh)"
export PORTCULLIS_PODMAN_COMPOSE
# The CA bundle the build trusts (deploy/ci/build-image.sh), for the example server's npx.
if [ -d "$PORTCULLIS_CI_CONF_DIR/build-etc" ]; then export PORTCULLIS_NPM_ETC="$PORTCULLIS_CI_CONF_DIR/build-etc"; fi
echo "image step: compose ready after $((SECONDS - step_start))s"
node_modules/.bin/tap --disable-coverage test/image/compose.test.ts
echo "image step: done in $((SECONDS - step_start))s"
