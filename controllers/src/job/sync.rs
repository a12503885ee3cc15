//! What a Job should do now, as a pure function of the Job (its spec and
//! last status), its pods and the time: which pods to create or delete,
//! which pods to release from the tracking finalizer, the status to write,
//! the events to record and when to look again.
//!
//! Counting follows Kubernetes' finalizer protocol, so a pod is counted
//! exactly once even if it is deleted right after it finishes:
//!
//! ```text
//!  pod finished, still has          status write:           finalizer   next pass: pod gone or
//!  batch.kubernetes.io/job-tracking ──> uid into       ──>  removed ──> finalizer-free: uid moves
//!                                       uncountedTerminatedPods          into succeeded / failed
//! ```
//!
//! Indexed Jobs record successes as `completedIndexes` instead of uids.
//! A finishing Job first gets the interim condition (`SuccessCriteriaMet`
//! or `FailureTarget`), and `Complete` / `Failed` once no pod of it is
//! running, terminating or uncounted, as Kubernetes 1.32 does.

pub use crate::controller_uid;
use shoal_core::pod::{is_active, is_ready, is_terminating, phase};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};

/// Keeps a finished pod until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label with the completion index of an Indexed Job's pod.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";
/// First delay before a failed pod is replaced; it doubles per failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// At most this many pods are created in one pass.
pub const BURST: usize = 500;

/// An event to record about the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: &'static str,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Default, PartialEq)]
pub struct Decision {
    /// The status to write (before anything else is done).
    pub status: JobStatus,
    /// Pods (names) to release from the tracking finalizer, once the
    /// status is written.
    pub release: Vec<String>,
    /// Pods to create: `None` for a NonIndexed Job, the completion index
    /// otherwise.
    pub create: Vec<Option<i32>>,
    /// Pods (names) to delete.
    pub delete: Vec<String>,
    pub events: Vec<Note>,
    /// Look again after this long (back-off, deadline, TTL).
    pub requeue_after: Option<Duration>,
    /// `ttlSecondsAfterFinished` has passed: delete the Job.
    pub delete_job: bool,
}

/// A pod counts as failed when it failed, or was deleted before it
/// succeeded (it will never get the chance to).
fn is_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
        || (pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

fn name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

/// The completion index of a pod, from its annotation (or label).
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let from = |map: &Option<BTreeMap<String, String>>| {
        map.as_ref()
            .and_then(|m| m.get(INDEX_KEY))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|i| *i >= 0)
    };
    from(&pod.metadata.annotations).or_else(|| from(&pod.metadata.labels))
}

/// When a pod stopped: its containers' finish, else its deletion.
fn finish_time(pod: &Pod) -> Option<Timestamp> {
    let terminated = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// `0-2,4` → {0, 1, 2, 4}; malformed parts are skipped.
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    // Bounded: a corrupt status must not allocate without end.
                    set.extend(a.max(0)..=b.min(a.max(0).saturating_add(100_000)));
                }
            }
            None => {
                if let Ok(i) = part.parse::<i32>() {
                    set.insert(i);
                }
            }
        }
    }
    set
}

/// {0, 1, 2, 4} → `0-2,4`; two in a row are written `1,2`, as Kubernetes.
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut intervals: Vec<(i32, i32)> = Vec::new();
    for &i in set {
        match intervals.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => intervals.push((i, i)),
        }
    }
    intervals
        .iter()
        .map(|&(a, b)| match b - a {
            0 => a.to_string(),
            1 => format!("{a},{b}"),
            _ => format!("{a}-{b}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn condition_true<'a>(conditions: &'a [JobCondition], kind: &str) -> Option<&'a JobCondition> {
    conditions
        .iter()
        .find(|c| c.type_ == kind && c.status == "True")
}

/// Sets a condition; the transition time moves only when the status does.
fn set_condition(
    conditions: &mut Vec<JobCondition>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let new = JobCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(old) if old.status == status => {}
        Some(old) => *old = new,
        None => conditions.push(new),
    }
}

/// Which active pod to give up first: unscheduled, pending, not ready,
/// newest.
fn removal_rank(pod: &Pod) -> (bool, bool, bool, i64) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    (scheduled, phase(pod) == "Running", is_ready(pod), -created)
}

