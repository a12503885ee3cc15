//! The node pod network for real: bridge, namespaces, veths, addresses and
//! routes made over netlink, then checked by opening TCP connections from
//! inside the pod namespaces.
//!
//! Each test runs on a thread that first moves into a network namespace
//! (and a mount namespace) of its own, so nothing touches the machine's
//! network or mount table: the "node" is that namespace, its bridge and
//! pods vanish with the test process. Needs root (CI runs as root);
//! without it each test says why and returns.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Instant;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoBridgePort, InfoPortData, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkUnspec, LinkVeth};
use shoal_overlay::netns;
use shoal_overlay::{Network, NodeNetwork};

mod root;

use root::{listen, on_private_node, talk_from};

const BRIDGE: &str = "shoal0";

fn node(state: &Path, cidr: &str) -> NodeNetwork {
    NodeNetwork {
        bridge: BRIDGE.to_string(),
        pod_cidr: cidr.to_string(),
        state_dir: state.to_path_buf(),
        mtu: 1500,
    }
}

fn netlink() -> Handle {
    let (connection, handle, _) = rtnetlink::new_connection().expect("netlink socket");
    tokio::spawn(connection);
    handle
}

async fn link(handle: &Handle, name: &str) -> Option<LinkMessage> {
    handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
        .ok()
        .flatten()
}

async fn ipv4_addresses(handle: &Handle, index: u32) -> Vec<(Ipv4Addr, u8)> {
    let messages: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .expect("listing addresses");
    messages
        .into_iter()
        .filter(|m| m.header.family == AddressFamily::Inet)
        .filter_map(|m| {
            m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                _ => None,
            })
        })
        .collect()
}

fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

fn controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

fn hairpin(link: &LinkMessage) -> bool {
    link.attributes.iter().any(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().any(|i| match i {
            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                port.contains(&InfoBridgePort::HairpinMode(true))
            }
            _ => false,
        }),
        _ => false,
    })
}

/// What `ip -4 addr show eth0` and `ip link show lo` say inside a pod.
fn pod_view(netns_path: &Path) -> (Vec<(Ipv4Addr, u8)>, bool, bool) {
    netns::run_in_blocking(netns_path, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let handle = netlink();
            let eth0 = link(&handle, "eth0").await.expect("eth0 in the pod");
            let lo = link(&handle, "lo").await.expect("lo in the pod");
            (
                ipv4_addresses(&handle, eth0.header.index).await,
                is_up(&eth0),
                is_up(&lo),
            )
        })
    })
    .expect("entering the pod namespace")
}

/// A listener bound inside the namespace at `path` (or the node's own when
/// `None`), answering "pong <n>" to each connection.
fn assert_reaches(from: &Path, to: SocketAddr) {
    match talk_from(from, to) {
        Ok(greeting) => assert!(greeting.starts_with("pong"), "{greeting:?}"),
        Err(e) => panic!("from {}: {e}", from.display()),
    }
}

/// Set `lo` up in the node namespace and give it an address outside the pod
/// range: reaching it from a pod proves the default route via the gateway.
async fn node_setup(handle: &Handle) -> Ipv4Addr {
    let outside = Ipv4Addr::new(192, 0, 2, 1);
    let lo = link(handle, "lo").await.expect("lo");
    handle
        .link()
        .set(LinkUnspec::new_with_index(lo.header.index).up().build())
        .execute()
        .await
        .expect("lo up");
    handle
        .address()
        .add(lo.header.index, IpAddr::V4(outside), 32)
        .execute()
        .await
        .expect("address on lo");
    // Starts off so that the test sees Network::new turn it on; this is the
    // test's own namespace, not the machine's.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0\n").expect("ip_forward");
    outside
}

fn ip_forward() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
        .expect("ip_forward")
        .trim()
        .to_string()
}

