//! The agent's events about pods (Pulled, Created, Started, Killing,
//! BackOff, Unhealthy, Failed ...), written as core/v1 Events from
//! component `kubelet` so that `kubectl describe pod` reads as it does in
//! Kubernetes. A repeat of the same event on the same object updates the
//! first one's `count` and `lastTimestamp` (`x5 over 2m`), as client-go's
//! correlator does. Writing happens in the background: an event never
//! slows a pod down, and one that cannot be written is only logged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// Events remembered for aggregation before the map is cleared.
const MAX_REMEMBERED: usize = 8192;

#[derive(Debug, Clone)]
struct Seen {
    name: String,
    namespace: String,
    count: i32,
}

#[derive(Clone)]
pub struct Recorder {
    client: kube::Client,
    node: String,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

impl Recorder {
    pub fn new(client: kube::Client, node: &str) -> Recorder {
        Recorder {
            client,
            node: node.to_string(),
            seen: Arc::default(),
        }
    }

    /// Records an event about `pod`, about one of its containers when
    /// `container` is given (`spec.containers{name}` as kubelet's
    /// fieldPath; init containers are `spec.initContainers{name}`).
    pub fn record(
        &self,
        pod: &Pod,
        field_path: Option<String>,
        kind: Kind,
        reason: &str,
        message: impl Into<String>,
    ) {
        let message = message.into();
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = format!(
            "{uid}\u{0}{}\u{0}{reason}\u{0}{message}",
            field_path.as_deref().unwrap_or_default()
        );
        let previous = {
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > MAX_REMEMBERED {
                seen.clear();
            }
            match seen.get_mut(&key) {
                Some(s) => {
                    s.count += 1;
                    Some(s.clone())
                }
                None => {
                    seen.insert(
                        key.clone(),
                        Seen {
                            name: format!("{name}.{:016x}", rand_suffix()),
                            namespace: namespace.clone(),
                            count: 1,
                        },
                    );
                    None
                }
            }
        };
        let now = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let client = self.client.clone();
        if let Some(seen) = previous {
            let api: Api<Event> = Api::namespaced(client, &seen.namespace);
            tokio::spawn(async move {
                let patch = json!({"count": seen.count, "lastTimestamp": now});
                if let Err(e) = api
                    .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                {
                    tracing::debug!(error = %e, "cannot update an event");
                }
            });
            return;
        }
        let event_name = {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            seen.get(&key).map(|s| s.name.clone()).unwrap_or_default()
        };
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": event_name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "namespace": namespace,
                "uid": uid,
                "resourceVersion": pod.metadata.resource_version,
                "fieldPath": field_path,
            },
            "reason": reason,
            "message": message,
            "type": match kind { Kind::Normal => "Normal", Kind::Warning => "Warning" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let Ok(event) = serde_json::from_value::<Event>(event) else {
            return;
        };
        let api: Api<Event> = Api::namespaced(client, &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "cannot record an event");
            }
        });
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}
