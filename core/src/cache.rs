//! Caches of every object of a kind, kept by a watch (kube-rs reflectors),
//! with a signal on each change: what the agent's proxy and the cluster DNS
//! read from.

use std::future::Future;
use std::sync::Arc;
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
