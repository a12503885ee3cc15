//! Losing a node (its simulated agent killed): the node turns Unknown, its
//! pod shows STATUS Unknown, and the Deployment's replacement runs on
//! another node after the eviction timeout.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

#[test]
fn pods_on_a_lost_node_turn_unknown_and_are_replaced() {
    let up = ShoalUp::start();
    let mut agents: Vec<SimulatedNodes> = ["a", "b", "c"]
        .iter()
        .map(|p| SimulatedNodes::start(&up.kubeconfig, 1, p))
        .collect();
    assert!(eventually(Duration::from_secs(20), || {
        up.ok(&["get", "nodes", "--no-headers"])
            .lines()
            .filter(|l| l.contains(" Ready "))
            .count()
            == 3
    }));
    up.ok(&["apply", "-f", &manifest("deployment.yaml")]);
    up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
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
        "one replica per node: {}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let lost = on_b.trim().trim_start_matches("pod/").to_string();

    agents[1].kill();
    assert!(
        eventually(Duration::from_secs(20), || {
            let row = up.ok(&["get", "pod", &lost, "--no-headers"]);
            row.split_whitespace().nth(2) == Some("Unknown")
        }),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let node = up.ok(&["get", "node", "b-0", "--no-headers"]);
    assert_eq!(node.split_whitespace().nth(1), Some("NotReady"), "{node}");
    let ready = up.ok(&[
        "get",
        "pod",
        &lost,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "False");

    // After the eviction timeout a replacement runs elsewhere.
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = up.ok(&["get", "pods", "-o", "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}"]);
            out.lines()
                .map(str::trim_end)
                .filter(|l| l.ends_with(" Running") && !l.starts_with("b-0"))
                .count()
                == 3
        }),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    assert!(eventually(Duration::from_secs(20), || {
        up.ok(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ]) == "3"
    }));
    let taints = up.ok(&["get", "node", "b-0", "-o", "jsonpath={.spec.taints[*].key}"]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "{taints}"
    );
}
