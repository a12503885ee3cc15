//! Caches of every object of a kind, kept by a watch (kube-rs reflectors),
//! with a signal on each change: what the agent's proxy and the cluster DNS
//! read from.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::runtime::reflector::{self, reflector, Store};
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
    .for_each(move |_| {
        for c in &changed {
            c.notify_one();
        }
        futures::future::ready(())
    });
    (store, watch)
}
