//! Pods on different nodes reach each other over the overlay: `shoal up
//! --nodes 3` runs three agents, each in a network namespace of its own
//! on the bridge `shoal-nodes`, joined only by QUIC tunnels. Driven by the
//! real kubectl, busybox pods (httpd, wget, ping), `ip`, `ping -M do` and
//! a tcpdump capture on the bridge. Needs root, like the other suites with
//! real pods; it runs alone (nextest's `serial` group).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use support::nodes::{self, exec_eventually, in_node, pod, pod_ip};

use std::process::Command;
use std::time::Duration;

use support::kube::{eventually, ShoalUp};

fn cluster() -> ShoalUp {
    nodes::cluster(3)
}

fn status(up: &ShoalUp, node: &str) -> serde_json::Value {
    let path = up
        .data_dir()
        .join("nodes")
        .join(node)
        .join("agent/overlay/status.json");
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn peer<'a>(status: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

#[test]
fn pods_on_different_nodes_reach_each_other_by_ip_without_nat() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();

    // Three nodes, each with its own address.
    let wide = up.ok(&["get", "nodes", "-o", "wide"]);
    for (node, ip) in [
        ("node-1", "172.29.0.11"),
        ("node-2", "172.29.0.12"),
        ("node-3", "172.29.0.13"),
    ] {
        assert!(
            wide.lines().any(|l| l.starts_with(node) && l.contains(ip)),
            "{node} with INTERNAL-IP {ip}:\n{wide}"
        );
    }

    let httpd = "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && \
                 dd if=/dev/urandom of=/www/big bs=1M count=100 2>/dev/null && \
                 md5sum /www/big > /www/big.md5 && exec httpd -f -v -p 8080 -h /www";
    pod(&up, "client", "node-1", "sleep 3600");
    pod(&up, "neighbour", "node-1", "sleep 3600");
    pod(&up, "server-b", "node-2", httpd);
    pod(&up, "server-c", "node-3", httpd);
    let client = pod_ip(&up, "client");
    let neighbour = pod_ip(&up, "neighbour");
    let server_b = pod_ip(&up, "server-b");
    let server_c = pod_ip(&up, "server-c");

    // A capture on the nodes' bridge while they talk.
    let capture = Command::new("timeout")
        .args([
            "25",
            "tcpdump",
            "-i",
            "shoal-nodes",
            "-n",
            "-l",
            "-c",
            "400",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(Duration::from_secs(1));

    // wget across nodes by pod IP; the servers see the client's pod IP.
    for (server, ip) in [("server-b", &server_b), ("server-c", &server_c)] {
        let page = exec_eventually(
            &up,
            "client",
            &format!("timeout 5 wget -q -O - http://{ip}:8080/"),
            Duration::from_secs(60),
        );
        assert!(page.contains(&format!("hello-from-{server}")), "{page}");
        let logs = up.ok(&["logs", server]);
        assert!(
            logs.contains(&client),
            "{server} logs no request from the client's pod IP {client} (NAT?):\n{logs}"
        );
    }

    // ping both ways across nodes.
    exec_eventually(
        &up,
        "client",
        &format!("ping -c 2 -W 2 {server_b}"),
        Duration::from_secs(20),
    );
    exec_eventually(
        &up,
        "server-c",
        &format!("ping -c 2 -W 2 {client}"),
        Duration::from_secs(20),
    );

    let capture = capture.wait_with_output().expect("tcpdump output");
    let capture = String::from_utf8_lossy(&capture.stdout);
    assert!(
        capture.contains(".7443: UDP") || capture.contains(".7443 > ") || capture.contains("UDP"),
        "no tunnel traffic captured on the bridge:\n{capture}"
    );
    for ip in [&client, &server_b, &server_c] {
        let pattern = format!(" {ip}.");
        let clear: Vec<&str> = capture.lines().filter(|l| l.contains(&pattern)).collect();
        assert!(
            clear.is_empty(),
            "pod address {ip} seen in clear on the bridge:\n{}",
            clear.join("\n")
        );
    }
    // Between nodes only the tunnels; the machine itself (172.29.0.1, the
    // control plane) talks HTTPS with the agents.
    for line in capture
        .lines()
        .filter(|l| l.contains(" IP ") && !l.contains("172.29.0.1."))
    {
        assert!(
            line.contains(".7443"),
            "traffic other than the tunnels between nodes: {line}"
        );
    }

    // Pods on one node use the bridge, not the tunnel.
    let route = in_node("node-1", &["ip", "route", "get", &neighbour]);
    assert!(route.contains("dev shoal0"), "{route}");
    let route = in_node("node-1", &["ip", "route", "get", &server_b]);
    assert!(route.contains("dev shoal-tun"), "{route}");
    exec_eventually(
        &up,
        "client",
        &format!("ping -c 1 -W 2 {neighbour}"),
        Duration::from_secs(10),
    );

    // 100 MB across nodes arrives whole.
    let expected = exec_eventually(&up, "server-c", "cat /www/big.md5", Duration::from_secs(30));
    let expected = expected.split_whitespace().next().unwrap().to_string();
    let got = exec_eventually(
        &up,
        "client",
        &format!("timeout 120 wget -q -O - http://{server_c}:8080/big | md5sum"),
        Duration::from_secs(150),
    );
    assert!(got.starts_with(&expected), "checksum {got} != {expected}");

    // A packet larger than the tunnel carries, with DF set, gets
    // fragmentation-needed back from the node, with the tunnel's size.
    let ping = in_node(
        "node-1",
        &[
            "ping", "-M", "do", "-s", "1472", "-c", "1", "-W", "2", &server_b,
        ],
    );
    assert!(
        ping.contains("Frag needed") && ping.contains("mtu = "),
        "no fragmentation-needed for an oversize packet:\n{ping}"
    );
    // One that fits goes through.
    let ping = in_node(
        "node-1",
        &[
            "ping", "-M", "do", "-s", "1300", "-c", "1", "-W", "2", &server_b,
        ],
    );
    assert!(ping.contains("1 received"), "{ping}");

    let status = status(&up, "node-1");
    let b = peer(&status, "node-2").expect("node-2 is a peer of node-1");
    assert_eq!(b["state"], "connected", "{status}");
    assert!(b["txPackets"].as_u64().unwrap_or(0) > 0, "{status}");

    // The same counters for Prometheus on the agent's endpoint (with the
    // admin's token, which the agent has the apiserver review and
    // authorize), and in `shoal overlay status`.
    let token = up.token();
    let metrics = Command::new("curl")
        .args([
            "-sk",
            "-H",
            &format!("Authorization: Bearer {}", token.trim()),
        ])
        .arg("https://172.29.0.11:10250/metrics")
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(r#"shoal_overlay_peer_up{peer="node-2"} 1"#)
            && metrics.contains(r#"shoal_overlay_packets_total{peer="node-2",direction="tx"}"#),
        "{metrics}"
    );
    let unauthenticated = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg("https://172.29.0.11:10250/metrics")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&unauthenticated.stdout), "401");
    let table = Command::new(support::SHOAL)
        .args(["overlay", "status", "--data-dir"])
        .arg(up.data_dir().join("nodes/node-1/agent"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("node-2") && l.contains("connected")),
        "{table}"
    );
}

#[test]
fn a_restarted_agent_reconnects_and_a_deleted_node_loses_its_routes() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    pod(&up, "client", "node-1", "sleep 3600");
    pod(
        &up,
        "server",
        "node-2",
        "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    pod(&up, "other", "node-3", "sleep 3600");
    pod_ip(&up, "client");
    let server = pod_ip(&up, "server");
    let other = pod_ip(&up, "other");
    let fetch = format!("timeout 5 wget -q -O - http://{server}:8080/");
    exec_eventually(&up, "client", &fetch, Duration::from_secs(60));
    exec_eventually(
        &up,
        "client",
        &format!("ping -c 1 -W 2 {other}"),
        Duration::from_secs(30),
    );
    let connects =
        |node: &str, to: &str| peer(&status(&up, node), to).and_then(|p| p["connects"].as_u64());
    // (The first dials may be refused while the nodes learn of each
    // other: count from now.)
    // (status.json is rewritten every 2 s.)
    let mut before = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            before = connects("node-1", "node-3");
            before.is_some()
        }),
        "{}",
        status(&up, "node-1")
    );

    // Kill node-2's agent: `shoal up` starts it again; its tunnels come
    // back and the fetch works again.
    let killed = Command::new("pkill")
        .args(["-9", "-f", "nodes/node-2/kubeconfig"])
        .status()
        .unwrap();
    assert!(killed.success(), "no agent of node-2 to kill");
    assert!(
        eventually(Duration::from_secs(20), || up
            .log()
            .contains("node agent of node-2 exited")),
        "{}",
        up.log()
    );
    exec_eventually(&up, "client", &fetch, Duration::from_secs(60));
    // node-1's tunnel to node-3 was not touched.
    assert_eq!(
        connects("node-1", "node-3"),
        before,
        "{}",
        status(&up, "node-1")
    );
    exec_eventually(
        &up,
        "client",
        &format!("ping -c 1 -W 2 {other}"),
        Duration::from_secs(10),
    );

    // Delete node-3 (its agent paused, so that it does not register it
    // again): node-1 drops its route and connection.
    let cidr = up.ok(&["get", "node", "node-3", "-o", "jsonpath={.spec.podCIDR}"]);
    assert!(in_node("node-1", &["ip", "route"]).contains(&cidr));
    Command::new("pkill")
        .args(["-STOP", "-f", "nodes/node-3/kubeconfig"])
        .status()
        .unwrap();
    up.ok(&["delete", "node", "node-3", "--wait=false"]);
    let gone = eventually(Duration::from_secs(10), || {
        !in_node("node-1", &["ip", "route"]).contains(&cidr)
            && peer(&status(&up, "node-1"), "node-3").is_none()
    });
    Command::new("pkill")
        .args(["-CONT", "-f", "nodes/node-3/kubeconfig"])
        .status()
        .unwrap();
    assert!(
        gone,
        "node-1 still routes {cidr} or lists node-3:\n{}\n{}",
        in_node("node-1", &["ip", "route"]),
        status(&up, "node-1")
    );
}

