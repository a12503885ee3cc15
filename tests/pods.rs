//! Real pods on the node agent that `shoal up` starts on this machine:
//! runc containers from the busybox image (built from Debian's
//! busybox-static), a network namespace and IP per pod, the pod lifecycle
//! as `kubectl get/describe/logs/exec` show it. Needs root (CI runs as
//! root); the suites run one at a time (.config/nextest.toml), as every
//! agent on a machine shares the bridge `shoal0`.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::time::{Duration, Instant};

use support::kube::{eventually, ShoalUp};

/// `shoal up` with its agent, fast back-off, and the node Ready.
fn cluster() -> ShoalUp {
    cluster_with(&[
        "--restart-backoff-initial",
        "1s",
        "--restart-backoff-max",
        "4s",
    ])
}

/// `shoal up` with its agent and these flags, and the node Ready.
fn cluster_with(args: &[&str]) -> ShoalUp {
    ShoalUp::with_ready_agent(args)
}

fn jsonpath(up: &ShoalUp, pod: &str, path: &str) -> String {
    let out = up.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `jsonpath` of the pod satisfies `check`; says what it was.
fn wait_for(up: &ShoalUp, pod: &str, path: &str, timeout: Duration, check: impl Fn(&str) -> bool) {
    let mut last = String::new();
    let ok = eventually(timeout, || {
        last = jsonpath(up, pod, path);
        check(&last)
    });
    assert!(
        ok,
        "pod {pod}: {path} is {last:?}\n{}\n{}",
        up.kubectl(&["describe", "pod", pod])
            .stdout
            .iter()
            .map(|&b| b as char)
            .collect::<String>(),
        up.log()
    );
}

fn status_column(up: &ShoalUp, pod: &str) -> String {
    let line = up.ok(&["get", "pod", pod, "--no-headers"]);
    line.split_whitespace()
        .nth(2)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_pod_runs_with_its_own_ip_logs_and_exec() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    up.apply(r#"
apiVersion: v1
kind: Pod
metadata:
  name: two-containers
  labels: {app: web}
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && echo web starting && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
  - name: client
    image: busybox
    command: ["sh", "-c", "while true; do wget -qO- http://localhost:8080/ || echo no answer; sleep 1; done"]
"#,
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/two-containers",
        "--timeout=60s",
    ]);
    let wide = up.ok(&["get", "pod", "two-containers", "-o", "wide", "--no-headers"]);
    let columns: Vec<&str> = wide.split_whitespace().collect();
    assert_eq!(&columns[1..3], ["2/2", "Running"], "{wide}");
    assert!(columns[5].starts_with("10.244."), "pod IP: {wide}");
    // The containers share the pod's network: localhost reaches the web one.
    assert!(
        eventually(Duration::from_secs(20), || up
            .ok(&["logs", "two-containers", "-c", "client"])
            .contains("hello from web")),
        "{}",
        up.ok(&["logs", "two-containers", "-c", "client"])
    );
    assert!(up
        .ok(&["logs", "two-containers", "-c", "web"])
        .contains("web starting"));
    // Exec, and the files the agent writes into every pod.
    let resolv = up.ok(&[
        "exec",
        "two-containers",
        "-c",
        "web",
        "--",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let hosts = up.ok(&[
        "exec",
        "two-containers",
        "-c",
        "web",
        "--",
        "cat",
        "/etc/hosts",
    ]);
    assert!(
        hosts.contains("# Kubernetes-managed hosts file."),
        "{hosts}"
    );
    assert!(hosts.contains("two-containers"), "{hosts}");
    assert_eq!(
        up.ok(&["exec", "two-containers", "-c", "web", "--", "hostname"])
            .trim(),
        "two-containers"
    );
    let out = up.kubectl(&[
        "exec",
        "two-containers",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The conditions and events read as in Kubernetes.
    let describe = up.ok(&["describe", "pod", "two-containers"]);
    for needle in [
        "Status:           Running",
        "Ready                       True",
        "Started container web",
        "Successfully pulled image \"busybox\"",
    ] {
        assert!(
            describe.contains(needle),
            "missing {needle:?} in\n{describe}"
        );
    }

    // Pods that run to the end: Succeeded (Completed) and Failed (Error).
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: done}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: ["sh", "-c", "echo finished"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: broken}
spec:
  restartPolicy: Never
  containers: [{name: main, image: busybox, command: ["sh", "-c", "echo failing >&2; exit 3"]}]
"#,
    );
    wait_for(&up, "done", ".status.phase", Duration::from_secs(60), |p| {
        p == "Succeeded"
    });
    wait_for(
        &up,
        "broken",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Failed",
    );
    assert_eq!(status_column(&up, "done"), "Completed");
    assert_eq!(status_column(&up, "broken"), "Error");
    assert_eq!(
        jsonpath(
            &up,
            "broken",
            ".status.containerStatuses[0].state.terminated.exitCode"
        ),
        "3"
    );
    assert!(up.ok(&["logs", "done"]).contains("finished"));
    assert!(up.ok(&["logs", "broken"]).contains("failing"));
}

#[test]
fn init_containers_and_sidecars() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    // The guide's "wait for a Service" init container: it fails (and is
    // restarted with back-off) until the Service exists, which it sees in
    // its environment.
    up.apply(r#"
apiVersion: v1
kind: Pod
metadata: {name: myapp-pod, labels: {app: myapp}}
spec:
  initContainers:
  - name: init-myservice
    image: busybox
    command: ["sh", "-c", "if [ -n \"$MYSERVICE_SERVICE_HOST\" ]; then echo myservice is at $MYSERVICE_SERVICE_HOST; else echo waiting for myservice; exit 1; fi"]
  containers:
  - name: myapp-container
    image: busybox
    command: ["sh", "-c", "echo The app is running! && sleep 3600"]
"#,
    );
    wait_for(
        &up,
        "myapp-pod",
        ".status.initContainerStatuses[0].restartCount",
        Duration::from_secs(30),
        |c| c.parse::<i32>().unwrap_or(0) >= 1,
    );
    let status = status_column(&up, "myapp-pod");
    assert!(status.starts_with("Init:"), "{status}");
    assert!(up
        .ok(&["logs", "myapp-pod", "-c", "init-myservice"])
        .contains("waiting for myservice"));
    up.apply("apiVersion: v1\nkind: Service\nmetadata: {name: myservice}\nspec:\n  ports: [{port: 80, targetPort: 9376}]\n",
    );
    wait_for(
        &up,
        "myapp-pod",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    assert!(up
        .ok(&["logs", "myapp-pod", "-c", "init-myservice"])
        .contains("myservice is at 10."));
    assert!(up
        .ok(&["logs", "myapp-pod"])
        .contains("The app is running!"));
    // A config-preparing init container writing into an emptyDir, and a
    // native sidecar tailing the app's log file.
    up.apply(r#"
apiVersion: v1
kind: Pod
metadata: {name: prepared}
spec:
  initContainers:
  - name: prepare-config
    image: busybox
    command: ["sh", "-c", "echo 'greeting=hello from init' > /config/app.conf"]
    volumeMounts: [{name: config, mountPath: /config}]
  - name: log-shipper
    image: busybox
    restartPolicy: Always
    command: ["sh", "-c", "touch /var/log/app.log; tail -F /var/log/app.log"]
    volumeMounts: [{name: logs, mountPath: /var/log}]
  containers:
  - name: app
    image: busybox
    command: ["sh", "-c", "cat /etc/app/app.conf; i=0; while true; do i=$((i+1)); echo line $i >> /var/log/app.log; sleep 1; done"]
    volumeMounts:
    - {name: config, mountPath: /etc/app, readOnly: true}
    - {name: logs, mountPath: /var/log}
  volumes:
  - {name: config, emptyDir: {}}
  - {name: logs, emptyDir: {}}
"#,
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/prepared",
        "--timeout=60s",
    ]);
    assert!(up
        .ok(&["logs", "prepared", "-c", "app"])
        .contains("greeting=hello from init"));
    assert!(
        eventually(Duration::from_secs(20), || up
            .ok(&["logs", "prepared", "-c", "log-shipper"])
            .contains("line 2")),
        "{}",
        up.ok(&["logs", "prepared", "-c", "log-shipper"])
    );
    let ready = up.ok(&["get", "pod", "prepared", "--no-headers"]);
    assert!(
        ready.contains(" 2/2 "),
        "the sidecar counts in READY: {ready}"
    );
}

#[test]
fn crashes_oom_and_missing_images() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: crasher}
spec:
  containers: [{name: main, image: busybox, command: ["sh", "-c", "echo crashing; exit 1"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: memory-hog}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "tail /dev/zero"]
    resources: {limits: {memory: 20Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: no-image}
spec:
  containers: [{name: main, image: does-not-exist:1.0}]
---
apiVersion: v1
kind: Pod
metadata: {name: exact-limit}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
    resources: {limits: {memory: 1e9}}
"#,
    );
    wait_for(
        &up,
        "crasher",
        ".status.containerStatuses[0].restartCount",
        Duration::from_secs(60),
        |c| c.parse::<i32>().unwrap_or(0) >= 2,
    );
    wait_for(
        &up,
        "crasher",
        ".status.containerStatuses[0].state.waiting.reason",
        Duration::from_secs(30),
        |r| r == "CrashLoopBackOff",
    );
    assert_eq!(status_column(&up, "crasher"), "CrashLoopBackOff");
    assert!(up
        .ok(&["logs", "crasher", "--previous"])
        .contains("crashing"));
    let describe = up.ok(&["describe", "pod", "crasher"]);
    assert!(
        describe.contains("Back-off restarting failed container main"),
        "{describe}"
    );
    assert!(
        describe.contains("Last State:     Terminated"),
        "{describe}"
    );

    wait_for(
        &up,
        "memory-hog",
        ".status.containerStatuses[0].state.terminated.reason",
        Duration::from_secs(60),
        |r| r == "OOMKilled",
    );
    assert_eq!(status_column(&up, "memory-hog"), "OOMKilled");

    // A limit written with an exponent is that many bytes (the kernel
    // keeps whole pages), not no limit.
    wait_for(
        &up,
        "exact-limit",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    let id = jsonpath(
        &up,
        "exact-limit",
        ".status.containerStatuses[0].containerID",
    );
    let id = id.trim_start_matches("shoal://");
    // The limit is on the container's cgroup (runc's `ctr` and the shim
    // are under it).
    let v1 = format!("/sys/fs/cgroup/memory/shoal/{id}/memory.limit_in_bytes");
    let v2 = format!("/sys/fs/cgroup/shoal/{id}/memory.max");
    let limit = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .unwrap_or_else(|e| panic!("no memory limit file at {v1} or {v2}: {e}"));
    let limit: u64 = limit.trim().parse().expect("a number of bytes");
    assert!(
        limit <= 1_000_000_000 && 1_000_000_000 - limit < 4096,
        "memory limit {limit}, wanted 1e9 bytes"
    );
    assert_eq!(
        jsonpath(
            &up,
            "memory-hog",
            ".status.containerStatuses[0].state.terminated.exitCode"
        ),
        "137"
    );

    wait_for(
        &up,
        "no-image",
        ".status.containerStatuses[0].state.waiting.reason",
        Duration::from_secs(30),
        |r| r == "ErrImagePull" || r == "ImagePullBackOff",
    );
    wait_for(
        &up,
        "no-image",
        ".status.containerStatuses[0].state.waiting.reason",
        Duration::from_secs(30),
        |r| r == "ImagePullBackOff",
    );
    let describe = up.ok(&["describe", "pod", "no-image"]);
    assert!(
        describe.contains("Failed to pull image \"does-not-exist:1.0\""),
        "{describe}"
    );
    assert!(describe.contains("Error: ImagePullBackOff"), "{describe}");
}

#[test]
fn probes_restart_and_gate_readiness() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    up.apply(r#"
apiVersion: v1
kind: Pod
metadata: {name: liveness-exec}
spec:
  containers:
  - name: liveness
    image: busybox
    args: ["/bin/sh", "-c", "touch /tmp/healthy; sleep 3; rm -f /tmp/healthy; sleep 600"]
    livenessProbe:
      exec: {command: ["cat", "/tmp/healthy"]}
      initialDelaySeconds: 1
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {name: slow-ready}
spec:
  containers:
  - name: web
    image: busybox
    command: ["sh", "-c", "sleep 4; mkdir -p /www; echo ok > /www/ready; exec httpd -f -p 8080 -h /www"]
    readinessProbe:
      httpGet: {path: /ready, port: 8080}
      periodSeconds: 1
"#,
    );
    wait_for(
        &up,
        "slow-ready",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    let early = up.ok(&["get", "pod", "slow-ready", "--no-headers"]);
    assert!(
        early.contains(" 0/1 "),
        "not ready before the probe passes: {early}"
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/slow-ready",
        "--timeout=60s",
    ]);

    wait_for(
        &up,
        "liveness-exec",
        ".status.containerStatuses[0].restartCount",
        Duration::from_secs(60),
        |c| c.parse::<i32>().unwrap_or(0) >= 1,
    );
    let describe = up.ok(&["describe", "pod", "liveness-exec"]);
    assert!(describe.contains("Liveness probe failed"), "{describe}");
    assert!(
        describe.contains("failed liveness probe, will be restarted"),
        "{describe}"
    );
}

