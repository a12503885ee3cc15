//! Events that controllers and the scheduler record about objects
//! (`kubectl describe` lists them), written as core/v1 Events.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, PostParams};
use kube::Resource;
use serde_json::json;

/// Records an event about `object`; failures are logged, not returned (an
/// event lost is not worth failing the action it describes).
pub async fn record<K>(
    client: &kube::Client,
    object: &K,
    kind: &str,
    reason: &str,
    message: &str,
    component: &str,
) where
    K: Resource<DynamicType = ()>,
{
    let meta = object.meta();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let now = crate::object::now();
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:016x}", rand::random::<u64>()),
            "namespace": namespace,
        },
        "involvedObject": {
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "name": name,
            "namespace": meta.namespace,
            "uid": meta.uid,
            "resourceVersion": meta.resource_version,
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let Ok(event) = serde_json::from_value::<Event>(event) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason, "cannot record an event");
    }
}
