//! Test harness: real `shoal store` processes on loopback, driven by real
//! clients. Children are killed when the cluster is dropped, and by the
//! kernel when the test process dies (see [`daemon`]).
#![allow(dead_code)]
// Test helpers: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dns;
pub mod kube;
pub mod nodes;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use shoal_store::proto::etcdserverpb::kv_client::KvClient;
use shoal_store::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use shoal_store::proto::etcdserverpb::StatusRequest;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint};

pub const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A command for a long-lived child of a test (a store member, an
/// apiserver, `shoal up`, an agent): in a process group of its own, so that
/// [`kill_group`] stops what it started too, and sent SIGKILL by the kernel
/// when the test process dies (`setpriv --pdeathsig`, from util-linux), so
/// that nothing outlives a test that nextest killed at its timeout. Spawn
/// it from the test's own thread: the signal follows the spawning thread.
pub fn daemon(program: impl AsRef<std::ffi::OsStr>) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command.process_group(0);
    command
}

/// SIGKILL to a child's process group (it and what it started), then
/// reaps it.
pub fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the suite runs in CI (`CI=true`), where a test that cannot run
/// here fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A program of the Python venv `scripts/install-deps.sh --tests` makes
/// (`$SHOAL_VENV`, default `~/.cache/shoal-venv`), checked to be there.
pub fn venv_program(name: &str) -> String {
    let venv = std::env::var("SHOAL_VENV").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/shoal-venv")
    });
    let program = format!("{venv}/bin/{name}");
    assert!(
        std::path::Path::new(&program).exists(),
        "{program} is missing: scripts/install-deps.sh --tests (which .ci/run runs) installs it"
    );
    program
}

/// A port no one listens on, below Linux's ephemeral range (32768+) so
/// that outgoing connections of parallel tests cannot take it between this
/// check and the member's bind.
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    loop {
        let port = rng.gen_range(10_000..30_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("{}://127.0.0.1:{}", scheme(), self.client_port)
    }
    pub fn peer_url(&self) -> String {
        format!("{}://127.0.0.1:{}", scheme(), self.peer_port)
    }
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// What the members run: shoal's store, or etcd itself (the reference the
/// etcdctl tests are checked against).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Shoal,
    Etcd,
}

pub struct TestCluster {
    pub kind: Kind,
    pub dir: TempDir,
    pub members: Vec<Member>,
    /// Extra flags given to every member (e.g. `--snapshot-count`).
    pub extra: Vec<String>,
}

