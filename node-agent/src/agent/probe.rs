//! Container probes (liveness, readiness, startup) as kubelet runs them
//! (`pkg/probe/{exec,http,tcp}`, `pkg/kubelet/prober/worker.go`).
//!
//! ```text
//!  spawn(kind, probe, target) ──► task: wait initialDelaySeconds, then
//!     every periodSeconds: check() ──► Outcome ──► Tracker (thresholds)
//!                                                     │
//!  ProbeHandle::results() ◄── watch::Receiver<State> ◄┘
//! ```
//!
//! [`check`] runs one probe: exec (through `runc exec`, exit code 0 is
//! success, the output is the failure message), httpGet (an HTTP/1.1 GET
//! through hyper's client, HTTPS without certificate checks as kubelet
//! does; 200 to 399 is success; redirects are followed to the same host only, ten at
//! most), tcpSocket (a connect). gRPC probes are not supported: they
//! report [`Outcome::Error`], which, as a probe error in kubelet, leaves
//! the result as it was. Failure messages are worded as kubelet's events
//! show them (`HTTP probe failed with statuscode: 500`,
//! `Get "http://10.244.0.5:8080/healthz": dial tcp 10.244.0.5:8080:
//! connect: connection refused`).
//!
//! [`Tracker`] is kubelet's threshold logic as a pure state machine: a
//! result is published only after `successThreshold` successes or
//! `failureThreshold` failures in a row. Readiness starts as failure (not
//! ready), liveness as success, startup as unknown (not started), as in
//! kubelet. A liveness failure and a startup result end the probing: the
//! container is restarted (or started) and gets a new prober.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Request};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, HTTPHeader, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::runtime::Runtime;

/// The User-Agent of kubelet's HTTP probes (`kube-probe/<major>.<minor>`).
pub const USER_AGENT: &str = "kube-probe/1.32";
/// How much of an exec probe's output becomes its message (kubelet's
/// `maxReadLength`).
const MAX_OUTPUT: usize = 10 * 1024;
/// Largest response head read from an HTTP probe.
const MAX_HEAD: usize = 64 * 1024;
/// Redirects an HTTP probe follows (Go's client default).
const MAX_REDIRECTS: usize = 10;

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The message kubelet puts after `<Kind> probe failed: `.
    Failure(String),
    /// The probe could not be run at all (kubelet's "probe errored": the
    /// result stays as it was).
    Error(String),
}

/// What a probe runs against.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub runtime: &'a Runtime,
    pub container_id: &'a str,
    /// The default host of httpGet and tcpSocket probes. Without one the
    /// local host is probed, as Go does with an empty host (host-network
    /// pods).
    pub pod_ip: Option<IpAddr>,
    /// The container's ports, for probes that name theirs.
    pub container_ports: &'a [ContainerPort],
}

/// A [`Target`] that owns its parts, for [`spawn`].
#[derive(Debug, Clone)]
pub struct OwnedTarget {
    pub runtime: Runtime,
    pub container_id: String,
    pub pod_ip: Option<IpAddr>,
    pub container_ports: Vec<ContainerPort>,
}

impl OwnedTarget {
    pub fn as_target(&self) -> Target<'_> {
        Target {
            runtime: &self.runtime,
            container_id: &self.container_id,
            pod_ip: self.pod_ip,
            container_ports: &self.container_ports,
        }
    }
}

/// Runs `probe` once against `target`, within its `timeoutSeconds`.
pub async fn check(probe: &Probe, target: &Target<'_>) -> Outcome {
    let timeout = Settings::from_probe(probe, Kind::Readiness).timeout;
    if let Some(exec) = &probe.exec {
        exec_probe(exec, target, timeout).await
    } else if let Some(http) = &probe.http_get {
        http_probe(http, target.pod_ip, target.container_ports, timeout).await
    } else if let Some(tcp) = &probe.tcp_socket {
        tcp_probe(tcp, target.pod_ip, target.container_ports, timeout).await
    } else if probe.grpc.is_some() {
        Outcome::Error("gRPC probes are not supported by this node".into())
    } else {
        Outcome::Error("missing probe handler".into())
    }
}

