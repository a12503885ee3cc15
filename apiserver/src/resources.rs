//! The one table of resources. Discovery, routing, storage keys, decoding and
//! printing are all driven from it: adding a kind is adding a row.

use serde_json::Value;

/// What a kind's objects go through on the way in: decoding into the
/// k8s-openapi type and back, which rejects wrongly typed fields and drops
/// unknown ones, as Kubernetes' decoder does.
pub type Normalize = fn(Value) -> Result<Value, DecodeError>;

/// Why an object does not decode into its kind's type, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// Dotted path of the field (`spec.replicas`), "" for the object.
    pub path: String,
    pub message: String,
}

fn roundtrip<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: Value,
) -> Result<Value, DecodeError> {
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        DecodeError {
            path: if path == "." { String::new() } else { path },
            message: e.inner().to_string(),
        }
    })?;
    serde_json::to_value(typed).map_err(|e| DecodeError {
        path: String::new(),
        message: e.to_string(),
    })
}

/// Registers a kind's JSON schema (and those of its fields) with an
/// OpenAPI generator, from the k8s-openapi type's documentation.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

fn schema_of<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    generator.subschema_for::<T>()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sub {
    Status,
    Scale,
    Log,
    Exec,
    Attach,
    Binding,
    Eviction,
    /// A CertificateSigningRequest's approval conditions.
    Approval,
    /// A ServiceAccount's TokenRequest.
    Token,
}

impl Sub {
    pub fn name(self) -> &'static str {
        match self {
            Sub::Status => "status",
            Sub::Scale => "scale",
            Sub::Log => "log",
            Sub::Exec => "exec",
            Sub::Attach => "attach",
            Sub::Binding => "binding",
            Sub::Eviction => "eviction",
            Sub::Approval => "approval",
            Sub::Token => "token",
        }
    }

    /// (group, version, kind, verbs) as discovery lists them.
    pub fn discovery(
        self,
        parent: &Resource,
    ) -> (
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    ) {
        match self {
            Sub::Status => (
                parent.group,
                parent.version,
                parent.kind,
                &["get", "patch", "update"],
            ),
            Sub::Scale => ("autoscaling", "v1", "Scale", &["get", "patch", "update"]),
            Sub::Log => ("", "v1", "Pod", &["get"]),
            Sub::Exec => ("", "v1", "PodExecOptions", &["create", "get"]),
            Sub::Attach => ("", "v1", "PodAttachOptions", &["create", "get"]),
            Sub::Binding => ("", "v1", "Binding", &["create"]),
            Sub::Eviction => ("policy", "v1", "Eviction", &["create"]),
            Sub::Approval => (
                parent.group,
                parent.version,
                parent.kind,
                &["get", "patch", "update"],
            ),
            Sub::Token => ("authentication.k8s.io", "v1", "TokenRequest", &["create"]),
        }
    }

    pub fn parse(name: &str) -> Option<Sub> {
        Some(match name {
            "status" => Sub::Status,
            "scale" => Sub::Scale,
            "log" => Sub::Log,
            "exec" => Sub::Exec,
            "attach" => Sub::Attach,
            "binding" => Sub::Binding,
            "eviction" => Sub::Eviction,
            "approval" => Sub::Approval,
            "token" => Sub::Token,
            _ => return None,
        })
    }
}

#[derive(Debug)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Sub],
    pub normalize: Normalize,
    pub schema: SchemaFn,
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    /// The verbs this resource serves, as discovery lists them: every one
    /// but `deletecollection` on namespaces (which Kubernetes does not
    /// serve either).
    pub fn verbs(&self) -> &'static [&'static str] {
        if self.group.is_empty() && self.plural == "namespaces" {
            &[
                "create", "delete", "get", "list", "patch", "update", "watch",
            ]
        } else {
            VERBS
        }
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group/version path prefix: `/api/v1` or `/apis/apps/v1`.
    pub fn path_prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Where objects of this resource live in the store; with a namespace
    /// (and a trailing slash), the prefix of one namespace's objects.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        let mut key = String::from("/registry/");
        if !self.group.is_empty() {
            key.push_str(self.group);
            key.push('/');
        }
        key.push_str(self.plural);
        key.push('/');
        if let Some(ns) = namespace.filter(|_| self.namespaced) {
            key.push_str(ns);
            key.push('/');
        }
        key
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        let mut key = self.prefix(namespace);
        key.push_str(name);
        key
    }

    /// The singular resource name: the kind, lower-cased.
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }

    pub fn has(&self, sub: Sub) -> bool {
        self.subresources.contains(&sub)
    }

    /// `deployments.apps`, as Kubernetes names a resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

