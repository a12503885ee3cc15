//! How many replicas a resource utilization target asks for, as
//! Kubernetes' `replica_calculator.go` computes it (`GetResourceReplicas`):
//!
//! - utilization = Σ usage / Σ requests (integer percent) over the pods
//!   that have metrics and count: pods being deleted or Failed are
//!   ignored; Pending pods, and for CPU pods that are not Ready or whose
//!   sample was taken less than one window after they turned Ready (during
//!   the first 5 minutes), are "unready"; pods without a sample are
//!   "missing";
//! - ratio = utilization / target; within the tolerance (0.1) of 1 nothing
//!   changes, otherwise desired = ⌈ratio × ready pods⌉;
//! - with missing pods, or unready pods on a scale-up, the ratio is
//!   computed again counting missing pods at 100 % of their request on a
//!   scale-down and at 0 % on a scale-up, and unready pods at 0 % on a
//!   scale-up; if that flips the direction or lands within the tolerance,
//!   nothing changes; otherwise desired = ⌈new ratio × pods counted⌉.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// Kubernetes' `--horizontal-pod-autoscaler-tolerance`.
pub const TOLERANCE: f64 = 0.1;
/// `--horizontal-pod-autoscaler-cpu-initialization-period`.
pub const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// `--horizontal-pod-autoscaler-initial-readiness-delay`.
pub const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod's sample: the sum over its containers, in milli-units.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMetric {
    pub value: i64,
    pub timestamp: jiff::Timestamp,
    pub window: Duration,
}

/// What the calculation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Proposal {
    pub replicas: i32,
    /// Percent of the request, as reported in status.
    pub utilization: i32,
    /// Average usage per pod counted, in milli-units.
    pub raw_average: i64,
    pub timestamp: Option<jiff::Timestamp>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("unable to get metrics for resource {resource}: no metrics returned from resource metrics API")]
    NoMetrics { resource: String },
    #[error("no pods returned by selector while calculating replica count")]
    NoPods,
    #[error("missing request for {resource} in container {container} of Pod {pod}")]
    MissingRequest {
        resource: String,
        container: String,
        pod: String,
    },
    #[error("did not receive metrics for targeted pods (pods might be unready)")]
    NoReadyMetrics,
    #[error("no metrics returned matched known pods")]
    NoMatchingMetrics,
}

/// A quantity in milli-units (`100m` → 100, `1` → 1000, `64Mi` → 67108864000).
pub fn milli(text: &str) -> Option<i64> {
    // Rounded to micro-units first, so that float noise (`90000000n` is
    // 90.00000000000001m) does not round up as Kubernetes' exact
    // `MilliValue` would not.
    let value = (shoal_core::quantity::parse_f64(text)? * 1e6).round() / 1000.0;
    (value.is_finite() && value.abs() < 9e18).then(|| value.ceil() as i64)
}

/// `t + d`, saturating.
pub fn plus(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_add(d).unwrap_or(jiff::Timestamp::MAX)
}

/// `t - d`, saturating.
pub fn minus(t: jiff::Timestamp, d: Duration) -> jiff::Timestamp {
    t.checked_sub(d).unwrap_or(jiff::Timestamp::MIN)
}

/// A metrics window (`15s`, `10.5s`, `500ms`, `1m`) as a duration.
pub fn parse_window(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let seconds = match &text[split..] {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    (seconds.is_finite() && (0.0..1e9).contains(&seconds)).then(|| Duration::from_secs_f64(seconds))
}

/// Each pod's sample of `resource` from a PodMetricsList's items: the sum
/// over its containers; a pod with a container lacking the resource has
/// no sample (as Kubernetes' metrics client).
pub fn samples_of(items: &[serde_json::Value], resource: &str) -> BTreeMap<String, PodMetric> {
    let mut samples = BTreeMap::new();
    for item in items {
        let Some(name) = item.pointer("/metadata/name").and_then(|v| v.as_str()) else {
            continue;
        };
        let containers = item
            .get("containers")
            .and_then(|c| c.as_array())
            .cloned()
            .unwrap_or_default();
        let mut sum = 0i64;
        let mut complete = true;
        for c in &containers {
            match c
                .pointer(&format!("/usage/{resource}"))
                .and_then(|v| v.as_str())
                .and_then(milli)
            {
                Some(v) => sum = sum.saturating_add(v),
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if !complete {
            continue;
        }
        let timestamp = item
            .get("timestamp")
            .and_then(|v| v.as_str())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let window = item
            .get("window")
            .and_then(|v| v.as_str())
            .and_then(parse_window)
            .unwrap_or(Duration::from_secs(15));
        samples.insert(
            name.to_string(),
            PodMetric {
                value: sum,
                timestamp,
                window,
            },
        );
    }
    samples
}

fn ready_condition(pod: &Pod) -> Option<(bool, Option<jiff::Timestamp>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            (
                c.status == "True",
                c.last_transition_time.as_ref().map(|t| t.0),
            )
        })
}

/// (ready pods, unready, missing, ignored), as `groupPods`.
fn group_pods(
    pods: &[Pod],
    metrics: &BTreeMap<String, PodMetric>,
    resource: &str,
    now: jiff::Timestamp,
) -> (usize, BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let mut ready = 0;
    let (mut unready, mut missing, mut ignored) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if pod.metadata.deletion_timestamp.is_some() || phase == "Failed" {
            ignored.insert(name);
            continue;
        }
        if phase == "Pending" {
            unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let start = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            let unready_pod = match (ready_condition(pod), start) {
                (Some((is_ready, transition)), Some(start)) => {
                    let transition = transition.unwrap_or(start);
                    if plus(start, CPU_INITIALIZATION_PERIOD) > now {
                        // Still starting: count it only once it is Ready
                        // and a whole window was sampled since.
                        !is_ready || metric.timestamp < plus(transition, metric.window)
                    } else {
                        // Unready and never been ready.
                        !is_ready && plus(start, INITIAL_READINESS_DELAY) > transition
                    }
                }
                _ => true,
            };
            if unready_pod {
                unready.insert(name);
                continue;
            }
        }
        ready += 1;
    }
    (ready, unready, missing, ignored)
}

