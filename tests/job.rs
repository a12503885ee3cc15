//! Jobs on simulated nodes, driven by kubectl: the guide's parallel Job
//! (10 completions, 3 at a time), a Job that fails past its backoff limit,
//! an Indexed Job deleted by its TTL, and `kubectl delete job` taking the
//! pods with it.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

/// (name, phase, being deleted) of the pods of a job.
fn pods_of(up: &ShoalUp, job: &str) -> Vec<(String, String, bool)> {
    let out = up.ok(&[
        "get", "pods", "-l", &format!("job-name={job}"), "-o",
        "jsonpath={range .items[*]}{.metadata.name}|{.status.phase}|{.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let mut parts = l.split('|');
            Some((
                parts.next()?.to_string(),
                parts.next()?.to_string(),
                !parts.next()?.is_empty(),
            ))
        })
        .collect()
}

fn job_row(up: &ShoalUp, job: &str) -> Vec<String> {
    up.ok(&["get", "job", job, "--no-headers"])
        .split_whitespace()
        .map(str::to_string)
        .collect()
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

fn jsonpath(up: &ShoalUp, kind: &str, name: &str, path: &str) -> String {
    up.ok(&["get", kind, name, "-o", &format!("jsonpath={path}")])
}

#[test]
fn timestamps_convert() {
    assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(epoch_seconds("2024-01-03T05:20:00Z"), Some(28_404_320 * 60));
}

#[test]
fn the_guides_parallel_job_runs_ten_pods_three_at_a_time() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    assert_eq!(
        up.ok(&["apply", "-f", &manifest("job-parallel.yaml")])
            .trim(),
        "job.batch/database-backup created"
    );
    let header = up.ok(&["get", "job", "database-backup"]);
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("COMPLETIONS"),
        "{header}"
    );

    // Watch the pods until the job is complete: never more than
    // parallelism (3) active at once.
    let mut most_active = 0;
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let pods = pods_of(&up, "database-backup");
        let active = pods
            .iter()
            .filter(|(_, phase, deleting)| !deleting && phase != "Succeeded" && phase != "Failed")
            .count();
        most_active = most_active.max(active);
        seen.extend(pods.into_iter().map(|(name, _, _)| name));
        let row = job_row(&up, "database-backup");
        if row.get(1).map(String::as_str) == Some("Complete") {
            assert_eq!(row[2], "10/10", "{row:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not complete in 90 s: {row:?}\n{}",
            up.ok(&["get", "pods"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(most_active <= 3, "{most_active} pods active at once");
    assert!(most_active >= 2, "only {most_active} pod active at once");

    // Ten pods, all Completed, named <job>-xxxxx.
    let listing = up.ok(&["get", "pods", "--no-headers"]);
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|r: &Vec<&str>| r[0].starts_with("database-backup-"))
        .collect();
    assert_eq!(rows.len(), 10, "{listing}");
    for row in &rows {
        assert_eq!(row[0].len(), "database-backup-".len() + 5, "{listing}");
        assert_eq!(&row[1..4], ["0/1", "Completed", "0"], "{listing}");
    }
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(
        jsonpath(&up, "job", "database-backup", "{.status.succeeded}"),
        "10"
    );

    let described = up.ok(&["describe", "job", "database-backup"]);
    let flat = described.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "Completions: 10",
        "Parallelism: 3",
        "0 Active (0 Ready) / 10 Succeeded / 0 Failed",
        "Created pod: database-backup-",
        "Completed",
        "Job completed",
    ] {
        assert!(flat.contains(expected), "{expected:?} in:\n{described}");
    }
    let labels = jsonpath(&up, "pod", rows[0][0], "{.metadata.labels}");
    for key in [
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-name",
        "\"controller-uid\"",
        "\"job-name\"",
    ] {
        assert!(labels.contains(key), "{key} in {labels}");
    }
    // The Job itself carries its template's labels, so it can be selected.
    assert_eq!(
        up.ok(&[
            "get",
            "jobs",
            "-l",
            "job-name=database-backup",
            "-o",
            "name"
        ])
        .trim(),
        "job.batch/database-backup"
    );

    // The job goes, and its pods with it (garbage collector).
    assert_eq!(
        up.ok(&["delete", "job", "database-backup"]).trim(),
        "job.batch \"database-backup\" deleted"
    );
    assert!(
        eventually(Duration::from_secs(30), || pods_of(&up, "database-backup")
            .is_empty()),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
}

#[test]
fn a_job_fails_past_its_backoff_limit() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 2, "node");
    up.ok(&["apply", "-f", &manifest("job-failing.yaml")]);
    // Three failures: 0.5 s runs with 10 s and 20 s of back-off between.
    assert!(
        eventually(Duration::from_secs(90), || {
            job_row(&up, "always-fails").get(1).map(String::as_str) == Some("Failed")
        }),
        "{:?}\n{}",
        job_row(&up, "always-fails"),
        up.ok(&["get", "pods"])
    );
    assert_eq!(
        jsonpath(&up, "job", "always-fails", "{.status.failed}"),
        "3"
    );
    assert_eq!(job_row(&up, "always-fails")[2], "0/1");
    let pods = pods_of(&up, "always-fails");
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(
        pods.iter().all(|(_, phase, _)| phase == "Failed"),
        "{pods:?}"
    );
    let listing = up.ok(&["get", "pods", "--no-headers"]);
    assert_eq!(
        listing.lines().filter(|l| l.contains(" Error ")).count(),
        3,
        "{listing}"
    );
    // The back-off: the second pod started at least 10 s after the first
    // failed.
    let starts = up.ok(&[
        "get",
        "pods",
        "-l",
        "job-name=always-fails",
        "--sort-by=.metadata.creationTimestamp",
        "-o",
        "jsonpath={range .items[*]}{.metadata.creationTimestamp} {end}",
    ]);
    let times: Vec<i64> = starts
        .split_whitespace()
        .filter_map(epoch_seconds)
        .collect();
    assert_eq!(times.len(), 3, "{starts}");
    assert!(times[1] - times[0] >= 10, "{starts}");
    assert!(times[2] - times[1] >= 20, "{starts}");

    let described = up.ok(&["describe", "job", "always-fails"]);
    let flat = described.split_whitespace().collect::<Vec<_>>().join(" ");
    for expected in [
        "0 Active (0 Ready) / 0 Succeeded / 3 Failed",
        "BackoffLimitExceeded",
        "Job has reached the specified backoff limit",
    ] {
        assert!(flat.contains(expected), "{expected:?} in:\n{described}");
    }
}

