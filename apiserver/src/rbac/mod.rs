//! Authorization: Kubernetes' RBAC (`rbac.authorization.k8s.io/v1`) over an
//! index of the Roles, ClusterRoles and bindings that one store watch keeps
//! current, with `system:masters` allowed everything first (as
//! kube-apiserver's privileged-group authorizer).
//!
//! ```text
//!   store watch /registry/rbac.authorization.k8s.io/ ──► Index (rebuilt per change)
//!        subject (User/Group; a ServiceAccount as its user name)
//!          ├─ ClusterRoleBindings ─► ClusterRole rules   (everywhere)
//!          └─ RoleBindings of ns  ─► Role / ClusterRole  (in ns)
//!   request ─► attributes (verb, group, resource/sub, ns, name | path)
//!           ─► authorize: the user's and groups' bindings only, never a scan
//! ```
//!
//! `review` serves the access reviews (`kubectl auth can-i [--list]`),
//! `defaults` the bootstrap roles and bindings, `escalation` the check that
//! nobody grants what they do not hold.

pub mod attributes;
pub mod defaults;
pub mod escalation;
pub mod node;
pub mod review;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

pub use attributes::{Attributes, Resource as ResourceAttributes};

use crate::server::User;
use crate::storage::{Change, Store};

/// Where RBAC objects live in the store.
pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";
/// The group whose members are allowed everything.
pub const MASTERS: &str = "system:masters";

/// One rule of a role, as `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resource_names: Vec<String>,
    #[serde(
        rename = "nonResourceURLs",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub non_resource_urls: Vec<String>,
}

fn has(list: &[String], wanted: &str) -> bool {
    list.iter().any(|v| v == "*" || v == wanted)
}

impl Rule {
    /// Whether the rule allows the request (Kubernetes' `RuleAllows`).
    pub fn allows(&self, attributes: &Attributes) -> bool {
        if !has(&self.verbs, &attributes.verb) {
            return false;
        }
        match &attributes.resource {
            Some(r) => {
                has(&self.api_groups, &r.group)
                    && self.resource_matches(r)
                    && (self.resource_names.is_empty() || self.resource_names.contains(&r.name))
            }
            None => self.non_resource_urls.iter().any(|url| {
                url == "*"
                    || *url == attributes.path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| attributes.path.starts_with(prefix))
            }),
        }
    }

    fn resource_matches(&self, r: &ResourceAttributes) -> bool {
        let combined = r.combined();
        self.resources.iter().any(|rule| {
            rule == "*"
                || *rule == combined
                || (!r.subresource.is_empty()
                    && rule.strip_prefix("*/") == Some(r.subresource.as_str()))
        })
    }
}

/// A binding's subject, as the index keys it: users (a ServiceAccount
/// subject by its user name) and groups.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    User(String),
    Group(String),
}

/// The user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

fn subjects(binding: &Value) -> Vec<(Subject, String)> {
    let namespace = binding
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = Vec::new();
    for s in binding
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let kind = s.get("kind").and_then(Value::as_str).unwrap_or_default();
        let name = s.get("name").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "User" => out.push((Subject::User(name.into()), format!("User {name:?}"))),
            "Group" => out.push((Subject::Group(name.into()), format!("Group {name:?}"))),
            "ServiceAccount" => {
                let ns = s
                    .get("namespace")
                    .and_then(Value::as_str)
                    .filter(|ns| !ns.is_empty())
                    .unwrap_or(namespace);
                out.push((
                    Subject::User(service_account_user(ns, name)),
                    format!("ServiceAccount \"{name}/{ns}\""),
                ));
            }
            _ => {}
        }
    }
    out
}

/// A binding as the index holds it.
#[derive(Debug, Clone)]
struct Binding {
    /// `ClusterRoleBinding "x"` or `RoleBinding "x/ns"`, for reasons.
    describe: String,
    /// The namespace of a RoleBinding; `None` for a ClusterRoleBinding.
    namespace: Option<String>,
    /// "Role" or "ClusterRole".
    role_kind: String,
    role: String,
    /// How the subject that matched is named, for reasons.
    subject: String,
}

/// Everything authorization reads, built from the RBAC objects.
#[derive(Debug, Default)]
pub struct Index {
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    /// ClusterRoleBindings by subject.
    cluster: HashMap<Subject, Vec<Binding>>,
    /// RoleBindings by (namespace, subject).
    namespaced: HashMap<(String, Subject), Vec<Binding>>,
}

