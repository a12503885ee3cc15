#!/usr/bin/env bash
# The lab's failure times, repeated: REPEAT times, a fresh lab
# (`docker-compose down -v`, `up -d`, timed to three Ready nodes), then the
# timed chaos scenarios (lab/chaos.sh). Prints, per measured figure, the
# median and every run's value. See docs/benchmarks.md ("The lab").
#
# Builds nothing: the image is built from SHOAL (lab/build-image.sh; default
# the release build, else the debug build).
#
# Environment:
#   REPEAT      labs brought up (default 3)
#   SCENARIOS   chaos scenarios per lab (default: node-killed
#               store-leader-killed store-member-wiped apiserver-killed)
#   KUBECTL     kubectl (default: kubectl)
#   SHOAL       shoal binary for the image
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
SCENARIOS=${SCENARIOS:-node-killed store-leader-killed store-member-wiped apiserver-killed}
export KUBECTL=${KUBECTL:-kubectl}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-shoal-lab-bench}
OUT=$ROOT/lab/out/bench
mkdir -p "$OUT"
rm -f "$OUT"/run-*.json

log() { printf '[bench/lab] %s\n' "$*" >&2; }
now() { date +%s.%N; }
trap 'docker-compose down -v --remove-orphans >/dev/null 2>&1 || true' EXIT

lab/build-image.sh ${SHOAL:+"$SHOAL"}

ready() {
    [[ $(KUBECONFIG=lab/out/kubeconfig "$KUBECTL" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l) -eq 3 ]]
}

for run in $(seq 1 "$REPEAT"); do
    docker-compose down -v --remove-orphans >/dev/null 2>&1
    rm -f lab/out/kubeconfig
    t0=$(now)
    docker-compose up -d >/dev/null 2>&1
    until ready; do
        sleep 0.2
        if awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 120) }'; then
            log "run $run: the lab did not come up within 120 s"
            exit 1
        fi
    done
    up=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    log "run $run: three Ready nodes ${up}s after up -d"
    # shellcheck disable=SC2086
    lab/chaos.sh $SCENARIOS >/dev/null || log "run $run: a scenario failed (its row says FAIL)"
    python3 - "$up" lab/out/chaos.json "$OUT/run-$run.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[2]))
rows.insert(0, {"scenario": "lab", "must_hold": "docker-compose up -d to three Ready nodes",
                "measured": sys.argv[1] + "s", "result": "PASS"})
json.dump(rows, open(sys.argv[3], "w"), indent=2)
PY
done

python3 - "$OUT" "$REPEAT" <<'PY'
import json, re, statistics, sys
out, repeat = sys.argv[1], int(sys.argv[2])
figures = {}
for run in range(1, repeat + 1):
    for r in json.load(open(f"{out}/run-{run}.json")):
        m = re.match(r"(?:ready after )?([0-9.]+)s", r["measured"])
        if not m:
            continue
        key = (r["scenario"], r["must_hold"])
        figures.setdefault(key, []).append((float(m.group(1)), r["result"]))
print("| scenario | figure | median | runs |")
print("|---|---|---|---|")
for (scenario, must), values in figures.items():
    median = statistics.median(v for v, _ in values)
    runs = ", ".join(f"{v:.1f}" + ("" if res == "PASS" else " (FAIL)") for v, res in values)
    print(f"| {scenario} | {must} | {median:.1f} s | {runs} |")
PY
