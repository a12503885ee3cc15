//! The review APIs, answered from the authorizer and never stored:
//! `authorization.k8s.io/v1` SelfSubjectAccessReview (`kubectl auth
//! can-i`), SelfSubjectRulesReview (`kubectl auth can-i --list`),
//! SubjectAccessReview and LocalSubjectAccessReview (asking about someone
//! else), and `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth
//! whoami`) and TokenReview (who a bearer token is: node agents ask it of
//! their callers). Each is a create that answers the object with its
//! status.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::{json, Value};

use super::{rules_for, Attributes, ResourceAttributes};
use crate::error::{ApiError, Cause, Result};
use crate::server::{Api, User};

/// A review resource.
#[derive(Debug)]
pub struct Review {
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

pub static REVIEWS: &[Review] = &[
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "selfsubjectreviews",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    Review {
        group: "authentication.k8s.io",
        version: "v1",
        plural: "tokenreviews",
        kind: "TokenReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "localsubjectaccessreviews",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
    },
    Review {
        group: "authorization.k8s.io",
        version: "v1",
        plural: "subjectaccessreviews",
        kind: "SubjectAccessReview",
        namespaced: false,
    },
];

/// The groups these are served in, each with its version.
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in REVIEWS {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    groups
}

/// The review a path names, with the namespace of a local one.
fn find(path: &str) -> Option<(&'static Review, Option<String>)> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match parts.as_slice() {
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural) = match rest {
        [plural] => (None, *plural),
        ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
        _ => return None,
    };
    let review = REVIEWS
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)?;
    (review.namespaced == namespace.is_some()).then_some((review, namespace))
}

/// Whether a path is a review (served here, not by the generic handlers).
pub fn handles(path: &str) -> bool {
    find(path).is_some()
}

fn invalid(review: &Review, field: &str, value: &Value, detail: &str) -> ApiError {
    ApiError::invalid_kind(
        review.group,
        review.kind,
        "",
        vec![Cause::invalid(field, value, detail)],
    )
}

fn string(value: &Value, field: &str) -> String {
    value
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The request attributes a review's spec asks about.
fn asked(review: &Review, spec: &Value) -> Result<Attributes> {
    let resource = spec.get("resourceAttributes").filter(|v| v.is_object());
    let non_resource = spec.get("nonResourceAttributes").filter(|v| v.is_object());
    match (resource, non_resource) {
        (Some(r), None) => Ok(Attributes {
            verb: string(r, "verb"),
            path: String::new(),
            resource: Some(ResourceAttributes {
                group: string(r, "group"),
                resource: string(r, "resource"),
                subresource: string(r, "subresource"),
                namespace: string(r, "namespace"),
                name: string(r, "name"),
            }),
        }),
        (None, Some(n)) => Ok(Attributes::non_resource(
            &string(n, "verb"),
            &string(n, "path"),
        )),
        _ => Err(invalid(
            review,
            "spec.resourceAttributes",
            spec.get("resourceAttributes").unwrap_or(&Value::Null),
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )),
    }
}

/// The user a (Local)SubjectAccessReview asks about.
fn subject(spec: &Value) -> User {
    User {
        name: string(spec, "user"),
        uid: string(spec, "uid"),
        groups: spec
            .get("groups")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|g| g.as_str().map(String::from))
            .collect(),
    }
}

fn access_status(allowed: bool, reason: &str) -> Value {
    let mut status = json!({"allowed": allowed});
    if !reason.is_empty() {
        status["reason"] = json!(reason);
    }
    status
}

