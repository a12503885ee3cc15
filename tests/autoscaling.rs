//! The resource metrics pipeline and the HorizontalPodAutoscaler on
//! simulated nodes, driven by kubectl: `kubectl top node|pod` show the
//! usage the nodes report, `kubectl autoscale` scales a Deployment whose
//! pods use 90% of their CPU request up to its maximum, `kubectl get hpa`
//! prints the targets, and once the usage drops the HPA (from a manifest
//! without a scale-down stabilization window) scales it back down.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp};

/// `shoal agent --simulate` reporting usage every second.
struct Nodes(Child, std::path::PathBuf);

impl Nodes {
    fn start(kubeconfig: &Path, count: usize) -> Nodes {
        let log = kubeconfig.with_file_name("agent-metrics.log");
        let file = std::fs::File::create(&log).expect("agent log");
        let child = support::daemon(support::SHOAL)
            .args(["agent", "--simulate", "--name-prefix", "node"])
            .args(["--count", &count.to_string(), "--metrics-interval", "1s"])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(file.try_clone().expect("agent log"))
            .stderr(file)
            .spawn()
            .expect("start shoal agent --simulate");
        Nodes(child, log)
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.1).unwrap_or_default();
            eprintln!("--- simulated nodes log ---\n{log}");
        }
        support::kill_group(&mut self.0);
    }
}

/// The rows of a kubectl table without its header, split on whitespace.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn replicas(up: &ShoalUp) -> String {
    up.ok(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas}",
    ])
}

fn millicores(text: &str) -> Option<u32> {
    text.strip_suffix('m')?.parse().ok()
}

#[test]
fn top_shows_usage_and_the_hpa_scales_up_and_down() {
    let up = ShoalUp::start_with(&["--horizontal-pod-autoscaler-sync-period=1s"]);
    let _nodes = Nodes::start(&up.kubeconfig, 2);
    up.ok(&["apply", "-f", &manifest("hpa-deployment.yaml")]);

    // kubectl top: the pod's 90m, the nodes' 2 × 50m base + 90m.
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            let out = up.kubectl(&["top", "pod", "-l", "app=web"]);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            rows(&last)
                .first()
                .is_some_and(|r| r.len() == 3 && r[1] == "90m" && r[2] == "64Mi")
        }),
        "kubectl top pod: {last}\n{}\n{}",
        String::from_utf8_lossy(&up.kubectl(&["top", "pod", "-l", "app=web"]).stderr),
        up.ok(&["get", "pods,nodes", "-o", "wide"])
    );
    assert!(last.starts_with("NAME"), "{last}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let out = up.kubectl(&["top", "node"]);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            let total: u32 = rows(&last)
                .iter()
                .filter_map(|r| millicores(r.get(1)?))
                .sum();
            rows(&last).len() == 2 && total == 190
        }),
        "kubectl top node: {last}"
    );
    assert!(last.contains("CPU(cores)"), "{last}");
    let metrics = up.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/node-0"]);
    assert!(metrics.contains("\"kind\":\"NodeMetrics\""), "{metrics}");

    // Usage is read-only: writes are refused as metrics-server refuses them.
    let refused = up.fails(&[
        "delete",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/nodes/node-0",
    ]);
    assert!(
        refused.contains("MethodNotAllowed") || refused.contains("405"),
        "{refused}"
    );

    // 90% of the request against 50%: 1 → 2 → 4 → 5 (the maximum).
    assert_eq!(
        up.ok(&[
            "autoscale",
            "deployment",
            "web",
            "--cpu-percent=50",
            "--min=1",
            "--max=5"
        ])
        .trim(),
        "horizontalpodautoscaler.autoscaling/web autoscaled"
    );
    assert!(
        eventually(Duration::from_secs(40), || replicas(&up) == "5"),
        "the deployment was not scaled to 5: {}\n{}",
        replicas(&up),
        up.ok(&["describe", "hpa", "web"])
    );
    assert!(
        eventually(Duration::from_secs(15), || {
            last = up.ok(&["get", "hpa", "web"]);
            rows(&last).first().is_some_and(|r| {
                r.len() == 8
                    && r[1] == "Deployment/web"
                    && r[2..5] == ["cpu:", "90%/50%", "1"]
                    && r[5..7] == ["5", "5"]
            })
        }),
        "kubectl get hpa: {last}"
    );
    assert!(last.starts_with("NAME"), "{last}");
    // autoscaling/v1 clients see the same target.
    let v1 = up.ok(&["get", "hpa.v1.autoscaling", "web", "--no-headers"]);
    assert!(v1.contains("cpu: 90%/50%"), "{v1}");
    let described = up.ok(&["describe", "hpa", "web"]);
    assert!(
        described.contains(
            "New size: 2; reason: cpu resource utilization (percentage of request) above target"
        ),
        "{described}"
    );
    assert!(described.contains("SuccessfulRescale"), "{described}");

    // The same HPA from a manifest without the 5-minute scale-down window,
    // then the usage drops to 10%: back to the minimum.
    up.ok(&["delete", "hpa", "web"]);
    up.ok(&["apply", "-f", &manifest("hpa.yaml")]);
    up.ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"simulate.shoal.dev/cpu-usage":"10m"}}}}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(45), || replicas(&up) == "1"),
        "the deployment was not scaled down: {}\n{}",
        replicas(&up),
        up.ok(&["describe", "hpa", "web"])
    );
    let described = up.ok(&["describe", "hpa", "web"]);
    assert!(
        described.contains("All metrics below target"),
        "{described}"
    );
}

#[test]
fn an_hpa_without_metrics_says_why() {
    let up = ShoalUp::start_with(&["--horizontal-pod-autoscaler-sync-period=1s"]);
    let _nodes = Nodes::start(&up.kubeconfig, 1);
    up.ok(&["create", "deployment", "quiet", "--image=nginx"]);
    up.ok(&[
        "autoscale",
        "deployment",
        "quiet",
        "--cpu-percent=50",
        "--max=3",
    ]);
    let mut last = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            last = up.ok(&["describe", "hpa", "quiet"]);
            last.contains("FailedGetResourceMetric")
        }),
        "{last}"
    );
    assert!(last.contains("ScalingActive"), "{last}");
    let row = up.ok(&["get", "hpa", "quiet", "--no-headers"]);
    assert!(row.contains("cpu: <unknown>/50%"), "{row}");
    assert_eq!(
        up.ok(&[
            "get",
            "deployment",
            "quiet",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
}
