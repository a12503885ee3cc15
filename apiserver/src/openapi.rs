//! OpenAPI v3 documents, generated from the resource table: one document
//! per group/version listing each resource's operations. kubectl reads them
//! to learn that the server validates fields itself (`fieldValidation`) and
//! which patch types each kind takes (strategic merge for built-in kinds).
//!
//! ```text
//!   GET /openapi/v3                 {"paths": {"apis/apps/v1": {"serverRelativeURL": ...}}}
//!   GET /openapi/v3/apis/apps/v1    {"openapi": "3.0.0", "paths": {...}, "components": {...}}
//!   GET /openapi/v2                 {"swagger": "2.0", "paths": {...}, "definitions": {...}} (all of them)
//!   GET /openapi/v2 (Accept: ...proto-openapi.spec.v2@v1.0+protobuf)
//!                                   the same document's header only, in gnostic's protobuf
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::{self, Resource, Sub};

/// A query parameter of type `string`, `boolean` or `integer`, as
/// kube-apiserver's documents declare it.
fn query_param(name: &str, kind: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": kind, "uniqueItems": true}})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

/// The parameters each kind of operation takes, named as in Kubernetes.
fn params(names: &[&str]) -> Vec<Value> {
    names
        .iter()
        .map(|name| {
            let (kind, description) = match *name {
                "allowWatchBookmarks" => ("boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
                "continue" => ("string", "The continue option should be set when retrieving more results from the server."),
                "dryRun" => ("string", "When present, indicates that modifications should not be persisted. Valid value: All."),
                "fieldManager" => ("string", "fieldManager is a name associated with the actor or entity that is making these changes."),
                "fieldSelector" => ("string", "A selector to restrict the list of returned objects by their fields."),
                "fieldValidation" => ("string", "How to handle unknown or duplicate fields: Ignore, Warn (default) or Strict."),
                "force" => ("boolean", "Force is going to \"force\" Apply requests."),
                "gracePeriodSeconds" => ("integer", "The duration in seconds before the object should be deleted."),
                "labelSelector" => ("string", "A selector to restrict the list of returned objects by their labels."),
                "limit" => ("integer", "limit is a maximum number of responses to return for a list call."),
                "orphanDependents" => ("boolean", "Deprecated: please use the PropagationPolicy."),
                "propagationPolicy" => ("string", "Whether and how garbage collection will be performed: Orphan, Background or Foreground."),
                "resourceVersion" => ("string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
                "resourceVersionMatch" => ("string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
                "sendInitialEvents" => ("boolean", "sendInitialEvents=true may be set together with watch=true."),
                "timeoutSeconds" => ("integer", "Timeout for the list/watch call."),
                "watch" => ("boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
                "container" => ("string", "The container for which to stream logs."),
                "follow" => ("boolean", "Follow the log stream of the pod."),
                "previous" => ("boolean", "Return previous terminated container logs."),
                "sinceSeconds" => ("integer", "A relative time in seconds before the current time from which to show logs."),
                "tailLines" => ("integer", "The number of lines from the end of the logs to show."),
                "timestamps" => ("boolean", "Prefix each line of log output with an RFC3339 timestamp."),
                _ => ("string", ""),
            };
            query_param(name, kind, description)
        })
        .collect()
}

const LIST: &[&str] = &[
    "allowWatchBookmarks",
    "continue",
    "fieldSelector",
    "labelSelector",
    "limit",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
    "watch",
];
const WRITE: &[&str] = &["dryRun", "fieldManager", "fieldValidation"];
const PATCH: &[&str] = &["dryRun", "fieldManager", "fieldValidation", "force"];
const DELETE: &[&str] = &[
    "dryRun",
    "gracePeriodSeconds",
    "orphanDependents",
    "propagationPolicy",
];
const DELETE_COLLECTION: &[&str] = &[
    "continue",
    "dryRun",
    "fieldSelector",
    "gracePeriodSeconds",
    "labelSelector",
    "limit",
    "orphanDependents",
    "propagationPolicy",
    "resourceVersion",
    "resourceVersionMatch",
    "sendInitialEvents",
    "timeoutSeconds",
];
const LOG: &[&str] = &[
    "container",
    "follow",
    "previous",
    "sinceSeconds",
    "tailLines",
    "timestamps",
];

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn reference(r: &Resource) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", crate::schema::schema_name(r))})
}

fn operation(
    r: &Resource,
    action: &str,
    operation_id: String,
    parameters: Vec<Value>,
    body: Option<Value>,
) -> Value {
    let mut op = json!({
        "operationId": operation_id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference(r)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk(r),
    });
    if let Some(body) = body {
        op["requestBody"] = body;
    }
    op
}

fn json_body(r: &Resource) -> Value {
    json!({"content": {"*/*": {"schema": reference(r)}}, "required": true})
}

fn patch_body() -> Value {
    let schema = json!({"type": "object"});
    json!({"content": {
        "application/apply-patch+yaml": {"schema": schema},
        "application/json-patch+json": {"schema": schema},
        "application/merge-patch+json": {"schema": schema},
        "application/strategic-merge-patch+json": {"schema": schema},
    }, "required": true})
}

/// The operations of one resource, by path, as kube-apiserver documents
/// them: path-level `{namespace}`, `{name}` and `pretty`, each
/// operation's query parameters, and only the verbs the server serves.
fn paths_for(r: &Resource) -> Vec<(String, Value)> {
    let prefix = r.path_prefix();
    let scope = if r.namespaced { "Namespaced" } else { "" };
    let id = |verb: &str, suffix: &str| format!("{verb}{scope}{}{suffix}", r.kind);
    let pretty = query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    );
    let namespace = path_param(
        "namespace",
        "object name and auth scope, such as for teams and projects",
    );
    let name = path_param("name", &format!("name of the {}", r.kind));
    let (collection, mut scope_params) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            vec![namespace],
        )
    } else {
        (format!("{prefix}/{}", r.plural), Vec::new())
    };
    scope_params.push(pretty.clone());
    let mut item_params = vec![name];
    item_params.extend(scope_params.iter().cloned());
    let item = format!("{collection}/{{name}}");

    let mut collection_ops = json!({
        "parameters": scope_params,
        "get": operation(r, "list", id("list", ""), params(LIST), None),
        "post": operation(r, "post", id("create", ""), params(WRITE), Some(json_body(r))),
    });
    if r.verbs().contains(&"deletecollection") {
        collection_ops["delete"] = operation(
            r,
            "deletecollection",
            id("deleteCollection", ""),
            params(DELETE_COLLECTION),
            None,
        );
    }
    let mut paths = vec![
        (collection, collection_ops),
        (
            item.clone(),
            json!({
                "parameters": item_params,
                "get": operation(r, "get", id("read", ""), Vec::new(), None),
                "put": operation(r, "put", id("replace", ""), params(WRITE), Some(json_body(r))),
                "patch": operation(r, "patch", id("patch", ""), params(PATCH), Some(patch_body())),
                "delete": operation(r, "delete", id("delete", ""), params(DELETE), None),
            }),
        ),
    ];
    if r.namespaced {
        paths.push((
            format!("{prefix}/{}", r.plural),
            json!({
                "parameters": [pretty],
                "get": operation(r, "list", format!("list{}ForAllNamespaces", r.kind), params(LIST), None),
            }),
        ));
    }
    for (sub, suffix) in [(Sub::Status, "Status"), (Sub::Scale, "Scale")] {
        if r.has(sub) {
            paths.push((
                format!("{item}/{}", sub.name()),
                json!({
                    "parameters": item_params,
                    "get": operation(r, "get", id("read", suffix), Vec::new(), None),
                    "put": operation(r, "put", id("replace", suffix), params(WRITE), Some(json_body(r))),
                    "patch": operation(r, "patch", id("patch", suffix), params(PATCH), Some(patch_body())),
                }),
            ));
        }
    }
    if r.has(Sub::Log) {
        let mut log = operation(r, "get", id("read", "Log"), params(LOG), None);
        log["responses"] = json!({"200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}}});
        paths.push((
            format!("{item}/log"),
            json!({"parameters": item_params, "get": log}),
        ));
    }
    paths
}

/// The document of one group/version.
fn document(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&Resource> = resources::all()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = BTreeMap::new();
    for r in &served {
        paths.extend(paths_for(r));
    }
    let schemas = crate::schema::for_kinds(&served);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": crate::discovery::KUBE_GIT_VERSION},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// Documents by path (`api/v1`, `apis/apps/v1`), made once.
fn documents() -> &'static BTreeMap<String, (Value, String)> {
    static DOCS: OnceLock<BTreeMap<String, (Value, String)>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut docs = BTreeMap::new();
        for (group, versions) in resources::groups() {
            for version in versions {
                let Some(doc) = document(group, version) else {
                    continue;
                };
                let path = if group.is_empty() {
                    format!("api/{version}")
                } else {
                    format!("apis/{group}/{version}")
                };
                // The hash lets clients cache a document until it changes.
                let text = serde_json::to_vec(&doc).unwrap_or_default();
                let hash = format!("{:016X}", fnv1a(&text));
                docs.insert(path, (doc, hash));
            }
        }
        docs
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

pub async fn root() -> Response {
    let paths: BTreeMap<&String, Value> = documents()
        .iter()
        .map(|(path, (_, hash))| {
            (
                path,
                json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}")}),
            )
        })
        .collect();
    axum::Json(json!({"paths": paths})).into_response()
}

pub async fn core(Path(version): Path<String>) -> Response {
    serve(&format!("api/{version}"))
}

pub async fn group(Path((group, version)): Path<(String, String)>) -> Response {
    serve(&format!("apis/{group}/{version}"))
}

/// The protobuf form of `/openapi/v2` that kubectl asks for (with an `@`,
/// which Go's MIME parser refuses in an answer: kube-openapi answers with
/// [`V2_PROTOBUF`]).
const V2_PROTOBUF_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2`: one Swagger 2.0 document for every group/version, made
/// once from the v3 documents (the same paths, operations and schemas,
/// written as v2 writes them). A client that asks for protobuf (kubectl,
/// for its client-side check of a `List`) gets a document without
/// definitions in gnostic's `openapi.v2.Document` encoding: kubectl then
/// skips its own check of each item, which the server makes anyway
/// (`fieldValidation`).
pub async fn v2(headers: http::HeaderMap) -> Response {
    let protobuf = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains(V2_PROTOBUF_ASKED) || v.contains(V2_PROTOBUF));
    if protobuf {
        return (
            [(http::header::CONTENT_TYPE, V2_PROTOBUF)],
            v2_protobuf_header(),
        )
            .into_response();
    }
    v2_json()
}

/// `openapi.v2.Document { swagger: "2.0", info: { title, version } }`.
fn v2_protobuf_header() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
        out.push(number << 3 | 2);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, crate::discovery::KUBE_GIT_VERSION.as_bytes());
    let mut document = Vec::new();
    field(&mut document, 1, b"2.0");
    field(&mut document, 2, &info);
    document
}

fn v2_json() -> Response {
    static DOC: OnceLock<Value> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        let mut paths = serde_json::Map::new();
        let mut definitions = serde_json::Map::new();
        for (doc, _) in documents().values() {
            if let Some(v3_paths) = doc["paths"].as_object() {
                for (path, item) in v3_paths {
                    paths.insert(path.clone(), v2_path_item(item));
                }
            }
            if let Some(schemas) = doc["components"]["schemas"].as_object() {
                for (name, schema) in schemas {
                    definitions.insert(name.clone(), v2_refs(schema.clone()));
                }
            }
        }
        json!({
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": crate::discovery::KUBE_GIT_VERSION},
            "paths": paths,
            "definitions": definitions,
        })
    });
    axum::Json(doc.clone()).into_response()
}

/// `#/components/schemas/X` references become `#/definitions/X`.
fn v2_refs(mut value: Value) -> Value {
    match &mut value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "$ref" {
                    if let Some(r) = v.as_str() {
                        *v = json!(r.replace("#/components/schemas/", "#/definitions/"));
                    }
                } else {
                    *v = v2_refs(std::mem::take(v));
                }
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                *v = v2_refs(std::mem::take(v));
            }
        }
        _ => {}
    }
    value
}

