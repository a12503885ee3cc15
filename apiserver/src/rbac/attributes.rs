//! What a request asks to do, as Kubernetes' `RequestInfo` reads it from the
//! method and path, and the 403 that refuses it.
//!
//! ```text
//!   GET    /api/v1/namespaces/dev/pods            list pods in dev
//!   GET    /api/v1/namespaces/dev/pods?watch=1    watch pods in dev
//!   POST   /api/v1/namespaces/dev/pods/web/exec   create pods/exec web in dev
//!   GET    /apis/apps/v1/deployments              list deployments.apps (all namespaces)
//!   DELETE /api/v1/namespaces/dev/configmaps      deletecollection configmaps in dev
//!   GET    /api/v1/namespaces/dev                 get namespaces dev (namespace dev)
//!   GET    /apis/apps/v1, /version, /healthz      a non-resource request: get <path>
//! ```

use http::Method;

use crate::error::ApiError;
use crate::query::Query;

/// The resource part of a resource request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resource {
    pub group: String,
    pub resource: String,
    pub subresource: String,
    /// "" for cluster-scoped requests and for every namespace's.
    pub namespace: String,
    /// "" for collections.
    pub name: String,
}

impl Resource {
    /// `pods/log`, or `pods` without a subresource.
    pub fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// A request's verb and what it is on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    pub verb: String,
    /// The path of a non-resource request.
    pub path: String,
    /// `None` for a non-resource request.
    pub resource: Option<Resource>,
}

