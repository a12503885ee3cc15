//! The container runtime: one container = one OCI bundle run by `runc`,
//! watched by a small shim process that outlives the agent.
//!
//! ```text
//!  Runtime::create_and_start(config)
//!    image store ──► rootfs/<image> (flattened, read-only lower)
//!    mount overlay  lower + containers/<id>/{upper,work} ──► containers/<id>/rootfs
//!    write containers/<id>/config.json (spec.rs, oci-spec)
//!    create cgroup <parent>/<id> (memory limit, see cgroup.rs)
//!    spawn `shoal-container-shim <dir>` ──► shim (own process group)
//!        runc --root <data>/runc run --bundle <dir> --pid-file ... <id>
//!        stdout/stderr ──► log file, CRI format (log.rs)
//!        pid file seen  ──► started.json {pid, started_at}
//!        runc exits     ──► exit.json {code, oom_killed, finished_at}
//! ```
//!
//! Everything the runtime knows lives in files under
//! `<data-dir>/containers/<id>/`, so a new [`Runtime`] on the same data dir
//! (an agent restarted while its containers run) finds every container
//! with [`Runtime::list`] and reads their state as the first one did.
//! Exit codes are runc's: the process's code, or 128 + the signal that
//! killed it (137 for SIGKILL, 143 for SIGTERM), as Kubernetes reports
//! them; a container that could not start at all gets 128 and runc's
//! error as its message (Kubernetes' `StartError`).

pub mod cgroup;
pub mod exec;
pub mod log;
pub mod process;
pub mod shim;
pub mod spec;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::image::{self, unpack::resolve_in_root, ImageStore};
pub use exec::{AttachSession, ExecOutput, ExecRequest, ExecSession};
pub use nix::sys::signal::Signal;
pub use process::{ContainerProcess, MergeError, ProcessSpec};
pub use spec::{BindMount, Network};

/// The shim as a program of its own (`src/bin/shoal-container-shim.rs`).
pub const SHIM_PROGRAM: &str = "shoal-container-shim";
/// How long `create_and_start` waits for runc to start the process.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a starting container's shim may look gone before it is.
const UNKNOWN_GRACE: Duration = Duration::from_millis(500);
/// Stack of the thread that waits for a shim (it only calls `wait`).
const REAPER_STACK: usize = 64 * 1024;

/// What the runtime can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the container runtime needs root (runc, mounts, cgroups); this process runs as uid {uid}"
    )]
    NotRoot { uid: u32 },
    #[error("runc not found (looked for {looked_for}); install Debian's runc package")]
    RuncMissing { looked_for: String },
    #[error("invalid container id {0:?}: want [A-Za-z0-9][A-Za-z0-9_.-]*, at most 128 characters")]
    InvalidId(String),
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("no container {0:?}")]
    NotFound(String),
    #[error("container {0:?} is still running")]
    StillRunning(String),
    #[error("container not running ({0})")]
    NotRunning(String),
    #[error("no command specified")]
    EmptyCommand,
    #[error("container {0} was created without stdin or a tty: nothing to attach to")]
    NotAttachable(String),
    #[error(transparent)]
    Image(#[from] image::Error),
    #[error(transparent)]
    Process(#[from] MergeError),
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("path {0} cannot be used in an overlay mount (it has a ',' or ':')")]
    UnusablePath(PathBuf),
    #[error("mounting the overlay at {target}: {source}")]
    Mount {
        target: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("container {id}: starting the shim: {message}")]
    ShimFailed { id: String, message: String },
    #[error("container {id} failed to start: {message}")]
    StartFailed { id: String, message: String },
    #[error("container {id}: runc did not start it within {seconds} s")]
    StartTimeout { id: String, seconds: u64 },
    #[error("runc {command}: {message}")]
    Runc { command: String, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    let context = context.to_string();
    move |source| Error::Io { context, source }
}

/// A container to run.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// Unique on this node; names the bundle, the runc container and the
    /// cgroup.
    pub id: String,
    /// An image reference the image store resolves (`busybox`, an id).
    pub image: String,
    pub process: ContainerProcess,
    /// Ignored with the host network (the host's UTS namespace is kept).
    pub hostname: Option<String>,
    pub network: Network,
    pub mounts: Vec<BindMount>,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    /// Default: `<data-dir>/containers/<id>/container.log`.
    pub log_path: Option<PathBuf>,
    /// Give the process a terminal (its output then goes to the log as
    /// stdout); attachable with [`Runtime::attach`].
    pub tty: bool,
    /// Keep the process's stdin open for attached clients (else it reads
    /// nothing); attachable with [`Runtime::attach`].
    pub stdin: bool,
    /// Close stdin when the first attached client detaches.
    pub stdin_once: bool,
    /// Rotate the log when it would grow past this (`None`: never).
    pub log_max_bytes: Option<u64>,
    /// Log files kept in all, the current one included (0: 5).
    pub log_max_files: u32,
}

