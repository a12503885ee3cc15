//! The HorizontalPodAutoscaler controller: every sync period (15 s, as
//! `--horizontal-pod-autoscaler-sync-period`) and on every change of an
//! HPA, reads the target's `scale` subresource, the pods its selector
//! matches and their usage from `metrics.k8s.io`, decides the size
//! (`sync`, with Kubernetes' arithmetic in `replicas`), writes the new size
//! through `scale`, then the HPA's status and events.
//!
//! ```text
//!  HPA (watch) / sync period
//!        │
//!        ▼
//!  GET <target>/scale ─> LIST pods (status.selector) ─> LIST metrics.k8s.io pods
//!        ─> sync::decide (pure) ─> PUT <target>/scale ─> HPA status ─> events
//! ```
//!
//! Targets: any kind whose resource has a `scale` subresource, found
//! through API discovery as Kubernetes' RESTMapper finds it (Deployment,
//! ReplicaSet, StatefulSet, ReplicationController); what discovery says is
//! kept for a minute.

pub mod replicas;
pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::events;

const COMPONENT: &str = "horizontal-pod-autoscaler";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading hpa {hpa}: {source}")]
    ReadHpa {
        hpa: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of hpa {hpa}: {source}")]
    WriteStatus {
        hpa: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the controller remembers of one HPA (by uid).
#[derive(Default)]
struct Memory {
    history: sync::History,
    /// The warnings of the last sync, so that a persisting failure is
    /// recorded once rather than once per sync.
    last_warnings: Vec<String>,
    /// When it was last synced, at which generation.
    synced: Option<(Instant, Option<i64>)>,
}

/// Memories of HPAs not synced for this long are dropped (deleted HPAs).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// How long what discovery said of a target kind is believed.
const DISCOVERY_TTL: Duration = Duration::from_secs(60);

/// A target kind's scalable resource, as discovery found it: (group,
/// version, plural), or none when it has no `scale` subresource.
type ScaleResource = Option<(String, String, String)>;

struct Ctx {
    client: kube::Client,
    sync_period: Duration,
    memory: Mutex<HashMap<String, Memory>>,
    /// (apiVersion, kind) → what discovery said, and when.
    scales: Mutex<HashMap<(String, String), (Instant, ScaleResource)>>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let hpas = settings.informers.get::<HorizontalPodAutoscaler>(&client);
    let ctx = Arc::new(Ctx {
        client,
        sync_period: settings.horizontal_pod_autoscaler_sync_period,
        memory: Mutex::new(HashMap::new()),
        scales: Mutex::new(HashMap::new()),
    });
    let controller = crate::run::over("horizontalpodautoscaler", &hpas);
    crate::run::run_controller("horizontalpodautoscaler", controller, reconcile, ctx).await;
}

/// The resource of a target kind with a `scale` subresource, found
/// through discovery (`GET /apis/<group>/<version>`); none when the group
/// version does not serve the kind or the kind cannot be scaled.
async fn scale_resource(
    ctx: &Ctx,
    api_version: &str,
    kind: &str,
) -> Result<ScaleResource, kube::Error> {
    let key = (api_version.to_string(), kind.to_string());
    let cached = ctx.scales.lock().ok().and_then(|m| m.get(&key).cloned());
    if let Some((at, found)) = cached {
        if at.elapsed() < DISCOVERY_TTL {
            return Ok(found);
        }
    }
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    let found = match kube::discovery::pinned_kind(&ctx.client, &gvk).await {
        Ok((resource, caps)) => caps
            .subresources
            .iter()
            .any(|(sub, _)| sub.plural == "scale")
            .then_some((resource.group, resource.version, resource.plural)),
        // The group version or the kind is not served.
        Err(kube::Error::Discovery(_)) => None,
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    if let Ok(mut scales) = ctx.scales.lock() {
        scales.insert(key, (Instant::now(), found.clone()));
    }
    Ok(found)
}

/// The path of a `scale` subresource.
fn scale_path(resource: &(String, String, String), namespace: &str, name: &str) -> String {
    let (group, version, plural) = resource;
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    format!("{prefix}/namespaces/{namespace}/{plural}/{name}/scale")
}

fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(e) => e.message.clone(),
        other => other.to_string(),
    }
}

async fn get_json(client: &kube::Client, path: &str) -> Result<Value, kube::Error> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request::<Value>(request).await
}

