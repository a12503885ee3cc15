#!/usr/bin/env bash
# The node agent's own CPU with many pods and usage sampling on. See
# docs/benchmarks.md ("Agent metrics").
#
# Starts `shoal up --no-agent` and a `shoal agent` process of its own
# (node `bench-1`, no overlay) with `--metrics-interval` INTERVAL, runs PODS
# busybox pods (`sleep`) on it, waits for them to be Ready, lets the node
# settle, then measures the agent process's CPU time (utime + stime from
# /proc) over WINDOW seconds while a scraper fetches /metrics/resource and
# /metrics every INTERVAL, as Prometheus would. Prints one JSON line per run
# and the medians. REPEAT runs, each on a fresh cluster.
#
# Needs root and runc; builds nothing: `cargo build --release -p shoal -p
# shoal-agent` first.
#
# Environment:
#   SHOAL     shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   PODS      pods (default 100)
#   INTERVAL  --metrics-interval and scrape interval in seconds (default 15)
#   WINDOW    seconds measured (default 120)
#   SETTLE    seconds waited after the pods are Ready (default 30)
#   REPEAT    runs (default 3)
#   KUBECTL   kubectl (default: kubectl on PATH)
#   PERF=1    also record the agent with `perf record -g` over the window
#             (the report is printed: where the agent's CPU goes)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
PODS=${PODS:-100}
INTERVAL=${INTERVAL:-15}
WINDOW=${WINDOW:-120}
SETTLE=${SETTLE:-30}
REPEAT=${REPEAT:-3}
KUBECTL=${KUBECTL:-kubectl}

log() { printf '[agent-metrics-bench] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (the node agent runs containers with runc)"; exit 1; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal -p shoal-agent)"; exit 1; }
command -v runc >/dev/null || { log "runc is needed"; exit 1; }
command -v "$KUBECTL" >/dev/null || { log "kubectl is needed ($KUBECTL)"; exit 1; }

TMP=$(mktemp -d)
UP_PID=
AGENT_PID=
# SIGTERM to process $1 (the agent stops its pods, `shoal up` its
# components), SIGKILL if it is still there after 90 s.
stop_pid() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 900); do
    kill -0 "$1" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
stop_agent() { stop_pid "$AGENT_PID"; AGENT_PID=; }
stop_up() { stop_pid "$UP_PID"; UP_PID=; }
cleanup() {
  stop_agent
  stop_up
  if grep -q " $TMP/" /proc/self/mounts; then
    log "mounts are left under $TMP; not removing it"
  else
    rm -rf --one-file-system "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# CPU seconds (user + system) of process $1 so far.
cpu_seconds() {
  awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$1/stat"
}

RESULTS="$TMP/results.jsonl"
: >"$RESULTS"
for run in $(seq 1 "$REPEAT"); do
  DIR="$TMP/run-$run"; mkdir -p "$DIR"
  "$SHOAL" up --data-dir "$DIR" --port 0 --no-agent >"$DIR/up.log" 2>&1 &
  UP_PID=$!
  export KUBECONFIG="$DIR/kubeconfig"
  for _ in $(seq 1 600); do
    [ -f "$KUBECONFIG" ] && "$KUBECTL" get namespaces >/dev/null 2>&1 && break
    kill -0 "$UP_PID" 2>/dev/null || { log "shoal up exited:"; cat "$DIR/up.log" >&2; exit 1; }
    sleep 0.1
  done
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$SHOAL" agent --kubeconfig "$KUBECONFIG" --node-name bench-1 --node-ip 127.0.0.1 \
    --bind-address 127.0.0.1 --port "$PORT" --no-overlay --stop-pods-on-exit \
    --data-dir "$DIR/agent" --metrics-interval "${INTERVAL}s" >"$DIR/agent.log" 2>&1 &
  AGENT_PID=$!
  ready=
  for _ in $(seq 1 900); do
    kill -0 "$AGENT_PID" 2>/dev/null || { log "the agent exited:"; tail -n 20 "$DIR/agent.log" >&2; exit 1; }
    if "$KUBECTL" get node bench-1 --no-headers 2>/dev/null | grep -q ' Ready '; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || { log "the node did not become Ready:"; tail -n 20 "$DIR/agent.log" >&2; exit 1; }
  "$KUBECTL" create deployment sleepers --image=busybox --replicas="$PODS" -- sleep 36000 >/dev/null
  if ! "$KUBECTL" rollout status deployment/sleepers --timeout=600s >/dev/null; then
    log "run $run: the pods did not become Ready"; "$KUBECTL" get pods | tail -n 5 >&2; exit 1
  fi
  sleep "$SETTLE"
  PERF_PID=
  if [ "${PERF:-0}" = 1 ]; then
    perf record -g -o "$DIR/perf.data" -p "$AGENT_PID" -- sleep "$WINDOW" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  # Scraped as Prometheus would be: with a token the agent has the
  # apiserver review and authorize (nodes/metrics), here the admin's.
  TOKEN=$(awk '$1 == "token:" { print $2; exit }' "$KUBECONFIG")
  before=$(cpu_seconds "$AGENT_PID")
  start=$(date +%s.%N)
  scrapes=0
  while :; do
    now=$(date +%s.%N)
    awk -v a="$start" -v b="$now" -v w="$WINDOW" 'BEGIN { exit !(b - a >= w) }' && break
    curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/metrics/resource" -o "$DIR/resource.txt"
    curl -sk -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$PORT/metrics" -o /dev/null
    scrapes=$((scrapes + 1))
    sleep "$INTERVAL"
  done
  after=$(cpu_seconds "$AGENT_PID")
  end=$(date +%s.%N)
  if [ -n "$PERF_PID" ]; then
    wait "$PERF_PID" || true
    perf report -i "$DIR/perf.data" --no-children --sort symbol --stdio 2>/dev/null |
      grep -v '^#' | grep -E '^ +[0-9]' | head -n 40 >&2 || true
  fi
  containers=$(grep -c '^container_cpu_usage_seconds_total{' "$DIR/resource.txt" || true)
  python3 -c 'import json,sys
b, a, s, e, pods, scrapes, seen, interval = sys.argv[1:]
secs = float(e) - float(s)
print(json.dumps({"pods": int(pods), "interval_s": int(interval), "window_s": round(secs, 1),
  "agent_cpu_s": round(float(a) - float(b), 2), "agent_cpu_percent_of_a_core": round(100 * (float(a) - float(b)) / secs, 2),
  "scrapes": int(scrapes), "containers_in_last_scrape": int(seen)}))' \
    "$before" "$after" "$start" "$end" "$PODS" "$scrapes" "$containers" "$INTERVAL" | tee -a "$RESULTS"
  "$KUBECTL" delete deployment sleepers --wait=false >/dev/null
  stop_agent
  stop_up
  unset KUBECONFIG
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print("median of %d runs: agent CPU %.2f%% of a core (%.2f s over %.0f s)" % (
    len(runs),
    statistics.median(r["agent_cpu_percent_of_a_core"] for r in runs),
    statistics.median(r["agent_cpu_s"] for r in runs),
    statistics.median(r["window_s"] for r in runs)))
PY
