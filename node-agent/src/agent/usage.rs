//! Resource usage of this node's real pods, for `kubectl top` and the
//! HorizontalPodAutoscaler: every `interval`, each running container's
//! cgroup is read (cumulative CPU time, memory working set as the kubelet
//! computes it) and the node's usage from `/proc`, and one
//! NodeMetricsReport goes to the apiserver, the same report simulated
//! nodes write (see the apiserver's `rest::metrics`).
//!
//! CPU is a rate: the CPU time a run used between two readings over the
//! time between them, so a container is reported from its second reading
//! on; a restarted container is a new run and starts over (no negative
//! rate). Memory is the reading itself.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::PostParams;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as MetricRegistry;
use serde_json::{json, Value};

use super::Shared;
use crate::runtime::Runtime;

/// One reading of a run (container id) or of the node.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    cpu_ns: u64,
}

/// CPU in nanocores between two readings; None when time did not pass or
/// the counter went back (a new run under the same id).
fn nanocores(before: Reading, now: Reading) -> Option<u64> {
    let elapsed = now.at.checked_duration_since(before.at)?.as_nanos();
    let used = u128::from(now.cpu_ns.checked_sub(before.cpu_ns)?);
    (elapsed > 0).then(|| u64::try_from(used * 1_000_000_000 / elapsed).unwrap_or(u64::MAX))
}

/// The node's CPU time so far (every CPU's non-idle time, from `/proc/stat`).
fn node_cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_proc_stat(&stat)
}

/// Non-idle time of the `cpu` line, in nanoseconds (USER_HZ = 100).
fn parse_proc_stat(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(8)
        .map(|(_, v)| *v)
        .sum();
    Some(busy.saturating_mul(10_000_000))
}

/// The node's memory in use: MemTotal minus MemAvailable.
fn node_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&meminfo)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let total = super::node::meminfo_bytes(text, "MemTotal")?;
    Some(total.saturating_sub(super::node::meminfo_bytes(text, "MemAvailable")?))
}

