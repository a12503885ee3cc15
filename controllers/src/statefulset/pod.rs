//! The identity of a StatefulSet's pods and claims: pod `<set>-<ordinal>`
//! with its hostname, subdomain, identity labels and claim volumes; claim
//! `<template>-<set>-<ordinal>` per volumeClaimTemplate.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::sync::{Revision, POD_INDEX_LABEL, POD_NAME_LABEL, REVISION_LABEL};

pub fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!("{}-{ordinal}", set_name(set))
}

/// The ordinal of a pod of `set` (`web-3` → 3); none for other names.
pub fn ordinal(set: &StatefulSet, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let digits = name.strip_prefix(set_name(set))?.strip_prefix('-')?;
    let n: i32 = digits.parse().ok()?;
    // `web-01` is not a pod of `web`: names are written without padding.
    (n >= 0 && n.to_string() == digits).then_some(n)
}

pub fn claim_name(template: &str, set: &StatefulSet, ordinal: i32) -> String {
    format!("{template}-{}-{ordinal}", set_name(set))
}

pub fn owner_reference(set: &StatefulSet) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": set_name(set),
        "uid": set.metadata.uid.clone().unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

fn claim_templates(set: &StatefulSet) -> Vec<Value> {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| serde_json::to_value(t).ok())
        .collect()
}

fn template_name(template: &Value) -> &str {
    template
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The names of the claims of the pod at `ordinal`, by template name.
pub fn claim_names(set: &StatefulSet, ordinal: i32) -> Vec<String> {
    claim_templates(set)
        .iter()
        .map(|t| claim_name(template_name(t), set, ordinal))
        .collect()
}

fn retention(set: &StatefulSet, which: &str) -> bool {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let value = match which {
        "whenDeleted" => policy.and_then(|p| p.when_deleted.as_deref()),
        _ => policy.and_then(|p| p.when_scaled.as_deref()),
    };
    value == Some("Delete")
}

/// Claims of scaled-down pods are deleted with them.
pub fn delete_claims_when_scaled(set: &StatefulSet) -> bool {
    retention(set, "whenScaled")
}

/// The claims of the pod at `ordinal`, as they are created.
pub fn new_claims(set: &StatefulSet, ordinal: i32) -> Vec<Value> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .into_iter()
        .map(|template| {
            let mut labels: BTreeMap<String, Value> = template
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|m| m.clone().into_iter().collect())
                .unwrap_or_default();
            for (k, v) in &selector_labels {
                labels.insert(k.clone(), json!(v));
            }
            let mut metadata = json!({
                "name": claim_name(template_name(&template), set, ordinal),
                "namespace": set.metadata.namespace,
                "labels": labels,
            });
            if let Some(annotations) = template.pointer("/metadata/annotations") {
                metadata["annotations"] = annotations.clone();
            }
            // With whenDeleted: Delete the set owns its claims, so they go
            // with it; otherwise they outlive it.
            if retention(set, "whenDeleted") {
                let mut owner = owner_reference(set);
                owner["controller"] = json!(false);
                metadata["ownerReferences"] = json!([owner]);
            }
            let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
            if let Some(map) = spec.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            json!({
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": metadata,
                "spec": spec,
            })
        })
        .collect()
}

/// The pod at `ordinal` from the template of `revision`.
pub fn new_pod(set: &StatefulSet, revision: &Revision, ordinal: i32) -> Value {
    let name = pod_name(set, ordinal);
    let template = &revision.template;
    let mut labels = template
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(POD_NAME_LABEL.into(), json!(name));
    labels.insert(POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
    labels.insert(REVISION_LABEL.into(), json!(revision.name));
    let mut metadata = json!({
        "name": name,
        "namespace": set.metadata.namespace,
        "labels": labels,
        "ownerReferences": [owner_reference(set)],
    });
    if let Some(annotations) = template.pointer("/metadata/annotations") {
        metadata["annotations"] = annotations.clone();
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["hostname"] = json!(name);
    let service = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .unwrap_or_default();
    if !service.is_empty() {
        spec["subdomain"] = json!(service);
    }
    // Claim volumes first, then the template's other volumes.
    let claims = claim_templates(set);
    let mut volumes: Vec<Value> = claims
        .iter()
        .map(|t| {
            json!({
                "name": template_name(t),
                "persistentVolumeClaim": {"claimName": claim_name(template_name(t), set, ordinal)},
            })
        })
        .collect();
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = volume
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !claims.iter().any(|t| template_name(t) == name) {
            volumes.push(volume.clone());
        }
    }
    if !volumes.is_empty() {
        spec["volumes"] = Value::Array(volumes);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// The identity labels a pod lacks (a pod adopted, or relabelled by
/// someone), as a merge patch of its labels.
pub fn identity_patch(pod: &Pod, ordinal: i32) -> Option<Value> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut missing = serde_json::Map::new();
    if labels.get(POD_NAME_LABEL) != Some(&name) {
        missing.insert(POD_NAME_LABEL.into(), json!(name));
    }
    if labels.get(POD_INDEX_LABEL) != Some(&ordinal.to_string()) {
        missing.insert(POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
    }
    (!missing.is_empty()).then(|| json!({"metadata": {"labels": missing}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "postgres", "namespace": "db", "uid": "u-1"},
            "spec": {"replicas": 3, "serviceName": "postgres", "selector": {"matchLabels": {"app": "postgres"}},
                     "template": {"metadata": {"labels": {"app": "postgres"}},
                                  "spec": {"containers": [{"name": "c", "image": "postgres:15"}],
                                           "volumes": [{"name": "scratch", "emptyDir": {}}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn pods_carry_their_identity_and_claims() {
        let set = set();
        let revision = Revision {
            name: "postgres-abc".into(),
            number: 1,
            template: super::super::revision::template_of_set(&set),
        };
        let pod = new_pod(&set, &revision, 2);
        assert_eq!(pod["metadata"]["name"], "postgres-2");
        assert_eq!(pod["metadata"]["labels"][POD_NAME_LABEL], "postgres-2");
        assert_eq!(pod["metadata"]["labels"][POD_INDEX_LABEL], "2");
        assert_eq!(pod["metadata"]["labels"][REVISION_LABEL], "postgres-abc");
        assert_eq!(pod["metadata"]["labels"]["app"], "postgres");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(pod["spec"]["hostname"], "postgres-2");
        assert_eq!(pod["spec"]["subdomain"], "postgres");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-postgres-2"}},
                   {"name": "scratch", "emptyDir": {}}])
        );
        let claims = new_claims(&set, 2);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "data-postgres-2");
        assert_eq!(claims[0]["metadata"]["namespace"], "db");
        assert_eq!(claims[0]["metadata"]["labels"]["app"], "postgres");
        assert!(claims[0]["metadata"].get("ownerReferences").is_none());
        assert_eq!(
            claims[0]["spec"]["resources"]["requests"]["storage"],
            "10Gi"
        );
    }

    #[test]
    fn ordinals_come_from_exact_names() {
        let set = set();
        let pod = |name: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
        };
        assert_eq!(ordinal(&set, &pod("postgres-0")), Some(0));
        assert_eq!(ordinal(&set, &pod("postgres-12")), Some(12));
        assert_eq!(ordinal(&set, &pod("postgres-01")), None);
        assert_eq!(ordinal(&set, &pod("postgres-x")), None);
        assert_eq!(ordinal(&set, &pod("postgresql-1")), None);
        assert_eq!(ordinal(&set, &pod("postgres--1")), None);
    }
}