impl Attributes {
    pub fn non_resource(verb: &str, path: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            path: path.into(),
            resource: None,
        }
    }

    /// Reads a request as kube-apiserver's `RequestInfoFactory` does. A
    /// GET of exec, attach or portforward (kubectl's WebSocket) needs
    /// `create` as a POST does, which Kubernetes asks for as an extra check
    /// behind its `AuthorizePodWebsocketUpgradeCreatePermission` gate.
    pub fn of(method: &Method, path: &str, query: &str) -> Attributes {
        let non_resource = || Attributes {
            verb: method.as_str().to_ascii_lowercase(),
            path: path.to_string(),
            resource: None,
        };
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        if parts.len() < 3 {
            return non_resource();
        }
        let (group, mut rest) = match parts[0] {
            "api" => ("", &parts[2..]),
            "apis" if parts.len() >= 4 => (parts[1], &parts[3..]),
            _ => return non_resource(),
        };
        let query = Query::parse(query);
        let mut verb = match *method {
            Method::POST => "create",
            Method::GET | Method::HEAD => "get",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => "",
        }
        .to_string();
        // The legacy /watch/ prefix.
        if rest.first() == Some(&"watch") {
            verb = "watch".into();
            rest = &rest[1..];
        }
        let mut namespace = String::new();
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1].to_string();
            if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
                rest = &rest[2..];
            }
        }
        let resource = rest.first().copied().unwrap_or_default().to_string();
        let mut name = rest.get(1).copied().unwrap_or_default().to_string();
        let subresource = rest.get(2).copied().unwrap_or_default().to_string();
        if name.is_empty() {
            verb = match verb.as_str() {
                "get" if query.flag("watch") => "watch".into(),
                "get" => "list".into(),
                "delete" => "deletecollection".into(),
                other => other.into(),
            };
            // A list or watch of one object by name is about that name.
            if matches!(verb.as_str(), "list" | "watch") {
                if let Some(selector) = query.string("fieldSelector") {
                    for term in selector.split(',') {
                        let term = term.trim();
                        if let Some(value) = term
                            .strip_prefix("metadata.name==")
                            .or_else(|| term.strip_prefix("metadata.name="))
                        {
                            name = value.to_string();
                        }
                    }
                }
            }
        }
        if verb == "get"
            && resource == "pods"
            && matches!(subresource.as_str(), "exec" | "attach" | "portforward")
        {
            verb = "create".into();
        }
        Attributes {
            verb,
            path: path.to_string(),
            resource: Some(Resource {
                group: group.to_string(),
                resource,
                subresource,
                namespace,
                name,
            }),
        }
    }

    /// Kubernetes' `forbiddenMessage`: who cannot do what, where.
    pub fn forbidden_message(&self, user: &str) -> String {
        let text = match &self.resource {
            None => format!("User {user:?} cannot {} path {:?}", self.verb, self.path),
            Some(r) if !r.namespace.is_empty() => format!(
                "User {user:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
                self.verb,
                r.combined(),
                r.group,
                r.namespace
            ),
            Some(r) => format!(
                "User {user:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
                self.verb,
                r.combined(),
                r.group
            ),
        };
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    }

    /// The 403 for this request (`reason`: what the authorizer added).
    pub fn forbidden(&self, user: &str, reason: &str) -> ApiError {
        let mut message = self.forbidden_message(user);
        if !reason.is_empty() {
            message.push_str(": ");
            message.push_str(reason);
        }
        let (group, resource, name) = match &self.resource {
            Some(r) => (r.group.as_str(), r.resource.as_str(), r.name.as_str()),
            None => ("", "", ""),
        };
        ApiError::forbidden(group, resource, name, &message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, query: &str) -> (String, Option<Resource>) {
        let a = Attributes::of(&method, path, query);
        (a.verb, a.resource)
    }

    fn resource(group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Option<Resource> {
        Some(Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
        })
    }

    #[test]
    fn request_info_like_kube_apiserver() {
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/dev/pods", ""),
            ("list".into(), resource("", "pods", "", "dev", ""))
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/dev/pods", "watch=true"),
            ("watch".into(), resource("", "pods", "", "dev", ""))
        );
        assert_eq!(
            of(
                Method::GET,
                "/api/v1/namespaces/dev/pods",
                "fieldSelector=metadata.name%3Dweb&watch=1"
            ),
            ("watch".into(), resource("", "pods", "", "dev", "web"))
        );
        assert_eq!(
            of(Method::POST, "/api/v1/namespaces/dev/pods/web/exec", ""),
            ("create".into(), resource("", "pods", "exec", "dev", "web"))
        );
        assert_eq!(
            of(
                Method::GET,
                "/api/v1/namespaces/dev/pods/web/exec",
                "command=ls"
            ),
            ("create".into(), resource("", "pods", "exec", "dev", "web"))
        );
        assert_eq!(
            of(
                Method::DELETE,
                "/apis/apps/v1/namespaces/dev/deployments",
                ""
            ),
            (
                "deletecollection".into(),
                resource("apps", "deployments", "", "dev", "")
            )
        );
        assert_eq!(
            of(Method::GET, "/api/v1/namespaces/dev", ""),
            ("get".into(), resource("", "namespaces", "", "dev", "dev"))
        );
        assert_eq!(
            of(Method::PUT, "/api/v1/namespaces/dev/finalize", ""),
            (
                "update".into(),
                resource("", "namespaces", "finalize", "dev", "dev")
            )
        );
        assert_eq!(
            of(Method::GET, "/api/v1/nodes", ""),
            ("list".into(), resource("", "nodes", "", "", ""))
        );
        for path in [
            "/api",
            "/api/v1",
            "/apis/apps",
            "/apis/apps/v1",
            "/version",
            "/healthz",
        ] {
            let a = Attributes::of(&Method::GET, path, "");
            assert_eq!(
                (a.verb.as_str(), a.resource, a.path.as_str()),
                ("get", None, path)
            );
        }
    }

    #[test]
    fn forbidden_messages_like_kubernetes() {
        let list = Attributes::of(&Method::GET, "/api/v1/namespaces/y/pods", "");
        let e = list.forbidden("x", "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods is forbidden: User \"x\" cannot list resource \"pods\" in API group \"\" in the namespace \"y\""
        );
        let get = Attributes::of(
            &Method::GET,
            "/apis/apps/v1/namespaces/y/deployments/web/scale",
            "",
        );
        assert_eq!(
            get.forbidden("x", "").message,
            "deployments.apps \"web\" is forbidden: User \"x\" cannot get resource \"deployments/scale\" in API group \"apps\" in the namespace \"y\""
        );
        let nodes = Attributes::of(&Method::GET, "/api/v1/nodes", "");
        assert_eq!(
            nodes.forbidden("x", "RBAC: clusterrole.rbac.authorization.k8s.io \"a\" not found").message,
            "nodes is forbidden: User \"x\" cannot list resource \"nodes\" in API group \"\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"a\" not found"
        );
        let path = Attributes::of(&Method::GET, "/metrics", "");
        assert_eq!(
            path.forbidden("system:anonymous", "").message,
            "forbidden: User \"system:anonymous\" cannot get path \"/metrics\""
        );
    }
}
