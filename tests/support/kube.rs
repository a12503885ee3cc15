//! Harness for the Kubernetes API: `shoal up` as a real process, driven by
//! the real kubectl (a plain 1.32 client) and curl. The cluster is stopped
//! when dropped.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A plain kubectl 1.32 (not the dispatcher at /usr/bin/kubectl).
pub const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

pub fn manifest(name: &str) -> String {
    format!("{}/../tests/manifests/{name}", env!("CARGO_MANIFEST_DIR"))
}

pub struct ShoalUp {
    pub dir: TempDir,
    child: Option<Child>,
    pub kubeconfig: PathBuf,
    /// Extra flags of `shoal up`.
    args: Vec<String>,
    /// Runs a real node agent (needs root): stopped with SIGTERM so that
    /// it kills its containers, then whatever is left is removed.
    agent: bool,
}

/// How many times a fresh `shoal up` is started when it loses a port race.
const LAST_ATTEMPT: u32 = 3;

impl ShoalUp {
    pub fn start() -> ShoalUp {
        ShoalUp::start_with(&[])
    }

    /// `shoal up` with extra flags (`--pod-eviction-timeout=2s`, ...),
    /// without a node agent.
    pub fn start_with(args: &[&str]) -> ShoalUp {
        ShoalUp::start_as(args, false)
    }

    /// `shoal up` with its node agent on this machine (root), on a free
    /// port, killing its pods when it stops.
    pub fn with_agent(args: &[&str]) -> ShoalUp {
        let mut all = vec!["--agent-port", "0", "--stop-pods-on-exit"];
        all.extend_from_slice(args);
        ShoalUp::start_as(&all, true)
    }

    /// [`ShoalUp::with_agent`], once its node is Ready (30 s at most).
    pub fn with_ready_agent(args: &[&str]) -> ShoalUp {
        let up = ShoalUp::with_agent(args);
        assert!(
            eventually(Duration::from_secs(30), || {
                up.ok(&["get", "nodes", "--no-headers"]).contains(" Ready ")
            }),
            "the node never became Ready:\n{}",
            up.log()
        );
        up
    }

    fn start_as(args: &[&str], agent: bool) -> ShoalUp {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if !agent {
            args.push("--no-agent".into());
        }
        let mut up = ShoalUp {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            child: None,
            args,
            agent,
        };
        // A fresh data dir may be cleared and started again.
        up.spawn_attempt(1);
        up
    }

    /// Starts `shoal up` on the data dir and waits until kubectl can talk
    /// to it.
    pub fn spawn(&mut self) {
        // Restarts keep their data: no second attempt.
        self.spawn_attempt(LAST_ATTEMPT);
    }

