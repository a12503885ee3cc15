//! Ingresses: the `shoal` IngressClass (controller `shoal.dev/ingress`,
//! the default class) and the LoadBalancer Service
//! `kube-system/shoal-ingress` (no selector: every agent publishes its own
//! endpoint, as k3s's ServiceLB fronts Traefik), made at start and again
//! if deleted; and for every Ingress of shoal's class its status,
//! `status.loadBalancer.ingress`: the Service's load-balancer address
//! once it has one (ingress-nginx's `--publish-service`), else the
//! InternalIPs of the Ready nodes (every agent serves every Ingress), so
//! that `kubectl get ingress` shows ADDRESS; and Warning events for what
//! cannot be served as asked (a missing or broken TLS Secret, an
//! annotation that does not parse), once each.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::{json, Value};
use shoal_ingress::routes::{CLASS, CONTROLLER, DEFAULT_CLASS_ANNOTATION};

use crate::informers::Informer;

/// How often the class's and the Service's presence is checked (in the
/// informers' caches).
const CHECK: Duration = Duration::from_secs(5);
/// Where the Service lives.
const NAMESPACE: &str = "kube-system";
/// Who tells the events.
const COMPONENT: &str = "shoal-ingress-controller";

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

/// The LoadBalancer Service in front of every node's Ingress controller,
/// as `kubectl get svc -n kube-system shoal-ingress -o yaml` shows it: the
/// target ports are named, each node's endpoint says which ports it
/// serves on; `externalTrafficPolicy: Local` keeps the client's address
/// (`X-Forwarded-For`) and lets the node holding the address answer; no
/// node ports (the nodes serve ports 80 and 443 themselves).
pub fn service() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": shoal_ingress::SERVICE,
            "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/name": shoal_ingress::SERVICE},
        },
        "spec": {
            "type": "LoadBalancer",
            "externalTrafficPolicy": "Local",
            "allocateLoadBalancerNodePorts": false,
            "ports": [
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "https", "port": 443, "protocol": "TCP", "targetPort": "https"},
            ],
        },
    })
}

fn is_ingress_service(service: &Service) -> bool {
    service.metadata.namespace.as_deref() == Some(NAMESPACE)
        && service.metadata.name.as_deref() == Some(shoal_ingress::SERVICE)
}

