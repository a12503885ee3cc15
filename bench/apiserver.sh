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
#   AUTHZ=compare RBAC on against off in one run: each repeat runs the
#                 load twice, with --authorization-mode RBAC and AlwaysAllow,
#                 as a ServiceAccount `bench` bound to `edit` in the bench's
#                 namespace (its token from `kubectl create token`), so that every
#                 request is authenticated the same way and RBAC decides
#                 (the admin is in system:masters, which RBAC never looks at)
#   KUBECTL       kubectl for AUTHZ=compare (default: kubectl)
#   KEEP_TMP=1    keep the data directories and logs (the path is printed)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
PODS=${PODS:-10000}
CLIENTS=${CLIENTS:-100}
WATCHERS=${WATCHERS:-1000}
WATCH_EVENTS=${WATCH_EVENTS:-100}
REPEAT=${REPEAT:-3}
AUTHZ=${AUTHZ:-}
KUBECTL=${KUBECTL:-kubectl}

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
MODES=(default)
[ "$AUTHZ" = compare ] && MODES=(RBAC AlwaysAllow)
for run in $(seq 1 "$REPEAT"); do
  for mode in "${MODES[@]}"; do
  DIR="$TMP/run-$run-$mode"
  mkdir -p "$DIR"
  # --no-agent: the API alone (as root, `shoal up` would also run a node
  # agent, and the bench's pods would be started for real).
  UP_FLAGS=(--data-dir "$DIR" --port 0 --no-agent)
  [ "${CONTROLLERS:-0}" = 1 ] || UP_FLAGS+=(--no-controllers)
  [ "$mode" = default ] || UP_FLAGS+=(--authorization-mode "$mode")
  "$SHOAL" up "${UP_FLAGS[@]}" >"$DIR/up.log" 2>&1 &
  UP_PID=$!
  for _ in $(seq 1 300); do
    [ -f "$DIR/kubeconfig" ] && break
    sleep 0.1
  done
  [ -f "$DIR/kubeconfig" ] || { log "shoal up did not start:"; cat "$DIR/up.log" >&2; exit 1; }
  KUBECONFIG_RUN="$DIR/kubeconfig"
  if [ "$mode" != default ]; then
    for _ in $(seq 1 100); do
      "$KUBECTL" --kubeconfig "$DIR/kubeconfig" create serviceaccount bench >/dev/null 2>&1 && break
      sleep 0.2
    done
    "$KUBECTL" --kubeconfig "$DIR/kubeconfig" create namespace bench >/dev/null
    "$KUBECTL" --kubeconfig "$DIR/kubeconfig" create rolebinding bench-edit -n bench \
      --clusterrole=edit --serviceaccount=default:bench >/dev/null
    TOKEN=$("$KUBECTL" --kubeconfig "$DIR/kubeconfig" create token bench --duration=4h)
    sed "s|token: .*|token: $TOKEN|" "$DIR/kubeconfig" >"$DIR/kubeconfig-bench"
    KUBECONFIG_RUN="$DIR/kubeconfig-bench"
  fi
  log "run $run ($mode): $PODS pods, $CLIENTS clients, $WATCHERS watchers"
  "$SHOAL" bench api --kubeconfig "$KUBECONFIG_RUN" --pods "$PODS" --clients "$CLIENTS" \
    --watchers "$WATCHERS" --watch-events "$WATCH_EVENTS" \
    | python3 -c 'import json,sys; [print(json.dumps(dict(json.loads(l), mode=sys.argv[1]))) for l in sys.stdin if l.strip()]' "$mode" \
    | tee -a "$RESULTS"
  kill "$UP_PID"; wait "$UP_PID" 2>/dev/null || true; UP_PID=
  done
done

python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = ["create_per_sec", "create_p50_ms", "create_p99_ms", "list_ms_median",
        "watch_delivery_p50_ms", "watch_delivery_p99_ms", "create_errors", "watch_events_received"]
modes = sorted({r["mode"] for r in runs})
medians = {}
for mode in modes:
    these = [r for r in runs if r["mode"] == mode]
    print("median of %d runs (%s):" % (len(these), mode))
    medians[mode] = {k: statistics.median(r[k] for r in these) for k in keys}
    for k in keys:
        print("  %-24s %s" % (k, round(medians[mode][k], 2)))
if set(modes) == {"RBAC", "AlwaysAllow"}:
    on, off = medians["RBAC"], medians["AlwaysAllow"]
    print("RBAC on / off: create/s %.3f, create p99 %.3f" % (
        on["create_per_sec"] / off["create_per_sec"], on["create_p99_ms"] / off["create_p99_ms"]))
PY
