//! The node agent's Ingress controller on real pods, driven with kubectl
//! and curl from the host (`--resolve`): the guide's three routes (two
//! hosts, two paths), Prefix and Exact paths, a wildcard host, the default
//! backend, 404 and 503, `kubectl get ingress`, HTTPS with certificates
//! from Secrets chosen by SNI and replaced live, HTTP/2, the redirect to
//! HTTPS, events for missing and broken Secrets and bad annotations, the
//! body-size and read-timeout annotations, a WebSocket echoed through the
//! ingress, its request counters on the agent's `/metrics`, and routing
//! that follows changes within a second; and on two nodes, the
//! LoadBalancer Service `kube-system/shoal-ingress` at a pool address
//! reaching pods on both. Needs root
//! (real pods); runs with the other real-pod suites, one at a time.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::kube::{eventually, ShoalUp};
use support::nodes;

/// Each backend answers every request with its Service's name, its pod,
/// and what it was sent: path, Host, X-Forwarded-For and -Proto.
const BACKENDS: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: echo
data:
  echo.sh: |
    #!/bin/sh
    read -r method path version
    host=; xff=; proto=; length=
    while read -r line; do
      line=$(printf '%s' "$line" | tr -d '\r')
      [ -z "$line" ] && break
      case "$line" in
        [Hh]ost:*) host=${line#*: } ;;
        [Xx]-[Ff]orwarded-[Ff]or:*) xff=${line#*: } ;;
        [Xx]-[Ff]orwarded-[Pp]roto:*) proto=${line#*: } ;;
        [Cc]ontent-[Ll]ength:*) length=${line#*: } ;;
      esac
    done
    [ -n "$length" ] && head -c "$length" >/dev/null
    case "$path" in */slow*) sleep 3 ;; esac
    body="$NAME $HOSTNAME $path host=$host xff=$xff proto=$proto"
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s\n' $((${#body} + 1)) "$body"
"#;

fn backend(name: &str, replicas: u32) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: busybox
        command: [nc, -ll, -p, "8080", -e, /opt/echo.sh]
        env:
        - {{name: NAME, value: {name}}}
        volumeMounts:
        - {{name: echo, mountPath: /opt}}
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
      volumes:
      - name: echo
        configMap: {{name: echo, defaultMode: 0755}}
---
apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector: {{app: {name}}}
  ports:
  - {{name: http, port: 80, targetPort: 8080}}
"#
    )
}

/// The guide's example: example.com/api, example.com/web,
/// admin.example.com (no class named: shoal's is the default).
const GUIDE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: example
spec:
  rules:
  - host: example.com
    http:
      paths:
      - path: /api
        pathType: Prefix
        backend:
          service: {name: api-service, port: {number: 80}}
      - path: /web
        pathType: Prefix
        backend:
          service: {name: web-service, port: {name: http}}
  - host: admin.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: admin-service, port: {number: 80}}
"#;

/// Exact paths, a wildcard host, a Service without endpoints, and the
/// default backend.
const MISC: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: misc
spec:
  ingressClassName: shoal
  defaultBackend:
    service: {name: web-service, port: {number: 80}}
  rules:
  - host: "*.shop.test"
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: admin-service, port: {number: 80}}
  - host: empty.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: nobody, port: {number: 80}}
  - http:
      paths:
      - path: /exact
        pathType: Exact
        backend:
          service: {name: api-service, port: {number: 80}}
---
apiVersion: v1
kind: Service
metadata:
  name: nobody
spec:
  selector: {app: nobody}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: someone-elses
spec:
  ingressClassName: nginx
  rules:
  - host: other.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: api-service, port: {number: 80}}
"#;

struct Ingress {
    up: ShoalUp,
    http: u16,
    https: u16,
}

impl Ingress {
    fn start() -> Ingress {
        let (http, https) = (support::free_port(), support::free_port());
        let up = ShoalUp::with_ready_agent(&[
            "--ingress-http-port",
            &http.to_string(),
            "--ingress-https-port",
            &https.to_string(),
        ]);
        Ingress { up, http, https }
    }