#[test]
fn deletion_honours_the_grace_period() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: stubborn}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'echo ignoring TERM' TERM; while true; do sleep 1; done"]
---
apiVersion: v1
kind: Pod
metadata: {name: polite}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; while true; do sleep 1; done"]
"#,
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/stubborn",
        "pod/polite",
        "--timeout=60s",
    ]);
    // A container that ignores SIGTERM is killed when the grace ends.
    let started = Instant::now();
    up.ok(&["delete", "pod", "stubborn", "--grace-period=4"]);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(4),
        "deleted after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(15), "deleted after {took:?}");
    // One that exits on SIGTERM goes at once.
    let started = Instant::now();
    up.ok(&["delete", "pod", "polite"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(up.ok(&["get", "pods", "--no-headers"]).trim().is_empty());
}

/// A standalone `shoal agent` process on a data dir of its own.
struct Agent {
    child: Option<std::process::Child>,
    dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

impl Agent {
    fn start(up: &ShoalUp) -> Agent {
        let mut agent = Agent {
            child: None,
            dir: tempfile::tempdir().expect("temp dir"),
            kubeconfig: up.kubeconfig.clone(),
        };
        agent.spawn();
        agent
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .expect("log");
        let port = support::free_port().to_string();
        let child = support::daemon(support::SHOAL)
            .args(["agent", "--node-name", "worker-1", "--node-ip", "127.0.0.1"])
            .args([
                "--bind-address",
                "127.0.0.1",
                "--port",
                &port,
                "--stop-pods-on-exit",
                // One node: no tunnels (nor their routes on this host).
                "--no-overlay",
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start shoal agent");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn containers(&self) -> usize {
        std::fs::read_dir(self.dir.path().join("data").join("containers"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}", self.log());
        }
        if let Some(child) = &self.child {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(child) = self.child.as_mut() {
                    if let Ok(Some(_)) = child.try_wait() {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        self.kill();
        support::kube::remove_leftovers(self.dir.path());
    }
}

#[test]
fn a_restarted_agent_readopts_its_pods() {
    require_root!(node::PODS_NEED_ROOT);
    let up = ShoalUp::start();
    let mut agent = Agent::start(&up);
    assert!(
        eventually(Duration::from_secs(30), || {
            up.ok(&["get", "nodes", "--no-headers"])
                .contains("worker-1   Ready")
        }),
        "{}",
        agent.log()
    );
    up.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: survivor}\nspec:\n  containers: [{name: main, image: busybox, command: [\"sleep\", \"3600\"]}]\n",
    );
    // The agent loaded no image: `shoal image load` does.
    let archive = agent.dir.path().join("busybox.tar");
    let built = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/busybox-image.sh"
        ))
        .arg(&archive)
        .output()
        .expect("busybox-image.sh");
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let loaded = std::process::Command::new(support::SHOAL)
        .args(["image", "load", "--data-dir"])
        .arg(agent.dir.path().join("data"))
        .arg(&archive)
        .output()
        .expect("shoal image load");
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/survivor",
        "--timeout=90s",
    ]);
    let id = jsonpath(&up, "survivor", ".status.containerStatuses[0].containerID");

    // The agent dies; the container does not, and the next agent takes it.
    agent.kill();
    agent.spawn();
    std::thread::sleep(Duration::from_secs(3));
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/survivor",
        "--timeout=60s",
    ]);
    assert_eq!(
        jsonpath(&up, "survivor", ".status.containerStatuses[0].containerID"),
        id
    );
    assert_eq!(
        jsonpath(&up, "survivor", ".status.containerStatuses[0].restartCount"),
        "0"
    );
    assert_eq!(agent.containers(), 1, "no second container");

    // Removed from the API while the agent is away: killed when it is back.
    agent.kill();
    up.ok(&["delete", "pod", "survivor", "--grace-period=0", "--force"]);
    agent.spawn();
    assert!(
        eventually(Duration::from_secs(30), || agent.containers() == 0),
        "{} containers left\n{}",
        agent.containers(),
        agent.log()
    );
}

#[test]
fn volumes_environment_hooks_and_logs() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    let host_dir = tempfile::tempdir().expect("temp dir");
    let host_path = host_dir.path().to_string_lossy().to_string();
    up.apply(
        r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data: {mode: production, "app.properties": "color=blue\n"}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
stringData: {password: s3cr3t}
---
apiVersion: v1
kind: Service
metadata: {name: backend-service}
spec:
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: configured, labels: {{tier: backend}}}}
spec:
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo one; echo two; echo three; sleep 3600"]
    env:
    - name: MY_POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    - {{name: GREETING, value: "hello $(MY_POD_NAME)"}}
    - name: MY_POD_IP
      valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}
    - name: MEMORY_LIMIT
      valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}
    - name: MODE
      valueFrom: {{configMapKeyRef: {{name: app-config, key: mode}}}}
    - name: PASSWORD
      valueFrom: {{secretKeyRef: {{name: app-secret, key: password}}}}
    envFrom:
    - {{prefix: CFG_, configMapRef: {{name: app-config}}}}
    resources: {{limits: {{memory: 64Mi}}}}
    lifecycle:
      postStart: {{exec: {{command: ["sh", "-c", "echo started > /scratch/post-start"]}}}}
      preStop: {{exec: {{command: ["sh", "-c", "echo stopping > /host/pre-stop"]}}}}
    volumeMounts:
    - {{name: config, mountPath: /etc/config}}
    - {{name: secret, mountPath: /etc/secret, readOnly: true}}
    - {{name: info, mountPath: /etc/podinfo}}
    - {{name: scratch, mountPath: /scratch}}
    - {{name: host, mountPath: /host}}
    - {{name: config, mountPath: /etc/mode-only, subPath: mode}}
  volumes:
  - {{name: config, configMap: {{name: app-config}}}}
  - {{name: secret, secret: {{secretName: app-secret}}}}
  - name: info
    downwardAPI:
      items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]
  - {{name: scratch, emptyDir: {{medium: Memory}}}}
  - {{name: host, hostPath: {{path: {host_path}, type: Directory}}}}
