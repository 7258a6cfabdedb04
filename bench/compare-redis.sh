#!/usr/bin/env bash
# Benchmarks pactdb's Redis front end against Redis itself, with Redis's own
# load generator (redis-benchmark), in one run on this machine:
#
#   - pactdb: a 3-node `pactdb demo` (3 groups of 3 members, every write
#     fsynced on every member before it is acknowledged), plaintext like
#     the Redis here; redis-benchmark talks to node 1's Redis port only,
#     which routes every key to its group.
#   - Redis: one `redis-server` (no replicas), `--appendonly yes
#     --appendfsync always` (every write fsynced before it is acknowledged),
#     on its own port, in a temp dir, nothing saved elsewhere.
#
# Each gets `redis-benchmark -t set,get -c CLIENTS -n REQUESTS -d VALUE_SIZE
# -r KEYSPACE` (random keys, so no single-key contention), and the script
# prints
#
#   ratio set-throughput pactdb/redis = X.XX   (higher is better for pactdb)
#   ratio get-throughput pactdb/redis = X.XX   (higher is better for pactdb)
#   ratio set-p99 pactdb/redis = X.XX          (lower is better for pactdb)
#   ratio get-p99 pactdb/redis = X.XX          (lower is better for pactdb)
#
# Installs redis-server and redis-tools from Debian if missing. Every
# process started here is stopped on exit (also on Ctrl-C), the temp dir is
# removed (KEEP=1 keeps it), and a watchdog bounds the run (TIME_LIMIT s).
#
# Knobs (environment): REQUESTS (200000), CLIENTS (256), VALUE_SIZE (128),
# KEYSPACE (100000), REDIS_PORT (16379), PACTDB_PORT_OFFSET (640: pactdb
# nodes on 7641-7643, 7741-7743, Redis protocol on 7019-7021), TIME_LIMIT
# (900), KEEP, PACTDB_TLS (0; 1 runs pactdb with TLS, redis-benchmark then
# with --tls and the demo's client certificate).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-256}
VALUE_SIZE=${VALUE_SIZE:-128}
KEYSPACE=${KEYSPACE:-100000}
REDIS_PORT=${REDIS_PORT:-16379}
PACTDB_PORT_OFFSET=${PACTDB_PORT_OFFSET:-640}
TIME_LIMIT=${TIME_LIMIT:-900}

log() { echo "[compare-redis $(date +%H:%M:%S)] $*" >&2; }

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    log "installing redis-server and redis-tools from Debian"
    if [ "$(id -u)" -ne 0 ]; then
        echo "redis is missing and installing it needs root (apt-get install redis-server redis-tools)" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >&2
fi

log "building pactdb (release)"
cargo build --release --bin pactdb >&2
PACTDB=$ROOT/target/release/pactdb

TMP=$(mktemp -d /tmp/pactdb-compare-redis.XXXXXX)
REDIS_PID=
DEMO_PID=
WATCHDOG_PID=

node_pids() { # the pids cluster.json lists (the demo's children)
    [ -f "$TMP/pactdb/cluster.json" ] &&
        python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$TMP/pactdb/cluster.json" ||
        true
}

stop_redis() {
    if [ -n "$REDIS_PID" ]; then stop_pids "$REDIS_PID"; fi
    REDIS_PID=
}