/// A v3 parameter as v2 writes it (the type beside the name).
fn v2_parameter(p: &Value) -> Value {
    let mut out =
        json!({"name": p["name"], "in": p["in"], "type": p["schema"]["type"], "uniqueItems": true});
    for key in ["description", "required"] {
        if let Some(v) = p.get(key) {
            out[key] = v.clone();
        }
    }
    out
}

fn v2_path_item(item: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (key, value) in item.as_object().into_iter().flatten() {
        let converted = if key == "parameters" {
            json!(value
                .as_array()
                .into_iter()
                .flatten()
                .map(v2_parameter)
                .collect::<Vec<_>>())
        } else {
            v2_operation(value)
        };
        out.insert(key.clone(), converted);
    }
    Value::Object(out)
}

fn v2_operation(op: &Value) -> Value {
    let mut out = op.clone();
    let mut parameters: Vec<Value> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(v2_parameter)
        .collect();
    if let Some(content) = op["requestBody"]["content"].as_object() {
        if let Some(schema) = content.values().next().map(|c| c["schema"].clone()) {
            parameters.insert(
                0,
                json!({"name": "body", "in": "body", "required": true, "schema": v2_refs(schema)}),
            );
        }
        out["consumes"] = json!(content.keys().collect::<Vec<_>>());
    }
    if let Some(map) = out.as_object_mut() {
        map.remove("requestBody");
    }
    out["parameters"] = json!(parameters);
    let mut responses = serde_json::Map::new();
    let mut produces = Vec::new();
    for (code, response) in op["responses"].as_object().into_iter().flatten() {
        let mut r = json!({"description": response["description"]});
        if let Some(content) = response["content"].as_object() {
            if let Some(schema) = content.values().next().map(|c| c["schema"].clone()) {
                r["schema"] = v2_refs(schema);
            }
            produces.extend(content.keys().cloned());
        }
        responses.insert(code.clone(), r);
    }
    out["responses"] = Value::Object(responses);
    out["produces"] = json!(produces);
    out["schemes"] = json!(["https"]);
    out
}

