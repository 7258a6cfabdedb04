#!/usr/bin/env bash
# Benchmarks pactdb against etcd on this machine with one load generator
# (`pactdb workload run kv` and `workload run bank`, which speak etcd's v3
# gRPC API themselves).
#
# Installs etcd-server from Debian if it is missing, builds pactdb in
# release, then in turn: starts a 3-member etcd cluster on loopback (fsync
# on, as by default), runs the workloads against it, stops it; starts a
# 3-node pactdb (`pactdb demo`), runs the same workloads, stops it. Prints a
# table and one line per headline figure:
#
#   ratio put-throughput pactdb/etcd = X.XX
#   ratio put-p99 pactdb/etcd = X.XX
#   pactdb one-client put-p50 = X.XXX ms
#   ratio transfer-throughput pactdb/etcd = X.XX
#   ratio transfer-p99 pactdb/etcd = X.XX
#   pactdb transfers/s = N
#   pactdb cross-group share = P%
#
# The `transfer` workload is the bank: ACCOUNTS accounts of BALANCE each are
# created on both systems (`workload init bank`), CLIENTS closed-loop
# clients over TRANSFER_CONNS connections move money between random pairs of them
# (`workload run bank`: read both, commit both only if neither changed;
# on etcd two Ranges and one Txn comparing mod_revisions), and
# `workload check bank` then checks the total (and, on pactdb, that no
# prepared transaction or lock is left); a failed check fails the script.
# TRANSFER_CONNS defaults to 8, not CONNS: both systems transfer fastest
# over 8 connections on this machine (fewer, larger batches per wake-up;
# BENCHMARKS.md has the sweep), and both get the same number.
# Audit clients are off by default (AUDIT_CLIENTS): an audit is one Range on
# etcd, served from one revision, but on pactdb one consistent read of
# ACCOUNTS keys that holds shared locks in every group while it reads, so
# they would weigh differently on the two systems; the check covers
# correctness. With AUDIT_CLIENTS > 0 the result line counts the audits.
#
# Traffic goes to 127.0.0.1 only. Everything lives in a temp dir that is
# removed at the end (KEEP=1 keeps it), every process started here is
# stopped on exit, and a watchdog bounds the run (TIME_LIMIT seconds after
# the build).
#
# Knobs (environment): DURATION (15s), RAMP (2s), CLIENTS (256), CONNS (16),
# TRANSFER_CONNS (8),
# ONLY (run just these workloads, by name, e.g. "put-256" or "transfer"),
# KEYS (100000), KEY_SIZE (16), VALUE_SIZE (128), ACCOUNTS (10000),
# BALANCE (1000), AUDIT_CLIENTS (0), ETCD_PORTS
# ("12379 22379 32379"; peers listen on port+1), PACTDB_PORT_OFFSET (600:
# pactdb nodes on 7601-7603 and 7701-7703), TIME_LIMIT (900), KEEP,
# PACTDB_TLS (0: pactdb plaintext, `demo --insecure`, as etcd runs here
# without TLS; 1: pactdb with its default TLS, to see what TLS costs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DURATION=${DURATION:-15s}
RAMP=${RAMP:-2s}
CLIENTS=${CLIENTS:-256}
CONNS=${CONNS:-16}
TRANSFER_CONNS=${TRANSFER_CONNS:-8}
KEYS=${KEYS:-100000}
KEY_SIZE=${KEY_SIZE:-16}
VALUE_SIZE=${VALUE_SIZE:-128}
ACCOUNTS=${ACCOUNTS:-10000}
BALANCE=${BALANCE:-1000}
AUDIT_CLIENTS=${AUDIT_CLIENTS:-0}
read -r -a ETCD_PORTS <<<"${ETCD_PORTS:-12379 22379 32379}"
PACTDB_PORT_OFFSET=${PACTDB_PORT_OFFSET:-600}
TIME_LIMIT=${TIME_LIMIT:-900}

log() { echo "[compare-etcd $(date +%H:%M:%S)] $*" >&2; }

