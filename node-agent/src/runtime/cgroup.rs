//! Cgroups of a container. runc creates (and removes, as soon as the
//! container exits) the container's own cgroup `<parent>/<id>/ctr` and
//! applies the CPU settings there; the memory limit lives one level up,
//! on `<parent>/<id>`, a cgroup the shim owns. That is how the shim can
//! still read whether the kernel OOM-killed the container after runc has
//! removed the container's cgroup: on cgroup v1 the `oom_kill` counter of
//! `memory.oom_control` is kept only in the cgroup whose limit was hit,
//! not in its ancestors, and it is counted in the *victim's* cgroup (the
//! one runc removes), so on v1 the shim also registers an eventfd for OOM
//! notifications of the shim-owned cgroup (`cgroup.event_control`), which
//! the kernel signals when that cgroup's limit triggers the OOM killer. On
//! v2 `memory.events` counts kills hierarchically. Works on v1, hybrid (v1
//! controllers) and v2.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// CFS period Kubernetes uses (100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
const MIN_QUOTA_US: i64 = 1_000;
const MIN_SHARES: u64 = 2;
const MAX_SHARES: u64 = 262_144;
const SHARES_PER_CPU: u64 = 1_024;

/// kubelet's `MilliCPUToShares`: a request of 0 (or none) gets the
/// minimum, 2.
pub fn milli_cpu_to_shares(milli: u64) -> u64 {
    if milli == 0 {
        return MIN_SHARES;
    }
    (milli.saturating_mul(SHARES_PER_CPU) / 1000).clamp(MIN_SHARES, MAX_SHARES)
}

/// kubelet's `MilliCPUToQuota` for the period above: None (no limit) for
/// 0, at least 1 ms.
pub fn milli_cpu_to_quota(milli: u64) -> Option<i64> {
    if milli == 0 {
        return None;
    }
    let quota = i64::try_from(milli.saturating_mul(CPU_PERIOD_US) / 1000).unwrap_or(i64::MAX);
    Some(quota.max(MIN_QUOTA_US))
}

/// Which cgroup hierarchy this machine mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1 (or hybrid): one hierarchy per controller under the root.
    V1 { root: PathBuf },
    /// v2: one unified hierarchy.
    V2 { root: PathBuf },
}

impl Layout {
    pub fn detect() -> Layout {
        let root = PathBuf::from("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            Layout::V2 { root }
        } else {
            Layout::V1 { root }
        }
    }

    /// The shim-owned cgroup `<parent>/<id>` in the memory hierarchy.
    fn memory_dir(&self, rel: &str) -> PathBuf {
        match self {
            Layout::V1 { root } => root.join("memory").join(rel),
            Layout::V2 { root } => root.join(rel),
        }
    }

