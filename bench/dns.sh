#!/usr/bin/env bash
# Cluster DNS against NSD and Knot, in one run, on the same records:
#   - a `shoal up` cluster (no real agent) with SIMNODES simulated nodes is
#     filled with SERVICES Services (every tenth headless) and PODS pods by
#     `shoal bench dns`, which also writes master files of exactly the
#     records shoal's DNS serves for them, and dnsperf's query file (the
#     mix pods send: Service A, headless A, SRV, PTR, and NXDOMAIN from the
#     ndots:5 search path, in equal parts);
#   - `shoal dns` (fed by watches of that cluster), NSD and Knot (loading
#     the master files) answer on loopback, one at a time;
#   - dnsperf for DURATION against each at full speed: QPS, and the CPU
#     seconds the server used (QPS per core = queries / CPU seconds);
#   - dnsperf at RATE queries per second (below saturation), one client,
#     for 10 s with per-query latencies: p50 and p99;
#   - shoal dns's resident memory after the runs.
# REPEAT runs; one JSON line per server and run, then the medians.
#
# Builds nothing: run `cargo build --release -p shoal` first. Needs
# dnsperf, nsd and knot (Debian: apt-get install dnsperf nsd knot).
#
#   SHOAL     shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   SERVICES  Services (default 1000)     PODS      pods (default 10000)
#   SIMNODES  simulated nodes (default 50)
#   DURATION  seconds of each full-speed run (default 30)
#   RATE      queries per second of the latency runs, one client (default 5000)
#   CLIENTS   dnsperf clients (default 20)
#   REPEAT    runs (default 3)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
SERVICES=${SERVICES:-1000}
PODS=${PODS:-10000}
SIMNODES=${SIMNODES:-50}
DURATION=${DURATION:-30}
RATE=${RATE:-5000}
CLIENTS=${CLIENTS:-20}
REPEAT=${REPEAT:-3}

log() { echo "[dns-bench] $*" >&2; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }
for tool in dnsperf nsd knotd dig kubectl; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { log "missing $tool (apt-get install dnsperf nsd knot dnsutils)"; exit 1; }
done
export PATH="$PATH:/usr/sbin"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

log "starting a cluster in $WORK"
"$SHOAL" up --data-dir "$WORK/up" --port 0 --no-agent >"$WORK/up.log" 2>&1 &
PIDS+=($!)
KC="$WORK/up/kubeconfig"
for _ in $(seq 120); do
  [ -f "$KC" ] && kubectl --kubeconfig "$KC" get --raw /readyz >/dev/null 2>&1 && break
  sleep 0.5
done
"$SHOAL" agent --simulate --count "$SIMNODES" --kubeconfig "$KC" >"$WORK/sim.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 120); do
  [ "$(kubectl --kubeconfig "$KC" get nodes --no-headers 2>/dev/null | grep -c ' Ready ')" -ge "$SIMNODES" ] && break
  sleep 0.5
done
log "creating $SERVICES services and $PODS pods"
"$SHOAL" bench dns --kubeconfig "$KC" --services "$SERVICES" --pods "$PODS" --out "$WORK/files" | tee "$WORK/setup.json"

P_SHOAL=$(port); P_NSD=$(port); P_KNOT=$(port)
mkdir -p "$WORK/nsd" "$WORK/knot"
cp "$WORK/files/"*.zone "$WORK/nsd/"
cp "$WORK/files/"*.zone "$WORK/knot/"
cat >"$WORK/nsd/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1
  port: $P_NSD
  username: ""
  chroot: ""
  zonesdir: "$WORK/nsd"
  database: ""
  pidfile: "$WORK/nsd/nsd.pid"
  xfrdfile: "$WORK/nsd/xfrd.state"
  zonelistfile: "$WORK/nsd/zone.list"
  logfile: "$WORK/nsd/nsd.log"
  server-count: $(nproc)
  # Response rate limiting (on by default, 200 answers/s per client
  # network) would measure the limit, not the server.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: cluster.local
  zonefile: cluster.local.zone
zone:
  name: in-addr.arpa
  zonefile: in-addr.arpa.zone
EOF
cat >"$WORK/knot/knot.conf" <<EOF
server:
  listen: 127.0.0.1@$P_KNOT
  rundir: "$WORK/knot"
  udp-workers: $(nproc)
  tcp-workers: 1
  background-workers: 1
control:
  listen: "$WORK/knot/knot.sock"
database:
  storage: "$WORK/knot"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$WORK/knot"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: cluster.local
    file: cluster.local.zone
  - domain: in-addr.arpa
    file: in-addr.arpa.zone
EOF

