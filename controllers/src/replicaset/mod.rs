//! The ReplicaSet controller: keeps `spec.replicas` pods matching the
//! selector, adopting orphans, replacing pods that go away and removing
//! extras; reports replicas, ready and available counts in the status.
//! The decisions are in `sync.rs`; this module reads and writes.
//!
//! Pods are read from the shared pod cache, not listed per sync. As
//! Kubernetes' expectations do, a ReplicaSet that just created or deleted
//! pods does not decide again until the cache has caught up with those
//! writes (it has seen their resourceVersion), so a stale cache never makes
//! it create twice.

pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::informers::{Informer, Seen};
use super::Settings;
use crate::events;

const COMPONENT: &str = "replicaset-controller";

/// How long a ReplicaSet waits for the cache to show its own writes
/// before it decides anyway.
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(30);

struct Context {
    client: kube::Client,
    pods: Informer<Pod>,
    /// ReplicaSet (namespace/name) → the resourceVersion its last writes
    /// reached, and when.
    expectations: Mutex<HashMap<String, (i64, Instant)>>,
}

impl Context {
    /// Whether the cache shows everything `key` wrote (or waited long
    /// enough).
    fn caught_up(&self, key: &str) -> bool {
        let mut expectations = match self.expectations.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        match expectations.get(key) {
            Some(&(rv, since)) if !self.pods.has_seen(rv) => {
                if since.elapsed() < EXPECTATIONS_TIMEOUT {
                    return false;
                }
                tracing::warn!(replicaset = %key, rv, "pod cache did not catch up; deciding anyway");
                expectations.remove(key);
                true
            }
            Some(_) => {
                expectations.remove(key);
                true
            }
            None => true,
        }
    }

    /// Remembers that `key` wrote up to `rv`: it decides again once the
    /// cache has seen that.
    fn await_cache(&self, key: &str, rv: i64) {
        if rv <= 0 {
            return;
        }
        let mut expectations = match self.expectations.lock() {
            Ok(e) => e,
            Err(poisoned) => poisoned.into_inner(),
        };
        let entry = expectations
            .entry(key.to_string())
            .or_insert((rv, Instant::now()));
        *entry = (entry.0.max(rv), Instant::now());
    }
}

