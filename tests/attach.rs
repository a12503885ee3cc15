//! Attaching to a pod's own process on the node agent that `shoal up`
//! starts: `kubectl run -i` (stdin, no terminal), `kubectl run -it` (a
//! terminal, given to kubectl by util-linux `script`) and `kubectl attach`
//! to a running pod that reads its stdin. Needs root (runc, mounts,
//! network namespaces); runs in the `node-agent` test group
//! (.config/nextest.toml), as every agent on a machine shares `shoal0`.
//!
//! `kubectl run -i` attaches only once the pod runs: what the container
//! printed before that is not shown (with a terminal kubectl says "If you
//! don't see a command prompt, try pressing enter."). The assertions look
//! for output of commands sent after the attach.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod node;
mod support;

use std::io::{Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::kube::{eventually, ShoalUp, KUBECTL};

/// `shoal up` with its agent and the node Ready.
fn cluster() -> ShoalUp {
    ShoalUp::with_ready_agent(&[])
}

/// A process whose output is collected as it comes, killed if it outlives
/// its deadline.
struct Running {
    child: std::process::Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    })
}

impl Running {
    fn start(mut command: Command) -> Running {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the command");
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Running {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn write(&mut self, input: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin still open");
        stdin.write_all(input.as_bytes()).expect("write stdin");
        stdin.flush().expect("flush stdin");
    }

    fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until stdout contains `needle`.
    fn wait_for_output(&self, needle: &str, timeout: Duration) -> bool {
        eventually(timeout, || self.stdout().contains(needle))
    }

    /// Waits for the end (killing it at `timeout`): its status if it ended
    /// by itself, and everything it printed (stdout, stderr).
    fn finish(mut self, timeout: Duration) -> (Option<ExitStatus>, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(self.child.stdin.take());
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        (status, self.stdout(), self.stderr())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// kubectl against `up`, not yet started.
fn kubectl(up: &ShoalUp, args: &[&str]) -> Command {
    let mut command = Command::new(KUBECTL);
    command
        .args(args)
        .env("KUBECONFIG", &up.kubeconfig)
        .env("HOME", up.data_dir());
    command
}

fn pod_is_gone(up: &ShoalUp, pod: &str) -> bool {
    eventually(Duration::from_secs(60), || {
        let out = up.kubectl(&["get", "pod", pod]);
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
    })
}

#[test]
fn run_with_stdin_reads_it_and_removes_the_pod() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    let mut run = Running::start(kubectl(
        &up,
        &[
            "run",
            "test",
            "--rm",
            "-i",
            "--restart=Never",
            "--image=busybox",
            "--",
            "sh",
        ],
    ));
    // kubectl reads its stdin once it is attached; the shell runs it and
    // its end closes the container's stdin (stdinOnce).
    run.write("echo hello-from-stdin; exit 0\n");
    run.close_stdin();
    let (status, stdout, stderr) = run.finish(Duration::from_secs(120));
    eprintln!("kubectl run -i: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "kubectl run -i did not succeed: {status:?}\n{stdout}\n{stderr}\n{}",
        up.log()
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "hello-from-stdin"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains(r#"pod "test" deleted"#), "{stdout}");
    assert!(pod_is_gone(&up, "test"), "pod test is still there");
}

#[test]
fn run_with_a_terminal_runs_a_shell() {
    require_root!(node::PODS_NEED_ROOT);
    if !std::path::Path::new("/usr/bin/script").exists() {
        assert!(!node::in_ci(), "util-linux script is needed under CI=true");
        eprintln!("skipped: util-linux script is not installed (it gives kubectl a terminal)");
        return;
    }
    let up = cluster();
    let line = format!("{KUBECTL} run test2 --rm -it --restart=Never --image=busybox -- sh");
    let mut script = Command::new("/usr/bin/script");
    script
        .args(["-qec", &line, "/dev/null"])
        .env("KUBECONFIG", &up.kubeconfig)
        .env("HOME", up.data_dir());
    let mut run = Running::start(script);
    // Printed just before kubectl puts its terminal in raw mode and
    // attaches; what is typed from then on reaches the shell.
    assert!(
        run.wait_for_output("try pressing enter", Duration::from_secs(90)),
        "kubectl never attached:\n{}\n{}\n{}",
        run.stdout(),
        run.stderr(),
        up.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    run.write("echo tty-ok; exit\n");
    let (status, stdout, stderr) = run.finish(Duration::from_secs(90));
    eprintln!("kubectl run -it: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        status.is_some_and(|s| s.success()),
        "kubectl run -it did not succeed: {status:?}\n{stdout}\n{stderr}\n{}",
        up.log()
    );
    // The command's own output, not the terminal echoing what was typed.
    assert!(stdout.lines().any(|l| l.trim() == "tty-ok"), "{stdout:?}");
    assert!(pod_is_gone(&up, "test2"), "pod test2 is still there");
}

#[test]
fn attach_sends_lines_to_a_running_pod() {
    require_root!(node::PODS_NEED_ROOT);
    let up = cluster();
    let out = up.kubectl_with(
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  containers:
  - name: reader
    image: busybox
    stdin: true
    command: ["sh", "-c", "echo ready; while read l; do echo got $l; done; echo stdin closed"]
"#,
        ),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    up.ok(&[
        "wait",
        "--for=condition=Ready",
        "pod/reader",
        "--timeout=60s",
    ]);
    assert!(
        eventually(Duration::from_secs(20), || up
            .ok(&["logs", "reader"])
            .contains("ready")),
        "{}",
        up.log()
    );

    // Two clients one after the other: the container keeps its stdin
    // (no stdinOnce), so the second one's line is read too.
    for word in ["hello-attach", "second-attach"] {
        let mut attach = Running::start(kubectl(&up, &["attach", "-i", "reader"]));
        attach.write(&format!("{word}\n"));
        let expected = format!("got {word}");
        let shown = attach.wait_for_output(&expected, Duration::from_secs(30));
        // The end of kubectl's input detaches it; the pod goes on.
        attach.close_stdin();
        let (status, stdout, stderr) = attach.finish(Duration::from_secs(30));
        eprintln!("kubectl attach -i: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(
            shown,
            "kubectl attach did not show {expected:?}:\n{stdout}\n{stderr}"
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "kubectl attach did not end by itself: {status:?}\n{stdout}\n{stderr}"
        );
        assert!(
            eventually(Duration::from_secs(20), || up
                .ok(&["logs", "reader"])
                .contains(&expected)),
            "{}",
            up.ok(&["logs", "reader"])
        );
    }
    let logs = up.ok(&["logs", "reader"]);
    assert!(!logs.contains("stdin closed"), "{logs}");
    let phase = up.ok(&["get", "pod", "reader", "-o", "jsonpath={.status.phase}"]);
    assert_eq!(phase, "Running");

    // kubectl attach without -i: the output from now on. (It prints
    // nothing when it is attached: lines are sent until one shows.)
    let watch = Running::start(kubectl(&up, &["attach", "reader"]));
    let shown = eventually(Duration::from_secs(30), || {
        let out = up.kubectl_with(&["attach", "-i", "reader"], Some("third\n"), &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        watch.wait_for_output("got third", Duration::from_secs(2))
    });
    assert!(shown, "{}\n{}", watch.stdout(), watch.stderr());
    drop(watch);
    up.ok(&["delete", "pod", "reader", "--grace-period=1"]);

    // stdinOnce: a client that only watches leaves stdin open; the first
    // one that wrote closes it when it goes (and, as in Kubernetes, stays
    // until the container ends).
    let out = up.kubectl_with(
        &["apply", "-f", "-"],
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: once}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: once\n    image: busybox\n    stdin: true\n    stdinOnce: true\n    command: [\"sh\", \"-c\", \"while read l; do echo got $l; done; echo stdin closed\"]\n",
        ),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    up.ok(&["wait", "--for=condition=Ready", "pod/once", "--timeout=60s"]);
    let watcher = Running::start(kubectl(&up, &["attach", "once"]));
    std::thread::sleep(Duration::from_secs(2));
    drop(watcher);
    let out = up.kubectl_with(&["attach", "-i", "once"], Some("only\n"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let logs = up.ok(&["logs", "once"]);
            logs.contains("got only") && logs.contains("stdin closed")
        }),
        "{}",
        up.ok(&["logs", "once"])
    );
}
