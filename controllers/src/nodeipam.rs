//! Node IPAM: every node gets a range of the cluster's pod network
//! (`--cluster-cidr`, 10.244.0.0/16 by default, split by
//! `--node-cidr-mask-size`, 24, as kube-controller-manager does) in
//! `spec.podCIDR`/`spec.podCIDRs`; the node agent hands out its pods'
//! addresses from it. Nodes are handled one at a
//! time from a watch, so two nodes never get the same range.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector;
use kube::ResourceExt;
use serde_json::json;
use shoal_core::cidr::Ipv4Cidr;

use crate::events;
use crate::informers::Seen;

/// The cluster's pod network and the size of each node's part of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodNetwork {
    pub cluster_cidr: Ipv4Cidr,
    pub node_cidr_mask_size: u8,
}

impl Default for PodNetwork {
    fn default() -> PodNetwork {
        PodNetwork {
            cluster_cidr: Ipv4Cidr::containing(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_else(|| unreachable!("16 is a prefix length")),
            node_cidr_mask_size: 24,
        }
    }
}

impl PodNetwork {
    /// Checks that nodes' ranges fit in the cluster's and hold pods.
    pub fn new(cluster_cidr: Ipv4Cidr, node_cidr_mask_size: u8) -> Result<PodNetwork, String> {
        if node_cidr_mask_size < cluster_cidr.prefix_len() || node_cidr_mask_size > 30 {
            return Err(format!(
                "--node-cidr-mask-size {node_cidr_mask_size} must be between the cluster CIDR's prefix length ({}) and 30",
                cluster_cidr.prefix_len()
            ));
        }
        Ok(PodNetwork {
            cluster_cidr,
            node_cidr_mask_size,
        })
    }

    /// The first node range not in `used`.
    pub fn next_range(&self, used: &HashSet<String>) -> Option<String> {
        self.cluster_cidr
            .subnets(self.node_cidr_mask_size)
            .map(|cidr| cidr.to_string())
            .find(|cidr| !used.contains(cidr))
    }
}

fn pod_cidr(node: &Node) -> Option<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .filter(|c| !c.is_empty())
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let nodes: Api<Node> = Api::all(client.clone());
    let informer = settings.informers.get::<Node>(&client);
    let mut changes = informer.subscribe().boxed();
    // Ranges are chosen only once every node is known (after the initial
    // list), so that a range in use is never handed out again.
    informer.ready().await;
    let store = informer.store();
    let every_node = |store: &reflector::Store<Node>| -> Vec<Node> {
        store.state().iter().map(|n| (**n).clone()).collect()
    };
    let mut ipam = Ipam {
        network: settings.pod_network,
        ..Ipam::default()
    };
    let mut todo = every_node(&store);
    loop {
        for node in &todo {
            ipam.assign(&client, &nodes, &store, node).await;
        }
        todo = match changes.next().await {
            Some(Seen::Applied(node)) => vec![(*node).clone()],
            Some(Seen::Deleted(_)) => Vec::new(),
            Some(Seen::Relisted) => every_node(&store),
            None => return,
        };
    }
}

#[derive(Default)]
struct Ipam {
    network: PodNetwork,
    /// Ranges handed out here that the watch has not shown yet, by node: a
    /// node's status updates may arrive before its range does.
    pending: HashMap<String, String>,
    /// Nodes told once that no range is left (not at every status update).
    told: HashSet<String>,
}

impl Ipam {
    async fn assign(
        &mut self,
        client: &kube::Client,
        nodes: &Api<Node>,
        store: &reflector::Store<Node>,
        node: &Node,
    ) {
        let name = node.name_any();
        // The cache is at least as new as the event that brought `node`
        // (it is updated before subscribers hear of a change): an event
        // from before this loop's own write must not look like a node
        // still without a range.
        let current = store.get(&reflector::ObjectRef::new(&name));
        let node = current.as_deref().unwrap_or(node);
        if pod_cidr(node).is_some() {
            self.pending.remove(&name);
            return;
        }
        if self.pending.contains_key(&name) {
            return;
        }
        let known = store.state();
        self.pending
            .retain(|n, _| known.iter().any(|node| node.name_any() == *n));
        let mut used: HashSet<String> = known.iter().filter_map(|n| pod_cidr(n)).collect();
        used.extend(self.pending.values().cloned());
        let Some(cidr) = self.network.next_range(&used) else {
            if self.told.insert(name.clone()) {
                events::record(
                    client,
                    node,
                    "Normal",
                    "CIDRNotAvailable",
                    &format!("Node {name} status is now: CIDRNotAvailable"),
                    "cidrAllocator",
                )
                .await;
            }
            return;
        };
        let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
        match nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {
                tracing::info!(node = %name, %cidr, "pod range assigned");
                self.pending.insert(name, cidr);
            }
            Err(e) => tracing::warn!(node = %name, error = %e, "cannot assign a pod range"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_handed_out_in_order_skipping_used_ones() {
        let network = PodNetwork::default();
        let mut used = HashSet::new();
        assert_eq!(network.next_range(&used).as_deref(), Some("10.244.0.0/24"));
        used.insert("10.244.0.0/24".to_string());
        used.insert("10.244.2.0/24".to_string());
        assert_eq!(network.next_range(&used).as_deref(), Some("10.244.1.0/24"));
        used.insert("10.244.1.0/24".to_string());
        assert_eq!(network.next_range(&used).as_deref(), Some("10.244.3.0/24"));
    }

    #[test]
    fn a_full_network_has_no_range() {
        let used: HashSet<String> = (0..=255).map(|i| format!("10.244.{i}.0/24")).collect();
        assert_eq!(PodNetwork::default().next_range(&used), None);
    }

    #[test]
    fn other_networks_and_node_sizes() {
        let network = PodNetwork::new("10.42.0.0/16".parse().unwrap(), 26).unwrap();
        let mut used = HashSet::from(["10.42.0.0/26".to_string()]);
        assert_eq!(network.next_range(&used).as_deref(), Some("10.42.0.64/26"));
        used.insert("10.42.0.64/26".to_string());
        assert_eq!(network.next_range(&used).as_deref(), Some("10.42.0.128/26"));
        assert!(PodNetwork::new("10.42.0.0/16".parse().unwrap(), 12).is_err());
        assert!(PodNetwork::new("10.42.0.0/16".parse().unwrap(), 31).is_err());
    }
}
