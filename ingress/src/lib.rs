//! shoal's Ingress controller, run by every node agent (as k3s ships
//! Traefik): it serves HTTP and HTTPS on the node and routes requests by
//! the Ingresses of the `shoal` class straight to the ready endpoints of
//! their Services.
//!
//! ```text
//!   routes   the routing table from Ingresses, IngressClasses, Services,
//!            EndpointSlices (pure)
//!   tls      certificates by SNI from kubernetes.io/tls Secrets
//!   server   the listeners and the proxy (X-Forwarded-*, upgrades)
//!   metrics  requests by Ingress, Service and status, and their latency
//!   check    what cannot be served as asked (bad Secrets, annotations),
//!            told as events by the controllers
//! ```
//!
//! [`bind`] takes the ports; [`serve`] keeps the table and the
//! certificates in step with the caches it is given: every change rebuilds
//! both, and requests in flight finish on the table they started with.

pub mod check;
pub mod metrics;
pub mod routes;
pub mod server;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::runtime::reflector::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// The LoadBalancer Service in `kube-system` that makes the nodes'
/// Ingress controllers reachable at one address (as k3s's ServiceLB does
/// for Traefik); each agent is one of its endpoints.
pub const SERVICE: &str = "shoal-ingress";

/// Where the node serves Ingresses (`--ingress-http-port`,
/// `--ingress-https-port`); `None` serves no such port.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

/// The caches the table is built from, and the signal of their changes.
#[derive(Clone)]
pub struct Sources {
    pub ingresses: Store<Ingress>,
    pub classes: Store<IngressClass>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub secrets: Store<Secret>,
    pub changed: Arc<Notify>,
}

/// The Secrets the Ingresses name for TLS, as (namespace, name).
pub fn tls_secrets(ingresses: &[Arc<Ingress>]) -> std::collections::BTreeSet<(String, String)> {
    ingresses
        .iter()
        .flat_map(|ingress| {
            let namespace = ingress.metadata.namespace.clone().unwrap_or_default();
            ingress
                .spec
                .iter()
                .flat_map(|spec| spec.tls.iter().flatten())
                .filter_map(|tls| tls.secret_name.clone())
                .map(move |name| (namespace.clone(), name))
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address} for Ingress traffic: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the default certificate: {0}")]
    Certificate(String),
}

/// Changes closer together than this are applied together.
const SETTLE: Duration = Duration::from_millis(20);

/// The node's Ingress ports, taken.
pub struct Bound {
    http: Option<TcpListener>,
    https: Option<TcpListener>,
}

impl Bound {
    /// The port plain HTTP is served on, if any.
    pub fn http_port(&self) -> Option<u16> {
        port_of(self.http.as_ref())
    }

    /// The port HTTPS is served on, if any.
    pub fn https_port(&self) -> Option<u16> {
        port_of(self.https.as_ref())
    }
}

fn port_of(listener: Option<&TcpListener>) -> Option<u16> {
    listener?.local_addr().ok().map(|a| a.port())
}

/// Takes the ports of `settings` (an error if one is taken).
pub async fn bind(settings: &Settings) -> Result<Bound, Error> {
    let bind = |address: SocketAddr| async move {
        TcpListener::bind(address)
            .await
            .map_err(|source| Error::Bind { address, source })
    };
    let http = match settings.http {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    let https = match settings.https {
        Some(address) => Some(bind(address).await?),
        None => None,
    };
    Ok(Bound { http, https })
}

/// Serves on `bound` until dropped, rebuilding the routing table and the
/// certificates on every change.
pub async fn serve(
    bound: Bound,
    sources: Sources,
    metrics: Arc<metrics::Metrics>,
) -> Result<(), Error> {
    let https_port = bound.https_port();
    let Bound { http, https } = bound;
    let certificates = Arc::new(tls::Certificates::new().map_err(Error::Certificate)?);
    let tls_config = match &https {
        Some(_) => Some(certificates.server_config().map_err(Error::Certificate)?),
        None => None,
    };
    let router = Arc::new(server::Router::new(https_port, metrics));
    let mut tasks = Vec::new();
    if let Some(listener) = http {
        tracing::info!(address = ?listener.local_addr().ok(), "ingress serving HTTP");
        tasks.push(tokio::spawn(server::serve_http(listener, router.clone())));
    }
    if let (Some(listener), Some(config)) = (https, tls_config) {
        tracing::info!(address = ?listener.local_addr().ok(), "ingress serving HTTPS");
        tasks.push(tokio::spawn(server::serve_https(
            listener,
            router.clone(),
            config,
        )));
    }
    // Aborts the listeners when this future is dropped.
    let _guard = AbortOnDrop(tasks);
    let mut told = Vec::new();
    loop {
        let notified = sources.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let table = routes::build(&routes::Inputs {
            ingresses: &sources.ingresses.state(),
            classes: &sources.classes.state(),
            services: &sources.services.state(),
            slices: &sources.slices.state(),
        });
        let problems = certificates.update(&table.tls, &sources.secrets.state());
        for problem in &problems {
            if !told.contains(problem) {
                tracing::warn!(secret = %format!("{}/{}", problem.namespace, problem.secret), problem = %problem.message, "ingress TLS: serving the default certificate instead");
            }
        }
        told = problems;
        router.set(table);
        notified.await;
        tokio::time::sleep(SETTLE).await;
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
