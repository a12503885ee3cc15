//! The proxy: HTTP and HTTPS listeners that route every request by the
//! current [`Table`] and pass it to a ready endpoint, streaming both ways.
//!
//! ```text
//!  client ─▶ :80 / :443 (TLS by SNI, h2 or http/1.1 by ALPN)
//!         ─▶ Table::route(Host, path)
//!              NotFound ─▶ 404      no endpoints ─▶ 503
//!              ssl-redirect on :80 ─▶ 308 https://host/path
//!         ─▶ body above the Ingress's proxy-body-size ─▶ 413
//!         ─▶ endpoint (round robin, keep-alive connections pooled; refused
//!            ─▶ the next one for requests without a body; none left ─▶ 502;
//!            no answer within proxy-read-timeout ─▶ 504)
//!         ─▶ request with X-Forwarded-For/-Proto/-Host, X-Real-IP;
//!            WebSocket upgrades spliced both ways once the backend says 101
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::metrics::Metrics;
use crate::routes::{normalize_host, Decision, Limits, Table};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// What every connection reads: the routing table (replaced whole on each
/// change), the round-robin counter, the pool of connections to backends.
pub struct Router {
    table: RwLock<Arc<Table>>,
    next: AtomicUsize,
    /// The HTTPS port, when HTTPS is served (else no redirects to it).
    https: Option<u16>,
    /// Keep-alive connections to the endpoints, as ingress-nginx's
    /// upstream keepalive; one pool per connect timeout in use.
    clients: Mutex<HashMap<Duration, Client<HttpConnector, Body>>>,
    metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(https: Option<u16>, metrics: Arc<Metrics>) -> Router {
        Router {
            table: RwLock::new(Arc::new(Table::default())),
            next: AtomicUsize::new(0),
            https,
            clients: Mutex::default(),
            metrics,
        }
    }

    /// The pool whose connections give up connecting after `connect`.
    fn client(&self, connect: Duration) -> Client<HttpConnector, Body> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry(connect)
            .or_insert_with(|| {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(connect));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(60))
                    .pool_max_idle_per_host(256)
                    .build(connector)
            })
            .clone()
    }

    pub fn set(&self, table: Table) {
        let mut current = self.table.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(table);
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Accepts plain HTTP connections on `listener` forever.
pub async fn serve_http(listener: TcpListener, router: Arc<Router>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            serve_connection(TokioIo::new(stream), peer, router, false).await;
        });
    }
}

/// Accepts TLS connections on `listener` forever (`config` chooses the
/// certificate by SNI: [`crate::tls::Certificates::server_config`]).
pub async fn serve_https(
    listener: TcpListener,
    router: Arc<Router>,
    config: Arc<rustls::ServerConfig>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (router, acceptor) = (router.clone(), acceptor.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "ingress: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            serve_connection(TokioIo::new(tls), peer, router, true).await;
        });
    }
}

async fn serve_connection<IO>(io: TokioIo<IO>, peer: SocketAddr, router: Arc<Router>, tls: bool)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(handle(request, peer, &router, tls).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
        tracing::debug!(%peer, error = %e, "ingress: connection ended");
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// nginx's answers to what the proxy refuses or gives up on.
fn error_response(status: StatusCode) -> Response<Body> {
    match status {
        StatusCode::BAD_REQUEST => text(status, "400 Bad Request\n"),
        StatusCode::REQUEST_TIMEOUT => text(status, "408 Request Time-out\n"),
        StatusCode::PAYLOAD_TOO_LARGE => too_large_response(),
        StatusCode::GATEWAY_TIMEOUT => text(status, "504 Gateway Time-out\n"),
        _ => text(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n"),
    }
}

fn too_large_response() -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "413 Request Entity Too Large\n",
    )
}

/// Does the request say (by `Content-Length`) that its body is above
/// `limit`? Bodies of unknown length are counted as they pass.
fn too_large(headers: &HeaderMap, limit: Option<u64>) -> bool {
    let Some(limit) = limit else {
        return false;
    };
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|length| length > limit)
}

