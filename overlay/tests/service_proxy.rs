//! The service proxy against the kernel: a node namespace of the test's
//! own with a bridge and three pod namespaces, Services and EndpointSlices
//! planned and applied with `nft`, then TCP and UDP from inside the pods
//! through ClusterIPs and a NodePort. Needs root (CI runs as root).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;
use shoal_overlay::netns;
use shoal_overlay::proxy::{add_policies, plan, NodeContext, Proxy};
use shoal_overlay::{Network, NodeNetwork};

mod root;

use root::{listen, on_private_node};

fn service(name: &str, ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "clusterIPs": [ip],
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": name},
        "spec": spec,
    }))
    .unwrap()
}

/// A slice of `service` with one endpoint at `to`.
fn slice(service: &str, port_name: &str, protocol: &str, to: SocketAddr) -> EndpointSlice {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": format!("{service}-{}", to.port()),
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": to.port(), "protocol": protocol}],
        "endpoints": [{"addresses": [to.ip().to_string()], "nodeName": "node-1",
                       "conditions": {"ready": true}}],
    }))
    .unwrap()
}

/// One TCP connection from here: the greeting.
fn greeting(to: SocketAddr) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut got = String::new();
    stream.read_to_string(&mut got)?;
    Ok(got)
}

/// One TCP connection from the namespace at `path`: the greeting.
fn connect_once(path: &Path, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in_blocking(path, move || greeting(to)).expect("entering the namespace")
}

/// The endpoints that answered `n` connections, by their address.
fn backends(path: &Path, to: SocketAddr, n: usize) -> std::collections::BTreeSet<String> {
    (0..n)
        .map(|_| {
            let greeting = connect_once(path, to).unwrap_or_else(|e| panic!("{to}: {e}"));
            greeting.rsplit(' ').next().unwrap_or_default().to_string()
        })
        .collect()
}

/// A UDP server in the namespace at `path` answering `udp from <ip>`.
fn udp_echo(path: &Path, ip: Ipv4Addr) -> SocketAddr {
    let socket = netns::run_in_blocking(path, move || UdpSocket::bind((ip, 0)).unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(format!("udp from {ip}").as_bytes(), from);
        }
    });
    addr
}

