//! The node agent's image store and container runtime with the real
//! pieces: the busybox image built by `scripts/busybox-image.sh` (no
//! download), `shoal image load/ls`, and containers run by Debian's runc
//! through `shoal container-shim`: exit codes, CRI logs, an OOM kill, a
//! SIGTERM/SIGKILL, and a second runtime re-adopting a running container.
//! Needs root (runc, overlay mounts, cgroups); CI runs as root.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;

use std::path::{Path, PathBuf};
use std::time::Duration;

use node::{busybox_archive, shoal, Node, SHOAL};
use shoal_agent::runtime::{BindMount, Error, Network, Runtime, Signal, Status};

#[test]
fn busybox_image_loads_and_lists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = busybox_archive(dir.path());
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let loaded = shoal(&[
        "image",
        "load",
        archive.to_str().expect("utf-8"),
        "--data-dir",
        data,
    ]);
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let ls = shoal(&["image", "ls", "--data-dir", data]);
    assert!(ls.status.success());
    let text = String::from_utf8_lossy(&ls.stdout).to_string();
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"], "{text}");
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        &lines[1][..2],
        ["docker.io/library/busybox", "latest"],
        "{text}"
    );
    assert_eq!(lines[1][2].len(), 13, "{text}");
    assert!(lines[1][3].ends_with("MB"), "{text}");
    // The applets are there, as symlinks to busybox.
    let rootfs = std::fs::read_dir(Path::new(data).join("images/rootfs"))
        .expect("rootfs")
        .flatten()
        .next()
        .expect("one image")
        .path();
    assert_eq!(
        std::fs::read_link(rootfs.join("bin/sh")).expect("bin/sh"),
        PathBuf::from("busybox")
    );

    // Not an archive: a clear error and exit code 1.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "just some text\n".repeat(100)).expect("write");
    let bad = shoal(&[
        "image",
        "load",
        notes.to_str().expect("utf-8"),
        "--data-dir",
        data,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("not a docker save or OCI layout archive"),
        "{stderr}"
    );
    let missing = shoal(&["image", "load", "/nonexistent.tar", "--data-dir", data]);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn a_container_runs_logs_and_exits_with_its_code() {
    require_root!();
    let node = Node::start("shoal-test");
    let hosts = node.dir.path().join("hosts");
    std::fs::write(&hosts, "10.0.0.7\tweb-0\n").expect("hosts");
    let mut config = node.config(
        "exit-code",
        &[
            "sh",
            "-c",
            "echo hello $(WHO); hostname; cat /etc/hosts; echo oops >&2; exit 3",
        ],
    );
    config.process.env = vec![("WHO".into(), "world".into())];
    config.hostname = Some("web-0".into());
    // Joining a network namespace by path (here runc's own, the host's).
    config.network = Network::Join("/proc/self/ns/net".into());
    config.mounts = vec![BindMount {
        source: hosts,
        destination: "/etc/hosts".into(),
        read_only: true,
    }];
    let handle = node.runtime.create_and_start(&config).expect("start");
    let (code, oom, _) = node.exited("exit-code");
    assert_eq!((code, oom), (3, false));
    let log = std::fs::read_to_string(&handle.log_path).expect("log");
    let lines: Vec<(&str, &str)> = log
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let _time = f.next();
            let stream = f.next().unwrap_or_default();
            let _tag = f.next();
            (stream, f.next().unwrap_or_default())
        })
        .collect();
    assert!(lines.contains(&("stdout", "hello world")), "{log}");
    assert!(lines.contains(&("stdout", "web-0")), "{log}");
    assert!(lines.contains(&("stdout", "10.0.0.7\tweb-0")), "{log}");
    assert!(lines.contains(&("stderr", "oops")), "{log}");
    // CRI format: RFC 3339 with nanoseconds, stream, F.
    // (stdout and stderr are copied apart, so their order may vary.)
    for line in log.lines() {
        assert!(
            line.len() > 31 && &line[10..11] == "T" && &line[29..31] == "Z ",
            "{line}"
        );
        assert!(
            line[31..].starts_with("stdout F ") || line[31..].starts_with("stderr F "),
            "{line}"
        );
    }

    // Gone after remove: folder, cgroup.
    node.runtime.remove("exit-code").expect("remove");
    assert!(matches!(
        node.runtime.status("exit-code"),
        Err(Error::NotFound(_))
    ));
    assert!(!node.data().join("containers/exit-code").exists());
}

