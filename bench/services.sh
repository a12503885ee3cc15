#!/usr/bin/env bash
# The service proxy against the kernel, in one run (root; nothing on the
# machine is touched: `shoal bench proxy` works in a network namespace of
# its own with a bridge and two pod namespaces):
#   - programming latency: with N Services (2 simulated endpoints each),
#     one endpoint of one Service changes; time from the change to the
#     rule in the kernel (plan over every Service, transaction, nft),
#     p50/p99 over CHANGES changes;
#   - data path: TCP connections per second and p99 connect time from one
#     pod to one ClusterIP with N Services present, and straight to the
#     pod's IP (no Service, the limit);
#   - policy latency: a default-deny NetworkPolicy entering the ruleset to
#     the first refused connection, p50/p99 over 50 changes.
# REPEAT runs; one JSON line per Service count and run, then the medians.
#
# Builds nothing: run `cargo build --release -p shoal` first.
#
#   SHOAL     shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   SERVICES  Service counts (default 10,1000,10000)
#   CHANGES   changes timed per count (default 100)
#   DURATION  data-path measurement per count (default 3s)
#   REPEAT    runs (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
SERVICES=${SERVICES:-10,1000,10000}
CHANGES=${CHANGES:-100}
DURATION=${DURATION:-3s}
REPEAT=${REPEAT:-3}

log() { echo "[services-bench] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root (a network namespace, nftables)"; exit 1; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }
command -v nft >/dev/null || { log "missing nft (Debian nftables)"; exit 1; }

OUT=$(mktemp)
for run in $(seq "$REPEAT"); do
  log "run $run of $REPEAT"
  "$SHOAL" bench proxy --services "$SERVICES" --changes "$CHANGES" --duration "$DURATION" | tee -a "$OUT"
done

python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {}
for r in rows:
    if "services" in r:
        by.setdefault(r["services"], []).append(r)
policy = [r for r in rows if "policy_changes" in r]
keys = ["full_sync_ms", "change_to_kernel_p50_ms", "change_to_kernel_p99_ms",
        "cluster_ip_conn_per_s", "cluster_ip_connect_p99_ms",
        "pod_ip_conn_per_s", "pod_ip_connect_p99_ms"]
print("| services | " + " | ".join(keys) + " |")
print("|" + "---|" * (len(keys) + 1))
for n in sorted(by):
    med = [statistics.median(r[k] for r in by[n]) for k in keys]
    print(f"| {n} | " + " | ".join(f"{m:g}" for m in med) + " |")
if policy:
    p50 = statistics.median(r["policy_to_first_refusal_p50_ms"] for r in policy)
    p99 = statistics.median(r["policy_to_first_refusal_p99_ms"] for r in policy)
    print(f"\npolicy created -> first refusal (median of runs): p50 {p50:g} ms, p99 {p99:g} ms")
PY
rm -f "$OUT"
