//! JSON schemas of the served kinds for the OpenAPI documents, generated
//! from the k8s-openapi types (their documentation becomes the schemas'
//! descriptions, which `kubectl explain` prints), plus the Kubernetes
//! extensions clients look for: the group/version/kind of each top-level
//! schema and the strategic-merge metadata (`x-kubernetes-patch-strategy`,
//! `x-kubernetes-patch-merge-key`) that `kubectl apply` computes patches
//! with. The merge metadata is the same as the server's
//! (`patch::strategic::list_strategy`), listed here by type and field.

use std::collections::BTreeMap;

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use crate::resources::Resource;

/// (schema, property, patch strategy, merge key) of the built-in types.
const PATCH_META: &[(&str, &str, &str, Option<&str>)] = &[
    (
        "io.k8s.api.core.v1.PodSpec",
        "containers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "initContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "volumes",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "hostAliases",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        "merge",
        Some("topologyKey"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "resourceClaims",
        "merge,retainKeys",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        "merge",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.Container", "env", "merge", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        "merge",
        Some("containerPort"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "env",
        "merge",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        "merge",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        "merge",
        Some("devicePath"),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        "merge",
        Some("port"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "podIPs",
        "merge",
        Some("ip"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NodeStatus",
        "addresses",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        "strategy",
        "retainKeys",
        None,
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        "merge",
        Some("type"),
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        "merge",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        "merge",
        Some("uid"),
    ),
];

/// The schemas of `kinds` and of every type they refer to, keyed by name.
pub fn for_kinds(kinds: &[&Resource]) -> BTreeMap<String, Value> {
    let mut generator = SchemaSettings::openapi3().into_generator();
    for r in kinds {
        (r.schema)(&mut generator);
    }
    let mut schemas: BTreeMap<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    for r in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&schema_name(r)) {
            let mut list = schema
                .get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            list.push(json!({"group": r.group, "version": r.version, "kind": r.kind}));
            schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
        }
    }
    for (name, property, strategy, key) in PATCH_META {
        let Some(field) = schemas
            .get_mut(*name)
            .and_then(|s| s.get_mut("properties"))
            .and_then(|p| p.get_mut(*property))
            .and_then(Value::as_object_mut)
        else {
            continue;
        };
        field.insert("x-kubernetes-patch-strategy".into(), json!(strategy));
        if let Some(key) = key {
            field.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
    }
    schemas
}

/// The name k8s-openapi (and Kubernetes) give a kind's schema:
/// `io.k8s.api.apps.v1.Deployment`.
pub fn schema_name(r: &Resource) -> String {
    // The group's first label: `rbac` for rbac.authorization.k8s.io.
    let package = match r.group {
        "" => "core",
        g => g.split('.').next().unwrap_or(g),
    };
    format!("io.k8s.api.{package}.{}.{}", r.version, r.kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources;

    #[test]
    fn every_kind_has_a_named_schema_with_its_gvk() {
        for (group, versions) in resources::groups() {
            for version in versions {
                let kinds: Vec<&Resource> = resources::all()
                    .filter(|r| r.group == group && r.version == version)
                    .collect();
                let schemas = for_kinds(&kinds);
                for r in kinds {
                    let schema = schemas
                        .get(&schema_name(r))
                        .unwrap_or_else(|| panic!("no schema {}", schema_name(r)));
                    assert_eq!(schema["x-kubernetes-group-version-kind"][0]["kind"], r.kind);
                }
            }
        }
    }

    #[test]
    fn patch_metadata_lands_on_the_fields() {
        let deployments = resources::find("apps", "v1", "deployments").unwrap();
        let schemas = for_kinds(&[deployments]);
        let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        let strategy = &schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        assert!(strategy.get("description").is_some() || strategy.get("allOf").is_some());
    }
}
