//! Several stateless apiservers over one store cluster: a write through one
//! is seen by a watch on the other, and losing an apiserver (or a store
//! member) leaves the rest serving.

mod support;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::kube::{eventually, Apiserver, KUBECTL};
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
    let mut watch = Command::new(KUBECTL)
        .args([
            "get",
            "configmaps",
            "-w",
            "--output-watch-events",
            "-o",
            "name",
        ])
        .env("KUBECONFIG", &b.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = watch.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // A write through A.
    a.ok(&["create", "configmap", "from-a", "--from-literal=k=v"]);
    let seen = eventually(Duration::from_secs(10), || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("configmap/from-a"))
    });
    assert!(
        seen,
        "B's watch missed A's write: {:?}",
        lines.lock().unwrap()
    );

    // Losing A leaves B serving, and the watch through B keeps going.
    a.kill();
    b.ok(&["create", "configmap", "from-b", "--from-literal=k=v"]);
    assert_eq!(
        b.ok(&["get", "cm", "from-a", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert!(eventually(Duration::from_secs(10), || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("configmap/from-b"))
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
    let _ = watch.kill();
    let _ = watch.wait();
}
