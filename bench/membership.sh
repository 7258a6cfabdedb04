#!/usr/bin/env bash
# The cluster grows, rebalances and shrinks under load: a 3-node pactdb
# (`pactdb demo`) runs `workload run kv` (writes only by default) while
# this script, one step at a time,
#
#   adds node 4 and node 5   (`admin add-node`, then `pactdb node --join`)
#   rebalances               (`admin rebalance`)
#   removes node 1           (`admin remove-node 1`: its replicas move off,
#                             then it leaves the map and stops by itself)
#
# and prints how long each step took and the write throughput during it,
# against the throughput before the first step:
#
#   step            took(s)  ops/s during  lowest 250ms  vs before
#
# plus the workload's own total line (its error count must be 0). Traffic
# goes to 127.0.0.1 only; everything lives in a temp dir removed at the end
# (KEEP=1 keeps it); every process started here is stopped on exit; a
# watchdog bounds the run (TIME_LIMIT seconds after the build).
#
# Knobs (environment): CLIENTS (32), READS (0), KEYS (10000), VALUE_SIZE
# (128), SETTLE (5: seconds of load before the first and after the last
# step), PACTDB_PORT_OFFSET (660), TIME_LIMIT (600), KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

CLIENTS=${CLIENTS:-32}
READS=${READS:-0}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-128}
SETTLE=${SETTLE:-5}
PACTDB_PORT_OFFSET=${PACTDB_PORT_OFFSET:-660}
TIME_LIMIT=${TIME_LIMIT:-600}

log() { echo "[membership $(date +%H:%M:%S)] $*" >&2; }

log "building pactdb (release)"
cargo build --release --bin pactdb >&2
PACTDB=$ROOT/target/release/pactdb

TMP=$(mktemp -d /tmp/pactdb-membership.XXXXXX)
DEMO_PID=
WORKLOAD_PID=
JOINER_PIDS=()
WATCHDOG_PID=

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "$WORKLOAD_PID" ] && stop_pids "$WORKLOAD_PID"
    [ -n "$DEMO_PID" ] && stop_pids "$DEMO_PID"
    [ ${#JOINER_PIDS[@]} -gt 0 ] && stop_pids "${JOINER_PIDS[@]}"
    # The demo's nodes, should the demo have gone first.
    pkill -KILL -f "data-dir $TMP/" 2>/dev/null
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

peer() { echo "127.0.0.1:$((7000 + PACTDB_PORT_OFFSET + $1))"; }
client() { echo "127.0.0.1:$((7100 + PACTDB_PORT_OFFSET + $1))"; }
now() { date +%s.%N; }

"$PACTDB" demo --data-dir "$TMP/pactdb" --port-offset "$PACTDB_PORT_OFFSET" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
log "waiting for the pactdb demo"
for _ in $(seq 300); do
    [ -f "$TMP/pactdb/cluster.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$TMP/pactdb/cluster.json" ] || { echo "pactdb demo did not start:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
# The demo runs TLS; its client certificate is what client commands use.
export PACTDB_CERTS_DIR=$TMP/pactdb/certs/client
FIRST="$(client 1),$(client 2),$(client 3)"

log "kv load: $CLIENTS clients, $READS% reads, for the whole run"
START=$(now)
"$PACTDB" --endpoints "$FIRST" workload run kv --clients "$CLIENTS" --duration 10m --display-every 250ms \
    --keys "$KEYS" --value-size "$VALUE_SIZE" --read-percent "$READS" \
    >"$TMP/workload.out" 2>"$TMP/workload.log" &
WORKLOAD_PID=$!
sleep "$SETTLE"

STEPS=()
step() { # name start end
    STEPS+=("$1 $2 $3")
}
for n in 4 5; do
    log "adding node $n"
    t0=$(now)
    "$PACTDB" --endpoints "$FIRST" admin add-node --id "$n" --peer "$(peer "$n")" --client "$(client "$n")" >&2
    "$PACTDB" certs issue node --dir "$TMP/pactdb/certs" --id "$n" --out "$TMP/pactdb/certs/node-$n" >&2
    "$PACTDB" node --id "$n" --listen "$(peer "$n")" --client-listen "$(client "$n")" \
        --certs-dir "$TMP/pactdb/certs/node-$n" --data-dir "$TMP/pactdb/node-$n" --join "$FIRST" >"$TMP/node-$n.log" 2>&1 &
    JOINER_PIDS+=($!)
    for _ in $(seq 300); do
        "$PACTDB" --endpoints "$(client "$n")" status >/dev/null 2>&1 && break
        sleep 0.1
    done
    step "add-node-$n" "$t0" "$(now)"
done
log "rebalancing"
t0=$(now)
"$PACTDB" --endpoints "$FIRST" admin rebalance >&2
step "rebalance" "$t0" "$(now)"
log "removing node 1"
t0=$(now)
"$PACTDB" --endpoints "$(client 2),$(client 3),$(client 4),$(client 5)" admin remove-node 1 >&2
step "remove-node-1" "$t0" "$(now)"
sleep "$SETTLE"
END=$(now)
kill -INT "$WORKLOAD_PID" 2>/dev/null || true
wait "$WORKLOAD_PID" 2>/dev/null || true
WORKLOAD_PID=

"$PACTDB" --endpoints "$(client 2)" status | head -4 >&2

python3 - "$TMP/workload.log" "$START" "$END" "${STEPS[@]}" <<'EOF'
import re, sys
log, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
steps = [s.split() for s in sys.argv[4:]]
# Progress lines: elapsed(s) ops/sec ops errors, every 250 ms of the run.
points = []
for line in open(log):
    m = re.match(r"\s*([\d.]+)s\s+(\d+)\s+(\d+)\s+(\d+)", line)
    if m:
        points.append((float(m.group(1)), int(m.group(2)), int(m.group(4))))
def window(a, b):
    # The buckets that overlap [a, b] (seconds since the load began).
    return [p for p in points if p[0] > a and p[0] - 0.25 < b]
first = float(steps[0][1]) - start
before = [p[1] for p in window(0.5, first)]
base = sum(before) / len(before) if before else 0
print()
print(f"{'step':<16} {'took(s)':>8} {'ops/s during':>13} {'lowest 250ms':>13} {'vs before':>10}")
print(f"{'before':<16} {first:>8.1f} {base:>13.0f} {min(before, default=0):>13} {'1.00':>10}")
for name, a, b in steps:
    a, b = float(a) - start, float(b) - start
    w = [p[1] for p in window(a, b)]
    mean = sum(w) / len(w) if w else 0
    print(f"{name:<16} {b - a:>8.2f} {mean:>13.0f} {min(w, default=0):>13} {mean / base if base else 0:>10.2f}")
after = [p[1] for p in window(float(steps[-1][2]) - start + 0.5, end - start)]
mean = sum(after) / len(after) if after else 0
print(f"{'after':<16} {'':>8} {mean:>13.0f} {min(after, default=0):>13} {mean / base if base else 0:>10.2f}")
errors = points[-1][2] if points else -1
print()
print(f"workload errors: {errors}")
EOF
grep -E "^total|errors" "$TMP/workload.out" >&2 || true
