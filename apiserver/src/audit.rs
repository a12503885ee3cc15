//! The audit log, as kube-apiserver's log backend writes it at level
//! Metadata: an `audit.k8s.io/v1` Event per request as one JSON line in
//! `--audit-log-path` (`-` for standard output): who (user, groups,
//! source address, user agent), what (verb, resource, namespace, name,
//! subresource, the URI) and how it ended (the response code), with an
//! `auditID` that the response carries as `Audit-Id`.
//!
//! ```text
//!  request ──▶ log() ──▶ authenticate (puts the User on the response) ──▶ handlers
//!               └ ResponseComplete line; a watch: ResponseStarted when it
//!                 starts, ResponseComplete when its stream ends
//! ```
//!
//! Without `--audit-policy-file` every request is logged (a policy of one
//! rule, `level: Metadata`, `omitStages: [RequestReceived]`); with one, as
//! `audit_policy` decides (RequestReceived is never logged).

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use http::{HeaderValue, Method};
use serde_json::{json, Value};

use crate::server::{Api, User};

/// The client's address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The name of the object a create made, put on its response.
#[derive(Debug, Clone)]
pub struct Created(pub String);

/// Where the lines go.
pub struct Audit {
    sink: Mutex<Box<dyn Write + Send>>,
    /// `--audit-policy-file`; without one every request is logged.
    policy: Option<crate::audit_policy::Policy>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

impl Audit {
    /// Appends to the file at `path` (made if missing); `-` is standard
    /// output.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let sink: Box<dyn Write + Send> = if path == Path::new("-") {
            Box::new(std::io::stdout())
        } else {
            Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            )
        };
        Ok(Audit {
            policy: None,
            sink: Mutex::new(sink),
        })
    }

    /// Logs what `policy` says to log.
    pub fn with_policy(mut self, policy: Option<crate::audit_policy::Policy>) -> Audit {
        self.policy = policy;
        self
    }

    fn write(&self, event: &Value) {
        let mut line = event.to_string();
        line.push('\n');
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line (the file is opened for appending, so lines
        // of several apiservers sharing it do not interleave).
        if let Err(e) = sink.write_all(line.as_bytes()).and_then(|()| sink.flush()) {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// What kube-apiserver's audit calls a request's verb.
fn verb(method: &Method, addressed: Option<&crate::rest::Addressed>, watch: bool) -> String {
    match (method, addressed) {
        (&Method::GET, Some(r)) if !r.named && watch => "watch".into(),
        (&Method::GET, Some(r)) if !r.named => "list".into(),
        (&Method::GET, Some(_)) => "get".into(),
        (&Method::POST, Some(_)) => "create".into(),
        (&Method::PUT, Some(_)) => "update".into(),
        (&Method::PATCH, Some(_)) => "patch".into(),
        (&Method::DELETE, Some(r)) if !r.named => "deletecollection".into(),
        (&Method::DELETE, Some(_)) => "delete".into(),
        (method, _) => method.as_str().to_ascii_lowercase(),
    }
}

/// The middleware: a line per request (two for a watch).
pub async fn log(State(api): State<Arc<Api>>, request: Request, next: Next) -> Response {
    let Some(audit) = api.audit.clone() else {
        return next.run(request).await;
    };
    let received = shoal_core::time::now_micro();
    let id = crate::object::uid();
    let path = request.uri().path().to_string();
    let uri = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| path.clone());
    let addressed = crate::rest::addressed(&path);
    let watch = crate::query::Query::parse(request.uri().query().unwrap_or_default()).flag("watch");
    let verb = verb(request.method(), addressed.as_ref(), watch);
    let attributes = audit.policy.as_ref().map(|_| {
        crate::rbac::Attributes::of(
            request.method(),
            &path,
            request.uri().query().unwrap_or_default(),
        )
    });
    let user_agent = request
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let source = request.extensions().get::<Peer>().map(|p| p.0.ip());
    let mut object_ref = addressed.as_ref().map(|r| {
        let mut object = json!({"resource": r.resource, "apiVersion": r.version});
        if !r.group.is_empty() {
            object["apiGroup"] = json!(r.group);
        }
        if let Some(namespace) = &r.namespace {
            object["namespace"] = json!(namespace);
        }
        if let Some(name) = &r.name {
            object["name"] = json!(name);
        }
        if !r.subresource.is_empty() {
            object["subresource"] = json!(r.subresource);
        }
        object
    });
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("audit-id", value);
    }
    let user = response.extensions().get::<User>().map(|u| {
        let mut user = json!({"username": u.name, "groups": u.groups});
        if !u.uid.is_empty() {
            user["uid"] = json!(u.uid);
        }
        user
    });
    if let (Some(object), Some(created)) = (&mut object_ref, response.extensions().get::<Created>())
    {
        if object.get("name").is_none() {
            object["name"] = json!(created.0);
        }
    }
    // What the policy says, for the user the request turned out to be.
    let decision = match (&audit.policy, &attributes) {
        (Some(policy), Some(attributes)) => {
            Some(policy.decide(response.extensions().get::<User>(), attributes))
        }
        _ => None,
    };
    let logs = |stage: &str| decision.as_ref().is_none_or(|d| d.logs(stage));
    let code = response.status().as_u16();
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": id,
        "stage": "ResponseComplete",
        "requestURI": uri,
        "verb": verb,
        "user": user.unwrap_or_else(|| json!({})),
        "sourceIPs": source.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": received,
        "stageTimestamp": shoal_core::time::now_micro(),
    });
    if let Some(agent) = user_agent {
        event["userAgent"] = json!(agent);
    }
    if let Some(object_ref) = object_ref {
        event["objectRef"] = object_ref;
    }
    let streaming = verb == "watch" && response.status().is_success();
    if !streaming {
        if logs("ResponseComplete") {
            audit.write(&event);
        }
        return response;
    }
    // A watch: started now, complete when its stream ends.
    if logs("ResponseStarted") {
        event["stage"] = json!("ResponseStarted");
        audit.write(&event);
    }
    if !logs("ResponseComplete") {
        return response;
    }
    event["stage"] = json!("ResponseComplete");
    let guard = Completes { audit, event };
    let (parts, body) = response.into_parts();
    let body = Body::from_stream(body.into_data_stream().map(move |chunk| {
        let _ = &guard;
        chunk
    }));
    Response::from_parts(parts, body)
}

