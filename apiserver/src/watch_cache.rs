//! One store watch per kind of object, shared by every API watch of it:
//! the part of Kubernetes' watch cache that keeps the store from serving
//! (and this process from decoding) each change once per client.
//!
//! ```text
//!   store watch on /registry/pods/ ──► hub: decode each change once
//!        (opened at the first client's start revision)   │
//!                      recent changes (HISTORY) ◄─────────┤ under one lock:
//!                      broadcast to subscribers ◄─────────┘ no gap, no repeat
//!   API watch from revision R:  R >= covered_from ─► history from R, then live
//!                               otherwise         ─► its own store watch (as before)
//! ```
//!
//! A subscriber that falls more than [`CHANNEL`] changes behind is ended,
//! as Kubernetes ends a slow watcher; its client watches again from the
//! last version it saw. When the store watch of a hub ends (a compaction,
//! a lost member), every subscriber's watch ends the same way and the next
//! watch opens a new hub.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use shoal_store::proto::mvccpb::KeyValue;
use tokio::sync::broadcast;

use crate::rest::read::decode_stored;
use crate::storage::{self, Change, Store};

/// Changes kept per hub for watches that start a little in the past (a
/// client lists, then watches from the list's revision).
const HISTORY: usize = 1024;
/// Changes a subscriber may fall behind before its watch is ended.
const CHANNEL: usize = 2048;

/// One change of the watched kind, decoded once for every subscriber.
#[derive(Debug)]
pub enum Event {
    Put {
        key: String,
        revision: i64,
        object: Arc<Value>,
        /// The object before the change, decoded only when a subscriber
        /// with selectors asks.
        prev: Option<Prev>,
    },
    Delete {
        key: String,
        revision: i64,
        /// The deleted object, at the revision of its deletion.
        object: Arc<Value>,
    },
    /// Nothing changed up to this revision.
    Progress(i64),
}

/// The stored object before a change, decoded at most once.
#[derive(Debug)]
pub struct Prev {
    value: Vec<u8>,
    revision: i64,
    decoded: OnceLock<Option<Arc<Value>>>,
}

impl Prev {
    /// The decoded object; `None` if it was not valid JSON.
    pub fn object(&self) -> Option<&Arc<Value>> {
        self.decoded
            .get_or_init(|| decode_stored(&self.value, self.revision).ok().map(Arc::new))
            .as_ref()
    }
}

impl Event {
    pub fn revision(&self) -> i64 {
        match self {
            Event::Put { revision, .. } | Event::Delete { revision, .. } => *revision,
            Event::Progress(revision) => *revision,
        }
    }

    /// The stored key, for a change.
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Put { key, .. } | Event::Delete { key, .. } => Some(key),
            Event::Progress(_) => None,
        }
    }
}

/// What an API watch reads from a hub. Live events may still include
/// changes from before its start version (in flight when it subscribed):
/// the reader skips them.
pub struct Subscription {
    /// The first version the watch wants.
    pub start: i64,
    /// Changes from the requested revision that happened before the
    /// subscription, oldest first.
    pub backlog: Vec<Arc<Event>>,
    /// Everything after.
    pub live: broadcast::Receiver<Arc<Event>>,
}

#[derive(Default)]
pub struct WatchCache {
    /// By store prefix. An async lock: a hub is opened (store calls)
    /// while it is held, so two watches never open two hubs of one kind.
    hubs: tokio::sync::Mutex<HashMap<String, Arc<Hub>>>,
}

struct Hub {
    state: Mutex<HubState>,
}

struct HubState {
    history: VecDeque<Arc<Event>>,
    /// The newest revision the hub has seen (a change or a progress
    /// notification).
    latest: i64,
    /// Every change from this revision on is in `history` or still to come.
    covered_from: i64,
    /// `None` once the store watch ended: the channel is closed.
    tx: Option<broadcast::Sender<Arc<Event>>>,
}

