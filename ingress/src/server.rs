//! The proxy: HTTP and HTTPS listeners that route every request by the
//! current [`Table`] and pass it to a ready endpoint, streaming both ways.
//!
//! ```text
//!  client ─▶ :80 / :443 (TLS by SNI, h2 or http/1.1 by ALPN)
//!         ─▶ Table::route(Host, path)
//!              NotFound ─▶ 404      no endpoints ─▶ 503
//!              ssl-redirect on :80 ─▶ 308 https://host/path
//!         ─▶ endpoint (round robin; refused ─▶ the next one; none left ─▶ 502)
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
use tokio::net::{TcpListener, TcpStream};

use crate::routes::{normalize_host, Decision, Table};

/// How long connecting to an endpoint may take before the next one is
/// tried (ingress-nginx's `proxy-connect-timeout`: 5 s).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Body = BoxBody<Bytes, hyper::Error>;

/// What every connection reads: the routing table (replaced whole on each
/// change) and the round-robin counter.
pub struct Router {
    table: RwLock<Arc<Table>>,
    next: AtomicUsize,
    /// Is HTTPS served (else no redirects to it)?
    https: bool,
}

impl Router {
    pub fn new(https: bool) -> Router {
        Router {
            table: RwLock::new(Arc::new(Table::default())),
            next: AtomicUsize::new(0),
            https,
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
    let (response, upstream) = match table.route(&host, &path) {
        Decision::NotFound => (text(StatusCode::NOT_FOUND, "404 page not found\n"), None),
        Decision::Backend { backend, .. } if !tls && router.https && backend.ssl_redirect => {
            let location = format!(
                "https://{}{}",
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
            match forward(
                request,
                peer,
                tls,
                &host,
                &sent_path,
                &backend.endpoints,
                start,
            )
            .await
            {
                Ok((response, endpoint)) => (response, Some(endpoint)),
                Err(status) => (text(status, "502 Bad Gateway\n"), None),
            }
        }
    };
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

/// Connects to the first endpoint that accepts, from `start` round robin.
async fn connect(endpoints: &[SocketAddr], start: usize) -> Option<(TcpStream, SocketAddr)> {
    for i in 0..endpoints.len() {
        let endpoint = endpoints[(start + i) % endpoints.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(endpoint)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, endpoint));
            }
            Ok(Err(e)) => {
                tracing::debug!(%endpoint, error = %e, "ingress: endpoint refused; trying the next")
            }
            Err(_) => {
                tracing::debug!(%endpoint, "ingress: endpoint did not answer; trying the next")
            }
        }
    }
    None
}

/// Headers that belong to one connection and are not passed on.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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
    let mut out = HeaderMap::with_capacity(headers.len() + 4);
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(&name.as_str());
        if !hop || (upgrade && (name == header::UPGRADE || name == header::CONNECTION)) {
            out.append(name.clone(), value.clone());
        }
    }
    let client = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {client}"),
        None => client.clone(),
    };
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

async fn forward(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    tls: bool,
    host: &str,
    path: &str,
    endpoints: &[SocketAddr],
    start: usize,
) -> Result<(Response<Body>, SocketAddr), StatusCode> {
    let Some((stream, endpoint)) = connect(endpoints, start).await else {
        return Err(StatusCode::BAD_GATEWAY);
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "ingress: upstream connection ended");
        }
    });
    let upgrade = is_upgrade(request.headers());
    // The client's side of a WebSocket (or other) upgrade, spliced to the
    // backend's once it agrees.
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    let target = match parts.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    parts.uri = target.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
    parts.headers = upstream_headers(&parts.headers, peer, tls, host, upgrade);
    // HTTP/2 clients too: backends are spoken to in HTTP/1.1.
    parts.version = hyper::Version::HTTP_11;
    let mut response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|_| StatusCode::BAD_GATEWAY)?;
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
        _ => {
            for name in HOP_BY_HOP {
                response.headers_mut().remove(name);
            }
        }
    }
    let (parts, body) = response.into_parts();
    Ok((Response::from_parts(parts, body.boxed()), endpoint))
}
