//! Pod addresses from the node's range, one file per allocation, as CNI's
//! `host-local` plugin keeps them:
//!
//! ```text
//!   <dir>/10.244.1.2          contents: the sandbox id
//!   <dir>/10.244.1.3
//!   <dir>/last_reserved_ip    where the next search starts
//! ```
//!
//! The files are the only state, so an agent that restarts finds every
//! address still in use and never hands one out twice. A file is written
//! under a temporary name and then hard-linked to its address: the link is
//! atomic and fails if the address is taken, even by another process, and
//! an allocation file never exists half-written while the machine runs.
//! As in `host-local`, nothing is synced to disk: a pod's network does not
//! survive a power loss either, and syncing under the allocation lock
//! made every pod start wait for the disk, one after another. An empty
//! allocation file, all a power loss can leave, is removed on open.
//!
//! The search starts after the last address handed out and wraps around
//! ([`pick`]), so an address just released is the last to be reused: a
//! new pod does not inherit the ARP entries and connections of the old one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::cidr::Ipv4Cidr;

/// File holding the address handed out last.
const LAST_RESERVED: &str = "last_reserved_ip";
/// Prefix of files being written; leftovers of a crash are removed on open.
const TMP_PREFIX: &str = ".tmp-";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no free pod address in {range}: all {capacity} are allocated")]
    Exhausted { range: Ipv4Cidr, capacity: u64 },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The next free pod address of `range`: the first one after `last` (in
/// address order, wrapping around) that is not in `used`; from the start
/// of the range without a `last` (or one outside the range).
pub fn pick(
    range: &Ipv4Cidr,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let start = last.filter(|l| range.contains(*l));
    let after = range
        .pod_addresses()
        .skip_while(|a| start.is_some_and(|s| *a <= s));
    let before = range
        .pod_addresses()
        .take_while(|a| start.is_some_and(|s| *a <= s));
    after.chain(before).find(|a| !used.contains(a))
}

/// The allocations of one node range, kept in one directory.
#[derive(Debug)]
pub struct Ipam {
    dir: PathBuf,
    range: Ipv4Cidr,
    /// Serialises this process's allocations (the hard link guards against
    /// other processes).
    lock: Mutex<()>,
}

impl Ipam {
    /// Opens (creating it if needed) the allocation directory for `range`
    /// and removes files a crash left half-written.
    pub fn open(dir: impl Into<PathBuf>, range: Ipv4Cidr) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err("reading", &dir))? {
            let entry = entry.map_err(io_err("reading", &dir))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            let empty_claim = name.parse::<Ipv4Addr>().is_ok()
                && fs::read_to_string(&path).is_ok_and(|id| id.trim().is_empty());
            if name.starts_with(TMP_PREFIX) || empty_claim {
                remove_if_present(&path)?;
            }
        }
        Ok(Self {
            dir,
            range,
            lock: Mutex::new(()),
        })
    }

    pub fn range(&self) -> Ipv4Cidr {
        self.range
    }

    /// Every allocation on disk, address → sandbox id, including addresses
    /// outside the current range (left from a range the node had before).
    pub fn allocations(&self) -> Result<BTreeMap<Ipv4Addr, String>> {
        let mut out = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("reading", &self.dir))? {
            let entry = entry.map_err(io_err("reading", &self.dir))?;
            let Some(address) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            match fs::read_to_string(&path) {
                Ok(id) => {
                    out.insert(address, id.trim().to_string());
                }
                // Released between the listing and the read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("reading", &path)(e)),
            }
        }
        Ok(out)
    }

    /// The address allocated to `sandbox_id` in the current range.
    pub fn lookup(&self, sandbox_id: &str) -> Result<Option<Ipv4Addr>> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|(a, id)| id == sandbox_id && self.range.contains(*a))
            .map(|(a, _)| a))
    }

    /// An address for `sandbox_id`: the one it already has (so a retried
    /// sandbox creation keeps its address), else the next free one.
    pub fn allocate(&self, sandbox_id: &str) -> Result<Ipv4Addr> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let allocations = self.allocations()?;
        let mut used = BTreeSet::new();
        for (address, id) in &allocations {
            if id == sandbox_id {
                if self.range.contains(*address) {
                    return Ok(*address);
                }
                // From an earlier range of this node: useless now.
                remove_if_present(&self.dir.join(address.to_string()))?;
            } else {
                used.insert(*address);
            }
        }
        let last = self.last_reserved();
        loop {
            let Some(address) = pick(&self.range, &used, last) else {
                return Err(Error::Exhausted {
                    range: self.range,
                    capacity: self.range.pod_capacity(),
                });
            };
            if self.claim(address, sandbox_id)? {
                self.write_last_reserved(address);
                return Ok(address);
            }
            // Taken by another process since we listed.
            used.insert(address);
        }
    }

    /// Frees every address held by `sandbox_id`; returns them.
    pub fn release(&self, sandbox_id: &str) -> Result<Vec<Ipv4Addr>> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut released = Vec::new();
        for (address, id) in self.allocations()? {
            if id == sandbox_id {
                remove_if_present(&self.dir.join(address.to_string()))?;
                released.push(address);
            }
        }
        Ok(released)
    }

    /// Writes the allocation file for `address`; false if it already exists.
    fn claim(&self, address: Ipv4Addr, sandbox_id: &str) -> Result<bool> {
        // Unique among this process's threads and other processes.
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
        let target = self.dir.join(address.to_string());
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(sandbox_id.as_bytes())?;
            f.write_all(b"\n")
        };
        write().map_err(io_err("writing", &tmp))?;
        let linked = fs::hard_link(&tmp, &target);
        remove_if_present(&tmp)?;
        match linked {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_err("creating", &target)(e)),
        }
    }

    fn last_reserved(&self) -> Option<Ipv4Addr> {
        fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Only a hint for the search order: a failure to write it is harmless.
    fn write_last_reserved(&self, address: Ipv4Addr) {
        let path = self.dir.join(LAST_RESERVED);
        if let Err(e) = fs::write(&path, format!("{address}\n")) {
            tracing::warn!(path = %path.display(), error = %e, "could not record the last reserved address");
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("removing", path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    fn ip(d: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, 1, d)
    }

    #[test]
    fn pick_starts_at_the_first_pod_address() {
        let r = range("10.244.1.0/24");
        assert_eq!(pick(&r, &BTreeSet::new(), None), Some(ip(2)));
        assert_eq!(pick(&r, &BTreeSet::from([ip(2), ip(3)]), None), Some(ip(4)));
    }

    #[test]
    fn pick_continues_after_the_last_and_wraps_around() {
        let r = range("10.244.1.0/24");
        assert_eq!(pick(&r, &BTreeSet::new(), Some(ip(7))), Some(ip(8)));
        // The one just released (7) is the last candidate.
        assert_eq!(pick(&r, &BTreeSet::from([ip(8)]), Some(ip(7))), Some(ip(9)));
        assert_eq!(pick(&r, &BTreeSet::new(), Some(ip(254))), Some(ip(2)));
        let all_but_7: BTreeSet<_> = r.pod_addresses().filter(|a| *a != ip(7)).collect();
        assert_eq!(pick(&r, &all_but_7, Some(ip(7))), Some(ip(7)));
        // A last address from another range is ignored.
        assert_eq!(
            pick(&r, &BTreeSet::new(), Some(Ipv4Addr::new(10, 244, 9, 9))),
            Some(ip(2))
        );
    }

    #[test]
    fn pick_finds_nothing_in_a_full_range() {
        let r = range("10.244.1.0/24");
        let all: BTreeSet<_> = r.pod_addresses().collect();
        assert_eq!(pick(&r, &all, None), None);
        assert_eq!(pick(&r, &all, Some(ip(100))), None);
        assert_eq!(pick(&range("10.0.0.0/31"), &BTreeSet::new(), None), None);
    }

    #[test]
    fn allocations_are_unique_kept_on_disk_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!((a, b), (ip(2), ip(3)));
        // The same id keeps its address.
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);
        assert_eq!(
            fs::read_to_string(dir.path().join("10.244.1.2")).unwrap(),
            "pod-a\n"
        );

        // A restarted agent (a new Ipam on the same directory) sees them.
        drop(ipam);
        let ipam = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        assert_eq!(ipam.lookup("pod-b").unwrap(), Some(b));
        assert_eq!(ipam.allocate("pod-c").unwrap(), ip(4));

        assert_eq!(ipam.release("pod-b").unwrap(), vec![b]);
        assert_eq!(ipam.lookup("pod-b").unwrap(), None);
        assert!(ipam.release("pod-b").unwrap().is_empty());
        // Released addresses are reused last.
        assert_eq!(ipam.allocate("pod-d").unwrap(), ip(5));
        assert_eq!(
            ipam.allocations().unwrap(),
            BTreeMap::from([
                (ip(2), "pod-a".to_string()),
                (ip(4), "pod-c".to_string()),
                (ip(5), "pod-d".to_string()),
            ])
        );
    }

    #[test]
    fn a_full_range_is_a_clear_error_until_an_address_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        let mut seen = BTreeSet::new();
        for i in 0..253 {
            assert!(seen.insert(ipam.allocate(&format!("pod-{i}")).unwrap()));
        }
        let err = ipam.allocate("one-too-many").unwrap_err();
        assert!(
            matches!(err, Error::Exhausted { capacity: 253, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "no free pod address in 10.244.1.0/24: all 253 are allocated"
        );
        ipam.release("pod-17").unwrap();
        assert_eq!(ipam.allocate("one-too-many").unwrap(), ip(19));
    }

    #[test]
    fn a_changed_range_moves_a_sandbox_and_ignores_old_allocations() {
        let dir = tempfile::tempdir().unwrap();
        let old = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        old.allocate("pod-a").unwrap();
        let new = Ipam::open(dir.path(), range("10.244.2.0/24")).unwrap();
        assert_eq!(new.lookup("pod-a").unwrap(), None);
        assert_eq!(new.allocate("pod-a").unwrap(), Ipv4Addr::new(10, 244, 2, 2));
        assert_eq!(new.allocations().unwrap().len(), 1);
    }

    #[test]
    fn leftovers_of_a_crash_are_cleaned_and_foreign_files_ignored() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-10.244.1.2-1"), "half").unwrap();
        fs::write(dir.path().join("README"), "not an address").unwrap();
        // What a power loss can leave of a claim: the name, no content.
        fs::write(dir.path().join("10.244.1.3"), "").unwrap();
        fs::write(dir.path().join("10.244.1.4"), "pod-b\n").unwrap();
        let ipam = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        assert!(!dir.path().join(".tmp-10.244.1.2-1").exists());
        assert!(!dir.path().join("10.244.1.3").exists());
        assert!(dir.path().join("README").exists());
        assert_eq!(
            ipam.allocations().unwrap(),
            BTreeMap::from([(ip(4), "pod-b".to_string())])
        );
        assert_eq!(ipam.allocate("pod-a").unwrap(), ip(2));
    }

    #[test]
    fn concurrent_allocations_never_share_an_address() {
        let dir = tempfile::tempdir().unwrap();
        // Two Ipams on one directory stand for two processes.
        let one = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        let two = Ipam::open(dir.path(), range("10.244.1.0/24")).unwrap();
        let got: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let ipam = if t % 2 == 0 { &one } else { &two };
                    s.spawn(move || {
                        (0..20)
                            .map(|i| ipam.allocate(&format!("pod-{t}-{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: BTreeSet<_> = got.iter().collect();
        assert_eq!(unique.len(), 160);
        assert_eq!(one.allocations().unwrap().len(), 160);
    }
}