macro_rules! resource {
    ($group:literal, $version:literal, $kind:literal, $plural:literal, $namespaced:literal,
     short: [$($short:literal),*], categories: [$($cat:literal),*], subs: [$($sub:ident),*],
     $ty:ty) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            namespaced: $namespaced,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$(Sub::$sub),*],
            normalize: roundtrip::<$ty>,
            schema: schema_of::<$ty>,
        }
    };
}

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v1 as autoscaling1, autoscaling::v2 as autoscaling2,
    batch::v1 as batch, certificates::v1 as certificates, coordination::v1 as coordination,
    core::v1 as core, discovery::v1 as discovery, events::v1 as events,
    networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};

pub static RESOURCES: &[Resource] = &[
    resource!("", "v1", "Namespace", "namespaces", false, short: ["ns"], categories: [], subs: [Status], core::Namespace),
    resource!("", "v1", "Pod", "pods", true, short: ["po"], categories: ["all"], subs: [Status, Log, Exec, Attach, Binding, Eviction], core::Pod),
    resource!("", "v1", "Service", "services", true, short: ["svc"], categories: ["all"], subs: [Status], core::Service),
    resource!("", "v1", "Endpoints", "endpoints", true, short: ["ep"], categories: [], subs: [], core::Endpoints),
    resource!("", "v1", "Node", "nodes", false, short: ["no"], categories: [], subs: [Status], core::Node),
    resource!("", "v1", "Event", "events", true, short: ["ev"], categories: [], subs: [], core::Event),
    resource!("", "v1", "ConfigMap", "configmaps", true, short: ["cm"], categories: [], subs: [], core::ConfigMap),
    resource!("", "v1", "Secret", "secrets", true, short: [], categories: [], subs: [], core::Secret),
    resource!("", "v1", "ServiceAccount", "serviceaccounts", true, short: ["sa"], categories: [], subs: [Token], core::ServiceAccount),
    resource!("", "v1", "PersistentVolume", "persistentvolumes", false, short: ["pv"], categories: [], subs: [Status], core::PersistentVolume),
    resource!("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", true, short: ["pvc"], categories: [], subs: [Status], core::PersistentVolumeClaim),
    resource!("", "v1", "ResourceQuota", "resourcequotas", true, short: ["quota"], categories: [], subs: [Status], core::ResourceQuota),
    resource!("", "v1", "LimitRange", "limitranges", true, short: ["limits"], categories: [], subs: [], core::LimitRange),
    resource!("", "v1", "ReplicationController", "replicationcontrollers", true, short: ["rc"], categories: ["all"], subs: [Status, Scale], core::ReplicationController),
    resource!("", "v1", "PodTemplate", "podtemplates", true, short: [], categories: [], subs: [], core::PodTemplate),
    resource!("apps", "v1", "Deployment", "deployments", true, short: ["deploy"], categories: ["all"], subs: [Status, Scale], apps::Deployment),
    resource!("apps", "v1", "ReplicaSet", "replicasets", true, short: ["rs"], categories: ["all"], subs: [Status, Scale], apps::ReplicaSet),
    resource!("apps", "v1", "StatefulSet", "statefulsets", true, short: ["sts"], categories: ["all"], subs: [Status, Scale], apps::StatefulSet),
    resource!("apps", "v1", "DaemonSet", "daemonsets", true, short: ["ds"], categories: ["all"], subs: [Status], apps::DaemonSet),
    resource!("apps", "v1", "ControllerRevision", "controllerrevisions", true, short: [], categories: [], subs: [], apps::ControllerRevision),
    resource!("batch", "v1", "Job", "jobs", true, short: [], categories: ["all"], subs: [Status], batch::Job),
    resource!("batch", "v1", "CronJob", "cronjobs", true, short: ["cj"], categories: ["all"], subs: [Status], batch::CronJob),
    resource!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", true, short: [], categories: [], subs: [], discovery::EndpointSlice),
    resource!("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", true, short: ["netpol"], categories: [], subs: [], networking::NetworkPolicy),
    resource!("networking.k8s.io", "v1", "Ingress", "ingresses", true, short: ["ing"], categories: [], subs: [Status], networking::Ingress),
    resource!("networking.k8s.io", "v1", "IngressClass", "ingressclasses", false, short: [], categories: [], subs: [], networking::IngressClass),
    resource!("autoscaling", "v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, short: ["hpa"], categories: ["all"], subs: [Status], autoscaling2::HorizontalPodAutoscaler),
    resource!("certificates.k8s.io", "v1", "CertificateSigningRequest", "certificatesigningrequests", false, short: ["csr"], categories: [], subs: [Status, Approval], certificates::CertificateSigningRequest),
    resource!("coordination.k8s.io", "v1", "Lease", "leases", true, short: [], categories: [], subs: [], coordination::Lease),
    resource!("events.k8s.io", "v1", "Event", "events", true, short: ["ev"], categories: [], subs: [], events::Event),
    resource!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", true, short: ["pdb"], categories: [], subs: [Status], policy::PodDisruptionBudget),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", false, short: [], categories: [], subs: [], rbac::ClusterRole),
    resource!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", false, short: [], categories: [], subs: [], rbac::ClusterRoleBinding),
    resource!("rbac.authorization.k8s.io", "v1", "Role", "roles", true, short: [], categories: [], subs: [], rbac::Role),
    resource!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", true, short: [], categories: [], subs: [], rbac::RoleBinding),
    resource!("storage.k8s.io", "v1", "StorageClass", "storageclasses", false, short: ["sc"], categories: [], subs: [], storage::StorageClass),
    resource!("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", false, short: ["pc"], categories: [], subs: [], scheduling::PriorityClass),
];