/// Why a [`Guarded`] body ended early, or that it ended.
#[derive(Debug, Default)]
struct Stopped {
    too_large: AtomicBool,
    idle: AtomicBool,
    /// The whole body has passed.
    ended: AtomicBool,
    ended_now: tokio::sync::Notify,
}

impl Stopped {
    fn end(&self) {
        self.ended.store(true, Ordering::Release);
        self.ended_now.notify_waiters();
    }

    /// Resolves once the whole body has passed.
    async fn ended(&self) {
        loop {
            let notified = self.ended_now.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A body passed on with a cap on its size and on how long the proxy
/// waits for its next piece (the time spent waiting on its source, not on
/// the reader): the request body under `client-body-timeout` and
/// `proxy-body-size`, the response body under `proxy-read-timeout`.
struct Guarded<B> {
    inner: B,
    cap: Option<u64>,
    seen: u64,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    stopped: Arc<Stopped>,
}

impl<B> Guarded<B> {
    fn new(inner: B, cap: Option<u64>, idle: Duration, stopped: Arc<Stopped>) -> Guarded<B> {
        Guarded {
            inner,
            cap,
            seen: 0,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            waiting: false,
            stopped,
        }
    }
}

impl<B> hyper::body::Body for Guarded<B>
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.cap.is_some_and(|cap| this.seen > cap) {
                        this.stopped.too_large.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(
                            Err("the body is above the proxy's limit".into()),
                        ));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.stopped.end();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let now = tokio::time::Instant::now();
                    // A timeout too far to add is as good as none.
                    if let Some(deadline) = now.checked_add(this.idle) {
                        this.deadline.as_mut().reset(deadline);
                    }
                }
                if this.deadline.as_mut().poll(cx).is_ready() {
                    this.stopped.idle.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err("no data within the proxy's timeout".into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request's host: the Host header, or the URI's authority (HTTP/2).
fn host_of(request: &Request<Incoming>) -> String {
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    router: &Router,
    tls: bool,
) -> Response<Body> {
    let started = Instant::now();
    let host = host_of(&request);
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let table = router.table();
    let decision = table.route(&host, &path);
    let (ingress, service) = match &decision {
        Decision::Backend { backend, .. } => (backend.ingress.clone(), backend.service.clone()),
        Decision::NotFound => (String::new(), String::new()),
    };
    let (response, upstream) = match decision {
        Decision::NotFound => (text(StatusCode::NOT_FOUND, "404 page not found\n"), None),
        Decision::Backend { backend, .. }
            if !tls
                && router.https.is_some()
                && backend
                    .ssl_redirect
                    .unwrap_or_else(|| table.tls_covers(&host)) =>
        {
            let port = match router.https {
                Some(443) | None => String::new(),
                Some(port) => format!(":{port}"),
            };
            let location = format!(
                "https://{}{port}{}",
                normalize_host(&host),
                request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/")
            );
            let mut response = text(StatusCode::PERMANENT_REDIRECT, "");
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            (response, None)
        }
        Decision::Backend { backend, .. } if backend.endpoints.is_empty() => (
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Unavailable: no endpoints\n",
            ),
            None,
        ),
        Decision::Backend { backend, .. }
            if too_large(request.headers(), backend.limits.body_size) =>
        {
            (too_large_response(), None)
        }
        Decision::Backend {
            backend,
            path: sent_path,
        } => {
            let start = router.next.fetch_add(1, Ordering::Relaxed);
            let to = Upstream {
                endpoints: &backend.endpoints,
                start,
                path: &sent_path,
                limits: backend.limits,
            };
            match forward(router, request, peer, tls, &host, to).await {
                Ok((response, endpoint)) => (response, Some(endpoint)),
                Err(status) => (error_response(status), None),
            }
        }
    };
    router.metrics.request(
        &ingress,
        &service,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    tracing::info!(
        target: "shoal_ingress::access",
        client = %peer.ip(),
        %method,
        host = %host,
        path = %path,
        status = response.status().as_u16(),
        upstream = %upstream.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
        ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// Headers that belong to one connection and are not passed on (with
/// those the `Connection` header names).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers (RFC 9110 7.6.1); an upgrade keeps
/// `Connection` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(&name);
        }
    }
    for name in HOP_BY_HOP {
        if upgrade && (name == "connection" || name == "upgrade") {
            continue;
        }
        headers.remove(name);
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The headers to send on: hop-by-hop ones dropped (kept for an upgrade),
/// the `X-Forwarded-*` ones set as ingress-nginx sets them.
fn upstream_headers(
    headers: &HeaderMap,
    peer: SocketAddr,
    tls: bool,
    host: &str,
    upgrade: bool,
) -> HeaderMap {
    let mut out = headers.clone();
    strip_hop_by_hop(&mut out, upgrade);
    let client = peer.ip().to_string();
    let mut forwarded_for: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    forwarded_for.push(&client);
    let forwarded_for = forwarded_for.join(", ");
    let set = |out: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    set(&mut out, "x-forwarded-for", &forwarded_for);
    set(&mut out, "x-real-ip", &client);
    set(
        &mut out,
        "x-forwarded-proto",
        if tls { "https" } else { "http" },
    );
    set(&mut out, "x-forwarded-host", host);
    if !out.contains_key(header::HOST) {
        set(&mut out, "host", host);
    }
    out
}

/// Where a request goes: its endpoints, the first to try, the path, and
/// the Ingress's limits.
struct Upstream<'a> {
    endpoints: &'a [SocketAddr],
    start: usize,
    path: &'a str,
    limits: Limits,
}

/// Does the request carry no body (so that it can be sent again to
/// another endpoint when the first refuses the connection)? Known from
/// the framing itself: HTTP/2 bodies need no length header.
fn bodiless(request: &Request<Incoming>) -> bool {
    hyper::body::Body::is_end_stream(request.body())
}

fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

async fn forward(
    router: &Router,
    mut request: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    host: &str,
    to: Upstream<'_>,
) -> Result<(Response<Body>, SocketAddr), StatusCode> {
    let upgrade = is_upgrade(request.headers());
    let no_body = bodiless(&request);
    let retry = no_body && !upgrade;
    // The client's side of a WebSocket (or other) upgrade, spliced to the
    // backend's once it agrees.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let target = match parts.uri.query() {
        Some(query) => format!("{}?{query}", to.path),
        None => to.path.to_string(),
    };
    parts.headers = upstream_headers(&parts.headers, peer, tls, host, upgrade);
    // HTTP/2 clients too: backends are spoken to in HTTP/1.1.
    parts.version = hyper::Version::HTTP_11;
    let limits = to.limits;
    let sending = Arc::new(Stopped::default());
    if no_body {
        // hyper does not read a body that says it is empty.
        sending.end();
    }
    let mut body = Some(
        Guarded::new(
            body,
            limits.body_size,
            limits.client_body_timeout,
            sending.clone(),
        )
        .boxed(),
    );
    let client = router.client(limits.connect_timeout);
    let count = to.endpoints.len();
    let mut sent = None;
    for attempt in 0..count {
        let endpoint = to.endpoints[(to.start + attempt) % count];
        let mut upstream = Request::new(body.take().unwrap_or_else(empty));
        *upstream.method_mut() = parts.method.clone();
        *upstream.version_mut() = parts.version;
        *upstream.headers_mut() = parts.headers.clone();
        *upstream.uri_mut() = format!("http://{endpoint}{target}")
            .parse()
            .map_err(|_| StatusCode::BAD_REQUEST)?;
        // The read timeout counts from the end of the request, as nginx's
        // proxy_read_timeout (a long upload is not a slow backend).
        let read_deadline = async {
            sending.ended().await;
            tokio::time::sleep(limits.read_timeout).await;
        };
        let answer = tokio::select! {
            answer = client.request(upstream) => Ok(answer),
            () = read_deadline => Err(()),
        };
        match answer {
            Ok(Ok(response)) => {
                sent = Some((response, endpoint));
                break;
            }
            Ok(Err(e)) if e.is_connect() && retry && attempt + 1 < count => {
                tracing::debug!(%endpoint, error = %e, "ingress: endpoint refused; trying the next");
            }
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "ingress: the backend failed");
                return Err(if sending.too_large.load(Ordering::Relaxed) {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else if sending.idle.load(Ordering::Relaxed) {
                    StatusCode::REQUEST_TIMEOUT
                } else {
                    StatusCode::BAD_GATEWAY
                });
            }
            Err(_) => {
                tracing::debug!(%endpoint, timeout = ?limits.read_timeout, "ingress: the backend did not answer in time");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
        }
    }
    let Some((mut response, endpoint)) = sent else {
        return Err(StatusCode::BAD_GATEWAY);
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    match client_upgrade {
        Some(client) if switching => {
            let upstream = hyper::upgrade::on(&mut response);
            tokio::spawn(async move {
                let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
                    tracing::debug!("ingress: an upgrade did not complete");
                    return;
                };
                let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
        _ => strip_hop_by_hop(response.headers_mut(), false),
    }
    let (parts, body) = response.into_parts();
    let body = Guarded::new(body, None, limits.read_timeout, Arc::default());
    Ok((Response::from_parts(parts, body.boxed()), endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use http_body_util::StreamBody;

    type Frames = Vec<Result<Frame<Bytes>, Infallible>>;

    fn chunks(sizes: &[usize]) -> Frames {
        sizes
            .iter()
            .map(|n| Ok(Frame::data(Bytes::from(vec![b'x'; *n]))))
            .collect()
    }

    #[tokio::test]
    async fn a_body_above_its_cap_stops_and_says_so() {
        let stopped = Arc::new(Stopped::default());
        let body = StreamBody::new(futures::stream::iter(chunks(&[600, 600])));
        let guarded = Guarded::new(body, Some(1000), Duration::from_secs(5), stopped.clone());
        assert!(guarded.collect().await.is_err());
        assert!(stopped.too_large.load(Ordering::Relaxed));
        assert!(!stopped.idle.load(Ordering::Relaxed));

        let stopped = Arc::new(Stopped::default());
        let body = StreamBody::new(futures::stream::iter(chunks(&[600, 400])));
        let guarded = Guarded::new(body, Some(1000), Duration::from_secs(5), stopped.clone());
        let whole = guarded.collect().await.unwrap().to_bytes();
        assert_eq!(whole.len(), 1000, "at the cap is allowed");
        assert!(!stopped.too_large.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_body_that_stalls_past_its_timeout_stops_and_says_so() {
        let stopped = Arc::new(Stopped::default());
        let stalls = futures::stream::iter(chunks(&[10])).chain(futures::stream::pending());
        let guarded = Guarded::new(
            StreamBody::new(stalls),
            None,
            Duration::from_millis(50),
            stopped.clone(),
        );
        let started = Instant::now();
        assert!(guarded.collect().await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(stopped.idle.load(Ordering::Relaxed));

        // Time spent by the reader between pieces does not count.
        let stopped = Arc::new(Stopped::default());
        let body = StreamBody::new(futures::stream::iter(chunks(&[10, 10])));
        let mut guarded = Guarded::new(body, None, Duration::from_millis(20), stopped.clone());
        assert!(guarded.frame().await.unwrap().is_ok());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(guarded.frame().await.unwrap().is_ok());
        assert!(guarded.frame().await.is_none());
        assert!(!stopped.idle.load(Ordering::Relaxed));
    }

    #[test]
    fn content_length_above_the_limit_is_refused_up_front() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2048"));
        assert!(too_large(&headers, Some(1024)));
        assert!(!too_large(&headers, Some(4096)));
        assert!(!too_large(&headers, None));
        assert!(!too_large(&HeaderMap::new(), Some(1)));
    }
}