/// Writes a watch's ResponseComplete line when dropped (with the body it
/// rides on).
struct Completes {
    audit: Arc<Audit>,
    event: Value,
}

impl Drop for Completes {
    fn drop(&mut self) {
        self.event["stageTimestamp"] = json!(shoal_core::time::now_micro());
        self.audit.write(&self.event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_kubernetes_audit_verbs() {
        let named = crate::rest::addressed("/api/v1/namespaces/default/pods/web");
        let collection = crate::rest::addressed("/api/v1/namespaces/default/pods");
        assert_eq!(verb(&Method::GET, named.as_ref(), false), "get");
        assert_eq!(verb(&Method::GET, collection.as_ref(), false), "list");
        assert_eq!(verb(&Method::GET, collection.as_ref(), true), "watch");
        assert_eq!(verb(&Method::POST, collection.as_ref(), false), "create");
        assert_eq!(verb(&Method::PUT, named.as_ref(), false), "update");
        assert_eq!(verb(&Method::PATCH, named.as_ref(), false), "patch");
        assert_eq!(verb(&Method::DELETE, named.as_ref(), false), "delete");
        assert_eq!(
            verb(&Method::DELETE, collection.as_ref(), false),
            "deletecollection"
        );
        assert_eq!(verb(&Method::GET, None, false), "get");
        let addressed = named.unwrap();
        assert_eq!(addressed.namespace.as_deref(), Some("default"));
        assert_eq!(addressed.name.as_deref(), Some("web"));
    }
}
