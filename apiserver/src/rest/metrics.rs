//! The resource metrics API (`metrics.k8s.io/v1beta1`, what metrics-server
//! serves in Kubernetes): NodeMetrics and PodMetrics, read-only, built on
//! every request from the usage reports node agents write, so that any
//! apiserver replica serves the same answer.
//!
//! ```text
//!  node agent ── PUT /apis/metrics.shoal.dev/v1alpha1/nodereports/<node> ──► store
//!     (one NodeMetricsReport per node:            /registry/metrics.shoal.dev/nodereports/<node>
//!      node usage + each pod's containers' usage)          │
//!                                                          ▼
//!  kubectl top / HPA ── GET /apis/metrics.k8s.io/v1beta1/{nodes,pods,namespaces/<ns>/pods}
//!        reports ⋈ live Nodes (Ready, labels) ⋈ live Pods (same uid, labels) ──► NodeMetrics / PodMetrics
//! ```
//!
//! The report path is shoal's stand-in for the kubelet's Summary API that
//! metrics-server scrapes: agents push instead of being pulled, so that
//! reports go through the API (and the store) rather than into one
//! apiserver's memory. It is not listed in discovery. An agent writes a
//! report only when it changed, so a report's age says nothing about its
//! freshness: a report counts while its node exists and is Ready (the
//! agent heartbeats; the node lifecycle controller turns a silent node
//! Unknown), and is served with the time of the request as its
//! `timestamp`. Pods that are gone (or replaced under the same name) are
//! left out; labels are the live objects'.
//!
//! As with metrics-server, `metrics.k8s.io` answers get and list (with
//! `labelSelector` and `fieldSelector`), refuses watch and every write
//! with 405 MethodNotAllowed.
//!
//! Report shape (JSON):
//!
//! ```text
//! {"apiVersion": "metrics.shoal.dev/v1alpha1", "kind": "NodeMetricsReport",
//!  "metadata": {"name": "node-0"}, "timestamp": "2026-01-01T00:00:00Z", "window": "15s",
//!  "usage": {"cpu": "140m", "memory": "200Mi"},
//!  "pods": [{"namespace": "default", "name": "web-1", "uid": "...",
//!            "containers": [{"name": "web", "usage": {"cpu": "90m", "memory": "64Mi"}}]}]}
//! ```

use std::collections::{BTreeMap, HashMap};

use axum::response::{IntoResponse, Response};
use http::{header, Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::Accept;
use crate::error::{ApiError, Result};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::server::Api;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const API_PREFIX: &str = "/apis/metrics.k8s.io/v1beta1/";
/// Where agents write their reports (not in discovery).
pub const REPORT_PATH: &str = "/apis/metrics.shoal.dev/v1alpha1/nodereports/";
const REPORT_KEYS: &str = "/registry/metrics.shoal.dev/nodereports/";

/// The two read-only resources of the group.
pub struct MetricsResource {
    pub plural: &'static str,
    pub kind: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
}

pub static RESOURCES: &[MetricsResource] = &[
    MetricsResource {
        plural: "nodes",
        kind: "NodeMetrics",
        singular: "",
        namespaced: false,
    },
    MetricsResource {
        plural: "pods",
        kind: "PodMetrics",
        singular: "",
        namespaced: true,
    },
];

const VERBS: &[&str] = &["get", "list"];

/// One node's usage report, as its agent writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ReportMeta,
    pub timestamp: String,
    pub window: String,
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
    #[serde(default)]
    pub pods: Vec<PodUsage>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportMeta {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodUsage {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub containers: Vec<ContainerUsage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub name: String,
    #[serde(default)]
    pub usage: BTreeMap<String, String>,
}

/// Whether a path is served here rather than by the generic handlers.
pub fn handles(path: &str) -> bool {
    path.starts_with(API_PREFIX) || path.starts_with(REPORT_PATH)
}

/// The discovery entries (aggregated form) of the group's resources.
pub fn aggregated_resources() -> Vec<Value> {
    RESOURCES
        .iter()
        .map(|r| {
            json!({
                "resource": r.plural,
                "responseKind": {"group": GROUP, "version": VERSION, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.singular,
                "verbs": VERBS,
            })
        })
        .collect()
}

/// The group's APIResourceList.
pub fn resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
            })
        })
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": resources,
    })
}

/// What a metrics path names.
#[derive(Debug, PartialEq)]
enum Target {
    Nodes(Option<String>),
    /// Namespace (`None`: all), pod name.
    Pods(Option<String>, Option<String>),
    Report(String),
}

