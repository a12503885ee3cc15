//! The agent's HTTPS server: what the apiserver proxies `kubectl logs`,
//! `kubectl exec` and `kubectl attach` to, on the kubelet's paths and in
//! the kubelet's words (docs/apiserver.md, "The node agent's interface").
//!
//! ```text
//!  apiserver ──TLS, Bearer token──▶ serve()
//!    GET /containerLogs/{ns}/{pod}/{c}?follow&tailLines&…
//!        Registry ──▶ the run's CRI log file ──▶ LogWriter (pure) ──▶ text
//!    GET /exec/{ns}/{pod}/{c}?command=…   (WebSocket, v5/v4.channel.k8s.io)
//!        Runtime::exec ──▶ stdout ─[1]─▶  stderr ─[2]─▶  ◀─[0]─ stdin
//!                          ◀─[4]─ resize  ◀─[255,0]─ stdin closed (v5)
//!        exit code ──▶ [3] metav1.Status (Success / NonZeroExitCode)
//!    GET /attach/{ns}/{pod}/{c}           (WebSocket, same channels)
//!        stdin or tty: Runtime::attach (the shim's attach.sock), spliced
//!          like exec; Success on [3] when the process ends or the client
//!          detaches (its input ended: stdin_end decides)
//!        neither: the container's log from now on, by stream, until the
//!          run ends
//! ```
//!
//! Which runtime container is which pod container comes from the
//! [`Registry`] the pod workers keep; the runtime is reached through the
//! small [`Containers`] trait, so that the server can be tested without
//! root and runc.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path as UrlPath, RawQuery, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::registry::Registry;
use crate::runtime::exec::{ExecReader, ExecWriter};
use crate::runtime::{AttachSession, ExecRequest, ExecSession, Runtime, Status};

/// How often a followed log file is looked at for more lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How much of a log file is read at a time.
const READ_CHUNK: usize = 64 * 1024;
/// How long an exec'd process's output may go on after it exited.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);
/// How long an attached container's output must be quiet, after the
/// client's input ended, before the client detaches when it is not known
/// whether the container's stdin closed with it ([`StdinEnd::DetachWhenQuiet`]).
pub const ATTACH_QUIET: Duration = Duration::from_secs(1);
/// The subprotocols spoken on exec/attach WebSockets, preferred first.
const PROTOCOL_V5: &str = "v5.channel.k8s.io";
const PROTOCOL_V4: &str = "v4.channel.k8s.io";

/// Channel ids of the `channel.k8s.io` protocols: the first byte of each
/// binary message.
mod channel {
    pub const STDIN: u8 = 0;
    pub const STDOUT: u8 = 1;
    pub const STDERR: u8 = 2;
    pub const ERROR: u8 = 3;
    pub const RESIZE: u8 = 4;
    /// v5: `[CLOSE, id]` closes stream `id`.
    pub const CLOSE: u8 = 255;
}

/// Where and how the server listens (`shoal agent` flags).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// kubelet's `--port`; the Node reports it in
    /// `status.daemonEndpoints.kubeletEndpoint.Port`.
    pub port: u16,
    pub bind: IpAddr,
    /// Serving certificate (PEM, chain allowed) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The bearer token the apiserver presents (its `--kubelet-token-file`);
    /// `None` lets every request in.
    pub token: Option<String>,
}

/// What can stop the server from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} holds no usable {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the serving certificate and key do not work together: {0}")]
    Tls(#[from] rustls::Error),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

// ---------------------------------------------------------------------------
// Certificates

/// A self-signed serving certificate for an agent started without
/// `--tls-cert-file`: `agent.crt`/`agent.key` in `dir`, made once and kept.
///
/// The apiserver verifies agents against `--kubelet-certificate-authority`
/// (default: the cluster CA), which did not sign this certificate: point
/// that flag at this `agent.crt` (it is its own CA), or give the agent a
/// certificate signed by the cluster CA (`shoal up` does, with
/// `shoal_apiserver::tls::issue_serving_cert`).
pub fn ensure_self_signed(
    dir: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("agent.crt");
    let key_path = dir.join("agent.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        params
            .subject_alt_names
            .push(rcgen::SanType::DnsName(name.clone().try_into()?));
    }
    for ip in ips {
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(*ip));
    }
    let common_name = names
        .first()
        .cloned()
        .unwrap_or_else(|| "shoal-agent".to_string());
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.self_signed(&key)?;
    write_file(&key_path, &key.serialize_pem(), true)?;
    write_file(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, text: &str, private: bool) -> Result<()> {
    let io = |source| ServerError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600: the key is never readable by others, not even briefly.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
    } else {
        std::fs::write(path, text).map_err(io)
    }
}

/// The TLS configuration from PEM files (HTTP/1.1 only: exec and attach
/// are HTTP/1.1 upgrades, as the apiserver's proxy makes them).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| ServerError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .filter_map(|c| c.ok())
        .collect();
    if certs.is_empty() {
        return Err(ServerError::Pem {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .ok()
        .flatten()
        .ok_or_else(|| ServerError::Pem {
            path: key.to_path_buf(),
            what: "private key",
        })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

// ---------------------------------------------------------------------------
// What the server needs of the runtime

/// A process started for an exec session, its streams taken out.
pub struct ExecStreams {
    pub stdin: Option<ExecWriter>,
    pub stdout: Option<ExecReader>,
    pub stderr: Option<ExecReader>,
    pub control: Box<dyn ExecControl>,
}

/// The rest of an exec session once its streams are taken.
pub trait ExecControl: Send {
    /// Sets the terminal's size (columns, rows).
    fn resize(&self, cols: u16, rows: u16);
    /// The process's exit code, once it ended. Exec sessions poll it in a
    /// loop, dropping it unfinished: it must not lose the code then.
    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>>;
}

/// The container runtime as the server uses it.
pub trait Containers: Send + Sync + 'static {
    /// Is the container still running (or about to)? A followed log ends
    /// once it is not.
    fn is_running(&self, id: &str) -> bool;
    /// Starts a process in the running container `id`.
    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecStreams, String>>;
    /// Connects to the running container `id`'s own process; `None` when
    /// it was created without stdin or a tty (there is nothing to attach
    /// to but its output, which the log has).
    fn attach<'a>(
        &'a self,
        id: &'a str,
        stdin: bool,
    ) -> BoxFuture<'a, Result<Option<AttachStreams>, String>>;
}

/// A container's own process, attached to: its streams (dropping them
/// detaches; the process goes on) and what the runtime says of its stdin.
pub struct AttachStreams {
    pub streams: ExecStreams,
    /// Does the container's stdin close when an attached client's input
    /// ends (`stdinOnce`)? `None` when the runtime does not tell.
    pub stdin_once: Option<bool>,
}

impl ExecControl for ExecSession {
    fn resize(&self, cols: u16, rows: u16) {
        if let Err(e) = ExecSession::resize(self, cols, rows) {
            tracing::debug!(error = %e, "resizing an exec terminal");
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
        Box::pin(async move { ExecSession::wait(self).await.map_err(|e| e.to_string()) })
    }
}

impl ExecControl for AttachSession {
    fn resize(&self, cols: u16, rows: u16) {
        if let Err(e) = AttachSession::resize(self, cols, rows) {
            tracing::debug!(error = %e, "resizing an attached terminal");
        }
    }

    fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
        Box::pin(async move { AttachSession::wait(self).await.map_err(|e| e.to_string()) })
    }
}

impl Containers for Runtime {
    fn is_running(&self, id: &str) -> bool {
        matches!(
            self.status(id),
            Ok(Status::Created | Status::Running { .. })
        )
    }

    fn exec<'a>(
        &'a self,
        id: &'a str,
        request: ExecRequest,
    ) -> BoxFuture<'a, Result<ExecStreams, String>> {
        Box::pin(async move {
            let mut session = Runtime::exec(self, id, &request)
                .await
                .map_err(|e| e.to_string())?;
            Ok(ExecStreams {
                stdin: session.stdin.take(),
                stdout: session.stdout.take(),
                stderr: session.stderr.take(),
                control: Box::new(session),
            })
        })
    }

    fn attach<'a>(
        &'a self,
        id: &'a str,
        stdin: bool,
    ) -> BoxFuture<'a, Result<Option<AttachStreams>, String>> {
        Box::pin(async move {
            let mut session = match Runtime::attach(self, id, stdin).await {
                Ok(session) => session,
                Err(crate::runtime::Error::NotAttachable(_)) => return Ok(None),
                Err(e) => return Err(e.to_string()),
            };
            let stdin_once = session.stdin_once();
            Ok(Some(AttachStreams {
                streams: ExecStreams {
                    stdin: session.stdin.take(),
                    stdout: session.stdout.take(),
                    stderr: session.stderr.take(),
                    control: Box::new(session),
                },
                stdin_once: Some(stdin_once),
            }))
        })
    }
}