    /// `curl` of `url` (its host resolved to this machine on the
    /// ingress's port), with `extra` options.
    fn curl(&self, url: &str, extra: &[&str]) -> Answer {
        let https = url.starts_with("https://");
        let port = if https { self.https } else { self.http };
        let rest = url.split_once("://").unwrap().1;
        let host = rest.split(['/', ':']).next().unwrap();
        let target = format!(
            "{}://{host}:{port}{}",
            if https { "https" } else { "http" },
            &rest[host.len()..]
        );
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10"])
            .args(["-w", "\n%{http_code} %{http_version} %{redirect_url}"])
            .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
            .args(extra)
            .arg(&target)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, info) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut info = info.split(' ');
        Answer {
            code: info.next().and_then(|c| c.parse().ok()).unwrap_or(0),
            version: info.next().unwrap_or_default().to_string(),
            location: info.next().unwrap_or_default().to_string(),
            body: format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// The body of a 200 answer to `url`, waiting up to 30 s for it.
    fn get(&self, url: &str, extra: &[&str]) -> String {
        let mut last = None;
        let ok = eventually(Duration::from_secs(30), || {
            let answer = self.curl(url, extra);
            let ok = answer.code == 200;
            last = Some(answer);
            ok
        });
        assert!(ok, "{url}: {last:?}\n{}", self.up.log());
        last.map(|a| a.body).unwrap_or_default()
    }
}

/// What curl got.
#[derive(Debug)]
struct Answer {
    code: u16,
    /// `1.1` or `2`.
    version: String,
    /// Where a redirect points.
    location: String,
    body: String,
}

/// A self-signed certificate and key for `name` in `dir` (openssl).
fn certificate(dir: &Path, name: &str, tag: &str) -> (String, String) {
    let cert = dir.join(format!("{tag}.crt"));
    let key = dir.join(format!("{tag}.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            &format!("subjectAltName=DNS:{name}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn the_guides_routes_paths_hosts_and_tls() {
    require_root!(node::PODS_NEED_ROOT);
    let ingress = Ingress::start();
    let up = &ingress.up;
    up.apply(BACKENDS);
    let mut apps = String::new();
    for (name, replicas) in [("api-service", 2), ("web-service", 1), ("admin-service", 1)] {
        apps.push_str(&backend(name, replicas));
        apps.push_str("\n---\n");
    }
    up.apply(&apps);
    up.apply(GUIDE);
    for name in ["api-service", "web-service", "admin-service"] {
        up.ok(&[
            "rollout",
            "status",
            &format!("deployment/{name}"),
            "--timeout=90s",
        ]);
    }

    // The guide's routes: path by path, host by host.
    let body = ingress.get("http://example.com/api/users", &[]);
    assert!(body.starts_with("api-service api-service-"), "{body}");
    assert!(body.contains(" /api/users host=example.com:"), "{body}");
    assert!(body.contains(" xff=127.0.0.1 proto=http"), "{body}");
    assert!(ingress
        .get("http://example.com/web", &[])
        .starts_with("web-service "));
    assert!(ingress
        .get("http://example.com/web/a/b?q=1", &[])
        .contains(" /web/a/b?q=1 "));
    assert!(ingress
        .get("http://admin.example.com/anything", &[])
        .starts_with("admin-service "));
    assert!(ingress
        .get("http://example.com/api", &[])
        .starts_with("api-service "));
    assert_eq!(ingress.curl("http://example.com/apix", &[]).code, 404);
    assert_eq!(ingress.curl("http://example.com/", &[]).code, 404);
    assert_eq!(ingress.curl("http://unknown.test/api", &[]).code, 404);
    // Requests spread over both api pods.
    let pods: std::collections::BTreeSet<String> = (0..12)
        .map(|_| ingress.get("http://example.com/api", &[]))
        .filter_map(|b| b.split_whitespace().nth(1).map(String::from))
        .collect();
    assert_eq!(pods.len(), 2, "{pods:?}");

    // kubectl's columns: CLASS, HOSTS, ADDRESS (the node), PORTS.
    let mut row = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            row = up.ok(&["get", "ingress", "example", "--no-headers"]);
            row.split_whitespace()
                .nth(3)
                .is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok())
        }),
        "{row}"
    );
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &fields[..3],
        ["example", "shoal", "example.com,admin.example.com"],
        "{row}"
    );
    assert_eq!(fields[4], "80", "{row}");
    assert!(up
        .ok(&["get", "ingressclass", "shoal"])
        .contains("shoal.dev/ingress"));

    // Exact, wildcard, default backend, no endpoints, another class.
    up.apply(MISC);
    let body = ingress.get("http://shop.example.org/exact", &[]);
    assert!(body.starts_with("api-service "), "{body}");
    assert!(ingress
        .get("http://cart.shop.test/", &[])
        .starts_with("admin-service "));
    assert!(
        ingress
            .get("http://a.b.shop.test/", &[])
            .starts_with("web-service "),
        "one label only"
    );
    assert!(ingress
        .get("http://shop.example.org/exact/", &[])
        .starts_with("web-service "));
    assert!(
        ingress
            .get("http://other.test/", &[])
            .starts_with("web-service "),
        "not our class"
    );
    assert_eq!(ingress.curl("http://empty.test/", &[]).code, 503);
    // example.com's unmatched paths go to the default backend now.
    assert!(ingress
        .get("http://example.com/other", &[])
        .starts_with("web-service "));

    // A path added: routed within a second of kubectl's answer.
    up.ok(&[
        "patch",
        "ingress",
        "example",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/rules/0/http/paths/-", "value": {"path": "/new", "pathType": "Prefix", "backend": {"service": {"name": "admin-service", "port": {"number": 80}}}}}]"#,
    ]);
    assert!(
        eventually(Duration::from_secs(1), || {
            ingress
                .curl("http://example.com/new", &[])
                .body
                .starts_with("admin-service ")
        }),
        "the new path is not routed within 1 s"
    );
    // Endpoints gone: 503 within a second.
    up.ok(&["scale", "deployment", "web-service", "--replicas=0"]);
    assert!(
        eventually(Duration::from_secs(10), || ingress
            .curl("http://example.com/web", &[])
            .code
            == 503),
        "no endpoints: 503"
    );
    up.ok(&["scale", "deployment", "web-service", "--replicas=1"]);

    // A WebSocket through the ingress: an echo server on this machine
    // (reached at the pods' gateway, 10.244.0.1) behind a Service without
    // a selector.
    let ws_port = support::free_port();
    let mut echo = support::daemon("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/websocket_echo.py"
        ))
        .args(["serve", &ws_port.to_string()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    up.apply(&format!(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: ws-echo
spec:
  ports:
  - {{port: 80, targetPort: {ws_port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ws-echo-1
  labels: {{kubernetes.io/service-name: ws-echo}}
addressType: IPv4
ports:
- {{port: {ws_port}}}
endpoints:
- addresses: [10.244.0.1]
  conditions: {{ready: true}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ws
spec:
  rules:
  - host: ws.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {{name: ws-echo, port: {{number: 80}}}}
"#
    ));
    let mut said = String::new();
    let echoed = eventually(Duration::from_secs(20), || {
        let out = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/python/websocket_echo.py"
            ))
            .args([
                "send",
                "127.0.0.1",
                &ingress.http.to_string(),
                "ws.test",
                "/chat",
            ])
            .args(["hello", "through the ingress"])
            .output()
            .unwrap();
        said = String::from_utf8_lossy(&out.stdout).into_owned();
        said == "echo: hello\necho: through the ingress\n"
    });
    support::kill_group(&mut echo);
    assert!(echoed, "{said}");

    // Requests by Ingress, Service and status on the agent's /metrics.
    let token = std::fs::read_to_string(up.data_dir().join("agent-token")).unwrap();
    let port = up.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let metrics = Command::new("curl")
        .args([
            "-sk",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .arg(format!("https://127.0.0.1:{}/metrics", port.trim()))
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        r#"shoal_ingress_requests_total{namespace="default",ingress="example",service="api-service",status="200"} "#,
        r#"shoal_ingress_requests_total{namespace="",ingress="",service="",status="404"} "#,
        r#"shoal_ingress_requests_total{namespace="default",ingress="misc",service="nobody",status="503"} "#,
        r#"shoal_ingress_request_duration_seconds_count{namespace="default",ingress="example",service="api-service"} "#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }

    // HTTPS: certificates from Secrets, by SNI; replaced live; HTTP/2.
    let dir = tempfile::tempdir().unwrap();
    let (example_crt, example_key) = certificate(dir.path(), "example.com", "example");
    let (admin_crt, admin_key) = certificate(dir.path(), "admin.example.com", "admin");
    up.ok(&[
        "create",
        "secret",
        "tls",
        "example-tls",
        "--cert",
        &example_crt,
        "--key",
        &example_key,
    ]);
    up.ok(&[
        "create",
        "secret",
        "tls",
        "admin-tls",
        "--cert",
        &admin_crt,
        "--key",
        &admin_key,
    ]);
    up.ok(&[
        "patch",
        "ingress",
        "example",
        "--type=merge",
        "-p",
        r#"{"spec": {"tls": [{"hosts": ["example.com"], "secretName": "example-tls"}, {"hosts": ["admin.example.com"], "secretName": "admin-tls"}]}}"#,
    ]);
    let body = ingress.get("https://example.com/api", &["--cacert", &example_crt]);
    assert!(
        body.starts_with("api-service ") && body.contains(" proto=https"),
        "{body}"
    );
    let body = ingress.get("https://admin.example.com/", &["--cacert", &admin_crt]);
    assert!(body.starts_with("admin-service "), "{body}");
    // The other host's certificate does not verify for this name.
    assert_ne!(
        ingress
            .curl("https://example.com/api", &["--cacert", &admin_crt])
            .code,
        200
    );
    let answer = ingress.curl(
        "https://example.com/api",
        &["--cacert", &example_crt, "--http2"],
    );
    assert_eq!(
        (answer.code, answer.version.as_str()),
        (200, "2"),
        "{answer:?}"
    );
    // Plain HTTP for a TLS host is sent to HTTPS.
    let answer = ingress.curl("http://example.com/api/x", &[]);
    assert_eq!(answer.code, 308, "{answer:?}");
    assert_eq!(
        answer.location,
        format!("https://example.com:{}/api/x", ingress.https),
        "{answer:?}"
    );
    // The Secret replaced: the new certificate is served within 2 s.
    let (new_crt, new_key) = certificate(dir.path(), "example.com", "renewed");
    let secret = up.ok(&[
        "create",
        "secret",
        "tls",
        "example-tls",
        "--cert",
        &new_crt,
        "--key",
        &new_key,
        "--dry-run=client",
        "-o",
        "yaml",
    ]);
    let replaced = up.kubectl_with(&["replace", "-f", "-"], Some(&secret), &[]);
    assert!(replaced.status.success(), "{replaced:?}");
    assert!(
        eventually(Duration::from_secs(2), || {
            ingress
                .curl("https://example.com/api", &["--cacert", &new_crt])
                .code
                == 200
        }),
        "the renewed certificate is not served within 2 s"
    );
    // A Secret that is not a certificate: the default certificate, no crash.
    up.ok(&[
        "create",
        "secret",
        "generic",
        "broken",
        "--from-literal=tls.crt=x",
        "--from-literal=tls.key=y",
    ]);
    up.ok(&[
        "patch",
        "ingress",
        "example",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/tls/1/secretName", "value": "broken"}]"#,
    ]);
    assert!(
        eventually(Duration::from_secs(5), || {
            ingress
                .curl("https://admin.example.com/", &["-k"])
                .body
                .starts_with("admin-service ")
                && ingress
                    .curl("https://admin.example.com/", &["--cacert", &admin_crt])
                    .code
                    != 200
        }),
        "a broken Secret: the default certificate"
    );
    assert!(ingress
        .get("https://example.com/api", &["--cacert", &new_crt])
        .starts_with("api-service ")); // Told as events on the Ingress, once each: the broken Secret, then a
                                       // missing one.
    let events = |reason: &str| {
        up.ok(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=Ingress,involvedObject.name=example,reason={reason}"),
            "-o",
            "jsonpath={range .items[*]}{.type} {.message}{\"\\n\"}{end}",
        ])
    };
    let mut told = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            told = events("InvalidCertificate");
            !told.is_empty()
        }),
        "no event for the broken Secret"
    );
    assert_eq!(
        told.trim(),
        "Warning secret default/broken: tls.crt holds no PEM certificate: serving the default certificate for admin.example.com"
    );
    up.ok(&[
        "patch",
        "ingress",
        "example",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/tls/1/secretName", "value": "nowhere"}]"#,
    ]);
    assert!(
        eventually(Duration::from_secs(10), || {
            told = events("SecretNotFound");
            !told.is_empty()
        }),
        "no event for the missing Secret"
    );
    assert_eq!(
        told.trim(),
        "Warning secret default/nowhere not found: serving the default certificate for admin.example.com"
    );
    let described = up.ok(&["describe", "ingress", "example"]);
    assert!(
        described.contains("SecretNotFound") && described.contains("InvalidCertificate"),
        "{described}"
    );
    assert_eq!(events("InvalidCertificate").lines().count(), 1, "told once");

    // Body size and timeouts as annotations: ingress-nginx's 1m by
    // default, 1k and 1 s here; a bad value is told and its default kept.
    up.apply(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: limits
  annotations:
    shoal.io/proxy-body-size: 1k
    shoal.io/proxy-read-timeout: "1"
    shoal.io/client-body-timeout: soon
spec:
  rules:
  - host: limits.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: api-service, port: {number: 80}}
"#,
    );
    let small = dir.path().join("small");
    std::fs::write(&small, vec![b'x'; 900]).unwrap();
    let large = dir.path().join("large");
    std::fs::write(&large, vec![b'x'; 2000]).unwrap();
    let post = |file: &Path, url: &str| {
        ingress.curl(url, &["--data-binary", &format!("@{}", file.display())])
    };
    assert!(
        eventually(Duration::from_secs(10), || post(
            &small,
            "http://limits.test/up"
        )
        .code
            == 200),
        "{:?}",
        post(&small, "http://limits.test/up")
    );
    let answer = post(&large, "http://limits.test/up");
    assert_eq!(answer.code, 413, "{answer:?}");
    assert!(
        answer.body.contains("413 Request Entity Too Large"),
        "{answer:?}"
    );
    let two_mib = dir.path().join("two-mib");
    std::fs::write(&two_mib, vec![b'x'; 2 << 20]).unwrap();
    let answer = post(&two_mib, "http://cart.shop.test/up");
    assert_eq!(answer.code, 413, "the 1m default: {answer:?}");
    let started = std::time::Instant::now();
    let answer = ingress.curl("http://limits.test/slow", &[]);
    assert_eq!(answer.code, 504, "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    let mut told = String::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            told = up.ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=limits,reason=InvalidAnnotation",
                "-o",
                "jsonpath={.items[*].message}",
            ]);
            !told.is_empty()
        }),
        "no event for the bad annotation"
    );
    assert_eq!(
        told,
        "shoal.io/client-body-timeout: \"soon\" is not a number of seconds above 0; using 60"
    );
}

