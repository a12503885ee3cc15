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