/// Writes this node's usage report every `interval`.
pub async fn report(shared: Arc<Shared>, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let request = kube::core::Request::new("/apis/metrics.shoal.dev/v1alpha1/nodereports");
    let node = shared.config.node_name.clone();
    let mut last: HashMap<String, Reading> = HashMap::new();
    let mut node_last: Option<Reading> = None;
    loop {
        tick.tick().await;
        let runtime = shared.runtime.clone();
        let pods = shared.registry.snapshot();
        let read = tokio::task::spawn_blocking(move || {
            let at = Instant::now();
            let containers: HashMap<String, (Reading, u64)> = pods
                .iter()
                .flat_map(|pod| pod.runs.iter().map(|(_, id)| id.clone()))
                .filter_map(|id| {
                    let usage = runtime.usage(&id)?;
                    let reading = Reading {
                        at,
                        cpu_ns: usage.cpu_ns,
                    };
                    Some((id, (reading, usage.working_set)))
                })
                .collect();
            let node = node_cpu_ns().map(|cpu_ns| Reading { at, cpu_ns });
            (pods, containers, node, node_memory())
        })
        .await;
        let Ok((pods, readings, node_now, node_memory)) = read else {
            continue;
        };
        let mut reported = Vec::new();
        for pod in &pods {
            let containers: Vec<Value> = pod
                .runs
                .iter()
                .filter_map(|(container, id)| {
                    let (now, memory) = readings.get(id)?;
                    let cpu = nanocores(*last.get(id)?, *now)?;
                    Some(json!({"name": container, "usage": {"cpu": format!("{cpu}n"), "memory": format!("{memory}")}}))
                })
                .collect();
            if !containers.is_empty() {
                reported.push(json!({
                    "namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "containers": containers,
                }));
            }
        }
        last = readings.into_iter().map(|(id, (r, _))| (id, r)).collect();
        let node_cpu = match (node_last, node_now) {
            (Some(before), Some(now)) => nanocores(before, now),
            _ => None,
        };
        node_last = node_now;
        let Some(node_cpu) = node_cpu else {
            continue;
        };
        let body = json!({
            "apiVersion": "metrics.shoal.dev/v1alpha1",
            "kind": "NodeMetricsReport",
            "metadata": {"name": node},
            "timestamp": jiff::Timestamp::now().to_string(),
            "window": format!("{}s", interval.as_secs().max(1)),
            "usage": {"cpu": format!("{node_cpu}n"), "memory": format!("{}", node_memory.unwrap_or(0))},
            "pods": reported,
        });
        let Ok(bytes) = serde_json::to_vec(&body) else {
            continue;
        };
        match request.replace(&node, &PostParams::default(), bytes) {
            Ok(put) => {
                if let Err(e) = shared.client.request_text(put).await {
                    tracing::debug!(error = %e, "cannot write the usage report");
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot build the usage report"),
        }
    }
}

// ---------------------------------------------------------------------------
// `/metrics/resource`

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
    namespace: String,
    pod: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PodLabels {
    namespace: String,
    pod: String,
}

type FloatCounter = Counter<f64, AtomicU64>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// What one container uses now.
struct ContainerUsage {
    labels: ContainerLabels,
    cpu_seconds: f64,
    working_set: f64,
    started: Option<f64>,
}

/// The kubelet's `/metrics/resource`: cumulative CPU seconds and memory
/// working set of each running container, each pod (its containers'
/// sums) and the node, and each container's start time; read from the
/// cgroups and `/proc` at each scrape.
pub fn resource_exposition(pods: &[super::registry::PodRuns], runtime: &Runtime) -> String {
    let containers: Vec<ContainerUsage> = pods
        .iter()
        .flat_map(|pod| {
            pod.runs.iter().filter_map(move |(container, id)| {
                let usage = runtime.usage(id)?;
                let started = match runtime.status(id) {
                    Ok(crate::runtime::Status::Running { started_at, .. }) => {
                        Some(started_at.as_millisecond() as f64 / 1000.0)
                    }
                    _ => None,
                };
                Some(ContainerUsage {
                    labels: ContainerLabels {
                        container: container.clone(),
                        namespace: pod.namespace.clone(),
                        pod: pod.name.clone(),
                    },
                    cpu_seconds: usage.cpu_ns as f64 / 1e9,
                    working_set: usage.working_set as f64,
                    started,
                })
            })
        })
        .collect();
    let node = (node_cpu_ns(), node_memory());
    exposition(&containers, node)
}

fn exposition(containers: &[ContainerUsage], node: (Option<u64>, Option<u64>)) -> String {
    let container_cpu = Family::<ContainerLabels, FloatCounter>::default();
    let container_memory = Family::<ContainerLabels, FloatGauge>::default();
    let container_start = Family::<ContainerLabels, FloatGauge>::default();
    let pod_cpu = Family::<PodLabels, FloatCounter>::default();
    let pod_memory = Family::<PodLabels, FloatGauge>::default();
    let node_cpu = FloatCounter::default();
    let node_memory = FloatGauge::default();
    let scrape_error = Gauge::<i64>::default();
    for c in containers {
        container_cpu.get_or_create(&c.labels).inc_by(c.cpu_seconds);
        container_memory.get_or_create(&c.labels).set(c.working_set);
        if let Some(started) = c.started {
            container_start.get_or_create(&c.labels).set(started);
        }
        let pod = PodLabels {
            namespace: c.labels.namespace.clone(),
            pod: c.labels.pod.clone(),
        };
        pod_cpu.get_or_create(&pod).inc_by(c.cpu_seconds);
        pod_memory.get_or_create(&pod).inc_by(c.working_set);
    }
    match node {
        (Some(cpu_ns), Some(memory)) => {
            node_cpu.inc_by(cpu_ns as f64 / 1e9);
            node_memory.set(memory as f64);
        }
        _ => {
            scrape_error.set(1);
        }
    }
    let mut registry = MetricRegistry::default();
    registry.register(
        "container_cpu_usage_seconds",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        container_cpu,
    );
    registry.register(
        "container_memory_working_set_bytes",
        "[STABLE] Current working set of the container in bytes",
        container_memory,
    );
    registry.register(
        "container_start_time_seconds",
        "[STABLE] Start time of the container since unix epoch in seconds",
        container_start,
    );
    registry.register(
        "node_cpu_usage_seconds",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        node_cpu,
    );
    registry.register(
        "node_memory_working_set_bytes",
        "[STABLE] Current working set of the node in bytes",
        node_memory,
    );
    registry.register(
        "pod_cpu_usage_seconds",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        pod_cpu,
    );
    registry.register(
        "pod_memory_working_set_bytes",
        "[STABLE] Current working set of the pod in bytes",
        pod_memory,
    );
    registry.register(
        "resource_scrape_error",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
        scrape_error,
    );
    shoal_core::metrics::render(&registry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_two_readings_and_never_go_negative() {
        let t0 = Instant::now();
        let a = Reading {
            at: t0,
            cpu_ns: 1_000_000_000,
        };
        let b = Reading {
            at: t0 + Duration::from_secs(2),
            cpu_ns: 2_000_000_000,
        };
        assert_eq!(nanocores(a, b), Some(500_000_000));
        assert_eq!(nanocores(b, a), None);
        assert_eq!(nanocores(a, a), None);
    }

    #[test]
    fn proc_files_parse() {
        let stat = "cpu  100 5 50 1000 20 1 2 3 0 0\ncpu0 1 2 3 4\n";
        // user nice system irq softirq steal: 100+5+50+1+2+3 jiffies.
        assert_eq!(parse_proc_stat(stat), Some(161 * 10_000_000));
        let meminfo = "MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:   6000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(10_000 * 1024));
    }

    #[test]
    fn resource_metrics_sum_pods_and_carry_the_kubelet_names() {
        let c = |pod: &str, container: &str, cpu: f64, memory: f64| ContainerUsage {
            labels: ContainerLabels {
                container: container.into(),
                namespace: "default".into(),
                pod: pod.into(),
            },
            cpu_seconds: cpu,
            working_set: memory,
            started: Some(1_700_000_000.5),
        };
        let text = exposition(
            &[c("web", "a", 1.5, 100.0), c("web", "b", 0.5, 50.0)],
            (Some(3_000_000_000), Some(4096)),
        );
        for line in [
            "container_cpu_usage_seconds_total{container=\"a\",namespace=\"default\",pod=\"web\"} 1.5",
            "container_memory_working_set_bytes{container=\"b\",namespace=\"default\",pod=\"web\"} 50.0",
            "pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2.0",
            "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 150.0",
            "node_cpu_usage_seconds_total 3.0",
            "node_memory_working_set_bytes 4096.0",
            "resource_scrape_error 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        let failed = exposition(&[], (None, None));
        assert!(
            failed.lines().any(|l| l == "resource_scrape_error 1"),
            "{failed}"
        );
    }
}