impl TestCluster {
    /// Starts `n` members as one new cluster and waits for a leader.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, &[]).await
    }

    /// Starts `n` etcd members (Debian's etcd-server) the same way.
    pub async fn start_etcd(n: usize) -> TestCluster {
        Self::start_kind(Kind::Etcd, n, &[]).await
    }

    pub async fn start_with(n: usize, extra: &[&str]) -> TestCluster {
        Self::start_kind(Kind::Shoal, n, extra).await
    }

    /// Starts `n` shoal members whose data dirs `prepare` made first (a
    /// restore from a snapshot).
    pub async fn start_prepared(n: usize, prepare: impl Fn(&std::path::Path)) -> TestCluster {
        Self::start_inner(Kind::Shoal, n, &[], prepare).await
    }

    async fn start_kind(kind: Kind, n: usize, extra: &[&str]) -> TestCluster {
        Self::start_inner(kind, n, extra, |_| {}).await
    }

    async fn start_inner(
        kind: Kind,
        n: usize,
        extra: &[&str],
        prepare: impl Fn(&std::path::Path),
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let members = (1..=n)
            .map(|i| Member {
                name: format!("s{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: dir.path().join(format!("s{i}")),
                child: None,
            })
            .collect();
        let mut c = TestCluster {
            kind,
            dir,
            members,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..n {
            prepare(&c.members[i].data_dir);
            c.spawn(i, "new");
        }
        c.wait_leader(Duration::from_secs(30)).await;
        c
    }

    pub fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts member `i` (`state` is `new` or `existing`).
    pub fn spawn(&mut self, i: usize, state: &str) {
        let initial = self.initial_cluster();
        let m = &mut self.members[i];
        std::fs::create_dir_all(&m.data_dir).expect("data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.data_dir.with_extension("log"))
            .expect("log file");
        let mut cmd = match self.kind {
            Kind::Shoal => {
                let mut c = daemon(SHOAL);
                c.arg("store");
                c
            }
            Kind::Etcd => daemon("etcd"),
        };
        let child = cmd
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-state", state])
            .args(tls_flags())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the member (etcd comes from apt-get install etcd-server)");
        m.child = Some(child);
    }

    /// Adds a member definition (not started) and returns its index.
    pub fn add_member(&mut self, name: &str) -> usize {
        self.members.push(Member {
            name: name.to_string(),
            client_port: free_port(),
            peer_port: free_port(),
            data_dir: self.dir.path().join(name),
            child: None,
        });
        self.members.len() - 1
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            kill_group(&mut c);
        }
    }

    /// SIGTERM, as an operator stops a member; returns how long it took to
    /// exit, or `None` if it had not exited after 10 s (it is killed then).
    pub fn terminate(&mut self, i: usize) -> Option<Duration> {
        let mut child = self.members[i].child.take()?;
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        kill_group(&mut child);
        None
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: a member cut off and back.
    pub fn pause(&self, i: usize, pause: bool) {
        if let Some(child) = &self.members[i].child {
            let signal = if pause { "-STOP" } else { "-CONT" };
            let _ = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i, "new");
    }

    pub fn wipe(&mut self, i: usize) {
        self.kill(i);
        let _ = std::fs::remove_dir_all(&self.members[i].data_dir);
    }

    pub fn endpoints(&self) -> String {
        self.running()
            .map(|i| self.members[i].client_url())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.members.len()).filter(|i| self.members[*i].is_running())
    }

    /// Member id of the leader, as a running member reports it.
    pub async fn leader_id(&self) -> Option<u64> {
        for i in self.running() {
            if let Ok(mut c) = maintenance(&self.members[i].client_url()).await {
                if let Ok(s) = c.status(StatusRequest {}).await {
                    let s = s.into_inner();
                    if s.leader != 0 {
                        return Some(s.leader);
                    }
                }
            }
        }
        None
    }

    /// Index of the member that leads.
    pub async fn leader(&self) -> Option<usize> {
        for i in self.running() {
            if let Ok(mut c) = maintenance(&self.members[i].client_url()).await {
                if let Ok(s) = c.status(StatusRequest {}).await {
                    let s = s.into_inner();
                    let header = s.header.unwrap_or_default();
                    if s.leader != 0 && s.leader == header.member_id {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    /// Waits until every running member answers and agrees on a leader.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = Vec::new();
            for i in self.running() {
                let l = async {
                    let mut c = maintenance(&self.members[i].client_url()).await.ok()?;
                    let s = c.status(StatusRequest {}).await.ok()?.into_inner();
                    (s.leader != 0).then_some(s.leader)
                };
                leaders.push(l.await);
            }
            if let Some(Some(first)) = leaders.first() {
                if leaders.iter().all(|l| *l == Some(*first)) {
                    return *first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no leader within {timeout:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Checks that every running member holds the same data: their HashKV
    /// at the current revision (once each has applied it) agree.
    pub async fn assert_same_data(&self) {
        use shoal_store::proto::etcdserverpb::{HashKvRequest, RangeRequest};
        let first = self.running().next().expect("a running member");
        let rev = eventually(Duration::from_secs(20), "the current revision", || async {
            let mut c = kv(&self.members[first].client_url()).await.ok()?;
            let r = c
                .range(RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    count_only: true,
                    ..Default::default()
                })
                .await
                .ok()?;
            r.into_inner().header.map(|h| h.revision)
        })
        .await;
        let mut hashes = Vec::new();
        for i in self.running() {
            let url = self.members[i].client_url();
            let h = eventually(Duration::from_secs(20), "hashkv", || async {
                let mut m = maintenance(&url).await.ok()?;
                let r = m.hash_kv(HashKvRequest { revision: rev }).await.ok()?;
                Some(r.into_inner().hash)
            })
            .await;
            hashes.push((self.members[i].name.clone(), h));
        }
        assert!(
            hashes.windows(2).all(|w| w[0].1 == w[1].1),
            "members disagree at revision {rev}: {hashes:?}"
        );
    }

    /// Runs the real etcdctl (API v3) against the running members.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.endpoints(), args, None)
    }

    pub fn etcdctl_ok(&self, args: &[&str]) -> String {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // A failing test shows what each member logged.
        if std::thread::panicking() {
            for m in &self.members {
                let log =
                    std::fs::read_to_string(m.data_dir.with_extension("log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- {} ({}) ----", m.name, m.client_url());
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn etcdctl(endpoints: &str, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    // As users copy them from etcd's docs: `http://` URLs (etcdctl 3.4
    // then puts the whole URL into HTTP/2's :authority).
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(etcdctl_tls())
        .args(["--command-timeout=10s"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .expect("etcdctl is installed (apt-get install etcd-client)");
    if let Some(input) = stdin {
        let mut s = child.stdin.take().expect("stdin");
        s.write_all(input.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("etcdctl output")
}

/// A gRPC channel to a member (over TLS with the test client certificate
/// for an `https://` URL; connected lazily then).
pub async fn channel(url: &str) -> Result<Channel, String> {
    let configure = |e: Endpoint| {
        e.connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(3))
    };
    if url.starts_with("https://") {
        return shoal_store::tls::channel(url, Some(tls_client()), configure);
    }
    configure(Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?)
        .connect()
        .await
        .map_err(|e| e.to_string())
}

pub async fn kv(url: &str) -> Result<KvClient<Channel>, String> {
    Ok(KvClient::new(channel(url).await?))
}

pub async fn maintenance(url: &str) -> Result<MaintenanceClient<Channel>, String> {
    Ok(MaintenanceClient::new(channel(url).await?))
}

/// With `SHOAL_TEST_STORE_TLS=1` every test cluster (shoal's members and
/// the etcd reference alike) serves both ports over TLS and asks for
/// client certificates, and etcdctl and the gRPC clients here connect
/// with the test CA's client certificate: the store suites run unchanged
/// over TLS (`.ci/run` runs them so once more).
pub fn tls_on() -> bool {
    std::env::var("SHOAL_TEST_STORE_TLS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn scheme() -> &'static str {
    if tls_on() {
        "https"
    } else {
        "http"
    }
}

/// The test PKI: a CA, one certificate for every member (serving and
/// connecting, 127.0.0.1) and a client certificate, made once and shared
/// by every test process (kept under the target dir, renamed into place
/// whole).
fn pki_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        use shoal_core::tls;
        let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join("store-test-pki");
        if dir.join("client.key").exists() {
            return dir;
        }
        let staging = tempfile::tempdir_in(root).expect("staging dir");
        let files = tls::Files::in_dir(staging.path());
        tls::ensure_generated(&files, &tls::default_names(&[])).expect("test CA");
        let ca = tls::Ca::load(&files.ca_cert, &files.ca_key).expect("test CA");
        let (chain, key) = tls::issue_cert(
            &ca,
            "store-member",
            &[],
            &["localhost".to_string()],
            &["127.0.0.1".parse().expect("address")],
            true,
            true,
        )
        .expect("member certificate");
        tls::write_pair(
            &staging.path().join("member.crt"),
            &chain,
            &staging.path().join("member.key"),
            &key,
        )
        .expect("member certificate");
        let (chain, key) = tls::issue_cert(&ca, "store-client", &[], &[], &[], false, true)
            .expect("client certificate");
        tls::write_pair(
            &staging.path().join("client.crt"),
            &chain,
            &staging.path().join("client.key"),
            &key,
        )
        .expect("client certificate");
        // Another test process may have put its own there first: either
        // is as good.
        let staged = staging.keep();
        if std::fs::rename(&staged, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        dir
    })
}

/// A member's TLS flags (etcd's), when the suites run over TLS.
fn tls_flags() -> Vec<String> {
    if !tls_on() {
        return Vec::new();
    }
    let dir = pki_dir();
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--cert-file={}", path("member.crt")),
        format!("--key-file={}", path("member.key")),
        format!("--trusted-ca-file={}", path("ca.crt")),
        "--client-cert-auth".into(),
        format!("--peer-cert-file={}", path("member.crt")),
        format!("--peer-key-file={}", path("member.key")),
        format!("--peer-trusted-ca-file={}", path("ca.crt")),
        "--peer-client-cert-auth".into(),
    ]
}

/// etcdctl's TLS flags, when the suites run over TLS.
pub fn etcdctl_tls() -> Vec<String> {
    if !tls_on() {
        return Vec::new();
    }
    let dir = pki_dir();
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--cacert={}", path("ca.crt")),
        format!("--cert={}", path("client.crt")),
        format!("--key={}", path("client.key")),
    ]
}

/// An apiserver's flags for the store's TLS, when the suites run over TLS.
pub fn apiserver_store_tls() -> Vec<String> {
    if !tls_on() {
        return Vec::new();
    }
    let dir = pki_dir();
    let path = |name: &str| dir.join(name).display().to_string();
    vec![
        format!("--etcd-cafile={}", path("ca.crt")),
        format!("--etcd-certfile={}", path("client.crt")),
        format!("--etcd-keyfile={}", path("client.key")),
    ]
}

/// The gRPC clients' TLS configuration (the test client certificate).
fn tls_client() -> &'static std::sync::Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> =
        std::sync::OnceLock::new();
    CONFIG.get_or_init(|| {
        let dir = pki_dir();
        shoal_store::tls::TlsFiles {
            cert_file: Some(dir.join("client.crt")),
            key_file: Some(dir.join("client.key")),
            trusted_ca_file: Some(dir.join("ca.crt")),
            client_cert_auth: false,
        }
        .client_config()
        .expect("test client TLS")
    })
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
