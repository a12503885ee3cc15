//! What a StatefulSet should do now, as a pure function of it, its pods,
//! the claims that exist and its two revisions (as Kubernetes'
//! `updateStatefulSet`):
//!
//! 1. every ordinal below `replicas` has a pod: missing ones are created
//!    (claims first), failed ones deleted to be made again. With
//!    OrderedReady one step at a time, each waiting for the pods before it
//!    to be Running, Ready and available; with Parallel all at once;
//! 2. pods at ordinals from `replicas` up are deleted, highest first (one
//!    at a time, and only once the others are healthy, with OrderedReady);
//! 3. RollingUpdate: from the highest ordinal down to `partition`, a pod not
//!    at the update revision is deleted (it comes back at the new one), one
//!    at a time, each waiting for the one above to be healthy again.
//!    OnDelete: pods are only replaced when someone deletes them.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::pod::{self, ordinal};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// A revision of the pod template: its ControllerRevision's name and
/// number, and the template it holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Revision {
    pub name: String,
    pub number: i64,
    pub template: Value,
}

/// A pod to create, with the claims it needs that do not exist yet.
#[derive(Debug, PartialEq)]
pub struct Creation {
    pub pod: Value,
    pub claims: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    ScaleDown,
    Update,
    Failed,
}

#[derive(Debug, PartialEq)]
pub struct Deletion {
    pub pod: String,
    pub why: Why,
    /// Claims to hand to the pod (whenScaled: Delete), so that they go
    /// with it: (claim, pod uid).
    pub claims: Vec<String>,
    pub uid: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Vec<Creation>,
    pub delete: Vec<Deletion>,
    /// Claims of existing pods that are missing (made again): (pod, claim).
    pub claims: Vec<(String, Value)>,
    /// (pod, merge patch) restoring identity labels.
    pub relabel: Vec<(String, Value)>,
    pub status: Value,
    /// When to look again without an event (minReadySeconds pending).
    pub requeue: Option<Duration>,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

fn is_failed(pod: &Pod) -> bool {
    matches!(phase(pod), "Failed" | "Succeeded")
}

/// When the pod turned Ready (seconds), if it is Running and Ready.
fn ready_since(pod: &Pod) -> Option<i64> {
    if phase(pod) != "Running" {
        return None;
    }
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(0, |t| t.0.as_second())
        })
}

fn is_running_and_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

/// Seconds until the pod counts as available (0: it does); none if it is
/// not ready.
fn until_available(pod: &Pod, min_ready: i64, now: i64) -> Option<i64> {
    ready_since(pod).map(|since| (since + min_ready - now).max(0))
}

fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
        .unwrap_or_default()
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

struct Spec {
    replicas: i32,
    parallel: bool,
    on_delete: bool,
    partition: i32,
    min_ready: i64,
}

fn spec_of(set: &StatefulSet) -> Spec {
    let spec = set.spec.as_ref();
    let strategy = spec.and_then(|s| s.update_strategy.as_ref());
    Spec {
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1).max(0),
        parallel: spec.and_then(|s| s.pod_management_policy.as_deref()) == Some("Parallel"),
        on_delete: strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete"),
        partition: strategy
            .and_then(|s| s.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0)
            .max(0),
        min_ready: i64::from(spec.and_then(|s| s.min_ready_seconds).unwrap_or(0).max(0)),
    }
}

/// The counts of the status, as Kubernetes' `computeReplicaStatus`.
fn status(
    set: &StatefulSet,
    pods: &[&Pod],
    current: &Revision,
    update: &Revision,
    min_ready: i64,
    now: i64,
) -> Value {
    let mut replicas = 0;
    let mut ready = 0;
    let mut available = 0;
    let mut current_count = 0;
    let mut updated = 0;
    for pod in pods {
        if !phase(pod).is_empty() {
            replicas += 1;
        }
        if is_running_and_ready(pod) {
            ready += 1;
            if until_available(pod, min_ready, now) == Some(0) {
                available += 1;
            }
        }
        if !phase(pod).is_empty() && !is_terminating(pod) {
            if revision_of(pod) == current.name {
                current_count += 1;
            }
            if revision_of(pod) == update.name {
                updated += 1;
            }
        }
    }
    let mut current_name = current.name.clone();
    let rolling = !spec_of(set).on_delete;
    // The rollout is complete: the update revision becomes the current one.
    if rolling && updated == replicas && ready == replicas {
        current_count = updated;
        current_name = update.name.clone();
    }
    json!({
        "observedGeneration": set.metadata.generation.unwrap_or(0),
        "replicas": replicas,
        "readyReplicas": ready,
        "availableReplicas": available,
        "currentReplicas": current_count,
        "updatedReplicas": updated,
        "currentRevision": current_name,
        "updateRevision": update.name,
    })
}

