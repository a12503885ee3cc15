//! Names from real pods: `shoal up --nodes 2`, busybox pods asking
//! 10.96.0.10 (the `kube-dns` Service, answered on each pod's own node)
//! with `nslookup`, as the guide's examples do: Services by short name,
//! `name.ns` and FQDN, across namespaces, headless Services, the guide's
//! StatefulSet `postgres-N.postgres`, its init container waiting for
//! `postgres.default.svc.cluster.local`, ExternalName, and an outside name
//! through the nodes' upstream (an NSD on this machine). Needs root, like
//! the other suites with real pods; it runs alone (nextest's `node-agent`
//! group).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::time::Duration;

use support::dns::Nsd;
use support::free_port;
use support::kube::{eventually, ShoalUp};
use support::nodes::{self, exec, exec_eventually, pod, pod_with};

/// busybox httpd on 8080 answering its pod's name.
const HTTPD: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www";

/// The bridge address `shoal up --nodes` gives this machine.
const HOST: &str = "172.29.0.1";

fn nslookup(up: &ShoalUp, pod: &str, name: &str) -> String {
    exec_eventually(
        up,
        pod,
        &format!("out=$(nslookup {name} 2>&1); echo \"$out\"; echo \"$out\" | grep -q '^Name:'"),
        Duration::from_secs(30),
    )
}

/// The addresses busybox `nslookup` found: the `Address:` lines of its
/// answers (after a `Name:` line; the server's own address comes after
/// `Server:`). Busybox walks the whole search path and prints each
/// answer, so the same address may come twice.
fn addresses(output: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut in_answer = false;
    for line in output.lines() {
        if line.starts_with("Name:") {
            in_answer = true;
        } else if line.trim().is_empty() || line.starts_with("Server:") {
            in_answer = false;
        } else if let Some(address) = line.strip_prefix("Address:").filter(|_| in_answer) {
            all.push(address.trim().to_string());
        }
    }
    all.sort();
    all.dedup();
    all
}

