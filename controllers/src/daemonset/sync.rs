//! What a DaemonSet should do now, as a pure function of it, the nodes, the
//! pods it owns and the hash of its current revision (Kubernetes'
//! `pkg/controller/daemon/{daemon_controller,update}.go`):
//!
//! - which nodes should run its pod (nodeSelector, required node affinity,
//!   NoSchedule/NoExecute taints against the template's tolerations plus
//!   the ones every daemon pod gets) and which may keep one (only NoExecute
//!   taints evict);
//! - pods to create (a node that should run one has none) and to delete
//!   (failed, duplicates, on nodes that no longer qualify);
//! - with `RollingUpdate`, old pods to delete so that at most
//!   `maxUnavailable` nodes are without an available pod (maxSurge 0: the
//!   replacement is created once the old pod is gone);
//! - the status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use serde_json::{json, Value};

use crate::deployment::rolling::resolve;
use crate::replicaset::sync::{controller_uid, is_ready};
use crate::scheduler::fit;

/// The label naming the ControllerRevision a pod was made from.
pub const HASH_LABEL: &str = "controller-revision-hash";
/// The (deprecated, still set) label with the DaemonSet's generation.
pub const GENERATION_LABEL: &str = "pod-template-generation";

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Nodes that get a new pod.
    pub create: Vec<String>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    /// (pod, node) of failed pods among `delete`, for the event.
    pub failed: Vec<(String, String)>,
    /// Still converging: pods to make, remove or update, or not yet
    /// available ones.
    pub progressing: bool,
    pub status: Value,
}

/// The tolerations Kubernetes gives every daemon pod, so that node
/// conditions do not evict it or keep it off a node.
pub fn default_tolerations(host_network: bool) -> Vec<Value> {
    let mut list = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        list.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    list.into_iter()
        .map(|(key, effect)| json!({"key": key, "operator": "Exists", "effect": effect}))
        .collect()
}

/// The template's tolerations plus the defaults it does not already have.
fn tolerations(template_spec: &Value) -> Vec<Value> {
    let mut list: Vec<Value> = template_spec
        .get("tolerations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let host_network = template_spec.get("hostNetwork") == Some(&json!(true));
    for default in default_tolerations(host_network) {
        let present = list.iter().any(|t| {
            t.get("key") == default.get("key") && t.get("effect") == default.get("effect")
        });
        if !present {
            list.push(default);
        }
    }
    list
}

fn template_spec(ds: &DaemonSet) -> Value {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_else(|| json!({}))
}

/// A daemon pod for `node`: the template, the revision labels, the owner,
/// the default tolerations, and a required node affinity for exactly that
/// node (replacing the template's required terms, which were checked
/// already), so that the scheduler binds it there.
pub fn new_pod(ds: &DaemonSet, node: &str, hash: &str) -> Value {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let template_meta = ds.spec.as_ref().and_then(|s| s.template.metadata.as_ref());
    let mut labels = template_meta
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert(
        GENERATION_LABEL.into(),
        ds.metadata.generation.unwrap_or(1).to_string(),
    );
    let mut spec = template_spec(ds);
    let tolerations = tolerations(&spec);
    if let Some(spec) = spec.as_object_mut() {
        spec.insert("tolerations".into(), json!(tolerations));
        let mut affinity = spec.remove("affinity").unwrap_or_else(|| json!({}));
        shoal_core::json::set_path(
            &mut affinity,
            &[
                "nodeAffinity",
                "requiredDuringSchedulingIgnoredDuringExecution",
            ],
            json!({"nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}
            ]}]}),
        );
        spec.insert("affinity".into(), affinity);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{name}-"),
            "labels": labels,
            "annotations": template_meta.and_then(|m| m.annotations.clone()),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": name,
                "uid": ds.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}

/// The node a daemon pod is for: where it is bound, or, before binding,
/// the node its `metadata.name` affinity names.
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(node) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(node.clone());
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref())
        .filter(|v| v.len() == 1)
        .and_then(|v| v.first().cloned())
}

/// Whether the DaemonSet's pod should run on `node` (may be placed there)
/// and whether one already there may continue (only NoExecute taints and
/// the node selection remove it).
pub struct Eligibility {
    probe: Pod,
    tolerations: Vec<Toleration>,
}

impl Eligibility {
    pub fn new(ds: &DaemonSet) -> Eligibility {
        let spec = template_spec(ds);
        let tolerations: Vec<Toleration> =
            serde_json::from_value(json!(tolerations(&spec))).unwrap_or_default();
        let probe: Pod = serde_json::from_value(json!({"spec": spec})).unwrap_or_default();
        Eligibility { probe, tolerations }
    }

