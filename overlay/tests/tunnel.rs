//! The tunnels' mutual TLS: nodes with certificates from the cluster CA
//! naming them connect; a node presenting a certificate from another CA,
//! or for another node's name, is refused. Several tunnel ends in one
//! private network namespace (root), talking over loopback.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use shoal_overlay::tunnel::{self, Identity, Peer, Tunnel};

mod root;

/// Runs `body` on a thread in a fresh network namespace with `lo` up.
fn on_private_host<Fut>(body: impl FnOnce() -> Fut + Send + 'static)
where
    Fut: std::future::Future<Output = ()>,
{
    if !root::may_run("TUN devices need root") {
        return;
    }
    let thread = std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET).expect("unshare");
        let ip = |args: &[&str]| {
            let status = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("ip");
            assert!(status.success(), "ip {args:?}");
        };
        ip(&["link", "set", "lo", "up"]);
        // The nodes' own pod-network addresses (routes take them as source).
        for a in [
            "10.250.1.1/32",
            "10.250.2.1/32",
            "10.250.3.1/32",
            "10.250.4.1/32",
            "10.250.5.1/32",
        ] {
            ip(&["addr", "add", a, "dev", "lo"]);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(body());
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

struct Ca {
    _dir: tempfile::TempDir,
    ca: shoal_core::tls::Ca,
}

impl Ca {
    fn new() -> Ca {
        let dir = tempfile::tempdir().unwrap();
        let files = shoal_core::tls::Files::in_dir(dir.path());
        shoal_core::tls::ensure_generated(&files, &[]).unwrap();
        let ca = shoal_core::tls::Ca::load(&files.ca_cert, &files.ca_key).unwrap();
        Ca { _dir: dir, ca }
    }

    /// A node identity for `name`, trusting `trust`'s CA.
    fn identity(&self, name: &str, trust: &Ca) -> Identity {
        let (cert, key) = shoal_core::tls::issue_node_cert(&self.ca, name).unwrap();
        Identity::from_pem(trust.ca.pem(), &cert, &key).unwrap()
    }
}

async fn start(name: &str, n: u8, identity: Identity) -> Tunnel {
    Tunnel::start(tunnel::Config {
        node_name: name.to_string(),
        device: format!("tun-{n}"),
        listen: "127.0.0.1:0".parse().unwrap(),
        underlay_mtu: 1500,
        local_address: Ipv4Addr::new(10, 250, n, 1),
        cluster_cidr: None,
        identity,
    })
    .await
    .unwrap()
}

fn peer(name: &str, n: u8, tunnel: &Tunnel) -> Peer {
    Peer {
        name: name.to_string(),
        pod_cidr: format!("10.250.{n}.0/24").parse().unwrap(),
        endpoint: tunnel.local_addr().unwrap(),
    }
}

fn state(tunnel: &Tunnel, peer: &str) -> String {
    tunnel
        .status()
        .into_iter()
        .find(|p| p.name == peer)
        .map(|p| p.state)
        .unwrap_or_default()
}

async fn wait_state(tunnel: &Tunnel, peer: &str, check: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        last = state(tunnel, peer);
        if check(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("peer {peer}: state stayed {last:?}");
}

#[test]
fn nodes_of_the_cluster_ca_connect_and_impostors_are_refused() {
    on_private_host(|| async {
        let cluster = Ca::new();
        let other = Ca::new();
        let a = start("node-a", 1, cluster.identity("node-a", &cluster)).await;
        let b = start("node-b", 2, cluster.identity("node-b", &cluster)).await;
        a.set_peers(vec![peer("node-b", 2, &b)]).await.unwrap();
        b.set_peers(vec![peer("node-a", 1, &a)]).await.unwrap();
        wait_state(&a, "node-b", |s| s == "connected").await;
        wait_state(&b, "node-a", |s| s == "connected").await;
        let routes = std::process::Command::new("ip")
            .args(["route"])
            .output()
            .unwrap();
        let routes = String::from_utf8_lossy(&routes.stdout).to_string();
        assert!(routes.contains("10.250.2.0/24 dev tun-1"), "{routes}");

        // A certificate from another CA (named like a real node): the
        // handshake fails both ways.
        let forged = start("node-b", 3, other.identity("node-b", &cluster)).await;
        forged.set_peers(vec![peer("node-a", 1, &a)]).await.unwrap();
        let refused = wait_state(&forged, "node-a", |s| s.starts_with("down")).await;
        assert!(refused.contains("down"), "{refused}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(state(&forged, "node-a").starts_with("down"));

        // A certificate of the cluster CA for another node's name: dialed
        // as node-b, node-a's certificate does not match, so the dialer
        // refuses it; and node-a refuses a dialer whose certificate names a
        // node that is not its peer.
        let stranger = start("node-c", 4, cluster.identity("node-c", &cluster)).await;
        stranger
            .set_peers(vec![Peer {
                name: "node-b".into(),
                pod_cidr: "10.250.2.0/24".parse().unwrap(),
                endpoint: a.local_addr().unwrap(),
            }])
            .await
            .unwrap();
        let refused = wait_state(&stranger, "node-b", |s| s.starts_with("down")).await;
        assert!(refused.contains("down"), "{refused}");
        // A dialer claiming to be node-b with node-b's name but not from
        // node-b's address is refused by node-a: node-a now expects node-b
        // at an address the impostor is not sending from.
        let impostor = start("node-b", 5, cluster.identity("node-b", &cluster)).await;
        a.set_peers(vec![Peer {
            name: "node-b".into(),
            pod_cidr: "10.250.2.0/24".parse().unwrap(),
            endpoint: SocketAddr::new("127.0.0.2".parse().unwrap(), b.local_addr().unwrap().port()),
        }])
        .await
        .unwrap();
        impostor
            .set_peers(vec![peer("node-a", 1, &a)])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let incoming = a
            .status()
            .into_iter()
            .find(|p| p.name == "node-b")
            .map(|p| p.incoming)
            .unwrap_or(99);
        assert_eq!(
            incoming, 0,
            "node-a kept a connection from the wrong address"
        );
    });
}