fn serve(path: &str) -> Response {
    match documents().get(path) {
        Some((doc, _)) => (
            [(http::header::CACHE_CONTROL, "public, immutable")],
            axum::Json(doc.clone()),
        )
            .into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_declare_their_parameters_and_only_served_operations() {
        for (path, (doc, _)) in documents() {
            for (route, item) in doc["paths"].as_object().unwrap() {
                let mut declared: Vec<&str> = item["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                declared.sort();
                let mut used: Vec<&str> = route
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
                    .collect();
                used.sort();
                assert_eq!(declared, used, "{path}: {route}");
            }
        }
        let core = &documents()["api/v1"].0["paths"];
        assert!(core["/api/v1/namespaces"].get("delete").is_none());
        assert!(core["/api/v1/namespaces/{namespace}/configmaps"]
            .get("delete")
            .is_some());
        let list = &core["/api/v1/namespaces/{namespace}/pods"]["get"]["parameters"];
        let typed = |name: &str| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .map(|p| p["schema"]["type"].clone())
        };
        assert_eq!(typed("watch"), Some(json!("boolean")));
        assert_eq!(typed("limit"), Some(json!("integer")));
        assert_eq!(typed("labelSelector"), Some(json!("string")));
        assert!(core["/api/v1/pods"].get("get").is_some());
        assert!(core["/api/v1/namespaces/{namespace}/pods/{name}/log"]
            .get("get")
            .is_some());
    }

    #[tokio::test]
    async fn v2_in_protobuf_is_a_gnostic_document_header() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::ACCEPT,
            http::HeaderValue::from_static(V2_PROTOBUF_ASKED),
        );
        let response = v2(headers).await;
        assert_eq!(response.headers()[http::header::CONTENT_TYPE], V2_PROTOBUF);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        // swagger (1) "2.0", info (2) { title (1) "Kubernetes", version (2) }
        assert_eq!(&body[..5], b"\x0a\x032.0");
        assert_eq!(body[5], 0x12);
        assert_eq!(body[6] as usize, body.len() - 7);
        assert_eq!(&body[7..19], b"\x0a\x0aKubernetes");
        assert_eq!(body[19], 0x12);
        assert_eq!(&body[21..], crate::discovery::KUBE_GIT_VERSION.as_bytes());
    }

    #[tokio::test]
    async fn v2_is_swagger_with_definitions_and_typed_parameters() {
        let response = v2(http::HeaderMap::new()).await;
        let body = axum::body::to_bytes(response.into_body(), 1 << 28)
            .await
            .unwrap();
        let doc: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(doc["swagger"], "2.0");
        assert!(doc["definitions"]["io.k8s.api.apps.v1.Deployment"].is_object());
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("#/components/schemas/"));
        let create = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
        assert_eq!(create["parameters"][0]["in"], "body");
        assert_eq!(
            create["parameters"][0]["schema"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.Deployment"
        );
        let list = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"];
        assert!(list["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "limit" && p["type"] == "integer"));
    }

    #[test]
    fn patch_operations_name_their_kind_and_take_field_validation() {
        let doc = document("apps", "v1").unwrap();
        let op = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(op["x-kubernetes-group-version-kind"]["kind"], "Deployment");
        assert!(op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        assert!(op["requestBody"]["content"]
            .get("application/strategic-merge-patch+json")
            .is_some());
        assert!(documents().contains_key("api/v1"));
        assert!(documents().contains_key("apis/autoscaling/v1"));
    }
}