#[test]
fn two_pods_reach_each_other_the_gateway_and_beyond() {
    on_private_node(|state| async move {
        let handle = netlink();
        let outside = node_setup(&handle).await;
        assert_eq!(ip_forward(), "0");

        let network = Network::new(node(state.path(), "10.244.1.0/24"))
            .await
            .unwrap();
        let bridge = link(&handle, BRIDGE).await.expect("bridge created");
        assert!(is_up(&bridge), "bridge is up");
        assert_eq!(
            ipv4_addresses(&handle, bridge.header.index).await,
            vec![(Ipv4Addr::new(10, 244, 1, 1), 24)]
        );
        assert_eq!(ip_forward(), "1");

        // A restarted agent calls it again: same bridge, one address.
        let again = Network::new(node(state.path(), "10.244.1.0/24"))
            .await
            .unwrap();
        let bridge_again = link(&handle, BRIDGE).await.expect("bridge");
        assert_eq!(bridge_again.header.index, bridge.header.index);
        assert_eq!(
            ipv4_addresses(&handle, bridge.header.index).await,
            vec![(Ipv4Addr::new(10, 244, 1, 1), 24)]
        );
        drop(again);

        let a = network.create_sandbox("pod-a").await.unwrap();
        let b = network.create_sandbox("pod-b").await.unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(b.ip, Ipv4Addr::new(10, 244, 1, 3));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(a.netns_path, state.path().join("netns").join("pod-a"));
        for pod in [&a, &b] {
            let (addresses, eth0_up, lo_up) = pod_view(&pod.netns_path);
            assert_eq!(addresses, vec![(pod.ip, 24)], "{}", pod.id);
            assert!(eth0_up && lo_up, "{}: eth0 and lo up", pod.id);
            let veth = link(&handle, &pod.host_veth).await.expect("host veth");
            assert!(is_up(&veth), "{} is up", pod.host_veth);
            assert!(hairpin(&veth), "{} in hairpin mode", pod.host_veth);
            assert_eq!(
                controller(&veth),
                Some(bridge.header.index),
                "{} on the bridge",
                pod.host_veth
            );
        }
        // Creating an existing sandbox gives it back unchanged.
        assert_eq!(network.create_sandbox("pod-a").await.unwrap(), a);

        // Pod to pod, both ways, through the bridge.
        let at_b = listen(Some(&b.netns_path), b.ip);
        assert_reaches(&a.netns_path, at_b);
        let at_a = listen(Some(&a.netns_path), a.ip);
        assert_reaches(&b.netns_path, at_a);
        // Pod to the node at the gateway address, and to an address off
        // the pod range (the default route).
        let at_gateway = listen(None, a.gateway);
        assert_reaches(&a.netns_path, at_gateway);
        assert_reaches(&b.netns_path, at_gateway);
        let beyond = listen(None, outside);
        assert_reaches(&b.netns_path, beyond);
        // Localhost inside a pod works (lo is up).
        let local = listen(Some(&a.netns_path), Ipv4Addr::LOCALHOST);
        assert_reaches(&a.netns_path, local);

        // A restarted agent finds both sandboxes.
        let restarted = Network::new(node(state.path(), "10.244.1.0/24"))
            .await
            .unwrap();
        assert_eq!(restarted.sandbox("pod-a").await.unwrap(), Some(a.clone()));
        assert_eq!(restarted.sandbox("pod-b").await.unwrap(), Some(b.clone()));
        assert_eq!(restarted.sandbox("pod-x").await.unwrap(), None);
        assert_eq!(restarted.list().await.unwrap(), vec!["pod-a", "pod-b"]);

        // Deleting frees the address, the veth and the namespace file.
        restarted.delete_sandbox("pod-a").await.unwrap();
        assert!(link(&handle, &a.host_veth).await.is_none(), "veth removed");
        assert!(!a.netns_path.exists(), "namespace file removed");
        assert_eq!(restarted.sandbox("pod-a").await.unwrap(), None);
        assert_eq!(restarted.list().await.unwrap(), vec!["pod-b"]);
        assert!(!std::fs::read_dir(state.path().join("ipam"))
            .unwrap()
            .any(|e| e.unwrap().file_name() == "10.244.1.2"));
        // Twice is fine.
        restarted.delete_sandbox("pod-a").await.unwrap();
        // The freed address is not the next one handed out...
        let c = restarted.create_sandbox("pod-c").await.unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(10, 244, 1, 4));
        // ...and b is unaffected.
        assert_reaches(&b.netns_path, at_gateway);

        for id in ["pod-b", "pod-c"] {
            restarted.delete_sandbox(id).await.unwrap();
        }
        assert!(restarted.list().await.unwrap().is_empty());
    });
}

#[test]
fn a_half_made_sandbox_is_rebuilt_with_its_address() {
    on_private_node(|state| async move {
        let handle = netlink();
        let network = Network::new(node(state.path(), "10.244.7.0/24"))
            .await
            .unwrap();
        let a = network.create_sandbox("pod-a").await.unwrap();
        // An agent killed midway: the veth pair is gone, the rest is left.
        let veth = link(&handle, &a.host_veth).await.expect("veth");
        handle
            .link()
            .del(veth.header.index)
            .execute()
            .await
            .unwrap();
        assert_eq!(network.sandbox("pod-a").await.unwrap(), None);
        assert_eq!(network.list().await.unwrap(), vec!["pod-a"]);

        let rebuilt = network.create_sandbox("pod-a").await.unwrap();
        assert_eq!(rebuilt, a);
        let (addresses, ..) = pod_view(&rebuilt.netns_path);
        assert_eq!(addresses, vec![(a.ip, 24)]);
        let at_gateway = listen(None, a.gateway);
        assert_reaches(&rebuilt.netns_path, at_gateway);

        // Killed before the last step (the veth's label): not adopted as
        // complete, rebuilt the same.
        let veth = link(&handle, &a.host_veth).await.expect("veth");
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(veth.header.index)
                    .alias("")
                    .build(),
            )
            .execute()
            .await
            .unwrap();
        assert_eq!(network.sandbox("pod-a").await.unwrap(), None);
        assert_eq!(network.create_sandbox("pod-a").await.unwrap(), a);
        assert_eq!(network.sandbox("pod-a").await.unwrap(), Some(a.clone()));
        assert_reaches(&a.netns_path, at_gateway);
        network.delete_sandbox("pod-a").await.unwrap();
    });
}

