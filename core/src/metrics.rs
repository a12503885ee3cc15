//! What every component's Prometheus endpoint shares: the content type,
//! rendering a registry, joining expositions, and a plain-HTTP `/metrics`
//! server for the components that have no HTTPS server of their own (the
//! store's `--listen-metrics-urls`, the controllers' `--metrics-bind-address`,
//! `shoal dns --metrics-listen`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// What `/metrics` answers with: OpenMetrics text, which Prometheus
/// scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Makes one exposition at each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// A registry's exposition (ending in `# EOF`).
pub fn render(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing to a String does not fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// Several expositions as one: each one's `# EOF` dropped, one at the end.
pub fn join(parts: &[&str]) -> String {
    let mut text = String::new();
    for part in parts {
        for line in part.lines().filter(|l| *l != "# EOF") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text.push_str("# EOF\n");
    text
}

/// Buckets for request latencies in seconds, as kube-apiserver's
/// `apiserver_request_duration_seconds`: 5 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// Serves `GET /metrics` (and `/healthz`) over plain HTTP/1.1 on
/// `listener` until `shutdown` resolves; any other path is 404.
pub async fn serve(listener: TcpListener, render: Render, shutdown: impl Future) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let render = render.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(answer(&req, &render)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

fn answer<B>(req: &hyper::Request<B>, render: &Render) -> hyper::Response<Full<Bytes>> {
    let (status, content_type, body) = match req.uri().path() {
        "/metrics" => (200, CONTENT_TYPE, render()),
        "/healthz" => (200, "text/plain; charset=utf-8", "ok".to_string()),
        _ => (
            404,
            "text/plain; charset=utf-8",
            "404 page not found\n".to_string(),
        ),
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joined_expositions_end_once() {
        let joined = join(&["a 1\n# EOF\n", "", "b 2\n# EOF\n"]);
        assert_eq!(joined, "a 1\nb 2\n# EOF\n");
    }

    #[tokio::test]
    async fn serves_metrics_and_404_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let render: Render = Arc::new(|| "up 1\n# EOF\n".to_string());
        let server = tokio::spawn(serve(listener, render, std::future::pending::<()>()));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).await.unwrap();
            text
        };
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(
            metrics.contains("application/openmetrics-text"),
            "{metrics}"
        );
        assert!(metrics.ends_with("up 1\n# EOF\n"), "{metrics}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
