//! State shared between the Raft state machine (which writes it, in log
//! order) and the gRPC services (which read it): the key space, member
//! attributes, watch subscriptions and lease clocks.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::mvcc::{Mvcc, MvccError};
use crate::proto::mvccpb::Event;
use crate::raft::types::{MemberAttrs, NodeId};

#[derive(Default)]
pub struct Shared {
    mvcc: RwLock<Mvcc>,
    members: RwLock<BTreeMap<NodeId, MemberAttrs>>,
    pub hub: WatchHub,
    pub leases: LeaseClock,
    pub metrics: crate::metrics::Metrics,
}

// A poisoned lock means a thread panicked while holding it; the data itself
// is still consistent (every mutation is a single step), so keep serving.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub fn mvcc(&self) -> RwLockReadGuard<'_, Mvcc> {
        read(&self.mvcc)
    }

    pub(crate) fn mvcc_mut(&self) -> RwLockWriteGuard<'_, Mvcc> {
        write(&self.mvcc)
    }

    pub fn members(&self) -> BTreeMap<NodeId, MemberAttrs> {
        read(&self.members).clone()
    }

    pub(crate) fn set_members(&self, m: BTreeMap<NodeId, MemberAttrs>) {
        *write(&self.members) = m;
    }

    pub(crate) fn publish_member(&self, id: NodeId, attrs: MemberAttrs) {
        write(&self.members).insert(id, attrs);
    }

    /// Starts a watch on `[key, range_end)`: the events since `start` (if it
    /// is in the past) and a subscription for every later one, with no gap
    /// and no duplicate between the two.
    pub fn watch(
        &self,
        key: &[u8],
        range_end: &[u8],
        start: i64,
    ) -> Result<(Vec<Event>, Subscription), MvccError> {
        // Holding the read lock keeps applies out, so the history ends
        // exactly where the subscription begins.
        let mvcc = self.mvcc();
        let current = mvcc.revision();
        let history = if start > 0 && start <= current {
            mvcc.history(key, range_end, start)?
        } else {
            Vec::new()
        };
        let min_rev = start.max(current + 1);
        let sub = self
            .hub
            .subscribe(key.to_vec(), range_end.to_vec(), min_rev);
        Ok((history, sub))
    }
}

/// Live watch subscriptions. The state machine publishes every applied
/// event; each subscription gets those in its range from its first revision
/// on. A subscription whose queue is full (its client reads too slowly) is
/// dropped; its owner sees the channel close and resumes from history
/// (etcd's "unsynced" watchers), so memory stays bounded.
#[derive(Default)]
pub struct WatchHub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    next: u64,
    subs: HashMap<u64, Sub>,
    /// The revision of the last events published: every event up to it is
    /// in the queues of the subscriptions it concerns.
    published: i64,
}

/// What a subscription's queue carries.
#[derive(Debug)]
pub enum Item {
    Events(Vec<Event>),
    /// A progress request: every event up to `round.revision` is ahead of
    /// this marker in the queue.
    Progress(std::sync::Arc<ProgressRound>),
}

/// One progress request of a watch stream, answered once every watch of
/// the stream has passed its marker (so after all their earlier events), and
/// not at all if one of them has fallen behind (as etcd answers only when
/// every watcher is synced).
#[derive(Debug)]
pub struct ProgressRound {
    pub revision: i64,
    pub remaining: std::sync::atomic::AtomicUsize,
    pub failed: std::sync::atomic::AtomicBool,
}

struct Sub {
    key: Vec<u8>,
    range_end: Vec<u8>,
    min_rev: i64,
    tx: mpsc::Sender<Item>,
}

/// Batches of events a subscription may have queued before it is dropped.
const SUB_QUEUE: usize = 1024;

/// A live subscription; its owner calls [`WatchHub::unsubscribe`] when done
/// (a subscription whose receiver is gone is also dropped on the next event).
pub struct Subscription {
    pub id: u64,
    /// The first revision it delivers.
    pub from: i64,
    pub rx: mpsc::Receiver<Item>,
}

/// Is `k` in the etcd range `[key, range_end)`?
pub fn in_range(k: &[u8], key: &[u8], range_end: &[u8]) -> bool {
    if range_end.is_empty() {
        return k == key;
    }
    if range_end == [0] {
        return k >= key;
    }
    k >= key && k < range_end
}

impl WatchHub {
    fn subscribe(&self, key: Vec<u8>, range_end: Vec<u8>, min_rev: i64) -> Subscription {
        let (tx, rx) = mpsc::channel(SUB_QUEUE);
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let id = inner.next;
        inner.subs.insert(
            id,
            Sub {
                key,
                range_end,
                min_rev,
                tx,
            },
        );
        Subscription {
            id,
            from: min_rev,
            rx,
        }
    }

    /// The revision up to which every event is queued.
    pub fn published(&self) -> i64 {
        lock(&self.inner).published
    }

    pub(crate) fn set_published(&self, rev: i64) {
        lock(&self.inner).published = rev;
    }

