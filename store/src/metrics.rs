//! The member's Prometheus metrics, with etcd's names: leadership, the
//! proposals (client writes) and the disk (`etcdctl`'s and Grafana's etcd
//! dashboards read these).
//!
//! ```text
//!  etcd_server_has_leader / is_leader            Raft's view, at each scrape
//!  etcd_server_leader_changes_seen_total         Node::leader_watch
//!  etcd_server_proposals_committed_total (gauge) the committed index (log store)
//!  etcd_server_proposals_applied_total   (gauge) the applied index (state machine)
//!  etcd_server_proposals_pending / failed_total  client writes in flight / refused
//!  etcd_disk_wal_fsync_duration_seconds          each group commit's fsync
//!  etcd_disk_backend_commit_duration_seconds     each applied batch's write
//! ```
//!
//! The handles are cheap clones: the log store, the state machine and the
//! node each keep the ones they move.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    pub has_leader: Gauge,
    pub is_leader: Gauge,
    pub leader_changes: Counter,
    pub committed: Gauge,
    pub applied: Gauge,
    pub pending: Gauge,
    pub failed: Counter,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            registry: Arc::default(),
            has_leader: Gauge::default(),
            is_leader: Gauge::default(),
            leader_changes: Counter::default(),
            committed: Gauge::default(),
            applied: Gauge::default(),
            pending: Gauge::default(),
            failed: Counter::default(),
            // etcd's buckets: 1 ms doubling to ~8 s.
            wal_fsync: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            backend_commit: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        };
        let mut registry = Registry::default();
        registry.register(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            m.has_leader.clone(),
        );
        registry.register(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            m.is_leader.clone(),
        );
        registry.register(
            "etcd_server_leader_changes_seen",
            "The number of leader changes seen.",
            m.leader_changes.clone(),
        );
        registry.register(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            m.committed.clone(),
        );
        registry.register(
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            m.applied.clone(),
        );
        registry.register(
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            m.pending.clone(),
        );
        registry.register(
            "etcd_server_proposals_failed",
            "The total number of failed proposals seen.",
            m.failed.clone(),
        );
        registry.register(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
            m.wal_fsync.clone(),
        );
        registry.register(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            m.backend_commit.clone(),
        );
        Metrics {
            registry: Arc::new(registry),
            ..m
        }
    }
}

impl Metrics {
    /// The exposition (OpenMetrics text, ending in `# EOF`).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String does not fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// A write in flight: the pending gauge is raised while it lives.
pub(crate) struct Pending(Gauge);

impl Pending {
    pub(crate) fn start(gauge: Gauge) -> Pending {
        gauge.inc();
        Pending(gauge)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// An index as a gauge value.
pub(crate) fn index_value(index: u64) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}
