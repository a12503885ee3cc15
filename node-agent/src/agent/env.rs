//! A container's environment, computed as kubelet's
//! `makeEnvironmentVariables` does, and the API objects it (and the pod's
//! volumes) read.
//!
//! ```text
//!  gather(client, services, pod) ──► Refs { config maps, secrets, services, claims, volumes }
//!                                     │   (what is missing is simply absent)
//!  container_env(ctx, container) ◄────┘
//!    1. service links   FOO_SERVICE_HOST, FOO_PORT_80_TCP_ADDR, ...
//!    2. envFrom          config maps and secrets, with their prefix
//!    3. env, in order    value ($(VAR) expanded against 1-2 and earlier env),
//!                        fieldRef, resourceFieldRef, configMapKeyRef, secretKeyRef
//! ```
//!
//! A later variable replaces an earlier one of the same name (env wins
//! over envFrom, both win over service links). Kubelet builds a map and so
//! hands the runtime an unordered list; here the order is the one above,
//! which is deterministic and keeps `env` in declaration order.
//!
//! Errors carry kubelet's words (`configmap "x" not found`, `couldn't find
//! key k in ConfigMap default/x`): they become the message of the
//! container's `CreateContainerConfigError`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, EnvFromSource, EnvVar, ObjectFieldSelector, PersistentVolume,
    PersistentVolumeClaim, Pod, ResourceFieldSelector, Secret, Service,
};
use kube::api::Api;
use kube::runtime::reflector::Store;

use crate::runtime::process::expand;
use shoal_core::quantity::{ceil_div, parse as parse_quantity, Amount};

/// The namespace whose `kubernetes` Service every pod gets links to.
const MASTER_NAMESPACE: &str = "default";
/// kubelet's `masterServices`.
const MASTER_SERVICE: &str = "kubernetes";
/// How long `gather` waits for the agent's Service cache to be filled
/// (only ever at the agent's start).
const SERVICES_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why a container's environment cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap \"{0}\" not found")]
    ConfigMapNotFound(String),
    #[error("secret \"{0}\" not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported pod version: {0}")]
    UnsupportedVersion(String),
    #[error("field label does not support subscript: {0}")]
    FieldLabelSubscript(String),
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedResource(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}")]
    InvalidQuantity(String),
}

pub type Result<T, E = EnvError> = std::result::Result<T, E>;

/// The API objects a pod refers to, fetched once per sync. A name that is
/// not here did not exist when [`gather`] ran.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
    /// The pod's namespace's Services (unless `enableServiceLinks: false`)
    /// and `default/kubernetes`.
    pub services: Vec<Service>,
    /// By claim name, in the pod's namespace.
    pub claims: BTreeMap<String, PersistentVolumeClaim>,
    /// The volumes those claims are bound to, by name.
    pub volumes: BTreeMap<String, PersistentVolume>,
    /// Tokens of the pod's ServiceAccount, bound to the pod, by (audience,
    /// "" for the apiserver's; expirationSeconds) as projected volumes ask.
    pub tokens: BTreeMap<(String, i64), String>,
}

/// The names a pod refers to, in its own namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Referenced {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    pub claims: BTreeSet<String>,
    /// Projected ServiceAccount tokens: (audience, expirationSeconds).
    pub tokens: BTreeSet<(String, i64)>,
}

