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

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The cluster DNS Service whose endpoint this node is.
const NAMESPACE: &str = "kube-system";
const SERVICE: &str = "kube-dns";
const MANAGED_BY: &str = "shoal-agent";

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
pub fn endpoint_slice(
    node: &str,
    node_uid: Option<&str>,
    address: IpAddr,
    port: u16,
) -> serde_json::Value {
    let owner =
        node_uid.map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]));
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{SERVICE}-{node}"),
            "namespace": NAMESPACE,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": owner,
        },
        "addressType": if address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{
            "addresses": [address.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    })
}

/// Writes this node's endpoint until it is there (created, or replaced
/// when it differs).
async fn publish(client: &kube::Client, node: &str, address: IpAddr, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let mut delay = Duration::from_millis(500);
    loop {
        let uid = nodes
            .get_opt(node)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.metadata.uid);
        match write(&slices, node, uid.as_deref(), address, port).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "publishing this node's cluster DNS endpoint; retrying")
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn write(
    slices: &Api<EndpointSlice>,
    node: &str,
    uid: Option<&str>,
    address: IpAddr,
    port: u16,
) -> Result<(), kube::Error> {
    let mut wanted: EndpointSlice =
        serde_json::from_value(endpoint_slice(node, uid, address, port))
            .map_err(kube::Error::SerdeError)?;
    let name = format!("{SERVICE}-{node}");
    match slices.get_opt(&name).await? {
        None => {
            slices.create(&PostParams::default(), &wanted).await?;
        }
        Some(current) => {
            if current.endpoints == wanted.endpoints
                && current.ports == wanted.ports
                && current.metadata.labels == wanted.metadata.labels
            {
                return Ok(());
            }
            wanted.metadata.resource_version = current.metadata.resource_version;
            slices
                .replace(&name, &PostParams::default(), &wanted)
                .await?;
        }
    }
    tracing::info!(%address, port, "this node answers the cluster DNS Service");
    Ok(())
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
            let publish = publish(&client, &node, address, config.port);
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
