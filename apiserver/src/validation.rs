//! Validation with Kubernetes' rules and words: names, labels and the spec
//! fields users get wrong most. Each check returns the causes of a 422.

use serde_json::Value;

use crate::error::Cause;
use crate::resources::Resource;

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

pub use shoal_core::names::{is_dns1035_label, is_dns1123_label, is_dns1123_subdomain};

fn is_qualified_part(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || "-_.".contains(c))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Problems with a label (or annotation) key: `[prefix/]name`.
pub fn label_key_errors(key: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_dns1123_subdomain(prefix) {
            errors.push(format!("prefix part {DNS1123_SUBDOMAIN}"));
        }
    }
    if name.is_empty() {
        errors.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errors.push("name part must be no more than 63 characters".into());
    } else if !is_qualified_part(name) {
        errors.push(QUALIFIED_NAME.into());
    }
    errors
}

fn label_value_ok(value: &str) -> bool {
    value.is_empty() || is_qualified_part(value)
}

/// The name rule of a resource: namespaces are DNS labels, services
/// DNS-1035 labels, RBAC objects path segments (`system:node` is a
/// name), everything else DNS subdomains.
pub fn name_errors(resource: &Resource, name: &str) -> Option<&'static str> {
    if resource.group == "rbac.authorization.k8s.io" {
        return match name {
            "." => Some("may not be '.'"),
            ".." => Some("may not be '..'"),
            _ if name.contains('/') => Some("may not contain '/'"),
            _ if name.contains('%') => Some("may not contain '%'"),
            _ => None,
        };
    }
    match resource.plural {
        "namespaces" if !is_dns1123_label(name) => Some(DNS1123_LABEL),
        "services" if !is_dns1035_label(name) => Some(DNS1035_LABEL),
        "namespaces" | "services" => None,
        _ if !is_dns1123_subdomain(name) => Some(DNS1123_SUBDOMAIN),
        _ => None,
    }
}

pub fn metadata(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let meta = object.get("metadata").cloned().unwrap_or(Value::Null);
    match meta.get("name").and_then(Value::as_str) {
        None | Some("") => causes.push(Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        }),
        Some(name) => {
            if let Some(rule) = name_errors(resource, name) {
                causes.push(Cause::invalid("metadata.name", &Value::from(name), rule));
            }
        }
    }
    if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
        for (key, value) in labels {
            for error in label_key_errors(key) {
                causes.push(Cause::invalid(
                    "metadata.labels",
                    &Value::from(key.as_str()),
                    error,
                ));
            }
            let text = value.as_str().unwrap_or_default();
            if !label_value_ok(text) {
                let detail = if text.len() > 63 {
                    "must be no more than 63 characters"
                } else {
                    LABEL_VALUE
                };
                causes.push(Cause::invalid("metadata.labels", value, detail));
            }
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut total = 0;
        for (key, value) in annotations {
            total += key.len() + value.as_str().map_or(0, str::len);
            for error in label_key_errors(key) {
                causes.push(Cause::invalid(
                    "metadata.annotations",
                    &Value::from(key.as_str()),
                    error,
                ));
            }
        }
        if total > 256 * 1024 {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: "metadata.annotations".into(),
                message: "Too long: must have at most 262144 bytes".into(),
            });
        }
    }
    causes
}

