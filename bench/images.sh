#!/usr/bin/env bash
# The guide's images made from Debian packages: the first build of each
# (fresh cache: resolve, fetch, unpack, write), a rebuild of the unchanged
# recipe (a no-op), the archive's size plain and gzip-compressed (the
# official images' sizes are compressed: nginx:1.25 ~70 MB, postgres:15
# ~150 MB), then, on a fresh `shoal up` with its node agent, the time from
# `kubectl apply` of the guide's postgres StatefulSet to 3/3 Ready, the
# image present (loaded before) and absent (the node makes it on the first
# pod's pull, from the cache of the builds above). See docs/benchmarks.md.
#
# Needs root (the agent), apt sources, a built shoal. Environment:
#   SHOAL    shoal binary (default ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   KUBECTL  kubectl (default kubectl)
#   REPEAT   StatefulSet rollouts per case (default 3)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
KUBECTL=${KUBECTL:-kubectl}
REPEAT=${REPEAT:-3}

log() { printf '[bench/images] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
[ "$(id -u)" = 0 ] || { log "needs root (the node agent runs containers with runc)"; exit 1; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }

TMP=$(mktemp -d -t shoal-images-bench.XXXXXX)
UP_PID=
stop_up() {
    [ -n "$UP_PID" ] || return 0
    kill -TERM "$UP_PID" 2>/dev/null || true
    wait "$UP_PID" 2>/dev/null || true
    UP_PID=
}
cleanup() {
    stop_up
    if grep -q " $TMP/" /proc/self/mounts; then
        log "mounts are left under $TMP; not removing it"
    else
        rm -rf --one-file-system "$TMP"
    fi
}
trap cleanup EXIT

echo "| image | first build | rebuild (unchanged) | packages | archive | gzip -6 |"
echo "|---|---|---|---|---|---|"
for image in nginx:1.25 postgres:15; do
    t0=$(now)
    out=$("$SHOAL" image build "$image" --no-load --cache "$TMP/cache" -o "$TMP/${image%%:*}.tar")
    first=$(since "$t0")
    t0=$(now)
    again=$("$SHOAL" image build "$image" --no-load --cache "$TMP/cache")
    rebuild=$(since "$t0")
    grep -q '^Found built' <<<"$again" || { log "the rebuild of $image was not a no-op: $again"; exit 1; }
    packages=$(sed -n 's/.*(\([0-9]*\) packages).*/\1/p' <<<"$out" | head -n 1)
    size=$(stat -c %s "$TMP/${image%%:*}.tar")
    gz=$(gzip -6 -c "$TMP/${image%%:*}.tar" | wc -c)
    echo "| $image | ${first} s | ${rebuild} s | $packages | $((size / 1000000)) MB | $((gz / 1000000)) MB |"
done

start_up() {
    local dir=$1
    mkdir -p "$dir"
    SHOAL_IMAGE_CACHE=$TMP/cache "$SHOAL" up --data-dir "$dir" --port 0 --agent-port 0 --stop-pods-on-exit \
        >"$dir/up.log" 2>&1 &
    UP_PID=$!
    for _ in $(seq 1 600); do
        if [ -f "$dir/kubeconfig" ] &&
            KUBECONFIG="$dir/kubeconfig" "$KUBECTL" get nodes --no-headers 2>/dev/null | grep -q ' Ready '; then
            return 0
        fi
        sleep 0.1
    done
    log "the node did not become Ready within 60 s"
    exit 1
}

# apply → 3/3 Ready, on a fresh cluster; "present" loads the image first.
rollout() {
    local case=$1 run=$2 dir=$TMP/up-$1-$2
    start_up "$dir"
    if [ "$case" = present ]; then
        "$SHOAL" image load "$TMP/postgres.tar" --data-dir "$dir/agent" >/dev/null
    fi
    export KUBECONFIG=$dir/kubeconfig
    local t0
    t0=$(now)
    "$KUBECTL" apply -f "$ROOT/tests/manifests/statefulset.yaml" >/dev/null
    until [ "$("$KUBECTL" get statefulset postgres -o jsonpath='{.status.readyReplicas}' 2>/dev/null)" = 3 ]; do
        sleep 0.2
        awk -v a="$t0" -v b="$(now)" 'BEGIN { exit !(b - a > 600) }' && { log "not Ready in 600 s"; exit 1; }
    done
    echo "$case $(since "$t0")" >>"$TMP/rollouts"
    stop_up
}
: >"$TMP/rollouts"
for run in $(seq 1 "$REPEAT"); do
    rollout present "$run"
    rollout absent "$run"
done
echo
echo "| postgres StatefulSet, apply → 3/3 Ready | median | runs |"
echo "|---|---|---|"
python3 - "$TMP/rollouts" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    case, secs = line.split()
    runs.setdefault(case, []).append(float(secs))
for case, label in (("present", "image on the node"), ("absent", "image made on the first pull (packages cached)")):
    values = runs.get(case, [])
    if values:
        print(f"| {label} | {statistics.median(values):.1f} s | {', '.join(f'{v:.1f}' for v in values)} |")
PY
