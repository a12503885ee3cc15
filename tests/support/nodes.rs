//! Clusters of real nodes for the root-only suites (overlay, services):
//! `shoal up --nodes N` (one network namespace per node, QUIC tunnels
//! between them), busybox pods pinned to nodes, and `kubectl exec` into
//! them.

use std::process::Command;
use std::time::Duration;

use super::kube::{eventually, ShoalUp};

pub fn cluster(count: usize) -> ShoalUp {
    cluster_with(count, &[])
}

/// `cluster(count)` with extra flags of `shoal up`.
pub fn cluster_with(count: usize, extra: &[&str]) -> ShoalUp {
    let nodes_arg = count.to_string();
    let mut args = vec![
        "--nodes",
        &nodes_arg,
        "--restart-backoff-initial",
        "1s",
        "--restart-backoff-max",
        "4s",
    ];
    args.extend_from_slice(extra);
    let up = ShoalUp::with_agent(&args);
    assert!(
        eventually(Duration::from_secs(60), || {
            let nodes = up.ok(&["get", "nodes", "--no-headers"]);
            nodes.matches(" Ready ").count() == count
        }),
        "{count} nodes never became Ready:\n{}\n{}",
        up.ok(&["get", "nodes", "-o", "wide"]),
        up.log()
    );
    up
}

pub fn agent_log(up: &ShoalUp, node: &str) -> String {
    std::fs::read_to_string(up.data_dir().join("nodes").join(node).join("agent.log"))
        .unwrap_or_default()
}

/// A busybox pod pinned to `node` running `command`.
pub fn pod(up: &ShoalUp, name: &str, node: &str, command: &str) {
    pod_with(up, name, node, &[], None, command);
}

/// A busybox pod pinned to `node` with `labels`, and a container port
/// named `web` when `web_port` is given (for Services' named targetPort),
/// ready when it listens there.
pub fn pod_with(
    up: &ShoalUp,
    name: &str,
    node: &str,
    labels: &[(&str, &str)],
    web_port: Option<u16>,
    command: &str,
) {
    let labels: String = labels
        .iter()
        .map(|(k, v)| format!("\n    {k}: {v:?}"))
        .collect();
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("\n  labels:{labels}")
    };
    let ports = web_port.map_or_else(String::new, |port| {
        format!(
            "
    ports:
    - name: web
      containerPort: {port}
    readinessProbe:
      tcpSocket:
        port: web
      periodSeconds: 1"
        )
    });
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}{labels}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [\"sh\", \"-c\", {command:?}]{ports}
"
    );
    up.apply(&yaml);
}

pub fn pod_ip(up: &ShoalUp, name: &str) -> String {
    let mut ip = String::new();
    let running = eventually(Duration::from_secs(90), || {
        let phase = up.ok(&["get", "pod", name, "-o", "jsonpath={.status.phase}"]);
        ip = up.ok(&["get", "pod", name, "-o", "jsonpath={.status.podIP}"]);
        phase == "Running" && !ip.is_empty()
    });
    assert!(
        running,
        "pod {name} not running:\n{}\n{}",
        up.ok(&["describe", "pod", name]),
        up.log()
    );
    ip
}

pub fn exec(up: &ShoalUp, pod: &str, script: &str) -> (bool, String) {
    let out = up.kubectl(&["exec", pod, "--", "sh", "-c", script]);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `script` in `pod` until it succeeds (tunnels may still be coming
/// up); returns its output.
pub fn exec_eventually(up: &ShoalUp, pod: &str, script: &str, timeout: Duration) -> String {
    let mut last = String::new();
    let ok = eventually(timeout, || {
        let (ok, out) = exec(up, pod, script);
        last = out;
        ok
    });
    assert!(
        ok,
        "{pod}: {script} never succeeded; last output:\n{last}\nnode-1 agent:\n{}",
        agent_log(up, "node-1")
    );
    last
}

pub fn in_node(node: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &format!("shoal-{node}")])
        .args(args)
        .output()
        .expect("ip netns exec");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