pub(crate) fn rules_of(role: &Value) -> Vec<Rule> {
    role.get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

impl Index {
    /// Builds the index from the objects under [`PREFIX`], by key.
    pub fn build<'a>(objects: impl Iterator<Item = (&'a str, &'a Value)>) -> Index {
        let mut index = Index::default();
        let mut objects_for_aggregation = Vec::new();
        for (key, object) in objects {
            let rest = key.strip_prefix(PREFIX).unwrap_or(key);
            let name = object
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let namespace = object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let kind = rest.split('/').next().unwrap_or_default();
            match kind {
                "clusterroles" => {
                    objects_for_aggregation.push((name.clone(), object.clone()));
                    index.cluster_roles.insert(name, Arc::new(rules_of(object)));
                }
                "roles" => {
                    index
                        .roles
                        .insert((namespace, name), Arc::new(rules_of(object)));
                }
                "clusterrolebindings" | "rolebindings" => {
                    let role_kind = object
                        .pointer("/roleRef/kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    let role = object
                        .pointer("/roleRef/name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    for (subject, named) in subjects(object) {
                        let binding = Binding {
                            describe: if kind == "rolebindings" {
                                format!("RoleBinding \"{name}/{namespace}\"")
                            } else {
                                format!("ClusterRoleBinding {name:?}")
                            },
                            namespace: (kind == "rolebindings").then(|| namespace.clone()),
                            role_kind: role_kind.clone(),
                            role: role.clone(),
                            subject: named,
                        };
                        if kind == "rolebindings" {
                            index
                                .namespaced
                                .entry((namespace.clone(), subject))
                                .or_default()
                                .push(binding);
                        } else {
                            index.cluster.entry(subject).or_default().push(binding);
                        }
                    }
                }
                _ => {}
            }
        }
        index.aggregate(objects_for_aggregation);
        index
    }

    /// A ClusterRole with an `aggregationRule` grants the rules of every
    /// ClusterRole its selectors match (what the aggregation controller
    /// writes into it), so that it takes effect before being written.
    fn aggregate(&mut self, cluster_roles: Vec<(String, Value)>) {
        let aggregating: Vec<(String, Vec<crate::selectors::LabelSelector>)> = cluster_roles
            .iter()
            .filter_map(|(name, role)| {
                let selectors = role
                    .pointer("/aggregationRule/clusterRoleSelectors")?
                    .as_array()?
                    .iter()
                    .filter_map(crate::selectors::from_label_selector)
                    .collect();
                Some((name.clone(), selectors))
            })
            .collect();
        // Aggregated roles aggregate one another (view into edit into
        // admin): passes until nothing changes, a few at most.
        for _ in 0..8 {
            let mut changed = false;
            for (name, selectors) in &aggregating {
                let mut rules: Vec<Rule> = self
                    .cluster_roles
                    .get(name)
                    .map(|r| r.as_ref().clone())
                    .unwrap_or_default();
                let before = rules.len();
                for (other, object) in &cluster_roles {
                    if other == name || !selectors.iter().any(|s| s.matches_object(object)) {
                        continue;
                    }
                    let granted = self.cluster_roles.get(other).cloned().unwrap_or_default();
                    for rule in granted.iter() {
                        if !rules.contains(rule) {
                            rules.push(rule.clone());
                        }
                    }
                }
                if rules.len() != before {
                    changed = true;
                    self.cluster_roles.insert(name.clone(), Arc::new(rules));
                }
            }
            if !changed {
                break;
            }
        }
    }

    /// The rules a binding grants; an error names a missing role.
    fn rules(&self, binding: &Binding) -> Result<Arc<Vec<Rule>>, String> {
        let found = match (binding.role_kind.as_str(), &binding.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&binding.role),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), binding.role.clone())),
            _ => None,
        };
        found.cloned().ok_or_else(|| {
            let resource = if binding.role_kind == "Role" {
                "role"
            } else {
                "clusterrole"
            };
            format!(
                "{resource}.rbac.authorization.k8s.io {:?} not found",
                binding.role
            )
        })
    }

    /// The bindings that apply to `user` where `namespace` (if any) is.
    fn bindings<'a>(
        &'a self,
        user: &'a User,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Binding> {
        let keys: Vec<Subject> = std::iter::once(Subject::User(user.name.clone()))
            .chain(user.groups.iter().cloned().map(Subject::Group))
            .collect();
        let cluster: Vec<&Binding> = keys
            .iter()
            .filter_map(|k| self.cluster.get(k))
            .flatten()
            .collect();
        let namespaced: Vec<&Binding> = if namespace.is_empty() {
            Vec::new()
        } else {
            keys.into_iter()
                .filter_map(|k| self.namespaced.get(&(namespace.to_string(), k)))
                .flatten()
                .collect()
        };
        cluster.into_iter().chain(namespaced)
    }
}

/// An authorization decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// Why it was allowed (which binding), or what went wrong looking
    /// (a missing role), as Kubernetes' RBAC says it.
    pub reason: String,
}

