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
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::PostParams;
use serde_json::{json, Value};

use super::Shared;

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
}
