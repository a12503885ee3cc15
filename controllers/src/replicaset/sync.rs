//! What a ReplicaSet should do now, as a pure function of it and the pods
//! its selector matches: adopt orphans, create or delete pods to reach the
//! desired count, and the status to report.

pub use crate::controller_uid;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use shoal_core::pod::is_active;
pub use shoal_core::pod::is_ready;
use shoal_core::selector;

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// Pods (names) to adopt: they match the selector and have no
    /// controller.
    pub adopt: Vec<String>,
    /// How many pods to create.
    pub create: usize,
    /// Pods (names) to delete, the least valuable first.
    pub delete: Vec<String>,
    /// The status to write.
    pub status: Value,
}

/// At most this many pods are created in one pass, as Kubernetes' burst.
pub const BURST: usize = 500;

/// The ReplicaSet's selector; `None` when it is missing or empty (which
/// selects nothing here).
pub fn selector(rs: &ReplicaSet) -> Option<&LabelSelector> {
    Some(&rs.spec.as_ref()?.selector).filter(|s| !selector::is_empty(s))
}

/// Whether a ReplicaSet's selector matches the pod's labels.
pub fn selects(selector: &LabelSelector, pod: &Pod) -> bool {
    selector::matches(selector, pod.metadata.labels.as_ref())
}

/// Which pod to give up first: unscheduled before scheduled, pending
/// before running, not ready before ready, newer before older (as
/// Kubernetes' ActivePods ordering).
fn deletion_rank(pod: &Pod) -> (u8, u8, u8, i64) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Unknown") => 1,
        _ => 2,
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0);
    (
        u8::from(scheduled),
        phase,
        u8::from(is_ready(pod)),
        -created,
    )
}

pub fn decide<'a>(rs: &ReplicaSet, pods: impl IntoIterator<Item = &'a Pod>) -> Decision {
    let uid = rs.metadata.uid.as_deref().unwrap_or_default();
    let wanted = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let Some(selector) = selector(rs) else {
        return Decision::default();
    };
    let mut decision = Decision::default();
    let mut owned: Vec<&Pod> = Vec::new();
    for pod in pods {
        if !selects(selector, pod) {
            continue;
        }
        match controller_uid(pod) {
            Some(owner) if owner == uid => owned.push(pod),
            Some(_) => {}
            None if is_active(pod) && rs.metadata.deletion_timestamp.is_none() => {
                decision
                    .adopt
                    .push(pod.metadata.name.clone().unwrap_or_default());
                owned.push(pod);
            }
            None => {}
        }
    }
    let mut active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    if active.len() < wanted {
        decision.create = (wanted - active.len()).min(BURST);
    } else if active.len() > wanted {
        active.sort_by_key(|p| deletion_rank(p));
        decision.delete = active[..active.len() - wanted]
            .iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
    }
    let no_labels = std::collections::BTreeMap::new();
    let template_labels = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .unwrap_or(&no_labels);
    let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let fully_labeled = active
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref();
            template_labels
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
        })
        .count();
    let ready = active.iter().filter(|p| is_ready(p)).count();
    decision.status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": rs.metadata.generation.unwrap_or(0),
    });
    decision
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "uid": "rs-1", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: Option<&str>, node: Option<&str>, ready: bool, created: &str) -> Pod {
        let mut value = json!({
            "metadata": {"name": name, "labels": {"app": "web"}, "creationTimestamp": created},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": if node.is_some() { "Running" } else { "Pending" },
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if let Some(uid) = owner {
            value["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]);
        }
        if let Some(n) = node {
            value["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn creates_what_is_missing_and_adopts_orphans() {
        let pods = vec![
            pod("a", Some("rs-1"), Some("n1"), true, "2026-01-01T00:00:00Z"),
            pod("orphan", None, Some("n1"), false, "2026-01-01T00:00:01Z"),
        ];
        let d = decide(&rs(3), &pods);
        assert_eq!(d.adopt, vec!["orphan"]);
        assert_eq!(d.create, 1);
        assert!(d.delete.is_empty());
        assert_eq!(d.status["replicas"], 2);
        assert_eq!(d.status["readyReplicas"], 1);
        assert_eq!(d.status["observedGeneration"], 2);
    }

    #[test]
    fn deletes_the_least_valuable_first() {
        let pods = vec![
            pod(
                "old-ready",
                Some("rs-1"),
                Some("n1"),
                true,
                "2026-01-01T00:00:00Z",
            ),
            pod(
                "new-ready",
                Some("rs-1"),
                Some("n1"),
                true,
                "2026-01-01T00:01:00Z",
            ),
            pod(
                "unscheduled",
                Some("rs-1"),
                None,
                false,
                "2026-01-01T00:00:30Z",
            ),
            pod(
                "others",
                Some("other-rs"),
                Some("n1"),
                true,
                "2026-01-01T00:00:00Z",
            ),
        ];
        let d = decide(&rs(1), &pods);
        assert_eq!(d.delete, vec!["unscheduled", "new-ready"]);
        assert_eq!(d.create, 0);
    }
}