"#
    );
    up.apply(&pod);
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/configured",
        "--timeout=60s",
    ]);
    let env = up.ok(&["exec", "configured", "--", "env"]);
    let ip = jsonpath(&up, "configured", ".status.podIP");
    for needle in [
        "GREETING=hello configured".to_string(),
        "MY_POD_NAME=configured".into(),
        format!("MY_POD_IP={ip}"),
        "MEMORY_LIMIT=64".into(),
        "MODE=production".into(),
        "PASSWORD=s3cr3t".into(),
        "CFG_mode=production".into(),
        // The guide's service environment variables.
        "BACKEND_SERVICE_SERVICE_HOST=10.".into(),
        "BACKEND_SERVICE_SERVICE_PORT=80".into(),
        "BACKEND_SERVICE_PORT=tcp://10.".into(),
        "BACKEND_SERVICE_PORT_80_TCP_ADDR=10.".into(),
        "BACKEND_SERVICE_PORT_80_TCP_PORT=80".into(),
        "BACKEND_SERVICE_PORT_80_TCP_PROTO=tcp".into(),
        "KUBERNETES_SERVICE_HOST=".into(),
    ] {
        assert!(env.contains(&needle), "missing {needle} in\n{env}");
    }
    let cat = |path: &str| up.ok(&["exec", "configured", "--", "cat", path]);
    assert_eq!(cat("/etc/config/app.properties"), "color=blue\n");
    assert_eq!(cat("/etc/secret/password"), "s3cr3t");
    assert_eq!(cat("/etc/podinfo/labels"), "tier=\"backend\"");
    assert_eq!(cat("/etc/mode-only"), "production");
    assert_eq!(cat("/scratch/post-start"), "started\n");
    let mounts = cat("/proc/mounts");
    assert!(mounts.contains("tmpfs /scratch tmpfs"), "{mounts}");
    let denied = up.kubectl(&[
        "exec",
        "configured",
        "--",
        "sh",
        "-c",
        "echo x > /etc/secret/other",
    ]);
    assert!(!denied.status.success(), "a readOnly mount is read-only");
    // Logs: tail, timestamps, follow to the end of a finished container.
    assert_eq!(up.ok(&["logs", "configured", "--tail=1"]), "three\n");
    let stamped = up.ok(&["logs", "configured", "--timestamps"]);
    assert!(
        stamped
            .lines()
            .all(|l| l.len() > 20 && l.as_bytes()[4] == b'-'),
        "{stamped}"
    );
    up.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: counter}\nspec:\n  restartPolicy: Never\n  containers: [{name: c, image: busybox, command: [\"sh\", \"-c\", \"for i in 1 2 3; do echo tick $i; sleep 1; done\"]}]\n",
    );
    up.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "pod/counter",
        "--timeout=60s",
    ]);
    let followed = up.ok(&["logs", "-f", "counter"]);
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");
    // preStop runs before the container is stopped.
    up.ok(&["delete", "pod", "configured", "--grace-period=5"]);
    assert_eq!(
        std::fs::read_to_string(host_dir.path().join("pre-stop")).unwrap_or_default(),
        "stopping\n"
    );
    // A missing ConfigMap key: CreateContainerConfigError, in kubelet's words.
    up.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: misconfigured}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sleep, \"3600\"]\n    env: [{name: X, valueFrom: {configMapKeyRef: {name: absent, key: k}}}]\n",
    );
    wait_for(
        &up,
        "misconfigured",
        ".status.containerStatuses[0].state.waiting.reason",
        Duration::from_secs(30),
        |r| r == "CreateContainerConfigError",
    );
    assert_eq!(
        jsonpath(
            &up,
            "misconfigured",
            ".status.containerStatuses[0].state.waiting.message"
        ),
        "configmap \"absent\" not found"
    );
}

