//! Server-side printing: `kubectl get` asks for a `meta.k8s.io/v1 Table`
//! and prints its cells. The columns and their contents follow Kubernetes'
//! printers (`pkg/printers/internalversion`), so the output reads the same.

use serde_json::{json, Value};

use crate::object::{age, human_duration, parse_time};
use crate::resources::Resource;

/// (name, type, priority): priority 1 columns appear only with `-o wide`.
type Column = (&'static str, &'static str, u8);

fn columns(resource: &Resource) -> Vec<Column> {
    let name = ("Name", "string", 0);
    let age = ("Age", "string", 0);
    let mut cols = match (resource.group, resource.kind) {
        ("", "Pod") => vec![
            name,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            age,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("apps", "Deployment") => vec![
            name,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") | ("", "ReplicationController") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "StatefulSet") => vec![
            name,
            ("Ready", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
        ],
        ("apps", "DaemonSet") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "ControllerRevision") => vec![
            name,
            ("Controller", "string", 0),
            ("Revision", "integer", 0),
            age,
        ],
        ("batch", "Job") => vec![
            name,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("batch", "CronJob") => vec![
            name,
            ("Schedule", "string", 0),
            ("Timezone", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("", "Service") => vec![
            name,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            age,
            ("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![name, ("Endpoints", "string", 0), age],
        ("", "Namespace") => vec![name, ("Status", "string", 0), age],
        ("", "Node") => vec![
            name,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            age,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
            ("External-IP", "string", 1),
            ("OS-Image", "string", 1),
            ("Kernel-Version", "string", 1),
            ("Container-Runtime", "string", 1),
        ],
        ("", "ConfigMap") => vec![name, ("Data", "integer", 0), age],
        ("", "Secret") => vec![name, ("Type", "string", 0), ("Data", "integer", 0), age],
        ("", "ServiceAccount") => vec![name, ("Secrets", "integer", 0), age],
        ("", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Subobject", "string", 1),
            ("Source", "string", 1),
            ("Message", "string", 0),
            ("First Seen", "string", 1),
            ("Count", "string", 1),
            ("Name", "string", 1),
        ],
        ("", "PersistentVolumeClaim") => vec![
            name,
            ("Status", "string", 0),
            ("Volume", "string", 0),
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            age,
            ("VolumeMode", "string", 1),
        ],
        ("", "PersistentVolume") => vec![
            name,
            ("Capacity", "string", 0),
            ("Access Modes", "string", 0),
            ("Reclaim Policy", "string", 0),
            ("Status", "string", 0),
            ("Claim", "string", 0),
            ("StorageClass", "string", 0),
            ("VolumeAttributesClass", "string", 0),
            ("Reason", "string", 0),
            age,
            ("VolumeMode", "string", 1),
        ],
        ("networking.k8s.io", "NetworkPolicy") => vec![name, ("Pod-Selector", "string", 0), age],
        ("networking.k8s.io", "Ingress") => vec![
            name,
            ("Class", "string", 0),
            ("Hosts", "string", 0),
            ("Address", "string", 0),
            ("Ports", "string", 0),
            age,
        ],
        ("networking.k8s.io", "IngressClass") => vec![
            name,
            ("Controller", "string", 0),
            ("Parameters", "string", 0),
            age,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => vec![
            name,
            ("Reference", "string", 0),
            ("Targets", "string", 0),
            ("MinPods", "string", 0),
            ("MaxPods", "integer", 0),
            ("Replicas", "integer", 0),
            age,
        ],
        ("coordination.k8s.io", "Lease") => vec![name, ("Holder", "string", 0), age],
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![name, ("Created At", "date", 0)]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            name,
            ("Role", "string", 0),
            age,
            ("Users", "string", 1),
            ("Groups", "string", 1),
            ("ServiceAccounts", "string", 1),
        ],
        ("certificates.k8s.io", "CertificateSigningRequest") => vec![
            name,
            age,
            ("SignerName", "string", 0),
            ("Requestor", "string", 0),
            ("RequestedDuration", "string", 0),
            ("Condition", "string", 0),
        ],
        ("discovery.k8s.io", "EndpointSlice") => vec![
            name,
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            age,
        ],
        ("storage.k8s.io", "StorageClass") => vec![
            name,
            ("Provisioner", "string", 0),
            ("ReclaimPolicy", "string", 0),
            ("VolumeBindingMode", "string", 0),
            ("AllowVolumeExpansion", "string", 0),
            age,
        ],
        ("policy", "PodDisruptionBudget") => vec![
            name,
            ("Min Available", "string", 0),
            ("Max Unavailable", "string", 0),
            ("Allowed Disruptions", "integer", 0),
            age,
        ],
        _ => vec![name, age],
    };
    if cols.is_empty() {
        cols.push(name);
    }
    cols
}

fn s<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn n(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(text: String) -> String {
    if text.is_empty() {
        "<none>".into()
    } else {
        text
    }
}

/// `app=web,tier in (a,b)` from a metav1.LabelSelector.
pub fn selector_string(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => format!("{key} in ({})", values.join(",")),
                "NotIn" => format!("{key} notin ({})", values.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                other => format!("{key} {other}"),
            },
        );
    }
    parts.join(",")
}

fn map_string(map: Option<&Value>) -> String {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn containers_and_images(object: &Value, spec: &str) -> (String, String) {
    let list = object
        .pointer(&format!("{spec}/containers"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = list.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = list.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

/// The STATUS column of a pod, computed as `kubectl get pods` does.
pub fn pod_status(pod: &Value) -> String {
    let mut reason = s(pod, "/status/phase").to_string();
    if !s(pod, "/status/reason").is_empty() {
        reason = s(pod, "/status/reason").to_string();
    }
    let init_statuses = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let init_specs = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut initializing = false;
    for (i, status) in init_statuses.iter().enumerate() {
        let sidecar = init_specs
            .iter()
            .find(|c| s(c, "/name") == s(status, "/name"))
            .is_some_and(|c| s(c, "/restartPolicy") == "Always");
        if let Some(t) = status.pointer("/state/terminated") {
            if n(t, "/exitCode") == 0 {
                continue;
            }
            reason = if !s(t, "/reason").is_empty() {
                format!("Init:{}", s(t, "/reason"))
            } else if n(t, "/signal") != 0 {
                format!("Init:Signal:{}", n(t, "/signal"))
            } else {
                format!("Init:ExitCode:{}", n(t, "/exitCode"))
            };
            initializing = true;
        } else if sidecar && status.pointer("/started") == Some(&json!(true)) {
            continue;
        } else if let Some(w) = status
            .pointer("/state/waiting")
            .filter(|w| !s(w, "/reason").is_empty() && s(w, "/reason") != "PodInitializing")
        {
            reason = format!("Init:{}", s(w, "/reason"));
            initializing = true;
        } else {
            reason = format!("Init:{}/{}", i, init_specs.len());
            initializing = true;
        }
        break;
    }
    if !initializing {
        let mut has_running = false;
        let statuses = pod
            .pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for status in statuses.iter().rev() {
            if let Some(w) = status
                .pointer("/state/waiting")
                .filter(|w| !s(w, "/reason").is_empty())
            {
                reason = s(w, "/reason").to_string();
            } else if let Some(t) = status.pointer("/state/terminated") {
                reason = if !s(t, "/reason").is_empty() {
                    s(t, "/reason").to_string()
                } else if n(t, "/signal") != 0 {
                    format!("Signal:{}", n(t, "/signal"))
                } else {
                    format!("ExitCode:{}", n(t, "/exitCode"))
                };
            } else if status.pointer("/ready") == Some(&json!(true))
                && status.pointer("/state/running").is_some()
            {
                has_running = true;
            }
        }
        if reason == "Completed" && has_running {
            let ready = pod
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| s(c, "/type") == "Ready" && s(c, "/status") == "True");
            reason = if ready { "Running" } else { "NotReady" }.into();
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if s(pod, "/status/reason") == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    reason
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    // Sidecars (init containers with restartPolicy Always) count in READY
    // as kubectl counts them.
    let sidecars: Vec<&str> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| s(c, "/restartPolicy") == "Always")
        .map(|c| s(c, "/name"))
        .collect();
    let total = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len)
        + sidecars.len();
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready_sidecars = pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| {
            sidecars.contains(&s(c, "/name"))
                && c.pointer("/started") == Some(&json!(true))
                && c.pointer("/ready") == Some(&json!(true))
        })
        .count();
    let ready = statuses
        .iter()
        .filter(|c| c.pointer("/ready") == Some(&json!(true)))
        .count()
        + ready_sidecars;
    let mut restarts: i64 = 0;
    let mut last_restart: Option<jiff::Timestamp> = None;
    for status in pod
        .pointer("/status/initContainerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .chain(statuses.iter())
    {
        restarts += n(status, "/restartCount");
        if let Some(t) = parse_time(s(status, "/lastState/terminated/finishedAt")) {
            if last_restart.is_none_or(|l| t > l) {
                last_restart = Some(t);
            }
        }
    }
    let restarts = match (restarts, last_restart) {
        (r, Some(t)) if r > 0 => format!(
            "{r} ({} ago)",
            human_duration(jiff::Timestamp::now().as_second() - t.as_second())
        ),
        (r, _) => r.to_string(),
    };
    let gates = pod
        .pointer("/spec/readinessGates")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let gates = if gates == 0 {
        "<none>".to_string()
    } else {
        let true_gates = pod
            .pointer("/spec/readinessGates")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|g| {
                pod.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| s(c, "/type") == s(g, "/conditionType") && s(c, "/status") == "True")
            })
            .count();
        format!("{true_gates}/{gates}")
    };
    vec![
        json!(format!("{ready}/{total}")),
        json!(pod_status(pod)),
        json!(restarts),
        json!(age(pod
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str))),
        json!(or_none(s(pod, "/status/podIP").to_string())),
        json!(or_none(s(pod, "/spec/nodeName").to_string())),
        json!(or_none(s(pod, "/status/nominatedNodeName").to_string())),
        json!(gates),
    ]
}

fn service_cells(svc: &Value) -> Vec<Value> {
    let kind = s(svc, "/spec/type");
    let kind = if kind.is_empty() { "ClusterIP" } else { kind };
    let external_ips: Vec<&str> = svc
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let external = match kind {
        "ExternalName" => s(svc, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = svc
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| {
                    let ip = s(i, "/ip");
                    if ip.is_empty() {
                        s(i, "/hostname").to_string()
                    } else {
                        ip.to_string()
                    }
                })
                .collect();
            ips.extend(external_ips.iter().map(|s| s.to_string()));
            if ips.is_empty() {
                "<pending>".into()
            } else {
                ips.join(",")
            }
        }
        _ if !external_ips.is_empty() => external_ips.join(","),
        _ => "<none>".into(),
    };
    let ports: Vec<String> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let protocol = s(p, "/protocol");
            let protocol = if protocol.is_empty() { "TCP" } else { protocol };
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(node) if node != 0 => format!("{}:{node}/{protocol}", n(p, "/port")),
                _ => format!("{}/{protocol}", n(p, "/port")),
            }
        })
        .collect();
    let cluster_ip = s(svc, "/spec/clusterIP");
    vec![
        json!(kind),
        json!(if cluster_ip.is_empty() {
            "<none>"
        } else {
            cluster_ip
        }),
        json!(external),
        json!(or_none(ports.join(","))),
        json!(age(svc
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str))),
        json!(or_none(map_string(svc.pointer("/spec/selector")))),
    ]
}