# One server at a time: start, wait for an answer, measure, stop.
start() {
  case $1 in
    shoal) "$SHOAL" dns --kubeconfig "$KC" --listen "127.0.0.1:$P_SHOAL" --resolv-conf /dev/null >"$WORK/dns.log" 2>&1 & ;;
    nsd) nsd -d -c "$WORK/nsd/nsd.conf" >"$WORK/nsd.out" 2>&1 & ;;
    knot) knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.out" 2>&1 & ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 600); do
    dig @127.0.0.1 -p "$2" +time=1 +tries=1 +short svc-1.default.svc.cluster.local | grep -q . && return 0
    sleep 0.2
  done
  log "$1 did not answer"; cat "$WORK"/*.out "$WORK/dns.log" 2>/dev/null | tail -20 >&2; return 1
}

# utime+stime of a process and its threads, in seconds.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{print ($14+$15)/hz}' "/proc/$1/stat"; }

OUT="$WORK/results.jsonl"
for run in $(seq "$REPEAT"); do
  for server in shoal nsd knot; do
    case $server in shoal) P=$P_SHOAL ;; nsd) P=$P_NSD ;; knot) P=$P_KNOT ;; esac
    start "$server" "$P"
    # nsd forks its servers: count the server and its children.
    pids="$SERVER_PID $(pgrep -P "$SERVER_PID" | tr '\n' ' ' || true)"
    before=0; for pid in $pids; do before=$(python3 -c "print($before+$(cpu_seconds "$pid" 2>/dev/null || echo 0))"); done
    dnsperf -s 127.0.0.1 -p "$P" -d "$WORK/files/queries.txt" -l "$DURATION" -c "$CLIENTS" -T 2 -q 500 >"$WORK/perf-$server.txt" 2>&1
    after=0; for pid in $pids; do after=$(python3 -c "print($after+$(cpu_seconds "$pid" 2>/dev/null || echo 0))"); done
    # One client at a steady rate: the latency of a loaded server, not of
    # dnsperf's own bursts.
    dnsperf -s 127.0.0.1 -p "$P" -d "$WORK/files/queries.txt" -l 10 -c 1 -Q "$RATE" -v >"$WORK/lat-$server.txt" 2>&1 || true
    rss_kb=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
    python3 - "$server" "$run" "$WORK/perf-$server.txt" "$WORK/lat-$server.txt" "$before" "$after" "$rss_kb" >>"$OUT" <<'PY'
import json, re, sys
server, run, perf, lat, before, after, rss = sys.argv[1:8]
text = open(perf).read()
def num(pattern):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None
qps = num(r"Queries per second:\s+([\d.]+)")
completed = num(r"Queries completed:\s+(\d+)")
lost = num(r"Queries lost:\s+(\d+)")
avg = num(r"Average Latency \(s\):\s+([\d.]+)")
rcodes = dict(re.findall(r"(NOERROR|NXDOMAIN|SERVFAIL|REFUSED)\s+(\d+)", text))
lats = []
for line in open(lat):
    if line.startswith("> "):
        try:
            lats.append(float(line.split()[-1]))
        except ValueError:
            pass
lats.sort()
pct = lambda p: lats[min(len(lats) - 1, int(p * len(lats)))] * 1000 if lats else None
cpu = float(after) - float(before)
print(json.dumps({
    "server": server, "run": int(run), "qps": qps, "completed": completed, "lost": lost,
    "avg_latency_ms": avg * 1000 if avg is not None else None,
    "cpu_s": round(cpu, 2), "qps_per_core": round(completed / cpu) if cpu > 0 and completed else None,
    "rate_p50_ms": pct(0.50), "rate_p99_ms": pct(0.99), "rate_samples": len(lats),
    "rcodes": rcodes, "rss_mb": round(int(rss) / 1024, 1),
}))
PY
    tail -1 "$OUT"
    kill "$SERVER_PID" 2>/dev/null || true
    pkill -f -- "nsd -d -c $WORK" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    sleep 1
  done
done

python3 - "$OUT" "$WORK/setup.json" "$SERVICES" "$PODS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
setup = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
objects = int(sys.argv[3]) + int(sys.argv[4])
def med(server, key):
    values = [r[key] for r in rows if r["server"] == server and r[key] is not None]
    return statistics.median(values) if values else float("nan")
print(f"\nsetup: {setup}")
print("| server | QPS | QPS per CPU second | avg ms (full speed) | p50 ms | p99 ms (at rate) | RSS MB |")
print("|---|---|---|---|---|---|---|")
for s in ["shoal", "nsd", "knot"]:
    print(f"| {s} | {med(s,'qps'):.0f} | {med(s,'qps_per_core'):.0f} | {med(s,'avg_latency_ms'):.3f} | {med(s,'rate_p50_ms'):.3f} | {med(s,'rate_p99_ms'):.3f} | {med(s,'rss_mb'):.1f} |")
print(f"\nshoal / nsd QPS: {med('shoal','qps') / med('nsd','qps'):.2f}; shoal / knot QPS: {med('shoal','qps') / med('knot','qps'):.2f}")
print(f"CoreDNS' memory formula for {objects} pods and Services: {49.1 + 0.000858 * objects:.1f} MB")
PY