#[test]
fn pods_resolve_services_statefulset_pods_and_outside_names() {
    require_root!(node::PODS_NEED_ROOT);
    let nsd_port = free_port();
    let upstream = format!("{HOST}:{nsd_port}");
    let up = nodes::cluster_with(2, &["--dns-upstream", &upstream]);
    let nsd = Nsd::start(up.data_dir(), HOST.parse().unwrap(), nsd_port);
    // `kubectl get svc -n kube-system` shows the cluster DNS Service.
    // Made by the controllers within moments of their start.
    assert!(eventually(Duration::from_secs(10), || up
        .kubectl(&["get", "svc", "-n", "kube-system", "kube-dns"])
        .status
        .success()));
    let svc = up.ok(&["get", "svc", "-n", "kube-system", "kube-dns"]);
    assert!(
        svc.contains("10.96.0.10") && svc.contains("53/UDP,53/TCP"),
        "{svc}"
    );
    // Each node publishes its own endpoint of it.
    let mut slices = String::new();
    let published = eventually(Duration::from_secs(30), || {
        slices = up.ok(&[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "wide",
        ]);
        slices.contains("kube-dns-node-1") && slices.contains("kube-dns-node-2")
    });
    assert!(published, "{slices}\n{}", nodes::agent_log(&up, "node-1"));

    // The guide's backend behind a Service, and clients on both nodes.
    pod_with(
        &up,
        "backend-1",
        "node-1",
        &[("app", "backend")],
        Some(8080),
        HTTPD,
    );
    pod_with(
        &up,
        "backend-2",
        "node-2",
        &[("app", "backend")],
        Some(8080),
        HTTPD,
    );
    pod(&up, "client", "node-1", "sleep 3600");
    pod(&up, "client-2", "node-2", "sleep 3600");
    up.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: backend-service
spec:
  selector:
    app: backend
  ports:
  - name: http
    port: 80
    targetPort: web
---
apiVersion: v1
kind: Service
metadata:
  name: backend-headless
spec:
  clusterIP: None
  selector:
    app: backend
  ports:
  - name: http
    port: 8080
",
    );
    let cluster_ip = up.ok(&[
        "get",
        "svc",
        "backend-service",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let backend_ips = {
        let mut ips = vec![
            nodes::pod_ip(&up, "backend-1"),
            nodes::pod_ip(&up, "backend-2"),
        ];
        ips.sort();
        ips
    };
    nodes::pod_ip(&up, "client");
    nodes::pod_ip(&up, "client-2");

    // Short name and FQDN with busybox's nslookup (which walks the search
    // path only for names without a dot); `name.namespace` through the
    // C library's resolver, as applications resolve (resolv.conf's search
    // path with ndots:5): the guide's `curl http://backend-service`.
    for client in ["client", "client-2"] {
        for name in [
            "backend-service",
            "backend-service.default.svc.cluster.local",
        ] {
            let out = nslookup(&up, client, name);
            assert_eq!(
                addresses(&out),
                std::slice::from_ref(&cluster_ip),
                "{client}: {name}: {out}"
            );
        }
        for url in ["http://backend-service", "http://backend-service.default"] {
            let page = exec_eventually(
                &up,
                client,
                &format!("timeout 3 wget -q -O - {url}"),
                Duration::from_secs(30),
            );
            assert!(page.starts_with("backend-"), "{client}: {url}: {page}");
        }
    }
    // A headless Service: every ready pod.
    let ready = eventually(Duration::from_secs(30), || {
        addresses(&nslookup(&up, "client", "backend-headless")) == backend_ips
    });
    assert!(ready, "{}", nslookup(&up, "client", "backend-headless"));

    // Across namespaces: `postgres.production`.
    up.apply(
        &"apiVersion: v1
kind: Namespace
metadata:
  name: production
---
apiVersion: v1
kind: Service
metadata:
  name: postgres
  namespace: production
spec:
  ports:
  - port: 5432
---
apiVersion: v1
kind: Service
metadata:
  name: database
  namespace: production
spec:
  type: ExternalName
  externalName: database.example.test
---
# A Service without a selector whose endpoint is backend-1, by hand.
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: production
spec:
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: production
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- name: http
  port: 8080
  protocol: TCP
endpoints:
- addresses: [BACKEND_1]
  conditions: {ready: true}
"
        .replace("BACKEND_1", &nodes::pod_ip(&up, "backend-1")),
    );
    let prod_ip = up.ok(&[
        "get",
        "svc",
        "-n",
        "production",
        "postgres",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let out = nslookup(&up, "client-2", "postgres.production.svc.cluster.local");
    assert_eq!(addresses(&out), [prod_ip], "{out}");
    let page = exec_eventually(
        &up,
        "client-2",
        "timeout 3 wget -q -O - http://web.production",
        Duration::from_secs(30),
    );
    assert_eq!(page.trim(), "backend-1", "{page}");

    // The guide's init container waits for the Service's name; the
    // StatefulSet's pods get theirs.
    up.apply(
        "apiVersion: v1
kind: Pod
metadata:
  name: waits-for-postgres
spec:
  nodeName: node-2
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: wait-for-db
    image: busybox
    command: ['sh', '-c', 'until nslookup postgres.default.svc.cluster.local; do echo waiting for database; sleep 1; done']
  containers:
  - name: app
    image: busybox
    command: ['sleep', '3600']
",
    );
    std::thread::sleep(Duration::from_secs(5));
    let phase = up.ok(&[
        "get",
        "pod",
        "waits-for-postgres",
        "-o",
        "jsonpath={.status.phase}",
    ]);
    assert_eq!(
        phase, "Pending",
        "the init container finished before the Service existed"
    );
    up.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: postgres
spec:
  clusterIP: None
  selector:
    app: postgres
  ports:
  - port: 5432
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: postgres
spec:
  serviceName: postgres
  replicas: 3
  selector:
    matchLabels:
      app: postgres
  template:
    metadata:
      labels:
        app: postgres
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: postgres
        image: busybox
        command: ['sleep', '3600']
",
    );
    assert!(
        eventually(Duration::from_secs(90), || {
            up.ok(&[
                "get",
                "pod",
                "waits-for-postgres",
                "-o",
                "jsonpath={.status.phase}",
            ]) == "Running"
        }),
        "{}",
        up.ok(&["describe", "pod", "waits-for-postgres"])
    );
    for i in 0..3 {
        let name = format!("postgres-{i}");
        let ip = nodes::pod_ip(&up, &name);
        let fqdn = format!("{name}.postgres.default.svc.cluster.local");
        let found = eventually(Duration::from_secs(30), || {
            addresses(&nslookup(&up, "client", &fqdn)) == [ip.clone()]
        });
        assert!(found, "{fqdn}: {}", nslookup(&up, "client", &fqdn));
    }

    // ExternalName, and an outside name through the nodes' upstream.
    if nsd.is_some() {
        let out = nslookup(&up, "client", "database.production.svc.cluster.local");
        assert!(out.contains("database.example.test"), "{out}");
        assert_eq!(addresses(&out), ["192.0.2.20"], "{out}");
        let out = nslookup(&up, "client-2", "www.example.test");
        assert_eq!(addresses(&out), ["192.0.2.10", "192.0.2.11"], "{out}");
    }
    // A name that does not exist fails, and fast.
    let started = std::time::Instant::now();
    let (ok, out) = exec(&up, "client", "nslookup nope.default.svc.cluster.local");
    assert!(!ok || out.contains("NXDOMAIN"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