fn job_cells(job: &Value) -> Vec<Value> {
    let conditions: Vec<Value> = job
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let has = |t: &str| {
        conditions
            .iter()
            .any(|c| s(c, "/type") == t && s(c, "/status") == "True")
    };
    let status = if has("Failed") {
        "Failed"
    } else if has("Complete") {
        "Complete"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        "Running"
    };
    let succeeded = n(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = n(job, "/spec/parallelism");
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = parse_time(s(job, "/status/startTime"));
    let end = parse_time(s(job, "/status/completionTime"));
    let duration = match (start, end) {
        (Some(a), Some(b)) => human_duration(b.as_second() - a.as_second()),
        (Some(a), None) => human_duration(jiff::Timestamp::now().as_second() - a.as_second()),
        _ => String::new(),
    };
    let (containers, images) = containers_and_images(job, "/spec/template/spec");
    vec![
        json!(status),
        json!(completions),
        json!(duration),
        json!(age(job
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str))),
        json!(containers),
        json!(images),
        json!(or_none(selector_string(
            job.pointer("/spec/selector").unwrap_or(&Value::Null)
        ))),
    ]
}

fn node_cells(node: &Value) -> Vec<Value> {
    let conditions = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut status = match conditions.iter().find(|c| s(c, "/type") == "Ready") {
        Some(c) if s(c, "/status") == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable") == Some(&json!(true)) {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| {
            k.strip_prefix("node-role.kubernetes.io/")
                .map(String::from)
                .or_else(|| {
                    (k == "kubernetes.io/role").then(|| v.as_str().unwrap_or_default().to_string())
                })
        })
        .filter(|r| !r.is_empty())
        .collect();
    roles.sort();
    let address = |kind: &str| {
        node.pointer("/status/addresses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|a| s(a, "/type") == kind)
            .map(|a| s(a, "/address").to_string())
            .unwrap_or_else(|| "<none>".into())
    };
    vec![
        json!(status),
        json!(or_none(roles.join(","))),
        json!(age(node
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str))),
        json!(s(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or_none(s(node, "/status/nodeInfo/osImage").to_string())),
        json!(or_none(
            s(node, "/status/nodeInfo/kernelVersion").to_string()
        )),
        json!(or_none(
            s(node, "/status/nodeInfo/containerRuntimeVersion").to_string()
        )),
    ]
}

