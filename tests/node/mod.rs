//! Shared pieces of the root-only node tests (container_runtime, exec_probe,
//! pods, attach): the root check that skips them elsewhere, and `Node`, a
//! data dir with the busybox image built by `scripts/busybox-image.sh` (no
//! download) and loaded by `shoal image load`, with a runtime over it.
//!
//! A folder module, so that cargo does not take it for a test target of
//! its own; each suite declares it with `mod node;`.
#![allow(dead_code)]
// Test helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use shoal_agent::runtime::{ContainerConfig, ContainerProcess, Runtime, Signal, Status};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Why the pod suites (pods, attach) skip without root.
pub const PODS_NEED_ROOT: &str = "real pods need root (runc, mounts, network namespaces)";

/// Effective uid 0, from /proc (the test crate has no libc binding).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Whether the suite runs in CI (`CI=true`), where a test that cannot run
/// fails rather than passing without having run.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns from the test, saying why, unless it runs as root (under
/// `CI=true` it fails instead): `require_root!()` for the container
/// runtime, `require_root!(reason)` for anything else.
#[macro_export]
macro_rules! require_root {
    () => {
        $crate::require_root!("the container runtime needs root (runc, mounts, cgroups)")
    };
    ($why:expr) => {
        if !$crate::node::is_root() {
            assert!(
                !$crate::node::in_ci(),
                "cannot run without root under CI=true: {}",
                $why
            );
            eprintln!("skipped: {}", $why);
            return;
        }
    };
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn shoal(args: &[&str]) -> Output {
    Command::new(SHOAL)
        .args(args)
        .output()
        .expect("running shoal")
}

/// Builds the busybox image archive `dir/busybox.tar` and returns its path.
pub fn busybox_archive(dir: &Path) -> PathBuf {
    let archive = dir.join("busybox.tar");
    let built = Command::new("bash")
        .arg(repo_root().join("scripts/busybox-image.sh"))
        .arg(&archive)
        .output()
        .expect("running the script");
    assert!(
        built.status.success(),
        "busybox-image.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    archive
}

/// A data dir with the busybox image loaded, and a runtime over it whose
/// containers are all removed on drop (their overlays must be unmounted
/// before the folder goes).
pub struct Node {
    pub dir: tempfile::TempDir,
    pub runtime: Runtime,
}

impl Node {
    /// The runtime's cgroup parent is `{cgroup_tag}-{pid}`: one per test
    /// process, as tests run in parallel.
    pub fn start(cgroup_tag: &str) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let archive = busybox_archive(dir.path());
        let data = dir.path().join("data");
        let loaded = shoal(&[
            "image",
            "load",
            archive.to_str().expect("utf-8"),
            "--data-dir",
            data.to_str().expect("utf-8 temp dir"),
        ]);
        assert!(
            loaded.status.success(),
            "image load: {}",
            String::from_utf8_lossy(&loaded.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&loaded.stdout).trim(),
            "Loaded image: docker.io/library/busybox:latest"
        );
        let runtime = Runtime::new(&data)
            .expect("runtime")
            .with_shim(PathBuf::from(SHOAL), vec!["container-shim".into()])
            .with_cgroup_parent(&format!("{cgroup_tag}-{}", std::process::id()));
        Node { dir, runtime }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A busybox container `id` running `argv`.
    pub fn config(&self, id: &str, argv: &[&str]) -> ContainerConfig {
        ContainerConfig {
            id: id.to_string(),
            image: "busybox".to_string(),
            process: ContainerProcess {
                command: argv.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Starts a busybox container `id` running `sh -c script`.
    pub fn run(&self, id: &str, script: &str) {
        let config = self.config(id, &["sh", "-c", script]);
        self.runtime.create_and_start(&config).expect("start");
    }

    /// Waits for container `id` to exit: its code, whether it was
    /// OOM-killed, and its message.
    pub fn exited(&self, id: &str) -> (i32, bool, String) {
        match self
            .runtime
            .wait(id, Duration::from_secs(45))
            .expect("status")
        {
            Status::Exited {
                code,
                oom_killed,
                message,
                ..
            } => (code, oom_killed, message.unwrap_or_default()),
            other => panic!("container {id} did not exit: {other:?}"),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(containers) = self.runtime.list() {
            for c in containers {
                let _ = self.runtime.kill(&c.id, Signal::SIGKILL);
                let _ = self.runtime.wait(&c.id, Duration::from_secs(10));
                let _ = self.runtime.remove(&c.id);
            }
        }
        self.runtime.remove_cgroup_parent();
    }
}
