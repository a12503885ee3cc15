//! ClusterRole aggregation (kube-controller-manager's
//! `clusterrole-aggregation`): a ClusterRole with an `aggregationRule` gets
//! the rules of every ClusterRole its selectors match, so that a role
//! labelled `rbac.authorization.k8s.io/aggregate-to-view: "true"` extends
//! `view` (and through it `edit` and `admin`).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

pub async fn run(client: kube::Client, settings: super::Settings) {
    let roles = settings.informers.get::<ClusterRole>(&client);
    let api: Api<ClusterRole> = Api::all(client);
    roles.ready().await;
    let mut changes = roles.subscribe();
    loop {
        let all = roles.store().state();
        for (name, rules) in aggregate(&all) {
            let patch = json!({"rules": rules});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(role = %name, rules = rules.len(), "aggregated cluster role updated")
                }
                Err(e) => {
                    tracing::warn!(role = %name, error = %e, "cannot update an aggregated cluster role")
                }
            }
        }
        // The next change, or a retry of what failed.
        tokio::select! {
            next = changes.next() => if next.is_none() { return },
            () = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        // A burst of changes (the bootstrap roles) is one pass.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The aggregated roles whose rules are not what their selectors gather:
/// (name, rules), the matched roles taken in name order, each rule once.
pub fn aggregate(roles: &[Arc<ClusterRole>]) -> Vec<(String, Vec<PolicyRule>)> {
    let mut sorted: Vec<&Arc<ClusterRole>> = roles.iter().collect();
    sorted.sort_by_key(|r| r.name_any());
    let mut out = Vec::new();
    for role in &sorted {
        let Some(rule) = &role.aggregation_rule else {
            continue;
        };
        let selectors = rule.cluster_role_selectors.clone().unwrap_or_default();
        let mut rules: Vec<PolicyRule> = Vec::new();
        for other in &sorted {
            if other.name_any() == role.name_any() {
                continue;
            }
            let labels = other.metadata.labels.as_ref();
            if !selectors
                .iter()
                .any(|s| shoal_core::selector::matches(s, labels))
            {
                continue;
            }
            for r in other.rules.iter().flatten() {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
        }
        if role.rules.clone().unwrap_or_default() != rules {
            out.push((role.name_any(), rules));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(value: serde_json::Value) -> Arc<ClusterRole> {
        Arc::new(serde_json::from_value(value).unwrap())
    }

    #[test]
    fn labelled_roles_are_gathered_once() {
        let roles = vec![
            role(
                json!({"metadata": {"name": "view"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}]}}),
            ),
            role(
                json!({"metadata": {"name": "b-extra", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}, "rules": [{"apiGroups": ["x.io"], "resources": ["widgets"], "verbs": ["get"]}]}),
            ),
            role(
                json!({"metadata": {"name": "a-base", "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"apiGroups": ["x.io"], "resources": ["widgets"], "verbs": ["get"]}]}),
            ),
            role(
                json!({"metadata": {"name": "other"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
            ),
        ];
        let changed = aggregate(&roles);
        assert_eq!(changed.len(), 1);
        let (name, rules) = &changed[0];
        assert_eq!(name, "view");
        let resources: Vec<&str> = rules
            .iter()
            .map(|r| r.resources.as_ref().unwrap()[0].as_str())
            .collect();
        assert_eq!(resources, ["pods", "widgets"]);
        // Already aggregated: nothing to write.
        let mut done = (*roles[0]).clone();
        done.rules = Some(rules.clone());
        let mut again = roles.clone();
        again[0] = Arc::new(done);
        assert!(aggregate(&again).is_empty());
    }
}