fn parse_path(path: &str) -> Option<Target> {
    if let Some(name) = path.strip_prefix(REPORT_PATH) {
        let name = name.trim_end_matches('/');
        return (!name.is_empty() && !name.contains('/')).then(|| Target::Report(name.into()));
    }
    let rest = path.strip_prefix(API_PREFIX)?.trim_end_matches('/');
    let segments: Vec<&str> = rest.split('/').collect();
    match segments.as_slice() {
        ["nodes"] => Some(Target::Nodes(None)),
        ["nodes", name] => Some(Target::Nodes(Some(name.to_string()))),
        ["pods"] => Some(Target::Pods(None, None)),
        ["namespaces", ns, "pods"] => Some(Target::Pods(Some(ns.to_string()), None)),
        ["namespaces", ns, "pods", name] => {
            Some(Target::Pods(Some(ns.to_string()), Some(name.to_string())))
        }
        _ => None,
    }
}

/// Serves a metrics path.
pub async fn serve(
    api: &Api,
    parts: &http::request::Parts,
    body: bytes::Bytes,
) -> Result<Response> {
    let target = parse_path(parts.uri.path()).ok_or_else(ApiError::path_not_found)?;
    let query = crate::query::Query::parse(parts.uri.query().unwrap_or_default());
    let param = |name: &str| query.string(name);
    let accept = super::parse_accept(&parts.headers, &query);
    let object = match (target, &parts.method) {
        (Target::Report(node), &Method::PUT) => put_report(api, &node, &body).await?,
        (Target::Report(node), &Method::GET) => get_report(api, &node).await?,
        (Target::Report(_), method) => return Err(ApiError::method_not_allowed(method.as_str())),
        (_, method) if method != Method::GET => {
            return Err(ApiError::method_not_allowed(method.as_str()))
        }
        (_, _) if query.flag("watch") => return Err(ApiError::method_not_allowed("watch")),
        (target, _) => {
            let labels = LabelSelector::parse(param("labelSelector").unwrap_or_default())
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
            let fields = FieldSelector::parse(param("fieldSelector").unwrap_or_default())
                .map_err(ApiError::bad_request)?;
            let now = crate::object::now();
            match target {
                Target::Nodes(Some(name)) => get_node(api, &name, &now).await?,
                Target::Nodes(None) => {
                    let items = list_nodes(api, &now).await?;
                    list_of("NodeMetricsList", select(items, &labels, &fields))
                }
                Target::Pods(Some(ns), Some(name)) => get_pod(api, &ns, &name, &now).await?,
                Target::Pods(ns, _) => {
                    let items = list_pods(api, ns.as_deref(), &now).await?;
                    list_of("PodMetricsList", select(items, &labels, &fields))
                }
                Target::Report(_) => return Err(ApiError::path_not_found()),
            }
        }
    };
    Ok(respond(&accept, object))
}

fn respond(accept: &Accept, object: Value) -> Response {
    match accept {
        Accept::Table { include } => axum::Json(table(&object, include)).into_response(),
        Accept::Yaml => {
            let text = serde_norway::to_string(&object).unwrap_or_default();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/yaml")],
                text,
            )
                .into_response()
        }
        Accept::Json => (StatusCode::OK, axum::Json(object)).into_response(),
    }
}

/// metrics-server's columns: Name, CPU, Memory, Window.
fn table(object: &Value, include: &str) -> Value {
    let items: Vec<&Value> = match object.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![object],
    };
    let usage_of = |item: &Value, resource: &str| -> String {
        if let Some(usage) = item.pointer(&format!("/usage/{resource}")) {
            return usage.as_str().unwrap_or_default().to_string();
        }
        let values: Vec<&str> = item
            .get("containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| {
                c.pointer(&format!("/usage/{resource}"))
                    .and_then(Value::as_str)
            })
            .collect();
        format_sum(resource, &values)
    };
    let rows: Vec<Value> = items
        .iter()
        .map(|item| {
            let cells = vec![
                item.pointer("/metadata/name").cloned().unwrap_or_default(),
                json!(usage_of(item, "cpu")),
                json!(usage_of(item, "memory")),
                item.get("window").cloned().unwrap_or_default(),
            ];
            crate::table::row(item, include, cells)
        })
        .collect();
    let column = |name: &str| json!({"name": name, "type": "string", "format": if name == "Name" { "name" } else { "" }, "description": "", "priority": 0});
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [column("Name"), column("CPU"), column("Memory"), column("Window")],
        "rows": rows,
    })
}

