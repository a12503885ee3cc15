//! Generic REST handlers: one dispatcher parses the path against the
//! resource table and hands the request to the verb's handler.
//!
//! ```text
//!   /api/v1[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]
//!   /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{sub}]]
//!        │
//!        ├─ GET     get / list / watch          read.rs, watch.rs
//!        ├─ POST    create, binding, eviction    write.rs
//!        ├─ PUT     update (+status, +scale)     write.rs
//!        ├─ PATCH   json / merge / strategic / apply   write.rs + patch/
//!        └─ DELETE  delete, deletecollection     delete.rs
//!
//!   /apis/metrics.k8s.io/v1beta1/...  (read-only) and agents' usage
//!   reports                                      metrics.rs
//! ```

mod delete;
pub mod metrics;
mod proxy;
pub use proxy::AgentClient;
pub(crate) mod read;
pub mod watch;
mod write;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};
use serde_json::Value;

use crate::error::{ApiError, Result};
use crate::query::{Query, Write};
use crate::resources::{self, Resource, Sub};
use crate::server::Api;

/// Bodies larger than this are refused with 413, as Kubernetes does.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How the client wants objects back.
#[derive(Debug, Clone, PartialEq)]
pub enum Accept {
    Json,
    Yaml,
    /// Server-side printing (`as=Table`); the rows carry the object as
    /// `None`, `Metadata` (the default) or `Object`.
    Table {
        include: String,
    },
}

/// One parsed request.
pub struct Ctx {
    /// The resource as the client addressed it.
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Sub>,
    pub query: Query,
    pub accept: Accept,
    pub content_type: String,
    pub method: Method,
    /// Warnings for the `Warning` header (unknown fields under Warn).
    pub warnings: Vec<String>,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// Who is asking (none when the server checks no tokens).
    pub user: Option<crate::server::User>,
}

impl Ctx {
    /// A context for the server's own writes (bootstrap objects).
    pub fn internal(resource: &'static Resource, namespace: Option<&str>) -> Ctx {
        Ctx {
            resource,
            namespace: namespace.map(String::from),
            name: None,
            sub: None,
            query: Query::default(),
            accept: Accept::Json,
            content_type: "application/json".into(),
            method: Method::POST,
            warnings: Vec::new(),
            user_agent: String::new(),
            user: None,
        }
    }

    /// A string parameter (see [`Query::string`]).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.string(name)
    }

    /// A boolean parameter, as kube-apiserver reads it ([`Query::flag`]).
    pub fn flag(&self, name: &str) -> bool {
        self.query.flag(name)
    }

    /// Who makes a write, for `managedFields`: `fieldManager`, or as
    /// kube-apiserver defaults it, the User-Agent up to its first `/`
    /// (`lightkube/1.0` → `lightkube`), printable characters only, at most
    /// 128 bytes.
    pub fn field_manager(&self) -> String {
        if let Some(manager) = self.param("fieldManager") {
            return manager.to_string();
        }
        default_field_manager(&self.user_agent)
    }

    pub fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    /// The resource objects are stored as (autoscaling/v1 HPAs are stored
    /// as v2).
    pub fn storage(&self) -> &'static Resource {
        crate::convert::storage_resource(self.resource)
    }

    pub fn key(&self, name: &str) -> String {
        self.storage().key(self.namespace.as_deref(), name)
    }
}

/// kube-apiserver's `prefixFromUserAgent`.
fn default_field_manager(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or_default();
    let mut manager = String::new();
    for c in prefix.chars().filter(|c| !c.is_control()) {
        if manager.len() + c.len_utf8() > 128 {
            break;
        }
        manager.push(c);
    }
    manager
}

fn parse_accept(headers: &http::HeaderMap, query: &Query) -> Accept {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The first acceptable type wins, as the client ordered them.
    for part in accept.split(',') {
        let part = part.trim();
        if part.contains("as=Table") && part.contains("g=meta.k8s.io") {
            let include = query
                .string("includeObject")
                .unwrap_or("Metadata")
                .to_string();
            return Accept::Table { include };
        }
        if part.starts_with("application/json") || part.starts_with("*/*") {
            return Accept::Json;
        }
        if part.starts_with("application/yaml") {
            return Accept::Yaml;
        }
    }
    Accept::Json
}

/// What a request path names.
#[derive(Debug)]
struct Route {
    resource: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

/// Splits a path into the resource it names.
fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let namespaced =
        |plural: &str| resources::find(group, version, plural).filter(|r| r.namespaced);
    match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced(plural).is_some() => {
            let resource = namespaced(plural)?;
            if tail.len() > 2 {
                return None;
            }
            Some(Route {
                resource,
                namespace: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            })
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let resource = resources::find(group, version, plural)?;
            Some(Route {
                resource,
                namespace: None,
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            })
        }
        _ => None,
    }
}

