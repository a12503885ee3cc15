//! The Ingress controller's counters for the agent's `/metrics` (after
//! ingress-nginx's `nginx_ingress_controller_requests` and
//! `_request_duration_seconds`, prefixed `shoal_ingress_`): requests by
//! Ingress, Service and status, and their latency.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    namespace: String,
    ingress: String,
    service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    #[prometheus(flatten)]
    backend: BackendLabels,
    status: u16,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    durations: Family<BackendLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<StatusLabels, Counter>::default();
        let durations = Family::<BackendLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(shoal_core::metrics::LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let mut registry = Registry::with_prefix("shoal_ingress");
        registry.register(
            "requests",
            "Requests served, by Ingress, Service and status (no Ingress: nothing matched)",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its response's headers, by Ingress and Service",
            durations.clone(),
        );
        Metrics {
            registry,
            requests,
            durations,
        }
    }
}

impl Metrics {
    /// One request for `ingress` (`namespace/name`, empty when nothing
    /// matched) and `service`, answered `status` after `seconds`.
    pub fn request(&self, ingress: &str, service: &str, status: u16, seconds: f64) {
        let (namespace, name) = ingress.split_once('/').unwrap_or(("", ingress));
        let backend = BackendLabels {
            namespace: namespace.to_string(),
            ingress: name.to_string(),
            service: service.to_string(),
        };
        self.durations.get_or_create(&backend).observe(seconds);
        self.requests
            .get_or_create(&StatusLabels { backend, status })
            .inc();
    }

    /// The exposition (OpenMetrics text).
    pub fn render(&self) -> String {
        shoal_core::metrics::render(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_ingress_service_and_status() {
        let metrics = Metrics::default();
        metrics.request("default/example", "api-service", 200, 0.002);
        metrics.request("default/example", "api-service", 200, 0.004);
        metrics.request("", "", 404, 0.0001);
        let text = metrics.render();
        assert!(
            text.contains(r#"shoal_ingress_requests_total{namespace="default",ingress="example",service="api-service",status="200"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"shoal_ingress_requests_total{namespace="",ingress="",service="",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains("shoal_ingress_request_duration_seconds_count{namespace=\"default\",ingress=\"example\",service=\"api-service\"} 2"), "{text}");
    }
}
