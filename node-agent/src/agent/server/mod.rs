//! The agent's HTTPS server: what the apiserver proxies `kubectl logs`,
//! `kubectl exec` and `kubectl attach` to, on the kubelet's paths and in
//! the kubelet's words (docs/apiserver.md, "The node agent's interface").
//!
//! ```text
//!  apiserver ──TLS, its client certificate (or the Bearer token)──▶ serve()
//!    who and whether: auth.rs (certificate or TokenReview, then a
//!    SubjectAccessReview for nodes/proxy, nodes/metrics, ...)
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

pub mod auth;
mod logs;
mod query;
mod remotecommand;

pub use logs::LogWriter;
pub use query::{log_options, LogOptions};
pub use remotecommand::{
    exit_status, internal_error_status, parse_resize, stdin_end, stream_options, StdinEnd,
    StreamOptions,
};

use super::registry::Registry;
use crate::runtime::exec::{ExecReader, ExecWriter};
use crate::runtime::{AttachSession, ExecRequest, ExecSession, Runtime, Status};
use logs::logs;
use remotecommand::{attach, exec};
use shoal_core::metrics::Render;

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
    /// Ask the cluster for them (CSR API, `kubernetes.io/kubelet-serving`)
    /// before serving, writing them at `cert` and `key`.
    pub request_certificate: bool,
    /// The bearer token the apiserver presents (its `--kubelet-token-file`),
    /// allowed everything.
    pub token: Option<String>,
    /// Callers with a certificate this CA signed are authenticated as its
    /// subject (kubelet's `--client-ca-file`).
    pub client_ca: Option<PathBuf>,
    /// Other bearer tokens are checked with a TokenReview, and every
    /// authenticated caller's request with a SubjectAccessReview (kubelet's
    /// `--authentication-token-webhook`, `--authorization-mode=Webhook`).
    /// With neither this nor a token, every request is let in.
    pub webhook: bool,
}

/// What can stop the server from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] shoal_core::tls::Error),
    #[error("the serving certificate: {0}")]
    Certificate(String),
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;

/// The serving TLS configuration from PEM files (HTTP/1.1 only: exec and
/// attach are HTTP/1.1 upgrades, as the apiserver's proxy makes them).
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>> {
    Ok(shoal_core::tls::server_config(
        cert,
        key,
        shoal_core::tls::ALPN_HTTP1,
    )?)
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
    access: Access,
    metrics: Metrics,
}

/// Who is let in ([`auth`]).
#[derive(Clone, Default)]
pub struct Access {
    /// The apiserver's bearer token, allowed everything.
    pub token: Option<Arc<str>>,
    /// The apiserver's answers about other callers; with neither this nor
    /// a token, every request is let in.
    pub webhook: Option<Arc<auth::Webhook>>,
}

/// What the metrics paths serve (OpenMetrics text), made at each scrape.
#[derive(Clone)]
pub struct Metrics {
    /// `/metrics`: the agent's own (pods, runtime, proxy, overlay, DNS).
    pub own: Render,
    /// `/metrics/resource`: CPU and memory of the node, its pods and their
    /// containers, with the kubelet's names.
    pub resource: Render,
}

