//! What a Deployment should do now, as a pure function of it and the
//! ReplicaSets it owns: which ReplicaSet runs its current template (made if
//! missing, named `<deployment>-<pod-template-hash>`), the replica count of
//! each ReplicaSet after this step of the strategy, revisions, the history
//! to drop, and the status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use serde_json::{json, Value};

use super::rolling::{scale_new, scale_olds, surge_and_unavailable, Set};

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const CHANGE_CAUSE: &str = "kubernetes.io/change-cause";

#[derive(Debug, Default)]
pub struct Plan {
    /// A ReplicaSet to create (its JSON).
    pub create: Option<Value>,
    /// (ReplicaSet, new spec.replicas) for each that changes.
    pub scale: Vec<(String, i32)>,
    /// (ReplicaSet, revision) for each whose revision annotation changes.
    pub revisions: Vec<(String, String)>,
    /// Old ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    /// The revision the Deployment is at.
    pub revision: String,
    pub status: Value,
}

/// Kubernetes' alphabet for generated names (no vowels, no look-alikes).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash: FNV-1a (32 bit) over the template (and the
/// collision count), written in the name alphabet.
pub fn template_hash(template: &Value, collisions: i32) -> String {
    let mut text = serde_json::to_vec(template).unwrap_or_default();
    if collisions > 0 {
        text.extend(collisions.to_string().bytes());
    }
    let hash = text.iter().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x01000193)
    });
    hash.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// A template with the pod-template-hash label taken out, for comparing.
fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
        if labels.is_empty() {
            if let Some(meta) = t.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("labels");
            }
        }
    }
    strip_empty(&mut t);
    t
}

