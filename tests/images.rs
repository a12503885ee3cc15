//! The guide's images without a registry: `nginx:1.25` and `postgres:15`
//! built from Debian packages (images/*.toml) by the node when a pod first
//! names them, as a pull would fetch them, then the guide's nginx
//! Deployment and postgres StatefulSet running for real with the real
//! kubectl. Also `shoal image build` of a recipe naming a package that does
//! not exist, and `shoal image load` of a corrupt archive. Needs root and
//! apt's sources (CI has both); the built images are cached per machine
//! (~/.cache/shoal), so only the first run builds.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::time::Duration;

use node::shoal;
use support::kube::{eventually, manifest, ShoalUp};

fn describe(up: &ShoalUp, what: &[&str]) -> String {
    let mut args = vec!["describe"];
    args.extend_from_slice(what);
    String::from_utf8_lossy(&up.kubectl(&args).stdout).into_owned()
}

/// `kubectl rollout status` until done (the first rollout builds nginx).
fn rolled_out(up: &ShoalUp, deployment: &str) {
    let out = up.kubectl(&[
        "rollout",
        "status",
        &format!("deployment/{deployment}"),
        "--timeout=240s",
    ]);
    assert!(
        out.status.success(),
        "{}{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        describe(up, &["pods"]),
        up.log()
    );
}

#[test]
fn the_guides_nginx_deployment_serves_its_page() {
    require_root!(node::PODS_NEED_ROOT);
    let up = ShoalUp::with_ready_agent(&[]);
    up.ok(&["apply", "-f", &manifest("deployment.yaml")]);
    rolled_out(&up, "nginx-deployment");
    let ready = up.ok(&[
        "get",
        "deployment",
        "nginx-deployment",
        "-o",
        "jsonpath={.status.readyReplicas}",
    ]);
    assert_eq!(ready, "3");
    // The node made the image on the first pod's "pull".
    let events = up.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=Pulled",
        "-o",
        "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("Successfully pulled image \"nginx:1.25\"")
            || events.contains("Container image \"nginx:1.25\" already present on machine"),
        "{events}"
    );
    let image_id = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[0].status.containerStatuses[0].imageID}",
    ]);
    assert!(image_id.starts_with("sha256:"), "{image_id}");

    // From another pod, each nginx pod's page on port 80.
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
"#,
    );
    assert!(eventually(Duration::from_secs(60), || {
        up.ok(&["get", "pod", "client", "-o", "jsonpath={.status.phase}"]) == "Running"
    }));
    let ips = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[*].status.podIP}",
    ]);
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), 3, "{ips:?}");
    for ip in &ips {
        let page = up.ok(&[
            "exec",
            "client",
            "--",
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &format!("http://{ip}/"),
        ]);
        assert!(page.contains("<title>Welcome to nginx!</title>"), "{page}");
    }
    // nginx's access log is the container's output.
    let pods = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "-o",
        "jsonpath={.items[*].metadata.name}",
    ]);
    let logs: String = pods
        .split_whitespace()
        .map(|pod| up.ok(&["logs", pod]))
        .collect();
    assert!(logs.contains("\"GET / HTTP/1.1\" 200"), "{logs}");

    // A rollout to another tag of the image, and back.
    for tag in ["nginx:latest", "nginx:1.25"] {
        up.ok(&[
            "set",
            "image",
            "deployment/nginx-deployment",
            &format!("nginx={tag}"),
        ]);
        rolled_out(&up, "nginx-deployment");
    }
    let images = up.ok(&[
        "get",
        "pods",
        "-l",
        "app=nginx",
        "--field-selector",
        "status.phase=Running",
        "-o",
        "jsonpath={.items[*].spec.containers[0].image}",
    ]);
    assert!(
        images.split_whitespace().all(|i| i == "nginx:1.25"),
        "{images}"
    );

    // imagePullPolicy: Always on an image the node has: pulled again, as
    // from a registry that has it.
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: always
spec:
  containers:
  - name: web
    image: nginx:1.25
    imagePullPolicy: Always
"#,
    );
    assert!(eventually(Duration::from_secs(60), || {
        up.ok(&["get", "pod", "always", "-o", "jsonpath={.status.phase}"]) == "Running"
    }));
    let text = describe(&up, &["pod", "always"]);
    assert!(text.contains("Pulling image \"nginx:1.25\""), "{text}");
    assert!(
        text.contains("Successfully pulled image \"nginx:1.25\""),
        "{text}"
    );
    // nginx stops on its image's StopSignal (SIGQUIT, a graceful stop)
    // well within the grace period.
    let began = std::time::Instant::now();
    up.ok(&["delete", "pod", "always"]);
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
}

