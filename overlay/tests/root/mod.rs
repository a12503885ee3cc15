//! What the overlay's root-only suites share: whether they may run here.

/// True as root. Otherwise says why the test does not run and returns
/// false, or under `CI=true` (where a test that cannot run must fail)
/// panics.
pub fn may_run(needs: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "cannot run without root under CI=true: {needs}"
    );
    eprintln!("skipped: {needs}");
    false
}
