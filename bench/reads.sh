#!/usr/bin/env bash
# Reads at each consistency level, side by side in one run: a 3-node pactdb
# (`pactdb demo`, READ_GROUPS passive groups of 3 members, default 1 so that
# every leader read lands on one node), loaded by `workload run kv
# --read-percent READS` with, in turn:
#
#   linearizable-leader  reads at the primary, under its lease (the default)
#   linearizable-any     reads at any member, which asks the primary for a
#                        read index first (--read-from any)
#   session              reads at any member that applied the client's token
#   stale                reads at any member at most STALE_MS old
#
# Prints a table and one line per level:
#
#   ratio read-throughput LEVEL/linearizable-leader = X.XX
#
# Traffic goes to 127.0.0.1 only; everything lives in a temp dir removed at
# the end (KEEP=1 keeps it); every process started here is stopped on exit;
# a watchdog bounds the run (TIME_LIMIT seconds after the build).
#
# Knobs (environment): DURATION (10s), RAMP (2s), CLIENTS (128), CONNS (8),
# READS (90), KEYS (10000), VALUE_SIZE (128), READ_GROUPS (1; GROUPS is a
# bash variable), STALE_MS (100),
# PACTDB_PORT_OFFSET (650), TIME_LIMIT (600), KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-10s}
RAMP=${RAMP:-2s}
CLIENTS=${CLIENTS:-128}
CONNS=${CONNS:-8}
READS=${READS:-90}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-128}
READ_GROUPS=${READ_GROUPS:-1}
STALE_MS=${STALE_MS:-100}
PACTDB_PORT_OFFSET=${PACTDB_PORT_OFFSET:-650}
TIME_LIMIT=${TIME_LIMIT:-600}

log() { echo "[reads $(date +%H:%M:%S)] $*" >&2; }

log "building pactdb (release)"
cargo build --release --bin pactdb >&2
PACTDB=$ROOT/target/release/pactdb

TMP=$(mktemp -d /tmp/pactdb-reads.XXXXXX)
DEMO_PID=
WATCHDOG_PID=

node_pids() { # the pids cluster.json lists (the demo's children)
    [ -f "$TMP/pactdb/cluster.json" ] &&
        python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$TMP/pactdb/cluster.json" ||
        true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local nodes
    nodes=$(node_pids)
    if [ -n "$DEMO_PID" ]; then stop_pids "$DEMO_PID"; fi
    # shellcheck disable=SC2086
    for p in $nodes; do kill -KILL "$p" 2>/dev/null || true; done
    if [ -n "$WATCHDOG_PID" ]; then kill "$WATCHDOG_PID" 2>/dev/null || true; fi
    if [ -n "${KEEP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
watchdog &
WATCHDOG_PID=$!

"$PACTDB" demo --data-dir "$TMP/pactdb" --port-offset "$PACTDB_PORT_OFFSET" \
    --groups "$READ_GROUPS" --active-groups 0 >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
log "waiting for the pactdb demo ($READ_GROUPS passive group(s) of 3)"
for _ in $(seq 300); do
    [ -f "$TMP/pactdb/cluster.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$TMP/pactdb/cluster.json" ] || { echo "pactdb demo did not start:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
# The demo runs TLS; its client certificate is what client commands use.
export PACTDB_CERTS_DIR=$TMP/pactdb/certs/client
ENDPOINTS=$(python3 -c 'import json,sys; print(",".join(n["client"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$TMP/pactdb/cluster.json")

LEVELS=(
    "linearizable-leader linearizable leader"
    "linearizable-any linearizable any"
    "session session leader"
    "stale stale=$STALE_MS leader"
)
for level in "${LEVELS[@]}"; do
    read -r name consistency from <<<"$level"
    log "kv at $name: $CLIENTS clients, $READS% reads, $DURATION"
    "$PACTDB" --endpoints "$ENDPOINTS" workload run kv --clients "$CLIENTS" --conns "$CONNS" \
        --duration "$DURATION" --ramp "$RAMP" --keys "$KEYS" --value-size "$VALUE_SIZE" \
        --read-percent "$READS" --read-consistency "$consistency" --read-from "$from" \
        --json >"$TMP/result-$name.json" 2>"$TMP/workload-$name.log" ||
        { log "workload at $name failed:"; cat "$TMP/workload-$name.log" >&2; }
done

python3 - "$TMP" <<'EOF'
import json, os, sys
tmp = sys.argv[1]
names = ["linearizable-leader", "linearizable-any", "session", "stale"]
res = {}
for n in names:
    try:
        res[n] = json.load(open(os.path.join(tmp, f"result-{n}.json")))
    except (OSError, ValueError):
        res[n] = None
print()
head = f"{'level':<20} {'reads/s':>10} {'writes/s':>10} {'errors':>7} {'read p50':>9} {'read p99':>9} {'write p99':>9} {'gen-cpu':>7}"
print(head)
print("-" * len(head))
for n in names:
    r = res[n]
    if r is None:
        print(f"{n:<20}   (no result)")
        continue
    rd, wr = r["reads"], r["writes"]
    print(f"{n:<20} {rd['ops_per_sec']:>10.0f} {wr['ops_per_sec']:>10.0f} {r['errors']:>7} "
          f"{rd['latency_ms']['p50']:>9.3f} {rd['latency_ms']['p99']:>9.3f} {wr['latency_ms']['p99']:>9.3f} "
          f"{r['client_cpu_cores']:>7.2f}")
print()
base = res["linearizable-leader"]
for n in names[1:]:
    if base and res[n] and base["reads"]["ops_per_sec"] > 0:
        print(f"ratio read-throughput {n}/linearizable-leader = {res[n]['reads']['ops_per_sec'] / base['reads']['ops_per_sec']:.2f}")
EOF
