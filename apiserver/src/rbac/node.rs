//! Node authorization: what a node's own identity (`system:node:<name>` in
//! `system:nodes`) may do, as Kubernetes' Node authorizer and
//! NodeRestriction admission decide it.
//!
//! ```text
//!   pods watch ─► graph: node ─► the Secrets, ConfigMaps, claims and
//!                 ServiceAccounts its pods use (counted per pod)
//!   node reads a Secret/ConfigMap/claim/volume ─► only one of its pods' (by name)
//!   node asks a ServiceAccount token ─► only an account of its pods, bound to one of them
//!   node writes ─► only its own Node, Lease, node report and agent EndpointSlices;
//!                  only status and deletion of pods bound to it; only mirror pods created
//!   node reads a TLS Secret an Ingress names ─► allowed (every node serves Ingresses)
//!   anything else ─► the system:node ClusterRole's rules (built in), then RBAC as for anyone
//! ```

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::{Attributes, Decision};
use crate::error::{ApiError, Result};
use crate::server::User;
use crate::storage::{Change, Store};

const NODES_GROUP: &str = "system:nodes";
const PREFIX: &str = "system:node:";
const PODS: &str = "/registry/pods/";
/// The namespace of node Leases.
const LEASES: &str = "kube-node-lease";

/// The node a user is, when it is a node's identity.
pub fn node_of(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(PREFIX)?;
    (user.groups.iter().any(|g| g == NODES_GROUP) && !name.is_empty()).then_some(name)
}

/// What one pod uses, by (resource, name), in its namespace.
fn uses(pod: &Value) -> Uses {
    let mut out = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or_default();
    let text = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    // Every pod but a mirror pod has one (admission names `default`).
    if let Some(account) = text(&spec, "/serviceAccountName").filter(|a| !a.is_empty()) {
        out.push(("serviceaccounts", account));
    }
    let containers = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| {
            spec.get(*k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect::<Vec<_>>();
    for c in &containers {
        for var in c.get("env").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = text(var, "/valueFrom/secretKeyRef/name") {
                out.push(("secrets", n));
            }
            if let Some(n) = text(var, "/valueFrom/configMapKeyRef/name") {
                out.push(("configmaps", n));
            }
        }
        for from in c
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = text(from, "/secretRef/name") {
                out.push(("secrets", n));
            }
            if let Some(n) = text(from, "/configMapRef/name") {
                out.push(("configmaps", n));
            }
        }
    }
    let pod_name = text(pod, "/metadata/name").unwrap_or_default();
    for volume in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = text(volume, "/secret/secretName") {
            out.push(("secrets", n));
        }
        if let Some(n) = text(volume, "/configMap/name") {
            out.push(("configmaps", n));
        }
        if let Some(n) = text(volume, "/persistentVolumeClaim/claimName") {
            out.push(("persistentvolumeclaims", n));
        }
        if volume.get("ephemeral").is_some() {
            let name = text(volume, "/name").unwrap_or_default();
            out.push(("persistentvolumeclaims", format!("{pod_name}-{name}")));
        }
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(n) = text(source, "/secret/name") {
                out.push(("secrets", n));
            }
            if let Some(n) = text(source, "/configMap/name") {
                out.push(("configmaps", n));
            }
        }
    }
    for secret in spec
        .get("imagePullSecrets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = text(secret, "/name") {
            out.push(("secrets", n));
        }
    }
    out
}

