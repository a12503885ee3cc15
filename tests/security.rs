//! What keeps the cluster's data to those it belongs to: Secrets encrypted
//! in the store as kube-apiserver's `--encryption-provider-config` does
//! (the ciphertext seen with etcdctl, the plain text with kubectl), the
//! keys rotated as Kubernetes' documentation tells (a new key first, every
//! Secret rewritten, the old key removed); and the audit log, a line per
//! request at level Metadata, written as kubectl is used.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use support::kube::{eventually, kubectl_at, Apiserver, Watching, KUBECTL};
use support::TestCluster;

/// 32-byte AES keys, base64 (make real ones with `head -c 32 /dev/urandom | base64`).
const KEY1: &str = "c2hvYWwtc2hvYWwtc2hvYWwtc2hvYWwtc2hvYWwtMTI=";
const KEY2: &str = "b3RoZXItb3RoZXItb3RoZXItb3RoZXItb3RoZXItMzQ=";
const KEY3: &str = "dGhpcmQtdGhpcmQtdGhpcmQtdGhpcmQtdGhpcmQtNTY=";

/// An EncryptionConfiguration for Secrets: aesgcm with `keys` (the first
/// encrypts), then identity when `identity`.
fn write_config(path: &Path, keys: &[(&str, &str)], identity: bool) {
    let mut text = String::from(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources:\n  - secrets\n  providers:\n  - aesgcm:\n      keys:\n",
    );
    for (name, secret) in keys {
        text.push_str(&format!("      - name: {name}\n        secret: {secret}\n"));
    }
    if identity {
        text.push_str("  - identity: {}\n");
    }
    std::fs::write(path, text).unwrap();
}

fn password(api: &Apiserver, secret: &str) -> String {
    let encoded = api.ok(&["get", "secret", secret, "-o", "jsonpath={.data.password}"]);
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_encrypted_at_rest_and_their_keys_rotate() {
    let store = TestCluster::start(1).await;
    let endpoints = store.endpoints();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("api");
    let config = dir.path().join("encryption.yaml");
    let config_arg = config.to_str().unwrap();
    // An apiserver reading the configuration as it is now.
    let encrypted = || {
        Apiserver::start_with(
            &endpoints,
            &data,
            None,
            &["--encryption-provider-config", config_arg],
        )
    };
    let stored = |name: &str| {
        store.etcdctl_ok(&[
            "get",
            &format!("/registry/secrets/default/{name}"),
            "--print-value-only",
        ])
    };

    // Before encryption: a Secret stored as it is.
    let mut api = Apiserver::start(&endpoints, &data, None);
    api.ok(&[
        "create",
        "secret",
        "generic",
        "before",
        "--from-literal=password=plain-before",
    ]);
    assert!(stored("before").starts_with('{'), "{}", stored("before"));
    api.kill();

    // Encryption on (key1, identity to read what was there).
    write_config(&config, &[("key1", KEY1)], true);
    api = encrypted();
    api.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "--from-literal=password=hunter2",
    ]);
    let ciphertext = stored("db");
    assert!(
        ciphertext.starts_with("k8s:enc:aesgcm:v1:key1:"),
        "{ciphertext}"
    );
    assert!(
        !ciphertext.contains("hunter2") && !ciphertext.contains("aHVudGVyMg"),
        "{ciphertext}"
    );
    assert_eq!(password(&api, "db"), "hunter2");
    assert_eq!(password(&api, "before"), "plain-before");
    // ConfigMaps are not named: stored as they are.
    api.ok(&["create", "configmap", "open", "--from-literal=k=visible"]);
    assert!(store
        .etcdctl_ok(&[
            "get",
            "/registry/configmaps/default/open",
            "--print-value-only"
        ])
        .contains("visible"));
    api.kill();

    // Rotation: key2 first, key1 still read; every Secret rewritten with
    // the command Kubernetes' documentation gives (a List: kubectl asks
    // for /openapi/v2 in protobuf to check it).
    write_config(&config, &[("key2", KEY2), ("key1", KEY1)], true);
    api = encrypted();
    assert_eq!(password(&api, "db"), "hunter2");
    let rewrite = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{KUBECTL} get secrets --all-namespaces -o json | {KUBECTL} replace -f -"
        ))
        .env("KUBECONFIG", &api.kubeconfig)
        .output()
        .unwrap();
    assert!(rewrite.status.success(), "{rewrite:?}");
    for name in ["db", "before"] {
        let value = stored(name);
        assert!(
            value.starts_with("k8s:enc:aesgcm:v1:key2:"),
            "{name}: {value}"
        );
    }
    api.kill();

    // key1 and identity gone: everything still reads.
    write_config(&config, &[("key2", KEY2)], false);
    api = encrypted();
    assert_eq!(password(&api, "db"), "hunter2");
    assert_eq!(password(&api, "before"), "plain-before");
    // A watch sees a deletion (whose event carries no value to decrypt)
    // and what comes after it.
    let watch = Watching::start(
        &api.kubeconfig,
        &[
            "get",
            "secrets",
            "-w",
            "--output-watch-events",
            "-o",
            "name",
        ],
    );
    assert!(eventually(Duration::from_secs(10), || watch
        .lines()
        .iter()
        .any(|l| l.contains("secret/db"))));
    api.ok(&["delete", "secret", "before"]);
    api.ok(&[
        "create",
        "secret",
        "generic",
        "after",
        "--from-literal=password=later",
    ]);
    // `-o name` prints no event type: the deletion is before's second
    // line, and the watch goes on past it.
    let seen = eventually(Duration::from_secs(10), || {
        let lines = watch.lines();
        lines.iter().filter(|l| *l == "secret/before").count() == 2
            && lines.iter().any(|l| l == "secret/after")
    });
    assert!(seen, "{:?}", watch.lines());
    drop(watch);
    api.kill();

    // A key still in use removed: an error that says so, not garbage.
    write_config(&config, &[("key3", KEY3)], false);
    api = encrypted();
    let out = kubectl_at(&api.kubeconfig, &["get", "secret", "db"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("InternalError") || stderr.contains("Internal error"),
        "{stderr}"
    );
    assert!(stderr.contains("\"key2\""), "{stderr}");
    api.kill();

    // A configuration that is wrong keeps the apiserver from starting,
    // with the reason.
    std::fs::write(&config, "kind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - {name: k, secret: MDEyMzQ1Njc4OWFiY2RlZg==}\n").unwrap();
    let out = Command::new(support::SHOAL)
        .args(["apiserver", "--etcd-servers", &endpoints])
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--encryption-provider-config", config_arg])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("aescbc provider is not supported by shoal"),
        "{stderr}"
    );
}

