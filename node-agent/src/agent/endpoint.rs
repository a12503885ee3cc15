//! Services of the cluster that every agent answers itself
//! (`kube-system/kube-dns`, `kube-system/shoal-ingress`): they have no
//! selector, and each agent publishes its own endpoint as an EndpointSlice
//! `kube-system/<service>-<node>` (owned by its Node, so that it goes with
//! the Node), once it serves.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use serde_json::json;

const NAMESPACE: &str = "kube-system";
const MANAGED_BY: &str = "shoal-agent";

/// This node's endpoint of a Service the agent serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Own {
    pub service: &'static str,
    pub address: IpAddr,
    /// Name, port, protocol.
    pub ports: Vec<(&'static str, u16, &'static str)>,
}

impl Own {
    /// The EndpointSlice, owned by the Node when its uid is known.
    pub fn slice(&self, node: &str, node_uid: Option<&str>) -> serde_json::Value {
        let owner = node_uid
            .map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]));
        let ports: Vec<_> = self
            .ports
            .iter()
            .map(|(name, port, protocol)| json!({"name": name, "port": port, "protocol": protocol}))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{}-{node}", self.service),
                "namespace": NAMESPACE,
                "labels": {
                    "kubernetes.io/service-name": self.service,
                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
                },
                "ownerReferences": owner,
            },
            "addressType": if self.address.is_ipv4() { "IPv4" } else { "IPv6" },
            "endpoints": [{
                "addresses": [self.address.to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": node,
            }],
            "ports": ports,
        })
    }

    /// Writes the endpoint until it is there (created, or replaced when it
    /// differs), retrying with back-off.
    pub async fn publish(&self, client: &kube::Client, node: &str) {
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
            match self.write(&slices, node, uid.as_deref()).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(service = self.service, error = %e, "publishing this node's endpoint; retrying")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    async fn write(
        &self,
        slices: &Api<EndpointSlice>,
        node: &str,
        uid: Option<&str>,
    ) -> Result<(), kube::Error> {
        let mut wanted: EndpointSlice =
            serde_json::from_value(self.slice(node, uid)).map_err(kube::Error::SerdeError)?;
        let name = format!("{}-{node}", self.service);
        match slices.get_opt(&name).await? {
            None => {
                slices.create(&PostParams::default(), &wanted).await?;
            }
            Some(current) => {
                // An owner is only ever added (its uid may not have been
                // known when the slice was made).
                let owned = wanted.metadata.owner_references.is_none()
                    || current.metadata.owner_references == wanted.metadata.owner_references;
                if current.endpoints == wanted.endpoints
                    && current.ports == wanted.ports
                    && current.metadata.labels == wanted.metadata.labels
                    && owned
                {
                    return Ok(());
                }
                wanted.metadata.resource_version = current.metadata.resource_version;
                slices
                    .replace(&name, &PostParams::default(), &wanted)
                    .await?;
            }
        }
        tracing::info!(service = self.service, address = %self.address, ports = ?self.ports, "this node answers the Service");
        Ok(())
    }
}

/// This node's endpoint of `kube-system/shoal-ingress`: the node's address
/// on the ports its Ingress controller serves (the Service's target ports
/// are these names); `None` when it serves neither.
pub fn ingress(address: IpAddr, http: Option<u16>, https: Option<u16>) -> Option<Own> {
    let mut ports = Vec::new();
    if let Some(port) = http {
        ports.push(("http", port, "TCP"));
    }
    if let Some(port) = https {
        ports.push(("https", port, "TCP"));
    }
    (!ports.is_empty()).then_some(Own {
        service: shoal_ingress::SERVICE,
        address,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_endpoint_is_a_slice_of_its_service_owned_by_the_node() {
        let own = ingress("172.29.0.11".parse().unwrap(), Some(80), Some(8443)).unwrap();
        let slice: EndpointSlice =
            serde_json::from_value(own.slice("node-1", Some("uid-1"))).unwrap();
        assert_eq!(slice.metadata.name.as_deref(), Some("shoal-ingress-node-1"));
        assert_eq!(slice.metadata.namespace.as_deref(), Some("kube-system"));
        let labels = slice.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/service-name"], "shoal-ingress");
        let owner = &slice.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Node", "uid-1"));
        assert_eq!(slice.endpoints[0].addresses, ["172.29.0.11"]);
        assert_eq!(slice.endpoints[0].node_name.as_deref(), Some("node-1"));
        let ports: Vec<_> = slice
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port.unwrap()))
            .collect();
        assert_eq!(
            ports,
            [("http".to_string(), 80), ("https".to_string(), 8443)]
        );
        let only_https = ingress("10.0.0.1".parse().unwrap(), None, Some(443)).unwrap();
        assert_eq!(only_https.ports, [("https", 443, "TCP")]);
        assert!(ingress("10.0.0.1".parse().unwrap(), None, None).is_none());
    }
}
