#!/usr/bin/env bash
# Pod-to-pod across two nodes, three ways in one run (root):
#   direct     the pods' ranges routed over the bridge, no tunnel (the limit)
#   wireguard  wireguard-go between the nodes (the established userspace
#              encrypted tunnel)
#   shoal      shoal's overlay (`shoal overlay tunnel`: the agent's tunnel
#              code with static peers)
#
#   switch namespace:  bridge br0
#   node A ns: eth0 192.168.77.1/24 ── br0 ── node B ns: eth0 192.168.77.2/24
#   pod A ns:  eth0 10.99.1.2/24 (via 10.99.1.1 on node A)
#   pod B ns:  eth0 10.99.2.2/24 (via 10.99.2.1 on node B)
#
# Each mode: iperf3 TCP pod A -> pod B with 1 and 4 streams for SECONDS, and
# ping RTT (COUNT pings, 10 ms apart) with p50/p99. Pods get MTU 1420 in
# every mode (WireGuard's and shoal's pod MTU on a 1500 path), so the
# modes differ only in what carries the packets.
#
# Builds nothing: run `cargo build --release -p shoal` first. Needs
# iperf3, wireguard-go and wireguard-tools (Debian packages).
#
#   SHOAL    shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   SECONDS_ iperf3 duration per run (default 20)
#   COUNT    pings per mode (default 300)
#   MODES    which modes (default "direct wireguard shoal")
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
DURATION=${SECONDS_:-20}
COUNT=${COUNT:-300}
MODES=${MODES:-direct wireguard shoal}
PREFIX=ovb
SW=$PREFIX-sw A=$PREFIX-a B=$PREFIX-b PA=$PREFIX-pa PB=$PREFIX-pb
WORK=$(mktemp -d)

log() { echo "[overlay-bench] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "needs root (network namespaces)"; exit 1; }
for tool in iperf3 wireguard-go wg ping; do
  command -v $tool >/dev/null || { log "missing $tool"; exit 1; }
done
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal)"; exit 1; }

inside() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