/// Each pod's request for `resource` (milli-units): the sum over its
/// containers (and restartable init containers); every one must ask.
fn pod_requests(pods: &[Pod], resource: &str) -> Result<BTreeMap<String, i64>, Error> {
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = &pod.spec else { continue };
        let sidecars = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let mut sum = 0i64;
        for container in spec.containers.iter().chain(sidecars) {
            let request = container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| milli(&q.0));
            match request {
                Some(r) => sum = sum.saturating_add(r),
                None => {
                    return Err(Error::MissingRequest {
                        resource: resource.into(),
                        container: container.name.clone(),
                        pod: name,
                    })
                }
            }
        }
        requests.insert(name, sum);
    }
    Ok(requests)
}

/// (ratio to the target, utilization %, average raw usage).
fn utilization_ratio(
    metrics: &BTreeMap<String, i64>,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), Error> {
    let (mut used, mut requested, mut entries) = (0i64, 0i64, 0i64);
    for (pod, value) in metrics {
        // Metrics of pods we do not know (no request) are extraneous.
        let Some(request) = requests.get(pod) else {
            continue;
        };
        used = used.saturating_add(*value);
        requested = requested.saturating_add(*request);
        entries += 1;
    }
    if requested == 0 {
        return Err(Error::NoMatchingMetrics);
    }
    let utilization = (used.saturating_mul(100) / requested) as i32;
    Ok((
        f64::from(utilization) / f64::from(target.max(1)),
        utilization,
        used / entries.max(1),
    ))
}

