//! What the overlay's root-only suites share: whether they may run here.

/// Effective uid 0, from /proc.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// True as root. Otherwise says why the test does not run and returns
/// false, or under `CI=true` (where a test that cannot run must fail)
/// panics.
pub fn may_run(needs: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
        "cannot run without root under CI=true: {needs}"
    );
    eprintln!("skipped: {needs}");
    false
}
