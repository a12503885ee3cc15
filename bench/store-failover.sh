#!/usr/bin/env bash
# What clients see when a store leader dies: shoal's store and etcd side
# by side, 3 members each on loopback, one system at a time. Each run starts
# a fresh cluster, lets 16 writers (`shoal bench failover`) put keys through
# every member, SIGKILLs the leader and measures the time from the kill to a
# new leader and the longest time without a successful put. Prints the
# medians over RUNS kills and the shoal/etcd ratios. See docs/benchmarks.md.
#
# Builds nothing: run `cargo build --release -p shoal` first (or set SHOAL).
#
# Environment:
#   SHOAL          shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   ETCD           etcd binary (default: etcd from PATH)
#   RUNS           leader kills per system (default 5)
#   CLIENTS        concurrent writers (default 16)
#   SYSTEMS        systems to measure (default "shoal etcd")
#   KEEP_TMP=1     keep the data directories and logs (the path is printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
ETCD=${ETCD:-etcd}
RUNS=${RUNS:-5}
CLIENTS=${CLIENTS:-16}
SYSTEMS=${SYSTEMS:-shoal etcd}

log() { printf '[store-failover] %s\n' "$*" >&2; }
[[ -x $SHOAL ]] || { log "error: $SHOAL not found; run 'cargo build --release -p shoal' or set SHOAL"; exit 1; }
command -v "$ETCD" >/dev/null || { log "error: $ETCD not found (apt-get install etcd-server)"; exit 1; }

TMP=$(mktemp -d -t store-failover.XXXXXX)
RESULTS=$TMP/results.jsonl
: >"$RESULTS"
PIDS=()

stop_cluster() {
    local pid
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    local rc=$?
    stop_cluster
    if [[ ${KEEP_TMP:-0} == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT

# Starts 3 members of $1 in $TMP/$1-$2 and sets ENDPOINTS; waits for a leader.
start_cluster() {
    local sys=$1 run=$2 base i initial="" client peer
    local -a cmd
    case $sys in
        shoal) base=33000; cmd=("$SHOAL" store) ;;
        etcd) base=43000; cmd=("$ETCD") ;;
    esac
    ENDPOINTS=""
    for i in 1 2 3; do initial+="${initial:+,}m$i=http://127.0.0.1:$((base + 10 * i + 1))"; done
    for i in 1 2 3; do
        client=http://127.0.0.1:$((base + 10 * i))
        peer=http://127.0.0.1:$((base + 10 * i + 1))
        "${cmd[@]}" --name "m$i" --data-dir "$TMP/$sys-$run/m$i" \
            --listen-client-urls "$client" --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$initial" --initial-cluster-state new \
            --initial-cluster-token "failover-$sys-$run" \
            >"$TMP/$sys-$run-m$i.log" 2>&1 &
        PIDS+=("$!")
        ENDPOINTS+="${ENDPOINTS:+,}$client"
    done
    for ((i = 0; i < 120; i++)); do
        if ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --command-timeout=2s \
            endpoint health >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "error: $sys did not become healthy"; exit 1
}

log "machine: $(nproc) cores; $("$ETCD" --version 2>/dev/null | head -n 1); RUNS=$RUNS CLIENTS=$CLIENTS"
for sys in $SYSTEMS; do
    for ((run = 1; run <= RUNS; run++)); do
        start_cluster "$sys" "$run"
        sleep 2   # let the members settle (etcd refuses some requests right after start)
        pids=$(IFS=,; echo "${PIDS[*]}")
        line=$("$SHOAL" bench failover --endpoints "$ENDPOINTS" --pids "$pids" \
            --clients "$CLIENTS" --label "$sys")
        printf '%s\n' "$line" >>"$RESULTS"
        log "$sys run $run/$RUNS: $line"
        stop_cluster
    done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        runs.setdefault(r["label"], []).append(r)
med = {}
print(f"{'system':<8} {'new_leader_ms':>14} {'max_outage_ms':>14} {'failed_puts':>12}  (medians over {max(len(v) for v in runs.values())} kills)")
for system, rs in runs.items():
    leader = statistics.median(r["new_leader_ms"] or float("inf") for r in rs)
    outage = statistics.median(r["max_outage_ms"] for r in rs)
    failed = statistics.median(r["failed"] for r in rs)
    med[system] = (leader, outage)
    print(f"{system:<8} {leader:>14.0f} {outage:>14.0f} {failed:>12.0f}")
if "shoal" in med and "etcd" in med:
    print(f"new_leader_ratio={med['shoal'][0] / med['etcd'][0]:.2f}")
    print(f"max_outage_ratio={med['shoal'][1] / med['etcd'][1]:.2f}")
PY
