//! Who may call the agent's endpoint, as the kubelet decides it.
//!
//! ```text
//!   the --token-file token ──────────────────────────────► served
//!   a client certificate the --client-ca-file CA signed ─┐
//!   another bearer token ─► TokenReview (apiserver) ──────┴► user
//!   user ─► SubjectAccessReview: <verb> nodes/<subresource> <this node>
//!        ─► served, or 403 "Forbidden (user=.., verb=.., resource=nodes, subresource=..)"
//! ```
//!
//! The apiserver presents its client certificate
//! (`kube-apiserver-kubelet-client`, in `system:masters`); a node's own
//! certificate (`system:node:<name>`) is refused another node's pods, as
//! RBAC gives nodes no `nodes/proxy`. Answers are cached as the kubelet's
//! webhooks cache them: tokens 2 minutes (by their SHA-256: no token is
//! kept), allowed decisions 5 minutes, refusals 30 seconds. A token longer
//! than any the apiserver issues is refused without asking, and an
//! apiserver that does not answer within 10 seconds is an error (500),
//! not a refusal.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A caller, as its certificate or the apiserver names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl Caller {
    /// The user a client certificate (DER) names: CN, and O as groups.
    pub fn of_certificate(der: &[u8]) -> Option<Caller> {
        let (name, mut groups) = shoal_core::tls::certificate_subject(der)?;
        groups.push("system:authenticated".into());
        Some(Caller {
            name,
            uid: String::new(),
            groups,
        })
    }
}

/// The connection's verified client certificate user (a request
/// extension).
#[derive(Debug, Clone)]
pub struct Certified(pub Caller);

const TOKEN_TTL: Duration = Duration::from_secs(120);
/// Longer bearer tokens are nobody's (ServiceAccount JWTs are about 1 KiB).
pub const MAX_TOKEN: usize = 8 * 1024;
/// How long a review may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
/// Entries kept before expired ones are dropped (and, if that is not
/// enough, all of them): callers sending random tokens grow nothing.
const CACHE_LIMIT: usize = 4096;

type Decision = (Caller, &'static str, &'static str);
/// Answers by key, each until its expiry.
type Cache<K, V> = Mutex<HashMap<K, (V, Instant)>>;

/// The apiserver's answers about callers: TokenReview and
/// SubjectAccessReview (kubelet's `--authentication-token-webhook` and
/// `--authorization-mode=Webhook`).
pub struct Webhook {
    client: kube::Client,
    node: String,
    tokens: Cache<[u8; 32], Option<Caller>>,
    decisions: Cache<Decision, bool>,
}

fn cached<K: std::hash::Hash + Eq, V: Clone>(cache: &Cache<K, V>, key: &K) -> Option<V> {
    let cache = cache.lock().ok()?;
    let (value, until) = cache.get(key)?;
    (Instant::now() < *until).then(|| value.clone())
}

fn remember<K: std::hash::Hash + Eq, V>(cache: &Cache<K, V>, key: K, value: V, ttl: Duration) {
    let Ok(mut cache) = cache.lock() else { return };
    if cache.len() >= CACHE_LIMIT {
        let now = Instant::now();
        cache.retain(|_, (_, until)| *until > now);
    }
    // Still full of live answers: this one is not kept (they are).
    if cache.len() < CACHE_LIMIT {
        cache.insert(key, (value, Instant::now() + ttl));
    }
}

impl Webhook {
    pub fn new(client: kube::Client, node: String) -> Webhook {
        Webhook {
            client,
            node,
            tokens: Mutex::new(HashMap::new()),
            decisions: Mutex::new(HashMap::new()),
        }
    }

