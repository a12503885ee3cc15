//! Escalation prevention, as Kubernetes' RBAC storage does it: a Role or
//! ClusterRole may only be written by someone who holds every permission
//! it grants (or may `escalate` it), and a binding only by someone who
//! holds every permission of the role it binds (or may `bind` it).

use serde_json::Value;

use super::{rules_for, Attributes, Index, ResourceAttributes, Rule};
use crate::error::{ApiError, Result};
use crate::resources::Resource;
use crate::server::User;

const GROUP: &str = "rbac.authorization.k8s.io";

/// A rule split into single (group, resource, verb[, name]) and
/// (url, verb) rules.
fn breakdown(rule: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    for group in &rule.api_groups {
        for resource in &rule.resources {
            for verb in &rule.verbs {
                let single = |names: Vec<String>| Rule {
                    verbs: vec![verb.clone()],
                    api_groups: vec![group.clone()],
                    resources: vec![resource.clone()],
                    resource_names: names,
                    non_resource_urls: Vec::new(),
                };
                if rule.resource_names.is_empty() {
                    out.push(single(Vec::new()));
                } else {
                    for name in &rule.resource_names {
                        out.push(single(vec![name.clone()]));
                    }
                }
            }
        }
    }
    for url in &rule.non_resource_urls {
        for verb in &rule.verbs {
            out.push(Rule {
                verbs: vec![verb.clone()],
                non_resource_urls: vec![url.clone()],
                ..Rule::default()
            });
        }
    }
    out
}

fn has_all(set: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|w| set.contains(w))
}

fn resources_cover(owner: &[String], wanted: &[String]) -> bool {
    if owner.iter().any(|r| r == "*") || has_all(owner, wanted) {
        return true;
    }
    // A held `*/status` covers every resource's status; a held `pods/*`
    // covers nothing more than it names (as the authorizer reads it).
    wanted.iter().all(|resource| {
        owner.contains(resource)
            || resource
                .split_once('/')
                .is_some_and(|(_, sub)| owner.contains(&format!("*/{sub}")))
    })
}

fn urls_cover(owner: &[String], wanted: &[String]) -> bool {
    wanted.iter().all(|url| {
        owner.iter().any(|o| {
            o == url
                || o.strip_suffix('*')
                    .is_some_and(|prefix| url.starts_with(prefix))
        })
    })
}

fn covers(owner: &Rule, single: &Rule) -> bool {
    let verbs = owner.verbs.iter().any(|v| v == "*") || has_all(&owner.verbs, &single.verbs);
    let groups =
        owner.api_groups.iter().any(|g| g == "*") || has_all(&owner.api_groups, &single.api_groups);
    let names = owner.resource_names.is_empty()
        || (!single.resource_names.is_empty()
            && has_all(&owner.resource_names, &single.resource_names));
    verbs
        && groups
        && resources_cover(&owner.resources, &single.resources)
        && names
        && urls_cover(&owner.non_resource_urls, &single.non_resource_urls)
}

/// The single rules of `wanted` that no rule of `owner` covers.
pub fn uncovered(owner: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted
        .iter()
        .flat_map(breakdown)
        .filter(|single| !owner.iter().any(|o| covers(o, single)))
        .collect()
}

/// `{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`, as Kubernetes
/// prints a rule in escalation errors.
/// Go's `%q` of a string list: `["a" "b"]`.
fn list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(" "))
}

fn compact(rule: &Rule) -> String {
    let mut parts = Vec::new();
    if !rule.api_groups.is_empty() {
        parts.push(format!("APIGroups:{}", list(&rule.api_groups)));
    }
    if !rule.resources.is_empty() {
        parts.push(format!("Resources:{}", list(&rule.resources)));
    }
    if !rule.non_resource_urls.is_empty() {
        parts.push(format!("NonResourceURLs:{}", list(&rule.non_resource_urls)));
    }
    if !rule.resource_names.is_empty() {
        parts.push(format!("ResourceNames:{}", list(&rule.resource_names)));
    }
    parts.push(format!("Verbs:{}", list(&rule.verbs)));
    format!("{{{}}}", parts.join(", "))
}