async fn exposition(render: Render) -> Response {
    // Reading cgroups and stores touches files: off the async threads.
    let text = tokio::task::spawn_blocking(move || render())
        .await
        .unwrap_or_default();
    let text = if text.is_empty() {
        "# EOF\n".to_string()
    } else {
        text
    };
    (
        [(header::CONTENT_TYPE, shoal_core::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    exposition(state.metrics.own.clone()).await
}

async fn resource_metrics(State(state): State<AppState>) -> Response {
    exposition(state.metrics.resource.clone()).await
}

/// Serves HTTPS on `config.bind:config.port` until `shutdown` resolves
/// (connections in progress go on until their end).
pub async fn serve(
    config: ServerConfig,
    webhook: Option<Arc<auth::Webhook>>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    metrics: Metrics,
    shutdown: impl Future,
) -> Result<()> {
    let tls = match &config.client_ca {
        Some(ca) => shoal_core::tls::server_config_with_client_ca(
            &config.cert,
            &config.key,
            shoal_core::tls::ALPN_HTTP1,
            ca,
        )?,
        None => tls_config(&config.cert, &config.key)?,
    };
    let address = SocketAddr::new(config.bind, config.port);
    let listener = TcpListener::bind(address)
        .await
        .map_err(|source| ServerError::Bind { address, source })?;
    tracing::info!(%address, "agent server listening");
    let access = Access {
        token: config.token.map(Arc::from),
        webhook,
    };
    serve_listener(listener, tls, access, registry, runtime, metrics, shutdown).await;
    Ok(())
}

/// [`serve`] on a bound listener with any [`Containers`].
pub async fn serve_listener(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    access: Access,
    registry: Arc<Registry>,
    containers: Arc<dyn Containers>,
    metrics: Metrics,
    shutdown: impl Future,
) {
    let state = AppState {
        registry,
        containers,
        access,
        metrics,
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
        let router = router.clone();
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
            // A client certificate the CA signed names the caller.
            let certified = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| auth::Caller::of_certificate(leaf.as_ref()))
                .map(auth::Certified);
            let service = TowerToHyperService::new(tower::ServiceExt::map_request(
                router,
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    if let Some(certified) = &certified {
                        request.extensions_mut().insert(certified.clone());
                    }
                    request
                },
            ));
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
        .route("/metrics", get(metrics))
        .route("/metrics/resource", get(resource_metrics))
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

/// Lets in the apiserver's token, and callers the apiserver authorizes
/// (module [`auth`]); answers 401 to callers it cannot name and 403, in
/// the kubelet's words, to those it may not serve.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let access = &state.access;
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    if let Some(token) = &access.token {
        if bearer_matches(header, token) {
            return next.run(request).await;
        }
    }
    let Some(webhook) = &access.webhook else {
        if access.token.is_some() {
            return Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
        }
        return next.run(request).await;
    };
    let certified = request
        .extensions()
        .get::<auth::Certified>()
        .map(|c| c.0.clone());
    let caller = match certified {
        Some(caller) => Some(caller),
        None => {
            let bearer = header
                .and_then(|h| h.strip_prefix(b"Bearer "))
                .and_then(|t| std::str::from_utf8(t.trim_ascii()).ok())
                .filter(|t| !t.is_empty());
            match bearer {
                Some(token) => match webhook.who(token).await {
                    Ok(caller) => caller,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent server: a TokenReview failed");
                        return Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized")
                            .into_response();
                    }
                },
                None => None,
            }
        }
    };
    let Some(caller) = caller else {
        return Refusal::new(StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    let verb = auth::verb(request.method());
    let subresource = auth::subresource(request.uri().path());
    let attributes = format!(
        "user={}, verb={verb}, resource=nodes, subresource={subresource}",
        caller.name
    );
    match webhook.may(&caller, verb, subresource).await {
        Ok(true) => next.run(request).await,
        Ok(false) => {
            Refusal::new(StatusCode::FORBIDDEN, format!("Forbidden ({attributes})")).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "agent server: a SubjectAccessReview failed");
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Authorization error ({attributes})"),
            )
            .into_response()
        }
    }
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

#[cfg(test)]
mod tests {
    use super::logs::*;
    use super::query::*;
    use super::remotecommand::*;
    use super::*;
    use crate::runtime::log::{format_rfc3339_nano, parse_entry, tail_start};

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
        let (cert, key) = shoal_core::tls::ensure_self_signed(dir.path(), &[], &[ip]).unwrap();
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
            Access {
                token: Some(Arc::from("secret")),
                webhook: None,
            },
            registry.clone(),
            containers.clone(),
            Metrics {
                own: Arc::new(|| "shoal_test_total 1\n# EOF\n".to_string()),
                resource: Arc::new(|| "node_cpu_usage_seconds_total 2.5\n# EOF\n".to_string()),
            },
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
    async fn both_metrics_paths_need_the_token() {
        let server = start().await;
        let (status, _) = server.get("/metrics/resource", "wrong").await;
        assert_eq!(status, 401);
        let (status, body) = server.get("/metrics/resource", "secret").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "node_cpu_usage_seconds_total 2.5\n# EOF\n")
        );
        let (status, body) = server.get("/metrics", "secret").await;
        assert_eq!(
            (status, body.as_str()),
            (200, "shoal_test_total 1\n# EOF\n")
        );
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
