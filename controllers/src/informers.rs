//! Shared informers: one watch per kind for all the loops of a process, as
//! client-go's shared informer factory gives Kubernetes' controller
//! manager. Each kind has a cache (a kube reflector store) and a broadcast
//! of what changed, so that ten loops watching pods cost the apiserver one
//! watch and decode each change once.
//!
//! ```text
//!   watch pods ─▶ reflector ─▶ cache (Store<Pod>) ◀─ reads of every loop
//!                     └──────▶ broadcast: Applied / Deleted / Relisted
//!                                 ├─▶ scheduler queue
//!                                 ├─▶ ReplicaSet triggers
//!                                 └─▶ ...
//! ```
//!
//! The informers of one `run_all` live as long as its loops: when the last
//! clone of [`Informers`] goes (leadership lost, loops aborted), the
//! watches stop.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, reflector, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

/// Changes a subscriber may fall behind by before it is told to re-read
/// the cache ([`Seen::Relisted`]).
const BACKLOG: usize = 1 << 16;

/// A kind that can have an informer (a typed, cluster-wide watchable
/// Kubernetes resource).
pub trait Kind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Kind for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// What an informer saw.
#[derive(Debug)]
pub enum Seen<K> {
    /// Added or changed (the object as now cached).
    Applied(Arc<K>),
    /// Gone (the last state seen).
    Deleted(Arc<K>),
    /// The watch listed again, or this subscriber fell behind: anything
    /// may have changed; read the cache.
    Relisted,
}

impl<K> Clone for Seen<K> {
    fn clone(&self) -> Seen<K> {
        match self {
            Seen::Applied(k) => Seen::Applied(k.clone()),
            Seen::Deleted(k) => Seen::Deleted(k.clone()),
            Seen::Relisted => Seen::Relisted,
        }
    }
}

/// One kind's cache and changes.
pub struct Informer<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    changes: broadcast::Sender<Seen<K>>,
    /// The highest resourceVersion seen in an event.
    seen: Arc<AtomicI64>,
    /// Whether the first list is in the cache. (kube's
    /// `Store::wait_until_ready` wakes only one of several waiters.)
    listed: tokio::sync::watch::Receiver<bool>,
    /// The cached objects by the uid of their controlling owner.
    by_controller: Arc<RwLock<ByController<K>>>,
}

