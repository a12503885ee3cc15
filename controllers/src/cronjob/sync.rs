//! What a CronJob should do now, as a pure function of it, the Jobs it
//! owns and the time (Kubernetes' `syncCronJob` and
//! `cleanupFinishedJobs`): which Job to start for the most recent schedule
//! time, which to delete (Replace, history limits), the status and events,
//! and when the next schedule time is.

pub use crate::controller_uid;
use std::time::Duration;

use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

use super::schedule::{self, Missed, Schedule};

/// The scheduled time of a Job the CronJob started, RFC 3339 in the
/// CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Requeue a little after the schedule time, so that it has passed.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    pub status: CronJobStatus,
    /// The Job to create, for this schedule time.
    pub create: Option<(Job, Timestamp)>,
    /// Jobs (names) to delete in the background: replaced or past the
    /// history limits.
    pub delete: Vec<String>,
    pub events: Vec<Note>,
    pub requeue_after: Option<Duration>,
}

fn uid_of(job: &Job) -> &str {
    job.metadata.uid.as_deref().unwrap_or_default()
}

fn name_of(job: &Job) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

/// The terminal condition of a Job, if it has one.
pub fn finished_condition(job: &Job) -> Option<&'static str> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    ["Complete", "Failed"].into_iter().find(|kind| {
        conditions
            .iter()
            .any(|c| c.type_ == *kind && c.status == "True")
    })
}

/// `<cronjob>-<scheduled minutes since the epoch>`: one name per schedule
/// time, so that a Job is never started twice for it.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 as Go prints it: `Z` for UTC.
fn rfc3339(at: Timestamp, tz: &TimeZone) -> String {
    let zoned = at.to_zoned(tz.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The time zone of a CronJob: `spec.timeZone`, else UTC (the controller's
/// local time in Kubernetes, UTC in its containers).
pub fn time_zone(cj: &CronJob) -> Result<TimeZone, jiff::Error> {
    match cj.spec.as_ref().and_then(|s| s.time_zone.as_deref()) {
        Some(name) => TimeZone::get(name),
        None => Ok(TimeZone::UTC),
    }
}

/// The Job for schedule time `scheduled`: the template's labels,
/// annotations and spec, owned by the CronJob.
pub fn job_for(cj: &CronJob, scheduled: Timestamp, tz: &TimeZone) -> Option<Job> {
    let cj_name = cj.metadata.name.clone()?;
    let template = cj.spec.as_ref()?.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339(scheduled, tz));
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(&cj_name, scheduled),
            "labels": meta.labels,
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cj_name,
                "uid": cj.metadata.uid.clone().unwrap_or_default(),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template.spec,
    }))
    .ok()
}

/// The reference kept in `status.active`.
pub fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

fn until(at: Timestamp, now: Timestamp) -> Duration {
    let d = at.duration_since(now);
    Duration::from_millis(d.as_millis().max(0) as u64) + NEXT_SCHEDULE_DELTA
}