/// Drops nulls, so that templates compare equal however they were written.
fn strip_empty(value: &mut Value) {
    if let Value::Object(map) = value {
        map.retain(|_, v| !v.is_null());
        for v in map.values_mut() {
            strip_empty(v);
        }
    } else if let Value::Array(items) = value {
        for v in items {
            strip_empty(v);
        }
    }
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn name(rs: &ReplicaSet) -> String {
    rs.metadata.name.clone().unwrap_or_default()
}

pub fn plan(d: &Deployment, sets: &[ReplicaSet]) -> Plan {
    let mut plan = Plan::default();
    let Some(spec) = &d.spec else { return plan };
    let desired = spec.replicas.unwrap_or(1).max(0);
    let template = serde_json::to_value(&spec.template).unwrap_or(Value::Null);
    let current = without_hash(&template);
    let collisions = d
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let hash = template_hash(&current, collisions);
    let d_name = d.metadata.name.clone().unwrap_or_default();

    let mut sets: Vec<&ReplicaSet> = sets.iter().collect();
    sets.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            name(rs),
        )
    });
    let new = sets.iter().copied().find(|rs| {
        rs.spec
            .as_ref()
            .and_then(|s| serde_json::to_value(&s.template).ok())
            .is_some_and(|t| without_hash(&t) == current)
    });
    let olds: Vec<&ReplicaSet> = sets
        .iter()
        .copied()
        .filter(|rs| Some(name(rs)) != new.map(name))
        .collect();
    let max_old_revision = olds.iter().map(|rs| revision_of(rs)).max().unwrap_or(0);

    let strategy = spec.strategy.as_ref();
    let recreate = strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());
    let (surge, unavailable) = if recreate {
        (0, desired)
    } else {
        surge_and_unavailable(
            rolling
                .and_then(|r| r.max_surge.as_ref())
                .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                .as_ref(),
            rolling
                .and_then(|r| r.max_unavailable.as_ref())
                .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                .as_ref(),
            desired,
        )
    };
    let old_sets: Vec<Set> = olds
        .iter()
        .map(|rs| Set {
            name: name(rs),
            replicas: replicas(rs),
            available: available(rs),
        })
        .collect();
    let paused = spec.paused == Some(true);

    let new_set = match new {
        Some(rs) => {
            let revision = revision_of(rs);
            plan.revision = if revision > max_old_revision {
                revision.to_string()
            } else {
                // Rolled back to an older template: it becomes the newest.
                let next = (max_old_revision + 1).to_string();
                plan.revisions.push((name(rs), next.clone()));
                next
            };
            Set {
                name: name(rs),
                replicas: replicas(rs),
                available: available(rs),
            }
        }
        None if paused => {
            plan.revision = max_old_revision.to_string();
            Set {
                name: String::new(),
                replicas: 0,
                available: 0,
            }
        }
        None => {
            let rs_name = format!("{d_name}-{hash}");
            let start = Set {
                name: rs_name.clone(),
                replicas: 0,
                available: 0,
            };
            let initial = if recreate {
                if old_sets.iter().all(|s| s.replicas == 0) {
                    desired
                } else {
                    0
                }
            } else {
                scale_new(desired, surge, &start, &old_sets)
            };
            plan.revision = (max_old_revision + 1).to_string();
            let mut labels: BTreeMap<String, String> = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(HASH_LABEL.into(), hash.clone());
            let mut rs_template = template.clone();
            rs_template["metadata"]["labels"] = json!(labels);
            let mut selector = serde_json::to_value(&spec.selector).unwrap_or(json!({}));
            selector["matchLabels"][HASH_LABEL] = json!(hash);
            let mut annotations = BTreeMap::from([
                (REVISION.to_string(), plan.revision.clone()),
                (
                    "deployment.kubernetes.io/desired-replicas".to_string(),
                    desired.to_string(),
                ),
                (
                    "deployment.kubernetes.io/max-replicas".to_string(),
                    (desired + surge).to_string(),
                ),
            ]);
            if let Some(cause) = d
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(CHANGE_CAUSE))
            {
                annotations.insert(CHANGE_CAUSE.into(), cause.clone());
            }
            plan.create = Some(json!({
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": rs_name,
                    "namespace": d.metadata.namespace,
                    "labels": labels,
                    "annotations": annotations,
                    "ownerReferences": [{
                        "apiVersion": "apps/v1", "kind": "Deployment", "name": d_name,
                        "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true,
                    }],
                },
                "spec": {
                    "replicas": initial,
                    "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
                    "selector": selector,
                    "template": rs_template,
                },
            }));
            Set {
                name: rs_name,
                replicas: initial,
                available: 0,
            }
        }
    };

    // Scale per the strategy (a paused Deployment only follows replicas).
    let mut targets: Vec<(String, i32)> = Vec::new();
    if paused {
        if !new_set.name.is_empty()
            && new_set.replicas != desired
            && old_sets.iter().all(|s| s.replicas == 0)
        {
            targets.push((new_set.name.clone(), desired));
        }
    } else if recreate {
        let old_running: i32 = old_sets.iter().map(|s| s.replicas.max(s.available)).sum();
        for s in &old_sets {
            if s.replicas != 0 {
                targets.push((s.name.clone(), 0));
            }
        }
        if old_running == 0 && new_set.replicas != desired {
            targets.push((new_set.name.clone(), desired));
        }
    } else {
        let grown = scale_new(desired, surge, &new_set, &old_sets);
        if grown != new_set.replicas && plan.create.is_none() {
            targets.push((new_set.name.clone(), grown));
        }
        let grown_set = Set {
            replicas: grown,
            ..new_set.clone()
        };
        for (s, count) in
            old_sets
                .iter()
                .zip(scale_olds(desired, unavailable, &grown_set, &old_sets))
        {
            if count != s.replicas {
                targets.push((s.name.clone(), count));
            }
        }
    }
    plan.scale = targets;

    // History beyond revisionHistoryLimit: the oldest empty ReplicaSets.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut empty: Vec<&ReplicaSet> = olds
        .iter()
        .copied()
        .filter(|rs| replicas(rs) == 0 && rs.status.as_ref().map(|s| s.replicas).unwrap_or(0) == 0)
        .filter(|rs| !plan.scale.iter().any(|(n, c)| *n == name(rs) && *c > 0))
        .collect();
    empty.sort_by_key(|rs| revision_of(rs));
    if empty.len() > limit {
        plan.delete = empty[..empty.len() - limit]
            .iter()
            .map(|rs| name(rs))
            .collect();
    }

    plan.status = status(d, desired, unavailable, &sets, new, &plan);
    plan
}