async fn reconcile(cached: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action> {
    let client = ctx.client.clone();
    let namespace = cached.namespace().unwrap_or_else(|| "default".into());
    let name = cached.name_any();
    let key = cached
        .uid()
        .unwrap_or_else(|| format!("{namespace}/{name}"));
    // Syncs happen once per period: the watch event of our own status
    // write (or any other change but the spec's) waits for the next one,
    // as Kubernetes' queue delays every HPA event by the period.
    let since_last = ctx.memory.lock().ok().and_then(|m| {
        let (at, generation) = m.get(&key)?.synced?;
        (generation == cached.metadata.generation).then(|| at.elapsed())
    });
    if let Some(elapsed) = since_last.filter(|e| *e < ctx.sync_period) {
        return Ok(Action::requeue(ctx.sync_period - elapsed));
    }
    let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &namespace);
    let hpa = match hpas.get_opt(&name).await {
        Ok(Some(hpa)) => hpa,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => return Err(Error::ReadHpa { hpa: name, source }),
    };
    let now = jiff::Timestamp::now();
    let target = hpa
        .spec
        .as_ref()
        .map(|s| s.scale_target_ref.clone())
        .unwrap_or_default();
    let api_version = target.api_version.as_deref().unwrap_or("v1");
    let scale = if !shoal_core::names::is_dns1123_subdomain(&target.name) {
        Err(format!("invalid scale target name {:?}", target.name))
    } else {
        match scale_resource(&ctx, api_version, &target.kind).await {
            Err(e) => Err(api_message(&e)),
            Ok(None) => Err(format!(
                "unable to determine resource for scale target reference: no matches for kind {:?} in group {:?}",
                target.kind,
                api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
            )),
            Ok(Some(resource)) => {
                let path = scale_path(&resource, &namespace, &target.name);
                get_json(&client, &path)
                    .await
                    .map(|scale| (path, scale))
                    .map_err(|e| api_message(&e))
            }
        }
    };
    let mut memory = ctx
        .memory
        .lock()
        .ok()
        .and_then(|mut m| {
            m.retain(|_, v| v.synced.is_none_or(|(at, _)| at.elapsed() < FORGET_AFTER));
            m.remove(&key)
        })
        .unwrap_or_default();
    memory.synced = Some((Instant::now(), hpa.metadata.generation));
    let mut decision = match &scale {
        Err(error) => sync::scale_unavailable(&hpa, error, now),
        Ok((_, scale)) => {
            let view = sync::Scale {
                replicas: scale
                    .pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(0),
                selector: scale
                    .pointer("/status/selector")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            };
            let (pods, samples) = if view.selector.is_empty() {
                (Vec::new(), Ok(Vec::new()))
            } else {
                observe(&client, &namespace, &view.selector).await
            };
            sync::decide(&hpa, &view, &pods, &samples, &mut memory.history, now)
        }
    };
    if let (Some(rescale), Ok((path, scale))) = (decision.rescale.clone(), &scale) {
        let mut body = scale.clone();
        body["spec"]["replicas"] = json!(rescale.to);
        let written = match serde_json::to_vec(&body) {
            Ok(bytes) => match http::Request::put(path.as_str())
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(bytes)
            {
                Ok(request) => client.request::<Value>(request).await.map(|_| ()),
                Err(e) => Err(kube::Error::HttpError(e)),
            },
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        match written {
            Ok(()) => sync::rescaled(&mut decision, &hpa, &mut memory.history, now),
            Err(e) => sync::rescale_failed(&mut decision, &hpa, &api_message(&e), now),
        }
    }
    if let Some(error) = &decision.error {
        tracing::debug!(hpa = %key, %error, "hpa could not scale");
    }
    let result = if hpa.status.as_ref() != Some(&decision.status) {
        let mut status = serde_json::to_value(&decision.status).unwrap_or_default();
        if decision.status.current_metrics.is_none() {
            // A merge patch keeps what it does not mention.
            status["currentMetrics"] = Value::Null;
        }
        hpas.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map(|_| ())
        .map_err(|source| Error::WriteStatus {
            hpa: name.clone(),
            source,
        })
    } else {
        Ok(())
    };
    let mut warnings = Vec::new();
    for note in &decision.events {
        // A warning the last sync already gave is not recorded again.
        if note.kind == "Warning" {
            let text = format!("{}: {}", note.reason, note.message);
            let repeated = memory.last_warnings.contains(&text);
            warnings.push(text);
            if repeated {
                continue;
            }
        }
        events::record(
            &client,
            &hpa,
            note.kind,
            note.reason,
            &note.message,
            COMPONENT,
        )
        .await;
    }
    memory.last_warnings = warnings;
    if let Ok(mut all) = ctx.memory.lock() {
        all.insert(key, memory);
    }
    result?;
    Ok(Action::requeue(ctx.sync_period))
}

/// The pods a selector matches and their samples from the resource
/// metrics API (or why those could not be read).
async fn observe(
    client: &kube::Client,
    namespace: &str,
    selector: &str,
) -> (Vec<Pod>, Result<Vec<Value>, String>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let request = kube::core::Request::new(format!(
        "/apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods"
    ))
    .list(&ListParams::default().labels(selector));
    let samples = match request {
        Ok(request) => client
            .request::<Value>(request)
            .await
            .map(|list| {
                list.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .map_err(|e| api_message(&e)),
        Err(e) => Err(e.to_string()),
    };
    (listed, samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_paths() {
        let r = |g: &str, v: &str, p: &str| (g.to_string(), v.to_string(), p.to_string());
        assert_eq!(
            scale_path(&r("apps", "v1", "deployments"), "default", "web"),
            "/apis/apps/v1/namespaces/default/deployments/web/scale"
        );
        assert_eq!(
            scale_path(&r("", "v1", "replicationcontrollers"), "a", "rc"),
            "/api/v1/namespaces/a/replicationcontrollers/rc/scale"
        );
    }
}
