#!/usr/bin/env bash
# Prints the path of a podman-compose that runs deploy/docker-compose.yml as written.
#
# Debian's podman-compose of the suite the image is built on (trixie: 1.3.0), not the
# machine's own when that is older: bookworm's 1.0.3 passes `network_mode: service:gateway`
# to podman as it is and puts nginx on the project network as well, which podman refuses;
# 1.3.0 makes it `--network container:<gateway>`, as Docker Compose does. The
# package is pure Python on python3-yaml and python3-dotenv: fetched with apt-get through a
# sources list of its own in the cache (the machine's apt sources are not touched), unpacked
# under $PORTCULLIS_CI_CACHE/podman-compose/, and kept there until this script changes.
# It runs podman through deploy/ci/podman-for-compose.sh (healthchecks without systemd).
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=deploy/ci/podman-env.sh
source deploy/ci/podman-env.sh >&2

if ! /usr/bin/python3 -c 'import yaml, dotenv' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml python3-dotenv >&2
fi

key="$( (sha256sum deploy/ci/podman-compose.sh | cut -d' ' -f1; echo "$PORTCULLIS_CI_SUITE $PORTCULLIS_CI_MIRROR") | sha256sum | cut -c1-16)"
dir="$PORTCULLIS_CI_CACHE/podman-compose/$PORTCULLIS_CI_SUITE-$key"
if [ ! -s "$dir/usr/lib/python3/dist-packages/podman_compose.py" ]; then
  apt_dir="$(mktemp -d /tmp/portcullis-ci-apt.XXXXXX)"
  trap 'rm -rf "$apt_dir"' EXIT
  mkdir -p "$apt_dir/sources" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/deb"
  cat > "$apt_dir/sources/$PORTCULLIS_CI_SUITE.sources" <<SOURCES
Types: deb
URIs: $PORTCULLIS_CI_MIRROR
Suites: $PORTCULLIS_CI_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  apt_options=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt_dir/sources"
    -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o "Dir::State::status=/dev/null"
    -o "APT::Sandbox::User=root")
  apt-get "${apt_options[@]}" -qq update >&2
  (cd "$apt_dir/deb" && apt-get "${apt_options[@]}" -qq download podman-compose >&2)
  rm -rf "$dir.partial" && mkdir -p "$dir.partial"
  dpkg-deb -x "$apt_dir"/deb/podman-compose_*.deb "$dir.partial"
  rm -rf "$dir" && mv "$dir.partial" "$dir"
  # One is enough: drop the ones of earlier versions of this script.
  find "$PORTCULLIS_CI_CACHE/podman-compose" -mindepth 1 -maxdepth 1 ! -path "$dir" -exec rm -rf {} +
fi
# The command itself, with this checkout's podman, rewritten on every run.
printf '#!/bin/sh\nexec /usr/bin/python3 %s --podman-path %s "$@"\n' \
  "$dir/usr/lib/python3/dist-packages/podman_compose.py" "$PWD/deploy/ci/podman-for-compose.sh" > "$PORTCULLIS_CI_CONF_DIR/podman-compose"
chmod 755 "$PORTCULLIS_CI_CONF_DIR/podman-compose"
echo "$PORTCULLIS_CI_CONF_DIR/podman-compose"