/// Decides with the current index (`system:masters` first).
pub fn decide(index: &Index, user: &User, attributes: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == MASTERS) {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let namespace = attributes
        .resource
        .as_ref()
        .map(|r| r.namespace.as_str())
        .unwrap_or_default();
    let mut errors = Vec::new();
    for binding in index.bindings(user, namespace) {
        match index.rules(binding) {
            Ok(rules) => {
                if rules.iter().any(|rule| rule.allows(attributes)) {
                    return Decision {
                        allowed: true,
                        reason: format!(
                            "RBAC: allowed by {} of {} {:?} to {}",
                            binding.describe, binding.role_kind, binding.role, binding.subject
                        ),
                    };
                }
            }
            Err(e) => {
                if !errors.contains(&e) {
                    errors.push(e)
                }
            }
        }
    }
    Decision {
        allowed: false,
        reason: if errors.is_empty() {
            String::new()
        } else if errors.len() == 1 {
            format!("RBAC: {}", errors[0])
        } else {
            format!("RBAC: [{}]", errors.join(", "))
        },
    }
}

/// What `user` may do in `namespace` (every ClusterRoleBinding's rules and
/// the namespace's RoleBindings'), and whether some role was missing.
pub fn rules_for(index: &Index, user: &User, namespace: &str) -> (Vec<Rule>, bool) {
    let mut rules = Vec::new();
    let mut incomplete = false;
    if user.groups.iter().any(|g| g == MASTERS) {
        rules.push(Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Rule::default()
        });
        rules.push(Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        });
    }
    for binding in index.bindings(user, namespace) {
        match index.rules(binding) {
            Ok(granted) => {
                for rule in granted.iter() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
            Err(_) => incomplete = true,
        }
    }
    (rules, incomplete)
}

