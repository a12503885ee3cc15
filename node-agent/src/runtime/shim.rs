//! The per-container shim: `shoal-container-shim <dir>` (or `shoal
//! container-shim <dir>`).
//!
//! The runtime starts it in a process group of its own, so that it lives
//! on if the agent stops. It runs `runc run` in the foreground, copies
//! the container's stdout/stderr into the log file (CRI format), records
//! `started.json` when runc's pid file appears and `exit.json` (exit
//! code, OOM kill from the cgroup, finish time) when runc returns, then
//! removes the container's cgroup.
//!
//! A container with stdin or a tty is also attachable: the shim serves
//! `attach.sock`, where each client's input goes to the container's stdin
//! and the container's output goes to every client as well as to the log
//! (frames: see [`frame`]). With a tty, runc's stdio is the slave of a pty
//! the shim opens (runc copies it to and from the container's terminal,
//! and copies its size over on SIGWINCH).

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{cgroup, files, log, write_json, Exited, ShimConfig, Started};

/// Why the shim could not do its work (it reports this on stderr, which is
/// `shim.log` when the runtime started it).
#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("reading {path}: {source}")]
    Config {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ShimError {
    let context = context.to_string();
    move |source| ShimError::Io { context, source }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Entry point of the shim program: watches the container in `dir` until
/// it ends.
pub fn main(dir: &Path) -> Result<(), ShimError> {
    let config_path = dir.join(files::SHIM_CONFIG);
    let config: ShimConfig = fs::read(&config_path)
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(io::Error::other))
        .map_err(|source| ShimError::Config {
            path: config_path.display().to_string(),
            source,
        })?;
    // Whatever happens below, the agent must learn how it ended.
    let finish =
        |code: i32, oom_killed: bool, started_at: Option<String>, message: Option<String>| {
            let exit = Exited {
                code,
                oom_killed,
                started_at,
                finished_at: now(),
                message,
            };
            // Before the exit is written: once a container reads as
            // exited, nothing of it is left in the cgroup tree.
            cgroup::Layout::detect().remove(&config.cgroup);
            write_json(&dir.join(files::EXITED), &exit).map_err(io_err("writing exit.json"))
        };
    if let Some(parent) = config.log_path.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let log_file =
        match log::LogFile::open(&config.log_path, config.log_max_bytes, config.log_max_files) {
            Ok(f) => Arc::new(Mutex::new(f)),
            Err(e) => {
                return finish(
                    128,
                    false,
                    None,
                    Some(format!(
                        "opening the log {}: {e}",
                        config.log_path.display()
                    )),
                )
            }
        };
    let layout = cgroup::Layout::detect();
    let oom_watch = match layout.watch_oom(&config.cgroup) {
        Ok(watch) => watch,
        Err(e) => {
            eprintln!("container {}: watching for OOM kills: {e}", config.id);
            None
        }
    };
    let pid_file = dir.join(files::CONTAINER_PID);
    // With a tty, runc's stdio is a pty's slave; the master is read for
    // output, written for input, and sized for resizes.
    let pty = if config.tty {
        match nix::pty::openpty(None, None) {
            Ok(pty) => Some(pty),
            Err(e) => return finish(128, false, None, Some(format!("opening a pty: {e}"))),
        }
    } else {
        None
    };
    let hub = if config.tty || config.stdin {
        let resize_fd = pty.as_ref().and_then(|p| p.master.try_clone().ok());
        match Hub::listen(dir, &config, resize_fd) {
            Ok(hub) => Some(hub),
            Err(e) => {
                return finish(
                    128,
                    false,
                    None,
                    Some(format!("serving {}: {e}", files::ATTACH_SOCKET)),
                )
            }
        }
    } else {
        None
    };
    let mut command = Command::new(&config.runc);
    command
        .arg("--root")
        .arg(&config.runc_root)
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&config.id);
    let terminal = match pty {
        Some(pty) => {
            command
                .stdin(
                    pty.slave
                        .try_clone()
                        .map_err(io_err("duplicating the pty"))?,
                )
                .stdout(
                    pty.slave
                        .try_clone()
                        .map_err(io_err("duplicating the pty"))?,
                )
                .stderr(pty.slave);
            Some(pty.master)
        }
        None => {
            command
                .stdin(if config.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            None
        }
    };
    let spawned = command.spawn();
    // The pty slave (if any) is runc's alone now: when runc ends, the
    // master reads end-of-file.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            return finish(
                128,
                false,
                None,
                Some(format!("running {}: {e}", config.runc.display())),
            )
        }
    };
    let tail = Arc::new(Mutex::new(Vec::new()));
    let mut copiers = Vec::new();
    if let Some(hub) = &hub {
        hub.runc_pid
            .store(i32::try_from(child.id()).unwrap_or(0), Ordering::Relaxed);
        let input = match &terminal {
            Some(master) => master
                .try_clone()
                .ok()
                .map(|fd| Box::new(fs::File::from(fd)) as Box<dyn Write + Send>),
            None => child
                .stdin
                .take()
                .map(|w| Box::new(w) as Box<dyn Write + Send>),
        };
        if let Ok(mut slot) = hub.input.lock() {
            *slot = input;
        }
    }
    let tee = |kind: u8, reader: Box<dyn io::Read + Send>| -> Box<dyn io::Read + Send> {
        Box::new(Tee {
            inner: reader,
            hub: hub.clone(),
            kind,
        })
    };
    for (stream, reader) in [
        (
            "stdout",
            match terminal {
                Some(master) => Some(tee(frame::STDOUT, Box::new(fs::File::from(master)))),
                None => child.stdout.take().map(|r| tee(frame::STDOUT, Box::new(r))),
            },
        ),
        (
            "stderr",
            child.stderr.take().map(|r| tee(frame::STDERR, Box::new(r))),
        ),
    ] {
        let Some(reader) = reader else { continue };
        let (log_file, tail) = (log_file.clone(), tail.clone());
        copiers.push(std::thread::spawn(move || {
            log::copy_stream(reader, stream, &log_file, &tail)
        }));
    }
    // runc writes the pid file once the process exists; poll for it
    // (briefly: only until it starts), then just wait.
    let mut started_at = None;
    let status = loop {
        if started_at.is_none() {
            if let Some(pid) = read_pid(&pid_file) {
                let at = now();
                let _ = write_json(
                    &dir.join(files::STARTED),
                    &Started {
                        pid,
                        started_at: at.clone(),
                    },
                );
                started_at = Some(at);
            }
        }
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) if started_at.is_some() => break child.wait(),
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => break Err(e),
        }
    };
    for copier in copiers {
        let _ = copier.join();
    }
    if started_at.is_none() && read_pid(&pid_file).is_some() {
        // Started and finished between two polls.
        started_at = Some(now());
    }
    let oom_killed = oom_watch.as_ref().is_some_and(cgroup::OomWatch::fired)
        || layout.oom_kills(&config.cgroup) > 0;
    if let Some(hub) = &hub {
        use std::os::unix::process::ExitStatusExt;
        let code = match &status {
            Ok(s) => s.code().or(s.signal().map(|n| 128 + n)).unwrap_or(255),
            Err(_) => 255,
        };
        hub.finish(dir, code);
    }
    match (status, started_at) {
        (Ok(status), Some(started)) => {
            use std::os::unix::process::ExitStatusExt;
            let code = status
                .code()
                .or(status.signal().map(|s| 128 + s))
                .unwrap_or(255);
            finish(code, oom_killed, Some(started), None)
        }
        (Ok(_), None) => {
            let message = tail
                .lock()
                .map(|t| String::from_utf8_lossy(&t).trim().to_string())
                .unwrap_or_default();
            finish(128, false, None, Some(message))
        }
        (Err(e), started) => finish(
            255,
            oom_killed,
            started,
            Some(format!("waiting for runc: {e}")),
        ),
    }
}

