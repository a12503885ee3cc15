//! Simulated nodes: `shoal agent --simulate --count N --name-prefix P`
//! registers nodes `P-0`..`P-(N-1)` with capacity, addresses and a Ready
//! condition, renews each node's Lease in `kube-node-lease`, reports the
//! pods bound to them Running and Ready (with a pod IP from the node's podCIDR), and
//! finishes their graceful deletion, as an agent would once the containers
//! stopped. Nothing runs.
//!
//! Pods that are meant to end (`restartPolicy` `Never` or `OnFailure`, as
//! a Job's) do end, one timer task per pod, as these annotations say:
//!
//! | annotation                     | default | meaning                                        |
//! |--------------------------------|---------|------------------------------------------------|
//! | `simulate.shoal.dev/duration`  | `2s`    | how long the containers run (`500ms`, `3s`, `1m`) |
//! | `simulate.shoal.dev/exit-code` | `0`     | the exit code they end with                    |
//!
//! Exit code 0: phase Succeeded, containers terminated with reason
//! Completed. Otherwise, with `Never`: phase Failed, reason Error; with
//! `OnFailure`: the containers restart in place (restartCount + 1, the
//! failed run as `lastState`) and run again for the same duration, for as
//! long as the pod exists. A finished pod is no longer Ready.
//!
//! Resource usage, for `kubectl top` and the HorizontalPodAutoscaler, comes
//! from two more annotations, each the whole pod's usage (split evenly over
//! its containers):
//!
//! | annotation                         | example | meaning                   |
//! |------------------------------------|---------|---------------------------|
//! | `simulate.shoal.dev/cpu-usage`     | `150m`  | CPU the pod uses          |
//! | `simulate.shoal.dev/memory-usage`  | `64Mi`  | memory the pod uses       |
//!
//! A Running pod with either annotation is reported (the other counts as
//! 0); pods without them report nothing, so a node of unannotated pods
//! costs one report, ever. Every `metrics_interval` each node's usage (its
//! pods' plus a small base for the "system") goes to the apiserver as one
//! NodeMetricsReport (`PUT /apis/metrics.shoal.dev/v1alpha1/nodereports/<node>`,
//! see the apiserver's `rest::metrics`), and only when it changed since the
//! last one written.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{reflector, watcher, WatchStreamExt};
use serde_json::{json, Value};

/// How long a simulated container runs.
pub const DURATION_ANNOTATION: &str = "simulate.shoal.dev/duration";
/// The exit code a simulated container ends with.
pub const EXIT_CODE_ANNOTATION: &str = "simulate.shoal.dev/exit-code";
const DEFAULT_DURATION: Duration = Duration::from_secs(2);
/// The CPU a simulated pod uses (`150m`), for `kubectl top` and the HPA.
pub const CPU_USAGE_ANNOTATION: &str = "simulate.shoal.dev/cpu-usage";
/// The memory a simulated pod uses (`64Mi`).
pub const MEMORY_USAGE_ANNOTATION: &str = "simulate.shoal.dev/memory-usage";
/// What a simulated node uses besides its pods (millicores, bytes), as a
/// real node's system daemons would.
const NODE_BASE_USAGE: (u64, u64) = (50, 128 * 1024 * 1024);

pub struct Config {
    pub count: usize,
    pub name_prefix: String,
    /// How often each node's Lease is renewed.
    pub lease_interval: Duration,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// How often nodes report their usage (metrics-server's resolution is
    /// 15 s); a report is written only when it changed.
    pub metrics_interval: Duration,
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The address of the i-th simulated node (10.250.0.0/16, made up).
fn node_ip(i: usize) -> String {
    format!("10.250.{}.{}", i / 250, i % 250 + 1)
}

async fn register(
    client: &kube::Client,
    config: &Config,
    i: usize,
    name: &str,
) -> Result<(), kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "type": "simulated",
        }},
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e),
    }
    let resources = json!({"cpu": config.cpu, "memory": config.memory, "pods": config.pods});
    let status = json!({"status": {
        "capacity": resources,
        "allocatable": resources,
        "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": name}],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "kubelet is posting ready status (simulated)",
            "lastHeartbeatTime": now(), "lastTransitionTime": now(),
        }],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": "simulated", "osImage": "shoal simulated node",
            "containerRuntimeVersion": "simulated://1", "kubeletVersion": "v1.32.0",
            "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": "amd64",
        },
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    Ok(())
}