pub fn decide(cj: &CronJob, jobs: &[Job], now: Timestamp) -> Decision {
    let mut d = Decision::default();
    let spec = cj.spec.clone().unwrap_or_default();
    let mut status = cj.status.clone().unwrap_or_default();
    let cj_uid = cj.metadata.uid.as_deref().unwrap_or_default();
    let children: Vec<&Job> = jobs
        .iter()
        .filter(|j| controller_uid(*j) == Some(cj_uid))
        .collect();
    let mut active = status.active.take().unwrap_or_default();
    let in_active = |active: &[ObjectReference], uid: &str| {
        active.iter().any(|r| r.uid.as_deref() == Some(uid))
    };

    // 1. Reconcile the active list with the Jobs that exist.
    for job in &children {
        let finished = finished_condition(job);
        let found = in_active(&active, uid_of(job));
        match (found, finished) {
            (false, None) => d.events.push(Note {
                kind: "Warning",
                reason: "UnexpectedJob",
                message: format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    name_of(job)
                ),
            }),
            (true, Some(condition)) => {
                active.retain(|r| r.uid.as_deref() != Some(uid_of(job)));
                d.events.push(Note {
                    kind: "Normal",
                    reason: "SawCompletedJob",
                    message: format!(
                        "Saw completed job: {}, condition: {condition}",
                        name_of(job)
                    ),
                });
            }
            (false, Some("Complete")) => {
                let done = job.status.as_ref().and_then(|s| s.completion_time.clone());
                if let Some(done) = done {
                    if status
                        .last_successful_time
                        .as_ref()
                        .is_none_or(|t| done.0 > t.0)
                    {
                        status.last_successful_time = Some(done);
                    }
                }
            }
            _ => {}
        }
    }
    active.retain(|r| {
        let exists = children.iter().any(|j| r.uid.as_deref() == Some(uid_of(j)));
        if !exists {
            d.events.push(Note {
                kind: "Warning",
                reason: "MissingJob",
                message: format!(
                    "Active job went missing: {}",
                    r.name.clone().unwrap_or_default()
                ),
            });
        }
        exists
    });

    // 2. Old finished Jobs beyond the history limits.
    let mut history = |kind: &str, limit: Option<i32>| {
        let Some(limit) = limit else { return };
        let mut finished: Vec<&&Job> = children
            .iter()
            .filter(|j| finished_condition(j) == Some(kind))
            .collect();
        let excess = finished.len().saturating_sub(limit.max(0) as usize);
        // Oldest first; a Job that never started sorts last.
        finished.sort_by_key(|j| {
            let start = j
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0);
            (start.is_none(), start, name_of(j))
        });
        for job in finished.into_iter().take(excess) {
            d.delete.push(name_of(job));
            d.events.push(Note {
                kind: "Normal",
                reason: "SuccessfulDelete",
                message: format!("Deleted job {}", name_of(job)),
            });
        }
    };
    history("Complete", spec.successful_jobs_history_limit);
    history("Failed", spec.failed_jobs_history_limit);

    let finish = |mut d: Decision, status: CronJobStatus, active: Vec<ObjectReference>| {
        d.status = CronJobStatus {
            active: (!active.is_empty()).then_some(active),
            ..status
        };
        d
    };
    if cj.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return finish(d, status, active);
    }
    let tz = match time_zone(cj) {
        Ok(tz) => tz,
        Err(e) => {
            d.events.push(Note {
                kind: "Warning",
                reason: "UnknownTimeZone",
                message: format!(
                    "invalid timeZone: {:?}: {e}",
                    spec.time_zone.clone().unwrap_or_default()
                ),
            });
            return finish(d, status, active);
        }
    };
    let schedule = match Schedule::parse(&spec.schedule) {
        Ok(s) => s,
        Err(e) => {
            d.events.push(Note {
                kind: "Warning",
                reason: "UnparseableSchedule",
                message: format!("unparseable schedule: {:?} : {e}", spec.schedule),
            });
            return finish(d, status, active);
        }
    };

    // 3. The most recent schedule time not yet started.
    let created = cj.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let last = status.last_schedule_time.as_ref().map(|t| t.0);
    let mut earliest = last.unwrap_or(created);
    if let Some(deadline) = spec.starting_deadline_seconds {
        let cutoff = now
            .checked_sub(SignedDuration::from_secs(deadline))
            .unwrap_or(now);
        earliest = earliest.max(cutoff);
    }
    let scheduled = match schedule::most_recent(&schedule, earliest, now, &tz) {
        Ok((at, missed)) => {
            if missed == Missed::Many {
                d.events.push(Note {
                    kind: "Warning",
                    reason: "TooManyMissedTimes",
                    message: "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                });
            }
            at
        }
        Err(e) => {
            d.events.push(Note {
                kind: "Warning",
                reason: "InvalidSchedule",
                message: format!("invalid schedule: {:?} : {e}", spec.schedule),
            });
            return finish(d, status, active);
        }
    };
    // The requeue: the schedule time after the latest one due, regardless
    // of the starting deadline (Kubernetes' nextScheduleTimeDuration).
    let since = last.unwrap_or(created);
    let recent = schedule::most_recent(&schedule, since, now, &tz)
        .ok()
        .and_then(|(at, _)| at);
    d.requeue_after = schedule
        .next(recent.unwrap_or(since), &tz)
        .map(|next| until(next.max(now), now));
    let Some(scheduled) = scheduled else {
        return finish(d, status, active);
    };

    if let Some(deadline) = spec.starting_deadline_seconds {
        let latest_start = scheduled
            .checked_add(SignedDuration::from_secs(deadline))
            .unwrap_or(scheduled);
        if latest_start < now {
            d.events.push(Note {
                kind: "Warning",
                reason: "MissSchedule",
                message: format!(
                    "Missed scheduled time to start a job: {}",
                    scheduled.strftime("%a, %d %b %Y %H:%M:%S %z")
                ),
            });
            return finish(d, status, active);
        }
    }
    let name = job_name(cj.metadata.name.as_deref().unwrap_or_default(), scheduled);
    let started = active
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || last == Some(scheduled);
    if started {
        return finish(d, status, active);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            d.events.push(Note {
                kind: "Normal",
                reason: "JobAlreadyActive",
                message: "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
            });
            return finish(d, status, active);
        }
        Some("Replace") => {
            for r in active.drain(..) {
                let job = r.name.unwrap_or_default();
                d.events.push(Note {
                    kind: "Normal",
                    reason: "SuccessfulDelete",
                    message: format!("Deleted job {job}"),
                });
                d.delete.push(job);
            }
        }
        _ => {}
    }
    if let Some(job) = job_for(cj, scheduled, &tz) {
        d.create = Some((job, scheduled));
    }
    finish(d, status, active)
}

