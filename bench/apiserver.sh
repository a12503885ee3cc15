#!/usr/bin/env bash
# Load on the Kubernetes API of `shoal up` (a 3-member store and an
# apiserver on this machine): creates PODS pods from CLIENTS concurrent
# clients, times full lists of them, then opens WATCHERS watches and
# measures how long WATCH_EVENTS new pods take to reach every watcher.
# Repeats REPEAT times on a fresh cluster and prints each run's JSON line,
# then the medians. See docs/benchmarks.md.
#
# Builds nothing: run `cargo build --release -p shoal` first.
#
# Environment:
#   SHOAL         shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   PODS          pods created per run (default 10000)
#   CLIENTS       concurrent creating clients (default 100)
#   WATCHERS      concurrent watchers (default 1000)
#   WATCH_EVENTS  pods created while they watch (default 100)
#   REPEAT        runs (default 3)
#   CONTROLLERS=1 also run the scheduler and control loops in the cluster
#                 (by default the API is measured alone: with no nodes the
#                 scheduler would mark all PODS pods unschedulable meanwhile)
#   KEEP_TMP=1    keep the data directories and logs (the path is printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
PODS=${PODS:-10000}
CLIENTS=${CLIENTS:-100}
WATCHERS=${WATCHERS:-1000}
WATCH_EVENTS=${WATCH_EVENTS:-100}
REPEAT=${REPEAT:-3}

log() { printf '[apiserver-bench] %s\n' "$*" >&2; }

[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }
command -v python3 >/dev/null || { log "python3 is needed for the medians"; exit 1; }

TMP=$(mktemp -d)
UP_PID=
cleanup() {
  if [ -n "$UP_PID" ]; then kill "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

RESULTS="$TMP/results.jsonl"
for run in $(seq 1 "$REPEAT"); do
  DIR="$TMP/run-$run"
  mkdir -p "$DIR"
  # --no-agent: the API alone (as root, `shoal up` would also run a node
  # agent, and the bench's pods would be started for real).
  UP_FLAGS=(--data-dir "$DIR" --port 0 --no-agent)
  [ "${CONTROLLERS:-0}" = 1 ] || UP_FLAGS+=(--no-controllers)
  "$SHOAL" up "${UP_FLAGS[@]}" >"$DIR/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 1 300); do
    [ -f "$DIR/kubeconfig" ] && break
    sleep 0.1
  done
  [ -f "$DIR/kubeconfig" ] || { log "shoal up did not start:"; cat "$DIR/up.log" >&2; exit 1; }
  log "run $run: $PODS pods, $CLIENTS clients, $WATCHERS watchers"
  "$SHOAL" bench api --kubeconfig "$DIR/kubeconfig" --pods "$PODS" --clients "$CLIENTS" \
    --watchers "$WATCHERS" --watch-events "$WATCH_EVENTS" | tee -a "$RESULTS"
  kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["create_per_sec", "create_p50_ms", "create_p99_ms", "list_ms_median",
        "watch_delivery_p50_ms", "watch_delivery_p99_ms", "create_errors", "watch_events_received"]
print("median of %d runs:" % len(runs))
for k in keys:
    print("  %-24s %s" % (k, round(statistics.median(r[k] for r in runs), 2)))
PY