    fn spawn_attempt(&mut self, attempt: u32) {
        let _ = std::fs::remove_file(&self.kubeconfig);
        let log = std::fs::File::create(self.dir.path().join("up.log")).expect("log file");
        let child = super::daemon(super::SHOAL)
            .args(["up", "--port", "0", "--data-dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .env("RUST_LOG", "info,openraft=warn,hickory_server=warn")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start shoal up");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig.exists()
                && self.kubectl(&["get", "--raw", "/readyz"]).status.success()
            {
                // The system namespaces are created right after start-up.
                if self
                    .kubectl(&["get", "namespace", "kube-system"])
                    .status
                    .success()
                {
                    return;
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                // A port it picked was taken by a process of another test
                // in between: start again from scratch.
                let log = self.log();
                if attempt < LAST_ATTEMPT && log.contains("in use") {
                    eprintln!("shoal up lost a port race; starting it again:\n{log}");
                    if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
                        for entry in entries.flatten() {
                            let path = entry.path();
                            let _ = std::fs::remove_dir_all(&path)
                                .or_else(|_| std::fs::remove_file(&path));
                        }
                    }
                    return self.spawn_attempt(attempt + 1);
                }
                panic!("shoal up exited with {status}:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "shoal up not ready in 60 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// SIGKILL (the whole `shoal up`; containers of its agent live on).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill_group(&mut child);
        }
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        // `--nodes N` stops N agents, each stopping its pods.
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                super::kill_group(&mut child);
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(args, None, &[])
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl_with(&["apply", "-f", "-"], Some(yaml), &[]);
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kubectl_with(&self, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(KUBECTL);
        command
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("run kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs kubectl, expecting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn server(&self) -> String {
        let config = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: "))
            .expect("server in kubeconfig")
            .to_string()
    }

    pub fn token(&self) -> String {
        let config = std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig");
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("token in kubeconfig")
            .to_string()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("apiserver").join("ca.crt")
    }

    /// A raw HTTPS request with curl: (status code, body).
    pub fn curl(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> (u16, String) {
        self.curl_as(method, path, content_type, body, Some(&self.token()))
    }

    pub fn curl_as(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
        token: Option<&str>,
    ) -> (u16, String) {
        let body_file = self.dir.path().join(format!("body-{}", rand_suffix()));
        let mut command = Command::new("curl");
        command
            .args(["-sS", "-X", method, "--cacert"])
            .arg(self.ca_file())
            .args(["-H", &format!("Content-Type: {content_type}")])
            .args(["-w", "\n%{http_code}"]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            std::fs::write(&body_file, body).expect("write body");
            command
                .arg("--data-binary")
                .arg(format!("@{}", body_file.display()));
        }
        command.arg(format!("{}{path}", self.server()));
        let out = command.output().expect("run curl");
        let _ = std::fs::remove_file(&body_file);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn rand_suffix() -> u64 {
    use rand::Rng;
    rand::thread_rng().gen()
}

impl Drop for ShoalUp {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- shoal up log ---\n{}", self.log());
        }
        if self.agent {
            self.stop();
            remove_leftovers(self.dir.path());
        }
        if let Some(mut child) = self.child.take() {
            super::kill_group(&mut child);
        }
    }
}

/// Kills processes started from `dir` (container shims and their
/// containers) and unmounts what is mounted under it, so that a test with
/// a real agent leaves nothing behind even when it failed half-way.
pub fn remove_leftovers(dir: &Path) {
    let needle = dir.to_string_lossy().to_string();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
    }
    // runc's containers: their cgroups hold their processes. One agent
    // (`shoal up`) or one per node (`shoal up --nodes N`).
    let mut runc_roots = vec![dir.join("agent").join("runc")];
    if let Ok(nodes) = std::fs::read_dir(dir.join("nodes")) {
        runc_roots.extend(nodes.flatten().map(|n| n.path().join("agent").join("runc")));
    }
    for runc_root in runc_roots.into_iter().filter(|r| r.exists()) {
        let out = Command::new("runc")
            .arg("--root")
            .arg(&runc_root)
            .args(["list", "-q"])
            .output();
        if let Ok(out) = out {
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force", id])
                    .output();
            }
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| m.starts_with(&needle))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in under {
        let _ = Command::new("umount").args(["-l", mount]).status();
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// Runs kubectl against a kubeconfig.
pub fn kubectl_at(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(KUBECTL)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap_or(Path::new("/tmp")))
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

pub fn kubeconfig_text(server: &str, ca_file: &Path, token: &str) -> String {
    use base64::Engine;
    let ca = std::fs::read(ca_file).expect("CA file");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\n",
        base64::engine::general_purpose::STANDARD.encode(ca)
    )
}

/// One `shoal apiserver` process over a store cluster.
pub struct Apiserver {
    pub dir: PathBuf,
    pub port: u16,
    pub kubeconfig: PathBuf,
    child: Option<Child>,
}

pub const TOKEN: &str = "test-token-0123456789";

impl Apiserver {
    /// Starts an apiserver with its data in `dir`; `tls` reuses another's
    /// certificate (so one CA serves both). Waits until it is ready.
    pub fn start(endpoints: &str, dir: &Path, tls: Option<(&Path, &Path)>) -> Apiserver {
        Self::start_with(endpoints, dir, tls, &[])
    }

    /// As `start`, with extra flags.
    pub fn start_with(
        endpoints: &str,
        dir: &Path,
        tls: Option<(&Path, &Path)>,
        extra: &[&str],
    ) -> Apiserver {
        Self::start_with_tokens(endpoints, dir, tls, extra, "")
    }

    /// As `start_with`, with more lines for the token file beside the
    /// admin's (`token,user,uid[,"groups"]`).
    pub fn start_with_tokens(
        endpoints: &str,
        dir: &Path,
        tls: Option<(&Path, &Path)>,
        extra: &[&str],
        more_tokens: &str,
    ) -> Apiserver {
        std::fs::create_dir_all(dir).expect("apiserver dir");
        let tokens = dir.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{TOKEN},admin,admin,\"system:masters\"\n{more_tokens}"),
        )
        .expect("tokens");
        let port = super::free_port();
        let log = std::fs::File::create(dir.join("apiserver.log")).expect("log");
        let mut command = super::daemon(super::SHOAL);
        command
            .args([
                "apiserver",
                "--etcd-servers",
                endpoints,
                "--bind-address",
                "127.0.0.1",
            ])
            .args(["--secure-port", &port.to_string()])
            .args(super::apiserver_store_tls())
            .arg("--token-auth-file")
            .arg(&tokens)
            .arg("--data-dir")
            .arg(dir)
            .args(extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let ca = match tls {
            Some((cert, key)) => {
                command
                    .arg("--tls-cert-file")
                    .arg(cert)
                    .arg("--tls-private-key-file")
                    .arg(key);
                cert.parent().expect("cert dir").join("ca.crt")
            }
            None => dir.join("ca.crt"),
        };
        let child = command.spawn().expect("start shoal apiserver");
        let kubeconfig = dir.join("kubeconfig");
        let mut server = Apiserver {
            dir: dir.to_path_buf(),
            port,
            kubeconfig: kubeconfig.clone(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if ca.exists() {
                std::fs::write(
                    &kubeconfig,
                    kubeconfig_text(&format!("https://127.0.0.1:{port}"), &ca, TOKEN),
                )
                .expect("kubeconfig");
                if kubectl_at(&kubeconfig, &["get", "namespace", "default"])
                    .status
                    .success()
                {
                    return server;
                }
            }
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("shoal apiserver exited with {status}:\n{}", server.log());
            }
            assert!(
                Instant::now() < deadline,
                "apiserver not ready in 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill_group(&mut child);
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = kubectl_at(&self.kubeconfig, args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- apiserver {} log ---\n{}", self.port, self.log());
        }
        self.kill();
    }
}

/// `shoal agent --simulate` as a process: `count` nodes named `prefix-i`.
pub struct SimulatedNodes {
    child: Option<Child>,
    log: PathBuf,
}

impl SimulatedNodes {
    pub fn start(kubeconfig: &Path, count: usize, prefix: &str) -> SimulatedNodes {
        let log = kubeconfig.with_file_name(format!("agent-{prefix}.log"));
        let file = std::fs::File::create(&log).expect("agent log");
        let child = super::daemon(super::SHOAL)
            .args([
                "agent",
                "--simulate",
                "--count",
                &count.to_string(),
                "--name-prefix",
                prefix,
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .stdout(file.try_clone().expect("agent log"))
            .stderr(file)
            .spawn()
            .expect("start shoal agent --simulate");
        SimulatedNodes {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill_group(&mut child);
        }
    }
}

impl Drop for SimulatedNodes {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- simulated nodes log ---\n{}", self.log());
        }
        self.kill();
    }
}

/// A `kubectl` that keeps printing (`get -w`), its output lines gathered
/// as they come; killed when dropped.
pub struct Watching {
    child: Child,
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Watching {
    /// Runs kubectl with `args` against `kubeconfig`.
    pub fn start(kubeconfig: &Path, args: &[&str]) -> Watching {
        use std::io::BufRead;
        let mut child = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kubectl");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        let stdout = child.stdout.take().expect("kubectl's stdout");
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Watching { child, lines }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
