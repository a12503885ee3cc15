#!/usr/bin/env bash
# Compares shoal's store with etcd: a 3-member cluster of each on loopback,
# measured one after the other (never both running at once) with the same
# load generator (`shoal bench store`), for put and linearizable range with
# 1, 16 and 256 concurrent clients. Prints a table of medians over REPEAT runs,
# then shoal/etcd throughput ratios; the last line is
# `put_throughput_ratio_256=<ratio>`. See docs/benchmarks.md.
#
# Builds nothing: run `cargo build --release -p shoal` first.
#
# Environment:
#   SHOAL          shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   ETCD, ETCDCTL  etcd and etcdctl binaries (default: from PATH)
#   REPEAT         runs per measurement; the median is reported (default 3)
#   OPS_1          operations per run with 1 client (default 2000)
#   OPS_N          operations per run with 16 and 256 clients (default 20000)
#   SYSTEMS        systems to measure (default "shoal etcd")
#   CLIENTS_LIST   client counts (default "1 16 256")
#   READY_TIMEOUT  seconds to wait for a cluster to become healthy (default 60)
#   RESULTS_OUT    if set, every raw JSON result line is also appended there
#   KEEP_TMP=1     keep the data directories and logs (the path is printed)
#   TMPDIR         where the data directories go (as for mktemp)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
ETCD=${ETCD:-etcd}
ETCDCTL=${ETCDCTL:-etcdctl}
REPEAT=${REPEAT:-3}
OPS_1=${OPS_1:-2000}
OPS_N=${OPS_N:-20000}
SYSTEMS=${SYSTEMS:-shoal etcd}
CLIENTS_LIST=${CLIENTS_LIST:-1 16 256}
READY_TIMEOUT=${READY_TIMEOUT:-60}
OPS_KINDS="put range"

log() { printf '[store-vs-etcd] %s\n' "$*" >&2; }

# --- checks -----------------------------------------------------------------

need() {
    if ! command -v "$1" >/dev/null 2>&1; then
        log "error: $1 not found${2:+ ($2)}"
        exit 1
    fi
}
if [[ ! -x $SHOAL ]]; then
    log "error: shoal binary $SHOAL not found; run 'cargo build --release -p shoal' or set SHOAL"
    exit 1
fi
need "$ETCD" "set ETCD, or install etcd-server"
need "$ETCDCTL" "set ETCDCTL, or install etcd-client"
need python3

# etcd 3.4 refuses to start on architectures other than amd64 (and ppc64le)
# unless told otherwise; not needed on amd64.
ETCD_ENV=()
case $(uname -m) in
    aarch64 | arm64) ETCD_ENV=(env ETCD_UNSUPPORTED_ARCH=arm64) ;;
esac

# --- processes ----------------------------------------------------------------

TMP=$(mktemp -d -t store-vs-etcd.XXXXXX)
RESULTS=$TMP/results.jsonl
: >"$RESULTS"
CLUSTER_PIDS=()
CLUSTER_ENDPOINTS=""
CLUSTER_NAMES=()
CURRENT=""

# Stops the members of the running cluster (SIGTERM, SIGKILL after 10 s).
stop_cluster() {
    local pid i
    for pid in ${CLUSTER_PIDS[@]+"${CLUSTER_PIDS[@]}"}; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in ${CLUSTER_PIDS[@]+"${CLUSTER_PIDS[@]}"}; do
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    CLUSTER_PIDS=()
}

