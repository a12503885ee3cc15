//! ServiceAccount tokens, as kube-apiserver issues and checks them: JWTs
//! signed with the apiserver's key (ES256), with issuer, audiences and
//! expiry, bound to a pod when asked; the TokenRequest subresource
//! (`kubectl create token`); and the admission that gives every pod its
//! account's token at `/var/run/secrets/kubernetes.io/serviceaccount`.
//!
//! ```text
//!   POST .../serviceaccounts/<sa>/token ─► sign {iss, sub, aud, exp, kubernetes.io: {namespace,
//!                                               serviceaccount, pod?}}
//!   Authorization: Bearer <jwt> ─► verify (signature, iss, aud, exp) ─► the account (and
//!        its pod) still there with the same uid ─► system:serviceaccount:<ns>:<sa>
//!        in system:serviceaccounts, system:serviceaccounts:<ns> (cached 10 s)
//!   pod create ─► projected volume kube-api-access-xxxxx (token, ca.crt, namespace)
//!        mounted read-only in every container, unless automountServiceAccountToken: false
//! ```
//!
//! The key is `--service-account-signing-key-file` (a P-256 key, PKCS#8
//! PEM), generated into the data dir when not given; apiservers that
//! share a store must share it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair};
use serde_json::{json, Value};

use crate::error::{ApiError, Cause, Result};
use crate::rest::Ctx;
use crate::server::{Api, User};

/// Where a pod's token, CA and namespace are mounted.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The ConfigMap in every namespace that holds the cluster CA.
pub const ROOT_CA: &str = "kube-root-ca.crt";
/// The lifetime the kubelet asks for; such a pod-bound token is valid a
/// year (kube-apiserver's `--service-account-extend-token-expiration`).
const KUBELET_EXPIRATION: i64 = 3607;
const EXTENDED_EXPIRATION: i64 = 365 * 24 * 3600;
/// How long a checked token is trusted without looking at its account.
const CACHE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read or write the service account key {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the service account key {0} is not an ECDSA P-256 private key in PKCS#8 PEM (only ES256 is supported)")]
    Unsupported(PathBuf),
}

/// Signs and checks tokens.
pub struct Issuer {
    key: EcdsaKeyPair,
    kid: String,
    pub issuer: String,
    /// What tokens are for by default, and what this apiserver accepts.
    pub audiences: Vec<String>,
    rng: SystemRandom,
    checked: Mutex<HashMap<String, (User, Instant)>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("issuer", &self.issuer)
            .finish()
    }
}