/// The sum of quantities, printed as metrics-server would (cpu in
/// millicores or cores, memory in Ki).
fn format_sum(resource: &str, values: &[&str]) -> String {
    let total: f64 = values
        .iter()
        .filter_map(|v| shoal_core::quantity::parse_f64(v))
        .sum();
    if resource == "cpu" {
        format!("{}m", (total * 1000.0).round() as i64)
    } else {
        format!("{}Ki", (total / 1024.0).round() as i64)
    }
}

fn list_of(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": kind,
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    })
}

fn select(items: Vec<Value>, labels: &LabelSelector, fields: &FieldSelector) -> Vec<Value> {
    items
        .into_iter()
        .filter(|item| labels.matches_object(item) && fields.matches(item))
        .collect()
}

fn not_found(plural: &str, name: &str) -> ApiError {
    ApiError {
        details: Some(json!({"name": name, "group": GROUP, "kind": plural})),
        ..ApiError::new(
            404,
            "NotFound",
            format!("{plural}.{GROUP} \"{name}\" not found"),
        )
    }
}

/// Why a report is refused.
pub fn check_report(report: &Report) -> std::result::Result<(), String> {
    let quantities = report.usage.iter().chain(
        report
            .pods
            .iter()
            .flat_map(|p| p.containers.iter())
            .flat_map(|c| c.usage.iter()),
    );
    for (resource, value) in quantities {
        if shoal_core::quantity::parse_f64(value).is_none_or(|v| v < 0.0) {
            return Err(format!("usage.{resource}: {value:?} is not a quantity"));
        }
    }
    if report.timestamp.parse::<jiff::Timestamp>().is_err() {
        return Err(format!("timestamp: {:?} is not a time", report.timestamp));
    }
    for pod in &report.pods {
        if pod.namespace.is_empty() || pod.name.is_empty() {
            return Err("pods: every pod needs a namespace and a name".into());
        }
    }
    Ok(())
}

async fn put_report(api: &Api, node: &str, body: &[u8]) -> Result<Value> {
    if !crate::validation::is_dns1123_subdomain(node) {
        return Err(ApiError::bad_request(format!(
            "{node:?} is not a valid node name"
        )));
    }
    let mut report: Report = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a NodeMetricsReport: {e}")))?;
    check_report(&report).map_err(|e| ApiError::bad_request(format!("invalid report: {e}")))?;
    report.api_version = "metrics.shoal.dev/v1alpha1".into();
    report.kind = "NodeMetricsReport".into();
    report.metadata.name = node.to_string();
    let value = serde_json::to_vec(&report)
        .map_err(|e| ApiError::internal(format!("cannot encode a report: {e}")))?;
    let key = format!("{REPORT_KEYS}{node}");
    api.store
        .txn(
            &key,
            Vec::new(),
            vec![crate::storage::Op::Put(key.clone(), value)],
        )
        .await?;
    serde_json::to_value(&report).map_err(|e| ApiError::internal(e.to_string()))
}

async fn get_report(api: &Api, node: &str) -> Result<Value> {
    match api.store.get(&format!("{REPORT_KEYS}{node}")).await? {
        Some(kv) => serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("a stored report is not JSON: {e}"))),
        None => Err(ApiError {
            details: Some(
                json!({"name": node, "group": "metrics.shoal.dev", "kind": "nodereports"}),
            ),
            ..ApiError::new(
                404,
                "NotFound",
                format!("nodereports.metrics.shoal.dev \"{node}\" not found"),
            )
        }),
    }
}

/// Every stored report, by node name (ones that do not decode are skipped).
async fn reports(api: &Api) -> Result<HashMap<String, Report>> {
    let listed = api.store.list(REPORT_KEYS, None, 0, 0).await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Report>(&kv.value).ok())
        .map(|r| (r.metadata.name.clone(), r))
        .collect())
}

async fn objects(api: &Api, prefix: &str) -> Result<Vec<Value>> {
    let listed = api.store.list(prefix, None, 0, 0).await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .collect())
}

fn pods_prefix(namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("/registry/pods/{ns}/"),
        None => "/registry/pods/".into(),
    }
}

