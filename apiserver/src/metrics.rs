//! The apiserver's `/metrics`, with kube-apiserver's names and labels:
//! every request counted by verb, resource and code, the latency and the
//! number in flight of the short ones (all but watches, exec and attach),
//! and the watches open.
//!
//! ```text
//!  request ──▶ record() ──▶ authenticate ──▶ handlers
//!               │ classify: verb (GET LIST WATCH POST PUT PATCH APPLY
//!               │           DELETE CONNECT), group, version, resource,
//!               │           subresource, scope (resource/namespace/cluster)
//!               ├ apiserver_request_total{…,code}
//!               ├ apiserver_request_duration_seconds{…}  (not long-running)
//!               ├ apiserver_current_inflight_requests{request_kind}
//!               └ apiserver_longrunning_requests{…}  watches, while they stream
//! ```

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::Method;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::server::Api;

/// What a request is, as kube-apiserver's metrics label it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: &'static str,
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    #[prometheus(flatten)]
    request: RequestLabels,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<CodeLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    inflight: Family<KindLabels, Gauge>,
    longrunning: Family<RequestLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<CodeLabels, Counter>::default();
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(shoal_core::metrics::LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let inflight = Family::<KindLabels, Gauge>::default();
        let longrunning = Family::<RequestLabels, Gauge>::default();
        let mut registry = Registry::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.",
            durations.clone(),
        );
        registry.register(
            "apiserver_current_inflight_requests",
            "Requests being served now, by kind (readOnly or mutating; long-running ones excluded).",
            inflight.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Watches open now, broken out by verb, group, version, resource, scope and component.",
            longrunning.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
            inflight,
            longrunning,
        }
    }
}

/// How a request is labelled.
struct Classified {
    labels: RequestLabels,
    long_running: bool,
    mutating: bool,
}

fn classify(request: &Request) -> Classified {
    let method = request.method();
    let resource = crate::rest::addressed(request.uri().path());
    let watch = crate::query::Query::parse(request.uri().query().unwrap_or_default()).flag("watch");
    let connect = resource
        .as_ref()
        .is_some_and(|r| matches!(r.subresource, "exec" | "attach"))
        && request.headers().contains_key(http::header::UPGRADE);
    let verb = match (method, &resource) {
        _ if connect => "CONNECT",
        (&Method::GET, Some(r)) if !r.named && watch => "WATCH",
        (&Method::GET, Some(r)) if !r.named => "LIST",
        (&Method::GET, _) => "GET",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) => {
            let apply = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
            if apply {
                "APPLY"
            } else {
                "PATCH"
            }
        }
        (&Method::DELETE, _) => "DELETE",
        (&Method::HEAD, _) => "HEAD",
        (&Method::OPTIONS, _) => "OPTIONS",
        _ => "other",
    };
    let labels = match resource {
        Some(r) => RequestLabels {
            verb,
            group: r.group,
            version: r.version,
            resource: r.resource,
            subresource: r.subresource,
            scope: r.scope,
            component: "apiserver",
        },
        None => RequestLabels {
            verb,
            group: "",
            version: "",
            resource: "",
            subresource: "",
            scope: "",
            component: "apiserver",
        },
    };
    Classified {
        labels,
        long_running: verb == "WATCH" || verb == "CONNECT",
        mutating: !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
    }
}

/// Decrements a gauge when dropped (with the response body it rides on).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// The exposition (OpenMetrics text).
    pub fn render(&self) -> String {
        shoal_core::metrics::render(&self.registry)
    }

    fn inflight(&self, mutating: bool) -> InFlight {
        let gauge = self
            .inflight
            .get_or_create(&KindLabels {
                request_kind: if mutating { "mutating" } else { "readOnly" },
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }
}

/// The middleware: counts and times every request.
pub async fn record(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let metrics = &api.metrics;
    let Classified {
        labels,
        long_running,
        mutating,
    } = classify(&request);
    let started = Instant::now();
    let short = (!long_running).then(|| metrics.inflight(mutating));
    let response = next.run(request).await;
    drop(short);
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&CodeLabels {
            request: labels.clone(),
            code,
        })
        .inc();
    if !long_running {
        metrics
            .durations
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        return response;
    }
    // An upgraded connection (exec, attach) is the proxy's from here on:
    // counted, not followed.
    if !response.status().is_success() || code == 101 {
        return response;
    }
    // A watch is counted until its stream ends (the body is dropped).
    let gauge = metrics.longrunning.get_or_create(&labels).clone();
    gauge.inc();
    let guard = InFlight(gauge);
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    }));
    Response::from_parts(parts, body)
}

/// `GET /metrics`.
pub async fn serve(State(api): State<Arc<Api>>) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            shoal_core::metrics::CONTENT_TYPE,
        )],
        api.metrics.render(),
    )
        .into_response()
}