/// Every ConfigMap, Secret and claim the pod names: env and envFrom of all
/// its containers (init and ephemeral too), its volumes (configMap,
/// secret, projected sources, persistentVolumeClaim, generic ephemeral
/// volumes whose claim is `<pod>-<volume>`) and its image pull secrets.
pub fn referenced(pod: &Pod) -> Referenced {
    let mut out = Referenced::default();
    let Some(spec) = &pod.spec else {
        return out;
    };
    let mut from_env = |env: Option<&Vec<EnvVar>>, env_from: Option<&Vec<EnvFromSource>>| {
        for var in env.into_iter().flatten() {
            let Some(from) = &var.value_from else {
                continue;
            };
            if let Some(r) = &from.config_map_key_ref {
                out.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &from.secret_key_ref {
                out.secrets.insert(r.name.clone());
            }
        }
        for source in env_from.into_iter().flatten() {
            if let Some(r) = &source.config_map_ref {
                out.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &source.secret_ref {
                out.secrets.insert(r.name.clone());
            }
        }
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        from_env(c.env.as_ref(), c.env_from.as_ref());
    }
    for c in spec.ephemeral_containers.iter().flatten() {
        from_env(c.env.as_ref(), c.env_from.as_ref());
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    for volume in spec.volumes.iter().flatten() {
        if let Some(cm) = &volume.config_map {
            out.config_maps.insert(cm.name.clone());
        }
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            out.secrets.insert(name);
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                out.config_maps.insert(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                out.secrets.insert(s.name.clone());
            }
            if let Some(t) = &source.service_account_token {
                out.tokens.insert(token_key(t));
            }
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            out.claims.insert(claim.claim_name.clone());
        }
        if volume.ephemeral.is_some() {
            out.claims.insert(format!("{pod_name}-{}", volume.name));
        }
    }
    for secret in spec.image_pull_secrets.iter().flatten() {
        if !secret.name.is_empty() {
            out.secrets.insert(secret.name.clone());
        }
    }
    out
}

/// How a projected token is asked for: its audience ("" for the
/// apiserver's) and lifetime (Kubernetes' default: an hour).
pub fn token_key(
    source: &k8s_openapi::api::core::v1::ServiceAccountTokenProjection,
) -> (String, i64) {
    (
        source.audience.clone().unwrap_or_default(),
        source.expiration_seconds.unwrap_or(3600),
    )
}

/// Fetches what the pod refers to; the Services come from the agent's
/// cache (`services`). A missing object is left out (the caller decides,
/// per use and `optional`, whether that is an error); only a failing
/// request, or a cache still empty after a few seconds, is an error.
pub async fn gather(
    client: &kube::Client,
    services: &Store<Service>,
    pod: &Pod,
) -> Result<Refs, kube::Error> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let wanted = referenced(pod);
    let mut refs = Refs::default();

    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let found =
        futures::future::try_join_all(wanted.config_maps.iter().map(|n| config_maps.get_opt(n)))
            .await?;
    for (name, cm) in wanted.config_maps.iter().zip(found) {
        if let Some(cm) = cm {
            refs.config_maps.insert(name.clone(), cm);
        }
    }

    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found =
        futures::future::try_join_all(wanted.secrets.iter().map(|n| secrets.get_opt(n))).await?;
    for (name, secret) in wanted.secrets.iter().zip(found) {
        if let Some(secret) = secret {
            refs.secrets.insert(name.clone(), secret);
        }
    }

    let links = pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    // The Services come from the agent's cache; until its first list is
    // in, nothing can be said about them.
    if tokio::time::timeout(SERVICES_WAIT, shoal_core::cache::ready(services))
        .await
        .is_err()
    {
        return Err(kube::Error::Service(
            "the agent's Service cache has not been filled yet".into(),
        ));
    }
    refs.services = services
        .state()
        .into_iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref();
            (links && ns == Some(namespace))
                || (ns == Some(MASTER_NAMESPACE)
                    && s.metadata.name.as_deref() == Some(MASTER_SERVICE))
        })
        .map(|s| (*s).clone())
        .collect();

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    for name in &wanted.claims {
        let Some(claim) = claims.get_opt(name).await? else {
            continue;
        };
        let bound_to = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty());
        if let Some(volume_name) = bound_to {
            if let Some(volume) = volumes.get_opt(&volume_name).await? {
                refs.volumes.insert(volume_name, volume);
            }
        }
        refs.claims.insert(name.clone(), claim);
    }

    if !wanted.tokens.is_empty() {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), namespace);
        for (audience, expiration) in &wanted.tokens {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    },
                    expiration_seconds: Some(*expiration),
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let answer = accounts
                .create_token_request(&account, &Default::default(), &request)
                .await?;
            if let Some(status) = answer.status {
                refs.tokens
                    .insert((audience.clone(), *expiration), status.token);
            }
        }
    }
    Ok(refs)
}

/// What the environment (and the downward API volumes) are computed from.
#[derive(Debug, Clone, Copy)]
pub struct EnvContext<'a> {
    pub pod: &'a Pod,
    pub refs: &'a Refs,
    /// Used for `spec.nodeName` when the pod does not say (it always does
    /// once bound).
    pub node_name: &'a str,
    /// `status.hostIP` (and `status.hostIPs`: one family here).
    pub host_ip: &'a str,
    /// `status.podIP` (and `status.podIPs`); the host's for a host-network
    /// pod. Empty when not known.
    pub pod_ip: &'a str,
    /// The node's allocatable resources: what `limits.cpu` and
    /// `limits.memory` read when the container sets no limit.
    /// (`limits.ephemeral-storage` without a limit reads 0.)
    pub node_allocatable_cpu_millis: u64,
    pub node_allocatable_memory_bytes: u64,
}

impl EnvContext<'_> {
    fn namespace(&self) -> &str {
        self.pod.metadata.namespace.as_deref().unwrap_or("default")
    }
}

