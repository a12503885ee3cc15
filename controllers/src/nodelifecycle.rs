//! Node lifecycle: a node whose Lease in `kube-node-lease` is not renewed
//! for the grace period becomes Ready=Unknown and gets the
//! `node.kubernetes.io/unreachable` taints, and each of its pods phase
//! Unknown with Ready=False (`kubectl get pods` shows STATUS Unknown, the
//! guide's "Node is not reachable"). After the eviction timeout (or the
//! pod's own tolerationSeconds for the unreachable taint) the pods are
//! deleted, so their controllers make replacements on healthy nodes;
//! StatefulSet pods are left alone (one pod per identity). A node whose
//! Lease is renewed again loses the taints.
//!
//! ```text
//!   watch nodes, leases ──▶ wake ─┐
//!   timer at the next deadline ───┴▶ plan(nodes, leases, pods, health, now) ─▶ actions ─▶ patch / delete
//! ```
//!
//! As Kubernetes' controller, silence is measured on this controller's own
//! clock: `health` remembers when each node's heartbeat (Lease
//! `renewTime`, or the kubelet's Ready heartbeat) was last seen to change,
//! so the agents' clocks do not matter, and a new leader gives every node a
//! full grace period. The loop sleeps until the next deadline (a node's
//! grace period running out, a pod's eviction falling due) or until a Node
//! or Lease changes; nothing is polled. The decisions are the pure
//! [`plan`]; [`run`] reads and writes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::ResourceExt;
use serde_json::json;
use tokio::time::Instant;

const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// How soon a failed write is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Writes in flight at once.
const PARALLEL_WRITES: usize = 16;
/// The longest sleep without a deadline or an event (a safety net only).
const IDLE: Duration = Duration::from_secs(30);

/// A node's last heartbeat as written: the Lease's `renewTime` and the
/// Ready condition's `lastHeartbeatTime` (when an agent wrote it).
type Heartbeat = (Option<jiff::Timestamp>, Option<jiff::Timestamp>);

/// What the controller remembers of a node between passes.
#[derive(Debug, Clone)]
pub struct Health {
    heartbeat: Heartbeat,
    /// When (on this controller's clock) the heartbeat last changed.
    observed: Instant,
    /// When the node was found unreachable.
    lost_since: Option<Instant>,
}

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Action {
    /// Ready=Unknown, keeping the last heartbeat time.
    MarkNodeUnknown { node: String },
    /// Adds the unreachable NoSchedule and NoExecute taints.
    Taint { node: String },
    /// Removes them (the node is back and Ready).
    Untaint { node: String },
    /// Phase Unknown, Ready=False.
    MarkPodUnknown {
        node: String,
        namespace: String,
        name: String,
        uid: String,
    },
    /// Deletes the pod (its controller replaces it).
    Evict {
        node: String,
        namespace: String,
        name: String,
        uid: String,
    },
}

impl Action {
    fn node(&self) -> &str {
        match self {
            Action::MarkNodeUnknown { node }
            | Action::Taint { node }
            | Action::Untaint { node }
            | Action::MarkPodUnknown { node, .. }
            | Action::Evict { node, .. } => node,
        }
    }
}

/// The outcome of one pass.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    /// When the next deadline falls (a grace period or an eviction).
    pub wake_at: Option<Instant>,
    /// Nodes that are reachable now (what was done for them before is
    /// forgotten).
    pub healthy: Vec<String>,
}

fn ready_condition(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
}

fn heartbeat(lease: Option<&Lease>, node: &Node) -> Heartbeat {
    let from_lease = lease
        .and_then(|l| l.spec.as_ref())
        .and_then(|s| s.renew_time.as_ref())
        .map(|t| t.0);
    // A Ready=Unknown condition is this controller's own writing, not a
    // sign of life.
    let from_node = ready_condition(node)
        .filter(|c| c.status != "Unknown")
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    (from_lease, from_node)
}

fn ready_status(node: &Node) -> Option<&str> {
    ready_condition(node).map(|c| c.status.as_str())
}

fn has_unreachable_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == UNREACHABLE))
}