#[test]
fn the_host_firewall_accepts_pod_traffic_and_forgets_it_on_stop() {
    require_root!(node::PODS_NEED_ROOT);
    // Docker's FORWARD DROP is what this guards against; a machine
    // without it must pass too, so the policy is set here for the test's
    // duration when nobody set it (and restored).
    let policy = Command::new("iptables")
        .args(["-w", "-S", "FORWARD"])
        .output()
        .unwrap();
    let was_accept = String::from_utf8_lossy(&policy.stdout).contains("-P FORWARD ACCEPT");
    if was_accept {
        Command::new("iptables")
            .args(["-w", "-P", "FORWARD", "DROP"])
            .status()
            .unwrap();
    }
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            if self.0 {
                let _ = Command::new("iptables")
                    .args(["-w", "-P", "FORWARD", "ACCEPT"])
                    .status();
            }
        }
    }
    let _restore = Restore(was_accept);

    let mut up = ShoalUp::with_agent(&[]);
    assert!(eventually(Duration::from_secs(30), || {
        up.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
    }));
    pod(
        &up,
        "a",
        &up.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]),
        "mkdir -p /www && echo same-node > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    pod(
        &up,
        "b",
        &up.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]),
        "sleep 3600",
    );
    let a = pod_ip(&up, "a");
    pod_ip(&up, "b");
    let rules = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-w", "-S", "FORWARD"])
            .output()
            .unwrap()
            .stdout,
    )
    .to_string();
    assert!(rules.contains("-j SHOAL-FORWARD"), "{rules}");
    exec_eventually(
        &up,
        "b",
        &format!("ping -c 1 -W 2 {a}"),
        Duration::from_secs(20),
    );
    let page = exec_eventually(
        &up,
        "b",
        &format!("timeout 5 wget -q -O - http://{a}:8080/"),
        Duration::from_secs(20),
    );
    assert!(page.contains("same-node"), "{page}");

    up.stop();
    for tool in ["iptables-nft", "iptables-legacy"] {
        let out = Command::new(tool).args(["-w", "-S"]).output();
        if let Ok(out) = out {
            let rules = String::from_utf8_lossy(&out.stdout);
            assert!(
                !rules.contains("SHOAL-FORWARD"),
                "{tool} still has:\n{rules}"
            );
        }
    }
}
