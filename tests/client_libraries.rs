//! Client libraries other than kubectl and the official Python client,
//! against `shoal up` with its node agent (for logs): lightkube
//! (hand-written, synchronous) and kubernetes_asyncio (generated,
//! asynchronous), both from PyPI, installed by `.ci/run` into the venv.
//! Needs root, as every suite with real pods.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::process::Command;

use support::kube::ShoalUp;

/// Runs `tests/python/<script>` against a cluster with a Ready node and
/// returns what it printed; it fails the test if the script does.
fn run(script: &str) -> String {
    if !node::is_root() {
        assert!(
            !node::in_ci(),
            "cannot run without root under CI=true: {}",
            node::PODS_NEED_ROOT
        );
        eprintln!("skipped: {}", node::PODS_NEED_ROOT);
        return String::new();
    }
    let python = support::venv_program("python");
    let up = ShoalUp::with_ready_agent(&[]);
    let path = format!("{}/../tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(path)
        .arg("default")
        .env("KUBECONFIG", &up.kubeconfig)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", up.log());
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
    stdout
}

#[test]
fn lightkube_lists_patches_applies_watches_scales_and_reads_logs() {
    let out = run("lightkube_client.py");
    if out.is_empty() {
        return;
    }
    // No fieldManager: recorded under the User-Agent's first part
    // (lightkube sends its HTTP library's, `python-httpx…/<version>`).
    assert!(out.contains("created lk managers ['python-httpx"), "{out}");
    assert!(out.contains("conflict 409 Conflict"), "{out}");
    assert!(out.contains("logs ['hello from lightkube\\n']"), "{out}");
}

#[test]
fn kubernetes_asyncio_lists_patches_applies_watches_scales_and_reads_logs() {
    let out = run("asyncio_client.py");
    if out.is_empty() {
        return;
    }
    assert!(
        out.contains("created aio managers ['OpenAPI-Generator']"),
        "{out}"
    );
    assert!(out.contains("scaled 3"), "{out}");
    assert!(out.contains("logs 'hello from asyncio\\n'"), "{out}");
}