/// Variables in order; setting a name again replaces it and moves it last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList(Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, name: String, value: String) {
        self.0.retain(|(n, _)| *n != name);
        self.0.push((name, value));
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }
}

impl IntoIterator for EnvList {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The container's environment, service links first, then envFrom, then
/// env (kubelet's `makeEnvironmentVariables`).
pub fn container_env(ctx: &EnvContext<'_>, container: &Container) -> Result<Vec<(String, String)>> {
    env_for(
        ctx,
        container.env.as_deref(),
        container.env_from.as_deref(),
        container,
    )
}

fn env_for(
    ctx: &EnvContext<'_>,
    env: Option<&[EnvVar]>,
    env_from: Option<&[EnvFromSource]>,
    container: &Container,
) -> Result<Vec<(String, String)>> {
    let namespace = ctx.namespace();
    let links = ctx
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.enable_service_links)
        .unwrap_or(true);
    let service_env = service_env(&ctx.refs.services, namespace, links);

    let mut vars = EnvList::default();
    for source in env_from.into_iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or_default();
        if let Some(r) = &source.config_map_ref {
            let Some(cm) = ctx.refs.config_maps.get(&r.name) else {
                if r.optional == Some(true) {
                    continue;
                }
                return Err(EnvError::ConfigMapNotFound(r.name.clone()));
            };
            for (key, value) in cm.data.iter().flatten() {
                let name = format!("{prefix}{key}");
                if is_env_var_name(&name) {
                    vars.set(name, value.clone());
                }
            }
        } else if let Some(r) = &source.secret_ref {
            let Some(secret) = ctx.refs.secrets.get(&r.name) else {
                if r.optional == Some(true) {
                    continue;
                }
                return Err(EnvError::SecretNotFound(r.name.clone()));
            };
            for (key, value) in secret_data(secret) {
                let name = format!("{prefix}{key}");
                if is_env_var_name(&name) {
                    vars.set(name, String::from_utf8_lossy(&value).into_owned());
                }
            }
        }
    }

    for var in env.into_iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (Some(value), _) if !value.is_empty() => expand(value, |name| {
                vars.get(name)
                    .map(str::to_owned)
                    .or_else(|| service_env.get(name).map(str::to_owned))
            }),
            (_, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(ctx, field)?
                } else if let Some(resource) = &from.resource_field_ref {
                    let target = match resource.container_name.as_deref() {
                        None | Some("") => container,
                        Some(name) => find_container(ctx.pod, name)?,
                    };
                    resource_value(ctx, resource, target)?
                } else if let Some(r) = &from.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    let Some(cm) = ctx.refs.config_maps.get(&r.name) else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::ConfigMapNotFound(r.name.clone()));
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::ConfigMapKeyNotFound {
                                key: r.key.clone(),
                                namespace: namespace.to_owned(),
                                name: r.name.clone(),
                            })
                        }
                    }
                } else if let Some(r) = &from.secret_key_ref {
                    let optional = r.optional == Some(true);
                    let Some(secret) = ctx.refs.secrets.get(&r.name) else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::SecretNotFound(r.name.clone()));
                    };
                    match secret_data(secret).remove(&r.key) {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if optional => continue,
                        None => {
                            return Err(EnvError::SecretKeyNotFound {
                                key: r.key.clone(),
                                namespace: namespace.to_owned(),
                                name: r.name.clone(),
                            })
                        }
                    }
                } else {
                    String::new()
                }
            }
            _ => String::new(),
        };
        vars.set(var.name.clone(), value);
    }

    let mut out: Vec<(String, String)> = service_env
        .into_iter()
        .filter(|(name, _)| !vars.contains(name))
        .collect();
    out.extend(vars.0);
    Ok(out)
}

/// Whether an envFrom key can be a variable name. Kubernetes 1.32 relaxes
/// the C-identifier rule (`RelaxedEnvironmentVariableValidation`, on by
/// default): any printable ASCII but `=`. Other keys are skipped.
pub fn is_env_var_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'=')
}