/// Answers a review. Without authentication (no token file), the
/// requester is nobody in particular and everything is allowed.
pub async fn serve(api: &Arc<Api>, parts: &http::request::Parts, body: bytes::Bytes) -> Response {
    match answer(api, parts, &body).await {
        Ok(object) => (StatusCode::CREATED, axum::Json(object)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn answer(api: &Arc<Api>, parts: &http::request::Parts, body: &[u8]) -> Result<Value> {
    let Some((review, namespace)) = find(parts.uri.path()) else {
        return Err(ApiError::path_not_found());
    };
    if parts.method != http::Method::POST {
        return Err(ApiError::method_not_allowed(parts.method.as_str()));
    }
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mut object = crate::rest::decode_body(content_type, body)?;
    object["apiVersion"] = json!(format!("{}/{}", review.group, review.version));
    object["kind"] = json!(review.kind);
    object["metadata"] = json!({"creationTimestamp": null});
    let requester = parts.extensions.get::<User>().cloned();
    let index = match &api.authorizer {
        Some(authorizer) => {
            authorizer.synced().await;
            Some(authorizer.index())
        }
        None => None,
    };
    let spec = object.get("spec").cloned().unwrap_or_else(|| json!({}));
    let status = match review.kind {
        "SelfSubjectReview" => {
            let user = requester.unwrap_or_else(|| User {
                name: String::new(),
                uid: String::new(),
                groups: Vec::new(),
            });
            let mut info = json!({"username": user.name, "groups": user.groups});
            if !user.uid.is_empty() {
                info["uid"] = json!(user.uid);
            }
            json!({"userInfo": info})
        }
        "TokenReview" => {
            let token = string(&spec, "token");
            if token.is_empty() {
                return Err(invalid(
                    review,
                    "spec.token",
                    &json!(""),
                    "token must not be empty",
                ));
            }
            let user = match &api.tokens {
                Some(tokens) => crate::server::token_user(api, tokens, &token).await,
                None => None,
            };
            match user {
                Some(user) => {
                    let mut info = json!({"username": user.name, "groups": user.groups});
                    if !user.uid.is_empty() {
                        info["uid"] = json!(user.uid);
                    }
                    json!({"authenticated": true, "user": info})
                }
                None => json!({"authenticated": false, "user": {}}),
            }
        }
        "SelfSubjectRulesReview" => {
            let ns = string(&spec, "namespace");
            if ns.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            let (rules, incomplete) = match (&index, &requester) {
                (Some(index), Some(user)) => rules_for(index, user, &ns),
                _ => (
                    vec![
                        super::Rule {
                            verbs: vec!["*".into()],
                            api_groups: vec!["*".into()],
                            resources: vec!["*".into()],
                            ..Default::default()
                        },
                        super::Rule {
                            verbs: vec!["*".into()],
                            non_resource_urls: vec!["*".into()],
                            ..Default::default()
                        },
                    ],
                    false,
                ),
            };
            let (non_resource, resource): (Vec<_>, Vec<_>) = rules
                .into_iter()
                .partition(|r| !r.non_resource_urls.is_empty());
            let resource: Vec<Value> = resource
                .into_iter()
                .map(|r| {
                    let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
                    if !r.resource_names.is_empty() {
                        v["resourceNames"] = json!(r.resource_names);
                    }
                    v
                })
                .collect();
            let non_resource: Vec<Value> = non_resource
                .into_iter()
                .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                .collect();
            json!({"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": incomplete})
        }
        _ => {
            let mut attributes = asked(review, &spec)?;
            if let (Some(ns), Some(r)) = (&namespace, attributes.resource.as_mut()) {
                // A local review is about its own namespace.
                if r.namespace.is_empty() {
                    r.namespace = ns.clone();
                } else if r.namespace != *ns {
                    return Err(invalid(
                        review,
                        "spec.resourceAttributes.namespace",
                        &json!(r.namespace),
                        "must match metadata.namespace",
                    ));
                }
            }
            let who = if review.kind == "SelfSubjectAccessReview" {
                requester
            } else {
                let user = subject(&spec);
                if user.name.is_empty() && user.groups.is_empty() {
                    return Err(invalid(
                        review,
                        "spec.user",
                        &json!(""),
                        "at least one of user or group must be specified",
                    ));
                }
                Some(user)
            };
            match (&api.authorizer, &who) {
                (Some(authorizer), Some(user)) => {
                    let decision = authorizer.authorize(&api.store, user, &attributes).await;
                    access_status(decision.allowed, &decision.reason)
                }
                _ => access_status(true, ""),
            }
        }
    };
    object["status"] = status;
    if let Some(ns) = namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_reviews() {
        let (r, ns) = find("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").unwrap();
        assert_eq!((r.kind, ns), ("SelfSubjectAccessReview", None));
        let (r, ns) =
            find("/apis/authorization.k8s.io/v1/namespaces/dev/localsubjectaccessreviews").unwrap();
        assert_eq!(
            (r.kind, ns.as_deref()),
            ("LocalSubjectAccessReview", Some("dev"))
        );
        assert!(find("/apis/authorization.k8s.io/v1/localsubjectaccessreviews").is_none());
        assert!(
            find("/apis/authorization.k8s.io/v1/namespaces/dev/selfsubjectaccessreviews").is_none()
        );
        assert!(find("/apis/apps/v1/deployments").is_none());
    }
}