fn status(
    d: &Deployment,
    desired: i32,
    unavailable: i32,
    sets: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    plan: &Plan,
) -> Value {
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| sets.iter().map(|rs| f(rs)).sum::<i32>();
    let total = sum(&|rs| rs.status.as_ref().map(|s| s.replicas).unwrap_or(0));
    let ready = sum(&|rs| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    });
    let available_now = sum(&available);
    let updated = new
        .and_then(|rs| rs.status.as_ref().map(|s| s.replicas))
        .unwrap_or(0);
    let now = shoal_core::time::now();
    let previous = |kind: &str| {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == kind).cloned())
    };
    let condition = |kind: &str, status: &str, reason: &str, message: String| {
        let old = previous(kind);
        let transition = match &old {
            Some(c) if c.status == status => c
                .last_transition_time
                .as_ref()
                .map(|t| shoal_core::time::format_time(t.0))
                .unwrap_or(now.clone()),
            _ => now.clone(),
        };
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastUpdateTime": now, "lastTransitionTime": transition})
    };
    let available_ok = available_now >= desired - unavailable;
    let available_condition = if available_ok {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
        )
    };
    let new_name = new
        .map(name)
        .or_else(|| {
            plan.create
                .as_ref()
                .and_then(|c| c["metadata"]["name"].as_str().map(String::from))
        })
        .unwrap_or_default();
    let complete =
        updated == desired && total == desired && available_now >= desired && plan.create.is_none();
    let progressing = if complete {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_name}\" has successfully progressed."),
        )
    } else if plan.create.is_some() {
        condition(
            "Progressing",
            "True",
            "NewReplicaSetCreated",
            format!("Created new replica set \"{new_name}\""),
        )
    } else {
        condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_name}\" is progressing."),
        )
    };
    json!({
        "observedGeneration": d.metadata.generation.unwrap_or(0),
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available_now,
        "unavailableReplicas": (desired - available_now).max(0),
        "conditions": [available_condition, progressing],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-1", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn as_rs(created: &Value, replicas: i32, available: i32) -> ReplicaSet {
        let mut rs: ReplicaSet = serde_json::from_value(created.clone()).unwrap();
        rs.spec.as_mut().unwrap().replicas = Some(replicas);
        rs.status = Some(serde_json::from_value(json!({"replicas": replicas, "availableReplicas": available, "readyReplicas": available})).unwrap());
        rs
    }

    #[test]
    fn a_new_deployment_gets_a_hashed_replica_set_at_revision_1() {
        let d = deployment("nginx:1.25", 3);
        let p = plan(&d, &[]);
        let created = p.create.unwrap();
        let name = created["metadata"]["name"].as_str().unwrap();
        let hash = created["metadata"]["labels"][HASH_LABEL].as_str().unwrap();
        assert_eq!(name, format!("web-{hash}"));
        assert_eq!(created["spec"]["selector"]["matchLabels"][HASH_LABEL], hash);
        assert_eq!(created["spec"]["replicas"], 3);
        assert_eq!(p.revision, "1");
    }

    #[test]
    fn an_image_change_rolls_one_pod_at_a_time() {
        let first = plan(&deployment("nginx:1.25", 3), &[]).create.unwrap();
        let old = as_rs(&first, 3, 3);
        let d = deployment("nginx:1.26", 3);
        let p = plan(&d, std::slice::from_ref(&old));
        let created = p.create.clone().unwrap();
        assert_eq!(created["spec"]["replicas"], 1, "maxSurge 25% of 3 = 1");
        assert_eq!(p.revision, "2");
        assert!(
            p.scale.is_empty(),
            "old pods stay until the new one is available: {:?}",
            p.scale
        );
        let new = as_rs(&created, 1, 1);
        let p = plan(&d, &[old.clone(), new]);
        let old_name = old.metadata.name.clone().unwrap();
        assert!(p.scale.contains(&(old_name, 2)), "{:?}", p.scale);
    }

    #[test]
    fn the_hash_is_stable_and_alphanumeric() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {}});
        assert_eq!(template_hash(&t, 0), template_hash(&t, 0));
        assert_ne!(template_hash(&t, 0), template_hash(&t, 1));
        assert!(template_hash(&t, 0).bytes().all(|b| ALPHABET.contains(&b)));
    }
}