/// How long a pod may stay on an unreachable node.
fn tolerated(pod: &Pod, eviction: Duration) -> Option<Duration> {
    let toleration = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .and_then(|t| {
            t.iter().find(|t| {
                (t.key.as_deref() == Some(UNREACHABLE)
                    || (t.key.is_none() && t.operator.as_deref() == Some("Exists")))
                    && t.effect.as_deref().is_none_or(|e| e == "NoExecute")
            })
        });
    match toleration {
        // Tolerated for ever.
        Some(t) if t.toleration_seconds.is_none() => None,
        Some(t) => Some(Duration::from_secs(
            t.toleration_seconds.unwrap_or(0).max(0) as u64,
        )),
        None => Some(eviction),
    }
}

fn owned_by_statefulset(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.kind == "StatefulSet" && o.controller == Some(true))
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// One pass: updates `health` from what the watches show and says what to
/// write now and when to look again. `pods_on` gives the pods bound to a
/// node (it is asked only about unreachable nodes).
pub fn plan<'a>(
    nodes: &[Arc<Node>],
    leases: &HashMap<String, Arc<Lease>>,
    pods_on: impl Fn(&str) -> Vec<&'a Pod>,
    health: &mut HashMap<String, Health>,
    now: Instant,
    grace: Duration,
    eviction: Duration,
) -> Plan {
    let mut plan = Plan::default();
    let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    health.retain(|name, _| names.contains(name));
    for node in nodes {
        let name = node.name_any();
        let beat = heartbeat(leases.get(&name).map(Arc::as_ref), node);
        let h = health.entry(name.clone()).or_insert_with(|| Health {
            heartbeat: beat,
            observed: now,
            lost_since: None,
        });
        // A newer heartbeat (either part) is a sign of life.
        if beat.0 > h.heartbeat.0 || beat.1 > h.heartbeat.1 {
            h.heartbeat = (beat.0.max(h.heartbeat.0), beat.1.max(h.heartbeat.1));
            h.observed = now;
        }
        let deadline = h.observed + grace;
        if now < deadline {
            h.lost_since = None;
            plan.wake_at = earliest(plan.wake_at, deadline);
            plan.healthy.push(name.clone());
            if has_unreachable_taint(node) && ready_status(node) == Some("True") {
                plan.actions.push(Action::Untaint { node: name });
            }
            continue;
        }
        let since = *h.lost_since.get_or_insert(now);
        if ready_status(node) != Some("Unknown") {
            plan.actions
                .push(Action::MarkNodeUnknown { node: name.clone() });
        }
        if !has_unreachable_taint(node) {
            plan.actions.push(Action::Taint { node: name.clone() });
        }
        for pod in pods_on(&name) {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                continue;
            }
            let namespace = pod.namespace().unwrap_or_default();
            let pod_name = pod.name_any();
            let uid = pod.uid().unwrap_or_default();
            if phase != "Unknown" {
                plan.actions.push(Action::MarkPodUnknown {
                    node: name.clone(),
                    namespace: namespace.clone(),
                    name: pod_name.clone(),
                    uid: uid.clone(),
                });
            }
            if owned_by_statefulset(pod) {
                continue;
            }
            let Some(allowed) = tolerated(pod, eviction) else {
                continue;
            };
            let due = since + allowed;
            if now >= due {
                plan.actions.push(Action::Evict {
                    node: name.clone(),
                    namespace,
                    name: pod_name,
                    uid,
                });
            } else {
                plan.wake_at = earliest(plan.wake_at, due);
            }
        }
    }
    plan
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let grace = settings.node_monitor_grace_period;
    let eviction = settings.pod_eviction_timeout;
    let (leases, lease_writer) = reflector::store::<Lease>();
    // Nodes and pods from the shared informers.
    let node_informer = settings.informers.get::<Node>(&client);
    let pod_informer = settings.informers.get::<Pod>(&client);
    let (nodes, pods) = (node_informer.store(), pod_informer.store());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    // Node and Lease changes wake the loop (many at once wake it once).
    let wake = Arc::new(tokio::sync::Notify::new());
    let notify = wake.clone();
    tokio::spawn(node_informer.subscribe().for_each(move |_| {
        notify.notify_one();
        futures::future::ready(())
    }));
    let notify = wake.clone();
    tokio::spawn(
        reflector(lease_writer, watcher(lease_api, watcher::Config::default()))
            .default_backoff()
            .for_each(move |_| {
                notify.notify_one();
                futures::future::ready(())
            }),
    );
    node_informer.ready().await;
    shoal_core::cache::ready(&leases).await;
    pod_informer.ready().await;
    let mut health: HashMap<String, Health> = HashMap::new();
    // Writes made for unreachable nodes, so that a pass that runs before
    // the watches show their effect does not repeat them.
    let mut done: HashSet<Action> = HashSet::new();
    loop {
        let lease_map: HashMap<String, Arc<Lease>> = leases
            .state()
            .into_iter()
            .map(|l| (l.name_any(), l))
            .collect();
        let node_list = nodes.state();
        // Pods by node, gathered only when some node may be unreachable.
        let now = Instant::now();
        let any_lost = node_list.iter().any(|n| {
            health
                .get(&n.name_any())
                .is_none_or(|h| h.lost_since.is_some() || now >= h.observed + grace)
        });
        let pod_list = if any_lost { pods.state() } else { Vec::new() };
        let mut by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
        for pod in &pod_list {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                by_node.entry(node).or_default().push(pod.as_ref());
            }
        }
        let plan = plan(
            &node_list,
            &lease_map,
            |node| by_node.get(node).cloned().unwrap_or_default(),
            &mut health,
            now,
            grace,
            eviction,
        );
        // Forgotten once the node is back (or gone).
        done.retain(|a| {
            !plan.healthy.iter().any(|n| n == a.node())
                && node_list.iter().any(|n| n.name_any() == a.node())
        });
        let mut wake_at = plan.wake_at;
        let todo: Vec<Action> = plan
            .actions
            .into_iter()
            .filter(|a| !done.contains(a))
            .collect();
        // A lost node's pods are written to concurrently: with many pods,
        // one at a time would delay the last replacement.
        let results: Vec<(Action, kube::Result<()>)> = futures::stream::iter(todo)
            .map(|action| {
                let client = &client;
                let node_list = &node_list;
                async move {
                    let result = execute(client, node_list, &action).await;
                    (action, result)
                }
            })
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        for (action, result) in results {
            match result {
                Ok(()) => {
                    if !matches!(action, Action::Untaint { .. }) {
                        done.insert(action);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?action, "node lifecycle write failed; retrying");
                    wake_at = earliest(wake_at, Instant::now() + RETRY);
                }
            }
        }
        let until = wake_at.unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

