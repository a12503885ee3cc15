//! Network namespaces kept alive by a bind mount on a file, as
//! `ip netns add` does, so that they outlive the thread that made them and
//! an OCI runtime can join one through its path (`runc`'s
//! `linux.namespaces[].path`):
//!
//! ```text
//!   thread: unshare(CLONE_NEWNET)            a new, empty namespace
//!           mount --bind /proc/thread-self/ns/net  <path>
//!   later:  open(<path>) + setns(CLONE_NEWNET)     on a dedicated thread
//!   delete: umount <path>; rm <path>           gone with its last user
//! ```
//!
//! A namespace belongs to a thread, not to a process, so everything that
//! enters one runs on a thread of its own that ends afterwards: never on a
//! tokio worker, which would stay in the pod's namespace and run unrelated
//! tasks there. Sockets (netlink included) stay in the namespace they were
//! created in, wherever they are used later.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating a network namespace: {0} (the agent needs root, CAP_SYS_ADMIN)")]
    Unshare(#[source] Errno),
    #[error("bind-mounting the new network namespace on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmounting the network namespace {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("entering the network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("starting a thread for network namespace {path}: {source}")]
    Thread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the thread working in network namespace {path} panicked")]
    ThreadPanicked { path: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Moves the calling thread into new network and mount namespaces, its
/// mounts private (nothing mounted there shows in the machine's mount
/// table): a node of its own, for tests and `shoal bench proxy`.
pub fn isolate_thread() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS).map_err(Error::Unshare)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|source| Error::Mount {
        path: PathBuf::from("/"),
        source,
    })
}

/// Whether `path` is a mounted network namespace (not just the empty file
/// it is mounted on, as left after a reboot).
pub fn is_mounted(path: &Path) -> bool {
    statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a new, empty network namespace (only `lo`, down) kept at
/// `path`. A namespace already mounted there is kept as it is.
pub async fn create(path: &Path) -> Result<()> {
    if is_mounted(path) {
        return Ok(());
    }
    let target = path.to_path_buf();
    on_own_thread(path, move || create_blocking(&target)).await?
}

fn create_blocking(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|source| Error::Io {
            what: "creating",
            path: dir.to_path_buf(),
            source,
        })?;
    }
    // The mount point: an empty file (a leftover from before a reboot is fine).
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|source| Error::Io {
            what: "creating",
            path: path.to_path_buf(),
            source,
        })?;
    // Only this thread moves to the new namespace; it ends right after.
    unshare(CloneFlags::CLONE_NEWNET).map_err(Error::Unshare)?;
    mount(
        Some("/proc/thread-self/ns/net"),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| Error::Mount {
        path: path.to_path_buf(),
        source,
    })
}

/// Unmounts and deletes the namespace file at `path`. The namespace itself
/// (and the pod end of its veth) goes away once no process is in it any
/// more. Nothing at `path` is not an error.
pub fn remove(path: &Path) -> Result<()> {
    // Mounted more than once (two racing creates): unmount every layer.
    for _ in 0..8 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            // Not a mount point (any more), or no file at all.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
            Err(source) => {
                return Err(Error::Unmount {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            what: "removing",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Runs `f` inside the network namespace at `path`, on a thread of its own
/// (blocking the caller until it is done). Sockets `f` creates live in that
/// namespace, also after `f` returns them.
pub fn run_in_blocking<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ns = open(path)?;
    let target = path.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("shoal-netns".to_string())
        .spawn(move || -> Result<R> {
            enter(&ns, &target)?;
            Ok(f())
        })
        .map_err(|source| Error::Thread {
            path: path.to_path_buf(),
            source,
        })?;
    thread.join().map_err(|_| Error::ThreadPanicked {
        path: path.to_path_buf(),
    })?
}

/// [`run_in_blocking`] for async callers: the tokio worker only awaits.
pub async fn run_in<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let ns = open(path)?;
    let target = path.to_path_buf();
    on_own_thread(path, move || -> Result<R> {
        enter(&ns, &target)?;
        Ok(f())
    })
    .await?
}

fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Io {
        what: "opening the network namespace",
        path: path.to_path_buf(),
        source,
    })
}

fn enter(ns: &File, path: &Path) -> Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `f` on a new thread (which ends with it) and awaits its result.
async fn on_own_thread<F, R>(path: &Path, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("shoal-netns".to_string())
        .spawn(move || {
            // The receiver only goes away if the caller stopped waiting.
            let _ = tx.send(f());
        })
        .map_err(|source| Error::Thread {
            path: path.to_path_buf(),
            source,
        })?;
    rx.await.map_err(|_| Error::ThreadPanicked {
        path: path.to_path_buf(),
    })
}
