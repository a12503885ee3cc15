//! Conversion between served and stored versions. Only autoscaling has two
//! versions of one kind: HPAs are stored as autoscaling/v2 and served as v1
//! by mapping the CPU utilization target, as Kubernetes' conversion does.

use serde_json::{json, Value};

use crate::resources::{self, Resource, HPA_V1};

fn is_hpa_v1(resource: &Resource) -> bool {
    std::ptr::eq(resource, &HPA_V1)
}

pub fn storage_resource(resource: &'static Resource) -> &'static Resource {
    if is_hpa_v1(resource) {
        resources::served("autoscaling", "v2", "horizontalpodautoscalers")
    } else {
        resource
    }
}

/// Whether objects of `resource` are served as they are stored (then
/// [`to_served`] leaves them unchanged).
pub fn served_as_stored(resource: &Resource) -> bool {
    !is_hpa_v1(resource)
}

/// A stored object (or list of them) as the client's version shows it.
pub fn to_served(resource: &Resource, mut object: Value) -> Value {
    if !is_hpa_v1(resource) {
        return object;
    }
    if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
        for item in items.iter_mut() {
            *item = hpa_v2_to_v1(std::mem::take(item));
        }
        return object;
    }
    match object.get("kind").and_then(Value::as_str) {
        Some("HorizontalPodAutoscaler") => hpa_v2_to_v1(object),
        _ => object,
    }
}

/// A written object in the storage version.
pub fn to_storage(resource: &Resource, object: Value) -> Value {
    if is_hpa_v1(resource) {
        hpa_v1_to_v2(object)
    } else {
        object
    }
}

fn hpa_v2_to_v1(mut object: Value) -> Value {
    object["apiVersion"] = json!("autoscaling/v1");
    let cpu = |metrics: Option<&Value>, field: &str| {
        metrics
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|m| m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
            .and_then(|m| {
                m.pointer(&format!("/resource/{field}/averageUtilization"))
                    .cloned()
            })
    };
    let target = cpu(object.pointer("/spec/metrics"), "target");
    let current = cpu(object.pointer("/status/currentMetrics"), "current");
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("metrics");
        spec.remove("behavior");
        if let Some(t) = target {
            spec.insert("targetCPUUtilizationPercentage".into(), t);
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("currentMetrics");
        status.remove("conditions");
        if let Some(c) = current {
            status.insert("currentCPUUtilizationPercentage".into(), c);
        }
    }
    object
}

fn hpa_v1_to_v2(mut object: Value) -> Value {
    object["apiVersion"] = json!("autoscaling/v2");
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}]),
            );
        }
    }
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(current) = status.remove("currentCPUUtilizationPercentage") {
            status.insert(
                "currentMetrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": current}}}]),
            );
        }
    }
    object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_through_v1() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "spec": {"maxReplicas": 5, "targetCPUUtilizationPercentage": 50}});
        let v2 = hpa_v1_to_v2(v1.clone());
        assert_eq!(
            v2.pointer("/spec/metrics/0/resource/target/averageUtilization"),
            Some(&json!(50))
        );
        assert_eq!(hpa_v2_to_v1(v2), v1);
    }
}
