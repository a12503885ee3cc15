//! The real kubectl (1.32) against `shoal up`: the commands of the guide
//! and what they print.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::kube::{eventually, manifest, ShoalUp};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// The header and rows of `kubectl get`, split on runs of spaces.
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        })
        .collect()
}

#[test]
fn version_resources_and_namespaces() {
    let up = ShoalUp::start();
    let version = json(&up.ok(&["version", "-o", "json"]));
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.32.0");
    assert_eq!(version["serverVersion"]["minor"], "32");

    // The dispatcher at /usr/bin/kubectl picks its client by /version.
    let out = std::process::Command::new("/usr/bin/kubectl")
        .args(["get", "namespaces", "-o", "name"])
        .env("KUBECONFIG", &up.kubeconfig)
        .env("HOME", up.data_dir())
        .output()
        .expect("run /usr/bin/kubectl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("namespace/kube-system"), "{text}");

    let resources = up.ok(&["api-resources"]);
    let header = resources.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{resources}");
    for (name, short, version, kind) in [
        ("pods", "po", "v1", "Pod"),
        ("deployments", "deploy", "apps/v1", "Deployment"),
        ("statefulsets", "sts", "apps/v1", "StatefulSet"),
        ("cronjobs", "cj", "batch/v1", "CronJob"),
        (
            "networkpolicies",
            "netpol",
            "networking.k8s.io/v1",
            "NetworkPolicy",
        ),
        (
            "horizontalpodautoscalers",
            "hpa",
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
        ),
    ] {
        let row = resources
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{resources}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, [name, short, version, "true", kind], "{row}");
    }

    // The system namespaces exist from the start.
    let namespaces = up.ok(&["get", "namespaces"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            namespaces
                .lines()
                .any(|l| l.starts_with(ns) && l.contains("Active")),
            "{namespaces}"
        );
    }
    assert_eq!(
        up.ok(&["create", "namespace", "team-a"]).trim(),
        "namespace/team-a created"
    );
    let rows = table(&up.ok(&["get", "namespace", "team-a"]));
    assert_eq!(rows[0], ["NAME", "STATUS", "AGE"]);
    assert_eq!(rows[1][..2], ["team-a", "Active"]);
    let err = up.fails(&["create", "namespace", "team-a"]);
    assert!(
        err.contains("(AlreadyExists)") && err.contains("namespaces \"team-a\" already exists"),
        "{err}"
    );
    let err = up.fails(&["create", "namespace", "Team_A"]);
    assert!(err.contains("Invalid value: \"Team_A\""), "{err}");

    // Deleting a namespace removes what is in it.
    up.ok(&[
        "create",
        "configmap",
        "settings",
        "-n",
        "team-a",
        "--from-literal=a=1",
    ]);
    assert_eq!(
        up.ok(&["delete", "namespace", "team-a"]).trim(),
        "namespace \"team-a\" deleted"
    );
    assert!(eventually(Duration::from_secs(20), || {
        !up.kubectl(&["get", "namespace", "team-a"]).status.success()
    }));
    let err = up.fails(&["get", "configmap", "settings", "-n", "team-a"]);
    assert!(err.contains("NotFound"), "{err}");
    let err = up.fails(&["create", "configmap", "x", "-n", "nowhere"]);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}