async fn execute(client: &kube::Client, nodes: &[Arc<Node>], action: &Action) -> kube::Result<()> {
    let node_api: Api<Node> = Api::all(client.clone());
    let current = nodes.iter().find(|n| n.name_any() == action.node());
    let taints = || {
        current
            .and_then(|n| n.spec.as_ref())
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
    };
    match action {
        Action::MarkNodeUnknown { node } => {
            tracing::warn!(node = %node, "node stopped renewing its lease: marking it Unknown");
            // The last heartbeat stays what the agent wrote, as Kubernetes
            // keeps it.
            let heartbeat = current
                .and_then(|n| ready_condition(n))
                .and_then(|c| c.last_heartbeat_time.clone());
            let condition = json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": shoal_core::time::now()});
            node_api
                .patch_status(
                    node,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": {"conditions": [condition]}})),
                )
                .await?;
        }
        Action::Taint { node } => {
            let mut taints: Vec<serde_json::Value> = taints()
                .into_iter()
                .filter(|t| t.key != UNREACHABLE)
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect();
            for effect in ["NoSchedule", "NoExecute"] {
                taints.push(json!({"key": UNREACHABLE, "effect": effect, "timeAdded": shoal_core::time::now()}));
            }
            node_api
                .patch(
                    node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"taints": taints}})),
                )
                .await?;
        }
        Action::Untaint { node } => {
            let taints: Vec<_> = taints()
                .into_iter()
                .filter(|t| t.key != UNREACHABLE)
                .collect();
            node_api
                .patch(
                    node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"taints": taints}})),
                )
                .await?;
        }
        Action::MarkPodUnknown {
            namespace, name, ..
        } => {
            let t = shoal_core::time::now();
            let status = json!({"status": {"phase": "Unknown", "message": "Node is not reachable", "conditions": [
                {"type": "Ready", "status": "False", "reason": "NodeLost", "message": "Node is not reachable", "lastTransitionTime": t},
                {"type": "ContainersReady", "status": "False", "reason": "NodeLost", "message": "Node is not reachable", "lastTransitionTime": t},
            ]}});
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(status))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Action::Evict {
            node,
            namespace,
            name,
            uid,
        } => {
            tracing::warn!(pod = %name, node = %node, "evicting a pod from an unreachable node");
            let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
            // The default grace period, as Kubernetes' taint eviction: the
            // pod stays Terminating until its node comes back (its
            // controller counts it as gone already).
            let params = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn node(name: &str, ready: &str, heartbeat: &str, tainted: bool) -> Arc<Node> {
        let taints: Vec<Value> = if tainted {
            vec![json!({"key": UNREACHABLE, "effect": "NoExecute"})]
        } else {
            vec![]
        };
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"taints": taints},
                "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}]},
            }))
            .unwrap(),
        )
    }

    fn lease(name: &str, renew: &str) -> (String, Arc<Lease>) {
        (
            name.to_string(),
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "kube-node-lease"},
                    "spec": {"renewTime": renew},
                }))
                .unwrap(),
            ),
        )
    }

    fn pod(name: &str, extra: Value) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running"},
        });
        json_patch::merge(&mut value, &extra);
        serde_json::from_value(value).unwrap()
    }

    const GRACE: Duration = Duration::from_secs(5);
    const EVICTION: Duration = Duration::from_secs(5);

    fn kinds(plan: &Plan) -> Vec<String> {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::MarkNodeUnknown { node } => format!("unknown {node}"),
                Action::Taint { node } => format!("taint {node}"),
                Action::Untaint { node } => format!("untaint {node}"),
                Action::MarkPodUnknown { name, .. } => format!("pod-unknown {name}"),
                Action::Evict { name, .. } => format!("evict {name}"),
            })
            .collect()
    }

    #[test]
    fn silence_is_measured_from_the_last_renewal_seen_to_the_microsecond() {
        let nodes = vec![node("n1", "True", "2026-01-01T00:00:00Z", false)];
        let pods = [pod("web", json!({}))];
        let pods_on = |_: &str| pods.iter().collect::<Vec<_>>();
        let mut health = HashMap::new();
        let t0 = Instant::now();
        let leases: HashMap<_, _> = [lease("n1", "2026-01-01T00:00:00.100000Z")].into();
        let first = plan(&nodes, &leases, pods_on, &mut health, t0, GRACE, EVICTION);
        assert!(first.actions.is_empty());
        assert_eq!(first.wake_at, Some(t0 + GRACE));

        // Renewed 0.9 s later (same second as far as a Time goes).
        let t1 = t0 + Duration::from_millis(900);
        let leases: HashMap<_, _> = [lease("n1", "2026-01-01T00:00:00.900000Z")].into();
        let renewed = plan(&nodes, &leases, pods_on, &mut health, t1, GRACE, EVICTION);
        assert_eq!(renewed.wake_at, Some(t1 + GRACE));

        // The same renewal seen again is no sign of life.
        let t2 = t1 + GRACE - Duration::from_millis(1);
        assert!(
            plan(&nodes, &leases, pods_on, &mut health, t2, GRACE, EVICTION)
                .actions
                .is_empty()
        );
        let lost = plan(
            &nodes,
            &leases,
            pods_on,
            &mut health,
            t1 + GRACE,
            GRACE,
            EVICTION,
        );
        assert_eq!(kinds(&lost), ["unknown n1", "taint n1", "pod-unknown web"]);
        // The eviction falls due exactly one eviction timeout later.
        assert_eq!(lost.wake_at, Some(t1 + GRACE + EVICTION));
    }

    #[test]
    fn pods_are_evicted_after_their_toleration_except_statefulset_pods() {
        let nodes = vec![node("n1", "Unknown", "2026-01-01T00:00:00Z", true)];
        let leases: HashMap<_, _> = [lease("n1", "2026-01-01T00:00:00.5Z")].into();
        let pods = [
            pod("web", json!({"status": {"phase": "Unknown"}})),
            pod(
                "db-0",
                json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "s", "controller": true}]}}),
            ),
            pod(
                "patient",
                json!({"spec": {"tolerations": [{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]}}),
            ),
            pod(
                "forever",
                json!({"spec": {"tolerations": [{"operator": "Exists"}]}}),
            ),
            pod("done", json!({"status": {"phase": "Succeeded"}})),
            pod(
                "going",
                json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            ),
        ];
        let pods_on = |_: &str| pods.iter().collect::<Vec<_>>();
        let mut health = HashMap::new();
        let t0 = Instant::now();
        plan(&nodes, &leases, pods_on, &mut health, t0, GRACE, EVICTION);
        let lost = plan(
            &nodes,
            &leases,
            pods_on,
            &mut health,
            t0 + GRACE,
            GRACE,
            EVICTION,
        );
        assert_eq!(
            kinds(&lost),
            [
                "pod-unknown db-0",
                "pod-unknown patient",
                "pod-unknown forever"
            ]
        );
        assert_eq!(lost.wake_at, Some(t0 + GRACE + EVICTION));
        let due = plan(
            &nodes,
            &leases,
            pods_on,
            &mut health,
            t0 + GRACE + EVICTION,
            GRACE,
            EVICTION,
        );
        assert!(kinds(&due).contains(&"evict web".to_string()), "{due:?}");
        assert!(!kinds(&due).iter().any(|k| k.starts_with("evict db-0")));
        assert_eq!(
            due.wake_at,
            Some(t0 + GRACE + Duration::from_secs(60)),
            "the patient pod goes after its own tolerationSeconds"
        );
    }

    #[test]
    fn the_controllers_own_unknown_condition_is_not_a_heartbeat() {
        // Marked Unknown by the controller at a later time: still silent.
        let nodes = vec![node("n1", "Unknown", "2026-01-01T00:10:00Z", true)];
        let leases = HashMap::new();
        let mut health = HashMap::new();
        let t0 = Instant::now();
        let none = |_: &str| Vec::new();
        plan(&nodes, &leases, none, &mut health, t0, GRACE, EVICTION);
        let later = t0 + GRACE + Duration::from_secs(1);
        let again = vec![node("n1", "Unknown", "2026-01-01T00:20:00Z", true)];
        let p = plan(&again, &leases, none, &mut health, later, GRACE, EVICTION);
        assert!(p.healthy.is_empty(), "{p:?}");
    }

    #[test]
    fn a_node_that_renews_again_loses_the_taints_once_ready() {
        let mut health = HashMap::new();
        let t0 = Instant::now();
        let none = |_: &str| Vec::new();
        let leases: HashMap<_, _> = [lease("n1", "2026-01-01T00:00:00Z")].into();
        let tainted = vec![node("n1", "Unknown", "2026-01-01T00:00:00Z", true)];
        plan(&tainted, &leases, none, &mut health, t0, GRACE, EVICTION);
        let t1 = t0 + GRACE * 2;
        assert!(
            plan(&tainted, &leases, none, &mut health, t1, GRACE, EVICTION)
                .healthy
                .is_empty()
        );
        let leases: HashMap<_, _> = [lease("n1", "2026-01-01T00:00:10Z")].into();
        let back = plan(&tainted, &leases, none, &mut health, t1, GRACE, EVICTION);
        assert_eq!(back.healthy, ["n1"]);
        assert!(back.actions.is_empty(), "not Ready yet: {back:?}");
        let ready = vec![node("n1", "True", "2026-01-01T00:00:10Z", true)];
        let back = plan(&ready, &leases, none, &mut health, t1, GRACE, EVICTION);
        assert_eq!(kinds(&back), ["untaint n1"]);
    }
}