/// What a request path addresses, as metrics label it.
pub struct Addressed {
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    /// `resource` (one object), `namespace` (a namespace's collection) or
    /// `cluster` (every namespace's, or a cluster-scoped collection).
    pub scope: &'static str,
    pub named: bool,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

/// The resource a path addresses; `None` for other paths (discovery,
/// OpenAPI, health) and for unknown resources.
pub fn addressed(path: &str) -> Option<Addressed> {
    let route = route(path)?;
    let subresource = match &route.sub {
        Some(sub) => Sub::parse(sub)?.name(),
        None => "",
    };
    let scope = match (&route.name, &route.namespace) {
        (Some(_), _) => "resource",
        (None, Some(_)) => "namespace",
        (None, None) => "cluster",
    };
    Some(Addressed {
        group: route.resource.group,
        version: route.resource.version,
        resource: route.resource.plural,
        subresource,
        scope,
        named: route.name.is_some(),
        namespace: route.namespace,
        name: route.name,
    })
}

pub async fn dispatch(State(api): State<Arc<Api>>, request: Request) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = tracing::debug_span!("request", %method, %path);
    let _enter = span.enter();
    match handle(api, request).await {
        Ok(response) => response,
        Err(error) => {
            if error.code >= 500 {
                tracing::warn!(%method, %path, code = error.code, message = %error.message, "request failed");
            }
            error.into_response()
        }
    }
}

/// Parses what a request addresses and how it wants the answer.
fn context(parts: &http::request::Parts) -> Result<Ctx> {
    let Some(Route {
        resource,
        namespace,
        name,
        sub,
    }) = route(parts.uri.path())
    else {
        return Err(ApiError::path_not_found());
    };
    let query = Query::parse(parts.uri.query().unwrap_or_default());
    let sub = match sub {
        None => None,
        Some(s) => match Sub::parse(&s).filter(|s| resource.has(*s)) {
            Some(sub) => Some(sub),
            None => return Err(ApiError::path_not_found()),
        },
    };
    if let (Some(ns), true) = (&namespace, resource.namespaced) {
        if !crate::validation::is_dns1123_label(ns) {
            return Err(ApiError::path_not_found());
        }
    }
    let accept = parse_accept(&parts.headers, &query);
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    Ok(Ctx {
        resource,
        namespace,
        name,
        sub,
        query,
        accept,
        content_type,
        method: parts.method.clone(),
        warnings: Vec::new(),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default(),
        user: parts.extensions.get::<crate::server::User>().cloned(),
    })
}

async fn handle(api: Arc<Api>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let streaming = route(parts.uri.path())
        .and_then(|r| r.sub)
        .is_some_and(|s| s == "exec" || s == "attach");
    if streaming && parts.headers.contains_key(header::UPGRADE) {
        // exec and attach keep the connection: it is handed to the agent.
        let ctx = context(&parts)?;
        if ctx.name.is_some() && matches!(ctx.sub, Some(Sub::Exec | Sub::Attach)) {
            return proxy::stream(api, &ctx, Request::from_parts(parts, body)).await;
        }
    }
    // The body is read before anything can fail, so that every error
    // reaches the client as a response rather than a reset stream.
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        bytes::Bytes::new()
    } else {
        read_body(body).await?
    };
    if metrics::handles(parts.uri.path()) {
        return metrics::serve(&api, &parts, body).await;
    }
    if crate::rbac::review::handles(parts.uri.path()) {
        return Ok(crate::rbac::review::serve(&api, &parts, body).await);
    }
    let mut ctx = context(&parts)?;
    if ctx.sub == Some(Sub::Log) && ctx.name.is_some() && parts.method == Method::GET {
        return proxy::log(&api, &ctx, parts.uri.query().unwrap_or_default()).await;
    }
    let watching = ctx.flag("watch");
    if parts.method == Method::GET && ctx.name.is_none() {
        crate::query::validate_list_options(&ctx.query)?;
    }
    let write = match parts.method {
        Method::POST => Some(Write::Create),
        Method::PUT => Some(Write::Update),
        Method::PATCH => Some(Write::Patch {
            apply: ctx.content_type.starts_with("application/apply-patch"),
        }),
        Method::DELETE => Some(Write::Delete),
        _ => None,
    };
    if let Some(write) = write {
        crate::query::validate_write_options(&ctx.query, write)?;
    }
    let result = match (&parts.method, ctx.name.is_some()) {
        (&Method::GET, false) if watching => return watch::serve(api, ctx).await,
        (&Method::GET, false) => read::list(&api, &ctx).await,
        (&Method::GET, true) => read::get(&api, &ctx).await,
        (&Method::POST, false) => write::create(&api, &mut ctx, body).await,
        (&Method::POST, true) => write::post_subresource(&api, &mut ctx, body).await,
        (&Method::PUT, true) => write::replace(&api, &mut ctx, body).await,
        (&Method::PATCH, true) => write::patch(&api, &mut ctx, body).await,
        (&Method::DELETE, true) => delete::delete(&api, &ctx, body).await,
        (&Method::DELETE, false) if ctx.resource.verbs().contains(&"deletecollection") => {
            delete::delete_collection(&api, &ctx, body).await
        }
        (method, _) => Err(ApiError::method_not_allowed(method.as_str())),
    };
    let (code, object) = result?;
    // A create names its object in its body: the audit log's objectRef
    // takes the name from here.
    let created = (parts.method == Method::POST && ctx.name.is_none())
        .then(|| crate::object::name(&object).to_string())
        .filter(|name| !name.is_empty());
    let mut response = respond(&ctx, code, object);
    if let Some(name) = created {
        response
            .extensions_mut()
            .insert(crate::audit::Created(name));
    }
    Ok(response)
}

