//! The routing table: which Service's endpoints answer a request, from
//! the Ingresses of shoal's class, as the Ingress API defines it (pure;
//! rebuilt on every change of what it reads).
//!
//! ```text
//!  Host ──▶ server: exact host ─▶ `*.` wildcard (one label) ─▶ hostless rules
//!  path ──▶ the server's longest matching path (Exact before Prefix at equal
//!           length; Prefix element-wise: /api matches /api, /api/v1, not /apix;
//!           ImplementationSpecific as Prefix)
//!       ──▶ none: the default backend (the oldest Ingress's), else 404
//!  backend ─▶ Service port (number or name) ─▶ its EndpointSlices' ready
//!             addresses on the matching target port (none: 503)
//! ```
//!
//! Several Ingresses merge as ingress-nginx merges them: the same host and
//! path in two Ingresses goes to the oldest one's backend.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};

/// The IngressClass `spec.controller` shoal serves.
pub const CONTROLLER: &str = "shoal.dev/ingress";
/// The IngressClass the controllers create at start, marked default.
pub const CLASS: &str = "shoal";
/// The annotation that marks an IngressClass as the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The class annotation of Ingresses from before `ingressClassName`.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Replaces the matched path prefix before the request goes on.
pub const REWRITE_TARGET: &str = "shoal.io/rewrite-target";
/// `"true"`: plain HTTP requests for a host with TLS are redirected to
/// HTTPS (308), as ingress-nginx's `ssl-redirect` (default on for TLS hosts).
pub const SSL_REDIRECT: &str = "shoal.io/ssl-redirect";

/// The largest request body passed on (nginx's size syntax: `8m`, `512k`,
/// `1g`, bytes; `0` for no limit), as ingress-nginx's `proxy-body-size`;
/// larger ones get 413.
pub const PROXY_BODY_SIZE: &str = "shoal.io/proxy-body-size";
/// Seconds to connect to an endpoint before the next one is tried.
pub const PROXY_CONNECT_TIMEOUT: &str = "shoal.io/proxy-connect-timeout";
/// Seconds to wait for the backend's answer, and between two reads of
/// its body (504 when the answer does not begin in time).
pub const PROXY_READ_TIMEOUT: &str = "shoal.io/proxy-read-timeout";
/// Seconds between two reads of the client's body while it is sent on.
pub const CLIENT_BODY_TIMEOUT: &str = "shoal.io/client-body-timeout";

/// What one Ingress allows its requests, from its annotations;
/// ingress-nginx's defaults otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `None`: no limit.
    pub body_size: Option<u64>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub client_body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            body_size: Some(1024 * 1024),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(60),
            client_body_timeout: Duration::from_secs(60),
        }
    }
}

impl Limits {
    /// The limits `annotations` set, and a message for each one that does
    /// not parse (that one keeps its default).
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> (Limits, Vec<String>) {
        let mut limits = Limits::default();
        let mut problems = Vec::new();
        if let Some(value) = annotations.get(PROXY_BODY_SIZE) {
            match parse_size(value) {
                Some(0) => limits.body_size = None,
                Some(size) => limits.body_size = Some(size),
                None => problems.push(format!(
                    "{PROXY_BODY_SIZE}: {value:?} is not a size (e.g. 8m, 512k, 1g, 0 for no limit); using 1m"
                )),
            }
        }
        for (name, slot) in [
            (PROXY_CONNECT_TIMEOUT, &mut limits.connect_timeout),
            (PROXY_READ_TIMEOUT, &mut limits.read_timeout),
            (CLIENT_BODY_TIMEOUT, &mut limits.client_body_timeout),
        ] {
            let Some(value) = annotations.get(name) else {
                continue;
            };
            match parse_seconds(value) {
                Some(seconds) => *slot = seconds,
                None => problems.push(format!(
                    "{name}: {value:?} is not a number of seconds above 0; using {}",
                    slot.as_secs()
                )),
            }
        }
        (limits, problems)
    }
}

