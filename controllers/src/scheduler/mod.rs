//! The scheduler: assigns each pending pod to a node through
//! `pods/binding`, as kube-scheduler does, and tells the pod (condition
//! PodScheduled=False, reason Unschedulable) and its events why when no node
//! fits, once per distinct reason.
//!
//! ```text
//!   watch nodes, pods, claims,  ─▶ caches ─┐
//!   volumes, namespaces         ─▶ changes ─▶ queue (active / back-off /
//!                                            unschedulable)
//!                                             │ pop ready pods
//!                                             ▼
//!                        snapshot of placed pods ─▶ Snapshot::choose
//!                        ├─ node: assume it, POST pods/{name}/binding
//!                        │        (up to 64 in flight) + event Scheduled
//!                        └─ none: unschedulable set; PodScheduled=False +
//!                                 event FailedScheduling
//! ```
//!
//! A pod that found no node waits until a node is added or changes in a
//! way that matters, a pod is deleted or bound, or a claim, volume or
//! namespace changes (at most 30 s), and not before its back-off (1 s
//! doubling to 10 s) is over. A pod is bound once: bindings in flight are
//! assumed (counted on their node) until the cache shows them, pods the
//! cache shows bound are skipped, and a 409 on binding means someone else
//! bound it.
//!
//! It is an API client (kube-rs) like any other; the decisions are the pure
//! functions in `fit.rs` (filters, scores), `affinity.rs` (pod affinity,
//! topology spread, preferred node affinity) and `queue.rs`.

pub mod affinity;
pub mod fit;
pub mod queue;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector;
use serde_json::json;

use crate::events;
use crate::informers::Seen;
use crate::metrics::Attempt;

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

/// What the watches tell the scheduling loop.
#[derive(Debug)]
enum Change {
    Pod {
        key: String,
        pending: bool,
        bound: bool,
    },
    PodDeleted(String),
    /// A node with what of it matters for scheduling (labels, taints,
    /// unschedulable, allocatable, readiness), to tell real changes from
    /// heartbeats.
    Node {
        name: String,
        fingerprint: String,
    },
    /// Claims, volumes, namespaces: may make room for waiting pods.
    Other,
    /// A watch (re)listed: anything may have changed.
    Resync,
}

fn node_fingerprint(node: &Node) -> String {
    let status = node.status.as_ref();
    format!(
        "{:?}|{:?}|{:?}|{:?}|{:?}",
        node.metadata.labels,
        node.spec.as_ref().map(|s| (&s.taints, s.unschedulable)),
        status.and_then(|s| s.allocatable.as_ref()),
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| &c.status),
        node.metadata.deletion_timestamp,
    )
}

fn pod_change(seen: Seen<Pod>) -> Change {
    match seen {
        Seen::Applied(pod) => Change::Pod {
            key: key(&pod),
            pending: pending(&pod),
            bound: bound_to(&pod).is_some(),
        },
        Seen::Deleted(pod) => Change::PodDeleted(key(&pod)),
        Seen::Relisted => Change::Resync,
    }
}

fn node_change(seen: Seen<Node>) -> Change {
    match seen {
        Seen::Applied(node) => Change::Node {
            name: node.metadata.name.clone().unwrap_or_default(),
            fingerprint: node_fingerprint(&node),
        },
        Seen::Deleted(_) => Change::Other,
        Seen::Relisted => Change::Resync,
    }
}

fn other_change<K>(_: Seen<K>) -> Change {
    Change::Other
}