/// Creates an object on the server's own behalf.
pub async fn create_internal(api: &Api, ctx: &mut Ctx, mut object: Value) -> Result<Value> {
    object["apiVersion"] = serde_json::json!(ctx.resource.api_version());
    object["kind"] = serde_json::json!(ctx.resource.kind);
    write::create_object(api, ctx, object).await
}

/// A body over the limit is still read (and thrown away) up to this much,
/// so that the client sees the 413 instead of a reset stream.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

async fn read_body(body: Body) -> Result<bytes::Bytes> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut buffer = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("could not read the request body: {e}")))?;
        seen += chunk.len();
        if seen <= MAX_BODY {
            buffer.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > MAX_BODY {
        return Err(ApiError::too_large());
    }
    Ok(buffer.freeze())
}

/// Decodes a request body as JSON or YAML, by its content type.
pub fn decode(ctx: &Ctx, body: &[u8]) -> Result<Value> {
    decode_body(&ctx.content_type, body)
}

/// Decodes a body of the given content type (JSON, YAML or protobuf).
pub fn decode_body(content_type: &str, body: &[u8]) -> Result<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    let kind = content_type.split(';').next().unwrap_or_default().trim();
    let value: Value = match kind {
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            serde_norway::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
            })?
        }
        "application/vnd.kubernetes.protobuf" => {
            crate::protobuf::decode_object(body).map_err(|e| {
                ApiError::bad_request(format!(
                    "the body is not a valid Kubernetes protobuf object: {e}"
                ))
            })?
        }
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("json: cannot decode the request body: {e}"))
        })?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the request body must be a JSON object, not {}",
            match value {
                Value::Array(_) => "an array",
                Value::String(_) => "a string",
                Value::Number(_) => "a number",
                Value::Bool(_) => "a boolean",
                _ => "null",
            }
        )));
    }
    Ok(value)
}

/// Writes `object` back in the format the client asked for.
pub fn respond(ctx: &Ctx, code: StatusCode, object: Value) -> Response {
    let object = crate::convert::to_served(ctx.resource, object);
    let object = match &ctx.accept {
        Accept::Table { include } if is_object_or_list(&object) => {
            crate::table::table(ctx.resource, &object, include)
        }
        _ => object,
    };
    let mut response = match ctx.accept {
        Accept::Yaml => {
            let text = serde_norway::to_string(&object).unwrap_or_default();
            (code, [(header::CONTENT_TYPE, "application/yaml")], text).into_response()
        }
        _ => (code, axum::Json(object)).into_response(),
    };
    for warning in &ctx.warnings {
        if let Ok(value) = HeaderValue::from_str(&format!("299 - {warning:?}")) {
            response.headers_mut().append(header::WARNING, value);
        }
    }
    response
}

fn is_object_or_list(object: &Value) -> bool {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    kind != "Status" && kind != "Scale"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_field_managers_come_from_the_user_agent() {
        let cases = [
            ("lightkube/0.15.0", "lightkube"),
            ("kubectl/v1.32.0 (linux/amd64) kubernetes/abc", "kubectl"),
            ("OpenAPI-Generator/31.0.0/python", "OpenAPI-Generator"),
            ("python-requests", "python-requests"),
            ("", ""),
            ("a\tb\u{7f}c/1", "abc"),
        ];
        for (agent, manager) in cases {
            assert_eq!(default_field_manager(agent), manager, "{agent:?}");
        }
        assert_eq!(default_field_manager(&"x".repeat(300)).len(), 128);
        let mut ctx = Ctx::internal(crate::resources::served("", "v1", "configmaps"), None);
        ctx.user_agent = "kr8s/0.17".into();
        assert_eq!(ctx.field_manager(), "kr8s");
        ctx.query = Query::parse("fieldManager=mine");
        assert_eq!(ctx.field_manager(), "mine");
    }

    #[test]
    fn paths_name_resources() {
        let r = route("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(r.resource.plural, "pods");
        assert_eq!(r.namespace.as_deref(), Some("default"));
        assert_eq!(r.name.as_deref(), Some("web"));
        assert_eq!(r.sub.as_deref(), Some("status"));
        let r = route("/api/v1/namespaces/default").unwrap();
        assert_eq!(r.resource.plural, "namespaces");
        assert_eq!(r.name.as_deref(), Some("default"));
        let r = route("/apis/apps/v1/deployments").unwrap();
        assert_eq!((r.resource.plural, r.namespace), ("deployments", None));
        assert!(route("/apis/apps/v1/namespaces/x/nothing").is_none());
        assert!(route("/api/v1/namespaces/x/pods/a/b/c").is_none());
        assert!(route("/metrics").is_none());
    }
}
