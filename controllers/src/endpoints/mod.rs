//! The Endpoints and EndpointSlice controllers, and LoadBalancer addresses.
//!
//! ```text
//!   watch services ─┐
//!   watch pods ─────┼─▶ reconcile(service) ─▶ sync::{endpoints, slices} ─▶ write what changed
//!   watch owned ep/slices ┘
//!   watch services ─▶ pass over all Services ─┬▶ loadbalancer::plan ─▶ status.loadBalancer.ingress
//!                                             └▶ delete Endpoints/slices of Services gone
//! ```
//!
//! A Service with a selector gets an Endpoints `<svc>` and EndpointSlices
//! `<svc>-<random>`, both with an owner reference to it; they are deleted
//! when it goes (by the pass over all Services: the garbage collector does
//! not look at Services). A Service without a selector is left to its user. The decisions are
//! in `sync.rs` and `loadbalancer.rs`; this module reads and writes.

pub mod loadbalancer;
pub mod sync;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::json;

use crate::events;

const LB_COMPONENT: &str = "loadbalancer-controller";

pub async fn run(client: kube::Client, settings: super::Settings) {
    futures::future::join(
        endpoints(client.clone(), settings.informers.clone()),
        services(
            client.clone(),
            settings.informers.get::<Service>(&client),
            settings.loadbalancer_ip_pool,
        ),
    )
    .await;
}

async fn endpoints(client: kube::Client, informers: super::informers::Informers) {
    let pods = informers.get::<Pod>(&client);
    let services = informers.get::<Service>(&client);
    let endpoints = informers.get::<Endpoints>(&client);
    let slices = informers.get::<EndpointSlice>(&client);
    let store = services.store();
    let with_selector = store.clone();
    // A pod change may matter to any Service of its namespace: one whose
    // selector matches it now, or matched it before a label change.
    let controller = crate::run::over("endpoints", &services)
        .owns_stream(endpoints.touched_if(super::informers::controlled_by("Service")))
        .owns_stream(slices.touched_if(super::informers::controlled_by("Service")))
        .watches_stream(
            // Copied only for namespaces with a Service to update.
            pods.touched_if(move |pod: &Pod| {
                with_selector.state().iter().any(|svc| {
                    svc.metadata.namespace == pod.metadata.namespace
                        && sync::selector(svc).is_some()
                })
            }),
            move |pod: Pod| {
                let namespace = pod.metadata.namespace.clone();
                store
                    .state()
                    .into_iter()
                    .filter(|svc| svc.metadata.namespace == namespace)
                    .filter(|svc| sync::selector(svc).is_some())
                    .map(|svc| ObjectRef::from_obj(svc.as_ref()))
                    .collect::<Vec<_>>()
            },
        );
    // The pods come from the shared cache, as the kubelet-era endpoints
    // controller reads its lister: a list per Service sync would cost the
    // apiserver O(pods) per Service. A cache not filled yet would make
    // every Service look empty, so wait for its first list.
    pods.ready().await;
    let ctx = Arc::new(Context { client, pods });
    crate::run::run_controller("endpoints", controller, reconcile, ctx).await;
}

struct Context {
    client: kube::Client,
    pods: super::informers::Informer<Pod>,
}

