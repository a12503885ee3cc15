//! Running more processes in a running container with `runc exec`: once,
//! with the output collected (exec probes, CRI's `ExecSync`), or as a
//! session whose streams the caller moves (`kubectl exec`); and attaching
//! to a container's own process (`kubectl attach`, `kubectl run -it`).
//!
//! ```text
//!  exec_sync  runc --root <data>/runc exec --pid-file P <id> cmd...
//!               stdout/stderr ──► capped buffers; timeout ──► SIGKILL pid P
//!  exec       same, stdio piped ──► ExecSession {stdin, stdout, stderr}
//!  exec (tty) runc's stdio = the slave of a pty we open; runc puts it in
//!             raw mode and copies it to and from the container's own pty;
//!             ExecSession reads and writes the master; resize = set the
//!             master's size, then SIGWINCH to runc, which copies it over
//!  attach     the shim's attach.sock (containers created with stdin or
//!             a tty; frames in shim.rs) ──► AttachSession, same shape
//! ```
//!
//! runc's `--console-socket` (the container's pty master sent back over a
//! unix socket) only works with `runc exec --detach`, after which nobody
//! can wait for the process's exit code; in the foreground runc proxies
//! the container's terminal to its own, which is what is done here.
//! `--pid-file` names the exec'd process on the host: killing runc alone
//! would leave it running in the container.

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, Command};

use super::{io_err, Error, Result, Runtime, Status};

/// Most bytes of each of stdout and stderr [`Runtime::exec_sync`] keeps;
/// the rest is read and dropped (kubelet keeps 10 KiB of a probe's output).
pub const EXEC_OUTPUT_LIMIT: usize = 16 * 1024;

/// How long the output of an exec'd process may go on after it exited
/// (a background child of it holding the pipes) before it is cut off.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// What a command run by [`Runtime::exec_sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The process's code, 128 + the signal that ended it, or runc's own
    /// code when it could not start it (then stderr says why).
    pub exit_code: i32,
    /// At most [`EXEC_OUTPUT_LIMIT`] bytes.
    pub stdout: Vec<u8>,
    /// At most [`EXEC_OUTPUT_LIMIT`] bytes.
    pub stderr: Vec<u8>,
    /// The timeout passed and the process was killed (`exit_code` is then
    /// 137).
    pub timed_out: bool,
}

/// A process to start in a container for a session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecRequest {
    pub command: Vec<String>,
    /// A terminal: stdout and stderr are one stream, stdin goes through
    /// the terminal's line discipline (Ctrl-C is a SIGINT).
    pub tty: bool,
    /// Keep stdin open for the caller (else the process reads nothing).
    pub stdin: bool,
}

/// An output stream of a session.
pub type ExecReader = Pin<Box<dyn AsyncRead + Send>>;
/// The input stream of a session.
pub type ExecWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// A process running in a container, started by [`Runtime::exec`]. Take
/// the streams out of the fields (`session.stdout.take()`); dropping the
/// session kills the process if it still runs.
pub struct ExecSession {
    /// `Some` when the request asked for stdin. Dropping (or shutting
    /// down) it closes the process's stdin.
    pub stdin: Option<ExecWriter>,
    /// stdout (with a terminal: all the terminal's output).
    pub stdout: Option<ExecReader>,
    /// `None` with a terminal.
    pub stderr: Option<ExecReader>,
    /// The pty master, for resizing.
    terminal: Option<OwnedFd>,
    child: Child,
    pid_file: PathBuf,
    exit_code: Option<i32>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("tty", &self.terminal.is_some())
            .field("runc_pid", &self.child.id())
            .field("exit_code", &self.exit_code)
            .finish_non_exhaustive()
    }
}

/// `runc exec`'s exit status as Kubernetes reports a code.
fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// A name no other exec of this process uses at the same time.
fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kills the exec'd process whose host pid runc wrote to `pid_file`.
fn kill_exec_process(pid_file: &Path) {
    if let Some(pid) = read_pid(pid_file).filter(|&p| p > 1) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Appends what `reader` yields to `buffer`, keeping at most `limit` bytes
/// but reading to the end (a writer must never block on a full pipe).
async fn collect(mut reader: impl AsyncRead + Unpin, buffer: Arc<Mutex<Vec<u8>>>, limit: usize) {
    let mut chunk = vec![0u8; 8192];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut buffer) = buffer.lock() {
                    let room = limit.saturating_sub(buffer.len());
                    buffer.extend_from_slice(&chunk[..n.min(room)]);
                }
            }
        }
    }
}