fn pem(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PRIVATE KEY-----\n");
    out
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Issuer {
    /// Reads the key at `path`, or makes one there when it is missing
    /// (several apiservers starting at once end up with the same one).
    pub fn load_or_generate(
        path: &Path,
        issuer: &str,
        audiences: &[String],
    ) -> Result<Issuer, KeyError> {
        let io = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let rng = SystemRandom::new();
        if !path.exists() {
            let document =
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Unsupported(path.to_path_buf()))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let temporary = path.with_extension(format!("tmp{}", std::process::id()));
            {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                // Whoever reads the key can forge any account's token.
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&temporary)
                    .map_err(io)?;
                file.write_all(pem(document.as_ref()).as_bytes())
                    .map_err(io)?;
            }
            // A link fails when another apiserver made the key first: its
            // key is the one.
            let _ = std::fs::hard_link(&temporary, path);
            let _ = std::fs::remove_file(&temporary);
        }
        let text = std::fs::read(path).map_err(io)?;
        let der = match rustls_pemfile::private_key(&mut text.as_slice()) {
            Ok(Some(rustls::pki_types::PrivateKeyDer::Pkcs8(der))) => {
                der.secret_pkcs8_der().to_vec()
            }
            _ => return Err(KeyError::Unsupported(path.to_path_buf())),
        };
        let key = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|_| KeyError::Unsupported(path.to_path_buf()))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key().as_ref());
        Ok(Issuer {
            kid: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            key,
            issuer: issuer.to_string(),
            audiences: if audiences.is_empty() {
                vec![issuer.to_string()]
            } else {
                audiences.to_vec()
            },
            rng,
            checked: Mutex::new(HashMap::new()),
        })
    }

    /// A signed JWT of `claims`.
    pub fn sign(&self, claims: &Value) -> Result<String> {
        let header = json!({"alg": "ES256", "kid": self.kid});
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| ApiError::internal("cannot sign the token"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// The claims of a token this apiserver signed, still valid and meant
    /// for it; `None` otherwise.
    pub fn verify(&self, token: &str) -> Option<Value> {
        let (signed, signature) = token.rsplit_once('.')?;
        let (header, claims) = signed.split_once('.')?;
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).ok()?).ok()?;
        if header.get("alg")? != "ES256" {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.key.public_key().as_ref(),
        );
        public
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(signature).ok()?)
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
        let now = now();
        let leeway = 60;
        let in_time = claims.get("exp")?.as_i64()? + leeway > now
            && claims.get("nbf").and_then(Value::as_i64).unwrap_or(0) <= now + leeway;
        let ours = claims.get("iss")? == self.issuer.as_str();
        let audiences: Vec<&str> = match claims.get("aud")? {
            Value::String(one) => vec![one.as_str()],
            Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
            _ => return None,
        };
        let for_us = audiences
            .iter()
            .any(|a| self.audiences.iter().any(|b| b == a));
        (in_time && ours && for_us).then_some(claims)
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// The user a ServiceAccount token stands for, once its account (and the
/// pod it is bound to) are found with the uids it names.
pub async fn authenticate(api: &Api, token: &str) -> Option<User> {
    let issuer = api.service_accounts.as_ref()?;
    if token.split('.').count() != 3 {
        return None;
    }
    let digest = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ));
    {
        let mut checked = issuer.checked.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((user, at)) = checked.get(&digest) {
            if at.elapsed() < CACHE_TTL {
                return Some(user.clone());
            }
        }
        checked.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
    }
    let claims = issuer.verify(token)?;
    let namespace = text(&claims, "/kubernetes.io/namespace");
    let name = text(&claims, "/kubernetes.io/serviceaccount/name");
    let uid = text(&claims, "/kubernetes.io/serviceaccount/uid");
    let accounts = crate::resources::served("", "v1", "serviceaccounts");
    let account = stored(api, &accounts.key(Some(namespace), name)).await?;
    if text(&account, "/metadata/uid") != uid
        || account.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    if let Some(pod) = claims.pointer("/kubernetes.io/pod") {
        let pods = crate::resources::served("", "v1", "pods");
        let found = stored(api, &pods.key(Some(namespace), text(pod, "/name"))).await?;
        if text(&found, "/metadata/uid") != text(pod, "/uid") {
            return None;
        }
        // A terminating pod keeps its token a minute past the start of its
        // deletion (for its preStop hooks and graceful shutdown), as
        // Kubernetes does.
        if let Some(deleted) = found
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            if now() > deleted.as_second() + 60 {
                return None;
            }
        }
    }
    if let Some(secret) = claims.pointer("/kubernetes.io/secret") {
        let secrets = crate::resources::served("", "v1", "secrets");
        let found = stored(api, &secrets.key(Some(namespace), text(secret, "/name"))).await?;
        if text(&found, "/metadata/uid") != text(secret, "/uid") {
            return None;
        }
    }
    let user = User {
        name: crate::rbac::service_account_user(namespace, name),
        uid: uid.to_string(),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    };
    issuer
        .checked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(digest, (user.clone(), Instant::now()));
    Some(user)
}

