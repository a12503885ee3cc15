//! The ReplicaSet controller: keeps `spec.replicas` pods matching the
//! selector, adopting orphans, replacing pods that go away and removing
//! extras; reports replicas, ready and available counts in the status.
//! The decisions are in `sync.rs`; this module reads and writes.

pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::events;

const COMPONENT: &str = "replicaset-controller";

pub async fn run(client: kube::Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    // Every pod change wakes the ReplicaSets whose selector matches it:
    // their own pods, and orphans they may adopt.
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let labels =
                json!({"metadata": {"labels": pod.metadata.labels.clone().unwrap_or_default()}});
            let namespace = pod.metadata.namespace.clone();
            store
                .state()
                .into_iter()
                .filter(|rs| rs.metadata.namespace == namespace)
                .filter(|rs| {
                    rs.spec
                        .as_ref()
                        .and_then(|s| serde_json::to_value(&s.selector).ok())
                        .and_then(|s| crate::selectors::from_label_selector(&s))
                        .is_some_and(|s| !s.is_empty() && s.matches_object(&labels))
                })
                .map(|rs| ObjectRef::from_obj(rs.as_ref()))
                .collect::<Vec<_>>()
        })
        .run(reconcile, retry, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "replicaset reconcile failed");
            }
            futures::future::ready(())
        })
        .await;
}

fn retry(_: Arc<ReplicaSet>, _: &kube::Error, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

fn owner_reference(rs: &ReplicaSet) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": rs.name_any(),
        "uid": rs.uid().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn new_pod(rs: &ReplicaSet) -> Option<Pod> {
    let template = rs.spec.as_ref()?.template.clone()?;
    let meta = template.metadata.unwrap_or_default();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{}-", rs.name_any()),
            "labels": meta.labels,
            "annotations": meta.annotations,
            "ownerReferences": [owner_reference(rs)],
        },
        "spec": template.spec,
    }))
    .ok()
}

async fn reconcile(rs: Arc<ReplicaSet>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
    let client = (*client).clone();
    let namespace = rs.namespace().unwrap_or_else(|| "default".into());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = rs
        .spec
        .as_ref()
        .map(|s| super::label_query(&s.selector))
        .unwrap_or_default();
    if selector.is_empty() {
        return Ok(Action::await_change());
    }
    let listed = pods.list(&ListParams::default().labels(&selector)).await?;
    let decision = sync::decide(&rs, &listed.items);

    for name in &decision.adopt {
        let patch = json!({"metadata": {"ownerReferences": [owner_reference(&rs)]}});
        pods.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
    }
    if rs.metadata.deletion_timestamp.is_none() {
        if let Some(template) = new_pod(&rs) {
            for _ in 0..decision.create {
                let created = pods.create(&PostParams::default(), &template).await?;
                events::record(
                    &client,
                    rs.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", created.name_any()),
                    COMPONENT,
                )
                .await;
            }
        }
    }
    for name in &decision.delete {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                events::record(
                    &client,
                    rs.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {name}"),
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let current = serde_json::to_value(&rs.status).unwrap_or(Value::Null);
    let changed = decision.status.as_object().is_some_and(|want| {
        want.iter()
            .any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v)
    });
    if changed {
        let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
        sets.patch_status(
            &rs.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"status": decision.status})),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}
