//! Ingresses: the `shoal` IngressClass (controller `shoal.dev/ingress`,
//! the default class), made at start and again if deleted; and the status
//! of every Ingress of shoal's class: `status.loadBalancer.ingress` lists
//! the addresses that serve it, the InternalIPs of the Ready nodes (every
//! agent serves every Ingress), so that `kubectl get ingress` shows
//! ADDRESS.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::ResourceExt;
use serde_json::{json, Value};
use shoal_ingress::routes::{CLASS, CONTROLLER, DEFAULT_CLASS_ANNOTATION};

/// How often the class's presence is checked (in the informer's cache).
const CHECK: Duration = Duration::from_secs(5);

/// The `shoal` IngressClass, as `kubectl get ingressclass shoal -o yaml`
/// shows it (k3s's `traefik` class has the same shape).
pub fn class() -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IngressClass",
        "metadata": {
            "name": CLASS,
            "annotations": {DEFAULT_CLASS_ANNOTATION: "true"},
        },
        "spec": {"controller": CONTROLLER},
    })
}

struct Ctx {
    client: kube::Client,
    classes: Store<IngressClass>,
    nodes: Store<Node>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let ingresses = settings.informers.get::<Ingress>(&client);
    let classes = settings.informers.get::<IngressClass>(&client);
    let nodes = settings.informers.get::<Node>(&client);
    tokio::spawn(keep_class(
        client.clone(),
        settings.informers.get::<IngressClass>(&client),
    ));
    // Nodes coming and going, and classes changing, touch every Ingress.
    let controller = crate::run::over("ingress", &ingresses)
        .reconcile_all_on(nodes.touched().map(|_| ()))
        .reconcile_all_on(classes.touched().map(|_| ()));
    let ctx = Arc::new(Ctx {
        client,
        classes: classes.store(),
        nodes: nodes.store(),
    });
    crate::run::run_controller("ingress", controller, reconcile, ctx).await;
}

/// Makes the class when it is missing.
async fn keep_class(client: kube::Client, classes: crate::informers::Informer<IngressClass>) {
    classes.ready().await;
    let api: Api<IngressClass> = Api::all(client);
    loop {
        let present = classes
            .store()
            .state()
            .iter()
            .any(|c| c.name_any() == CLASS);
        if !present {
            match serde_json::from_value::<IngressClass>(class()) {
                Ok(class) => match api.create(&PostParams::default(), &class).await {
                    Ok(_) => tracing::info!(class = CLASS, "IngressClass created"),
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => tracing::warn!(error = %e, "cannot create the IngressClass"),
                },
                Err(e) => tracing::error!(error = %e, "the IngressClass does not parse"),
            }
        }
        tokio::time::sleep(CHECK).await;
    }
}

/// The addresses that serve Ingresses: each Ready node's InternalIP.
fn addresses(nodes: &[Arc<Node>]) -> Vec<String> {
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .find(|a| a.type_ == "InternalIP")
                .map(|a| a.address.clone())
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

async fn reconcile(ingress: Arc<Ingress>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    if ingress.metadata.deletion_timestamp.is_some()
        || !shoal_ingress::routes::ours(&ingress, &ctx.classes.state())
    {
        return Ok(Action::await_change());
    }
    let want: Vec<Value> = addresses(&ctx.nodes.state())
        .into_iter()
        .map(|ip| json!({"ip": ip}))
        .collect();
    let have = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| serde_json::to_value(i).unwrap_or_default())
        .unwrap_or_else(|| json!([]));
    if have == json!(want) {
        return Ok(Action::await_change());
    }
    let api: Api<Ingress> =
        Api::namespaced(ctx.client.clone(), &ingress.namespace().unwrap_or_default());
    let patch = json!({"status": {"loadBalancer": {"ingress": want}}});
    match api
        .patch_status(
            &ingress.name_any(),
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

    #[test]
    fn ready_nodes_internal_ips_in_order() {
        let node = |name: &str, ip: &str, ready: &str| -> Arc<Node> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "status": {
                        "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}],
                        "conditions": [{"type": "Ready", "status": ready}],
                    },
                }))
                .unwrap(),
            )
        };
        let nodes = [
            node("b", "172.29.0.12", "True"),
            node("a", "172.29.0.11", "True"),
            node("c", "172.29.0.13", "Unknown"),
        ];
        assert_eq!(addresses(&nodes), ["172.29.0.11", "172.29.0.12"]);
    }

    #[test]
    fn the_class_is_shoals_and_the_default() {
        let class: IngressClass = serde_json::from_value(class()).unwrap();
        let classes = [Arc::new(class)];
        let ingress: Ingress =
            serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {}})).unwrap();
        assert!(shoal_ingress::routes::ours(&ingress, &classes));
    }
}