#[test]
fn host_network_and_persistent_volumes() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: on-host}
spec:
  hostNetwork: true
  containers: [{name: c, image: busybox, command: ["sleep", "3600"]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: writer}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "echo persisted > /data/file"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"#,
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/on-host",
        "--timeout=60s",
    ]);
    assert_eq!(jsonpath(&up, "on-host", ".status.podIP"), "127.0.0.1");
    wait_for(
        &up,
        "writer",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Succeeded",
    );
    let pv = up.ok(&["get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"]);
    assert!(!pv.is_empty());
    up.ok(&["delete", "pod", "writer"]);
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: reader}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    command: ["cat", "/data/file"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: data}}]
"#,
    );
    wait_for(
        &up,
        "reader",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Succeeded",
    );
    assert_eq!(up.ok(&["logs", "reader"]), "persisted\n");
    let path = up.ok(&["get", "pv", &pv, "-o", "jsonpath={.spec.local.path}"]);
    let _ = std::fs::remove_dir_all(path);
}

/// `kubectl top` on real pods: usage from the containers' cgroups, sent
/// by the agent every `--metrics-interval`.
#[test]
fn kubectl_top_shows_cgroup_usage() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster_with(&["--metrics-interval", "2s"]);
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: burner
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox
    command: [sh, -c, 'while :; do :; done']
    resources:
      limits: {cpu: 500m}