fn secs(d: SignedDuration) -> Duration {
    Duration::from_millis(d.as_millis().max(0) as u64)
}

/// The back-off before the next pod: 10 s doubling per failure since the
/// last success, capped at 6 minutes, counted from the last failure.
pub fn backoff_remaining(
    failures: u32,
    last_failure: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let Some(last) = last_failure else {
        return Duration::ZERO;
    };
    if failures == 0 {
        return Duration::ZERO;
    }
    let delay = BACKOFF_BASE
        .saturating_mul(1u32 << (failures - 1).min(16))
        .min(BACKOFF_MAX);
    let since = secs(now.duration_since(last));
    delay.saturating_sub(since)
}

/// `restartPolicy: OnFailure` pods restart in place: their restarts count
/// against the back-off limit.
fn past_backoff_on_failure(job: &Job, active: &[&Pod], limit: i32) -> bool {
    let on_failure = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    if !on_failure {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter(|p| matches!(phase(p), "Running" | "Pending"))
        .flat_map(|p| p.status.iter())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .map(|c| c.restart_count)
        .sum();
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

fn is_finished_job(status: &JobStatus) -> bool {
    let conditions = status.conditions.as_deref().unwrap_or_default();
    condition_true(conditions, "Complete").is_some()
        || condition_true(conditions, "Failed").is_some()
}

/// True once the Job has its terminal condition.
pub fn finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(is_finished_job)
}

enum Outcome {
    Success,
    Failure,
}

pub fn decide(job: &Job, pods: &[Pod], now: Timestamp) -> Decision {
    let mut d = Decision::default();
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let job_uid = job.metadata.uid.as_deref().unwrap_or_default();
    let owned: Vec<&Pod> = pods
        .iter()
        .filter(|p| controller_uid(*p) == Some(job_uid))
        .collect();
    let by_uid: HashMap<&str, &Pod> = owned.iter().map(|p| (uid(p), *p)).collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6).max(0);
    let suspended = spec.suspend == Some(true);
    let mut conditions = old.conditions.clone().unwrap_or_default();
    let already_finished = is_finished_job(&old);

    // 1. Uncounted pods that are gone or released move into the counters.
    let uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut uncounted_succeeded: BTreeSet<String> = uncounted
        .succeeded
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut uncounted_failed: BTreeSet<String> =
        uncounted.failed.unwrap_or_default().into_iter().collect();
    let mut succeeded = old.succeeded.unwrap_or(0).max(0);
    let mut failed = old.failed.unwrap_or(0).max(0);
    let pending = |uid: &String| by_uid.get(uid.as_str()).is_some_and(|p| has_finalizer(p));
    uncounted_succeeded.retain(|u| {
        let keep = pending(u);
        if !keep && !indexed {
            succeeded += 1;
        }
        keep
    });
    uncounted_failed.retain(|u| {
        let keep = pending(u);
        if !keep {
            failed += 1;
        }
        keep
    });
    let mut completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or_default());

    // 2. Pods that finished since: into the uncounted lists, then released.
    let in_range = |i: i32| completions.is_none_or(|c| i < c);
    for pod in owned.iter().filter(|p| has_finalizer(p)) {
        let u = uid(pod).to_string();
        if uncounted_succeeded.contains(&u) || uncounted_failed.contains(&u) {
            d.release.push(name(pod));
            continue;
        }
        if phase(pod) == "Succeeded" {
            if indexed {
                // The index is what counts; a second success of it is not
                // counted again.
                if let Some(i) = completion_index(pod).filter(|i| in_range(*i)) {
                    completed.insert(i);
                }
            } else {
                uncounted_succeeded.insert(u);
            }
            d.release.push(name(pod));
        } else if is_terminating(pod) && suspended && !already_finished {
            // Deleted because the Job was suspended: not a failure.
            d.release.push(name(pod));
        } else if is_failed(pod) {
            uncounted_failed.insert(u);
            d.release.push(name(pod));
        } else if already_finished {
            d.release.push(name(pod));
        }
    }
    let succeeded_total = if indexed {
        completed.len() as i32
    } else {
        succeeded + uncounted_succeeded.len() as i32
    };
    let failed_total = failed + uncounted_failed.len() as i32;

    let active: Vec<&Pod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let mut terminating = owned.iter().filter(|p| is_terminating(p)).count() as i32;
    let mut start_time = old.start_time.clone();
    let mut completion_time = old.completion_time.clone();

    // 3. What the Job is doing: finished, finishing, suspended or running.
    let mut finishing: Option<(Outcome, String, String)> = None;
    if !already_finished {
        let conditions_now = conditions.clone();
        if let Some(c) = condition_true(&conditions_now, "FailureTarget") {
            finishing = Some((
                Outcome::Failure,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ));
        } else if let Some(c) = condition_true(&conditions_now, "SuccessCriteriaMet") {
            finishing = Some((
                Outcome::Success,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ));
        } else if failed_total > backoff_limit
            || past_backoff_on_failure(job, &active, backoff_limit)
        {
            finishing = Some((
                Outcome::Failure,
                "BackoffLimitExceeded".into(),
                "Job has reached the specified backoff limit".into(),
            ));
        } else if let (Some(deadline), Some(start), false) =
            (spec.active_deadline_seconds, start_time.as_ref(), suspended)
        {
            let end = start
                .0
                .checked_add(SignedDuration::from_secs(deadline))
                .unwrap_or(start.0);
            if now >= end {
                finishing = Some((
                    Outcome::Failure,
                    "DeadlineExceeded".into(),
                    "Job was active longer than specified deadline".into(),
                ));
            } else {
                d.requeue_after = Some(secs(end.duration_since(now)));
            }
        }
    }

    let mut created = 0i32;
    let mut deleted: Vec<String> = Vec::new();
    if already_finished {
        // Whatever still runs goes.
        deleted.extend(active.iter().map(|p| name(p)));
    } else if let Some((outcome, reason, message)) = &finishing {
        let interim = match outcome {
            Outcome::Success => "SuccessCriteriaMet",
            Outcome::Failure => "FailureTarget",
        };
        set_condition(&mut conditions, interim, "True", reason, message, now);
        deleted.extend(active.iter().map(|p| name(p)));
    } else if suspended {
        if condition_true(&conditions, "Suspended").is_none() {
            set_condition(
                &mut conditions,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
                now,
            );
            d.events.push(Note {
                kind: "Normal",
                reason: "Suspended",
                message: "Job suspended".into(),
            });
        }
        deleted.extend(active.iter().map(|p| name(p)));
    } else {
        if condition_true(&conditions, "Suspended").is_some() {
            set_condition(
                &mut conditions,
                "Suspended",
                "False",
                "JobResumed",
                "Job resumed",
                now,
            );
            d.events.push(Note {
                kind: "Normal",
                reason: "Resumed",
                message: "Job resumed".into(),
            });
            // The deadline counts from the resumption.
            start_time = Some(Time(now));
        }
        if start_time.is_none() {
            start_time = Some(Time(now));
            if let Some(deadline) = spec.active_deadline_seconds {
                d.requeue_after = Some(Duration::from_secs(deadline.max(0) as u64));
            }
        }
        let want = match completions {
            Some(c) => (c - succeeded_total).clamp(0, parallelism),
            None if succeeded_total > 0 => active.len() as i32,
            None => parallelism,
        };
        // Back-off: failures since the last success, from the pods still
        // present.
        let last_success = owned
            .iter()
            .filter(|p| phase(p) == "Succeeded")
            .filter_map(|p| finish_time(p))
            .max();
        let failures: Vec<Timestamp> = owned
            .iter()
            .filter(|p| is_failed(p))
            .filter_map(|p| finish_time(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let wait = backoff_remaining(failures.len() as u32, failures.iter().max().copied(), now);

        if indexed {
            let c = completions.unwrap_or(0);
            let mut seen: BTreeSet<i32> = BTreeSet::new();
            let mut valid: Vec<&Pod> = Vec::new();
            let mut sorted = active.clone();
            // Oldest first, so that a duplicate newer pod is the one to go.
            sorted.sort_by_key(|p| std::cmp::Reverse(removal_rank(p).3));
            for pod in sorted {
                match completion_index(pod) {
                    Some(i) if i < c && !completed.contains(&i) && seen.insert(i) => {
                        valid.push(pod)
                    }
                    _ => deleted.push(name(pod)),
                }
            }
            let running = valid.len() as i32;
            if running > want {
                valid.sort_by_key(|p| removal_rank(p));
                deleted.extend(valid[..(running - want) as usize].iter().map(|p| name(p)));
            } else if running < want {
                if wait > Duration::ZERO {
                    d.requeue_after = Some(min_some(d.requeue_after, wait));
                } else {
                    let missing = (0..c).filter(|i| !completed.contains(i) && !seen.contains(i));
                    d.create = missing
                        .take(((want - running) as usize).min(BURST))
                        .map(Some)
                        .collect();
                }
            }
        } else {
            let running = active.len() as i32;
            if running > want {
                let mut sorted = active.clone();
                sorted.sort_by_key(|p| removal_rank(p));
                deleted.extend(sorted[..(running - want) as usize].iter().map(|p| name(p)));
            } else if running < want {
                if wait > Duration::ZERO {
                    d.requeue_after = Some(min_some(d.requeue_after, wait));
                } else {
                    d.create = vec![None; ((want - running) as usize).min(BURST)];
                }
            }
        }
        created = d.create.len() as i32;

        let active_after = active.len() as i32 - deleted.len() as i32 + created;
        let complete = match completions {
            Some(c) => succeeded_total >= c && active_after == 0,
            None => succeeded_total > 0 && active_after == 0,
        };
        if complete {
            let (reason, message) = (
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            );
            set_condition(
                &mut conditions,
                "SuccessCriteriaMet",
                "True",
                reason,
                message,
                now,
            );
            finishing = Some((Outcome::Success, reason.into(), message.into()));
        }
    }
    terminating += deleted.len() as i32;
    let active_after = active.len() as i32 - deleted.len() as i32 + created;

    // 4. The terminal condition once nothing of the Job is left running.
    if let Some((outcome, reason, message)) = &finishing {
        let settled = active_after == 0
            && terminating == 0
            && uncounted_succeeded.is_empty()
            && uncounted_failed.is_empty()
            && d.release.is_empty();
        if settled {
            match outcome {
                Outcome::Success => {
                    set_condition(&mut conditions, "Complete", "True", reason, message, now);
                    completion_time = Some(Time(now));
                    d.events.push(Note {
                        kind: "Normal",
                        reason: "Completed",
                        message: "Job completed".into(),
                    });
                }
                Outcome::Failure => {
                    set_condition(&mut conditions, "Failed", "True", reason, message, now);
                    d.events.push(Note {
                        kind: "Warning",
                        reason: static_reason(reason),
                        message: message.clone(),
                    });
                }
            }
        } else if !d.release.is_empty() {
            // The finalizer release brings the pods back through the watch;
            // this is only a safety net.
            d.requeue_after = Some(min_some(d.requeue_after, Duration::from_secs(1)));
        }
    }

    // 5. TTL after finishing.
    if let Some(ttl) = spec.ttl_seconds_after_finished {
        let finished_at = condition_true(&conditions, "Complete")
            .or_else(|| condition_true(&conditions, "Failed"))
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0);
        if let Some(at) = finished_at {
            let expires = at
                .checked_add(SignedDuration::from_secs(i64::from(ttl)))
                .unwrap_or(at);
            if now >= expires {
                d.delete_job = true;
            } else {
                d.requeue_after =
                    Some(min_some(d.requeue_after, secs(expires.duration_since(now))));
            }
        }
    }

    let ready = active
        .iter()
        .filter(|p| is_ready(p) && !deleted.contains(&name(p)))
        .count() as i32;
    let list =
        |set: BTreeSet<String>| (!set.is_empty()).then(|| set.into_iter().collect::<Vec<_>>());
    d.status = JobStatus {
        active: Some(active_after.max(0)),
        ready: Some(ready),
        // Only what is counted: the uncounted uids are kept apart until
        // their pods are released.
        succeeded: Some(if indexed { succeeded_total } else { succeeded }),
        failed: Some(failed),
        terminating: Some(terminating),
        start_time,
        completion_time,
        completed_indexes: indexed.then(|| format_indexes(&completed)),
        conditions: (!conditions.is_empty()).then_some(conditions),
        uncounted_terminated_pods: Some(UncountedTerminatedPods {
            succeeded: list(uncounted_succeeded),
            failed: list(uncounted_failed),
        }),
        failed_indexes: old.failed_indexes.clone(),
    };
    d.delete = deleted;
    d
}