fn udp_ask(path: &Path, to: SocketAddr) -> std::io::Result<String> {
    netns::run_in_blocking(path, move || {
        let socket = UdpSocket::bind("0.0.0.0:0")?;
        socket.set_read_timeout(Some(Duration::from_secs(3)))?;
        socket.send_to(b"hello", to)?;
        let mut buf = [0u8; 64];
        let (n, _) = socket.recv_from(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .expect("entering the namespace")
}

fn nft_table() -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "table", "ip", "shoal"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn services_reach_their_endpoints_through_the_nftables_table() {
    on_private_node(|state| async move {
        // As on any node: lo up, an interface with the node's address and
        // a default route (traffic from the node to a ClusterIP has that
        // source, outside the pod network, and is masqueraded).
        for command in [
            "link set lo up",
            "link add eth0 type veth peer name eth0-peer",
            "address add 192.0.2.1/24 dev eth0",
            "link set eth0-peer up",
            "link set eth0 up",
            "route add default via 192.0.2.254 dev eth0",
        ] {
            let status = std::process::Command::new("ip")
                .args(command.split(' '))
                .status()
                .unwrap();
            assert!(status.success(), "ip {command}");
        }
        let network = Network::new(NodeNetwork {
            bridge: "shoal0".into(),
            pod_cidr: "10.244.1.0/24".parse().unwrap(),
            state_dir: state.path().to_path_buf(),
            mtu: 1500,
        })
        .await
        .unwrap();
        shoal_overlay::proxy::bridge_netfilter().expect("br_netfilter");
        let a = network.create_sandbox("pod-a").await.unwrap();
        let b = network.create_sandbox("pod-b").await.unwrap();
        let c = network.create_sandbox("pod-c").await.unwrap();
        let at_a = listen(Some(&a.netns_path), a.ip);
        let at_b = listen(Some(&b.netns_path), b.ip);
        let udp_b = udp_echo(&b.netns_path, b.ip);

        let node = NodeContext {
            node_name: "node-1".into(),
            cluster_cidr: "10.244.0.0/16".parse().unwrap(),
            tunnel: None,
        };
        let vip = |last: u8| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 96, 0, last)), 80);
        let services = [
            service("web", "10.96.0.20", json!({})),
            // Only pod-a behind it: pod-a reaching itself is hairpin.
            service("self", "10.96.0.21", json!({})),
            service("empty", "10.96.0.22", json!({})),
            service(
                "sticky",
                "10.96.0.23",
                json!({"sessionAffinity": "ClientIP",
                       "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            ),
            service(
                "dns",
                "10.96.0.24",
                json!({"ports": [{"name": "dns", "port": 53, "protocol": "UDP"}]}),
            ),
            service(
                "nodeport",
                "10.96.0.25",
                json!({"type": "NodePort",
                       "ports": [{"name": "http", "port": 80, "nodePort": 30080}]}),
            ),
            // Its only endpoint is on another node: outside traffic to
            // this node's NodePort is dropped.
            service(
                "elsewhere",
                "10.96.0.26",
                json!({"type": "NodePort", "externalTrafficPolicy": "Local",
                       "ports": [{"name": "http", "port": 80, "nodePort": 30081}]}),
            ),
        ];
        let mut elsewhere = slice("elsewhere", "http", "TCP", at_b);
        elsewhere.endpoints[0].node_name = Some("node-2".into());
        let mut slices = vec![
            elsewhere,
            slice("web", "http", "TCP", at_a),
            slice("web", "http", "TCP", at_b),
            slice("self", "http", "TCP", at_a),
            slice("sticky", "http", "TCP", at_a),
            slice("sticky", "http", "TCP", at_b),
            slice("dns", "dns", "UDP", udp_b),
            slice("nodeport", "http", "TCP", at_b),
        ];
        let mut proxy = Proxy::new();
        let synced = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await
            .unwrap();
        assert!(synced.full && synced.commands > 0);
        let table = nft_table();
        assert!(
            table.contains("chain svc-default/web/tcp/http"),
            "chains say which Service they belong to:\n{table}"
        );

        // A ClusterIP spreads over both endpoints.
        let answered = backends(&c.netns_path, vip(20), 40);
        assert_eq!(
            answered,
            [a.ip.to_string(), b.ip.to_string()].into_iter().collect(),
            "40 connections to the ClusterIP reach both pods"
        );
        // From the node itself (masqueraded, output hook).
        let on_node = greeting(vip(20));
        assert!(on_node.is_ok(), "from the node: {on_node:?}");
        // Hairpin: pod-a through its own Service.
        let hairpin = connect_once(&a.netns_path, vip(21));
        assert!(
            hairpin
                .as_ref()
                .is_ok_and(|g| g.ends_with(&a.ip.to_string())),
            "hairpin: {hairpin:?}"
        );
        // No endpoints: refused at once, not a hang.
        let started = Instant::now();
        let refused = connect_once(&c.netns_path, vip(22));
        assert_eq!(
            refused.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
        // ClientIP affinity: one backend for every connection of a client.
        assert_eq!(backends(&c.netns_path, vip(23), 20).len(), 1);
        // UDP.
        let udp_vip = SocketAddr::new(vip(24).ip(), 53);
        assert_eq!(
            udp_ask(&c.netns_path, udp_vip).unwrap(),
            format!("udp from {}", b.ip)
        );
        // NodePort on a local address of the node (the gateway here).
        let node_port = SocketAddr::new(IpAddr::V4(c.gateway), 30080);
        assert_eq!(
            backends(&c.netns_path, node_port, 3),
            [b.ip.to_string()].into_iter().collect()
        );

        let dropped = connect_once(&c.netns_path, SocketAddr::new(IpAddr::V4(c.gateway), 30081));
        assert_eq!(
            dropped.as_ref().map_err(std::io::Error::kind).err(),
            Some(std::io::ErrorKind::TimedOut),
            "a Local NodePort without a local endpoint: {dropped:?}\n{}",
            nft_table()
        );

        // pod-b leaves the Service: only what changed is rewritten, and
        // pod-a alone answers.
        slices.retain(|s| s.metadata.name.as_deref() != Some(&format!("web-{}", at_b.port())));
        let synced = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await
            .unwrap();
        assert!(
            !synced.full && synced.commands > 0 && synced.commands < 10,
            "{synced:?}"
        );
        assert_eq!(
            backends(&c.netns_path, vip(20), 10),
            [a.ip.to_string()].into_iter().collect()
        );
        // Nothing changed: nothing applied.
        let synced = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await
            .unwrap();
        assert_eq!(synced.commands, 0);

        // The table deleted behind the proxy's back: a check notices it and
        // the next sync rebuilds it.
        assert!(proxy.check().await, "the table is there");
        let delete_table = || {
            let deleted = std::process::Command::new("nft")
                .args(["delete", "table", "ip", "shoal"])
                .status()
                .unwrap();
            assert!(deleted.success());
        };
        delete_table();
        assert!(!proxy.check().await, "a deleted table is noticed");
        let rebuilt = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await
            .unwrap();
        assert!(rebuilt.full);
        // Deleted again and not checked: the next change fails once, and
        // the sync after rebuilds it.
        delete_table();
        slices.retain(|s| s.metadata.name.as_deref() != Some(&format!("self-{}", at_a.port())));
        let broken = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await;
        assert!(broken.is_err(), "{broken:?}");
        let rebuilt = proxy
            .sync(plan(services.iter(), slices.iter(), &node))
            .await
            .unwrap();
        assert!(rebuilt.full);
        assert_eq!(
            backends(&c.netns_path, vip(20), 5),
            [a.ip.to_string()].into_iter().collect()
        );
        assert!(proxy.metrics().contains("shoal_proxy_syncs_total"));

        // NetworkPolicy on UDP: pod-b takes UDP from pod-c only; pod-a's
        // datagrams get no answer, TCP to pod-b is refused for both.
        let pods: Vec<Pod> = [("a", a.ip), ("b", b.ip), ("c", c.ip)]
            .iter()
            .map(|(name, ip)| {
                serde_json::from_value(json!({
                    "metadata": {"namespace": "default", "name": name, "labels": {"pod": name}},
                    "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]},
                    "status": {"phase": "Running", "podIP": ip.to_string()},
                }))
                .unwrap()
            })
            .collect();
        let namespaces: Vec<Namespace> = vec![serde_json::from_value(
            json!({"metadata": {"name": "default", "labels": {"kubernetes.io/metadata.name": "default"}}}),
        )
        .unwrap()];
        let policies: Vec<NetworkPolicy> = vec![serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": "udp-from-c"},
            "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}],
                                  "ports": [{"protocol": "UDP", "port": udp_b.port()}]}]},
        }))
        .unwrap()];
        let mut rules = plan(services.iter(), slices.iter(), &node);
        add_policies(&mut rules, &policies, &pods, &namespaces, &node);
        proxy.sync(rules).await.unwrap();
        assert_eq!(
            udp_ask(&c.netns_path, udp_b).unwrap(),
            format!("udp from {}", b.ip)
        );
        assert!(udp_ask(&a.netns_path, udp_b).is_err(), "pod-a's UDP passed");
        for from in [&a, &c] {
            let refused = connect_once(&from.netns_path, at_b);
            assert_eq!(
                refused.as_ref().map_err(std::io::Error::kind).err(),
                Some(std::io::ErrorKind::ConnectionRefused),
                "TCP to the isolated pod-b: {refused:?}"
            );
        }
    });
}
