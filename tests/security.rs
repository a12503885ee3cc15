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

/// A kubeconfig for the same apiserver with another user's token.
fn kubeconfig_for(api: &Apiserver, token: &str) -> std::path::PathBuf {
    let path = api.dir.join(format!("kubeconfig-{token}"));
    std::fs::write(
        &path,
        support::kube::kubeconfig_text(
            &format!("https://127.0.0.1:{}", api.port),
            &api.dir.join("ca.crt"),
            token,
        ),
    )
    .unwrap();
    path
}

/// A one-member store and an apiserver whose token file also has
/// `tokens` (its data in the temporary dir's `api`).
async fn with_tokens(tokens: &str) -> (TestCluster, tempfile::TempDir, Apiserver) {
    let store = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let api = Apiserver::start_with_tokens(
        &store.endpoints(),
        &dir.path().join("api"),
        None,
        &[],
        tokens,
    );
    (store, dir, api)
}

/// kubectl's stdout and stderr together, and whether it succeeded.
fn run(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = kubectl_at(kubeconfig, args);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn rbac_decides_like_kubernetes_for_kubectl() {
    let (_store, dir, api) =
        with_tokens("bob-token,bob,1001\ncarol-token,carol,1002,\"ops\"\n").await;
    let bob = kubeconfig_for(&api, "bob-token");
    let carol = kubeconfig_for(&api, "carol-token");
    api.ok(&["create", "namespace", "dev"]);
    api.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "dev",
    ]);
    api.ok(&[
        "create",
        "rolebinding",
        "carol-admin",
        "--clusterrole=admin",
        "--group=ops",
        "-n",
        "dev",
    ]);

    // kubectl auth can-i: the answers Kubernetes gives a user bound to
    // view in one namespace.
    let table: &[(&[&str], bool)] = &[
        (&["get", "pods", "-n", "dev"], true),
        (&["list", "pods", "-n", "dev"], true),
        (&["watch", "services", "-n", "dev"], true),
        (&["list", "deployments.apps", "-n", "dev"], true),
        (&["get", "pods/log", "-n", "dev"], true),
        (&["get", "configmaps", "-n", "dev"], true),
        (&["list", "events", "-n", "dev"], true),
        (
            &["get", "horizontalpodautoscalers.autoscaling", "-n", "dev"],
            true,
        ),
        (&["list", "jobs.batch", "-n", "dev"], true),
        (
            &["list", "endpointslices.discovery.k8s.io", "-n", "dev"],
            true,
        ),
        (&["get", "secrets", "-n", "dev"], false),
        (&["create", "pods", "-n", "dev"], false),
        (&["create", "pods/exec", "-n", "dev"], false),
        (&["update", "configmaps", "-n", "dev"], false),
        (&["delete", "deployments.apps", "-n", "dev"], false),
        (
            &["list", "roles.rbac.authorization.k8s.io", "-n", "dev"],
            false,
        ),
        (&["get", "pods", "-n", "default"], false),
        (&["list", "nodes"], false),
        (
            &["create", "selfsubjectaccessreviews.authorization.k8s.io"],
            true,
        ),
    ];
    for (args, expected) in table {
        let mut full = vec!["auth", "can-i"];
        full.extend_from_slice(args);
        let out = kubectl_at(&bob, &full);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(
            (out.status.success(), answer.as_str()),
            (*expected, if *expected { "yes" } else { "no" }),
            "kubectl auth can-i {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The same through impersonation by the admin.
    assert_eq!(
        api.ok(&["auth", "can-i", "list", "pods", "-n", "dev", "--as=bob"])
            .trim(),
        "yes"
    );
    let out = kubectl_at(
        &api.kubeconfig,
        &["auth", "can-i", "list", "secrets", "-n", "dev", "--as=bob"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");

    // kubectl auth can-i --list: the view rules, no Secrets.
    let (ok, list) = run(&bob, &["auth", "can-i", "--list", "-n", "dev"]);
    assert!(ok, "{list}");
    assert!(list.starts_with("Resources"), "{list}");
    let pods = list
        .lines()
        .find(|l| l.starts_with("pods "))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.ends_with("[get list watch]"), "{list}");
    assert!(!list.lines().any(|l| l.starts_with("secrets ")), "{list}");
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );

    // Writes and reads outside the role: 403 with Kubernetes' messages.
    let (ok, out) = run(
        &bob,
        &[
            "create",
            "configmap",
            "x",
            "-n",
            "dev",
            "--from-literal=a=b",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("configmaps is forbidden: User \"bob\" cannot create resource \"configmaps\" in API group \"\" in the namespace \"dev\""),
        "{out}"
    );
    let (ok, out) = run(&bob, &["get", "secrets", "-n", "dev"]);
    assert!(!ok);
    assert!(
        out.contains("Error from server (Forbidden): secrets is forbidden: User \"bob\" cannot list resource \"secrets\" in API group \"\" in the namespace \"dev\""),
        "{out}"
    );
    let (ok, out) = run(&bob, &["delete", "pod", "web", "-n", "dev"]);
    assert!(!ok);
    assert!(
        out.contains("pods \"web\" is forbidden: User \"bob\" cannot delete resource \"pods\" in API group \"\" in the namespace \"dev\""),
        "{out}"
    );
    let (ok, out) = run(&bob, &["get", "nodes"]);
    assert!(!ok);
    assert!(
        out.contains("nodes is forbidden: User \"bob\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"),
        "{out}"
    );
    let (ok, out) = run(&bob, &["get", "pods", "-n", "dev", "--as=carol"]);
    assert!(!ok);
    assert!(
        out.contains("users \"carol\" is forbidden: User \"bob\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{out}"
    );

    // A Role and a RoleBinding added: allowed within a second.
    api.ok(&[
        "create",
        "role",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
        "-n",
        "dev",
    ]);
    api.ok(&[
        "create",
        "rolebinding",
        "bob-secrets",
        "--role=secret-reader",
        "--user=bob",
        "-n",
        "dev",
    ]);
    let bound = std::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(1), || run(
            &bob,
            &["auth", "can-i", "list", "secrets", "-n", "dev"]
        )
        .0),
        "not allowed 1 s after the binding"
    );
    eprintln!("allowed {:?} after the binding", bound.elapsed());
    assert!(run(&bob, &["get", "secrets", "-n", "dev"]).0);
    api.ok(&["delete", "rolebinding", "bob-secrets", "-n", "dev"]);
    assert!(eventually(Duration::from_secs(1), || !run(
        &bob,
        &["get", "secrets", "-n", "dev"]
    )
    .0));

    // Escalation: carol (admin in dev) may grant what she holds there, not
    // more, and may not bind herself to cluster-admin.
    let (ok, out) = run(
        &carol,
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get",
            "--resource=pods",
            "-n",
            "dev",
        ],
    );
    assert!(ok, "{out}");
    let (ok, out) = run(
        &carol,
        &[
            "create",
            "role",
            "node-reader",
            "--verb=list",
            "--resource=nodes",
            "-n",
            "dev",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("roles.rbac.authorization.k8s.io \"node-reader\" is forbidden: user \"carol\" (groups=[\"ops\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"list\"]}"),
        "{out}"
    );
    let (ok, out) = run(
        &carol,
        &[
            "create",
            "rolebinding",
            "mine",
            "--clusterrole=cluster-admin",
            "--user=carol",
            "-n",
            "dev",
        ],
    );
    assert!(!ok);
    assert!(
        out.contains("is attempting to grant RBAC permissions not currently held"),
        "{out}"
    );
    let (ok, out) = run(
        &carol,
        &[
            "create",
            "rolebinding",
            "bob-reads",
            "--role=pod-reader",
            "--user=bob",
            "-n",
            "dev",
        ],
    );
    assert!(ok, "{out}");

    // A binding's roleRef cannot change.
    let (ok, out) = run(
        &api.kubeconfig,
        &[
            "patch",
            "rolebinding",
            "bob-view",
            "-n",
            "dev",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"edit"}}"#,
        ],
    );
    assert!(!ok && out.contains("cannot change roleRef"), "{out}");

    // kubectl auth whoami (SelfSubjectReview).
    let (ok, out) = run(&carol, &["auth", "whoami"]);
    assert!(ok, "{out}");
    assert!(out.contains("carol") && out.contains("ops"), "{out}");

    // Without a token: system:anonymous may see the version, nothing else;
    // a wrong token is 401.
    let curl = |path: &str, token: Option<&str>| -> (String, String) {
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--cacert"])
            .arg(api.dir.join("ca.crt"))
            .args(["-w", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        let out = command
            .arg(format!("https://127.0.0.1:{}{path}", api.port))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    assert_eq!(curl("/version", None).0, "200");
    let (code, body) = curl("/api/v1/namespaces/dev/pods", None);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("pods is forbidden: User \\\"system:anonymous\\\" cannot list resource \\\"pods\\\" in API group \\\"\\\" in the namespace \\\"dev\\\""), "{body}");
    assert_eq!(curl("/api", None).0, "403");
    assert_eq!(curl("/api", Some("bob-token")).0, "200");
    assert_eq!(curl("/api/v1/namespaces/dev/pods", Some("nobody")).0, "401");

    // A client certificate signed by the cluster CA is a user too: CN the
    // name, O the groups (dave in ops is admin in dev through ops).
    let pki = dir.path().join("api");
    std::fs::write(pki.join("dave.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    openssl(
        &pki,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "dave.key",
            "-out",
            "dave.csr",
            "-subj",
            "/O=ops/CN=dave",
        ],
    );
    openssl(
        &pki,
        &[
            "x509",
            "-req",
            "-in",
            "dave.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "dave.crt",
            "-extfile",
            "dave.ext",
        ],
    );
    let dave = pki.join("kubeconfig-dave");
    std::fs::write(
        &dave,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:{}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
            api.port,
            pki.join("ca.crt").display(),
            pki.join("dave.crt").display(),
            pki.join("dave.key").display()
        ),
    )
    .unwrap();
    let (ok, out) = run(&dave, &["auth", "whoami"]);
    assert!(ok && out.contains("dave") && out.contains("ops"), "{out}");
    let out = kubectl_at(
        &dave,
        &[
            "auth",
            "can-i",
            "create",
            "roles.rbac.authorization.k8s.io",
            "-n",
            "dev",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    let (ok, out) = run(&dave, &["get", "pods", "-n", "default"]);
    assert!(
        !ok && out.contains("pods is forbidden: User \"dave\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{out}"
    );

    // The default roles are there, as kubectl shows them.
    let roles = api.ok(&["get", "clusterroles"]);
    for name in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:node",
        "system:discovery",
    ] {
        assert!(
            roles
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{roles}"
        );
    }
    assert!(
        roles.starts_with("NAME") && roles.lines().next().unwrap().contains("CREATED AT"),
        "{roles}"
    );
    let bindings = api.ok(&["get", "rolebindings", "-n", "dev", "-o", "wide"]);
    assert!(
        bindings.lines().any(|l| l.starts_with("bob-view")
            && l.contains("ClusterRole/view")
            && l.contains("bob")),
        "{bindings}"
    );
}

/// A pod's ServiceAccount token, mounted by the apiserver's admission and
/// written by the agent: kubectl inside the pod (in-cluster config) lists
/// what the account's Role allows and gets 403 otherwise;
/// `automountServiceAccountToken: false` mounts nothing; `kubectl create
/// token` gives a token the apiserver takes; a pod's token dies with it.
#[test]
fn service_account_tokens_in_pods() {
    let up = support::kube::ShoalUp::with_ready_agent(&[]);
    let port = up.server().rsplit(':').next().unwrap().to_string();
    up.ok(&["create", "namespace", "team"]);
    up.ok(&["create", "serviceaccount", "reader", "-n", "team"]);
    up.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get,list",
        "--resource=pods",
        "-n",
        "team",
    ]);
    up.ok(&[
        "create",
        "rolebinding",
        "reader",
        "--role=pod-reader",
        "--serviceaccount=team:reader",
        "-n",
        "team",
    ]);
    up.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: team}}
