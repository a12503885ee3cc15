//! The node's end of the overlay: the QUIC tunnels to every other node
//! (see `shoal_overlay::tunnel`), fed by a watch on Nodes, and the
//! host-firewall accepts for the node's interfaces.
//!
//! The agent publishes where its tunnel listens in the Node annotation
//! `overlay.shoal.dev/endpoint` (`<InternalIP>:<port>`); every other
//! agent's watch turns that, with the Node's `spec.podCIDR`, into a peer.
//! A Node added, changed or deleted changes the peers within the watch's
//! latency. The peers' state and counters are written to
//! `<data-dir>/overlay/status.json` every two seconds for
//! `shoal overlay status`.
//!
//! The node's identity on the overlay is a certificate of the cluster CA
//! naming it. Given as files, it is used as it is; otherwise the agent
//! makes a key and asks for one through the CSR API (signer
//! `shoal.dev/node-overlay`), which the controllers approve for the node
//! that asks and sign; it is kept in `<data-dir>/pki/overlay.{crt,key}` and
//! asked for again when it has less than 30 days left.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::Api;
use serde_json::json;
use shoal_overlay::tunnel::{self, Identity, Peer, Tunnel};
use shoal_overlay::Ipv4Cidr;

/// The node's end of the overlay.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// UDP port of the tunnel endpoint.
    pub port: u16,
    pub identity: IdentitySource,
    /// The whole pod network (`--cluster-cidr`): never left by the default
    /// route.
    pub cluster_cidr: Ipv4Cidr,
}

/// Where the node's overlay certificate comes from.
#[derive(Debug, Clone)]
pub enum IdentitySource {
    /// Given: the cluster CA (PEM) peers' certificates must chain to, and
    /// this node's certificate (subject `CN=system:node:<node>`, DNS name
    /// `<node>`) and key.
    Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
    /// Asked for through the CSR API.
    Request,
}

/// The node's identity: from files, or from the CSR API (kept and reused
/// while it has more than 30 days left).
pub async fn identity(
    client: &kube::Client,
    node: &str,
    source: &IdentitySource,
    data_dir: &Path,
) -> Result<Identity, String> {
    if let IdentitySource::Files { ca, cert, key } = source {
        return Identity::from_files(ca, cert, key)
            .map_err(|e| format!("the node's overlay certificate: {e}"));
    }
    let dir = data_dir.join("pki");
    let (cert, key) = (dir.join("overlay.crt"), dir.join("overlay.key"));
    if let (Ok(chain), Ok(key_pem)) = (
        std::fs::read_to_string(&cert),
        std::fs::read_to_string(&key),
    ) {
        if tunnel::identity::valid_for(&chain, node, super::certificates::RENEW_BEFORE) {
            if let Ok(identity) = tunnel::identity::from_issued(&chain, &key_pem) {
                return Ok(identity);
            }
        }
    }
    let (csr_pem, key_pem) = shoal_core::tls::node_csr(node)
        .map_err(|e| format!("making a certificate request: {e}"))?;
    let chain = super::certificates::request(
        client,
        &format!("node-overlay-{node}"),
        shoal_core::tls::NODE_OVERLAY_SIGNER,
        csr_pem,
        &[
            "digital signature",
            "key encipherment",
            "server auth",
            "client auth",
        ],
    )
    .await?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    shoal_core::tls::write_pair(&cert, &chain, &key, &key_pem).map_err(|e| e.to_string())?;
    tunnel::identity::from_issued(&chain, &key_pem).map_err(|e| e.to_string())
}

/// The running overlay of this node.
pub struct NodeOverlay {
    pub tunnel: Arc<Tunnel>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for NodeOverlay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The peer a Node describes, when it has a pod range and a published
/// endpoint.
pub fn peer_of(node: &Node) -> Option<Peer> {
    let name = node.metadata.name.clone()?;
    let pod_cidr: Ipv4Cidr = node.spec.as_ref()?.pod_cidr.as_deref()?.parse().ok()?;
    let endpoint: SocketAddr = node
        .metadata
        .annotations
        .as_ref()?
        .get(tunnel::ENDPOINT_ANNOTATION)?
        .parse()
        .ok()?;
    Some(Peer {
        name,
        pod_cidr,
        endpoint,
    })
}

/// Starts the tunnel endpoint, publishes it on the Node and keeps the
/// peers in step with the Nodes.
pub async fn start(
    client: &kube::Client,
    node_name: &str,
    host_ip: IpAddr,
    local_address: Ipv4Addr,
    underlay_mtu: u16,
    config: &OverlayConfig,
    data_dir: &Path,
) -> Result<NodeOverlay, String> {
    let identity = identity(client, node_name, &config.identity, data_dir).await?;
    let listen = SocketAddr::new(
        if host_ip.is_ipv4() {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        },
        config.port,
    );
    let tunnel = Arc::new(
        Tunnel::start(tunnel::Config {
            node_name: node_name.to_string(),
            device: tunnel::DEVICE.to_string(),
            listen,
            underlay_mtu,
            local_address,
            cluster_cidr: Some(config.cluster_cidr),
            identity,
        })
        .await
        .map_err(|e| e.to_string())?,
    );
    let endpoint = SocketAddr::new(host_ip, config.port).to_string();
    let nodes: Api<Node> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {tunnel::ENDPOINT_ANNOTATION: endpoint}}});
    nodes
        .patch(node_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("publishing the overlay endpoint on Node {node_name}: {e}"))?;

    let (store, writer) = reflector::store::<Node>();
    let watch = {
        let tunnel = tunnel.clone();
        let store = store.clone();
        tokio::spawn(async move {
            // Every watcher event, the initial list's included (which
            // `touched_objects` would not pass on: peers would wait for the
            // next change of some Node).
            let events =
                reflector(writer, watcher(nodes, watcher::Config::default())).default_backoff();
            futures::pin_mut!(events);
            let mut last: Vec<Peer> = Vec::new();
            loop {
                // Any event (or a failed watch) re-derives the peers from
                // the cache; deletions show as a shorter list.
                let next = tokio::time::timeout(Duration::from_secs(10), events.next()).await;
                if let Ok(None) = next {
                    return;
                }
                let mut peers: Vec<Peer> =
                    store.state().iter().filter_map(|n| peer_of(n)).collect();
                peers.sort();
                if peers != last {
                    match tunnel.set_peers(peers.clone()).await {
                        Ok(()) => last = peers,
                        Err(e) => tracing::warn!(error = %e, "updating the overlay peers"),
                    }
                }
            }
        })
    };
    let status = {
        let tunnel = tunnel.clone();
        let path = data_dir.join("overlay").join("status.json");
        tokio::spawn(async move {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            loop {
                let status = json!({
                    "peers": tunnel.status(),
                    "dropNoRoute": tunnel.drop_no_route(),
                    "time": jiff::Timestamp::now().to_string(),
                });
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, status.to_string()).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    Ok(NodeOverlay {
        tunnel,
        tasks: vec![watch, status],
    })
}
