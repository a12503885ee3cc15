//! Services reach real pods on several nodes: `shoal up --nodes 2`, busybox
//! httpd pods behind Services created with the real kubectl, `wget` from a
//! pod and plain HTTP from the machine (NodePort on each node's address).
//! The agents' service proxies program the nodes' nftables tables. Needs
//! root, like the other suites with real pods; it runs alone (nextest's
//! `node-agent` group).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::kube::{eventually, ShoalUp};
use support::nodes::{self, exec, exec_eventually, in_node, pod, pod_with};

/// busybox httpd on 8080 answering its pod's name; `-v` logs each client.
const HTTPD: &str =
    "mkdir -p /www && hostname > /www/index.html && exec httpd -f -v -p 8080 -h /www";

/// A Service selecting `selector` (`key: value` lines) on port 80 →
/// targetPort `web` (by name), with `extra` spec lines.
fn service(up: &ShoalUp, name: &str, selector: &str, extra: &str) -> String {
    up.apply(&format!(
        "apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    {selector}
  ports:
  - name: http
    port: 80
    targetPort: web{extra}
"
    ));
    up.ok(&["get", "service", name, "-o", "jsonpath={.spec.clusterIP}"])
}

fn wait_ready(up: &ShoalUp, pods: &[&str]) {
    for name in pods {
        let ready = eventually(Duration::from_secs(90), || {
            up.ok(&[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]) == "True"
        });
        assert!(
            ready,
            "{name} not ready:\n{}",
            up.ok(&["describe", "pod", name])
        );
    }
}

/// How many of `n` requests from `pod` to `url` each backend answered.
fn spread(up: &ShoalUp, pod: &str, url: &str, n: usize) -> BTreeMap<String, usize> {
    let script =
        format!("for i in $(seq {n}); do timeout 3 wget -q -O - {url} || echo FAILED; done");
    let out = exec_eventually(up, pod, &script, Duration::from_secs(30));
    let mut counts = BTreeMap::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        *counts.entry(line.trim().to_string()).or_default() += 1;
    }
    counts
}

/// An HTTP GET from the machine itself: the body.
fn get(address: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address.parse().unwrap(), Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string())
}