spec:
  serviceAccountName: reader
  hostNetwork: true
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    env:
    - {{name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}}
    - {{name: KUBERNETES_SERVICE_PORT, value: "{port}"}}
    - {{name: HOME, value: /tmp}}
    volumeMounts:
    - {{name: kubectl, mountPath: /kubectl}}
    - {{name: tmp, mountPath: /tmp}}
  volumes:
  - {{name: kubectl, hostPath: {{path: {KUBECTL}, type: File}}}}
  - {{name: tmp, emptyDir: {{}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: quiet, namespace: team}}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: main, image: busybox, command: ["sleep", "3600"]}}
"#
    ));
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "pod/quiet",
        "-n",
        "team",
        "--timeout=60s",
    ]);

    // What admission mounted, and what the agent wrote there.
    let volumes = up.ok(&[
        "get",
        "pod",
        "reader",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.volumes[*].name}",
    ]);
    assert!(volumes.contains("kube-api-access-"), "{volumes}");
    let files = up.ok(&[
        "exec",
        "reader",
        "-n",
        "team",
        "--",
        "ls",
        "/var/run/secrets/kubernetes.io/serviceaccount",
    ]);
    assert_eq!(
        files.split_whitespace().collect::<Vec<_>>(),
        ["ca.crt", "namespace", "token"]
    );
    assert_eq!(
        up.ok(&[
            "exec",
            "reader",
            "-n",
            "team",
            "--",
            "cat",
            "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
        ]),
        "team"
    );
    let ca = up.ok(&[
        "exec",
        "reader",
        "-n",
        "team",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt",
    ]);
    assert_eq!(ca, std::fs::read_to_string(up.ca_file()).unwrap());

    // kubectl in the pod, as the account: pods yes, Secrets no.
    let pods = up.ok(&[
        "exec", "reader", "-n", "team", "--", "/kubectl", "get", "pods",
    ]);
    assert!(pods.lines().any(|l| l.starts_with("reader ")), "{pods}");
    let out = up.kubectl(&[
        "exec", "reader", "-n", "team", "--", "/kubectl", "get", "secrets",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("secrets is forbidden: User \"system:serviceaccount:team:reader\" cannot list resource \"secrets\" in API group \"\" in the namespace \"team\""),
        "{stderr}"
    );
    let whoami = up.ok(&[
        "exec", "reader", "-n", "team", "--", "/kubectl", "auth", "whoami",
    ]);
    assert!(
        whoami.contains("system:serviceaccount:team:reader")
            && whoami.contains("system:serviceaccounts:team"),
        "{whoami}"
    );

    // automountServiceAccountToken: false: no volume, nothing mounted.
    assert_eq!(
        up.ok(&[
            "get",
            "pod",
            "quiet",
            "-n",
            "team",
            "-o",
            "jsonpath={.spec.volumes}"
        ]),
        ""
    );
    let out = up.kubectl(&[
        "exec",
        "quiet",
        "-n",
        "team",
        "--",
        "ls",
        "/var/run/secrets/kubernetes.io/serviceaccount",
    ]);
    assert!(!out.status.success());

    // kubectl create token: a token the apiserver takes as the account.
    let token = up.ok(&["create", "token", "reader", "-n", "team"]);
    let (code, body) = up.curl_as(
        "GET",
        "/api/v1/namespaces/team/pods",
        "application/json",
        None,
        Some(token.trim()),
    );
    assert_eq!(code, 200, "{body}");
    let (code, _) = up.curl_as(
        "GET",
        "/api/v1/namespaces/team/secrets",
        "application/json",
        None,
        Some(token.trim()),
    );
    assert_eq!(code, 403);
    let out = up.kubectl(&["create", "token", "missing", "-n", "team"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("serviceaccounts \"missing\" not found"));
    let out = up.kubectl(&["create", "token", "reader", "-n", "team", "--duration=1m"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("may not specify a duration less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The pod's own token stops working once the pod is gone.
    let pod_token = up.ok(&[
        "exec",
        "reader",
        "-n",
        "team",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
    ]);
    let pods_of = |token: &str| {
        up.curl_as(
            "GET",
            "/api/v1/namespaces/team/pods",
            "application/json",
            None,
            Some(token),
        )
        .0
    };
    assert_eq!(pods_of(&pod_token), 200);
    up.ok(&["delete", "pod", "reader", "-n", "team", "--wait=true"]);
    assert!(
        eventually(Duration::from_secs(20), || pods_of(&pod_token) == 401),
        "the deleted pod's token still works"
    );
    // And every namespace has the cluster CA for its pods.
    let ca_map = up.ok(&[
        "get",
        "configmap",
        "kube-root-ca.crt",
        "-n",
        "team",
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    assert_eq!(ca_map, ca);
}

/// A node's own identity (`system:node:<name>` in `system:nodes`) under
/// the Node authorizer and NodeRestriction: the Secrets and ConfigMaps of
/// its own pods only, its own Node and Lease only, the status and deletion
/// of its own pods only, tokens only bound to its own pods.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_kept_to_their_own_pods_and_objects() {
    let (_store, dir, api) = with_tokens("n1-token,system:node:n1,n1,\"system:nodes\"\n").await;
    let n1 = kubeconfig_for(&api, "n1-token");
    api.ok(&["create", "namespace", "shop"]);
    api.ok(&[
        "create",
        "secret",
        "generic",
        "db",
        "-n",
        "shop",
        "--from-literal=p=1",
    ]);
    api.ok(&[
        "create",
        "secret",
        "generic",
        "other",
        "-n",
        "shop",
        "--from-literal=p=2",
    ]);
    api.ok(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "shop",
        "--from-literal=a=b",
    ]);
    let objects = r#"
apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  nodeName: n1
  containers:
  - name: c
    image: busybox
    envFrom: [{configMapRef: {name: cfg}}]
    env: [{name: P, valueFrom: {secretKeyRef: {name: db, key: p}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop}
spec:
  nodeName: n2
  containers:
  - name: c
    image: busybox
    env: [{name: P, valueFrom: {secretKeyRef: {name: other, key: p}}}]
"#;
    let path = dir.path().join("objects.yaml");
    std::fs::write(&path, objects).unwrap();
    api.ok(&["create", "-f", path.to_str().unwrap()]);
    let forbidden = |args: &[&str], message: &str| {
        let (ok, out) = run(&n1, args);
        assert!(!ok, "kubectl {args:?} should be refused: {out}");
        assert!(out.contains(message), "kubectl {args:?}: {out}");
    };

    // Reads: what its own pods use, by name.
    assert!(eventually(Duration::from_secs(5), || run(
        &n1,
        &["get", "secret", "db", "-n", "shop"]
    )
    .0));
    assert!(run(&n1, &["get", "configmap", "cfg", "-n", "shop"]).0);
    assert!(run(&n1, &["get", "configmap", "kube-root-ca.crt", "-n", "shop"]).0);
    forbidden(
        &["get", "secret", "other", "-n", "shop"],
        "secrets \"other\" is forbidden: User \"system:node:n1\" cannot get resource \"secrets\" in API group \"\" in the namespace \"shop\": no relationship found between node 'n1' and this object",
    );
    forbidden(
        &["get", "secrets", "-n", "shop"],
        "secrets is forbidden: User \"system:node:n1\" cannot list resource \"secrets\"",
    );
    assert!(run(&n1, &["get", "pods", "-A"]).0);
    // kubectl prints the authorizer's reason after a no.
    let out = kubectl_at(&n1, &["auth", "can-i", "get", "secret/other", "-n", "shop"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no - no relationship found between node 'n1' and this object"
    );
    let out = kubectl_at(&n1, &["auth", "can-i", "get", "secret/db", "-n", "shop"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");

    // Writes: its own Node, not another's.
    assert!(run(&n1, &["label", "node", "n1", "zone=a"]).0);
    forbidden(
        &["label", "node", "n2", "zone=a"],
        "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\"",
    );
    // Pods: the status and deletion of its own, not of another node's.
    // (As the kubelet does: a PATCH of pods/status, which nodes may not
    // GET, so not through `kubectl patch --subresource=status`.)
    let status = r#"{"status":{"message":"seen"}}"#;
    let patch_status = |pod: &str| {
        let out = Command::new("curl")
            .args(["-sS", "-X", "PATCH", "--cacert"])
            .arg(api.dir.join("ca.crt"))
            .args(["-H", "Authorization: Bearer n1-token"])
            .args(["-H", "Content-Type: application/merge-patch+json"])
            .args(["--data", status, "-w", "\n%{http_code}"])
            .arg(format!(
                "https://127.0.0.1:{}/api/v1/namespaces/shop/pods/{pod}/status",
                api.port
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let answer = patch_status("web");
    assert!(answer.ends_with("\n200"), "{answer}");
    let answer = patch_status("api");
    assert!(answer.ends_with("\n403"), "{answer}");
    assert!(
        answer.contains("pods \\\"api\\\" is forbidden: node \\\"n1\\\" can only update pod status for pods with spec.nodeName set to itself"),
        "{answer}"
    );
    forbidden(
        &["delete", "pod", "api", "-n", "shop"],
        "pods \"api\" is forbidden: node \"n1\" can only delete pods with spec.nodeName set to itself",
    );
    forbidden(
        &["run", "extra", "-n", "shop", "--image=busybox"],
        "node \"n1\" can only create mirror pods",
    );
    // Tokens: bound to its own pods only.
    assert!(
        run(
            &n1,
            &[
                "create",
                "token",
                "default",
                "-n",
                "shop",
                "--bound-object-kind=Pod",
                "--bound-object-name=web"
            ]
        )
        .0
    );
    forbidden(
        &[
            "create",
            "token",
            "default",
            "-n",
            "shop",
            "--bound-object-kind=Pod",
            "--bound-object-name=api",
        ],
        "node requested token not bound to a pod scheduled on node \"n1\"",
    );
    // A mirror pod may use nothing (else a node could read any Secret by
    // making a pod that names it).
    let mirror = dir.path().join("mirror.yaml");
    std::fs::write(
        &mirror,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: sneaky, namespace: shop, annotations: {kubernetes.io/config.mirror: x}}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n    env: [{name: P, valueFrom: {secretKeyRef: {name: other, key: p}}}]\n",
    )
    .unwrap();
    forbidden(
        &["create", "-f", mirror.to_str().unwrap()],
        "node \"n1\" can not create pods that reference secrets",
    );
    // Leases: its own only, in kube-node-lease only.
    let lease = |name: &str| {
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {name}}}\n")
    };
    let own = dir.path().join("own-lease.yaml");
    std::fs::write(&own, lease("n1")).unwrap();
    assert!(run(&n1, &["create", "-f", own.to_str().unwrap()]).0);
    let theirs = dir.path().join("their-lease.yaml");
    std::fs::write(&theirs, lease("n2")).unwrap();
    forbidden(
        &["create", "-f", theirs.to_str().unwrap()],
        "can only access node lease with the same name as the requesting node",
    );
    let elsewhere = dir.path().join("elsewhere-lease.yaml");
    std::fs::write(
        &elsewhere,
        lease("n1").replace("kube-node-lease", "kube-system"),
    )
    .unwrap();
    forbidden(
        &["create", "-f", elsewhere.to_str().unwrap()],
        "can only access leases in the \"kube-node-lease\" system namespace",
    );
    // Its own pod deleted: its Secret is no longer its to read.
    assert!(run(&n1, &["delete", "pod", "web", "-n", "shop", "--wait=false"]).0);
    api.ok(&[
        "delete",
        "pod",
        "web",
        "-n",
        "shop",
        "--grace-period=0",
        "--force",
    ]);
    assert!(eventually(Duration::from_secs(5), || !run(
        &n1,
        &["get", "secret", "db", "-n", "shop"]
    )
    .0));
}

/// Runs openssl; fails the test when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A key and a self-signed certificate `name` (`name.key`, `name.crt`)
/// for `subject`, valid two days.
fn self_signed(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            subject,
        ],
    );
}

/// A key and a certificate `name` signed by the CA `ca` (with
/// serverAuth and clientAuth, for 127.0.0.1).
fn issue(dir: &Path, ca: &str, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// Store members started by a test, killed when it ends (even by a panic).
struct Members(Vec<std::process::Child>);

impl Drop for Members {
    fn drop(&mut self) {
        for member in &mut self.0 {
            support::kill_group(member);
        }
    }
}

/// The store with etcd's TLS flags on both ports: etcdctl gets in with
/// the cluster CA's client certificate only, the members replicate over
/// TLS (a write still commits with one of three killed), and the
/// apiserver connects with `--etcd-cafile/--etcd-certfile/--etcd-keyfile`.
#[tokio::test(flavor = "multi_thread")]
async fn the_store_speaks_tls_and_asks_for_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path();
    for ca in ["ca", "rogue"] {
        self_signed(pki, ca, &format!("/CN={ca}"));
    }
    issue(pki, "ca", "member", "member");
    issue(pki, "ca", "client", "apiserver");
    issue(pki, "rogue", "intruder", "apiserver");
    let file = |name: &str| pki.join(name).to_string_lossy().into_owned();
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| (support::free_port(), support::free_port()))
        .collect();
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("s{i}=https://127.0.0.1:{peer}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut members = Members(Vec::new());
    for (i, (client, peer)) in ports.iter().enumerate() {
        let log = std::fs::File::create(pki.join(format!("s{i}.log"))).unwrap();
        let child = support::daemon(support::SHOAL)
            .args([
                "store",
                "--name",
                &format!("s{i}"),
                "--data-dir",
                &file(&format!("s{i}")),
            ])
            .args([
                "--listen-client-urls",
                &format!("https://127.0.0.1:{client}"),
            ])
            .args(["--listen-peer-urls", &format!("https://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &initial])
            .args([
                "--cert-file",
                &file("member.crt"),
                "--key-file",
                &file("member.key"),
            ])
            .args(["--trusted-ca-file", &file("ca.crt"), "--client-cert-auth"])
            .args([
                "--peer-cert-file",
                &file("member.crt"),
                "--peer-key-file",
                &file("member.key"),
            ])
            .args([
                "--peer-trusted-ca-file",
                &file("ca.crt"),
                "--peer-client-cert-auth",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        members.0.push(child);
    }
    let endpoints = ports
        .iter()
        .map(|(client, _)| format!("https://127.0.0.1:{client}"))
        .collect::<Vec<_>>()
        .join(",");
    let etcdctl = |endpoints: &str, credentials: &[String], args: &[&str]| {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--command-timeout=5s", "--dial-timeout=3s"])
            .args(credentials)
            .args(args)
            .output()
            .unwrap()
    };
    let client = vec![
        format!("--cacert={}", file("ca.crt")),
        format!("--cert={}", file("client.crt")),
        format!("--key={}", file("client.key")),
    ];
    let logs = || {
        (0..3)
            .map(|i| std::fs::read_to_string(pki.join(format!("s{i}.log"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    assert!(
        eventually(Duration::from_secs(30), || etcdctl(
            &endpoints,
            &client,
            &["put", "/tls/a", "1"]
        )
        .status
        .success()),
        "no write over TLS:\n{}",
        logs()
    );
    let out = etcdctl(
        &endpoints,
        &client,
        &["get", "/tls/a", "--print-value-only"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    // No client certificate, one from another CA, plain HTTP: refused.
    let first = format!("https://127.0.0.1:{}", ports[0].0);
    let no_cert = vec![format!("--cacert={}", file("ca.crt"))];
    let rogue = vec![
        format!("--cacert={}", file("ca.crt")),
        format!("--cert={}", file("intruder.crt")),
        format!("--key={}", file("intruder.key")),
    ];
    for (who, credentials) in [("no certificate", &no_cert), ("another CA's", &rogue)] {
        let out = etcdctl(&first, credentials, &["get", "/tls/a"]);
        assert!(
            !out.status.success(),
            "{who}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let out = etcdctl(
        &format!("http://127.0.0.1:{}", ports[0].0),
        &[],
        &["get", "/tls/a"],
    );
    assert!(!out.status.success());

    // The apiserver, as the store's client.
    let api = Apiserver::start_with(
        &endpoints,
        &pki.join("api"),
        None,
        &[
            "--etcd-cafile",
            &file("ca.crt"),
            "--etcd-certfile",
            &file("client.crt"),
            "--etcd-keyfile",
            &file("client.key"),
        ],
    );
    api.ok(&["create", "configmap", "over-tls", "--from-literal=a=b"]);
    assert_eq!(
        api.ok(&["get", "configmap", "over-tls", "-o", "jsonpath={.data.a}"]),
        "b"
    );

    // Replication is over TLS too: with a member killed, writes commit.
    let mut killed = members.0.remove(0);
    support::kill_group(&mut killed);
    let rest = ports[1..]
        .iter()
        .map(|(client, _)| format!("https://127.0.0.1:{client}"))
        .collect::<Vec<_>>()
        .join(",");
    assert!(
        eventually(Duration::from_secs(20), || etcdctl(
            &rest,
            &client,
            &["put", "/tls/b", "2"]
        )
        .status
        .success()),
        "no write with a member down:\n{}",
        logs()
    );
}

/// `--audit-policy-file`: the first matching rule decides what is logged
/// (ConfigMaps not at all, the admin's watches not at all, everything
/// else without its ResponseStarted stage); a policy with an unknown
/// level stops the apiserver with the reason.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_policy_decides_what_is_logged() {
    let store = TestCluster::start(1).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources: [{group: \"\", resources: [configmaps]}]\n- level: None\n  users: [admin]\n  verbs: [watch]\n- level: Metadata\n  omitStages: [ResponseStarted]\n",
    )
    .unwrap();
    let api = Apiserver::start_with(
        &store.endpoints(),
        &dir.path().join("api"),
        None,
        &[
            "--audit-log-path",
            log.to_str().unwrap(),
            "--audit-policy-file",
            policy.to_str().unwrap(),
        ],
    );
    api.ok(&["create", "configmap", "quiet", "--from-literal=k=v"]);
    api.ok(&["create", "secret", "generic", "loud", "--from-literal=k=v"]);
    let _ = kubectl_at(
        &api.kubeconfig,
        &["get", "secrets", "-w", "--request-timeout=2s"],
    );
    api.ok(&["get", "secret", "loud"]);
    let mut events = Vec::new();
    assert!(eventually(Duration::from_secs(10), || {
        events = audit_events(&log);
        events
            .iter()
            .any(|e| e["verb"] == "get" && by_kubectl(e) && e["objectRef"]["name"] == "loud")
    }));
    let by_kubectl_on = |resource: &str| -> Vec<&serde_json::Value> {
        events
            .iter()
            .filter(|e| by_kubectl(e) && e["objectRef"]["resource"] == resource)
            .collect()
    };
    assert!(by_kubectl_on("configmaps").is_empty(), "{events:#?}");
    let secrets = by_kubectl_on("secrets");
    assert!(secrets
        .iter()
        .any(|e| e["verb"] == "create" && e["stage"] == "ResponseComplete"));
    assert!(
        !secrets.iter().any(|e| e["verb"] == "watch"),
        "{secrets:#?}"
    );
    assert!(
        !events.iter().any(|e| e["stage"] == "ResponseStarted"),
        "{events:#?}"
    );

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
    )
    .unwrap();
    let out = Command::new(support::SHOAL)
        .args(["apiserver", "--etcd-servers", &store.endpoints()])
        .args(["--bind-address", "127.0.0.1", "--secure-port", "0"])
        .arg("--data-dir")
        .arg(dir.path().join("api-2"))
        .args(["--audit-log-path", log.to_str().unwrap()])
        .args(["--audit-policy-file", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown level \"Everything\""), "{stderr}");
}

/// `shoal up --nodes 2`: each agent joins with the bootstrap token, asks
/// for its certificate through the CSR API (approved after a
/// SubjectAccessReview, signed by the cluster CA) and runs as
/// `system:node:<name>`; with its own kubeconfig, kubectl may read the
/// Secret its pod uses and write its own Node, and is refused another
/// node, another node's pods and Secrets no pod of it uses.
#[test]
fn agents_join_with_bootstrap_tokens_and_act_only_as_their_node() {
    let up = support::nodes::cluster(2);
    let csrs = up.ok(&["get", "csr", "--no-headers"]);
    for node in ["node-1", "node-2"] {
        let line = csrs
            .lines()
            .find(|l| {
                l.starts_with(&format!("node-client-{node}-"))
                    && l.contains("kubernetes.io/kube-apiserver-client-kubelet")
            })
            .unwrap_or_else(|| panic!("no client certificate request of {node}:\n{csrs}"));
        assert!(line.contains("system:bootstrap:"), "{line}");
        assert!(line.contains("Approved,Issued"), "{line}");
    }
    // The admin's kubeconfig is nowhere in the node's directory.
    let node_dir = up.data_dir().join("nodes").join("node-1");
    let own = node_dir.join("kubeconfig");
    let text = std::fs::read_to_string(&own).unwrap();
    assert!(text.contains("client-certificate:"), "{text}");
    assert!(!text.contains("token:"), "{text}");
    let (ok, who) = run(&own, &["auth", "whoami", "-o", "json"]);
    assert!(ok, "{who}");
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["status"]["userInfo"]["username"], "system:node:node-1");
    assert!(who["status"]["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("system:nodes")));

    up.ok(&["create", "namespace", "shop"]);
    for (name, value) in [("mine", "1"), ("theirs", "2"), ("unused", "3")] {
        up.ok(&[
            "create",
            "secret",
            "generic",
            name,
            "-n",
            "shop",
            &format!("--from-literal=p={value}"),
        ]);
    }
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: here, namespace: shop}
spec:
  nodeName: node-1
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    env: [{name: P, valueFrom: {secretKeyRef: {name: mine, key: p}}}]
---
apiVersion: v1
kind: Pod
metadata: {name: there, namespace: shop}
spec:
  nodeName: node-2
  automountServiceAccountToken: false
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    env: [{name: P, valueFrom: {secretKeyRef: {name: theirs, key: p}}}]
"#,
    );
    assert!(
        eventually(Duration::from_secs(60), || {
            up.ok(&["get", "pods", "-n", "shop", "--no-headers"])
                .matches("Running")
                .count()
                == 2
        }),
        "{}",
        up.ok(&["get", "pods", "-n", "shop", "-o", "wide"])
    );
    // Allowed: the Secret its pod uses, its own Node.
    let (ok, out) = run(
        &own,
        &[
            "get",
            "secret",
            "mine",
            "-n",
            "shop",
            "-o",
            "jsonpath={.data.p}",
        ],
    );
    assert!(ok && out.trim() == "MQ==", "{out}");
    let (ok, out) = run(&own, &["label", "node", "node-1", "shoal.dev/checked=yes"]);
    assert!(ok, "{out}");
    // Refused, each with the authorizer's or NodeRestriction's reason.
    let refusals: [(&[&str], &str); 6] = [
        (
            &["get", "secret", "theirs", "-n", "shop"],
            r#"secrets "theirs" is forbidden: User "system:node:node-1" cannot get resource "secrets" in API group "" in the namespace "shop": no relationship found between node 'node-1' and this object"#,
        ),
        (
            &["get", "secret", "unused", "-n", "shop"],
            "no relationship found between node 'node-1' and this object",
        ),
        (
            &["get", "secrets", "-n", "shop"],
            r#"User "system:node:node-1" cannot list resource "secrets""#,
        ),
        (
            &["label", "node", "node-2", "shoal.dev/taken=yes"],
            "node-2",
        ),
        (
            &["delete", "pod", "there", "-n", "shop", "--wait=false"],
            "there",
        ),
        (
            &[
                "annotate",
                "pod",
                "there",
                "-n",
                "shop",
                "shoal.dev/taken=yes",
            ],
            "there",
        ),
    ];
    for (args, expected) in refusals {
        let (ok, out) = run(&own, args);
        assert!(!ok, "{args:?} was allowed: {out}");
        assert!(
            out.contains("Forbidden") || out.contains("forbidden"),
            "{args:?}: {out}"
        );
        assert!(out.contains(expected), "{args:?}: {out}");
    }
    // Nothing of node-2's changed.
    let node2 = up.ok(&["get", "node", "node-2", "--show-labels"]);
    assert!(!node2.contains("shoal.dev/taken"), "{node2}");
    up.ok(&["get", "pod", "there", "-n", "shop"]);

    // Nor does node-1's certificate open node-2's agent: there is no
    // shared token, and the agent has the apiserver authorize every caller
    // (nodes/proxy of node-2). The apiserver's own client certificate gets
    // in (kubectl logs and exec), and so does the admin's token (reviewed).
    let field = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    let (cert, key) = (field("client-certificate"), field("client-key"));
    let address = up.ok(&[
        "get",
        "node",
        "node-2",
        "-o",
        r#"jsonpath={.status.addresses[?(@.type=="InternalIP")].address}:{.status.daemonEndpoints.kubeletEndpoint.Port}"#,
    ]);
    let agent = |extra: &[&str], path: &str| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-sk", "-w", "\n%{http_code}"])
            .args(extra)
            .arg(format!("https://{}{path}", address.trim()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (body.to_string(), code.to_string())
    };
    let logs = "/containerLogs/shop/there/c";
    let (body, code) = agent(&["--cert", &cert, "--key", &key], logs);
    assert_eq!(code, "403", "{body}");
    assert_eq!(
        body.trim(),
        "Forbidden (user=system:node:node-1, verb=get, resource=nodes, subresource=proxy)"
    );
    let (body, code) = agent(&[], logs);
    assert_eq!((code.as_str(), body.trim()), ("401", "Unauthorized"));
    let (body, code) = agent(&["-H", "Authorization: Bearer not-a-token"], "/metrics");
    assert_eq!((code.as_str(), body.trim()), ("401", "Unauthorized"));
    let huge = format!("Authorization: Bearer {}", "x".repeat(16 * 1024));
    let (body, code) = agent(&["-H", &huge], "/metrics");
    assert_eq!((code.as_str(), body.trim()), ("401", "Unauthorized"));
    // A certificate of another CA, whatever it claims, ends the handshake.
    let forged = tempfile::tempdir().unwrap();
    self_signed(
        forged.path(),
        "forged",
        "/O=system:masters/CN=kube-apiserver-kubelet-client",
    );
    let (body, code) = agent(
        &[
            "--cert",
            forged.path().join("forged.crt").to_str().unwrap(),
            "--key",
            forged.path().join("forged.key").to_str().unwrap(),
        ],
        logs,
    );
    assert_eq!(code, "000", "{body}");
    let admin = format!("Authorization: Bearer {}", up.token());
    let (body, code) = agent(&["-H", &admin], "/metrics");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("kubelet_running_pods"), "{body}");
    assert_eq!(
        up.ok(&[
            "exec",
            "there",
            "-n",
            "shop",
            "--",
            "echo",
            "through the apiserver"
        ])
        .trim(),
        "through the apiserver"
    );
    up.ok(&["logs", "there", "-n", "shop"]);

    // node-1 may renew its own certificate (approved after the review for
    // selfnodeclient), not ask for node-2's: that one waits for a person.
    let pki = tempfile::tempdir().unwrap();
    for (name, node) in [("renewal", "node-1"), ("theft", "node-2")] {
        openssl(
            pki.path(),
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/O=system:nodes/CN=system:node:{node}"),
            ],
        );
        let request = base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(pki.path().join(format!("{name}.csr"))).unwrap());
        let manifest = pki.path().join(format!("{name}.yaml"));
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {request}\n  signerName: kubernetes.io/kube-apiserver-client-kubelet\n  usages: [digital signature, client auth]\n"
            ),
        )
        .unwrap();
        let (ok, out) = run(&own, &["create", "-f", &manifest.display().to_string()]);
        assert!(ok, "{out}");
    }
    assert!(
        eventually(Duration::from_secs(20), || {
            up.ok(&["get", "csr", "renewal", "--no-headers"])
                .contains("Approved,Issued")
        }),
        "{}",
        up.ok(&["get", "csr"])
    );
    std::thread::sleep(Duration::from_secs(2));
    let theft = up.ok(&["get", "csr", "theft", "--no-headers"]);
    assert!(theft.contains("Pending"), "{theft}");
}

/// `shoal up` runs its store on TLS with client certificates of its own
/// CA: the etcdctl line it prints works, and etcdctl without a
/// certificate, with one of the cluster CA or over plain HTTP is refused.
#[test]
fn shoal_up_runs_its_store_over_tls() {
    let up = support::kube::ShoalUp::start();
    up.ok(&["create", "configmap", "seen", "--from-literal=a=b"]);
    let log = up.log();
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("store: etcdctl "))
        .unwrap_or_else(|| panic!("no etcdctl line in:\n{log}"));
    let args: Vec<&str> = line
        .split_whitespace()
        .filter(|a| *a != "member" && *a != "list")
        .collect();
    assert!(args.contains(&"--cacert") && args.contains(&"--cert") && args.contains(&"--key"));
    let endpoints = args[1].to_string();
    assert!(endpoints.starts_with("https://"), "{endpoints}");
    let etcdctl = |extra: &[&str], with: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(with)
            .args(["--command-timeout", "5s", "--dial-timeout", "3s"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = etcdctl(
        &["get", "/registry/configmaps/default/seen", "--keys-only"],
        &args,
    );
    assert!(
        ok && out.contains("/registry/configmaps/default/seen"),
        "{out}"
    );
    let first = endpoints.split(',').next().unwrap().to_string();
    let ca = &args[args.iter().position(|a| *a == "--cacert").unwrap() + 1];
    let (ok, out) = etcdctl(&["get", "x"], &["--endpoints", &first, "--cacert", ca]);
    assert!(!ok, "a client without a certificate got in: {out}");
    let plain = first.replacen("https://", "http://", 1);
    let (ok, out) = etcdctl(&["get", "x"], &["--endpoints", &plain]);
    assert!(!ok, "plain HTTP got in: {out}");
    // The store has a CA of its own: a certificate of the cluster CA (the
    // one users and nodes get theirs from) does not open it.
    let pki = tempfile::tempdir().unwrap();
    for ext in ["crt", "key"] {
        std::fs::copy(
            up.data_dir().join("apiserver").join(format!("ca.{ext}")),
            pki.path().join(format!("cluster.{ext}")),
        )
        .unwrap();
    }
    issue(pki.path(), "cluster", "intruder", "system:node:intruder");
    let (cert, key) = (
        pki.path().join("intruder.crt"),
        pki.path().join("intruder.key"),
    );
    let (ok, out) = etcdctl(
        &["get", "x"],
        &[
            "--endpoints",
            &first,
            "--cacert",
            ca,
            "--cert",
            &cert.display().to_string(),
            "--key",
            &key.display().to_string(),
        ],
    );
    assert!(!ok, "a cluster CA certificate got into the store: {out}");
}
