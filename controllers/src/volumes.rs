//! Local volumes: the default StorageClass `standard` (provisioner
//! `shoal.dev/local`, WaitForFirstConsumer) and the loop that binds claims,
//! as Kubernetes' PV controller and a local-path provisioner together.
//!
//! ```text
//!   claim Pending ──(a pod using it is bound to node N)──▶ PV pvc-<uid>
//!      (local path on N, node affinity hostname In [N], claimRef)
//!   ──▶ claim.spec.volumeName, both Bound
//!   claim deleted ──▶ PV deleted (reclaim Delete) or Released (Retain)
//! ```
//!
//! A claim that a PersistentVolume already offers (same class, enough
//! capacity, the access modes, a node affinity the consumer's node meets)
//! is bound to the smallest such volume instead of provisioning one. A
//! claim created without a class gets the default one, as Kubernetes'
//! retroactive default StorageClass assignment does. The node agent makes
//! the directory. The decisions are `plan`, a pure function of the objects.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};

use super::informers::Seen;
use crate::events;
use crate::scheduler::fit;
use shoal_core::quantity;

pub const PROVISIONER: &str = "shoal.dev/local";
pub const DEFAULT_CLASS: &str = "standard";
pub const VOLUME_ROOT: &str = "/var/lib/shoal/volumes";
const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const COMPONENT: &str = "persistentvolume-controller";

/// What to do about the claims and volumes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Give a claim without a class the default one.
    SetClass { claim: usize, class: String },
    /// Create this volume (its JSON) for a claim, then bind them.
    Provision { claim: usize, volume: Value },
    /// Bind a claim to a volume (both sides, idempotent).
    Bind { claim: usize, volume: String },
    /// Tell a claim why it waits (an event, once per claim and reason).
    Wait {
        claim: usize,
        reason: &'static str,
        message: String,
    },
    /// A new volume offered to claims.
    Available(String),
    /// A volume whose claim is gone: delete it (reclaim policy Delete).
    Delete(String),
    /// ... or keep it, Released (Retain).
    Release(String),
}

fn phase_of_claim(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn phase_of_volume(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

fn storage_of(
    map: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
) -> Option<String> {
    map.and_then(|m| m.get("storage")).map(|q| q.0.clone())
}

fn requested(claim: &PersistentVolumeClaim) -> Option<String> {
    storage_of(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
}

fn class_of_claim(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
}

fn is_default(class: &StorageClass) -> bool {
    class
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_ANNOTATION))
        .is_some_and(|v| v == "true")
}

/// The node the claim's first consumer runs on: the node chosen for it
/// (annotation), or that of a bound pod using it.
pub fn consumer_node<'a>(claim: &'a PersistentVolumeClaim, pods: &'a [Pod]) -> Option<&'a str> {
    if let Some(node) = claim
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SELECTED_NODE))
    {
        return Some(node.as_str());
    }
    let name = claim.metadata.name.as_deref()?;
    let namespace = claim.metadata.namespace.as_deref();
    pods.iter()
        .filter(|p| p.metadata.namespace.as_deref() == namespace)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .filter(|p| {
            p.spec.as_ref().is_some_and(|s| {
                s.volumes.iter().flatten().any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                })
            })
        })
        .find_map(|p| {
            p.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .filter(|n| !n.is_empty())
        })
}

