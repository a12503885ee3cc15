//! What Kubernetes' `pkg/api/v1/pod` and `qos` helpers decide about a pod:
//! whether it is ready, whether it still counts (active), its QoS class,
//! and which of its containers has a name.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::quantity;

/// The pod's phase (`Pending` when it has none yet).
pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Whether the pod's `Ready` condition is `True`.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the pod has ended (`Succeeded` or `Failed`).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

/// Whether the pod still counts for its controller: not ended and not
/// being deleted (Kubernetes' `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !is_finished(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Whether the pod is being deleted but has not ended.
pub fn is_terminating(pod: &Pod) -> bool {
    !is_finished(pod) && pod.metadata.deletion_timestamp.is_some()
}

/// The pod's container or init container of that name.
pub fn find_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .find(|c| c.name == name)
    })
}

/// The QoS class as Kubernetes computes it (`pkg/apis/core/helper/qos`):
/// BestEffort when no container requests or limits cpu or memory;
/// Guaranteed when every container limits both and each request equals
/// its limit (a missing request defaults to the limit, as the API's
/// defaulting does); Burstable otherwise. Quantities compare by value, so
/// `1` and `1000m` are equal.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    const RESOURCES: [&str; 2] = ["cpu", "memory"];
    let mut any = false;
    let mut guaranteed = true;
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
    {
        let resources = c.resources.as_ref();
        let positive = |map: Option<&std::collections::BTreeMap<String, _>>, name: &str| {
            map.and_then(|m| m.get(name))
                .and_then(
                    |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
                        quantity::parse(&q.0)
                    },
                )
                .filter(|a| !a.is_zero() && !a.is_negative())
        };
        for name in RESOURCES {
            let limit = positive(resources.and_then(|r| r.limits.as_ref()), name);
            let request = positive(resources.and_then(|r| r.requests.as_ref()), name);
            if limit.is_some() || request.is_some() {
                any = true;
            }
            match (limit, request) {
                (None, _) => guaranteed = false,
                (Some(l), Some(r)) if l.milli_value() != r.milli_value() => guaranteed = false,
                (Some(_), _) => {}
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn qos_classes() {
        let c = |resources: serde_json::Value| {
            spec(json!({"containers": [{"name": "a", "resources": resources}]}))
        };
        assert_eq!(
            qos_class(&spec(json!({"containers": [{"name": "a"}]}))),
            "BestEffort"
        );
        assert_eq!(
            qos_class(&c(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&c(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "1000m"}})
            )),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&c(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&c(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})
            )),
            "Burstable"
        );
        // Only cpu and memory count.
        assert_eq!(
            qos_class(&c(json!({"limits": {"ephemeral-storage": "1Gi"}}))),
            "BestEffort"
        );
        // An init container without limits makes the pod Burstable.
        assert_eq!(
            qos_class(&spec(json!({
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
                "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1"}}}]
            }))),
            "Burstable"
        );
    }

    #[test]
    fn readiness_and_activity() {
        let pod = |status: serde_json::Value, deleting: bool| -> Pod {
            let mut p = json!({"metadata": {"name": "p"}, "status": status});
            if deleting {
                p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            serde_json::from_value(p).unwrap()
        };
        let ready = pod(
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
            false,
        );
        assert!(is_ready(&ready) && is_active(&ready));
        let done = pod(json!({"phase": "Succeeded"}), false);
        assert!(!is_ready(&done) && !is_active(&done) && is_finished(&done));
        let going = pod(json!({"phase": "Running"}), true);
        assert!(!is_active(&going) && is_terminating(&going));
        assert_eq!(phase(&pod(json!({}), false)), "Pending");
    }
}
