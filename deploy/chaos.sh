#!/usr/bin/env bash
# Faults across hosts, checked: runs `pactdb chaos` (a recorded workload,
# faults injected one at a time in a seeded order, the simulator's checkers
# on the history) against the compose cluster of deploy/up.sh.
#
# usage: deploy/chaos.sh [--seconds N] [--seed S] [other `pactdb chaos` options]
#
# If the cluster of this project (deploy/cluster.conf: PACTDB_PROJECT, ...)
# is up (its env file exists and every container runs), it is used and
# left running, healed. Otherwise this script starts one with up.sh and
# removes it with down.sh when it exits, also after a failure, Ctrl-C or
# SIGTERM. Partitions need root (iptables inside each container's network
# namespace, through nsenter). The binary is ${PACTDB_BIN:-target/release/pactdb}.
# Exit status: pactdb chaos's (0: no anomaly, every fault injected and
# recovered from).
set -euo pipefail
DEPLOY_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
. "$DEPLOY_DIR/cluster.conf"

PACTDB_BIN=${PACTDB_BIN:-$ROOT/target/release/pactdb}
export PACTDB_BIN
[ -x "$PACTDB_BIN" ] || {
    echo "chaos.sh: $PACTDB_BIN is not an executable (cargo build --release, or set PACTDB_BIN)" >&2
    exit 1
}
command -v docker >/dev/null || { echo "chaos.sh: docker is not installed" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then
    echo "chaos.sh: not root: partitions (isolate, split, link, asymmetric) need root for nsenter and iptables;" >&2
    echo "          run as root, or choose other faults with --faults kill,pause,restart-all,rolling" >&2
fi

cluster_runs() {
    [ -f "$PACTDB_STATE_DIR/env" ] || return 1
    local n status
    for n in $(seq 1 "$PACTDB_NODES"); do
        status=$(timeout 30 docker inspect -f '{{.State.Status}}' "${PACTDB_CONTAINER_PREFIX}$n" 2>/dev/null) || return 1
        # A paused container is one an interrupted run left: chaos restores it.
        case $status in running | paused) ;; *) return 1 ;; esac
    done
}

child=
started=0
cleanup() {
    local rc=$?
    if [ "$started" = 1 ]; then
        echo "chaos.sh: removing the cluster it started (project $PACTDB_PROJECT)" >&2
        "$DEPLOY_DIR/down.sh" >&2 || rc=1
    fi
    exit "$rc"
}
on_signal() {
    # pactdb chaos heals every fault on SIGTERM before it exits.
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

if cluster_runs; then
    echo "chaos.sh: using the running cluster of project $PACTDB_PROJECT ($PACTDB_STATE_DIR/env)"
else
    echo "chaos.sh: no running cluster of project $PACTDB_PROJECT: starting one with up.sh"
    started=1
    "$DEPLOY_DIR/up.sh"
fi
set -a
. "$PACTDB_STATE_DIR/env"
set +a

# In the background so that a signal reaches the trap at once.
rc=0
"$PACTDB_BIN" chaos "$@" &
child=$!
wait "$child" || rc=$?
child=
exit "$rc"