---
apiVersion: v1
kind: Pod
metadata:
  name: holder
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: hold
    image: busybox
    command: [sh, -c, 'dd if=/dev/zero of=/cache/fill bs=1M count=50 && exec sleep 3600']
    volumeMounts:
    - {name: cache, mountPath: /cache}
  volumes:
  - name: cache
    emptyDir: {medium: Memory}
"#,
    );
    // "burner   498m   1Mi" → (498, 1), in millicores and MiB.
    let top = |pod: &str| -> Option<(u64, u64)> {
        let out = up.kubectl(&["top", "pod", pod, "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut fields = text.split_whitespace().skip(1);
        let cpu = fields.next()?.strip_suffix('m')?.parse().ok()?;
        let memory = fields.next()?.strip_suffix("Mi")?.parse().ok()?;
        Some((cpu, memory))
    };
    let mut burner = None;
    assert!(
        eventually(Duration::from_secs(90), || {
            burner = top("burner");
            burner.is_some_and(|(cpu, _)| cpu >= 400)
        }),
        "burner: {burner:?}\n{}",
        up.log()
    );
    let (cpu, _) = burner.unwrap();
    assert!((400..=600).contains(&cpu), "a 500m limit, {cpu}m used");
    let mut holder = None;
    assert!(
        eventually(Duration::from_secs(60), || {
            holder = top("holder");
            holder.is_some_and(|(_, mi)| mi >= 50)
        }),
        "holder: {holder:?}"
    );
    let (_, memory) = holder.unwrap();
    assert!((50..=60).contains(&memory), "50 MiB held, {memory}Mi used");
    let nodes = up.ok(&["top", "node", "--no-headers"]);
    let cores: u64 = nodes
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.strip_suffix('m'))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert!(cores >= 400, "the node runs the burner: {nodes}");
    up.ok(&["delete", "pod", "burner", "holder"]);
}