cleanup() {
  pkill -f "shoal overlay tunnel --node-name bench-" 2>/dev/null || true
  pkill -f "wireguard-go -f wgbench-" 2>/dev/null || true
  pkill -f "iperf3 -s -B 10.99.2.2" 2>/dev/null || true
  for ns in $PA $PB $A $B $SW; do ip netns del $ns 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cleanup 2>/dev/null || true
WORK=$(mktemp -d)

setup() {
  for ns in $SW $A $B $PA $PB; do ip netns add $ns; inside $ns ip link set lo up; done
  inside $SW ip link add br0 type bridge
  inside $SW ip link set br0 up
  local i=1
  for node in $A $B; do
    ip link add eth0 netns $node type veth peer name p$i netns $SW
    inside $SW ip link set p$i master br0 up
    inside $node ip addr add 192.168.77.$i/24 dev eth0
    inside $node ip link set eth0 up
    inside $node sysctl -qw net.ipv4.ip_forward=1
    i=$((i + 1))
  done
  local n=1
  for pair in "$A $PA" "$B $PB"; do
    set -- $pair
    ip link add vpod netns $1 mtu 1420 type veth peer name eth0 netns $2 mtu 1420
    inside $1 ip addr add 10.99.$n.1/24 dev vpod
    inside $1 ip link set vpod up
    inside $2 ip addr add 10.99.$n.2/24 dev eth0
    inside $2 ip link set eth0 up
    inside $2 ip route add default via 10.99.$n.1
    n=$((n + 1))
  done
}

mode_direct() {
  inside $A ip route replace 10.99.2.0/24 via 192.168.77.2
  inside $B ip route replace 10.99.1.0/24 via 192.168.77.1
}

unmode_direct() {
  inside $A ip route del 10.99.2.0/24 2>/dev/null || true
  inside $B ip route del 10.99.1.0/24 2>/dev/null || true
}

# One device name per node: wireguard-go's control sockets live in
# /var/run/wireguard, which the namespaces share.
mode_wireguard() {
  wg genkey > "$WORK/a.key" 2>/dev/null; wg pubkey < "$WORK/a.key" > "$WORK/a.pub"
  wg genkey > "$WORK/b.key" 2>/dev/null; wg pubkey < "$WORK/b.key" > "$WORK/b.pub"
  inside $A wireguard-go -f wgbench-a >"$WORK/wg-a.log" 2>&1 &
  inside $B wireguard-go -f wgbench-b >"$WORK/wg-b.log" 2>&1 &
  for _ in $(seq 50); do
    inside $A ip link show wgbench-a >/dev/null 2>&1 && inside $B ip link show wgbench-b >/dev/null 2>&1 && break
    sleep 0.1
  done
  inside $A wg set wgbench-a private-key "$WORK/a.key" listen-port 51820 \
    peer "$(cat "$WORK/b.pub")" allowed-ips 10.99.2.0/24 endpoint 192.168.77.2:51820
  inside $B wg set wgbench-b private-key "$WORK/b.key" listen-port 51820 \
    peer "$(cat "$WORK/a.pub")" allowed-ips 10.99.1.0/24 endpoint 192.168.77.1:51820
  inside $A ip link set wgbench-a mtu 1420 up
  inside $B ip link set wgbench-b mtu 1420 up
  inside $A ip route replace 10.99.2.0/24 dev wgbench-a
  inside $B ip route replace 10.99.1.0/24 dev wgbench-b
}

unmode_wireguard() {
  pkill -f "wireguard-go -f wgbench-" 2>/dev/null || true
  inside $A ip link del wgbench-a 2>/dev/null || true
  inside $B ip link del wgbench-b 2>/dev/null || true
  sleep 0.5
}

mode_shoal() {
  mkdir -p "$WORK/ca"
  inside $A "$SHOAL" overlay tunnel --node-name bench-a --listen 192.168.77.1:7443 \
    --local-address 10.99.1.1 --peer bench-b=10.99.2.0/24@192.168.77.2:7443 \
    --ca-dir "$WORK/ca" >"$WORK/shoal-a.log" 2>&1 &
  sleep 1 # the first end makes the CA
  inside $B "$SHOAL" overlay tunnel --node-name bench-b --listen 192.168.77.2:7443 \
    --local-address 10.99.2.1 --peer bench-a=10.99.1.0/24@192.168.77.1:7443 \
    --ca-dir "$WORK/ca" >"$WORK/shoal-b.log" 2>&1 &
}

unmode_shoal() {
  pkill -f "shoal overlay tunnel --node-name bench-" 2>/dev/null || true
  sleep 0.5
}

# Median and p99 of the RTTs ping printed.
rtt() {
  inside $PA ping -q -c 1 -W 2 10.99.2.2 >/dev/null 2>&1 || true
  inside $PA ping -c "$COUNT" -i 0.01 10.99.2.2 | sed -n 's/.*time=\([0-9.]*\) ms/\1/p' | sort -n |
    awk '{v[NR]=$1} END {if (NR == 0) {print "- -"; exit} p50=v[int((NR+1)/2)]; i=int(NR*0.99); if (i<1) i=1; print p50, v[i]}'
}

gbits() {
  local streams=$1
  inside $PA iperf3 -c 10.99.2.2 -t "$DURATION" -P "$streams" -J 2>/dev/null |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' ||
    echo "-"
}

setup
inside $PB iperf3 -s -B 10.99.2.2 -D
sleep 0.5
printf "%-10s %12s %12s %10s %10s\n" mode "1 stream" "4 streams" "rtt p50" "rtt p99"
for mode in $MODES; do
  "mode_$mode"
  ok=
  for _ in $(seq 100); do
    if inside $PA ping -q -c 1 -W 1 10.99.2.2 >/dev/null 2>&1; then ok=1; break; fi
    sleep 0.1
  done
  if [ -z "$ok" ]; then
    log "$mode: pod B unreachable"; tail -5 "$WORK"/*.log >&2 || true
    "unmode_$mode"; continue
  fi
  one=$(gbits 1)
  four=$(gbits 4)
  read -r p50 p99 < <(rtt)
  printf "%-10s %9s Gb/s %9s Gb/s %8s ms %8s ms\n" "$mode" "$one" "$four" "$p50" "$p99"
  "unmode_$mode"
done
