//! Per-kind changes the server makes to an object on its way in, beyond
//! defaulting: the selector and labels of a Job, a pod's service account,
//! the PodScheduled condition set by a binding.

use serde_json::{json, Value};

use crate::object::{now, set_path};
use crate::resources::Resource;

pub fn before_create(resource: &Resource, object: &mut Value, user: Option<&crate::server::User>) {
    match (resource.group, resource.kind) {
        ("certificates.k8s.io", "CertificateSigningRequest") => csr_requester(object, user),
        // A mirror pod (a node's static pod) has no service account.
        ("", "Pod") if !crate::serviceaccount::is_mirror(object) => {
            pod_service_account(object.get_mut("spec"))
        }
        ("batch", "Job") => {
            job_selector(object);
            job_labels(object);
        }
        _ => {}
    }
}

/// A CertificateSigningRequest records who asked, whatever the client
/// wrote there (Kubernetes' CSR strategy): signers and approvers decide
/// from it.
fn csr_requester(object: &mut Value, user: Option<&crate::server::User>) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if let Some(user) = user {
        spec.insert("username".into(), json!(user.name));
        if !user.uid.is_empty() {
            spec.insert("uid".into(), json!(user.uid));
        }
        spec.insert("groups".into(), json!(user.groups));
    }
}

/// A Job without labels of its own takes its pod template's (Kubernetes'
/// Job defaulting), so `kubectl get jobs -l job-name=x` finds it.
fn job_labels(object: &mut Value) {
    let empty = object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .is_none_or(|l| l.is_empty());
    if !empty {
        return;
    }
    if let Some(labels) = object
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|l| !l.is_empty()))
        .cloned()
    {
        set_path(object, &["metadata", "labels"], labels);
    }
}

pub fn before_update(resource: &Resource, old: &Value, object: &mut Value) {
    if let ("", "Service") = (resource.group, resource.kind) {
        keep_service_allocations(old, object);
    }
    if let ("batch", "Job") = (resource.group, resource.kind) {
        // The generated selector and labels survive a client that replaces
        // the whole object without them.
        if object.pointer("/spec/selector").is_none() {
            if let Some(selector) = old.pointer("/spec/selector") {
                set_path(object, &["spec", "selector"], selector.clone());
            }
        }
    }
}

/// A replaced Service keeps its cluster IP and the node ports of the ports
/// it still has, as Kubernetes does when the client leaves them out.
fn keep_service_allocations(old: &Value, object: &mut Value) {
    let given = object
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if given.is_empty() {
        for field in ["clusterIP", "clusterIPs"] {
            if let Some(value) = old.pointer(&format!("/spec/{field}")) {
                set_path(object, &["spec", field], value.clone());
            }
        }
    }
    let old_ports = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let kind = object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let wants_ports = kind == "NodePort" || kind == "LoadBalancer";
    if let Some(ports) = object
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
    {
        for port in ports {
            let same = old_ports.iter().find(|p| {
                p.get("port") == port.get("port")
                    && p.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                        == port
                            .get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
            });
            let nonzero = |v: &&Value| v.as_i64().is_some_and(|n| n != 0);
            let old_node_port = same
                .and_then(|p| p.get("nodePort"))
                .filter(nonzero)
                .cloned();
            let given = port.get("nodePort").filter(nonzero).cloned();
            match (wants_ports, given, old_node_port) {
                // Left out by the client: kept.
                (true, None, Some(n)) => port["nodePort"] = n,
                // The type no longer has node ports: the old one goes with
                // it (one the client set anew is left for validation).
                (false, Some(g), Some(n)) if g == n => {
                    if let Some(map) = port.as_object_mut() {
                        map.remove("nodePort");
                    }
                }
                _ => {}
            }
        }
    }
}

fn pod_service_account(spec: Option<&mut Value>) {
    let Some(spec) = spec.and_then(Value::as_object_mut) else {
        return;
    };
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
}

/// Unless `manualSelector` is set, a Job selects its pods by its own uid.
fn job_selector(object: &mut Value) {
    if object.pointer("/spec/manualSelector") == Some(&json!(true)) {
        return;
    }
    let uid = object
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let name = crate::object::name(object).to_string();
    set_path(
        object,
        &["spec", "selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        set_path(
            object,
            &["spec", "template", "metadata", "labels", key],
            json!(value),
        );
    }
}

/// Sets a pod condition, moving lastTransitionTime only when the status
/// changes.
pub fn set_condition(
    object: &mut Value,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
) {
    let mut conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut condition =
        json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now()});
    if let Some(r) = reason {
        condition["reason"] = json!(r);
    }
    if let Some(m) = message {
        condition["message"] = json!(m);
    }
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(status) {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => conditions.push(condition),
    }
    set_path(object, &["status", "conditions"], Value::Array(conditions));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_select_their_pods_by_uid() {
        let jobs = crate::resources::find("batch", "v1", "jobs").unwrap();
        let mut job =
            json!({"metadata": {"name": "pi", "uid": "u-1"}, "spec": {"template": {"spec": {}}}});
        before_create(jobs, &mut job, None);
        assert_eq!(
            job.pointer("/spec/selector/matchLabels/batch.kubernetes.io~1controller-uid"),
            Some(&json!("u-1"))
        );
        assert_eq!(
            job.pointer("/spec/template/metadata/labels/job-name"),
            Some(&json!("pi"))
        );
        // Without labels of its own the Job takes the template's.
        assert_eq!(job.pointer("/metadata/labels/job-name"), Some(&json!("pi")));
        let mut labelled = json!({"metadata": {"name": "pi", "uid": "u-2", "labels": {"team": "a"}},
                                  "spec": {"template": {"spec": {}}}});
        before_create(jobs, &mut labelled, None);
        assert_eq!(
            labelled.pointer("/metadata/labels"),
            Some(&json!({"team": "a"}))
        );
    }

    #[test]
    fn conditions_keep_their_transition_time() {
        let mut pod = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}});
        set_condition(&mut pod, "Ready", "True", None, None);
        assert_eq!(
            pod.pointer("/status/conditions/0/lastTransitionTime"),
            Some(&json!("2020-01-01T00:00:00Z"))
        );
        set_condition(&mut pod, "PodScheduled", "True", None, None);
        assert_eq!(
            pod.pointer("/status/conditions")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }
}