async fn renew(client: &kube::Client, name: &str) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let spec = json!({"spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now_micro()}});
    match leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec["spec"],
            }))
            .map_err(kube::Error::SerdeError)?;
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str) -> serde_json::Value {
    let t = now();
    let statuses: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("simulated://{}-{}", pod.metadata.uid.clone().unwrap_or_default(), c.name),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": t}},
            })
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": t,
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"), condition("Ready"), condition("ContainersReady"), condition("PodScheduled")],
        "containerStatuses": statuses,
    }})
}

/// The `n`-th pod address of a node: host `.2`..`.254` of its /24 pod
/// range (`.1` is the node's own end of the pod network), cycling; without
/// a range yet, one of 10.244.<node index>.0/24.
fn pod_address(pod_cidr: Option<&str>, node_index: usize, n: u32) -> String {
    let host = n % 253 + 2;
    let prefix = pod_cidr
        .and_then(|c| c.strip_suffix(".0/24"))
        .map(str::to_string)
        .unwrap_or_else(|| format!("10.244.{}", node_index % 256));
    format!("{prefix}.{host}")
}

/// Runs the simulated nodes until the task is dropped.
pub async fn run(client: kube::Client, config: Config) -> Result<(), kube::Error> {
    let names: Vec<String> = (0..config.count)
        .map(|i| format!("{}-{i}", config.name_prefix))
        .collect();
    for (i, name) in names.iter().enumerate() {
        register(&client, &config, i, name).await?;
    }
    tracing::info!(count = config.count, prefix = %config.name_prefix, "simulated nodes registered");
    let index: HashMap<String, usize> = names
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();

    let heartbeat_client = client.clone();
    let heartbeat_names = names.clone();
    let interval = config.lease_interval;
    tokio::spawn(async move {
        let nodes: Api<Node> = Api::all(heartbeat_client.clone());
        for round in 0u64.. {
            for name in &heartbeat_names {
                if let Err(e) = renew(&heartbeat_client, name).await {
                    tracing::warn!(node = %name, error = %e, "lease renewal failed");
                }
                // Now and then the node status too, so that a node back
                // from an outage reports Ready again.
                if round % 5 == 4 {
                    let ready = json!({"status": {"conditions": [{
                        "type": "Ready", "status": "True", "reason": "KubeletReady",
                        "message": "kubelet is posting ready status (simulated)",
                        "lastHeartbeatTime": now(), "lastTransitionTime": now(),
                    }]}});
                    if let Err(e) = nodes
                        .patch_status(name, &PatchParams::default(), &Patch::Strategic(ready))
                        .await
                    {
                        tracing::debug!(node = %name, error = %e, "node status update failed");
                    }
                }
            }
            tokio::time::sleep(interval).await;
        }
    });

    let usage: Usage = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(report_usage(
        client.clone(),
        names.clone(),
        usage.clone(),
        config.metrics_interval,
    ));

    // The nodes' pod ranges (`spec.podCIDR`, given by the controllers),
    // which the pods' addresses come from.
    let (node_store, node_writer) = reflector::store::<Node>();
    let node_api: Api<Node> = Api::all(client.clone());
    tokio::spawn(
        reflector(node_writer, watcher(node_api, watcher::Config::default()))
            .default_backoff()
            .for_each(|_| futures::future::ready(())),
    );
    let pods: Api<Pod> = Api::all(client.clone());
    let mut next_ip: HashMap<usize, u32> = HashMap::new();
    // The timer of each pod that is meant to end, by uid.
    let mut runs: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    // Status reports and deletions run beside the watch, as a thousand
    // kubelets would, at most this many at once; a pod is in flight once.
    let slots = Arc::new(tokio::sync::Semaphore::new(REPORT_CONCURRENCY));
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut listed: Vec<String> = Vec::new();
    let mut events = watcher(pods, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(watcher::Event::Apply(pod)) => pod,
            Ok(watcher::Event::InitApply(pod)) => {
                listed.extend(pod.metadata.uid.clone());
                pod
            }
            Ok(watcher::Event::Delete(pod)) => {
                if let Some(run) = pod.metadata.uid.as_ref().and_then(|u| runs.remove(u)) {
                    run.abort();
                }
                track_usage(&usage, &pod, false);
                continue;
            }
            Ok(watcher::Event::Init) => {
                listed.clear();
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                // Pods deleted while the watch was down.
                runs.retain(|uid, run| {
                    let keep = listed.contains(uid);
                    if !keep {
                        run.abort();
                    }
                    keep
                });
                if let Ok(mut usage) = usage.lock() {
                    for pods in usage.values_mut() {
                        pods.retain(|_, p| listed.contains(&p.uid));
                    }
                }
                listed = Vec::new();
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "pod watch interrupted");
                continue;
            }
        };
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            continue;
        };
        let Some(&i) = index.get(&node) else { continue };
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() || phase == "Succeeded" || phase == "Failed" {
            if let Some(run) = runs.remove(&uid) {
                run.abort();
            }
        }
        track_usage(
            &usage,
            &pod,
            phase == "Running" && pod.metadata.deletion_timestamp.is_none(),
        );
        if pod.metadata.deletion_timestamp.is_some() {
            // The containers are "stopped": finish the deletion.
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            spawn_once(&slots, &in_flight, format!("delete/{uid}"), async move {
                if let Err(e) = api.delete(&name, &params).await {
                    tracing::debug!(pod = %name, error = %e, "cannot finish a deletion");
                }
            });
            continue;
        }
        let reporting = in_flight
            .lock()
            .map(|set| set.contains(&format!("run/{uid}")))
            .unwrap_or(false);
        if (phase == "Pending" || phase.is_empty()) && !reporting {
            let n = next_ip.entry(i).or_insert(0);
            *n += 1;
            let range = node_store
                .get(&ObjectRef::new(&node))
                .and_then(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()));
            let pod_ip = pod_address(range.as_deref(), i, *n);
            let status = running_status(&pod, &node_ip(i), &pod_ip);
            spawn_once(&slots, &in_flight, format!("run/{uid}"), async move {
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "cannot report a pod running");
                }
            });
        } else if phase == "Running" && !runs.contains_key(&uid) {
            if let Some(plan) = Plan::of(&pod) {
                let task = tokio::spawn(run_to_end(api, pod, plan));
                runs.insert(uid, task.abort_handle());
            }
        }
    }
    Ok(())
}

