#!/usr/bin/env bash
# Starts a 3-member shoal store cluster on loopback (client ports 2379,
# 22379, 32379) in the foreground; Ctrl-C stops it. Data stays in
# ${DATA:-/tmp/shoal-store} so that a second run keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p shoal
SHOAL="${CARGO_TARGET_DIR:-target}/release/shoal"
DATA="${DATA:-/tmp/shoal-store}"
CLUSTER="s1=http://127.0.0.1:2380,s2=http://127.0.0.1:22380,s3=http://127.0.0.1:32380"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for m in "s1 2379 2380" "s2 22379 22380" "s3 32379 32380"; do
  set -- $m
  "$SHOAL" store --name "$1" --data-dir "$DATA/$1" \
    --listen-client-urls "http://127.0.0.1:$2" --advertise-client-urls "http://127.0.0.1:$2" \
    --listen-peer-urls "http://127.0.0.1:$3" --initial-advertise-peer-urls "http://127.0.0.1:$3" \
    --initial-cluster "$CLUSTER" &
  pids+=($!)
done
echo "store cluster up: ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379 member list"
wait