/// An index of the cache: controller uid ("" for objects without one) →
/// objects.
struct ByController<K: Resource<DynamicType = ()> + 'static> {
    objects: HashMap<String, HashMap<ObjectRef<K>, Arc<K>>>,
    controller_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource<DynamicType = ()> + 'static> Default for ByController<K> {
    fn default() -> ByController<K> {
        ByController {
            objects: HashMap::new(),
            controller_of: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> ByController<K> {
    fn apply(&mut self, object: &Arc<K>) {
        let key = ObjectRef::from_obj(object.as_ref());
        let uid = super::controller_uid(object.as_ref())
            .unwrap_or_default()
            .to_string();
        self.forget(&key);
        self.controller_of.insert(key.clone(), uid.clone());
        self.objects
            .entry(uid)
            .or_default()
            .insert(key, object.clone());
    }

    fn forget(&mut self, key: &ObjectRef<K>) {
        if let Some(uid) = self.controller_of.remove(key) {
            if let Some(objects) = self.objects.get_mut(&uid) {
                objects.remove(key);
                if objects.is_empty() {
                    self.objects.remove(&uid);
                }
            }
        }
    }

    fn rebuild(&mut self, all: &[Arc<K>]) {
        *self = ByController::default();
        for object in all {
            self.apply(object);
        }
    }
}

impl<K: Resource<DynamicType = ()> + 'static> Clone for Informer<K> {
    fn clone(&self) -> Informer<K> {
        Informer {
            store: self.store.clone(),
            changes: self.changes.clone(),
            seen: self.seen.clone(),
            listed: self.listed.clone(),
            by_controller: self.by_controller.clone(),
        }
    }
}

impl<K: Kind> Informer<K> {
    /// The cache (wait for [`Informer::ready`] before trusting it).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The cached objects whose controlling owner has `uid`; `""` gives
    /// those without a controller (orphans).
    pub fn controlled_by(&self, uid: &str) -> Vec<Arc<K>> {
        let index = match self.by_controller.read() {
            Ok(index) => index,
            Err(poisoned) => poisoned.into_inner(),
        };
        index
            .objects
            .get(uid)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Waits until the cache holds the first list (at once if it does).
    pub async fn ready(&self) {
        let mut listed = self.listed.clone();
        // An error means the informer stopped: nothing more to wait for.
        let _ = listed.wait_for(|listed| *listed).await;
    }

    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let key = ObjectRef::new(name);
        let key = match namespace {
            Some(ns) => key.within(ns),
            None => key,
        };
        self.store.get(&key)
    }

    /// Whether the cache has caught up with a write that returned
    /// resourceVersion `rv`: it has seen an event at least that recent.
    pub fn has_seen(&self, rv: i64) -> bool {
        self.seen.load(Ordering::Acquire) >= rv
    }

    /// Changes from now on; a subscriber that falls behind gets
    /// [`Seen::Relisted`] instead of what it missed. A subscriber that
    /// comes after the first list starts with [`Seen::Relisted`], so that
    /// what is already cached is seen once (a loop that waited for another
    /// cache before subscribing would otherwise never see it, and a new
    /// leader would leave existing objects alone until they change).
    pub fn subscribe(&self) -> impl Stream<Item = Seen<K>> + Send + 'static {
        // Subscribe, then look: a list that ends in between is seen
        // twice (harmless), never missed.
        let changes = BroadcastStream::new(self.changes.subscribe()).map(|seen| match seen {
            Ok(seen) => seen,
            Err(BroadcastStreamRecvError::Lagged(_)) => Seen::Relisted,
        });
        let cached = (*self.listed.borrow()).then_some(Seen::Relisted);
        futures::stream::iter(cached).chain(changes)
    }

    /// Each object that changed or went away, as `Controller::watches_stream`
    /// takes them; after a relist, every cached object.
    pub fn touched(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        self.touched_if(|_| true)
    }

    /// [`Informer::touched`], only the objects `wanted` keeps (copied
    /// only then).
    pub fn touched_if(
        &self,
        wanted: impl Fn(&K) -> bool + Send + 'static,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static {
        let store = self.store.clone();
        self.subscribe().flat_map(move |seen| {
            let objects: Vec<Result<K, watcher::Error>> = match seen {
                Seen::Applied(k) | Seen::Deleted(k) => {
                    if wanted(&k) {
                        vec![Ok((*k).clone())]
                    } else {
                        Vec::new()
                    }
                }
                Seen::Relisted => store
                    .state()
                    .iter()
                    .filter(|k| wanted(k))
                    .map(|k| Ok((**k).clone()))
                    .collect(),
            };
            futures::stream::iter(objects)
        })
    }

    fn start(api: Api<K>) -> (Informer<K>, tokio::task::JoinHandle<()>) {
        let (store, writer) = reflector::store::<K>();
        let (changes, _) = broadcast::channel(BACKLOG);
        let seen = Arc::new(AtomicI64::new(0));
        let (listed, listed_rx) = tokio::sync::watch::channel(false);
        let by_controller = Arc::new(RwLock::new(ByController::default()));
        let informer = Informer {
            store: store.clone(),
            changes: changes.clone(),
            seen: seen.clone(),
            listed: listed_rx,
            by_controller: by_controller.clone(),
        };
        let index = move |change: &dyn Fn(&mut ByController<K>)| {
            let mut index = match by_controller.write() {
                Ok(index) => index,
                Err(poisoned) => poisoned.into_inner(),
            };
            change(&mut index);
        };
        let task = tokio::spawn(
            reflector(writer, watcher(api, watcher::Config::default()))
                .default_backoff()
                .for_each(move |event| {
                    let note = |object: &K| {
                        if let Some(rv) = object
                            .meta()
                            .resource_version
                            .as_deref()
                            .and_then(|rv| rv.parse::<i64>().ok())
                        {
                            seen.fetch_max(rv, Ordering::AcqRel);
                        }
                    };
                    let seen = match event {
                        Ok(watcher::Event::Apply(object)) => {
                            note(&object);
                            // The reflector cached it just now: share that copy.
                            let cached = store
                                .get(&ObjectRef::from_obj(&object))
                                .unwrap_or_else(|| Arc::new(object));
                            index(&|i| i.apply(&cached));
                            Some(Seen::Applied(cached))
                        }
                        Ok(watcher::Event::Delete(object)) => {
                            note(&object);
                            index(&|i| i.forget(&ObjectRef::from_obj(&object)));
                            Some(Seen::Deleted(Arc::new(object)))
                        }
                        Ok(watcher::Event::InitApply(object)) => {
                            note(&object);
                            None
                        }
                        Ok(watcher::Event::InitDone) => {
                            let all = store.state();
                            index(&|i| i.rebuild(&all));
                            listed.send_replace(true);
                            Some(Seen::Relisted)
                        }
                        Ok(watcher::Event::Init) => None,
                        Err(e) => {
                            tracing::debug!(kind = %K::kind(&()), error = %e, "informer watch failed; retrying");
                            None
                        }
                    };
                    if let Some(seen) = seen {
                        // No subscriber yet is not an error.
                        let _ = changes.send(seen);
                    }
                    futures::future::ready(())
                }),
        );
        (informer, task)
    }
}

