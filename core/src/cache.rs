//! Caches of every object of a kind, kept by a watch (kube-rs reflectors),
//! with a signal on each change: what the agent's proxy and the cluster DNS
//! read from.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::watcher::Event;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;

/// A cache of every `K` of the cluster, kept by a watch that wakes each of
/// `changed` on every event; the future runs the watch (retrying with
/// backoff) until dropped.
pub fn watched<K>(
    client: &kube::Client,
    changed: &[Arc<Notify>],
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    watched_trimmed(client, changed, |_: &mut K| {})
}

/// [`watched`], keeping of each object only what `trim` leaves (a cache
/// of 10,000 pods is a quarter of a gigabyte whole, a few megabytes as
/// names and addresses).
pub fn watched_trimmed<K, F>(
    client: &kube::Client,
    changed: &[Arc<Notify>],
    trim: F,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    F: FnMut(&mut K) + Send + 'static,
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let changed = changed.to_vec();
    let watch = reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()).modify(trim),
    )
    .default_backoff()
    .for_each(move |event| {
        match event {
            Err(e) => {
                tracing::warn!(kind = %K::kind(&Default::default()), error = %e, "watch failed; retrying");
            }
            Ok(Event::InitDone) => {
                tracing::debug!(kind = %K::kind(&Default::default()), "first list in the cache");
            }
            Ok(_) => {}
        }
        for c in &changed {
            c.notify_one();
        }
        futures::future::ready(())
    });
    (store, watch)
}

/// How often a waiter of [`ready`] looks again.
const READY_POLL: Duration = Duration::from_millis(50);

/// Waits until `store` holds its first whole list (or its watch is gone
/// for good). kube's `Store::wait_until_ready` wakes only one of several
/// tasks waiting at once (its oneshot keeps the last waker), so a second
/// waiter could sleep forever; here each waiter looks again every 50 ms.
pub async fn ready<K>(store: &Store<K>)
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    while tokio::time::timeout(READY_POLL, store.wait_until_ready())
        .await
        .is_err()
    {}
}

/// A cache of the objects `wanted` names as (namespace, name), each kept
/// by a watch of its own (`fieldSelector=metadata.name=<name>`) that wakes
/// each of `changed`: for readers that may get the objects they need by
/// name but not list the kind (a node's agent and the Secrets that
/// Ingresses name). An object no longer wanted leaves the cache. The
/// store is ready at once; the future runs the watches until dropped.
pub fn named<K, F>(
    client: &kube::Client,
    changed: &[Arc<Notify>],
    mut wanted: tokio::sync::watch::Receiver<BTreeSet<(String, String)>>,
    trim: F,
) -> (Store<K>, impl Future<Output = ()> + Send + 'static)
where
    F: Fn(&mut K) + Send + Sync + 'static,
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Default
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&Event::Init);
    writer.apply_watcher_event(&Event::InitDone);
    let shared = Arc::new(Named {
        writer: Mutex::new(writer),
        changed: changed.to_vec(),
        trim,
    });
    let client = client.clone();
    let run = async move {
        let mut running: HashMap<(String, String), Aborting> = HashMap::new();
        loop {
            let now = wanted.borrow_and_update().clone();
            let gone: Vec<(String, String)> = running
                .keys()
                .filter(|k| !now.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                if let Some(mut task) = running.remove(&key) {
                    // Stopped before the delete: an event it was applying
                    // cannot come after.
                    task.0.abort();
                    let _ = (&mut task.0).await;
                }
                shared.apply(Event::Delete(stub::<K>(&key)));
            }
            for key in now {
                if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(key) {
                    let key = slot.key().clone();
                    let task = tokio::spawn(watch_one(client.clone(), key, shared.clone()));
                    slot.insert(Aborting(task));
                }
            }
            if wanted.changed().await.is_err() {
                // The sender is gone: keep what is watched.
                futures::future::pending::<()>().await;
            }
        }
    };
    (store, run)
}

/// A task aborted when dropped.
struct Aborting(tokio::task::JoinHandle<()>);

impl Drop for Aborting {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Named<K: kube::Resource + Clone + 'static, F>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    writer: Mutex<reflector::store::Writer<K>>,
    changed: Vec<Arc<Notify>>,
    trim: F,
}

impl<K, F> Named<K, F>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    F: Fn(&mut K),
{
    fn apply(&self, event: Event<K>) {
        self.writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply_watcher_event(&event);
        for c in &self.changed {
            c.notify_one();
        }
    }
}

/// An object with only its namespace and name: what a delete is keyed by.
fn stub<K: kube::Resource + Default>((namespace, name): &(String, String)) -> K {
    let mut object = K::default();
    object.meta_mut().namespace = Some(namespace.clone());
    object.meta_mut().name = Some(name.clone());
    object
}

async fn watch_one<K, F>(client: kube::Client, key: (String, String), shared: Arc<Named<K, F>>)
where
    F: Fn(&mut K) + Send + Sync + 'static,
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + Default
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api = Api::<K>::namespaced(client, &key.0);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", key.1));
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    let mut seen = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => seen = false,
            Ok(Event::InitApply(mut object) | Event::Apply(mut object)) => {
                seen = true;
                (shared.trim)(&mut object);
                shared.apply(Event::Apply(object));
            }
            Ok(Event::Delete(object)) => shared.apply(Event::Delete(object)),
            // Listed and not there: gone while unwatched, or not made yet.
            Ok(Event::InitDone) if !seen => shared.apply(Event::Delete(stub::<K>(&key))),
            Ok(Event::InitDone) => {}
            Err(e) => {
                tracing::warn!(kind = %K::kind(&Default::default()), namespace = %key.0, name = %key.1, error = %e, "watch failed; retrying");
            }
        }
    }
}