/// autoscaling/v1 is served beside v2 from the same objects (see `convert`).
pub static HPA_V1: Resource = resource!("autoscaling", "v1", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true, short: ["hpa"], categories: ["all"], subs: [Status], autoscaling1::HorizontalPodAutoscaler);

/// The resource served at `group/version` under `plural`.
/// A resource the table always holds (namespaces, nodes, services, v2
/// HPAs), for the server's own use; `served_resources_are_in_the_table`
/// checks every one asked for.
#[allow(clippy::expect_used)] // The table is static; the test covers each caller.
pub fn served(group: &str, version: &str, plural: &str) -> &'static Resource {
    find(group, version, plural).expect("a resource of the static table")
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    if group == "autoscaling" && version == "v1" && plural == HPA_V1.plural {
        return Some(&HPA_V1);
    }
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Every served resource, in discovery order.
pub fn all() -> impl Iterator<Item = &'static Resource> {
    RESOURCES.iter().chain(std::iter::once(&HPA_V1))
}

/// The groups in the order discovery lists them, each with its versions
/// (preferred first).
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all() {
        match groups.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => groups.push((r.group, vec![r.version])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_resources_are_in_the_table() {
        for (group, version, plural) in [
            ("", "v1", "namespaces"),
            ("", "v1", "nodes"),
            ("", "v1", "services"),
            ("autoscaling", "v2", "horizontalpodautoscalers"),
        ] {
            assert_eq!(served(group, version, plural).plural, plural);
        }
    }

    #[test]
    fn the_table_has_no_duplicates() {
        let mut seen = std::collections::HashSet::new();
        for r in all() {
            assert!(
                seen.insert((r.group, r.version, r.plural)),
                "{} twice",
                r.plural
            );
        }
    }

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key(Some("default"), "web"),
            "/registry/pods/default/web"
        );
        let deployments = find("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.prefix(None), "/registry/apps/deployments/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key(Some("ignored"), "n1"), "/registry/nodes/n1");
    }

    #[test]
    fn hpa_versions_share_storage() {
        let v1 = find("autoscaling", "v1", "horizontalpodautoscalers").unwrap();
        let v2 = find("autoscaling", "v2", "horizontalpodautoscalers").unwrap();
        assert_eq!(v1.prefix(Some("a")), v2.prefix(Some("a")));
        assert_eq!(
            groups()
                .iter()
                .find(|(g, _)| *g == "autoscaling")
                .unwrap()
                .1,
            ["v2", "v1"]
        );
    }
}
