//! The endpoints agents publish for themselves (EndpointSlices labelled
//! `endpointslice.kubernetes.io/managed-by: shoal-agent`: each node's
//! cluster DNS and ingress) follow their node's health: ready while the
//! node is Ready, not ready once it is lost (Ready Unknown or False, or
//! gone), ready again when it is back. An agent that dies cannot say so
//! itself; without this, a LoadBalancer address held by the first node
//! with a ready endpoint (`kube-system/shoal-ingress`) would stay on a
//! dead node.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::json;

const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const AGENT: &str = "shoal-agent";

struct Ctx {
    client: kube::Client,
    nodes: Store<Node>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let slices = settings.informers.get::<EndpointSlice>(&client);
    let nodes = settings.informers.get::<Node>(&client);
    nodes.ready().await;
    let controller =
        crate::run::over("nodeendpoints", &slices).reconcile_all_on(nodes.touched().map(|_| ()));
    let ctx = Arc::new(Ctx {
        client,
        nodes: nodes.store(),
    });
    crate::run::run_controller("nodeendpoints", controller, reconcile, ctx).await;
}

/// Is the node named `name` Ready?
fn node_ready(nodes: &[Arc<Node>], name: &str) -> bool {
    nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(name))
        .and_then(|n| n.status.as_ref()?.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The slice's endpoints with each one's readiness following its node;
/// `None` when nothing changes.
pub fn follow(slice: &EndpointSlice, nodes: &[Arc<Node>]) -> Option<serde_json::Value> {
    if slice.labels().get(MANAGED_BY).map(String::as_str) != Some(AGENT) {
        return None;
    }
    let mut changed = false;
    let mut endpoints = Vec::new();
    for endpoint in &slice.endpoints {
        let mut value = serde_json::to_value(endpoint).ok()?;
        if let Some(node) = &endpoint.node_name {
            let ready = node_ready(nodes, node);
            let conditions = endpoint.conditions.as_ref();
            let now = conditions.and_then(|c| c.ready).unwrap_or(true);
            if now != ready {
                changed = true;
            }
            value["conditions"] = json!({"ready": ready, "serving": ready, "terminating": false});
        }
        endpoints.push(value);
    }
    changed.then(|| json!({"endpoints": endpoints}))
}

async fn reconcile(slice: Arc<EndpointSlice>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let Some(patch) = follow(&slice, &ctx.nodes.state()) else {
        return Ok(Action::await_change());
    };
    tracing::info!(slice = %slice.name_any(), "an agent's own endpoint follows its node's health");
    let api: Api<EndpointSlice> =
        Api::namespaced(ctx.client.clone(), &slice.namespace().unwrap_or_default());
    match api
        .patch(
            &slice.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            }))
            .unwrap(),
        )
    }

    fn slice(managed_by: &str, ready: bool) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "shoal-ingress-n1", "namespace": "kube-system",
                "labels": {MANAGED_BY: managed_by}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["172.29.0.11"], "nodeName": "n1",
                "conditions": {"ready": ready, "serving": ready, "terminating": false}}],
        }))
        .unwrap()
    }

    #[test]
    fn an_agents_endpoint_is_ready_while_its_node_is() {
        let ready = [node("n1", "True")];
        let lost = [node("n1", "Unknown")];
        assert_eq!(follow(&slice(AGENT, true), &ready), None);
        let patch = follow(&slice(AGENT, true), &lost).unwrap();
        assert_eq!(patch["endpoints"][0]["conditions"]["ready"], false);
        assert_eq!(patch["endpoints"][0]["addresses"][0], "172.29.0.11");
        assert_eq!(follow(&slice(AGENT, false), &lost), None);
        let back = follow(&slice(AGENT, false), &ready).unwrap();
        assert_eq!(back["endpoints"][0]["conditions"]["ready"], true);
        // A node gone is not ready; other controllers' slices are left alone.
        assert!(follow(&slice(AGENT, true), &[]).is_some());
        assert_eq!(
            follow(&slice("endpointslice-controller.k8s.io", true), &lost),
            None
        );
    }
}