/// busybox httpd on 8080 answering its pod's name.
const HTTPD: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

#[test]
fn the_ingress_serves_pods_on_every_node_behind_its_load_balancer() {
    require_root!(node::PODS_NEED_ROOT);
    let up = nodes::cluster(2);
    for (name, node) in [("web-1", "node-1"), ("web-2", "node-2")] {
        nodes::pod_with(&up, name, node, &[("app", "web")], Some(8080), HTTPD);
    }
    up.apply(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: web}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
spec:
  rules:
  - host: lb.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {name: web, port: {number: 80}}
"#,
    );
    // The Service: an address of the pool, the nodes' ports by name, no
    // node ports; the Ingress shows its address.
    let mut lb = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            // Not found until the controllers have made it.
            let out = up.kubectl(&[
                "get",
                "service",
                "-n",
                "kube-system",
                "shoal-ingress",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ]);
            lb = String::from_utf8_lossy(&out.stdout).into_owned();
            !lb.is_empty()
        }),
        "{}",
        up.ok(&["get", "service", "-A"])
    );
    assert!(
        lb.starts_with("172.29.0.24") || lb.starts_with("172.29.0.25"),
        "{lb}"
    );
    let row = up.ok(&[
        "get",
        "service",
        "-n",
        "kube-system",
        "shoal-ingress",
        "--no-headers",
    ]);
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (fields[1], fields[3], fields[4]),
        ("LoadBalancer", lb.as_str(), "80/TCP,443/TCP"),
        "{row}"
    );
    let mut address = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            address = up.ok(&[
                "get",
                "ingress",
                "web",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[*].ip}",
            ]);
            address == lb
        }),
        "the Ingress shows {address:?}, not {lb}"
    );
    // From the machine, through the pool address and through each node's
    // own address: pods on both nodes answer.
    let fetch = |address: &str| -> String {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(["--resolve", &format!("lb.test:80:{address}")])
            .arg("http://lb.test/")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let node_ips = up.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let mut through: Vec<&str> = vec![&lb];
    through.extend(node_ips.split_whitespace());
    assert_eq!(through.len(), 3, "{node_ips}");
    for address in through {
        let mut seen = std::collections::BTreeSet::new();
        let both = eventually(Duration::from_secs(30), || {
            seen.insert(fetch(address));
            seen.contains("web-1") && seen.contains("web-2")
        });
        assert!(
            both,
            "through {address}: {seen:?}\n{}",
            nodes::agent_log(&up, "node-1")
        );
    }
}
