#!/usr/bin/env bash
# Sourced by the other deploy/ci scripts: podman installed and configured for this run.
#
# Debian's podman builds and runs the Dockerfile on a machine without Docker. Its settings go
# in files of this CI run (CONTAINERS_CONF, CONTAINERS_REGISTRIES_CONF), never over the
# machine's own /etc/containers:
# - runtime runc and cgroupfs: crun refuses these machines' hybrid cgroup v1 hierarchy, and
#   there is no systemd to manage cgroups;
# - default_ulimits = []: the default NOFILE ulimit is higher than the machine's hard limit
#   and the container would not start;
# - docker.io as the one search registry, so the Dockerfile's short name `node:…` finds the
#   locally imported stand-in; nothing is ever pulled (no image registry is reachable).
set -euo pipefail

# package:command — iproute2 brings up loopback in the image test's private network namespace.
missing=()
for pair in podman:podman runc:runc debootstrap:debootstrap iproute2:ip; do
  command -v "${pair#*:}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair#*:}" ] || missing+=("${pair%%:*}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PORTCULLIS_CI_CACHE="${PORTCULLIS_CI_CACHE:-/var/cache/portcullis-ci}"
export PORTCULLIS_CI_CACHE
mkdir -p "$PORTCULLIS_CI_CACHE"

# This project's own config files, rewritten on every run.
PORTCULLIS_CI_CONF_DIR="$PORTCULLIS_CI_CACHE/conf"
export PORTCULLIS_CI_CONF_DIR
mkdir -p "$PORTCULLIS_CI_CONF_DIR"
cat > "$PORTCULLIS_CI_CONF_DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = []

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$PORTCULLIS_CI_CONF_DIR/registries.conf" <<'CONF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
CONF
export CONTAINERS_CONF="$PORTCULLIS_CI_CONF_DIR/containers.conf"
export CONTAINERS_REGISTRIES_CONF="$PORTCULLIS_CI_CONF_DIR/registries.conf"

# The Dockerfile's base image (node:<NODE_VERSION>-<suite>-slim), which deploy/ci/base-image.sh
# builds, and where Debian packages come from: the mirror this machine already uses.
PORTCULLIS_CI_NODE_LINE="$(sed -n 's/^ARG NODE_VERSION=\([0-9][0-9]*\).*/\1/p' Dockerfile)"
base_from="$(sed -n 's/^FROM \(node:[^ ]*\).*/\1/p' Dockerfile | head -1)"
PORTCULLIS_CI_BASE_IMAGE="docker.io/library/${base_from//\$\{NODE_VERSION\}/$PORTCULLIS_CI_NODE_LINE}"  # node:26-trixie-slim
PORTCULLIS_CI_SUITE="$(sed -n 's/.*-\([a-z]*\)-slim$/\1/p' <<<"$PORTCULLIS_CI_BASE_IMAGE")"                     # trixie
PORTCULLIS_CI_MIRROR="${DEBIAN_MIRROR:-$(sed -n 's/^URIs: \(http[^ ]*\/debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}"
PORTCULLIS_CI_MIRROR="${PORTCULLIS_CI_MIRROR:-http://deb.debian.org/debian}"
export PORTCULLIS_CI_NODE_LINE PORTCULLIS_CI_BASE_IMAGE PORTCULLIS_CI_SUITE PORTCULLIS_CI_MIRROR