/// The node a pod runs on (while it counts: not Succeeded or Failed).
fn bound_to(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn counts(pod: &Pod) -> bool {
    !matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// How a binding request ended.
enum Outcome {
    Bound,
    /// 409: someone else bound it (or it is being deleted).
    Conflict,
    Failed(kube::Error),
}

/// At most this many binding requests in flight.
const BINDING_CONCURRENCY: usize = 64;

/// Forwards an informer's changes into the loop.
fn follow<K, F>(
    changes: impl futures::Stream<Item = Seen<K>> + Send + 'static,
    tx: &tokio::sync::mpsc::UnboundedSender<Change>,
    map: F,
) where
    K: Send + Sync + 'static,
    F: Fn(Seen<K>) -> Change + Send + 'static,
{
    let tx = tx.clone();
    tokio::spawn(changes.for_each(move |seen| {
        let _ = tx.send(map(seen));
        futures::future::ready(())
    }));
}

/// Runs until the task is dropped.
pub async fn run(client: kube::Client, settings: crate::Settings) {
    let node_informer = settings.informers.get::<Node>(&client);
    let pod_informer = settings.informers.get::<Pod>(&client);
    let (nodes, pods) = (node_informer.store(), pod_informer.store());
    let claim_informer = settings.informers.get::<PersistentVolumeClaim>(&client);
    let volume_informer = settings.informers.get::<PersistentVolume>(&client);
    let namespace_informer = settings.informers.get::<Namespace>(&client);
    let (claims, volumes, namespaces) = (
        claim_informer.store(),
        volume_informer.store(),
        namespace_informer.store(),
    );
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    follow(node_informer.subscribe(), &tx, node_change);
    follow(pod_informer.subscribe(), &tx, pod_change);
    // Claims and volumes: a pod waiting for its claim, or bound to where
    // its volume lives.
    follow(claim_informer.subscribe(), &tx, other_change);
    follow(volume_informer.subscribe(), &tx, other_change);
    follow(namespace_informer.subscribe(), &tx, other_change);
    drop(tx);
    node_informer.ready().await;
    pod_informer.ready().await;
    claim_informer.ready().await;
    volume_informer.ready().await;
    namespace_informer.ready().await;

    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel::<(String, String, Outcome)>();
    let slots = Arc::new(tokio::sync::Semaphore::new(BINDING_CONCURRENCY));
    let mut state = State::default();
    state.resync(&pods.state(), Instant::now());
    loop {
        let wake_at = if state.queue.has_active() {
            Instant::now()
        } else {
            state
                .queue
                .next_ready()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(60))
        };
        tokio::select! {
            change = changes.recv() => match change {
                Some(change) => state.apply(change, &pods),
                None => return,
            },
            Some((pod_key, node, outcome)) = done.recv() => state.finished(pod_key, node, outcome),
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake_at)) => {}
        }
        while let Ok(change) = changes.try_recv() {
            state.apply(change, &pods);
        }
        while let Ok((pod_key, node, outcome)) = done.try_recv() {
            state.finished(pod_key, node, outcome);
        }
        let batch: Vec<(String, Arc<Pod>)> = state
            .queue
            .pop_ready(Instant::now())
            .into_iter()
            .filter_map(|k| {
                let pod = pods.get(&object_ref(&k))?;
                Some((k, pod))
            })
            .collect();
        let (active, backoff, waiting) = state.queue.sizes();
        crate::metrics::pending(active, backoff, waiting);
        if batch.is_empty() {
            continue;
        }
        let all = pods.state();
        let assumed: Vec<(Arc<Pod>, String)> = state
            .assumed
            .iter()
            .filter_map(|(k, node)| Some((pods.get(&object_ref(k))?, node.clone())))
            .collect();
        let node_list = nodes.state();
        let claim_list: Vec<PersistentVolumeClaim> =
            claims.state().iter().map(|c| (**c).clone()).collect();
        let volume_list: Vec<PersistentVolume> =
            volumes.state().iter().map(|v| (**v).clone()).collect();
        let namespace_labels: HashMap<String, affinity::Labels> = namespaces
            .state()
            .iter()
            .map(|n| {
                (
                    n.metadata.name.clone().unwrap_or_default(),
                    n.metadata.labels.clone().unwrap_or_default(),
                )
            })
            .collect();
        let mut snapshot = fit::Snapshot::new(node_list.iter().map(|n| &**n))
            .with_namespaces(namespace_labels)
            .starting_at(state.next_start);
        for pod in &all {
            if let Some(node) = bound_to(pod).filter(|_| counts(pod)) {
                snapshot.place(pod, node);
            }
        }
        for (pod, node) in &assumed {
            if bound_to(pod).is_none() {
                snapshot.place(pod, node);
            }
        }
        for (pod_key, pod) in &batch {
            // Never twice: skip what the latest cache shows bound or gone.
            if !pending(pod) || state.assumed.contains_key(pod_key) {
                continue;
            }
            let attempt_started = Instant::now();
            let chosen = fit::claimed_volumes(pod, &claim_list, &volume_list)
                .map_err(|why| format!("0/{} nodes are available: {why}.", node_list.len()))
                .and_then(|volumes| snapshot.choose(pod, &volumes));
            state.next_start = snapshot.next_start();
            match chosen {
                Ok(node) => {
                    let node_name = node.metadata.name.clone().unwrap_or_default();
                    snapshot.place(pod, &node_name);
                    state.assumed.insert(pod_key.clone(), node_name.clone());
                    let Ok(slot) = slots.clone().acquire_owned().await else {
                        return;
                    };
                    let (client, pod, pod_key, done) = (
                        client.clone(),
                        pod.clone(),
                        pod_key.clone(),
                        done_tx.clone(),
                    );
                    tokio::spawn(async move {
                        let outcome = match bind(&client, &pod, &node_name).await {
                            Ok(()) => Outcome::Bound,
                            Err(kube::Error::Api(status)) if status.code == 409 => {
                                Outcome::Conflict
                            }
                            Err(e) => Outcome::Failed(e),
                        };
                        let result = match &outcome {
                            Outcome::Bound => Attempt::Scheduled,
                            _ => Attempt::Error,
                        };
                        crate::metrics::attempt(result, attempt_started);
                        drop(slot);
                        let _ = done.send((pod_key, node_name, outcome));
                    });
                }
                Err(message) => {
                    crate::metrics::attempt(Attempt::Unschedulable, attempt_started);
                    state.queue.unschedulable(pod_key, Instant::now());
                    // Told once per distinct reason, not on every retry.
                    if state.told.get(pod_key) != Some(&message) {
                        if let Err(e) = unschedulable(&client, pod, &message).await {
                            tracing::debug!(pod = %pod_key, error = %e, "cannot record why the pod waits");
                        }
                        state.told.insert(pod_key.clone(), message);
                    }
                }
            }
        }
    }
}