fn take(buffer: &Arc<Mutex<Vec<u8>>>) -> Vec<u8> {
    buffer
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default()
}

impl Runtime {
    /// `runc --root <data>/runc exec --pid-file <file> <id>`, ready for the
    /// command; errors unless the container is running.
    fn exec_command(&self, id: &str, pid_file: &Path) -> Result<Command> {
        match self.status(id)? {
            Status::Running { .. } => {}
            _ => return Err(Error::NotRunning(id.to_string())),
        }
        let mut command = Command::new(&self.runc);
        command
            .arg("--root")
            .arg(self.data_dir.join("runc"))
            .arg("exec")
            .arg("--pid-file")
            .arg(pid_file)
            .kill_on_drop(true);
        Ok(command)
    }

    /// Runs `command` in the running container `id` without a terminal
    /// and returns its exit code and (capped) output. At `timeout` the
    /// process is killed and `timed_out` set.
    pub async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput> {
        if command.is_empty() {
            return Err(Error::EmptyCommand);
        }
        let dir = self.container_dir(id)?;
        let pid_file = dir.join(unique_name("exec") + ".pid");
        let mut runc = self.exec_command(id, &pid_file)?;
        runc.arg(id)
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = runc
            .spawn()
            .map_err(io_err(format!("running {}", self.runc.display())))?;
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let mut readers = tokio::task::JoinSet::new();
        if let Some(out) = child.stdout.take() {
            readers.spawn(collect(out, Arc::clone(&stdout), EXEC_OUTPUT_LIMIT));
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(collect(err, Arc::clone(&stderr), EXEC_OUTPUT_LIMIT));
        }
        let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                kill_exec_process(&pid_file);
                // runc exits once its process is gone; if it had not
                // started it yet, runc itself goes.
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(status) => status,
                    Err(_) => {
                        let _ = child.start_kill();
                        child.wait().await
                    }
                };
                (status, true)
            }
        };
        let _ = tokio::time::timeout(OUTPUT_GRACE, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        readers.abort_all();
        let _ = std::fs::remove_file(&pid_file);
        let status = status.map_err(io_err(format!("waiting for {}", self.runc.display())))?;
        Ok(ExecOutput {
            exit_code: if timed_out { 137 } else { exit_code(status) },
            stdout: take(&stdout),
            stderr: take(&stderr),
            timed_out,
        })
    }

    /// Starts `request.command` in the running container `id` and returns
    /// the session that carries its streams.
    pub async fn exec(&self, id: &str, request: &ExecRequest) -> Result<ExecSession> {
        if request.command.is_empty() {
            return Err(Error::EmptyCommand);
        }
        let dir = self.container_dir(id)?;
        let pid_file = dir.join(unique_name("exec") + ".pid");
        let mut runc = self.exec_command(id, &pid_file)?;
        let spawn_err = io_err(format!("running {}", self.runc.display()));
        if request.tty {
            let pty = nix::pty::openpty(None, None).map_err(|e| Error::Io {
                context: "opening a pseudo-terminal".into(),
                source: e.into(),
            })?;
            let copy = |fd: &OwnedFd| {
                fd.try_clone()
                    .map_err(io_err("duplicating the pseudo-terminal"))
            };
            runc.arg("--tty")
                .arg(id)
                .args(&request.command)
                .stdin(copy(&pty.slave)?)
                .stdout(copy(&pty.slave)?)
                .stderr(pty.slave);
            let child = runc.spawn().map_err(spawn_err)?;
            // The slave is runc's alone now: when runc ends, the master
            // reads end-of-stream.
            drop(runc);
            // Reads and writes each on a blocking thread of their own (a
            // pty master is a plain blocking file here); the third copy
            // is for resizing.
            let reader = tokio::fs::File::from_std(std::fs::File::from(copy(&pty.master)?));
            let writer = tokio::fs::File::from_std(std::fs::File::from(copy(&pty.master)?));
            return Ok(ExecSession {
                stdin: request.stdin.then(|| Box::pin(writer) as ExecWriter),
                stdout: Some(Box::pin(TerminalOutput(reader))),
                stderr: None,
                terminal: Some(pty.master),
                child,
                pid_file,
                exit_code: None,
            });
        }
        runc.arg(id)
            .args(&request.command)
            .stdin(if request.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = runc.spawn().map_err(spawn_err)?;
        Ok(ExecSession {
            stdin: child.stdin.take().map(|w| Box::pin(w) as ExecWriter),
            stdout: child.stdout.take().map(|r| Box::pin(r) as ExecReader),
            stderr: child.stderr.take().map(|r| Box::pin(r) as ExecReader),
            terminal: None,
            child,
            pid_file,
            exit_code: None,
        })
    }
}

