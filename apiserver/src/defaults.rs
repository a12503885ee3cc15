//! Defaulting: the fields Kubernetes fills in on the way in, so that
//! `kubectl get -o yaml` and `describe` show the same spec they would there.

use serde_json::{json, Value};

use crate::object::default_path;
use crate::resources::Resource;

/// A Secret's `stringData` is write-only: each entry replaces the same
/// key of `data` (base64 of its text) and the field is dropped, as
/// Kubernetes converts it on the way in.
fn secret_string_data(object: &mut Value) {
    use base64::Engine;
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let Some(Value::Object(strings)) = map.remove("stringData") else {
        return;
    };
    if !map.get("data").is_some_and(Value::is_object) {
        map.insert("data".into(), json!({}));
    }
    if let Some(Value::Object(data)) = map.get_mut("data") {
        for (key, value) in strings {
            if let Value::String(text) = value {
                let encoded = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(key, Value::String(encoded));
            }
        }
    }
}

pub fn apply(resource: &Resource, object: &mut Value) {
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            if let Some(spec) = object.get_mut("spec") {
                pod_spec(spec);
            }
        }
        ("", "PodTemplate") => template(object, &["template"]),
        ("", "ReplicationController") => {
            default_path(object, &["spec", "replicas"], json!(1));
            template(object, &["spec", "template"]);
        }
        ("apps", "Deployment") => {
            default_path(object, &["spec", "replicas"], json!(1));
            let strategy = object
                .pointer("/spec/strategy/type")
                .and_then(Value::as_str);
            if strategy.is_none() || strategy == Some("RollingUpdate") {
                default_path(
                    object,
                    &["spec", "strategy", "type"],
                    json!("RollingUpdate"),
                );
                default_path(
                    object,
                    &["spec", "strategy", "rollingUpdate", "maxUnavailable"],
                    json!("25%"),
                );
                default_path(
                    object,
                    &["spec", "strategy", "rollingUpdate", "maxSurge"],
                    json!("25%"),
                );
            }
            default_path(object, &["spec", "revisionHistoryLimit"], json!(10));
            default_path(object, &["spec", "progressDeadlineSeconds"], json!(600));
            template(object, &["spec", "template"]);
        }
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(object),
        ("apps", "ReplicaSet") => {
            default_path(object, &["spec", "replicas"], json!(1));
            template(object, &["spec", "template"]);
        }
        ("apps", "StatefulSet") => {
            default_path(object, &["spec", "replicas"], json!(1));
            default_path(
                object,
                &["spec", "podManagementPolicy"],
                json!("OrderedReady"),
            );
            let strategy = object
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str);
            if strategy.is_none() || strategy == Some("RollingUpdate") {
                default_path(
                    object,
                    &["spec", "updateStrategy", "type"],
                    json!("RollingUpdate"),
                );
                default_path(
                    object,
                    &["spec", "updateStrategy", "rollingUpdate", "partition"],
                    json!(0),
                );
            }
            default_path(object, &["spec", "revisionHistoryLimit"], json!(10));
            default_path(
                object,
                &["spec", "persistentVolumeClaimRetentionPolicy"],
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            for claim in object
                .pointer_mut("/spec/volumeClaimTemplates")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                default_path(claim, &["spec", "volumeMode"], json!("Filesystem"));
                default_path(claim, &["apiVersion"], json!("v1"));
                default_path(claim, &["kind"], json!("PersistentVolumeClaim"));
            }
            template(object, &["spec", "template"]);
        }
        ("apps", "DaemonSet") => {
            let strategy = object
                .pointer("/spec/updateStrategy/type")
                .and_then(Value::as_str);
            if strategy.is_none() || strategy == Some("RollingUpdate") {
                default_path(
                    object,
                    &["spec", "updateStrategy", "type"],
                    json!("RollingUpdate"),
                );
                default_path(
                    object,
                    &["spec", "updateStrategy", "rollingUpdate", "maxUnavailable"],
                    json!(1),
                );
                default_path(
                    object,
                    &["spec", "updateStrategy", "rollingUpdate", "maxSurge"],
                    json!(0),
                );
            }
            default_path(object, &["spec", "revisionHistoryLimit"], json!(10));
            template(object, &["spec", "template"]);
        }
        ("batch", "Job") => {
            job_spec(object, &["spec"]);
        }
        ("batch", "CronJob") => {
            default_path(object, &["spec", "concurrencyPolicy"], json!("Allow"));
            default_path(object, &["spec", "suspend"], json!(false));
            default_path(object, &["spec", "successfulJobsHistoryLimit"], json!(3));
            default_path(object, &["spec", "failedJobsHistoryLimit"], json!(1));
            job_spec(object, &["spec", "jobTemplate", "spec"]);
        }
        ("", "Service") => service(object),
        ("", "Namespace") => {
            default_path(object, &["spec", "finalizers"], json!(["kubernetes"]));
            default_path(object, &["status", "phase"], json!("Active"));
            let name = crate::object::name(object).to_string();
            crate::object::set_path(
                object,
                &["metadata", "labels", "kubernetes.io/metadata.name"],
                json!(name),
            );
        }
        ("", "Secret") => {
            secret_string_data(object);
            default_path(object, &["type"], json!("Opaque"));
        }
        ("", "PersistentVolumeClaim") => {
            default_path(object, &["spec", "volumeMode"], json!("Filesystem"));
            default_path(object, &["status", "phase"], json!("Pending"));
        }
        ("", "PersistentVolume") => {
            default_path(
                object,
                &["spec", "persistentVolumeReclaimPolicy"],
                json!("Retain"),
            );
            default_path(object, &["spec", "volumeMode"], json!("Filesystem"));
            default_path(object, &["status", "phase"], json!("Pending"));
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            if object.pointer("/spec/policyTypes").is_none() {
                let mut types = vec![json!("Ingress")];
                if object.pointer("/spec/egress").is_some() {
                    types.push(json!("Egress"));
                }
                default_path(object, &["spec", "policyTypes"], Value::Array(types));
            }
            for rule in ["ingress", "egress"] {
                for entry in object
                    .pointer_mut(&format!("/spec/{rule}"))
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    for port in entry
                        .get_mut("ports")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        default_path(port, &["protocol"], json!("TCP"));
                    }
                }
            }
        }
        _ => {}
    }
}