async fn list_nodes(api: &Api, now: &str) -> Result<Vec<Value>> {
    let reports = reports(api).await?;
    let nodes = objects(api, "/registry/nodes/").await?;
    Ok(nodes
        .iter()
        .filter_map(|node| {
            let name = node.pointer("/metadata/name").and_then(Value::as_str)?;
            node_metrics(reports.get(name)?, node, now)
        })
        .collect())
}

async fn get_node(api: &Api, name: &str, now: &str) -> Result<Value> {
    let report = api.store.get(&format!("{REPORT_KEYS}{name}")).await?;
    let node = api.store.get(&format!("/registry/nodes/{name}")).await?;
    let (Some(report), Some(node)) = (report, node) else {
        return Err(not_found("nodemetrics", name));
    };
    let report: Option<Report> = serde_json::from_slice(&report.value).ok();
    let node: Option<Value> = serde_json::from_slice(&node.value).ok();
    report
        .zip(node)
        .and_then(|(report, node)| node_metrics(&report, &node, now))
        .ok_or_else(|| not_found("nodemetrics", name))
}

async fn list_pods(api: &Api, namespace: Option<&str>, now: &str) -> Result<Vec<Value>> {
    let reports = reports(api).await?;
    if reports.is_empty() {
        return Ok(Vec::new());
    }
    let nodes = objects(api, "/registry/nodes/").await?;
    let pods = objects(api, &pods_prefix(namespace)).await?;
    Ok(pod_metrics_of(&reports, &nodes, &pods, now))
}

async fn get_pod(api: &Api, namespace: &str, name: &str, now: &str) -> Result<Value> {
    let missing = || not_found("podmetrics", &format!("{namespace}/{name}"));
    let Some(pod) = api
        .store
        .get(&format!("/registry/pods/{namespace}/{name}"))
        .await?
    else {
        return Err(missing());
    };
    let pod: Value = serde_json::from_slice(&pod.value).map_err(|_| missing())?;
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(missing());
    };
    let report = api.store.get(&format!("{REPORT_KEYS}{node_name}")).await?;
    let node = api
        .store
        .get(&format!("/registry/nodes/{node_name}"))
        .await?;
    let (Some(report), Some(node)) = (report, node) else {
        return Err(missing());
    };
    let report: Report = serde_json::from_slice(&report.value).map_err(|_| missing())?;
    let node: Value = serde_json::from_slice(&node.value).map_err(|_| missing())?;
    let reports = HashMap::from([(node_name.to_string(), report)]);
    pod_metrics_of(&reports, &[node], &[pod], now)
        .into_iter()
        .next()
        .ok_or_else(missing)
}

/// Whether a node's Ready condition is True (its agent is alive).
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The NodeMetrics of a node from its report; `None` while the node is not
/// Ready (its report may be stale).
pub fn node_metrics(report: &Report, node: &Value, now: &str) -> Option<Value> {
    if !node_ready(node) {
        return None;
    }
    let mut metadata = json!({
        "name": node.pointer("/metadata/name").cloned().unwrap_or_default(),
        "creationTimestamp": now,
    });
    if let Some(labels) = node.pointer("/metadata/labels").filter(|l| l.is_object()) {
        metadata["labels"] = labels.clone();
    }
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": metadata,
        "timestamp": now,
        "window": report.window,
        "usage": report.usage,
    }))
}