/// The status as a merge patch; an empty active list is removed.
pub fn status_patch(status: &CronJobStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    if status.active.is_none() {
        value["active"] = Value::Null;
    }
    json!({ "status": value })
}

/// Adds the Job just created (or found) to the status.
pub fn started(status: &mut CronJobStatus, job: &Job, scheduled: Timestamp) {
    let active = status.active.get_or_insert_with(Vec::new);
    if !active.iter().any(|r| r.uid == job.metadata.uid) {
        active.push(reference(job));
    }
    status.last_schedule_time = Some(Time(scheduled));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn cronjob(spec: Value, status: Value) -> CronJob {
        let mut full = json!({
            "schedule": "*/1 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
            "jobTemplate": {"metadata": {"labels": {"team": "db"}}, "spec": {"template": {"spec": {
                "restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i"}]}}}},
        });
        for (k, v) in spec.as_object().unwrap() {
            full[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "backup", "namespace": "default", "uid": "cj-1",
                         "creationTimestamp": "2026-03-10T12:00:30Z"},
            "spec": full, "status": status,
        }))
        .unwrap()
    }

    fn child(name: &str, condition: Option<&str>, start: &str) -> Job {
        let mut status = json!({"startTime": start});
        if let Some(c) = condition {
            status["conditions"] = json!([{"type": c, "status": "True"}]);
            if c == "Complete" {
                status["completionTime"] = json!(start);
            }
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "cj-1", "controller": true}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn starts_the_job_for_the_schedule_time_and_waits_for_the_next() {
        let cj = cronjob(json!({}), json!({}));
        // Created 12:00:30; nothing due at 12:00:50, next at 12:01.
        let d = decide(&cj, &[], at("2026-03-10T12:00:50Z"));
        assert!(d.create.is_none());
        assert_eq!(d.requeue_after, Some(Duration::from_millis(10_100)));
        let d = decide(&cj, &[], at("2026-03-10T12:01:02Z"));
        let (job, scheduled) = d.create.unwrap();
        assert_eq!(scheduled, at("2026-03-10T12:01:00Z"));
        let minutes = at("2026-03-10T12:01:00Z").as_second() / 60;
        assert_eq!(job.metadata.name.unwrap(), format!("backup-{minutes}"));
        assert_eq!(
            job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2026-03-10T12:01:00Z"
        );
        assert_eq!(job.metadata.labels.unwrap()["team"], "db");
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("CronJob", Some(true))
        );
        assert_eq!(d.requeue_after, Some(Duration::from_millis(58_100)));
    }

    #[test]
    fn the_guides_job_name() {
        // 2024-01-03 05:20 UTC is minute 28404320 since the epoch.
        assert_eq!(
            job_name("daily-backup", at("2024-01-03T05:20:00Z")),
            "daily-backup-28404320"
        );
    }

    #[test]
    fn a_started_time_is_not_started_again() {
        let cj = cronjob(
            json!({}),
            json!({"lastScheduleTime": "2026-03-10T12:01:00Z"}),
        );
        let d = decide(&cj, &[], at("2026-03-10T12:01:30Z"));
        assert!(d.create.is_none());
    }

    #[test]
    fn forbid_waits_and_replace_deletes() {
        let running = child("backup-1", None, "2026-03-10T12:00:00Z");
        let status = json!({"active": [{"kind": "Job", "name": "backup-1", "uid": "uid-backup-1"}],
                            "lastScheduleTime": "2026-03-10T12:00:00Z"});
        let cj = cronjob(json!({"concurrencyPolicy": "Forbid"}), status.clone());
        let d = decide(
            &cj,
            std::slice::from_ref(&running),
            at("2026-03-10T12:01:05Z"),
        );
        assert!(d.create.is_none());
        assert_eq!(d.events[0].reason, "JobAlreadyActive");
        let cj = cronjob(json!({"concurrencyPolicy": "Replace"}), status.clone());
        let d = decide(
            &cj,
            std::slice::from_ref(&running),
            at("2026-03-10T12:01:05Z"),
        );
        assert!(d.create.is_some());
        assert_eq!(d.delete, vec!["backup-1"]);
        assert!(d.status.active.is_none());
        let cj = cronjob(json!({"concurrencyPolicy": "Allow"}), status);
        let d = decide(&cj, &[running], at("2026-03-10T12:01:05Z"));
        assert!(d.create.is_some() && d.delete.is_empty());
    }

    #[test]
    fn completed_jobs_leave_the_active_list_and_old_ones_go() {
        let status = json!({"active": [{"kind": "Job", "name": "backup-4", "uid": "uid-backup-4"}],
                            "lastScheduleTime": "2026-03-10T12:04:00Z"});
        let cj = cronjob(json!({"successfulJobsHistoryLimit": 2}), status);
        let jobs = [
            child("backup-1", Some("Complete"), "2026-03-10T12:01:00Z"),
            child("backup-2", Some("Complete"), "2026-03-10T12:02:00Z"),
            child("backup-3", Some("Failed"), "2026-03-10T12:03:00Z"),
            child("backup-4", Some("Complete"), "2026-03-10T12:04:00Z"),
        ];
        let d = decide(&cj, &jobs, at("2026-03-10T12:04:30Z"));
        assert!(d.status.active.is_none());
        assert!(d.events.iter().any(|e| e.reason == "SawCompletedJob"
            && e.message == "Saw completed job: backup-4, condition: Complete"));
        assert_eq!(d.delete, vec!["backup-1"]);
        assert_eq!(
            d.status.last_successful_time,
            Some(Time(at("2026-03-10T12:02:00Z")))
        );
    }

    #[test]
    fn suspended_cronjobs_start_nothing() {
        let cj = cronjob(json!({"suspend": true}), json!({}));
        let d = decide(&cj, &[], at("2026-03-10T12:05:00Z"));
        assert!(d.create.is_none() && d.requeue_after.is_none());
    }

    #[test]
    fn starting_deadline_misses_late_starts() {
        let cj = cronjob(
            json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 10}),
            json!({"lastScheduleTime": "2026-03-10T11:00:00Z"}),
        );
        // 12:00 is 30 s late: past the 10 s deadline... but the deadline
        // also bounds the search, so 12:00 is not even considered.
        let d = decide(&cj, &[], at("2026-03-10T12:00:30Z"));
        assert!(d.create.is_none());
        assert_eq!(d.requeue_after, Some(Duration::from_millis(3_570_100)));
        let cj = cronjob(
            json!({"schedule": "0 * * * *", "startingDeadlineSeconds": 60}),
            json!({"lastScheduleTime": "2026-03-10T11:00:00Z"}),
        );
        assert!(decide(&cj, &[], at("2026-03-10T12:00:30Z"))
            .create
            .is_some());
    }

    #[test]
    fn time_zones_and_unknown_ones() {
        let cj = cronjob(
            json!({"schedule": "0 2 * * *", "timeZone": "Asia/Tokyo"}),
            json!({"lastScheduleTime": "2026-03-09T17:00:00Z"}),
        );
        let (job, scheduled) = decide(&cj, &[], at("2026-03-10T17:00:05Z")).create.unwrap();
        assert_eq!(scheduled, at("2026-03-10T17:00:00Z"));
        assert_eq!(
            job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2026-03-11T02:00:00+09:00"
        );
        let cj = cronjob(json!({"timeZone": "Mars/Olympus"}), json!({}));
        let d = decide(&cj, &[], at("2026-03-10T17:00:05Z"));
        assert_eq!(d.events[0].reason, "UnknownTimeZone");
        assert!(d.create.is_none());
    }

    #[test]
    fn unexpected_and_missing_jobs_are_reported() {
        let status = json!({"active": [{"kind": "Job", "name": "gone", "uid": "uid-gone"}],
                            "lastScheduleTime": "2026-03-10T12:04:00Z"});
        let cj = cronjob(json!({}), status);
        let manual = child("manual-1", None, "2026-03-10T12:04:10Z");
        let d = decide(&cj, &[manual], at("2026-03-10T12:04:30Z"));
        let reasons: Vec<&str> = d.events.iter().map(|e| e.reason).collect();
        assert_eq!(reasons, ["UnexpectedJob", "MissingJob"]);
        assert!(d.status.active.is_none());
    }
}