/// Status reports and deletions in flight at once.
const REPORT_CONCURRENCY: usize = 64;

/// Runs `work` unless work under `key` is already in flight.
fn spawn_once(
    slots: &Arc<tokio::sync::Semaphore>,
    in_flight: &Arc<Mutex<HashSet<String>>>,
    key: String,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let fresh = match in_flight.lock() {
        Ok(mut set) => set.insert(key.clone()),
        Err(poisoned) => poisoned.into_inner().insert(key.clone()),
    };
    if !fresh {
        return;
    }
    let (slots, in_flight) = (slots.clone(), in_flight.clone());
    tokio::spawn(async move {
        let _slot = slots.acquire_owned().await;
        work.await;
        match in_flight.lock() {
            Ok(mut set) => set.remove(&key),
            Err(poisoned) => poisoned.into_inner().remove(&key),
        };
    });
}

/// What a simulated pod uses.
#[derive(Debug, Clone, PartialEq)]
struct PodUsage {
    uid: String,
    /// (container, millicores, bytes)
    containers: Vec<(String, u64, u64)>,
}

/// The pods with usage on each node, by (namespace, name).
type Usage = Arc<Mutex<HashMap<String, BTreeMap<(String, String), PodUsage>>>>;

fn format_cpu(millicores: u64) -> String {
    format!("{millicores}m")
}

