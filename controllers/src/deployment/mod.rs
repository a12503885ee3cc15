//! The Deployment controller: one ReplicaSet per pod template
//! (`<name>-<pod-template-hash>`), rolled per the strategy (RollingUpdate
//! with maxSurge/maxUnavailable, or Recreate), with revisions, change
//! causes, history cleanup and status conditions. Decisions in `sync.rs`
//! and `rolling.rs`; this module reads and writes.

pub mod rolling;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;

use crate::events;
use crate::informers::{controlled_by, Informer};

const COMPONENT: &str = "deployment-controller";

struct Ctx {
    client: kube::Client,
    /// The shared ReplicaSet cache, indexed by controller.
    sets: Informer<ReplicaSet>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let deployments = settings.informers.get::<Deployment>(&client);
    let sets = settings.informers.get::<ReplicaSet>(&client);
    sets.ready().await;
    let controller = crate::run::over("deployment", &deployments)
        .owns_stream(sets.touched_if(controlled_by("Deployment")));
    let ctx = Arc::new(Ctx { client, sets });
    crate::run::run_controller("deployment", controller, reconcile, ctx).await;
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action, kube::Error> {
    let client = ctx.client.clone();
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = d.namespace().unwrap_or_else(|| "default".into());
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &namespace);
    let uid = d.uid().unwrap_or_default();
    // From the cache, as Kubernetes' deployment controller reads its
    // lister: a ReplicaSet it has just made and the cache does not show
    // yet is made again and answered 409 (names are per template hash).
    let owned: Vec<ReplicaSet> = ctx
        .sets
        .controlled_by(&uid)
        .into_iter()
        .map(|rs| (*rs).clone())
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