// ---------------------------------------------------------------------------
// Serving

#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    containers: Arc<dyn Containers>,
    token: Option<Arc<str>>,
}

/// Serves HTTPS on `config.bind:config.port` until `shutdown` resolves
/// (connections in progress go on until their end).
pub async fn serve(
    config: ServerConfig,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    shutdown: impl Future,
) -> Result<()> {
    let tls = tls_config(&config.cert, &config.key)?;
    let address = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    tracing::info!(%address, "agent server listening");
    serve_listener(listener, tls, config.token, registry, runtime, shutdown).await;
    Ok(())
}

/// [`serve`] on a bound listener with any [`Containers`].
pub async fn serve_listener(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    token: Option<String>,
    registry: Arc<Registry>,
    containers: Arc<dyn Containers>,
    shutdown: impl Future,
) {
    let state = AppState {
        registry,
        containers,
        token: token.map(Arc::from),
    };
    let router = router(state);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "agent server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "agent server: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .with_upgrades();
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "agent server: connection ended");
            }
        });
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(logs))
        .route("/exec/{namespace}/{pod}/{container}", get(exec))
        .route("/attach/{namespace}/{pod}/{container}", get(attach))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}

/// Is `header` (an `Authorization` value) the bearer `token`?
fn bearer_matches(header: Option<&[u8]>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let presented = presented.trim_ascii();
    // Same time whatever the first differing byte is.
    presented.len() == token.len()
        && presented
            .iter()
            .zip(token.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if !bearer_matches(header, token) {
            return Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
    }
    next.run(request).await
}

/// An answer in the kubelet's words: a status and a line of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Refusal {
        Refusal::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.message),
        )
            .into_response()
    }
}

// ---------------------------------------------------------------------------
// Query parameters

fn parse_query(raw: Option<&str>) -> Result<Vec<(String, String)>, Refusal> {
    serde_urlencoded::from_str(raw.unwrap_or_default())
        .map_err(|_| Refusal::bad_request("Unable to decode query."))
}

/// A boolean query value as Kubernetes reads one (Go's `ParseBool`).
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Some(false),
        _ => None,
    }
}

fn last<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn flag(query: &[(String, String)], key: &str) -> Result<bool, Refusal> {
    match last(query, key) {
        None => Ok(false),
        Some(v) => parse_bool(v).ok_or_else(|| Refusal::bad_request("Unable to decode query.")),
    }
}

fn integer(query: &[(String, String)], key: &str) -> Result<Option<i64>, Refusal> {
    last(query, key)
        .map(|v| {
            v.parse::<i64>()
                .map_err(|_| Refusal::bad_request("Unable to decode query."))
        })
        .transpose()
}

/// `PodLogOptions`, as far as the agent uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub tail_lines: Option<u64>,
    pub timestamps: bool,
    /// From `sinceSeconds` (before `now`) or `sinceTime`.
    pub since: Option<jiff::Timestamp>,
    pub limit_bytes: Option<u64>,
}

/// Reads and validates the log query as the kubelet does
/// (`ValidatePodLogOptions`: 422 for values out of range).
pub fn log_options(
    query: &[(String, String)],
    now: jiff::Timestamp,
) -> Result<LogOptions, Refusal> {
    let invalid = |field: &str, value: i64, why: &str| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{field}: Invalid value: {value}: {why}"),
        )
    };
    let tail_lines = match integer(query, "tailLines")? {
        Some(n) if n < 0 => {
            return Err(invalid(
                "tailLines",
                n,
                "must be greater than or equal to 0",
            ))
        }
        n => n.map(|n| n as u64),
    };
    let limit_bytes = match integer(query, "limitBytes")? {
        Some(n) if n < 1 => return Err(invalid("limitBytes", n, "must be greater than 0")),
        n => n.map(|n| n as u64),
    };
    let since_seconds = match integer(query, "sinceSeconds")? {
        Some(n) if n < 1 => return Err(invalid("sinceSeconds", n, "must be greater than 0")),
        n => n,
    };
    let since_time = last(query, "sinceTime")
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map_err(|_| Refusal::bad_request("Unable to decode query."))
        })
        .transpose()?;
    let since = match (since_seconds, since_time) {
        (Some(_), Some(_)) => {
            return Err(Refusal::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ))
        }
        (Some(seconds), None) => Some(
            now.checked_sub(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(jiff::Timestamp::MIN),
        ),
        (None, time) => time,
    };
    Ok(LogOptions {
        follow: flag(query, "follow")?,
        previous: flag(query, "previous")?,
        tail_lines,
        timestamps: flag(query, "timestamps")?,
        since,
        limit_bytes,
    })
}

// ---------------------------------------------------------------------------
// CRI log files (pure)

/// One line of a CRI log file (runtime/log.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: jiff::Timestamp,
    /// `stdout` or `stderr`.
    pub stream: &'a [u8],
    /// `P`: the line goes on in the next entry.
    pub partial: bool,
    pub text: &'a [u8],
}

/// Parses one line of a CRI log file (without its newline).
pub fn parse_entry(line: &[u8]) -> Option<Entry<'_>> {
    let mut fields = line.splitn(4, |&b| b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let stream = fields.next()?;
    let tags = fields.next()?;
    // Tags are `:`-separated; the first says full or partial.
    let partial = match tags.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Entry {
        time,
        stream,
        partial,
        text: fields.next().unwrap_or_default(),
    })
}

/// A time as Go's `time.RFC3339Nano` prints it (kubelet's `--timestamps`
/// format): UTC, trailing zeros of the fraction dropped.
pub fn format_rfc3339_nano(time: jiff::Timestamp) -> String {
    let full = crate::runtime::log::format_time(time);
    // `…:SS.nnnnnnnnnZ`
    let Some(dot) = full.rfind('.') else {
        return full;
    };
    let fraction = full[dot + 1..full.len() - 1].trim_end_matches('0');
    if fraction.is_empty() {
        format!("{}Z", &full[..dot])
    } else {
        format!("{}.{fraction}Z", &full[..dot])
    }
}

/// Where the last `n` lines of the log in `buf` start (a line being one
/// or more entries, the last of them `F`; a trailing run of `P` entries
/// counts as a line too). `buf` is the end of the file, from its start
/// when `whole`; without enough lines in a partial `buf`, `None`: read
/// more. Bytes after the last newline (an entry being written) are not
/// part of any line.
pub fn tail_start(buf: &[u8], whole: bool, n: u64) -> Option<usize> {
    let Some(last_newline) = buf.iter().rposition(|&b| b == b'\n') else {
        return whole.then_some(0);
    };
    let end = last_newline + 1;
    if n == 0 {
        return Some(end);
    }
    // The first whole entry: in a partial buffer, the first bytes are the
    // end of an entry that started before it.
    let first = if whole {
        0
    } else {
        buf.iter().position(|&b| b == b'\n')? + 1
    };
    let mut lines = 0u64;
    let mut entry_end = end;
    let mut is_last = true;
    while entry_end > first {
        let start = buf[first..entry_end - 1]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(first, |i| first + i + 1);
        let partial = parse_entry(&buf[start..entry_end - 1]).is_some_and(|e| e.partial);
        if !partial || is_last {
            if lines == n {
                return Some(entry_end);
            }
            lines += 1;
        }
        is_last = false;
        entry_end = start;
    }
    whole.then_some(0)
}

