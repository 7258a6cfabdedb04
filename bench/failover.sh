#!/usr/bin/env bash
# Measures write unavailability when the primary of a replica group dies.
#
# Builds pactdb in release, starts a 3-node `pactdb demo` (3 groups of 3) on
# loopback, and runs a background write workload (`pactdb workload run kv`)
# plus a probe (`pactdb workload probe`): one client writing one key of
# GROUP in a tight loop, printing every gap between successful writes. Then,
# KILLS times: finds GROUP's primary with `pactdb status --json`, `kill -9`s
# it, waits until another node leads the group, restarts the killed node
# with its command from cluster.json, and waits until `pactdb status --json`
# shows it back in the views of all its groups (not joining or recovering).
# The write-unavailability window of a kill is the probe's gap between the
# last successful write before the primary died and the first one after it
# (the longest gap that ends after the kill and starts at most 200 ms after
# `kill -9` returned). Prints each kill, then
#
#   failover write-unavailability median = X ms
#   failover write-unavailability max = Y ms
#
# Then (MODE=both, the default; MODE=kill or MODE=partition runs one part)
# PARTITIONS times: cuts GROUP's primary off from its peers for CUT_S
# seconds while clients still reach it, and heals the partition: the
# primary's process is put in a cgroup of its own, and iptables drops, on
# loopback only, every packet to or from its peer port, every packet of the
# connections it has open to other nodes' peer ports (found with `ss`), and
# every packet its cgroup sends to another node's peer port on a connection
# opened later (client ports are untouched). It
# then waits until the node is back in its views. The window of a partition
# is the probe's longest gap that ends after the cut and starts between 1 s
# before the cut and 1 s after the heal. Prints
#
#   partition write-unavailability median = X ms
#   partition write-unavailability max = Y ms
#
# The partition mode needs root, iptables with the cgroup match, `ss` and a
# cgroup v2 hierarchy; the rules live in a chain of their own, removed with
# the cgroup at exit.
#
# Traffic goes to 127.0.0.1 only; everything lives in a temp dir removed at
# the end (KEEP=1 keeps it); every process started here is stopped on exit;
# a watchdog bounds the run (TIME_LIMIT seconds after the build).
#
# Knobs (environment): MODE (both), KILLS (5), PARTITIONS (5), CUT_S (4),
# GROUP (0), CLIENTS (16, background
# workload), SETTLE (3: seconds of normal writes before each kill),
# GAP_MS (10: the probe reports gaps from this long), PACTDB_PORT_OFFSET
# (650), TIME_LIMIT (600), KEEP.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

MODE=${MODE:-both}
KILLS=${KILLS:-5}
PARTITIONS=${PARTITIONS:-5}
CUT_S=${CUT_S:-4}
GROUP=${GROUP:-0}
CLIENTS=${CLIENTS:-16}
SETTLE=${SETTLE:-3}
GAP_MS=${GAP_MS:-10}
PACTDB_PORT_OFFSET=${PACTDB_PORT_OFFSET:-650}
TIME_LIMIT=${TIME_LIMIT:-600}

log() { echo "[failover $(date +%H:%M:%S)] $*" >&2; }

log "building pactdb (release)"
cargo build --release --bin pactdb >&2
PACTDB=$ROOT/target/release/pactdb

TMP=$(mktemp -d /tmp/pactdb-failover.XXXXXX)
JSON=$TMP/pactdb/cluster.json
DEMO_PID=
WORKLOAD_PID=
PROBE_PID=
WATCHDOG_PID=
declare -A NODE_PID=()
STARTED_HERE=()
case "$MODE" in kill | partition | both) ;; *) echo "MODE must be kill, partition or both" >&2; exit 2 ;; esac
[ "$MODE" = partition ] && KILLS=0
[ "$MODE" = kill ] && PARTITIONS=0
# The partition mode's chain and cgroup, named after this script's pid.
CHAIN=PACTDB_FO_$$
CG_ROOT=
for d in /sys/fs/cgroup/unified /sys/fs/cgroup; do
    [ -f "$d/cgroup.procs" ] && [ -f "$d/cgroup.controllers" ] && { CG_ROOT=$d; break; }
