//! The scheduler's policies against `shoal up` and simulated nodes, driven
//! with kubectl: pod anti-affinity and affinity, preferred node affinity,
//! topology spread constraints, cordoned nodes, and a Pending pod that is
//! placed as soon as a node comes to match it.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::kube::{eventually, ShoalUp, SimulatedNodes};

/// `shoal up` with three Ready simulated nodes `node-0..2`.
fn cluster() -> (ShoalUp, SimulatedNodes) {
    let up = ShoalUp::start();
    let nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    assert!(
        eventually(Duration::from_secs(20), || {
            let out = up.kubectl(&["get", "nodes", "--no-headers"]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" Ready"))
                .count()
                == 3
        }),
        "{}",
        up.ok(&["get", "nodes"])
    );
    (up, nodes)
}

/// (name, node, phase) of the pods with `selector`.
fn pods(up: &ShoalUp, selector: &str) -> Vec<(String, String, String)> {
    up.ok(&[
        "get",
        "pods",
        "-l",
        selector,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let mut parts = l.split(' ');
        let name = parts.next()?.to_string();
        let node = parts.next()?.to_string();
        let phase = parts.next().unwrap_or_default().to_string();
        Some((name, node, phase))
    })
    .collect()
}

/// Pods with `selector` per node, counting those placed.
fn per_node(up: &ShoalUp, selector: &str) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, node, _) in pods(up, selector) {
        if !node.is_empty() {
            *counts.entry(node).or_default() += 1;
        }
    }
    counts
}

fn scheduled_message(up: &ShoalUp, pod: &str) -> String {
    up.ok(&[
        "get",
        "pod",
        pod,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
    ])
}

fn node_of(up: &ShoalUp, pod: &str) -> String {
    up.ok(&["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"])
}

const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector: {matchLabels: {app: web}}
      containers: [{name: c, image: nginx}]
"#;

const DB_AND_CACHE: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: db, labels: {app: db}}
spec:
  nodeSelector: {kubernetes.io/hostname: node-2}
  containers: [{name: c, image: postgres}]
---
apiVersion: v1
kind: Pod
metadata: {name: cache}
spec:
  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector: {matchLabels: {app: db}}
  containers: [{name: c, image: redis}]
"#;

#[test]
fn pod_anti_affinity_and_affinity() {
    let (up, _nodes) = cluster();
    up.apply(WEB);
    assert!(
        eventually(Duration::from_secs(20), || per_node(&up, "app=web").len()
            == 3),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    assert_eq!(
        per_node(&up, "app=web")
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![1, 1, 1]
    );

    // A fourth replica has nowhere to go.
    up.ok(&["scale", "deployment", "web", "--replicas=4"]);
    let expected = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.";
    let pending = || {
        pods(&up, "app=web")
            .into_iter()
            .find(|(_, node, _)| node.is_empty())
            .map(|(name, _, _)| name)
    };
    assert!(
        eventually(Duration::from_secs(15), || pending()
            .is_some_and(|p| scheduled_message(&up, &p) == expected)),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let name = pending().unwrap_or_default();
    let described = up.ok(&["describe", "pod", &name]);
    assert!(
        described.contains("FailedScheduling")
            && described.contains("didn't match pod anti-affinity rules"),
        "{described}"
    );
    assert_eq!(
        up.ok(&["get", "pod", &name, "-o", "jsonpath={.status.phase}"]),
        "Pending"
    );

    // Required affinity: the cache goes where the db is.
    up.apply(DB_AND_CACHE);
    assert!(
        eventually(Duration::from_secs(20), || node_of(&up, "cache")
            == "node-2"),
        "{}\n{}",
        up.ok(&["get", "pods", "-o", "wide"]),
        up.ok(&["describe", "pod", "cache"])
    );
    assert_eq!(node_of(&up, "db"), "node-2");
}

const PREFERS_SSD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: prefers-ssd}
spec:
  affinity:
    nodeAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 80
        preference:
          matchExpressions: [{key: disk, operator: In, values: [ssd]}]
  containers: [{name: c, image: nginx}]
"#;

const SPREAD: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: spread}
spec:
  replicas: 6
  selector: {matchLabels: {app: spread}}
  template:
    metadata: {labels: {app: spread}}
    spec:
      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: kubernetes.io/hostname
        whenUnsatisfiable: DoNotSchedule
        labelSelector: {matchLabels: {app: spread}}
      containers: [{name: c, image: nginx}]
"#;

const CORDONED: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  replicas: 4
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: tolerant}
spec:
  nodeSelector: {kubernetes.io/hostname: node-0}
  tolerations:
  - {key: node.kubernetes.io/unschedulable, operator: Exists, effect: NoSchedule}
  containers: [{name: c, image: nginx}]
"#;

#[test]
fn node_affinity_spread_and_cordon() {
    let (up, _nodes) = cluster();
    // Preferred node affinity: the labelled node, though all are empty.
    up.ok(&["label", "node", "node-1", "disk=ssd"]);
    up.apply(PREFERS_SSD);
    assert!(
        eventually(Duration::from_secs(15), || node_of(&up, "prefers-ssd")
            == "node-1"),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );

    // maxSkew 1 over three nodes: two each.
    up.apply(SPREAD);
    assert!(
        eventually(Duration::from_secs(20), || per_node(&up, "app=spread")
            .values()
            .sum::<usize>()
            == 6),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    assert_eq!(
        per_node(&up, "app=spread")
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![2, 2, 2]
    );

    // A cordoned node takes only pods that tolerate it.
    up.ok(&["cordon", "node-0"]);
    assert!(eventually(Duration::from_secs(5), || up.ok(&[
        "get",
        "node",
        "node-0",
        "-o",
        "jsonpath={.spec.unschedulable}"
    ]) == "true"));
    up.apply(CORDONED);
    assert!(
        eventually(Duration::from_secs(20), || {
            per_node(&up, "app=plain").values().sum::<usize>() == 4
                && node_of(&up, "tolerant") == "node-0"
        }),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
    assert!(
        !per_node(&up, "app=plain").contains_key("node-0"),
        "{}",
        up.ok(&["get", "pods", "-o", "wide"])
    );
}

const NEEDS_GPU: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: needs-gpu}
spec:
  nodeSelector: {gpu: "yes"}
  containers: [{name: c, image: nginx}]
"#;

#[test]
fn pending_pod_is_scheduled_once_a_node_matches() {
    let (up, _nodes) = cluster();
    up.apply(NEEDS_GPU);
    let expected = "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.";
    assert!(
        eventually(Duration::from_secs(15), || scheduled_message(
            &up,
            "needs-gpu"
        ) == expected),
        "{}",
        up.ok(&["describe", "pod", "needs-gpu"])
    );
    up.ok(&["label", "node", "node-2", "gpu=yes"]);
    assert!(
        eventually(Duration::from_secs(20), || node_of(&up, "needs-gpu")
            == "node-2"),
        "{}",
        up.ok(&["describe", "pod", "needs-gpu"])
    );
    // Told once per distinct reason, however often the pod was retried.
    let events = up.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=needs-gpu,reason=FailedScheduling",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    let messages: Vec<&str> = events.lines().collect();
    let distinct: std::collections::BTreeSet<&str> = messages.iter().copied().collect();
    assert!(
        distinct.len() == messages.len() && distinct.contains(expected),
        "{events}"
    );
}
