//! Simulated nodes: `shoal agent --simulate --count N --name-prefix P`
//! registers nodes `P-0`..`P-(N-1)` with capacity, addresses and a Ready
//! condition, renews each node's Lease in `kube-node-lease`, reports the
//! pods bound to them Running and Ready (with a made-up pod IP), and
//! finishes their graceful deletion, as an agent would once the containers
//! stopped. Nothing runs.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;

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

    let pods: Api<Pod> = Api::all(client.clone());
    let mut next_ip: HashMap<usize, u32> = HashMap::new();
    let mut events = watcher(pods, watcher::Config::default().fields("spec.nodeName!="))
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let pod = match event {
            Ok(pod) => pod,
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
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
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
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Pending" || phase.is_empty() {
            let n = next_ip.entry(i).or_insert(1);
            *n += 1;
            let pod_ip = format!("10.244.{}.{}", i % 256, *n % 254 + 1);
            let status = running_status(&pod, &node_ip(i), &pod_ip);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                .await
            {
                tracing::debug!(pod = %name, error = %e, "cannot report a pod running");
            }
        }
    }
    Ok(())
}