    /// Queues a progress marker behind everything published so far in each
    /// of `subs`; returns the round, or `None` if there is nothing to wait
    /// for (no subscription).
    pub fn progress(&self, subs: &[u64]) -> std::sync::Arc<ProgressRound> {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let mut inner = lock(&self.inner);
        let round = std::sync::Arc::new(ProgressRound {
            revision: inner.published,
            remaining: AtomicUsize::new(subs.len()),
            failed: AtomicBool::new(false),
        });
        let mut gone = Vec::new();
        for id in subs {
            let queued = inner
                .subs
                .get(id)
                .is_some_and(|s| s.tx.try_send(Item::Progress(round.clone())).is_ok());
            if !queued {
                // Behind or gone: this round gets no answer.
                round.failed.store(true, Ordering::Relaxed);
                round.remaining.fetch_sub(1, Ordering::Relaxed);
                gone.push(*id);
            }
        }
        for id in gone {
            inner.subs.remove(&id);
        }
        round
    }

    /// Drops every subscription; their owners resume from history.
    pub(crate) fn drop_all(&self) {
        lock(&self.inner).subs.clear();
    }

    pub fn unsubscribe(&self, id: u64) {
        lock(&self.inner).subs.remove(&id);
    }

    /// Delivers applied events (in revision order) to every subscription
    /// they concern.
    pub(crate) fn publish(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = lock(&self.inner);
        let mut gone = Vec::new();
        for (id, sub) in &inner.subs {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| {
                    e.kv.as_ref().is_some_and(|kv| {
                        kv.mod_revision >= sub.min_rev
                            && in_range(&kv.key, &sub.key, &sub.range_end)
                    })
                })
                .cloned()
                .collect();
            // Full or closed: drop it (the owner resumes from history).
            if !mine.is_empty() && sub.tx.try_send(Item::Events(mine)).is_err() {
                gone.push(*id);
            }
        }
        for id in gone {
            inner.subs.remove(&id);
        }
        if let Some(rev) = events
            .last()
            .and_then(|e| e.kv.as_ref())
            .map(|kv| kv.mod_revision)
        {
            inner.published = inner.published.max(rev);
        }
    }
}

/// When each lease expires. Every member keeps the clocks, but only the
/// leader acts on them (it revokes expired leases through Raft), and a new
/// leader restarts every clock with the full TTL, as etcd does.
#[derive(Default)]
pub struct LeaseClock {
    expiry: Mutex<HashMap<i64, (i64, Instant)>>,
}

impl LeaseClock {
    pub(crate) fn granted(&self, id: i64, ttl: i64) {
        lock(&self.expiry).insert(id, (ttl, Instant::now() + secs(ttl)));
    }

    pub(crate) fn revoked(&self, id: i64) {
        lock(&self.expiry).remove(&id);
    }

    /// Restarts a lease's clock (keep-alive); returns its TTL, or `None` if
    /// there is no such lease.
    pub fn refresh(&self, id: i64) -> Option<i64> {
        let mut e = lock(&self.expiry);
        let (ttl, at) = e.get_mut(&id)?;
        *at = Instant::now() + secs(*ttl);
        Some(*ttl)
    }

    /// Seconds left, rounded up as etcd reports them.
    pub fn remaining(&self, id: i64) -> Option<(i64, i64)> {
        let e = lock(&self.expiry);
        let (ttl, at) = e.get(&id)?;
        let left = at.saturating_duration_since(Instant::now());
        Some((*ttl, left.as_millis().div_ceil(1000) as i64))
    }

    /// Sets a lease's clock to run out in `secs_left` seconds.
    pub(crate) fn arm(&self, id: i64, ttl: i64, secs_left: i64) {
        lock(&self.expiry).insert(id, (ttl, Instant::now() + secs(secs_left)));
    }

    pub(crate) fn reset(&self, leases: impl IntoIterator<Item = (i64, i64)>) {
        let now = Instant::now();
        *lock(&self.expiry) = leases
            .into_iter()
            .map(|(id, ttl)| (id, (ttl, now + secs(ttl))))
            .collect();
    }

    pub(crate) fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        lock(&self.expiry)
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| *id)
            .collect()
    }
}

fn secs(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::Changes;
    use crate::proto::etcdserverpb::PutRequest;

    #[test]
    fn a_slow_subscription_is_dropped_and_resumes_from_history() {
        let shared = Shared::default();
        let (history, mut sub) = shared.watch(b"k", &[], 0).expect("watch");
        assert!(history.is_empty());
        assert_eq!(sub.from, 2);
        let mut published = 0;
        for i in 0..(SUB_QUEUE + 10) {
            let mut ch = Changes::default();
            shared
                .mvcc_mut()
                .put(
                    &PutRequest {
                        key: b"k".to_vec(),
                        value: i.to_string().into_bytes(),
                        ..Default::default()
                    },
                    &mut ch,
                )
                .expect("put");
            shared.hub.publish(&ch.events);
            published += 1;
        }
        // The queue held SUB_QUEUE batches; then the hub let go of it.
        let mut received = 0;
        while let Ok(Item::Events(batch)) = sub.rx.try_recv() {
            received += batch.len();
        }
        assert_eq!(received, SUB_QUEUE);
        assert!(sub.rx.is_closed());
        // Resuming from the next revision replays exactly what was missed.
        let next = 2 + received as i64;
        let (missed, _resumed) = shared.watch(b"k", &[], next).expect("resume");
        assert_eq!(missed.len(), published - received);
        assert_eq!(missed[0].kv.as_ref().map(|kv| kv.mod_revision), Some(next));
    }
}
