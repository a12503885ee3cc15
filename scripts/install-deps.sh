#!/usr/bin/env bash
# Installs what building, running and testing shoal need on a Debian
# machine, skipping what is there already: the build tools (protoc for the
# gRPC code, libclang for RocksDB's bindings), the container runtime and
# the busybox image's source (runc, busybox-static), the tools the tests
# drive (etcd, etcdctl, curl, openssl, dig, ip, nft, iptables, setpriv,
# tcpdump, ping, nsd as the DNS tests' upstream), and with
# --tests the Python clients in a venv and docker-compose for the lab.
#
#   scripts/install-deps.sh           # to build and run (scripts/up.sh)
#   scripts/install-deps.sh --tests   # to run the tests too (.ci/run)
set -euo pipefail

PACKAGES=(
  protobuf-compiler libclang-dev clang ca-certificates curl openssl
  runc busybox-static util-linux iproute2 nftables iptables
)
if [ "${1:-}" = "--tests" ]; then
  PACKAGES+=(etcd-client etcd-server dnsutils python3-venv binutils)
  # The overlay's tests: a capture on the nodes' bridge, ping -M do.
  PACKAGES+=(tcpdump iputils-ping)
  # The cluster DNS's tests: an NSD on loopback as the upstream.
  PACKAGES+=(nsd)
  # The lab (tests/lab.rs) drives a Docker engine the machine provides;
  # only its compose tool is installed here when missing.
  if ! command -v docker-compose >/dev/null 2>&1; then
    PACKAGES+=(docker-compose)
  fi
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]}; run this as root (or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ "${1:-}" = "--tests" ]; then
  # Python clients: the official one (tests/python_client.rs), lightkube
  # and kubernetes_asyncio (tests/client_libraries.rs), schemathesis
  # (tests/openapi_fuzz.rs), prometheus_client's parser (tests/pods.rs,
  # every component's /metrics).
  VENV="${SHOAL_VENV:-$HOME/.cache/shoal-venv}"
  if ! "$VENV/bin/python" -c 'import kubernetes, lightkube, kubernetes_asyncio, schemathesis, prometheus_client' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q kubernetes lightkube==1.0.1 kubernetes_asyncio==36.1.0 schemathesis==4.32.5 prometheus_client==0.26.0
  fi
  if ! command -v cargo-nextest >/dev/null 2>&1; then
    cargo install cargo-nextest --locked
  fi
fi
