//! The small `shoal-container-shim` program: its usage errors, and (as
//! root, with runc and Debian's busybox-static) a container run through it
//! to its exit code and log.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shoal_agent::image::busybox;
use shoal_agent::runtime::{ContainerConfig, ContainerProcess, Runtime, Status};

const SHIM: &str = env!("CARGO_BIN_EXE_shoal-container-shim");

#[test]
fn usage_errors_are_clear() {
    let out = Command::new(SHIM).output().expect("run the shim");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: shoal-container-shim"));
    let out = Command::new(SHIM)
        .arg("/nonexistent/container")
        .output()
        .expect("run the shim");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container-shim: reading"));
}

#[test]
fn a_container_runs_through_the_small_shim() {
    // Under CI=true a test that cannot run fails rather than passing.
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if !Path::new(busybox::DEFAULT_BUSYBOX).exists() {
        assert!(!ci, "needs /bin/busybox (busybox-static) under CI=true");
        eprintln!("skipped: needs /bin/busybox (busybox-static)");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = match Runtime::new(dir.path()) {
        Ok(runtime) => runtime,
        Err(e) => {
            assert!(!ci, "cannot run under CI=true: {e}");
            eprintln!("skipped: {e}");
            return;
        }
    };
    let runtime = runtime
        .with_shim(PathBuf::from(SHIM), vec![])
        .with_cgroup_parent(&format!("shoal-shim-test-{}", std::process::id()));
    busybox::ensure_loaded(runtime.images(), Path::new(busybox::DEFAULT_BUSYBOX))
        .expect("busybox image");
    let config = ContainerConfig {
        id: "small-shim".into(),
        image: "busybox".into(),
        process: ContainerProcess {
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo through the shim; exit 3".into(),
            ],
            ..Default::default()
        },
        ..Default::default()
    };
    let handle = runtime.create_and_start(&config).expect("start");
    let status = runtime
        .wait("small-shim", Duration::from_secs(30))
        .expect("status");
    let log = std::fs::read_to_string(&handle.log_path).unwrap_or_default();
    runtime.remove("small-shim").expect("remove");
    runtime.remove_cgroup_parent();
    assert!(
        matches!(status, Status::Exited { code: 3, .. }),
        "{status:?}"
    );
    assert!(log.contains("stdout F through the shim"), "{log}");
}