/// A Secret's data with its stringData folded in (the API server does
/// this on write; a Secret built by hand may still carry stringData).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// Docker-links style variables for the services a pod sees
/// (kubelet's `getServiceEnvVarMap` + `envvars.FromServices`): those of its
/// namespace when `links`, and always `default/kubernetes`, a service of
/// the pod's namespace winning over the master service of the same name.
/// Services without a cluster IP (headless, ExternalName) give none.
/// Services are taken in name order.
pub fn service_env(services: &[Service], namespace: &str, links: bool) -> EnvList {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in services {
        if !has_cluster_ip(service) {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        if ns == MASTER_NAMESPACE && name == MASTER_SERVICE {
            chosen.entry(name).or_insert(service);
        } else if ns == namespace && links {
            chosen.insert(name, service);
        }
    }
    let mut out = EnvList::default();
    for (name, service) in chosen {
        for (k, v) in service_vars(name, service) {
            out.set(k, v);
        }
    }
    out
}

fn has_cluster_ip(service: &Service) -> bool {
    let ip = service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .unwrap_or_default();
    !ip.is_empty() && ip != "None"
}

fn env_name(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// `envvars.FromServices` for one service.
fn service_vars(name: &str, service: &Service) -> Vec<(String, String)> {
    let Some(spec) = &service.spec else {
        return Vec::new();
    };
    let ip = spec.cluster_ip.clone().unwrap_or_default();
    let ports = spec.ports.as_deref().unwrap_or_default();
    let prefix = env_name(name);
    let mut out = vec![(format!("{prefix}_SERVICE_HOST"), ip.clone())];
    if let Some(first) = ports.first() {
        let service_port = format!("{prefix}_SERVICE_PORT");
        out.push((service_port.clone(), first.port.to_string()));
        for port in ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{service_port}_{}", env_name(port_name)),
                    port.port.to_string(),
                ));
            }
        }
    }
    // Docker-compatible link variables.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    for (i, port) in ports.iter().enumerate() {
        let protocol = port
            .protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or("TCP");
        let lower = protocol.to_lowercase();
        let url = format!("{lower}://{host}:{}", port.port);
        if i == 0 {
            out.push((format!("{prefix}_PORT"), url.clone()));
        }
        let port_prefix = format!("{prefix}_PORT_{}_{}", port.port, protocol.to_uppercase());
        out.push((port_prefix.clone(), url));
        out.push((format!("{port_prefix}_PROTO"), lower));
        out.push((format!("{port_prefix}_PORT"), port.port.to_string()));
        out.push((format!("{port_prefix}_ADDR"), ip.clone()));
    }
    out
}

/// `metadata.labels['x']` → (`metadata.labels`, `x`).
fn split_subscript(path: &str) -> Option<(&str, &str)> {
    let inner = path.strip_suffix("']")?;
    let (base, key) = inner.split_once("['")?;
    (!base.is_empty()).then_some((base, key))
}

/// kubelet's `podFieldSelectorRuntimeValue`: a fieldRef of an env var.
fn field_value(ctx: &EnvContext<'_>, field: &ObjectFieldSelector) -> Result<String> {
    let path = convert_field_label(field)?;
    let spec = ctx.pod.spec.as_ref();
    Ok(match path.as_str() {
        "spec.nodeName" => spec
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| ctx.node_name.to_owned()),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" | "status.hostIPs" => ctx.host_ip.to_owned(),
        "status.podIP" | "status.podIPs" => ctx.pod_ip.to_owned(),
        other => metadata_field(ctx.pod, other)?,
    })
}

/// `ConvertDownwardAPIFieldLabel`: the paths a pod's fieldRef may name.
fn convert_field_label(field: &ObjectFieldSelector) -> Result<String> {
    let version = field.api_version.as_deref().unwrap_or("v1");
    if version != "v1" {
        return Err(EnvError::UnsupportedVersion(version.to_owned()));
    }
    let label = field.field_path.as_str();
    if let Some((base, _)) = split_subscript(label) {
        return match base {
            "metadata.annotations" | "metadata.labels" => Ok(label.to_owned()),
            _ => Err(EnvError::FieldLabelSubscript(label.to_owned())),
        };
    }
    match label {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(label.to_owned()),
        "spec.host" => Ok("spec.nodeName".to_owned()),
        _ => Err(EnvError::FieldLabelNotSupported(label.to_owned())),
    }
}

/// `fieldpath.ExtractFieldPathAsString`: the metadata fields, which are
/// also all a downwardAPI volume may name.
pub fn metadata_field(pod: &Pod, path: &str) -> Result<String> {
    let meta = &pod.metadata;
    if let Some((base, key)) = split_subscript(path) {
        let map = match base {
            "metadata.annotations" => meta.annotations.as_ref(),
            "metadata.labels" => meta.labels.as_ref(),
            _ => return Err(EnvError::FieldLabelSubscript(path.to_owned())),
        };
        return Ok(map.and_then(|m| m.get(key)).cloned().unwrap_or_default());
    }
    Ok(match path {
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        _ => return Err(EnvError::UnsupportedFieldPath(path.to_owned())),
    })
}