/// The cached pods of `namespace` whose labels hold every pair of
/// `selector` (a Service's selector is a plain map).
fn selected_pods(
    pods: &super::informers::Informer<Pod>,
    namespace: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> Vec<Pod> {
    pods.store()
        .state()
        .into_iter()
        .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace))
        .filter(|pod| {
            let labels = pod.metadata.labels.as_ref();
            selector
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .map(|pod| (*pod).clone())
        .collect()
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let client = ctx.client.clone();
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if sync::selector(&svc).is_none() {
        // The user's Endpoints, or an ExternalName: nothing of ours.
        return Ok(Action::await_change());
    }
    let namespace = svc.namespace().unwrap_or_else(|| "default".into());
    let name = svc.name_any();
    let selector = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default();
    let pods = selected_pods(&ctx.pods, &namespace, &selector);

    let endpoints_api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    if let Some(wanted) = sync::endpoints(&svc, &pods) {
        match endpoints_api.get_opt(&name).await? {
            None => match endpoints_api.create(&PostParams::default(), &wanted).await {
                Ok(_) => {}
                // Written meanwhile: the watch brings us back.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e),
            },
            Some(current) if !sync::endpoints_equal(&current, &wanted) => {
                let mut updated = wanted;
                updated.metadata.resource_version = current.metadata.resource_version.clone();
                updated.metadata.annotations = current.metadata.annotations.clone();
                endpoints_api
                    .replace(&name, &PostParams::default(), &updated)
                    .await?;
            }
            Some(_) => {}
        }
    }

    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let uid = svc.uid().unwrap_or_default();
    let existing: Vec<EndpointSlice> = slices_api
        .list(&ListParams::default().labels(&format!(
            "{}={name},{}={}",
            sync::SERVICE_NAME_LABEL,
            sync::MANAGED_BY_LABEL,
            sync::MANAGED_BY
        )))
        .await?
        .items
        .into_iter()
        // Slices of an earlier Service of the same name go with it.
        .filter(|s| s.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let plan = sync::plan_slices(&existing, sync::slices(&svc, &pods));
    for slice in &plan.update {
        slices_api
            .replace(&slice.name_any(), &PostParams::default(), slice)
            .await?;
    }
    for slice in &plan.create {
        slices_api.create(&PostParams::default(), slice).await?;
    }
    for slice in &plan.delete {
        match slices_api.delete(slice, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Passes over all Services whenever one changes (and every few seconds
/// regardless): LoadBalancer addresses, and the Endpoints and slices of
/// Services that are gone (the garbage collector does not follow owner
/// references to Services).
async fn services(
    client: kube::Client,
    changes: super::informers::Informer<Service>,
    pool: Option<String>,
) {
    let pool = match pool.as_deref().map(loadbalancer::Pool::parse) {
        None => None,
        Some(Ok(pool)) => Some(pool),
        Some(Err(e)) => {
            tracing::error!(error = %e, "LoadBalancer Services will stay pending");
            None
        }
    };
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = wake.clone();
    let watch = changes.subscribe().for_each(move |_| {
        notify.notify_one();
        futures::future::ready(())
    });
    let passes = async {
        // Warned once per Service (uid) until it gets an address.
        let mut warned: HashSet<String> = HashSet::new();
        loop {
            if let Err(e) = pass(&client, pool.as_ref(), &mut warned).await {
                tracing::debug!(error = %e, "services pass failed");
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        }
    };
    futures::future::join(watch, passes).await;
}

async fn pass(
    client: &kube::Client,
    pool: Option<&loadbalancer::Pool>,
    warned: &mut HashSet<String>,
) -> Result<(), kube::Error> {
    // Dependents first: one made after this listing belongs to a Service
    // the listing below sees.
    let endpoints = Api::<Endpoints>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let services = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let live: HashSet<String> = services.iter().filter_map(|s| s.uid()).collect();
    for ep in endpoints
        .iter()
        .filter(|e| sync::orphaned(&live, &e.metadata))
    {
        let api: Api<Endpoints> =
            Api::namespaced(client.clone(), &ep.namespace().unwrap_or_default());
        match api.delete(&ep.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    for slice in slices.iter().filter(|e| sync::orphaned(&live, &e.metadata)) {
        let api: Api<EndpointSlice> =
            Api::namespaced(client.clone(), &slice.namespace().unwrap_or_default());
        match api
            .delete(&slice.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    allocate(client, &services, pool, warned).await
}

async fn allocate(
    client: &kube::Client,
    services: &[Service],
    pool: Option<&loadbalancer::Pool>,
    warned: &mut HashSet<String>,
) -> Result<(), kube::Error> {
    let claims: Vec<loadbalancer::Claim> = services
        .iter()
        .map(loadbalancer::Claim::from_service)
        .collect();
    let find = |namespace: &str, name: &str| {
        services
            .iter()
            .find(|s| s.metadata.namespace.as_deref() == Some(namespace) && s.name_any() == name)
    };
    for change in loadbalancer::plan(pool, &claims) {
        match change {
            loadbalancer::Change::Assign {
                namespace,
                name,
                ip,
            } => {
                let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
                let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
                if let Some(svc) = find(&namespace, &name) {
                    warned.remove(&svc.uid().unwrap_or_default());
                    events::record(
                        client,
                        svc,
                        "Normal",
                        "IPAllocated",
                        &format!("Assigned IP [\"{ip}\"]"),
                        LB_COMPONENT,
                    )
                    .await;
                }
            }
            loadbalancer::Change::Release { namespace, name } => {
                let api: Api<Service> = Api::namespaced(client.clone(), &namespace);
                let patch = json!({"status": {"loadBalancer": {"ingress": null}}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                    .await?;
            }
            loadbalancer::Change::Pending {
                namespace,
                name,
                reason,
            } => {
                let Some(svc) = find(&namespace, &name) else {
                    continue;
                };
                if warned.insert(svc.uid().unwrap_or_default()) {
                    events::record(
                        client,
                        svc,
                        "Warning",
                        "AllocationFailed",
                        &format!("Failed to allocate IP for \"{namespace}/{name}\": {reason}"),
                        LB_COMPONENT,
                    )
                    .await;
                }
            }
        }
    }
    Ok(())
}