/// The PodMetrics of the live `pods` found in the reports of Ready
/// `nodes`, sorted by namespace and name. A reported pod whose uid differs
/// from the live one (deleted and made again) is left out.
pub fn pod_metrics_of(
    reports: &HashMap<String, Report>,
    nodes: &[Value],
    pods: &[Value],
    now: &str,
) -> Vec<Value> {
    let mut reported: HashMap<(&str, &str), (&PodUsage, &Report)> = HashMap::new();
    for node in nodes.iter().filter(|n| node_ready(n)) {
        let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        if let Some(report) = reports.get(name) {
            for pod in &report.pods {
                reported.insert((pod.namespace.as_str(), pod.name.as_str()), (pod, report));
            }
        }
    }
    let mut items: Vec<(String, String, Value)> = pods
        .iter()
        .filter_map(|pod| {
            let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str)?;
            let name = pod.pointer("/metadata/name").and_then(Value::as_str)?;
            let (usage, report) = reported.get(&(namespace, name))?;
            let uid = pod.pointer("/metadata/uid").and_then(Value::as_str);
            if !usage.uid.is_empty() && uid != Some(usage.uid.as_str()) {
                return None;
            }
            let mut metadata = json!({
                "name": name,
                "namespace": namespace,
                "creationTimestamp": now,
            });
            if let Some(labels) = pod.pointer("/metadata/labels").filter(|l| l.is_object()) {
                metadata["labels"] = labels.clone();
            }
            let containers: Vec<Value> = usage
                .containers
                .iter()
                .map(|c| json!({"name": c.name, "usage": c.usage}))
                .collect();
            Some((
                namespace.to_string(),
                name.to_string(),
                json!({
                    "kind": "PodMetrics",
                    "apiVersion": format!("{GROUP}/{VERSION}"),
                    "metadata": metadata,
                    "timestamp": now,
                    "window": report.window,
                    "containers": containers,
                }),
            ))
        })
        .collect();
    items.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    items.into_iter().map(|(_, _, item)| item).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "timestamp": "2026-01-01T00:00:00Z",
            "window": "15s",
            "usage": {"cpu": "140m", "memory": "200Mi"},
            "pods": [
                {"namespace": "default", "name": "web-1", "uid": "u1",
                 "containers": [{"name": "web", "usage": {"cpu": "90m", "memory": "64Mi"}}]},
                {"namespace": "other", "name": "db", "uid": "u2",
                 "containers": [{"name": "db", "usage": {"cpu": "50m", "memory": "8Mi"}}]},
            ],
        }))
        .unwrap()
    }

    fn node(ready: &str) -> Value {
        json!({"metadata": {"name": "n1", "labels": {"type": "simulated"}},
               "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    fn pod(ns: &str, name: &str, uid: &str) -> Value {
        json!({"metadata": {"namespace": ns, "name": name, "uid": uid, "labels": {"app": name}}})
    }

    #[test]
    fn paths_name_metrics_resources() {
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(Target::Nodes(None))
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(Target::Nodes(Some("n1".into())))
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/namespaces/a/pods/p"),
            Some(Target::Pods(Some("a".into()), Some("p".into())))
        );
        assert_eq!(
            parse_path("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(Target::Pods(None, None))
        );
        assert_eq!(
            parse_path("/apis/metrics.shoal.dev/v1alpha1/nodereports/n1"),
            Some(Target::Report("n1".into()))
        );
        assert_eq!(parse_path("/apis/metrics.k8s.io/v1beta1/services"), None);
        assert!(handles("/apis/metrics.k8s.io/v1beta1/nodes"));
        assert!(!handles("/apis/apps/v1/deployments"));
    }

    #[test]
    fn node_metrics_need_a_ready_node() {
        let now = "2026-01-01T00:01:00Z";
        let m = node_metrics(&report(), &node("True"), now).unwrap();
        assert_eq!(m["kind"], "NodeMetrics");
        assert_eq!(m["usage"]["cpu"], "140m");
        assert_eq!(m["metadata"]["labels"]["type"], "simulated");
        assert_eq!(m["timestamp"], now);
        assert!(node_metrics(&report(), &node("Unknown"), now).is_none());
    }

    #[test]
    fn pod_metrics_only_for_live_pods() {
        let reports = HashMap::from([("n1".to_string(), report())]);
        let pods = [pod("default", "web-1", "u1"), pod("other", "db", "changed")];
        let items = pod_metrics_of(&reports, &[node("True")], &pods, "t");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["metadata"]["name"], "web-1");
        assert_eq!(items[0]["metadata"]["labels"]["app"], "web-1");
        assert_eq!(items[0]["containers"][0]["usage"]["cpu"], "90m");
        assert!(pod_metrics_of(&reports, &[node("False")], &pods, "t").is_empty());
    }

    #[test]
    fn reports_are_checked() {
        assert!(check_report(&report()).is_ok());
        let mut bad = report();
        bad.usage.insert("cpu".into(), "lots".into());
        assert!(check_report(&bad).is_err());
        let mut bad = report();
        bad.timestamp = "yesterday".into();
        assert!(check_report(&bad).is_err());
    }

    #[test]
    fn table_sums_containers() {
        let list = list_of(
            "PodMetricsList",
            vec![
                json!({"metadata": {"name": "p"}, "window": "15s", "containers": [
                {"name": "a", "usage": {"cpu": "90m", "memory": "64Mi"}},
                {"name": "b", "usage": {"cpu": "10m", "memory": "1Mi"}}]}),
            ],
        );
        let t = table(&list, "None");
        assert_eq!(
            t["rows"][0]["cells"],
            json!(["p", "100m", "66560Ki", "15s"])
        );
    }
}