/// The replicas a target utilization (percent of request) of `resource`
/// asks for, given the pods the scale selector matches and their samples.
pub fn resource_replicas(
    current: i32,
    target: i32,
    resource: &str,
    pods: &[Pod],
    samples: &BTreeMap<String, PodMetric>,
    now: jiff::Timestamp,
) -> Result<Proposal, Error> {
    if samples.is_empty() {
        return Err(Error::NoMetrics {
            resource: resource.into(),
        });
    }
    if pods.is_empty() {
        return Err(Error::NoPods);
    }
    let (ready, unready, missing, ignored) = group_pods(pods, samples, resource, now);
    let mut metrics: BTreeMap<String, i64> = samples
        .iter()
        .filter(|(pod, _)| !ignored.contains(*pod) && !unready.contains(*pod))
        .map(|(pod, m)| (pod.clone(), m.value))
        .collect();
    let requests = pod_requests(pods, resource)?;
    if metrics.is_empty() {
        return Err(Error::NoReadyMetrics);
    }
    let timestamp = samples.values().next().map(|m| m.timestamp);
    let (ratio, utilization, raw_average) = utilization_ratio(&metrics, &requests, target)?;
    let proposal = |replicas: i32| Proposal {
        replicas,
        utilization,
        raw_average,
        timestamp,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil(ratio * ready as f64)));
    }
    for pod in &missing {
        let value = if ratio < 1.0 {
            // Scaling down: a pod without a sample counts as using its request.
            requests.get(pod).copied().unwrap_or(0)
        } else {
            0
        };
        if ratio != 1.0 {
            metrics.insert(pod.clone(), value);
        }
    }
    if scale_up_with_unready {
        for pod in &unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// The replicas an average usage target (milli-units per pod) of
/// `resource` asks for (`GetRawResourceReplicas`): as for utilization, with
/// the average usage over the target as the ratio and missing pods counted
/// at the target on a scale-down.
pub fn raw_resource_replicas(
    current: i32,
    target: i64,
    resource: &str,
    pods: &[Pod],
    samples: &BTreeMap<String, PodMetric>,
    now: jiff::Timestamp,
) -> Result<Proposal, Error> {
    if samples.is_empty() {
        return Err(Error::NoMetrics {
            resource: resource.into(),
        });
    }
    if pods.is_empty() {
        return Err(Error::NoPods);
    }
    let (ready, unready, missing, ignored) = group_pods(pods, samples, resource, now);
    let mut metrics: BTreeMap<String, i64> = samples
        .iter()
        .filter(|(pod, _)| !ignored.contains(*pod) && !unready.contains(*pod))
        .map(|(pod, m)| (pod.clone(), m.value))
        .collect();
    if metrics.is_empty() {
        return Err(Error::NoReadyMetrics);
    }
    let target = target.max(1);
    let usage_ratio = |metrics: &BTreeMap<String, i64>| {
        let total: i64 = metrics.values().fold(0i64, |a, v| a.saturating_add(*v));
        let average = total / i64::try_from(metrics.len()).unwrap_or(i64::MAX).max(1);
        (average as f64 / target as f64, average)
    };
    let (ratio, average) = usage_ratio(&metrics);
    let timestamp = samples.values().next().map(|m| m.timestamp);
    let proposal = |replicas: i32| Proposal {
        replicas,
        utilization: 0,
        raw_average: average,
        timestamp,
    };
    let scale_up_with_unready = !unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && missing.is_empty() {
        if (1.0 - ratio).abs() <= TOLERANCE {
            return Ok(proposal(current));
        }
        return Ok(proposal(ceil(ratio * ready as f64)));
    }
    for pod in &missing {
        metrics.insert(pod.clone(), if ratio < 1.0 { target } else { 0 });
    }
    if scale_up_with_unready {
        for pod in &unready {
            metrics.insert(pod.clone(), 0);
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics);
    if (1.0 - new_ratio).abs() <= TOLERANCE
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok(proposal(current));
    }
    let replicas = ceil(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok(proposal(current));
    }
    Ok(proposal(replicas))
}

/// A milli-value as Kubernetes prints a DecimalSI quantity: `90m`, `1`,
/// `67108864`, `100M`.
pub fn milli_quantity(milli: i64) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let mut value = milli / 1000;
    let mut suffix = "";
    for next in ["k", "M", "G", "T", "P", "E"] {
        if value == 0 || value % 1000 != 0 {
            break;
        }
        value /= 1000;
        suffix = next;
    }
    format!("{value}{suffix}")
}