impl WatchCache {
    /// Subscribes to the changes under `root` (the store prefix of a kind)
    /// from revision `start` on. `None` when no hub can serve `start` (or
    /// the store refused a new one): the caller opens its own store watch,
    /// which also reports why.
    pub async fn subscribe(&self, store: &Store, root: &str, start: i64) -> Option<Subscription> {
        // The map is locked only to look up: the checks below may ask the
        // store, and watches of other kinds need not wait for that.
        let existing = self.hubs.lock().await.get(root).cloned();
        if let Some(hub) = existing {
            // A version the hub has not seen may not exist yet: only the
            // store can tell. A watch from the future gets a store watch of
            // its own, which waits for it.
            if start > hub.latest() + 1 && store.revision().await.ok()? < start - 1 {
                return None;
            }
            if let Some(subscription) = hub.subscribe(start) {
                return Some(subscription);
            }
            // `start` is before what it holds: the caller's own watch.
            if hub.is_alive() {
                tracing::debug!(%root, start, "a watch from before the shared one's history");
                return None;
            }
        }
        let mut hubs = self.hubs.lock().await;
        // Another watch may have opened one meanwhile.
        if let Some(hub) = hubs.get(root).filter(|hub| hub.is_alive()) {
            return hub.subscribe(start);
        }
        // None yet, or its store watch ended: a new one from `start`, if
        // that version exists (a hub opened in the future would leave the
        // watches of the present unshared).
        if store.revision().await.ok()? < start - 1 {
            return None;
        }
        let stream = store.watch(root, start).await.ok()?;
        let (tx, _) = broadcast::channel(CHANNEL);
        let hub = Arc::new(Hub {
            state: Mutex::new(HubState {
                history: VecDeque::new(),
                latest: start - 1,
                covered_from: start,
                tx: Some(tx),
            }),
        });
        let subscription = hub.subscribe(start);
        hubs.insert(root.to_string(), hub.clone());
        tracing::debug!(%root, start, "a shared store watch opened");
        tokio::spawn(pump(hub, stream));
        subscription
    }
}

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_alive(&self) -> bool {
        self.lock().tx.is_some()
    }

    fn latest(&self) -> i64 {
        self.lock().latest
    }

    fn subscribe(&self, start: i64) -> Option<Subscription> {
        let state = self.lock();
        let tx = state.tx.as_ref()?;
        if start < state.covered_from {
            return None;
        }
        let live = tx.subscribe();
        let backlog = state
            .history
            .iter()
            .filter(|e| e.revision() >= start)
            .cloned()
            .collect();
        Some(Subscription {
            start,
            backlog,
            live,
        })
    }

    /// Records and sends one change (under the lock, so that a new
    /// subscriber sees it exactly once: in its backlog or live).
    fn publish(&self, event: Event) {
        let event = Arc::new(event);
        let mut state = self.lock();
        state.latest = state.latest.max(event.revision());
        if !matches!(*event, Event::Progress(_)) {
            state.history.push_back(event.clone());
            while state.history.len() > HISTORY {
                if let Some(old) = state.history.pop_front() {
                    state.covered_from = old.revision() + 1;
                }
            }
        }
        if let Some(tx) = &state.tx {
            // No subscriber right now is fine.
            let _ = tx.send(event);
        }
    }

    fn end(&self) {
        self.lock().tx = None;
    }
}

/// Feeds a hub from its store watch until that ends.
async fn pump(
    hub: Arc<Hub>,
    stream: impl futures::Stream<Item = storage::Result<Vec<Change>>> + Send + 'static,
) {
    use futures::StreamExt;
    futures::pin_mut!(stream);
    while let Some(next) = stream.next().await {
        let changes = match next {
            Ok(changes) => changes,
            Err(e) => {
                tracing::debug!(error = %e, "a shared store watch ended");
                break;
            }
        };
        for change in changes {
            if let Some(event) = decode(change) {
                hub.publish(event);
            }
        }
    }
    hub.end();
}

fn decode(change: Change) -> Option<Event> {
    let key = |kv: &KeyValue| String::from_utf8_lossy(&kv.key).into_owned();
    match change {
        Change::Progress(revision) => Some(Event::Progress(revision)),
        Change::Put { kv, prev } => match decode_stored(&kv.value, kv.mod_revision) {
            Ok(object) => Some(Event::Put {
                key: key(&kv),
                revision: kv.mod_revision,
                object: Arc::new(object),
                prev: prev.map(|p| Prev {
                    revision: p.mod_revision,
                    value: p.value,
                    decoded: OnceLock::new(),
                }),
            }),
            Err(e) => {
                tracing::warn!(error = %e.message, "skipping an undecodable stored object");
                None
            }
        },
        Change::Delete { kv, prev } => {
            let prev = prev?;
            match decode_stored(&prev.value, kv.mod_revision) {
                Ok(object) => Some(Event::Delete {
                    key: key(&kv),
                    revision: kv.mod_revision,
                    object: Arc::new(object),
                }),
                Err(e) => {
                    tracing::warn!(error = %e.message, "skipping an undecodable stored object");
                    None
                }
            }
        }
    }
}
