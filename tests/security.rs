//! What keeps the cluster's data to those it belongs to: Secrets encrypted
//! in the store as kube-apiserver's `--encryption-provider-config` does
//! (the ciphertext seen with etcdctl, the plain text with kubectl), and
//! the keys rotated as Kubernetes' documentation tells: a new key first,
//! every Secret rewritten, the old key removed.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use support::kube::{kubectl_at, Apiserver, KUBECTL};
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
    api = Apiserver::start_with(
        &endpoints,
        &data,
        None,
        &["--encryption-provider-config", config_arg],
    );
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

    // Rotation: key2 first, key1 still read; every Secret rewritten (one
    // by one: a List piped to `kubectl replace` needs the protobuf form of
    // /openapi/v2 for kubectl's client-side check, which shoal does not
    // serve yet).
    write_config(&config, &[("key2", KEY2), ("key1", KEY1)], true);
    api = Apiserver::start_with(
        &endpoints,
        &data,
        None,
        &["--encryption-provider-config", config_arg],
    );
    assert_eq!(password(&api, "db"), "hunter2");
    let rewrite = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for s in $({KUBECTL} get secrets -o name); do {KUBECTL} get $s -o json | {KUBECTL} replace -f - || exit 1; done"
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
    api = Apiserver::start_with(
        &endpoints,
        &data,
        None,
        &["--encryption-provider-config", config_arg],
    );
    assert_eq!(password(&api, "db"), "hunter2");
    assert_eq!(password(&api, "before"), "plain-before");
    api.kill();

    // A key still in use removed: an error that says so, not garbage.
    write_config(&config, &[("key3", KEY3)], false);
    api = Apiserver::start_with(
        &endpoints,
        &data,
        None,
        &["--encryption-provider-config", config_arg],
    );
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