fn resource_version(pod: &Pod) -> i64 {
    pod.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

pub async fn run(client: kube::Client, settings: Settings) {
    let pods = settings.informers.get::<Pod>(&client);
    let sets = settings.informers.get::<ReplicaSet>(&client);
    let store = sets.store();
    pods.ready().await;
    let context = Arc::new(Context {
        client,
        pods: pods.clone(),
        expectations: Mutex::new(HashMap::new()),
    });
    // A pod change wakes its controlling ReplicaSet; an orphan wakes the
    // ReplicaSets whose selector matches it (they may adopt it).
    let triggers = pods.subscribe().flat_map(move |seen| {
        let refs = match seen {
            Seen::Applied(pod) | Seen::Deleted(pod) => woken_by(&pod, &store),
            Seen::Relisted => store
                .state()
                .iter()
                .map(|rs| ObjectRef::from_obj(rs.as_ref()))
                .collect(),
        };
        futures::stream::iter(refs)
    });
    let controller = crate::run::over("replicaset", &sets).reconcile_on(triggers);
    crate::run::run_controller("replicaset", controller, reconcile, context).await;
}

/// The ReplicaSets a pod change concerns: its controller, or for an
/// orphan those whose selector matches it.
fn woken_by(pod: &Pod, sets: &Store<ReplicaSet>) -> Vec<ObjectRef<ReplicaSet>> {
    if let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if owner.kind != "ReplicaSet" {
            return Vec::new();
        }
        let mut key = ObjectRef::new(&owner.name);
        if let Some(ns) = pod.metadata.namespace.as_deref() {
            key = key.within(ns);
        }
        return vec![key];
    }
    sets.state()
        .into_iter()
        .filter(|rs| rs.metadata.namespace == pod.metadata.namespace)
        .filter(|rs| sync::selector(rs).is_some_and(|s| sync::selects(s, pod)))
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
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

/// Creates `count` pods as Kubernetes' slow start does: batches of 1, 2,
/// 4, ... pods created concurrently, stopping at the first batch with a
/// failure, so that a quota or a broken template costs one error, not
/// hundreds, while a healthy ReplicaSet of thousands needs a dozen round
/// trips instead of thousands. The events are recorded beside the next
/// batch rather than before it.
async fn create_pods(
    client: &kube::Client,
    pods: &Api<Pod>,
    rs: &ReplicaSet,
    template: &Pod,
    count: usize,
) -> Written {
    let record = |names: Vec<String>| {
        futures::future::join_all(names.into_iter().map(|name| async move {
            events::record(
                client,
                rs,
                "Normal",
                "SuccessfulCreate",
                &format!("Created pod: {name}"),
                COMPONENT,
            )
            .await
        }))
    };
    let params = PostParams::default();
    let mut remaining = count;
    let mut batch = 1;
    let mut rv = 0;
    let mut created = Vec::new();
    while remaining > 0 {
        let size = batch.min(remaining);
        let creates = futures::future::join_all((0..size).map(|_| pods.create(&params, template)));
        let (results, _) = futures::join!(creates, record(std::mem::take(&mut created)));
        let mut failure = None;
        for result in results {
            match result {
                Ok(pod) => {
                    rv = rv.max(resource_version(&pod));
                    created.push(pod.name_any());
                }
                Err(e) => failure = Some(e),
            }
        }
        if let Some(e) = failure {
            record(created).await;
            return Written { rv, error: Some(e) };
        }
        remaining -= size;
        batch *= 2;
    }
    record(created).await;
    Written { rv, error: None }
}

/// What a run of creations wrote: the newest resourceVersion, and the
/// failure that stopped it.
struct Written {
    rv: i64,
    error: Option<kube::Error>,
}

async fn reconcile(rs: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, kube::Error> {
    let client = context.client.clone();
    let namespace = rs.namespace().unwrap_or_else(|| "default".into());
    let key = format!("{namespace}/{}", rs.name_any());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let Some(selector) = sync::selector(&rs) else {
        return Ok(Action::await_change());
    };
    if !context.caught_up(&key) {
        // The pod events still to come wake it again; this is a backstop.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    // Its own pods and the orphans it may adopt; pods of other
    // controllers are not its business.
    let owned = context
        .pods
        .controlled_by(rs.uid().as_deref().unwrap_or_default());
    let orphans = context.pods.controlled_by("");
    let matching: Vec<&Pod> = owned
        .iter()
        .chain(orphans.iter())
        .map(|p| p.as_ref())
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
        .filter(|p| sync::selects(selector, p))
        .collect();
    let decision = sync::decide(&rs, matching);

    for name in &decision.adopt {
        let patch = json!({"metadata": {"ownerReferences": [owner_reference(&rs)]}});
        let pod = pods
            .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await?;
        context.await_cache(&key, resource_version(&pod));
    }
    if rs.metadata.deletion_timestamp.is_none() {
        if let Some(template) = new_pod(&rs) {
            let written = create_pods(&client, &pods, &rs, &template, decision.create).await;
            context.await_cache(&key, written.rv);
            if let Some(e) = written.error {
                return Err(e);
            }
        }
    }
    let (api, client, owner) = (&pods, &client, rs.as_ref());
    let deletions = futures::future::join_all(decision.delete.iter().map(|name| async move {
        let deleted = api.delete(name, &DeleteParams::default()).await;
        if deleted.is_ok() {
            events::record(
                client,
                owner,
                "Normal",
                "SuccessfulDelete",
                &format!("Deleted pod: {name}"),
                COMPONENT,
            )
            .await;
        }
        deleted
    }))
    .await;
    for deleted in deletions {
        match deleted {
            Ok(either) => {
                let rv = either.left().map(|pod| resource_version(&pod)).unwrap_or(0);
                context.await_cache(&key, rv);
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
