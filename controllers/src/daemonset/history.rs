//! A DaemonSet's revisions as ControllerRevisions `<ds>-<hash>`, as
//! Kubernetes keeps them (and as `kubectl rollout history|undo ds/x` reads
//! them): `data` is the strategic merge patch that puts the template back
//! (`{"spec":{"template":{...,"$patch":"replace"}}}`), `revision` counts up,
//! the labels are the template's plus `controller-revision-hash`.
//!
//! `plan` is pure: which revision is current (an existing one whose
//! template matches, moved to the top after a rollback, or a new one) and
//! which old ones to drop beyond `revisionHistoryLimit`.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use serde_json::{json, Value};

use super::sync::HASH_LABEL;
use crate::deployment::sync::template_hash;
use shoal_core::json::strip_nulls;

/// The template as compared and hashed: nulls dropped.
pub fn template(ds: &DaemonSet) -> Value {
    let mut value = ds
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
        .unwrap_or(Value::Null);
    strip_nulls(&mut value);
    value
}

/// The revision's `data`.
pub fn data(ds: &DaemonSet) -> Value {
    let mut template = template(ds);
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// Whether `revision` holds the DaemonSet's current template.
pub fn matches(ds: &DaemonSet, revision: &ControllerRevision) -> bool {
    let Some(mut stored) = revision
        .data
        .as_ref()
        .and_then(|d| d.0.pointer("/spec/template").cloned())
    else {
        return false;
    };
    if let Some(map) = stored.as_object_mut() {
        map.remove("$patch");
    }
    strip_nulls(&mut stored);
    // Through the typed template, so that defaults and field order compare
    // equal however the revision was written.
    let typed = serde_json::from_value::<k8s_openapi::api::core::v1::PodTemplateSpec>(stored)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .map(|mut v| {
            strip_nulls(&mut v);
            v
        });
    typed.as_ref() == Some(&template(ds))
}

pub fn hash_of(revision: &ControllerRevision) -> Option<&str> {
    revision
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map(String::as_str)
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The hash pods of the current template carry.
    pub hash: String,
    /// A revision to create (its JSON).
    pub create: Option<Value>,
    /// An existing revision that becomes current again: (name, revision).
    pub renumber: Option<(String, i64)>,
    /// Old revisions to delete.
    pub delete: Vec<String>,
}

/// The ControllerRevision for the current template at `revision`.
pub fn new_revision(ds: &DaemonSet, hash: &str, revision: i64) -> Value {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let mut labels = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    json!({
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": {
            "name": format!("{name}-{hash}"),
            "labels": labels,
            "annotations": ds.metadata.annotations.clone(),
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "DaemonSet",
                "name": name,
                "uid": ds.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "data": data(ds),
        "revision": revision,
    })
}

/// `revisions` are the ones the DaemonSet controls; `live_hashes` the
/// hashes its pods carry (a revision in use is never dropped).
pub fn plan(
    ds: &DaemonSet,
    revisions: &[ControllerRevision],
    live_hashes: &BTreeSet<String>,
) -> Plan {
    let mut plan = Plan::default();
    let max = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let mut current: Vec<&ControllerRevision> =
        revisions.iter().filter(|r| matches(ds, r)).collect();
    current.sort_by_key(|r| std::cmp::Reverse(r.revision));
    let current_name = match current.first() {
        Some(existing) => {
            plan.hash = hash_of(existing).unwrap_or_default().to_string();
            if existing.revision < max {
                plan.renumber = Some((existing.metadata.name.clone().unwrap_or_default(), max + 1));
            }
            existing.metadata.name.clone()
        }
        None => {
            let collisions = ds
                .status
                .as_ref()
                .and_then(|s| s.collision_count)
                .unwrap_or(0);
            plan.hash = template_hash(&template(ds), collisions);
            plan.create = Some(new_revision(ds, &plan.hash, max + 1));
            None
        }
    };
    // Duplicates of the current template are dropped too.
    let mut old: Vec<&ControllerRevision> = revisions
        .iter()
        .filter(|r| r.metadata.name != current_name)
        .collect();
    old.sort_by_key(|r| r.revision);
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut excess = old.len().saturating_sub(limit);
    for r in old {
        if excess == 0 {
            break;
        }
        if hash_of(r).is_some_and(|h| live_hashes.contains(h)) {
            continue;
        }
        plan.delete
            .push(r.metadata.name.clone().unwrap_or_default());
        excess -= 1;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(image: &str, limit: i32) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "fluentd", "uid": "ds-1", "generation": 1, "annotations": {"kubernetes.io/change-cause": "x"}},
            "spec": {
                "selector": {"matchLabels": {"app": "fluentd"}},
                "revisionHistoryLimit": limit,
                "template": {"metadata": {"labels": {"app": "fluentd"}},
                             "spec": {"containers": [{"name": "c", "image": image}]}}
            }
        }))
        .unwrap()
    }

    fn stored(ds: &DaemonSet, revision: i64) -> ControllerRevision {
        let hash = template_hash(&template(ds), 0);
        let mut value = new_revision(ds, &hash, revision);
        value["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_new_template_gets_the_next_revision() {
        let v1 = ds("i:1", 10);
        let plan = plan(&v1, &[], &BTreeSet::new());
        let created = plan.create.unwrap();
        assert_eq!(created["revision"], 1);
        assert_eq!(
            created["metadata"]["name"],
            format!("fluentd-{}", plan.hash)
        );
        assert_eq!(created["metadata"]["labels"][HASH_LABEL], plan.hash);
        assert_eq!(created["metadata"]["labels"]["app"], "fluentd");
        assert_eq!(created["data"]["spec"]["template"]["$patch"], "replace");
        assert_eq!(
            created["metadata"]["annotations"]["kubernetes.io/change-cause"],
            "x"
        );

        let history = vec![stored(&v1, 1)];
        let again = super::plan(&v1, &history, &BTreeSet::new());
        assert_eq!(again.create, None);
        assert_eq!(again.renumber, None);
        assert_eq!(again.hash, hash_of(&history[0]).unwrap());

        let v2 = ds("i:2", 10);
        let next = super::plan(&v2, &history, &BTreeSet::new());
        assert_eq!(next.create.unwrap()["revision"], 2);
        assert_ne!(next.hash, again.hash);
    }

    #[test]
    fn a_rollback_renumbers_and_old_ones_are_dropped() {
        let history = vec![
            stored(&ds("i:1", 1), 1),
            stored(&ds("i:2", 1), 2),
            stored(&ds("i:3", 1), 3),
        ];
        let plan = plan(&ds("i:1", 1), &history, &BTreeSet::new());
        assert_eq!(
            plan.renumber,
            Some((history[0].metadata.name.clone().unwrap(), 4))
        );
        assert_eq!(plan.delete, vec![history[1].metadata.name.clone().unwrap()]);

        // A revision pods still use is kept; the next old one goes instead.
        let live = BTreeSet::from([hash_of(&history[1]).unwrap().to_string()]);
        let plan = super::plan(&ds("i:1", 1), &history, &live);
        assert_eq!(plan.delete, vec![history[2].metadata.name.clone().unwrap()]);
    }
}