done
CG_NAME=pactdb-failover-$$
CG_MADE=
CHAIN_MADE=
if [ "$PARTITIONS" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] || ! command -v iptables >/dev/null || [ -z "$CG_ROOT" ]; then
        echo "the partition mode needs root, iptables and cgroup v2; run with MODE=kill" >&2
        exit 2
    fi
fi

heal_partition() { # removes the rules; the connections carry on
    [ -n "$CHAIN_MADE" ] && iptables -F "$CHAIN" 2>/dev/null
    return 0
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    local procs=()
    [ -n "$PROBE_PID" ] && procs+=("$PROBE_PID")
    [ -n "$WORKLOAD_PID" ] && procs+=("$WORKLOAD_PID")
    stop_pids "${procs[@]}"
    # Nodes restarted here are not the demo's children: stop them ourselves.
    stop_pids "${STARTED_HERE[@]}"
    [ -n "$DEMO_PID" ] && stop_pids "$DEMO_PID"
    for p in "${NODE_PID[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    if [ -n "$CHAIN_MADE" ]; then
        iptables -D OUTPUT -o lo -j "$CHAIN" 2>/dev/null
        iptables -F "$CHAIN" 2>/dev/null
        iptables -X "$CHAIN" 2>/dev/null
    fi
    if [ -n "$CG_MADE" ]; then
        # Whatever is left in it (nothing, once the nodes are gone) goes back.
        while read -r p; do echo "$p" >"$CG_ROOT/cgroup.procs" 2>/dev/null; done <"$CG_ROOT/$CG_NAME/cgroup.procs"
        rmdir "$CG_ROOT/$CG_NAME" 2>/dev/null || log "could not remove the cgroup $CG_ROOT/$CG_NAME"
    fi
    [ -n "$WATCHDOG_PID" ] && kill "$WATCHDOG_PID" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# shellcheck source=bench/common.sh
. "$(dirname "$0")/common.sh"
watchdog &
WATCHDOG_PID=$!
for i in 1 2 3; do
    for q in $((7000 + PACTDB_PORT_OFFSET + i)) $((7100 + PACTDB_PORT_OFFSET + i)); do
        port_free "$q" || { echo "port $q is in use; set PACTDB_PORT_OFFSET" >&2; exit 1; }
    done
done

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo) GiB memory; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "pactdb $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo '+changes')"