fn allowed(
    index: &Index,
    user: &User,
    verb: &str,
    resource: &str,
    namespace: &str,
    name: &str,
) -> bool {
    let attributes = Attributes {
        verb: verb.into(),
        path: String::new(),
        resource: Some(ResourceAttributes {
            group: GROUP.into(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
        }),
    };
    super::decide(index, user, &attributes).allowed
}

fn rules_in(object: &Value) -> Vec<Rule> {
    object
        .get("rules")
        .cloned()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default()
}

/// Refuses a write of an RBAC object that would grant `user` more than
/// it holds. Other kinds, and writes without a user (the server's own),
/// pass.
pub fn check(
    index: &Index,
    user: Option<&User>,
    resource: &Resource,
    object: &Value,
) -> Result<()> {
    let Some(user) = user else { return Ok(()) };
    if resource.group != GROUP || user.groups.iter().any(|g| g == super::MASTERS) {
        return Ok(());
    }
    let name = crate::object::name(object);
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let refuse = |why: String| ApiError::forbidden(GROUP, resource.plural, name, &why);
    let wanted = match resource.kind {
        "Role" | "ClusterRole" => {
            if allowed(index, user, "escalate", resource.plural, namespace, name) {
                return Ok(());
            }
            if object.get("aggregationRule").is_some_and(|r| !r.is_null()) {
                return Err(refuse(
                    "must have cluster-admin privileges to use the aggregationRule".into(),
                ));
            }
            rules_in(object)
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let kind = object
                .pointer("/roleRef/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let role = object
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let plural = if kind == "Role" {
                "roles"
            } else {
                "clusterroles"
            };
            // `bind` where the binding is: a RoleBinding's namespace, even
            // for a ClusterRole.
            let scope = if resource.namespaced { namespace } else { "" };
            if allowed(index, user, "bind", plural, scope, role) {
                return Ok(());
            }
            let found = if kind == "Role" {
                index
                    .roles
                    .get(&(namespace.to_string(), role.to_string()))
                    .cloned()
            } else {
                index.cluster_roles.get(role).cloned()
            };
            match found {
                Some(rules) => rules.as_ref().clone(),
                None => {
                    let singular = if kind == "Role" {
                        "role"
                    } else {
                        "clusterrole"
                    };
                    return Err(refuse(format!("{singular}.{GROUP} {role:?} not found")));
                }
            }
        }
        _ => return Ok(()),
    };
    // A ClusterRole and a ClusterRoleBinding grant everywhere: only what
    // the user holds cluster-wide counts.
    let scope = if resource.namespaced { namespace } else { "" };
    let (held, _) = rules_for(index, user, scope);
    let missing = uncovered(&held, &wanted);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().map(compact).collect();
    Err(refuse(format!(
        "user {:?} (groups={}) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        list(&user.groups),
        lines.join("\n")
    )))
}

/// [`check`] for a write through the API (nothing to check under
/// `AlwaysAllow`).
pub fn check_write(
    api: &crate::server::Api,
    ctx: &crate::rest::Ctx,
    resource: &Resource,
    object: &Value,
) -> Result<()> {
    match &api.authorizer {
        Some(authorizer) if resource.group == GROUP => {
            check(&authorizer.index(), ctx.user.as_ref(), resource, object)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Rule {
        Rule {
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            api_groups: groups.iter().map(|s| s.to_string()).collect(),
            resources: resources.iter().map(|s| s.to_string()).collect(),
            ..Rule::default()
        }
    }

    #[test]
    fn coverage_like_kubernetes() {
        let owner = vec![
            rule(&[""], &["pods", "configmaps"], &["get", "list"]),
            rule(&["apps"], &["*"], &["*"]),
            rule(&[""], &["*/log"], &["get"]),
        ];
        assert!(uncovered(&owner, &[rule(&[""], &["pods"], &["get"])]).is_empty());
        assert!(uncovered(
            &owner,
            &[rule(&["apps"], &["deployments/scale"], &["update"])]
        )
        .is_empty());
        assert!(uncovered(&owner, &[rule(&[""], &["pods/log"], &["get"])]).is_empty());
        assert_eq!(
            uncovered(&owner, &[rule(&[""], &["pods/exec"], &["get"])]).len(),
            1
        );
        let missing = uncovered(
            &owner,
            &[rule(&[""], &["pods", "secrets"], &["get", "delete"])],
        );
        let printed: Vec<String> = missing.iter().map(compact).collect();
        assert_eq!(
            printed,
            [
                "{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"delete\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}",
                "{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"delete\"]}",
            ]
        );
        // A wildcard asked for is covered only by a wildcard held.
        assert_eq!(uncovered(&owner, &[rule(&[""], &["*"], &["get"])]).len(), 1);
    }
}
