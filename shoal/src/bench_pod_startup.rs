//! `shoal bench pod-startup`: how fast a node agent starts pods that are
//! created all at once.
//!
//! In a fresh namespace, a pod watch is started first; then `--pods`
//! busybox pods (`sleep 3600`, image already on the node) are created
//! concurrently. For each pod the client time just before its create call
//! is its start; the watch records when each pod first shows a
//! `spec.nodeName` (bound), phase Running, and Running with condition
//! Ready=True (ready). Prints one JSON line: create-to-ready percentiles
//! (Kubernetes' pod startup SLO is p99 <= 5 s without image pulls), the
//! bound and Running steps for comparison, and the time from the first
//! create to the last ready pod. Then deletes the pods (the agent stops
//! them and finishes the deletion) and the namespace, and waits until they
//! are gone, so that the next run starts clean.
//!
//! ```text
//!   watch ──────────────────────────────────────────────► bound / Running / Ready
//!   create ×N (at once) ── scheduler binds ── agent: sandbox, container, status
//!   ^ t0 per pod                                           ^ t_ready per pod
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// Grace period of the clean-up deletes: busybox `sleep` as a container's
/// PID 1 ignores SIGTERM, so the pod's default 30 s would only be waited
/// out. The deletion still goes the graceful way (the agent kills the
/// containers, then removes the pod).
const DELETE_GRACE_SECONDS: u32 = 1;

/// How long the clean-up waits for the pods, then the namespace, to go.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args)]
pub struct PodStartupBench {
    /// kubeconfig of the cluster, as `shoal up` writes it.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: std::path::PathBuf,
    /// Namespace of the pods (created; must not exist).
    #[arg(long, default_value = "bench-pods")]
    namespace: String,
    /// Pods created at once.
    #[arg(long, default_value_t = 100)]
    pods: usize,
    /// Image of the pods (pulled only if not present; `shoal up` loads
    /// busybox).
    #[arg(long, default_value = "busybox")]
    image: String,
    /// Give up waiting for Ready after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// When the client and the watch saw each step of each pod.
#[derive(Default)]
struct Timeline {
    /// Client time just before the create call.
    created: HashMap<String, Instant>,
    /// First time the watch showed a `spec.nodeName`.
    bound: HashMap<String, Instant>,
    /// First time the watch showed phase Running.
    running: HashMap<String, Instant>,
    /// First time the watch showed Running with Ready=True.
    ready: HashMap<String, Instant>,
}

impl Timeline {
    /// Records what the watch shows of `pod` at `now` (first sightings
    /// only).
    fn observe(&mut self, pod: &Pod, now: Instant) {
        let Some(name) = pod.metadata.name.clone() else {
            return;
        };
        if is_bound(pod) {
            self.bound.entry(name.clone()).or_insert(now);
        }
        if is_running(pod) {
            self.running.entry(name.clone()).or_insert(now);
        }
        if is_ready(pod) {
            self.ready.entry(name).or_insert(now);
        }
    }
}

pub async fn run(args: PodStartupBench) -> anyhow::Result<()> {
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    let client = shoal_core::client::from_file(&args.kubeconfig)
        .await
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": args.namespace},
    }))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .with_context(|| format!("creating namespace {}", args.namespace))?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let measured = measure(&args, &pods).await;
    // Clean up whatever happened, so that the next run starts clean.
    let cleaned = cleanup(&pods, &namespaces, &args.namespace).await;
    let line = measured?;
    println!("{line}");
    cleaned?;
    let ready = line["ready"].as_u64().unwrap_or(0);
    if ready < args.pods as u64 {
        bail!(
            "timed out after {} s with {ready} of {} pods ready",
            args.timeout,
            args.pods
        );
    }
    Ok(())
}

/// Starts the watch, creates the pods at once, waits until all are ready
/// (or the timeout) and returns the result line.
async fn measure(args: &PodStartupBench, pods: &Api<Pod>) -> anyhow::Result<Value> {
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let recorder = {
        let timeline = timeline.clone();
        let pods = pods.clone();
        tokio::spawn(async move {
            let mut started = Some(started_tx);
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = started.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod watch interrupted");
                        continue;
                    }
                };
                let now = Instant::now();
                timeline.lock().await.observe(&pod, now);
            }
        })
    };
    started_rx.await.context("the pod watch did not start")?;

    let names: Vec<String> = (0..args.pods).map(pod_name).collect();
    let creates = names.iter().map(|name| {
        let pods = pods.clone();
        let pod = manifest(name, &args.image);
        async move {
            let pod: Pod = serde_json::from_value(pod)?;
            let at = Instant::now();
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("creating pod {name}"))?;
            anyhow::Ok((name.clone(), at, Instant::now()))
        }
    });
    let results = futures::future::join_all(creates).await;
    let mut last_created = None::<Instant>;
    {
        let mut timeline = timeline.lock().await;
        for result in results {
            let (name, at, returned) = match result {
                Ok(r) => r,
                Err(e) => {
                    recorder.abort();
                    return Err(e);
                }
            };
            timeline.created.insert(name, at);
            last_created = Some(last_created.map_or(returned, |l| l.max(returned)));
        }
    }

    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        let ready = timeline.lock().await.ready.len();
        if ready >= args.pods {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("timed out with {ready} of {} pods ready", args.pods);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    recorder.abort();
    let timeline = timeline.lock().await;
    summarize(args.pods, &timeline, last_created)
}