/// Whether an object's controlling owner is of `kind` (for `owns_stream`
/// triggers).
pub fn controlled_by<K: Resource>(kind: &'static str) -> impl Fn(&K) -> bool + Send + 'static {
    move |object| {
        object
            .meta()
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == kind)
    }
}

/// The informers of one set of loops, started on first use.
#[derive(Clone, Default)]
pub struct Informers {
    inner: Arc<Mutex<Started>>,
}

#[derive(Default)]
struct Started {
    informers: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Started {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Informers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Informers")
    }
}

impl Informers {
    /// The informer of kind `K` (cluster-wide), started with `client` if
    /// it is the first request for that kind.
    pub fn get<K: Kind>(&self, client: &kube::Client) -> Informer<K> {
        let mut started = match self.inner.lock() {
            Ok(started) => started,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(informer) = started
            .informers
            .get(&TypeId::of::<K>())
            .and_then(|any| any.downcast_ref::<Informer<K>>())
        {
            return informer.clone();
        }
        let (informer, task) = Informer::start(Api::<K>::all(client.clone()));
        started
            .informers
            .insert(TypeId::of::<K>(), Box::new(informer.clone()));
        started.tasks.push(task);
        informer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    fn pod(name: &str, owner: Option<&str>) -> Arc<Pod> {
        let mut value = serde_json::json!({"metadata": {"name": name, "namespace": "ns"}});
        if let Some(uid) = owner {
            value["metadata"]["ownerReferences"] = serde_json::json!([{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": uid, "controller": true,
            }]);
        }
        Arc::new(serde_json::from_value(value).unwrap())
    }

    fn names(objects: &HashMap<ObjectRef<Pod>, Arc<Pod>>) -> Vec<String> {
        let mut names: Vec<String> = objects.keys().map(|k| k.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn the_index_follows_adoption_release_and_deletion() {
        let mut index = ByController::<Pod>::default();
        index.apply(&pod("a", Some("rs-1")));
        index.apply(&pod("b", Some("rs-1")));
        index.apply(&pod("c", None));
        assert_eq!(names(&index.objects["rs-1"]), ["a", "b"]);
        assert_eq!(names(&index.objects[""]), ["c"]);
        // Adopted, released, deleted.
        index.apply(&pod("c", Some("rs-1")));
        index.apply(&pod("a", None));
        index.forget(&ObjectRef::new("b").within("ns"));
        assert_eq!(names(&index.objects["rs-1"]), ["c"]);
        assert_eq!(names(&index.objects[""]), ["a"]);
        index.forget(&ObjectRef::new("c").within("ns"));
        assert!(!index.objects.contains_key("rs-1"));
        index.rebuild(&[pod("x", Some("rs-2"))]);
        assert_eq!(index.objects.len(), 1);
        assert_eq!(names(&index.objects["rs-2"]), ["x"]);
    }

    /// An informer not backed by a watch, in the state `listed` says.
    fn detached(listed: bool) -> (Informer<Pod>, tokio::sync::watch::Sender<bool>) {
        let (store, _writer) = reflector::store::<Pod>();
        let (changes, _) = broadcast::channel(16);
        let (listed_tx, listed_rx) = tokio::sync::watch::channel(listed);
        let informer = Informer {
            store,
            changes,
            seen: Arc::new(AtomicI64::new(0)),
            listed: listed_rx,
            by_controller: Arc::new(RwLock::new(ByController::default())),
        };
        (informer, listed_tx)
    }

    fn kinds(seen: &[Seen<Pod>]) -> Vec<&'static str> {
        seen.iter()
            .map(|s| match s {
                Seen::Applied(_) => "applied",
                Seen::Deleted(_) => "deleted",
                Seen::Relisted => "relisted",
            })
            .collect()
    }

    #[tokio::test]
    async fn a_subscriber_after_the_first_list_starts_with_the_cache() {
        let (informer, _listed) = detached(true);
        let changes = informer.subscribe();
        informer
            .changes
            .send(Seen::Applied(pod("a", None)))
            .unwrap();
        drop(informer);
        let seen: Vec<Seen<Pod>> = changes.collect().await;
        assert_eq!(kinds(&seen), ["relisted", "applied"]);
    }

    #[tokio::test]
    async fn a_subscriber_before_the_first_list_waits_for_it() {
        let (informer, listed) = detached(false);
        let changes = informer.subscribe();
        listed.send_replace(true);
        informer.changes.send(Seen::Relisted).unwrap();
        drop(informer);
        let seen: Vec<Seen<Pod>> = changes.collect().await;
        assert_eq!(kinds(&seen), ["relisted"]);
    }
}