fn event_cells(event: &Value) -> Vec<Value> {
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .map(|p| s(event, p))
    .find(|t| !t.is_empty());
    let first = s(event, "/firstTimestamp");
    let object = format!(
        "{}/{}",
        s(event, "/involvedObject/kind").to_lowercase(),
        s(event, "/involvedObject/name")
    );
    let source = {
        let component = s(event, "/source/component");
        let host = s(event, "/source/host");
        match (component, host) {
            ("", "") => s(event, "/reportingComponent").to_string(),
            (c, "") => c.to_string(),
            (c, h) => format!("{c}, {h}"),
        }
    };
    let count = n(event, "/count").max(1);
    vec![
        json!(age(last)),
        json!(s(event, "/type")),
        json!(s(event, "/reason")),
        json!(object),
        json!(s(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(s(event, "/message").trim()),
        json!(if first.is_empty() {
            "<unknown>".into()
        } else {
            age(Some(first))
        }),
        json!(count.to_string()),
        json!(crate::object::name(event)),
    ]
}

fn cells(resource: &Resource, o: &Value) -> Vec<Value> {
    let name = json!(crate::object::name(o));
    let created = o
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str);
    let a = json!(age(created));
    let mut row = match (resource.group, resource.kind) {
        ("", "Pod") => pod_cells(o),
        ("", "Service") => service_cells(o),
        ("batch", "Job") => job_cells(o),
        ("", "Node") => node_cells(o),
        ("", "Event") => return event_cells(o),
        ("apps", "Deployment") => {
            let (c, i) = containers_and_images(o, "/spec/template/spec");
            vec![
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                json!(n(o, "/status/updatedReplicas")),
                json!(n(o, "/status/availableReplicas")),
                a,
                json!(c),
                json!(i),
                json!(or_none(selector_string(
                    o.pointer("/spec/selector").unwrap_or(&Value::Null)
                ))),
            ]
        }
        ("apps", "ReplicaSet") | ("", "ReplicationController") => {
            let (c, i) = containers_and_images(o, "/spec/template/spec");
            let selector = if resource.kind == "ReplicaSet" {
                selector_string(o.pointer("/spec/selector").unwrap_or(&Value::Null))
            } else {
                map_string(o.pointer("/spec/selector"))
            };
            vec![
                json!(n(o, "/spec/replicas")),
                json!(n(o, "/status/replicas")),
                json!(n(o, "/status/readyReplicas")),
                a,
                json!(c),
                json!(i),
                json!(or_none(selector)),
            ]
        }
        ("apps", "StatefulSet") => {
            let (c, i) = containers_and_images(o, "/spec/template/spec");
            vec![
                json!(format!(
                    "{}/{}",
                    n(o, "/status/readyReplicas"),
                    n(o, "/spec/replicas")
                )),
                a,
                json!(c),
                json!(i),
            ]
        }
        ("apps", "DaemonSet") => {
            let (c, i) = containers_and_images(o, "/spec/template/spec");
            vec![
                json!(n(o, "/status/desiredNumberScheduled")),
                json!(n(o, "/status/currentNumberScheduled")),
                json!(n(o, "/status/numberReady")),
                json!(n(o, "/status/updatedNumberScheduled")),
                json!(n(o, "/status/numberAvailable")),
                json!(or_none(map_string(
                    o.pointer("/spec/template/spec/nodeSelector")
                ))),
                a,
                json!(c),
                json!(i),
                json!(or_none(selector_string(
                    o.pointer("/spec/selector").unwrap_or(&Value::Null)
                ))),
            ]
        }
        ("apps", "ControllerRevision") => {
            let owner = o
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|refs| {
                    refs.iter()
                        .find(|r| r.get("controller") == Some(&json!(true)))
                })
                .map(|r| {
                    let group = s(r, "/apiVersion").split('/').next().unwrap_or_default();
                    format!("{}.{group}/{}", s(r, "/kind").to_lowercase(), s(r, "/name"))
                })
                .unwrap_or_else(|| "<none>".into());
            vec![json!(owner), json!(n(o, "/revision")), a]
        }
        ("batch", "CronJob") => {
            let (c, i) = containers_and_images(o, "/spec/jobTemplate/spec/template/spec");
            let last = s(o, "/status/lastScheduleTime");
            vec![
                json!(s(o, "/spec/schedule")),
                json!(or_none(s(o, "/spec/timeZone").to_string())),
                json!(match o.pointer("/spec/suspend").and_then(Value::as_bool) {
                    Some(true) => "True",
                    Some(false) => "False",
                    None => "<unset>",
                }),
                json!(o
                    .pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)),
                json!(if last.is_empty() {
                    "<none>".into()
                } else {
                    age(Some(last))
                }),
                a,
                json!(c),
                json!(i),
                json!(or_none(selector_string(
                    o.pointer("/spec/jobTemplate/spec/selector")
                        .unwrap_or(&Value::Null)
                ))),
            ]
        }
        ("", "Endpoints") => {
            let mut list = Vec::new();
            for subset in o
                .pointer("/subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let ports: Vec<i64> = subset
                    .pointer("/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|p| n(p, "/port"))
                    .collect();
                for address in subset
                    .pointer("/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if ports.is_empty() {
                        list.push(s(address, "/ip").to_string());
                    }
                    for port in &ports {
                        list.push(format!("{}:{port}", s(address, "/ip")));
                    }
                }
            }
            let shown = if list.len() > 3 {
                format!("{} + {} more...", list[..3].join(","), list.len() - 3)
            } else {
                list.join(",")
            };
            vec![json!(or_none(shown)), a]
        }
        ("", "Namespace") => vec![json!(s(o, "/status/phase")), a],
        ("", "ConfigMap") => {
            let count = o
                .pointer("/data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + o.pointer("/binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            vec![json!(count), a]
        }
        ("", "Secret") => {
            let count = o
                .pointer("/data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![json!(s(o, "/type")), json!(count), a]
        }
        ("", "ServiceAccount") => vec![
            json!(o
                .pointer("/secrets")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)),
            a,
        ],
        ("", "PersistentVolumeClaim") => {
            let modes = access_modes(o.pointer("/status/accessModes"));
            vec![
                json!(s(o, "/status/phase")),
                json!(s(o, "/spec/volumeName")),
                json!(s(o, "/status/capacity/storage")),
                json!(modes),
                json!(or_unset(s(o, "/spec/storageClassName"))),
                json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                a,
                json!(s(o, "/spec/volumeMode")),
            ]
        }
        ("", "PersistentVolume") => {
            let claim = if s(o, "/spec/claimRef/name").is_empty() {
                String::new()
            } else {
                format!(
                    "{}/{}",
                    s(o, "/spec/claimRef/namespace"),
                    s(o, "/spec/claimRef/name")
                )
            };
            vec![
                json!(s(o, "/spec/capacity/storage")),
                json!(access_modes(o.pointer("/spec/accessModes"))),
                json!(s(o, "/spec/persistentVolumeReclaimPolicy")),
                json!(s(o, "/status/phase")),
                json!(claim),
                json!(s(o, "/spec/storageClassName")),
                json!(or_unset(s(o, "/spec/volumeAttributesClassName"))),
                json!(s(o, "/status/reason")),
                a,
                json!(s(o, "/spec/volumeMode")),
            ]
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            let selector = selector_string(o.pointer("/spec/podSelector").unwrap_or(&Value::Null));
            vec![
                json!(if selector.is_empty() {
                    "<none>".into()
                } else {
                    selector
                }),
                a,
            ]
        }
        ("networking.k8s.io", "Ingress") => {
            let hosts: Vec<&str> = o
                .pointer("/spec/rules")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|r| s(r, "/host"))
                .filter(|h| !h.is_empty())
                .collect();
            let address: Vec<&str> = o
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|i| s(i, "/ip"))
                .collect();
            let ports = if o.pointer("/spec/tls").is_some() {
                "80, 443"
            } else {
                "80"
            };
            vec![
                json!(or_none(s(o, "/spec/ingressClassName").to_string())),
                json!(if hosts.is_empty() {
                    "*".into()
                } else {
                    hosts.join(",")
                }),
                json!(address.join(",")),
                json!(ports),
                a,
            ]
        }
        ("networking.k8s.io", "IngressClass") => vec![
            json!(s(o, "/spec/controller")),
            json!(if o.pointer("/spec/parameters").is_some() {
                s(o, "/spec/parameters/kind").to_string()
            } else {
                "<none>".into()
            }),
            a,
        ],
        ("autoscaling", "HorizontalPodAutoscaler") => {
            let reference = format!(
                "{}/{}",
                s(o, "/spec/scaleTargetRef/kind"),
                s(o, "/spec/scaleTargetRef/name")
            );
            let targets = hpa_targets(o);
            let min = o
                .pointer("/spec/minReplicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            vec![
                json!(reference),
                json!(targets),
                json!(min.to_string()),
                json!(n(o, "/spec/maxReplicas")),
                json!(n(o, "/status/currentReplicas")),
                a,
            ]
        }
        ("coordination.k8s.io", "Lease") => vec![json!(s(o, "/spec/holderIdentity")), a],
        ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            vec![json!(created.unwrap_or_default())]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            // kubectl's printer: the subjects by kind, a ServiceAccount as
            // namespace/name.
            let subjects = o.get("subjects").and_then(Value::as_array);
            let of = |kind: &str| -> String {
                subjects
                    .into_iter()
                    .flatten()
                    .filter(|x| s(x, "/kind") == kind)
                    .map(|x| match kind {
                        "ServiceAccount" => format!("{}/{}", s(x, "/namespace"), s(x, "/name")),
                        _ => s(x, "/name").to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            vec![
                json!(format!(
                    "{}/{}",
                    s(o, "/roleRef/kind"),
                    s(o, "/roleRef/name")
                )),
                a,
                json!(of("User")),
                json!(of("Group")),
                json!(of("ServiceAccount")),
            ]
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            // Kubernetes' printer: the condition types, "Issued" once a
            // certificate is there, "Pending" while neither.
            let mut conditions: Vec<String> = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c["type"].as_str().map(String::from))
                .collect();
            if !s(o, "/status/certificate").is_empty() {
                conditions.push("Issued".into());
            }
            let condition = if conditions.is_empty() {
                "Pending".to_string()
            } else {
                conditions.join(",")
            };
            let duration = o
                .pointer("/spec/expirationSeconds")
                .and_then(Value::as_i64)
                .map(crate::object::human_duration)
                .unwrap_or_else(|| "<none>".into());
            vec![
                a,
                json!(s(o, "/spec/signerName")),
                json!(s(o, "/spec/username")),
                json!(duration),
                json!(condition),
            ]
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let ports: Vec<String> = o
                .pointer("/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| n(p, "/port").to_string())
                .collect();
            let addresses: Vec<String> = o
                .pointer("/endpoints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .flat_map(|e| {
                    e.pointer("/addresses")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default()
                })
                .filter_map(|a| a.as_str().map(String::from))
                .collect();
            let shown = if addresses.len() > 3 {
                format!(
                    "{} + {} more...",
                    addresses[..3].join(","),
                    addresses.len() - 3
                )
            } else {
                addresses.join(",")
            };
            vec![
                json!(s(o, "/addressType")),
                json!(if ports.is_empty() {
                    "<unset>".into()
                } else {
                    ports.join(",")
                }),
                json!(if shown.is_empty() {
                    "<unset>".into()
                } else {
                    shown
                }),
                a,
            ]
        }
        ("storage.k8s.io", "StorageClass") => {
            let mut name = crate::object::name(o).to_string();
            if o.pointer("/metadata/annotations/storageclass.kubernetes.io~1is-default-class")
                == Some(&json!("true"))
            {
                name.push_str(" (default)");
            }
            return vec![
                json!(name),
                json!(s(o, "/provisioner")),
                json!(if s(o, "/reclaimPolicy").is_empty() {
                    "Delete"
                } else {
                    s(o, "/reclaimPolicy")
                }),
                json!(if s(o, "/volumeBindingMode").is_empty() {
                    "Immediate"
                } else {
                    s(o, "/volumeBindingMode")
                }),
                json!(o
                    .pointer("/allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string()),
                a,
            ];
        }
        ("policy", "PodDisruptionBudget") => {
            let show = |p: &str| match o.pointer(p) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            vec![
                json!(show("/spec/minAvailable")),
                json!(show("/spec/maxUnavailable")),
                json!(n(o, "/status/disruptionsAllowed")),
                a,
            ]
        }
        _ => vec![a],
    };
    row.insert(0, name);
    row
}

fn or_unset(text: &str) -> String {
    if text.is_empty() {
        "<unset>".into()
    } else {
        text.to_string()
    }
}

fn access_modes(modes: Option<&Value>) -> String {
    modes
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The TARGETS column, as kubectl's `formatHPAMetrics`: each metric's
/// current value (the status at the same index) over its target, at most
/// two, then "+ N more...".
fn hpa_targets(o: &Value) -> String {
    let metrics = o
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if metrics.is_empty() {
        // An autoscaling/v1 object: its one CPU target.
        return match o
            .pointer("/spec/targetCPUUtilizationPercentage")
            .and_then(Value::as_i64)
        {
            Some(target) => {
                let now = o
                    .pointer("/status/currentCPUUtilizationPercentage")
                    .and_then(Value::as_i64)
                    .map(|v| format!("{v}%"))
                    .unwrap_or_else(|| "<unknown>".into());
                format!("cpu: {now}/{target}%")
            }
            None => "<none>".into(),
        };
    }
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let unknown = || "<unknown>".to_string();
    let value = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let parts: Vec<String> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let status = current.get(i);
            let field = |path: &str| status.and_then(|c| c.pointer(path));
            match s(m, "/type") {
                "Pods" => format!(
                    "{}/{}",
                    value(field("/pods/current/averageValue")).unwrap_or_else(unknown),
                    s(m, "/pods/target/averageValue")
                ),
                "Object" | "External" => {
                    let key = if s(m, "/type") == "Object" {
                        "object"
                    } else {
                        "external"
                    };
                    let (now, target) = match m.pointer(&format!("/{key}/target/averageValue")) {
                        Some(t) => (field(&format!("/{key}/current/averageValue")), t),
                        None => (
                            field(&format!("/{key}/current/value")),
                            m.pointer(&format!("/{key}/target/value"))
                                .unwrap_or(&Value::Null),
                        ),
                    };
                    let target = target.as_str().unwrap_or_default();
                    let now = value(now).unwrap_or_else(unknown);
                    if m.pointer(&format!("/{key}/target/averageValue")).is_some() {
                        format!("{now}/{target} (avg)")
                    } else {
                        format!("{now}/{target}")
                    }
                }
                kind => {
                    let key = if kind == "ContainerResource" {
                        "containerResource"
                    } else {
                        "resource"
                    };
                    let name = s(m, &format!("/{key}/name"));
                    if let Some(target) = m.pointer(&format!("/{key}/target/averageValue")) {
                        let now = value(field(&format!("/{key}/current/averageValue")))
                            .unwrap_or_else(unknown);
                        format!("{name}: {now}/{}", target.as_str().unwrap_or_default())
                    } else {
                        let now = field(&format!("/{key}/current/averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|v| format!("{v}%"))
                            .unwrap_or_else(unknown);
                        let target = m
                            .pointer(&format!("/{key}/target/averageUtilization"))
                            .and_then(Value::as_i64)
                            .map(|v| format!("{v}%"))
                            .unwrap_or_else(|| "<auto>".into());
                        format!("{name}: {now}/{target}")
                    }
                }
            }
        })
        .collect();
    if parts.len() > 2 {
        return format!("{} + {} more...", parts[..2].join(", "), parts.len() - 2);
    }
    parts.join(", ")
}

/// One row of a Table: its cells and the object as `includeObject` asks
/// (`None`, `Object`, or metadata only, the default).
pub fn row(item: &Value, include: &str, cells: Vec<Value>) -> Value {
    let object = match include {
        "None" => Value::Null,
        "Object" => item.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item.get("metadata").cloned().unwrap_or_default(),
        }),
    };
    json!({"cells": cells, "object": object})
}

