//! `--audit-policy-file`: kube-apiserver's audit `Policy`
//! (`audit.k8s.io/v1`), which says per request whether it is logged and
//! which stages are left out. The first rule that matches decides; a
//! request no rule matches is not logged.
//!
//! ```yaml
//! apiVersion: audit.k8s.io/v1
//! kind: Policy
//! omitStages: [RequestReceived]
//! rules:
//! - level: None
//!   resources: [{group: "", resources: [events]}]
//! - level: None
//!   nonResourceURLs: ["/healthz*", "/version"]
//! - level: Metadata
//! ```
//!
//! A rule matches on `users`, `userGroups`, `verbs`, `resources` (group,
//! resources with `*`, `*/sub` and `res/*`, `resourceNames`),
//! `namespaces` ("" for cluster-scoped) and `nonResourceURLs` (a trailing
//! `*` is a prefix), each only when given. Levels `Request` and
//! `RequestResponse` are logged as `Metadata` (bodies are not recorded).

use std::path::Path;

use serde::Deserialize;

use crate::rbac::Attributes;
use crate::server::User;

const LEVELS: &[&str] = &["None", "Metadata", "Request", "RequestResponse"];
const STAGES: &[&str] = &[
    "RequestReceived",
    "ResponseStarted",
    "ResponseComplete",
    "Panic",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<GroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Vec<Rule>,
    #[serde(default)]
    omit_stages: Vec<String>,
}

/// What the policy says of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// `None` (not logged) or the level.
    pub level: String,
    /// Stages left out (the policy's and the rule's).
    pub omit: Vec<String>,
}

impl Decision {
    pub fn logs(&self, stage: &str) -> bool {
        self.level != "None" && !self.omit.iter().any(|s| s == stage)
    }
}

impl Rule {
    fn matches(&self, user: Option<&User>, attributes: &Attributes) -> bool {
        let name = user.map(|u| u.name.as_str()).unwrap_or_default();
        let groups: &[String] = user.map(|u| u.groups.as_slice()).unwrap_or_default();
        if !self.users.is_empty() && !self.users.iter().any(|u| u == name) {
            return false;
        }
        if !self.user_groups.is_empty() && !groups.iter().any(|g| self.user_groups.contains(g)) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&attributes.verb) {
            return false;
        }
        if !self.namespaces.is_empty() {
            match &attributes.resource {
                Some(r) if self.namespaces.contains(&r.namespace) => {}
                _ => return false,
            }
        }
        if !self.resources.is_empty() {
            let Some(r) = &attributes.resource else {
                return false;
            };
            let combined = r.combined();
            let found = self.resources.iter().any(|gr| {
                gr.group == r.group
                    && (gr.resources.is_empty()
                        || gr.resources.iter().any(|res| {
                            (gr.resource_names.is_empty() || gr.resource_names.contains(&r.name))
                                && (*res == combined
                                    || res == "*"
                                    || (!r.subresource.is_empty()
                                        && res.strip_prefix("*/") == Some(r.subresource.as_str()))
                                    || res.strip_suffix("/*") == Some(r.resource.as_str()))
                        }))
            });
            if !found {
                return false;
            }
        }
        if !self.non_resource_urls.is_empty() {
            if attributes.resource.is_some() {
                return false;
            }
            let path = attributes.path.as_str();
            let found = self.non_resource_urls.iter().any(|url| {
                url == path
                    || url
                        .strip_suffix('*')
                        .is_some_and(|prefix| path.starts_with(prefix))
            });
            if !found {
                return false;
            }
        }
        true
    }
}