cleanup() {
    local rc=$?
    stop_cluster
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        log "kept data directories and logs in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the end of the running cluster's logs and exits.
die() {
    local name
    log "error: $*"
    for name in ${CLUSTER_NAMES[@]+"${CLUSTER_NAMES[@]}"}; do
        if [[ -f $TMP/$name.log ]]; then
            log "--- last lines of $name's log ---"
            tail -n 10 "$TMP/$name.log" >&2 || true
        fi
    done
    exit 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Starts the 3 members of system $1 (shoal: s1..s3 on 32379.., etcd: e1..e3 on
# 42379..; member i serves clients on base+279+100*i and peers on the next
# port) and waits until all of them are healthy.
start_cluster() {
    local sys=$1 prefix base i port name client peer initial=""
    local -a cmd
    case $sys in
        shoal)
            prefix=s
            base=32000
            cmd=("$SHOAL" store)
            ;;
        etcd)
            prefix=e
            base=42000
            cmd=(${ETCD_ENV[@]+"${ETCD_ENV[@]}"} "$ETCD")
            ;;
        *) log "error: unknown system $sys (want shoal or etcd)"; exit 1 ;;
    esac
    CURRENT=$sys
    CLUSTER_ENDPOINTS=""
    CLUSTER_NAMES=()
    for i in 1 2 3; do
        initial+="${initial:+,}$prefix$i=http://127.0.0.1:$((base + 280 + 100 * i))"
    done
    for i in 1 2 3; do
        for port in $((base + 279 + 100 * i)) $((base + 280 + 100 * i)); do
            if port_in_use "$port"; then
                die "port $port is already in use (a leftover cluster?)"
            fi
        done
    done
    for i in 1 2 3; do
        name=$prefix$i
        client=http://127.0.0.1:$((base + 279 + 100 * i))
        peer=http://127.0.0.1:$((base + 280 + 100 * i))
        "${cmd[@]}" \
            --name "$name" \
            --data-dir "$TMP/$name" \
            --listen-client-urls "$client" \
            --advertise-client-urls "$client" \
            --listen-peer-urls "$peer" \
            --initial-advertise-peer-urls "$peer" \
            --initial-cluster "$initial" \
            --initial-cluster-state new \
            --initial-cluster-token "bench-$sys" \
            >"$TMP/$name.log" 2>&1 &
        CLUSTER_PIDS+=("$!")
        CLUSTER_NAMES+=("$name")
        CLUSTER_ENDPOINTS+="${CLUSTER_ENDPOINTS:+,}$client"
    done
    log "started $sys (${CLUSTER_ENDPOINTS}); waiting until healthy"
    wait_ready
    log "$sys is healthy"
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) pid
    while :; do
        for pid in "${CLUSTER_PIDS[@]}"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                die "a $CURRENT member exited during startup"
            fi
        done
        if ETCDCTL_API=3 "$ETCDCTL" --endpoints="$CLUSTER_ENDPOINTS" \
            --dial-timeout=1s --command-timeout=3s endpoint health >/dev/null 2>&1; then
            return 0
        fi
        if ((SECONDS >= deadline)); then
            die "$CURRENT not healthy after ${READY_TIMEOUT}s"
        fi
        sleep 0.5
    done
}

# --- measurements -------------------------------------------------------------

log "machine: $(nproc) cores; $("$ETCD" --version 2>/dev/null | head -n 1)"
log "REPEAT=$REPEAT OPS_1=$OPS_1 OPS_N=$OPS_N SYSTEMS='$SYSTEMS' CLIENTS_LIST='$CLIENTS_LIST'"

for sys in $SYSTEMS; do
    start_cluster "$sys"
    for op in $OPS_KINDS; do
        for c in $CLIENTS_LIST; do
            if [[ $c == 1 ]]; then ops=$OPS_1; else ops=$OPS_N; fi
            for ((r = 1; r <= REPEAT; r++)); do
                if ! out=$("$SHOAL" bench store \
                    --endpoints "$CLUSTER_ENDPOINTS" \
                    --clients "$c" \
                    --ops "$ops" \
                    --op "$op" \
                    --consistency l \
                    --label "$sys" 2>>"$TMP/bench.log"); then
                    log "--- last lines of the load generator's log ---"
                    tail -n 20 "$TMP/bench.log" >&2 || true
                    die "shoal bench store failed ($sys $op clients=$c run $r)"
                fi
                line=$(printf '%s\n' "$out" | tail -n 1)
                printf '%s\n' "$line" >>"$RESULTS"
                if [[ -n ${RESULTS_OUT:-} ]]; then
                    printf '%s\n' "$line" >>"$RESULTS_OUT"
                fi
                log "$sys $op clients=$c run $r/$REPEAT: $line"
            done
        done
    done
    stop_cluster
    log "stopped $sys"
done
CLUSTER_NAMES=()

# --- summary ------------------------------------------------------------------

python3 - "$RESULTS" "$CLIENTS_LIST" "$OPS_KINDS" <<'PY'
import json
import statistics
import sys

path, clients, kinds = sys.argv[1], [int(c) for c in sys.argv[2].split()], sys.argv[3].split()

runs = {}
systems = []
with open(path) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if r["label"] not in systems:
            systems.append(r["label"])
        runs.setdefault((r["label"], r["op"], int(r["clients"])), []).append(r)

throughput = {}
print(f"{'system':<8} {'op':<6} {'clients':>7} {'throughput':>11} {'p50_ms':>9} {'p99_ms':>9}")
for system in systems:
    for op in kinds:
        for c in clients:
            rs = runs.get((system, op, c))
            if not rs:
                continue
            t = statistics.median(float(r["throughput"]) for r in rs)
            p50 = statistics.median(float(r["p50_ms"]) for r in rs)
            p99 = statistics.median(float(r["p99_ms"]) for r in rs)
            throughput[(system, op, c)] = t
            print(f"{system:<8} {op:<6} {c:>7} {t:>11.1f} {p50:>9.3f} {p99:>9.3f}")


def ratio(op, c):
    a = throughput.get(("shoal", op, c))
    b = throughput.get(("etcd", op, c))
    return f"{a / b:.2f}" if a is not None and b else "n/a"


# put_throughput_ratio_256 goes last, whatever CLIENTS_LIST is.
for c in clients:
    print(f"range_throughput_ratio_{c}={ratio('range', c)}")
for c in clients:
    if c != 256:
        print(f"put_throughput_ratio_{c}={ratio('put', c)}")
print(f"put_throughput_ratio_256={ratio('put', 256)}")
PY