#[test]
fn a_full_range_is_a_clear_error() {
    on_private_node(|state| async move {
        let handle = netlink();
        let network = Network::new(node(state.path(), "10.244.3.0/24"))
            .await
            .unwrap();
        let started = Instant::now();
        for i in 0..253 {
            let pod = network.create_sandbox(&format!("pod-{i}")).await.unwrap();
            assert_eq!(pod.ip, Ipv4Addr::new(10, 244, 3, 2 + i as u8));
        }
        eprintln!("253 sandboxes in {:?}", started.elapsed());
        let err = network.create_sandbox("one-too-many").await.unwrap_err();
        assert!(err.is_exhausted(), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no free pod address in 10.244.3.0/24: all 253 are allocated"
        );
        // Nothing is left of the failed attempt.
        assert!(!network
            .list()
            .await
            .unwrap()
            .contains(&"one-too-many".to_string()));
        assert!(!state.path().join("netns/one-too-many").exists());
        assert!(link(
            &handle,
            &shoal_overlay::names::host_veth_name("one-too-many")
        )
        .await
        .is_none());

        network.delete_sandbox("pod-100").await.unwrap();
        let pod = network.create_sandbox("one-too-many").await.unwrap();
        assert_eq!(pod.ip, Ipv4Addr::new(10, 244, 3, 102));
        let started = Instant::now();
        for id in network.list().await.unwrap() {
            network.delete_sandbox(&id).await.unwrap();
        }
        eprintln!("deleted them in {:?}", started.elapsed());
        assert!(network.list().await.unwrap().is_empty());
    });
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    on_private_node(|state| async move {
        let handle = netlink();
        let err = Network::new(node(state.path(), "10.244.1.5/24"))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod CIDR: \"10.244.1.5/24\" has host bits set; the network is 10.244.1.0/24"
        );
        let err = Network::new(node(state.path(), "10.244.1.0/31"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
        let mut config = node(state.path(), "10.244.1.0/24");
        config.bridge = "a-bridge-name-too-long".to_string();
        let err = Network::new(config).await.unwrap_err();
        assert!(err.to_string().contains("longer than 15 bytes"), "{err}");

        // A non-bridge device already using the name is not taken over.
        handle
            .link()
            .add(LinkVeth::new("taken0", "taken1").build())
            .execute()
            .await
            .unwrap();
        let mut config = node(state.path(), "10.244.1.0/24");
        config.bridge = "taken0".to_string();
        let err = Network::new(config).await.unwrap_err();
        assert!(err.to_string().contains("is not a bridge"), "{err}");

        let network = Network::new(node(state.path(), "10.244.1.0/24"))
            .await
            .unwrap();
        for bad in ["", "../etc", "a/b", ".hidden"] {
            let err = network.create_sandbox(bad).await.unwrap_err();
            assert!(err.to_string().starts_with("sandbox id"), "{bad:?}: {err}");
            assert!(network.delete_sandbox(bad).await.is_err());
        }
        assert!(network.list().await.unwrap().is_empty());
    });
}

#[test]
fn a_new_pod_cidr_moves_the_gateway_and_the_bridge_mac_stays_fixed() {
    on_private_node(|state| async move {
        let handle = netlink();
        let mac = |link: &LinkMessage| {
            link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Address(m) => Some(m.clone()),
                _ => None,
            })
        };
        let network = Network::new(node(state.path(), "10.244.1.0/24"))
            .await
            .unwrap();
        let bridge = link(&handle, BRIDGE).await.expect("bridge");
        assert_eq!(mac(&bridge), Some(vec![0x02, 0x5c, 10, 244, 1, 1]));
        // Ports joining do not change the gateway's MAC under the pods.
        let a = network.create_sandbox("pod-a").await.unwrap();
        let b = network.create_sandbox("pod-b").await.unwrap();
        let bridge = link(&handle, BRIDGE).await.expect("bridge");
        assert_eq!(mac(&bridge), Some(vec![0x02, 0x5c, 10, 244, 1, 1]));
        network.delete_sandbox(&a.id).await.unwrap();
        network.delete_sandbox(&b.id).await.unwrap();

        // The node got another range (re-registered): one gateway, the new one.
        let moved = Network::new(node(state.path(), "10.244.2.0/24"))
            .await
            .unwrap();
        let bridge = link(&handle, BRIDGE).await.expect("bridge");
        assert_eq!(
            ipv4_addresses(&handle, bridge.header.index).await,
            vec![(Ipv4Addr::new(10, 244, 2, 1), 24)]
        );
        assert_eq!(mac(&bridge), Some(vec![0x02, 0x5c, 10, 244, 2, 1]));
        let c = moved.create_sandbox("pod-c").await.unwrap();
        assert_eq!(c.ip, Ipv4Addr::new(10, 244, 2, 2));
        let at_gateway = listen(None, c.gateway);
        assert_reaches(&c.netns_path, at_gateway);
        moved.delete_sandbox(&c.id).await.unwrap();
    });
}
