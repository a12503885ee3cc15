//! A CronJob on simulated nodes, driven by kubectl: every minute, one at a
//! time (Forbid). Its Job `<cronjob>-<minutes since the epoch>` appears at
//! the minute, completes and leaves the active list; `kubectl create job
//! --from=cronjob/...` works; suspended, it starts nothing more.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026-03-10T12:00:00Z` → seconds since the epoch.
fn epoch_seconds(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (y, m, day) = (d.first()?, d.get(1)?, d.get(2)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if *m <= 2 { y - 1 } else { *y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if *m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + t.first()? * 3600 + t.get(1)? * 60 + t.get(2)?)
}

/// The minutes N of the jobs named `minutely-N`.
fn scheduled_jobs(up: &ShoalUp) -> Vec<i64> {
    up.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"])
        .split_whitespace()
        .filter_map(|n| n.strip_prefix("minutely-")?.parse().ok())
        .collect()
}

fn cronjob_row(up: &ShoalUp) -> String {
    up.ok(&["get", "cronjob", "minutely", "--no-headers"])
}

#[test]
fn a_minutely_cronjob_starts_jobs_and_stops_when_suspended() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 2, "node");
    let created = unix_now();
    assert_eq!(
        up.ok(&["apply", "-f", &manifest("cronjob-minutely.yaml")])
            .trim(),
        "cronjob.batch/minutely created"
    );
    let listing = up.ok(&["get", "cronjob"]);
    assert!(
        listing.contains("SCHEDULE") && listing.contains("LAST SCHEDULE"),
        "{listing}"
    );
    let row = cronjob_row(&up);
    assert!(
        row.starts_with("minutely") && row.contains("*/1 * * * *") && row.contains("False"),
        "{row}"
    );

    // The first minute boundary after creation starts a job.
    let mut first = None;
    assert!(
        eventually(Duration::from_secs(75), || {
            first = scheduled_jobs(&up).into_iter().min();
            first.is_some()
        }),
        "no job: {}",
        up.ok(&["get", "jobs,cronjobs"])
    );
    let minute = first.unwrap_or_default();
    let scheduled = minute * 60;
    assert!(
        scheduled > created - 60 && scheduled <= unix_now(),
        "minutely-{minute} scheduled at {scheduled}, created at {created}"
    );
    let job = format!("minutely-{minute}");
    let annotation = up.ok(&[
        "get",
        "job",
        &job,
        "-o",
        "jsonpath={.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}",
    ]);
    assert_eq!(epoch_seconds(&annotation), Some(scheduled), "{annotation}");
    let owner = up.ok(&[
        "get",
        "job",
        &job,
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}",
    ]);
    assert_eq!(owner, "CronJob/minutely");
    let labels = up.ok(&["get", "job", &job, "-o", "jsonpath={.metadata.labels.app}"]);
    assert_eq!(labels, "minutely");

    // LAST SCHEDULE is set; the job completes (2 s) and leaves ACTIVE.
    assert!(
        eventually(Duration::from_secs(30), || {
            let status = up.ok(&["get", "job", &job, "--no-headers"]);
            let cj: Vec<String> = cronjob_row(&up)
                .split_whitespace()
                .map(str::to_string)
                .collect();
            // NAME, 5 schedule fields, TIMEZONE, SUSPEND, ACTIVE, LAST SCHEDULE, AGE
            status.contains("Complete")
                && cj.len() == 11
                && cj[7] == "False"
                && cj[8] == "0"
                && cj[9] != "<none>"
        }),
        "{}\n{}",
        up.ok(&["get", "jobs"]),
        cronjob_row(&up)
    );
    let described = up.ok(&["describe", "cronjob", "minutely"]);
    for expected in [
        format!("Created job {job}"),
        format!("Saw completed job: {job}, condition: Complete"),
    ] {
        assert!(
            described.contains(&expected),
            "{expected:?} in:\n{described}"
        );
    }
    assert!(!up
        .ok(&[
            "get",
            "cronjob",
            "minutely",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}"
        ])
        .is_empty());

    // A job by hand from the template.
    assert_eq!(
        up.ok(&["create", "job", "--from=cronjob/minutely", "manual-1"])
            .trim(),
        "job.batch/manual-1 created"
    );
    assert!(
        eventually(Duration::from_secs(30), || up
            .ok(&["get", "job", "manual-1", "--no-headers"])
            .contains("Complete")),
        "{}",
        up.ok(&["get", "jobs"])
    );

    // Suspended: SUSPEND True, and no job for the minutes after.
    assert_eq!(
        up.ok(&[
            "patch",
            "cronjob",
            "minutely",
            "-p",
            r#"{"spec":{"suspend":true}}"#
        ])
        .trim(),
        "cronjob.batch/minutely patched"
    );
    let suspended_at = unix_now();
    let row: Vec<String> = cronjob_row(&up)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(row.get(7).map(String::as_str), Some("True"), "{row:?}");
    // Past the next minute boundary (a negative: nothing to poll for).
    let next_boundary = (suspended_at / 60 + 1) * 60;
    let wait = (next_boundary + 4 - unix_now()).max(0) as u64;
    std::thread::sleep(Duration::from_secs(wait));
    let later: Vec<i64> = scheduled_jobs(&up)
        .into_iter()
        .filter(|m| m * 60 > suspended_at)
        .collect();
    assert!(
        later.is_empty(),
        "started while suspended: {later:?}\n{}",
        up.ok(&["get", "jobs"])
    );
}

#[test]
fn bad_schedules_are_rejected() {
    let up = ShoalUp::start();
    for schedule in ["61 * * * *", "TZ=UTC 0 2 * * *", "every day"] {
        let err = up.fails(&[
            "create",
            "cronjob",
            "bad",
            "--image=busybox",
            &format!("--schedule={schedule}"),
        ]);
        assert!(err.contains("spec.schedule"), "{schedule:?}: {err}");
    }
}