/// nginx's size syntax: digits with an optional `k`, `m` or `g` (either
/// case), in bytes.
fn parse_size(value: &str) -> Option<u64> {
    let value = value.trim();
    let (digits, unit) = match value.char_indices().last()? {
        (i, 'k' | 'K') => (&value[..i], 1024),
        (i, 'm' | 'M') => (&value[..i], 1024 * 1024),
        (i, 'g' | 'G') => (&value[..i], 1024 * 1024 * 1024),
        _ => (value, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

/// Whole seconds above 0, written `60` or `60s`.
fn parse_seconds(value: &str) -> Option<Duration> {
    let value = value.trim();
    let digits = value.strip_suffix('s').unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().ok()?;
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// How a rule's path matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    Exact,
    Prefix,
}

/// Where matched requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Ingress that named it, `namespace/name` (logs, metrics).
    pub ingress: String,
    pub namespace: String,
    pub service: String,
    /// The Service port as the Ingress named it (`80` or `http`).
    pub port: String,
    /// Ready endpoints, in a stable order.
    pub endpoints: Vec<SocketAddr>,
    /// `shoal.io/rewrite-target` of the Ingress.
    pub rewrite_target: Option<String>,
    /// `shoal.io/ssl-redirect` of the Ingress; without it plain HTTP goes
    /// to HTTPS for the hosts that have a certificate ([`Table::tls_covers`]).
    pub ssl_redirect: Option<bool>,
    /// Body size and timeouts from the Ingress's annotations.
    pub limits: Limits,
}

/// One rule path of one host.
#[derive(Debug, Clone)]
struct Route {
    kind: PathKind,
    /// The path as written, trailing slashes dropped for Prefix (`/` stays).
    path: String,
    backend: Arc<Backend>,
}

/// What answers a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// This backend; `path` is the request path to send (rewritten or not).
    Backend { backend: Arc<Backend>, path: String },
    /// Nothing matches and there is no default backend.
    NotFound,
}

/// A host's TLS certificate, from a `kubernetes.io/tls` Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsHost {
    /// An exact host, `*.example.com`, or `*` (an entry without hosts).
    pub host: String,
    pub namespace: String,
    pub secret: String,
}

/// The table every request is routed by.
#[derive(Debug, Default)]
pub struct Table {
    exact: HashMap<String, Vec<Route>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Vec<Route>>,
    any: Vec<Route>,
    default: Option<Arc<Backend>>,
    /// In Ingress age order: the first entry for a host wins.
    pub tls: Vec<TlsHost>,
}

/// What the table is built from: every object of each kind.
pub struct Inputs<'a> {
    pub ingresses: &'a [Arc<Ingress>],
    pub classes: &'a [Arc<IngressClass>],
    pub services: &'a [Arc<Service>],
    pub slices: &'a [Arc<EndpointSlice>],
}

/// Is `ingress` for shoal: its class (by `ingressClassName` or the old
/// annotation) is one whose controller is shoal's, or it names none and
/// shoal's class is the default one.
pub fn ours(ingress: &Ingress, classes: &[Arc<IngressClass>]) -> bool {
    let named = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION).cloned())
        });
    let controller_of = |class: &IngressClass| {
        class
            .spec
            .as_ref()
            .and_then(|s| s.controller.as_deref())
            .unwrap_or_default()
            .to_string()
    };
    match named {
        Some(name) => classes.iter().any(|c| {
            c.metadata.name.as_deref() == Some(name.as_str()) && controller_of(c) == CONTROLLER
        }),
        None => classes.iter().any(|c| {
            controller_of(c) == CONTROLLER
                && c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        }),
    }
}

/// Builds the table from the Ingresses of shoal's class.
pub fn build(inputs: &Inputs<'_>) -> Table {
    let endpoints = Endpoints::new(inputs.services, inputs.slices);
    let mut ingresses: Vec<&Arc<Ingress>> = inputs
        .ingresses
        .iter()
        .filter(|i| i.metadata.deletion_timestamp.is_none() && ours(i, inputs.classes))
        .collect();
    // Oldest first: on a conflict, the first one in wins.
    ingresses.sort_by_key(|i| {
        (
            i.metadata.creation_timestamp.as_ref().map(|t| t.0),
            i.metadata.namespace.clone(),
            i.metadata.name.clone(),
        )
    });
    let mut table = Table::default();
    for ingress in ingresses {
        add_ingress(&mut table, ingress, &endpoints);
    }
    for routes in table
        .exact
        .values_mut()
        .chain(table.wildcard.values_mut())
        .chain(std::iter::once(&mut table.any))
    {
        // Longest path first; Exact before Prefix at equal length; stable
        // (so the oldest Ingress first) otherwise.
        routes.sort_by(|a, b| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| (a.kind == PathKind::Prefix).cmp(&(b.kind == PathKind::Prefix)))
        });
    }
    table
}

