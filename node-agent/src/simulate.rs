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

use std::collections::HashMap;
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

pub struct Config {
    pub count: usize,
    pub name_prefix: String,
    /// How often each node's Lease is renewed.
    pub lease_interval: Duration,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
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
            if let Err(e) = api.delete(&name, &params).await {
                tracing::debug!(pod = %name, error = %e, "cannot finish a deletion");
            }
            continue;
        }
        if phase == "Pending" || phase.is_empty() {
            let n = next_ip.entry(i).or_insert(0);
            *n += 1;
            let range = node_store
                .get(&ObjectRef::new(&node))
                .and_then(|n| n.spec.as_ref().and_then(|s| s.pod_cidr.clone()));
            let pod_ip = pod_address(range.as_deref(), i, *n);
            let status = running_status(&pod, &node_ip(i), &pod_ip);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "cannot report a pod running");
            }
        } else if phase == "Running" && !runs.contains_key(&uid) {
            if let Some(plan) = Plan::of(&pod) {
                let task = tokio::spawn(run_to_end(api, pod, plan));
                runs.insert(uid, task.abort_handle());
            }
        }
    }
    Ok(())
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
