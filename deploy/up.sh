#!/usr/bin/env bash
# Brings up a five-node pactdb cluster in containers and bootstraps it:
#   builds the image from a release build (or from $PACTDB_BIN),
#   issues a cluster CA and node and client certificates (unless they exist),
#   starts deploy/docker-compose.yml, waits for every node, bootstraps,
#   and writes $PACTDB_STATE_DIR/env for the CLI on this host.
# Running it again on a running cluster changes nothing. If it fails, it
# removes what it made (PACTDB_KEEP=1 keeps it for a post-mortem).
#
# Options (environment): PACTDB_BIN (a pactdb binary; default: build
# target/release/pactdb), PACTDB_INSECURE=1 (plaintext, no certificates),
# and the settings of deploy/cluster.conf.
set -euo pipefail
DEPLOY_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
. "$DEPLOY_DIR/cluster.conf"

for tool in docker docker-compose timeout; do
    command -v "$tool" >/dev/null || { echo "up.sh: $tool is not installed" >&2; exit 1; }
done

if [ -z "${PACTDB_BIN:-}" ]; then
    echo "building pactdb (release)..."
    (cd "$ROOT" && cargo build --release --quiet --bin pactdb)
    PACTDB_BIN=$ROOT/target/release/pactdb
fi
[ -x "$PACTDB_BIN" ] || { echo "up.sh: $PACTDB_BIN is not an executable" >&2; exit 1; }

compose() {
    timeout 180 docker-compose --project-name "$PACTDB_PROJECT" --file "$DEPLOY_DIR/docker-compose.yml" "$@"
}

on_failure() {
    local rc=$?
    echo "up.sh: failed (exit $rc); the nodes' last log lines:" >&2
    for n in $(seq 1 "$PACTDB_NODES"); do
        echo "--- ${PACTDB_CONTAINER_PREFIX}$n" >&2
        timeout 10 docker logs --tail 15 "${PACTDB_CONTAINER_PREFIX}$n" >&2 2>&1 || true
    done
    if [ "${PACTDB_KEEP:-0}" != 1 ]; then
        "$DEPLOY_DIR/down.sh" >&2 || true
    fi
    exit "$rc"
}
trap on_failure ERR
trap 'echo "up.sh: interrupted" >&2; on_failure' INT TERM

"$DEPLOY_DIR/build-image.sh" "$PACTDB_BIN" "$PACTDB_IMAGE"

pactdb_compose_env
endpoints=""
for n in $(seq 1 "$PACTDB_NODES"); do
    endpoints="$endpoints${endpoints:+,}$(pactdb_ip_of "$n"):7100"
done

certs=$PACTDB_CERTS
mkdir -p "$certs"
if [ "${PACTDB_INSECURE:-0}" = 1 ]; then
    for n in $(seq 1 "$PACTDB_NODES"); do mkdir -p "$certs/node-$n"; done
    client_security="PACTDB_INSECURE=1"
else
    if [ ! -f "$certs/ca.crt" ]; then
        "$PACTDB_BIN" certs init --dir "$certs"
    fi
    for n in $(seq 1 "$PACTDB_NODES"); do
        [ -f "$certs/node-$n/node.crt" ] ||
            "$PACTDB_BIN" certs issue node --dir "$certs" --id "$n" --host "$(pactdb_ip_of "$n")" --out "$certs/node-$n"
    done
    [ -f "$certs/client/client.crt" ] ||
        "$PACTDB_BIN" certs issue client --dir "$certs" --name admin --out "$certs/client"
    client_security="PACTDB_CERTS_DIR=$certs/client"
fi

compose up --detach --no-build

# Every node must listen before bootstrap asks each who it is.
deadline=$((SECONDS + PACTDB_UP_TIMEOUT_S))
for n in $(seq 1 "$PACTDB_NODES"); do
    until timeout 1 bash -c "exec 3<>/dev/tcp/$(pactdb_ip_of "$n")/7100" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "up.sh: node $n did not listen on $(pactdb_ip_of "$n"):7100 within ${PACTDB_UP_TIMEOUT_S}s" >&2
            false
        fi
        sleep 0.2
    done
done

cat > "$PACTDB_STATE_DIR/env" <<ENV
PACTDB_ENDPOINTS=$endpoints
$client_security
PACTDB_PROJECT=$PACTDB_PROJECT
PACTDB_CONTAINER_PREFIX=$PACTDB_CONTAINER_PREFIX
PACTDB_SUBNET_PREFIX=$PACTDB_SUBNET_PREFIX
PACTDB_NODES=$PACTDB_NODES
ENV
set -a
. "$PACTDB_STATE_DIR/env"
set +a

# shellcheck disable=SC2086 # the layout arguments are words
timeout "$PACTDB_UP_TIMEOUT_S" "$PACTDB_BIN" bootstrap $PACTDB_BOOTSTRAP_ARGS

echo
echo "pactdb is up: $PACTDB_NODES nodes in containers ${PACTDB_CONTAINER_PREFIX}1-$PACTDB_NODES (project $PACTDB_PROJECT)"
echo "  client endpoints: $endpoints"
if [ "${PACTDB_INSECURE:-0}" = 1 ]; then
    echo "  plaintext (PACTDB_INSECURE=1): no credentials needed"
else
    echo "  client credentials: $certs/client (ca.crt, client.crt, client.key); CA key: $certs/ca.key"
fi
echo "  to use the CLI on this host:  set -a; . $PACTDB_STATE_DIR/env; set +a; pactdb status"
echo "  to remove everything:         $DEPLOY_DIR/down.sh"
