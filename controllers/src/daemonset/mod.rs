//! The DaemonSet controller: one pod per eligible node, each created with a
//! required node affinity for its node (`matchFields metadata.name`) and
//! bound by the scheduler, as Kubernetes does since 1.12; rolling updates
//! (maxUnavailable, maxSurge 0) or OnDelete; revisions as
//! ControllerRevisions for `kubectl rollout history|undo|status`.
//!
//! ```text
//!   watch daemonsets ─┐
//!   watch pods (owned)┼─▶ reconcile ─▶ history::plan ─▶ sync::decide ─▶ create/delete pods,
//!   watch nodes (all) ┘                                                  revisions, status
//! ```
//!
//! The decisions are in `sync.rs` (pods, status) and `history.rs`
//! (revisions); this module reads and writes.

pub mod history;
pub mod sync;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::controller_uid;
use crate::events;
use crate::informers::{controlled_by, Informer};

const COMPONENT: &str = "daemonset-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    #[error("cannot build a {kind}: {source}")]
    Build {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub async fn run(client: kube::Client, settings: super::Settings) {
    let pods = settings.informers.get::<Pod>(&client);
    let nodes = settings.informers.get::<Node>(&client);
    let sets = settings.informers.get::<DaemonSet>(&client);
    let revisions = settings.informers.get::<ControllerRevision>(&client);
    let store = sets.store();
    nodes.ready().await;
    // A node that comes, goes or changes labels or taints may change where
    // every DaemonSet runs.
    let controller = crate::run::over("daemonset", &sets)
        .owns_stream(pods.touched_if(controlled_by("DaemonSet")))
        .owns_stream(revisions.touched_if(controlled_by("DaemonSet")))
        .watches_stream(nodes.touched(), move |_: Node| {
            store
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        });
    let ctx = Arc::new(Ctx { client, nodes });
    crate::run::run_controller("daemonset", controller, reconcile, ctx).await;
}

struct Ctx {
    client: kube::Client,
    /// The shared Node cache: which nodes a DaemonSet should run on.
    nodes: Informer<Node>,
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let client = ctx.client.clone();
    if ds.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the pods and revisions.
        return Ok(Action::await_change());
    }
    let namespace = ds.namespace().unwrap_or_else(|| "default".into());
    let name = ds.name_any();
    let uid = ds.uid().unwrap_or_default();
    let selector = ds
        .spec
        .as_ref()
        .map(|s| super::label_query(&s.selector))
        .unwrap_or_default();
    if selector.is_empty() {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let revisions_api: Api<ControllerRevision> = Api::namespaced(client.clone(), &namespace);
    let sets: Api<DaemonSet> = Api::namespaced(client.clone(), &namespace);
    let listed = ListParams::default().labels(&selector);
    // Nodes from the cache (this controller never writes them); its own
    // pods and revisions are listed fresh, so that a pod or revision it
    // has just made is never made twice.
    let nodes: Vec<Node> = ctx
        .nodes
        .store()
        .state()
        .iter()
        .map(|n| (**n).clone())
        .collect();
    let pods = pods_api.list(&listed).await?.items;
    let revisions: Vec<ControllerRevision> = revisions_api
        .list(&listed)
        .await?
        .items
        .into_iter()
        .filter(|r| controller_uid(r) == Some(uid.as_str()))
        .collect();

    let live_hashes: BTreeSet<String> = pods
        .iter()
        .filter(|p| sync::target_node(p).is_some())
        .filter_map(|p| p.labels().get(sync::HASH_LABEL).cloned())
        .collect();
    let plan = history::plan(&ds, &revisions, &live_hashes);
    if let Some((revision, number)) = &plan.renumber {
        let mut patch = json!({"revision": number});
        if let Some(annotations) = &ds.metadata.annotations {
            patch["metadata"] = json!({"annotations": annotations});
        }
        revisions_api
            .patch(revision, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    if let Some(created) = &plan.create {
        let revision: ControllerRevision =
            serde_json::from_value(created.clone()).map_err(|source| Error::Build {
                kind: "ControllerRevision",
                source,
            })?;
        match revisions_api
            .create(&PostParams::default(), &revision)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // The name is taken by another template (a hash collision):
                // count it, which changes the hash, and come back.
                let existing = revisions_api.get(&revision.name_any()).await?;
                if !(history::matches(&ds, &existing)
                    && controller_uid(&existing) == Some(uid.as_str()))
                {
                    let collisions = ds
                        .status
                        .as_ref()
                        .and_then(|s| s.collision_count)
                        .unwrap_or(0);
                    sets.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {"collisionCount": collisions + 1}})),
                    )
                    .await?;
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }

    let now = jiff::Timestamp::now().as_second();
    let decision = sync::decide(&ds, &nodes, &pods, &plan.hash, now);
    for (pod, node) in &decision.failed {
        events::record(
            &client,
            ds.as_ref(),
            "Warning",
            "FailedDaemonPod",
            &format!(
                "Found failed daemon pod {namespace}/{pod} on node {node}, will try to kill it"
            ),
            COMPONENT,
        )
        .await;
    }
    for pod in &decision.delete {
        match pods_api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                events::record(
                    &client,
                    ds.as_ref(),
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for node in &decision.create {
        let pod: Pod =
            serde_json::from_value(sync::new_pod(&ds, node, &plan.hash)).map_err(|source| {
                Error::Build {
                    kind: "Pod",
                    source,
                }
            })?;
        let created = pods_api.create(&PostParams::default(), &pod).await?;
        events::record(
            &client,
            ds.as_ref(),
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {}", created.name_any()),
            COMPONENT,
        )
        .await;
    }
    for revision in &plan.delete {
        match revisions_api
            .delete(revision, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    let current = serde_json::to_value(&ds.status).unwrap_or(Value::Null);
    let changed = decision.status.as_object().is_some_and(|want| {
        want.iter()
            .any(|(k, v)| current.get(k).unwrap_or(&json!(0)) != v)
    });
    if changed {
        sets.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": decision.status})),
        )
        .await?;
    }
    // Pod events drive a rollout; while one is under way, look again soon
    // anyway (e.g. for minReadySeconds to pass).
    Ok(Action::requeue(Duration::from_secs(
        if decision.progressing { 5 } else { 300 },
    )))
}