impl ExecSession {
    /// Sets the terminal's size (nothing without a terminal).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let Some(terminal) = &self.terminal else {
            return Ok(());
        };
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(terminal, size).map_err(|e| Error::Io {
            context: "resizing the terminal".into(),
            source: e.into(),
        })?;
        // runc copies its terminal's size to the container's on SIGWINCH.
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGWINCH);
        }
        Ok(())
    }

    /// Waits for the process to end; its exit code (128 + signal when a
    /// signal ended it).
    pub async fn wait(&mut self) -> Result<i32> {
        if let Some(code) = self.exit_code {
            return Ok(code);
        }
        let status = self
            .child
            .wait()
            .await
            .map_err(io_err("waiting for runc exec"))?;
        let code = exit_code(status);
        self.exit_code = Some(code);
        let _ = std::fs::remove_file(&self.pid_file);
        Ok(code)
    }
}

impl Drop for ExecSession {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            kill_exec_process(&self.pid_file);
        }
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// A connection to a container's own process (created with stdin or a
/// tty), from [`Runtime::attach`]: the same shape as [`ExecSession`].
/// Dropping it detaches (and, with `stdin_once`, closes the process's
/// stdin); the process goes on.
pub struct AttachSession {
    /// `Some` when the container keeps stdin open.
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    /// `None` with a tty.
    pub stderr: Option<ExecReader>,
    control: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    exit: Option<tokio::sync::oneshot::Receiver<i32>>,
    exit_code: Option<i32>,
    stdin_once: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for AttachSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttachSession")
            .field("exit_code", &self.exit_code)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Attaches to the running container `id`'s process through its
    /// shim (only containers created with `stdin` or `tty`); with `stdin`
    /// this client writes to the process's stdin (and, with `stdinOnce`,
    /// closing it closes the process's), else it only watches.
    pub async fn attach(&self, id: &str, stdin: bool) -> Result<AttachSession> {
        use super::shim::frame;
        use tokio::io::AsyncWriteExt;
        let dir = self.container_dir(id)?;
        match self.status(id)? {
            Status::Running { .. } => {}
            _ => return Err(Error::NotRunning(id.to_string())),
        }
        let config: super::ShimConfig = super::read_json(&dir.join(super::files::SHIM_CONFIG))
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        if !config.tty && !config.stdin {
            return Err(Error::NotAttachable(id.to_string()));
        }
        let socket = dir.join(super::files::ATTACH_SOCKET);
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(io_err(format!("connecting to {}", socket.display())))?;
        let (mut from_shim, mut to_shim) = stream.into_split();
        let (mut out_w, out_r) = tokio::io::duplex(64 * 1024);
        let (err_w, err_r) = tokio::io::duplex(64 * 1024);
        let mut err_w = (!config.tty).then_some(err_w);
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            let mut exit_tx = Some(exit_tx);
            loop {
                let mut head = [0u8; 5];
                if from_shim.read_exact(&mut head).await.is_err() {
                    return;
                }
                let (kind, len) = frame::header(head);
                if len > frame::MAX_PAYLOAD {
                    return;
                }
                let mut payload = vec![0u8; len];
                if from_shim.read_exact(&mut payload).await.is_err() {
                    return;
                }
                // A reader that went away is not a reason to stop: the
                // exit code may still come.
                match kind {
                    frame::STDOUT => {
                        let _ = out_w.write_all(&payload).await;
                    }
                    frame::STDERR => {
                        if let Some(w) = err_w.as_mut() {
                            let _ = w.write_all(&payload).await;
                        }
                    }
                    frame::EXIT if payload.len() == 4 => {
                        let code =
                            i32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        if let Some(tx) = exit_tx.take() {
                            let _ = tx.send(code);
                        }
                        return;
                    }
                    _ => {}
                }
            }
        }));
        let (control, mut frames) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        tasks.push(tokio::spawn(async move {
            while let Some(bytes) = frames.recv().await {
                if to_shim.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        }));
        let stdin = if config.stdin && stdin {
            let (in_w, mut in_r) = tokio::io::duplex(64 * 1024);
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                let mut chunk = vec![0u8; 16 * 1024];
                loop {
                    match in_r.read(&mut chunk).await {
                        Ok(0) | Err(_) => {
                            let _ = control.send(frame::encode(frame::CLOSE_STDIN, &[]));
                            return;
                        }
                        Ok(n) => {
                            if control
                                .send(frame::encode(frame::STDIN, &chunk[..n]))
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            }));
            Some(Box::pin(in_w) as ExecWriter)
        } else {
            None
        };
        Ok(AttachSession {
            stdin,
            stdout: Some(Box::pin(out_r)),
            stderr: (!config.tty).then(|| Box::pin(err_r) as ExecReader),
            control,
            exit: Some(exit_rx),
            exit_code: None,
            stdin_once: config.stdin_once,
            tasks,
        })
    }
}

