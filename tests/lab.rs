//! The docker-compose lab and its chaos suite, as a user runs them: the
//! image built from this build's `shoal` (lab/build-image.sh), `docker-compose
//! up -d`, three Ready nodes, then every scenario of lab/chaos.sh with the
//! real kubectl and docker. The lab is removed afterwards, pass or fail.
//! Needs root and a Docker engine (CI has both).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::kube::KUBECTL;

const PROJECT: &str = "shoal-lab-test";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn compose(args: &[&str]) -> std::process::Output {
    Command::new("docker-compose")
        .args(args)
        .current_dir(repo())
        .env("COMPOSE_PROJECT_NAME", PROJECT)
        .output()
        .expect("docker-compose (apt-get install docker-compose)")
}

/// Takes the lab down (volumes included) when the test ends, however.
struct Lab;

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = compose(&["down", "-v", "--remove-orphans"]);
    }
}

#[test]
fn the_lab_comes_up_and_passes_the_chaos_suite() {
    let docker = Command::new("docker").arg("info").output();
    if !docker.is_ok_and(|o| o.status.success()) {
        assert!(
            !support::in_ci(),
            "the lab needs a Docker engine under CI=true"
        );
        eprintln!("skipped: no Docker engine");
        return;
    }
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let built = Command::new(repo().join("lab/build-image.sh"))
        .arg(shoal)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let _lab = Lab;
    let _ = compose(&["down", "-v", "--remove-orphans"]);
    let up = compose(&["up", "-d"]);
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let chaos = Command::new(repo().join("lab/chaos.sh"))
        .current_dir(repo())
        .env("COMPOSE_PROJECT_NAME", PROJECT)
        .env("KUBECTL", KUBECTL)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&chaos.stdout);
    let log = String::from_utf8_lossy(&chaos.stderr);
    eprintln!("{table}");
    if !chaos.status.success() {
        let logs = compose(&["logs", "--tail", "30"]);
        panic!(
            "the chaos suite failed:\n{table}\n{log}\n{}",
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    for scenario in [
        "node-killed",
        "node-partitioned",
        "store-leader-killed",
        "store-member-wiped",
        "apiserver-killed",
        "lab-restarted",
        "workloads",
        "network-dns",
        "overlay-peer-lost",
        "service-by-name",
    ] {
        assert!(table.contains(&format!("| {scenario} |")), "{table}");
    }
    assert!(!table.contains("FAIL"), "{table}");
}