fn add_ingress(table: &mut Table, ingress: &Ingress, endpoints: &Endpoints<'_>) {
    let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
    let name = format!(
        "{namespace}/{}",
        ingress.metadata.name.as_deref().unwrap_or_default()
    );
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    let Some(spec) = &ingress.spec else {
        return;
    };
    let redirect_annotation = annotations.get(SSL_REDIRECT).map(|v| v == "true");
    let (limits, _) = Limits::from_annotations(&annotations);
    let backend = |b: &IngressBackend| -> Option<Arc<Backend>> {
        let service = b.service.as_ref()?;
        let port = service.port.as_ref()?;
        let port_name = match (&port.number, &port.name) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => return None,
        };
        Some(Arc::new(Backend {
            ingress: name.clone(),
            namespace: namespace.clone(),
            service: service.name.clone(),
            endpoints: endpoints.ready(&namespace, &service.name, &port_name),
            port: port_name,
            rewrite_target: annotations.get(REWRITE_TARGET).cloned(),
            ssl_redirect: redirect_annotation,
            limits,
        }))
    };
    if table.default.is_none() {
        table.default = spec.default_backend.as_ref().and_then(backend);
    }
    for rule in spec.rules.iter().flatten() {
        let host = rule.host.as_deref().map(str::to_ascii_lowercase);
        let routes = match host.as_deref() {
            None | Some("") => &mut table.any,
            Some(h) => match h.strip_prefix("*.") {
                Some(suffix) => table.wildcard.entry(suffix.to_string()).or_default(),
                None => table.exact.entry(h.to_string()).or_default(),
            },
        };
        for rule_path in rule.http.iter().flat_map(|h| &h.paths) {
            let kind = match rule_path.path_type.as_str() {
                "Exact" => PathKind::Exact,
                _ => PathKind::Prefix,
            };
            let written = rule_path.path.clone().unwrap_or_else(|| "/".into());
            let path = match kind {
                PathKind::Exact => written,
                PathKind::Prefix => normalize_prefix(&written),
            };
            if routes.iter().any(|r| r.kind == kind && r.path == path) {
                continue;
            }
            let Some(backend) = backend(&rule_path.backend) else {
                continue;
            };
            routes.push(Route {
                kind,
                path,
                backend,
            });
        }
    }
    for tls in spec.tls.iter().flatten() {
        let Some(secret) = tls.secret_name.clone() else {
            continue;
        };
        let hosts = tls.hosts.clone().unwrap_or_default();
        let hosts = if hosts.is_empty() {
            vec!["*".to_string()]
        } else {
            hosts
        };
        for host in hosts {
            let host = host.to_ascii_lowercase();
            if !table.tls.iter().any(|t| t.host == host) {
                table.tls.push(TlsHost {
                    host,
                    namespace: namespace.clone(),
                    secret: secret.clone(),
                });
            }
        }
    }
}