impl AttachSession {
    /// Sets the container's terminal size (nothing without a tty).
    pub fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        let mut payload = cols.to_be_bytes().to_vec();
        payload.extend_from_slice(&rows.to_be_bytes());
        let _ = self.control.send(super::shim::frame::encode(
            super::shim::frame::RESIZE,
            &payload,
        ));
        Ok(())
    }

    /// Waits for the container's process to end; its exit code.
    pub async fn wait(&mut self) -> Result<i32> {
        if let Some(code) = self.exit_code {
            return Ok(code);
        }
        // Kept across calls: a wait dropped half-way may be called again.
        let exit = self.exit.as_mut().ok_or_else(|| Error::Io {
            context: "attach".into(),
            source: io::Error::other("already waited"),
        })?;
        let code = exit.await.map_err(|_| Error::Io {
            context: "attach".into(),
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the shim closed the connection without an exit code",
            ),
        })?;
        self.exit = None;
        self.exit_code = Some(code);
        Ok(code)
    }

    /// Whether the container's stdin closes when this client's does
    /// (`stdinOnce`).
    pub fn stdin_once(&self) -> bool {
        self.stdin_once
    }
}

impl Drop for AttachSession {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A session terminal's output: its pty master, read to the end.
struct TerminalOutput<R>(R);

/// Is `e` the end of a terminal? (Reading a pty master whose slave is
/// closed everywhere fails with EIO.)
fn is_hangup(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EIO as i32)
}

impl<R: AsyncRead + Unpin> AsyncRead for TerminalOutput<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.0).poll_read(cx, buf)) {
            Err(e) if is_hangup(&e) => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_kubernetes_codes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        // Killed by SIGKILL (9).
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[tokio::test]
    async fn output_is_capped_but_read_to_the_end() {
        let input = vec![b'x'; 3 * EXEC_OUTPUT_LIMIT];
        let buffer = Arc::new(Mutex::new(Vec::new()));
        collect(&input[..], Arc::clone(&buffer), EXEC_OUTPUT_LIMIT).await;
        assert_eq!(take(&buffer).len(), EXEC_OUTPUT_LIMIT);
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("exec"), unique_name("exec"));
    }

    #[tokio::test]
    async fn a_terminal_reads_what_the_slave_writes_then_ends() {
        use tokio::io::AsyncWriteExt;
        let pty = nix::pty::openpty(None, None).unwrap();
        let file =
            |fd: &OwnedFd| tokio::fs::File::from_std(std::fs::File::from(fd.try_clone().unwrap()));
        let mut writer = file(&pty.master);
        let mut reader = TerminalOutput(file(&pty.master));
        // Raw slave: no echo, no CR/LF translation.
        let mut termios = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
        nix::sys::termios::cfmakeraw(&mut termios);
        nix::sys::termios::tcsetattr(&pty.slave, nix::sys::termios::SetArg::TCSANOW, &termios)
            .unwrap();
        writer.write_all(b"in").await.unwrap();
        writer.flush().await.unwrap();
        let mut got = [0u8; 2];
        nix::unistd::read(&pty.slave, &mut got).unwrap();
        assert_eq!(&got, b"in");
        nix::unistd::write(&pty.slave, b"out").unwrap();
        drop(pty.slave);
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"out");
        // Resizing works on the master.
        let size = rustix::termios::Winsize {
            ws_row: 40,
            ws_col: 100,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&pty.master, size).unwrap();
        assert_eq!(
            rustix::termios::tcgetwinsize(&pty.master).unwrap().ws_col,
            100
        );
    }
}
