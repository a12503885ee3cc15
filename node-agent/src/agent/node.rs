//! The Node object of a real agent: registration with what the machine
//! has, the Lease renewed every `--lease-interval`, the Ready condition
//! refreshed every 10 s (the kubelet's node-status-update-frequency), and
//! the wait for the podCIDR that the node IPAM controller assigns.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

use super::Config;

/// How often the Node's conditions are written (kubelet's
/// `nodeStatusUpdateFrequency`).
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// What the machine has, read once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub kernel_version: String,
    pub os_image: String,
    pub machine_id: String,
    pub boot_id: String,
    pub architecture: String,
}

impl Machine {
    pub fn read() -> Machine {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Machine {
            cpu_millis: cpus * 1000,
            memory_bytes: mem_total(&read("/proc/meminfo")).unwrap_or(0),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: pretty_name(&read("/etc/os-release")).unwrap_or_else(|| "Linux".to_string()),
            machine_id: read("/etc/machine-id"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            architecture: crate::image::host_architecture().to_string(),
        }
    }
}

/// `MemTotal` of /proc/meminfo, in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    meminfo_bytes(meminfo, "MemTotal")
}

/// A field of /proc/meminfo (`MemAvailable`, ...), in bytes.
pub fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| {
        l.strip_prefix(field)
            .is_some_and(|rest| rest.starts_with(':'))
    })?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME` of /etc/os-release.
pub fn pretty_name(os_release: &str) -> Option<String> {
    let value = os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?;
    Some(value.trim_matches('"').to_string())
}

/// The address this machine uses to reach the outside (the default
/// route's source address); no packet is sent.
pub fn default_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The Node's status as this agent reports it.
pub fn node_status(config: &Config, machine: &Machine, host_ip: IpAddr, now: &str) -> Value {
    let memory = format!("{}Ki", machine.memory_bytes / 1024);
    let resources = json!({
        "cpu": format!("{}", machine.cpu_millis / 1000),
        "memory": memory,
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": "0",
    });
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "capacity": resources,
        "allocatable": resources,
        "addresses": [
            {"type": "InternalIP", "address": host_ip.to_string()},
            {"type": "Hostname", "address": config.node_name},
        ],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": config.server.port}},
        "nodeInfo": {
            "machineID": machine.machine_id,
            "systemUUID": machine.machine_id,
            "bootID": machine.boot_id,
            "kernelVersion": machine.kernel_version,
            "osImage": machine.os_image,
            "containerRuntimeVersion": format!("runc://shoal-{}", env!("CARGO_PKG_VERSION")),
            "kubeletVersion": "v1.32.0",
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": machine.architecture,
        },
    })
}

/// Creates the Node (or finds it: a restarted agent) with its labels and
/// writes its status. Returns its podCIDR when it already has one.
pub async fn register(
    client: &kube::Client,
    config: &Config,
    machine: &Machine,
    host_ip: IpAddr,
) -> Result<Option<String>, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut labels = serde_json::Map::new();
    labels.insert("kubernetes.io/hostname".into(), json!(config.node_name));
    labels.insert("kubernetes.io/os".into(), json!("linux"));
    labels.insert("kubernetes.io/arch".into(), json!(machine.architecture));
    for (k, v) in &config.labels {
        labels.insert(k.clone(), json!(v));
    }
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": config.node_name, "labels": labels},
    }))
    .map_err(kube::Error::SerdeError)?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let patch = json!({"metadata": {"labels": labels}});
            nodes
                .patch(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        Err(e) => return Err(e),
    }
    let status = json!({"status": node_status(config, machine, host_ip, &now())});
    let node = nodes
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    // The lease's namespace may not be there yet on a fresh cluster: the
    // heartbeat keeps trying.
    if let Err(e) = renew(client, config).await {
        tracing::info!(node = %config.node_name, error = %e, "no node lease yet; the heartbeat will make it");
    }
    Ok(node.spec.and_then(|s| s.pod_cidr))
}

async fn renew(client: &kube::Client, config: &Config) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    let duration = (config.lease_interval.as_secs() * 4).max(40);
    let spec = json!({"holderIdentity": config.node_name, "leaseDurationSeconds": duration, "renewTime": now});
    match leases
        .patch(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": spec})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": config.node_name, "namespace": "kube-node-lease"},
                "spec": spec,
            }))
            .map_err(kube::Error::SerdeError)?;
            match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease and refreshes the Node's status until aborted.
pub async fn heartbeat(client: kube::Client, config: Config, machine: Machine, host_ip: IpAddr) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut last_status = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        tokio::time::sleep(config.lease_interval).await;
        match renew(&client, &config).await {
            Ok(()) if failing => {
                tracing::info!(node = %config.node_name, "lease renewed again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(node = %config.node_name, error = %e, "cannot renew the node lease");
                failing = true;
            }
            Err(_) => {}
        }
        if last_status.elapsed() >= STATUS_INTERVAL {
            last_status = tokio::time::Instant::now();
            let status = json!({"status": node_status(&config, &machine, host_ip, &now())});
            if let Err(e) = nodes
                .patch_status(
                    &config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
            {
                tracing::warn!(node = %config.node_name, error = %e, "cannot update the node status");
            }
        }
    }
}

/// Waits until the Node has a podCIDR (the node IPAM controller gives one
/// within a moment of registration).
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str, known: Option<String>) -> String {
    if let Some(cidr) = known {
        return cidr;
    }
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match nodes.get(name).await {
            Ok(node) => {
                if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr) {
                    return cidr;
                }
            }
            Err(e) => tracing::debug!(error = %e, "reading the node"),
        }
        if !logged {
            tracing::info!(node = %name, "waiting for the node's podCIDR (assigned by the controllers)");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_facts_parse() {
        assert_eq!(
            mem_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            Some(24567890 * 1024)
        );
        assert_eq!(mem_total("nothing"), None);
        assert_eq!(
            pretty_name("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
    }
}