/// Turns CRI entries into the text kubelet sends for a log request:
/// the lines as written (pieces joined), each prefixed with its time
/// under `timestamps`, entries before `since` left out, at most
/// `limit_bytes` in all.
#[derive(Debug, Clone)]
pub struct LogWriter {
    timestamps: bool,
    since: Option<jiff::Timestamp>,
    remaining: Option<u64>,
    at_line_start: bool,
}

impl LogWriter {
    pub fn new(options: &LogOptions) -> LogWriter {
        LogWriter {
            timestamps: options.timestamps,
            since: options.since,
            remaining: options.limit_bytes,
            at_line_start: true,
        }
    }

    /// Appends what one entry (a line of the file without its newline)
    /// shows to `out`; `false` once `limitBytes` is reached (stop).
    pub fn entry(&mut self, line: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(entry) = parse_entry(line) else {
            // kubelet skips lines it cannot parse.
            return true;
        };
        let starts_line = self.at_line_start;
        self.at_line_start = !entry.partial;
        if self.since.is_some_and(|since| entry.time < since) {
            return true;
        }
        let mut piece = Vec::with_capacity(entry.text.len() + 32);
        if self.timestamps && starts_line {
            piece.extend_from_slice(format_rfc3339_nano(entry.time).as_bytes());
            piece.push(b' ');
        }
        piece.extend_from_slice(entry.text);
        if !entry.partial {
            piece.push(b'\n');
        }
        match &mut self.remaining {
            None => {
                out.extend_from_slice(&piece);
                true
            }
            Some(remaining) => {
                let n = piece
                    .len()
                    .min(usize::try_from(*remaining).unwrap_or(usize::MAX));
                out.extend_from_slice(&piece[..n]);
                *remaining -= n as u64;
                *remaining > 0
            }
        }
    }

    /// Appends the output of a chunk of whole entries (newline-ended).
    pub fn entries(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> bool {
        for line in chunk.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\n").unwrap_or(line);
            if !self.entry(line, out) {
                return false;
            }
        }
        true
    }
}

// ---------------------------------------------------------------------------
// Reading log files

/// Says when a followed run is over: another run became current (the
/// container restarted), the pod is gone, or the process ended.
struct RunWatch {
    registry: Arc<Registry>,
    containers: Arc<dyn Containers>,
    namespace: String,
    pod: String,
    container: String,
    id: String,
}

impl RunWatch {
    fn ended(&self) -> bool {
        let current = self
            .registry
            .container(&self.namespace, &self.pod, &self.container)
            .and_then(|runs| runs.current);
        current.is_none_or(|run| run.id != self.id) || !self.containers.is_running(&self.id)
    }
}

/// Reads a log file from an offset in chunks of whole entries, and with
/// a [`RunWatch`] goes on as the file grows until the run ended and the
/// file is read to its end.
struct LogReader {
    path: PathBuf,
    file: Option<tokio::fs::File>,
    position: u64,
    pending: Vec<u8>,
    follow: Option<RunWatch>,
    ending: bool,
    draining: bool,
}

impl LogReader {
    fn new(path: PathBuf, position: u64, follow: Option<RunWatch>) -> LogReader {
        LogReader {
            path,
            file: None,
            position,
            pending: Vec::new(),
            follow,
            ending: false,
            draining: false,
        }
    }