async fn stored(api: &Api, key: &str) -> Option<Value> {
    let kv = api.store.get(key).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// `POST .../serviceaccounts/<name>/token`: a TokenRequest answered with
/// a token for the account (bound to a pod or Secret when asked).
pub async fn token_request(api: &Api, ctx: &Ctx, body: &[u8]) -> Result<Value> {
    let Some(issuer) = &api.service_accounts else {
        return Err(ApiError::path_not_found());
    };
    let namespace = ctx.namespace.clone().unwrap_or_default();
    let name = ctx.name.clone().unwrap_or_default();
    let mut request = crate::rest::decode(ctx, body)?;
    let accounts = crate::resources::served("", "v1", "serviceaccounts");
    let Some(account) = stored(api, &accounts.key(Some(&namespace), &name)).await else {
        return Err(ApiError::not_found(accounts, &name));
    };
    let invalid = |field: &str, value: &Value, detail: &str| {
        ApiError::invalid_kind(
            "authentication.k8s.io",
            "TokenRequest",
            &name,
            vec![Cause::invalid(field, value, detail)],
        )
    };
    let spec = match request.get("spec") {
        None | Some(Value::Null) => json!({}),
        Some(spec @ Value::Object(_)) => spec.clone(),
        Some(other) => return Err(invalid("spec", other, "must be an object")),
    };
    request["spec"] = spec.clone();
    crate::rbac::node::admit_token(
        ctx.user.as_ref(),
        api.authorizer.as_ref().and_then(|a| a.nodes.as_ref()),
        &namespace,
        spec.get("boundObjectRef"),
    )?;
    let requested = spec
        .get("expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    if requested < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(requested),
            "may not specify a duration less than 10 minutes",
        ));
    }
    if requested > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            &json!(requested),
            "may not specify a duration larger than 2^32 seconds",
        ));
    }
    let audiences: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| issuer.audiences.clone());
    let mut bound = serde_json::Map::new();
    bound.insert("namespace".into(), json!(namespace));
    bound.insert(
        "serviceaccount".into(),
        json!({"name": name, "uid": text(&account, "/metadata/uid")}),
    );
    let mut lifetime = requested;
    if let Some(reference) = spec.get("boundObjectRef").filter(|r| !r.is_null()) {
        let kind = text(reference, "/kind");
        let resource = match kind {
            "Pod" => crate::resources::served("", "v1", "pods"),
            "Secret" => crate::resources::served("", "v1", "secrets"),
            other => {
                return Err(invalid(
                    "spec.boundObjectRef.kind",
                    &json!(other),
                    "supported values: \"Pod\", \"Secret\"",
                ))
            }
        };
        let bound_name = text(reference, "/name");
        let Some(object) = stored(api, &resource.key(Some(&namespace), bound_name)).await else {
            return Err(ApiError::not_found(resource, bound_name));
        };
        let uid = text(&object, "/metadata/uid");
        if kind == "Pod" {
            let runs_as = text(&object, "/spec/serviceAccountName");
            if runs_as != name {
                return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to pod running with different serviceaccount name."
                )));
            }
        }
        let asked_uid = text(reference, "/uid");
        if !asked_uid.is_empty() && asked_uid != uid {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "the UID in the bound object reference ({asked_uid}) does not match the UID in record. The object might have been deleted and then recreated"
                ),
            ));
        }
        bound.insert(kind.to_lowercase(), json!({"name": bound_name, "uid": uid}));
        let for_api = audiences.iter().all(|a| issuer.audiences.contains(a));
        if kind == "Pod" && requested == KUBELET_EXPIRATION && for_api {
            lifetime = EXTENDED_EXPIRATION;
            bound.insert("warnafter".into(), json!(now() + KUBELET_EXPIRATION));
        }
        request["spec"]["boundObjectRef"]["uid"] = json!(uid);
    }
    let issued = now();
    let claims = json!({
        "aud": audiences,
        "exp": issued + lifetime,
        "iat": issued,
        "nbf": issued,
        "iss": issuer.issuer,
        "jti": crate::object::uid(),
        "kubernetes.io": bound,
        "sub": crate::rbac::service_account_user(&namespace, &name),
    });
    let token = issuer.sign(&claims)?;
    let expires = jiff::Timestamp::from_second(issued + lifetime)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] = json!({
        "name": name,
        "namespace": namespace,
        "creationTimestamp": crate::object::now(),
    });
    request["spec"]["audiences"] = json!(audiences);
    request["spec"]["expirationSeconds"] = json!(requested);
    request["status"] = json!({"token": token, "expirationTimestamp": expires});
    Ok(request)
}

/// Whether a pod is a mirror pod (a node's static pod, annotated
/// `kubernetes.io/config.mirror`).
pub fn is_mirror(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror")
        .is_some()
}

