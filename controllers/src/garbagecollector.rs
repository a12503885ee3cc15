//! The garbage collector: dependents whose owners are gone are deleted
//! (background cascading, e.g. `kubectl delete deployment` removes its
//! ReplicaSets and, through them, its pods); an owner deleted in the
//! foreground (finalizer `foregroundDeletion`) has its blocking dependents
//! deleted first and goes once none is left; an owner deleted with
//! `orphan` has its dependents released (their owner reference removed).
//!
//! It keeps watch-fed caches of the kinds that can own or be owned (pods
//! from the shared informer) and looks at them every second; the decisions are `plan`, a pure function
//! of those objects.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{
    ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet,
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::Resource;
use serde_json::{json, Value};

use crate::informers::{Informer, Informers, Kind};

/// (group, version, kind, plural) of the kinds the collector looks at.
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("", "v1", "Pod", "pods"),
    ("apps", "v1", "ReplicaSet", "replicasets"),
    ("apps", "v1", "Deployment", "deployments"),
    ("apps", "v1", "StatefulSet", "statefulsets"),
    ("apps", "v1", "DaemonSet", "daemonsets"),
    ("apps", "v1", "ControllerRevision", "controllerrevisions"),
    ("batch", "v1", "Job", "jobs"),
    ("batch", "v1", "CronJob", "cronjobs"),
    ("", "v1", "Endpoints", "endpoints"),
    ("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    ("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
];

/// One object as the collector sees it.
#[derive(Debug, Clone)]
pub struct Item {
    pub kind: usize,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub deleting: bool,
    pub finalizers: Vec<String>,
    /// (owner uid, blockOwnerDeletion)
    pub owners: Vec<(String, bool)>,
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// Delete a dependent (index into the items).
    Delete(usize),
    /// Remove the owner references to these uids from an item.
    Release(usize, Vec<String>),
    /// Remove a finalizer from an owner.
    Finish(usize, &'static str),
}

pub fn plan(items: &[Item]) -> Vec<Action> {
    let by_uid: HashMap<&str, &Item> = items.iter().map(|i| (i.uid.as_str(), i)).collect();
    let mut actions = Vec::new();
    let mut still_owning: HashSet<&str> = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        if item.owners.is_empty() {
            continue;
        }
        let mut orphaned_from = Vec::new();
        let mut alive = 0;
        let mut delete = false;
        for (uid, blocking) in &item.owners {
            match by_uid.get(uid.as_str()) {
                None => {}
                Some(owner) if owner.deleting && owner.finalizers.iter().any(|f| f == "orphan") => {
                    orphaned_from.push(uid.clone());
                }
                Some(owner)
                    if owner.deleting
                        && owner.finalizers.iter().any(|f| f == "foregroundDeletion") =>
                {
                    if *blocking {
                        still_owning.insert(uid.as_str());
                    }
                    delete = true;
                }
                Some(_) => alive += 1,
            }
        }
        if !orphaned_from.is_empty() {
            actions.push(Action::Release(index, orphaned_from));
        } else if (alive == 0 || delete) && !item.deleting {
            actions.push(Action::Delete(index));
        }
        if item.deleting {
            for (uid, blocking) in &item.owners {
                if *blocking {
                    still_owning.insert(uid.as_str());
                }
            }
        }
    }
    for (index, item) in items.iter().enumerate() {
        if !item.deleting {
            continue;
        }
        let referenced = items
            .iter()
            .any(|d| d.owners.iter().any(|(uid, _)| *uid == item.uid));
        if item.finalizers.iter().any(|f| f == "orphan") && !referenced {
            actions.push(Action::Finish(index, "orphan"));
        }
        if item.finalizers.iter().any(|f| f == "foregroundDeletion")
            && !still_owning.contains(item.uid.as_str())
            && !referenced
        {
            actions.push(Action::Finish(index, "foregroundDeletion"));
        }
    }
    actions
}

fn resource(kind: usize) -> ApiResource {
    let (group, version, kind_name, plural) = KINDS[kind];
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: if group.is_empty() {
            version.into()
        } else {
            format!("{group}/{version}")
        },
        kind: kind_name.into(),
        plural: plural.into(),
    }
}

/// An object the collector may act on: pods come from the shared
/// informer, the other kinds from caches of its own.
/// A cached object of any kind, seen through its metadata.
trait Held: Send + Sync {
    fn meta(&self) -> &ObjectMeta;
}

impl<K: Resource + Send + Sync> Held for K {
    fn meta(&self) -> &ObjectMeta {
        Resource::meta(self)
    }
}

/// One kind's shared cache, read as [`Held`] objects.
struct Cache {
    objects: Box<dyn Fn() -> Vec<Arc<dyn Held>> + Send + Sync>,
    ready: futures::future::BoxFuture<'static, ()>,
}

fn cache<K: Kind>(informers: &Informers, client: &kube::Client) -> Cache {
    let informer: Informer<K> = informers.get::<K>(client);
    let store = informer.store();
    Cache {
        objects: Box::new(move || {
            store
                .state()
                .into_iter()
                .map(|k| k as Arc<dyn Held>)
                .collect()
        }),
        ready: Box::pin(async move { informer.ready().await }),
    }
}