    /// Whether the file at the path is no longer the one being read (the
    /// log rotated, see `runtime::log::LogFile`).
    async fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = &self.file else {
            return false;
        };
        match (file.metadata().await, tokio::fs::metadata(&self.path).await) {
            (Ok(open), Ok(named)) => open.ino() != named.ino(),
            _ => false,
        }
    }

    /// The next whole entries (newline-ended), or `None` at the end.
    async fn next(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if self.file.is_none() {
                if let Ok(mut file) = tokio::fs::File::open(&self.path).await {
                    if file.seek(io::SeekFrom::Start(self.position)).await.is_ok() {
                        self.file = Some(file);
                    }
                }
            }
            let n = match &mut self.file {
                Some(file) => file.read(&mut buf).await.unwrap_or(0),
                None => 0,
            };
            if n > 0 {
                self.position += n as u64;
                self.pending.extend_from_slice(&buf[..n]);
                if let Some(i) = self.pending.iter().rposition(|&b| b == b'\n') {
                    let rest = self.pending.split_off(i + 1);
                    return Some(std::mem::replace(&mut self.pending, rest));
                }
                continue;
            }
            // At the end of what is written so far.
            let watch = self.follow.as_ref()?;
            if self.ending {
                return None;
            }
            // Rotated (the path is a new file): one more read of the old
            // one for what reached it before the rename, then the new one
            // from its start.
            if self.rotated().await {
                if !self.draining {
                    self.draining = true;
                    continue;
                }
                self.draining = false;
                self.file = None;
                self.position = 0;
                continue;
            }
            // Checked before one last read, so that lines written just
            // before the run ended are not lost.
            if watch.ended() {
                self.ending = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

/// Where reading starts for the last `n` lines of the file at `path`
/// (reading back from its end as far as needed).
async fn tail_offset(path: &Path, n: Option<u64>) -> io::Result<u64> {
    let Some(n) = n else {
        return Ok(0);
    };
    let mut file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let len = file.metadata().await?.len();
    let mut size = READ_CHUNK as u64;
    loop {
        let start = len.saturating_sub(size);
        file.seek(io::SeekFrom::Start(start)).await?;
        let mut buf = Vec::with_capacity((len - start) as usize);
        (&mut file).take(len - start).read_to_end(&mut buf).await?;
        if let Some(offset) = tail_start(&buf, start == 0, n) {
            return Ok(start + offset as u64);
        }
        size = size.saturating_mul(2);
    }
}

// ---------------------------------------------------------------------------
// Logs

/// `GET /containerLogs/{namespace}/{pod}/{container}`.
async fn logs(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, Refusal> {
    let query = parse_query(raw.as_deref())?;
    let options = log_options(&query, jiff::Timestamp::now())?;
    let runs = state
        .registry
        .container(&namespace, &pod, &container)
        .ok_or_else(|| not_available(&container, &pod))?;
    let run = if options.previous {
        runs.previous.ok_or_else(|| {
            Refusal::bad_request(format!(
                "previous terminated container {container:?} in pod {pod:?} not found"
            ))
        })?
    } else {
        runs.current.ok_or_else(|| {
            Refusal::bad_request(format!(
                "container {container:?} in pod {pod:?} is waiting to start: ContainerCreating"
            ))
        })?
    };
    let start = tail_offset(&run.log_path, options.tail_lines)
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to read the log of container {container:?}: {e}"),
            )
        })?;
    // A previous run is over: nothing to follow.
    let follow = (options.follow && !options.previous).then(|| RunWatch {
        registry: state.registry.clone(),
        containers: state.containers.clone(),
        namespace,
        pod,
        container,
        id: run.id.clone(),
    });
    let mut reader = LogReader::new(run.log_path, start, follow);
    let mut writer = LogWriter::new(&options);
    let (tx, mut rx) = mpsc::channel::<Bytes>(8);
    tokio::spawn(async move {
        loop {
            let chunk = tokio::select! {
                chunk = reader.next() => chunk,
                // The client went away.
                _ = tx.closed() => return,
            };
            let Some(chunk) = chunk else { return };
            let mut out = Vec::new();
            let go_on = writer.entries(&chunk, &mut out);
            if !out.is_empty() && tx.send(Bytes::from(out)).await.is_err() {
                return;
            }
            if !go_on {
                return;
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|chunk| chunk.map(Ok::<_, std::convert::Infallible>))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

fn not_available(container: &str, pod: &str) -> Refusal {
    Refusal::new(
        StatusCode::NOT_FOUND,
        format!("container {container:?} in pod {pod:?} is not available"),
    )
}

// ---------------------------------------------------------------------------
// Exec and attach

/// The query of an exec or attach request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Reads an exec/attach query as the kubelet does.
pub fn stream_options(query: &[(String, String)]) -> Result<StreamOptions, Refusal> {
    let mut options = StreamOptions {
        command: query
            .iter()
            .filter(|(k, _)| k == "command")
            .map(|(_, v)| v.clone())
            .collect(),
        stdin: flag(query, "stdin")?,
        stdout: flag(query, "stdout")?,
        stderr: flag(query, "stderr")?,
        tty: flag(query, "tty")?,
    };
    if !options.stdin && !options.stdout && !options.stderr {
        return Err(Refusal::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    // A terminal has one output stream (kubelet drops stderr too).
    if options.tty {
        options.stderr = false;
    }
    Ok(options)
}

/// `metav1.Status` for the error channel at the end of a session, as
/// kubelet writes it (client-go turns `NonZeroExitCode` into the exit
/// code kubectl exits with).
pub fn exit_status(code: i32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit status {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// `apierrors.NewInternalError(err)` as a status for the error channel.
pub fn internal_error_status(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The terminal size of a resize message (`{"Width":…,"Height":…}`).
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    struct Size {
        #[serde(rename = "Width")]
        width: u16,
        #[serde(rename = "Height")]
        height: u16,
    }
    let size: Size = serde_json::from_slice(data).ok()?;
    Some((size.width, size.height))
}

/// The WebSocket upgrade with our subprotocol, or why not.
fn upgrade(ws: Result<WebSocketUpgrade, String>) -> Result<(WebSocketUpgrade, bool), Refusal> {
    let ws = ws.map_err(|why| {
        Refusal::bad_request(format!(
            "unable to upgrade: {why} (this agent speaks WebSocket, {PROTOCOL_V5} or {PROTOCOL_V4})"
        ))
    })?;
    let ws = ws.protocols([PROTOCOL_V5, PROTOCOL_V4]);
    let v5 = match ws.selected_protocol().map(|p| p.as_bytes()) {
        Some(p) if p == PROTOCOL_V5.as_bytes() => true,
        Some(_) => false,
        None => {
            let offered: Vec<String> = ws
                .requested_protocols()
                .map(|p| String::from_utf8_lossy(p.as_bytes()).into_owned())
                .collect();
            return Err(Refusal::bad_request(format!(
                "unable to upgrade: unsupported protocol(s) [{}]; this agent speaks {PROTOCOL_V5} and {PROTOCOL_V4}",
                offered.join(", ")
            )));
        }
    };
    Ok((ws, v5))
}

async fn websocket(request: Request) -> Result<WebSocketUpgrade, String> {
    let (mut parts, _) = request.into_parts();
    WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|rejection| rejection.body_text())
}

/// The running run of a container, for exec and attach.
fn running_run(
    state: &AppState,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, Refusal> {
    if state.registry.containers_of(namespace, pod).is_none() {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "pod does not exist"));
    }
    state
        .registry
        .container(namespace, pod, container)
        .and_then(|runs| runs.current)
        .map(|run| run.id)
        .filter(|id| state.containers.is_running(id))
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::NOT_FOUND,
                format!("container not found ({container:?})"),
            )
        })
}

/// `GET /exec/{namespace}/{pod}/{container}`.
async fn exec(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, Refusal> {
    let options = stream_options(&parse_query(raw.as_deref())?)?;
    if options.command.is_empty() {
        return Err(Refusal::bad_request(
            "you must specify at least one command for the container",
        ));
    }
    let id = running_run(&state, &namespace, &pod, &container)?;
    let (ws, v5) = upgrade(websocket(request).await)?;
    let containers = state.containers.clone();
    let span = tracing::debug_span!("exec", pod = %format!("{namespace}/{pod}"), %container);
    Ok(ws.on_upgrade(move |socket| {
        async move {
            let request = ExecRequest {
                command: options.command.clone(),
                tty: options.tty,
                stdin: options.stdin,
            };
            match containers.exec(&id, request).await {
                Ok(streams) => run_session(socket, v5, &options, streams, SessionKind::Exec).await,
                Err(e) => {
                    let status = internal_error_status(&format!(
                        "error executing command in container: {e}"
                    ));
                    let _ = finish(socket, &status).await;
                }
            }
        }
        .instrument(span)
    }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(data.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(data);
    Message::Binary(Bytes::from(bytes))
}

/// A close frame with code 1000: client-go takes any other (even one
/// without a code, 1005) for an error after the status.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

/// Sends the final status and closes the socket.
async fn finish(mut socket: WebSocket, status: &serde_json::Value) -> Result<(), axum::Error> {
    let json = serde_json::to_vec(status).unwrap_or_default();
    socket.send(frame(channel::ERROR, &json)).await?;
    socket.send(normal_close()).await?;
    // Let the client read the close before the connection goes.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    Ok(())
}

/// How a session takes the end of the client's input (v5's close of
/// stdin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdinEnd {
    /// The process reads the end of its input and the session ends with
    /// the process (exec; attach to a `stdinOnce` container without a
    /// terminal, whose stdin closes with the client's).
    WaitForExit,
    /// The client detaches: the session ends, the process goes on.
    Detach,
    /// Not known which of the two: output is shown while it comes, and
    /// the client detaches once it has been quiet for [`ATTACH_QUIET`].
    DetachWhenQuiet,
}

/// What the end of an attached client's input means, as containerd's
/// attach decides it: with `stdinOnce` and no terminal the container's
/// stdin closes and its output is shown to the end; otherwise the client
/// detaches.
pub fn stdin_end(tty: bool, stdin_once: Option<bool>) -> StdinEnd {
    match (tty, stdin_once) {
        (true, _) | (false, Some(false)) => StdinEnd::Detach,
        (false, Some(true)) => StdinEnd::WaitForExit,
        (false, None) => StdinEnd::DetachWhenQuiet,
    }
}

/// What is on the other end of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionKind {
    /// A process started for the session: its exit code is the status.
    Exec,
    /// The container's own process: the status is Success however it
    /// ends (kubelet's attach reports no exit code; `kubectl run` reads
    /// it from the pod).
    Attach(StdinEnd),
}

/// Copies an output stream of the process to its channel.
async fn pump(
    mut reader: ExecReader,
    channel: u8,
    out: mpsc::Sender<Message>,
    activity: Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(frame(channel, &buf[..n])).await.is_err() {
                    return;
                }
                activity.notify_one();
            }
        }
    }
}

/// Moves a session's bytes between the socket and the process until the
/// process ended and its output is sent (or, attached, the client
/// detached), then sends the status.
async fn run_session(
    socket: WebSocket,
    v5: bool,
    options: &StreamOptions,
    mut streams: ExecStreams,
    kind: SessionKind,
) {
    let (mut sink, mut incoming) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);

    // kubelet's first message: an empty one on the lowest output channel,
    // which tells the client the streams are set up.
    let first = if options.stdout {
        channel::STDOUT
    } else if options.stderr {
        channel::STDERR
    } else {
        channel::ERROR
    };
    let _ = out_tx.send(frame(first, &[])).await;

    let activity = Arc::new(tokio::sync::Notify::new());
    let mut pumps = tokio::task::JoinSet::new();
    if let Some(stdout) = streams.stdout.take() {
        if options.stdout {
            pumps.spawn(pump(
                stdout,
                channel::STDOUT,
                out_tx.clone(),
                activity.clone(),
            ));
        } else {
            pumps.spawn(drain(stdout));
        }
    }
    if let Some(stderr) = streams.stderr.take() {
        if options.stderr {
            pumps.spawn(pump(
                stderr,
                channel::STDERR,
                out_tx.clone(),
                activity.clone(),
            ));
        } else {
            pumps.spawn(drain(stderr));
        }
    }

    // A client that did not ask for stdin leaves the process's alone:
    // closing it would close a `stdinOnce` container's stdin. (Declared
    // before `control`, so it is dropped after it.)
    let mut stdin = streams.stdin.take();
    let _untouched_stdin = if options.stdin { None } else { stdin.take() };

    // Socket → process: stdin, resizes, v5 close.
    let (resize_tx, mut resize_rx) = mpsc::unbounded_channel::<(u16, u16)>();
    let (gone_tx, mut client_gone) = tokio::sync::oneshot::channel::<()>();
    let (ended_tx, mut stdin_ended) = tokio::sync::oneshot::channel::<()>();
    let mut reader = tokio::spawn(async move {
        let mut ended_tx = Some(ended_tx);
        while let Some(Ok(message)) = incoming.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some((&id, payload)) = data.split_first() else {
                continue;
            };
            match id {
                channel::STDIN => {
                    if let Some(w) = &mut stdin {
                        if w.write_all(payload).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                channel::RESIZE => {
                    if let Some(size) = parse_resize(payload) {
                        let _ = resize_tx.send(size);
                    }
                }
                channel::CLOSE if v5 && payload.first() == Some(&channel::STDIN) => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                    if let Some(tx) = ended_tx.take() {
                        let _ = tx.send(());
                    }
                }
                _ => {}
            }
        }
        // The client closed or is gone.
        if let Some(mut w) = stdin.take() {
            let _ = w.shutdown().await;
        }
        let _ = gone_tx.send(());
    });

    // Process → socket; the socket is written from here only.
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
        sink
    });
    drop(out_tx);

    let on_stdin_end = match kind {
        SessionKind::Exec => StdinEnd::WaitForExit,
        SessionKind::Attach(end) => end,
    };
    // An attached process's output ends only when it ended (or its shim
    // went away), and AttachSession::wait loses the exit code if it is
    // dropped before it finished: the output decides.
    let waits = kind == SessionKind::Exec;
    let mut control = streams.control;
    let mut exit = None;
    let mut outputs_finished = false;
    {
        let outputs_done = async { while pumps.join_next().await.is_some() {} };
        tokio::pin!(outputs_done);
        // Output still coming after the process ended is a background child
        // of it holding the pipes: it gets a moment, not forever.
        let grace = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(grace);
        // Armed once the client's input ended and the session detaches
        // when output is quiet.
        let quiet = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(quiet);
        let mut quiet_armed = false;
        let mut stdin_done = on_stdin_end == StdinEnd::WaitForExit;
        loop {
            if outputs_finished && (exit.is_some() || !waits) {
                break;
            }
            tokio::select! {
                Some((cols, rows)) = resize_rx.recv() => control.resize(cols, rows),
                _ = &mut outputs_done, if !outputs_finished => outputs_finished = true,
                // (select! makes the futures of disabled branches too: this
                // one calls wait only when polled.)
                code = async { control.wait().await }, if waits && exit.is_none() => {
                    tracing::debug!(?code, "the process ended");
                    exit = Some(code);
                    grace.as_mut().reset(tokio::time::Instant::now() + OUTPUT_GRACE);
                }
                _ = &mut grace, if exit.is_some() => break,
                // The client went away: dropping the session ends an exec'd
                // process and detaches an attached one.
                _ = &mut client_gone, if exit.is_none() => {
                    tracing::debug!("the client went away");
                    reader.abort();
                    return;
                }
                ended = &mut stdin_ended, if !stdin_done => {
                    stdin_done = true;
                    if ended.is_ok() {
                        match on_stdin_end {
                            StdinEnd::WaitForExit => {}
                            StdinEnd::Detach => {
                                tracing::debug!("the client's input ended: detached");
                                break;
                            }
                            StdinEnd::DetachWhenQuiet => {
                                quiet_armed = true;
                                quiet.as_mut().reset(tokio::time::Instant::now() + ATTACH_QUIET);
                            }
                        }
                    }
                }
                _ = activity.notified(), if quiet_armed => {
                    quiet.as_mut().reset(tokio::time::Instant::now() + ATTACH_QUIET);
                }
                _ = &mut quiet, if quiet_armed && exit.is_none() => {
                    tracing::debug!("the client's input ended and output is quiet: detached");
                    break;
                }
            }
        }
    }
    if !waits && outputs_finished {
        if let Ok(code) = tokio::time::timeout(OUTPUT_GRACE, control.wait()).await {
            tracing::debug!(?code, "the attached process ended");
        }
    }
    // Their senders must go for the writer to end.
    pumps.abort_all();
    let Ok(mut sink) = writer.await else {
        return;
    };
    let status = match kind {
        SessionKind::Attach(_) => exit_status(0),
        SessionKind::Exec => match exit {
            Some(Ok(code)) => exit_status(code),
            Some(Err(e)) => {
                internal_error_status(&format!("error executing command in container: {e}"))
            }
            None => internal_error_status(
                "error executing command in container: the process did not end",
            ),
        },
    };
    let json = serde_json::to_vec(&status).unwrap_or_default();
    let _ = sink.send(frame(channel::ERROR, &json)).await;
    let _ = sink.send(normal_close()).await;
    // The client answers the close (its reader sees it and ends); then
    // the connection may go.
    let _ = tokio::time::timeout(Duration::from_secs(1), &mut reader).await;
    reader.abort();
}