// ---------------------------------------------------------------- exec

async fn exec_probe(exec: &ExecAction, target: &Target<'_>, timeout: Duration) -> Outcome {
    let command = exec.command.clone().unwrap_or_default();
    match target
        .runtime
        .exec_sync(target.container_id, &command, timeout)
        .await
    {
        Err(e) => Outcome::Error(e.to_string()),
        Ok(out) if out.timed_out => {
            Outcome::Failure(format!("command {:?} timed out", command.join(" ")))
        }
        Ok(out) if out.exit_code == 0 => Outcome::Success,
        Ok(out) => Outcome::Failure(exec_message(&out.stdout, &out.stderr)),
    }
}

/// stdout then stderr, at most [`MAX_OUTPUT`] bytes (kubelet writes both
/// into one capped buffer).
fn exec_message(stdout: &[u8], stderr: &[u8]) -> String {
    let mut all: Vec<u8> = stdout
        .iter()
        .chain(stderr)
        .copied()
        .take(MAX_OUTPUT)
        .collect();
    all.truncate(MAX_OUTPUT);
    String::from_utf8_lossy(&all).into_owned()
}

// ---------------------------------------------------------------- ports

/// A probe's port: a number, or the name of one of the container's ports
/// (or, as kubelet's last try, a number written as a string).
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => {
            match ports
                .iter()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
            {
                Some(p) => p.container_port,
                None => name
                    .parse::<i32>()
                    .map_err(|_| format!("couldn't find port: {name} in the container's ports"))?,
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

fn default_host(host: Option<&String>, pod_ip: Option<IpAddr>) -> String {
    match host.filter(|h| !h.is_empty()) {
        Some(h) => h.clone(),
        None => pod_ip
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .to_string(),
    }
}

/// `host:port`, with brackets around an IPv6 address (Go's
/// `net.JoinHostPort`).
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------- tcp

/// A system error as Go prints it (`connection refused`).
fn errno_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_lowercase(),
        None => e.to_string(),
    }
}

/// Connects like Go's `net.Dial("tcp", host:port)`, with Go's messages.
async fn dial(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<std::net::SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![(ip, port).into()],
        Err(_) => match tokio::net::lookup_host((host, port)).await {
            Ok(found) => found.collect(),
            Err(e) => return Err(format!("dial tcp: lookup {host}: {e}")),
        },
    };
    let mut last = format!("dial tcp: lookup {host}: no such host");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("dial tcp {addr}: connect: {}", errno_text(&e)),
        }
    }
    Err(last)
}

async fn tcp_probe(
    tcp: &TCPSocketAction,
    pod_ip: Option<IpAddr>,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Outcome {
    let port = match resolve_port(&tcp.port, ports) {
        Ok(port) => port,
        Err(e) => return Outcome::Error(e),
    };
    let host = default_host(tcp.host.as_ref(), pod_ip);
    match tokio::time::timeout(timeout, dial(&host, port)).await {
        Ok(Ok(_stream)) => Outcome::Success,
        Ok(Err(message)) => Outcome::Failure(message),
        Err(_) => Outcome::Failure(format!(
            "dial tcp {}: i/o timeout",
            join_host_port(&host, port)
        )),
    }
}

// ---------------------------------------------------------------- http

/// An HTTP probe's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}{}",
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

/// `path` as a request target (`/` when empty).
fn request_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    }
}