/// The volume to bind `claim` to among those on offer: same class, the
/// access modes, enough capacity, usable from `node` (when known); the
/// smallest that fits.
pub fn choose_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let class = class_of_claim(claim).unwrap_or_default();
    let modes: Vec<String> = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let want = requested(claim)
        .and_then(|q| quantity::parse_f64(&q))
        .unwrap_or(0.0);
    let uid = claim.metadata.uid.as_deref();
    volumes
        .iter()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .filter(|v| matches!(phase_of_volume(v), "" | "Pending" | "Available"))
        .filter(|v| {
            // Free, or set aside for this very claim.
            v.spec
                .as_ref()
                .and_then(|s| s.claim_ref.as_ref())
                .is_none_or(|r| {
                    r.name.as_deref() == claim.metadata.name.as_deref()
                        && r.namespace.as_deref() == claim.metadata.namespace.as_deref()
                        && r.uid.as_deref().is_none_or(|u| Some(u) == uid)
                })
        })
        .filter(|v| {
            v.spec
                .as_ref()
                .and_then(|s| s.storage_class_name.as_deref())
                .unwrap_or_default()
                == class
        })
        .filter(|v| {
            let offered = v
                .spec
                .as_ref()
                .and_then(|s| s.access_modes.clone())
                .unwrap_or_default();
            modes.iter().all(|m| offered.contains(m))
        })
        .filter(|v| node.is_none_or(|n| fit::volume_fits_node(v, n)))
        .filter_map(|v| {
            let capacity = storage_of(v.spec.as_ref().and_then(|s| s.capacity.as_ref()))
                .and_then(|q| quantity::parse_f64(&q))
                .unwrap_or(0.0);
            (capacity >= want).then_some((capacity, v))
        })
        .min_by(|(a, va), (b, vb)| {
            a.total_cmp(b)
                .then_with(|| va.metadata.name.cmp(&vb.metadata.name))
        })
        .map(|(_, v)| v)
}

/// The volume provisioned for `claim` on `node`.
pub fn new_volume(claim: &PersistentVolumeClaim, class: &StorageClass, node: &Node) -> Value {
    let name = format!("pvc-{}", claim.metadata.uid.clone().unwrap_or_default());
    let hostname = node
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/hostname"))
        .cloned()
        .or_else(|| node.metadata.name.clone())
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": name,
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": requested(claim).unwrap_or_else(|| "1Gi".into())},
            "accessModes": claim.spec.as_ref().and_then(|s| s.access_modes.clone()).unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.metadata.name,
            "volumeMode": claim.spec.as_ref().and_then(|s| s.volume_mode.clone()).unwrap_or_else(|| "Filesystem".into()),
            "local": {"path": format!("{VOLUME_ROOT}/{name}")},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [hostname]},
            ]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
            },
        },
    })
}

/// The steps to take now.
pub fn plan(
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    pods: &[Pod],
    classes: &[StorageClass],
    nodes: &[Node],
) -> Vec<Step> {
    let mut steps = Vec::new();
    let default = classes.iter().find(|c| is_default(c));
    let mut taken: HashSet<String> = HashSet::new();
    for (i, claim) in claims.iter().enumerate() {
        if claim.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(class_name) = class_of_claim(claim) else {
            if let Some(default) = default {
                steps.push(Step::SetClass {
                    claim: i,
                    class: default.name_any(),
                });
            }
            continue;
        };
        let bound_to = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        if let Some(volume) = bound_to {
            if phase_of_claim(claim) != "Bound" && volumes.iter().any(|v| v.name_any() == volume) {
                steps.push(Step::Bind { claim: i, volume });
            }
            continue;
        }
        let class = classes.iter().find(|c| c.name_any() == class_name);
        let wait_for_consumer = class
            .and_then(|c| c.volume_binding_mode.as_deref())
            .is_some_and(|m| m == "WaitForFirstConsumer");
        let node_name = consumer_node(claim, pods);
        let node = node_name.and_then(|n| nodes.iter().find(|node| node.name_any() == n));
        if wait_for_consumer && node.is_none() {
            steps.push(Step::Wait {
                claim: i,
                reason: "WaitForFirstConsumer",
                message: "waiting for first consumer to be created before binding".into(),
            });
            continue;
        }
        let offered: Vec<PersistentVolume> = volumes
            .iter()
            .filter(|v| !taken.contains(&v.name_any()))
            .cloned()
            .collect();
        if let Some(volume) = choose_volume(claim, &offered, node.filter(|_| wait_for_consumer)) {
            taken.insert(volume.name_any());
            steps.push(Step::Bind {
                claim: i,
                volume: volume.name_any(),
            });
            continue;
        }
        match (class, node) {
            (Some(class), Some(node)) if class.provisioner == PROVISIONER => {
                let volume = new_volume(claim, class, node);
                taken.insert(volume["metadata"]["name"].as_str().unwrap_or_default().into());
                steps.push(Step::Provision { claim: i, volume });
            }
            // A local volume needs the node it lives on.
            (Some(class), None) if class.provisioner == PROVISIONER => {}
            (Some(class), _) => steps.push(Step::Wait {
                claim: i,
                reason: "ExternalProvisioning",
                message: format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                ),
            }),
            (None, _) if class_name.is_empty() => steps.push(Step::Wait {
                claim: i,
                reason: "FailedBinding",
                message: "no persistent volumes available for this claim and no storage class is set".into(),
            }),
            (None, _) => steps.push(Step::Wait {
                claim: i,
                reason: "ProvisioningFailed",
                message: format!("storageclass.storage.k8s.io \"{class_name}\" not found"),
            }),
        }
    }
    for volume in volumes {
        if volume.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let phase = phase_of_volume(volume);
        match claim_ref {
            None => {
                if matches!(phase, "" | "Pending") && !taken.contains(&volume.name_any()) {
                    steps.push(Step::Available(volume.name_any()));
                }
            }
            Some(r) => {
                // A claim reference without uid is a reservation made by
                // hand: wait for that claim.
                let Some(uid) = r.uid.as_deref().filter(|u| !u.is_empty()) else {
                    continue;
                };
                let alive = claims.iter().any(|c| {
                    c.metadata.uid.as_deref() == Some(uid)
                        && c.metadata.deletion_timestamp.is_none()
                });
                if alive || phase == "Released" || phase == "Failed" {
                    continue;
                }
                let policy = volume
                    .spec
                    .as_ref()
                    .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                    .unwrap_or("Retain");
                if policy == "Delete" {
                    steps.push(Step::Delete(volume.name_any()));
                } else if phase == "Bound" {
                    steps.push(Step::Release(volume.name_any()));
                }
            }
        }
    }
    steps
}

