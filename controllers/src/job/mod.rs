//! The Job controller: runs a Job's pods to completion — `parallelism` at a
//! time until `completions` succeeded (or, without completions, until one
//! did and the rest finished), replacing failed pods after an exponential
//! back-off until `backoffLimit`, failing the Job past
//! `activeDeadlineSeconds`, suspending and resuming it, handing out
//! completion indexes (`completionMode: Indexed`) and deleting the Job
//! `ttlSecondsAfterFinished` after it finished.
//!
//! ```text
//!  Job / pod events ──> reconcile: GET the Job (fresh: counting must see
//!                       our last status write), LIST its pods
//!                         │
//!                         ▼
//!                  sync::decide (pure) ──> status write ─> finalizer releases
//!                                          ─> pod deletes / creates ─> events
//! ```
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer until they are
//! counted (see `sync`); a second loop releases the pods whose Job is gone.

pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;

use crate::events;
use crate::informers::Informer;

const COMPONENT: &str = "job-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading job {job}: {source}")]
    ReadJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the pods of job {job}: {source}")]
    ListPods {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of job {job}: {source}")]
    WriteStatus {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("releasing pod {pod} from the tracking finalizer: {source}")]
    ReleasePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating a pod for job {job}: {source}")]
    CreatePod {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting pod {pod}: {source}")]
    DeletePod {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting finished job {job}: {source}")]
    DeleteJob {
        job: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Ctx {
    client: kube::Client,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let jobs = settings.informers.get::<Job>(&client);
    let pods = settings.informers.get::<Pod>(&client);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let controller = crate::run::over("job", &jobs)
        .owns_stream(pods.touched_if(super::informers::controlled_by("Job")));
    tokio::join!(
        crate::run::run_controller("job", controller, reconcile, ctx),
        release_orphans(client, pods)
    );
}

/// Now, to the second: the times written round-trip through the API at
/// that precision, and a status compared with its stored self must match.
fn now() -> jiff::Timestamp {
    jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .unwrap_or_else(|_| jiff::Timestamp::now())
}

async fn release(pods: &Api<Pod>, name: &str) -> Result<()> {
    let patch =
        json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [sync::TRACKING_FINALIZER]}});
    match pods
        .patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::ReleasePod {
            pod: name.to_string(),
            source,
        }),
    }
}

async fn reconcile(cached: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let client = ctx.client.clone();
    let namespace = cached.namespace().unwrap_or_else(|| "default".into());
    let name = cached.name_any();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let job = match jobs.get_opt(&name).await {
        Ok(Some(job)) => job,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => return Err(Error::ReadJob { job: name, source }),
    };
    let uid = job.uid().unwrap_or_default();
    let selector = job
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .map(super::label_query)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("batch.kubernetes.io/controller-uid={uid}"));
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| Error::ListPods {
            job: name.clone(),
            source,
        })?;

    if job.metadata.deletion_timestamp.is_some() {
        // Being deleted (foreground or orphan): no more counting.
        for pod in &listed.items {
            let ours = sync::controller_uid(pod) == Some(uid.as_str());
            let held = pod
                .finalizers()
                .iter()
                .any(|f| f == sync::TRACKING_FINALIZER);
            if ours && held {
                release(&pods, &pod.name_any()).await?;
            }
        }
        return Ok(Action::await_change());
    }

    let decision = sync::decide(&job, &listed.items, now());

    if sync::status_changed(job.status.as_ref(), &decision.status) {
        jobs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(sync::status_patch(&decision.status)),
        )
        .await
        .map_err(|source| Error::WriteStatus {
            job: name.clone(),
            source,
        })?;
    }
    // Only now that the uids are in the status may the pods go.
    for pod in &decision.release {
        release(&pods, pod).await?;
    }
    for pod in &decision.delete {
        match pods.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {
                events::record(
                    &client,
                    &job,
                    "Normal",
                    "SuccessfulDelete",
                    &format!("Deleted pod: {pod}"),
                    COMPONENT,
                )
                .await;
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::DeletePod {
                    pod: pod.clone(),
                    source,
                })
            }
        }
    }
    for index in &decision.create {
        let Some(template) = sync::new_pod(&job, *index) else {
            tracing::warn!(job = %name, "the pod template cannot be made into a pod");
            break;
        };
        match pods.create(&PostParams::default(), &template).await {
            Ok(created) => {
                events::record(
                    &client,
                    &job,
                    "Normal",
                    "SuccessfulCreate",
                    &format!("Created pod: {}", created.name_any()),
                    COMPONENT,
                )
                .await;
            }
            Err(source) => {
                let message = format!("Error creating: {source}");
                events::record(
                    &client,
                    &job,
                    "Warning",
                    "FailedCreate",
                    &message,
                    COMPONENT,
                )
                .await;
                return Err(Error::CreatePod {
                    job: name.clone(),
                    source,
                });
            }
        }
    }
    for note in &decision.events {
        events::record(
            &client,
            &job,
            note.kind,
            note.reason,
            &note.message,
            COMPONENT,
        )
        .await;
    }
    if decision.delete_job {
        match jobs.delete(&name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::DeleteJob { job: name, source }),
        }
        tracing::info!(job = %name, "deleted after ttlSecondsAfterFinished");
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(
        decision
            .requeue_after
            .map(|d| d + Duration::from_millis(100))
            .unwrap_or(Duration::from_secs(300)),
    ))
}

/// Releases the tracking finalizer of pods whose Job is gone (deleted in
/// the background, its pods then deleted by the garbage collector), which
/// the Job's own reconcile can no longer do.
async fn release_orphans(client: kube::Client, pods: Informer<Pod>) {
    let mut stream = pods
        .touched_if(|pod: &Pod| pod.labels().contains_key("batch.kubernetes.io/job-name"))
        .boxed();
    while let Some(Ok(pod)) = stream.next().await {
        let held = pod
            .finalizers()
            .iter()
            .any(|f| f == sync::TRACKING_FINALIZER);
        let done = pod.metadata.deletion_timestamp.is_some()
            || matches!(
                pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            );
        if !held || !done {
            continue;
        }
        let namespace = pod.namespace().unwrap_or_else(|| "default".into());
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Job")
            .cloned();
        let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
        let orphan = match &owner {
            None => true,
            Some(owner) => match jobs.get_opt(&owner.name).await {
                Ok(Some(job)) => job.uid().as_deref() != Some(owner.uid.as_str()),
                Ok(None) => true,
                Err(e) => {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "cannot look up the job of a pod");
                    false
                }
            },
        };
        if orphan {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if let Err(e) = release(&pods, &pod.name_any()).await {
                tracing::warn!(error = %e, "cannot release an orphaned job pod");
            }
        }
    }
}
