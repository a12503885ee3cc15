//! The guide's ReplicaSet on simulated nodes: it creates its pods, heals
//! when one is deleted, scales both ways, and adopts a matching orphan.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

fn running(up: &ShoalUp) -> Vec<String> {
    let out = up.ok(&[
        "get", "pods", "-l", "app=nginx", "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ]);
    out.lines()
        .map(str::trim_end)
        .filter(|l| l.split_whitespace().count() == 2 && l.ends_with(" Running"))
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn replicaset_creates_heals_scales_and_adopts() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    assert_eq!(
        up.ok(&["apply", "-f", &manifest("replicaset.yaml")]).trim(),
        "replicaset.apps/nginx-replicaset created"
    );
    assert!(
        eventually(Duration::from_secs(30), || running(&up).len() == 3),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let rows = up.ok(&["get", "replicasets"]);
    let row: Vec<&str> = rows
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || {
            let rows = up.ok(&["get", "rs", "nginx-replicaset", "--no-headers"]);
            rows.split_whitespace().take(4).collect::<Vec<_>>()
                == ["nginx-replicaset", "3", "3", "3"]
        }),
        "{rows} {row:?}"
    );
    let pods = running(&up);
    assert!(pods.iter().all(|p| p.starts_with("nginx-replicaset-") && p.len() == "nginx-replicaset-".len() + 5), "{pods:?}");

    // Self-healing: a deleted pod is replaced by a new one.
    let victim = pods[0].clone();
    up.ok(&["delete", "pod", &victim]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let now = running(&up);
            now.len() == 3 && !now.contains(&victim)
        }),
        "{:?}",
        running(&up)
    );

    // Scaling up and down.
    up.ok(&["scale", "rs", "nginx-replicaset", "--replicas=5"]);
    assert!(
        eventually(Duration::from_secs(30), || running(&up).len() == 5),
        "{:?}",
        running(&up)
    );
    up.ok(&["scale", "rs", "nginx-replicaset", "--replicas=2"]);
    assert!(
        eventually(Duration::from_secs(30), || running(&up).len() == 2),
        "{:?}",
        running(&up)
    );

    // An orphan with matching labels is adopted (and, being one too many,
    // removed again).
    up.ok(&["run", "stray", "--image=nginx", "--labels=app=nginx"]);
    assert!(eventually(Duration::from_secs(30), || {
        let owner = up.kubectl(&[
            "get",
            "pod",
            "stray",
            "-o",
            "jsonpath={.metadata.ownerReferences[0].name}",
        ]);
        let gone = !owner.status.success();
        gone || String::from_utf8_lossy(&owner.stdout) == "nginx-replicaset"
    }));
    assert!(
        eventually(Duration::from_secs(30), || running(&up).len() == 2),
        "{:?}",
        running(&up)
    );

    let described = up.ok(&["describe", "rs", "nginx-replicaset"]);
    assert!(
        described.contains("SuccessfulCreate")
            && described.contains("Created pod: nginx-replicaset-"),
        "{described}"
    );
    assert!(
        described.contains("Replicas:     2 current / 2 desired"),
        "{described}"
    );
}