stop_pactdb() {
    local nodes
    nodes=$(node_pids)
    if [ -n "$DEMO_PID" ]; then stop_pids "$DEMO_PID"; fi
    DEMO_PID=
    # shellcheck disable=SC2086
    for p in $nodes; do kill -KILL "$p" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_redis
    stop_pactdb
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

PACTDB_REDIS_PORT=$((6378 + PACTDB_PORT_OFFSET + 1))
for q in "$REDIS_PORT" "$PACTDB_REDIS_PORT"; do
    port_free "$q" || { echo "port $q is in use; set REDIS_PORT or PACTDB_PORT_OFFSET" >&2; exit 1; }
done
for i in 1 2 3; do
    for q in $((7000 + PACTDB_PORT_OFFSET + i)) $((7100 + PACTDB_PORT_OFFSET + i)) $((6378 + PACTDB_PORT_OFFSET + i)); do
        port_free "$q" || { echo "port $q is in use; set PACTDB_PORT_OFFSET" >&2; exit 1; }
    done
done

# bench SYSTEM PORT [redis-benchmark TLS args...]: one SET run and one GET
# run (GET after SET, so reads find values), CSV kept per system.
bench() {
    local system=$1 port=$2
    shift 2
    log "$system: redis-benchmark -t set,get -c $CLIENTS -n $REQUESTS -d $VALUE_SIZE -r $KEYSPACE"
    redis-benchmark "$@" -h 127.0.0.1 -p "$port" -t set,get -c "$CLIENTS" -n "$REQUESTS" -d "$VALUE_SIZE" \
        -r "$KEYSPACE" --csv >"$TMP/$system.csv"
    cat "$TMP/$system.csv" >&2
}

# --- Redis ----------------------------------------------------------------------
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$TMP/redis" --appendonly yes --appendfsync always \
    --save "" --daemonize no --logfile "$TMP/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do
    redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
REDIS_VERSION=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
bench redis "$REDIS_PORT"
stop_redis
rm -rf "$TMP/redis"
sync

# --- pactdb ---------------------------------------------------------------------
TLS_ARGS=()
if [ "${PACTDB_TLS:-0}" = 1 ]; then
    SECURITY=()
    C=$TMP/pactdb/certs/client
    TLS_ARGS=(--tls --cacert "$C/ca.crt" --cert "$C/client.crt" --key "$C/client.key")
else
    SECURITY=(--insecure)
fi
"$PACTDB" demo "${SECURITY[@]}" --data-dir "$TMP/pactdb" --port-offset "$PACTDB_PORT_OFFSET" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
log "waiting for the pactdb demo"
for _ in $(seq 300); do
    [ -f "$TMP/pactdb/cluster.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$TMP/pactdb/cluster.json" ] || { echo "pactdb demo did not start:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
for _ in $(seq 100); do
    [ "$(redis-cli "${TLS_ARGS[@]}" -p "$PACTDB_REDIS_PORT" set compare-redis:ready 1 2>/dev/null)" = OK ] && break
    sleep 0.2
done
bench pactdb "$PACTDB_REDIS_PORT" "${TLS_ARGS[@]}"
stop_pactdb

# --- the figures ------------------------------------------------------------------
python3 - "$TMP" "$REDIS_VERSION" "$CLIENTS" "$REQUESTS" "$VALUE_SIZE" <<'EOF'
import csv, sys

tmp, version, clients, requests, size = sys.argv[1:]
res = {}
for system in ("redis", "pactdb"):
    with open(f"{tmp}/{system}.csv") as f:
        for row in csv.DictReader(f):
            res[(system, row["test"].split()[0].lower())] = row
print(f"redis-benchmark -c {clients} -n {requests} -d {size}; redis {version} (appendfsync always, 1 node), "
      "pactdb 3 nodes x 3 groups x 3 members (fsync on)")
print(f"{'':8}{'system':8}{'req/s':>12}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
for test in ("set", "get"):
    for system in ("redis", "pactdb"):
        r = res[(system, test)]
        print(f"{test:8}{system:8}{float(r['rps']):>12.0f}{float(r['p50_latency_ms']):>9.3f}"
              f"{float(r['p99_latency_ms']):>9.3f}{float(r['max_latency_ms']):>9.3f}")
for test in ("set", "get"):
    p, r = res[("pactdb", test)], res[("redis", test)]
    print(f"ratio {test}-throughput pactdb/redis = {float(p['rps']) / float(r['rps']):.2f}")
for test in ("set", "get"):
    p, r = res[("pactdb", test)], res[("redis", test)]
    print(f"ratio {test}-p99 pactdb/redis = {float(p['p99_latency_ms']) / max(float(r['p99_latency_ms']), 0.001):.2f}")
EOF
