//! The pods of this node: one watch (fieldSelector `spec.nodeName`), one
//! worker per pod. A worker is handed the newest object through a
//! `watch` channel, so updates that arrive while it is busy are merged,
//! never queued. After the first full list, whatever the runtime, the
//! network or the pods folder holds for pods that are no longer bound here
//! (deleted while the agent was away) is removed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use tokio::sync::watch;

use super::{worker, Result, Shared};

/// What a worker is told about its pod.
#[derive(Debug, Clone)]
pub enum Update {
    Present(Arc<Pod>),
    /// The pod object is gone from the API.
    Gone,
}

pub async fn run(shared: Arc<Shared>, stop: impl Future<Output = ()>) -> Result<()> {
    let api: Api<Pod> = Api::all(shared.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", shared.config.node_name));
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut workers: Workers = HashMap::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut cleaned = false;
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            _ = &mut stop => break,
            event = events.next() => event,
        };
        let Some(event) = event else { break };
        match event {
            Ok(Event::Init) => listing.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = pod.metadata.uid.clone() {
                    listing.insert(uid);
                }
                apply(&shared, &mut workers, pod);
            }
            Ok(Event::InitDone) => {
                workers.retain(|uid, (tx, _)| {
                    let keep = listing.contains(uid);
                    if !keep {
                        let _ = tx.send(Update::Gone);
                    }
                    keep
                });
                if !cleaned {
                    cleaned = true;
                    let known: HashSet<String> = workers.keys().cloned().collect();
                    remove_orphans(&shared, &known).await;
                }
            }
            Ok(Event::Apply(pod)) => apply(&shared, &mut workers, pod),
            Ok(Event::Delete(pod)) => {
                if let Some((tx, _)) = pod.metadata.uid.as_ref().and_then(|u| workers.remove(u)) {
                    let _ = tx.send(Update::Gone);
                }
            }
            Err(e) => tracing::warn!(error = %e, "pod watch failed; retrying"),
        }
        workers.retain(|_, (tx, _)| !tx.is_closed());
    }
    // Stopping: workers end at their next step and leave the pods running.
    let handles: Vec<_> = workers.into_values().map(|(_, handle)| handle).collect();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures::future::join_all(handles),
    )
    .await;
    Ok(())
}

type Workers = HashMap<String, (watch::Sender<Update>, tokio::task::JoinHandle<()>)>;

fn apply(shared: &Arc<Shared>, workers: &mut Workers, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    let pod = Arc::new(pod);
    match workers.get(&uid) {
        Some((tx, _)) => {
            let _ = tx.send(Update::Present(pod));
        }
        None => {
            let (tx, rx) = watch::channel(Update::Present(pod));
            let handle = tokio::spawn(worker::run(shared.clone(), rx));
            workers.insert(uid, (tx, handle));
        }
    }
}

/// Removes containers, sandboxes and pod folders of pods not in `known`.
pub(crate) async fn remove_orphans(shared: &Arc<Shared>, known: &HashSet<String>) {
    let runtime = shared.runtime.clone();
    let known_ids = known.clone();
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = 0;
        for c in runtime.list().unwrap_or_default() {
            let uid = worker::uid_of_container(&c.id);
            if uid.is_some_and(|u| !known_ids.contains(u)) {
                let _ = runtime.kill(&c.id, crate::runtime::Signal::SIGKILL);
                let _ = runtime.wait(&c.id, std::time::Duration::from_secs(5));
                if let Err(e) = runtime.remove(&c.id) {
                    tracing::warn!(container = %c.id, error = %e, "cannot remove an orphaned container");
                }
                removed += 1;
            }
        }
        removed
    })
    .await
    .unwrap_or(0);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed the containers of pods deleted while the agent was away"
        );
    }
    for id in shared.network.list().await.unwrap_or_default() {
        if !known.contains(&id) {
            if let Err(e) = shared.network.delete_sandbox(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "cannot remove an orphaned sandbox");
            }
        }
    }
    let pods_dir = shared.config.data_dir.join("pods");
    if let Ok(entries) = std::fs::read_dir(&pods_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if !known.contains(&name) {
                super::volumes::teardown(&entry.path());
            }
        }
    }
}