/// A Prefix path without its trailing slashes (`/` stays `/`).
fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Does request path `request` match Prefix `prefix` element by element?
fn prefix_matches(prefix: &str, request: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match request.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl Table {
    /// The routes of the server that answers `host` (exact, then
    /// wildcard, then hostless rules).
    fn server(&self, host: &str) -> &[Route] {
        if let Some(routes) = self.exact.get(host) {
            return routes;
        }
        if let Some(routes) = parent(host).and_then(|p| self.wildcard.get(p)) {
            return routes;
        }
        &self.any
    }

    /// Is there a rule for `host` (exact or wildcard)?
    pub fn has_host(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.exact.contains_key(&host)
            || parent(&host).is_some_and(|p| self.wildcard.contains_key(p))
    }

    /// Does a `spec.tls` entry name `host` (exactly or by a `*.` wildcard)?
    /// Plain HTTP for such a host is redirected to HTTPS by default.
    pub fn tls_covers(&self, host: &str) -> bool {
        let host = normalize_host(host);
        let wildcard = parent(&host).map(|p| format!("*.{p}"));
        self.tls
            .iter()
            .any(|t| t.host == host || Some(&t.host) == wildcard.as_ref())
    }

    /// Where a request for `host` (the Host header, a port allowed) and
    /// `path` (without the query) goes.
    pub fn route(&self, host: &str, path: &str) -> Decision {
        let host = normalize_host(host);
        let matched = self.server(&host).iter().find(|r| match r.kind {
            PathKind::Exact => r.path == path,
            PathKind::Prefix => prefix_matches(&r.path, path),
        });
        match matched {
            Some(route) => Decision::Backend {
                path: rewrite(route, path),
                backend: route.backend.clone(),
            },
            None => match &self.default {
                Some(backend) => Decision::Backend {
                    backend: backend.clone(),
                    path: path.to_string(),
                },
                None => Decision::NotFound,
            },
        }
    }
}

/// The path sent on: with `shoal.io/rewrite-target`, the matched prefix
/// replaced by the target (`/api` → `/` makes `/api/v1` `/v1`).
fn rewrite(route: &Route, path: &str) -> String {
    let Some(target) = &route.backend.rewrite_target else {
        return path.to_string();
    };
    let rest = match route.kind {
        PathKind::Exact => "",
        PathKind::Prefix if route.path == "/" => path.trim_start_matches('/'),
        PathKind::Prefix => path[route.path.len()..].trim_start_matches('/'),
    };
    match (target.ends_with('/'), rest.is_empty()) {
        (_, true) => target.clone(),
        (true, false) => format!("{target}{rest}"),
        (false, false) => format!("{target}/{rest}"),
    }
}

/// What a `*.` wildcard of `host` names: all but its first label (which
/// must not be empty).
fn parent(host: &str) -> Option<&str> {
    match host.split_once('.') {
        Some((first, rest)) if !first.is_empty() && !rest.is_empty() => Some(rest),
        _ => None,
    }
}

/// A Host header as a rule host: lowercase, without a port.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let without_port = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h.to_string(),
            _ => host.to_string(),
        }
    };
    without_port.trim_end_matches('.').to_ascii_lowercase()
}

/// Ready endpoints of Service ports, from Services and EndpointSlices.
struct Endpoints<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: BTreeMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
}