/// A started container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handle {
    pub id: String,
    pub pid: i32,
    pub started_at: jiff::Timestamp,
    pub log_path: PathBuf,
}

/// Where a container is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The shim runs; runc has not started the process yet.
    Created,
    Running {
        pid: i32,
        started_at: jiff::Timestamp,
    },
    Exited {
        code: i32,
        oom_killed: bool,
        /// None when it never started (then `message` says why).
        started_at: Option<jiff::Timestamp>,
        finished_at: jiff::Timestamp,
        message: Option<String>,
    },
    /// The shim is gone without recording an exit (killed, machine
    /// rebooted): what happened to the process is not known.
    Unknown { message: String },
}

/// A container as [`Runtime::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub image_id: String,
    pub log_path: PathBuf,
    pub created_at: jiff::Timestamp,
    pub status: Status,
}

/// `record.json`: what the runtime itself remembers of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    id: String,
    image: String,
    image_id: String,
    log_path: PathBuf,
    created_at: String,
    cgroup: String,
}

/// `shim.json`: what the shim needs to run a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShimConfig {
    pub id: String,
    pub runc: PathBuf,
    pub runc_root: PathBuf,
    pub log_path: PathBuf,
    pub cgroup: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    /// Log rotation: size of the current file, files kept in all.
    #[serde(default)]
    pub log_max_bytes: Option<u64>,
    #[serde(default = "default_log_files")]
    pub log_max_files: u32,
}

fn default_log_files() -> u32 {
    5
}

/// `started.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Started {
    pub pid: i32,
    pub started_at: String,
}

/// `exit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Exited {
    pub code: i32,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: String,
    pub message: Option<String>,
}

/// Names of the files in a container's folder.
pub(crate) mod files {
    pub const SHIM_CONFIG: &str = "shim.json";
    pub const RECORD: &str = "record.json";
    pub const SHIM_PID: &str = "shim.pid";
    pub const CONTAINER_PID: &str = "container.pid";
    pub const STARTED: &str = "started.json";
    pub const EXITED: &str = "exit.json";
    pub const SHIM_LOG: &str = "shim.log";
    /// The shim's attach socket (containers with stdin or a tty).
    pub const ATTACH_SOCKET: &str = "attach.sock";
}

/// Writes `value` as JSON to `path` atomically (a reader never sees half).
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(value).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