fn min_some(a: Option<Duration>, b: Duration) -> Duration {
    a.map_or(b, |a| a.min(b))
}

fn static_reason(reason: &str) -> &'static str {
    match reason {
        "BackoffLimitExceeded" => "BackoffLimitExceeded",
        "DeadlineExceeded" => "DeadlineExceeded",
        _ => "Failed",
    }
}

/// The status as a merge patch: empty uncounted lists are cleared.
pub fn status_patch(status: &JobStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or(Value::Null);
    let uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    value["uncountedTerminatedPods"] = json!({
        "succeeded": uncounted.succeeded,
        "failed": uncounted.failed,
    });
    json!({ "status": value })
}

/// Whether `want` differs from what is stored.
pub fn status_changed(old: Option<&JobStatus>, want: &JobStatus) -> bool {
    let normalize = |s: &JobStatus| {
        let mut s = s.clone();
        let u = s.uncounted_terminated_pods.take().unwrap_or_default();
        let keep = |l: Option<Vec<String>>| l.filter(|l| !l.is_empty());
        s.uncounted_terminated_pods = Some(UncountedTerminatedPods {
            succeeded: keep(u.succeeded),
            failed: keep(u.failed),
        });
        for field in [
            &mut s.active,
            &mut s.ready,
            &mut s.succeeded,
            &mut s.failed,
            &mut s.terminating,
        ] {
            if field.is_none() {
                *field = Some(0);
            }
        }
        s
    };
    normalize(&old.cloned().unwrap_or_default()) != normalize(want)
}