/// The attach protocol: frames of `kind (1 byte) | length (4 bytes, big
/// endian) | payload`, both ways on `attach.sock`.
pub(crate) mod frame {
    /// Client to shim: bytes for the container's stdin.
    pub const STDIN: u8 = 0;
    /// Shim to client: output.
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    /// Shim to client: the process ended; payload its exit code (i32 BE).
    pub const EXIT: u8 = 3;
    /// Client to shim: the terminal's size; payload cols, rows (u16 BE).
    pub const RESIZE: u8 = 4;
    /// Client to shim: this client's input has ended.
    pub const CLOSE_STDIN: u8 = 5;
    /// Longest payload accepted.
    pub const MAX_PAYLOAD: usize = 1 << 20;

    pub fn encode(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(kind);
        out.extend_from_slice(
            &u32::try_from(payload.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        out.extend_from_slice(payload);
        out
    }

    /// A frame's kind and payload length from its 5-byte header.
    pub fn header(bytes: [u8; 5]) -> (u8, usize) {
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        (bytes[0], usize::try_from(len).unwrap_or(usize::MAX))
    }
}

/// The shim's side of attach: the socket, its clients, the stdin sink.
struct Hub {
    clients: Mutex<Vec<UnixStream>>,
    input: Mutex<Option<Box<dyn Write + Send>>>,
    /// The pty master, for resizes.
    terminal: Option<OwnedFd>,
    runc_pid: AtomicI32,
    stdin_once: bool,
}

impl Hub {
    fn listen(dir: &Path, config: &ShimConfig, terminal: Option<OwnedFd>) -> io::Result<Arc<Hub>> {
        let path = dir.join(files::ATTACH_SOCKET);
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        let hub = Arc::new(Hub {
            clients: Mutex::new(Vec::new()),
            input: Mutex::new(None),
            terminal,
            runc_pid: AtomicI32::new(0),
            stdin_once: config.stdin_once,
        });
        let accepting = Arc::clone(&hub);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let Ok(writer) = stream.try_clone() else {
                    continue;
                };
                // A client that does not read must not stall the log.
                let _ = writer.set_write_timeout(Some(Duration::from_secs(2)));
                if let Ok(mut clients) = accepting.clients.lock() {
                    clients.push(writer);
                }
                let hub = Arc::clone(&accepting);
                std::thread::spawn(move || hub.serve(stream));
            }
        });
        Ok(hub)
    }

    fn broadcast(&self, kind: u8, data: &[u8]) {
        let bytes = frame::encode(kind, data);
        if let Ok(mut clients) = self.clients.lock() {
            clients.retain_mut(|c| c.write_all(&bytes).is_ok());
        }
    }

    /// Tells every client the exit code and hangs up.
    fn finish(&self, dir: &Path, code: i32) {
        self.broadcast(frame::EXIT, &code.to_be_bytes());
        if let Ok(mut clients) = self.clients.lock() {
            for c in clients.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = fs::remove_file(dir.join(files::ATTACH_SOCKET));
    }

    /// One client's input, until it hangs up. With `stdinOnce` and no
    /// terminal, the process's stdin closes when a client that wrote to it
    /// goes (containerd's rule); a client that only watched changes
    /// nothing.
    fn serve(&self, mut stream: UnixStream) {
        let mut wrote = false;
        loop {
            let mut head = [0u8; 5];
            if stream.read_exact(&mut head).is_err() {
                break;
            }
            let (kind, len) = frame::header(head);
            if len > frame::MAX_PAYLOAD {
                break;
            }
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).is_err() {
                break;
            }
            match kind {
                frame::STDIN => {
                    wrote = true;
                    if let Ok(mut input) = self.input.lock() {
                        if let Some(w) = input.as_mut() {
                            if w.write_all(&payload).and_then(|()| w.flush()).is_err() {
                                *input = None;
                            }
                        }
                    }
                }
                frame::RESIZE if payload.len() == 4 => self.resize(
                    u16::from_be_bytes([payload[0], payload[1]]),
                    u16::from_be_bytes([payload[2], payload[3]]),
                ),
                frame::CLOSE_STDIN => {
                    wrote = true;
                    break;
                }
                _ => {}
            }
        }
        if self.stdin_once && wrote && self.terminal.is_none() {
            if let Ok(mut input) = self.input.lock() {
                *input = None;
            }
        }
    }

    fn resize(&self, cols: u16, rows: u16) {
        let Some(terminal) = &self.terminal else {
            return;
        };
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if rustix::termios::tcsetwinsize(terminal, size).is_ok() {
            let pid = self.runc_pid.load(Ordering::Relaxed);
            if pid > 0 {
                // runc copies its terminal's size to the container's.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGWINCH,
                );
            }
        }
    }
}

/// Output on its way to the log, copied to attached clients.
struct Tee {
    inner: Box<dyn io::Read + Send>,
    hub: Option<Arc<Hub>>,
    kind: u8,
}

impl io::Read for Tee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.inner.read(buf) {
            // A pty master whose slave is closed everywhere: the end.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EIO as i32) => 0,
            other => other?,
        };
        if let (Some(hub), true) = (&self.hub, n > 0) {
            hub.broadcast(self.kind, &buf[..n]);
        }
        Ok(n)
    }
}