fn pod_spec(spec: &Value, path: &str, restart_policies: &[&str], causes: &mut Vec<Cause>) {
    let containers = spec.get("containers").and_then(Value::as_array);
    match containers {
        None => causes.push(Cause::required(format!("{path}.containers"))),
        Some(list) if list.is_empty() => causes.push(Cause::required(format!("{path}.containers"))),
        Some(_) => {}
    }
    let mut names = std::collections::HashSet::new();
    for (field, list) in [
        (
            "initContainers",
            spec.get("initContainers").and_then(Value::as_array),
        ),
        ("containers", containers),
    ] {
        for (i, container) in list.into_iter().flatten().enumerate() {
            let at = format!("{path}.{field}[{i}]");
            match container.get("name").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required(format!("{at}.name"))),
                Some(name) => {
                    if !is_dns1123_label(name) {
                        causes.push(Cause::invalid(
                            format!("{at}.name"),
                            &Value::from(name),
                            DNS1123_LABEL,
                        ));
                    } else if !names.insert(name.to_string()) {
                        causes.push(Cause::duplicate(format!("{at}.name"), &Value::from(name)));
                    }
                }
            }
            if container
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .is_empty()
            {
                causes.push(Cause::required(format!("{at}.image")));
            }
            for (j, port) in container
                .get("ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let number = port
                    .get("containerPort")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if !(1..=65535).contains(&number) {
                    causes.push(Cause::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &Value::from(number),
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(policy) = spec.get("restartPolicy").and_then(Value::as_str) {
        if !restart_policies.contains(&policy) {
            causes.push(Cause::unsupported(
                format!("{path}.restartPolicy"),
                policy,
                restart_policies,
            ));
        }
    }
}

fn replicas(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(n) = spec.get("replicas").and_then(Value::as_i64) {
        if n < 0 {
            causes.push(Cause::invalid(
                "spec.replicas",
                &Value::from(n),
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// A workload's selector must exist and select its template's labels.
fn selector_matches_template(spec: &Value, causes: &mut Vec<Cause>) {
    let labels = spec
        .pointer("/template/metadata/labels")
        .and_then(Value::as_object);
    let mismatch = || {
        Cause::invalid(
            "spec.template.metadata.labels",
            &Value::Object(labels.cloned().unwrap_or_default()),
            "`selector` does not match template `labels`",
        )
    };
    let selector = spec
        .get("selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()));
    let Some(selector) = selector else {
        causes.push(Cause::required("spec.selector"));
        causes.push(mismatch());
        return;
    };
    match crate::selectors::from_label_selector(selector) {
        Some(s) if !s.is_empty() => {
            if !s.matches(labels) {
                causes.push(mismatch());
            }
        }
        _ => causes.push(Cause::invalid(
            "spec.selector",
            selector,
            "empty selector is invalid for deployment",
        )),
    }
}

/// Kind-specific checks of a new or updated object.
pub fn spec(resource: &Resource, object: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let template = spec
        .pointer("/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    match (resource.group, resource.kind) {
        ("", "Pod") => pod_spec(
            &spec,
            "spec",
            &["Always", "OnFailure", "Never"],
            &mut causes,
        ),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            replicas(&spec, &mut causes);
            selector_matches_template(&spec, &mut causes);
            pod_spec(&template, "spec.template.spec", &["Always"], &mut causes);
        }
        ("batch", "Job") => {
            pod_spec(
                &template,
                "spec.template.spec",
                &["OnFailure", "Never"],
                &mut causes,
            );
            if template.get("restartPolicy").is_none() {
                causes.push(Cause::required("spec.template.spec.restartPolicy"));
            }
        }
        ("batch", "CronJob") => {
            let job = spec
                .pointer("/jobTemplate/spec/template/spec")
                .cloned()
                .unwrap_or(Value::Null);
            pod_spec(
                &job,
                "spec.jobTemplate.spec.template.spec",
                &["OnFailure", "Never"],
                &mut causes,
            );
            match spec.get("schedule").and_then(Value::as_str) {
                None | Some("") => causes.push(Cause::required("spec.schedule")),
                Some(schedule) => {
                    if let Err(e) = shoal_core::cron::Schedule::parse(schedule) {
                        causes.push(Cause::invalid(
                            "spec.schedule",
                            &Value::String(schedule.to_string()),
                            e.to_string(),
                        ));
                    }
                }
            }
            if let Some(zone) = spec.get("timeZone").and_then(Value::as_str) {
                if jiff::tz::TimeZone::get(zone).is_err() {
                    causes.push(Cause::invalid(
                        "spec.timeZone",
                        &Value::String(zone.to_string()),
                        format!("unknown time zone {zone}"),
                    ));
                }
            }
        }
        ("", "Service") => service(&spec, &mut causes),
        _ => {}
    }
    causes
}

fn service(spec: &Value, causes: &mut Vec<Cause>) {
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP");
    let types = ["ClusterIP", "ExternalName", "NodePort", "LoadBalancer"];
    if !types.contains(&kind) {
        causes.push(Cause::unsupported("spec.type", kind, &types));
        return;
    }
    let ports = spec.get("ports").and_then(Value::as_array);
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    if kind != "ExternalName" && !headless && ports.is_none_or(|p| p.is_empty()) {
        causes.push(Cause::required("spec.ports"));
    }
    if kind == "ExternalName"
        && spec
            .get("externalName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .is_empty()
    {
        causes.push(Cause::required("spec.externalName"));
    }
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind == "ExternalName" && !cluster_ip.is_empty() {
        causes.push(Cause::forbidden(
            "spec.clusterIP",
            "must be empty for ExternalName services",
        ));
    }
    let many = ports.is_some_and(|p| p.len() > 1);
    for (i, port) in ports.into_iter().flatten().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &Value::from(number),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if many
            && port
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
        {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 && (kind == "ClusterIP" || kind == "ExternalName") {
            causes.push(Cause::forbidden(
                format!("spec.ports[{i}].nodePort"),
                format!("may not be used when `type` is '{kind}'"),
            ));
        }
        if let Some(protocol) = port.get("protocol").and_then(Value::as_str) {
            if !["TCP", "UDP", "SCTP"].contains(&protocol) {
                causes.push(Cause::unsupported(
                    format!("spec.ports[{i}].protocol"),
                    protocol,
                    &["SCTP", "TCP", "UDP"],
                ));
            }
        }
    }
}

/// Fields that may not change once set.
pub fn immutable(resource: &Resource, old: &Value, new: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let mut check = |pointer: &str, field: &str| {
        let before = old.pointer(pointer);
        let after = new.pointer(pointer);
        if before.is_some() && before != after {
            causes.push(Cause::invalid(
                field,
                after.unwrap_or(&Value::Null),
                "field is immutable",
            ));
        }
    };
    match (resource.group, resource.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            check("/spec/selector", "spec.selector");
        }
        ("batch", "Job") => {
            check("/spec/selector", "spec.selector");
            check("/spec/completions", "spec.completions");
        }
        ("", "Service") => check("/spec/clusterIP", "spec.clusterIP"),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            if old.get("roleRef") != new.get("roleRef") =>
        {
            causes.push(Cause::invalid(
                "roleRef",
                new.get("roleRef").unwrap_or(&Value::Null),
                "cannot change roleRef",
            ));
        }
        ("", "Pod") => {
            // Of a pod only the images, activeDeadlineSeconds, tolerations
            // additions and the scheduling gates may change.
            let strip = |v: &Value| {
                let mut spec = v.get("spec").cloned().unwrap_or(Value::Null);
                for list in ["containers", "initContainers"] {
                    if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                        for item in items {
                            if let Some(obj) = item.as_object_mut() {
                                obj.remove("image");
                            }
                        }
                    }
                }
                if let Some(obj) = spec.as_object_mut() {
                    for field in [
                        "activeDeadlineSeconds",
                        "tolerations",
                        "schedulingGates",
                        "nodeName",
                    ] {
                        obj.remove(field);
                    }
                }
                spec
            };
            if strip(old) != strip(new) {
                causes.push(Cause::forbidden(
                    "spec",
                    "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
            let before = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let after = new
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if !before.is_empty() && before != after {
                causes.push(Cause::invalid(
                    "spec.nodeName",
                    &Value::from(after),
                    "field is immutable",
                ));
            }
        }
        _ => {}
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_subdomain("web-1.example"));
        assert!(!is_dns1123_subdomain("Web"));
        assert!(!is_dns1123_subdomain("-web"));
        assert!(!is_dns1123_subdomain("web_1"));
        assert!(is_dns1123_label("123-abc"));
        assert!(!is_dns1035_label("123-abc"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
    }

    #[test]
    fn label_keys_and_values() {
        assert!(label_key_errors("app.kubernetes.io/name").is_empty());
        assert!(!label_key_errors("bad key").is_empty());
        assert!(!label_key_errors("Bad_Prefix/x").is_empty());
        assert!(label_value_ok(""));
        assert!(!label_value_ok("-x"));
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let deployments = crate::resources::find("apps", "v1", "deployments").unwrap();
        let d = json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "other"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
            }
        });
        let causes = spec(deployments, &d);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn cronjob_schedules_and_time_zones_are_checked() {
        let cronjobs = crate::resources::find("batch", "v1", "cronjobs").unwrap();
        let cj = |schedule: &str, zone: Option<&str>| {
            json!({"spec": {"schedule": schedule, "timeZone": zone, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}})
        };
        assert_eq!(
            spec(cronjobs, &cj("*/5 * * * *", Some("Europe/Paris"))),
            vec![]
        );
        let causes = spec(cronjobs, &cj("61 * * * *", None));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.schedule");
        let causes = spec(cronjobs, &cj("TZ=UTC 0 2 * * *", None));
        assert_eq!(causes[0].field, "spec.schedule");
        let causes = spec(cronjobs, &cj("@daily", Some("Mars/Olympus")));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.timeZone");
    }

    #[test]
    fn pod_without_image_or_containers() {
        let pods = crate::resources::find("", "v1", "pods").unwrap();
        let causes = spec(pods, &json!({"spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(causes, vec![Cause::required("spec.containers[0].image")]);
        let causes = spec(pods, &json!({"spec": {}}));
        assert_eq!(causes, vec![Cause::required("spec.containers")]);
    }
}