    /// (should run, may continue running)
    pub fn check(&self, node: &Node) -> (bool, bool) {
        if !fit::matches_node_selection(&self.probe, node) {
            return (false, false);
        }
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut run = true;
        let mut keep = true;
        for taint in &taints {
            if fit::tolerates(&self.tolerations, taint) {
                continue;
            }
            match taint.effect.as_str() {
                "NoSchedule" => run = false,
                "NoExecute" => {
                    run = false;
                    keep = false;
                }
                _ => {}
            }
        }
        (run, keep)
    }
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn updated(pod: &Pod, hash: &str) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .is_some_and(|h| h == hash)
}

/// Ready for at least minReadySeconds at `now` (unix seconds).
fn available(pod: &Pod, min_ready: i64, now: i64) -> bool {
    if !is_ready(pod) {
        return false;
    }
    if min_ready <= 0 {
        return true;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .is_some_and(|t| t.0.as_second() + min_ready <= now)
}

/// Scheduled before unscheduled, then oldest first (Kubernetes'
/// podByCreationTimestampAndPhase): the first one is kept.
fn keep_order(pod: &Pod) -> (bool, i64, String) {
    let unscheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (unscheduled, created, name(pod))
}

pub fn decide(ds: &DaemonSet, nodes: &[Node], pods: &[Pod], hash: &str, now: i64) -> Decision {
    let mut decision = Decision::default();
    let uid = ds.metadata.uid.as_deref().unwrap_or_default();
    let spec = ds.spec.as_ref();
    let min_ready = i64::from(spec.and_then(|s| s.min_ready_seconds).unwrap_or(0));
    let eligibility = Eligibility::new(ds);

    let mut by_node: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods.iter().filter(|p| controller_uid(*p) == Some(uid)) {
        match target_node(pod) {
            Some(node) => by_node.entry(node).or_default().push(pod),
            // Not ours to place: a daemon pod is always for one node.
            None if !terminating(pod) => decision.delete.push(name(pod)),
            None => {}
        }
    }
    let mut nodes: Vec<&Node> = nodes.iter().collect();
    nodes.sort_by_key(|n| n.metadata.name.clone());
    let known: Vec<String> = nodes
        .iter()
        .map(|n| n.metadata.name.clone().unwrap_or_default())
        .collect();
    // Pods for nodes that no longer exist.
    for (node, list) in &by_node {
        if !known.contains(node) {
            decision
                .delete
                .extend(list.iter().filter(|p| !terminating(p)).map(|p| name(p)));
        }
    }

    // (node, should run, may keep, the live pod it keeps)
    let mut placed: Vec<(String, bool, bool, Vec<&Pod>)> = Vec::new();
    for node in &nodes {
        let node_name = node.metadata.name.clone().unwrap_or_default();
        let (run, keep) = eligibility.check(node);
        let here = by_node.get(&node_name).cloned().unwrap_or_default();
        let mut live = Vec::new();
        if run && here.is_empty() {
            decision.create.push(node_name.clone());
        } else if keep {
            for pod in here.iter().copied().filter(|p| !terminating(p)) {
                if phase(pod) == "Failed" {
                    decision.delete.push(name(pod));
                    decision.failed.push((name(pod), node_name.clone()));
                } else {
                    live.push(pod);
                }
            }
            live.sort_by_key(|p| keep_order(p));
            if live.len() > 1 {
                decision.delete.extend(live[1..].iter().map(|p| name(p)));
                live.truncate(1);
            }
        } else {
            decision
                .delete
                .extend(here.iter().filter(|p| !terminating(p)).map(|p| name(p)));
        }
        placed.push((node_name, run, keep, live));
    }

    let desired = placed.iter().filter(|(_, run, _, _)| *run).count() as i32;
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    if !on_delete {
        let max_unavailable = strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.max_unavailable.as_ref())
            .and_then(|v| serde_json::to_value(v).ok());
        let max_unavailable = resolve(max_unavailable.as_ref(), desired, true, "1").max(1);
        let mut unavailable = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for (_, run, keep, live) in &placed {
            if !keep {
                continue;
            }
            match live.first() {
                // Nothing there yet (or only a pod on its way out).
                None if *run => unavailable += 1,
                None => {}
                // An updated pod counts until it is available.
                Some(pod) if updated(pod, hash) => {
                    unavailable += i32::from(!available(pod, min_ready, now));
                }
                // An old pod that is not available anyway can go at once
                // (its node is already counted as without one).
                Some(pod) if !available(pod, min_ready, now) => {
                    unavailable += 1;
                    replace_now.push(name(pod));
                }
                Some(pod) => candidates.push(name(pod)),
            }
        }
        let room = (max_unavailable - unavailable).max(0) as usize;
        decision.delete.extend(replace_now);
        decision.delete.extend(candidates.into_iter().take(room));
    }

    // Status, from the pods as they are (before this decision acts).
    let (mut current, mut ready, mut available_count, mut updated_count, mut misscheduled) =
        (0, 0, 0, 0, 0);
    for (node_name, run, _, _) in &placed {
        let mut here: Vec<&Pod> = by_node
            .get(node_name)
            .into_iter()
            .flatten()
            .copied()
            .filter(|p| !terminating(p) && !matches!(phase(p), "Failed" | "Succeeded"))
            .collect();
        if here.is_empty() {
            continue;
        }
        if !run {
            misscheduled += 1;
            continue;
        }
        here.sort_by_key(|p| keep_order(p));
        let pod = here[0];
        current += 1;
        if is_ready(pod) {
            ready += 1;
            if available(pod, min_ready, now) {
                available_count += 1;
            }
        }
        if updated(pod, hash) {
            updated_count += 1;
        }
    }
    decision.progressing = !decision.create.is_empty()
        || !decision.delete.is_empty()
        || updated_count < desired
        || available_count < desired
        || misscheduled > 0;
    decision.status = json!({
        "desiredNumberScheduled": desired,
        "currentNumberScheduled": current,
        "numberReady": ready,
        "updatedNumberScheduled": updated_count,
        "numberAvailable": available_count,
        "numberUnavailable": desired - available_count,
        "numberMisscheduled": misscheduled,
        "observedGeneration": ds.metadata.generation.unwrap_or(0),
    });
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(extra_spec: Value) -> DaemonSet {
        let mut value = json!({
            "metadata": {"name": "fluentd", "namespace": "kube-system", "uid": "ds-1", "generation": 2},
            "spec": {
                "selector": {"matchLabels": {"app": "fluentd"}},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                "template": {"metadata": {"labels": {"app": "fluentd"}},
                             "spec": {"containers": [{"name": "c", "image": "i"}]}}
            }
        });
        if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra_spec.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(value).unwrap()
    }

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: &str, hash: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"app": "fluentd", HASH_LABEL: hash},
                         "creationTimestamp": "2026-01-01T00:00:00Z",
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "fluentd", "uid": "ds-1", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        }))
        .unwrap()
    }

    const NOW: i64 = 1_800_000_000;

    fn control_plane() -> Value {
        json!([{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}])
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let nodes = vec![
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
            node("c", json!({}), control_plane()),
        ];
        let d = decide(&ds(json!({})), &nodes, &[], "h1", NOW);
        assert_eq!(d.create, vec!["a", "b"]);
        assert_eq!(d.status["desiredNumberScheduled"], 2);
        assert_eq!(d.status["currentNumberScheduled"], 0);
        assert_eq!(d.status["numberUnavailable"], 2);

        let mut tolerant = ds(json!({}));
        tolerant
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .tolerations = serde_json::from_value(control_plane()).unwrap();
        let d = decide(&tolerant, &nodes, &[], "h1", NOW);
        assert_eq!(d.create, vec!["a", "b", "c"]);
    }

    #[test]
    fn node_selection_and_noexecute_taints_remove_pods() {
        let mut picky = ds(json!({}));
        picky
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .node_selector = Some(BTreeMap::from([("disktype".into(), "ssd".into())]));
        let nodes = vec![
            node("a", json!({"disktype": "ssd"}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let pods = vec![pod("p-a", "a", "h1", true), pod("p-b", "b", "h1", true)];
        let d = decide(&picky, &nodes, &pods, "h1", NOW);
        assert!(d.create.is_empty());
        assert_eq!(d.delete, vec!["p-b"]);
        assert_eq!(d.status["desiredNumberScheduled"], 1);
        assert_eq!(d.status["numberMisscheduled"], 1);

        // A NoSchedule taint added later leaves the pod; NoExecute removes it.
        let nodes = vec![
            node("a", json!({}), control_plane()),
            node(
                "b",
                json!({}),
                json!([{"key": "evict", "effect": "NoExecute"}]),
            ),
        ];
        let d = decide(&ds(json!({})), &nodes, &pods, "h1", NOW);
        assert_eq!(d.delete, vec!["p-b"]);
        assert!(d.create.is_empty());
    }

    #[test]
    fn default_tolerations_cover_node_conditions() {
        let nodes = vec![node(
            "a",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                   {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]),
        )];
        let d = decide(&ds(json!({})), &nodes, &[], "h1", NOW);
        assert_eq!(d.create, vec!["a"]);
    }

    #[test]
    fn new_pods_are_pinned_to_their_node() {
        let value = new_pod(&ds(json!({})), "node-1", "h1");
        assert_eq!(value["metadata"]["generateName"], "fluentd-");
        assert_eq!(value["metadata"]["labels"][HASH_LABEL], "h1");
        assert_eq!(value["metadata"]["labels"][GENERATION_LABEL], "2");
        assert_eq!(value["metadata"]["ownerReferences"][0]["uid"], "ds-1");
        let pod: Pod = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(target_node(&pod).as_deref(), Some("node-1"));
        let tolerations = value["spec"]["tolerations"].as_array().unwrap();
        assert_eq!(tolerations.len(), 6);
        assert!(tolerations
            .iter()
            .any(|t| t["key"] == "node.kubernetes.io/unreachable"
                && t["effect"] == "NoExecute"
                && t.get("tolerationSeconds").is_none()));
    }

    #[test]
    fn failed_and_duplicate_pods_go() {
        let nodes = vec![node("a", json!({}), json!([]))];
        let mut failed = pod("failed", "a", "h1", false);
        failed.status.as_mut().unwrap().phase = Some("Failed".into());
        let mut newer = pod("newer", "a", "h1", true);
        newer.metadata.creation_timestamp =
            serde_json::from_value(json!("2026-01-02T00:00:00Z")).unwrap();
        let pods = vec![failed, pod("older", "a", "h1", true), newer];
        let d = decide(&ds(json!({})), &nodes, &pods, "h1", NOW);
        assert_eq!(d.delete, vec!["failed", "newer"]);
        assert_eq!(d.failed, vec![("failed".to_string(), "a".to_string())]);
        assert!(d.create.is_empty());
    }

    #[test]
    fn rolling_update_respects_max_unavailable() {
        let nodes = vec![
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
            node("c", json!({}), json!([])),
        ];
        let old = vec![
            pod("p-a", "a", "h1", true),
            pod("p-b", "b", "h1", true),
            pod("p-c", "c", "h1", true),
        ];
        let d = decide(&ds(json!({})), &nodes, &old, "h2", NOW);
        assert_eq!(d.delete, vec!["p-a"]);
        assert_eq!(d.status["updatedNumberScheduled"], 0);
        assert!(d.progressing);

        // a is replaced but not ready yet: nothing else goes.
        let step = vec![
            pod("n-a", "a", "h2", false),
            pod("p-b", "b", "h1", true),
            pod("p-c", "c", "h1", true),
        ];
        let d = decide(&ds(json!({})), &nodes, &step, "h2", NOW);
        assert!(d.delete.is_empty());

        // A terminating old pod counts as unavailable, and blocks creation.
        let mut leaving = pod("p-a", "a", "h1", true);
        leaving.metadata.deletion_timestamp =
            serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap();
        let d = decide(
            &ds(json!({})),
            &nodes,
            &[
                leaving,
                pod("p-b", "b", "h1", true),
                pod("p-c", "c", "h1", true),
            ],
            "h2",
            NOW,
        );
        assert!(d.delete.is_empty() && d.create.is_empty());

        // 100% may all go at once; an unavailable old pod goes regardless.
        let all = ds(
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "100%"}}}),
        );
        let d = decide(&all, &nodes, &old, "h2", NOW);
        assert_eq!(d.delete, vec!["p-a", "p-b", "p-c"]);
        let d = decide(
            &ds(json!({})),
            &nodes,
            &[
                pod("p-a", "a", "h1", false),
                pod("p-b", "b", "h1", true),
                pod("p-c", "c", "h1", true),
            ],
            "h2",
            NOW,
        );
        assert_eq!(d.delete, vec!["p-a"]);

        // OnDelete never deletes for an update.
        let manual = ds(json!({"updateStrategy": {"type": "OnDelete"}}));
        assert!(decide(&manual, &nodes, &old, "h2", NOW).delete.is_empty());
    }

    #[test]
    fn status_counts() {
        let nodes = vec![
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let pods = vec![pod("p-a", "a", "h2", true), pod("p-b", "b", "h1", false)];
        let d = decide(&ds(json!({"minReadySeconds": 0})), &nodes, &pods, "h2", NOW);
        assert_eq!(
            d.status,
            json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                   "updatedNumberScheduled": 1, "numberAvailable": 1, "numberUnavailable": 1,
                   "numberMisscheduled": 0, "observedGeneration": 2})
        );
        // minReadySeconds not yet passed: ready but not available.
        let ready_at = jiff::Timestamp::from_second(NOW - 5).unwrap().to_string();
        let mut fresh = pod("p-a", "a", "h2", true);
        fresh.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            serde_json::from_value(json!(ready_at)).unwrap();
        let d = decide(
            &ds(json!({"minReadySeconds": 30})),
            &nodes,
            &[fresh],
            "h2",
            NOW,
        );
        assert_eq!(d.status["numberReady"], 1);
        assert_eq!(d.status["numberAvailable"], 0);
    }
}