fn ceil(value: f64) -> i32 {
    let c = value.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= 0.0 {
        0
    } else {
        c as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-01-01T01:00:00Z";

    /// A pod requesting `request` cpu, Running and Ready since `since`.
    fn pod(name: &str, request: &str, phase: &str, ready: bool, since: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": request}}}]},
            "status": {"phase": phase, "startTime": since, "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": since}]},
        }))
        .unwrap()
    }

    fn samples(values: &[(&str, i64)]) -> BTreeMap<String, PodMetric> {
        values
            .iter()
            .map(|(name, v)| {
                (
                    name.to_string(),
                    PodMetric {
                        value: *v,
                        timestamp: t(NOW),
                        window: Duration::from_secs(15),
                    },
                )
            })
            .collect()
    }

    const OLD: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn scales_up_by_the_ratio() {
        // 90m of 100m against 50%: 90/50 = 1.8 → ⌈1.8 × 1⌉ = 2.
        let pods = [pod("a", "100m", "Running", true, OLD)];
        let p = resource_replicas(1, 50, "cpu", &pods, &samples(&[("a", 90)]), t(NOW)).unwrap();
        assert_eq!((p.replicas, p.utilization, p.raw_average), (2, 90, 90));
        // Three pods at 90%: ⌈1.8 × 3⌉ = 6.
        let pods: Vec<Pod> = ["a", "b", "c"]
            .iter()
            .map(|n| pod(n, "100m", "Running", true, OLD))
            .collect();
        let s = samples(&[("a", 90), ("b", 90), ("c", 90)]);
        assert_eq!(
            resource_replicas(3, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            6
        );
    }

    #[test]
    fn stays_within_the_tolerance_and_scales_down() {
        let pods: Vec<Pod> = ["a", "b"]
            .iter()
            .map(|n| pod(n, "100m", "Running", true, OLD))
            .collect();
        // 54% against 50%: ratio 1.08, within 0.1.
        let s = samples(&[("a", 54), ("b", 54)]);
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            2
        );
        // 10% against 50%: ⌈0.2 × 2⌉ = 1.
        let s = samples(&[("a", 10), ("b", 10)]);
        let p = resource_replicas(2, 50, "cpu", &pods, &s, t(NOW)).unwrap();
        assert_eq!((p.replicas, p.utilization), (1, 10));
    }

    #[test]
    fn missing_pods_count_against_the_direction() {
        let pods: Vec<Pod> = ["a", "b"]
            .iter()
            .map(|n| pod(n, "100m", "Running", true, OLD))
            .collect();
        // Scale-up: b counts as 0% → (100+0)/200 = 50% of 50 → ratio 1: no change.
        let s = samples(&[("a", 100)]);
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            2
        );
        // Scale-up that survives: a at 300% → (300+0)/200 = 150% → ⌈3 × 2⌉ = 6.
        let s = samples(&[("a", 300)]);
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            6
        );
        // Scale-down: b counts as 100% → (10+100)/200 = 55% vs 50%: within tolerance.
        let s = samples(&[("a", 10)]);
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            2
        );
    }

    #[test]
    fn unready_pods_are_zero_on_a_scale_up() {
        let pods = [
            pod("a", "100m", "Running", true, OLD),
            pod("b", "100m", "Pending", false, OLD),
        ];
        // a at 100% of 50% target: ratio 2; b counts 0 → 50% → ratio 1: no change.
        let s = samples(&[("a", 100)]);
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            2
        );
        // A pod Ready less than a window ago (within the initialization period) is unready.
        let pods = [
            pod("a", "100m", "Running", true, OLD),
            pod("b", "100m", "Running", true, "2026-01-01T00:59:50Z"),
        ];
        let s = samples(&[("a", 90), ("b", 90)]);
        // b unready and 0: (90+0)/200 = 45% of 50 → ratio 0.9: direction flips, no change.
        assert_eq!(
            resource_replicas(2, 50, "cpu", &pods, &s, t(NOW))
                .unwrap()
                .replicas,
            2
        );
    }

    #[test]
    fn errors_read_like_kubernetes() {
        let pods = [pod("a", "100m", "Running", true, OLD)];
        assert_eq!(
            resource_replicas(1, 50, "cpu", &pods, &BTreeMap::new(), t(NOW))
                .unwrap_err()
                .to_string(),
            "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
        );
        let no_request: Pod = serde_json::from_value(json!({
            "metadata": {"name": "x"},
            "spec": {"containers": [{"name": "web"}]},
            "status": {"phase": "Running"},
        }))
        .unwrap();
        assert_eq!(
            resource_replicas(1, 50, "cpu", &[no_request], &samples(&[("x", 1)]), t(NOW))
                .unwrap_err()
                .to_string(),
            "missing request for cpu in container web of Pod x"
        );
        let pending = [pod("a", "100m", "Pending", false, OLD)];
        assert_eq!(
            resource_replicas(1, 50, "cpu", &pending, &samples(&[("a", 1)]), t(NOW)).unwrap_err(),
            Error::NoReadyMetrics
        );
    }

    #[test]
    fn samples_sum_containers() {
        let items = vec![
            json!({"metadata": {"name": "a"}, "timestamp": NOW, "window": "15s", "containers": [
                {"name": "x", "usage": {"cpu": "40m"}}, {"name": "y", "usage": {"cpu": "50m"}}]}),
            json!({"metadata": {"name": "b"}, "timestamp": NOW, "window": "1s", "containers": [
                {"name": "x", "usage": {"memory": "1Mi"}}]}),
        ];
        let s = samples_of(&items, "cpu");
        assert_eq!(s.len(), 1);
        assert_eq!(s["a"].value, 90);
        assert_eq!(s["a"].window, Duration::from_secs(15));
        assert_eq!(parse_window("10.5s"), Some(Duration::from_millis(10_500)));
    }

    #[test]
    fn average_value_targets() {
        let pods: Vec<Pod> = ["a", "b"]
            .iter()
            .map(|n| pod(n, "100m", "Running", true, OLD))
            .collect();
        // 200Mi average against 100Mi: ⌈2 × 2⌉ = 4.
        let mi = 1024 * 1024 * 1000;
        let s = samples(&[("a", 200 * mi), ("b", 200 * mi)]);
        let p = raw_resource_replicas(2, 100 * mi, "memory", &pods, &s, t(NOW)).unwrap();
        assert_eq!((p.replicas, p.raw_average), (4, 200 * mi));
        assert_eq!(milli_quantity(p.raw_average), "209715200");
        assert_eq!(milli_quantity(90), "90m");
        assert_eq!(milli_quantity(2000), "2");
        assert_eq!(milli_quantity(100_000_000_000), "100M");
        assert_eq!(milli_quantity(0), "0");
    }

    #[test]
    fn quantities_in_milli_units() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("90000000n"), Some(90));
    }
}