#[test]
fn apply_the_guides_manifests_and_get_them_back() {
    let up = ShoalUp::start();
    for file in [
        "deployment.yaml",
        "statefulset.yaml",
        "job.yaml",
        "cronjob.yaml",
        "service.yaml",
        "configmap.yaml",
    ] {
        let out = up.ok(&["apply", "-f", &manifest(file)]);
        assert!(out.contains("created"), "{file}: {out}");
    }
    up.ok(&["create", "namespace", "production"]);
    let out = up.ok(&["apply", "-f", &manifest("networkpolicy.yaml")]);
    assert_eq!(
        out.trim(),
        "networkpolicy.networking.k8s.io/default-deny-ingress created"
    );

    // Columns as Kubernetes prints them.
    let rows = table(&up.ok(&["get", "deployments"]));
    assert_eq!(rows[0], ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]);
    // No nodes: whatever the controllers made so far, nothing is ready.
    assert_eq!(rows[1][..2], ["nginx-deployment", "0/3"]);
    assert_eq!(rows[1][3], "0");
    let rows = table(&up.ok(&["get", "deployments", "-o", "wide"]));
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert_eq!(rows[1][5..], ["nginx", "nginx:1.25", "app=nginx"]);
    let rows = table(&up.ok(&["get", "services"]));
    assert_eq!(
        rows[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let backend = rows
        .iter()
        .find(|r| r[0] == "backend-service")
        .expect("backend-service");
    assert_eq!(backend[1], "ClusterIP");
    assert!(backend[2].starts_with("10."), "{backend:?}");
    assert_eq!(backend[3..5], ["<none>", "80/TCP"]);
    let postgres = rows.iter().find(|r| r[0] == "postgres").expect("postgres");
    assert_eq!(postgres[1..5], ["ClusterIP", "None", "<none>", "5432/TCP"]);
    let rows = table(&up.ok(&["get", "statefulsets"]));
    assert_eq!(rows[0], ["NAME", "READY", "AGE"]);
    assert_eq!(rows[1][..2], ["postgres", "0/3"]);
    let rows = table(&up.ok(&["get", "jobs"]));
    assert_eq!(
        rows[0],
        ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    );
    assert_eq!(rows[1][..3], ["database-backup", "Running", "0/1"]);
    let rows = table(&up.ok(&["get", "cronjobs"]));
    assert_eq!(
        rows[0],
        [
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..6],
        [
            "daily-backup",
            "0 2 * * *",
            "<none>",
            "False",
            "0",
            "<none>"
        ]
    );
    let rows = table(&up.ok(&["get", "netpol", "-n", "production"]));
    assert_eq!(rows[0], ["NAME", "POD-SELECTOR", "AGE"]);
    assert_eq!(rows[1][..2], ["default-deny-ingress", "<none>"]);
    let rows = table(&up.ok(&["get", "configmaps"]));
    assert_eq!(rows[0], ["NAME", "DATA", "AGE"]);
    assert!(
        rows.iter().any(|r| r[..2] == ["app-config", "2"]),
        "{rows:?}"
    );

    // Defaults a user sees in -o yaml/json.
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        "25%"
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(d["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        30
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
        "IfNotPresent"
    );
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let yaml = up.ok(&["get", "deployment", "nginx-deployment", "-o", "yaml"]);
    assert!(
        yaml.contains("kubectl.kubernetes.io/last-applied-configuration"),
        "{yaml}"
    );
    assert!(yaml.contains("  replicas: 3"), "{yaml}");
    let job = json(&up.ok(&["get", "job", "database-backup", "-o", "json"]));
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "database-backup"
    );

    // -o name, jsonpath, -l, -A, --field-selector.
    assert_eq!(
        up.ok(&["get", "deploy", "-o", "name"]).trim(),
        "deployment.apps/nginx-deployment"
    );
    assert_eq!(
        up.ok(&[
            "get",
            "sts",
            "postgres",
            "-o",
            "jsonpath={.spec.volumeClaimTemplates[0].spec.resources.requests.storage}"
        ]),
        "10Gi"
    );
    let labelled = up.ok(&["get", "services", "-l", "app=postgres", "-o", "name"]);
    assert_eq!(labelled.trim(), "service/postgres");
    let set_based = up.ok(&[
        "get",
        "cm",
        "-l",
        "app in (backend, frontend)",
        "-o",
        "name",
    ]);
    assert_eq!(set_based.trim(), "configmap/app-config");
    let all = table(&up.ok(&["get", "networkpolicies", "-A"]));
    assert_eq!(all[0], ["NAMESPACE", "NAME", "POD-SELECTOR", "AGE"]);
    assert_eq!(all[1][..2], ["production", "default-deny-ingress"]);
    let selected = up.ok(&[
        "get",
        "services",
        "--field-selector",
        "metadata.name=backend-service",
        "-o",
        "name",
    ]);
    assert_eq!(selected.trim(), "service/backend-service");
    // Pages of one item each (limit and continue) still list everything.
    let paged = up.ok(&["get", "services", "--chunk-size=1", "-o", "name"]);
    assert_eq!(paged.lines().count(), 3, "{paged}");
    let all_ns = up.ok(&["get", "services", "-A", "-o", "name"]);
    assert!(all_ns.contains("service/kubernetes"), "{all_ns}");

    // Re-apply after a change: kubectl sends a strategic merge patch.
    let changed = std::fs::read_to_string(manifest("deployment.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: 5")
        .replace("nginx:1.25", "nginx:1.26");
    let file = up.data_dir().join("deployment-changed.yaml");
    std::fs::write(&file, changed).unwrap();
    let out = up.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "deployment.apps/nginx-deployment configured");
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSeconds"],
        10
    );
    assert_eq!(d["metadata"]["generation"], 2);
    let out = up.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(out.trim(), "deployment.apps/nginx-deployment unchanged");

    // explain reads the OpenAPI documents.
    let explained = up.ok(&["explain", "deployment.spec.strategy"]);
    assert!(explained.contains("KIND:       Deployment"), "{explained}");
    assert!(
        explained.contains("FIELD: strategy <DeploymentStrategy>"),
        "{explained}"
    );
    assert!(
        explained.contains("rollingUpdate\t<RollingUpdateDeployment>"),
        "{explained}"
    );

    // kubectl's typed clients send protobuf: create, run.
    assert_eq!(
        up.ok(&[
            "create",
            "deployment",
            "web",
            "--image=busybox",
            "--replicas=0"
        ])
        .trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        up.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "0"
    );
    assert_eq!(
        up.ok(&["run", "test", "--image=busybox", "--", "sleep", "3600"])
            .trim(),
        "pod/test created"
    );
    let pod = json(&up.ok(&["get", "pod", "test", "-o", "json"]));
    assert_eq!(
        pod["spec"]["containers"][0]["args"],
        serde_json::json!(["sleep", "3600"])
    );
    assert_eq!(pod["metadata"]["labels"]["run"], "test");
    assert_eq!(pod["status"]["phase"], "Pending");
    let rows = table(&up.ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        rows[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED NODE",
            "READINESS GATES"
        ]
    );
    let test_row = rows
        .iter()
        .find(|r| r[0] == "test")
        .expect("pod test listed");
    assert_eq!(test_row[..4], ["test", "0/1", "Pending", "0"]);
    assert_eq!(
        up.ok(&["create", "job", "manual", "--from=cronjob/daily-backup"])
            .trim(),
        "job.batch/manual created"
    );
    let job = json(&up.ok(&["get", "job", "manual", "-o", "json"]));
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "postgres-secret"
    );
    assert_eq!(
        job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );

    // describe reads the object and its events.
    let described = up.ok(&["describe", "deployment", "nginx-deployment"]);
    assert!(
        described.contains("Name:                   nginx-deployment"),
        "{described}"
    );
    assert!(
        described.contains("StrategyType:           RollingUpdate"),
        "{described}"
    );
    assert!(
        described.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{described}"
    );
    assert!(described.contains("Image:      nginx:1.26"), "{described}");
}

