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
#   STORES      the store's transport per lab, taken in turn (default
#               "tls", the lab as docker-compose.yml has it; "tls plain"
#               alternates with a copy whose store speaks plain HTTP, so
#               that one run compares the two)
#   KUBECTL     kubectl (default: kubectl)
#   SHOAL       shoal binary for the image
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REPEAT=${REPEAT:-3}
SCENARIOS=${SCENARIOS:-node-killed store-leader-killed store-member-wiped apiserver-killed}
read -r -a STORES <<<"${STORES:-tls}"
((${#STORES[@]})) || STORES=(tls)
export KUBECTL=${KUBECTL:-kubectl}
export COMPOSE_PROJECT_NAME=${COMPOSE_PROJECT_NAME:-shoal-lab-bench}
OUT=$ROOT/lab/out/bench
mkdir -p "$OUT"
rm -f "$OUT"/run-*.json

log() { printf '[bench/lab] %s\n' "$*" >&2; }
now() { date +%s.%N; }
# The lab with its store on plain HTTP: docker-compose.yml without the
# store's TLS settings (the members still make their files, unused).
PLAIN=$OUT/docker-compose.plain.yml
sed -e 's#https://\(172\.30\.0\.1[123]\|0\.0\.0\.0\):\(2379\|2380\)#http://\1:\2#g' \
    -e '/ETCD_\(PEER_\)\?\(CERT_FILE\|KEY_FILE\|TRUSTED_CA_FILE\|CLIENT_CERT_AUTH\):/d' \
    -e '/--etcd-\(cafile\|certfile\|keyfile\)=/d' \
    -e 's#\./lab/out:#'"$ROOT"'/lab/out:#' docker-compose.yml >"$PLAIN"
if grep -q 'https://\|ETCD_[A-Z_]*_FILE:\|--etcd-[a-z]*file' "$PLAIN"; then
    log "the plain copy of docker-compose.yml still has TLS settings ($PLAIN): extend the sed above"
    exit 2
fi
compose_for() { # the docker-compose command for transport $1
    case $1 in
    tls) echo docker-compose ;;
    plain) echo "docker-compose -f $PLAIN --project-directory $ROOT" ;;
    esac
}
for store in "${STORES[@]}"; do
    [[ $store == tls || $store == plain ]] || { log "STORES: $store is neither tls nor plain" && exit 2; }
done
scheme_for() { [[ $1 == plain ]] && echo http || echo https; }
COMPOSE=docker-compose
trap '$COMPOSE down -v --remove-orphans >/dev/null 2>&1 || true' EXIT

lab/build-image.sh ${SHOAL:+"$SHOAL"}

ready() {
    [[ $(KUBECONFIG=lab/out/kubeconfig "$KUBECTL" get nodes --no-headers 2>/dev/null | awk '$2 == "Ready"' | wc -l) -eq 3 ]]
}

for run in $(seq 1 "$REPEAT"); do
    store=${STORES[$(((run - 1) % ${#STORES[@]}))]}
    $COMPOSE down -v --remove-orphans >/dev/null 2>&1
    COMPOSE=$(compose_for "$store")
    rm -f lab/out/kubeconfig
    t0=$(now)
    $COMPOSE up -d >/dev/null 2>&1
    until ready; do
        sleep 0.2
        if awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 120) }'; then
            log "run $run: the lab did not come up within 120 s"
            exit 1
        fi
    done
    up=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    log "run $run (store $store): three Ready nodes ${up}s after up -d"
    # shellcheck disable=SC2086
    COMPOSE=$COMPOSE STORE_SCHEME=$(scheme_for "$store") lab/chaos.sh $SCENARIOS >/dev/null ||
        log "run $run: a scenario failed (its row says FAIL)"
    python3 - "$up" "$store" lab/out/chaos.json "$OUT/run-$run.json" <<'PY'
import json, sys
rows = json.load(open(sys.argv[3]))
rows.insert(0, {"scenario": "lab", "must_hold": "docker-compose up -d to three Ready nodes",
                "measured": sys.argv[1] + "s", "result": "PASS"})
for row in rows:
    row["store"] = sys.argv[2]
json.dump(rows, open(sys.argv[4], "w"), indent=2)
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
        key = (r["store"], r["scenario"], r["must_hold"])
        figures.setdefault(key, []).append((float(m.group(1)), r["result"]))
print("| store | scenario | figure | median | runs |")
print("|---|---|---|---|---|")
for (store, scenario, must), values in figures.items():
    median = statistics.median(v for v, _ in values)
    runs = ", ".join(f"{v:.1f}" + ("" if res == "PASS" else " (FAIL)") for v, res in values)
    print(f"| {store} | {scenario} | {must} | {median:.1f} s | {runs} |")
PY
