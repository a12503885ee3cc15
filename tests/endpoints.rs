//! Endpoints and EndpointSlices of the guide's Deployment behind a
//! Service, on simulated nodes, as kubectl shows them: scaling, a pod
//! turning not ready, a headless Service with pod hostnames; and
//! LoadBalancer Services taking addresses from `--loadbalancer-ip-pool`.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::kube::{eventually, manifest, ShoalUp, SimulatedNodes};

/// The IPs of the running, live pods labelled app=nginx.
fn pod_ips(up: &ShoalUp) -> BTreeSet<String> {
    up.ok(&[
        "get", "pods", "-l", "app=nginx", "-o",
        "jsonpath={range .items[*]}{.status.podIP} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
    ])
    .lines()
    .filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() == 2 && f[1] == "Running").then(|| f[0].to_string())
    })
    .collect()
}

/// kubectl's output, or nothing when it fails (e.g. not created yet).
fn quietly(up: &ShoalUp, args: &[&str]) -> String {
    let out = up.kubectl(args);
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::new()
    }
}

/// The ENDPOINTS column of `kubectl get endpoints <svc>`.
fn endpoints_column(up: &ShoalUp, service: &str) -> BTreeSet<String> {
    let row = quietly(up, &["get", "endpoints", service, "--no-headers"]);
    row.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty() && *s != "<none>")
        .map(String::from)
        .collect()
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: nginx-svc
spec:
  selector:
    app: nginx
  ports:
  - name: http
    port: 8080
    targetPort: 80
";

#[test]
fn endpoints_and_slices_follow_the_pods() {
    let up = ShoalUp::start();
    let _nodes = SimulatedNodes::start(&up.kubeconfig, 3, "node");
    up.ok(&["apply", "-f", &manifest("deployment.yaml")]);
    up.ok(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=60s",
    ]);
    up.apply(SERVICE);

    // Three pods, three ip:port pairs, matching the pods' IPs.
    assert!(
        eventually(Duration::from_secs(30), || {
            let ips = pod_ips(&up);
            let want: BTreeSet<String> = ips.iter().map(|ip| format!("{ip}:80")).collect();
            ips.len() == 3 && endpoints_column(&up, "nginx-svc") == want
        }),
        "{}\n{}",
        up.ok(&["get", "endpoints", "nginx-svc"]),
        up.ok(&["get", "pods", "-o", "wide"])
    );
    let slices = up.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=nginx-svc",
    ]);
    let rows: Vec<Vec<&str>> = slices
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 1, "{slices}");
    assert!(rows[0][0].starts_with("nginx-svc-") && rows[0][0].len() == "nginx-svc-".len() + 5);
    assert_eq!(rows[0][1..3], ["IPv4", "80"], "{slices}");
    let listed: BTreeSet<String> = rows[0][3].split(',').map(String::from).collect();
    assert_eq!(listed, pod_ips(&up), "{slices}");
    let slice_yaml = up.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=nginx-svc",
        "-o",
        "yaml",
    ]);
    for expected in [
        "endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io",
        "kind: Service",
        "ready: true",
        "kind: Pod",
        "nodeName: node-",
        "name: http",
    ] {
        assert!(slice_yaml.contains(expected), "{expected} in {slice_yaml}");
    }

    // Scale to one: one endpoint.
    up.ok(&["scale", "deployment/nginx-deployment", "--replicas=1"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            let ips = pod_ips(&up);
            ips.len() == 1
                && endpoints_column(&up, "nginx-svc")
                    == ips.iter().map(|ip| format!("{ip}:80")).collect()
        }),
        "{}",
        up.ok(&["get", "endpoints", "nginx-svc"])
    );

    // A pod that stops being ready moves to notReadyAddresses.
    let pod = up
        .ok(&["get", "pods", "-l", "app=nginx", "-o", "name"])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let ip = up.ok(&["get", &pod, "-o", "jsonpath={.status.podIP}"]);
    up.ok(&[
        "patch",
        &pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"False"}]}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(30), || {
            up.ok(&[
                "get",
                "endpoints",
                "nginx-svc",
                "-o",
                "jsonpath={.subsets[*].notReadyAddresses[*].ip}",
            ]) == ip
                && endpoints_column(&up, "nginx-svc").is_empty()
        }),
        "{}",
        up.ok(&["get", "endpoints", "nginx-svc", "-o", "yaml"])
    );
    assert!(eventually(Duration::from_secs(10), || up
        .ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=nginx-svc",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ])
        .trim()
        == "false"));

    // A headless Service over pods with hostname and subdomain.
    for i in 0..2 {
        up.apply(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: db-{i}\n  labels:\n    app: db\nspec:\n  hostname: db-{i}\n  subdomain: db\n  containers:\n  - name: postgres\n    image: postgres:16\n    ports:\n    - containerPort: 5432\n"
            ),
        );
    }
    up.apply("apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  clusterIP: None\n  selector:\n    app: db\n  ports:\n  - port: 5432\n",
    );
    assert!(
        eventually(Duration::from_secs(30), || quietly(
            &up,
            &[
                "get",
                "endpoints",
                "db",
                "-o",
                "jsonpath={.subsets[*].addresses[*].hostname}",
            ]
        )
        .split_whitespace()
        .collect::<BTreeSet<_>>()
            == BTreeSet::from(["db-0", "db-1"])),
        "{}",
        quietly(&up, &["get", "endpoints", "db", "-o", "yaml"])
    );
    let labels = up.ok(&["get", "endpoints", "db", "--show-labels", "--no-headers"]);
    assert!(
        labels.contains("service.kubernetes.io/headless="),
        "{labels}"
    );
    assert!(eventually(Duration::from_secs(10), || up
        .ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=db,service.kubernetes.io/headless",
            "-o",
            "jsonpath={.items[*].endpoints[*].hostname}",
        ])
        .split_whitespace()
        .collect::<BTreeSet<_>>()
        == BTreeSet::from(["db-0", "db-1"])));

    // The Service goes, and its Endpoints and slices with it.
    up.ok(&["delete", "service", "nginx-svc"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            !up.kubectl(&["get", "endpoints", "nginx-svc"])
                .status
                .success()
                && up
                    .ok(&[
                        "get",
                        "endpointslices",
                        "-l",
                        "kubernetes.io/service-name=nginx-svc",
                        "-o",
                        "name",
                    ])
                    .trim()
                    .is_empty()
        }),
        "{}",
        up.ok(&["get", "endpoints,endpointslices"])
    );
}

