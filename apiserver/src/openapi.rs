//! OpenAPI v3 documents, generated from the resource table: one document
//! per group/version listing each resource's operations. kubectl reads them
//! to learn that the server validates fields itself (`fieldValidation`) and
//! which patch types each kind takes (strategic merge for built-in kinds).
//!
//! ```text
//!   GET /openapi/v3                 {"paths": {"apis/apps/v1": {"serverRelativeURL": ...}}}
//!   GET /openapi/v3/apis/apps/v1    {"openapi": "3.0.0", "paths": {...}, "components": {...}}
//! ```

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::resources::{self, Resource, Sub};

fn query_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn write_params() -> Vec<Value> {
    vec![
        query_param("dryRun", "When present, indicates that modifications should not be persisted."),
        query_param("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."),
        query_param("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields: Ignore, Warn (default) or Strict."),
    ]
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn reference(r: &Resource) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", crate::schema::schema_name(r))})
}

fn operation(
    r: &Resource,
    action: &str,
    verb: &str,
    extra: Vec<Value>,
    body: Option<Value>,
) -> Value {
    let mut op = json!({
        "operationId": format!("{verb}{}{}", if r.namespaced { "Namespaced" } else { "" }, r.kind),
        "parameters": extra,
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

fn paths_for(r: &Resource) -> Vec<(String, Value)> {
    let prefix = r.path_prefix();
    let collection = if r.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{prefix}/{}", r.plural)
    };
    let item = format!("{collection}/{{name}}");
    let mut paths = vec![
        (
            collection.clone(),
            json!({
                "get": operation(r, "list", "list", vec![query_param("labelSelector", ""), query_param("fieldSelector", ""), query_param("watch", "")], None),
                "post": operation(r, "post", "create", write_params(), Some(json_body(r))),
                "delete": operation(r, "deletecollection", "deleteCollection", vec![], None),
            }),
        ),
        (
            item.clone(),
            json!({
                "get": operation(r, "get", "read", vec![], None),
                "put": operation(r, "put", "replace", write_params(), Some(json_body(r))),
                "patch": operation(r, "patch", "patch", {
                    let mut p = write_params();
                    p.push(query_param("force", "Force is going to \"force\" Apply requests."));
                    p
                }, Some(patch_body())),
                "delete": operation(r, "delete", "delete", vec![query_param("gracePeriodSeconds", ""), query_param("propagationPolicy", "")], None),
            }),
        ),
    ];
    if r.has(Sub::Status) {
        paths.push((
            format!("{item}/status"),
            json!({
                "get": operation(r, "get", "read", vec![], None),
                "put": operation(r, "put", "replace", write_params(), Some(json_body(r))),
                "patch": operation(r, "patch", "patch", write_params(), Some(patch_body())),
            }),
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