/// autoscaling/v2 defaults (the stored version): one replica at least, a
/// CPU target of 80% when no metric is given, and when `behavior` is given
/// Kubernetes' rules for what it leaves out.
fn hpa(object: &mut Value) {
    default_path(object, &["spec", "minReplicas"], json!(1));
    let no_metrics = object
        .pointer("/spec/metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    if no_metrics {
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    }
    if object.pointer("/spec/behavior").is_none_or(Value::is_null) {
        return;
    }
    let rules = [
        (
            "scaleUp",
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        ),
        (
            "scaleDown",
            300,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        ),
    ];
    for (direction, window, policies) in rules {
        let path = ["spec", "behavior", direction];
        default_path(
            object,
            &[path[0], path[1], path[2], "stabilizationWindowSeconds"],
            json!(window),
        );
        default_path(
            object,
            &[path[0], path[1], path[2], "selectPolicy"],
            json!("Max"),
        );
        let empty = object
            .pointer(&format!("/spec/behavior/{direction}/policies"))
            .and_then(Value::as_array)
            .is_none_or(|p| p.is_empty());
        if empty {
            if let Some(rules) = object
                .pointer_mut(&format!("/spec/behavior/{direction}"))
                .and_then(Value::as_object_mut)
            {
                rules.insert("policies".into(), policies);
            }
        }
    }
}