/// Reads a stream nobody asked for: the process must not block on a full
/// pipe.
async fn drain(mut reader: ExecReader) {
    let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
}

/// `GET /attach/{namespace}/{pod}/{container}`. A container created with
/// stdin or a tty is attached to through the runtime (its terminal, its
/// stdin, its output, as `kubectl run -it` wants); one with neither has
/// only its output, shown from its log from now on until the run ends
/// (stdin from the client is then read and dropped, as containerd does).
async fn attach(
    State(state): State<AppState>,
    UrlPath((namespace, pod, container)): UrlPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> Result<Response, Refusal> {
    let options = stream_options(&parse_query(raw.as_deref())?)?;
    let id = running_run(&state, &namespace, &pod, &container)?;
    let log_path = state
        .registry
        .container(&namespace, &pod, &container)
        .and_then(|runs| runs.current)
        .map(|run| run.log_path)
        .ok_or_else(|| not_available(&container, &pod))?;
    let start = tail_offset(&log_path, Some(0)).await.unwrap_or(0);
    let (ws, v5) = upgrade(websocket(request).await)?;
    let span = tracing::debug_span!("attach", pod = %format!("{namespace}/{pod}"), %container);
    let containers = state.containers.clone();
    let watch = RunWatch {
        registry: state.registry.clone(),
        containers: state.containers.clone(),
        namespace,
        pod,
        container,
        id: id.clone(),
    };
    Ok(ws.on_upgrade(move |socket| {
        async move {
            match containers.attach(&id, options.stdin).await {
                Ok(Some(attached)) => {
                    let kind = SessionKind::Attach(stdin_end(options.tty, attached.stdin_once));
                    run_session(socket, v5, &options, attached.streams, kind).await;
                }
                Ok(None) => {
                    let reader = LogReader::new(log_path, start, Some(watch));
                    stream_log(socket, &options, reader).await;
                }
                Err(e) => {
                    let status =
                        internal_error_status(&format!("error attaching to container: {e}"));
                    let _ = finish(socket, &status).await;
                }
            }
        }
        .instrument(span)
    }))
}

/// Attach to a container without stdin or a tty: its log from `reader`,
/// by stream, until the run ends.
async fn stream_log(socket: WebSocket, options: &StreamOptions, mut reader: LogReader) {
    let (mut sink, mut incoming) = socket.split();
    let first = if options.stdout {
        channel::STDOUT
    } else {
        channel::STDERR
    };
    if sink.send(frame(first, &[])).await.is_err() {
        return;
    }
    loop {
        let chunk = tokio::select! {
            chunk = reader.next() => chunk,
            message = incoming.next() => match message {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
        };
        let Some(chunk) = chunk else { break };
        for line in chunk.split(|&b| b == b'\n') {
            let Some(entry) = parse_entry(line) else {
                continue;
            };
            let channel = match entry.stream {
                b"stderr" if options.stderr => channel::STDERR,
                b"stdout" if options.stdout => channel::STDOUT,
                _ => continue,
            };
            let mut data = entry.text.to_vec();
            if !entry.partial {
                data.push(b'\n');
            }
            if sink.send(frame(channel, &data)).await.is_err() {
                return;
            }
        }
    }
    let json = serde_json::to_vec(&exit_status(0)).unwrap_or_default();
    let _ = sink.send(frame(channel::ERROR, &json)).await;
    let _ = sink.send(normal_close()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().unwrap()
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const LOG: &[u8] = b"2026-11-29T19:00:00.000000000Z stdout F one\n\
2026-11-29T19:00:01.500000000Z stderr F two\n\
2026-11-29T19:00:02.000000000Z stdout P thr\n\
2026-11-29T19:00:02.100000000Z stdout F ee\n\
2026-11-29T19:00:03.000000000Z stdout F four\n";

    fn render(options: &LogOptions, log: &[u8]) -> String {
        let mut out = Vec::new();
        LogWriter::new(options).entries(log, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn entries_parse_and_bad_lines_do_not() {
        let e = parse_entry(b"2026-11-29T19:00:00.000000000Z stderr P hi there").unwrap();
        assert_eq!(e.stream, b"stderr");
        assert!(e.partial);
        assert_eq!(e.text, b"hi there");
        assert_eq!(
            parse_entry(b"2026-11-29T19:00:00Z stdout F").unwrap().text,
            b""
        );
        assert!(parse_entry(b"garbage").is_none());
        assert!(parse_entry(b"2026-11-29T19:00:00Z stdout X text").is_none());
    }

    #[test]
    fn times_print_as_go_rfc3339nano() {
        assert_eq!(
            format_rfc3339_nano(ts("2026-11-29T19:00:00Z")),
            "2026-11-29T19:00:00Z"
        );
        assert_eq!(
            format_rfc3339_nano(ts("2026-11-29T19:00:01.500000000Z")),
            "2026-11-29T19:00:01.5Z"
        );
        assert_eq!(
            format_rfc3339_nano(ts("2026-11-29T19:00:01.000000123Z")),
            "2026-11-29T19:00:01.000000123Z"
        );
    }

    #[test]
    fn logs_join_pieces_and_prefix_times_once_per_line() {
        let plain = render(&LogOptions::default(), LOG);
        assert_eq!(plain, "one\ntwo\nthree\nfour\n");
        let stamped = render(
            &LogOptions {
                timestamps: true,
                ..Default::default()
            },
            LOG,
        );
        assert_eq!(
            stamped,
            "2026-11-29T19:00:00Z one\n2026-11-29T19:00:01.5Z two\n2026-11-29T19:00:02Z three\n2026-11-29T19:00:03Z four\n"
        );
    }

    #[test]
    fn since_and_limit_bytes_cut_like_kubelet() {
        let since = render(
            &LogOptions {
                since: Some(ts("2026-11-29T19:00:01Z")),
                ..Default::default()
            },
            LOG,
        );
        assert_eq!(since, "two\nthree\nfour\n");
        let mut writer = LogWriter::new(&LogOptions {
            limit_bytes: Some(6),
            ..Default::default()
        });
        let mut out = Vec::new();
        assert!(!writer.entries(LOG, &mut out));
        assert_eq!(out, b"one\ntw");
    }

    #[test]
    fn tail_counts_lines_not_pieces() {
        let rest =
            |n| String::from_utf8(LOG[tail_start(LOG, true, n).unwrap()..].to_vec()).unwrap();
        assert_eq!(render(&LogOptions::default(), rest(1).as_bytes()), "four\n");
        assert_eq!(
            render(&LogOptions::default(), rest(2).as_bytes()),
            "three\nfour\n"
        );
        assert_eq!(render(&LogOptions::default(), rest(0).as_bytes()), "");
        assert_eq!(
            render(&LogOptions::default(), rest(10).as_bytes()),
            "one\ntwo\nthree\nfour\n"
        );
        // An entry being written is no line yet.
        let mut growing = LOG.to_vec();
        growing.extend_from_slice(b"2026-11-29T19:00:04Z stdout F fi");
        assert_eq!(tail_start(&growing, true, 0), Some(LOG.len()));
        assert_eq!(tail_start(&growing, true, 1), tail_start(LOG, true, 1));
        // A buffer from the middle of the file: more is needed for lines
        // that may start before it.
        let middle = &LOG[10..];
        assert!(tail_start(middle, false, 1).is_some());
        assert_eq!(tail_start(middle, false, 4), None);
        assert_eq!(tail_start(b"", true, 3), Some(0));
    }

    #[test]
    fn log_queries_are_read_and_checked_like_kubelet() {
        let now = ts("2026-11-29T19:00:10Z");
        let options = log_options(
            &q(&[
                ("follow", "true"),
                ("tailLines", "5"),
                ("timestamps", "1"),
                ("sinceSeconds", "10"),
                ("limitBytes", "100"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(
            options,
            LogOptions {
                follow: true,
                previous: false,
                tail_lines: Some(5),
                timestamps: true,
                since: Some(ts("2026-11-29T19:00:00Z")),
                limit_bytes: Some(100),
            }
        );
        let since_time = log_options(&q(&[("sinceTime", "2026-11-29T18:00:00Z")]), now).unwrap();
        assert_eq!(since_time.since, Some(ts("2026-11-29T18:00:00Z")));
        let err = log_options(&q(&[("tailLines", "-1")]), now).unwrap_err();
        assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            err.message,
            "tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let both = log_options(
            &q(&[("sinceSeconds", "1"), ("sinceTime", "2026-11-29T18:00:00Z")]),
            now,
        )
        .unwrap_err();
        assert_eq!(both.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            log_options(&q(&[("follow", "maybe")]), now)
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn stream_queries_need_a_stream_and_a_terminal_has_one_output() {
        let options = stream_options(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "exit 3"),
            ("stdout", "1"),
            ("stderr", "1"),
            ("tty", "1"),
        ]))
        .unwrap();
        assert_eq!(options.command, ["sh", "-c", "exit 3"]);
        assert!(options.stdout && !options.stderr && options.tty);
        let err = stream_options(&q(&[("command", "ls")])).unwrap_err();
        assert_eq!(
            err.message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }

    #[test]
    fn exit_statuses_are_what_client_go_reads() {
        assert_eq!(
            exit_status(0),
            serde_json::json!({"metadata": {}, "status": "Success"})
        );
        let failed = exit_status(3);
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(
            failed["details"]["causes"],
            serde_json::json!([{"reason": "ExitCode", "message": "3"}])
        );
        assert_eq!(
            parse_resize(br#"{"Width":120,"Height":40}"#),
            Some((120, 40))
        );
        assert_eq!(parse_resize(b"nonsense"), None);
    }

    #[test]
    fn the_end_of_an_attached_clients_input_is_what_containerd_makes_it() {
        // stdinOnce without a terminal: the container's stdin closes too,
        // and its output is shown to the end.
        assert_eq!(stdin_end(false, Some(true)), StdinEnd::WaitForExit);
        // Otherwise the client detaches and the process goes on.
        assert_eq!(stdin_end(false, Some(false)), StdinEnd::Detach);
        assert_eq!(stdin_end(true, Some(true)), StdinEnd::Detach);
        assert_eq!(stdin_end(true, None), StdinEnd::Detach);
        assert_eq!(stdin_end(false, None), StdinEnd::DetachWhenQuiet);
    }

    #[test]
    fn bearer_tokens_must_match_exactly() {
        assert!(bearer_matches(Some(b"Bearer abc"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer abd"), "abc"));
        assert!(!bearer_matches(Some(b"Bearer ab"), "abc"));
        assert!(!bearer_matches(Some(b"Basic abc"), "abc"));
        assert!(!bearer_matches(None, "abc"));
    }

    #[test]
    fn self_signed_certificates_load_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), &["node-1".into()], &[ip]).unwrap();
        tls_config(&cert, &key).unwrap();
        let before = std::fs::read(&cert).unwrap();
        ensure_self_signed(dir.path(), &[], &[]).unwrap();
        assert_eq!(before, std::fs::read(&cert).unwrap());
    }

    // -- In-process server ------------------------------------------------

    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::super::registry::Run;
    use tokio::io::{AsyncRead, AsyncWrite};

    /// A runtime whose containers run as long as `running` says and whose
    /// exec runs the command on the host (`sh`), enough to drive the
    /// protocol.
    struct FakeContainers {
        running: AtomicBool,
        /// What `attach` connects to: a host command standing for the
        /// container's process and its `stdin_once`; `None`: a container
        /// without stdin or tty.
        attachable: std::sync::Mutex<Option<(Vec<String>, Option<bool>)>>,
    }

    fn host_process(command: &[String], stdin: bool) -> Result<ExecStreams, String> {
        let mut child = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(if stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        Ok(ExecStreams {
            stdin: child.stdin.take().map(|w| Box::pin(w) as ExecWriter),
            stdout: child.stdout.take().map(|r| Box::pin(r) as ExecReader),
            stderr: child.stderr.take().map(|r| Box::pin(r) as ExecReader),
            control: Box::new(HostProcess(child)),
        })
    }

    struct HostProcess(tokio::process::Child);

    impl ExecControl for HostProcess {
        fn resize(&self, _cols: u16, _rows: u16) {}
        fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
            Box::pin(async move {
                let status = self.0.wait().await.map_err(|e| e.to_string())?;
                Ok(status.code().unwrap_or(255))
            })
        }
    }

    struct OnceWait(Option<Box<dyn ExecControl>>);

    impl ExecControl for OnceWait {
        fn resize(&self, _cols: u16, _rows: u16) {}
        fn wait(&mut self) -> BoxFuture<'_, Result<i32, String>> {
            let taken = self.0.take();
            Box::pin(async move {
                let mut control = taken.ok_or("already waited")?;
                control.wait().await
            })
        }
    }

    impl Containers for FakeContainers {
        fn is_running(&self, _id: &str) -> bool {
            self.running.load(Ordering::SeqCst)
        }
        fn exec<'a>(
            &'a self,
            _id: &'a str,
            request: ExecRequest,
        ) -> BoxFuture<'a, Result<ExecStreams, String>> {
            Box::pin(async move { host_process(&request.command, request.stdin) })
        }
        fn attach<'a>(
            &'a self,
            _id: &'a str,
            _stdin: bool,
        ) -> BoxFuture<'a, Result<Option<AttachStreams>, String>> {
            let attachable = self.attachable.lock().unwrap().clone();
            Box::pin(async move {
                let Some((command, stdin_once)) = attachable else {
                    return Ok(None);
                };
                let mut streams = host_process(&command, true)?;
                // Like AttachSession: a wait dropped unfinished loses the code.
                streams.control = Box::new(OnceWait(Some(streams.control)));
                Ok(Some(AttachStreams {
                    streams,
                    stdin_once,
                }))
            })
        }
    }

    struct TestServer {
        address: SocketAddr,
        client: Arc<rustls::ClientConfig>,
        registry: Arc<Registry>,
        containers: Arc<FakeContainers>,
        dir: tempfile::TempDir,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn start() -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let (cert, key) = ensure_self_signed(dir.path(), &[], &[ip]).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pemfile::certs(&mut std::fs::read(&cert).unwrap().as_slice()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let registry = Arc::new(Registry::default());
        let containers = Arc::new(FakeContainers {
            running: AtomicBool::new(true),
            attachable: std::sync::Mutex::new(None),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_listener(
            listener,
            tls_config(&cert, &key).unwrap(),
            Some("secret".into()),
            registry.clone(),
            containers.clone(),
            stopped,
        ));
        TestServer {
            address,
            client: Arc::new(client),
            registry,
            containers,
            dir,
            _stop: stop,
        }
    }

    impl TestServer {
        async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
            let tcp = tokio::net::TcpStream::connect(self.address).await.unwrap();
            let name = rustls::pki_types::ServerName::from(self.address.ip());
            tokio_rustls::TlsConnector::from(self.client.clone())
                .connect(name, tcp)
                .await
                .unwrap()
        }

        /// GET `path`; the status and the whole body.
        async fn get(&self, path: &str, token: &str) -> (u16, String) {
            let tls = self.connect().await;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .unwrap();
            tokio::spawn(connection);
            let request = axum::http::Request::get(path)
                .header(header::HOST, "agent")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(Body::new(response.into_body()), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        fn add_run(&self, id: &str, log: &[u8]) -> PathBuf {
            let log_path = self.dir.path().join(format!("{id}.log"));
            std::fs::write(&log_path, log).unwrap();
            self.registry.started(
                "ns",
                "p",
                "uid",
                "c",
                Run {
                    id: id.into(),
                    log_path: log_path.clone(),
                },
            );
            log_path
        }
    }

    #[tokio::test]
    async fn logs_over_https() {
        let server = start().await;
        server.add_run("run1", LOG);

        let (status, body) = server.get("/containerLogs/ns/p/c", "wrong").await;
        assert_eq!((status, body.as_str()), (401, "Unauthorized\n"));

        let (status, body) = server.get("/containerLogs/ns/p/c", "secret").await;
        assert_eq!((status, body.as_str()), (200, "one\ntwo\nthree\nfour\n"));

        let (status, body) = server
            .get(
                "/containerLogs/ns/p/c?tailLines=2&timestamps=true",
                "secret",
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            "2026-11-29T19:00:02Z three\n2026-11-29T19:00:03Z four\n"
        );

        let (status, body) = server
            .get("/containerLogs/ns/p/c?previous=true", "secret")
            .await;
        assert_eq!(status, 400);
        assert_eq!(
            body.trim(),
            r#"previous terminated container "c" in pod "p" not found"#
        );

        let (status, body) = server.get("/containerLogs/ns/p/other", "secret").await;
        assert_eq!(status, 404);
        assert_eq!(
            body.trim(),
            r#"container "other" in pod "p" is not available"#
        );

        // A second run: the first one is `previous` now.
        server.add_run("run2", b"2026-11-29T19:01:00Z stdout F again\n");
        let (_, body) = server
            .get("/containerLogs/ns/p/c?previous=1&limitBytes=3", "secret")
            .await;
        assert_eq!(body, "one");
        let (_, body) = server.get("/containerLogs/ns/p/c", "secret").await;
        assert_eq!(body, "again\n");
    }

    #[tokio::test]
    async fn followed_logs_stream_until_the_run_ends() {
        let server = Arc::new(start().await);
        let path = server.add_run("run1", b"2026-11-29T19:00:00Z stdout F first\n");
        let follower = {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .get("/containerLogs/ns/p/c?follow=true", "secret")
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(b"2026-11-29T19:00:01Z stdout P sec")
                .unwrap();
            file.write_all(b"\n2026-11-29T19:00:01Z stdout F ond\n")
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!follower.is_finished());
        server.containers.running.store(false, Ordering::SeqCst);
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "first\nsecond\n"));
    }

    #[tokio::test]
    async fn following_goes_on_across_a_rotation() {
        let server = Arc::new(start().await);
        let path = server.add_run("run1", b"2026-11-29T19:00:00Z stdout F first\n");
        let follower = {
            let server = server.clone();
            tokio::spawn(async move {
                server
                    .get("/containerLogs/ns/p/c?follow=true", "secret")
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        // What the shim does (runtime::log::LogFile): the last line to
        // the old file, rename, a new file.
        {
            use std::io::Write;
            let mut old = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            old.write_all(b"2026-11-29T19:00:01Z stdout F second\n")
                .unwrap();
            let mut rotated = path.as_os_str().to_owned();
            rotated.push(".1");
            std::fs::rename(&path, rotated).unwrap();
            std::fs::write(&path, b"2026-11-29T19:00:02Z stdout F third\n").unwrap();
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        server.containers.running.store(false, Ordering::SeqCst);
        let (status, body) = tokio::time::timeout(Duration::from_secs(5), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((status, body.as_str()), (200, "first\nsecond\nthird\n"));
    }

    // A minimal WebSocket client: enough for binary channel messages.

    struct WsClient<S> {
        stream: S,
        buffer: Vec<u8>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> WsClient<S> {
        async fn open(mut stream: S, path: &str, protocols: &str) -> (u16, String, WsClient<S>) {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer secret\r\n\
                 Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: {protocols}\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut buffer = Vec::new();
            let mut byte = [0u8; 1];
            while !buffer.ends_with(b"\r\n\r\n") {
                stream.read_exact(&mut byte).await.unwrap();
                buffer.push(byte[0]);
            }
            let head = String::from_utf8(buffer).unwrap();
            let status = head[9..12].parse().unwrap();
            (
                status,
                head,
                WsClient {
                    stream,
                    buffer: Vec::new(),
                },
            )
        }

        async fn send(&mut self, payload: &[u8]) {
            let mask = [1u8, 2, 3, 4];
            let mut frame = vec![0x82];
            assert!(payload.len() < 126);
            frame.push(0x80 | payload.len() as u8);
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            self.stream.write_all(&frame).await.unwrap();
        }

        /// The next message: (opcode, payload).
        async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
            loop {
                if self.buffer.len() >= 2 {
                    let opcode = self.buffer[0] & 0x0f;
                    let (len, at) = match self.buffer[1] & 0x7f {
                        126 if self.buffer.len() >= 4 => (
                            u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                            4,
                        ),
                        127 if self.buffer.len() >= 10 => (
                            u64::from_be_bytes(self.buffer[2..10].try_into().unwrap()) as usize,
                            10,
                        ),
                        n if n < 126 => (n as usize, 2),
                        _ => (usize::MAX, 0),
                    };
                    if len != usize::MAX && self.buffer.len() >= at + len {
                        let payload = self.buffer[at..at + len].to_vec();
                        self.buffer.drain(..at + len);
                        return Some((opcode, payload));
                    }
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                self.buffer.extend_from_slice(&chunk[..n]);
            }
        }

        /// Everything until the close: output by channel, and the status.
        async fn collect(&mut self) -> (HashMap<u8, Vec<u8>>, serde_json::Value) {
            let mut channels: HashMap<u8, Vec<u8>> = HashMap::new();
            while let Some((opcode, payload)) = self.recv().await {
                if opcode == 8 {
                    break;
                }
                if let Some((&id, data)) = payload.split_first() {
                    channels.entry(id).or_default().extend_from_slice(data);
                }
            }
            let status = serde_json::from_slice(channels.get(&3).map_or(&[][..], |s| &s[..]))
                .unwrap_or(serde_json::Value::Null);
            (channels, status)
        }
    }

    #[tokio::test]
    async fn exec_speaks_the_channel_protocol() {
        let server = start().await;
        server.add_run("run1", b"");

        // Output on its channels and the exit code in the status.
        let path = "/exec/ns/p/c?command=sh&command=-c&command=echo%20out%3B%20echo%20err%20%3E%262%3B%20exit%203&stdout=1&stderr=1";
        let (status, head, mut ws) = WsClient::open(
            server.connect().await,
            path,
            "v5.channel.k8s.io, v4.channel.k8s.io",
        )
        .await;
        assert_eq!(status, 101, "{head}");
        assert!(head.contains("v5.channel.k8s.io"), "{head}");
        let (channels, status) = ws.collect().await;
        assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"out\n"[..]));
        assert_eq!(channels.get(&2).map(Vec::as_slice), Some(&b"err\n"[..]));
        assert_eq!(status["reason"], "NonZeroExitCode");
        assert_eq!(status["details"]["causes"][0]["message"], "3");

        // stdin, closed with v5's close message.
        let path = "/exec/ns/p/c?command=cat&stdin=1&stdout=1";
        let (status, _, mut ws) =
            WsClient::open(server.connect().await, path, "v5.channel.k8s.io").await;
        assert_eq!(status, 101);
        ws.send(b"\x00hello").await;
        ws.send(&[255, 0]).await;
        let (channels, status) = ws.collect().await;
        assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"hello"[..]));
        assert_eq!(status["status"], "Success");

        // No protocol in common, no such container: plain HTTP errors.
        let (status, _, _) = WsClient::open(server.connect().await, path, "channel.k8s.io").await;
        assert_eq!(status, 400);
        let (status, _, _) = WsClient::open(
            server.connect().await,
            "/exec/ns/p/x?command=ls&stdout=1",
            PROTOCOL_V5,
        )
        .await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn attach_shows_new_output_until_the_run_ends() {
        let server = start().await;
        let path = server.add_run("run1", b"2026-11-29T19:00:00Z stdout F old\n");
        let (status, _, mut ws) = WsClient::open(
            server.connect().await,
            "/attach/ns/p/c?stdout=1&stderr=1",
            PROTOCOL_V5,
        )
        .await;
        assert_eq!(status, 101);
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(b"2026-11-29T19:00:01Z stderr F new\n")
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.containers.running.store(false, Ordering::SeqCst);
        let (channels, status) = tokio::time::timeout(Duration::from_secs(5), ws.collect())
            .await
            .unwrap();
        assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b""[..]));
        assert_eq!(channels.get(&2).map(Vec::as_slice), Some(&b"new\n"[..]));
        assert_eq!(status["status"], "Success");
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[tokio::test]
    async fn attach_with_stdin_once_shows_output_to_the_end() {
        let server = start().await;
        server.add_run("run1", b"");
        *server.containers.attachable.lock().unwrap() = Some((
            sh("while read l; do echo got $l; done; echo bye; exit 4"),
            Some(true),
        ));
        let (status, _, mut ws) = WsClient::open(
            server.connect().await,
            "/attach/ns/p/c?stdin=1&stdout=1&stderr=1",
            PROTOCOL_V5,
        )
        .await;
        assert_eq!(status, 101);
        ws.send(b"\x00one\n").await;
        ws.send(&[255, 0]).await;
        let (channels, status) = tokio::time::timeout(Duration::from_secs(5), ws.collect())
            .await
            .unwrap();
        assert_eq!(
            channels.get(&1).map(Vec::as_slice),
            Some(&b"got one\nbye\n"[..])
        );
        // Attach reports no exit code (kubectl run reads it from the pod).
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn attach_detaches_when_stdin_stays_open() {
        let server = start().await;
        server.add_run("run1", b"");
        for stdin_once in [Some(false), None] {
            *server.containers.attachable.lock().unwrap() =
                Some((sh("read l; echo got $l; sleep 30"), stdin_once));
            let (status, _, mut ws) = WsClient::open(
                server.connect().await,
                "/attach/ns/p/c?stdin=1&stdout=1",
                PROTOCOL_V5,
            )
            .await;
            assert_eq!(status, 101);
            ws.send(b"\x00x\n").await;
            // The empty first message, then the answer.
            let mut out = Vec::new();
            while !out.ends_with(b"got x\n") {
                let (_, payload) = ws.recv().await.unwrap();
                assert_eq!(payload[0], 1);
                out.extend_from_slice(&payload[1..]);
            }
            ws.send(&[255, 0]).await;
            let started = std::time::Instant::now();
            let (_, status) = tokio::time::timeout(Duration::from_secs(5), ws.collect())
                .await
                .unwrap();
            assert_eq!(status["status"], "Success", "{stdin_once:?}");
            assert!(started.elapsed() < Duration::from_secs(4), "{stdin_once:?}");
        }
    }

    #[tokio::test]
    async fn attach_with_a_terminal_has_one_output_and_takes_resizes() {
        let server = start().await;
        server.add_run("run1", b"");
        *server.containers.attachable.lock().unwrap() =
            Some((sh("read l; echo out $l; echo err >&2"), Some(true)));
        let (status, _, mut ws) = WsClient::open(
            server.connect().await,
            "/attach/ns/p/c?stdin=1&stdout=1&stderr=1&tty=1",
            PROTOCOL_V5,
        )
        .await;
        assert_eq!(status, 101);
        ws.send(b"\x04{\"Width\":80,\"Height\":24}").await;
        ws.send(b"\x00hi\n").await;
        let (channels, status) = tokio::time::timeout(Duration::from_secs(5), ws.collect())
            .await
            .unwrap();
        assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"out hi\n"[..]));
        assert_eq!(channels.get(&2), None);
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn attach_without_stdin_or_tty_ignores_input_and_shows_the_log() {
        let server = start().await;
        let path = server.add_run("run1", b"");
        let (status, _, mut ws) = WsClient::open(
            server.connect().await,
            "/attach/ns/p/c?stdin=1&stdout=1",
            PROTOCOL_V5,
        )
        .await;
        assert_eq!(status, 101);
        ws.send(b"\x00ignored\n").await;
        std::fs::write(&path, b"2026-11-29T19:00:01Z stdout F logged\n").unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.containers.running.store(false, Ordering::SeqCst);
        let (channels, status) = tokio::time::timeout(Duration::from_secs(5), ws.collect())
            .await
            .unwrap();
        assert_eq!(channels.get(&1).map(Vec::as_slice), Some(&b"logged\n"[..]));
        assert_eq!(status["status"], "Success");
    }
}