/// The request's headers: the probe's, then kubelet's defaults for
/// User-Agent and Accept where the probe sets none (an empty Accept
/// removes it). Names are matched case-insensitively; values with line
/// breaks are dropped.
pub fn request_headers(probe_headers: &[HTTPHeader]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = probe_headers
        .iter()
        .filter(|h| !h.name.is_empty() && !h.name.contains([':', '\r', '\n', ' ']))
        .filter(|h| !h.value.contains(['\r', '\n']))
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    let has = |out: &[(String, String)], name: &str| {
        out.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if !has(&out, "User-Agent") {
        out.push(("User-Agent".into(), USER_AGENT.into()));
    }
    if !has(&out, "Accept") {
        out.push(("Accept".into(), "*/*".into()));
    } else {
        out.retain(|(n, v)| !(n.eq_ignore_ascii_case("Accept") && v.is_empty()));
    }
    out
}

/// The GET of `url` with `headers` (a `Host` among them replaces the
/// default one), closing the connection after the response.
pub fn build_request(url: &Url, headers: &[(String, String)]) -> Result<Request<Body>, String> {
    let host = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("Host"))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| join_host_port(&url.host, url.port));
    let mut request = Request::get(url.path.as_str())
        .header(header::HOST, host)
        .body(Body::empty())
        .map_err(|e| format!("net/http: {e}"))?;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("Host") {
            continue;
        }
        // request_headers dropped what cannot be a header already.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            request.headers_mut().append(name, value);
        }
    }
    request
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Ok(request)
}

/// A response's status and Location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub location: Option<String>,
}

/// A client error in Go's words, as kubelet's probe messages show them.
fn go_error(e: &hyper::Error) -> String {
    if e.is_parse() || e.is_parse_status() {
        "net/http: HTTP/1.x transport connection broken: malformed HTTP response".into()
    } else if e.is_incomplete_message() {
        "EOF".into()
    } else {
        e.to_string()
    }
}

/// What to do after a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Done(Outcome),
    Follow(Url),
}

/// Where `location` points from `current`.
pub fn resolve_location(current: &Url, location: &str) -> Option<Url> {
    let (https, rest) = if let Some(rest) = location.strip_prefix("http://") {
        (false, Some(rest))
    } else if let Some(rest) = location.strip_prefix("https://") {
        (true, Some(rest))
    } else if let Some(rest) = location.strip_prefix("//") {
        (current.https, Some(rest))
    } else {
        (current.https, None)
    };
    let Some(rest) = rest else {
        let path = if location.starts_with('/') {
            location.to_string()
        } else {
            // Relative to the current path's folder.
            let base = current.path.split('?').next().unwrap_or("/");
            let folder = &base[..base.rfind('/').map_or(0, |i| i + 1)];
            format!("{}{location}", if folder.is_empty() { "/" } else { folder })
        };
        return Some(Url {
            path,
            ..current.clone()
        });
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], request_path(&rest[i..])),
        None => (rest, "/".to_string()),
    };
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        (host.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Url {
        https,
        host,
        port,
        path,
    })
}

/// kubelet's verdict on a response to `url`, the `hops`-th redirect.
/// Redirects are followed only to the same host name (the port and
/// scheme may change); a redirect elsewhere ends the probe as a success
/// (kubelet's "Probe terminated redirects" warning).
pub fn decide(url: &Url, head: &ResponseHead, hops: usize) -> Next {
    match head.status {
        300..=399 => {
            let next = head
                .location
                .as_deref()
                .and_then(|l| resolve_location(url, l));
            match next {
                Some(next) if next.host.eq_ignore_ascii_case(&url.host) => {
                    if hops >= MAX_REDIRECTS {
                        Next::Done(Outcome::Failure(format!(
                            "Get {:?}: stopped after {MAX_REDIRECTS} redirects",
                            next.to_string()
                        )))
                    } else {
                        Next::Follow(next)
                    }
                }
                _ => Next::Done(Outcome::Success),
            }
        }
        200..=299 => Next::Done(Outcome::Success),
        status => Next::Done(Outcome::Failure(format!(
            "HTTP probe failed with statuscode: {status}"
        ))),
    }
}

/// Sends `request` on `stream` (hyper's HTTP/1.1 client) and reads the
/// response head; the body is not read.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    request: Request<Body>,
) -> Result<ResponseHead, String> {
    // Header names in Go's canonical case (`User-Agent`), as kubelet
    // sends them.
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| go_error(&e))?;
    let connection = tokio::spawn(connection);
    let response = sender.send_request(request).await;
    connection.abort();
    let response = response.map_err(|e| go_error(&e))?;
    let location = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    Ok(ResponseHead {
        status: response.status().as_u16(),
        location,
    })
}