# --- etcd from Debian ---------------------------------------------------------
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    log "installing etcd-server and etcd-client from Debian"
    if [ "$(id -u)" -ne 0 ]; then
        echo "etcd is missing and installing it needs root (apt-get install etcd-server etcd-client)" >&2
        exit 1
    fi
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >&2
fi
ETCD_VERSION=$(etcd --version | awk '/etcd Version/ {print $3}')

# --- pactdb -------------------------------------------------------------------
log "building pactdb (release)"
cargo build --release --bin pactdb >&2
PACTDB=$ROOT/target/release/pactdb

# --- bookkeeping, cleanup, watchdog -------------------------------------------
TMP=$(mktemp -d /tmp/pactdb-compare-etcd.XXXXXX)
ETCD_PIDS=()
DEMO_PID=
WATCHDOG_PID=

node_pids() { # the pids cluster.json lists (the demo's children)
    [ -f "$TMP/pactdb/cluster.json" ] &&
        python3 -c 'import json,sys; print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' "$TMP/pactdb/cluster.json" ||
        true
}

stop_etcd() {
    stop_pids "${ETCD_PIDS[@]}"
    ETCD_PIDS=()
}

stop_pactdb() {
    local nodes
    nodes=$(node_pids)
    if [ -n "$DEMO_PID" ]; then stop_pids "$DEMO_PID"; fi
    DEMO_PID=
    # The demo stops its nodes; make sure none outlives it.
    # shellcheck disable=SC2086
    for p in $nodes; do kill -KILL "$p" 2>/dev/null || true; done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_etcd
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

for p in "${ETCD_PORTS[@]}"; do
    for q in "$p" $((p + 1)); do
        port_free "$q" || { echo "port $q is in use; set ETCD_PORTS" >&2; exit 1; }
    done
done
for i in 1 2 3; do
    for q in $((7000 + PACTDB_PORT_OFFSET + i)) $((7100 + PACTDB_PORT_OFFSET + i)); do
        port_free "$q" || { echo "port $q is in use; set PACTDB_PORT_OFFSET" >&2; exit 1; }
    done
done

# --- the machine --------------------------------------------------------------
MEM_GIB=$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)
DISK=$(df -h "$TMP" | awk 'NR==2 {print $1", "$2" total, "$4" free"}')
CPU=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
# The disk: 500 synchronous 4 KiB writes (dd oflag=dsync), as etcd's docs suggest.
DSYNC_S=$(LC_ALL=C dd if=/dev/zero of="$TMP/dsync-test" bs=4k count=500 oflag=dsync 2>&1 | awk '/copied/ {for (i = 1; i < NF; i++) if ($(i + 1) == "s,") print $i}')
rm -f "$TMP/dsync-test"
DSYNC_MS=$(awk -v s="${DSYNC_S:-0}" 'BEGIN {printf "%.3f", s * 1000 / 500}')
echo "machine: $(nproc) cores ($CPU), ${MEM_GIB} GiB memory, disk $DISK, ${DSYNC_MS} ms per synchronous 4 KiB write; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pactdb $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes'), etcd $ETCD_VERSION"
echo "workloads: ${CLIENTS} clients over ${CONNS} connections (transfers: ${TRANSFER_CONNS}) and 1 client; ${KEY_SIZE} B keys, ${VALUE_SIZE} B values, ${KEYS} keys; transfers among ${ACCOUNTS} accounts of ${BALANCE}, ${AUDIT_CLIENTS} audit clients; ramp ${RAMP}, measured ${DURATION} each"

