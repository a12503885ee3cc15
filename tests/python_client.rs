//! The official Python client (`kubernetes` from PyPI, installed by
//! `.ci/run` into a venv) against `shoal up`.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

use support::kube::ShoalUp;

#[test]
fn python_client_lists_creates_patches_and_watches_pods() {
    let python = support::venv_program("python");
    let up = ShoalUp::start();
    let script = format!("{}/../tests/python/pods.py", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .arg(script)
        .arg("default")
        .env("KUBECONFIG", &up.kubeconfig)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("created py-pod Pending Always"), "{stdout}");
    assert!(stdout.contains("conflict 409 Conflict"), "{stdout}");
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");
}
