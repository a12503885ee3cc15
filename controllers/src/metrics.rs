//! The controllers' `/metrics`, with Kubernetes' names: each control
//! loop's work queue as client-go's workqueue reports it, and the
//! scheduler's attempts. One set per process, as kube-controller-manager's
//! global registry.
//!
//! ```text
//!  informer change ──▶ added(key)   workqueue_adds_total, workqueue_depth
//!  reconcile starts ──▶ started(key) workqueue_queue_duration_seconds
//!  reconcile ends   ──▶ finished()   workqueue_work_duration_seconds
//!  sync failed      ──▶ retried()    workqueue_retries_total
//!  scheduling cycle ──▶ attempt()    scheduler_schedule_attempts_total,
//!                                    scheduler_scheduling_attempt_duration_seconds
//!  queue sizes      ──▶ pending()    scheduler_pending_pods{queue}
//! ```
//!
//! A key is queued once however often it is woken before its turn (the
//! workqueue's dirty set); its queue duration runs from the first wake.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    result: &'static str,
    profile: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: &'static str,
}

/// client-go's workqueue buckets: 1 µs to 10 s by tens.
fn workqueue_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_001, 10.0, 8))
}

/// kube-scheduler's: 1 ms doubling to ~16 s.
fn scheduler_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

struct Metrics {
    registry: Registry,
    adds: Family<NameLabels, Counter>,
    depth: Family<NameLabels, Gauge>,
    queue_duration: Family<NameLabels, Histogram>,
    work_duration: Family<NameLabels, Histogram>,
    retries: Family<NameLabels, Counter>,
    attempts: Family<AttemptLabels, Counter>,
    attempt_duration: Family<AttemptLabels, Histogram>,
    pending_pods: Family<QueueLabels, Gauge>,
    /// Each loop's queued keys and when they were first woken.
    queued: Mutex<HashMap<&'static str, HashMap<String, Instant>>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::default(),
        adds: Family::default(),
        depth: Family::default(),
        queue_duration: Family::new_with_constructor(workqueue_histogram as fn() -> Histogram),
        work_duration: Family::new_with_constructor(workqueue_histogram as fn() -> Histogram),
        retries: Family::default(),
        attempts: Family::default(),
        attempt_duration: Family::new_with_constructor(scheduler_histogram as fn() -> Histogram),
        pending_pods: Family::default(),
        queued: Mutex::default(),
    };
    let mut registry = Registry::default();
    registry.register(
        "workqueue_adds",
        "Total number of adds handled by workqueue",
        m.adds.clone(),
    );
    registry.register(
        "workqueue_depth",
        "Current depth of workqueue",
        m.depth.clone(),
    );
    registry.register(
        "workqueue_queue_duration_seconds",
        "How long in seconds an item stays in workqueue before being requested.",
        m.queue_duration.clone(),
    );
    registry.register(
        "workqueue_work_duration_seconds",
        "How long in seconds processing an item from workqueue takes.",
        m.work_duration.clone(),
    );
    registry.register(
        "workqueue_retries",
        "Total number of retries handled by workqueue",
        m.retries.clone(),
    );
    registry.register(
        "scheduler_schedule_attempts",
        "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means an internal scheduler problem.",
        m.attempts.clone(),
    );
    registry.register(
        "scheduler_scheduling_attempt_duration_seconds",
        "Scheduling attempt latency in seconds (scheduling algorithm + binding)",
        m.attempt_duration.clone(),
    );
    registry.register(
        "scheduler_pending_pods",
        "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods.",
        m.pending_pods.clone(),
    );
    Metrics { registry, ..m }
});

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The controllers' exposition (OpenMetrics text).
pub fn render() -> String {
    shoal_core::metrics::render(&METRICS.registry)
}

/// One control loop's work queue.
#[derive(Clone, Copy)]
pub struct Queue(pub &'static str);

impl Queue {
    fn labels(self) -> NameLabels {
        NameLabels { name: self.0 }
    }

    fn set_depth(self, depth: usize) {
        METRICS
            .depth
            .get_or_create(&self.labels())
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// `key` was woken (a change to its object).
    pub fn added(self, key: String) {
        METRICS.adds.get_or_create(&self.labels()).inc();
        let mut queued = lock(&METRICS.queued);
        let keys = queued.entry(self.0).or_default();
        keys.entry(key).or_insert_with(Instant::now);
        self.set_depth(keys.len());
    }

    /// `key`'s sync starts (or it is gone before its turn).
    pub fn started(self, key: &str) {
        let mut queued = lock(&METRICS.queued);
        let keys = queued.entry(self.0).or_default();
        if let Some(since) = keys.remove(key) {
            METRICS
                .queue_duration
                .get_or_create(&self.labels())
                .observe(since.elapsed().as_secs_f64());
        }
        self.set_depth(keys.len());
    }

    /// A sync that started at `started` ended.
    pub fn finished(self, started: Instant) {
        METRICS
            .work_duration
            .get_or_create(&self.labels())
            .observe(started.elapsed().as_secs_f64());
    }

    /// A failed sync is retried.
    pub fn retried(self) {
        METRICS.retries.get_or_create(&self.labels()).inc();
    }
}

/// The key of an object in a loop's queue: `namespace/name`, or `name`.
pub fn key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// How a scheduling attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    Scheduled,
    Unschedulable,
    Error,
}

/// One pod's scheduling attempt, which took from `started` until now.
pub fn attempt(result: Attempt, started: Instant) {
    let labels = AttemptLabels {
        result: match result {
            Attempt::Scheduled => "scheduled",
            Attempt::Unschedulable => "unschedulable",
            Attempt::Error => "error",
        },
        profile: "default-scheduler",
    };
    METRICS.attempts.get_or_create(&labels).inc();
    METRICS
        .attempt_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// The scheduler's queue sizes.
pub fn pending(active: usize, backoff: usize, unschedulable: usize) {
    for (queue, n) in [
        ("active", active),
        ("backoff", backoff),
        ("unschedulable", unschedulable),
    ] {
        METRICS
            .pending_pods
            .get_or_create(&QueueLabels { queue })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}