/// A pod for `job` (and completion `index` of an Indexed Job), as
/// Kubernetes makes it: `<job>-` (or `<job>-<index>-`) and five random
/// characters, the Job's labels, the tracking finalizer, the Job as
/// controlling owner; an Indexed pod gets its index as annotation, label,
/// `JOB_COMPLETION_INDEX` and hostname `<job>-<index>`.
pub fn new_pod(job: &Job, index: Option<i32>) -> Option<Pod> {
    let job_name = job.metadata.name.clone()?;
    let job_uid = job.metadata.uid.clone()?;
    let template = job.spec.as_ref()?.template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &job_uid),
        ("batch.kubernetes.io/job-name", &job_name),
        ("controller-uid", &job_uid),
        ("job-name", &job_name),
    ] {
        labels
            .entry(key.to_string())
            .or_insert_with(|| value.clone());
    }
    let mut spec = serde_json::to_value(template.spec?).ok()?;
    let generate_name = match index {
        Some(i) => {
            labels.insert(INDEX_KEY.into(), i.to_string());
            annotations.insert(INDEX_KEY.into(), i.to_string());
            if spec
                .get("hostname")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .is_empty()
            {
                spec["hostname"] = json!(format!("{job_name}-{i}"));
            }
            let env = json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
                "fieldPath": format!("metadata.annotations['{INDEX_KEY}']")}}});
            for list in ["containers", "initContainers"] {
                for container in spec
                    .get_mut(list)
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    let vars = container
                        .as_object_mut()
                        .map(|c| c.entry("env").or_insert_with(|| json!([])));
                    if let Some(vars) = vars.and_then(Value::as_array_mut) {
                        if !vars.iter().any(|v| v["name"] == "JOB_COMPLETION_INDEX") {
                            vars.push(env.clone());
                        }
                    }
                }
            }
            format!("{job_name}-{i}-")
        }
        None => format!("{job_name}-"),
    };
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": generate_name,
            "labels": labels,
            "annotations": annotations,
            "finalizers": [TRACKING_FINALIZER],
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": job_name,
                "uid": job_uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    }))
    .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-03-10T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().unwrap()
    }

    fn job(spec: Value, status: Value) -> Job {
        let mut spec_full = json!({
            "parallelism": 1, "backoffLimit": 6, "completionMode": "NonIndexed", "suspend": false,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}
        });
        for (k, v) in spec.as_object().unwrap() {
            spec_full[k] = v.clone();
        }
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "default", "uid": "job-1"},
            "spec": spec_full,
            "status": status,
        }))
        .unwrap()
    }

    /// A pod of the job: `phase` Pending/Running/Succeeded/Failed, with
    /// the finalizer unless `released`.
    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "uid": format!("uid-{name}"), "creationTimestamp": "2026-03-10T11:00:00Z",
                         "finalizers": [TRACKING_FINALIZER],
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job-1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if phase == "Running" { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn finished_at(mut p: Pod, at: &str) -> Pod {
        let status = p.status.get_or_insert_with(Default::default);
        status.container_statuses = Some(vec![serde_json::from_value(json!({
            "name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 1, "finishedAt": at}}
        }))
        .unwrap()]);
        p
    }

    fn released(mut p: Pod) -> Pod {
        p.metadata.finalizers = None;
        p
    }

    fn indexed(mut p: Pod, i: i32) -> Pod {
        p.metadata.annotations = Some([(INDEX_KEY.to_string(), i.to_string())].into());
        p
    }

    fn has(status: &JobStatus, kind: &str) -> bool {
        condition_true(status.conditions.as_deref().unwrap_or_default(), kind).is_some()
    }

    #[test]
    fn starts_parallelism_pods_within_completions() {
        let j = job(json!({"completions": 10, "parallelism": 3}), json!({}));
        let d = decide(&j, &[], now());
        assert_eq!(d.create, vec![None, None, None]);
        assert_eq!(d.status.active, Some(3));
        assert_eq!(d.status.start_time, Some(Time(now())));
        // Two to go and one running: one more.
        let j = job(
            json!({"completions": 10, "parallelism": 3}),
            json!({"succeeded": 8, "startTime": NOW}),
        );
        let d = decide(&j, &[pod("a", "Running")], now());
        assert_eq!(d.create, vec![None]);
        assert_eq!(d.status.ready, Some(1));
    }

    #[test]
    fn a_pod_is_counted_once_through_the_finalizer() {
        let j = job(json!({"completions": 2}), json!({"startTime": NOW}));
        let done = pod("a", "Succeeded");
        // First pass: the uid goes into the uncounted list, the pod is
        // released, and one more pod starts.
        let d = decide(&j, std::slice::from_ref(&done), now());
        assert_eq!(
            d.status
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .succeeded,
            Some(vec!["uid-a".to_string()])
        );
        assert_eq!(d.release, vec!["a"]);
        assert_eq!(d.status.succeeded, Some(0));
        assert_eq!(d.create.len(), 1);
        // Second pass (status written, finalizer gone): counted, and not
        // again.
        let j = job(
            json!({"completions": 2}),
            serde_json::to_value(&d.status).unwrap(),
        );
        let d = decide(&j, &[released(done.clone()), pod("b", "Running")], now());
        assert_eq!(d.status.succeeded, Some(1));
        assert_eq!(
            d.status
                .uncounted_terminated_pods
                .as_ref()
                .unwrap()
                .succeeded,
            None
        );
        assert!(d.release.is_empty() && d.create.is_empty());
        // The counted pod deleted: the count stays.
        let j = job(
            json!({"completions": 2}),
            serde_json::to_value(&d.status).unwrap(),
        );
        let d = decide(&j, &[pod("b", "Running")], now());
        assert_eq!(d.status.succeeded, Some(1));
        assert!(d.create.is_empty());
    }

    #[test]
    fn completes_with_interim_then_final_condition() {
        let j = job(json!({"completions": 1}), json!({"startTime": NOW}));
        let d = decide(&j, &[pod("a", "Succeeded")], now());
        assert!(has(&d.status, "SuccessCriteriaMet"));
        assert!(!has(&d.status, "Complete"));
        assert!(d.events.is_empty());
        let j = job(
            json!({"completions": 1}),
            serde_json::to_value(&d.status).unwrap(),
        );
        let d = decide(&j, &[released(pod("a", "Succeeded"))], now());
        assert!(has(&d.status, "Complete"));
        assert_eq!(d.status.succeeded, Some(1));
        assert_eq!(d.status.completion_time, Some(Time(now())));
        assert_eq!(d.events[0].reason, "Completed");
        assert_eq!(d.events[0].message, "Job completed");
    }

    #[test]
    fn failures_back_off_then_exceed_the_limit() {
        let spec = json!({"backoffLimit": 2});
        let a = finished_at(released(pod("a", "Failed")), "2026-03-10T11:59:55Z");
        let j = job(spec.clone(), json!({"startTime": NOW, "failed": 1}));
        // One failure 5 s ago: 5 s more to wait.
        let d = decide(&j, std::slice::from_ref(&a), now());
        assert!(d.create.is_empty());
        assert_eq!(d.requeue_after, Some(Duration::from_secs(5)));
        // Two failures, the last 5 s ago: 20 s back-off, 15 s left.
        let b = finished_at(released(pod("b", "Failed")), "2026-03-10T11:59:45Z");
        let j = job(spec.clone(), json!({"startTime": NOW, "failed": 2}));
        let d = decide(&j, &[a.clone(), b.clone()], now());
        assert_eq!(d.requeue_after, Some(Duration::from_secs(15)));
        // A third: past the limit of 2.
        let c = finished_at(pod("c", "Failed"), "2026-03-10T11:59:59Z");
        let d = decide(&j, &[a, b, c], now());
        assert!(has(&d.status, "FailureTarget"));
        assert_eq!(d.status.failed, Some(2));
        assert_eq!(d.release, vec!["c"]);
        let j = job(spec, serde_json::to_value(&d.status).unwrap());
        let d = decide(&j, &[], now());
        assert!(has(&d.status, "Failed"));
        assert_eq!(d.events[0].reason, "BackoffLimitExceeded");
        assert_eq!(d.status.completion_time, None);
    }

    #[test]
    fn backoff_doubles_up_to_six_minutes() {
        let t = now();
        assert_eq!(backoff_remaining(1, Some(t), t), Duration::from_secs(10));
        assert_eq!(backoff_remaining(3, Some(t), t), Duration::from_secs(40));
        assert_eq!(backoff_remaining(10, Some(t), t), Duration::from_secs(360));
        assert_eq!(backoff_remaining(0, Some(t), t), Duration::ZERO);
    }

    #[test]
    fn on_failure_restarts_count_against_the_limit() {
        let mut j = job(json!({"backoffLimit": 2}), json!({"startTime": NOW}));
        if let Some(t) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
            t.restart_policy = Some("OnFailure".into());
        }
        let mut p = pod("a", "Running");
        p.status.as_mut().unwrap().container_statuses = Some(vec![serde_json::from_value(
            json!({"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2}),
        )
        .unwrap()]);
        let d = decide(&j, &[p], now());
        assert!(has(&d.status, "FailureTarget"));
        assert_eq!(d.delete, vec!["a"]);
    }

    #[test]
    fn the_deadline_fails_the_job_and_deletes_its_pods() {
        let spec = json!({"activeDeadlineSeconds": 30});
        let j = job(spec.clone(), json!({"startTime": "2026-03-10T11:59:50Z"}));
        let d = decide(&j, &[pod("a", "Running")], now());
        assert_eq!(d.requeue_after, Some(Duration::from_secs(20)));
        assert!(d.delete.is_empty());
        let j = job(spec, json!({"startTime": "2026-03-10T11:59:00Z"}));
        let d = decide(&j, &[pod("a", "Running")], now());
        assert_eq!(d.delete, vec!["a"]);
        let target =
            condition_true(d.status.conditions.as_deref().unwrap(), "FailureTarget").unwrap();
        assert_eq!(target.reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(d.status.terminating, Some(1));
    }

    #[test]
    fn indexed_jobs_fill_missing_indexes() {
        let spec = json!({"completions": 5, "parallelism": 2, "completionMode": "Indexed"});
        let j = job(
            spec.clone(),
            json!({"startTime": NOW, "completedIndexes": "0,1", "succeeded": 2}),
        );
        let pods = [
            indexed(pod("pi-2-abcde", "Running"), 2),
            indexed(pod("pi-3-abcde", "Succeeded"), 3),
        ];
        let d = decide(&j, &pods, now());
        assert_eq!(d.status.completed_indexes.as_deref(), Some("0,1,3"));
        assert_eq!(d.status.succeeded, Some(3));
        assert_eq!(d.create, vec![Some(4)]);
        assert_eq!(d.release, vec!["pi-3-abcde"]);
        // A duplicate of a running index goes.
        let pods = [
            indexed(pod("pi-2-aaaaa", "Running"), 2),
            indexed(pod("pi-2-bbbbb", "Running"), 2),
        ];
        let mut pods = pods.to_vec();
        pods[1].metadata.creation_timestamp = Some(Time("2026-03-10T11:30:00Z".parse().unwrap()));
        let d = decide(&j, &pods, now());
        assert_eq!(d.delete, vec!["pi-2-bbbbb"]);
    }

    #[test]
    fn index_sets_print_as_kubernetes() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into();
        assert_eq!(format_indexes(&set), "0-2,4,6,7");
        assert_eq!(parse_indexes("0-2,4,6,7"), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
        assert_eq!(parse_indexes("x,3-,5"), [5].into());
    }

    #[test]
    fn suspend_deletes_pods_without_counting_them() {
        let spec = json!({"suspend": true, "completions": 3});
        let j = job(spec, json!({"startTime": NOW}));
        let d = decide(&j, &[pod("a", "Running")], now());
        assert_eq!(d.delete, vec!["a"]);
        assert!(has(&d.status, "Suspended"));
        assert_eq!(d.events[0].reason, "Suspended");
        let mut gone = pod("a", "Running");
        gone.metadata.deletion_timestamp = Some(Time(now()));
        let j = job(
            json!({"suspend": true, "completions": 3}),
            serde_json::to_value(&d.status).unwrap(),
        );
        let d = decide(&j, &[gone], now());
        assert_eq!(d.status.failed, Some(0));
        assert_eq!(d.release, vec!["a"]);
        // Resumed: a new start time and pods again.
        let j = job(
            json!({"completions": 3}),
            serde_json::to_value(&d.status).unwrap(),
        );
        let d = decide(&j, &[], now());
        assert_eq!(d.create.len(), 1);
        assert_eq!(d.events[0].reason, "Resumed");
    }

    #[test]
    fn ttl_deletes_the_finished_job() {
        let status = json!({"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": "2026-03-10T11:59:55Z"}]});
        let j = job(json!({"ttlSecondsAfterFinished": 10}), status.clone());
        let d = decide(&j, &[], now());
        assert!(!d.delete_job);
        assert_eq!(d.requeue_after, Some(Duration::from_secs(5)));
        let j = job(json!({"ttlSecondsAfterFinished": 0}), status);
        assert!(decide(&j, &[], now()).delete_job);
    }

    #[test]
    fn work_queue_jobs_finish_after_one_success_and_the_rest() {
        let mut j = job(json!({"parallelism": 2}), json!({"startTime": NOW}));
        j.spec.as_mut().unwrap().completions = None;
        let d = decide(&j, &[], now());
        assert_eq!(d.create.len(), 2);
        // One success (counted): no more pods, and the other one finishes.
        let mut j = job(
            json!({"parallelism": 2}),
            json!({"startTime": NOW, "succeeded": 1}),
        );
        j.spec.as_mut().unwrap().completions = None;
        let d = decide(
            &j,
            &[released(pod("a", "Succeeded")), pod("b", "Running")],
            now(),
        );
        assert!(d.create.is_empty() && d.delete.is_empty());
        assert!(!has(&d.status, "SuccessCriteriaMet"));
    }

    #[test]
    fn pods_carry_names_labels_and_index() {
        let j = job(
            json!({"completionMode": "Indexed", "completions": 3}),
            json!({}),
        );
        let p = new_pod(&j, Some(2)).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(labels["controller-uid"], "job-1");
        assert_eq!(labels[INDEX_KEY], "2");
        assert_eq!(p.metadata.annotations.unwrap()[INDEX_KEY], "2");
        assert_eq!(p.metadata.finalizers.unwrap(), vec![TRACKING_FINALIZER]);
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        assert_eq!(
            spec.containers[0].env.as_ref().unwrap()[0].name,
            "JOB_COMPLETION_INDEX"
        );
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(true))
        );
        let p = new_pod(&job(json!({}), json!({})), None).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
    }
}