#[test]
fn the_guides_postgres_statefulset_keeps_its_data() {
    require_root!(node::PODS_NEED_ROOT);
    let up = ShoalUp::with_ready_agent(&[]);
    up.ok(&["apply", "-f", &manifest("statefulset.yaml")]);
    let ready = |n: &str| {
        up.ok(&[
            "get",
            "statefulset",
            "postgres",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]) == n
    };
    assert!(
        eventually(Duration::from_secs(300), || ready("3")),
        "{}\n{}",
        describe(&up, &["pods"]),
        up.log()
    );
    // The server takes connections once initdb and its first start are done.
    let psql = |sql: &str| {
        up.kubectl(&[
            "exec",
            "postgres-0",
            "--",
            "psql",
            "-U",
            "postgres",
            "-tA",
            "-c",
            sql,
        ])
    };
    assert!(
        eventually(Duration::from_secs(60), || psql("select 1")
            .status
            .success()),
        "{}",
        up.ok(&["logs", "postgres-0"])
    );
    let made = psql("create table t(x int); insert into t values (42)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let logs = up.ok(&["logs", "postgres-0"]);
    assert!(
        logs.contains("PostgreSQL init process complete; ready for start up."),
        "{logs}"
    );
    assert!(
        logs.contains("database system is ready to accept connections"),
        "{logs}"
    );

    let uid = up.ok(&["get", "pod", "postgres-0", "-o", "jsonpath={.metadata.uid}"]);
    up.ok(&["delete", "pod", "postgres-0"]);
    assert!(
        eventually(Duration::from_secs(120), || {
            let now = up.kubectl(&["get", "pod", "postgres-0", "-o", "jsonpath={.metadata.uid}"]);
            let now = String::from_utf8_lossy(&now.stdout).into_owned();
            !now.is_empty() && now != uid && psql("select x from t").status.success()
        }),
        "{}",
        describe(&up, &["pod", "postgres-0"])
    );
    let kept = psql("select x from t");
    assert_eq!(String::from_utf8_lossy(&kept.stdout).trim(), "42");
    // The second start found its data: no initdb this time.
    let logs = up.ok(&["logs", "postgres-0"]);
    assert!(!logs.contains("init process complete"), "{logs}");

    // The server listens on every address, with the password.
    let ip = up.ok(&["get", "pod", "postgres-1", "-o", "jsonpath={.status.podIP}"]);
    let remote = up.kubectl(&[
        "exec",
        "postgres-0",
        "--",
        "env",
        "PGPASSWORD=secret",
        "psql",
        "-h",
        &ip,
        "-U",
        "postgres",
        "-tA",
        "-c",
        "select 7",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout).trim(),
        "7",
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
}

#[test]
fn a_recipe_with_an_unknown_package_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("bad.toml");
    std::fs::write(
        &recipe,
        "tags = [\"bad:1\"]\npackages = [\"nginx\", \"no-such-package-here\"]\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = shoal(&[
        "image",
        "build",
        recipe.to_str().unwrap(),
        "--no-load",
        "--cache",
        cache.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("package \"no-such-package-here\" is not in the apt sources"),
        "{stderr}"
    );
    let out = shoal(&["image", "build", "no-such-image:3", "--no-load"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is neither a recipe file nor an image a built-in recipe makes"),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_archive_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let archive = dir.path().join("nginx.tar");
    let built = shoal(&[
        "image",
        "build",
        "nginx:1.25",
        "--output",
        archive.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ls = |data: &std::path::Path| {
        String::from_utf8_lossy(
            &shoal(&["image", "ls", "--data-dir", data.to_str().unwrap()]).stdout,
        )
        .into_owned()
    };
    let before = ls(&data);
    assert!(before.contains("docker.io/library/nginx"), "{before}");

    // A byte of the layer flipped, into another store and the same one.
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    let corrupt = dir.path().join("corrupt.tar");
    std::fs::write(&corrupt, &bytes).unwrap();
    let fresh = dir.path().join("fresh");
    for data in [&data, &fresh] {
        let state = store_state(data);
        let out = shoal(&[
            "image",
            "load",
            corrupt.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ]);
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("digest"), "{stderr}");
        assert!(store_state(data) == state, "{} changed", data.display());
    }
    assert_eq!(ls(&data), before);
    assert!(!ls(&fresh).contains("nginx"));
}

/// What the image store of data dir `dir` holds: its blobs and unpacked
/// root filesystems (a count of files, empty folders left out) and its
/// index.
fn store_state(dir: &std::path::Path) -> (usize, usize, Vec<u8>) {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| match e.file_type() {
                        Ok(t) if t.is_dir() => walk(&e.path()),
                        _ => 1,
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    let images = dir.join("images");
    (
        walk(&images.join("blobs")),
        walk(&images.join("rootfs")),
        std::fs::read(images.join("index.json")).unwrap_or_default(),
    )
}
