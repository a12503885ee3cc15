//! The tunnels' counters in Prometheus' text format, for the agent's
//! `/metrics`: per peer, packets and bytes each way, drops by reason, the
//! connection's RTT and whether it is up.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::PeerStatus;

type Labels = Vec<(&'static str, String)>;

/// The exposition of `peers` (and of packets that matched no peer).
pub fn render(peers: &[PeerStatus], drop_no_route: u64) -> String {
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let drops = Family::<Labels, Counter>::default();
    let connects = Family::<Labels, Counter>::default();
    let up = Family::<Labels, Gauge>::default();
    let rtt = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for p in peers {
        let peer = || vec![("peer", p.name.clone())];
        let with = |k: &'static str, v: &str| {
            let mut l = peer();
            l.push((k, v.to_string()));
            l
        };
        packets
            .get_or_create(&with("direction", "tx"))
            .inc_by(p.tx_packets);
        packets
            .get_or_create(&with("direction", "rx"))
            .inc_by(p.rx_packets);
        bytes
            .get_or_create(&with("direction", "tx"))
            .inc_by(p.tx_bytes);
        bytes
            .get_or_create(&with("direction", "rx"))
            .inc_by(p.rx_bytes);
        for (reason, n) in [
            ("no_connection", p.drop_no_connection),
            ("too_big", p.drop_too_big),
            ("send_error", p.drop_send_error),
            ("spoofed_source", p.drop_spoofed),
        ] {
            drops.get_or_create(&with("reason", reason)).inc_by(n);
        }
        connects.get_or_create(&peer()).inc_by(p.connects);
        up.get_or_create(&peer())
            .set(i64::from(p.state == "connected"));
        if let Some(ms) = p.rtt_ms {
            rtt.get_or_create(&peer()).set(ms / 1000.0);
        }
    }
    let no_route = Counter::<u64>::default();
    no_route.inc_by(drop_no_route);

    let mut registry = Registry::with_prefix("shoal_overlay");
    registry.register(
        "packets",
        "Pod packets through the tunnel to or from a peer",
        packets,
    );
    registry.register(
        "bytes",
        "Bytes of pod packets through the tunnel to or from a peer",
        bytes,
    );
    registry.register("drops", "Pod packets for a peer dropped, by reason", drops);
    registry.register(
        "connects",
        "Connections dialed to a peer that came up",
        connects,
    );
    registry.register("peer_up", "Whether the connection to a peer is up", up);
    registry.register("rtt_seconds", "Smoothed round-trip time to a peer", rtt);
    registry.register(
        "no_route_drops",
        "Packets for the pod network that matched no peer",
        no_route,
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_labelled_counters() {
        let peer = PeerStatus {
            name: "node-2".into(),
            endpoint: "172.29.0.12:7443".parse().unwrap(),
            pod_cidr: "10.244.2.0/24".into(),
            state: "connected".into(),
            rtt_ms: Some(1.5),
            max_datagram: Some(1434),
            incoming: 1,
            tx_packets: 10,
            tx_bytes: 1000,
            rx_packets: 7,
            rx_bytes: 700,
            drop_no_connection: 0,
            drop_too_big: 2,
            drop_send_error: 0,
            drop_spoofed: 0,
            connects: 1,
        };
        let text = render(&[peer], 3);
        assert!(
            text.contains(r#"shoal_overlay_packets_total{peer="node-2",direction="tx"} 10"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shoal_overlay_drops_total{peer="node-2",reason="too_big"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shoal_overlay_peer_up{peer="node-2"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shoal_overlay_rtt_seconds{peer="node-2"} 0.0015"#),
            "{text}"
        );
        assert!(
            text.contains("shoal_overlay_no_route_drops_total 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