fn job_spec(object: &mut Value, path: &[&str]) {
    let at = |field: &'static str| -> Vec<&str> { [path, &[field]].concat() };
    let given = |field: &str| {
        object
            .pointer(&format!("/{}/{field}", path.join("/")))
            .is_some_and(|v| !v.is_null())
    };
    // A job with neither field runs one pod to completion; with only
    // parallelism it is a work queue and completions stays unset.
    if !given("completions") && !given("parallelism") {
        default_path(object, &at("completions"), json!(1));
    }
    default_path(object, &at("parallelism"), json!(1));
    default_path(object, &at("backoffLimit"), json!(6));
    default_path(object, &at("completionMode"), json!("NonIndexed"));
    default_path(object, &at("suspend"), json!(false));
    default_path(
        object,
        &at("podReplacementPolicy"),
        json!("TerminatingOrFailed"),
    );
    let template_path = at("template");
    template(object, &template_path);
}

/// The pod template of a workload.
fn template(object: &mut Value, path: &[&str]) {
    let pointer = format!("/{}/spec", path.join("/"));
    if let Some(spec) = object.pointer_mut(&pointer) {
        pod_spec(spec);
    }
    // Kubernetes writes an empty creationTimestamp into templates.
    let meta = format!("/{}/metadata", path.join("/"));
    if let Some(meta) = object.pointer_mut(&meta).and_then(Value::as_object_mut) {
        meta.entry("creationTimestamp").or_insert(Value::Null);
    }
}

pub fn pod_spec(spec: &mut Value) {
    default_path(spec, &["restartPolicy"], json!("Always"));
    default_path(spec, &["dnsPolicy"], json!("ClusterFirst"));
    default_path(spec, &["terminationGracePeriodSeconds"], json!(30));
    default_path(spec, &["schedulerName"], json!("default-scheduler"));
    default_path(spec, &["securityContext"], json!({}));
    default_path(spec, &["enableServiceLinks"], json!(true));
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            self::container(container);
        }
    }
    for volume in spec
        .get_mut("volumes")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for source in ["configMap", "secret", "downwardAPI", "projected"] {
            if let Some(v) = volume.get_mut(source) {
                default_path(v, &["defaultMode"], json!(420));
            }
        }
        if let Some(v) = volume.get_mut("hostPath") {
            default_path(v, &["type"], json!(""));
        }
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    // The tag is what follows the last ':' after the last '/'; a digest
    // pins the image, so it is never re-pulled.
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container(container: &mut Value) {
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    default_path(
        container,
        &["imagePullPolicy"],
        json!(image_pull_policy(&image)),
    );
    default_path(
        container,
        &["terminationMessagePath"],
        json!("/dev/termination-log"),
    );
    default_path(container, &["terminationMessagePolicy"], json!("File"));
    default_path(container, &["resources"], json!({}));
    for port in container
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default_path(port, &["protocol"], json!("TCP"));
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = container.get_mut(probe).filter(|p| p.is_object()) {
            default_path(p, &["timeoutSeconds"], json!(1));
            default_path(p, &["periodSeconds"], json!(10));
            default_path(p, &["successThreshold"], json!(1));
            default_path(p, &["failureThreshold"], json!(3));
            if let Some(h) = p.get_mut("httpGet") {
                default_path(h, &["scheme"], json!("HTTP"));
                default_path(h, &["path"], json!("/"));
            }
        }
    }
}

