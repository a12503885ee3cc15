//! The CronJob controller: starts a Job from `spec.jobTemplate` at each
//! time of `spec.schedule` (in `spec.timeZone`), named
//! `<cronjob>-<minutes since the epoch>`, honouring `concurrencyPolicy`,
//! `startingDeadlineSeconds` and `suspend`, keeps `status.active`,
//! `lastScheduleTime` and `lastSuccessfulTime`, and deletes finished Jobs
//! beyond the history limits.
//!
//! ```text
//!  CronJob / owned Job events, or the next schedule time (requeue)
//!        │
//!        ▼
//!  GET the CronJob, LIST the namespace's Jobs ─> sync::decide (pure)
//!        ─> delete replaced / old Jobs ─> create the Job ─> status ─> events
//! ```
//!
//! The schedule grammar is in `schedule` (also used by the apiserver's
//! validation).

pub mod schedule;
pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

use crate::events;

const COMPONENT: &str = "cronjob-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading cronjob {cronjob}: {source}")]
    ReadCronJob {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
    #[error("listing the jobs of cronjob {cronjob}: {source}")]
    ListJobs {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating job {job}: {source}")]
    CreateJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting job {job}: {source}")]
    DeleteJob {
        job: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of cronjob {cronjob}: {source}")]
    WriteStatus {
        cronjob: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

struct Ctx {
    client: kube::Client,
    /// Consecutive failures per CronJob, for the retry back-off.
    failures: Mutex<HashMap<ObjectRef<CronJob>, u32>>,
}

pub async fn run(client: kube::Client, _settings: super::Settings) {
    let cronjobs: Api<CronJob> = Api::all(client.clone());
    let jobs: Api<Job> = Api::all(client.clone());
    let ctx = Arc::new(Ctx {
        client,
        failures: Mutex::new(HashMap::new()),
    });
    Controller::new(cronjobs, watcher::Config::default())
        .owns(jobs, watcher::Config::default())
        .run(reconcile, retry, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cronjob reconcile failed");
            }
            futures::future::ready(())
        })
        .await;
}

fn retry(cj: Arc<CronJob>, error: &Error, ctx: Arc<Ctx>) -> Action {
    let key = ObjectRef::from_obj(cj.as_ref());
    let n = match ctx.failures.lock() {
        Ok(mut map) => {
            let n = map.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = Duration::from_millis(500u64 << n.min(7)).min(Duration::from_secs(60));
    tracing::warn!(cronjob = %cj.name_any(), error = %error, retry_in = ?delay, "cronjob sync failed");
    Action::requeue(delay)
}

async fn reconcile(cached: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let client = ctx.client.clone();
    let namespace = cached.namespace().unwrap_or_else(|| "default".into());
    let name = cached.name_any();
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), &namespace);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    // Fresh: the cache may not have our last status write yet, and
    // `lastScheduleTime` is what keeps a time from being started twice.
    let cj = match cronjobs.get_opt(&name).await {
        Ok(Some(cj)) => cj,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::ReadCronJob {
                cronjob: name,
                source,
            })
        }
    };
    let listed = jobs
        .list(&ListParams::default())
        .await
        .map_err(|source| Error::ListJobs {
            cronjob: name.clone(),
            source,
        })?;
    let decision = sync::decide(&cj, &listed.items, jiff::Timestamp::now());
    let mut status = decision.status.clone();

    for job in &decision.delete {
        match jobs.delete(job, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::DeleteJob {
                    job: job.clone(),
                    source,
                })
            }
        }
    }
    let mut created_name = None;
    if let Some((job, scheduled)) = &decision.create {
        let job_name = job.name_any();
        match jobs.create(&PostParams::default(), job).await {
            Ok(created) => {
                sync::started(&mut status, &created, *scheduled);
                created_name = Some(job_name);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Started already (a status write lost): adopt what exists
                // if it is ours.
                if let Ok(Some(existing)) = jobs.get_opt(&job_name).await {
                    if sync::controller_uid(&existing) == cj.uid().as_deref() {
                        if sync::finished_condition(&existing).is_none() {
                            sync::started(&mut status, &existing, *scheduled);
                        } else {
                            status.last_schedule_time = Some(
                                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(*scheduled),
                            );
                        }
                    }
                }
            }
            Err(source) => {
                events::record(
                    &client,
                    &cj,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating job: {source}"),
                    COMPONENT,
                )
                .await;
                return Err(Error::CreateJob {
                    job: job_name,
                    source,
                });
            }
        }
    }
    if cj.status.as_ref() != Some(&status) {
        cronjobs
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(sync::status_patch(&status)),
            )
            .await
            .map_err(|source| Error::WriteStatus {
                cronjob: name.clone(),
                source,
            })?;
    }
    if let Some(job) = &created_name {
        events::record(
            &client,
            &cj,
            "Normal",
            "SuccessfulCreate",
            &format!("Created job {job}"),
            COMPONENT,
        )
        .await;
    }
    for note in &decision.events {
        events::record(
            &client,
            &cj,
            note.kind,
            note.reason,
            &note.message,
            COMPONENT,
        )
        .await;
    }
    if let Ok(mut failures) = ctx.failures.lock() {
        failures.remove(&ObjectRef::from_obj(&cj));
    }
    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
