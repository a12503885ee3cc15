//! The guide's StatefulSet (headless Service + `postgres` with a
//! volumeClaimTemplate) on three simulated nodes, driven with kubectl:
//! ordered creation, claims bound to local volumes on the pods' nodes,
//! ordered scale-down that keeps the claims, the partition canary, rollout
//! history/undo/status, cascade deletion; and a node lost under a pod that
//! must not be duplicated.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes, KUBECTL};

/// `kubectl get pods -w` into a file, for the order things happened in.
struct PodWatch {
    child: Child,
    path: std::path::PathBuf,
}

impl PodWatch {
    fn start(up: &ShoalUp, name: &str) -> PodWatch {
        let path = up.data_dir().join(name);
        let file = std::fs::File::create(&path).expect("watch file");
        let child = Command::new(KUBECTL)
            .args(["get", "pods", "-l", "app=postgres", "-w", "--no-headers"])
            .env("KUBECONFIG", &up.kubeconfig)
            .env("HOME", up.data_dir())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl get -w");
        PodWatch { child, path }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn position(lines: &[String], what: impl Fn(&str) -> bool) -> Option<usize> {
    lines.iter().position(|l| what(l))
}

fn ready_count(up: &ShoalUp) -> String {
    up.ok(&["get", "statefulset", "postgres", "--no-headers"])
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

fn jsonpath(up: &ShoalUp, args: &[&str], path: &str) -> String {
    let expr = format!("jsonpath={path}");
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["-o", &expr]);
    up.ok(&all)
}

fn images(up: &ShoalUp) -> String {
    jsonpath(
        up,
        &["get", "pods", "-l", "app=postgres"],
        "{range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}",
    )
    .trim()
    .to_string()
}

/// The node a claim's volume lives on.
fn volume_node(up: &ShoalUp, claim: &str) -> String {
    let volume = jsonpath(up, &["get", "pvc", claim], "{.spec.volumeName}");
    jsonpath(
        up,
        &["get", "pv", &volume],
        "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}",
    )
}

fn wait_nodes(up: &ShoalUp) {
    assert!(eventually(Duration::from_secs(20), || {
        up.ok(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 3
    }));
}

#[test]
fn statefulset_orders_pods_binds_volumes_scales_and_rolls() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    wait_nodes(&up);
    assert!(eventually(Duration::from_secs(20), || {
        up.ok(&["get", "storageclass", "--no-headers"])
            .split_whitespace()
            .collect::<Vec<_>>()
            .starts_with(&[
                "standard",
                "(default)",
                "shoal.dev/local",
                "Delete",
                "WaitForFirstConsumer",
            ])
    }));
    let watch = PodWatch::start(&up, "create.watch");
    std::thread::sleep(Duration::from_millis(500));
    let applied = up.ok(&["apply", "-f", &manifest("statefulset.yaml")]);
    assert_eq!(
        applied.trim(),
        "service/postgres created\nstatefulset.apps/postgres created"
    );
    assert!(
        eventually(Duration::from_secs(60), || ready_count(&up) == "3/3"),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );

    // Created in order, each after the one before it was Running and Ready.
    assert!(eventually(Duration::from_secs(5), || {
        position(&watch.lines(), |l| l.starts_with("postgres-2 1/1 Running")).is_some()
    }));
    let lines = watch.lines();
    for i in 0..2 {
        let ready = position(&lines, |l| {
            l.starts_with(&format!("postgres-{i} 1/1 Running"))
        })
        .unwrap_or_else(|| panic!("postgres-{i} never ready: {lines:#?}"));
        let next = position(&lines, |l| l.starts_with(&format!("postgres-{} ", i + 1)))
            .unwrap_or_else(|| panic!("postgres-{} never seen: {lines:#?}", i + 1));
        assert!(
            ready < next,
            "postgres-{} before postgres-{i} was ready: {lines:#?}",
            i + 1
        );
    }
    drop(watch);

    // Identity: hostname, subdomain, labels.
    for i in 0..3 {
        let pod = format!("postgres-{i}");
        let identity = jsonpath(
            &up,
            &["get", "pod", &pod],
            "{.spec.hostname} {.spec.subdomain} {.metadata.labels.statefulset\\.kubernetes\\.io/pod-name} {.metadata.labels.apps\\.kubernetes\\.io/pod-index} {.metadata.ownerReferences[0].kind}",
        );
        assert_eq!(identity, format!("{pod} postgres {pod} {i} StatefulSet"));
    }

    // One claim per pod, bound to a local volume on the pod's node.
    assert!(
        eventually(Duration::from_secs(20), || {
            let rows = up.ok(&["get", "pvc", "--no-headers"]);
            rows.lines().count() == 3
                && rows.lines().enumerate().all(|(i, row)| {
                    let cols: Vec<&str> = row.split_whitespace().collect();
                    cols.len() >= 6
                        && cols[0] == format!("postgres-storage-postgres-{i}")
                        && cols[1] == "Bound"
                        && cols[2].starts_with("pvc-")
                        && cols[3..6] == ["10Gi", "RWO", "standard"]
                })
        }),
        "{}",
        up.ok(&["get", "pvc"])
    );
    let pvs = up.ok(&["get", "pv", "--no-headers"]);
    assert_eq!(pvs.lines().count(), 3, "{pvs}");
    for row in pvs.lines() {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert!(cols[0].starts_with("pvc-"), "{row}");
        assert_eq!(cols[1..5], ["10Gi", "RWO", "Delete", "Bound"], "{row}");
        assert!(
            cols[5].starts_with("default/postgres-storage-postgres-"),
            "{row}"
        );
        assert_eq!(cols[6], "standard", "{row}");
    }
    for i in 0..3 {
        let node = jsonpath(
            &up,
            &["get", "pod", &format!("postgres-{i}")],
            "{.spec.nodeName}",
        );
        assert_eq!(
            volume_node(&up, &format!("postgres-storage-postgres-{i}")),
            node
        );
    }
    let volume = jsonpath(
        &up,
        &["get", "pvc", "postgres-storage-postgres-0"],
        "{.spec.volumeName}",
    );
    let path = jsonpath(&up, &["get", "pv", &volume], "{.spec.local.path}");
    assert_eq!(path, format!("/var/lib/shoal/volumes/{volume}"));

    let events = jsonpath(
        &up,
        &["get", "events"],
        "{range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    );
    for expected in [
        "SuccessfulCreate: create Pod postgres-0 in StatefulSet postgres successful",
        "SuccessfulCreate: create Claim postgres-storage-postgres-0 Pod postgres-0 in StatefulSet postgres success",
        &format!("ProvisioningSucceeded: Successfully provisioned volume {volume}"),
    ] {
        assert!(events.contains(expected), "{expected} not in:\n{events}");
    }
    let status = up.ok(&["rollout", "status", "statefulset/postgres", "--timeout=30s"]);
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated..."),
        "{status}"
    );

    // Scale up, then down: postgres-3 goes before postgres-2; claims stay.
    up.ok(&["scale", "statefulset", "postgres", "--replicas=4"]);
    assert!(eventually(Duration::from_secs(30), || ready_count(&up) == "4/4"));
    assert!(eventually(Duration::from_secs(20), || {
        up.ok(&["get", "pvc", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Bound "))
            .count()
            == 4
    }));
    let watch = PodWatch::start(&up, "scale.watch");
    std::thread::sleep(Duration::from_millis(500));
    up.ok(&["scale", "statefulset", "postgres", "--replicas=2"]);
    assert!(
        eventually(Duration::from_secs(60), || {
            up.ok(&["get", "pods", "-l", "app=postgres", "-o", "name"])
                .split_whitespace()
                .collect::<Vec<_>>()
                == ["pod/postgres-0", "pod/postgres-1"]
        }),
        "{}",
        up.ok(&["get", "pods"])
    );
    std::thread::sleep(Duration::from_millis(500));
    let lines = watch.lines();
    drop(watch);
    let last_3 = lines
        .iter()
        .rposition(|l| l.starts_with("postgres-3 "))
        .unwrap_or_else(|| panic!("postgres-3 not seen going: {lines:#?}"));
    let first_2 = position(&lines, |l| {
        l.starts_with("postgres-2 ") && l.contains("Terminating")
    })
    .unwrap_or_else(|| panic!("postgres-2 not seen terminating: {lines:#?}"));
    assert!(
        last_3 < first_2,
        "postgres-2 went before postgres-3 was gone: {lines:#?}"
    );
    assert_eq!(ready_count(&up), "2/2");
    assert_eq!(up.ok(&["get", "pvc", "--no-headers"]).lines().count(), 4);

    // Back to 3: postgres-2 returns to the node its data is on.
    up.ok(&["scale", "statefulset", "postgres", "--replicas=3"]);
    assert!(eventually(Duration::from_secs(30), || ready_count(&up) == "3/3"));
    assert_eq!(
        jsonpath(&up, &["get", "pod", "postgres-2"], "{.spec.nodeName}"),
        volume_node(&up, "postgres-storage-postgres-2")
    );

    // The partition canary: only postgres-2 gets the new image.
    up.ok(&[
        "patch",
        "statefulset",
        "postgres",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#,
    ]);
    up.ok(&[
        "set",
        "image",
        "statefulset/postgres",
        "postgres=postgres:16",
    ]);
    let canary = "postgres-0=postgres:15 postgres-1=postgres:15 postgres-2=postgres:16";
    assert!(
        eventually(Duration::from_secs(30), || images(&up) == canary),
        "{}",
        images(&up)
    );
    let status = up.ok(&["rollout", "status", "statefulset/postgres", "--timeout=30s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated..."),
        "{status}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(images(&up), canary);
    let revisions = |up: &ShoalUp| {
        jsonpath(
            up,
            &["get", "pods", "-l", "app=postgres"],
            "{range .items[*]}{.metadata.labels.controller-revision-hash} {end}",
        )
        .split_whitespace()
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let hashes = revisions(&up);
    let update_revision = jsonpath(&up, &["get", "sts", "postgres"], "{.status.updateRevision}");
    let current_revision = jsonpath(
        &up,
        &["get", "sts", "postgres"],
        "{.status.currentRevision}",
    );
    assert_eq!(
        hashes,
        [
            current_revision.clone(),
            current_revision.clone(),
            update_revision.clone()
        ]
    );
    assert_ne!(current_revision, update_revision);
    assert!(update_revision.starts_with("postgres-"));
    assert_eq!(
        jsonpath(
            &up,
            &["get", "controllerrevision", &update_revision],
            "{.revision}"
        ),
        "2"
    );

    // Partition 0: everyone is updated.
    up.ok(&[
        "patch",
        "statefulset",
        "postgres",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    let all_16 = "postgres-0=postgres:16 postgres-1=postgres:16 postgres-2=postgres:16";
    assert!(
        eventually(Duration::from_secs(60), || images(&up) == all_16),
        "{}",
        images(&up)
    );
    let status = up.ok(&["rollout", "status", "statefulset/postgres", "--timeout=60s"]);
    assert!(
        status.contains("partitioned roll out complete: 3 new pods have been updated..."),
        "{status}"
    );
    assert!(eventually(Duration::from_secs(20), || {
        jsonpath(
            &up,
            &["get", "sts", "postgres"],
            "{.status.currentRevision}",
        ) == update_revision
    }));

    // History and undo.
    let history = up.ok(&["rollout", "history", "statefulset/postgres"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["1", "2"], "{history}");
    let undone = up.ok(&["rollout", "undo", "statefulset/postgres"]);
    assert_eq!(undone.trim(), "statefulset.apps/postgres rolled back");
    let all_15 = "postgres-0=postgres:15 postgres-1=postgres:15 postgres-2=postgres:15";
    assert!(
        eventually(Duration::from_secs(60), || images(&up) == all_15),
        "{}",
        images(&up)
    );
    assert!(eventually(Duration::from_secs(10), || {
        let history = up.ok(&["rollout", "history", "statefulset/postgres"]);
        history
            .lines()
            .skip_while(|l| !l.starts_with("REVISION"))
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect::<Vec<_>>()
            == ["2", "3"]
    }));
    assert!(eventually(Duration::from_secs(30), || ready_count(&up) == "3/3"));
    assert!(revisions(&up).iter().all(|h| *h == current_revision));

    // A claim deleted takes its volume with it (reclaim policy Delete).
    let volume_3 = jsonpath(
        &up,
        &["get", "pvc", "postgres-storage-postgres-3"],
        "{.spec.volumeName}",
    );
    up.ok(&["delete", "pvc", "postgres-storage-postgres-3"]);
    assert!(eventually(Duration::from_secs(20), || {
        !up.ok(&["get", "pv", "-o", "name"]).contains(&volume_3)
    }));

    // A pod whose claim does not exist waits, and is placed once it does.
    up.ok(&[
        "run",
        "needs-claim",
        "--image=busybox",
        "--overrides",
        r#"{"spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"later"}}]}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(20), || {
            jsonpath(
                &up,
                &["get", "pod", "needs-claim"],
                "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
            ) == "0/3 nodes are available: persistentvolumeclaim \"later\" not found."
        }),
        "{}",
        up.ok(&["get", "pod", "needs-claim", "-o", "yaml"])
    );
    up.kubectl_with(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: later\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n"),
        &[],
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            up.ok(&["get", "pvc", "later", "--no-headers"])
                .split_whitespace()
                .nth(1)
                == Some("Bound")
        }),
        "{}",
        up.ok(&["get", "pvc", "later", "-o", "yaml"])
    );
    assert_eq!(
        jsonpath(&up, &["get", "pvc", "later"], "{.spec.storageClassName}"),
        "standard"
    );
    assert_eq!(
        jsonpath(&up, &["get", "pod", "needs-claim"], "{.spec.nodeName}"),
        volume_node(&up, "later")
    );

    // Deleting the set removes its pods and keeps their claims.
    up.ok(&["delete", "statefulset", "postgres"]);
    assert!(
        eventually(Duration::from_secs(60), || {
            up.ok(&["get", "pods", "-l", "app=postgres", "-o", "name"])
                .trim()
                .is_empty()
        }),
        "{}",
        up.ok(&["get", "pods"])
    );
    let claims = up.ok(&["get", "pvc", "-l", "app=postgres", "-o", "name"]);
    assert_eq!(
        claims.split_whitespace().collect::<Vec<_>>(),
        [
            "persistentvolumeclaim/postgres-storage-postgres-0",
            "persistentvolumeclaim/postgres-storage-postgres-1",
            "persistentvolumeclaim/postgres-storage-postgres-2",
        ]
    );
}

#[test]
fn a_statefulset_pod_on_a_lost_node_is_not_duplicated() {
    let up = ShoalUp::start_with(&[
        "--node-monitor-grace-period=2s",
        "--pod-eviction-timeout=2s",
    ]);
    let mut agents: Vec<SimulatedNodes> = ["a", "b", "c"]
        .iter()
        .map(|p| SimulatedNodes::start(&up.kubeconfig, 1, p))
        .collect();
    wait_nodes(&up);
    up.ok(&["apply", "-f", &manifest("statefulset.yaml")]);
    assert!(
        eventually(Duration::from_secs(60), || ready_count(&up) == "3/3"),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let on_b = up.ok(&[
        "get",
        "pods",
        "--field-selector",
        "spec.nodeName=b-0",
        "-o",
        "name",
    ]);
    assert_eq!(
        on_b.lines().count(),
        1,
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let lost = on_b.trim().trim_start_matches("pod/").to_string();
    let uid = jsonpath(&up, &["get", "pod", &lost], "{.metadata.uid}");

    agents[1].kill();
    assert!(
        eventually(Duration::from_secs(20), || {
            up.ok(&["get", "pod", &lost, "--no-headers"])
                .split_whitespace()
                .nth(2)
                == Some("Unknown")
        }),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    // Well past the eviction timeout: still that one pod, never a second
    // one of its name elsewhere.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let pods = jsonpath(
            &up,
            &["get", "pods", "-l", "app=postgres"],
            "{range .items[*]}{.metadata.name} {.metadata.uid} {.spec.nodeName}{\"\\n\"}{end}",
        );
        let rows: Vec<&str> = pods.lines().collect();
        assert_eq!(rows.len(), 3, "{pods}");
        assert!(
            rows.contains(&format!("{lost} {uid} b-0").as_str()),
            "{lost} replaced:\n{pods}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(
        up.ok(&["get", "pod", &lost, "--no-headers"])
            .split_whitespace()
            .nth(2),
        Some("Unknown")
    );
    assert_eq!(ready_count(&up), "2/3");
}
