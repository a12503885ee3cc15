//! `runc exec` in running containers and container probes, with the real
//! pieces: the busybox image built by `scripts/busybox-image.sh`, Debian's
//! runc, `shoal container-shim`. exec_sync (output, exit codes, a timeout
//! that kills the process in the container), exec sessions with pipes and
//! with a terminal (resized), and exec/httpGet/tcpSocket probes against
//! busybox's httpd, then a prober turning ready. Needs root (runc, mounts,
//! cgroups); CI runs as root.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use node::Node;
use shoal_agent::agent::probe::{self, Health, Kind, Outcome, OwnedTarget, Target};
use shoal_agent::runtime::{ContainerConfig, ContainerProcess, Error, ExecRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// A free TCP port on the host (the test containers use its network).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sync_returns_output_and_codes_and_kills_at_its_timeout() {
    require_root!();
    let node = Node::start("shoal-exec-test");
    node.run("sync", "sleep 1000");
    let rt = &node.runtime;
    let out = rt
        .exec_sync(
            "sync",
            &strings(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");
    assert!(!out.timed_out);

    // Output is capped, the process is not blocked by it.
    let out = rt
        .exec_sync(
            "sync",
            &strings(&["sh", "-c", "head -c 100000 /dev/zero"]),
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0);
    assert_eq!(
        out.stdout.len(),
        shoal_agent::runtime::exec::EXEC_OUTPUT_LIMIT
    );

    // A timeout kills the process inside the container too.
    let started = Instant::now();
    let out = rt
        .exec_sync("sync", &strings(&["sleep", "77"]), Duration::from_secs(1))
        .await
        .expect("exec");
    assert!(out.timed_out);
    assert_eq!(out.exit_code, 137);
    assert!(started.elapsed() < Duration::from_secs(10));
    let ps = rt
        .exec_sync("sync", &strings(&["ps"]), Duration::from_secs(10))
        .await
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains("sleep 77"), "{ps}");

    // A command that does not exist: runc says so, with its code.
    let out = rt
        .exec_sync("sync", &strings(&["/no/such"]), Duration::from_secs(10))
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("/no/such"),
        "{out:?}"
    );

    // Not running / not there: clear errors.
    node.run("done", "exit 0");
    let _ = rt.wait("done", Duration::from_secs(20));
    let err = rt
        .exec_sync("done", &strings(&["true"]), Duration::from_secs(5))
        .await
        .expect_err("exited");
    assert!(matches!(err, Error::NotRunning(_)), "{err}");
    assert!(err.to_string().contains("container not running"), "{err}");
    let err = rt
        .exec_sync("nope", &strings(&["true"]), Duration::from_secs(5))
        .await
        .expect_err("missing");
    assert!(matches!(err, Error::NotFound(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_sessions_carry_streams_with_and_without_a_terminal() {
    require_root!();
    let node = Node::start("shoal-exec-test");
    node.run("session", "sleep 1000");
    let rt = &node.runtime;

    // Pipes: stdin to cat, stdout back; stderr apart.
    let mut session = rt
        .exec(
            "session",
            &ExecRequest {
                command: strings(&["sh", "-c", "cat; echo bye >&2; exit 4"]),
                tty: false,
                stdin: true,
            },
        )
        .await
        .expect("exec");
    let mut stdin = session.stdin.take().expect("stdin");
    let mut stdout = session.stdout.take().expect("stdout");
    let mut stderr = session.stderr.take().expect("stderr");
    stdin.write_all(b"hello\n").await.expect("write");
    stdin.shutdown().await.expect("close");
    drop(stdin);
    let mut out = String::new();
    stdout.read_to_string(&mut out).await.expect("read");
    let mut err = String::new();
    stderr.read_to_string(&mut err).await.expect("read");
    assert_eq!((out.as_str(), err.as_str()), ("hello\n", "bye\n"));
    assert_eq!(session.wait().await.expect("wait"), 4);

    // A terminal: its size, then the shell's exit code.
    let mut session = rt
        .exec(
            "session",
            &ExecRequest {
                command: strings(&["sh"]),
                tty: true,
                stdin: true,
            },
        )
        .await
        .expect("exec tty");
    assert!(session.stderr.is_none());
    session.resize(101, 42).expect("resize");
    let mut stdin = session.stdin.take().expect("stdin");
    let mut stdout = session.stdout.take().expect("stdout");
    // Give runc a moment to copy the size over (on SIGWINCH).
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin
        .write_all(b"stty size; tty; exit 7\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_to_end(&mut out))
        .await
        .expect("terminal output in time")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("42 101"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert_eq!(session.wait().await.expect("wait"), 7);

    // Dropping a session kills its process.
    let session = rt
        .exec(
            "session",
            &ExecRequest {
                command: strings(&["sleep", "88"]),
                tty: false,
                stdin: false,
            },
        )
        .await
        .expect("exec");
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(session);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ps = rt
        .exec_sync("session", &strings(&["ps"]), Duration::from_secs(10))
        .await
        .expect("ps");
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(!ps.contains("sleep 88"), "{ps}");
}

fn http_probe(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn probes_check_exec_http_and_tcp() {
    require_root!();
    let node = Node::start("shoal-exec-test");
    let port = free_port();
    node.run(
        "web",
        &format!("echo ok > /var/www/healthz; exec httpd -f -p 127.0.0.1:{port} -h /var/www"),
    );
    let ports = [ContainerPort {
        name: Some("http".into()),
        container_port: i32::from(port),
        ..Default::default()
    }];
    let target = Target {
        runtime: &node.runtime,
        container_id: "web",
        pod_ip: None,
        container_ports: &ports,
    };
    // httpd is up once its port answers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "httpd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let exec = |command: &[&str]| Probe {
        exec: Some(ExecAction {
            command: Some(strings(command)),
        }),
        ..Default::default()
    };
    assert_eq!(
        probe::check(&exec(&["cat", "/var/www/healthz"]), &target).await,
        Outcome::Success
    );
    assert_eq!(
        probe::check(&exec(&["cat", "/tmp/healthy"]), &target).await,
        Outcome::Failure("cat: can't open '/tmp/healthy': No such file or directory\n".into())
    );
    let mut slow = exec(&["sleep", "5"]);
    slow.timeout_seconds = Some(1);
    assert_eq!(
        probe::check(&slow, &target).await,
        Outcome::Failure("command \"sleep 5\" timed out".into())
    );

    assert_eq!(
        probe::check(
            &http_probe(IntOrString::String("http".into()), "/healthz"),
            &target
        )
        .await,
        Outcome::Success
    );
    assert_eq!(
        probe::check(
            &http_probe(IntOrString::Int(i32::from(port)), "/missing"),
            &target
        )
        .await,
        Outcome::Failure("HTTP probe failed with statuscode: 404".into())
    );
    let closed = free_port();
    assert_eq!(
        probe::check(&http_probe(IntOrString::Int(i32::from(closed)), "/healthz"), &target).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{closed}/healthz\": dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
    assert!(matches!(
        probe::check(
            &http_probe(IntOrString::String("nope".into()), "/"),
            &target
        )
        .await,
        Outcome::Error(_)
    ));

    let tcp = |port: u16| Probe {
        tcp_socket: Some(TCPSocketAction {
            host: None,
            port: IntOrString::Int(i32::from(port)),
        }),
        ..Default::default()
    };
    assert_eq!(probe::check(&tcp(port), &target).await, Outcome::Success);
    assert_eq!(
        probe::check(&tcp(closed), &target).await,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{closed}: connect: connection refused"
        ))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prober_publishes_readiness_and_liveness() {
    require_root!();
    let node = Node::start("shoal-exec-test");
    node.run("probed", "sleep 1000");
    let started_at = Instant::now();
    let target = OwnedTarget {
        runtime: node.runtime.clone(),
        container_id: "probed".into(),
        pod_ip: None,
        container_ports: vec![],
    };
    let probe = |command: &[&str]| Probe {
        exec: Some(ExecAction {
            command: Some(strings(command)),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(2),
        ..Default::default()
    };
    let readiness = probe::spawn(
        Kind::Readiness,
        probe(&["test", "-f", "/tmp/ready"]),
        target.clone(),
        started_at,
    );
    let mut ready = readiness.results();
    assert_eq!(ready.borrow().health, Health::Failure, "not ready at first");
    // Failures are counted (one event each) while it stays not ready.
    tokio::time::timeout(Duration::from_secs(20), ready.wait_for(|s| s.failures >= 2))
        .await
        .expect("failures in time")
        .expect("prober alive");
    assert_eq!(
        ready.borrow().last_failure.as_deref(),
        Some("Readiness probe failed: ")
    );
    node.runtime
        .exec_sync(
            "probed",
            &strings(&["touch", "/tmp/ready"]),
            Duration::from_secs(10),
        )
        .await
        .expect("touch");
    tokio::time::timeout(
        Duration::from_secs(20),
        ready.wait_for(|s| s.health == Health::Success),
    )
    .await
    .expect("ready in time")
    .expect("prober alive");

    // Liveness: alive until failureThreshold failures in a row.
    let liveness = probe::spawn(
        Kind::Liveness,
        probe(&["sh", "-c", "echo dead; exit 1"]),
        target,
        started_at,
    );
    let mut alive = liveness.results();
    assert_eq!(alive.borrow().health, Health::Success);
    let state = tokio::time::timeout(
        Duration::from_secs(20),
        alive.wait_for(|s| s.health == Health::Failure),
    )
    .await
    .expect("dead in time")
    .expect("published")
    .clone();
    assert_eq!(state.failures, 2);
    assert_eq!(
        state.last_failure.as_deref(),
        Some("Liveness probe failed: dead\n")
    );
    drop(readiness);
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_reaches_a_containers_terminal_and_stdin() {
    require_root!();
    let node = Node::start("shoal-exec-test");
    let rt = &node.runtime;
    // `kubectl run -it -- sh`: a tty and stdin.
    let config = ContainerConfig {
        id: "interactive".into(),
        image: "busybox".into(),
        process: ContainerProcess {
            command: strings(&["sh"]),
            ..Default::default()
        },
        tty: true,
        stdin: true,
        stdin_once: true,
        ..Default::default()
    };
    let handle = rt.create_and_start(&config).expect("start");
    let mut session = rt.attach("interactive", true).await.expect("attach");
    assert!(session.stderr.is_none());
    session.resize(99, 33).expect("resize");
    let mut stdin = session.stdin.take().expect("stdin");
    let mut stdout = session.stdout.take().expect("stdout");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stdin
        .write_all(b"stty size; echo to-the-log; exit 5\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stdout.read_to_end(&mut out))
        .await
        .expect("output in time")
        .expect("read");
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("33 99"), "{out:?}");
    assert_eq!(session.wait().await.expect("wait"), 5);
    match rt
        .wait("interactive", Duration::from_secs(20))
        .expect("status")
    {
        shoal_agent::runtime::Status::Exited { code, .. } => assert_eq!(code, 5),
        other => panic!("{other:?}"),
    }
    let log = std::fs::read_to_string(&handle.log_path).expect("log");
    assert!(log.contains(" stdout F to-the-log\r"), "{log}");

    // stdin without a tty, closed when the first client detaches.
    let config = ContainerConfig {
        id: "piped".into(),
        image: "busybox".into(),
        process: ContainerProcess {
            command: strings(&["sh", "-c", "cat; echo done >&2"]),
            ..Default::default()
        },
        stdin: true,
        stdin_once: true,
        ..Default::default()
    };
    rt.create_and_start(&config).expect("start");
    let mut session = rt.attach("piped", true).await.expect("attach");
    let mut stdin = session.stdin.take().expect("stdin");
    let mut stdout = session.stdout.take().expect("stdout");
    let mut stderr = session.stderr.take().expect("stderr");
    stdin.write_all(b"hello\n").await.expect("write");
    stdin.shutdown().await.expect("close");
    drop(stdin);
    let mut out = String::new();
    let mut err = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        stdout.read_to_string(&mut out).await.expect("read");
        stderr.read_to_string(&mut err).await.expect("read");
    })
    .await
    .expect("output in time");
    assert_eq!((out.as_str(), err.as_str()), ("hello\n", "done\n"));
    assert_eq!(session.wait().await.expect("wait"), 0);

    // Containers without stdin or tty have nothing to attach to.
    node.run("plain", "sleep 1000");
    let err = rt.attach("plain", true).await.expect_err("not attachable");
    assert!(matches!(err, Error::NotAttachable(_)), "{err}");
}
