//! The revisions of a StatefulSet's pod template, kept as
//! ControllerRevisions named `<set>-<hash>`: which one the current template
//! is (made if missing, renumbered when a rollback returns to it), which one
//! the pods not yet updated run, and which old ones fall out of the history.
//!
//! A revision's data is the strategic merge patch that restores the
//! template, `{"spec":{"template":{..., "$patch":"replace"}}}`, exactly what
//! `kubectl rollout undo` applies.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use serde_json::{json, Value};

use super::sync::{Revision, REVISION_LABEL};
use crate::deployment::sync::template_hash;
use shoal_core::json::strip_nulls;

/// Kubernetes cuts the set's name so that the revision's name stays a
/// valid object name.
const MAX_PREFIX: usize = 223;

#[derive(Debug, Default)]
pub struct History {
    /// The revision of the set's template (what pods are updated to).
    pub update: Revision,
    /// The revision the pods not yet updated run.
    pub current: Revision,
    /// A ControllerRevision to create (its JSON).
    pub create: Option<Value>,
    /// (revision, new number): an older revision the template returned to.
    pub renumber: Option<(String, i64)>,
    pub collision_count: i32,
}

/// The set's pod template as JSON, without nulls.
pub fn template_of_set(set: &StatefulSet) -> Value {
    let mut template = set
        .spec
        .as_ref()
        .and_then(|s| serde_json::to_value(&s.template).ok())
        .unwrap_or_else(|| json!({}));
    strip_nulls(&mut template);
    template
}

/// The revision data of the set's current template.
pub fn patch_of(set: &StatefulSet) -> Value {
    let mut template = template_of_set(set);
    if let Some(map) = template.as_object_mut() {
        map.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The template a revision's data restores.
pub fn template_of(data: &Value) -> Value {
    let mut template = data
        .pointer("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = template.as_object_mut() {
        map.remove("$patch");
    }
    strip_nulls(&mut template);
    template
}

fn data_of(revision: &ControllerRevision) -> Value {
    let mut data = revision
        .data
        .as_ref()
        .map(|d| d.0.clone())
        .unwrap_or(Value::Null);
    strip_nulls(&mut data);
    data
}

fn name_of(revision: &ControllerRevision) -> String {
    revision.metadata.name.clone().unwrap_or_default()
}

pub fn revision_name(set: &str, hash: &str) -> String {
    let prefix: String = set.chars().take(MAX_PREFIX).collect();
    format!("{prefix}-{hash}")
}

fn as_revision(revision: &ControllerRevision) -> Revision {
    Revision {
        name: name_of(revision),
        number: revision.revision,
        template: template_of(&data_of(revision)),
    }
}

/// Oldest first, as Kubernetes sorts histories.
fn sorted(revisions: &[ControllerRevision]) -> Vec<&ControllerRevision> {
    let mut sorted: Vec<&ControllerRevision> = revisions.iter().collect();
    sorted.sort_by(|a, b| {
        a.revision
            .cmp(&b.revision)
            .then_with(|| {
                a.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            })
            .then_with(|| name_of(a).cmp(&name_of(b)))
    });
    sorted
}

/// The history of `set` given the revisions it owns.
pub fn resolve(set: &StatefulSet, revisions: &[ControllerRevision]) -> History {
    let set_name = set.metadata.name.clone().unwrap_or_default();
    let patch = patch_of(set);
    let mut wanted = patch.clone();
    strip_nulls(&mut wanted);
    let sorted = sorted(revisions);
    let next = sorted.last().map_or(1, |r| r.revision + 1);
    let mut history = History {
        collision_count: set
            .status
            .as_ref()
            .and_then(|s| s.collision_count)
            .unwrap_or(0),
        ..History::default()
    };
    let equal = sorted.iter().rev().find(|r| data_of(r) == wanted);
    history.update = match equal {
        Some(found) => {
            let mut revision = as_revision(found);
            let latest = sorted.last().map(|r| name_of(r)) == Some(revision.name.clone());
            if !latest {
                // Back to an older template (a rollback): it becomes the
                // newest revision.
                history.renumber = Some((revision.name.clone(), next));
                revision.number = next;
            }
            revision
        }
        None => {
            // A name taken by different data is a hash collision: hash
            // again with the collision count raised.
            let mut hash = template_hash(&wanted, history.collision_count);
            while sorted
                .iter()
                .any(|r| name_of(r) == revision_name(&set_name, &hash))
            {
                history.collision_count += 1;
                hash = template_hash(&wanted, history.collision_count);
            }
            let name = revision_name(&set_name, &hash);
            let mut labels = set
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(REVISION_LABEL.to_string(), hash);
            history.create = Some(json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": name,
                    "namespace": set.metadata.namespace,
                    "labels": labels,
                    "annotations": set.metadata.annotations.clone().unwrap_or_default(),
                    "ownerReferences": [super::pod::owner_reference(set)],
                },
                "data": patch,
                "revision": next,
            }));
            Revision {
                name,
                number: next,
                template: template_of(&wanted),
            }
        }
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .unwrap_or_default();
    history.current = sorted
        .iter()
        .find(|r| name_of(r) == current_name)
        .map(|r| as_revision(r))
        .unwrap_or_else(|| history.update.clone());
    history
}

