//! Discovery, generated from the resource table: `/version`, `/api`,
//! `/apis`, each group/version's APIResourceList, and aggregated discovery
//! (`apidiscovery.k8s.io/v2`), which lets kubectl learn everything in two
//! requests.

use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use http::header;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::rbac::review;
use crate::resources::{self, Resource};
use crate::rest::metrics;

/// The Kubernetes version this server implements, so that clients (and
/// the kubectl dispatcher, which picks a client by it) know what to expect.
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "32";
pub const KUBE_GIT_VERSION: &str = "v1.32.0";

pub async fn version() -> Response {
    axum::Json(json!({
        "major": KUBE_MAJOR,
        "minor": KUBE_MINOR,
        "gitVersion": KUBE_GIT_VERSION,
        "gitCommit": concat!("shoal-", env!("CARGO_PKG_VERSION")),
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "n/a (shoal is written in Rust)",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", other => other }),
    }))
    .into_response()
}

fn wants_aggregated(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|part| {
                let params: Vec<&str> = part.split(';').map(str::trim).collect();
                params.contains(&"g=apidiscovery.k8s.io")
                    && params.contains(&"v=v2")
                    && params.contains(&"as=APIGroupDiscoveryList")
            })
        })
}

fn aggregated(groups: Vec<Value>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        )],
        axum::Json(json!({
            "kind": "APIGroupDiscoveryList",
            "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {},
            "items": groups,
        })),
    )
        .into_response()
}

fn discovery_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let (group, version, kind, verbs) = sub.discovery(r);
            json!({
                "subresource": sub.name(),
                "responseKind": {"group": group, "version": version, "kind": kind},
                "verbs": verbs,
            })
        })
        .collect();
    let mut entry = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular(),
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        entry["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        entry["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        entry["subresources"] = json!(subresources);
    }
    entry
}

fn group_discovery(group: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = resources::all()
                .filter(|r| r.group == group && r.version == *version)
                .map(discovery_resource)
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

pub async fn api(request: Request) -> Response {
    if wants_aggregated(&request) {
        return aggregated(vec![group_discovery("", &["v1"])]);
    }
    axum::Json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
    .into_response()
}

fn group_entry(group: &str, versions: &[&str]) -> Value {
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": list, "preferredVersion": list[0]})
}

pub async fn apis(request: Request) -> Response {
    let groups: Vec<(&str, Vec<&str>)> = resources::groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .collect();
    if wants_aggregated(&request) {
        let mut list: Vec<Value> = groups.iter().map(|(g, v)| group_discovery(g, v)).collect();
        list.push(metrics_group_discovery());
        list.extend(
            review::groups()
                .into_iter()
                .map(|(g, v)| review_group_discovery(g, v)),
        );
        return aggregated(list);
    }
    let mut list: Vec<Value> = groups.iter().map(|(g, v)| group_entry(g, v)).collect();
    list.push(group_entry(metrics::GROUP, &[metrics::VERSION]));
    list.extend(
        review::groups()
            .into_iter()
            .map(|(g, v)| group_entry(g, &[v])),
    );
    axum::Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})).into_response()
}

/// `metrics.k8s.io` (served by `rest::metrics`, read-only) in aggregated
/// discovery.
fn metrics_group_discovery() -> Value {
    json!({
        "metadata": {"name": metrics::GROUP, "creationTimestamp": null},
        "versions": [{
            "version": metrics::VERSION,
            "resources": metrics::aggregated_resources(),
            "freshness": "Current",
        }],
    })
}

/// The review resources of `group`/`version` (create only, never stored).
fn reviews<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static review::Review> + 'a {
    review::REVIEWS
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// A review group in aggregated discovery.
fn review_group_discovery(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = reviews(group, version)
        .map(|r| {
            json!({
                "resource": r.plural,
                "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
                "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": r.kind.to_lowercase(),
                "verbs": ["create"],
            })
        })
        .collect();
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": [{"version": version, "resources": resources, "freshness": "Current"}],
    })
}

pub async fn group(Path(group): Path<String>) -> Response {
    if let Some((g, v)) = review::groups().into_iter().find(|(g, _)| *g == group) {
        let mut entry = group_entry(g, &[v]);
        entry["kind"] = json!("APIGroup");
        entry["apiVersion"] = json!("v1");
        return axum::Json(entry).into_response();
    }
    if group == metrics::GROUP {
        let mut entry = group_entry(metrics::GROUP, &[metrics::VERSION]);
        entry["kind"] = json!("APIGroup");
        entry["apiVersion"] = json!("v1");
        return axum::Json(entry).into_response();
    }
    match resources::groups()
        .into_iter()
        .find(|(g, _)| *g == group && !g.is_empty())
    {
        Some((g, versions)) => {
            let mut entry = group_entry(g, &versions);
            entry["kind"] = json!("APIGroup");
            entry["apiVersion"] = json!("v1");
            axum::Json(entry).into_response()
        }
        None => ApiError::path_not_found().into_response(),
    }
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    if group == metrics::GROUP && version == metrics::VERSION {
        return Some(metrics::resource_list());
    }
    if reviews(group, version).next().is_some() {
        let resources: Vec<Value> = reviews(group, version)
            .map(|r| {
                json!({
                    "name": r.plural,
                    "singularName": r.kind.to_lowercase(),
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": ["create"],
                })
            })
            .collect();
        return Some(json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": format!("{group}/{version}"),
            "resources": resources,
        }));
    }
    let mut entries = Vec::new();
    for r in resources::all().filter(|r| r.group == group && r.version == version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        entries.push(entry);
        for sub in r.subresources {
            let (g, v, kind, verbs) = sub.discovery(r);
            let mut entry = json!({
                "name": format!("{}/{}", r.plural, sub.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != r.group || v != r.version {
                entry["group"] = json!(g);
                entry["version"] = json!(v);
            }
            entries.push(entry);
        }
    }
    if entries.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": entries,
    }))
}

pub async fn core_version(Path(version): Path<String>) -> Response {
    match resource_list("", &version) {
        Some(list) => axum::Json(list).into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

pub async fn group_version(Path((group, version)): Path<(String, String)>) -> Response {
    match resource_list(&group, &version) {
        Some(list) => axum::Json(list).into_response(),
        None => ApiError::path_not_found().into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_subresources() {
        let list = resource_list("", "v1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(names.contains(&"namespaces"));
        let scale = resource_list("apps", "v1").unwrap()["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .cloned()
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
        assert_eq!(scale["kind"], "Scale");
    }

    #[test]
    fn metrics_are_discoverable() {
        let list = resource_list("metrics.k8s.io", "v1beta1").unwrap();
        assert_eq!(list["resources"][0]["name"], "nodes");
        assert_eq!(list["resources"][1]["kind"], "PodMetrics");
        assert_eq!(list["resources"][1]["verbs"], json!(["get", "list"]));
        let group = metrics_group_discovery();
        assert_eq!(group["versions"][0]["resources"][0]["scope"], "Cluster");
    }

    #[test]
    fn every_group_version_is_listed() {
        for (group, versions) in resources::groups() {
            for version in versions {
                assert!(resource_list(group, version).is_some());
            }
        }
    }
}
