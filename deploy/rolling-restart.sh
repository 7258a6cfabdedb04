#!/usr/bin/env bash
# Restarts the compose cluster's nodes one at a time, waiting after each
# until it is back in all its groups and caught up, so clients see nothing
# worse than retries. With --upgrade BINARY, each node comes back on a new
# image built from BINARY (its data volume carries over): a rolling upgrade.
#
# usage: deploy/rolling-restart.sh [--upgrade BINARY] [--wait-s SECONDS]
set -euo pipefail
DEPLOY_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
. "$DEPLOY_DIR/cluster.conf"
upgrade="" wait_s=120
while [ $# -gt 0 ]; do
    case $1 in
        --upgrade) upgrade=$2; shift 2 ;;
        --wait-s) wait_s=$2; shift 2 ;;
        *) echo "usage: $0 [--upgrade BINARY] [--wait-s SECONDS]" >&2; exit 2 ;;
    esac
done
[ -f "$PACTDB_STATE_DIR/env" ] || { echo "rolling-restart.sh: no cluster (run deploy/up.sh first)" >&2; exit 1; }
set -a; . "$PACTDB_STATE_DIR/env"; set +a
PACTDB_BIN=${PACTDB_BIN:-$ROOT/target/release/pactdb}
pactdb_compose_env

status_json() { timeout 20 "$PACTDB_BIN" status --json 2>/dev/null; }

# Waits until the cluster is ready (deploy/ready.py) with node $1 back in groups $2...
wait_ready() {
    local deadline=$((SECONDS + wait_s)) why=""
    while [ $SECONDS -lt $deadline ]; do
        if why=$(status_json | python3 "$DEPLOY_DIR/ready.py" "$@" 2>&1); then return 0; fi
        sleep 0.5
    done
    echo "rolling-restart.sh: not ready after ${wait_s}s: $why" >&2
    return 1
}

if [ -n "$upgrade" ]; then
    "$DEPLOY_DIR/build-image.sh" "$upgrade" "$PACTDB_IMAGE"
fi
wait_ready
# Which groups each node serves, read once from a ready cluster: what every
# node must be back in before the next one goes.
declare -A groups_of
for n in $(seq 1 "$PACTDB_NODES"); do
    groups_of[$n]=$(status_json | python3 -c "
import json, sys
print(' '.join(str(g['group']) for g in json.load(sys.stdin)['groups'] if $n in g['members']))")
done
for n in $(seq 1 "$PACTDB_NODES"); do
    groups=${groups_of[$n]}
    start=$SECONDS
    if [ -n "$upgrade" ]; then
        # A new container from the new image, on the same volume and address.
        timeout 120 docker-compose --project-name "$PACTDB_PROJECT" --file "$DEPLOY_DIR/docker-compose.yml" \
            up --detach --no-deps --force-recreate --timeout 10 "node$n" >/dev/null 2>&1
    else
        timeout 60 docker restart --time 10 "${PACTDB_CONTAINER_PREFIX}$n" >/dev/null
    fi
    # shellcheck disable=SC2086 # the group ids are words
    wait_ready "$n" $groups
    echo "node $n restarted${upgrade:+ on the new image} and back in groups [${groups// /, }] after $((SECONDS - start))s"
done
echo "rolling restart done: $PACTDB_NODES nodes"