/// An exposition parsed by prometheus_client's own parser
/// (`tests/python/parse_metrics.py`): family name → type and samples.
fn parse_metrics(text: &str) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new(support::venv_program("python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/python/parse_metrics.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The value of the first sample named `name` whose labels include
/// `labels`, in any family.
fn sample(metrics: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let families = metrics.as_object()?;
    families
        .values()
        .filter_map(|family| family["samples"].as_array())
        .flatten()
        .find(|s| s[0] == name && labels.iter().all(|(k, v)| s[1][k].as_str() == Some(v)))
        .and_then(|s| s[2].as_f64())
}

/// Asserts that sample `name` with `labels` is at least `least`.
fn at_least(metrics: &serde_json::Value, name: &str, labels: &[(&str, &str)], least: f64) {
    let value = sample(metrics, name, labels);
    assert!(
        value.is_some_and(|v| v >= least),
        "{name}{labels:?} = {value:?}, expected at least {least}\n{metrics}"
    );
}

/// `url` over plain HTTP (the store's and the controllers' endpoints).
fn http_get(url: &str) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every component's `/metrics` parses with prometheus_client's parser and
/// carries Kubernetes' and etcd's names: the apiserver (through `kubectl
/// get --raw`), each store member and the controllers (the URLs `shoal up`
/// prints), and the agent's `/metrics` and `/metrics/resource` (with the
/// token the apiserver presents, 401 without), the latter showing a pod
/// spinning at its 500m limit.
#[test]
fn every_component_serves_prometheus_metrics() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster_with(&[]);
    up.apply(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: spinner
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: spin
    image: busybox
    command: [sh, -c, 'while :; do :; done']
    resources:
      limits: {cpu: 500m}
"#,
    );
    wait_for(
        &up,
        "spinner",
        ".status.phase",
        Duration::from_secs(60),
        |p| p == "Running",
    );
    up.ok(&["get", "pods", "-A"]);

    // The apiserver: kubectl's create, get (named), list (all namespaces),
    // and the pod watches of the controllers and the agent.
    let api = parse_metrics(&up.ok(&["get", "--raw", "/metrics"]));
    assert_eq!(api["apiserver_request"]["type"], "counter");
    let request = "apiserver_request_total";
    let pods = ("resource", "pods");
    at_least(
        &api,
        request,
        &[
            ("verb", "LIST"),
            pods,
            ("scope", "cluster"),
            ("code", "200"),
        ],
        1.0,
    );
    at_least(
        &api,
        request,
        &[
            ("verb", "POST"),
            pods,
            ("scope", "namespace"),
            ("code", "201"),
        ],
        1.0,
    );
    assert_eq!(
        api["apiserver_request_duration_seconds"]["type"],
        "histogram"
    );
    let duration = "apiserver_request_duration_seconds_count";
    at_least(
        &api,
        duration,
        &[("verb", "GET"), pods, ("scope", "resource")],
        1.0,
    );
    at_least(
        &api,
        "apiserver_longrunning_requests",
        &[("verb", "WATCH"), pods],
        1.0,
    );

    // Each store member: one leader among three, proposals and the disk.
    let log = up.log();
    let store_urls: Vec<&str> = log
        .lines()
        .find_map(|l| l.strip_prefix("store metrics: "))
        .expect("shoal up names the store's metrics URLs")
        .split(", ")
        .filter_map(|m| m.split_whitespace().nth(1))
        .collect();
    assert_eq!(store_urls.len(), 3, "{log}");
    let mut leaders = 0.0;
    for url in &store_urls {
        let store = parse_metrics(&http_get(url));
        assert_eq!(
            sample(&store, "etcd_server_has_leader", &[]),
            Some(1.0),
            "{url}"
        );
        leaders += sample(&store, "etcd_server_is_leader", &[]).unwrap();
        at_least(&store, "etcd_server_leader_changes_seen_total", &[], 1.0);
        at_least(&store, "etcd_server_proposals_committed_total", &[], 10.0);
        at_least(&store, "etcd_server_proposals_applied_total", &[], 10.0);
        at_least(&store, "etcd_server_proposals_pending", &[], 0.0);
        at_least(&store, "etcd_server_proposals_failed_total", &[], 0.0);
        at_least(
            &store,
            "etcd_disk_wal_fsync_duration_seconds_count",
            &[],
            1.0,
        );
        at_least(
            &store,
            "etcd_disk_backend_commit_duration_seconds_count",
            &[],
            1.0,
        );
    }
    assert_eq!(leaders, 1.0, "one leader among {store_urls:?}");

    // The controllers: the scheduler placed the pod; the namespaces woke
    // the ServiceAccount controller (a default account each), which is
    // idle now.
    let url = log
        .lines()
        .find_map(|l| l.strip_prefix("controllers metrics: "))
        .expect("shoal up names the controllers' metrics URL");
    let controllers = parse_metrics(&http_get(url));
    let scheduled = [("result", "scheduled"), ("profile", "default-scheduler")];
    at_least(
        &controllers,
        "scheduler_schedule_attempts_total",
        &scheduled,
        1.0,
    );
    at_least(
        &controllers,
        "scheduler_scheduling_attempt_duration_seconds_count",
        &scheduled,
        1.0,
    );
    at_least(
        &controllers,
        "scheduler_pending_pods",
        &[("queue", "active")],
        0.0,
    );
    let accounts = [("name", "serviceaccount")];
    at_least(&controllers, "workqueue_adds_total", &accounts, 4.0);
    at_least(
        &controllers,
        "workqueue_work_duration_seconds_count",
        &accounts,
        4.0,
    );
    at_least(
        &controllers,
        "workqueue_queue_duration_seconds_count",
        &accounts,
        1.0,
    );
    assert_eq!(
        sample(&controllers, "workqueue_depth", &accounts),
        Some(0.0)
    );

    // The agent, as the apiserver reaches it.
    let token = std::fs::read_to_string(up.data_dir().join("agent-token")).unwrap();
    let port = up.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.daemonEndpoints.kubeletEndpoint.Port}",
    ]);
    let agent_get = |path: &str, token: &str| -> (String, String) {
        let out = std::process::Command::new("curl")
            .args(["-sSk", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg(format!("https://127.0.0.1:{}{path}", port.trim()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    assert_eq!(agent_get("/metrics/resource", "wrong").0, "401");
    let (code, own) = agent_get("/metrics", &token);
    assert_eq!(code, "200", "{own}");
    let own = parse_metrics(&own);
    assert_eq!(
        sample(&own, "kubelet_running_pods", &[]),
        Some(1.0),
        "{own}"
    );
    let start = [("operation_type", "start_container")];
    at_least(&own, "kubelet_runtime_operations_total", &start, 1.0);
    at_least(
        &own,
        "kubelet_runtime_operations_duration_seconds_count",
        &start,
        1.0,
    );
    at_least(&own, "kubelet_pod_start_duration_seconds_count", &[], 1.0);
    at_least(
        &own,
        "kubelet_pod_status_sync_duration_seconds_count",
        &[],
        1.0,
    );
    at_least(&own, "shoal_image_store_images", &[], 1.0);
    // CPU seconds grow by about half a second per second.
    let spin = [
        ("namespace", "default"),
        ("pod", "spinner"),
        ("container", "spin"),
    ];
    let cpu = || -> f64 {
        let (code, text) = agent_get("/metrics/resource", &token);
        assert_eq!(code, "200", "{text}");
        let resource = parse_metrics(&text);
        assert_eq!(sample(&resource, "resource_scrape_error", &[]), Some(0.0));
        at_least(&resource, "node_memory_working_set_bytes", &[], 1.0);
        at_least(&resource, "node_cpu_usage_seconds_total", &[], 1.0);
        at_least(&resource, "container_memory_working_set_bytes", &spin, 1.0);
        at_least(&resource, "container_start_time_seconds", &spin, 1.7e9);
        let pod = sample(&resource, "pod_cpu_usage_seconds_total", &spin[..2]).unwrap();
        let container = sample(&resource, "container_cpu_usage_seconds_total", &spin).unwrap();
        assert_eq!(pod, container, "one container: the pod's CPU is its");
        container
    };
    let (before, at) = (cpu(), Instant::now());
    std::thread::sleep(Duration::from_secs(4));
    let rate = (cpu() - before) / at.elapsed().as_secs_f64();
    assert!(
        (0.35..=0.65).contains(&rate),
        "a 500m limit, {rate} cores used"
    );
    up.ok(&["delete", "pod", "spinner"]);
}

/// The guide's HPA on a real Deployment: pods spinning at their 200m
/// limit against a 100m request are 200% of it, so `kubectl autoscale
/// --cpu-percent=50 --min=1 --max=5` scales to the maximum; once the pods
/// only sleep, back to the minimum (the test sets no scale-down
/// stabilization window).
#[test]
fn the_hpa_scales_real_pods_on_their_cgroup_usage() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster_with(&[
        "--metrics-interval",
        "2s",
        "--horizontal-pod-autoscaler-sync-period=1s",
    ]);
    up.apply(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: burn
spec:
  replicas: 1
  selector:
    matchLabels: {app: burn}
  template:
    metadata:
      labels: {app: burn}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: spin
        image: busybox
        command: [sh, -c, 'while :; do :; done']
        resources:
          requests: {cpu: 100m}
          limits: {cpu: 200m}
"#,
    );
    let replicas = || {
        up.ok(&[
            "get",
            "deployment",
            "burn",
            "-o",
            "jsonpath={.spec.replicas}",
        ])
    };
    up.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=5",
    ]);
    up.ok(&[
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(120), || replicas() == "5"),
        "not scaled up: {}\n{}",
        replicas(),
        up.ok(&["describe", "hpa", "burn"])
    );
    // The load stops: the pods only sleep.
    up.ok(&[
        "patch",
        "deployment",
        "burn",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/template/spec/containers/0/command","value":["sleep","3600"]}]"#,
    ]);
    assert!(
        eventually(Duration::from_secs(120), || replicas() == "1"),
        "not scaled down: {}\n{}",
        replicas(),
        up.ok(&["describe", "hpa", "burn"])
    );
    up.ok(&["delete", "hpa", "burn"]);
    up.ok(&["delete", "deployment", "burn"]);
}
