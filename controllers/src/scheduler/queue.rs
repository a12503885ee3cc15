//! The scheduling queue, as kube-scheduler's: pods to try now (active),
//! pods waiting out a back-off, and pods that found no node
//! (unschedulable) and wait for a change in the cluster that might make
//! room for them. No I/O and no clock of its own: the caller passes `now`.
//!
//! ```text
//!   add ──▶ active ──pop──▶ (scheduling) ──no node──▶ unschedulable
//!             ▲                  │                       │
//!             │           bind failed                    │ node added/updated,
//!             └── back-off ◀─────┴───────────────────────┘ pod deleted/bound,
//!               (1 s, 2 s, … 10 s)                         or 30 s passed
//! ```

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a pod waits in the unschedulable set without any change
/// before it is tried again anyway.
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(30);

/// The back-off after `attempts` failed attempts: 1 s, doubling, at most
/// 10 s.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(8);
    (INITIAL_BACKOFF * (1u32 << doublings)).min(MAX_BACKOFF)
}

#[derive(Debug, Default)]
pub struct Queue {
    active: VecDeque<String>,
    in_active: HashSet<String>,
    /// (ready at, pod)
    backoff: BTreeSet<(Instant, String)>,
    backoff_until: HashMap<String, Instant>,
    /// Pod → since when.
    unschedulable: HashMap<String, Instant>,
    /// Pod → (failed attempts, the last one).
    attempts: HashMap<String, (u32, Instant)>,
}

impl Queue {
    /// A pending pod was seen: it is queued unless it already waits
    /// somewhere (an update of a waiting pod, such as the condition the
    /// scheduler itself wrote, does not make it try again).
    pub fn add(&mut self, key: &str) {
        if !self.contains(key) {
            self.push_active(key.to_string());
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.in_active.contains(key)
            || self.backoff_until.contains_key(key)
            || self.unschedulable.contains_key(key)
    }

    /// Whether some pod is ready to be tried right away.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    pub fn is_unschedulable(&self, key: &str) -> bool {
        self.unschedulable.contains_key(key)
    }

    /// The pod is bound or gone: forget it, back-off included.
    pub fn remove(&mut self, key: &str) {
        self.take(key);
        self.attempts.remove(key);
    }

