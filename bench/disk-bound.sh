#!/usr/bin/env bash
# Shows that a node's disk use stays bounded under an endless overwrite
# workload, and how long recovery takes after it.
#
# Builds pactdb in release, starts a 3-node `pactdb demo` (3 groups of 3, so
# every node holds every group) with small snapshot thresholds, and runs
# `pactdb workload run kv` (puts only, KEYS keys, VALUE_SIZE-byte values)
# in rounds of ROUND until at least PUTS puts completed. After each round it
# prints every node's data-dir size against the bound
#
#   bound = 3 x snapshot + 2 x SNAPSHOT_WAL_BYTES + 2 x WAL_SEGMENT_BYTES + 1 MiB
#
# (two snapshots kept plus one being written, the WAL since the older kept
# snapshot, a segment on either side of it, and the current segment's
# preallocated megabyte; the snapshot is the node's largest snapshot file,
# which is its whole state: every group's keys, sessions and tables).
# Then it kills every node with SIGKILL, restarts them with the commands in
# cluster.json, and prints each node's recovery time (its log's `took_ms`)
# and the time until a put succeeds again. Lines to read:
#
#   round N: P puts so far (R puts/s)
#   node I: data dir X MiB, bound Y MiB (snapshot S MiB), WAL written W MiB
#   node I: recovered in T ms from snapshot
#   writes served again T ms after restarting every node
#
# Traffic goes to 127.0.0.1 only. Everything lives in a temp dir that is
# removed at the end (KEEP=1 keeps it), every process started here is
# stopped on exit, and a watchdog bounds the run (TIME_LIMIT seconds).
#
# Knobs: PUTS (1000000), KEYS (10000), VALUE_SIZE (256), CLIENTS (256),
# CONNS (16), ROUND (20s), SNAPSHOT_WAL_BYTES (16 MiB), WAL_SEGMENT_BYTES
# (8 MiB), PORT_OFFSET (700), TIME_LIMIT (1200), PACTDB (a binary to use
# instead of building), KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PUTS=${PUTS:-1000000}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-256}
CLIENTS=${CLIENTS:-256}
CONNS=${CONNS:-16}
ROUND=${ROUND:-20s}
SNAPSHOT_WAL_BYTES=${SNAPSHOT_WAL_BYTES:-$((16 * 1024 * 1024))}
WAL_SEGMENT_BYTES=${WAL_SEGMENT_BYTES:-$((8 * 1024 * 1024))}
PORT_OFFSET=${PORT_OFFSET:-700}
TIME_LIMIT=${TIME_LIMIT:-1200}

log() { echo "[disk-bound $(date +%H:%M:%S)] $*" >&2; }
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

if [ -z "${PACTDB:-}" ]; then
    log "building pactdb (release)"
    cargo build --release --bin pactdb >&2
    PACTDB=$ROOT/target/release/pactdb
fi

TMP=$(mktemp -d /tmp/pactdb-disk-bound.XXXXXX)
DEMO_PID=
NODE_PIDS=()
WATCHDOG_PID=

json() { python3 -c "import json,sys; d=json.load(open('$TMP/pactdb/cluster.json')); $1"; }