# name clients conns read_percent ("-": the bank's transfers)
WORKLOADS=(
    "put-${CLIENTS} ${CLIENTS} ${CONNS} 0"
    "put-1 1 1 0"
    "mixed-${CLIENTS} ${CLIENTS} ${CONNS} 50"
    "transfer ${CLIENTS} ${TRANSFER_CONNS} -"
)
if [ -n "${ONLY:-}" ]; then
    kept=()
    for w in "${WORKLOADS[@]}"; do
        for o in $ONLY; do [ "${w%% *}" = "$o" ] && kept+=("$w"); done
    done
    [ ${#kept[@]} -gt 0 ] || { echo "ONLY=$ONLY names none of: ${WORKLOADS[*]%% *}" >&2; exit 1; }
    WORKLOADS=("${kept[@]}")
fi

run_transfer() { # system target name clients conns
    local system=$1 target=$2 name=$3 clients=$4 conns=$5 out="$TMP/result-$1-$3.json"
    log "$system: $name: creating $ACCOUNTS accounts of $BALANCE"
    "$PACTDB" workload init bank --target "$target" --accounts "$ACCOUNTS" --balance "$BALANCE" >&2 ||
        { log "$system: init bank failed"; return 0; }
    log "$system: $name ($clients clients, $conns connections, $AUDIT_CLIENTS audit clients)"
    "$PACTDB" workload run bank --target "$target" --clients "$clients" --conns "$conns" \
        --audit-clients "$AUDIT_CLIENTS" --ramp "$RAMP" --duration "$DURATION" --json \
        >"$out" 2>"$TMP/progress-$system-$name.log" ||
        { log "$system $name failed:"; tail -n 5 "$TMP/progress-$system-$name.log" >&2; }
    python3 - "$out" <<'EOF' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
cross = f", cross-group {r['cross_group_percent']:.1f}%" if r["cross_group_percent"] is not None else ""
print(f"    {r['transfers_per_sec']:.0f} transfers/s, {r['aborts_per_sec']:.0f} aborts/s, {r['errors']} errors, {r['unknown']} unknown, "
      f"p50 {l['p50']:.3f} ms, p99 {l['p99']:.3f} ms{cross}, {r['audits']['anomalies']} anomalies")
a = r["audits"]
if a["clients"]:
    print(f"    audits: {a['committed']} committed, {a['aborted']} aborted, {a['errors']} errors")
EOF
    log "$system: checking the bank"
    if "$PACTDB" workload check bank --target "$target" >"$TMP/check-$system-$name.log" 2>&1; then
        echo ok >"$TMP/check-$system-$name.status"
    else
        echo failed >"$TMP/check-$system-$name.status"
    fi
    sed 's/^/    /' "$TMP/check-$system-$name.log" >&2
}

run_workloads() { # system target
    local system=$1 target=$2 w name clients conns reads out
    for w in "${WORKLOADS[@]}"; do
        read -r name clients conns reads <<<"$w"
        if [ "$reads" = "-" ]; then
            run_transfer "$system" "$target" "$name" "$clients" "$conns"
            continue
        fi
        out="$TMP/result-$system-$name.json"
        log "$system: $name ($clients clients, $conns connections, $reads% reads)"
        "$PACTDB" workload run kv --target "$target" --clients "$clients" --conns "$conns" \
            --read-percent "$reads" --keys "$KEYS" --key-size "$KEY_SIZE" --value-size "$VALUE_SIZE" \
            --ramp "$RAMP" --duration "$DURATION" --json >"$out" 2>"$TMP/progress-$system-$name.log" ||
            { log "$system $name failed:"; tail -n 5 "$TMP/progress-$system-$name.log" >&2; }
        python3 - "$out" <<'EOF' >&2 || true
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_ms"]
print(f"    {r['ops_per_sec']:.0f} ops/s, {r['errors']} errors, p50 {l['p50']:.3f} ms, p99 {l['p99']:.3f} ms, max {l['max']:.3f} ms")
EOF
    done
}

# --- etcd ---------------------------------------------------------------------
INITIAL=""
for i in 1 2 3; do
    INITIAL+="${INITIAL:+,}e$i=http://127.0.0.1:$((ETCD_PORTS[i - 1] + 1))"
done
ETCD_ENDPOINTS=""
for i in 1 2 3; do
    c=${ETCD_PORTS[i - 1]}
    ETCD_ENDPOINTS+="${ETCD_ENDPOINTS:+,}127.0.0.1:$c"
    mkdir -p "$TMP/etcd-$i"
    etcd --name "e$i" --data-dir "$TMP/etcd-$i/data" \
        --listen-client-urls "http://127.0.0.1:$c" --advertise-client-urls "http://127.0.0.1:$c" \
        --listen-peer-urls "http://127.0.0.1:$((c + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((c + 1))" \
        --initial-cluster "$INITIAL" --initial-cluster-token "pactdb-bench-$$" --initial-cluster-state new \
        --logger zap --log-outputs "$TMP/etcd-$i/etcd.log" >"$TMP/etcd-$i/stdout.log" 2>&1 &
    ETCD_PIDS+=($!)
done
log "waiting for etcd at $ETCD_ENDPOINTS"
ok=0
for _ in $(seq 60); do
    if ETCDCTL_API=3 etcdctl --endpoints="$ETCD_ENDPOINTS" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1; then
        ok=1
        break
    fi
    sleep 0.5
done
if [ $ok -ne 1 ]; then
    echo "etcd did not become healthy; its log:" >&2
    tail -n 20 "$TMP/etcd-1/etcd.log" >&2
    exit 1
fi
run_workloads etcd "etcd://$ETCD_ENDPOINTS"
log "stopping etcd"
stop_etcd
# pactdb gets the disk as etcd found it: nothing of etcd's left to write back.
rm -rf "$TMP"/etcd-*/data
sync

# --- pactdb -------------------------------------------------------------------
# etcd runs plaintext here, so pactdb does too (`demo --insecure`) unless
# PACTDB_TLS=1: then the demo's default TLS, with its client certificate.
if [ "${PACTDB_TLS:-0}" = 1 ]; then
    PACTDB_SECURITY=()
    export PACTDB_CERTS_DIR=$TMP/pactdb/certs/client
else
    PACTDB_SECURITY=(--insecure)
    export PACTDB_INSECURE=1
fi
"$PACTDB" demo "${PACTDB_SECURITY[@]}" --data-dir "$TMP/pactdb" --port-offset "$PACTDB_PORT_OFFSET" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
log "waiting for the pactdb demo"
for _ in $(seq 300); do
    [ -f "$TMP/pactdb/cluster.json" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$TMP/pactdb/cluster.json" ] || { echo "pactdb demo did not start:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
PACTDB_ENDPOINTS=$(python3 -c 'import json,sys; print(",".join(n["client"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$TMP/pactdb/cluster.json")
run_workloads pactdb "pactdb://$PACTDB_ENDPOINTS"
log "stopping pactdb"
stop_pactdb

# --- the table and the figures ------------------------------------------------
python3 - "$TMP" "${WORKLOADS[@]}" <<'EOF'
import json, os, sys

tmp, workloads = sys.argv[1], [w.split() for w in sys.argv[2:]]
res = {}
for name, clients, conns, reads in workloads:
    for system in ("etcd", "pactdb"):
        path = os.path.join(tmp, f"result-{system}-{name}.json")
        try:
            res[(system, name)] = json.load(open(path))
        except (OSError, ValueError):
            res[(system, name)] = None

print()
head = f"{'workload':<12} {'system':<7} {'clients':>7} {'conns':>5} {'reads':>5} {'ops/s':>10} {'errors':>7} {'p50(ms)':>8} {'p90(ms)':>8} {'p99(ms)':>8} {'p99.9(ms)':>9} {'max(ms)':>8} {'gen-cpu':>7}"
print(head)
print("-" * len(head))
for name, clients, conns, reads in workloads:
    for system in ("etcd", "pactdb"):
        r = res[(system, name)]
        shown = "-" if reads == "-" else reads + "%"
        if r is None:
            print(f"{name:<12} {system:<7} {clients:>7} {conns:>5} {shown:>5}   (no result)")
            continue
        l = r["latency_ms"]
        if reads == "-":
            # A transfer's ops/s are committed transfers; its errors include unknown outcomes.
            rate, errors = r["transfers_per_sec"], r["errors"] + r["unknown"]
        else:
            rate, errors, shown = r["ops_per_sec"], r["errors"], str(r["read_percent"]) + "%"
        print(f"{name:<12} {system:<7} {r['clients']:>7} {r['conns']:>5} {shown:>5} {rate:>10.0f} {errors:>7} "
              f"{l['p50']:>8.3f} {l['p90']:>8.3f} {l['p99']:>8.3f} {l['p99_9']:>9.3f} {l['max']:>8.3f} {r.get('client_cpu_cores', 0):>7.2f}")
print("gen-cpu: cores of CPU the load generator itself used (it shares the machine with the servers)")
transfers = [w for w in workloads if w[3] == "-"]
checks_failed = []
if transfers:
    print("transfer: ops/s are committed transfers/s, errors include unknown outcomes, latency is of committed transfers")
    print()
    head2 = f"{'workload':<12} {'system':<7} {'accounts':>8} {'transfers/s':>11} {'aborts/s':>9} {'aborted':>7} {'errors':>7} {'unknown':>7} {'cross-group':>11} {'anomalies':>9}  check"
    print(head2)
    print("-" * len(head2))
    for name, clients, conns, reads in transfers:
        for system in ("etcd", "pactdb"):
            r = res[(system, name)]
            try:
                check = open(os.path.join(tmp, f"check-{system}-{name}.status")).read().strip()
            except OSError:
                check = "not run"
            if check != "ok":
                checks_failed.append(f"{system} {name}: {check}")
            if r is None:
                print(f"{name:<12} {system:<7}   (no result)  {check}")
                continue
            tried = r["transfers"] + r["aborts"]
            abort_pct = 100.0 * r["aborts"] / tried if tried else 0.0
            cross = f"{r['cross_group_percent']:.1f}%" if r["cross_group_percent"] is not None else "n/a"
            print(f"{name:<12} {system:<7} {r['accounts']:>8} {r['transfers_per_sec']:>11.0f} {r['aborts_per_sec']:>9.0f} {abort_pct:>6.1f}% "
                  f"{r['errors']:>7} {r['unknown']:>7} {cross:>11} {r['audits']['anomalies']:>9}  {check}")
    print("aborted: share of finished transfer attempts that aborted (a read account changed or was locked)")
print()

def ratio(label, name, f):
    a, b = res.get(("pactdb", name)), res.get(("etcd", name))
    if a is None or b is None or f(b) == 0:
        print(f"ratio {label} pactdb/etcd = n/a")
    else:
        print(f"ratio {label} pactdb/etcd = {f(a) / f(b):.2f}")

big = next((w[0] for w in workloads if w[0].startswith("put-") and w[1] != "1"), None)
ratio("put-throughput", big, lambda r: r["ops_per_sec"])
ratio("put-p99", big, lambda r: r["latency_ms"]["p99"])
ratio("one-client-put-p50", "put-1", lambda r: r["latency_ms"]["p50"])
one = res.get(("pactdb", "put-1"))
print(f"pactdb one-client put-p50 = {one['latency_ms']['p50']:.3f} ms" if one else "pactdb one-client put-p50 = n/a")
tr = transfers[0][0] if transfers else None
ratio("transfer-throughput", tr, lambda r: r["transfers_per_sec"])
ratio("transfer-p99", tr, lambda r: r["latency_ms"]["p99"])
pt = res.get(("pactdb", tr))
print(f"pactdb transfers/s = {pt['transfers_per_sec']:.0f}" if pt else "pactdb transfers/s = n/a")
print(f"pactdb cross-group share = {pt['cross_group_percent']:.1f}%" if pt else "pactdb cross-group share = n/a")
print(f"load average at end: {' '.join(open('/proc/loadavg').read().split()[:3])}")
errors = sum(r["errors"] + r.get("unknown", 0) for r in res.values() if r)
if errors:
    print(f"note: {errors} operations failed or had an unknown outcome in all (counted apart, never as throughput)")
for f in checks_failed:
    print(f"note: bank check {f} (see the log above)")
sys.exit(1 if checks_failed else 0)
EOF
