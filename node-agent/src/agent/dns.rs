//! The node's cluster DNS (see `shoal_dns`): served on the node's bridge
//! address, port 53, from the agent's caches of Services, EndpointSlices
//! and Pods, and published as this node's endpoint of the cluster DNS
//! Service (EndpointSlice `kube-system/kube-dns-<node>`). That Service has
//! `internalTrafficPolicy: Local`, so each node's proxy sends its pods'
//! queries for 10.96.0.10 to the node's own server: no query crosses the
//! tunnels, and a lost node takes only its own pods' DNS with it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::endpoint;

/// The cluster DNS Service whose endpoint this node is.
const SERVICE: &str = "kube-dns";

/// How the node's DNS runs; flags of `shoal agent`.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The port on the node's bridge address (53: what the Service's
    /// ports name).
    pub port: u16,
    pub ttl: u32,
    /// Where outside names go; `None`: the host's resolv.conf.
    pub upstreams: Option<Vec<SocketAddr>>,
    pub min_rebuild_period: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            port: 53,
            ttl: shoal_dns::server::DEFAULT_TTL,
            upstreams: None,
            min_rebuild_period: shoal_dns::server::DEFAULT_MIN_REBUILD_PERIOD,
        }
    }
}

/// This node's endpoint of the cluster DNS Service.
pub fn endpoint(address: IpAddr, port: u16) -> endpoint::Own {
    endpoint::Own {
        service: SERVICE,
        address,
        ports: vec![("dns", port, "UDP"), ("dns-tcp", port, "TCP")],
    }
}

/// Serves the node's DNS on `address` until aborted; its metrics are in
/// `metrics`.
pub async fn run(
    client: kube::Client,
    node: String,
    address: IpAddr,
    zone: String,
    config: DnsConfig,
    sources: shoal_dns::Sources,
    metrics: Arc<shoal_dns::Metrics>,
) {
    let mut settings = shoal_dns::Config::new(vec![SocketAddr::new(address, config.port)]);
    settings.zone = zone;
    settings.ttl = config.ttl;
    settings.upstreams = config.upstreams.clone();
    settings.min_rebuild_period = config.min_rebuild_period;
    // Announced only once it can answer: a taken port is an error here,
    // not an endpoint that refuses the node's pods.
    let served = match shoal_dns::server::bind(&settings) {
        Ok(bound) => {
            let own = endpoint(address, config.port);
            let publish = own.publish(&client, &node);
            let serve = shoal_dns::server::serve_bound(
                &settings,
                bound,
                sources,
                metrics,
                futures::future::pending(),
            );
            tokio::join!(publish, serve).1
        }
        Err(e) => Err(e),
    };
    if let Err(e) = served {
        tracing::error!(error = %e, "no cluster DNS on this node: its pods cannot resolve names");
    }
}