    /// No node fits the pod: it waits for a change.
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        self.take(key);
        self.failed(key, now);
        self.unschedulable.insert(key.to_string(), now);
    }

    /// The attempt failed for a passing reason (the binding request): try
    /// again after the back-off.
    pub fn retry(&mut self, key: &str, now: Instant) {
        self.take(key);
        self.failed(key, now);
        self.send_to_backoff(key.to_string(), now);
    }

    /// Something changed that may make room (a node added or updated, a
    /// pod deleted or bound): every unschedulable pod is tried again once
    /// its back-off is over.
    pub fn move_all(&mut self, now: Instant) {
        let waiting: Vec<String> = self.unschedulable.drain().map(|(k, _)| k).collect();
        for key in waiting {
            self.send_to_backoff(key, now);
        }
    }

    /// The pods to try now: the active ones, after moving in those whose
    /// back-off is over and those unschedulable for `MAX_UNSCHEDULABLE`.
    pub fn pop_ready(&mut self, now: Instant) -> Vec<String> {
        let stale: Vec<String> = self
            .unschedulable
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= MAX_UNSCHEDULABLE)
            .map(|(k, _)| k.clone())
            .collect();
        for key in stale {
            self.unschedulable.remove(&key);
            self.send_to_backoff(key, now);
        }
        while let Some((at, key)) = self.backoff.first().cloned() {
            if at > now {
                break;
            }
            self.backoff.pop_first();
            self.backoff_until.remove(&key);
            self.push_active(key);
        }
        self.in_active.clear();
        self.active.drain(..).collect()
    }

    /// When a waiting pod becomes ready next (to sleep until then).
    pub fn next_ready(&self) -> Option<Instant> {
        let backoff = self.backoff.first().map(|(at, _)| *at);
        let stale = self
            .unschedulable
            .values()
            .min()
            .map(|since| *since + MAX_UNSCHEDULABLE);
        match (backoff, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn len(&self) -> usize {
        self.active.len() + self.backoff.len() + self.unschedulable.len()
    }

    /// The pods in each part: (active, backoff, unschedulable).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (
            self.active.len(),
            self.backoff.len(),
            self.unschedulable.len(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn failed(&mut self, key: &str, now: Instant) {
        let entry = self.attempts.entry(key.to_string()).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
    }

    /// Into the back-off set until the last attempt plus its back-off (or
    /// straight to active when that is past).
    fn send_to_backoff(&mut self, key: String, now: Instant) {
        let until = self
            .attempts
            .get(&key)
            .map_or(now, |(n, last)| *last + backoff(*n));
        if until <= now {
            self.push_active(key);
        } else {
            self.backoff_until.insert(key.clone(), until);
            self.backoff.insert((until, key));
        }
    }

    fn push_active(&mut self, key: String) {
        if self.in_active.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    /// Out of whichever set holds the pod.
    fn take(&mut self, key: &str) {
        if self.in_active.remove(key) {
            self.active.retain(|k| k != key);
        }
        if let Some(at) = self.backoff_until.remove(key) {
            self.backoff.remove(&(at, key.to_string()));
        }
        self.unschedulable.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let table = [(0, 1), (1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (40, 10)];
        for (attempts, secs) in table {
            assert_eq!(backoff(attempts), Duration::from_secs(secs), "{attempts}");
        }
    }

    #[test]
    fn new_pods_are_tried_once_each() {
        let now = Instant::now();
        let mut q = Queue::default();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.pop_ready(now), vec!["a", "b"]);
        assert!(q.pop_ready(now).is_empty());
        assert!(q.is_empty());
    }

    #[test]
    fn unschedulable_pods_wait_for_a_change_then_their_backoff() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add("p");
        assert_eq!(q.pop_ready(t0), vec!["p"]);
        q.unschedulable("p", t0);
        // Its own condition update does not bring it back.
        q.add("p");
        assert!(q.is_unschedulable("p"));
        assert!(q.pop_ready(t0 + Duration::from_secs(5)).is_empty());
        // A node appears: back after the 1 s back-off of the first failure.
        q.move_all(t0 + Duration::from_millis(200));
        assert!(q.pop_ready(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(q.next_ready(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(q.pop_ready(t0 + Duration::from_secs(1)), vec!["p"]);
        // Second failure: 2 s; a change long after moves it straight in.
        let t1 = t0 + Duration::from_secs(1);
        q.unschedulable("p", t1);
        q.move_all(t1 + Duration::from_secs(3));
        assert_eq!(q.pop_ready(t1 + Duration::from_secs(3)), vec!["p"]);
    }

    #[test]
    fn unschedulable_pods_are_retried_after_thirty_seconds_anyway() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add("p");
        q.pop_ready(t0);
        q.unschedulable("p", t0);
        assert_eq!(q.next_ready(), Some(t0 + MAX_UNSCHEDULABLE));
        assert!(q.pop_ready(t0 + Duration::from_secs(29)).is_empty());
        assert_eq!(q.pop_ready(t0 + MAX_UNSCHEDULABLE), vec!["p"]);
    }

    #[test]
    fn failed_bindings_back_off_and_removal_forgets() {
        let t0 = Instant::now();
        let mut q = Queue::default();
        q.add("p");
        q.pop_ready(t0);
        q.retry("p", t0);
        assert!(q.contains("p"));
        assert!(q.pop_ready(t0).is_empty());
        assert_eq!(q.pop_ready(t0 + Duration::from_secs(1)), vec!["p"]);
        q.retry("p", t0 + Duration::from_secs(1));
        q.remove("p");
        assert!(q.is_empty() && q.next_ready().is_none());
        // A new pod of the same name starts afresh.
        q.add("p");
        assert_eq!(q.pop_ready(t0 + Duration::from_secs(1)), vec!["p"]);
    }
}