/// The caches of `KINDS`, in its order.
fn caches(informers: &Informers, client: &kube::Client) -> Vec<Cache> {
    vec![
        cache::<Pod>(informers, client),
        cache::<ReplicaSet>(informers, client),
        cache::<Deployment>(informers, client),
        cache::<StatefulSet>(informers, client),
        cache::<DaemonSet>(informers, client),
        cache::<ControllerRevision>(informers, client),
        cache::<Job>(informers, client),
        cache::<CronJob>(informers, client),
        cache::<Endpoints>(informers, client),
        cache::<EndpointSlice>(informers, client),
        cache::<PersistentVolumeClaim>(informers, client),
    ]
}

fn item(kind: usize, meta: &ObjectMeta) -> Item {
    Item {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        deleting: meta.deletion_timestamp.is_some(),
        finalizers: meta.finalizers.clone().unwrap_or_default(),
        // Owners of kinds not looked at here are taken to exist.
        owners: meta
            .owner_references
            .iter()
            .flatten()
            .filter(|o| KINDS.iter().any(|(_, _, kind, _)| *kind == o.kind))
            .map(|o| (o.uid.clone(), o.block_owner_deletion == Some(true)))
            .collect(),
    }
}

/// The objects of every kind looked at, from the shared informers' caches
/// (in `KINDS` order).
fn collect(caches: &[Cache]) -> (Vec<Item>, Vec<Arc<dyn Held>>) {
    let mut items = Vec::new();
    let mut objects = Vec::new();
    for (kind, cache) in caches.iter().enumerate() {
        for object in (cache.objects)() {
            items.push(item(kind, object.meta()));
            objects.push(object);
        }
    }
    (items, objects)
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let mut caches = caches(&settings.informers, &client);
    for cache in &mut caches {
        (&mut cache.ready).await;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (items, objects) = collect(&caches);
        for action in plan(&items) {
            let result = match &action {
                Action::Delete(i) => {
                    let item = &items[*i];
                    tracing::info!(kind = KINDS[item.kind].2, name = %item.name, "deleting a dependent whose owner is gone");
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &item.namespace, &resource(item.kind));
                    api.delete(&item.name, &DeleteParams::background())
                        .await
                        .map(|_| ())
                }
                Action::Release(i, uids) => {
                    let item = &items[*i];
                    let kept: Vec<Value> = objects[*i]
                        .meta()
                        .owner_references
                        .iter()
                        .flatten()
                        .filter(|o| !uids.contains(&o.uid))
                        .map(|o| serde_json::to_value(o).unwrap_or_default())
                        .collect();
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client.clone(), &item.namespace, &resource(item.kind));
                    // null removes the field when no owner is left.
                    let refs = if kept.is_empty() {
                        Value::Null
                    } else {
                        json!(kept)
                    };
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": objects[*i].meta().resource_version}});
                    api.patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map(|_| ())
                }
                Action::Finish(i, finalizer) => {
                    let item = &items[*i];
                    let kept: Vec<&String> = item
                        .finalizers
                        .iter()
                        .filter(|f| f.as_str() != *finalizer)
                        .collect();
                    let api: Api<DynamicObject> = if item.namespace.is_empty() {
                        Api::all_with(client.clone(), &resource(item.kind))
                    } else {
                        Api::namespaced_with(client.clone(), &item.namespace, &resource(item.kind))
                    };
                    let patch = json!({"metadata": {"finalizers": kept, "resourceVersion": objects[*i].meta().resource_version}});
                    api.patch(&item.name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => tracing::debug!(error = %e, ?action, "garbage collection step failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(uid: &str, owners: &[(&str, bool)], deleting: bool, finalizers: &[&str]) -> Item {
        Item {
            kind: 0,
            namespace: "default".into(),
            name: uid.into(),
            uid: uid.into(),
            deleting,
            finalizers: finalizers.iter().map(|f| f.to_string()).collect(),
            owners: owners.iter().map(|(u, b)| (u.to_string(), *b)).collect(),
        }
    }

    #[test]
    fn dependents_of_a_missing_owner_are_deleted() {
        let items = vec![
            item("rs", &[("gone", true)], false, &[]),
            item("pod", &[("rs", true)], false, &[]),
        ];
        assert_eq!(plan(&items), vec![Action::Delete(0)]);
    }

    #[test]
    fn orphaning_releases_then_finishes() {
        let items = vec![
            item("d", &[], true, &["orphan"]),
            item("rs", &[("d", true)], false, &[]),
        ];
        assert_eq!(plan(&items), vec![Action::Release(1, vec!["d".into()])]);
        let released = vec![
            item("d", &[], true, &["orphan"]),
            item("rs", &[], false, &[]),
        ];
        assert_eq!(plan(&released), vec![Action::Finish(0, "orphan")]);
    }

    #[test]
    fn foreground_deletes_dependents_first() {
        let items = vec![
            item("d", &[], true, &["foregroundDeletion"]),
            item("rs", &[("d", true)], false, &[]),
        ];
        assert_eq!(plan(&items), vec![Action::Delete(1)]);
        let done = vec![item("d", &[], true, &["foregroundDeletion"])];
        assert_eq!(plan(&done), vec![Action::Finish(0, "foregroundDeletion")]);
    }
}