fn load_balancer(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  type: LoadBalancer\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n"
    )
}

fn external_ip(up: &ShoalUp, name: &str) -> String {
    up.ok(&["get", "svc", name, "--no-headers"])
        .split_whitespace()
        .nth(3)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn load_balancers_take_addresses_from_the_pool() {
    let up = ShoalUp::start_with(&["--loadbalancer-ip-pool=172.30.255.0/30"]);
    // The ingress's Service (made at start) takes the first address.
    // (Made by the controllers a moment after start: not found is "".)
    let ingress = || {
        let out = up.kubectl(&[
            "get",
            "svc",
            "-n",
            "kube-system",
            "shoal-ingress",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ip}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        eventually(Duration::from_secs(20), || ingress() == "172.30.255.1"),
        "{}",
        up.ok(&["get", "svc", "-A"])
    );
    up.apply(&load_balancer("lb-a"));
    assert!(
        eventually(Duration::from_secs(20), || external_ip(&up, "lb-a")
            == "172.30.255.2"),
        "{}",
        up.ok(&["get", "svc"])
    );
    assert_eq!(
        up.ok(&[
            "get",
            "svc",
            "lb-a",
            "-o",
            "jsonpath={.status.loadBalancer.ingress[0].ipMode}"
        ]),
        "VIP"
    );

    // The pool (two usable addresses) is exhausted.
    up.apply(&load_balancer("lb-b"));
    assert!(
        eventually(Duration::from_secs(20), || {
            let events = up.ok(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=lb-b",
            ]);
            events.contains("Warning") && events.contains("AllocationFailed")
        }),
        "{}",
        up.ok(&["get", "events"])
    );
    assert_eq!(external_ip(&up, "lb-b"), "<pending>");

    // Deleting one gives its address to the waiting one.
    up.ok(&["delete", "svc", "lb-a"]);
    assert!(
        eventually(Duration::from_secs(20), || external_ip(&up, "lb-b")
            == "172.30.255.2"),
        "{}",
        up.ok(&["get", "svc"])
    );
    assert_eq!(ingress(), "172.30.255.1");
}
