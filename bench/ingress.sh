#!/usr/bin/env bash
# shoal's Ingress controller against nginx, side by side in one run. See
# docs/benchmarks.md ("Ingress").
#
# Starts `shoal up` (its agent serves Ingresses on HTTP_PORT and
# HTTPS_PORT), runs 2 pods of the guide's nginx:1.25 behind a Service and
# an Ingress for host bench.test (HTTPS with a self-signed certificate from
# a Secret), and a host nginx (Debian's) configured by this script with the
# same route to the same two pod IPs: one worker per core, keep-alive to
# the backends, the same certificate. Then `wrk` for DURATION seconds
# through each, HTTP and HTTPS, alternating, REPEAT times; prints requests/s
# and p99 of each run and the medians with the ratio shoal / nginx.
#
# Needs root, runc, wrk and nginx (apt-get install wrk nginx), openssl.
# Builds nothing: `cargo build --release -p shoal -p shoal-agent` first.
#
# Environment:
#   SHOAL        shoal binary (default: ${CARGO_TARGET_DIR:-<repo>/target}/release/shoal)
#   DURATION     seconds per wrk run (default 30)
#   CONNECTIONS  wrk connections (default 64)
#   REPEAT       rounds (default 3)
#   KUBECTL      kubectl (default: kubectl on PATH)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHOAL=${SHOAL:-${CARGO_TARGET_DIR:-$ROOT/target}/release/shoal}
DURATION=${DURATION:-30}
CONNECTIONS=${CONNECTIONS:-64}
REPEAT=${REPEAT:-3}
KUBECTL=${KUBECTL:-kubectl}

log() { printf '[ingress-bench] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root (the node agent runs containers with runc)"; exit 1; }
[ -x "$SHOAL" ] || { log "no shoal binary at $SHOAL (cargo build --release -p shoal -p shoal-agent)"; exit 1; }
for tool in runc wrk nginx openssl python3 curl; do
  command -v "$tool" >/dev/null || { log "$tool is needed (apt-get install wrk nginx)"; exit 1; }
done

TMP=$(mktemp -d)
UP_PID=
NGINX_PID=
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
cleanup() {
  [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null || true
  if [ -n "$UP_PID" ]; then
    kill -TERM "$UP_PID" 2>/dev/null || true
    for _ in $(seq 1 600); do kill -0 "$UP_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$UP_PID" 2>/dev/null || true
  fi
  if grep -q " $TMP/" /proc/self/mounts; then
    log "mounts are left under $TMP; not removing it"
  else
    rm -rf --one-file-system "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HTTP_PORT=$(free_port); HTTPS_PORT=$(free_port)
NGINX_HTTP=$(free_port); NGINX_HTTPS=$(free_port)
"$SHOAL" up --data-dir "$TMP/up" --port 0 --stop-pods-on-exit \
  --ingress-http-port "$HTTP_PORT" --ingress-https-port "$HTTPS_PORT" >"$TMP/up.log" 2>&1 &
UP_PID=$!
export KUBECONFIG="$TMP/up/kubeconfig"
for _ in $(seq 1 600); do
  kill -0 "$UP_PID" 2>/dev/null || { log "shoal up exited:"; cat "$TMP/up.log" >&2; exit 1; }
  [ -f "$KUBECONFIG" ] && "$KUBECTL" get nodes --no-headers 2>/dev/null | grep -q ' Ready ' && break
  sleep 0.2
done

openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.test \
  -addext subjectAltName=DNS:bench.test -keyout "$TMP/tls.key" -out "$TMP/tls.crt" 2>/dev/null
"$KUBECTL" create secret tls bench-tls --cert "$TMP/tls.crt" --key "$TMP/tls.key" >/dev/null
"$KUBECTL" apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: bench-web}
spec:
  replicas: 2
  selector: {matchLabels: {app: bench-web}}
  template:
    metadata: {labels: {app: bench-web}}
    spec:
      containers:
      - {name: nginx, image: "nginx:1.25", ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bench-web}
spec:
  selector: {app: bench-web}
  ports: [{port: 80, targetPort: 80}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bench
  annotations: {shoal.io/ssl-redirect: "false"}
spec:
  tls: [{secretName: bench-tls}]
  rules:
  - host: bench.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: bench-web, port: {number: 80}}}}
YAML
log "waiting for the nginx pods (the first run builds nginx:1.25 from Debian packages)"
"$KUBECTL" rollout status deployment/bench-web --timeout=600s >/dev/null
mapfile -t PODS < <("$KUBECTL" get pods -l app=bench-web -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}')
log "backends: ${PODS[*]}"

cat >"$TMP/nginx.conf" <<CONF
worker_processes $(nproc);
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log $TMP/nginx-access.log;
  upstream backends {
    server ${PODS[0]}:80;
    server ${PODS[1]}:80;
    keepalive 256;
  }
  server {
    listen 127.0.0.1:$NGINX_HTTP;
    listen 127.0.0.1:$NGINX_HTTPS ssl http2;
    ssl_certificate $TMP/tls.crt;
    ssl_certificate_key $TMP/tls.key;
    server_name bench.test;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
nginx -c "$TMP/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_HTTP/" -H 'Host: bench.test' && break; sleep 0.1; done
for url in "http://127.0.0.1:$HTTP_PORT/" "https://127.0.0.1:$HTTPS_PORT/" "http://127.0.0.1:$NGINX_HTTP/" "https://127.0.0.1:$NGINX_HTTPS/"; do
  code=$(curl -sk -o /dev/null -w '%{http_code}' -H 'Host: bench.test' "$url")
  [ "$code" = 200 ] || { log "$url answers $code"; tail -n 20 "$TMP/up.log" >&2; exit 1; }
done

# One wrk run: prints "requests_per_s p99_ms".
run_wrk() {
  wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H 'Host: bench.test' "$1" 2>&1 |
    python3 -c '
import re, sys
text = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {float(p99.group(1)) * scale:.2f} {errors.group(1) if errors else 0}")'
}

RESULTS="$TMP/results.txt"
: >"$RESULTS"
for round in $(seq 1 "$REPEAT"); do
  for scheme in http https; do
    for proxy in shoal nginx; do
      case "$proxy/$scheme" in
        shoal/http) url="http://127.0.0.1:$HTTP_PORT/" ;;
        shoal/https) url="https://127.0.0.1:$HTTPS_PORT/" ;;
        nginx/http) url="http://127.0.0.1:$NGINX_HTTP/" ;;
        nginx/https) url="https://127.0.0.1:$NGINX_HTTPS/" ;;
      esac
      read -r rps p99 errors < <(run_wrk "$url")
      echo "$round $scheme $proxy $rps $p99 $errors" | tee -a "$RESULTS" >&2
    done
  done
done

python3 - "$RESULTS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print("medians of %d rounds (requests/s, p99 ms):" % len({r[0] for r in rows}))
for scheme in ("http", "https"):
    med = {}
    for proxy in ("shoal", "nginx"):
        mine = [r for r in rows if r[1] == scheme and r[2] == proxy]
        med[proxy] = (statistics.median(float(r[3]) for r in mine), statistics.median(float(r[4]) for r in mine),
                      sum(int(r[5]) for r in mine))
    print("  %-5s shoal %8.0f req/s p99 %6.2f ms | nginx %8.0f req/s p99 %6.2f ms | ratio %.2f | non-2xx: shoal %d, nginx %d" % (
        scheme, med["shoal"][0], med["shoal"][1], med["nginx"][0], med["nginx"][1],
        med["shoal"][0] / med["nginx"][0], med["shoal"][2], med["nginx"][2]))
PY