/// `fieldpath.FormatMap`: `key="value"` lines in key order, Go-quoted.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Go's `%q` for a string (strconv.Quote).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The pod's container (or init container) of that name.
pub fn find_container<'p>(pod: &'p Pod, name: &str) -> Result<&'p Container> {
    shoal_core::pod::find_container(pod, name)
        .ok_or_else(|| EnvError::ContainerNotFound(name.to_owned()))
}

/// kubelet's `ExtractContainerResourceValue` on a container whose missing
/// limits were filled with the node's allocatable. Values are rounded up
/// to a whole number of divisors.
pub fn resource_value(
    ctx: &EnvContext<'_>,
    selector: &ResourceFieldSelector,
    container: &Container,
) -> Result<String> {
    let divisor = match &selector.divisor {
        Some(q) if !q.0.is_empty() => {
            parse_quantity(&q.0).ok_or_else(|| EnvError::InvalidQuantity(q.0.clone()))?
        }
        _ => Amount::ONE,
    };
    let divisor = if divisor.is_zero() {
        Amount::ONE
    } else {
        divisor
    };
    let (kind, resource) = selector
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::UnsupportedResource(selector.resource.clone()))?;
    let allocatable = match resource {
        "cpu" => Amount::from_milli(ctx.node_allocatable_cpu_millis),
        "memory" => Amount::from_units(ctx.node_allocatable_memory_bytes),
        "ephemeral-storage" => Amount::ZERO,
        _ => return Err(EnvError::UnsupportedResource(selector.resource.clone())),
    };
    let resources = container.resources.as_ref();
    let limit = resources
        .and_then(|r| r.limits.as_ref())
        .and_then(|m| m.get(resource));
    let request = resources
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(resource));
    let parse = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        parse_quantity(&q.0).ok_or_else(|| EnvError::InvalidQuantity(q.0.clone()))
    };
    let amount = match kind {
        "limits" => match limit {
            Some(q) => parse(q)?,
            None => allocatable,
        },
        // The API server defaults a missing request to the limit.
        "requests" => match request.or(limit) {
            Some(q) => parse(q)?,
            None => Amount::ZERO,
        },
        _ => return Err(EnvError::UnsupportedResource(selector.resource.clone())),
    };
    let value = if resource == "cpu" {
        ceil_div(amount.milli_value(), divisor.milli_value())
    } else {
        ceil_div(amount.value(), divisor.value())
    };
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvVarSource, PodSpec, ResourceRequirements,
        SecretKeySelector, ServicePort, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn service(
        ns: &str,
        name: &str,
        ip: &str,
        ports: &[(Option<&str>, i32, Option<&str>)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(Into::into),
                            port: *p,
                            protocol: proto.map(Into::into),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                annotations: Some(
                    [
                        ("a".to_string(), "x\"y".to_string()),
                        ("b".to_string(), "two\nlines".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                node_name: Some("node-1".into()),
                service_account_name: Some("default".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        from(
            name,
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: path.into(),
                    api_version: Some("v1".into()),
                }),
                ..Default::default()
            },
        )
    }

    fn ctx<'a>(pod: &'a Pod, refs: &'a Refs, host: &'a str, ip: &'a str) -> EnvContext<'a> {
        EnvContext {
            pod,
            refs,
            node_name: "node-1",
            host_ip: host,
            pod_ip: ip,
            node_allocatable_cpu_millis: 4000,
            node_allocatable_memory_bytes: 8 << 30,
        }
    }

    fn get<'v>(env: &'v [(String, String)], name: &str) -> Option<&'v str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn service_link_names_are_kubelets() {
        let svc = service(
            "shop",
            "backend-service",
            "10.96.0.42",
            &[(Some("http"), 80, None), (Some("dns-udp"), 53, Some("UDP"))],
        );
        let env: Vec<_> = service_env(&[svc], "shop", true).into_iter().collect();
        let expected = [
            ("BACKEND_SERVICE_SERVICE_HOST", "10.96.0.42"),
            ("BACKEND_SERVICE_SERVICE_PORT", "80"),
            ("BACKEND_SERVICE_SERVICE_PORT_HTTP", "80"),
            ("BACKEND_SERVICE_SERVICE_PORT_DNS_UDP", "53"),
            ("BACKEND_SERVICE_PORT", "tcp://10.96.0.42:80"),
            ("BACKEND_SERVICE_PORT_80_TCP", "tcp://10.96.0.42:80"),
            ("BACKEND_SERVICE_PORT_80_TCP_PROTO", "tcp"),
            ("BACKEND_SERVICE_PORT_80_TCP_PORT", "80"),
            ("BACKEND_SERVICE_PORT_80_TCP_ADDR", "10.96.0.42"),
            ("BACKEND_SERVICE_PORT_53_UDP", "udp://10.96.0.42:53"),
            ("BACKEND_SERVICE_PORT_53_UDP_PROTO", "udp"),
            ("BACKEND_SERVICE_PORT_53_UDP_PORT", "53"),
            ("BACKEND_SERVICE_PORT_53_UDP_ADDR", "10.96.0.42"),
        ];
        let expected: Vec<(String, String)> = expected
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(env, expected);
    }

    #[test]
    fn ipv6_service_link_brackets_the_address() {
        let svc = service("shop", "v6", "fd00::10", &[(None, 443, None)]);
        let env = service_env(&[svc], "shop", true);
        assert_eq!(env.get("V6_PORT"), Some("tcp://[fd00::10]:443"));
        assert_eq!(env.get("V6_PORT_443_TCP_ADDR"), Some("fd00::10"));
    }

    #[test]
    fn which_services_a_pod_sees() {
        let services = [
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443, None)],
            ),
            service("default", "other", "10.96.0.2", &[(None, 80, None)]),
            service("shop", "web", "10.96.0.3", &[(None, 80, None)]),
            service("shop", "headless", "None", &[(None, 80, None)]),
            service("shop", "external", "", &[]),
        ];
        let env = service_env(&services, "shop", true);
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(env.get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(env.get("WEB_SERVICE_HOST"), Some("10.96.0.3"));
        assert_eq!(env.get("OTHER_SERVICE_HOST"), None);
        assert_eq!(env.get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(env.get("EXTERNAL_SERVICE_HOST"), None);

        // enableServiceLinks: false keeps only the master service.
        let env = service_env(&services, "shop", false);
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(env.get("WEB_SERVICE_HOST"), None);

        // A service of the pod's namespace named kubernetes wins.
        let mut with_own = services.to_vec();
        with_own.push(service(
            "shop",
            "kubernetes",
            "10.96.0.9",
            &[(None, 1, None)],
        ));
        let env = service_env(&with_own, "shop", true);
        assert_eq!(env.get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.9"));
    }

    #[test]
    fn order_is_services_then_env_from_then_env_with_expansion() {
        let mut refs = Refs {
            services: vec![service("shop", "db", "10.96.0.5", &[(None, 5432, None)])],
            ..Default::default()
        };
        refs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some(
                    [
                        ("MODE".to_string(), "prod".to_string()),
                        ("bad=key".to_string(), "x".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        let container = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cfg".into(),
                    optional: None,
                }),
                prefix: Some("CFG_".into()),
                ..Default::default()
            }]),
            env: Some(vec![
                var(
                    "URL",
                    "postgres://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/$(CFG_MODE)",
                ),
                var("LATER", "$(URL)-$(UNDEFINED)-$$(URL)"),
                var("EMPTY", ""),
                var("CFG_MODE", "overridden"),
            ]),
            ..Default::default()
        };
        let p = pod(vec![container.clone()]);
        let env = container_env(&ctx(&p, &refs, "", ""), &container).unwrap();
        let names: Vec<&str> = env.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"DB_SERVICE_HOST"));
        assert_eq!(
            &names[names.len() - 4..],
            ["URL", "LATER", "EMPTY", "CFG_MODE"]
        );
        assert_eq!(get(&env, "URL"), Some("postgres://10.96.0.5:5432/prod"));
        assert_eq!(
            get(&env, "LATER"),
            Some("postgres://10.96.0.5:5432/prod-$(UNDEFINED)-$(URL)")
        );
        assert_eq!(get(&env, "EMPTY"), Some(""));
        assert_eq!(get(&env, "CFG_MODE"), Some("overridden"));
        assert_eq!(get(&env, "CFG_bad=key"), None);
        assert_eq!(names.iter().filter(|n| **n == "CFG_MODE").count(), 1);
    }

    #[test]
    fn env_overrides_a_service_variable() {
        let refs = Refs {
            services: vec![service("shop", "db", "10.96.0.5", &[(None, 5432, None)])],
            ..Default::default()
        };
        let container = Container {
            name: "app".into(),
            env: Some(vec![var("DB_SERVICE_HOST", "mine")]),
            ..Default::default()
        };
        let p = pod(vec![container.clone()]);
        let env = container_env(&ctx(&p, &refs, "", ""), &container).unwrap();
        assert_eq!(
            env.iter().filter(|(n, _)| n == "DB_SERVICE_HOST").count(),
            1
        );
        assert_eq!(get(&env, "DB_SERVICE_HOST"), Some("mine"));
    }

    #[test]
    fn field_refs() {
        let container = Container {
            name: "app".into(),
            env: Some(vec![
                field("NAME", "metadata.name"),
                field("NS", "metadata.namespace"),
                field("UID", "metadata.uid"),
                field("APP", "metadata.labels['app']"),
                field("MISSING", "metadata.labels['nope']"),
                field("ANN", "metadata.annotations['a']"),
                field("NODE", "spec.nodeName"),
                field("SA", "spec.serviceAccountName"),
                field("HOST_IP", "status.hostIP"),
                field("HOST_IPS", "status.hostIPs"),
                field("POD_IP", "status.podIP"),
                field("POD_IPS", "status.podIPs"),
            ]),
            ..Default::default()
        };
        let p = pod(vec![container.clone()]);
        let refs = Refs::default();
        let env = container_env(&ctx(&p, &refs, "192.168.1.10", "10.244.1.5"), &container).unwrap();
        assert_eq!(get(&env, "NAME"), Some("web-0"));
        assert_eq!(get(&env, "NS"), Some("shop"));
        assert_eq!(get(&env, "UID"), Some("u-1"));
        assert_eq!(get(&env, "APP"), Some("web"));
        assert_eq!(get(&env, "MISSING"), Some(""));
        assert_eq!(get(&env, "ANN"), Some("x\"y"));
        assert_eq!(get(&env, "NODE"), Some("node-1"));
        assert_eq!(get(&env, "SA"), Some("default"));
        assert_eq!(get(&env, "HOST_IP"), Some("192.168.1.10"));
        assert_eq!(get(&env, "HOST_IPS"), Some("192.168.1.10"));
        assert_eq!(get(&env, "POD_IP"), Some("10.244.1.5"));
        assert_eq!(get(&env, "POD_IPS"), Some("10.244.1.5"));

        let bad = Container {
            name: "app".into(),
            env: Some(vec![field("X", "status.phase")]),
            ..Default::default()
        };
        assert_eq!(
            container_env(&ctx(&p, &refs, "", ""), &bad)
                .unwrap_err()
                .to_string(),
            "unsupported fieldPath: status.phase"
        );
    }

    #[test]
    fn whole_maps_format_as_go_does() {
        let p = pod(vec![]);
        assert_eq!(
            metadata_field(&p, "metadata.annotations").unwrap(),
            "a=\"x\\\"y\"\nb=\"two\\nlines\""
        );
        assert_eq!(
            metadata_field(&p, "metadata.labels").unwrap(),
            "app=\"web\""
        );
    }

    #[test]
    fn config_map_and_secret_refs_and_their_errors() {
        let mut refs = Refs::default();
        refs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some([("k".to_string(), "v".to_string())].into()),
                ..Default::default()
            },
        );
        refs.secrets.insert(
            "s".into(),
            Secret {
                data: Some([("pw".to_string(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        );
        let cm = |name: &str, key: &str, optional: Option<bool>| {
            from(
                "V",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional,
                    }),
                    ..Default::default()
                },
            )
        };
        let secret = |name: &str, key: &str, optional: Option<bool>| {
            from(
                "V",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: name.into(),
                        key: key.into(),
                        optional,
                    }),
                    ..Default::default()
                },
            )
        };
        let run = |v: EnvVar| {
            let c = Container {
                name: "app".into(),
                env: Some(vec![v]),
                ..Default::default()
            };
            let p = pod(vec![c.clone()]);
            container_env(&ctx(&p, &refs, "", ""), &c).map(|env| get(&env, "V").map(str::to_owned))
        };
        assert_eq!(run(cm("cfg", "k", None)), Ok(Some("v".into())));
        assert_eq!(run(secret("s", "pw", None)), Ok(Some("hunter2".into())));
        assert_eq!(
            run(cm("nope", "k", None)).unwrap_err().to_string(),
            "configmap \"nope\" not found"
        );
        assert_eq!(
            run(cm("cfg", "x", None)).unwrap_err().to_string(),
            "couldn't find key x in ConfigMap shop/cfg"
        );
        assert_eq!(
            run(secret("nope", "k", None)).unwrap_err().to_string(),
            "secret \"nope\" not found"
        );
        assert_eq!(
            run(secret("s", "x", None)).unwrap_err().to_string(),
            "couldn't find key x in Secret shop/s"
        );
        // Optional: the variable is simply not set.
        assert_eq!(run(cm("nope", "k", Some(true))), Ok(None));
        assert_eq!(run(cm("cfg", "x", Some(true))), Ok(None));
        assert_eq!(run(secret("nope", "k", Some(true))), Ok(None));
        assert_eq!(run(secret("s", "x", Some(true))), Ok(None));
    }

    #[test]
    fn env_from_missing() {
        let refs = Refs::default();
        let mut c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "gone".into(),
                    optional: None,
                }),
                ..Default::default()
            }]),
            ..Default::default()
        };
        let p = pod(vec![c.clone()]);
        assert_eq!(
            container_env(&ctx(&p, &refs, "", ""), &c)
                .unwrap_err()
                .to_string(),
            "configmap \"gone\" not found"
        );
        c.env_from.as_mut().unwrap()[0]
            .config_map_ref
            .as_mut()
            .unwrap()
            .optional = Some(true);
        assert!(container_env(&ctx(&p, &refs, "", ""), &c).is_ok());
    }

    #[test]
    fn resource_field_refs() {
        let q = |s: &str| Quantity(s.into());
        let resource = |name: &str, res: &str, divisor: Option<&str>| {
            from(
                name,
                EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        resource: res.into(),
                        divisor: divisor.map(q),
                        container_name: None,
                    }),
                    ..Default::default()
                },
            )
        };
        let c = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), q("1500m")),
                        ("memory".to_string(), q("128Mi")),
                    ]
                    .into(),
                ),
                requests: Some([("cpu".to_string(), q("250m"))].into()),
                ..Default::default()
            }),
            env: Some(vec![
                resource("CPU_LIMIT", "limits.cpu", None),
                resource("CPU_LIMIT_M", "limits.cpu", Some("1m")),
                resource("CPU_REQUEST", "requests.cpu", None),
                resource("MEM_LIMIT", "limits.memory", None),
                resource("MEM_LIMIT_MI", "limits.memory", Some("1Mi")),
                resource("MEM_REQUEST", "requests.memory", None),
                resource("EPH_LIMIT_GI", "limits.ephemeral-storage", Some("1Gi")),
                resource("EPH_REQUEST", "requests.ephemeral-storage", None),
            ]),
            ..Default::default()
        };
        let p = pod(vec![c.clone()]);
        let refs = Refs::default();
        let env = container_env(&ctx(&p, &refs, "", ""), &c).unwrap();
        assert_eq!(get(&env, "CPU_LIMIT"), Some("2"));
        assert_eq!(get(&env, "CPU_LIMIT_M"), Some("1500"));
        assert_eq!(get(&env, "CPU_REQUEST"), Some("1"));
        assert_eq!(get(&env, "MEM_LIMIT"), Some("134217728"));
        assert_eq!(get(&env, "MEM_LIMIT_MI"), Some("128"));
        // No request: the limit (API server defaulting).
        assert_eq!(get(&env, "MEM_REQUEST"), Some("134217728"));
        // No ephemeral-storage limit: 0 (no allocatable known here).
        assert_eq!(get(&env, "EPH_LIMIT_GI"), Some("0"));
        assert_eq!(get(&env, "EPH_REQUEST"), Some("0"));

        let no_limits = Container {
            name: "app".into(),
            env: Some(vec![
                resource("CPU", "limits.cpu", None),
                resource("MEM", "limits.memory", Some("1Gi")),
            ]),
            ..Default::default()
        };
        let p = pod(vec![no_limits.clone()]);
        let env = container_env(&ctx(&p, &refs, "", ""), &no_limits).unwrap();
        assert_eq!(get(&env, "CPU"), Some("4"));
        assert_eq!(get(&env, "MEM"), Some("8"));
    }

    #[test]
    fn referenced_names() {
        use k8s_openapi::api::core::v1::{
            ConfigMapProjection, ConfigMapVolumeSource, LocalObjectReference,
            PersistentVolumeClaimVolumeSource, ProjectedVolumeSource, SecretVolumeSource, Volume,
            VolumeProjection,
        };
        let mut p = pod(vec![Container {
            name: "app".into(),
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "env-secret".into(),
                        key: "k".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        }]);
        let spec = p.spec.as_mut().unwrap();
        spec.image_pull_secrets = Some(vec![LocalObjectReference {
            name: "pull".into(),
        }]);
        spec.volumes = Some(vec![
            Volume {
                name: "a".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "vol-cm".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "b".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("vol-secret".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "c".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![VolumeProjection {
                        config_map: Some(ConfigMapProjection {
                            name: "kube-root-ca.crt".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "d".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: "data".into(),
                    read_only: None,
                }),
                ..Default::default()
            },
        ]);
        let r = referenced(&p);
        assert_eq!(
            r.config_maps.into_iter().collect::<Vec<_>>(),
            ["kube-root-ca.crt", "vol-cm"]
        );
        assert_eq!(
            r.secrets.into_iter().collect::<Vec<_>>(),
            ["env-secret", "pull", "vol-secret"]
        );
        assert_eq!(r.claims.into_iter().collect::<Vec<_>>(), ["data"]);
    }
}