fn parse_time(text: &str) -> jiff::Timestamp {
    text.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

/// `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters.
pub fn valid_id(id: &str) -> bool {
    id.len() <= 128
        && id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Is the shim of the container in `dir` alive? (Its command line names
/// the folder, which guards against a recycled pid.)
fn shim_alive(dir: &Path) -> bool {
    let Some(pid) = fs::read_to_string(dir.join(files::SHIM_PID))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let needle = dir.as_os_str().as_encoded_bytes();
    // A zombie has an empty command line: not alive.
    cmdline.windows(needle.len()).any(|w| w == needle)
}

/// The runc binary: `$PATH`'s, else the usual places.
fn find_runc() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/usr/local/sbin",
                "/usr/local/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join("runc"))
        .find(|p| p.is_file())
}

/// Runs a runtime operation, counted and timed in the agent's `/metrics`
/// (`kubelet_runtime_operations_*` by `operation_type`).
fn timed<T>(operation_type: &'static str, run: impl FnOnce() -> Result<T>) -> Result<T> {
    let started = Instant::now();
    let result = run();
    crate::metrics::operation(operation_type, started, result.is_ok());
    result
}

/// The runtime of one node, over `<data-dir>`.
#[derive(Debug, Clone)]
pub struct Runtime {
    data_dir: PathBuf,
    images: ImageStore,
    runc: PathBuf,
    shim: (PathBuf, Vec<OsString>),
    cgroup_parent: String,
    layout: cgroup::Layout,
}

impl Runtime {
    /// A runtime over `data_dir` (images in `images/`, containers in
    /// `containers/`, runc's state in `runc/`). Needs root and runc. The
    /// shim is the [`SHIM_PROGRAM`] beside this executable, else this
    /// executable's `container-shim` subcommand, unless
    /// [`Runtime::with_shim`] says otherwise.
    pub fn new(data_dir: &Path) -> Result<Runtime> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(Error::NotRoot { uid: uid.as_raw() });
        }
        let runc = find_runc().ok_or_else(|| Error::RuncMissing {
            looked_for: "runc on PATH, /usr/sbin, /usr/bin, /sbin, /usr/local/sbin, /usr/local/bin"
                .into(),
        })?;
        for sub in ["containers", "runc"] {
            let path = data_dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        }
        let data_dir = fs::canonicalize(data_dir)
            .map_err(io_err(format!("resolving {}", data_dir.display())))?;
        let exe = std::env::current_exe().map_err(io_err("finding this executable"))?;
        // The small shim program beside this one, else our own subcommand.
        let shim = match exe.parent().map(|d| d.join(SHIM_PROGRAM)) {
            Some(small) if small.is_file() => (small, Vec::new()),
            _ => (exe, vec!["container-shim".into()]),
        };
        Ok(Runtime {
            images: ImageStore::open(&data_dir)?,
            data_dir,
            runc,
            shim,
            cgroup_parent: "shoal".into(),
            layout: cgroup::Layout::detect(),
        })
    }

    /// Runs the shim as `program args... <container-dir>`.
    pub fn with_shim(mut self, program: PathBuf, args: Vec<OsString>) -> Runtime {
        self.shim = (program, args);
        self
    }

    pub fn with_runc(mut self, runc: PathBuf) -> Runtime {
        self.runc = runc;
        self
    }

    /// Containers' cgroups go under `/<parent>/<id>` (default `shoal`).
    pub fn with_cgroup_parent(mut self, parent: &str) -> Runtime {
        self.cgroup_parent = parent.trim_matches('/').to_string();
        self
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(Error::InvalidId(id.to_string()));
        }
        Ok(self.data_dir.join("containers").join(id))
    }

    /// Creates the container and starts its process; returns once runc
    /// has started it (or failed to).
    pub fn create_and_start(&self, config: &ContainerConfig) -> Result<Handle> {
        timed("start_container", || self.start_container(config))
    }

    fn start_container(&self, config: &ContainerConfig) -> Result<Handle> {
        let dir = self.container_dir(&config.id)?;
        if dir.exists() {
            return Err(Error::AlreadyExists(config.id.clone()));
        }
        let image = self.images.resolve(&config.image)?;
        let read_image_file = |rel: &str| -> String {
            resolve_in_root(&image.rootfs, Path::new(rel))
                .ok()
                .filter(|p| p.symlink_metadata().is_ok_and(|m| m.is_file()))
                .and_then(|p| fs::read_to_string(p).ok())
                .unwrap_or_default()
        };
        let hostname = match config.network {
            Network::Host => None,
            Network::Join(_) => config.hostname.as_deref(),
        };
        let process = process::merge(
            &image.config,
            &config.process,
            hostname,
            &read_image_file("etc/passwd"),
            &read_image_file("etc/group"),
        )?;
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for path in [&image.rootfs, &upper, &work] {
            if path.to_string_lossy().contains([',', ':']) {
                return Err(Error::UnusablePath(path.clone()));
            }
        }
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // From here on a failure must undo what was done.
        let result = self.create_in(config, &dir, &image, &process, hostname);
        if result.is_err() && !shim_alive(&dir) && !dir.join(files::EXITED).exists() {
            self.cleanup(&config.id, &dir);
        }
        result
    }

    fn create_in(
        &self,
        config: &ContainerConfig,
        dir: &Path,
        image: &image::Image,
        process: &ProcessSpec,
        hostname: Option<&str>,
    ) -> Result<Handle> {
        let rootfs = dir.join("rootfs");
        let (upper, work) = (dir.join("upper"), dir.join("work"));
        for path in [&rootfs, &upper, &work] {
            fs::create_dir_all(path).map_err(io_err(format!("creating {}", path.display())))?;
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            image.rootfs.display(),
            upper.display(),
            work.display()
        );
        nix::mount::mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| Error::Mount {
            target: rootfs.clone(),
            source,
        })?;
        let cgroup = format!("{}/{}", self.cgroup_parent, config.id);
        let spec = spec::build(&spec::SpecInput {
            process,
            rootfs: &rootfs,
            hostname,
            network: &config.network,
            mounts: &config.mounts,
            cpu_request_millis: config.cpu_request_millis,
            cpu_limit_millis: config.cpu_limit_millis,
            cgroups_path: &format!("/{cgroup}/ctr"),
            terminal: config.tty,
        })?;
        let config_path = dir.join("config.json");
        spec.save(&config_path).map_err(|e| Error::Io {
            context: format!("writing {}", config_path.display()),
            source: io::Error::other(e),
        })?;
        self.layout
            .create(&cgroup, config.memory_limit_bytes)
            .map_err(io_err(format!("creating cgroup /{cgroup}")))?;
        let log_path = config
            .log_path
            .clone()
            .unwrap_or_else(|| dir.join("container.log"));
        let record = Record {
            id: config.id.clone(),
            image: config.image.clone(),
            image_id: image.id.clone(),
            log_path: log_path.clone(),
            created_at: jiff::Timestamp::now().to_string(),
            cgroup: cgroup.clone(),
        };
        write_json(&dir.join(files::RECORD), &record).map_err(io_err("writing record.json"))?;
        let shim_config = ShimConfig {
            id: config.id.clone(),
            runc: self.runc.clone(),
            runc_root: self.data_dir.join("runc"),
            log_path: log_path.clone(),
            cgroup,
            tty: config.tty,
            stdin: config.stdin,
            stdin_once: config.stdin_once,
            log_max_bytes: config.log_max_bytes,
            log_max_files: match config.log_max_files {
                0 => default_log_files(),
                n => n,
            },
        };
        write_json(&dir.join(files::SHIM_CONFIG), &shim_config)
            .map_err(io_err("writing shim.json"))?;

        self.spawn_shim(&config.id, dir)?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut unknown_since: Option<Instant> = None;
        loop {
            match self.status(&config.id)? {
                Status::Running { pid, started_at } => {
                    return Ok(Handle {
                        id: config.id.clone(),
                        pid,
                        started_at,
                        log_path,
                    })
                }
                Status::Exited {
                    started_at: Some(started_at),
                    ..
                } => {
                    // Ran and already finished: started all the same.
                    return Ok(Handle {
                        id: config.id.clone(),
                        pid: 0,
                        started_at,
                        log_path,
                    });
                }
                Status::Exited { message, .. } => {
                    return Err(Error::StartFailed {
                        id: config.id.clone(),
                        message: message.unwrap_or_else(|| "runc failed".into()),
                    })
                }
                Status::Unknown { message } => {
                    // The shim may be between fork and exec, when /proc
                    // shows no command line: gone only if it stays so.
                    let since = *unknown_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > UNKNOWN_GRACE {
                        return Err(Error::StartFailed {
                            id: config.id.clone(),
                            message,
                        });
                    }
                }
                Status::Created => unknown_since = None,
            }
            if Instant::now() > deadline {
                return Err(Error::StartTimeout {
                    id: config.id.clone(),
                    seconds: START_TIMEOUT.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the container's shim in a process group of its own (a
    /// Ctrl-C or a kill of the agent's group does not reach it; it lives
    /// on if the agent stops) and records its pid. A thread waits for it,
    /// so that no zombie is left when it ends while the agent runs.
    fn spawn_shim(&self, id: &str, dir: &Path) -> Result<()> {
        use std::os::unix::process::CommandExt;
        let failed = |message: String| Error::ShimFailed {
            id: id.to_string(),
            message,
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(files::SHIM_LOG))
            .map_err(|e| failed(format!("opening {}: {e}", files::SHIM_LOG)))?;
        let mut child = std::process::Command::new(&self.shim.0)
            .args(&self.shim.1)
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| failed(format!("{}: {e}", self.shim.0.display())))?;
        let written = fs::write(dir.join(files::SHIM_PID), child.id().to_string());
        let reaper = std::thread::Builder::new()
            .name("shim-reaper".into())
            .stack_size(REAPER_STACK)
            .spawn(move || child.wait());
        if let Err(e) = reaper {
            tracing::warn!(container = %id, error = %e, "cannot start a thread to reap the shim");
        }
        written.map_err(|e| failed(format!("writing {}: {e}", files::SHIM_PID)))
    }

    /// The container's status, from its files.
    pub fn status(&self, id: &str) -> Result<Status> {
        timed("container_status", || self.container_status(id))
    }

    fn container_status(&self, id: &str) -> Result<Status> {
        let dir = self.container_dir(id)?;
        if !dir.join(files::RECORD).exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        Ok(status_of(&dir))
    }

    /// Polls until the container has exited (or `timeout` passed: then
    /// its current status).
    pub fn wait(&self, id: &str, timeout: Duration) -> Result<Status> {
        let deadline = Instant::now() + timeout;
        loop {
            let status = self.status(id)?;
            if matches!(status, Status::Exited { .. } | Status::Unknown { .. })
                || Instant::now() > deadline
            {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` to the container's process (nothing if it has
    /// exited already). PID 1 of a container ignores signals it has no
    /// handler for, SIGKILL aside, as in Kubernetes.
    pub fn kill(&self, id: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        timed("stop_container", || self.signal_container(id, signal))
    }

    fn signal_container(&self, id: &str, signal: nix::sys::signal::Signal) -> Result<()> {
        match self.container_status(id)? {
            Status::Running { .. } | Status::Created => {}
            _ => return Ok(()),
        }
        let output = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(self.data_dir.join("runc"))
            .args(["kill", id, &(signal as i32).to_string()])
            .output()
            .map_err(io_err(format!("running {}", self.runc.display())))?;
        if output.status.success() || matches!(self.container_status(id)?, Status::Exited { .. }) {
            return Ok(());
        }
        Err(Error::Runc {
            command: format!("kill {id} {signal}"),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }

    /// Removes an exited container: its runc state, overlay, cgroup and
    /// folder (its log too when the log is in the folder).
    pub fn remove(&self, id: &str) -> Result<()> {
        timed("remove_container", || self.remove_container(id))
    }

    fn remove_container(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id)?;
        if !dir.exists() {
            return Err(Error::NotFound(id.to_string()));
        }
        if matches!(status_of(&dir), Status::Running { .. } | Status::Created) {
            return Err(Error::StillRunning(id.to_string()));
        }
        self.cleanup(id, &dir);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err(format!("removing {}", dir.display())))?;
        }
        Ok(())
    }

    fn cleanup(&self, id: &str, dir: &Path) {
        let _ = std::process::Command::new(&self.runc)
            .arg("--root")
            .arg(self.data_dir.join("runc"))
            .args(["delete", "--force", id])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = nix::mount::umount2(&dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        let cgroup = read_json::<Record>(&dir.join(files::RECORD))
            .map(|r| r.cgroup)
            .unwrap_or_else(|| format!("{}/{id}", self.cgroup_parent));
        self.layout.remove(&cgroup);
        let _ = fs::remove_dir_all(dir);
    }

    /// What container `id` uses now (cumulative CPU, memory working set),
    /// from its cgroup; None when it is gone.
    pub fn usage(&self, id: &str) -> Option<cgroup::Usage> {
        let dir = self.container_dir(id).ok()?;
        let record = read_json::<Record>(&dir.join(files::RECORD))?;
        self.layout.usage(&record.cgroup)
    }

    /// The signal that stops container `id` gracefully: its image's
    /// `StopSignal` (`SIGQUIT` for nginx, `SIGINT` for postgres), as
    /// containerd honours it; SIGTERM when the image names none (or one
    /// that is not a signal).
    pub fn stop_signal(&self, id: &str) -> nix::sys::signal::Signal {
        let term = nix::sys::signal::Signal::SIGTERM;
        let Ok(dir) = self.container_dir(id) else {
            return term;
        };
        read_json::<Record>(&dir.join(files::RECORD))
            .and_then(|r| self.images.resolve(&r.image_id).ok())
            .and_then(|image| image.config.stop_signal)
            .and_then(|name| parse_signal(&name))
            .unwrap_or(term)
    }

    /// Removes the cgroup parent itself (`/<parent>`) if no container
    /// uses it any more: for tests and uninstalls; agents keep it.
    pub fn remove_cgroup_parent(&self) {
        self.layout.remove(&self.cgroup_parent);
    }

    /// Every container of this data dir, running or not.
    pub fn list(&self) -> Result<Vec<ContainerInfo>> {
        self.list_prefixed("")
    }

    /// The containers whose id starts with `prefix` (a pod's are
    /// `<uid>_`): only their files are read, however many others the node
    /// holds.
    pub fn list_prefixed(&self, prefix: &str) -> Result<Vec<ContainerInfo>> {
        let root = self.data_dir.join("containers");
        let entries = fs::read_dir(&root).map_err(io_err(format!("reading {}", root.display())))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(prefix) {
                continue;
            }
            let dir = entry.path();
            let Some(record) = read_json::<Record>(&dir.join(files::RECORD)) else {
                continue;
            };
            out.push(ContainerInfo {
                status: status_of(&dir),
                id: record.id,
                image: record.image,
                image_id: record.image_id,
                log_path: record.log_path,
                created_at: parse_time(&record.created_at),
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}

fn status_of(dir: &Path) -> Status {
    if let Some(exit) = read_json::<Exited>(&dir.join(files::EXITED)) {
        return Status::Exited {
            code: exit.code,
            oom_killed: exit.oom_killed,
            started_at: exit.started_at.as_deref().map(parse_time),
            finished_at: parse_time(&exit.finished_at),
            message: exit.message,
        };
    }
    let alive = shim_alive(dir);
    // Read after the liveness check: a shim that just finished wrote its
    // exit file before it ended.
    if let Some(exit) = read_json::<Exited>(&dir.join(files::EXITED)) {
        return Status::Exited {
            code: exit.code,
            oom_killed: exit.oom_killed,
            started_at: exit.started_at.as_deref().map(parse_time),
            finished_at: parse_time(&exit.finished_at),
            message: exit.message,
        };
    }
    match (read_json::<Started>(&dir.join(files::STARTED)), alive) {
        (Some(started), true) => Status::Running {
            pid: started.pid,
            started_at: parse_time(&started.started_at),
        },
        (None, true) => Status::Created,
        (_, false) => Status::Unknown {
            message: "the container's shim is gone without recording an exit".into(),
        },
    }
}

/// A signal as an image's `StopSignal` names it: `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    nix::sys::signal::Signal::from_str(&full).ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn stop_signals_parse_as_images_name_them() {
        use nix::sys::signal::Signal;
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("int"), Some(Signal::SIGINT));
        assert_eq!(parse_signal("15"), Some(Signal::SIGTERM));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(valid_id("pod-1_c.0"));
        assert!(!valid_id(""));
        assert!(!valid_id("-x"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id("../x"));
        assert!(!valid_id(&"a".repeat(129)));
    }

    #[test]
    fn status_comes_from_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(status_of(d), Status::Unknown { .. }));
        // A live "shim": this test process, whose command line does not
        // name the folder, so it is not taken for the shim.
        fs::write(d.join(files::SHIM_PID), std::process::id().to_string()).unwrap();
        assert!(matches!(status_of(d), Status::Unknown { .. }));
        write_json(
            &d.join(files::EXITED),
            &Exited {
                code: 3,
                oom_killed: false,
                started_at: Some("2026-11-29T19:00:00Z".into()),
                finished_at: "2026-11-29T19:00:01Z".into(),
                message: None,
            },
        )
        .unwrap();
        match status_of(d) {
            Status::Exited {
                code,
                started_at,
                finished_at,
                ..
            } => {
                assert_eq!(code, 3);
                assert_eq!(started_at.unwrap().as_second() + 1, finished_at.as_second());
            }
            other => panic!("{other:?}"),
        }
    }
}