    /// Creates `rel` (e.g. `shoal/<id>`) and sets its memory limit.
    pub fn create(&self, rel: &str, memory_limit: Option<u64>) -> io::Result<()> {
        let dir = self.memory_dir(rel);
        if let Layout::V2 { root } = self {
            // Controllers must be enabled in every ancestor for the child
            // to get them; runc does the same below this.
            let mut at = root.clone();
            for part in Path::new(rel).iter() {
                let _ = fs::write(at.join("cgroup.subtree_control"), "+memory +cpu +pids");
                at.push(part);
                fs::create_dir_all(&at)?;
            }
            let _ = fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids");
        }
        fs::create_dir_all(&dir)?;
        if let Some(limit) = memory_limit {
            match self {
                Layout::V1 { .. } => {
                    fs::write(dir.join("memory.limit_in_bytes"), limit.to_string())?;
                    // With swap accounting, swap must not extend the limit.
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        fs::write(memsw, limit.to_string())?;
                    }
                }
                Layout::V2 { .. } => {
                    fs::write(dir.join("memory.max"), limit.to_string())?;
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        fs::write(swap, "0")?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts listening for OOM notifications of `rel` (v1 only; v2 counts
    /// kills in `memory.events`, see [`Layout::oom_kills`]).
    pub fn watch_oom(&self, rel: &str) -> io::Result<Option<OomWatch>> {
        use std::os::fd::AsRawFd;
        let Layout::V1 { .. } = self else {
            return Ok(None);
        };
        let dir = self.memory_dir(rel);
        let control = fs::File::open(dir.join("memory.oom_control"))?;
        let efd = nix::sys::eventfd::EventFd::from_value_and_flags(
            0,
            nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
        )?;
        fs::write(
            dir.join("cgroup.event_control"),
            format!("{} {}", efd.as_raw_fd(), control.as_raw_fd()),
        )?;
        Ok(Some(OomWatch {
            efd,
            _control: control,
        }))
    }

    /// How many processes the kernel OOM-killed in `rel`.
    pub fn oom_kills(&self, rel: &str) -> u64 {
        let dir = self.memory_dir(rel);
        let file = match self {
            Layout::V1 { .. } => dir.join("memory.oom_control"),
            Layout::V2 { .. } => dir.join("memory.events"),
        };
        fs::read_to_string(file)
            .map(|text| parse_oom_kill(&text))
            .unwrap_or(0)
    }

    /// What the processes of `rel` (and below) have used: CPU time so far
    /// and the memory working set as the kubelet computes it (usage minus
    /// inactive file pages). None when the cgroup is gone.
    pub fn usage(&self, rel: &str) -> Option<Usage> {
        match self {
            Layout::V1 { root } => {
                let cpu_ns = read_u64(&root.join("cpuacct").join(rel).join("cpuacct.usage"))?;
                let memory = root.join("memory").join(rel);
                let used = read_u64(&memory.join("memory.usage_in_bytes"))?;
                let stat = fs::read_to_string(memory.join("memory.stat")).unwrap_or_default();
                let inactive = stat_value(&stat, "total_inactive_file").unwrap_or(0);
                Some(Usage {
                    cpu_ns,
                    working_set: used.saturating_sub(inactive),
                })
            }
            Layout::V2 { root } => {
                let dir = root.join(rel);
                let cpu = fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let cpu_ns = stat_value(&cpu, "usage_usec")?.saturating_mul(1000);
                let used = read_u64(&dir.join("memory.current"))?;
                let stat = fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                let inactive = stat_value(&stat, "inactive_file").unwrap_or(0);
                Some(Usage {
                    cpu_ns,
                    working_set: used.saturating_sub(inactive),
                })
            }
        }
    }

    /// Removes `rel` (and what runc left below it) from every hierarchy.
    pub fn remove(&self, rel: &str) {
        let roots: Vec<PathBuf> = match self {
            Layout::V2 { root } => vec![root.clone()],
            Layout::V1 { root } => fs::read_dir(root)
                .map(|entries| entries.flatten().map(|e| e.path()).collect())
                .unwrap_or_default(),
        };
        for root in roots {
            let dir = root.join(rel);
            let _ = fs::remove_dir(dir.join("ctr"));
            let _ = fs::remove_dir(&dir);
        }
    }
}

/// A cgroup's use of the machine, as [`Layout::usage`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU time, cumulative (rates come from two readings).
    pub cpu_ns: u64,
    /// Bytes of memory the kernel could not reclaim at once.
    pub working_set: u64,
}

fn read_u64(path: &Path) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The value of `key` in a `memory.stat`/`cpu.stat` text (`key value` lines).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// An eventfd the kernel signals when a v1 memory cgroup goes OOM.
pub struct OomWatch {
    efd: nix::sys::eventfd::EventFd,
    _control: fs::File,
}

impl OomWatch {
    /// Has the cgroup gone OOM since the watch started? (Call before the
    /// cgroup is removed: removal signals the eventfd too.)
    pub fn fired(&self) -> bool {
        self.efd.read().is_ok_and(|n| n > 0)
    }
}

/// The `oom_kill N` line of `memory.oom_control` (v1) or `memory.events`
/// (v2).
pub fn parse_oom_kill(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_conversions_match_kubelet() {
        assert_eq!(milli_cpu_to_shares(0), 2);
        assert_eq!(milli_cpu_to_shares(1), 2);
        assert_eq!(milli_cpu_to_shares(100), 102);
        assert_eq!(milli_cpu_to_shares(250), 256);
        assert_eq!(milli_cpu_to_shares(1000), 1024);
        assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
        assert_eq!(milli_cpu_to_quota(0), None);
        assert_eq!(milli_cpu_to_quota(5), Some(1000));
        assert_eq!(milli_cpu_to_quota(250), Some(25_000));
        assert_eq!(milli_cpu_to_quota(1500), Some(150_000));
    }

    #[test]
    fn stat_files_parse() {
        let stat = "cache 4096\ntotal_inactive_file 8192\ninactive_file 100\n";
        assert_eq!(stat_value(stat, "total_inactive_file"), Some(8192));
        assert_eq!(stat_value(stat, "inactive_file"), Some(100));
        assert_eq!(stat_value(stat, "missing"), None);
        assert_eq!(
            stat_value("usage_usec 12\nuser_usec 3\n", "usage_usec"),
            Some(12)
        );
    }

    #[test]
    fn oom_kill_counters_parse() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n"),
            1
        );
        assert_eq!(parse_oom_kill("garbage"), 0);
    }
}
