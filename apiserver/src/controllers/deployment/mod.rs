//! The Deployment controller: one ReplicaSet per pod template
//! (`<name>-<pod-template-hash>`), rolled per the strategy (RollingUpdate
//! with maxSurge/maxUnavailable, or Recreate), with revisions, change
//! causes, history cleanup and status conditions. Decisions in `sync.rs`
//! and `rolling.rs`; this module reads and writes.

pub mod rolling;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::json;

use crate::events;

const COMPONENT: &str = "deployment-controller";

pub async fn run(client: kube::Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    Controller::new(deployments, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .run(reconcile, retry, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "deployment reconcile failed");
            }
            futures::future::ready(())
        })
        .await;
}

fn retry(_: Arc<Deployment>, _: &kube::Error, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(d: Arc<Deployment>, client: Arc<kube::Client>) -> Result<Action, kube::Error> {
    let client = (*client).clone();
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_else(|| "default".into());
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let uid = d.uid().unwrap_or_default();
    let owned: Vec<ReplicaSet> = sets
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let plan = sync::plan(&d, &owned);

    if let Some(created) = &plan.create {
        let rs: ReplicaSet =
            serde_json::from_value(created.clone()).map_err(kube::Error::SerdeError)?;
        match sets.create(&PostParams::default(), &rs).await {
            Ok(rs) => {
                let count = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                events::record(
                    &client,
                    d.as_ref(),
                    "Normal",
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {} from 0 to {count}", rs.name_any()),
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    for (name, revision) in &plan.revisions {
        let patch = json!({"metadata": {"annotations": {sync::REVISION: revision}}});
        sets.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    for (name, count) in &plan.scale {
        let before = owned
            .iter()
            .find(|rs| rs.name_any() == *name)
            .and_then(|rs| rs.spec.as_ref().and_then(|s| s.replicas))
            .unwrap_or(0);
        let mut patch = json!({"spec": {"replicas": count}});
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(sync::CHANGE_CAUSE))
            .is_some()
            && *count > before
        {
            patch["metadata"] = json!({"annotations": {"deployment.kubernetes.io/desired-replicas": d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).to_string()}});
        }
        sets.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        let verb = if *count > before { "up" } else { "down" };
        events::record(
            &client,
            d.as_ref(),
            "Normal",
            "ScalingReplicaSet",
            &format!("Scaled {verb} replica set {name} from {before} to {count}"),
            COMPONENT,
        )
        .await;
    }
    for name in &plan.delete {
        match sets.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let current_revision = d
        .annotations()
        .get(sync::REVISION)
        .cloned()
        .unwrap_or_default();
    if !plan.revision.is_empty() && plan.revision != current_revision {
        let patch = json!({"metadata": {"annotations": {sync::REVISION: plan.revision}}});
        deployments
            .patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    let current = serde_json::to_value(&d.status).unwrap_or_default();
    let changed = [
        "observedGeneration",
        "replicas",
        "updatedReplicas",
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
    ]
    .iter()
    .any(|k| current.get(*k).unwrap_or(&json!(0)) != plan.status.get(*k).unwrap_or(&json!(0)))
        || conditions_differ(&current, &plan.status);
    if changed {
        deployments
            .patch_status(
                &d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await?;
    }
    // While a rollout moves, look again soon even if no event comes.
    let done = plan.scale.is_empty() && plan.create.is_none();
    Ok(Action::requeue(Duration::from_secs(if done {
        300
    } else {
        1
    })))
}

fn conditions_differ(current: &serde_json::Value, wanted: &serde_json::Value) -> bool {
    let key = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v.get("conditions")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["type"].as_str().unwrap_or_default().to_string(),
                    c["status"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    key(current) != key(wanted)
}
