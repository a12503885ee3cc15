//! The scheduler: assigns each pending pod to a node through
//! `pods/binding`, as kube-scheduler does, and tells the pod (condition
//! PodScheduled=False, reason Unschedulable) and its events why when no node
//! fits, retrying as nodes and pods change.
//!
//! ```text
//!   watch nodes ─┐                 ┌─ POST pods/{name}/binding + event Scheduled
//!   watch pods ──┴─▶ caches ─▶ fit::choose ─┤
//!                                   └─ PodScheduled=False + event FailedScheduling
//! ```
//!
//! Claims and volumes are watched too: a pod whose claim does not exist
//! waits, and one whose claim is bound to a local volume goes to that
//! volume's node.
//!
//! It is an API client (kube-rs) like any other; the decisions are the pure
//! functions in `fit.rs`.

pub mod fit;
pub mod quantity;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::json;

use crate::events;

pub const NAME: &str = "default-scheduler";

fn pending(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.is_some_and(|s| s.node_name.as_deref().unwrap_or_default().is_empty())
        && spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(NAME)
            == NAME
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Runs until the task is dropped.
pub async fn run(client: kube::Client) {
    let (nodes, node_writer) = reflector::store::<Node>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let wake = Arc::new(tokio::sync::Notify::new());
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let nodes_api: Api<Node> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::all(client.clone());
    let claims_api: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes_api: Api<PersistentVolume> = Api::all(client.clone());
    for stream in [
        reflector(node_writer, watcher(nodes_api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed(),
        reflector(pod_writer, watcher(pods_api, watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .map(|_| ())
            .boxed(),
        // Claims and volumes: a pod waiting for its claim, or bound to
        // where its volume lives.
        reflector(
            claim_writer,
            watcher(claims_api, watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects()
        .map(|_| ())
        .boxed(),
        reflector(
            volume_writer,
            watcher(volumes_api, watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects()
        .map(|_| ())
        .boxed(),
    ] {
        let wake = wake.clone();
        tokio::spawn(stream.for_each(move |()| {
            wake.notify_one();
            futures::future::ready(())
        }));
    }
    let _ = nodes.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    let _ = claims.wait_until_ready().await;
    let _ = volumes.wait_until_ready().await;
    // Bindings made but not yet seen in the cache, and the last reason told
    // to each unschedulable pod (so it is not written again and again).
    let mut assumed: HashMap<String, String> = HashMap::new();
    let mut told: HashMap<String, String> = HashMap::new();
    loop {
        let node_list: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
        let all: Vec<Arc<Pod>> = pods.state();
        let claim_list: Vec<PersistentVolumeClaim> =
            claims.state().iter().map(|c| (**c).clone()).collect();
        let volume_list: Vec<PersistentVolume> =
            volumes.state().iter().map(|v| (**v).clone()).collect();
        assumed.retain(|k, _| all.iter().any(|p| key(p) == *k && pending(p)));
        let mut bound: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for pod in &all {
            if let Some(node) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
            {
                if !matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ) {
                    bound.entry(node.to_string()).or_default().push(pod);
                }
            }
        }
        for (pod_key, node) in &assumed {
            if let Some(pod) = all.iter().find(|p| key(p) == *pod_key) {
                bound.entry(node.clone()).or_default().push(pod);
            }
        }
        let mut waiting: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|p| pending(p) && !assumed.contains_key(&key(p)))
            .collect();
        waiting.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let mut newly: Vec<(String, String)> = Vec::new();
        for pod in waiting {
            let pod_key = key(pod);
            let chosen = fit::claimed_volumes(pod, &claim_list, &volume_list)
                .map_err(|why| format!("0/{} nodes are available: {why}.", node_list.len()))
                .and_then(|volumes| fit::choose_with_volumes(pod, &node_list, &bound, &volumes));
            match chosen {
                Ok(node) => {
                    let node_name = node.metadata.name.clone().unwrap_or_default();
                    match bind(&client, pod, &node_name).await {
                        Ok(()) => {
                            told.remove(&pod_key);
                            bound.entry(node_name.clone()).or_default().push(pod);
                            newly.push((pod_key, node_name));
                        }
                        Err(e) => {
                            tracing::debug!(pod = %pod_key, error = %e, "binding failed; will retry")
                        }
                    }
                }
                Err(message) => {
                    if told.get(&pod_key) != Some(&message) {
                        if let Err(e) = unschedulable(&client, pod, &message).await {
                            tracing::debug!(pod = %pod_key, error = %e, "cannot record why the pod waits");
                        }
                        told.insert(pod_key, message);
                    }
                }
            }
        }
        assumed.extend(newly);
        told.retain(|k, _| all.iter().any(|p| key(p) == *k));
        // Sleep until something changes (or a second passes, for pods whose
        // change was missed by a reconnecting watch).
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
    }
}

async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    api.create_subresource::<serde_json::Value, serde_json::Value>(
        "binding",
        name,
        &PostParams::default(),
        &binding,
    )
    .await?;
    events::record(
        client,
        pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {namespace}/{name} to {node}"),
        NAME,
    )
    .await;
    Ok(())
}

async fn unschedulable(client: &kube::Client, pod: &Pod, message: &str) -> Result<(), kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastProbeTime": null,
        "lastTransitionTime": crate::object::now(),
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    events::record(client, pod, "Warning", "FailedScheduling", message, NAME).await;
    Ok(())
}