    async fn create(&self, path: &str, review: Value) -> Result<Value, String> {
        let body = serde_json::to_vec(&review).map_err(|e| e.to_string())?;
        let request = axum::http::Request::post(path)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(REVIEW_TIMEOUT, self.client.request::<Value>(request)).await {
            Ok(answer) => answer.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "no answer from the apiserver in {REVIEW_TIMEOUT:?}"
            )),
        }
    }

    /// Who `token` is, as the apiserver's TokenReview says (None: nobody).
    pub async fn who(&self, token: &str) -> Result<Option<Caller>, String> {
        if token.len() > MAX_TOKEN {
            return Ok(None);
        }
        let key: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        if let Some(caller) = cached(&self.tokens, &key) {
            return Ok(caller);
        }
        let reviewed = self
            .create(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                json!({
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                }),
            )
            .await?;
        let status = &reviewed["status"];
        let caller = (status["authenticated"] == true).then(|| Caller {
            name: status["user"]["username"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            uid: status["user"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            groups: status["user"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g.as_str().map(String::from))
                .collect(),
        });
        let ttl = if caller.is_some() {
            TOKEN_TTL
        } else {
            DENIED_TTL
        };
        remember(&self.tokens, key, caller.clone(), ttl);
        Ok(caller)
    }

    /// Whether `caller` may `verb` this node's `subresource`, as the
    /// apiserver's SubjectAccessReview says.
    pub async fn may(
        &self,
        caller: &Caller,
        verb: &'static str,
        subresource: &'static str,
    ) -> Result<bool, String> {
        let key = (caller.clone(), verb, subresource);
        if let Some(allowed) = cached(&self.decisions, &key) {
            return Ok(allowed);
        }
        let mut spec = json!({
            "user": caller.name,
            "groups": caller.groups,
            "resourceAttributes": {
                "verb": verb,
                "resource": "nodes",
                "subresource": subresource,
                "name": self.node,
            },
        });
        if !caller.uid.is_empty() {
            spec["uid"] = json!(caller.uid);
        }
        let reviewed = self
            .create(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                json!({
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": spec,
                }),
            )
            .await?;
        let allowed = reviewed["status"]["allowed"] == true;
        let ttl = if allowed { ALLOWED_TTL } else { DENIED_TTL };
        remember(&self.decisions, key, allowed, ttl);
        Ok(allowed)
    }
}

/// The subresource of `nodes` a path is, as the kubelet names them:
/// `stats`, `metrics`, `log`, `spec`, `checkpoint`, and `proxy` for
/// everything else (logs of containers, exec, attach, ...).
pub fn subresource(path: &str) -> &'static str {
    let under = |prefix: &str| {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    if under("/stats") {
        "stats"
    } else if under("/metrics") {
        "metrics"
    } else if under("/logs") {
        "log"
    } else if under("/spec") {
        "spec"
    } else if under("/checkpoint") {
        "checkpoint"
    } else {
        "proxy"
    }
}

/// The verb an HTTP method is, as the kubelet maps it (none for other
/// methods: only a rule for every verb allows those).
pub fn verb(method: &axum::http::Method) -> &'static str {
    match *method {
        axum::http::Method::GET => "get",
        axum::http::Method::POST => "create",
        axum::http::Method::PUT => "update",
        axum::http::Method::PATCH => "patch",
        axum::http::Method::DELETE => "delete",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_the_kubelets_subresources() {
        assert_eq!(subresource("/metrics"), "metrics");
        assert_eq!(subresource("/metrics/resource"), "metrics");
        assert_eq!(subresource("/metricsx"), "proxy");
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/logs/"), "log");
        assert_eq!(subresource("/containerLogs/default/web/nginx"), "proxy");
        assert_eq!(subresource("/exec/default/web/nginx"), "proxy");
        assert_eq!(subresource("/healthz"), "proxy");
        assert_eq!(verb(&axum::http::Method::GET), "get");
        assert_eq!(verb(&axum::http::Method::HEAD), "");
        assert_eq!(verb(&axum::http::Method::POST), "create");
    }

    #[test]
    fn the_cache_forgets_expired_answers_and_stays_bounded() {
        let cache: Cache<String, bool> = Mutex::new(HashMap::new());
        remember(&cache, "a".into(), true, Duration::from_secs(60));
        remember(&cache, "b".into(), true, Duration::ZERO);
        assert_eq!(cached(&cache, &"a".to_string()), Some(true));
        assert_eq!(cached(&cache, &"b".to_string()), None);
        for i in 0..CACHE_LIMIT * 2 {
            remember(&cache, format!("t{i}"), false, Duration::from_secs(60));
        }
        assert!(cache.lock().unwrap().len() <= CACHE_LIMIT);
        // What was there first is still answered.
        assert_eq!(cached(&cache, &"a".to_string()), Some(true));
    }
}