impl Policy {
    /// Reads and checks a policy file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the audit policy {}: {e}", path.display()))?;
        let policy: Policy = serde_norway::from_str(&text)
            .map_err(|e| format!("the audit policy {} does not parse: {e}", path.display()))?;
        policy
            .check()
            .map_err(|e| format!("the audit policy {}: {e}", path.display()))?;
        Ok(policy)
    }

    fn check(&self) -> Result<(), String> {
        if self.kind != "Policy" || !self.api_version.starts_with("audit.k8s.io/") {
            return Err(format!(
                "want apiVersion audit.k8s.io/v1 and kind Policy, not {:?} {:?}",
                self.api_version, self.kind
            ));
        }
        let stages = self
            .omit_stages
            .iter()
            .chain(self.rules.iter().flat_map(|r| &r.omit_stages));
        for stage in stages {
            if !STAGES.contains(&stage.as_str()) {
                return Err(format!("unknown stage {stage:?} (one of {STAGES:?})"));
            }
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !LEVELS.contains(&rule.level.as_str()) {
                return Err(format!(
                    "rules[{i}].level: unknown level {:?} (one of {LEVELS:?})",
                    rule.level
                ));
            }
            if !rule.non_resource_urls.is_empty()
                && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return Err(format!(
                    "rules[{i}]: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
        }
        Ok(())
    }

    /// The first matching rule's level and omitted stages; `None` when no
    /// rule matches.
    pub fn decide(&self, user: Option<&User>, attributes: &Attributes) -> Decision {
        match self.rules.iter().find(|r| r.matches(user, attributes)) {
            Some(rule) => Decision {
                level: rule.level.clone(),
                omit: self
                    .omit_stages
                    .iter()
                    .chain(&rule.omit_stages)
                    .cloned()
                    .collect(),
            },
            None => Decision {
                level: "None".into(),
                omit: Vec::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn policy(yaml: &str) -> Result<Policy, String> {
        let policy: Policy = serde_norway::from_str(yaml).map_err(|e| e.to_string())?;
        policy.check().map(|()| policy)
    }

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: [system:kube-proxy]
  verbs: [watch]
- level: None
  nonResourceURLs: ["/healthz*", /version]
- level: RequestResponse
  resources: [{group: "", resources: [secrets, "pods/*"]}]
  namespaces: [prod]
  omitStages: [ResponseStarted]
- level: None
  resources: [{group: "", resources: [events]}]
- level: Metadata
"#,
        )
        .unwrap();
        let admin = user("admin", &["system:masters"]);
        let a = |m: Method, path: &str, q: &str| Attributes::of(&m, path, q);
        let proxy = user("system:kube-proxy", &[]);
        let watch = a(Method::GET, "/api/v1/services", "watch=true");
        assert_eq!(p.decide(Some(&proxy), &watch).level, "None");
        assert_eq!(p.decide(Some(&admin), &watch).level, "Metadata");
        assert_eq!(
            p.decide(None, &a(Method::GET, "/healthz/etcd", "")).level,
            "None"
        );
        let secret = p.decide(
            Some(&admin),
            &a(Method::GET, "/api/v1/namespaces/prod/secrets/db", ""),
        );
        assert_eq!(secret.level, "RequestResponse");
        assert!(
            !secret.logs("ResponseStarted")
                && !secret.logs("RequestReceived")
                && secret.logs("ResponseComplete")
        );
        assert_eq!(
            p.decide(
                Some(&admin),
                &a(Method::GET, "/api/v1/namespaces/prod/pods/web/log", "")
            )
            .level,
            "RequestResponse"
        );
        assert_eq!(
            p.decide(
                Some(&admin),
                &a(Method::GET, "/api/v1/namespaces/dev/secrets/db", "")
            )
            .level,
            "Metadata"
        );
        assert_eq!(
            p.decide(
                Some(&admin),
                &a(Method::POST, "/api/v1/namespaces/dev/events", "")
            )
            .level,
            "None"
        );
        assert!(!p
            .decide(None, &a(Method::GET, "/version", ""))
            .logs("ResponseComplete"));
    }

    #[test]
    fn bad_policies_are_refused_with_the_reason() {
        let e = policy("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Verbose\n")
            .unwrap_err();
        assert!(e.contains("unknown level \"Verbose\""), "{e}");
        let e = policy("apiVersion: v1\nkind: ConfigMap\n").unwrap_err();
        assert!(e.contains("kind Policy"), "{e}");
        let e =
            policy("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Later]\n").unwrap_err();
        assert!(e.contains("unknown stage"), "{e}");
    }
}
