#!/usr/bin/env bash
# The scheduler and the control loops of `shoal up` with many simulated
# nodes, and node loss with the default timeouts. See docs/benchmarks.md.
#
# 1. Scheduling: NODES simulated nodes, PODS pods in DEPLOYMENTS
#    Deployments (`shoal bench scheduler`): pods bound per second and
#    create-to-bound latency, from a watch.
# 2. Node loss: 3 simulated nodes (one process each), a Deployment of
#    LOSS_PODS replicas; the process of one node is killed and the time
#    until all replicas run again on the other nodes is measured (defaults:
#    5 s grace period + 5 s eviction timeout).
# Repeats REPEAT times on fresh clusters, prints each run and the medians.
#
# Builds nothing: run `cargo build --release -p shoal` first.
#
# Environment:
#   SHOAL        shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   NODES        simulated nodes (default 1000)
#   PODS         pods (default 10000)
#   DEPLOYMENTS  Deployments sharing them (default 10)
#   LOSS_PODS    replicas in the node-loss run (default 30)
#   REPEAT       runs (default 3)
#   KUBECTL      kubectl (default: kubectl on PATH)
#   KEEP_TMP=1   keep the data directories and logs (the path is printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
NODES=${NODES:-1000}
PODS=${PODS:-10000}
DEPLOYMENTS=${DEPLOYMENTS:-10}
LOSS_PODS=${LOSS_PODS:-30}
REPEAT=${REPEAT:-3}
KUBECTL=${KUBECTL:-kubectl}

log() { printf '[scheduler-bench] %s\n' "$*" >&2; }

[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed for the medians"; exit 1; }

TMP=$(mktemp -d)
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

start_up() { # DIR [flags of shoal up]
  local dir=$1; shift
  # --no-agent: only the simulated nodes; as root, `shoal up` would also
  # run this machine's real node agent and some pods would land on it.
  "$SHOAL" up --data-dir "$dir" --port 0 --no-agent "$@" >"$dir/up.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 300); do
    [ -f "$dir/kubeconfig" ] && KUBECONFIG="$dir/kubeconfig" "$KUBECTL" get ns kube-system >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "shoal up did not start:"; cat "$dir/up.log" >&2; exit 1
}

now() { date +%s.%N; }

RESULTS="$TMP/results.jsonl"
for run in $(seq 1 "$REPEAT"); do
  DIR="$TMP/sched-$run"; mkdir -p "$DIR"
  # Leases every 10 s, as the kubelet's default, so the grace period is
  # Kubernetes' default too (40 s): 1,000 nodes renewing every second
  # would be the load measured instead.
  start_up "$DIR" --node-monitor-grace-period=40s
  export KUBECONFIG="$DIR/kubeconfig"
  "$SHOAL" agent --simulate --count "$NODES" --name-prefix sim --lease-interval 10 \
    --kubeconfig "$KUBECONFIG" >"$DIR/agent.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 600); do
    [ "$("$KUBECTL" get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" -ge "$NODES" ] && break
    sleep 0.5
  done
  log "run $run: $NODES nodes, $PODS pods in $DEPLOYMENTS deployments"
  "$SHOAL" bench scheduler --kubeconfig "$KUBECONFIG" --pods "$PODS" \
    --deployments "$DEPLOYMENTS" >"$DIR/sched.json"
  stop_all

  DIR="$TMP/loss-$run"; mkdir -p "$DIR"
  start_up "$DIR"
  export KUBECONFIG="$DIR/kubeconfig"
  for p in a b c; do
    "$SHOAL" agent --simulate --count 1 --name-prefix "$p" --kubeconfig "$KUBECONFIG" >"$DIR/agent-$p.log" 2>&1 &
    PIDS+=($!)
    eval "AGENT_$p=$!"
  done
  "$KUBECTL" create deployment loss --image=busybox --replicas="$LOSS_PODS" >/dev/null
  running_elsewhere() { # pods Running and not on a-0, without a deletion
    "$KUBECTL" get pods -l app=loss -o \
      'jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}' \
      | awk '$1 != "a-0" && $2 == "Running" && NF == 2' | wc -l
  }
  for _ in $(seq 1 600); do
    [ "$("$KUBECTL" get pods -l app=loss --field-selector=status.phase=Running --no-headers 2>/dev/null | wc -l)" -ge "$LOSS_PODS" ] && break
    sleep 0.2
  done
  ON_A=$("$KUBECTL" get pods -l app=loss --field-selector=spec.nodeName=a-0 --no-headers | wc -l)
  T0=$(now)
  kill -9 "$AGENT_a"
  UNKNOWN=
  for _ in $(seq 1 1200); do
    if [ -z "$UNKNOWN" ] && "$KUBECTL" get pods -l app=loss --no-headers 2>/dev/null | grep -q ' Unknown '; then
      UNKNOWN=$(now)
    fi
    [ "$(running_elsewhere)" -ge "$LOSS_PODS" ] && break
    sleep 0.1
  done
  T1=$(now)
  stop_all
  python3 - "$DIR/../sched-$run/sched.json" "$T0" "${UNKNOWN:-$T1}" "$T1" "$ON_A" <<'PY' | tee -a "$RESULTS"
import json, sys
sched = json.load(open(sys.argv[1]))
t0, unknown, t1, on_a = float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
sched.update({"loss_pods_on_lost_node": on_a,
              "loss_to_unknown_s": round(unknown - t0, 2),
              "loss_to_replaced_s": round(t1 - t0, 2)})
print(json.dumps(sched))
PY
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["bound_per_sec", "create_to_bound_p50_ms", "create_to_bound_p99_ms", "seconds",
        "loss_to_unknown_s", "loss_to_replaced_s"]
print("median of %d runs:" % len(runs))
for k in keys:
    print("  %-24s %s" % (k, round(statistics.median(r[k] for r in runs), 2)))
PY
