//! The per-container shim: `shoal container-shim [--detach] <dir>`.
//!
//! With `--detach` it starts itself again without the flag in a process
//! group of its own, writes that child's pid to `shim.pid` and returns at
//! once, so the agent reaps its direct child right away and the real shim
//! lives on if the agent stops. The real shim runs `runc run` in the
//! foreground, copies the container's stdout/stderr into the log file
//! (CRI format), records `started.json` when runc's pid file appears and
//! `exit.json` (exit code, OOM kill from the cgroup, finish time) when
//! runc returns, then removes the container's cgroup.

use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{cgroup, files, log, write_json, Exited, ShimConfig, Started};

/// Why the shim could not do its work (it reports this on stderr, which is
/// `shim.log` for a detached shim).
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

/// Entry point of the `container-shim` subcommand.
pub fn main(dir: &Path, detach: bool) -> Result<(), ShimError> {
    if detach {
        return detach_self(dir);
    }
    run(dir)
}

fn detach_self(dir: &Path) -> Result<(), ShimError> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(io_err("finding this executable"))?;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--detach")
        .collect();
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(files::SHIM_LOG))
        .map_err(io_err("opening shim.log"))?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Out of the agent's process group: a Ctrl-C or a kill of the
        // agent's group does not reach the shim.
        .process_group(0)
        .spawn()
        .map_err(io_err("starting the shim"))?;
    fs::write(dir.join(files::SHIM_PID), child.id().to_string())
        .map_err(io_err("writing shim.pid"))?;
    Ok(())
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn run(dir: &Path) -> Result<(), ShimError> {
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
    let log_file = match fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&config.log_path)
    {
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
    let spawned = Command::new(&config.runc)
        .arg("--root")
        .arg(&config.runc_root)
        .arg("run")
        .arg("--bundle")
        .arg(dir)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&config.id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
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
    for (stream, reader) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn io::Read + Send>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn io::Read + Send>),
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
