//! The scheduler against simulated nodes (`shoal agent --simulate`), driven
//! with kubectl: pods land on Ready nodes, spread out, with a Scheduled
//! event; a pod that fits nowhere stays Pending with Kubernetes' message;
//! deletion completes through the node. Nodes get pod ranges and
//! namespaces a default ServiceAccount on the way.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::kube::{eventually, ShoalUp, SimulatedNodes};

#[test]
fn pods_are_scheduled_onto_simulated_nodes() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = up.kubectl(&["get", "nodes", "--no-headers"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" Ready "))
                .count()
                == 3
        }),
        "{}",
        up.ok(&["get", "nodes"])
    );

    // Node IPAM: each node has its own /24 of the pod network.
    let ranges = || {
        let out = up.ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.spec.podCIDR}{\"\\n\"}{end}",
        ]);
        out.lines()
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect::<std::collections::BTreeSet<String>>()
    };
    assert!(
        eventually(Duration::from_secs(10), || ranges().len() == 3),
        "{:?}",
        ranges()
    );
    assert!(
        ranges()
            .iter()
            .all(|r| r.starts_with("10.244.") && r.ends_with(".0/24")),
        "{:?}",
        ranges()
    );
    // Every namespace gets a `default` ServiceAccount.
    up.ok(&["create", "namespace", "team-a"]);
    assert!(eventually(Duration::from_secs(10), || {
        up.kubectl(&["get", "serviceaccount", "default", "-n", "team-a"])
            .status
            .success()
    }));

    for i in 0..6 {
        up.ok(&[
            "run",
            &format!("web-{i}"),
            "--image=nginx",
            "--labels=app=web",
        ]);
    }
    let placed = || -> BTreeMap<String, usize> {
        let out = up.ok(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
        ]);
        let mut per_node = BTreeMap::new();
        for line in out.lines() {
            if let Some((node, "Running")) = line.split_once(' ') {
                *per_node.entry(node.to_string()).or_default() += 1;
            }
        }
        per_node
    };
    assert!(
        eventually(Duration::from_secs(20), || placed().values().sum::<usize>()
            == 6),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    // Replicas spread: two per node.
    assert_eq!(
        placed().values().copied().collect::<Vec<_>>(),
        vec![2, 2, 2]
    );

    let described = up.ok(&["describe", "pod", "web-0"]);
    assert!(
        described.contains("Successfully assigned default/web-0 to node-"),
        "{described}"
    );
    assert!(described.contains("default-scheduler"), "{described}");
    let rows = up.ok(&["get", "pod", "web-0", "-o", "wide", "--no-headers"]);
    assert!(
        rows.contains("1/1") && rows.contains("Running") && rows.contains("10.244."),
        "{rows}"
    );

    // Too big for any node.
    let big = r#"{"spec":{"containers":[{"name":"big","image":"nginx","resources":{"requests":{"cpu":"100"}}}]}}"#;
    up.ok(&["run", "big", "--image=nginx", &format!("--overrides={big}")]);
    assert!(eventually(Duration::from_secs(10), || {
        up.ok(&[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[0].message}",
        ]) == "0/3 nodes are available: 3 Insufficient cpu."
    }));
    assert_eq!(
        up.ok(&[
            "get",
            "pod",
            "big",
            "-o",
            "jsonpath={.status.conditions[0].reason}"
        ]),
        "Unschedulable"
    );
    let described = up.ok(&["describe", "pod", "big"]);
    assert!(
        described.contains("FailedScheduling") && described.contains("3 Insufficient cpu."),
        "{described}"
    );

    // A scheduled pod is deleted gracefully: its node finishes the deletion.
    up.ok(&["delete", "pod", "web-0", "--wait=false"]);
    assert!(eventually(Duration::from_secs(15), || {
        !up.kubectl(&["get", "pod", "web-0"]).status.success()
    }));

    // One replica leads the controllers, through a Lease.
    let holder = up.ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "shoal-controllers",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert!(!holder.is_empty());
}