/// A Table of one object or of a list, with each row's object included as
/// `include` says (`None`, `Metadata` or `Object`).
pub fn table(resource: &Resource, object: &Value, include: &str) -> Value {
    let items: Vec<&Value> = match object.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![object],
    };
    let definitions: Vec<Value> = columns(resource)
        .iter()
        .map(|(name, kind, priority)| {
            json!({
                "name": name,
                "type": kind,
                "format": if *name == "Name" { "name" } else { "" },
                "description": "",
                "priority": priority,
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|item| row(item, include, cells(resource, item)))
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = object.pointer("/metadata/resourceVersion") {
        metadata["resourceVersion"] = rv.clone();
    }
    if let Some(c) = object.pointer("/metadata/continue") {
        metadata["continue"] = c.clone();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn every_row_has_a_cell_per_column() {
        for resource in crate::resources::all() {
            let object =
                json!({"metadata": {"name": "x", "creationTimestamp": "2026-01-01T00:00:00Z"}});
            let row = cells(resource, &object);
            assert_eq!(row.len(), columns(resource).len(), "{}", resource.kind);
        }
    }

    #[test]
    fn pod_status_column() {
        let crash = json!({"status": {"phase": "Running", "containerStatuses": [{"ready": false, "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&crash), "CrashLoopBackOff");
        let init = json!({"spec": {"initContainers": [{"name": "a"}, {"name": "b"}]}, "status": {"phase": "Pending", "initContainerStatuses": [{"name": "a", "state": {"terminated": {"exitCode": 0}}}, {"name": "b", "state": {"running": {}}}]}});
        assert_eq!(pod_status(&init), "Init:1/2");
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting), "Terminating");
        let pending = json!({"status": {"phase": "Pending"}});
        assert_eq!(pod_status(&pending), "Pending");
    }

    #[test]
    fn ready_counts_started_sidecars() {
        let pod = json!({
            "spec": {"initContainers": [{"name": "prep"}, {"name": "shipper", "restartPolicy": "Always"}],
                     "containers": [{"name": "app"}]},
            "status": {"phase": "Running",
                "initContainerStatuses": [
                    {"name": "prep", "ready": false, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "shipper", "ready": true, "started": true, "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]},
        });
        assert_eq!(pod_cells(&pod)[0], "2/2");
        assert_eq!(pod_status(&pod), "Running");
    }

    #[test]
    fn service_ports_and_ips() {
        let svc = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.12", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let row = cells(find("", "v1", "services").unwrap(), &svc);
        assert_eq!(row[1], "NodePort");
        assert_eq!(row[3], "<none>");
        assert_eq!(row[4], "80:30080/TCP");
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        assert_eq!(
            cells(find("", "v1", "services").unwrap(), &lb)[3],
            "<pending>"
        );
    }

    #[test]
    fn hpa_targets_like_kubectl() {
        let util = |n: i64| json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": n}}});
        let hpa = json!({"spec": {"metrics": [util(50)]}, "status": {"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 90, "averageValue": "90m"}}}]}});
        assert_eq!(hpa_targets(&hpa), "cpu: 90%/50%");
        let waiting =
            json!({"spec": {"metrics": [util(50)]}, "status": {"currentMetrics": [{"type": ""}]}});
        assert_eq!(hpa_targets(&waiting), "cpu: <unknown>/50%");
        let v1 = json!({"spec": {"targetCPUUtilizationPercentage": 50}, "status": {"currentCPUUtilizationPercentage": 90}});
        assert_eq!(hpa_targets(&v1), "cpu: 90%/50%");
        let memory = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let hpa = json!({"spec": {"metrics": [util(50), memory, util(60), util(70)]}, "status": {"currentMetrics": [
            {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 9}}},
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "67108864"}}}]}});
        assert_eq!(
            hpa_targets(&hpa),
            "cpu: 9%/50%, memory: 67108864/100Mi + 2 more..."
        );
    }

    #[test]
    fn selectors_print_like_kubectl() {
        let s = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}]});
        assert_eq!(selector_string(&s), "app=web,tier in (a,b)");
    }
}