fn service(object: &mut Value) {
    default_path(object, &["spec", "type"], json!("ClusterIP"));
    let kind = object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    default_path(object, &["spec", "sessionAffinity"], json!("None"));
    if kind != "ExternalName" {
        default_path(object, &["spec", "ipFamilies"], json!(["IPv4"]));
        default_path(object, &["spec", "ipFamilyPolicy"], json!("SingleStack"));
        default_path(object, &["spec", "internalTrafficPolicy"], json!("Cluster"));
    }
    if kind == "NodePort" || kind == "LoadBalancer" {
        default_path(object, &["spec", "externalTrafficPolicy"], json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default_path(
            object,
            &["spec", "allocateLoadBalancerNodePorts"],
            json!(true),
        );
    }
    for port in object
        .pointer_mut("/spec/ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        default_path(port, &["protocol"], json!("TCP"));
        if let Some(number) = port.get("port").cloned() {
            default_path(port, &["targetPort"], number);
        }
    }
    default_path(object, &["status", "loadBalancer"], json!({}));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn string_data_goes_into_data() {
        let mut s =
            json!({"data": {"a": "eA==", "b": "eQ=="}, "stringData": {"b": "two", "c": "three"}});
        apply(find("", "v1", "secrets").unwrap(), &mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "eA==", "b": "dHdv", "c": "dGhyZWU="}, "type": "Opaque"})
        );
        let mut only = json!({"stringData": {"k": "v"}, "type": "kubernetes.io/tls"});
        apply(find("", "v1", "secrets").unwrap(), &mut only);
        assert_eq!(
            only,
            json!({"data": {"k": "dg=="}, "type": "kubernetes.io/tls"})
        );
    }

    #[test]
    fn deployment_defaults_match_kubernetes() {
        let mut d = json!({"spec": {"template": {"metadata": {}, "spec": {"containers": [{"name": "c", "image": "nginx:1.14.2", "ports": [{"containerPort": 80}]}]}}}});
        apply(find("apps", "v1", "deployments").unwrap(), &mut d);
        assert_eq!(d.pointer("/spec/replicas"), Some(&json!(1)));
        assert_eq!(
            d.pointer("/spec/strategy/rollingUpdate/maxSurge"),
            Some(&json!("25%"))
        );
        assert_eq!(d.pointer("/spec/revisionHistoryLimit"), Some(&json!(10)));
        let c = d.pointer("/spec/template/spec/containers/0").unwrap();
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            d.pointer("/spec/template/spec/restartPolicy"),
            Some(&json!("Always"))
        );
    }

    #[test]
    fn hpa_defaults_match_kubernetes() {
        let hpa = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        let mut plain = json!({"spec": {"maxReplicas": 5}});
        apply(hpa, &mut plain);
        assert_eq!(plain.pointer("/spec/minReplicas"), Some(&json!(1)));
        assert_eq!(
            plain.pointer("/spec/metrics/0/resource/target/averageUtilization"),
            Some(&json!(80))
        );
        assert!(plain.pointer("/spec/behavior").is_none());

        let mut tuned = json!({"spec": {"maxReplicas": 5, "metrics": [{"type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}});
        apply(hpa, &mut tuned);
        assert_eq!(
            tuned.pointer("/spec/metrics/0/resource/target/averageUtilization"),
            Some(&json!(50))
        );
        let behavior = tuned.pointer("/spec/behavior").unwrap();
        assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 0);
        assert_eq!(behavior["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(
            behavior["scaleDown"]["policies"],
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}])
        );
        assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
        assert_eq!(behavior["scaleUp"]["policies"][0]["type"], "Pods");
    }

    #[test]
    fn pull_policy_follows_the_tag() {
        assert_eq!(image_pull_policy("busybox"), "Always");
        assert_eq!(image_pull_policy("busybox:latest"), "Always");
        assert_eq!(image_pull_policy("registry:5000/busybox"), "Always");
        assert_eq!(
            image_pull_policy("registry:5000/busybox:1.36"),
            "IfNotPresent"
        );
        assert_eq!(image_pull_policy("busybox@sha256:abc"), "IfNotPresent");
    }

    #[test]
    fn service_target_port_defaults_to_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply(find("", "v1", "services").unwrap(), &mut s);
        assert_eq!(s.pointer("/spec/ports/0/targetPort"), Some(&json!(80)));
        assert_eq!(s.pointer("/spec/type"), Some(&json!("ClusterIP")));
    }
}