fn format_memory(bytes: u64) -> String {
    const MI: u64 = 1024 * 1024;
    if bytes.is_multiple_of(MI) {
        format!("{}Mi", bytes / MI)
    } else if bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// The usage of a pod from its annotations, split evenly over its
/// containers (the first ones get the remainder); `None` without them.
fn pod_usage(pod: &Pod) -> Option<PodUsage> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let cpu = annotations.get(CPU_USAGE_ANNOTATION);
    let memory = annotations.get(MEMORY_USAGE_ANNOTATION);
    if cpu.is_none() && memory.is_none() {
        return None;
    }
    let cpu = cpu
        .and_then(|c| shoal_core::quantity::parse_scaled(c, 1000))
        .unwrap_or(0);
    let memory = memory
        .and_then(|m| shoal_core::quantity::parse_scaled(m, 1))
        .unwrap_or(0);
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| c.name.clone())
        .collect();
    let n = names.len().max(1) as u64;
    let share = |total: u64, i: u64| total / n + u64::from(i < total % n);
    Some(PodUsage {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        containers: names
            .into_iter()
            .zip(0u64..)
            .map(|(name, i)| (name, share(cpu, i), share(memory, i)))
            .collect(),
    })
}

/// Records (`running`) or forgets what a pod uses on its node.
fn track_usage(usage: &Usage, pod: &Pod, running: bool) {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
        return;
    };
    let key = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let Ok(mut usage) = usage.lock() else { return };
    match pod_usage(pod).filter(|_| running) {
        Some(u) => {
            usage.entry(node).or_default().insert(key, u);
        }
        None => {
            if let Some(pods) = usage.get_mut(&node) {
                pods.remove(&key);
            }
        }
    }
}

/// A node's report without its timestamp (what is compared to decide
/// whether to write).
fn report_body(
    node: &str,
    pods: Option<&BTreeMap<(String, String), PodUsage>>,
    window: Duration,
) -> Value {
    let (mut cpu, mut memory) = NODE_BASE_USAGE;
    let mut reported = Vec::new();
    for ((namespace, name), usage) in pods.into_iter().flatten() {
        let containers: Vec<Value> = usage
            .containers
            .iter()
            .map(|(c, m, b)| {
                cpu += m;
                memory += b;
                json!({"name": c, "usage": {"cpu": format_cpu(*m), "memory": format_memory(*b)}})
            })
            .collect();
        reported.push(json!({
            "namespace": namespace, "name": name, "uid": usage.uid, "containers": containers,
        }));
    }
    json!({
        "apiVersion": "metrics.shoal.dev/v1alpha1",
        "kind": "NodeMetricsReport",
        "metadata": {"name": node},
        "window": format!("{}s", window.as_secs().max(1)),
        "usage": {"cpu": format_cpu(cpu), "memory": format_memory(memory)},
        "pods": reported,
    })
}

/// Every `interval`, writes the report of each node whose usage changed
/// since its last report (at most one write per node per interval, paced
/// over half of it).
async fn report_usage(client: kube::Client, names: Vec<String>, usage: Usage, interval: Duration) {
    let mut written: HashMap<String, Value> = HashMap::new();
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let request = kube::core::Request::new("/apis/metrics.shoal.dev/v1alpha1/nodereports");
    loop {
        tick.tick().await;
        let reports: Vec<(String, Value)> = match usage.lock() {
            Ok(usage) => names
                .iter()
                .map(|n| (n.clone(), report_body(n, usage.get(n), interval)))
                .filter(|(n, body)| written.get(n) != Some(body))
                .collect(),
            Err(_) => return,
        };
        // Spread over half an interval, so that a thousand nodes starting
        // together do not write their first reports in one burst.
        let count = u32::try_from(reports.len()).unwrap_or(u32::MAX).max(1);
        let pace = (interval / 2) / count;
        for (node, body) in reports {
            if count > 1 {
                tokio::time::sleep(pace).await;
            }
            let mut report = body.clone();
            report["timestamp"] = json!(now());
            let bytes = match serde_json::to_vec(&report) {
                Ok(bytes) => bytes,
                Err(_) => continue,
            };
            let put = match request.replace(&node, &PostParams::default(), bytes) {
                Ok(put) => put,
                Err(e) => {
                    tracing::debug!(node = %node, error = %e, "cannot build a usage report");
                    continue;
                }
            };
            match client.request_text(put).await {
                Ok(_) => {
                    written.insert(node, body);
                }
                Err(e) => tracing::debug!(node = %node, error = %e, "cannot write a usage report"),
            }
        }
    }
}

/// How a pod that is meant to end runs.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    duration: Duration,
    exit_code: i32,
    /// `OnFailure`: a failed run restarts in place.
    restart: bool,
}