/// Revisions beyond `revisionHistoryLimit`, oldest first, sparing those in
/// use (`live`: the current and update revisions and those pods run).
pub fn to_forget(
    set: &StatefulSet,
    revisions: &[ControllerRevision],
    live: &BTreeSet<String>,
) -> Vec<String> {
    let limit = set
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let idle: Vec<String> = sorted(revisions)
        .into_iter()
        .map(name_of)
        .filter(|n| !live.contains(n))
        .collect();
    let extra = idle.len().saturating_sub(limit);
    idle.into_iter().take(extra).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(image: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1", "annotations": {"a": "b"}},
            "spec": {"replicas": 3, "serviceName": "web", "selector": {"matchLabels": {"app": "web"}},
                     "revisionHistoryLimit": 1,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn stored(history: &History, created: &str) -> ControllerRevision {
        let mut value = history.create.clone().unwrap();
        value["metadata"]["creationTimestamp"] = json!(created);
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_new_template_makes_a_revision_and_an_old_one_is_renumbered() {
        let first = resolve(&set("nginx:1"), &[]);
        let created = first.create.as_ref().unwrap();
        assert_eq!(created["revision"], 1);
        assert_eq!(created["data"]["spec"]["template"]["$patch"], "replace");
        let hash = created["metadata"]["labels"][REVISION_LABEL]
            .as_str()
            .unwrap();
        assert_eq!(first.update.name, format!("web-{hash}"));
        assert_eq!(created["metadata"]["labels"]["app"], "web");
        assert_eq!(first.current.name, first.update.name);
        let one = stored(&first, "2026-01-01T00:00:00Z");

        // Same template: nothing to create.
        let again = resolve(&set("nginx:1"), std::slice::from_ref(&one));
        assert!(again.create.is_none() && again.renumber.is_none());

        let mut updated = set("nginx:2");
        updated.status = Some(
            serde_json::from_value(json!({"replicas": 3, "currentRevision": first.update.name}))
                .unwrap(),
        );
        let second = resolve(&updated, std::slice::from_ref(&one));
        assert_eq!(second.create.as_ref().unwrap()["revision"], 2);
        assert_eq!(second.current.name, first.update.name);
        assert_eq!(
            second.current.template["spec"]["containers"][0]["image"],
            "nginx:1"
        );
        assert_ne!(second.update.name, first.update.name);
        let two = stored(&second, "2026-01-01T00:01:00Z");

        // Rolled back to the first template: revision 1 becomes 3.
        let mut back = set("nginx:1");
        back.status = updated.status.clone();
        let third = resolve(&back, &[one.clone(), two.clone()]);
        assert!(third.create.is_none());
        assert_eq!(third.renumber, Some((first.update.name.clone(), 3)));
        assert_eq!(third.update.name, first.update.name);

        // History: with a limit of 1, only idle revisions beyond it go.
        let live = BTreeSet::from([second.update.name.clone()]);
        assert!(to_forget(&set("nginx:2"), &[one.clone(), two.clone()], &live).is_empty());
        let none = BTreeSet::new();
        assert_eq!(
            to_forget(&set("nginx:2"), &[one, two], &none),
            vec![first.update.name]
        );
    }

    #[test]
    fn a_hash_collision_raises_the_count() {
        let first = resolve(&set("nginx:1"), &[]);
        // A revision of that name holding something else.
        let mut other = stored(&first, "2026-01-01T00:00:00Z");
        other.data = Some(k8s_openapi::apimachinery::pkg::runtime::RawExtension(
            json!({"spec": {"template": {"metadata": {"labels": {"app": "other"}}}}}),
        ));
        let next = resolve(&set("nginx:1"), &[other]);
        assert_eq!(next.collision_count, 1);
        assert_ne!(next.update.name, first.update.name);
    }
}