impl<'a> Endpoints<'a> {
    fn new(services: &'a [Arc<Service>], slices: &'a [Arc<EndpointSlice>]) -> Endpoints<'a> {
        let services = services
            .iter()
            .filter_map(|s| {
                Some((
                    (
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ),
                    s.as_ref(),
                ))
            })
            .collect();
        let mut by_service: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in slices {
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let (Some(ns), Some(service)) = (slice.metadata.namespace.as_deref(), service) {
                by_service.entry((ns, service)).or_default().push(slice);
            }
        }
        Endpoints {
            services,
            slices: by_service,
        }
    }

    /// Ready addresses of Service `namespace/name`'s port `port` (its
    /// number or its name), on the port the endpoints serve it on.
    fn ready(&self, namespace: &str, name: &str, port: &str) -> Vec<SocketAddr> {
        let Some(service) = self.services.get(&(namespace, name)) else {
            return Vec::new();
        };
        let Some(service_port) = service.spec.as_ref().and_then(|s| {
            s.ports
                .iter()
                .flatten()
                .find(|p| p.port.to_string() == port || p.name.as_deref() == Some(port))
        }) else {
            return Vec::new();
        };
        let port_name = service_port.name.clone().unwrap_or_default();
        let mut addresses = Vec::new();
        for slice in self.slices.get(&(namespace, name)).into_iter().flatten() {
            let Some(target) = slice.ports.iter().flatten().find_map(|p| {
                (p.name.clone().unwrap_or_default() == port_name)
                    .then_some(p.port)
                    .flatten()
            }) else {
                continue;
            };
            let Ok(target) = u16::try_from(target) else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let ready = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.ready)
                    .unwrap_or(true);
                if !ready {
                    continue;
                }
                for address in &endpoint.addresses {
                    if let Ok(ip) = address.parse::<IpAddr>() {
                        addresses.push(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        addresses.sort();
        addresses.dedup();
        addresses
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        let mut c = json!({"metadata": {"name": name}, "spec": {"controller": controller}});
        if default {
            c["metadata"]["annotations"] = json!({DEFAULT_CLASS_ANNOTATION: "true"});
        }
        Arc::new(serde_json::from_value(c).unwrap())
    }

    fn ingress(name: &str, created: &str, spec: serde_json::Value) -> Arc<Ingress> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    /// A Service with ports `(name, port)` and one slice with `(name,
    /// target)` ports and ready `addresses` (a `!` prefix: not ready).
    fn service(
        name: &str,
        ports: &[(&str, i32, i32)],
        addresses: &[&str],
    ) -> (Arc<Service>, Arc<EndpointSlice>) {
        let service = json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"ports": ports.iter().map(|(n, p, _)| json!({"name": n, "port": p})).collect::<Vec<_>>()},
        });
        let slice = json!({
            "metadata": {"name": format!("{name}-abc"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "ports": ports.iter().map(|(n, _, t)| json!({"name": n, "port": t})).collect::<Vec<_>>(),
            "endpoints": addresses.iter().map(|a| match a.strip_prefix('!') {
                Some(a) => json!({"addresses": [a], "conditions": {"ready": false}}),
                None => json!({"addresses": [a], "conditions": {"ready": true}}),
            }).collect::<Vec<_>>(),
        });
        (
            Arc::new(serde_json::from_value(service).unwrap()),
            Arc::new(serde_json::from_value(slice).unwrap()),
        )
    }

    fn path(p: &str, kind: &str, service: &str, port: serde_json::Value) -> serde_json::Value {
        json!({"path": p, "pathType": kind, "backend": {"service": {"name": service, "port": port}}})
    }

    struct World {
        ingresses: Vec<Arc<Ingress>>,
        classes: Vec<Arc<IngressClass>>,
        services: Vec<Arc<Service>>,
        slices: Vec<Arc<EndpointSlice>>,
    }

    impl World {
        fn new(ingresses: Vec<Arc<Ingress>>) -> World {
            let mut world = World {
                ingresses,
                classes: vec![
                    class(CLASS, CONTROLLER, true),
                    class("nginx", "k8s.io/ingress-nginx", false),
                ],
                services: Vec::new(),
                slices: Vec::new(),
            };
            for (name, ip) in [
                ("api-service", "10.244.0.2"),
                ("web-service", "10.244.0.3"),
                ("admin-service", "10.244.0.4"),
                ("fallback", "10.244.0.5"),
            ] {
                world.add(service(name, &[("http", 80, 8080)], &[ip]));
            }
            world
        }

        fn add(&mut self, (service, slice): (Arc<Service>, Arc<EndpointSlice>)) {
            self.services.push(service);
            self.slices.push(slice);
        }

        fn table(&self) -> Table {
            build(&Inputs {
                ingresses: &self.ingresses,
                classes: &self.classes,
                services: &self.services,
                slices: &self.slices,
            })
        }
    }

    /// Which Service (and path) a request reaches; "404" when none.
    fn goes(table: &Table, host: &str, p: &str) -> String {
        match table.route(host, p) {
            Decision::Backend { backend, path } => format!("{} {path}", backend.service),
            Decision::NotFound => "404".into(),
        }
    }

    fn guide() -> Arc<Ingress> {
        ingress(
            "example",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "example.com", "http": {"paths": [
                    path("/api", "Prefix", "api-service", json!({"number": 80})),
                    path("/web", "Prefix", "web-service", json!({"number": 80})),
                ]}},
                {"host": "admin.example.com", "http": {"paths": [
                    path("/", "Prefix", "admin-service", json!({"name": "http"})),
                ]}},
            ]}),
        )
    }

    #[test]
    fn the_guides_three_routes() {
        let table = World::new(vec![guide()]).table();
        assert_eq!(
            goes(&table, "example.com", "/api/users"),
            "api-service /api/users"
        );
        assert_eq!(goes(&table, "EXAMPLE.com:8080", "/web"), "web-service /web");
        assert_eq!(
            goes(&table, "admin.example.com", "/anything"),
            "admin-service /anything"
        );
        assert_eq!(goes(&table, "example.com", "/other"), "404");
        assert_eq!(goes(&table, "unknown.org", "/api"), "404");
        let Decision::Backend { backend, .. } = table.route("example.com", "/api") else {
            panic!("routed");
        };
        assert_eq!(backend.endpoints, vec!["10.244.0.2:8080".parse().unwrap()]);
        assert_eq!(backend.ingress, "default/example");
    }

    #[test]
    fn prefixes_match_element_by_element_and_the_longest_wins() {
        let table = World::new(vec![ingress(
            "paths",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                path("/api/", "Prefix", "api-service", json!({"number": 80})),
                path("/api/admin", "ImplementationSpecific", "admin-service", json!({"number": 80})),
                path("/api/exact", "Exact", "web-service", json!({"number": 80})),
                path("/api/exact", "Prefix", "fallback", json!({"number": 80})),
            ]}}]}),
        )])
        .table();
        assert_eq!(goes(&table, "any.host", "/api"), "api-service /api");
        assert_eq!(goes(&table, "any.host", "/api/"), "api-service /api/");
        assert_eq!(goes(&table, "any.host", "/api/v1"), "api-service /api/v1");
        assert_eq!(goes(&table, "any.host", "/apix"), "404");
        assert_eq!(
            goes(&table, "any.host", "/api/admin/x"),
            "admin-service /api/admin/x"
        );
        assert_eq!(
            goes(&table, "any.host", "/api/adminx"),
            "api-service /api/adminx"
        );
        assert_eq!(
            goes(&table, "any.host", "/api/exact"),
            "web-service /api/exact"
        );
        assert_eq!(
            goes(&table, "any.host", "/api/exact/"),
            "fallback /api/exact/"
        );
    }

    #[test]
    fn wildcard_hosts_match_one_label_and_exact_hosts_come_first() {
        let table = World::new(vec![ingress(
            "hosts",
            "2026-01-01T00:00:00Z",
            json!({"rules": [
                {"host": "*.example.com", "http": {"paths": [path("/", "Prefix", "web-service", json!({"number": 80}))]}},
                {"host": "admin.example.com", "http": {"paths": [path("/", "Prefix", "admin-service", json!({"number": 80}))]}},
                {"http": {"paths": [path("/", "Prefix", "fallback", json!({"number": 80}))]}},
            ]}),
        )])
        .table();
        assert_eq!(goes(&table, "shop.example.com", "/"), "web-service /");
        assert_eq!(goes(&table, "admin.example.com", "/"), "admin-service /");
        assert_eq!(goes(&table, "a.b.example.com", "/"), "fallback /");
        assert_eq!(goes(&table, "example.com", "/"), "fallback /");
        assert_eq!(goes(&table, ".example.com", "/"), "fallback /");
        assert!(table.has_host("shop.example.com") && !table.has_host("example.com"));
    }

    #[test]
    fn the_default_backend_takes_what_no_rule_matches() {
        let mut with_default = guide();
        Arc::make_mut(&mut with_default)
            .spec
            .as_mut()
            .unwrap()
            .default_backend = serde_json::from_value(
            json!({"service": {"name": "fallback", "port": {"number": 80}}}),
        )
        .unwrap();
        let table = World::new(vec![with_default]).table();
        assert_eq!(goes(&table, "example.com", "/other"), "fallback /other");
        assert_eq!(goes(&table, "unknown.org", "/"), "fallback /");
        assert_eq!(goes(&table, "example.com", "/api"), "api-service /api");
    }

    #[test]
    fn only_shoals_class_and_the_oldest_ingress_wins_a_conflict() {
        let newer = ingress(
            "newer",
            "2026-02-01T00:00:00Z",
            json!({"rules": [{"host": "example.com", "http": {"paths": [
                path("/api", "Prefix", "fallback", json!({"number": 80})),
                path("/new", "Prefix", "fallback", json!({"number": 80})),
            ]}}]}),
        );
        let other_class = ingress(
            "other",
            "2025-01-01T00:00:00Z",
            json!({"ingressClassName": "nginx", "rules": [{"host": "example.com", "http": {"paths": [
                path("/", "Prefix", "admin-service", json!({"number": 80})),
            ]}}]}),
        );
        let world = World::new(vec![newer.clone(), guide(), other_class]);
        let table = world.table();
        assert_eq!(goes(&table, "example.com", "/api"), "api-service /api");
        assert_eq!(goes(&table, "example.com", "/new"), "fallback /new");
        assert_eq!(goes(&table, "example.com", "/"), "404");
        // Without a default class, Ingresses that name none are not ours.
        let mut world = World::new(vec![newer]);
        world.classes = vec![class(CLASS, CONTROLLER, false)];
        assert_eq!(goes(&world.table(), "example.com", "/new"), "404");
    }

    #[test]
    fn endpoints_are_the_ready_ones_on_the_named_target_port() {
        let mut world = World::new(vec![ingress(
            "ports",
            "2026-01-01T00:00:00Z",
            json!({"rules": [{"http": {"paths": [
                path("/metrics", "Prefix", "two-ports", json!({"name": "metrics"})),
                path("/", "Prefix", "two-ports", json!({"number": 80})),
                path("/none", "Prefix", "missing", json!({"number": 80})),
            ]}}]}),
        )]);
        world.add(service(
            "two-ports",
            &[("http", 80, 8080), ("metrics", 9090, 9100)],
            &["10.244.0.9", "!10.244.0.8", "10.244.0.7"],
        ));
        let table = world.table();
        let endpoints = |p: &str| match table.route("h", p) {
            Decision::Backend { backend, .. } => backend.endpoints.clone(),
            Decision::NotFound => panic!("routed"),
        };
        let addrs = |v: &[&str]| {
            v.iter()
                .map(|a| a.parse().unwrap())
                .collect::<Vec<SocketAddr>>()
        };
        assert_eq!(
            endpoints("/"),
            addrs(&["10.244.0.7:8080", "10.244.0.9:8080"])
        );
        assert_eq!(
            endpoints("/metrics"),
            addrs(&["10.244.0.7:9100", "10.244.0.9:9100"])
        );
        assert!(endpoints("/none").is_empty(), "no such Service: a 503");
    }

    #[test]
    fn rewrite_target_replaces_the_matched_prefix() {
        let mut rewritten = guide();
        Arc::make_mut(&mut rewritten).metadata.annotations =
            Some([(REWRITE_TARGET.to_string(), "/".to_string())].into());
        let table = World::new(vec![rewritten]).table();
        assert_eq!(
            goes(&table, "example.com", "/api/v1/users"),
            "api-service /v1/users"
        );
        assert_eq!(goes(&table, "example.com", "/api"), "api-service /");
        assert_eq!(
            goes(&table, "admin.example.com", "/x/y"),
            "admin-service /x/y"
        );
    }

    #[test]
    fn tls_hosts_in_ingress_age_order_and_redirects_by_default() {
        let mut tls = guide();
        Arc::make_mut(&mut tls).spec.as_mut().unwrap().tls = serde_json::from_value(json!([
            {"hosts": ["example.com"], "secretName": "example-tls"},
            {"secretName": "catch-all"},
        ]))
        .unwrap();
        let table = World::new(vec![tls]).table();
        assert_eq!(
            table
                .tls
                .iter()
                .map(|t| format!("{} {}", t.host, t.secret))
                .collect::<Vec<_>>(),
            ["example.com example-tls", "* catch-all"]
        );
        assert!(table.tls_covers("Example.com:80"));
        assert!(!table.tls_covers("admin.example.com"));
        let Decision::Backend { backend, .. } = table.route("example.com", "/api") else {
            panic!("routed");
        };
        assert_eq!(
            backend.ssl_redirect, None,
            "no annotation: by the certificate"
        );
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        assert_eq!(normalize_host("Example.COM:443"), "example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn limits_from_annotations_as_ingress_nginx_reads_them() {
        let annotations = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (limits, problems) = Limits::from_annotations(&annotations(&[]));
        assert_eq!(limits, Limits::default());
        assert_eq!(limits.body_size, Some(1 << 20));
        assert!(problems.is_empty());
        for (value, size) in [
            ("8m", Some(8 << 20)),
            ("512k", Some(512 << 10)),
            ("2G", Some(2 << 30)),
            ("100", Some(100)),
            ("0", None),
        ] {
            let (limits, problems) =
                Limits::from_annotations(&annotations(&[(PROXY_BODY_SIZE, value)]));
            assert_eq!(limits.body_size, size, "{value}");
            assert!(problems.is_empty());
        }
        let (limits, problems) = Limits::from_annotations(&annotations(&[
            (PROXY_CONNECT_TIMEOUT, "2"),
            (PROXY_READ_TIMEOUT, "1s"),
            (CLIENT_BODY_TIMEOUT, "120"),
        ]));
        assert_eq!(limits.connect_timeout, Duration::from_secs(2));
        assert_eq!(limits.read_timeout, Duration::from_secs(1));
        assert_eq!(limits.client_body_timeout, Duration::from_secs(120));
        assert!(problems.is_empty());
        // What does not parse keeps the default, and says so.
        let (limits, problems) = Limits::from_annotations(&annotations(&[
            (PROXY_BODY_SIZE, "lots"),
            (PROXY_READ_TIMEOUT, "0"),
            (CLIENT_BODY_TIMEOUT, "-1"),
            (PROXY_CONNECT_TIMEOUT, "1.5"),
        ]));
        assert_eq!(limits, Limits::default());
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].starts_with("shoal.io/proxy-body-size: \"lots\" is not a size"));
        assert_eq!(
            parse_size("99999999999999999999g"),
            None,
            "overflow is no size"
        );
    }
}