/// `500ms`, `3s`, `1m`, `1h`, or plain seconds.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().ok()?;
    let scale = match &text[split..] {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let secs = number * scale;
    (secs.is_finite() && (0.0..1e9).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

impl Plan {
    /// The plan of a pod, if it is meant to end.
    fn of(pod: &Pod) -> Option<Plan> {
        let policy = pod
            .spec
            .as_ref()?
            .restart_policy
            .as_deref()
            .unwrap_or("Always");
        if policy == "Always" {
            return None;
        }
        let annotation = |key: &str| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        let duration = annotation(DURATION_ANNOTATION)
            .and_then(|d| parse_duration(&d))
            .unwrap_or(DEFAULT_DURATION);
        let exit_code = annotation(EXIT_CODE_ANNOTATION)
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        Some(Plan {
            duration,
            exit_code,
            restart: policy == "OnFailure",
        })
    }
}

fn started_at(pod: &Pod) -> Option<jiff::Timestamp> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .filter_map(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0)
        .max()
}

fn format_time(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The status once a run ended at `finished`: terminal, or (OnFailure,
/// non-zero) running again with one more restart.
fn ended_status(
    pod: &Pod,
    plan: &Plan,
    started: jiff::Timestamp,
    finished: jiff::Timestamp,
    restarts: i32,
) -> Value {
    let terminated = json!({
        "exitCode": plan.exit_code,
        "reason": if plan.exit_code == 0 { "Completed" } else { "Error" },
        "startedAt": format_time(started),
        "finishedAt": format_time(finished),
    });
    let again = plan.exit_code != 0 && plan.restart;
    let statuses: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            let mut status = json!({
                "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "containerID": format!("simulated://{}-{}", pod.metadata.uid.clone().unwrap_or_default(), c.name),
                "restartCount": restarts,
            });
            if again {
                status["ready"] = json!(true);
                status["started"] = json!(true);
                status["state"] = json!({"running": {"startedAt": format_time(finished)}});
                status["lastState"] = json!({"terminated": terminated});
            } else {
                status["ready"] = json!(false);
                status["started"] = json!(false);
                status["state"] = json!({"terminated": terminated});
            }
            status
        })
        .collect();
    if again {
        return json!({"status": {"containerStatuses": statuses}});
    }
    let conditions: Vec<Value> = pod
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| {
            let mut c = serde_json::to_value(c).unwrap_or(Value::Null);
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!("PodCompleted");
                c["lastTransitionTime"] = json!(format_time(finished));
            }
            c
        })
        .collect();
    json!({"status": {
        "phase": if plan.exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": conditions,
        "containerStatuses": statuses,
    }})
}

