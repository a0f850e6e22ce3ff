#!/usr/bin/env bash
# podman as CI's podman-compose runs it (deploy/ci/podman-compose.sh): podman itself, except
# `podman wait --condition=healthy <container>…`. podman-compose waits that way for
# `depends_on: condition: service_healthy` (the gateway on Redis, nginx on the gateway), and
# retries for ever when it fails: podman 4.3 (Debian bookworm) has no such condition, and it
# could not come true anyway, since podman runs healthchecks from systemd timers and CI
# machines have no systemd. So here each container's own healthcheck is run, as its timer
# would, every second until it passes; a container that stops fails the wait.
set -euo pipefail

args=("$@")
for i in "${!args[@]}"; do
  if [ "${args[$i]}" = wait ] && [ "${args[$((i + 1))]:-}" = --condition=healthy ]; then
    for name in "${args[@]:$((i + 2))}"; do
      until podman healthcheck run "$name" >/dev/null 2>&1; do
        if [ "$(podman inspect --format '{{.State.Running}}' "$name")" != true ]; then
          echo "$name stopped before it was healthy" >&2
          exit 1
        fi
        sleep 1
      done
    done
    exit 0
  fi
done
exec podman "$@"
