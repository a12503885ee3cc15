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

pub use shoal_core::cron as schedule;
pub mod sync;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
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
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let cronjobs = settings.informers.get::<CronJob>(&client);
    let jobs = settings.informers.get::<Job>(&client);
    let controller = crate::run::over("cronjob", &cronjobs)
        .owns_stream(jobs.touched_if(super::informers::controlled_by("CronJob")));
    crate::run::run_controller("cronjob", controller, reconcile, Arc::new(Ctx { client })).await;
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
    Ok(match decision.requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}