/// The apiserver's RBAC task: creates the default roles and bindings that
/// are missing and keeps the authorizer's index current.
pub async fn run(api: Arc<crate::server::Api>) {
    let bootstrap = async {
        // The system namespaces first: agents and controllers wait for them.
        let namespaces = crate::resources::served("", "v1", "namespaces");
        for _ in 0..100 {
            if let Ok(Some(_)) = api
                .store
                .get(&namespaces.key(None, "kube-node-lease"))
                .await
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        loop {
            match defaults::bootstrap(&api).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e.message, "cannot create the default RBAC roles yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    match &api.authorizer {
        Some(authorizer) => {
            let nodes = async {
                if let Some(graph) = &authorizer.nodes {
                    graph.keep_current(&api.store).await;
                }
            };
            tokio::join!(bootstrap, authorizer.keep_current(&api.store), nodes);
        }
        None => bootstrap.await,
    }
}

/// The authorizer: the index and the task that keeps it current.
#[derive(Debug)]
pub struct Authorizer {
    index: RwLock<Arc<Index>>,
    synced: tokio::sync::watch::Sender<bool>,
    /// The Node authorizer's graph (`--authorization-mode=Node,RBAC`).
    pub nodes: Option<Arc<node::NodeGraph>>,
}

impl Authorizer {
    /// RBAC, with the Node authorizer before it when `nodes`.
    pub fn new(nodes: bool) -> Authorizer {
        Authorizer {
            index: RwLock::new(Arc::new(Index::default())),
            synced: tokio::sync::watch::channel(false).0,
            nodes: nodes.then(Default::default),
        }
    }
}

impl Authorizer {
    /// The index as of now (never blocks on a change being applied).
    pub fn index(&self) -> Arc<Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, index: Index) {
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        self.synced.send_replace(true);
    }

    /// Waits (a few seconds at most) until the index has been loaded once,
    /// so that a request right after start is not refused for want of it.
    pub async fn synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = tokio::time::timeout(Duration::from_secs(5), synced.wait_for(|s| *s)).await;
    }

    /// The decision for one request: a node's by the Node authorizer
    /// first, then RBAC; the reasons of both when neither allows.
    pub async fn authorize(&self, store: &Store, user: &User, attributes: &Attributes) -> Decision {
        if !user.groups.iter().any(|g| g == MASTERS) {
            self.synced().await;
        }
        let index = self.index();
        let mut reasons = Vec::new();
        if let (Some(graph), Some(node)) = (&self.nodes, node::node_of(user)) {
            if let Some(decision) = graph.authorize(store, node, attributes).await {
                if decision.allowed {
                    return decision;
                }
                reasons.push(decision.reason);
            }
        }
        let mut decision = decide(&index, user, attributes);
        if !decision.allowed && !reasons.is_empty() {
            if !decision.reason.is_empty() {
                reasons.push(decision.reason);
            }
            decision.reason = reasons.join("\n");
        }
        decision
    }

    /// Lists and watches the RBAC objects forever, rebuilding the index on
    /// each change; starts over from a new list when a watch ends.
    async fn keep_current(&self, store: &Store) {
        loop {
            if let Err(e) = self.follow(store).await {
                tracing::debug!(error = %e, "RBAC watch ended; listing again");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn follow(&self, store: &Store) -> Result<(), crate::storage::Error> {
        let listed = store.list(PREFIX, None, 0, 0).await?;
        let mut objects: HashMap<String, Value> = listed
            .kvs
            .iter()
            .filter_map(|kv| {
                let object = serde_json::from_slice(&kv.value).ok()?;
                Some((String::from_utf8_lossy(&kv.key).into_owned(), object))
            })
            .collect();
        self.set(Index::build(objects.iter().map(|(k, v)| (k.as_str(), v))));
        let mut changes = Box::pin(store.watch(PREFIX, listed.revision + 1).await?);
        while let Some(batch) = changes.next().await {
            let mut changed = false;
            for change in batch? {
                match change {
                    Change::Put { kv, .. } => {
                        if let Ok(object) = serde_json::from_slice(&kv.value) {
                            objects.insert(String::from_utf8_lossy(&kv.key).into_owned(), object);
                            changed = true;
                        }
                    }
                    Change::Delete { kv, .. } => {
                        changed |= objects
                            .remove(String::from_utf8_lossy(&kv.key).as_ref())
                            .is_some();
                    }
                    Change::Progress(_) => {}
                }
            }
            if changed {
                self.set(Index::build(objects.iter().map(|(k, v)| (k.as_str(), v))));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn index(objects: &[(&str, Value)]) -> Index {
        Index::build(objects.iter().map(|(k, v)| (*k, v)))
    }

    fn can(index: &Index, user: &User, verb: &str, resource: &str, ns: &str) -> bool {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let attributes = Attributes {
            verb: verb.into(),
            path: String::new(),
            resource: Some(ResourceAttributes {
                group: String::new(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: ns.into(),
                name: String::new(),
            }),
        };
        decide(index, user, &attributes).allowed
    }

    #[test]
    fn role_bindings_grant_in_their_namespace_only() {
        let idx = index(&[
            (
                "/registry/rbac.authorization.k8s.io/clusterroles/reader",
                json!({"metadata": {"name": "reader"}, "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/rolebindings/dev/bob-reads",
                json!({"metadata": {"name": "bob-reads", "namespace": "dev"}, "roleRef": {"kind": "ClusterRole", "name": "reader"}, "subjects": [{"kind": "User", "name": "bob"}]}),
            ),
        ]);
        let bob = user("bob", &["system:authenticated"]);
        assert!(can(&idx, &bob, "list", "pods", "dev"));
        assert!(can(&idx, &bob, "get", "pods/log", "dev"));
        assert!(!can(&idx, &bob, "get", "pods/exec", "dev"));
        assert!(!can(&idx, &bob, "list", "pods", "prod"));
        assert!(!can(&idx, &bob, "delete", "pods", "dev"));
        assert!(!can(&idx, &user("alice", &[]), "list", "pods", "dev"));
        assert!(can(&idx, &user("x", &[MASTERS]), "delete", "pods", "prod"));
    }

    #[test]
    fn service_accounts_groups_and_missing_roles() {
        let idx = index(&[
            (
                "/registry/rbac.authorization.k8s.io/roles/dev/pods",
                json!({"metadata": {"name": "pods", "namespace": "dev"}, "rules": [{"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/rolebindings/dev/sa",
                json!({"metadata": {"name": "sa", "namespace": "dev"}, "roleRef": {"kind": "Role", "name": "pods"}, "subjects": [{"kind": "ServiceAccount", "name": "app"}]}),
            ),
            (
                "/registry/rbac.authorization.k8s.io/clusterrolebindings/ops",
                json!({"metadata": {"name": "ops"}, "roleRef": {"kind": "ClusterRole", "name": "gone"}, "subjects": [{"kind": "Group", "name": "ops"}]}),
            ),
        ]);
        let app = user(&service_account_user("dev", "app"), &[]);
        assert!(can(&idx, &app, "update", "pods/status", "dev"));
        assert!(!can(&idx, &app, "update", "pods", "dev"));
        let ops = user("carol", &["ops"]);
        let attributes = Attributes::non_resource("get", "/metrics");
        assert_eq!(
            decide(&idx, &ops, &attributes),
            Decision {
                allowed: false,
                reason: "RBAC: clusterrole.rbac.authorization.k8s.io \"gone\" not found".into()
            }
        );
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rule = Rule {
            verbs: vec!["get".into()],
            non_resource_urls: vec!["/healthz".into(), "/apis/*".into()],
            ..Rule::default()
        };
        assert!(rule.allows(&Attributes::non_resource("get", "/healthz")));
        assert!(rule.allows(&Attributes::non_resource("get", "/apis/apps")));
        assert!(!rule.allows(&Attributes::non_resource("get", "/healthz/x")));
        assert!(!rule.allows(&Attributes::non_resource("post", "/healthz")));
    }
}
