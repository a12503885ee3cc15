//! The control loops run inside every `shoal apiserver`, but only on the
//! replica holding the `kube-system/shoal-controllers` Lease. Killing the
//! leader moves the Lease to the standby within seconds, and a change made
//! just before the kill is acted on once: no pod is created twice.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kube::{eventually, manifest, Apiserver, SimulatedNodes, KUBECTL};
use support::TestCluster;

fn holder(api: &Apiserver) -> String {
    api.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "shoal-controllers",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

fn running_pods(api: &Apiserver) -> usize {
    api.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "--field-selector=status.phase=Running",
        "--no-headers",
    ])
    .lines()
    .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leading_apiserver_moves_the_controllers_without_duplicates() {
    let store = TestCluster::start(3).await;
    let endpoints = store.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let a = Apiserver::start(&endpoints, &dir.path().join("a"), None);
    let cert = dir.path().join("a").join("apiserver.crt");
    let key = dir.path().join("a").join("apiserver.key");
    let b = Apiserver::start(&endpoints, &dir.path().join("b"), Some((&cert, &key)));

    // One of them leads; its identity ends with its process id.
    let mut apis = [a, b];
    assert!(
        eventually(Duration::from_secs(20), || {
            let who = support::kube::kubectl_at(
                &apis[0].kubeconfig,
                &["get", "lease", "-n", "kube-system", "shoal-controllers"],
            );
            who.status.success()
        }),
        "no replica took the controllers' Lease:\n{}",
        apis[0].log()
    );
    let first = holder(&apis[0]);
    let leader = apis
        .iter()
        .position(|api| {
            api.pid()
                .is_some_and(|pid| first.ends_with(&format!("_{pid}")))
        })
        .unwrap_or_else(|| panic!("the Lease holder {first:?} is neither apiserver"));
    let standby = 1 - leader;

    // Nodes and clients go through the standby, which survives.
    let _nodes = SimulatedNodes::start(&apis[standby].kubeconfig, 3, "node");
    apis[standby].ok(&["apply", "-f", &manifest("deployment.yaml")]);
    assert!(
        eventually(Duration::from_secs(60), || running_pods(&apis[standby])
            == 3),
        "{}",
        apis[standby].ok(&["get", "pods", "-o", "wide"])
    );

    // Every pod name ever seen, from a watch through the standby.
    let mut watch = Command::new(KUBECTL)
        .args(["get", "pods", "-l", "app=nginx", "-w", "-o", "name"])
        .env("KUBECONFIG", &apis[standby].kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let sink = seen.clone();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().insert(line);
        }
    });
    assert!(eventually(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == 3));

    // A change, then the leader dies right away.
    apis[standby].ok(&["scale", "deployment", "nginx-deployment", "--replicas=6"]);
    let killed_at = Instant::now();
    apis[leader].kill();

    assert!(
        eventually(Duration::from_secs(20), || {
            let now = holder(&apis[standby]);
            apis[standby]
                .pid()
                .is_some_and(|pid| now.ends_with(&format!("_{pid}")))
        }),
        "the standby did not take the Lease: holder {:?}\n{}",
        holder(&apis[standby]),
        apis[standby].log()
    );
    let took_over = killed_at.elapsed();
    assert!(
        took_over < Duration::from_secs(15),
        "took {took_over:?} to move the Lease"
    );

    assert!(
        eventually(Duration::from_secs(60), || running_pods(&apis[standby])
            == 6),
        "{}",
        apis[standby].ok(&["get", "pods", "-o", "wide"])
    );
    // Give a second actor time to show itself, then count.
    std::thread::sleep(Duration::from_secs(3));
    let names = seen.lock().unwrap().clone();
    assert_eq!(
        names.len(),
        6,
        "pods were created twice for one change: {names:?}"
    );
    assert_eq!(running_pods(&apis[standby]), 6);
    let replicasets = apis[standby].ok(&["get", "rs", "--no-headers"]);
    assert_eq!(replicasets.lines().count(), 1, "{replicasets}");
    let _ = watch.kill();
    let _ = watch.wait();
}