#[test]
fn label_annotate_scale_patch_edit_delete() {
    let up = ShoalUp::start();
    up.ok(&["apply", "-f", &manifest("deployment.yaml")]);
    up.ok(&["apply", "-f", &manifest("configmap.yaml")]);

    assert_eq!(
        up.ok(&["label", "deployment", "nginx-deployment", "tier=web"])
            .trim(),
        "deployment.apps/nginx-deployment labeled"
    );
    assert_eq!(
        up.ok(&["annotate", "deployment", "nginx-deployment", "owner=team-a"])
            .trim(),
        "deployment.apps/nginx-deployment annotated"
    );
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    assert_eq!(d["metadata"]["labels"]["tier"], "web");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    let err = up.fails(&["label", "deployment", "nginx-deployment", "tier=api"]);
    assert!(err.contains("already has a value (web)"), "{err}");
    up.ok(&["label", "deployment", "nginx-deployment", "tier-"]);
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    assert!(d["metadata"]["labels"].get("tier").is_none());

    assert_eq!(
        up.ok(&["scale", "deployment", "nginx-deployment", "--replicas=7"])
            .trim(),
        "deployment.apps/nginx-deployment scaled"
    );
    assert_eq!(
        up.ok(&[
            "get",
            "deployment",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "7"
    );

    // All three patch types kubectl sends.
    up.ok(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.27"}]}}}}"#,
    ]);
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(
        container["ports"][0]["containerPort"], 80,
        "strategic merge keeps the rest"
    );
    up.ok(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=merge",
        "-p",
        r#"{"spec":{"minReadySeconds":5}}"#,
    ]);
    up.ok(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    ]);
    let d = json(&up.ok(&["get", "deployment", "nginx-deployment", "-o", "json"]));
    assert_eq!(d["spec"]["minReadySeconds"], 5);
    assert_eq!(d["spec"]["replicas"], 2);
    let err = up.fails(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
    ]);
    assert!(err.contains("Invalid") || err.contains("rejected"), "{err}");
    let err = up.fails(&[
        "patch",
        "deployment",
        "nginx-deployment",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"matchLabels":{"app":"other"}}}}"#,
    ]);
    assert!(err.contains("field is immutable"), "{err}");

    // edit with a non-interactive editor.
    let editor = up.data_dir().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/LOG_LEVEL: info/LOG_LEVEL: debug/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let out = up.kubectl_with(
        &["edit", "configmap", "app-config"],
        None,
        &[("KUBE_EDITOR", editor.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/app-config edited"
    );
    assert_eq!(
        up.ok(&[
            "get",
            "cm",
            "app-config",
            "-o",
            "jsonpath={.data.LOG_LEVEL}"
        ]),
        "debug"
    );

    // Server-side apply and diff.
    let out = up.ok(&["apply", "--server-side", "-f", &manifest("service.yaml")]);
    assert_eq!(out.trim(), "service/backend-service serverside-applied");
    let svc = json(&up.ok(&[
        "get",
        "svc",
        "backend-service",
        "-o",
        "json",
        "--show-managed-fields",
    ]));
    let managers: Vec<&str> = svc["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert!(managers.contains(&"kubectl"), "{managers:?}");

    // Another manager applying a field kubectl's apply owns is a conflict,
    // until it forces.
    let conflicting = std::fs::read_to_string(manifest("service.yaml"))
        .unwrap()
        .replace("targetPort: 8080", "targetPort: 9090");
    let file = up.data_dir().join("service-other.yaml");
    std::fs::write(&file, conflicting).unwrap();
    let err = up.fails(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(
        err.contains("Apply failed with 1 conflict: conflict with \"kubectl\""),
        "{err}"
    );
    assert!(err.contains(".targetPort"), "{err}");
    up.ok(&[
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert_eq!(
        up.ok(&[
            "get",
            "svc",
            "backend-service",
            "-o",
            "jsonpath={.spec.ports[0].targetPort}"
        ]),
        "9090"
    );

    let changed = std::fs::read_to_string(manifest("deployment.yaml"))
        .unwrap()
        .replace("nginx:1.25", "nginx:1.28");
    let file = up.data_dir().join("deployment-diff.yaml");
    std::fs::write(&file, changed).unwrap();
    let diff = up.kubectl(&["diff", "-f", file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "diff exits 1 when there are differences: {text}\n{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(text.contains("+      - image: nginx:1.28"), "{text}");
    assert!(text.contains("-  replicas: 2"), "{text}");
    assert_eq!(
        up.ok(&[
            "get",
            "deploy",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx:1.27",
        "diff changes nothing"
    );

    assert_eq!(
        up.ok(&["delete", "deployment", "nginx-deployment"]).trim(),
        "deployment.apps \"nginx-deployment\" deleted"
    );
    let err = up.fails(&["get", "deployment", "nginx-deployment"]);
    assert!(
        err.contains(
            "Error from server (NotFound): deployments.apps \"nginx-deployment\" not found"
        ),
        "{err}"
    );
}

#[test]
fn watch_sees_later_changes() {
    let up = ShoalUp::start();
    up.ok(&["create", "configmap", "watched", "--from-literal=a=1"]);
    let mut child = std::process::Command::new(support::kube::KUBECTL)
        .args(["get", "configmaps", "-w", "--output-watch-events"])
        .env("KUBECONFIG", &up.kubeconfig)
        .env("HOME", up.data_dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    assert!(eventually(Duration::from_secs(10), || {
        lines.lock().unwrap().iter().any(|l| l.contains("watched"))
    }));
    up.ok(&["label", "configmap", "watched", "seen=yes"]);
    up.ok(&["create", "configmap", "later", "--from-literal=b=2"]);
    up.ok(&["delete", "configmap", "watched"]);
    let saw = eventually(Duration::from_secs(10), || {
        let lines = lines.lock().unwrap();
        lines
            .iter()
            .any(|l| l.starts_with("MODIFIED") && l.contains("watched"))
            && lines
                .iter()
                .any(|l| l.starts_with("ADDED") && l.contains("later"))
            && lines
                .iter()
                .any(|l| l.starts_with("DELETED") && l.contains("watched"))
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(saw, "{:?}", lines.lock().unwrap());
    let header = lines.lock().unwrap()[0].clone();
    assert_eq!(table(&header)[0], ["EVENT", "NAME", "DATA", "AGE"]);
}

#[test]
fn data_survives_a_restart() {
    let mut up = ShoalUp::start();
    up.ok(&["create", "configmap", "kept", "--from-literal=k=v"]);
    let status = up.stop().expect("was running");
    assert!(
        status.success(),
        "shoal up exits cleanly on SIGTERM: {status}\n{}",
        up.log()
    );
    up.spawn();
    assert_eq!(
        up.ok(&["get", "cm", "kept", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    // The restarted apiserver finds its system objects there and goes on
    // to finalize deleted namespaces (kubectl waits for it).
    up.ok(&["create", "namespace", "after-restart"]);
    up.ok(&["delete", "namespace", "after-restart", "--timeout=30s"]);
}