cleanup() {
    local nodes=()
    if [ -f "$TMP/pactdb/cluster.json" ]; then
        read -r -a nodes <<<"$(json 'print(" ".join(str(n["pid"]) for n in d["nodes"]))')"
    fi
    [ -n "$DEMO_PID" ] && stop_pids "$DEMO_PID"
    stop_pids "${nodes[@]}" "${NODE_PIDS[@]}"
    [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null || true
    if [ "${KEEP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
watchdog &
WATCHDOG_PID=$!

"$PACTDB" demo --data-dir "$TMP/pactdb" --port-offset "$PORT_OFFSET" \
    --snapshot-wal-bytes "$SNAPSHOT_WAL_BYTES" --wal-segment-bytes "$WAL_SEGMENT_BYTES" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
for _ in $(seq 300); do
    [ -f "$TMP/pactdb/cluster.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$TMP/pactdb/cluster.json" ] || { echo "pactdb demo did not start" >&2; exit 1; }
# The demo runs TLS; its client certificate is what client commands use.
export PACTDB_CERTS_DIR=$TMP/pactdb/certs/client
ENDPOINTS=$(json 'print(",".join(n["client"] for n in d["nodes"]))')
read -r -a IDS <<<"$(json 'print(" ".join(str(n["id"]) for n in d["nodes"]))')"

mib() { python3 -c "print(f'{$1 / 1048576:.1f}')"; }

report_sizes() {
    local id dir used snap bound written
    for id in "${IDS[@]}"; do
        dir=$TMP/pactdb/node-$id
        used=$(du -sb "$dir/wal" | cut -f1)
        snap=$(find "$dir/wal" -name 'snap-*.snap' -printf '%s\n' | sort -n | tail -n 1)
        snap=${snap:-0}
        bound=$((3 * snap + 2 * SNAPSHOT_WAL_BYTES + 2 * WAL_SEGMENT_BYTES + 1048576))
        written=$(grep -c 'snapshot .* installed' "$dir/node.log" || true)
        echo "node $id: data dir $(mib "$used") MiB, bound $(mib "$bound") MiB (snapshot $(mib "$snap") MiB), $written snapshots so far" \
            "$([ "$used" -le "$bound" ] && echo within || echo OVER)"
    done
}

done_puts=0
round=0
while [ "$done_puts" -lt "$PUTS" ]; do
    round=$((round + 1))
    out=$TMP/round-$round.json
    "$PACTDB" workload run kv --target "pactdb://$ENDPOINTS" --clients "$CLIENTS" --conns "$CONNS" \
        --read-percent 0 --keys "$KEYS" --value-size "$VALUE_SIZE" --duration "$ROUND" --json \
        >"$out" 2>"$TMP/round-$round.log" || { log "round $round failed:"; tail -n 5 "$TMP/round-$round.log" >&2; exit 1; }
    read -r ops rate errors <<<"$(python3 -c "import json; r=json.load(open('$out')); print(r['ops'], int(r['ops_per_sec']), r['errors'])")"
    done_puts=$((done_puts + ops))
    echo "round $round: $done_puts puts so far ($rate puts/s, $errors errors)"
    report_sizes
done

log "killing every node (SIGKILL) and restarting it"
read -r -a PIDS <<<"$(json 'print(" ".join(str(n["pid"]) for n in d["nodes"]))')"
for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
# The demo notices its children died; it must not restart or hold anything.
stop_pids "$DEMO_PID"
DEMO_PID=
for p in "${PIDS[@]}"; do
    while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
done
for port in $(json 'print(" ".join(n[k].rsplit(":", 1)[1] for n in d["nodes"] for k in ("peer", "client")))'); do
    for _ in $(seq 100); do port_free "$port" && break; sleep 0.1; done
done
start_ns=$(date +%s%N)
for i in "${!IDS[@]}"; do
    cmd=$(json "import shlex; print(shlex.join(d['nodes'][$i]['command']))")
    log=$(json "print(d['nodes'][$i]['log'])")
    eval "exec $cmd" >>"$log" 2>&1 &
    NODE_PIDS+=($!)
done
ok=0
for _ in $(seq 600); do
    if "$PACTDB" put --endpoints "$ENDPOINTS" disk-bound-probe after-restart >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.05
done
end_ns=$(date +%s%N)
[ $ok = 1 ] || { echo "the cluster did not serve a put within 30 s of the restart" >&2; exit 1; }
for i in "${!IDS[@]}"; do
    kill -0 "${NODE_PIDS[$i]}" 2>/dev/null || { echo "node ${IDS[$i]} did not restart:" >&2; tail -n 3 "$TMP/pactdb/node-${IDS[$i]}/node.log" >&2; exit 1; }
done
for id in "${IDS[@]}"; do
    took=$(grep 'recovered' "$TMP/pactdb/node-$id/node.log" | tail -n 1 | sed -n 's/.*took_ms=\([0-9]*\).*/\1/p')
    from=$(grep -c 'recovering from snapshot' "$TMP/pactdb/node-$id/node.log" || true)
    echo "node $id: recovered in ${took:-?} ms ($([ "$from" -gt 0 ] && echo from snapshot || echo from the WAL alone))"
done
echo "writes served again $(((end_ns - start_ns) / 1000000)) ms after restarting every node"
report_sizes