#[test]
fn an_indexed_job_names_its_pods_by_index_and_its_ttl_deletes_it() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 2, "node");
    up.ok(&["apply", "-f", &manifest("job-indexed.yaml")]);
    let mut pods = Vec::new();
    assert!(
        eventually(Duration::from_secs(60), || {
            let current = pods_of(&up, "shards");
            if !current.is_empty() {
                pods = current;
            }
            jsonpath(&up, "job", "shards", "{.status.completedIndexes}") == "0-3"
        }),
        "{pods:?}"
    );
    // One pod per index, `shards-<i>-xxxxx`, with its hostname.
    let mut indexes: Vec<String> = Vec::new();
    for (name, _, _) in &pods {
        let parts: Vec<&str> = name.split('-').collect();
        assert_eq!(parts.len(), 3, "{name}");
        assert_eq!(parts[0], "shards");
        assert_eq!(parts[2].len(), 5, "{name}");
        indexes.push(parts[1].to_string());
        let got = up.kubectl(&[
            "get", "pod", name, "-o",
            "jsonpath={.spec.hostname} {.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}",
        ]);
        if got.status.success() {
            let text = String::from_utf8_lossy(&got.stdout).into_owned();
            assert_eq!(text, format!("shards-{} {}", parts[1], parts[1]));
        }
    }
    indexes.sort();
    assert_eq!(indexes, ["0", "1", "2", "3"], "{pods:?}");

    // ttlSecondsAfterFinished: 2: the job goes, and its pods.
    assert!(
        eventually(Duration::from_secs(30), || {
            !up.kubectl(&["get", "job", "shards"]).status.success()
        }),
        "the job is still there"
    );
    assert!(
        eventually(Duration::from_secs(30), || pods_of(&up, "shards")
            .is_empty()),
        "{:?}",
        pods_of(&up, "shards")
    );
}

const DEADLINE: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: too-slow
spec:
  activeDeadlineSeconds: 3
  parallelism: 2
  completions: 2
  template:
    metadata:
      annotations:
        simulate.shoal.dev/duration: 10m
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
"#;

const SUSPENDED: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: on-hold
spec:
  suspend: true
  template:
    metadata:
      annotations:
        simulate.shoal.dev/duration: 1s
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
"#;

const CRASHING: &str = r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: crash-loop
spec:
  backoffLimit: 2
  template:
    metadata:
      annotations:
        simulate.shoal.dev/duration: 1s
        simulate.shoal.dev/exit-code: "3"
    spec:
      restartPolicy: OnFailure
      containers:
      - name: main
        image: busybox
"#;

#[test]
fn deadlines_suspension_and_restarts_in_place() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 2, "node");
    for manifest in [DEADLINE, SUSPENDED, CRASHING] {
        let out = up.kubectl_with(&["apply", "-f", "-"], Some(manifest), &[]);
        assert!(out.status.success(), "{out:?}");
    }

    // Suspended: no pods, STATUS Suspended.
    assert!(
        eventually(Duration::from_secs(20), || {
            job_row(&up, "on-hold").get(1).map(String::as_str) == Some("Suspended")
        }),
        "{:?}",
        job_row(&up, "on-hold")
    );
    assert!(pods_of(&up, "on-hold").is_empty());

    // Past activeDeadlineSeconds: Failed, its running pods deleted.
    assert!(
        eventually(Duration::from_secs(30), || {
            job_row(&up, "too-slow").get(1).map(String::as_str) == Some("Failed")
        }),
        "{:?}\n{}",
        job_row(&up, "too-slow"),
        up.ok(&["get", "pods"])
    );
    assert!(
        eventually(Duration::from_secs(20), || pods_of(&up, "too-slow")
            .is_empty()),
        "{:?}",
        pods_of(&up, "too-slow")
    );
    let described = up.ok(&["describe", "job", "too-slow"]);
    assert!(
        described.contains("DeadlineExceeded")
            && described.contains("Job was active longer than specified deadline"),
        "{described}"
    );

    // OnFailure: the pod restarts in place until the restarts reach the
    // backoff limit.
    assert!(
        eventually(Duration::from_secs(30), || {
            job_row(&up, "crash-loop").get(1).map(String::as_str) == Some("Failed")
        }),
        "{:?}\n{}",
        job_row(&up, "crash-loop"),
        up.ok(&["get", "pods"])
    );
    let described = up.ok(&["describe", "job", "crash-loop"]);
    assert!(described.contains("BackoffLimitExceeded"), "{described}");

    // Resumed: it runs to completion.
    up.ok(&[
        "patch",
        "job",
        "on-hold",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let row = job_row(&up, "on-hold");
            row.get(1).map(String::as_str) == Some("Complete") && row[2] == "1/1"
        }),
        "{:?}",
        job_row(&up, "on-hold")
    );
    let described = up.ok(&["describe", "job", "on-hold"]);
    assert!(
        described.contains("Suspended") && described.contains("Resumed"),
        "{described}"
    );
}
