//! The agent's own `/metrics`, with the kubelet's names: pods and
//! containers running, pod start latency, status writes, runtime
//! operations, image pulls and the image store. One set per process (one
//! agent per process), as the kubelet's global registry.
//!
//! ```text
//!  kubelet_running_pods / kubelet_running_containers   at each scrape
//!  kubelet_pod_start_duration_seconds                  first seen → Running
//!  kubelet_pod_status_sync_duration_seconds            each status write
//!  kubelet_runtime_operations_total / _errors_total / _duration_seconds
//!                                                      by operation_type
//!  kubelet_image_pull_duration_seconds                 builds and loads
//!  shoal_image_store_images / _bytes                   at each scrape
//! ```

use std::sync::LazyLock;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    container_state: &'static str,
}

/// The kubelet's buckets for operations: 5 ms doubling to ~80 s.
fn operation_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

struct Metrics {
    registry: Registry,
    running_pods: Gauge,
    running_containers: Family<StateLabels, Gauge>,
    pod_start: Histogram,
    status_sync: Histogram,
    operations: Family<OperationLabels, Counter>,
    errors: Family<OperationLabels, Counter>,
    durations: Family<OperationLabels, Histogram>,
    image_pulls: Histogram,
    images: Gauge,
    image_bytes: Gauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let m = Metrics {
        registry: Registry::default(),
        running_pods: Gauge::default(),
        running_containers: Family::default(),
        pod_start: Histogram::new([
            0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0,
            240.0, 300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
        ]),
        status_sync: operation_histogram(),
        operations: Family::default(),
        errors: Family::default(),
        durations: Family::new_with_constructor(operation_histogram as fn() -> Histogram),
        image_pulls: Histogram::new([
            0.5, 1.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 180.0, 240.0, 300.0, 600.0, 900.0,
        ]),
        images: Gauge::default(),
        image_bytes: Gauge::default(),
    };
    let mut r = Registry::default();
    r.register(
        "kubelet_running_pods",
        "Number of pods that have a running pod sandbox",
        m.running_pods.clone(),
    );
    r.register(
        "kubelet_running_containers",
        "Number of containers currently running",
        m.running_containers.clone(),
    );
    r.register(
        "kubelet_pod_start_duration_seconds",
        "Duration in seconds from kubelet seeing a pod for the first time to the pod starting to run",
        m.pod_start.clone(),
    );
    r.register(
        "kubelet_pod_status_sync_duration_seconds",
        "Duration in seconds to sync a pod status update.",
        m.status_sync.clone(),
    );
    r.register(
        "kubelet_runtime_operations",
        "Cumulative number of runtime operations by operation type.",
        m.operations.clone(),
    );
    r.register(
        "kubelet_runtime_operations_errors",
        "Cumulative number of runtime operation errors by operation type.",
        m.errors.clone(),
    );
    r.register(
        "kubelet_runtime_operations_duration_seconds",
        "Duration in seconds of runtime operations. Broken down by operation type.",
        m.durations.clone(),
    );
    r.register(
        "kubelet_image_pull_duration_seconds",
        "Duration in seconds to pull an image (here: build it from packages or load its archive).",
        m.image_pulls.clone(),
    );
    r.register(
        "shoal_image_store_images",
        "Images in the node's image store",
        m.images.clone(),
    );
    r.register(
        "shoal_image_store_bytes",
        "Bytes of the images in the node's image store",
        m.image_bytes.clone(),
    );
    Metrics { registry: r, ..m }
});

fn gauge_value(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A runtime operation (`start_container`, `stop_container`, …) that
/// began at `started` and ended `ok` or not.
pub fn operation(operation_type: &'static str, started: Instant, ok: bool) {
    let labels = OperationLabels { operation_type };
    METRICS.operations.get_or_create(&labels).inc();
    if !ok {
        METRICS.errors.get_or_create(&labels).inc();
    }
    METRICS
        .durations
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
}

/// A pod seen at `seen` is running.
pub fn pod_started(seen: Instant) {
    METRICS.pod_start.observe(seen.elapsed().as_secs_f64());
}

/// A status write that began at `started` ended.
pub fn status_synced(started: Instant) {
    METRICS.status_sync.observe(started.elapsed().as_secs_f64());
}

/// An image was pulled (built or loaded) in `seconds`.
pub fn image_pulled(seconds: f64) {
    METRICS.image_pulls.observe(seconds);
}

/// What is true at scrape time: pods and containers running, the image
/// store's size.
pub struct Now {
    pub running_pods: u64,
    pub running_containers: u64,
    pub images: u64,
    pub image_bytes: u64,
}

/// The agent's own exposition (OpenMetrics text).
pub fn render(now: &Now) -> String {
    METRICS.running_pods.set(gauge_value(now.running_pods));
    METRICS
        .running_containers
        .get_or_create(&StateLabels {
            container_state: "running",
        })
        .set(gauge_value(now.running_containers));
    METRICS.images.set(gauge_value(now.images));
    METRICS.image_bytes.set(gauge_value(now.image_bytes));
    shoal_core::metrics::render(&METRICS.registry)
}