fn object_ref(key: &str) -> reflector::ObjectRef<Pod> {
    let (namespace, name) = key.split_once('/').unwrap_or(("", key));
    reflector::ObjectRef::new(name).within(namespace)
}

/// The loop's memory besides the caches.
#[derive(Default)]
struct State {
    queue: queue::Queue,
    /// Bindings made (or in flight) but not yet seen in the cache.
    assumed: HashMap<String, String>,
    /// The last reason told to each unschedulable pod.
    told: HashMap<String, String>,
    /// Pods seen bound, to notice a newly bound one.
    bound: HashSet<String>,
    nodes: HashMap<String, String>,
    /// Where the next search for feasible nodes starts.
    next_start: usize,
}

impl State {
    fn apply(&mut self, change: Change, pods: &reflector::Store<Pod>) {
        let now = Instant::now();
        match change {
            Change::Pod {
                key,
                pending,
                bound,
            } => {
                if bound {
                    self.assumed.remove(&key);
                    self.queue.remove(&key);
                    self.told.remove(&key);
                    // A pod placed may be what another's affinity waits for.
                    if self.bound.insert(key) {
                        self.queue.move_all(now);
                    }
                } else if pending {
                    if !self.assumed.contains_key(&key) {
                        self.queue.add(&key);
                    }
                } else {
                    self.queue.remove(&key);
                }
            }
            Change::PodDeleted(key) => {
                self.assumed.remove(&key);
                self.queue.remove(&key);
                self.told.remove(&key);
                self.bound.remove(&key);
                self.queue.move_all(now);
            }
            Change::Node { name, fingerprint } => {
                if self.nodes.get(&name) != Some(&fingerprint) {
                    self.nodes.insert(name, fingerprint);
                    self.queue.move_all(now);
                }
            }
            Change::Other => self.queue.move_all(now),
            Change::Resync => self.resync(&pods.state(), now),
        }
    }

