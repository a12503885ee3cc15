//! The HTTPS server: configuration, routes, bearer-token authentication,
//! and the accept loop (TLS, HTTP/1.1 and HTTP/2 with upgrades).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use crate::allocate::{parse_port_range, parse_service_cidr};
use crate::error::ApiError;
use crate::storage::Store;
use crate::{compaction, discovery, namespaces, openapi, rest};
use shoal_core::duration::parse as parse_duration;
use shoal_core::tls;

#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Store members (etcd v3 API) to use, comma-separated; any of them may
    /// be down.
    #[arg(
        long,
        env = "SHOAL_ETCD_SERVERS",
        value_delimiter = ',',
        required = true
    )]
    pub etcd_servers: Vec<String>,
    /// CA of the store's certificate, for `https://` store URLs.
    #[arg(long, env = "SHOAL_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate presented to the store (PEM).
    #[arg(long, env = "SHOAL_ETCD_CERTFILE", requires = "etcd_keyfile")]
    pub etcd_certfile: Option<PathBuf>,
    /// Key of `--etcd-certfile` (PEM).
    #[arg(long, env = "SHOAL_ETCD_KEYFILE", requires = "etcd_certfile")]
    pub etcd_keyfile: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SHOAL_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: String,
    /// Port for HTTPS (0 picks a free one).
    #[arg(long, env = "SHOAL_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,
    /// Range that Service cluster IPs are allocated from.
    #[arg(
        long,
        env = "SHOAL_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    pub service_cluster_ip_range: String,
    /// Range that NodePorts are allocated from.
    #[arg(
        long,
        env = "SHOAL_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    pub service_node_port_range: String,
    /// Serving certificate (PEM, may include the chain). Without it, a
    /// cluster CA and a certificate are generated into the data dir.
    #[arg(long, env = "SHOAL_TLS_CERT_FILE", requires = "tls_private_key_file")]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of `--tls-cert-file` (PEM).
    #[arg(long, env = "SHOAL_TLS_PRIVATE_KEY_FILE", requires = "tls_cert_file")]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates authenticate users (user = the
    /// subject's CN, groups = its O values), as kube-apiserver's
    /// `--client-ca-file`. Default: the generated cluster CA (when the
    /// serving certificate is generated too).
    #[arg(long, env = "SHOAL_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Bearer tokens, one per line as `token,user,uid[,"group1,group2"]`.
    /// Without it every request is allowed (a warning is logged).
    #[arg(long, env = "SHOAL_TOKEN_AUTH_FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// Extra names and addresses the generated serving certificate is valid
    /// for, comma-separated.
    #[arg(long, env = "SHOAL_TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,
    /// How often the store's history is compacted (to the revision of one
    /// interval ago); 0 never compacts. Accepts `300`, `300s`, `5m`.
    #[arg(long, env = "SHOAL_ETCD_COMPACTION_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub etcd_compaction_interval: Duration,
    /// CA that node agents' serving certificates are checked against
    /// (for logs, exec, attach); default: the cluster CA in the data dir.
    #[arg(long, env = "SHOAL_KUBELET_CERTIFICATE_AUTHORITY")]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// File holding the bearer token the apiserver presents to node agents.
    #[arg(long, env = "SHOAL_KUBELET_TOKEN_FILE")]
    pub kubelet_token_file: Option<PathBuf>,
    /// Client certificate (and its key) the apiserver presents to node
    /// agents, which authorize it with a SubjectAccessReview. Default: one
    /// signed at start for `kube-apiserver-kubelet-client` in
    /// `system:masters` (as kubeadm's apiserver-kubelet-client.crt), kept
    /// in memory: by the data dir's CA when it made the serving
    /// certificate, else by the controllers' --cluster-signing-*-file;
    /// none without either.
    #[arg(
        long,
        env = "SHOAL_KUBELET_CLIENT_CERTIFICATE",
        requires = "kubelet_client_key"
    )]
    pub kubelet_client_certificate: Option<PathBuf>,
    #[arg(
        long,
        env = "SHOAL_KUBELET_CLIENT_KEY",
        requires = "kubelet_client_certificate"
    )]
    pub kubelet_client_key: Option<PathBuf>,
    /// The CA (certificate and key files) that signs the default client
    /// certificate for agents when the data dir holds none: `shoal
    /// apiserver` gives its controllers' `--cluster-signing-*-file`.
    #[arg(skip)]
    pub kubelet_client_signer: Option<(PathBuf, PathBuf)>,
    /// Where the audit log is appended, one `audit.k8s.io/v1` Event per
    /// request at level Metadata as a JSON line (`-`: standard output).
    #[arg(long, env = "SHOAL_AUDIT_LOG_PATH")]
    pub audit_log_path: Option<PathBuf>,
    /// An audit `Policy` (audit.k8s.io/v1): which requests are logged and
    /// which stages are left out; without it every request is.
    #[arg(long, env = "SHOAL_AUDIT_POLICY_FILE", requires = "audit_log_path")]
    pub audit_policy_file: Option<PathBuf>,
    /// An `EncryptionConfiguration` (kube-apiserver's format): the
    /// resources it names (e.g. secrets) are encrypted in the store.
    #[arg(long, env = "SHOAL_ENCRYPTION_PROVIDER_CONFIG")]
    pub encryption_provider_config: Option<PathBuf>,
    /// The key ServiceAccount tokens are signed with (an ECDSA P-256
    /// private key, PKCS#8 PEM); generated into the data dir when not
    /// given. Apiservers sharing a store must share it.
    #[arg(long, env = "SHOAL_SERVICE_ACCOUNT_SIGNING_KEY_FILE")]
    pub service_account_signing_key_file: Option<PathBuf>,
    /// The `iss` of ServiceAccount tokens.
    #[arg(
        long,
        env = "SHOAL_SERVICE_ACCOUNT_ISSUER",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    pub service_account_issuer: String,
    /// Audiences tokens must be for to be accepted (comma-separated);
    /// default: the issuer.
    #[arg(long, env = "SHOAL_API_AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// How requests are authorized: `Node,RBAC` (the default: nodes'
    /// own identities by the Node authorizer, then Roles, ClusterRoles and
    /// their bindings), `RBAC`, or `AlwaysAllow` (every authenticated
    /// request). `system:masters` is always allowed everything.
    #[arg(long, env = "SHOAL_AUTHORIZATION_MODE", default_value = "Node,RBAC", value_parser = ["Node,RBAC", "RBAC", "AlwaysAllow"])]
    pub authorization_mode: String,
    /// Requests without a bearer token are served as `system:anonymous`
    /// (group `system:unauthenticated`), which RBAC allows only health
    /// and version; `false` answers them 401. Off under `AlwaysAllow`.
    #[arg(long, env = "SHOAL_ANONYMOUS_AUTH", default_value_t = true, action = clap::ArgAction::Set)]
    pub anonymous_auth: bool,
    /// Bootstrap tokens (`<id>.<secret>`, kept in Secrets
    /// `kube-system/bootstrap-token-<id>` of type
    /// `bootstrap.kubernetes.io/token`) authenticate as
    /// `system:bootstrap:<id>` in `system:bootstrappers`: what a joining
    /// agent asks for its certificate with.
    #[arg(long, env = "SHOAL_ENABLE_BOOTSTRAP_TOKEN_AUTH")]
    pub enable_bootstrap_token_auth: bool,
    /// Where generated certificates are kept.
    #[arg(
        long,
        env = "SHOAL_APISERVER_DATA_DIR",
        default_value = "/var/lib/shoal/apiserver"
    )]
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] crate::storage::Error),
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Encryption(#[from] crate::encryption::Error),
    #[error(transparent)]
    ServiceAccountKey(#[from] crate::serviceaccount::KeyError),
    #[error("cannot open the audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the token file {path}: {source}")]
    Tokens {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Shared by every request.
pub struct Api {
    pub store: Store,
    pub service_cidr: shoal_core::cidr::Ipv4Cidr,
    pub node_ports: (u16, u16),
    /// Bearer token → user name; `None` when authentication is off.
    pub tokens: Option<HashMap<String, User>>,
    /// Wakes the namespace finalizer when a namespace is deleted.
    pub namespaces_changed: Notify,
    /// How logs, exec and attach reach node agents.
    pub agents: crate::rest::AgentClient,
    /// Store watches shared by the API watches of each kind.
    pub watches: crate::watch_cache::WatchCache,
    /// What `/metrics` serves.
    pub metrics: crate::metrics::Metrics,
    /// Where the audit log goes (`--audit-log-path`), if anywhere.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// RBAC; `None` under `--authorization-mode=AlwaysAllow`.
    pub authorizer: Option<Arc<crate::rbac::Authorizer>>,
    /// Whether requests without a token are served as `system:anonymous`.
    pub anonymous: bool,
    /// Whether bootstrap tokens authenticate (`--enable-bootstrap-token-auth`).
    pub bootstrap_tokens: bool,
    /// Signs and checks ServiceAccount tokens (with authentication on).
    pub service_accounts: Option<Arc<crate::serviceaccount::Issuer>>,
    /// The cluster CA pods are given (`kube-root-ca.crt`), when known.
    pub root_ca: Option<String>,
}

/// A running apiserver.
pub struct Running {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the serving certificate, when generated.
    pub ca_pem: Option<String>,
    pub api: Arc<Api>,
    /// The token of this process's own clients (its controllers), known
    /// only to it, as kube-apiserver's loopback client.
    loopback_token: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Keeps this replica's address in Endpoints `default/kubernetes`.
    endpoints: Option<crate::endpoint_reconciler::Handle>,
}

impl Running {
    /// A client of this apiserver for its own control loops: it connects
    /// over loopback with a token that only this process knows. With a
    /// generated certificate the CA is checked; with `--tls-cert-file` the
    /// certificate may not name 127.0.0.1, so it is not.
    pub async fn loopback_client(&self) -> Result<kube::Client, kube::Error> {
        let host = match self.addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let server = format!("https://{host}:{}", self.addr.port());
        let trust = match &self.ca_pem {
            Some(pem) => format!(
                "certificate-authority-data: {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem)
            ),
            None => "insecure-skip-tls-verify: true".to_string(),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: loopback\n  cluster:\n    server: {server}\n    {trust}\nusers:\n- name: loopback\n  user:\n    token: {}\ncontexts:\n- name: loopback\n  context:\n    cluster: loopback\n    user: loopback\ncurrent-context: loopback\n",
            self.loopback_token
        );
        shoal_core::client::from_yaml(&text).await
    }

    pub async fn stop(self) {
        // Out of the `kubernetes` Service's endpoints while still serving.
        if let Some(endpoints) = self.endpoints {
            endpoints.stop().await;
        }
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Parses a token file as kube-apiserver's `--token-auth-file`.
/// Who a request comes from: the user a bearer token names, with its
/// groups (as a token file's fourth column gives them) and
/// `system:authenticated`. Handlers find it in the request's extensions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// A token file: `token,user,uid[,"group1,group2"]` per line (the
/// apiserver's `--token-auth-file` format).
pub fn parse_tokens(text: &str) -> HashMap<String, User> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let fields = csv_fields(line);
            let token = fields.first()?.trim().to_string();
            let name = fields.get(1)?.trim().to_string();
            let uid = fields
                .get(2)
                .map(|u| u.trim().to_string())
                .unwrap_or_default();
            let mut groups: Vec<String> = fields
                .get(3)
                .map(|g| {
                    g.split(',')
                        .map(str::trim)
                        .filter(|g| !g.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            groups.push("system:authenticated".into());
            (!token.is_empty()).then_some((token, User { name, uid, groups }))
        })
        .collect()
}

/// The fields of one CSV line, double quotes grouping commas.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => {
                if let Some(last) = fields.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    fields
}

/// The user a verified client certificate names, put on each request of
/// its connection.
#[derive(Debug, Clone)]
pub struct Certified(pub User);

/// The user of a client certificate: its subject's CN, in the groups its
/// O values name (and `system:authenticated`), as Kubernetes reads them.
pub fn certificate_user(der: &[u8]) -> Option<User> {
    let (name, mut groups) = tls::certificate_subject(der)?;
    groups.push("system:authenticated".into());
    Some(User {
        name,
        uid: String::new(),
        groups,
    })
}

/// Answers `error` once the request's body is read (and thrown away, up
/// to a bound), as the handlers do: a client still sending a large body
/// would otherwise see its connection reset instead of the 401 or 403.
async fn refuse(request: Request, error: ApiError) -> Response {
    use futures::StreamExt;
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut body = request.into_body().into_data_stream();
    let mut seen = 0usize;
    while let Some(Ok(chunk)) = body.next().await {
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            break;
        }
    }
    error.into_response()
}

/// The user of requests that carry no token (with `--anonymous-auth`).
fn anonymous() -> User {
    User {
        name: "system:anonymous".into(),
        uid: String::new(),
        groups: vec!["system:unauthenticated".into()],
    }
}

async fn authenticate(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let open = matches!(path, "/healthz" | "/livez" | "/readyz");
    if let (Some(tokens), false) = (&api.tokens, open) {
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let certified = request.extensions().get::<Certified>().map(|c| c.0.clone());
        let user = match token {
            // A client certificate is looked at first, as kube-apiserver's
            // x509 authenticator comes before its token ones.
            _ if certified.is_some() => certified,
            Some(token) => token_user(&api, tokens, token).await,
            None if api.anonymous => Some(anonymous()),
            None => None,
        };
        match user {
            Some(user) => {
                request.extensions_mut().insert(user.clone());
                // For the audit log, outside this layer.
                let mut response = next.run(request).await;
                response.extensions_mut().insert(user);
                return response;
            }
            None => return refuse(request, ApiError::unauthorized()).await,
        }
    }
    next.run(request).await
}

/// Who the apiserver is to node agents (`--kubelet-client-certificate`):
/// the given files, or a certificate signed now. The data dir's CA signs
/// it only when that CA made the serving certificate (`generated`), as
/// agents trust the CA their kubeconfig trusts.
fn kubelet_client_identity(
    config: &Config,
    generated: bool,
) -> Result<Option<(String, String, PathBuf)>, StartError> {
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| {
            StartError::Tls(tls::Error::Io {
                path: path.clone(),
                source,
            })
        })
    };
    if let (Some(cert), Some(key)) = (
        &config.kubelet_client_certificate,
        &config.kubelet_client_key,
    ) {
        return Ok(Some((read(cert)?, read(key)?, cert.clone())));
    }
    let files = tls::Files::in_dir(&config.data_dir);
    let (ca_cert, ca_key) = match &config.kubelet_client_signer {
        _ if generated && files.ca_key.exists() => (files.ca_cert, files.ca_key),
        Some((cert, key)) => (cert.clone(), key.clone()),
        None => return Ok(None),
    };
    let ca = tls::Ca::load(&ca_cert, &ca_key)?;
    let (cert, key) = tls::issue_cert(
        &ca,
        KUBELET_CLIENT_USER,
        &[crate::rbac::MASTERS],
        &[],
        &[],
        false,
        true,
    )?;
    Ok(Some((cert, key, ca_key)))
}

/// The user the apiserver's default client certificate names to agents.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The user a bearer token names: a static one (`--token-auth-file`), a
/// bootstrap token (when on), or a ServiceAccount token. Requests and
/// TokenReviews (agents checking their callers) ask the same.
pub async fn token_user(api: &Api, tokens: &HashMap<String, User>, token: &str) -> Option<User> {
    if let Some(user) = tokens.get(token) {
        return Some(user.clone());
    }
    if api.bootstrap_tokens {
        if let Some(user) = crate::bootstrap::authenticate(api, token).await {
            return Some(user);
        }
    }
    crate::serviceaccount::authenticate(api, token).await
}

/// Serves the request as the user named in `Impersonate-User` (and
/// `Impersonate-Group`), when the requester may `impersonate` them.
async fn impersonate(
    api: &Api,
    request: &mut Request,
    user: &User,
) -> Result<Option<User>, ApiError> {
    let headers = request.headers();
    let Some(target) = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        if headers.contains_key("impersonate-group") {
            return Err(ApiError::new(
                403,
                "Forbidden",
                "requested groups without impersonating a user",
            ));
        }
        return Ok(None);
    };
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let service_account = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    let mut asks = vec![match service_account {
        Some((ns, name)) => ("serviceaccounts", ns.to_string(), name.to_string()),
        None => ("users", String::new(), target.clone()),
    }];
    asks.extend(groups.iter().map(|g| ("groups", String::new(), g.clone())));
    if let Some(authorizer) = &api.authorizer {
        for (resource, namespace, name) in asks {
            let attributes = crate::rbac::Attributes {
                verb: "impersonate".into(),
                path: request.uri().path().to_string(),
                resource: Some(crate::rbac::ResourceAttributes {
                    group: String::new(),
                    resource: resource.into(),
                    subresource: String::new(),
                    namespace,
                    name,
                }),
            };
            let decision = authorizer.authorize(&api.store, user, &attributes).await;
            if !decision.allowed {
                return Err(attributes.forbidden(&user.name, &decision.reason));
            }
        }
    }
    // As Kubernetes: an impersonated account's own groups only when none
    // are asked for; everyone is authenticated but the anonymous user.
    let mut as_groups = groups;
    if let (Some((ns, _)), true) = (service_account, as_groups.is_empty()) {
        as_groups.push("system:serviceaccounts".into());
        as_groups.push(format!("system:serviceaccounts:{ns}"));
    }
    let (everyone, anonymous) = ("system:authenticated", "system:unauthenticated");
    let group = if target == "system:anonymous" {
        anonymous
    } else {
        everyone
    };
    if !as_groups.iter().any(|g| g == group) {
        as_groups.push(group.into());
    }
    Ok(Some(User {
        name: target,
        uid: String::new(),
        groups: as_groups,
    }))
}