/// (node, resource, namespace, name)
type Edge = (String, &'static str, String, String);
/// What a pod uses, as (resource, name) in its namespace.
type Uses = Vec<(&'static str, String)>;

/// The pods of each node and what they use.
#[derive(Debug, Default)]
pub struct Graph {
    /// How many pods of the node use the object.
    edges: HashMap<Edge, usize>,
    /// Pod key → (node, what it uses), to undo when it changes.
    pods: HashMap<String, (String, String, Uses)>,
}

impl Graph {
    fn remove(&mut self, key: &str) {
        let Some((node, namespace, used)) = self.pods.remove(key) else {
            return;
        };
        for (resource, name) in used {
            let edge = (node.clone(), resource, namespace.clone(), name);
            if let Some(n) = self.edges.get_mut(&edge) {
                *n -= 1;
                if *n == 0 {
                    self.edges.remove(&edge);
                }
            }
        }
    }

    /// Records a pod (replacing what it was).
    pub fn put(&mut self, key: &str, pod: &Value) {
        self.remove(key);
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let namespace = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut used = uses(pod);
        used.sort();
        used.dedup();
        for (resource, name) in &used {
            *self
                .edges
                .entry((node.into(), resource, namespace.into(), name.clone()))
                .or_default() += 1;
        }
        self.pods
            .insert(key.to_string(), (node.into(), namespace.into(), used));
    }

    /// Whether a pod on `node` uses the object.
    pub fn related(&self, node: &str, resource: &str, namespace: &str, name: &str) -> bool {
        let resource = match resource {
            "secrets" => "secrets",
            "configmaps" => "configmaps",
            "persistentvolumeclaims" => "persistentvolumeclaims",
            "serviceaccounts" => "serviceaccounts",
            _ => return false,
        };
        self.edges
            .contains_key(&(node.into(), resource, namespace.into(), name.into()))
    }

    /// The claims the node's pods use, as (namespace, name).
    fn claims<'a>(&'a self, node: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.edges
            .keys()
            .filter(move |(n, r, _, _)| n == node && *r == "persistentvolumeclaims")
            .map(|(_, _, ns, name)| (ns.as_str(), name.as_str()))
    }
}

/// The graph, kept current by a watch of pods.
#[derive(Debug)]
pub struct NodeGraph {
    graph: RwLock<Graph>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl Default for NodeGraph {
    fn default() -> Self {
        NodeGraph {
            graph: RwLock::default(),
            synced: tokio::sync::watch::channel(false).0,
        }
    }
}

impl NodeGraph {
    pub async fn keep_current(&self, store: &Store) {
        loop {
            if let Err(e) = self.follow(store).await {
                tracing::debug!(error = %e, "node graph's pod watch ended; listing again");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn follow(&self, store: &Store) -> Result<(), crate::storage::Error> {
        let listed = store.list(PODS, None, 0, 0).await?;
        {
            let mut graph = Graph::default();
            for kv in &listed.kvs {
                if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
                    graph.put(&String::from_utf8_lossy(&kv.key), &pod);
                }
            }
            *self.graph.write().unwrap_or_else(|e| e.into_inner()) = graph;
        }
        self.synced.send_replace(true);
        let mut changes = Box::pin(store.watch(PODS, listed.revision + 1).await?);
        while let Some(batch) = changes.next().await {
            let batch = batch?;
            let mut graph = self.graph.write().unwrap_or_else(|e| e.into_inner());
            for change in batch {
                match change {
                    Change::Put { kv, .. } => {
                        if let Ok(pod) = serde_json::from_slice::<Value>(&kv.value) {
                            graph.put(&String::from_utf8_lossy(&kv.key), &pod);
                        }
                    }
                    Change::Delete { kv, .. } => graph.remove(&String::from_utf8_lossy(&kv.key)),
                    Change::Progress(_) => {}
                }
            }
        }
        Ok(())
    }

    async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), synced.wait_for(|s| *s)).await;
    }

    /// The Node authorizer's decision for a node's request; `None` leaves
    /// it to RBAC (requests it has no opinion on).
    pub async fn authorize(
        &self,
        store: &Store,
        node: &str,
        attributes: &Attributes,
    ) -> Option<Decision> {
        let r = attributes.resource.as_ref()?;
        let allow = |allowed: bool| {
            Some(Decision {
                allowed,
                reason: if allowed {
                    String::new()
                } else {
                    format!("no relationship found between node '{node}' and this object")
                },
            })
        };
        match (
            r.group.as_str(),
            r.resource.as_str(),
            r.subresource.as_str(),
        ) {
            ("", "secrets" | "configmaps" | "persistentvolumeclaims", "") => {
                if !matches!(attributes.verb.as_str(), "get" | "list" | "watch")
                    || r.name.is_empty()
                {
                    return allow(false);
                }
                self.synced().await;
                let related = {
                    let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
                    graph.related(node, &r.resource, &r.namespace, &r.name)
                };
                // Every node serves the Ingresses, so every node reads the
                // TLS Secrets they name (as an ingress controller running on
                // each node would), and no other Secret.
                allow(
                    related
                        || (r.resource == "secrets"
                            && ingress_names_secret(store, &r.namespace, &r.name).await),
                )
            }
            ("", "persistentvolumes", "") => {
                if attributes.verb != "get" || r.name.is_empty() {
                    return allow(false);
                }
                self.synced().await;
                let claims: Vec<(String, String)> = {
                    let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
                    graph
                        .claims(node)
                        .map(|(ns, n)| (ns.to_string(), n.to_string()))
                        .collect()
                };
                let resource = crate::resources::served("", "v1", "persistentvolumeclaims");
                for (ns, name) in claims {
                    let Ok(Some(kv)) = store.get(&resource.key(Some(&ns), &name)).await else {
                        continue;
                    };
                    let claim: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                    if claim.pointer("/spec/volumeName").and_then(Value::as_str)
                        == Some(r.name.as_str())
                    {
                        return allow(true);
                    }
                }
                allow(false)
            }
            ("", "serviceaccounts", "token") => {
                if attributes.verb != "create" {
                    return allow(false);
                }
                self.synced().await;
                let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
                allow(graph.related(node, "serviceaccounts", &r.namespace, &r.name))
            }
            ("metrics.shoal.dev", "nodereports", _) => allow(r.name == node),
            _ => node_rules()
                .iter()
                .any(|rule| rule.allows(attributes))
                .then(|| Decision {
                    allowed: true,
                    reason: String::new(),
                }),
        }
    }

    /// Whether `pod` (namespace/name) is bound to `node`, as far as the
    /// graph knows.
    pub fn pod_on(&self, node: &str, key: &str) -> bool {
        let graph = self.graph.read().unwrap_or_else(|e| e.into_inner());
        graph.pods.get(key).is_some_and(|(n, _, _)| n == node)
    }
}

/// What a node may do beyond the graph's objects: the `system:node`
/// ClusterRole's rules, built into the authorizer as Kubernetes' Node
/// authorizer has them (so nodes are served before the default roles are
/// written, and whatever is done to that ClusterRole).
fn node_rules() -> &'static [super::Rule] {
    static RULES: std::sync::OnceLock<Vec<super::Rule>> = std::sync::OnceLock::new();
    RULES.get_or_init(|| {
        super::defaults::cluster_roles()
            .iter()
            .find(|role| {
                role.pointer("/metadata/name").and_then(Value::as_str) == Some("system:node")
            })
            .map(super::rules_of)
            .unwrap_or_default()
    })
}

