//! Several stateless apiservers over one store cluster: a write through one
//! is seen by a watch on the other, and losing an apiserver (or a store
//! member) leaves the rest serving.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::kube::{eventually, Apiserver, Watching};
use support::TestCluster;

#[tokio::test(flavor = "multi_thread")]
async fn two_apiservers_share_one_store() {
    let mut store = TestCluster::start(3).await;
    let endpoints = store.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Apiserver::start(&endpoints, &dir.path().join("a"), None);
    let cert = dir.path().join("a").join("apiserver.crt");
    let key = dir.path().join("a").join("apiserver.key");
    let b = Apiserver::start(&endpoints, &dir.path().join("b"), Some((&cert, &key)));

    // A watch through B.
    let watch = Watching::start(
        &b.kubeconfig,
        &[
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "name",
        ],
    );
    std::thread::sleep(Duration::from_millis(500));

    // A write through A.
    a.ok(&["create", "configmap", "from-a", "--from-literal=k=v"]);
    let seen = eventually(Duration::from_secs(10), || {
        watch.lines().iter().any(|l| l.contains("configmap/from-a"))
    });
    assert!(seen, "B's watch missed A's write: {:?}", watch.lines());

    // Losing A leaves B serving, and the watch through B keeps going.
    a.kill();
    b.ok(&["create", "configmap", "from-b", "--from-literal=k=v"]);
    assert_eq!(
        b.ok(&["get", "cm", "from-a", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert!(eventually(Duration::from_secs(10), || {
        watch.lines().iter().any(|l| l.contains("configmap/from-b"))
    }));

    // A watch from a version the store has compacted away ends with 410.
    let header: serde_json::Value = serde_json::from_str(&store.etcdctl_ok(&[
        "get",
        "/registry/configmaps/default/from-a",
        "-w",
        "json",
    ]))
    .unwrap();
    let revision = header["header"]["revision"].as_i64().unwrap();
    store.etcdctl_ok(&["compaction", &revision.to_string()]);
    let raw = b.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=2&timeoutSeconds=5",
    ]);
    let event: serde_json::Value =
        serde_json::from_str(raw.lines().next().unwrap_or_default()).unwrap_or_default();
    assert_eq!(event["type"], "ERROR", "{raw}");
    assert_eq!(event["object"]["code"], 410, "{raw}");
    assert_eq!(event["object"]["reason"], "Expired", "{raw}");

    // So does losing one store member (B moves to another endpoint).
    store.kill(0);
    assert!(
        eventually(Duration::from_secs(20), || {
            support::kube::kubectl_at(&b.kubeconfig, &["create", "configmap", "after-store-loss"])
                .status
                .success()
        }),
        "B did not serve after a store member died:\n{}",
        b.log()
    );
    assert_eq!(
        b.ok(&["get", "cm", "from-b", "-o", "name"]).trim(),
        "configmap/from-b"
    );
    drop(watch);
}

/// The addresses in Endpoints `default/kubernetes`, as `ip:port` (one
/// subset per port), sorted.
fn kubernetes_endpoints(server: &Apiserver) -> Vec<String> {
    let out = support::kube::kubectl_at(
        &server.kubeconfig,
        &[
            "get",
            "endpoints",
            "kubernetes",
            "-o",
            "jsonpath={range .subsets[*]}{range .addresses[*]}{.ip}{\" \"}{end}{.ports[0].port}{\"\\n\"}{end}",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found: Vec<String> = text
        .lines()
        .flat_map(|line| {
            let mut fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields.pop().unwrap_or_default().to_string();
            fields
                .into_iter()
                .map(move |ip| format!("{ip}:{port}"))
                .collect::<Vec<_>>()
        })
        .collect();
    found.sort();
    found
}

/// Each apiserver writes its own address into the `kubernetes` Service's
/// Endpoints and EndpointSlice; one stopped cleanly takes itself out at
/// once, one killed drops out when its lease in the store expires (15 s).
#[tokio::test(flavor = "multi_thread")]
async fn each_apiserver_is_an_endpoint_of_the_kubernetes_service() {
    let store = TestCluster::start(1).await;
    let endpoints = store.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let quiet = ["--no-controllers"];
    let mut a = Apiserver::start_with(&endpoints, &dir.path().join("a"), None, &quiet);
    let cert = dir.path().join("a").join("apiserver.crt");
    let key = dir.path().join("a").join("apiserver.key");
    let tls = Some((cert.as_path(), key.as_path()));
    let b = Apiserver::start_with(&endpoints, &dir.path().join("b"), tls, &quiet);
    let c = Apiserver::start_with(&endpoints, &dir.path().join("c"), tls, &quiet);
    let addr = |s: &Apiserver| format!("127.0.0.1:{}", s.port);
    let mut all = vec![addr(&a), addr(&b), addr(&c)];
    all.sort();
    assert!(
        eventually(Duration::from_secs(20), || kubernetes_endpoints(&b) == all),
        "{:?}",
        kubernetes_endpoints(&b)
    );
    // Same-port replicas would share one subset and slice; on one address
    // each port has its own.
    let endpoints_row = b.ok(&["get", "endpoints", "kubernetes", "--no-headers"]);
    for server in [&a, &b, &c] {
        assert!(endpoints_row.contains(&addr(server)), "{endpoints_row}");
    }
    let slices = b.ok(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=kubernetes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.addressType} {.ports[0].name} {.ports[0].port} {.endpoints[*].addresses[0]}{\"\\n\"}{end}",
    ]);
    let mut ports: Vec<u16> = vec![a.port, b.port, c.port];
    ports.sort();
    assert_eq!(slices.lines().count(), 3, "{slices}");
    assert!(
        slices
            .lines()
            .any(|l| l == format!("kubernetes IPv4 https {} 127.0.0.1", ports[0])),
        "{slices}"
    );
    for port in &ports[1..] {
        assert!(
            slices
                .lines()
                .any(|l| l == format!("kubernetes-{port} IPv4 https {port} 127.0.0.1")),
            "{slices}"
        );
    }
    let described = b.ok(&["describe", "service", "kubernetes"]);
    let line = described
        .lines()
        .find(|l| l.starts_with("Endpoints:"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains("127.0.0.1:"), "{described}");

    // Stopped cleanly (SIGTERM): out before its lease could have expired.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &c.pid().unwrap().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut without_c: Vec<String> = vec![addr(&a), addr(&b)];
    without_c.sort();
    assert!(
        eventually(Duration::from_secs(8), || kubernetes_endpoints(&b)
            == without_c),
        "{:?}\n{}",
        kubernetes_endpoints(&b),
        c.log()
    );

    // Killed: out once its lease expires.
    a.kill();
    assert!(
        eventually(Duration::from_secs(40), || kubernetes_endpoints(&b)
            == vec![addr(&b)]),
        "{:?}",
        kubernetes_endpoints(&b)
    );
    assert_eq!(
        b.ok(&[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=kubernetes",
            "-o",
            "name"
        ])
        .trim(),
        "endpointslice.discovery.k8s.io/kubernetes"
    );
}