#[test]
fn over_its_memory_limit_a_container_is_oom_killed() {
    require_root!();
    let node = Node::start("shoal-test");
    let mut config = node.config("oom", &["sh", "-c", "head -c 200000000 /dev/zero | sort"]);
    config.memory_limit_bytes = Some(16 * 1024 * 1024);
    node.runtime.create_and_start(&config).expect("start");
    let (code, oom, _) = node.exited("oom");
    assert!(oom, "exit code {code}, not OOM-killed");
    assert_eq!(code, 137);
    // The same command within its limit is not.
    let mut small = node.config(
        "no-oom",
        &["sh", "-c", "head -c 1000 /dev/zero | sort >/dev/null"],
    );
    small.memory_limit_bytes = Some(16 * 1024 * 1024);
    node.runtime.create_and_start(&small).expect("start");
    assert_eq!(node.exited("no-oom"), (0, false, String::new()));
}

#[test]
fn signals_stop_containers_and_a_new_runtime_readopts_them() {
    require_root!();
    let node = Node::start("shoal-test");
    let trapping = node.config(
        "trapping",
        &["sh", "-c", "trap 'exit 143' TERM; sleep 1000 & wait"],
    );
    let handle = node.runtime.create_and_start(&trapping).expect("start");
    assert!(handle.pid > 0);
    let plain = node.config("sleeper", &["sleep", "1000"]);
    node.runtime.create_and_start(&plain).expect("start");

    // An agent restarted: a new runtime on the same data dir.
    let again = Runtime::new(&node.data())
        .expect("runtime")
        .with_shim(PathBuf::from(SHOAL), vec!["container-shim".into()]);
    let listed = again.list().expect("list");
    let ids: Vec<&str> = listed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["sleeper", "trapping"]);
    let trapping_now = listed
        .iter()
        .find(|c| c.id == "trapping")
        .map(|c| c.status.clone());
    assert!(
        matches!(trapping_now, Some(Status::Running { pid, .. }) if pid == handle.pid),
        "{trapping_now:?}"
    );

    again.kill("trapping", Signal::SIGTERM).expect("kill");
    assert_eq!(node.exited("trapping").0, 143);
    // PID 1 without a handler ignores SIGTERM, as in Kubernetes; SIGKILL
    // always works.
    again.kill("sleeper", Signal::SIGTERM).expect("kill");
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(
        again.status("sleeper").expect("status"),
        Status::Running { .. }
    ));
    again.kill("sleeper", Signal::SIGKILL).expect("kill");
    assert_eq!(node.exited("sleeper").0, 137);
    // Killing an exited container is not an error; removing a running one is.
    again
        .kill("sleeper", Signal::SIGKILL)
        .expect("kill after exit");
}

#[test]
fn missing_images_and_bad_commands_are_clear_errors() {
    require_root!();
    let node = Node::start("shoal-test");
    let mut config = node.config("missing", &["sh"]);
    config.image = "nginx:1.27".into();
    let err = node
        .runtime
        .create_and_start(&config)
        .expect_err("no such image");
    assert!(
        err.to_string().contains("\"nginx:1.27\" is not present"),
        "{err}"
    );
    assert!(!node.data().join("containers/missing").exists());
    let bad = node.config("bad-command", &["/no/such/binary"]);
    let err = node
        .runtime
        .create_and_start(&bad)
        .expect_err("cannot start");
    assert!(err.to_string().contains("/no/such/binary"), "{err}");
    match node.runtime.status("bad-command").expect("status") {
        Status::Exited {
            code, started_at, ..
        } => assert_eq!((code, started_at), (128, None)),
        other => panic!("{other:?}"),
    }
    let running = node.config("running", &["sleep", "1000"]);
    node.runtime.create_and_start(&running).expect("start");
    assert!(matches!(
        node.runtime.remove("running"),
        Err(Error::StillRunning(_))
    ));
    assert!(matches!(
        node.runtime.create_and_start(&running),
        Err(Error::AlreadyExists(_))
    ));
}