/// Whether an Ingress of `namespace` names the Secret `name` in its `tls`
/// and that Secret is a TLS one (`kubernetes.io/tls`: a certificate and
/// its key, what the node's Ingress controller serves).
async fn ingress_names_secret(store: &Store, namespace: &str, name: &str) -> bool {
    if namespace.is_empty() {
        return false;
    }
    let secrets = crate::resources::served("", "v1", "secrets");
    let is_tls = match store.get(&secrets.key(Some(namespace), name)).await {
        Ok(Some(kv)) => serde_json::from_slice::<Value>(&kv.value)
            .is_ok_and(|s| s.get("type").and_then(Value::as_str) == Some("kubernetes.io/tls")),
        // Not there: a watch by name started now would stream whatever is
        // made under that name later, of any type; the agent retries.
        Ok(None) | Err(_) => false,
    };
    if !is_tls {
        return false;
    }
    let ingresses = crate::resources::served("networking.k8s.io", "v1", "ingresses");
    let prefix = ingresses.key(Some(namespace), "");
    let Ok(listed) = store.list(&prefix, None, 0, 0).await else {
        return false;
    };
    listed.kvs.iter().any(|kv| {
        serde_json::from_slice::<Value>(&kv.value).is_ok_and(|ingress| {
            ingress
                .pointer("/spec/tls")
                .and_then(Value::as_array)
                .is_some_and(|tls| {
                    tls.iter()
                        .any(|t| t.get("secretName").and_then(Value::as_str) == Some(name))
                })
        })
    })
}