#[test]
fn cluster_ips_and_node_ports_reach_pods_on_every_node() {
    require_root!(node::PODS_NEED_ROOT);
    let up = nodes::cluster(2);
    pod_with(&up, "web-1", "node-1", &[("app", "web")], Some(8080), HTTPD);
    pod_with(&up, "web-2", "node-2", &[("app", "web")], Some(8080), HTTPD);
    pod(&up, "client", "node-1", "sleep 3600");
    wait_ready(&up, &["web-1", "web-2"]);

    // ClusterIP, targetPort by name, endpoints on both nodes.
    let web = service(&up, "web", "app: web", "");
    let counts = spread(&up, "client", &format!("http://{web}/"), 100);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "100 requests through the ClusterIP: {counts:?}"
    );
    let table = in_node("node-1", &["nft", "list", "table", "ip", "shoal"]);
    assert!(
        table.contains("chain svc-default/web/tcp/http"),
        "nft list table ip shoal:\n{table}"
    );

    // Hairpin: web-1 through a Service whose only endpoint on node-1 is
    // web-1 (internalTrafficPolicy: Local).
    up.apply(
        "apiVersion: v1
kind: Service
metadata:
  name: hairpin
spec:
  selector:
    app: web
  internalTrafficPolicy: Local
  ports:
  - name: http
    port: 80
    targetPort: web
",
    );
    let hairpin = up.ok(&[
        "get",
        "service",
        "hairpin",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let counts = spread(&up, "web-1", &format!("http://{hairpin}/"), 5);
    assert_eq!(
        counts.keys().cloned().collect::<Vec<_>>(),
        ["web-1"],
        "web-1 through its own (node-local) Service: {counts:?}"
    );

    // No endpoints: refused at once, not a hang.
    let empty = service(&up, "empty", "app: nobody", "");
    let started = Instant::now();
    let (ok, out) = exec(
        &up,
        "client",
        &format!("timeout 10 wget -q -O - http://{empty}/"),
    );
    assert!(!ok && out.contains("refused"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "a Service without endpoints made the client wait"
    );

    // ClientIP affinity: one backend for all of a client's requests.
    let sticky = service(&up, "sticky", "app: web", "\n  sessionAffinity: ClientIP");
    let counts = spread(&up, "client", &format!("http://{sticky}/"), 20);
    assert_eq!(counts.len(), 1, "sessionAffinity: ClientIP: {counts:?}");

    // NodePort (the guide's 30080) on each node's address, from the
    // machine.
    service(
        &up,
        "web-nodeport",
        "app: web",
        "\n    nodePort: 30080\n  type: NodePort",
    );
    for node_ip in ["172.29.0.11", "172.29.0.12"] {
        let mut seen = std::collections::BTreeSet::new();
        let reached = eventually(Duration::from_secs(20), || {
            if let Ok(body) = get(&format!("{node_ip}:30080")) {
                seen.insert(body);
            }
            seen.len() == 2
        });
        assert!(reached, "NodePort on {node_ip} reached only {seen:?}");
    }

    // externalTrafficPolicy: Local keeps the client's address: web-2 logs
    // the machine's address on the nodes' bridge.
    service(
        &up,
        "web-local",
        "app: web",
        "\n    nodePort: 30081\n  type: NodePort\n  externalTrafficPolicy: Local",
    );
    let mut body = String::new();
    let reached = eventually(Duration::from_secs(20), || {
        body = get("172.29.0.12:30081").unwrap_or_default();
        body == "web-2"
    });
    assert!(reached, "Local NodePort on node-2 answered {body:?}");
    let logs = up.ok(&["logs", "web-2"]);
    assert!(
        logs.contains("172.29.0.1"),
        "web-2 saw another client address than the machine's 172.29.0.1:\n{logs}"
    );

    // LoadBalancer: an address from the pool (`shoal up --nodes` takes the
    // last 16 of the nodes' network), answered by a node on the bridge.
    service(&up, "web-lb", "app: web", "\n  type: LoadBalancer");
    let mut lb = String::new();
    let assigned = eventually(Duration::from_secs(20), || {
        lb = up.ok(&[
            "get",
            "service",
            "web-lb",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        !lb.is_empty()
    });
    assert!(assigned, "{}", up.ok(&["get", "service", "web-lb"]));
    assert!(
        lb.starts_with("172.29.0.24") || lb.starts_with("172.29.0.25"),
        "{lb}"
    );
    let mut seen = std::collections::BTreeSet::new();
    let reached = eventually(Duration::from_secs(20), || {
        if let Ok(body) = get(&format!("{lb}:80")) {
            seen.insert(body);
        }
        seen.len() == 2
    });
    assert!(reached, "LoadBalancer {lb}:80 reached only {seen:?}");

    // A new endpoint gets traffic, a removed one none.
    pod_with(&up, "web-3", "node-2", &[("app", "web")], Some(8080), HTTPD);
    wait_ready(&up, &["web-3"]);
    let reached = eventually(Duration::from_secs(10), || {
        spread(&up, "client", &format!("http://{web}/"), 30).contains_key("web-3")
    });
    assert!(
        reached,
        "the new pod web-3 never answered through the ClusterIP"
    );
    up.ok(&["delete", "pod", "web-1", "--wait=true"]);
    let counts = spread(&up, "client", &format!("http://{web}/"), 30);
    assert!(
        !counts.contains_key("web-1") && !counts.contains_key("FAILED"),
        "after web-1 was deleted: {counts:?}\n{}\n{}\n{}",
        up.ok(&["get", "endpointslices", "-o", "yaml"]),
        in_node("node-1", &["nft", "list", "table", "ip", "shoal"]),
        nodes::agent_log(&up, "node-1")
    );
}
