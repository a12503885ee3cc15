//! The proxy: HTTP and HTTPS listeners that route every request by the
//! current [`Table`] and pass it to a ready endpoint, streaming both ways.
//!
//! ```text
//!  client ─▶ :80 / :443 (TLS by SNI, h2 or http/1.1 by ALPN)
//!         ─▶ Table::route(Host, path)
//!              NotFound ─▶ 404      no endpoints ─▶ 503
//!              ssl-redirect on :80 ─▶ 308 https://host/path
//!         ─▶ endpoint (round robin, keep-alive connections pooled; refused
//!            ─▶ the next one for requests without a body; none left ─▶ 502)
//!         ─▶ request with X-Forwarded-For/-Proto/-Host, X-Real-IP;
//!            WebSocket upgrades spliced both ways once the backend says 101
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::metrics::Metrics;
use crate::routes::{normalize_host, Decision, Table};

/// How long connecting to an endpoint may take before the next one is
/// tried (ingress-nginx's `proxy-connect-timeout`: 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection reads: the routing table (replaced whole on each
/// change), the round-robin counter, the pool of connections to backends.
pub struct Router {
    table: RwLock<Arc<Table>>,
    next: AtomicUsize,
    /// The HTTPS port, when HTTPS is served (else no redirects to it).
    https: Option<u16>,
    /// Keep-alive connections to the endpoints, as ingress-nginx's
    /// upstream keepalive.
    client: Client<HttpConnector, Body>,
    metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(https: Option<u16>, metrics: Arc<Metrics>) -> Router {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Router {
            table: RwLock::new(Arc::new(Table::default())),
            next: AtomicUsize::new(0),
            https,
            client,
            metrics,
        }
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
        Decision::Backend {
            backend,
            path: sent_path,
        } => {
            let start = router.next.fetch_add(1, Ordering::Relaxed);
            let to = Upstream {
                endpoints: &backend.endpoints,
                start,
                path: &sent_path,
            };
            match forward(router, request, peer, tls, &host, to).await {
                Ok((response, endpoint)) => (response, Some(endpoint)),
                Err(StatusCode::BAD_REQUEST) => {
                    (text(StatusCode::BAD_REQUEST, "400 Bad Request\n"), None)
                }
                Err(status) => (text(status, "502 Bad Gateway\n"), None),
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

/// Where a request goes: its endpoints, the first to try, the path.
struct Upstream<'a> {
    endpoints: &'a [SocketAddr],
    start: usize,
    path: &'a str,
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
    let retry = bodiless(&request) && !upgrade;
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
    let mut body = Some(body.boxed());
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
        match router.client.request(upstream).await {
            Ok(response) => {
                sent = Some((response, endpoint));
                break;
            }
            Err(e) if e.is_connect() && retry && attempt + 1 < count => {
                tracing::debug!(%endpoint, error = %e, "ingress: endpoint refused; trying the next");
            }
            Err(e) => {
                tracing::debug!(%endpoint, error = %e, "ingress: the backend failed");
                return Err(StatusCode::BAD_GATEWAY);
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
    Ok((Response::from_parts(parts, body.boxed()), endpoint))
}
