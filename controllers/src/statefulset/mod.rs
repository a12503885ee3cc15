//! The StatefulSet controller: pods `<set>-0..N-1` with stable names,
//! hostnames and claims (`<template>-<set>-<ordinal>`, kept when pods
//! go), made and removed in order (OrderedReady) or all at once
//! (Parallel), rolled from the highest ordinal down to the partition, and
//! revisions kept as ControllerRevisions for `kubectl rollout`.
//!
//! ```text
//!   watch sets, pods, revisions ─▶ reconcile(set)
//!       list pods, revisions, claims ─▶ revision::resolve ─▶ sync::decide
//!       ─▶ create claims + pods / delete pods / relabel ─▶ status
//! ```
//!
//! The decisions are in `sync.rs` (what to do), `revision.rs` (which
//! template is current) and `pod.rs` (what a pod and its claims look like);
//! this module reads and writes.

pub mod pod;
pub mod revision;
pub mod sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::controller_uid;
use crate::events;
use crate::informers::controlled_by;

const COMPONENT: &str = "statefulset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("cannot build {what}: {source}")]
    Build {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub async fn run(client: kube::Client, settings: super::Settings) {
    let sets = settings.informers.get::<StatefulSet>(&client);
    let pods = settings.informers.get::<Pod>(&client);
    let revisions = settings.informers.get::<ControllerRevision>(&client);
    let controller = crate::run::over("statefulset", &sets)
        .owns_stream(pods.touched_if(controlled_by("StatefulSet")))
        .owns_stream(revisions.touched_if(controlled_by("StatefulSet")));
    crate::run::run_controller("statefulset", controller, reconcile, Arc::new(client)).await;
}

fn ignore_status(result: Result<(), kube::Error>, code: u16) -> Result<(), kube::Error> {
    match result {
        Err(kube::Error::Api(e)) if e.code == code => Ok(()),
        other => other,
    }
}

async fn reconcile(set: Arc<StatefulSet>, client: Arc<kube::Client>) -> Result<Action> {
    let client = (*client).clone();
    if set.metadata.deletion_timestamp.is_some() {
        // Its pods go through the garbage collector; claims stay.
        return Ok(Action::await_change());
    }
    let namespace = set.namespace().unwrap_or_else(|| "default".into());
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    let selector = set
        .spec
        .as_ref()
        .map(|s| super::label_query(&s.selector))
        .unwrap_or_default();
    if selector.is_empty() {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let claims_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    let sets_api: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let by_labels = ListParams::default().labels(&selector);

    // Pods: ours, and orphans with one of our names (adopted).
    let mut pods = Vec::new();
    for p in pods_api.list(&by_labels).await?.items {
        match controller_uid(&p) {
            Some(owner) if owner == uid => pods.push(p),
            None if pod::ordinal(&set, &p).is_some() && p.metadata.deletion_timestamp.is_none() => {
                let patch = json!({"metadata": {"ownerReferences": [pod::owner_reference(&set)]}});
                pods_api
                    .patch(
                        &p.name_any(),
                        &PatchParams::default(),
                        &Patch::Strategic(patch),
                    )
                    .await?;
                pods.push(p);
            }
            _ => {}
        }
    }
    let revisions: Vec<ControllerRevision> = revisions_api
        .list(&by_labels)
        .await?
        .items
        .into_iter()
        .filter(|r| controller_uid(r) == Some(uid.as_str()))
        .collect();
    let history = revision::resolve(&set, &revisions);
    if let Some(created) = &history.create {
        let object: ControllerRevision =
            serde_json::from_value(created.clone()).map_err(|source| Error::Build {
                what: "a ControllerRevision",
                source,
            })?;
        match revisions_api.create(&PostParams::default(), &object).await {
            Ok(_) => {}
            // Made by an earlier pass not yet listed: look again.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_secs(1)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    if let Some((revision, number)) = &history.renumber {
        revisions_api
            .patch(
                revision,
                &PatchParams::default(),
                &Patch::Merge(json!({"revision": number})),
            )
            .await?;
    }
    let claims: BTreeSet<String> = claims_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|c| c.name_any())
        .collect();
    let now = jiff::Timestamp::now().as_second();
    let plan = sync::decide(&set, &pods, &claims, &history.current, &history.update, now);
    let busy = !plan.create.is_empty() || !plan.delete.is_empty();

    for creation in &plan.create {
        let pod_name = creation.pod["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut claims_ok = true;
        for claim in &creation.claims {
            claims_ok &= create_claim(&client, &set, &claims_api, claim, &pod_name).await?;
        }
        if !claims_ok {
            continue;
        }
        let object: Pod =
            serde_json::from_value(creation.pod.clone()).map_err(|source| Error::Build {
                what: "a pod",
                source,
            })?;
        match pods_api.create(&PostParams::default(), &object).await {
            Ok(_) => {
                let message = format!("create Pod {pod_name} in StatefulSet {name} successful");
                events::record(
                    &client,
                    set.as_ref(),
                    "Normal",
                    "SuccessfulCreate",
                    &message,
                    COMPONENT,
                )
                .await;
            }
            // The pod is there already (one pod per identity).
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                let message =
                    format!("create Pod {pod_name} in StatefulSet {name} failed error: {e}");
                events::record(
                    &client,
                    set.as_ref(),
                    "Warning",
                    "FailedCreate",
                    &message,
                    COMPONENT,
                )
                .await;
                return Err(e.into());
            }
        }
    }
    for (pod_name, claim) in &plan.claims {
        create_claim(&client, &set, &claims_api, claim, pod_name).await?;
    }
    for (pod_name, patch) in &plan.relabel {
        ignore_status(
            pods_api
                .patch(
                    pod_name,
                    &PatchParams::default(),
                    &Patch::Merge(patch.clone()),
                )
                .await
                .map(|_| ()),
            404,
        )?;
    }
    for deletion in &plan.delete {
        // whenScaled: Delete: the pod owns its claims, so they go with it.
        for claim in &deletion.claims {
            let owner = json!({"apiVersion": "v1", "kind": "Pod", "name": deletion.pod, "uid": deletion.uid});
            let patch = json!({"metadata": {"ownerReferences": [owner]}});
            ignore_status(
                claims_api
                    .patch(claim, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                    .map(|_| ()),
                404,
            )?;
        }
        if deletion.why == sync::Why::Failed {
            let message = format!(
                "StatefulSet {namespace}/{name} is recreating failed Pod {}",
                deletion.pod
            );
            events::record(
                &client,
                set.as_ref(),
                "Warning",
                "RecreatingFailedPod",
                &message,
                COMPONENT,
            )
            .await;
        }
        let params = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(deletion.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods_api.delete(&deletion.pod, &params).await {
            Ok(_) => {
                let message = format!(
                    "delete Pod {} in StatefulSet {name} successful",
                    deletion.pod
                );
                events::record(
                    &client,
                    set.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    &message,
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // History beyond revisionHistoryLimit, sparing what pods run.
    let mut live: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.labels().get(sync::REVISION_LABEL).cloned())
        .collect();
    live.insert(history.current.name.clone());
    live.insert(history.update.name.clone());
    for old in revision::to_forget(&set, &revisions, &live) {
        ignore_status(
            revisions_api
                .delete(&old, &DeleteParams::default())
                .await
                .map(|_| ()),
            404,
        )?;
    }

    let mut status = plan.status.clone();
    status["collisionCount"] = json!(history.collision_count);
    let current = serde_json::to_value(&set.status).unwrap_or(Value::Null);
    let changed = status.as_object().is_some_and(|want| {
        want.iter().any(|(k, v)| {
            let zero = if v.is_string() { json!("") } else { json!(0) };
            current.get(k).unwrap_or(&zero) != v
        })
    });
    if changed {
        sets_api
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await?;
    }
    if let Some(after) = plan.requeue {
        return Ok(Action::requeue(after));
    }
    // While pods are being made or removed, look again soon even without
    // an event.
    Ok(Action::requeue(Duration::from_secs(if busy {
        2
    } else {
        300
    })))
}

/// Creates a claim of the pod `pod_name`; false if it cannot be made (the
/// pod waits).
async fn create_claim(
    client: &kube::Client,
    set: &StatefulSet,
    api: &Api<PersistentVolumeClaim>,
    claim: &Value,
    pod_name: &str,
) -> Result<bool> {
    let claim_name = claim["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let set_name = set.name_any();
    let object: PersistentVolumeClaim =
        serde_json::from_value(claim.clone()).map_err(|source| Error::Build {
            what: "a claim",
            source,
        })?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {
            let message = format!(
                "create Claim {claim_name} Pod {pod_name} in StatefulSet {set_name} success"
            );
            events::record(
                client,
                set,
                "Normal",
                "SuccessfulCreate",
                &message,
                COMPONENT,
            )
            .await;
            Ok(true)
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(true),
        Err(e) => {
            let message = format!(
                "create Claim {claim_name} for Pod {pod_name} in StatefulSet {set_name} failed error: {e}"
            );
            events::record(client, set, "Warning", "FailedCreate", &message, COMPONENT).await;
            Ok(false)
        }
    }
}