/// One pod's timer: sleeps out each run and reports how it ended.
async fn run_to_end(api: Api<Pod>, pod: Pod, plan: Plan) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut restarts = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let mut started = started_at(&pod).unwrap_or_else(jiff::Timestamp::now);
    loop {
        let ran = jiff::Timestamp::now().duration_since(started);
        let ran = Duration::try_from(ran).unwrap_or(Duration::ZERO);
        tokio::time::sleep(plan.duration.saturating_sub(ran)).await;
        let finished = jiff::Timestamp::now();
        let again = plan.exit_code != 0 && plan.restart;
        if again {
            restarts = restarts.saturating_add(1);
        }
        let status = ended_status(&pod, &plan, started, finished, restarts);
        let mut attempts = 0;
        loop {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 404 => return,
                Err(e) if attempts < 5 => {
                    attempts += 1;
                    tracing::debug!(pod = %name, error = %e, "cannot report a pod ended; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e, "cannot report a pod ended");
                    return;
                }
            }
        }
        if !again {
            tracing::debug!(pod = %name, exit_code = plan.exit_code, "simulated pod ended");
            return;
        }
        started = finished;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_addresses_come_from_the_node_range() {
        assert_eq!(pod_address(Some("10.244.7.0/24"), 3, 1), "10.244.7.3");
        assert_eq!(pod_address(Some("10.244.7.0/24"), 3, 252), "10.244.7.254");
        assert_eq!(pod_address(Some("10.244.7.0/24"), 3, 253), "10.244.7.2");
        assert_eq!(pod_address(None, 3, 1), "10.244.3.3");
    }

    fn pod(policy: &str, annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u", "annotations": annotations},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]},
        }))
        .unwrap()
    }

    #[test]
    fn usage_comes_from_annotations() {
        let mut p = pod(
            "Always",
            json!({CPU_USAGE_ANNOTATION: "150m", MEMORY_USAGE_ANNOTATION: "64Mi"}),
        );
        assert_eq!(
            pod_usage(&p).unwrap().containers,
            vec![("c".to_string(), 150, 64 * 1024 * 1024)]
        );
        p.spec
            .as_mut()
            .unwrap()
            .containers
            .push(serde_json::from_value(json!({"name": "d", "image": "busybox"})).unwrap());
        p.metadata.annotations = Some(
            [(CPU_USAGE_ANNOTATION.to_string(), "0.101".to_string())]
                .into_iter()
                .collect(),
        );
        assert_eq!(
            pod_usage(&p).unwrap().containers,
            vec![("c".to_string(), 51, 0), ("d".to_string(), 50, 0)]
        );
        assert_eq!(pod_usage(&pod("Always", json!({}))), None);
    }

    #[test]
    fn reports_sum_pods_over_the_base() {
        let usage: Usage = Arc::new(Mutex::new(HashMap::new()));
        let mut p = pod("Always", json!({CPU_USAGE_ANNOTATION: "90m"}));
        p.metadata.namespace = Some("default".into());
        p.spec.as_mut().unwrap().node_name = Some("n1".into());
        track_usage(&usage, &p, true);
        let map = usage.lock().unwrap();
        let body = report_body("n1", map.get("n1"), Duration::from_secs(15));
        assert_eq!(body["usage"]["cpu"], "140m");
        assert_eq!(body["usage"]["memory"], "128Mi");
        assert_eq!(body["window"], "15s");
        assert_eq!(body["pods"][0]["containers"][0]["usage"]["cpu"], "90m");
        drop(map);
        track_usage(&usage, &p, false);
        let map = usage.lock().unwrap();
        let body = report_body("n1", map.get("n1"), Duration::from_secs(15));
        assert_eq!(body["usage"]["cpu"], "50m");
        assert_eq!(body["pods"], json!([]));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn plans_follow_the_restart_policy_and_annotations() {
        assert_eq!(Plan::of(&pod("Always", json!({}))), None);
        assert_eq!(
            Plan::of(&pod("Never", json!({}))),
            Some(Plan {
                duration: DEFAULT_DURATION,
                exit_code: 0,
                restart: false
            })
        );
        assert_eq!(
            Plan::of(&pod(
                "OnFailure",
                json!({DURATION_ANNOTATION: "3s", EXIT_CODE_ANNOTATION: "1"})
            )),
            Some(Plan {
                duration: Duration::from_secs(3),
                exit_code: 1,
                restart: true
            })
        );
    }

    #[test]
    fn ended_pods_are_terminal_or_restarted() {
        let t0: jiff::Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: jiff::Timestamp = "2026-01-01T00:00:02Z".parse().unwrap();
        let p = pod("Never", json!({}));
        let ok = ended_status(&p, &Plan::of(&p).unwrap(), t0, t1, 0);
        assert_eq!(ok["status"]["phase"], "Succeeded");
        let state = &ok["status"]["containerStatuses"][0]["state"];
        assert_eq!(state["terminated"]["reason"], "Completed");
        assert_eq!(ok["status"]["conditions"][0]["status"], "False");
        assert_eq!(ok["status"]["conditions"][1]["status"], "True");
        let p = pod("Never", json!({EXIT_CODE_ANNOTATION: "1"}));
        let failed = ended_status(&p, &Plan::of(&p).unwrap(), t0, t1, 0);
        assert_eq!(failed["status"]["phase"], "Failed");
        let state = &failed["status"]["containerStatuses"][0]["state"];
        assert_eq!(state["terminated"]["reason"], "Error");
        let p = pod("OnFailure", json!({EXIT_CODE_ANNOTATION: "2"}));
        let again = ended_status(&p, &Plan::of(&p).unwrap(), t0, t1, 1);
        assert!(again["status"].get("phase").is_none());
        let c = &again["status"]["containerStatuses"][0];
        assert_eq!(c["restartCount"], 1);
        assert_eq!(c["lastState"]["terminated"]["exitCode"], 2);
        assert!(c["state"]["running"].is_object());
    }
}
