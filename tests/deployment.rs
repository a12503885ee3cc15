//! The guide's Deployment on simulated nodes, driven with kubectl: rollout
//! status, set image, history, undo, scale; and a rolling update of 10
//! replicas with maxSurge=2, maxUnavailable=0 sampled as it runs.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

#[test]
fn rollout_history_undo_and_scale() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    up.ok(&["apply", "-f", &manifest("deployment.yaml")]);
    let status = up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
    assert!(
        status
            .trim_end()
            .ends_with("deployment \"nginx-deployment\" successfully rolled out"),
        "{status}"
    );
    let row = up.ok(&["get", "deployments", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(4).collect::<Vec<_>>(),
        ["nginx-deployment", "3/3", "3", "3"],
        "{row}"
    );
    let sets = up.ok(&["get", "rs", "--no-headers"]);
    let first: Vec<&str> = sets.split_whitespace().collect();
    assert!(
        first[0].starts_with("nginx-deployment-") && first[1..4] == ["3", "3", "3"],
        "{sets}"
    );
    let hash = first[0].trim_start_matches("nginx-deployment-").to_string();
    assert_eq!(
        up.ok(&[
            "get",
            "pods",
            "-l",
            &format!("pod-template-hash={hash}"),
            "-o",
            "name"
        ])
        .lines()
        .count(),
        3
    );

    up.ok(&[
        "annotate",
        "deployment/nginx-deployment",
        "kubernetes.io/change-cause=update to 1.26",
    ]);
    up.ok(&[
        "set",
        "image",
        "deployment/nginx-deployment",
        "nginx=nginx:1.26",
    ]);
    let status = up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
    assert!(
        status.contains("out of 3 new replicas have been updated..."),
        "{status}"
    );
    assert!(
        status.trim_end().ends_with("successfully rolled out"),
        "{status}"
    );
    let history = up.ok(&["rollout", "history", "deployment/nginx-deployment"]);
    let lines: Vec<&str> = history.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["REVISION", "CHANGE-CAUSE"],
        "{history}"
    );
    assert!(
        lines[2].starts_with('1') && lines[3].starts_with("2         update to 1.26"),
        "{history}"
    );
    let sets = up.ok(&["get", "rs", "--no-headers"]);
    assert!(
        sets.lines()
            .any(|l| l.starts_with(&format!("nginx-deployment-{hash} "))
                && l.split_whitespace().nth(1) == Some("0")),
        "{sets}"
    );

    assert_eq!(
        up.ok(&["rollout", "undo", "deployment/nginx-deployment"])
            .trim(),
        "deployment.apps/nginx-deployment rolled back"
    );
    up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
    assert_eq!(
        up.ok(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.25"
    );
    let history = up.ok(&["rollout", "history", "deployment/nginx-deployment"]);
    assert!(
        history.lines().any(|l| l.starts_with('3'))
            && !history.lines().any(|l| l.starts_with("1 ")),
        "{history}"
    );

    up.ok(&["scale", "deployment/nginx-deployment", "--replicas=5"]);
    assert!(eventually(Duration::from_secs(30), || {
        up.ok(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "5"
    }));
    let described = up.ok(&["describe", "deployment", "nginx-deployment"]);
    assert!(described.contains("ScalingReplicaSet"), "{described}");
    assert!(described.contains("NewReplicaSetAvailable"), "{described}");

    // Cascading deletion through the garbage collector: orphaning a
    // ReplicaSet keeps its pods (now ownerless); deleting the Deployment
    // removes its ReplicaSets and their pods.
    let current = up.ok(&[
        "get",
        "rs",
        "-o",
        "jsonpath={.items[?(@.spec.replicas==5)].metadata.name}",
    ]);
    up.ok(&[
        "delete",
        "deployment",
        "nginx-deployment",
        "--cascade=foreground",
        "--wait=false",
    ]);
    assert!(
        eventually(Duration::from_secs(30), || {
            !up.kubectl(&["get", "deployment", "nginx-deployment"])
                .status
                .success()
                && up.ok(&["get", "rs", "-o", "name"]).trim().is_empty()
                && up
                    .ok(&["get", "pods", "-l", "app=nginx", "-o", "name"])
                    .trim()
                    .is_empty()
        }),
        "{} {}",
        current,
        up.ok(&["get", "all"])
    );
    up.ok(&["apply", "-f", &manifest("replicaset.yaml")]);
    assert!(eventually(Duration::from_secs(30), || {
        up.ok(&["get", "pods", "-l", "app=nginx", "-o", "name"])
            .lines()
            .count()
            == 3
    }));
    up.ok(&["delete", "rs", "nginx-replicaset", "--cascade=orphan"]);
    assert!(eventually(Duration::from_secs(30), || {
        !up.kubectl(&["get", "rs", "nginx-replicaset"])
            .status
            .success()
            && up
                .ok(&[
                    "get",
                    "pods",
                    "-l",
                    "app=nginx",
                    "-o",
                    "jsonpath={.items[*].metadata.ownerReferences}",
                ])
                .trim()
                .is_empty()
    }));
    assert_eq!(
        up.ok(&["get", "pods", "-l", "app=nginx", "-o", "name"])
            .lines()
            .count(),
        3,
        "orphans stay"
    );
}

#[test]
fn surge_two_unavailable_zero_never_dips_below_ten() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    let manifest = std::fs::read_to_string(manifest("deployment.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: 10\n  strategy:\n    type: RollingUpdate\n    rollingUpdate:\n      maxSurge: 2\n      maxUnavailable: 0");
    let file = up.data_dir().join("ten.yaml");
    std::fs::write(&file, manifest).unwrap();
    up.ok(&["apply", "-f", file.to_str().unwrap()]);
    up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);

    // Sample pods while the image changes: ready ones (not terminating)
    // never fewer than 10, all of them never more than 12.
    let samples = Arc::new(Mutex::new(Vec::<(usize, usize)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, stop, kubeconfig, home) = (
            samples.clone(),
            stop.clone(),
            up.kubeconfig.clone(),
            up.data_dir().to_path_buf(),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let out = std::process::Command::new(support::kube::KUBECTL)
                    .args(["get", "pods", "-l", "app=nginx", "-o", "jsonpath={range .items[*]}{.metadata.deletionTimestamp}|{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("HOME", &home)
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let total = text.lines().count();
                let ready = text
                    .lines()
                    .filter(|l| l.starts_with('|') && l.ends_with("True"))
                    .count();
                samples.lock().unwrap().push((ready, total));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    up.ok(&[
        "set",
        "image",
        "deployment/nginx-deployment",
        "nginx=nginx:1.26",
    ]);
    up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=90s",
    ]);
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap();
    assert!(samples.len() > 5, "{samples:?}");
    for (ready, total) in samples.iter() {
        assert!(*ready >= 10, "fewer than 10 ready: {samples:?}");
        assert!(*total <= 12, "more than 12 pods: {samples:?}");
    }
    assert!(
        samples.iter().any(|(_, total)| *total > 10),
        "the rollout surged: {samples:?}"
    );
}