    /// After a (re)list: every pending pod queued, and what is gone
    /// forgotten.
    fn resync(&mut self, all: &[Arc<Pod>], now: Instant) {
        let keys: HashSet<String> = all.iter().map(|p| key(p)).collect();
        self.assumed.retain(|k, _| keys.contains(k));
        self.told.retain(|k, _| keys.contains(k));
        self.bound.retain(|k| keys.contains(k));
        for pod in all {
            let pod_key = key(pod);
            if bound_to(pod).is_some() {
                self.assumed.remove(&pod_key);
                self.queue.remove(&pod_key);
                self.bound.insert(pod_key);
            } else if pending(pod) && !self.assumed.contains_key(&pod_key) {
                self.queue.add(&pod_key);
            }
        }
        self.queue.move_all(now);
    }

    /// A binding request ended.
    fn finished(&mut self, pod_key: String, node: String, outcome: Outcome) {
        match outcome {
            // Stays assumed until the cache shows it bound.
            Outcome::Bound => {
                self.told.remove(&pod_key);
            }
            // Someone bound it (or it is going away): the cache will say.
            Outcome::Conflict => {
                self.assumed.remove(&pod_key);
                self.queue.remove(&pod_key);
            }
            Outcome::Failed(e) => {
                tracing::debug!(pod = %pod_key, node = %node, error = %e, "binding failed; will retry");
                self.assumed.remove(&pod_key);
                self.queue.retry(&pod_key, Instant::now());
            }
        }
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
    // Recorded beside the next bindings, not before them.
    let (client, pod, message) = (
        client.clone(),
        pod.clone(),
        format!("Successfully assigned {namespace}/{name} to {node}"),
    );
    tokio::spawn(async move {
        events::record(&client, &pod, "Normal", "Scheduled", &message, NAME).await;
    });
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
        "lastTransitionTime": shoal_core::time::now(),
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await?;
    events::record(client, pod, "Warning", "FailedScheduling", message, NAME).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_event(labels: serde_json::Value) -> Change {
        let node: Node = serde_json::from_value(
            serde_json::json!({"metadata": {"name": "n", "labels": labels}}),
        )
        .unwrap();
        Change::Node {
            name: "n".into(),
            fingerprint: node_fingerprint(&node),
        }
    }

    fn pod_event(key: &str, pending: bool, bound: bool) -> Change {
        Change::Pod {
            key: key.into(),
            pending,
            bound,
        }
    }

    #[test]
    fn waiting_pods_move_on_changes_that_matter() {
        let (pods, _writer) = reflector::store::<Pod>();
        let mut state = State::default();
        state.apply(node_event(serde_json::json!({})), &pods);
        state.apply(pod_event("ns/p", true, false), &pods);
        let t0 = Instant::now();
        assert_eq!(state.queue.pop_ready(t0), vec!["ns/p"]);
        state.queue.unschedulable("ns/p", t0);
        // Its own PodScheduled condition, and a node heartbeat: no retry.
        state.apply(pod_event("ns/p", true, false), &pods);
        state.apply(node_event(serde_json::json!({})), &pods);
        assert!(state.queue.is_unschedulable("ns/p"));
        // A label on the node: back in the queue (after its back-off).
        state.apply(node_event(serde_json::json!({"gpu": "yes"})), &pods);
        assert!(!state.queue.is_unschedulable("ns/p") && state.queue.contains("ns/p"));
        // Bound (by anyone): forgotten.
        state.apply(pod_event("ns/p", false, true), &pods);
        assert!(state.queue.is_empty());
    }

    #[test]
    fn binding_outcomes() {
        let (pods, _writer) = reflector::store::<Pod>();
        let mut state = State::default();
        for key in ["ns/a", "ns/b"] {
            state.assumed.insert(key.into(), "n".into());
            // Updates of an assumed pod do not queue it again.
            state.apply(pod_event(key, true, false), &pods);
        }
        assert!(state.queue.is_empty());
        // 409: someone bound it; the cache will show where.
        state.finished("ns/a".into(), "n".into(), Outcome::Conflict);
        assert!(!state.assumed.contains_key("ns/a") && !state.queue.contains("ns/a"));
        // Any other failure: retried after a back-off.
        let error = kube::Error::Api(Box::new(kube::core::Status::failure(
            "boom",
            "InternalError",
        )));
        state.finished("ns/b".into(), "n".into(), Outcome::Failed(error));
        assert!(!state.assumed.contains_key("ns/b") && state.queue.contains("ns/b"));
        assert!(state.queue.pop_ready(Instant::now()).is_empty());
    }
}