/// The result line of a run.
fn summarize(
    pods: usize,
    timeline: &Timeline,
    last_created: Option<Instant>,
) -> anyhow::Result<Value> {
    let bound = latencies(&timeline.created, &timeline.bound)?;
    let running = latencies(&timeline.created, &timeline.running)?;
    let ready = latencies(&timeline.created, &timeline.ready)?;
    let first = timeline.created.values().min().copied();
    let span = |last: Option<Instant>| match (first, last) {
        (Some(first), Some(last)) => secs(last.saturating_duration_since(first)),
        _ => 0.0,
    };
    let last_ready = timeline
        .ready
        .iter()
        .filter(|(name, _)| timeline.created.contains_key(*name))
        .map(|(_, at)| *at)
        .max();
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            0.0
        } else {
            round1(h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    Ok(json!({
        "pods": pods,
        "created": timeline.created.len(),
        "ready": ready.len(),
        "seconds": span(last_ready),
        "creates_seconds": span(last_created),
        "create_to_ready_min_ms": if ready.is_empty() { 0.0 } else { round1(ready.min() as f64 / 1000.0) },
        "create_to_ready_p50_ms": ms(&ready, 0.5),
        "create_to_ready_p90_ms": ms(&ready, 0.9),
        "create_to_ready_p99_ms": ms(&ready, 0.99),
        "create_to_ready_max_ms": if ready.is_empty() { 0.0 } else { round1(ready.max() as f64 / 1000.0) },
        "create_to_bound_p50_ms": ms(&bound, 0.5),
        "create_to_bound_p99_ms": ms(&bound, 0.99),
        "create_to_running_p50_ms": ms(&running, 0.5),
        "create_to_running_p99_ms": ms(&running, 0.99),
    }))
}

/// Microseconds from each pod's creation to its step, for the pods that
/// were created by this run and reached the step.
fn latencies(
    created: &HashMap<String, Instant>,
    step: &HashMap<String, Instant>,
) -> anyhow::Result<Histogram<u64>> {
    let mut histogram = Histogram::<u64>::new(3)?;
    for (name, at) in step {
        if let Some(created) = created.get(name) {
            let us = at.saturating_duration_since(*created).as_micros();
            histogram.record(u64::try_from(us).unwrap_or(u64::MAX))?;
        }
    }
    Ok(histogram)
}

/// Deletes the pods (gracefully, the agent finishing), waits until they
/// are gone, then deletes the namespace and waits until it is gone.
async fn cleanup(
    pods: &Api<Pod>,
    namespaces: &Api<Namespace>,
    namespace: &str,
) -> anyhow::Result<()> {
    let delete = DeleteParams {
        grace_period_seconds: Some(DELETE_GRACE_SECONDS),
        ..DeleteParams::default()
    };
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    loop {
        let left = pods
            .list(&ListParams::default())
            .await
            .with_context(|| format!("listing the pods of namespace {namespace}"))?
            .items;
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} pods of namespace {namespace} still there after {} s",
                left.len(),
                CLEANUP_TIMEOUT.as_secs()
            );
        }
        // Pods not marked for deletion yet, one request each: a delete
        // that lost a race with a status update (409) is simply sent again
        // on the next round.
        let deletes = left
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| p.metadata.name.as_deref())
            .map(|name| pods.delete(name, &delete));
        for result in futures::future::join_all(deletes).await {
            match result {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() || s.code == 409 => {}
                Err(e) => return Err(e).context(format!("deleting a pod of {namespace}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    namespaces
        .delete(namespace, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting namespace {namespace}"))?;
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    while namespaces
        .get_opt(namespace)
        .await
        .with_context(|| format!("reading namespace {namespace}"))?
        .is_some()
    {
        if Instant::now() > deadline {
            bail!(
                "namespace {namespace} still there after {} s",
                CLEANUP_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn pod_name(i: usize) -> String {
    format!("startup-{i}")
}

/// A pod that starts at once and keeps running, from an image on the node.
fn manifest(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench-pod-startup"}},
        "spec": {"containers": [{
            "name": "c",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
        }]},
    })
}

fn is_bound(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_running(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Running")
}

/// Running with condition Ready=True: what the pod startup SLO counts.
fn is_ready(pod: &Pod) -> bool {
    is_running(pod)
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, phase: Option<&str>, ready: Option<&str>) -> Pod {
        let mut v = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {},
        });
        if let Some(node) = node {
            v["spec"]["nodeName"] = json!(node);
        }
        if let Some(phase) = phase {
            v["status"]["phase"] = json!(phase);
        }
        if let Some(ready) = ready {
            v["status"]["conditions"] = json!([
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": ready},
            ]);
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ready_needs_running_and_the_ready_condition() {
        assert!(is_ready(&pod(Some("n"), Some("Running"), Some("True"))));
        assert!(!is_ready(&pod(Some("n"), Some("Running"), Some("False"))));
        assert!(!is_ready(&pod(Some("n"), Some("Running"), None)));
        assert!(!is_ready(&pod(Some("n"), Some("Pending"), Some("True"))));
        assert!(!is_ready(&pod(Some("n"), Some("Succeeded"), Some("True"))));
    }

    #[test]
    fn bound_means_a_node_name() {
        assert!(is_bound(&pod(Some("n"), None, None)));
        assert!(!is_bound(&pod(Some(""), None, None)));
        assert!(!is_bound(&pod(None, None, None)));
    }

    #[test]
    fn only_first_sightings_count() {
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        timeline.observe(&pod(Some("n"), Some("Pending"), None), t0);
        timeline.observe(
            &pod(Some("n"), Some("Running"), Some("True")),
            t0 + Duration::from_millis(10),
        );
        timeline.observe(
            &pod(Some("n"), Some("Running"), Some("True")),
            t0 + Duration::from_millis(20),
        );
        assert_eq!(timeline.bound["p"], t0);
        assert_eq!(timeline.running["p"], t0 + Duration::from_millis(10));
        assert_eq!(timeline.ready["p"], t0 + Duration::from_millis(10));
    }

    /// Within the histogram's precision (3 significant digits).
    fn assert_close(got: &Value, want: f64) {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() <= want * 0.001 + 0.1, "{got} != {want}");
    }

    #[test]
    fn summary_counts_from_each_pods_own_create_call() {
        let t0 = Instant::now();
        let mut timeline = Timeline::default();
        for i in 0..100u64 {
            let name = pod_name(i as usize);
            // Creates 1 ms apart; pod i is ready (i + 1) * 10 ms after its create.
            let created = t0 + Duration::from_millis(i);
            timeline.created.insert(name.clone(), created);
            timeline
                .bound
                .insert(name.clone(), created + Duration::from_millis(5));
            timeline
                .running
                .insert(name.clone(), created + Duration::from_millis((i + 1) * 10));
            timeline
                .ready
                .insert(name, created + Duration::from_millis((i + 1) * 10));
        }
        // A pod of an earlier run seen by the watch is ignored.
        timeline
            .ready
            .insert("other".into(), t0 + Duration::from_secs(60));
        let line = summarize(100, &timeline, Some(t0 + Duration::from_millis(150))).unwrap();
        assert_eq!(line["ready"], 100);
        assert_close(&line["create_to_ready_min_ms"], 10.0);
        assert_close(&line["create_to_ready_p50_ms"], 500.0);
        assert_close(&line["create_to_ready_p90_ms"], 900.0);
        assert_close(&line["create_to_ready_p99_ms"], 990.0);
        assert_close(&line["create_to_ready_max_ms"], 1000.0);
        assert_close(&line["create_to_bound_p99_ms"], 5.0);
        // Last ready: pod 99, created at 99 ms, ready 1,000 ms later.
        assert_eq!(line["seconds"], 1.1);
        assert_eq!(line["creates_seconds"], 0.15);
    }

    #[test]
    fn a_run_where_nothing_got_ready_still_summarizes() {
        let mut timeline = Timeline::default();
        timeline.created.insert(pod_name(0), Instant::now());
        let line = summarize(1, &timeline, None).unwrap();
        assert_eq!(line["ready"], 0);
        assert_eq!(line["create_to_ready_p99_ms"], 0.0);
        assert_eq!(line["seconds"], 0.0);
    }

    #[test]
    fn manifest_is_a_valid_pod_that_does_not_pull() {
        let pod: Pod = serde_json::from_value(manifest("startup-7", "busybox")).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("startup-7"));
        let c = &pod.spec.unwrap().containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(
            c.command.as_deref(),
            Some(&["sleep".to_string(), "3600".to_string()][..])
        );
    }
}
