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
//! ```
//!
//! [`run`] keeps the table and the certificates in step with the caches it
//! is given: every change rebuilds both, and requests in flight finish on
//! the table they started with.

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

/// Serves until dropped: binds the ports (an error if one is taken), then
/// rebuilds the routing table and the certificates on every change.
pub async fn run(
    settings: Settings,
    sources: Sources,
    metrics: Arc<metrics::Metrics>,
) -> Result<(), Error> {
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
    let certificates = Arc::new(tls::Certificates::new().map_err(Error::Certificate)?);
    let tls_config = match &https {
        Some(_) => Some(certificates.server_config().map_err(Error::Certificate)?),
        None => None,
    };
    let https_port = match &https {
        Some(listener) => listener.local_addr().ok().map(|a| a.port()),
        None => None,
    };
    let router = Arc::new(server::Router::new(https_port, metrics));
    let mut tasks = Vec::new();
    if let Some(listener) = http {
        tracing::info!(address = ?settings.http, "ingress serving HTTP");
        tasks.push(tokio::spawn(server::serve_http(listener, router.clone())));
    }
    if let (Some(listener), Some(config)) = (https, tls_config) {
        tracing::info!(address = ?settings.https, "ingress serving HTTPS");
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
