//! Kubernetes API clients (kube-rs) from kubeconfigs, made the same way by
//! every component: the controllers, the agents, the benches and the
//! apiserver's own loopback client.

use kube::config::{KubeConfigOptions, Kubeconfig};

fn config_error(e: impl std::error::Error + Send + Sync + 'static) -> kube::Error {
    kube::Error::Service(Box::new(e))
}

/// A client for the current context of `kubeconfig`.
pub async fn from_kubeconfig(kubeconfig: Kubeconfig) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(config_error)?;
    kube::Client::try_from(config)
}

/// A client from a kubeconfig file.
pub async fn from_file(path: &std::path::Path) -> Result<kube::Client, kube::Error> {
    from_kubeconfig(Kubeconfig::read_from(path).map_err(config_error)?).await
}

/// A client from a kubeconfig's text.
pub async fn from_yaml(text: &str) -> Result<kube::Client, kube::Error> {
    from_kubeconfig(Kubeconfig::from_yaml(text).map_err(config_error)?).await
}

/// How a kubeconfig's `cluster:` trusts its server: one line, e.g.
/// `certificate-authority-data: <base64 PEM>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    pub server: String,
    pub trust: String,
}

/// The cluster of `path`'s current context (its CA file read into the
/// line), to write other kubeconfigs for it.
pub fn cluster_of(path: &std::path::Path) -> Result<Cluster, String> {
    use base64::Engine;
    let config =
        Kubeconfig::read_from(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let context = config
        .current_context
        .as_deref()
        .and_then(|name| config.contexts.iter().find(|c| c.name == name))
        .or(config.contexts.first())
        .and_then(|c| c.context.as_ref());
    let cluster = config
        .clusters
        .iter()
        .find(|c| context.is_some_and(|ctx| ctx.cluster == c.name))
        .or(config.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| format!("{} names no cluster", path.display()))?;
    let server = cluster
        .server
        .clone()
        .ok_or_else(|| format!("{} names no server", path.display()))?;
    let trust = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => format!("certificate-authority-data: {data}"),
        (None, Some(ca)) => {
            let pem = std::fs::read(ca).map_err(|e| format!("reading {ca}: {e}"))?;
            format!(
                "certificate-authority-data: {}",
                base64::engine::general_purpose::STANDARD.encode(pem)
            )
        }
        (None, None) if cluster.insecure_skip_tls_verify == Some(true) => {
            "insecure-skip-tls-verify: true".to_string()
        }
        (None, None) => String::new(),
    };
    let trust = match &cluster.tls_server_name {
        Some(name) => format!("{trust}\n    tls-server-name: {name}"),
        None => trust,
    };
    Ok(Cluster { server, trust })
}

/// The CA (PEM) that `path`'s current cluster is trusted by, if it names
/// one: what agents check the apiserver's client certificate against.
pub fn cluster_ca(path: &std::path::Path) -> Result<Option<Vec<u8>>, String> {
    use base64::Engine;
    let cluster = cluster_of(path)?;
    let Some(data) = cluster.trust.strip_prefix("certificate-authority-data: ") else {
        return Ok(None);
    };
    let data = data.lines().next().unwrap_or_default().trim();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map(Some)
        .map_err(|e| format!("{}: certificate-authority-data: {e}", path.display()))
}

/// A kubeconfig for `cluster` whose user is given by `user` (keys and
/// values of its `user:` map, e.g. `("token", "...")`; values are quoted,
/// so paths may hold any character).
pub fn kubeconfig(cluster: &Cluster, user: &[(&str, &str)]) -> String {
    let quote = |v: &str| serde_json::Value::String(v.to_string()).to_string();
    let user: String = user
        .iter()
        .map(|(k, v)| format!("    {k}: {}\n", quote(v)))
        .collect();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: default-cluster\n  cluster:\n    server: {}\n    {}\nusers:\n- name: default-auth\n  user:\n{user}contexts:\n- name: default-context\n  context:\n    cluster: default-cluster\n    user: default-auth\ncurrent-context: default-context\n",
        quote(&cluster.server),
        cluster.trust
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_kubeconfigs_read_back_whatever_their_paths() {
        let cluster = Cluster {
            server: "https://127.0.0.1:6443".into(),
            trust: "certificate-authority-data: Q0E=\n    tls-server-name: localhost".into(),
        };
        let odd = "/tmp/a: b #c/client.crt";
        let text = kubeconfig(&cluster, &[("client-certificate", odd), ("token", "*x")]);
        let config = Kubeconfig::from_yaml(&text).unwrap();
        let user = config.auth_infos[0].auth_info.as_ref().unwrap();
        assert_eq!(user.client_certificate.as_deref(), Some(odd));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(cluster_of(&path).unwrap(), cluster);
    }
}