/// One request to `url`.
async fn fetch(url: &Url, headers: &[(String, String)]) -> Result<ResponseHead, String> {
    let stream = dial(&url.host, url.port).await?;
    let request = build_request(url, headers)?;
    if !url.https {
        return exchange(stream, request).await;
    }
    let name = match url.host.parse::<IpAddr>() {
        Ok(ip) => rustls::pki_types::ServerName::IpAddress(ip.into()),
        Err(_) => rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| format!("tls: {e}"))?,
    };
    let tls = tokio_rustls::TlsConnector::from(tls_config()?)
        .connect(name, stream)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    exchange(tls, request).await
}

async fn http_probe(
    http: &HTTPGetAction,
    pod_ip: Option<IpAddr>,
    ports: &[ContainerPort],
    timeout: Duration,
) -> Outcome {
    let port = match resolve_port(&http.port, ports) {
        Ok(port) => port,
        Err(e) => return Outcome::Error(e),
    };
    let mut url = Url {
        https: http
            .scheme
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("https")),
        host: default_host(http.host.as_ref(), pod_ip),
        port,
        path: request_path(http.path.as_deref().unwrap_or_default()),
    };
    let headers = request_headers(http.http_headers.as_deref().unwrap_or_default());
    let deadline = tokio::time::Instant::now() + timeout;
    for hops in 0.. {
        let head = match tokio::time::timeout_at(deadline, fetch(&url, &headers)).await {
            Err(_) => {
                return Outcome::Failure(format!(
                    "Get {:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                    url.to_string()
                ))
            }
            Ok(Err(message)) => return Outcome::Failure(format!("Get {:?}: {message}", url.to_string())),
            Ok(Ok(head)) => head,
        };
        match decide(&url, &head, hops) {
            Next::Done(outcome) => return outcome,
            Next::Follow(next) => url = next,
        }
    }
    Outcome::Error("unreachable".into())
}

/// Accepts any server certificate, as kubelet's probes do
/// (`InsecureSkipVerify`), but still checks the handshake's signatures.
#[derive(Debug)]
struct SkipVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("tls: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

// ---------------------------------------------------------------- prober

/// Which probe of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    /// As kubelet's events name it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

/// A probe's published result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not decided yet (a startup probe before its first verdict).
    Unknown,
    Success,
    Failure,
}

/// What a prober publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub health: Health,
    /// Probes that failed or errored so far: each is one `Unhealthy`
    /// event in kubelet, so a watcher emits one per increment.
    pub failures: u64,
    /// The last failure as the event says it:
    /// `Liveness probe failed: HTTP probe failed with statuscode: 500`,
    /// `Readiness probe errored: ...`.
    pub last_failure: Option<String>,
}