# --- the cluster ----------------------------------------------------------------
"$PACTDB" demo --data-dir "$TMP/pactdb" --port-offset "$PACTDB_PORT_OFFSET" >"$TMP/demo.log" 2>&1 &
DEMO_PID=$!
log "waiting for the pactdb demo"
for _ in $(seq 300); do
    [ -f "$JSON" ] && break
    kill -0 "$DEMO_PID" 2>/dev/null || { echo "pactdb demo exited:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
    sleep 0.2
done
[ -f "$JSON" ] || { echo "pactdb demo did not start:" >&2; cat "$TMP/demo.log" >&2; exit 1; }
# The demo runs TLS; its client certificate is what client commands use.
export PACTDB_CERTS_DIR=$TMP/pactdb/certs/client

info() { python3 -c "import json,sys; c=json.load(open(sys.argv[1])); $1" "$JSON" "${@:2}"; }
EP=$(info 'print(",".join(n["client"] for n in c["nodes"]))')
while read -r id pid; do NODE_PID[$id]=$pid; done < <(info 'print("\n".join("%d %d" % (n["id"], n["pid"]) for n in c["nodes"]))')
echo "cluster: nodes at $EP; killing the primary of group $GROUP $KILLS times, cutting it off from its peers for ${CUT_S}s $PARTITIONS times"

status_json() { timeout 10 "$PACTDB" --endpoints "$EP" status --json 2>/dev/null; }

leader_of_group() {
    status_json | python3 -c '
import json, sys
g = int(sys.argv[1])
print(next((v["leader"] for v in json.load(sys.stdin)["groups"] if v["group"] == g), ""))' "$GROUP" 2>/dev/null || true
}

# Up, and a full member (not joining or recovering) of the view of every
# group placed on it.
rejoined() {
    status_json | python3 -c '
import json, sys
n, placed = int(sys.argv[1]), [int(g) for g in sys.argv[2].split(",") if g]
s = json.load(sys.stdin)
node = next(x for x in s["nodes"] if x["node"] == n)
views = {v["group"]: v for v in s["groups"]}
ok = node["up"] and all(g in views and n in views[g]["members"] for g in placed)
hosted = {r["group"]: r for r in node.get("replicas", [])}
ok = ok and all(g in hosted and hosted[g]["role"] not in ("joining", "recovering") and n in (hosted[g]["members"] or []) for g in placed)
sys.exit(0 if ok else 1)' "$1" "$(info 'print(",".join(str(g["id"]) for g in c["cluster"]["groups"] if int(sys.argv[2]) in g["placement"]))' "$1")" 2>/dev/null
}

now_ms() { date +%s%3N; }

# After SETTLE seconds of writes, sets `victim` to GROUP's primary and `pid`
# to its process (exits if the probe died or no primary is found).
pick_victim() {
    sleep "$SETTLE"
    kill -0 "$PROBE_PID" 2>/dev/null || { echo "the probe died:" >&2; cat "$TMP/probe.err" >&2; exit 1; }
    victim=$(leader_of_group)
    [ -n "$victim" ] || { echo "cannot find the primary of group $GROUP" >&2; exit 1; }
    pid=${NODE_PID[$victim]}
}

# --- the load -------------------------------------------------------------------
"$PACTDB" --endpoints "$EP" workload run kv --clients "$CLIENTS" --duration "${TIME_LIMIT}s" --json \
    >"$TMP/workload.json" 2>"$TMP/workload.log" &
WORKLOAD_PID=$!
"$PACTDB" --endpoints "$EP" workload probe --group "$GROUP" --gap-ms "$GAP_MS" --duration "${TIME_LIMIT}s" \
    >"$TMP/probe.log" 2>"$TMP/probe.err" &
PROBE_PID=$!

# --- the kills ------------------------------------------------------------------
: >"$TMP/kills"
for k in $(seq "$KILLS"); do
    pick_victim
    kill -KILL "$pid"
    t_kill=$(now_ms)
    wait "$pid" 2>/dev/null || true
    log "kill $k: kill -9 node $victim (pid $pid), primary of group $GROUP"
    # Wait (at most 30 s) until another node leads the group.
    new_leader=
    while [ $(($(now_ms) - t_kill)) -lt 30000 ]; do
        l=$(leader_of_group)
        if [ -n "$l" ] && [ "$l" != "$victim" ]; then new_leader=$l; break; fi
        sleep 0.05
    done
    t_elected=$(now_ms)
    if [ -z "$new_leader" ]; then
        echo "group $GROUP has no new primary 30 s after the kill; status:" >&2
        timeout 10 "$PACTDB" --endpoints "$EP" status >&2 || true
        exit 1
    fi
    # Restart the node with its command from cluster.json.
    mapfile -d '' -t cmd < <(info 'n = next(n for n in c["nodes"] if n["id"] == int(sys.argv[2])); print("\0".join(n["command"]), end="")' "$victim")
    node_log=$(info 'print(next(n["log"] for n in c["nodes"] if n["id"] == int(sys.argv[2])))' "$victim")
    t_restart=$(now_ms)
    "${cmd[@]}" >>"$node_log" 2>&1 &
    NODE_PID[$victim]=$!
    STARTED_HERE+=($!)
    back=0
    while [ $(($(now_ms) - t_restart)) -lt 60000 ]; do
        if rejoined "$victim"; then back=1; break; fi
        sleep 0.1
    done
    t_back=$(now_ms)
    if [ $back -eq 0 ]; then
        echo "node $victim did not rejoin within 60 s; status:" >&2
        timeout 10 "$PACTDB" --endpoints "$EP" status >&2 || true
        echo "its log:" >&2
        tail -n 20 "$node_log" >&2
        exit 1
    fi
    log "kill $k: node $new_leader leads group $GROUP; node $victim restarted and rejoined in $((t_back - t_restart)) ms"
    echo "$k $victim $t_kill $new_leader $((t_elected - t_kill)) $((t_back - t_restart))" >>"$TMP/kills"
done

# --- the partitions -------------------------------------------------------------
: >"$TMP/partitions"
peer_port() { info 'print(next(n["peer"] for n in c["nodes"] if n["id"] == int(sys.argv[2])).rsplit(":", 1)[1])' "$1"; }
if [ "$PARTITIONS" -gt 0 ]; then
    mkdir "$CG_ROOT/$CG_NAME"
    CG_MADE=1
    iptables -N "$CHAIN"
    CHAIN_MADE=1
    iptables -I OUTPUT 1 -o lo -j "$CHAIN"
fi
for k in $(seq "$PARTITIONS"); do
    pick_victim
    own=$(peer_port "$victim")
    others=$(info 'print(",".join(n["peer"].rsplit(":", 1)[1] for n in c["nodes"] if n["id"] != int(sys.argv[2])))' "$victim")
    echo "$pid" >"$CG_ROOT/$CG_NAME/cgroup.procs"
    iptables -A "$CHAIN" -p tcp --dport "$own" -j DROP
    iptables -A "$CHAIN" -p tcp --sport "$own" -j DROP
    # A socket keeps the cgroup it was created in: the cgroup rule catches
    # connections the node opens from now on, and its connections already
    # open to the other peers are cut by their local ports.
    iptables -A "$CHAIN" -p tcp -m cgroup --path "$CG_NAME" -m multiport --dports "$others" -j DROP
    while read -r eph; do
        iptables -A "$CHAIN" -p tcp --sport "$eph" -j DROP
        iptables -A "$CHAIN" -p tcp --dport "$eph" -j DROP
    done < <(ss -Htnp state established | python3 -c '
import re, sys
pid, others = sys.argv[1], set(sys.argv[2].split(","))
for line in sys.stdin:
    f = line.split()
    if len(f) >= 5 and f"pid={pid}," in line and f[3].startswith("127.0.0.1:") and f[3].rsplit(":", 1)[1] in others:
        print(f[2].rsplit(":", 1)[1])' "$pid" "$others")
    t_cut=$(now_ms)
    log "partition $k: node $victim (pid $pid), primary of group $GROUP, cut off from its peers for ${CUT_S}s"
    new_leader=
    while [ $(($(now_ms) - t_cut)) -lt $((CUT_S * 1000)) ]; do
        if [ -z "$new_leader" ]; then
            l=$(leader_of_group)
            if [ -n "$l" ] && [ "$l" != "$victim" ]; then new_leader=$l; t_elected=$(now_ms); fi
        fi
        sleep 0.05
    done
    heal_partition
    t_heal=$(now_ms)
    echo "$pid" >"$CG_ROOT/cgroup.procs"
    # A status poll can take seconds on a loaded machine: a failover during
    # the partition may show only now.
    while [ -z "$new_leader" ] && [ $(($(now_ms) - t_heal)) -lt 10000 ]; do
        l=$(leader_of_group)
        if [ -n "$l" ] && [ "$l" != "$victim" ]; then new_leader=$l; t_elected=$(now_ms); fi
        sleep 0.05
    done
    if [ -z "$new_leader" ]; then
        echo "group $GROUP had no new primary during the ${CUT_S}s partition; status:" >&2
        timeout 10 "$PACTDB" --endpoints "$EP" status >&2 || true
        exit 1
    fi
    back=0
    while [ $(($(now_ms) - t_heal)) -lt 60000 ]; do
        if rejoined "$victim"; then back=1; break; fi
        sleep 0.1
    done
    t_back=$(now_ms)
    [ $back -eq 1 ] || { echo "node $victim did not rejoin within 60 s of the heal" >&2; exit 1; }
    log "partition $k: node $new_leader leads group $GROUP; node $victim back in its views $((t_back - t_heal)) ms after the heal"
    echo "$k $victim $t_cut $t_heal $new_leader $((t_elected - t_cut)) $((t_back - t_heal))" >>"$TMP/partitions"
done
sleep 1

# --- results --------------------------------------------------------------------
stop_pids "$PROBE_PID" "$WORKLOAD_PID"
PROBE_PID=
WORKLOAD_PID=
python3 - "$TMP" "$GROUP" "$GAP_MS" "$CLIENTS" <<'EOF'
import json, re, statistics, sys

tmp, group, gap_ms, clients = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
gaps = []
done = ""
for line in open(f"{tmp}/probe.log"):
    m = re.match(r"gap from=(\d+) to=(\d+) ms=([\d.]+) errors=(\d+)", line)
    if m:
        gaps.append((int(m[1]), int(m[2]), float(m[3]), int(m[4])))
    elif line.startswith("probe done"):
        done = line.strip()
windows = []
print()
for line in open(f"{tmp}/kills"):
    k, victim, t_kill, new_leader, elected_ms, rejoin_ms = line.split()
    t_kill = int(t_kill)
    # t_kill is taken just after `kill -9` returned, so the process is dead
    # or about to be: the kill's gap is the longest one that ends after it
    # and starts at most 200 ms after it (normal gaps are a few ms).
    hit = sorted((g for g in gaps if g[1] >= t_kill and t_kill - 1000 <= g[0] <= t_kill + 200), key=lambda g: -g[2])
    if hit:
        w = hit[0][2]
        desc = f"{w:.1f} ms" + (f" ({hit[0][3]} failed writes)" if hit[0][3] else "")
    else:
        w = gap_ms  # no gap of GAP_MS or more around the kill: at most that
        desc = f"< {gap_ms:.0f} ms"
    windows.append(w)
    print(f"kill {k}: node {victim} (primary of group {group}): writes unavailable {desc}; "
          f"polled status showed node {new_leader} leading {int(elected_ms)} ms after the kill; restarted node rejoined in {int(rejoin_ms)} ms")
try:
    r = json.load(open(f"{tmp}/workload.json"))
    l = r["latency_ms"]
    print(f"background workload ({clients} clients, all groups): {r['ops']} writes in {r['elapsed_s']:.1f} s "
          f"({r['ops_per_sec']:.0f}/s), {r['errors']} errors, p50 {l['p50']:.3f} ms, p99 {l['p99']:.3f} ms, max {l['max']:.3f} ms")
    for e, n in r["error_kinds"].items():
        print(f"  error x{n}: {e}")
except (OSError, ValueError) as e:
    print(f"background workload: no result ({e})")
cuts = []
for line in open(f"{tmp}/partitions"):
    k, victim, t_cut, t_heal, new_leader, elected_ms, rejoin_ms = line.split()
    t_cut, t_heal = int(t_cut), int(t_heal)
    # The cut's gap: the longest one that ends after the cut and starts
    # between 1 s before it and 1 s after the heal (a stall at the heal, as
    # the old primary rejoins, counts too).
    hit = sorted((g for g in gaps if g[1] >= t_cut and t_cut - 1000 <= g[0] <= t_heal + 1000), key=lambda g: -g[2])
    if hit:
        w = hit[0][2]
        desc = f"{w:.1f} ms" + (f" ({hit[0][3]} failed writes)" if hit[0][3] else "")
    else:
        w = gap_ms
        desc = f"< {gap_ms:.0f} ms"
    cuts.append(w)
    print(f"partition {k}: node {victim} (primary of group {group}) cut off for {(t_heal - t_cut) / 1000:.1f} s: "
          f"writes unavailable {desc}; polled status showed node {new_leader} leading {int(elected_ms)} ms after the cut; "
          f"the node was back in its views {int(rejoin_ms)} ms after the heal")
if done:
    print(done)
if windows:
    print(f"failover write-unavailability median = {statistics.median(windows):.1f} ms")
    print(f"failover write-unavailability max = {max(windows):.1f} ms")
if cuts:
    print(f"partition write-unavailability median = {statistics.median(cuts):.1f} ms")
    print(f"partition write-unavailability max = {max(cuts):.1f} ms")
EOF