/// Refuses with 403 what the user may not do (RBAC), after impersonation.
async fn authorize(State(api): State<Arc<Api>>, mut request: Request, next: Next) -> Response {
    let Some(mut user) = request.extensions().get::<User>().cloned() else {
        // No authentication, no authorization.
        return next.run(request).await;
    };
    match impersonate(&api, &mut request, &user).await {
        Ok(Some(as_user)) => {
            request.extensions_mut().insert(as_user.clone());
            user = as_user;
        }
        Ok(None) => {}
        Err(e) => return refuse(request, e).await,
    }
    if let Some(authorizer) = &api.authorizer {
        let attributes = crate::rbac::Attributes::of(
            request.method(),
            request.uri().path(),
            request.uri().query().unwrap_or_default(),
        );
        let decision = authorizer.authorize(&api.store, &user, &attributes).await;
        if !decision.allowed {
            tracing::debug!(user = %user.name, verb = %attributes.verb, path = %attributes.path, "forbidden");
            let refused = attributes.forbidden(&user.name, &decision.reason);
            return refuse(request, refused).await;
        }
    }
    next.run(request).await
}

async fn healthy() -> &'static str {
    "ok"
}

async fn ready(State(api): State<Arc<Api>>) -> Response {
    match tokio::time::timeout(Duration::from_secs(3), api.store.revision()).await {
        Ok(Ok(_)) => "ok".into_response(),
        Ok(Err(e)) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]etcd failed: {e}\nreadyz check failed"),
        )
            .into_response(),
        Err(_) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "[-]etcd failed: timed out\nreadyz check failed",
        )
            .into_response(),
    }
}

pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(healthy))
        .route("/livez", get(healthy))
        .route("/readyz", get(ready))
        .route("/version", get(discovery::version))
        .route("/api", get(discovery::api))
        .route("/api/", get(discovery::api))
        .route("/apis", get(discovery::apis))
        .route("/apis/", get(discovery::apis))
        .route("/api/{version}", get(discovery::core_version))
        .route("/apis/{group}", get(discovery::group))
        .route("/apis/{group}/{version}", get(discovery::group_version))
        .route("/openapi/v2", get(openapi::v2))
        .route("/openapi/v3", get(openapi::root))
        .route("/openapi/v3/api/{version}", get(openapi::core))
        .route("/openapi/v3/apis/{group}/{version}", get(openapi::group))
        .route("/metrics", get(crate::metrics::serve))
        .fallback(rest::dispatch)
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .layer(middleware::from_fn_with_state(api.clone(), authenticate))
        .layer(middleware::from_fn(catch_panic))
        .layer(middleware::from_fn_with_state(
            api.clone(),
            crate::audit::log,
        ))
        .layer(middleware::from_fn_with_state(
            api.clone(),
            crate::metrics::record,
        ))
        .with_state(api)
}

/// A handler that panics answers 500 with a `Status` (and a log line)
/// instead of dropping the connection; the server goes on.
async fn catch_panic(request: Request, next: Next) -> Response {
    use futures::FutureExt;
    let what = format!("{} {}", request.method(), request.uri().path());
    match std::panic::AssertUnwindSafe(next.run(request))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            tracing::error!(request = %what, panic = %message, "request handler panicked");
            ApiError::internal(format!("Internal error occurred: {message}")).into_response()
        }
    }
}