struct Ctx {
    client: kube::Client,
    classes: Store<IngressClass>,
    nodes: Store<Node>,
    services: Informer<Service>,
    secrets: Informer<Secret>,
    /// (Ingress uid, reason, message) already told.
    told: Mutex<HashSet<(String, &'static str, String)>>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let ingresses = settings.informers.get::<Ingress>(&client);
    let classes = settings.informers.get::<IngressClass>(&client);
    let nodes = settings.informers.get::<Node>(&client);
    let services = settings.informers.get::<Service>(&client);
    let secrets = settings.informers.get::<Secret>(&client);
    tokio::spawn(keep(client.clone(), classes.clone(), services.clone()));
    // Nodes coming and going, classes and the Service changing touch every
    // Ingress; a Secret the Ingresses that name it.
    let named_by = ingresses.store();
    let controller = crate::run::over("ingress", &ingresses)
        .reconcile_all_on(nodes.touched().map(|_| ()))
        .reconcile_all_on(classes.touched().map(|_| ()))
        .reconcile_all_on(services.touched_if(is_ingress_service).map(|_| ()))
        .watches_stream(secrets.touched(), move |secret: Secret| {
            let namespace = secret.metadata.namespace.clone();
            let name = secret.metadata.name.clone().unwrap_or_default();
            named_by
                .state()
                .into_iter()
                .filter(|i| i.metadata.namespace == namespace && names_secret(i, &name))
                .map(|i| ObjectRef::from_obj(&*i))
                .collect::<Vec<_>>()
        });
    // Nothing is judged on caches still filling (a Secret not listed yet
    // is no missing Secret).
    secrets.ready().await;
    services.ready().await;
    nodes.ready().await;
    classes.ready().await;
    let ctx = Arc::new(Ctx {
        client,
        classes: classes.store(),
        nodes: nodes.store(),
        services,
        secrets,
        told: Mutex::default(),
    });
    crate::run::run_controller("ingress", controller, reconcile, ctx).await;
}

fn names_secret(ingress: &Ingress, secret: &str) -> bool {
    ingress
        .spec
        .iter()
        .flat_map(|s| s.tls.iter().flatten())
        .any(|t| t.secret_name.as_deref() == Some(secret))
}

/// Makes the class and the Service when they are missing (a changed one
/// is left as the user changed it).
async fn keep(client: kube::Client, classes: Informer<IngressClass>, services: Informer<Service>) {
    classes.ready().await;
    services.ready().await;
    let classes_api: Api<IngressClass> = Api::all(client.clone());
    let services_api: Api<Service> = Api::namespaced(client, NAMESPACE);
    loop {
        if classes.get(None, CLASS).is_none() {
            create(&classes_api, class(), "IngressClass shoal").await;
        }
        if services
            .get(Some(NAMESPACE), shoal_ingress::SERVICE)
            .is_none()
        {
            create(
                &services_api,
                service(),
                "Service kube-system/shoal-ingress",
            )
            .await;
        }
        tokio::time::sleep(CHECK).await;
    }
}

async fn create<K>(api: &Api<K>, object: Value, what: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match serde_json::from_value::<K>(object) {
        Ok(object) => match api.create(&PostParams::default(), &object).await {
            Ok(_) => tracing::info!("{what} created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => tracing::warn!(error = %e, "cannot create the {what}"),
        },
        Err(e) => tracing::error!(error = %e, "the {what} does not parse"),
    }
}

/// The Service's load-balancer addresses (IPs or host names).
fn published(service: Option<&Service>) -> Vec<Value> {
    service
        .and_then(|s| s.status.as_ref()?.load_balancer.as_ref()?.ingress.clone())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| match (i.ip, i.hostname) {
            (Some(ip), _) => Some(json!({"ip": ip})),
            (None, Some(hostname)) => Some(json!({"hostname": hostname})),
            (None, None) => None,
        })
        .collect()
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
    warn(&ingress, &ctx).await;
    let service = ctx.services.get(Some(NAMESPACE), shoal_ingress::SERVICE);
    let mut want = published(service.as_deref());
    if want.is_empty() {
        want = addresses(&ctx.nodes.state())
            .into_iter()
            .map(|ip| json!({"ip": ip}))
            .collect();
    }
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

/// Tells each warning about `ingress` once (as long as it lasts: one
/// that went away and came back is told again).
async fn warn(ingress: &Ingress, ctx: &Ctx) {
    let namespace = ingress.namespace().unwrap_or_default();
    let uid = ingress.uid().unwrap_or_default();
    let warnings =
        shoal_ingress::check::warnings(ingress, |name| ctx.secrets.get(Some(&namespace), name));
    let new: Vec<_> = {
        let mut told = ctx.told.lock().unwrap_or_else(|e| e.into_inner());
        told.retain(|(u, reason, message)| {
            *u != uid
                || warnings
                    .iter()
                    .any(|w| w.reason == *reason && w.message == *message)
        });
        warnings
            .into_iter()
            .filter(|w| told.insert((uid.clone(), w.reason, w.message.clone())))
            .collect()
    };
    for warning in new {
        crate::events::record(
            &ctx.client,
            ingress,
            "Warning",
            warning.reason,
            &warning.message,
            COMPONENT,
        )
        .await;
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
    fn the_service_is_a_load_balancer_to_the_nodes_named_ports() {
        let service: Service = serde_json::from_value(service()).unwrap();
        assert!(is_ingress_service(&service));
        let spec = service.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.selector, None);
        let ports: Vec<_> = spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.port, serde_json::to_value(&p.target_port).unwrap()))
            .collect();
        assert_eq!(ports, [(80, json!("http")), (443, json!("https"))]);
        assert!(published(Some(&service)).is_empty());
        let with_address: Service = serde_json::from_value(json!({
            "metadata": {"name": "shoal-ingress", "namespace": "kube-system"},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.29.0.241"}]}},
        }))
        .unwrap();
        assert_eq!(
            published(Some(&with_address)),
            [json!({"ip": "172.29.0.241"})]
        );
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
