#!/usr/bin/env bash
# Pod startup latency on one real node agent. See docs/benchmarks.md.
#
# Each run starts a fresh `shoal up` (store, apiserver, controllers and this
# machine's node agent: runc, busybox loaded), waits for the node to be
# Ready, and runs `shoal bench pod-startup`: PODS busybox pods created at
# once, create-to-Running+Ready latencies as seen by a watch (one JSON
# line). Then it stops `shoal up` (SIGTERM; --stop-pods-on-exit kills the
# containers). Repeats REPEAT times, prints each run and the medians.
#
# Needs root (runc, mounts, network namespaces) and runc. Builds nothing:
# run `cargo build --release -p shoal -p shoal-agent` first (the second
# package is the small `shoal-container-shim` the agent runs per container
# when it sits beside `shoal`).
#
# Environment:
#   SHOAL        shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   PODS         pods created at once (default 100)
#   REPEAT       runs (default 3)
#   TIMEOUT      seconds a run may wait for its pods to be Ready (default 300)
#   KUBECTL      kubectl (default: kubectl on PATH)
#   KEEP_TMP=1   keep the data directories and logs (the path is printed)
#   RUST_LOG     passed to `shoal up` (e.g. info,shoal_agent=debug to see
#                the agent's steps with timestamps in up.log)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
PODS=${PODS:-100}
REPEAT=${REPEAT:-3}
TIMEOUT=${TIMEOUT:-300}
KUBECTL=${KUBECTL:-kubectl}

log() { printf '[pod-startup-bench] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (the node agent runs containers with runc)"; exit 1; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal -p shoal-agent)"; exit 1; }
command -v runc >/dev/null || { log "runc is needed"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed for the medians"; exit 1; }
command -v "$KUBECTL" >/dev/null || { log "kubectl is needed ($KUBECTL)"; exit 1; }

TMP=$(mktemp -d)
UP_PID=
# Stops `shoal up` the way a person would (SIGTERM, so that its agent
# kills the pods' containers and removes their sandboxes), SIGKILL only if
# it hangs.
stop_up() {
  [ -n "$UP_PID" ] || return 0
  kill -TERM "$UP_PID" 2>/dev/null || true
  for _ in $(seq 1 600); do
    kill -0 "$UP_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$UP_PID" 2>/dev/null; then
    log "shoal up did not stop within 60 s; killing it (containers may be left behind)"
    kill -KILL "$UP_PID" 2>/dev/null || true
  fi
  wait "$UP_PID" 2>/dev/null || true
  UP_PID=
}
cleanup() {
  stop_up
  if [ "${KEEP_TMP:-0}" = 1 ]; then
    log "kept $TMP"
  elif grep -q " $TMP/" /proc/self/mounts; then
    # Never rm -rf through a container's mounts.
    log "mounts are left under $TMP; not removing it:"
    grep " $TMP/" /proc/self/mounts | cut -d' ' -f2 >&2
  else
    rm -rf --one-file-system "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_up() { # DIR
  local dir=$1
  "$SHOAL" up --data-dir "$dir" --port 0 --agent-port 0 --stop-pods-on-exit \
    >"$dir/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 1 600); do
    kill -0 "$UP_PID" 2>/dev/null || { log "shoal up exited:"; cat "$dir/up.log" >&2; exit 1; }
    if [ -f "$dir/kubeconfig" ] &&
      KUBECONFIG="$dir/kubeconfig" "$KUBECTL" get nodes --no-headers 2>/dev/null | grep -q ' Ready '; then
      return 0
    fi
    sleep 0.1
  done
  log "the node did not become Ready within 60 s:"; cat "$dir/up.log" >&2; exit 1
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
for run in $(seq 1 "$REPEAT"); do
  DIR="$TMP/run-$run"; mkdir -p "$DIR"
  start_up "$DIR"
  log "run $run: $PODS pods at once on node $(KUBECONFIG="$DIR/kubeconfig" "$KUBECTL" get nodes --no-headers | awk '{print $1}')"
  if ! "$SHOAL" bench pod-startup --kubeconfig "$DIR/kubeconfig" --pods "$PODS" \
    --timeout "$TIMEOUT" >"$DIR/result.json" 2>"$DIR/bench.log"; then
    # A line with every pod ready means only the clean-up failed; the next
    # run has a fresh cluster anyway.
    if python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(r["ready"] != r["pods"])' \
      "$DIR/result.json" 2>/dev/null; then
      log "run $run: measured, but the clean-up failed: $(head -n 1 "$DIR/bench.log")"
    else
      log "run $run failed:"; cat "$DIR/bench.log" "$DIR/result.json" >&2; exit 1
    fi
  fi
  stop_up
  tee -a "$RESULTS" <"$DIR/result.json"
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["create_to_ready_p50_ms", "create_to_ready_p90_ms", "create_to_ready_p99_ms",
        "create_to_ready_max_ms", "create_to_bound_p50_ms", "create_to_bound_p99_ms",
        "seconds"]
print("median of %d runs:" % len(runs))
for k in keys:
    print("  %-24s %s" % (k, round(statistics.median(r[k] for r in runs), 1)))
PY