/// What a mirror pod may not refer to, as NodeRestriction words it.
fn mirror_refers(pod: &Value) -> Option<&'static str> {
    let mut used = uses(pod);
    if pod
        .pointer("/spec/serviceAccountName")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.is_empty())
    {
        return Some("use service accounts");
    }
    used.retain(|(resource, _)| *resource != "serviceaccounts");
    used.iter()
        .map(|(resource, _)| match *resource {
            "secrets" => "reference secrets",
            "configmaps" => "reference configmaps",
            _ => "reference persistentvolumeclaims",
        })
        .next()
}

fn refuse(resource: &crate::resources::Resource, name: &str, why: String) -> ApiError {
    ApiError::forbidden(resource.group, resource.plural, name, &why)
}

/// NodeRestriction: what a node may write, with the object before
/// (`old`, updates and deletes) and after (`new`, creates and updates).
/// Requests of users that are not nodes pass.
pub fn admit(
    user: Option<&User>,
    resource: &crate::resources::Resource,
    subresource: Option<crate::resources::Sub>,
    old: Option<&Value>,
    new: Option<&Value>,
) -> Result<()> {
    let Some(node) = user.and_then(node_of) else {
        return Ok(());
    };
    let object = new.or(old).cloned().unwrap_or_default();
    let name = crate::object::name(&object).to_string();
    let bound = |v: Option<&Value>| {
        v.and_then(|p| p.pointer("/spec/nodeName"))
            .and_then(Value::as_str)
            == Some(node)
    };
    match (resource.group, resource.kind) {
        ("", "Node") if name != node => Err(refuse(
            resource,
            &name,
            format!("node \"{node}\" is not allowed to modify node \"{name}\""),
        )),
        ("", "Pod") => match (old, subresource) {
            (None, _) => {
                let mirror = object
                    .pointer("/metadata/annotations/kubernetes.io~1config.mirror")
                    .is_some();
                if !mirror {
                    Err(refuse(
                        resource,
                        &name,
                        format!("pod does not have \"kubernetes.io/config.mirror\" annotation, node \"{node}\" can only create mirror pods"),
                    ))
                } else if !bound(new) {
                    Err(refuse(
                        resource,
                        &name,
                        format!("node \"{node}\" can only create pods with spec.nodeName set to itself"),
                    ))
                } else if let Some(what) = mirror_refers(&object) {
                    // What a node reads follows what its pods use: a pod
                    // it made itself must use nothing.
                    Err(refuse(
                        resource,
                        &name,
                        format!("node \"{node}\" can not create pods that {what}"),
                    ))
                } else {
                    Ok(())
                }
            }
            (Some(_), _) if !bound(old) => Err(refuse(
                resource,
                &name,
                match new {
                    Some(_) => format!("node \"{node}\" can only update pod status for pods with spec.nodeName set to itself"),
                    None => format!("node \"{node}\" can only delete pods with spec.nodeName set to itself"),
                },
            )),
            (Some(_), None) if new.is_some() => Err(refuse(
                resource,
                &name,
                format!("node \"{node}\" can only update pod status"),
            )),
            _ => Ok(()),
        },
        ("coordination.k8s.io", "Lease") => {
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if namespace != LEASES {
                Err(refuse(
                    resource,
                    &name,
                    format!("can only access leases in the \"{LEASES}\" system namespace"),
                ))
            } else if name != node {
                Err(refuse(
                    resource,
                    &name,
                    "can only access node lease with the same name as the requesting node".into(),
                ))
            } else {
                Ok(())
            }
        }
        // shoal's agents publish their own endpoints (cluster DNS, ingress)
        // as `<service>-<node>` slices.
        ("discovery.k8s.io", "EndpointSlice") if !name.ends_with(&format!("-{node}")) => Err(refuse(
            resource,
            &name,
            format!("node \"{node}\" can only write its own EndpointSlices (named <service>-{node})"),
        )),
        _ => Ok(()),
    }
}