/// Is the event about a request kubectl made (not the apiserver's own
/// controllers, which are audited too)?
fn by_kubectl(event: &serde_json::Value) -> bool {
    event["userAgent"]
        .as_str()
        .is_some_and(|a| a.starts_with("kubectl"))
}

/// The audit log's lines, parsed.
fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        // The last line may be half-written.
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_is_in_the_audit_log() {
    let store = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let api = Apiserver::start_with(
        &store.endpoints(),
        &dir.path().join("api"),
        None,
        &["--audit-log-path", log.to_str().unwrap()],
    );
    api.ok(&["create", "configmap", "audited", "--from-literal=k=v"]);
    api.ok(&["get", "configmap", "audited"]);
    api.ok(&["label", "configmap", "audited", "x=y"]);
    api.ok(&["delete", "configmap", "audited"]);
    assert!(
        !kubectl_at(&api.kubeconfig, &["get", "configmap", "audited"])
            .status
            .success()
    );
    assert!(
        !kubectl_at(&api.kubeconfig, &["--token", "wrong", "get", "pods"])
            .status
            .success()
    );
    // A watch, ended by kubectl after 2 s.
    let _ = kubectl_at(
        &api.kubeconfig,
        &["get", "configmaps", "-w", "--request-timeout=2s"],
    );

    let find = |events: &[serde_json::Value], verb: &str, name: Option<&str>, code: u16| {
        events
            .iter()
            .find(|e| {
                e["verb"] == verb
                    && by_kubectl(e)
                    && e["objectRef"]["resource"] == "configmaps"
                    && name.is_none_or(|n| e["objectRef"]["name"] == n)
                    && e["responseStatus"]["code"] == code
            })
            .cloned()
    };
    let mut events = Vec::new();
    let complete = eventually(Duration::from_secs(10), || {
        events = audit_events(&log);
        events
            .iter()
            .any(|e| e["verb"] == "watch" && by_kubectl(e) && e["stage"] == "ResponseComplete")
    });
    assert!(complete, "no watch completed in {events:#?}");
    for event in &events {
        assert_eq!(event["kind"], "Event", "{event}");
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1", "{event}");
        assert_eq!(event["level"], "Metadata", "{event}");
    }
    let created = find(&events, "create", Some("audited"), 201).expect("the create");
    assert_eq!(created["user"]["username"], "admin", "{created}");
    assert!(created["user"]["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("system:masters")));
    assert_eq!(created["sourceIPs"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(created["objectRef"]["namespace"], "default");
    assert_eq!(created["objectRef"]["apiVersion"], "v1");
    assert!(created["userAgent"]
        .as_str()
        .unwrap()
        .starts_with("kubectl"));
    assert_eq!(created["stage"], "ResponseComplete");
    assert!(
        find(&events, "get", Some("audited"), 200).is_some(),
        "{events:#?}"
    );
    assert!(
        find(&events, "patch", Some("audited"), 200).is_some(),
        "{events:#?}"
    );
    assert!(
        find(&events, "delete", Some("audited"), 200).is_some(),
        "{events:#?}"
    );
    assert!(
        find(&events, "get", Some("audited"), 404).is_some(),
        "{events:#?}"
    );
    let refused = events
        .iter()
        .find(|e| e["responseStatus"]["code"] == 401)
        .expect("the request with a wrong token");
    assert_eq!(refused["user"], serde_json::json!({}), "{refused}");
    // The watch: started and complete under one auditID.
    let stages: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["verb"] == "watch" && by_kubectl(e))
        .collect();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    assert_eq!(stages[0]["stage"], "ResponseStarted");
    assert_eq!(stages[1]["stage"], "ResponseComplete");
    assert_eq!(stages[0]["auditID"], stages[1]["auditID"]);
    // Other requests' IDs are their own.
    let mut ids: Vec<&str> = events
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .map(|e| e["auditID"].as_str().unwrap())
        .collect();
    let count = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), count);
}