pub async fn start(config: Config) -> Result<Running, StartError> {
    start_advertising(config, None).await
}

/// As [`start`], with the address this replica gives the cluster in
/// Endpoints `default/kubernetes` (default: see
/// [`crate::endpoint_reconciler::advertise_address`]).
pub async fn start_advertising(
    config: Config,
    advertise_address: Option<std::net::IpAddr>,
) -> Result<Running, StartError> {
    let service_cidr =
        parse_service_cidr(&config.service_cluster_ip_range).map_err(StartError::Config)?;
    let node_ports =
        parse_port_range(&config.service_node_port_range).map_err(StartError::Config)?;
    let encryption = match &config.encryption_provider_config {
        Some(path) => Some(Arc::new(crate::encryption::Encryption::load(path)?)),
        None => None,
    };
    let store_tls = match &config.etcd_cafile {
        Some(ca) => Some(
            shoal_store::tls::TlsFiles {
                cert_file: config.etcd_certfile.clone(),
                key_file: config.etcd_keyfile.clone(),
                trusted_ca_file: Some(ca.clone()),
                client_cert_auth: false,
            }
            .client_config()
            .map_err(|e| StartError::Config(format!("store TLS: {e}")))?,
        ),
        None => None,
    };
    let store = Store::new(&config.etcd_servers, store_tls)?.with_encryption(encryption);
    let audit = match &config.audit_log_path {
        Some(path) => {
            let policy = match &config.audit_policy_file {
                Some(file) => {
                    Some(crate::audit_policy::Policy::load(file).map_err(StartError::Config)?)
                }
                None => None,
            };
            Some(Arc::new(
                crate::audit::Audit::open(path)
                    .map_err(|source| StartError::Audit {
                        path: path.clone(),
                        source,
                    })?
                    .with_policy(policy),
            ))
        }
        None => None,
    };
    let tokens = match &config.token_auth_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| StartError::Tokens {
                path: path.clone(),
                source,
            })?;
            Some(parse_tokens(&text))
        }
        None => {
            tracing::warn!("no --token-auth-file: every request is allowed without authentication");
            None
        }
    };
    let loopback_token = {
        use rand::Rng;
        let bytes: [u8; 24] = rand::thread_rng().gen();
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let tokens = tokens.map(|mut tokens| {
        tokens.insert(
            loopback_token.clone(),
            User {
                name: "system:apiserver".into(),
                uid: String::new(),
                groups: vec!["system:masters".into(), "system:authenticated".into()],
            },
        );
        tokens
    });
    let (cert, key, ca_pem) = match (&config.tls_cert_file, &config.tls_private_key_file) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone(), None),
        _ => {
            let files = tls::Files::in_dir(&config.data_dir);
            let mut extra = config.tls_san.clone();
            extra.push(config.bind_address.clone());
            tls::ensure_generated(&files, &tls::default_names(&extra))?;
            let ca = std::fs::read_to_string(&files.ca_cert).map_err(|source| tls::Error::Io {
                path: files.ca_cert.clone(),
                source,
            })?;
            (files.cert, files.key, Some(ca))
        }
    };
    let client_ca = config.client_ca_file.clone().or_else(|| {
        ca_pem
            .as_ref()
            .map(|_| tls::Files::in_dir(&config.data_dir).ca_cert)
    });
    let tls_config = match (&client_ca, &config.token_auth_file) {
        (Some(ca), Some(_)) => {
            tls::server_config_with_client_ca(&cert, &key, tls::ALPN_H2_HTTP1, ca)?
        }
        _ => tls::server_config(&cert, &key, tls::ALPN_H2_HTTP1)?,
    };
    // What pods trust: the generated CA, or a ca.crt beside the given
    // certificate.
    let root_ca = ca_pem.clone().or_else(|| {
        let beside = cert.parent()?.join("ca.crt");
        std::fs::read_to_string(beside).ok()
    });
    let service_accounts = match &tokens {
        Some(_) => {
            let path = config
                .service_account_signing_key_file
                .clone()
                .unwrap_or_else(|| config.data_dir.join("sa.key"));
            Some(Arc::new(crate::serviceaccount::Issuer::load_or_generate(
                &path,
                &config.service_account_issuer,
                &config.api_audiences,
            )?))
        }
        None => None,
    };
    let agent_ca = config
        .kubelet_certificate_authority
        .clone()
        .unwrap_or_else(|| tls::Files::in_dir(&config.data_dir).ca_cert);
    let agents = crate::rest::AgentClient {
        tls: match kubelet_client_identity(&config, ca_pem.is_some())? {
            Some((cert, key, origin)) => {
                tls::client_config_with_identity(&agent_ca, &cert, &key, &origin)?
            }
            None => {
                tracing::warn!("no client certificate for node agents (no --kubelet-client-certificate and no CA key in the data dir): agents that authenticate their callers refuse logs and exec");
                tls::client_config(&agent_ca)?
            }
        },
        token: match &config.kubelet_token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| StartError::Tokens {
                        path: path.clone(),
                        source,
                    })?
                    .trim()
                    .to_string(),
            ),
            None => None,
        },
    };
    let authorizer = (config.authorization_mode != "AlwaysAllow").then(|| {
        Arc::new(crate::rbac::Authorizer::new(
            config.authorization_mode.starts_with("Node"),
        ))
    });
    if authorizer.is_none() {
        tracing::warn!("--authorization-mode=AlwaysAllow: every authenticated request is allowed");
    }
    let anonymous = config.anonymous_auth && authorizer.is_some();
    let addr = format!("{}:{}", config.bind_address, config.secure_port);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let api = Arc::new(Api {
        store,
        service_cidr,
        node_ports,
        tokens,
        namespaces_changed: Notify::new(),
        agents,
        watches: Default::default(),
        metrics: Default::default(),
        audit,
        authorizer,
        anonymous,
        bootstrap_tokens: config.enable_bootstrap_token_auth,
        service_accounts,
        root_ca,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(accept_loop(
            listener,
            tls_config,
            router(api.clone()),
            shutdown_rx,
        )),
        tokio::spawn(namespaces::run(api.clone())),
        tokio::spawn(crate::rbac::run(api.clone())),
        tokio::spawn(compaction::run(
            api.clone(),
            config.etcd_compaction_interval,
        )),
    ];
    tracing::info!(%local, "apiserver listening");
    let mut running = Running {
        addr: local,
        ca_pem,
        api,
        loopback_token,
        shutdown,
        tasks,
        endpoints: None,
    };
    let me = crate::endpoint_reconciler::Master {
        ip: crate::endpoint_reconciler::advertise_address(advertise_address, &config.bind_address),
        port: local.port(),
    };
    match running.loopback_client().await {
        Ok(client) => {
            running.endpoints = Some(crate::endpoint_reconciler::start(
                running.api.clone(),
                client,
                &config.etcd_servers,
                me,
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "no loopback client: the kubernetes Service gets no endpoints from this apiserver")
        }
    }
    Ok(running)
}

/// `/version/`, `/api/v1/pods/`: a path is matched without its trailing
/// slashes, as kube-apiserver's router (go-restful) matches it.
fn trim_trailing_slash<B>(mut request: http::Request<B>) -> http::Request<B> {
    let path = request.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = match path.trim_end_matches('/') {
            "" => "/",
            trimmed => trimmed,
        };
        let path_and_query = match request.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_string(),
        };
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = path_and_query.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    request
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // A client certificate the CA signed names the connection's user.
            let certified = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| certificate_user(leaf.as_ref()));
            let service =
                TowerToHyperService::new(router.map_request(trim_trailing_slash).map_request(
                    move |mut request: http::Request<hyper::body::Incoming>| {
                        request.extensions_mut().insert(crate::audit::Peer(peer));
                        if let Some(user) = &certified {
                            request.extensions_mut().insert(Certified(user.clone()));
                        }
                        request
                    },
                ));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        let app = Router::new()
            .route("/boom", get(|| async { boom() }))
            .layer(middleware::from_fn(catch_panic));
        let request = Request::get("/boom")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status["reason"], "InternalError");
        assert!(status["message"].as_str().unwrap().contains("boom"));
    }

    #[test]
    fn trailing_slashes_are_dropped_from_paths_only() {
        let path = |uri: &str| {
            let request = http::Request::get(uri).body(()).unwrap();
            trim_trailing_slash(request).uri().to_string()
        };
        assert_eq!(path("/version/"), "/version");
        assert_eq!(path("/api/v1/pods//?watch=1"), "/api/v1/pods?watch=1");
        assert_eq!(path("/"), "/");
        assert_eq!(path("//"), "/");
        assert_eq!(path("/api/v1?x=a/"), "/api/v1?x=a/");
    }

    #[test]
    fn token_files_like_kube_apiserver() {
        let tokens = parse_tokens(
            "# comment\nabc,admin,1,\"system:masters\"\n\nxyz,bob,2\nn1,system:node:n1,3,\"system:nodes,extra\"\n",
        );
        let admin = &tokens["abc"];
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        assert_eq!(tokens["xyz"].name, "bob");
        assert_eq!(tokens["xyz"].groups, ["system:authenticated"]);
        assert_eq!(tokens["n1"].uid, "3");
        assert_eq!(
            tokens["n1"].groups,
            ["system:nodes", "extra", "system:authenticated"]
        );
        assert_eq!(tokens.len(), 3);
    }
}
