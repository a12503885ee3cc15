//! The guide's DaemonSet on simulated nodes, driven with kubectl: one pod
//! per node (the tainted control-plane node included thanks to its
//! toleration), a DaemonSet without it, one with a nodeSelector following
//! node labels, a node joining, a rolling update with rollout status,
//! history and undo, and a cascading delete.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

/// (pod, node, image) of the live, running pods matching `label`.
fn running(up: &ShoalUp, namespace: &str, label: &str) -> Vec<(String, String, String)> {
    let out = up.ok(&[
        "get", "pods", "-n", namespace, "-l", label, "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.spec.containers[0].image} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[2] == "Running")
                .then(|| (f[0].to_string(), f[1].to_string(), f[3].to_string()))
        })
        .collect()
}

fn nodes_of(pods: &[(String, String, String)]) -> BTreeSet<String> {
    pods.iter().map(|(_, node, _)| node.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn daemonset(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n{extra_spec}      containers:\n      - name: agent\n        image: busybox:1.36\n"
    )
}

#[test]
fn daemonset_runs_one_pod_per_node_and_rolls() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    assert!(eventually(Duration::from_secs(30), || up
        .ok(&["get", "nodes", "--no-headers"])
        .lines()
        .filter(|l| l.contains(" Ready "))
        .count()
        == 3));
    up.ok(&[
        "taint",
        "node",
        "node-0",
        "node-role.kubernetes.io/control-plane:NoSchedule",
    ]);

    // The guide's DaemonSet tolerates the control-plane taint: 3 pods.
    assert_eq!(
        up.ok(&["apply", "-f", &manifest("daemonset.yaml")]).trim(),
        "daemonset.apps/fluentd created"
    );
    let all = set(&["node-0", "node-1", "node-2"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let pods = running(&up, "kube-system", "app=fluentd");
            pods.len() == 3 && nodes_of(&pods) == all
        }),
        "{}",
        up.ok(&["get", "pods", "-n", "kube-system", "-o", "wide"])
    );
    let wide = up.ok(&["get", "pods", "-n", "kube-system", "-o", "wide"]);
    let rows: Vec<&str> = wide.lines().filter(|l| l.starts_with("fluentd-")).collect();
    assert_eq!(rows.len(), 3, "{wide}");
    for row in &rows {
        let name = row.split_whitespace().next().unwrap_or_default();
        assert_eq!(name.len(), "fluentd-".len() + 5, "{wide}");
        assert!(row.contains("1/1") && row.contains("Running"), "{wide}");
    }
    assert!(
        eventually(Duration::from_secs(20), || {
            let row = up.ok(&["get", "daemonset", "-n", "kube-system", "--no-headers"]);
            row.split_whitespace().take(6).collect::<Vec<_>>()
                == ["fluentd", "3", "3", "3", "3", "3"]
        }),
        "{}",
        up.ok(&["get", "daemonset", "-n", "kube-system"])
    );
    let table = up.ok(&["get", "daemonset", "-n", "kube-system"]);
    assert_eq!(
        table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>(),
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE"
        ],
        "{table}"
    );
    let pod = running(&up, "kube-system", "app=fluentd")[0].0.clone();
    let pod_yaml = up.ok(&["get", "pod", &pod, "-n", "kube-system", "-o", "yaml"]);
    for expected in [
        "controller-revision-hash:",
        "pod-template-generation: \"1\"",
        "kind: DaemonSet",
        "key: metadata.name",
        "node.kubernetes.io/unreachable",
    ] {
        assert!(pod_yaml.contains(expected), "{expected} in {pod_yaml}");
    }
    let described = up.ok(&["describe", "ds", "fluentd", "-n", "kube-system"]);
    assert!(
        described.contains("SuccessfulCreate") && described.contains("Created pod: fluentd-"),
        "{described}"
    );

    // Without the toleration: the control-plane node is left out.
    up.apply(&daemonset("plain", ""));
    assert!(
        eventually(Duration::from_secs(30), || nodes_of(&running(
            &up,
            "default",
            "app=plain"
        )) == set(&["node-1", "node-2"])),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );

    // A nodeSelector: pods only on labelled nodes, following the labels.
    up.apply(&daemonset(
        "ssd",
        "      nodeSelector:\n        disktype: ssd\n",
    ));
    up.ok(&["label", "node", "node-1", "disktype=ssd"]);
    assert!(
        eventually(Duration::from_secs(30), || nodes_of(&running(
            &up, "default", "app=ssd"
        )) == set(&["node-1"])),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    up.ok(&["label", "node", "node-2", "disktype=ssd"]);
    up.ok(&["label", "node", "node-1", "disktype-"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let pods = up.ok(&["get", "pods", "-l", "app=ssd", "-o", "name"]);
            nodes_of(&running(&up, "default", "app=ssd")) == set(&["node-2"])
                && pods.lines().count() == 1
        }),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );

    // A node joining gets a pod.
    let _more = SimulatedNodes::start(&up.kubeconfig, 1, "extra");
    assert!(
        eventually(Duration::from_secs(30), || nodes_of(&running(
            &up,
            "kube-system",
            "app=fluentd"
        ))
        .contains("extra-0")
            && nodes_of(&running(&up, "default", "app=plain"))
                .contains("extra-0")),
        "{}",
        up.ok(&["get", "pods", "-A", "-o", "wide"])
    );
    assert!(eventually(Duration::from_secs(20), || {
        let row = up.ok(&["get", "ds", "fluentd", "-n", "kube-system", "--no-headers"]);
        row.split_whitespace().take(6).collect::<Vec<_>>() == ["fluentd", "4", "4", "4", "4", "4"]
    }));

    // A rolling update, one node at a time (maxUnavailable 1): sampled as
    // it runs, at most one of the 4 nodes is ever without a running pod.
    up.ok(&[
        "set",
        "image",
        "ds/fluentd",
        "fluentd=fluent/fluentd:v1.17",
        "-n",
        "kube-system",
    ]);
    let done = AtomicBool::new(false);
    let (status, fewest) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| {
            let mut fewest = usize::MAX;
            while !done.load(Ordering::SeqCst) {
                fewest = fewest.min(nodes_of(&running(&up, "kube-system", "app=fluentd")).len());
            }
            fewest
        });
        let status = up.ok(&[
            "rollout",
            "status",
            "ds/fluentd",
            "-n",
            "kube-system",
            "--timeout=120s",
        ]);
        done.store(true, Ordering::SeqCst);
        (status, sampler.join().unwrap_or(0))
    });
    assert!(
        fewest >= 3,
        "only {fewest} nodes had a running pod at one point"
    );
    assert!(
        status
            .trim_end()
            .ends_with("daemon set \"fluentd\" successfully rolled out"),
        "{status}"
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let pods = running(&up, "kube-system", "app=fluentd");
            pods.len() == 4
                && pods
                    .iter()
                    .all(|(_, _, image)| image == "fluent/fluentd:v1.17")
        }),
        "{:?}",
        running(&up, "kube-system", "app=fluentd")
    );
    let history = up.ok(&["rollout", "history", "ds/fluentd", "-n", "kube-system"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    assert_eq!(
        up.ok(&[
            "get",
            "controllerrevisions",
            "-n",
            "kube-system",
            "-l",
            "app=fluentd",
            "-o",
            "name"
        ])
        .lines()
        .count(),
        2
    );

    // And back.
    up.ok(&["rollout", "undo", "ds/fluentd", "-n", "kube-system"]);
    up.ok(&[
        "rollout",
        "status",
        "ds/fluentd",
        "-n",
        "kube-system",
        "--timeout=120s",
    ]);
    assert!(
        eventually(Duration::from_secs(20), || {
            let pods = running(&up, "kube-system", "app=fluentd");
            pods.len() == 4
                && pods
                    .iter()
                    .all(|(_, _, image)| image == "fluent/fluentd:v1.16")
        }),
        "{:?}",
        running(&up, "kube-system", "app=fluentd")
    );
    let history = up.ok(&["rollout", "history", "ds/fluentd", "-n", "kube-system"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");

    // Deleting the DaemonSet removes its pods.
    up.ok(&["delete", "ds", "fluentd", "-n", "kube-system"]);
    assert!(
        eventually(Duration::from_secs(30), || up
            .ok(&[
                "get",
                "pods",
                "-n",
                "kube-system",
                "-l",
                "app=fluentd",
                "-o",
                "name"
            ])
            .trim()
            .is_empty()),
        "{}",
        up.ok(&["get", "pods", "-n", "kube-system"])
    );
}
