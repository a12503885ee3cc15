//! Node lifecycle: a node whose Lease in `kube-node-lease` is not renewed
//! for the grace period becomes Ready=Unknown and gets the
//! `node.kubernetes.io/unreachable` taints, and each of its pods phase
//! Unknown with Ready=False (`kubectl get pods` shows STATUS Unknown, the
//! guide's "Node is not reachable"). After the eviction timeout (or the
//! pod's own tolerationSeconds for the unreachable taint) the pods are
//! deleted, so their controllers make replacements on healthy nodes;
//! StatefulSet pods are left alone (one pod per identity). A node whose
//! Lease is renewed again loses the taints.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";

fn last_heartbeat(lease: Option<&Lease>, node: &Node) -> Option<i64> {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0.as_second());
    let from_node = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0.as_second());
    from_lease.max(from_node)
}

fn ready_status(node: &Node) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNREACHABLE))
}

/// How long a pod may stay on an unreachable node.
fn tolerated(pod: &Pod, eviction: Duration) -> Duration {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .and_then(|t| {
            t.iter().find(|t| {
                (t.key.as_deref() == Some(UNREACHABLE)
                    || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                    && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
            })
        })
        .map(|t| match t.toleration_seconds {
            Some(s) => Duration::from_secs(s.max(0) as u64),
            None => Duration::from_secs(u64::MAX / 4),
        })
        .unwrap_or(eviction)
}

fn owned_by_statefulset(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.controller == Some(true))
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let grace = settings.node_monitor_grace_period;
    let eviction = settings.pod_eviction_timeout;
    let (nodes, node_writer) = reflector::store::<Node>();
    let (leases, lease_writer) = reflector::store::<Lease>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let node_api: Api<Node> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pod_api: Api<Pod> = Api::all(client.clone());
    tokio::spawn(
        reflector(
            node_writer,
            watcher(node_api.clone(), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(())),
    );
    tokio::spawn(
        reflector(lease_writer, watcher(lease_api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| futures::future::ready(())),
    );
    tokio::spawn(
        reflector(
            pod_writer,
            watcher(
                pod_api,
                watcher::Config::default().fields("spec.nodeName!="),
            ),
        )
        .default_backoff()
        .for_each(|_| futures::future::ready(())),
    );
    let _ = nodes.wait_until_ready().await;
    let _ = leases.wait_until_ready().await;
    let _ = pods.wait_until_ready().await;
    // When each node was first seen unreachable.
    let mut lost_since: HashMap<String, tokio::time::Instant> = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = jiff::Timestamp::now().as_second();
        let lease_list = leases.state();
        for node in nodes.state() {
            let name = node.name_any();
            let lease = lease_list
                .iter()
                .find(|l| l.name_any() == name)
                .map(|l| l.as_ref());
            let silent =
                last_heartbeat(lease, &node).is_none_or(|t| now - t > grace.as_secs() as i64);
            if !silent {
                lost_since.remove(&name);
                if has_unreachable_taint(&node) && ready_status(&node).as_deref() == Some("True") {
                    let taints: Vec<_> = node
                        .spec
                        .as_ref()
                        .and_then(|s| s.taints.clone())
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|t| t.key != UNREACHABLE)
                        .collect();
                    let _ = node_api
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"spec": {"taints": taints}})),
                        )
                        .await;
                }
                continue;
            }
            let since = *lost_since
                .entry(name.clone())
                .or_insert_with(tokio::time::Instant::now);
            if ready_status(&node).as_deref() != Some("Unknown") {
                tracing::warn!(node = %name, "node stopped renewing its lease: marking it Unknown");
                let t = crate::object::now();
                let condition = json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": t, "lastTransitionTime": t});
                let _ = node_api
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Strategic(json!({"status": {"conditions": [condition]}})),
                    )
                    .await;
            }
            if !has_unreachable_taint(&node) {
                let mut taints: Vec<serde_json::Value> = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| serde_json::to_value(t).unwrap_or_default())
                    .collect();
                for effect in ["NoSchedule", "NoExecute"] {
                    taints.push(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": crate::object::now()}));
                }
                let _ = node_api
                    .patch(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"spec": {"taints": taints}})),
                    )
                    .await;
            }
            for pod in pods.state().iter().filter(|p| {
                p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str())
            }) {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let phase = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default();
                if phase == "Succeeded" || phase == "Failed" {
                    continue;
                }
                let namespace = pod.namespace().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
                if phase != "Unknown" {
                    let t = crate::object::now();
                    let status = json!({"status": {"phase": "Unknown", "message": "Node is not reachable", "conditions": [
                        {"type": "Ready", "status": "False", "reason": "NodeLost", "message": "Node is not reachable", "lastTransitionTime": t},
                        {"type": "ContainersReady", "status": "False", "reason": "NodeLost", "message": "Node is not reachable", "lastTransitionTime": t},
                    ]}});
                    let _ = api
                        .patch_status(
                            &pod.name_any(),
                            &PatchParams::default(),
                            &Patch::Strategic(status),
                        )
                        .await;
                }
                if !owned_by_statefulset(pod) && since.elapsed() >= tolerated(pod, eviction) {
                    tracing::warn!(pod = %pod.name_any(), node = %name, "evicting a pod from an unreachable node");
                    let _ = api.delete(&pod.name_any(), &DeleteParams::default()).await;
                }
            }
        }
    }
}