/// A node asking for a token must bind it to one of its own pods.
pub fn admit_token(
    user: Option<&User>,
    graph: Option<&Arc<NodeGraph>>,
    namespace: &str,
    bound: Option<&Value>,
) -> Result<()> {
    let Some(node) = user.and_then(node_of) else {
        return Ok(());
    };
    let tokens = crate::resources::served("", "v1", "serviceaccounts");
    let pod = bound
        .filter(|b| b.get("kind").and_then(Value::as_str) == Some("Pod"))
        .and_then(|b| b.get("name").and_then(Value::as_str));
    let on_node = match (pod, graph) {
        (Some(pod), Some(graph)) => graph.pod_on(node, &format!("{PODS}{namespace}/{pod}")),
        _ => false,
    };
    if on_node {
        Ok(())
    } else {
        Err(refuse(
            tokens,
            "",
            format!("node requested token not bound to a pod scheduled on node \"{node}\""),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_graph_follows_pods_and_their_references() {
        let mut g = Graph::default();
        let pod = json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "app",
                "containers": [{"name": "c", "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "p"}}}],
                                 "envFrom": [{"configMapRef": {"name": "env"}}]}],
                "volumes": [{"name": "v", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}},
                            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            },
        });
        g.put("/registry/pods/shop/web", &pod);
        assert!(g.related("n1", "secrets", "shop", "db"));
        assert!(g.related("n1", "configmaps", "shop", "env"));
        assert!(g.related("n1", "configmaps", "shop", "kube-root-ca.crt"));
        assert!(g.related("n1", "serviceaccounts", "shop", "app"));
        assert!(g.related("n1", "persistentvolumeclaims", "shop", "data"));
        assert!(!g.related("n2", "secrets", "shop", "db"));
        assert!(!g.related("n1", "secrets", "other", "db"));
        // A second pod using the same Secret keeps it related when the
        // first goes; rescheduled elsewhere, it no longer is.
        g.put("/registry/pods/shop/web-2", &pod);
        g.remove("/registry/pods/shop/web");
        assert!(g.related("n1", "secrets", "shop", "db"));
        let mut moved = pod.clone();
        moved["spec"]["nodeName"] = json!("n2");
        g.put("/registry/pods/shop/web-2", &moved);
        assert!(!g.related("n1", "secrets", "shop", "db"));
        assert!(g.related("n2", "secrets", "shop", "db"));
    }

    #[test]
    fn node_restriction_keeps_a_node_to_its_own_objects() {
        let node = User {
            name: "system:node:n1".into(),
            uid: String::new(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        };
        let nodes = crate::resources::served("", "v1", "nodes");
        let pods = crate::resources::served("", "v1", "pods");
        let own = json!({"metadata": {"name": "n1"}});
        let other = json!({"metadata": {"name": "n2"}});
        assert!(admit(Some(&node), nodes, None, Some(&own), Some(&own)).is_ok());
        let e = admit(Some(&node), nodes, None, Some(&other), Some(&other)).unwrap_err();
        assert_eq!(
            e.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let mine = json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"nodeName": "n1"}});
        let theirs =
            json!({"metadata": {"name": "b", "namespace": "x"}, "spec": {"nodeName": "n2"}});
        use crate::resources::Sub;
        assert!(admit(
            Some(&node),
            pods,
            Some(Sub::Status),
            Some(&mine),
            Some(&mine)
        )
        .is_ok());
        assert!(admit(Some(&node), pods, None, Some(&mine), None).is_ok());
        assert!(admit(
            Some(&node),
            pods,
            Some(Sub::Status),
            Some(&theirs),
            Some(&theirs)
        )
        .is_err());
        assert!(admit(Some(&node), pods, None, Some(&theirs), None).is_err());
        assert!(admit(Some(&node), pods, None, None, Some(&mine)).is_err());
        // Someone else is not a node.
        let admin = User {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        assert!(admit(Some(&admin), nodes, None, Some(&other), Some(&other)).is_ok());
    }
}