/// The ServiceAccount admission: the pod's account must exist (`default`
/// is made on the spot, where Kubernetes refuses the pod until its
/// controller has made it), and unless the pod or the account says
/// `automountServiceAccountToken: false`, a projected volume with the
/// token, the cluster CA and the namespace is mounted read-only at
/// [`MOUNT_PATH`] in every container.
pub async fn admit_pod(api: &Api, ctx: &Ctx, pod: &mut Value) -> Result<()> {
    if api.service_accounts.is_none() || is_mirror(pod) {
        return Ok(());
    }
    let namespace = ctx.namespace.clone().unwrap_or_else(|| "default".into());
    let account_name = text(pod, "/spec/serviceAccountName").to_string();
    let account_name = if account_name.is_empty() {
        "default".to_string()
    } else {
        account_name
    };
    let accounts = crate::resources::served("", "v1", "serviceaccounts");
    let account = match stored(api, &accounts.key(Some(&namespace), &account_name)).await {
        Some(account) => account,
        None if account_name == "default" => {
            if !ctx.dry_run() {
                let internal = Ctx::internal(accounts, Some(&namespace));
                crate::namespaces::create_if_missing(
                    api,
                    internal,
                    json!({"metadata": {"name": "default", "namespace": namespace}}),
                )
                .await?;
            }
            json!({})
        }
        None => {
            return Err(ApiError::forbidden(
                "",
                "pods",
                crate::object::name(pod),
                &format!(
                    "error looking up service account {namespace}/{account_name}: serviceaccount \"{account_name}\" not found"
                ),
            ))
        }
    };
    let automount = pod
        .pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true);
    // Without a CA to give pods (a --tls-cert-file with no ca.crt beside
    // it) the volume could never be filled: no token is mounted.
    if !automount || api.root_ca.is_none() {
        return Ok(());
    }
    if !ctx.dry_run() {
        ensure_root_ca(api, &namespace).await?;
    }
    let volume_name = format!("kube-api-access-{}", crate::object::random_suffix(5));
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let mut mounted = false;
    for list in ["initContainers", "containers"] {
        for container in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let mounts = container
                .as_object_mut()
                .map(|c| c.entry("volumeMounts").or_insert_with(|| json!([])));
            let Some(mounts) = mounts.and_then(Value::as_array_mut) else {
                continue;
            };
            if mounts.iter().any(|m| text(m, "/mountPath") == MOUNT_PATH) {
                continue;
            }
            mounts.push(json!({"name": volume_name, "readOnly": true, "mountPath": MOUNT_PATH}));
            mounted = true;
        }
    }
    if mounted {
        let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(json!({
                "name": volume_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": KUBELET_EXPIRATION, "path": "token"}},
                        {"configMap": {"name": ROOT_CA, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
        }
    }
    Ok(())
}

/// The `kube-root-ca.crt` ConfigMap of a namespace (kube-controller-manager's
/// root-ca-cert-publisher), made when missing.
pub async fn ensure_root_ca(api: &Api, namespace: &str) -> Result<()> {
    let Some(ca) = &api.root_ca else {
        return Ok(());
    };
    let config_maps = crate::resources::served("", "v1", "configmaps");
    if stored(api, &config_maps.key(Some(namespace), ROOT_CA))
        .await
        .is_some()
    {
        return Ok(());
    }
    let ctx = Ctx::internal(config_maps, Some(namespace));
    crate::namespaces::create_if_missing(
        api,
        ctx,
        json!({
            "metadata": {"name": ROOT_CA, "namespace": namespace, "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
            "data": {"ca.crt": ca},
        }),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_when_signed_here_in_time_and_for_us() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sa.key");
        let issuer = "https://kubernetes.default.svc.cluster.local";
        let a = Issuer::load_or_generate(&path, issuer, &[]).unwrap();
        // The same key read back.
        let b = Issuer::load_or_generate(&path, issuer, &[]).unwrap();
        let claims = json!({"iss": issuer, "aud": [issuer], "exp": now() + 600, "sub": "x"});
        let token = a.sign(&claims).unwrap();
        assert_eq!(b.verify(&token).unwrap()["sub"], "x");
        // Another key, a tampered payload, expiry, issuer and audience.
        let other = Issuer::load_or_generate(&dir.path().join("other.key"), issuer, &[]).unwrap();
        assert!(other.verify(&token).is_none());
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(
            json!({"iss": issuer, "aud": [issuer], "exp": now() + 600, "sub": "admin"}).to_string(),
        );
        assert!(a.verify(&parts.join(".")).is_none());
        for bad in [
            json!({"iss": issuer, "aud": [issuer], "exp": now() - 120}),
            json!({"iss": "https://elsewhere", "aud": [issuer], "exp": now() + 600}),
            json!({"iss": issuer, "aud": ["vault"], "exp": now() + 600}),
        ] {
            assert!(a.verify(&a.sign(&bad).unwrap()).is_none(), "{bad}");
        }
        assert!(a.verify("not.a.token").is_none());
    }

    #[test]
    fn keys_other_than_p256_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.key");
        std::fs::write(&path, "not a key").unwrap();
        let e = Issuer::load_or_generate(&path, "i", &[]).unwrap_err();
        assert!(e.to_string().contains("only ES256"), "{e}");
    }
}