/// A probe's timing and thresholds, with Kubernetes' defaults and
/// minimums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Settings {
    pub fn from_probe(probe: &Probe, kind: Kind) -> Settings {
        let seconds = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count =
            |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Settings {
            initial_delay: seconds(probe.initial_delay_seconds, 0, 0),
            period: seconds(probe.period_seconds, 10, 1),
            timeout: seconds(probe.timeout_seconds, 1, 1),
            // Must be 1 for liveness and startup (validation says so).
            success_threshold: match kind {
                Kind::Readiness => count(probe.success_threshold, 1),
                Kind::Liveness | Kind::Startup => 1,
            },
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// kubelet's worker logic: consecutive results against the thresholds.
#[derive(Debug, Clone)]
pub struct Tracker {
    kind: Kind,
    success_threshold: u32,
    failure_threshold: u32,
    /// The last probe's result (success?) and how many in a row.
    last: Option<bool>,
    run: u32,
    state: State,
}

impl Tracker {
    pub fn new(kind: Kind, settings: &Settings) -> Tracker {
        let health = match kind {
            Kind::Readiness => Health::Failure,
            Kind::Liveness => Health::Success,
            Kind::Startup => Health::Unknown,
        };
        Tracker {
            kind,
            success_threshold: settings.success_threshold,
            failure_threshold: settings.failure_threshold,
            last: None,
            run: 0,
            state: State {
                health,
                failures: 0,
                last_failure: None,
            },
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Takes one probe's outcome; false once probing should stop (a
    /// liveness failure or a startup verdict: the container is restarted
    /// or started, and the next one gets a new prober).
    pub fn observe(&mut self, outcome: &Outcome) -> bool {
        let success = match outcome {
            Outcome::Success => true,
            Outcome::Failure(message) => {
                self.state.failures += 1;
                self.state.last_failure =
                    Some(format!("{} probe failed: {message}", self.kind.name()));
                false
            }
            Outcome::Error(message) => {
                self.state.failures += 1;
                self.state.last_failure =
                    Some(format!("{} probe errored: {message}", self.kind.name()));
                return true;
            }
        };
        if self.last == Some(success) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(success);
            self.run = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run < threshold {
            return true;
        }
        self.state.health = if success {
            Health::Success
        } else {
            Health::Failure
        };
        !matches!(
            (self.kind, success),
            (Kind::Liveness, false) | (Kind::Startup, _)
        )
    }
}

/// A running prober; dropping it stops it.
#[derive(Debug)]
pub struct ProbeHandle {
    results: watch::Receiver<State>,
    task: tokio::task::JoinHandle<()>,
}

impl ProbeHandle {
    /// The current result, and its changes. After a liveness failure or a
    /// startup verdict the prober stops: the last value stays readable.
    pub fn results(&self) -> watch::Receiver<State> {
        self.results.clone()
    }

    /// The current result.
    pub fn state(&self) -> State {
        self.results.borrow().clone()
    }

    /// The current result, marked seen: [`ProbeHandle::results`] taken
    /// afterwards changes only with a newer one.
    pub fn latest(&mut self) -> State {
        self.results.borrow_and_update().clone()
    }
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts probing: the first probe `initialDelaySeconds` after
/// `started_at` (the container's start), then one every `periodSeconds`.
/// Must be called within a tokio runtime.
pub fn spawn(kind: Kind, probe: Probe, target: OwnedTarget, started_at: Instant) -> ProbeHandle {
    spawn_gated(kind, probe, target, started_at, None)
}

/// As [`spawn`], but no probe runs until `startup` (the container's
/// startup prober) reports success, as kubelet holds liveness and
/// readiness probes until the container has started.
pub fn spawn_after_startup(
    kind: Kind,
    probe: Probe,
    target: OwnedTarget,
    started_at: Instant,
    startup: watch::Receiver<State>,
) -> ProbeHandle {
    spawn_gated(kind, probe, target, started_at, Some(startup))
}

fn spawn_gated(
    kind: Kind,
    probe: Probe,
    target: OwnedTarget,
    started_at: Instant,
    gate: Option<watch::Receiver<State>>,
) -> ProbeHandle {
    let settings = Settings::from_probe(&probe, kind);
    let mut tracker = Tracker::new(kind, &settings);
    let (tx, rx) = watch::channel(tracker.state().clone());
    let task = tokio::spawn(async move {
        let first = tokio::time::Instant::from_std(started_at + settings.initial_delay);
        tokio::time::sleep_until(first).await;
        let mut ticker = tokio::time::interval(settings.period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if let Some(gate) = &gate {
                if gate.borrow().health != Health::Success {
                    continue;
                }
            }
            let outcome = check(&probe, &target.as_target()).await;
            tracing::debug!(container = %target.container_id, probe = kind.name(), ?outcome, "probed");
            let go_on = tracker.observe(&outcome);
            tx.send_if_modified(|state| {
                let changed = state != tracker.state();
                if changed {
                    *state = tracker.state().clone();
                }
                changed
            });
            if !go_on {
                return;
            }
        }
    });
    ProbeHandle { results: rx, task }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn named(name: &str, port: i32) -> ContainerPort {
        ContainerPort {
            name: Some(name.into()),
            container_port: port,
            ..Default::default()
        }
    }

    #[test]
    fn ports_resolve_by_number_or_name() {
        let ports = [named("http", 8080), named("metrics", 9090)];
        assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("metrics".into()), &ports),
            Ok(9090)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("8081".into()), &ports),
            Ok(8081)
        );
        assert!(resolve_port(&IntOrString::String("grpc".into()), &ports)
            .unwrap_err()
            .contains("couldn't find port: grpc"));
        assert_eq!(
            resolve_port(&IntOrString::Int(70000), &ports),
            Err("invalid port number: 70000".into())
        );
        assert!(resolve_port(&IntOrString::Int(0), &ports).is_err());
    }

    #[test]
    fn requests_carry_kubelets_headers() {
        let url = Url {
            https: false,
            host: "10.244.0.5".into(),
            port: 8080,
            path: request_path("healthz"),
        };
        assert_eq!(url.to_string(), "http://10.244.0.5:8080/healthz");
        let headers = request_headers(&[HTTPHeader {
            name: "X-Custom".into(),
            value: "yes".into(),
        }]);
        let shown = |request: Request<Body>| -> Vec<(String, String)> {
            let mut out = vec![("path".to_string(), request.uri().to_string())];
            out.extend(
                request
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_string())),
            );
            out
        };
        let pair = |n: &str, v: &str| (n.to_string(), v.to_string());
        assert_eq!(
            shown(build_request(&url, &headers).unwrap()),
            vec![
                pair("path", "/healthz"),
                pair("host", "10.244.0.5:8080"),
                pair("x-custom", "yes"),
                pair("user-agent", "kube-probe/1.32"),
                pair("accept", "*/*"),
                pair("connection", "close"),
            ]
        );
        // A probe's Host and User-Agent replace the defaults; an empty
        // Accept removes it; header injection is dropped.
        let headers = request_headers(&[
            HTTPHeader {
                name: "Host".into(),
                value: "example.com".into(),
            },
            HTTPHeader {
                name: "user-agent".into(),
                value: "me".into(),
            },
            HTTPHeader {
                name: "Accept".into(),
                value: String::new(),
            },
            HTTPHeader {
                name: "X-Bad".into(),
                value: "a\r\nInjected: 1".into(),
            },
        ]);
        assert_eq!(
            shown(build_request(&url, &headers).unwrap()),
            vec![
                pair("path", "/healthz"),
                pair("host", "example.com"),
                pair("user-agent", "me"),
                pair("connection", "close"),
            ]
        );
        let v6 = Url {
            https: true,
            host: "fd00::5".into(),
            port: 443,
            path: request_path(""),
        };
        assert_eq!(v6.to_string(), "https://[fd00::5]:443/");
    }

    #[tokio::test]
    async fn response_heads_are_read_and_garbage_is_named_as_go_does() {
        let url = |port| Url {
            https: false,
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        };
        let (port, _server) =
            serve_once("HTTP/1.0 302 Found\r\nlocation: /login\r\nX: y\r\n\r\n").await;
        assert_eq!(
            fetch(&url(port), &[]).await,
            Ok(ResponseHead {
                status: 302,
                location: Some("/login".into())
            })
        );
        let (port, _server) = serve_once("SSH-2.0-OpenSSH\r\n\r\n").await;
        let err = fetch(&url(port), &[]).await.unwrap_err();
        assert!(err.contains("malformed HTTP response"), "{err}");
        let (port, _server) = serve_once("").await;
        assert_eq!(fetch(&url(port), &[]).await, Err("EOF".to_string()));
    }

    #[test]
    fn statuses_and_redirects_decide() {
        let url = Url {
            https: false,
            host: "10.0.0.1".into(),
            port: 80,
            path: "/a/b".into(),
        };
        let head = |status, location: Option<&str>| ResponseHead {
            status,
            location: location.map(str::to_string),
        };
        assert_eq!(
            decide(&url, &head(204, None), 0),
            Next::Done(Outcome::Success)
        );
        assert_eq!(
            decide(&url, &head(500, None), 0),
            Next::Done(Outcome::Failure(
                "HTTP probe failed with statuscode: 500".into()
            ))
        );
        assert_eq!(
            decide(&url, &head(404, None), 0),
            Next::Done(Outcome::Failure(
                "HTTP probe failed with statuscode: 404".into()
            ))
        );
        // Same host: followed (relative, absolute path, other port).
        let follow = |loc: &str| match decide(&url, &head(302, Some(loc)), 0) {
            Next::Follow(u) => u.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(follow("c"), "http://10.0.0.1:80/a/c");
        assert_eq!(follow("/x?y=1"), "http://10.0.0.1:80/x?y=1");
        assert_eq!(follow("https://10.0.0.1:8443/z"), "https://10.0.0.1:8443/z");
        // Elsewhere, or nowhere: the redirect itself is the (successful)
        // answer.
        assert_eq!(
            decide(&url, &head(301, Some("http://example.com/")), 0),
            Next::Done(Outcome::Success)
        );
        assert_eq!(
            decide(&url, &head(302, None), 0),
            Next::Done(Outcome::Success)
        );
        // Too many.
        assert_eq!(
            decide(&url, &head(302, Some("/loop")), MAX_REDIRECTS),
            Next::Done(Outcome::Failure(
                "Get \"http://10.0.0.1:80/loop\": stopped after 10 redirects".into()
            ))
        );
        let v6 = resolve_location(&url, "http://[fd00::1]:81/p").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("fd00::1", 81));
    }

    #[test]
    fn settings_have_kubernetes_defaults() {
        let s = Settings::from_probe(&Probe::default(), Kind::Liveness);
        assert_eq!(
            s,
            Settings {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3,
            }
        );
        let probe = Probe {
            period_seconds: Some(0),
            timeout_seconds: Some(5),
            success_threshold: Some(2),
            failure_threshold: Some(1),
            initial_delay_seconds: Some(7),
            ..Default::default()
        };
        let s = Settings::from_probe(&probe, Kind::Readiness);
        assert_eq!(s.period, Duration::from_secs(1));
        assert_eq!(s.timeout, Duration::from_secs(5));
        assert_eq!(s.initial_delay, Duration::from_secs(7));
        assert_eq!((s.success_threshold, s.failure_threshold), (2, 1));
        // Liveness and startup: success threshold 1 whatever is set.
        assert_eq!(
            Settings::from_probe(&probe, Kind::Startup).success_threshold,
            1
        );
    }

    fn failure(message: &str) -> Outcome {
        Outcome::Failure(message.into())
    }

    #[test]
    fn readiness_needs_its_thresholds() {
        let settings = Settings {
            success_threshold: 2,
            failure_threshold: 3,
            ..Settings::from_probe(&Probe::default(), Kind::Readiness)
        };
        let mut t = Tracker::new(Kind::Readiness, &settings);
        assert_eq!(t.state().health, Health::Failure, "not ready at first");
        assert!(t.observe(&Outcome::Success));
        assert_eq!(t.state().health, Health::Failure, "one success of two");
        assert!(t.observe(&Outcome::Success));
        assert_eq!(t.state().health, Health::Success);
        // Failures below the threshold leave it ready, but each counts
        // (one event each).
        assert!(t.observe(&failure("boom")));
        assert!(t.observe(&failure("boom")));
        assert_eq!(t.state().health, Health::Success);
        assert_eq!(t.state().failures, 2);
        // A success in between restarts the count.
        assert!(t.observe(&Outcome::Success));
        assert!(t.observe(&failure("a")));
        assert!(t.observe(&failure("b")));
        assert_eq!(t.state().health, Health::Success);
        assert!(t.observe(&failure("HTTP probe failed with statuscode: 500")));
        assert_eq!(t.state().health, Health::Failure);
        assert_eq!(
            t.state().last_failure.as_deref(),
            Some("Readiness probe failed: HTTP probe failed with statuscode: 500")
        );
        // Readiness goes on probing.
        assert!(t.observe(&Outcome::Success));
    }

    #[test]
    fn liveness_failure_stops_and_errors_change_nothing() {
        let settings = Settings::from_probe(&Probe::default(), Kind::Liveness);
        let mut t = Tracker::new(Kind::Liveness, &settings);
        assert_eq!(t.state().health, Health::Success, "alive at first");
        assert!(t.observe(&failure("x")));
        assert!(t.observe(&Outcome::Error("couldn't find port: web".into())));
        assert_eq!(t.state().health, Health::Success);
        assert_eq!(
            t.state().last_failure.as_deref(),
            Some("Liveness probe errored: couldn't find port: web")
        );
        assert!(t.observe(&failure("x")));
        assert!(!t.observe(&failure("x")), "third failure: restart");
        assert_eq!(t.state().health, Health::Failure);
        assert_eq!(t.state().failures, 4);
    }

    #[test]
    fn startup_starts_unknown_and_stops_at_a_verdict() {
        let settings = Settings::from_probe(&Probe::default(), Kind::Startup);
        let mut t = Tracker::new(Kind::Startup, &settings);
        assert_eq!(t.state().health, Health::Unknown);
        assert!(t.observe(&failure("not yet")));
        assert_eq!(t.state().health, Health::Unknown);
        assert!(!t.observe(&Outcome::Success));
        assert_eq!(t.state().health, Health::Success);
    }

    #[test]
    fn exec_messages_are_capped() {
        assert_eq!(exec_message(b"out\n", b"err\n"), "out\nerr\n");
        assert_eq!(exec_message(&[b'a'; MAX_OUTPUT], b"more").len(), MAX_OUTPUT);
    }

    async fn serve_once(response: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probes_talk_http() {
        let (port, server) = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
        let outcome = fetch(
            &Url {
                https: false,
                host: "127.0.0.1".into(),
                port,
                path: "/healthz".into(),
            },
            &request_headers(&[]),
        )
        .await;
        assert_eq!(outcome.map(|h| h.status), Ok(200));
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /healthz HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("User-Agent: kube-probe/1.32\r\n"),
            "{request}"
        );
        // Nobody listening: Go's words.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = fetch(
            &Url {
                https: false,
                host: "127.0.0.1".into(),
                port,
                path: "/".into(),
            },
            &[],
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            format!("dial tcp 127.0.0.1:{port}: connect: connection refused")
        );
    }

    #[tokio::test]
    async fn http_probes_follow_local_redirects_and_time_out() {
        let (target_port, target) = serve_once("HTTP/1.1 500 Oops\r\n\r\n").await;
        let redirect: &'static str = Box::leak(
            format!("HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{target_port}/next\r\n\r\n")
                .into_boxed_str(),
        );
        let (port, first) = serve_once(redirect).await;
        let action = HTTPGetAction {
            path: Some("/start".into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        };
        let outcome = http_probe(&action, None, &[], Duration::from_secs(5)).await;
        assert_eq!(
            outcome,
            Outcome::Failure("HTTP probe failed with statuscode: 500".into())
        );
        assert!(first.await.unwrap().starts_with("GET /start "));
        assert!(target.await.unwrap().starts_with("GET /next "));
        // A server that never answers: Go's client timeout.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let action = HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        };
        let outcome = http_probe(
            &action,
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            &[],
            Duration::from_millis(200),
        )
        .await;
        assert_eq!(
            outcome,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": context deadline exceeded \
                 (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        drop(silent);
    }

    #[tokio::test]
    async fn tcp_probes_connect() {
        // No runtime is needed for tcp probes, but Target wants one: only
        // build the pieces and call the tcp probe directly.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ok = tokio::time::timeout(Duration::from_secs(1), dial("127.0.0.1", port)).await;
        assert!(matches!(ok, Ok(Ok(_))));
        drop(listener);
        let refused = dial("127.0.0.1", port).await.unwrap_err();
        assert!(
            refused.ends_with("connect: connection refused"),
            "{refused}"
        );
    }
}