/// The default StorageClass, made if missing.
async fn ensure_default_class(client: &kube::Client) -> Result<(), kube::Error> {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .map_err(kube::Error::SerdeError)?;
    match api.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

fn uses_claims(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.persistent_volume_claim.is_some()))
}

/// Wakes the loop on the changes of a shared informer `wanted` keeps.
fn follow<K>(
    changes: impl futures::Stream<Item = Seen<K>> + Send + 'static,
    wanted: fn(&K) -> bool,
    wake: Arc<tokio::sync::Notify>,
) -> tokio::task::JoinHandle<()>
where
    K: Send + Sync + 'static,
{
    tokio::spawn(changes.for_each(move |seen| {
        let matters = match &seen {
            Seen::Applied(k) | Seen::Deleted(k) => wanted(k),
            Seen::Relisted => true,
        };
        if matters {
            wake.notify_one();
        }
        futures::future::ready(())
    }))
}

/// Runs until the task is dropped.
pub async fn run(client: kube::Client, settings: super::Settings) {
    while let Err(e) = ensure_default_class(&client).await {
        tracing::warn!(error = %e, "cannot create the default StorageClass; retrying");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    // Claims, volumes, pods and nodes from the shared informers (the
    // scheduler follows the same ones); only pods with claims matter here.
    let claim_informer = settings.informers.get::<PersistentVolumeClaim>(&client);
    let volume_informer = settings.informers.get::<PersistentVolume>(&client);
    let pod_informer = settings.informers.get::<Pod>(&client);
    let node_informer = settings.informers.get::<Node>(&client);
    let class_informer = settings.informers.get::<StorageClass>(&client);
    let classes = class_informer.store();
    let (claims, volumes) = (claim_informer.store(), volume_informer.store());
    let (pods, nodes) = (pod_informer.store(), node_informer.store());
    let _tasks = [
        follow(claim_informer.subscribe(), |_| true, wake.clone()),
        follow(volume_informer.subscribe(), |_| true, wake.clone()),
        follow(class_informer.subscribe(), |_| true, wake.clone()),
        follow(pod_informer.subscribe(), uses_claims, wake.clone()),
        follow(node_informer.subscribe(), |_| true, wake.clone()),
    ];
    claim_informer.ready().await;
    volume_informer.ready().await;
    class_informer.ready().await;
    pod_informer.ready().await;
    node_informer.ready().await;
    // (claim uid, reason) already told, so that events are not repeated.
    let mut told: HashSet<(String, &'static str)> = HashSet::new();
    loop {
        let claim_list: Vec<PersistentVolumeClaim> =
            claims.state().iter().map(|c| (**c).clone()).collect();
        let volume_list: Vec<PersistentVolume> =
            volumes.state().iter().map(|v| (**v).clone()).collect();
        // Without claims or volumes there is nothing to do; otherwise only
        // the pods that use claims are looked at.
        let idle = claim_list.is_empty() && volume_list.is_empty();
        let pod_list: Vec<Pod> = if idle {
            Vec::new()
        } else {
            pods.state()
                .iter()
                .filter(|p| uses_claims(p))
                .map(|p| (**p).clone())
                .collect()
        };
        let class_list: Vec<StorageClass> = classes.state().iter().map(|c| (**c).clone()).collect();
        let node_list: Vec<Node> = if idle {
            Vec::new()
        } else {
            nodes.state().iter().map(|n| (**n).clone()).collect()
        };
        let steps = plan(
            &claim_list,
            &volume_list,
            &pod_list,
            &class_list,
            &node_list,
        );
        for step in steps {
            if let Err(e) = execute(&client, &step, &claim_list, &volume_list, &mut told).await {
                tracing::debug!(error = %e, ?step, "volume step failed; will retry");
            }
        }
        told.retain(|(uid, _)| {
            claim_list
                .iter()
                .any(|c| c.metadata.uid.as_deref() == Some(uid.as_str()))
        });
        let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
    }
}

async fn execute(
    client: &kube::Client,
    step: &Step,
    claims: &[PersistentVolumeClaim],
    volumes: &[PersistentVolume],
    told: &mut HashSet<(String, &'static str)>,
) -> Result<(), kube::Error> {
    let claim_api = |claim: &PersistentVolumeClaim| -> Api<PersistentVolumeClaim> {
        Api::namespaced(
            client.clone(),
            claim.metadata.namespace.as_deref().unwrap_or("default"),
        )
    };
    let volume_api: Api<PersistentVolume> = Api::all(client.clone());
    match step {
        Step::SetClass { claim, class } => {
            let Some(claim) = claims.get(*claim) else {
                return Ok(());
            };
            let patch = json!({"spec": {"storageClassName": class}});
            claim_api(claim)
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await?;
        }
        Step::Wait {
            claim,
            reason,
            message,
        } => {
            let Some(claim) = claims.get(*claim) else {
                return Ok(());
            };
            let key = (claim.uid().unwrap_or_default(), *reason);
            if told.insert(key) {
                let kind = if *reason == "ProvisioningFailed" {
                    "Warning"
                } else {
                    "Normal"
                };
                events::record(client, claim, kind, reason, message, COMPONENT).await;
            }
        }
        Step::Provision { claim: i, volume } => {
            let Some(claim) = claims.get(*i) else {
                return Ok(());
            };
            let name = volume["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let object: PersistentVolume =
                serde_json::from_value(volume.clone()).map_err(kube::Error::SerdeError)?;
            let key = format!(
                "{}/{}",
                claim.metadata.namespace.as_deref().unwrap_or_default(),
                claim.name_any()
            );
            match volume_api.create(&PostParams::default(), &object).await {
                Ok(created) => {
                    events::record(
                        client,
                        claim,
                        "Normal",
                        "Provisioning",
                        &format!("External provisioner is provisioning volume for claim \"{key}\""),
                        PROVISIONER,
                    )
                    .await;
                    events::record(
                        client,
                        claim,
                        "Normal",
                        "ProvisioningSucceeded",
                        &format!("Successfully provisioned volume {name}"),
                        PROVISIONER,
                    )
                    .await;
                    bind(client, claim, &created).await?;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing = volume_api.get(&name).await?;
                    bind(client, claim, &existing).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Step::Bind { claim, volume } => {
            let Some(claim) = claims.get(*claim) else {
                return Ok(());
            };
            let Some(volume) = volumes.iter().find(|v| v.name_any() == *volume) else {
                return Ok(());
            };
            bind(client, claim, volume).await?;
        }
        Step::Available(name) => {
            let patch = json!({"status": {"phase": "Available"}});
            volume_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        Step::Release(name) => {
            let patch = json!({"status": {"phase": "Released"}});
            volume_api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
        }
        Step::Delete(name) => match volume_api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e),
        },
    }
    Ok(())
}

/// Binds both sides: the volume's claimRef and phase, the claim's
/// volumeName, annotations and status.
async fn bind(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), kube::Error> {
    let volume_api: Api<PersistentVolume> = Api::all(client.clone());
    let namespace = claim.metadata.namespace.as_deref().unwrap_or("default");
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volume_name = volume.name_any();
    let spec = volume.spec.as_ref();
    let has_ref = spec
        .and_then(|s| s.claim_ref.as_ref())
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| Some(u) == claim.metadata.uid.as_deref());
    if !has_ref {
        let patch = json!({
            "metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
            "spec": {"claimRef": {
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "namespace": namespace, "name": claim.name_any(), "uid": claim.uid(),
                "resourceVersion": claim.resource_version(),
            }},
        });
        volume_api
            .patch(&volume_name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    if phase_of_volume(volume) != "Bound" {
        volume_api
            .patch_status(
                &volume_name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Bound"}})),
            )
            .await?;
    }
    let mut annotations = json!({"pv.kubernetes.io/bind-completed": "yes"});
    let prebound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_some_and(|v| v == volume_name);
    if !prebound {
        annotations["pv.kubernetes.io/bound-by-controller"] = json!("yes");
    }
    if volume
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
        .is_some()
    {
        annotations["volume.kubernetes.io/storage-provisioner"] = json!(PROVISIONER);
        annotations["volume.beta.kubernetes.io/storage-provisioner"] = json!(PROVISIONER);
    }
    let patch =
        json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": volume_name}});
    claim_api
        .patch(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    let status = json!({"status": {
        "phase": "Bound",
        "accessModes": spec.and_then(|s| s.access_modes.clone()).unwrap_or_default(),
        "capacity": spec.and_then(|s| s.capacity.clone()).unwrap_or_default(),
    }});
    claim_api
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(status),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, class: Option<&str>, size: &str) -> PersistentVolumeClaim {
        let mut value = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"}
        });
        if let Some(c) = class {
            value["spec"]["storageClassName"] = json!(c);
        }
        serde_json::from_value(value).unwrap()
    }

    fn class() -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "standard", "annotations": {DEFAULT_ANNOTATION: "true"}},
            "provisioner": PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"
        }))
        .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}),
        )
        .unwrap()
    }

    fn pod_using(claim: &str, node: Option<&str>) -> Pod {
        let mut value = json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "c"}], "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}
        });
        if let Some(n) = node {
            value["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(value).unwrap()
    }

    fn volume(name: &str, class: &str, size: &str, node: Option<&str>) -> PersistentVolume {
        let mut value = json!({
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "persistentVolumeReclaimPolicy": "Retain", "local": {"path": "/x"}},
            "status": {"phase": "Available"}
        });
        if let Some(n) = node {
            value["spec"]["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [n]}]}]}});
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_claim_waits_for_its_first_consumer_then_is_provisioned_on_its_node() {
        let claims = [claim("data", Some("standard"), "10Gi")];
        let nodes = [node("a"), node("b")];
        let steps = plan(&claims, &[], &[pod_using("data", None)], &[class()], &nodes);
        assert!(
            matches!(
                steps.as_slice(),
                [Step::Wait {
                    reason: "WaitForFirstConsumer",
                    ..
                }]
            ),
            "{steps:?}"
        );

        let steps = plan(
            &claims,
            &[],
            &[pod_using("data", Some("b"))],
            &[class()],
            &nodes,
        );
        let [Step::Provision { claim: 0, volume }] = steps.as_slice() else {
            panic!("{steps:?}")
        };
        assert_eq!(volume["metadata"]["name"], "pvc-uid-data");
        assert_eq!(volume["spec"]["capacity"]["storage"], "10Gi");
        assert_eq!(
            volume["spec"]["local"]["path"],
            "/var/lib/shoal/volumes/pvc-uid-data"
        );
        assert_eq!(volume["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(volume["spec"]["claimRef"]["uid"], "uid-data");
        assert_eq!(
            volume["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"]
                [0]["values"],
            json!(["b"])
        );
        // The provisioned volume fits only its node.
        let pv: PersistentVolume = serde_json::from_value(volume.clone()).unwrap();
        assert!(fit::volume_fits_node(&pv, &nodes[1]));
        assert!(!fit::volume_fits_node(&pv, &nodes[0]));
    }

    #[test]
    fn claims_without_a_class_get_the_default() {
        let steps = plan(&[claim("data", None, "1Gi")], &[], &[], &[class()], &[]);
        assert_eq!(
            steps,
            vec![Step::SetClass {
                claim: 0,
                class: "standard".into()
            }]
        );
        // No default class: left alone.
        assert!(plan(&[claim("data", None, "1Gi")], &[], &[], &[], &[]).is_empty());
    }

    #[test]
    fn an_offered_volume_is_chosen_smallest_first_and_on_the_right_node() {
        let c = claim("data", Some("standard"), "5Gi");
        let volumes = [
            volume("big", "standard", "100Gi", None),
            volume("small", "standard", "1Gi", None),
            volume("fits", "standard", "5Gi", Some("a")),
            volume("other-class", "fast", "5Gi", None),
        ];
        assert_eq!(
            choose_volume(&c, &volumes, None).unwrap().name_any(),
            "fits"
        );
        assert_eq!(
            choose_volume(&c, &volumes, Some(&node("b")))
                .unwrap()
                .name_any(),
            "big"
        );
        let mut rwx = c.clone();
        rwx.spec.as_mut().unwrap().access_modes = Some(vec!["ReadWriteMany".into()]);
        assert!(choose_volume(&rwx, &volumes, None).is_none());

        let steps = plan(
            &[c],
            &volumes,
            &[pod_using("data", Some("a"))],
            &[class()],
            &[node("a")],
        );
        assert_eq!(
            steps[0],
            Step::Bind {
                claim: 0,
                volume: "fits".into()
            }
        );
    }

    #[test]
    fn volumes_of_deleted_claims_are_reclaimed() {
        let mut deleted = volume("pvc-1", "standard", "1Gi", Some("a"));
        deleted
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Delete".into());
        deleted.spec.as_mut().unwrap().claim_ref = Some(
            serde_json::from_value(
                json!({"namespace": "default", "name": "gone", "uid": "uid-gone"}),
            )
            .unwrap(),
        );
        deleted.status.as_mut().unwrap().phase = Some("Bound".into());
        let mut retained = deleted.clone();
        retained.metadata.name = Some("pvc-2".into());
        retained
            .spec
            .as_mut()
            .unwrap()
            .persistent_volume_reclaim_policy = Some("Retain".into());
        let mut kept = deleted.clone();
        kept.metadata.name = Some("pvc-3".into());
        kept.spec.as_mut().unwrap().claim_ref = Some(
            serde_json::from_value(
                json!({"namespace": "default", "name": "data", "uid": "uid-data"}),
            )
            .unwrap(),
        );
        let mut bound = claim("data", Some("standard"), "1Gi");
        bound.spec.as_mut().unwrap().volume_name = Some("pvc-3".into());
        bound.status.as_mut().unwrap().phase = Some("Bound".into());
        let steps = plan(&[bound], &[deleted, retained, kept], &[], &[class()], &[]);
        assert_eq!(
            steps,
            vec![Step::Delete("pvc-1".into()), Step::Release("pvc-2".into())]
        );
    }
}