/// `pods` are those the set controls; `claims` the names of the claims in
/// its namespace; `now` in seconds.
pub fn decide(
    set: &StatefulSet,
    pods: &[Pod],
    claims: &BTreeSet<String>,
    current: &Revision,
    update: &Revision,
    now: i64,
) -> Plan {
    let spec = spec_of(set);
    let monotonic = !spec.parallel;
    let mut members: Vec<(i32, &Pod)> = pods
        .iter()
        .filter_map(|p| ordinal(set, p).map(|o| (o, p)))
        .collect();
    members.sort_by_key(|(o, _)| *o);
    let mut plan = Plan {
        status: status(
            set,
            &members.iter().map(|(_, p)| *p).collect::<Vec<_>>(),
            current,
            update,
            spec.min_ready,
            now,
        ),
        ..Plan::default()
    };
    if set.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let slot = |o: i32| members.iter().find(|(m, _)| *m == o).map(|(_, p)| *p);
    // Condemned: highest ordinal first.
    let condemned: Vec<&Pod> = members
        .iter()
        .rev()
        .filter(|(o, _)| *o >= spec.replicas)
        .map(|(_, p)| *p)
        .collect();
    let first_unhealthy = (0..spec.replicas)
        .filter_map(slot)
        .chain(condemned.iter().copied())
        .find(|p| !is_healthy(p))
        .map(name);

    let versioned = |o: i32| {
        // Below the partition pods stay at the current revision.
        if !spec.on_delete && o < spec.partition {
            current
        } else {
            update
        }
    };
    for o in 0..spec.replicas {
        let Some(pod) = slot(o) else {
            let missing: Vec<Value> = pod::new_claims(set, o)
                .into_iter()
                .filter(|c| !claims.contains(c["metadata"]["name"].as_str().unwrap_or_default()))
                .collect();
            plan.create.push(Creation {
                pod: pod::new_pod(set, versioned(o), o),
                claims: missing,
            });
            if monotonic {
                return plan;
            }
            continue;
        };
        if is_failed(pod) && !is_terminating(pod) {
            plan.delete.push(Deletion {
                pod: name(pod),
                why: Why::Failed,
                claims: Vec::new(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            });
            if monotonic {
                return plan;
            }
            continue;
        }
        if is_terminating(pod) || !is_running_and_ready(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        match until_available(pod, spec.min_ready, now) {
            Some(0) | None => {}
            Some(wait) => {
                if monotonic {
                    plan.requeue = Some(Duration::from_secs(wait as u64 + 1));
                    return plan;
                }
            }
        }
        if let Some(patch) = pod::identity_patch(pod, o) {
            plan.relabel.push((name(pod), patch));
        }
        plan.claims.extend(
            pod::new_claims(set, o)
                .into_iter()
                .filter(|c| !claims.contains(c["metadata"]["name"].as_str().unwrap_or_default()))
                .map(|c| (name(pod), c)),
        );
    }

    for pod in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        if monotonic && !is_running_and_ready(pod) && first_unhealthy != Some(name(pod)) {
            return plan;
        }
        let o = ordinal(set, pod).unwrap_or_default();
        plan.delete.push(Deletion {
            pod: name(pod),
            why: Why::ScaleDown,
            claims: if pod::delete_claims_when_scaled(set) {
                pod::claim_names(set, o)
                    .into_iter()
                    .filter(|c| claims.contains(c))
                    .collect()
            } else {
                Vec::new()
            },
            uid: pod.metadata.uid.clone().unwrap_or_default(),
        });
        if monotonic {
            return plan;
        }
    }

    if spec.on_delete {
        return plan;
    }
    for o in (spec.partition..spec.replicas).rev() {
        // A pod still to be made counts as not healthy yet.
        let Some(pod) = slot(o) else { return plan };
        if revision_of(pod) != update.name && !is_terminating(pod) {
            plan.delete.push(Deletion {
                pod: name(pod),
                why: Why::Update,
                claims: Vec::new(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
            });
            return plan;
        }
        if !is_healthy(pod) {
            return plan;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i32, extra: Value) -> StatefulSet {
        let mut value = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "generation": 4},
            "spec": {"replicas": replicas, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                     "podManagementPolicy": "OrderedReady",
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "i"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        });
        if let (Some(spec), Some(extra)) = (value["spec"].as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                spec.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(value).unwrap()
    }

    fn rev(name: &str) -> Revision {
        Revision {
            name: name.into(),
            number: 1,
            template: json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": name}]}}),
        }
    }

    /// `state`: "ready", "pending", "terminating", "failed".
    fn pod(name: &str, revision: &str, state: &str) -> Pod {
        let ready = state == "ready" || state == "terminating";
        let mut value = json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"app": "web", REVISION_LABEL: revision,
                          POD_NAME_LABEL: name, POD_INDEX_LABEL: name.rsplit('-').next().unwrap()}},
            "status": {"phase": match state { "pending" => "Pending", "failed" => "Failed", _ => "Running" },
                       "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        });
        if state == "terminating" {
            value["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        }
        serde_json::from_value(value).unwrap()
    }

    const NOW: i64 = 1_767_225_600 + 3600; // 2026-01-01T01:00:00Z

    fn claims(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn created(plan: &Plan) -> Vec<String> {
        plan.create
            .iter()
            .map(|c| c.pod["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn deleted(plan: &Plan) -> Vec<(String, Why)> {
        plan.delete.iter().map(|d| (d.pod.clone(), d.why)).collect()
    }

    #[test]
    fn ordered_ready_creates_one_at_a_time_claims_first() {
        let (r1, s) = (rev("r1"), set(3, json!({})));
        let plan = decide(&s, &[], &claims(&[]), &r1, &r1, NOW);
        assert_eq!(created(&plan), vec!["web-0"]);
        assert_eq!(plan.create[0].claims[0]["metadata"]["name"], "data-web-0");
        // web-0 not ready yet: wait.
        let plan = decide(
            &s,
            &[pod("web-0", "r1", "pending")],
            &claims(&["data-web-0"]),
            &r1,
            &r1,
            NOW,
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        assert_eq!(plan.status["replicas"], 1);
        assert_eq!(plan.status["readyReplicas"], 0);
        // Ready: web-1 next, its claim with it.
        let plan = decide(
            &s,
            &[pod("web-0", "r1", "ready")],
            &claims(&["data-web-0"]),
            &r1,
            &r1,
            NOW,
        );
        assert_eq!(created(&plan), vec!["web-1"]);
        assert_eq!(plan.create[0].claims.len(), 1);
        // A claim that exists is not made again.
        let plan = decide(
            &s,
            &[pod("web-0", "r1", "ready")],
            &claims(&["data-web-0", "data-web-1"]),
            &r1,
            &r1,
            NOW,
        );
        assert!(plan.create[0].claims.is_empty());
    }

    #[test]
    fn parallel_creates_all_and_min_ready_seconds_holds_back() {
        let r1 = rev("r1");
        let s = set(3, json!({"podManagementPolicy": "Parallel"}));
        let plan = decide(&s, &[], &claims(&[]), &r1, &r1, NOW);
        assert_eq!(created(&plan), vec!["web-0", "web-1", "web-2"]);

        let s = set(2, json!({"minReadySeconds": 7200}));
        let plan = decide(
            &s,
            &[pod("web-0", "r1", "ready")],
            &claims(&[]),
            &r1,
            &r1,
            NOW,
        );
        assert!(plan.create.is_empty());
        assert_eq!(plan.requeue, Some(Duration::from_secs(3601)));
        assert_eq!(plan.status["availableReplicas"], 0);
    }

    #[test]
    fn a_pod_that_exists_is_never_duplicated_and_a_failed_one_is_replaced() {
        let (r1, s) = (rev("r1"), set(3, json!({})));
        // web-1 is Unknown on a lost node (not ready): nothing happens.
        let mut lost = pod("web-1", "r1", "pending");
        lost.status.as_mut().unwrap().phase = Some("Unknown".into());
        let pods = [
            pod("web-0", "r1", "ready"),
            lost,
            pod("web-2", "r1", "ready"),
        ];
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert!(plan.create.is_empty() && plan.delete.is_empty(), "{plan:?}");
        // Terminating: waited for, not replaced.
        let pods = [
            pod("web-0", "r1", "ready"),
            pod("web-1", "r1", "terminating"),
        ];
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert!(plan.create.is_empty() && plan.delete.is_empty());
        // Failed: deleted (and made again once gone).
        let pods = [pod("web-0", "r1", "failed")];
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert_eq!(deleted(&plan), vec![("web-0".to_string(), Why::Failed)]);
    }

    #[test]
    fn scale_down_goes_from_the_highest_ordinal_one_at_a_time() {
        let (r1, s) = (rev("r1"), set(2, json!({})));
        let pods: Vec<Pod> = (0..4)
            .map(|i| pod(&format!("web-{i}"), "r1", "ready"))
            .collect();
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert_eq!(deleted(&plan), vec![("web-3".to_string(), Why::ScaleDown)]);
        let mut pods = pods;
        pods[3] = pod("web-3", "r1", "terminating");
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert!(plan.delete.is_empty(), "waits for web-3 to be gone");
        pods.pop();
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert_eq!(deleted(&plan), vec![("web-2".to_string(), Why::ScaleDown)]);
        assert!(plan.delete[0].claims.is_empty(), "claims are retained");
        // An unhealthy pod below blocks the scale-down.
        pods[0] = pod("web-0", "r1", "pending");
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r1, NOW);
        assert!(plan.delete.is_empty());
        // whenScaled: Delete hands the claims to the pod.
        let s = set(
            2,
            json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"}}),
        );
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("web-{i}"), "r1", "ready"))
            .collect();
        let plan = decide(&s, &pods, &claims(&["data-web-2"]), &r1, &r1, NOW);
        assert_eq!(plan.delete[0].claims, vec!["data-web-2"]);
    }

    #[test]
    fn rolling_update_respects_the_partition() {
        let (r1, r2) = (rev("r1"), rev("r2"));
        let s = set(
            3,
            json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}),
        );
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("web-{i}"), "r1", "ready"))
            .collect();
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert_eq!(deleted(&plan), vec![("web-2".to_string(), Why::Update)]);
        // Recreated at the new revision; the ones below stay.
        let plan = decide(&s, &pods[..2], &claims(&[]), &r1, &r2, NOW);
        assert_eq!(created(&plan), vec!["web-2"]);
        assert_eq!(
            plan.create[0].pod["metadata"]["labels"][REVISION_LABEL],
            "r2"
        );
        assert_eq!(plan.create[0].pod["spec"]["containers"][0]["image"], "r2");
        let mut pods = pods;
        pods[2] = pod("web-2", "r2", "ready");
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert!(plan.delete.is_empty() && plan.create.is_empty());
        assert_eq!(plan.status["updatedReplicas"], 1);
        assert_eq!(plan.status["currentReplicas"], 2);
        assert_eq!(plan.status["currentRevision"], "r1");
        assert_eq!(plan.status["updateRevision"], "r2");
        // web-0 lost below the partition comes back at the old revision.
        let plan = decide(&s, &pods[1..], &claims(&[]), &r1, &r2, NOW);
        assert_eq!(
            plan.create[0].pod["metadata"]["labels"][REVISION_LABEL],
            "r1"
        );

        // Partition 0: web-1 next, then web-0, each once the one above is
        // healthy.
        let s = set(3, json!({}));
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert_eq!(deleted(&plan), vec![("web-1".to_string(), Why::Update)]);
        pods[2] = pod("web-2", "r2", "pending");
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert!(plan.delete.is_empty());
        // All updated and ready: the update revision is current.
        let pods: Vec<Pod> = (0..3)
            .map(|i| pod(&format!("web-{i}"), "r2", "ready"))
            .collect();
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert_eq!(plan.status["currentRevision"], "r2");
        assert_eq!(plan.status["currentReplicas"], 3);
        assert_eq!(plan.status["observedGeneration"], 4);
    }

    #[test]
    fn on_delete_leaves_pods_alone() {
        let (r1, r2) = (rev("r1"), rev("r2"));
        let s = set(2, json!({"updateStrategy": {"type": "OnDelete"}}));
        let pods: Vec<Pod> = (0..2)
            .map(|i| pod(&format!("web-{i}"), "r1", "ready"))
            .collect();
        let plan = decide(&s, &pods, &claims(&[]), &r1, &r2, NOW);
        assert!(plan.delete.is_empty());
        let plan = decide(&s, &pods[..1], &claims(&[]), &r1, &r2, NOW);
        assert_eq!(
            plan.create[0].pod["metadata"]["labels"][REVISION_LABEL],
            "r2"
        );
    }
}
