#!/usr/bin/env bash
# Removes everything deploy/up.sh made: the containers, the network, the
# data volumes, the image and the generated certificates and env file.
# Safe to run twice, and on a cluster that only partly came up.
set -uo pipefail
DEPLOY_DIR=$(cd "$(dirname "$0")" && pwd)
. "$DEPLOY_DIR/cluster.conf"
# Compose interpolates the file even to tear it down.
pactdb_compose_env

# A paused container cannot be stopped: unpause first.
for c in $(timeout 30 docker ps -q --filter "name=^${PACTDB_CONTAINER_PREFIX}[0-9]+$" --filter status=paused); do
    timeout 30 docker unpause "$c" >/dev/null || true
done
timeout 180 docker-compose --project-name "$PACTDB_PROJECT" --file "$DEPLOY_DIR/docker-compose.yml" \
    down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true
# Whatever compose did not know about (a failed `up`, a renamed file).
for c in $(timeout 30 docker ps -aq --filter "name=^${PACTDB_CONTAINER_PREFIX}[0-9]+$"); do
    timeout 60 docker rm -f -v "$c" >/dev/null || true
done
timeout 60 docker network rm "$PACTDB_NETWORK" >/dev/null 2>&1 || true
for n in $(seq 1 "$PACTDB_NODES"); do
    timeout 60 docker volume rm "${PACTDB_PROJECT}_data$n" >/dev/null 2>&1 || true
done
timeout 60 docker image rm -f "$PACTDB_IMAGE" >/dev/null 2>&1 || true
rm -rf "$PACTDB_STATE_DIR"

left=$(timeout 30 docker ps -aq --filter "name=^${PACTDB_CONTAINER_PREFIX}[0-9]+$")
if [ -n "$left" ] || timeout 30 docker network inspect "$PACTDB_NETWORK" >/dev/null 2>&1; then
    echo "down.sh: could not remove everything of project $PACTDB_PROJECT" >&2
    exit 1
fi
echo "removed pactdb cluster $PACTDB_PROJECT (containers, network, volumes, image, $PACTDB_STATE_DIR)"
