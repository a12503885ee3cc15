//! The server: UDP and TCP sockets on each listen address, a catalog of the
//! zone handlers, and the loop that rebuilds the index from the caches.
//!
//! ```text
//!   watches (Services, EndpointSlices, Pods) ─▶ changed ─▶ rebuild ─▶ View
//!   UDP ×cores (SO_REUSEPORT), TCP ─▶ Observed ─▶ Catalog ─▶ ClusterZone / ReverseZone / Upstream
//! ```
//!
//! A change is answered within `min_rebuild_period` plus one rebuild
//! (`tests/dns.rs` checks it is within a second), where CoreDNS can hand
//! out an NXDOMAIN cached for 30 s (kubernetes#71308).
//! Queries that arrive before the first rebuild wait in the sockets.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hickory_server::net::runtime::Time;
use hickory_server::net::NetError;
use hickory_server::proto::rr::{LowerName, Name, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse, ZoneHandler};
use hickory_server::Server;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::Store;
use tokio::sync::Notify;

use crate::handler::{resolv_conf_servers, ClusterZone, ReverseZone, Upstream, View};
use crate::index::{Index, Settings};
use crate::metrics::Metrics;

/// The default cluster domain.
pub const DEFAULT_ZONE: &str = "cluster.local";
/// The default TTL of the cluster's records (CoreDNS' kubernetes plugin: 5 s).
pub const DEFAULT_TTL: u32 = 5;
/// The default wait between two rebuilds of the index.
pub const DEFAULT_MIN_REBUILD_PERIOD: Duration = Duration::from_millis(100);
/// How long an upstream may take before the client gets SERVFAIL.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle TCP connection is closed after this long.
const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the cluster domain {0}")]
    Zone(String),
    #[error("the upstream resolver: {0}")]
    Upstream(String),
    #[error("reading {path}: {source}")]
    ResolvConf {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the server runs; flags of `shoal dns` and `shoal agent`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to answer, UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain.
    pub zone: String,
    /// The TTL of the cluster's records.
    pub ttl: u32,
    /// Where other names go; `None`: the name servers of `resolv_conf`.
    pub upstreams: Option<Vec<SocketAddr>>,
    /// The resolv.conf whose name servers are the upstreams.
    pub resolv_conf: PathBuf,
    pub upstream_timeout: Duration,
    pub min_rebuild_period: Duration,
}

impl Config {
    pub fn new(listen: Vec<SocketAddr>) -> Self {
        Self {
            listen,
            zone: DEFAULT_ZONE.to_string(),
            ttl: DEFAULT_TTL,
            upstreams: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            min_rebuild_period: DEFAULT_MIN_REBUILD_PERIOD,
        }
    }

    fn upstream_servers(&self) -> Result<Vec<SocketAddr>, Error> {
        match &self.upstreams {
            Some(servers) => Ok(servers.clone()),
            None => match std::fs::read_to_string(&self.resolv_conf) {
                Ok(text) => Ok(resolv_conf_servers(&text, &self.listen)),
                Err(source) if source.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                Err(source) => Err(Error::ResolvConf {
                    path: self.resolv_conf.clone(),
                    source,
                }),
            },
        }
    }
}

/// The caches the index is built from and the signal that one changed.
pub struct Sources {
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    pub pods: Store<Pod>,
    pub changed: Arc<Notify>,
}

/// Watches of Services, EndpointSlices and Pods for a server of its own
/// (`shoal dns`), keeping only what the records need: of a pod its name,
/// namespace and addresses; of every object no managed fields or
/// annotations. The future runs them.
pub fn watch(client: &kube::Client) -> (Sources, impl std::future::Future<Output = ()> + Send) {
    use shoal_core::cache::watched_trimmed;
    let changed = Arc::new(Notify::new());
    let notify = std::slice::from_ref(&changed);
    let (services, w1) = watched_trimmed(client, notify, |svc: &mut Service| {
        svc.metadata.managed_fields = None;
        svc.metadata.annotations = None;
        svc.status = None;
    });
    let (slices, w2) = watched_trimmed(client, notify, |slice: &mut EndpointSlice| {
        slice.metadata.managed_fields = None;
        slice.metadata.annotations = None;
    });
    let (pods, w3) = watched_trimmed(client, notify, |pod: &mut Pod| {
        let status = pod.status.take();
        *pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: pod.metadata.name.take(),
                namespace: pod.metadata.namespace.take(),
                uid: pod.metadata.uid.take(),
                resource_version: pod.metadata.resource_version.take(),
                ..Default::default()
            },
            spec: None,
            status: status.map(|s| k8s_openapi::api::core::v1::PodStatus {
                pod_ip: s.pod_ip,
                pod_ips: s.pod_ips,
                ..Default::default()
            }),
        };
    });
    let sources = Sources {
        services,
        slices,
        pods,
        changed,
    };
    (sources, async move {
        tokio::join!(w1, w2, w3);
    })
}

/// Times each query and counts it by type and rcode; logs it at debug.
struct Observed {
    catalog: Catalog,
    metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl RequestHandler for Observed {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let started = Instant::now();
        let info = self
            .catalog
            .handle_request::<RecursionAvailable<R>, T>(
                request,
                RecursionAvailable(response_handle),
            )
            .await;
        let elapsed = started.elapsed();
        if let Ok(q) = request.request_info() {
            self.metrics.query(
                q.query.query_type(),
                info.response_code,
                elapsed.as_secs_f64(),
            );
            tracing::debug!(
                name = %q.query.name(),
                r#type = %q.query.query_type(),
                rcode = %info.response_code,
                answers = info.counts().answers,
                src = %q.src,
                protocol = %q.protocol,
                micros = elapsed.as_micros() as u64,
                "dns query"
            );
        }
        info
    }
}

/// Sets RA on every response: this server resolves any name for its
/// clients (CoreDNS does the same), though the catalog marks only
/// forwarded answers so.
#[derive(Clone)]
struct RecursionAvailable<R>(R);

#[async_trait::async_trait]
impl<R: ResponseHandler> ResponseHandler for RecursionAvailable<R> {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        response.metadata_mut().recursion_available = true;
        self.0.send_response(response).await
    }
}

/// The sockets of a server that does not answer yet.
pub struct Bound(Vec<Sockets>);

/// Binds every listen address, UDP and TCP: fails at once when one is
/// taken, before anything is announced.
pub fn bind(config: &Config) -> Result<Bound, Error> {
    config
        .listen
        .iter()
        .map(|addr| bind_addr(*addr))
        .collect::<Result<_, _>>()
        .map(Bound)
}

/// Binds, then serves until `shutdown` resolves.
pub async fn serve(
    config: &Config,
    sources: Sources,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let bound = bind(config)?;
    serve_bound(config, bound, sources, metrics, shutdown).await
}

/// Serves on sockets [`bind`] made until `shutdown` resolves.
pub async fn serve_bound(
    config: &Config,
    Bound(sockets): Bound,
    sources: Sources,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let settings = Settings::new(&config.zone, config.ttl, serial()).map_err(Error::Zone)?;
    let upstreams = config.upstream_servers()?;
    if upstreams.is_empty() {
        tracing::warn!("no upstream name servers: names outside the cluster get SERVFAIL");
    }
    let view = Arc::new(View::new(Index::empty(&settings)));
    let upstream = Arc::new(
        Upstream::new(&upstreams, config.upstream_timeout, metrics.clone())
            .map_err(|e| Error::Upstream(e.to_string()))?,
    );
    let mut catalog = Catalog::new();
    let cluster: Arc<dyn ZoneHandler> = Arc::new(ClusterZone::new(view.clone(), upstream.clone()));
    catalog.upsert(LowerName::from(&settings.zone), vec![cluster]);
    for reverse in ["in-addr.arpa.", "ip6.arpa."] {
        let zone = ReverseZone::new(reverse, view.clone()).map_err(Error::Zone)?;
        let origin = zone.origin().clone();
        let upstream: Arc<dyn ZoneHandler> = upstream.clone();
        catalog.upsert(origin, vec![Arc::new(zone), upstream]);
    }
    catalog.upsert(LowerName::from(&Name::root()), vec![upstream]);

    tokio::pin!(shutdown);
    // The first index, from caches that have listed everything.
    tokio::select! {
        _ = async {
            shoal_core::cache::ready(&sources.services).await;
            shoal_core::cache::ready(&sources.slices).await;
            shoal_core::cache::ready(&sources.pods).await;
        } => {}
        () = &mut shutdown => return Ok(()),
    }
    rebuild(&settings, &sources, &view, &metrics);
    let mut server = Server::new(Observed {
        catalog,
        metrics: metrics.clone(),
    });
    for (udp, tcp) in sockets {
        for socket in udp {
            server.register_socket(socket);
        }
        server.register_listener(tcp, TCP_IDLE, 64);
    }
    tracing::info!(listen = ?config.listen, zone = %settings.zone, upstreams = ?upstreams, "cluster DNS serving");
    loop {
        let started = Instant::now();
        tokio::select! {
            () = sources.changed.notified() => {}
            () = &mut shutdown => break,
        }
        // A burst of changes is built once.
        let next = started + config.min_rebuild_period;
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = &mut shutdown => break,
        }
        let settings = Settings {
            serial: serial(),
            ..settings.clone()
        };
        rebuild(&settings, &sources, &view, &metrics);
    }
    let _ = server.shutdown_gracefully().await;
    Ok(())
}

fn rebuild(settings: &Settings, sources: &Sources, view: &View, metrics: &Metrics) {
    let started = Instant::now();
    let services = sources.services.state();
    let slices = sources.slices.state();
    let pods = sources.pods.state();
    let index = Index::build(
        settings,
        services.iter().map(|s| s.as_ref()),
        slices.iter().map(|s| s.as_ref()),
        pods.iter().map(|p| p.as_ref()),
    );
    metrics.rebuilt(index.len());
    tracing::debug!(
        names = index.len(),
        took_us = started.elapsed().as_micros() as u64,
        "cluster zone rebuilt"
    );
    view.set(index);
}

/// The SOA serial: the time of the last change, as CoreDNS.
fn serial() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

type Sockets = (Vec<tokio::net::UdpSocket>, tokio::net::TcpListener);

/// One UDP socket per core on `addr` (the kernel spreads queries across
/// them by SO_REUSEPORT) and a TCP listener.
fn bind_addr(addr: SocketAddr) -> Result<Sockets, Error> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| Error::Listen { addr, source };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut udp = Vec::with_capacity(cores);
    let mut addr_udp = addr;
    for _ in 0..cores {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(err)?;
        socket.set_reuse_port(true).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&addr_udp.into()).map_err(err)?;
        // Port 0: the others join the port the first one got.
        if let Some(local) = socket.local_addr().ok().and_then(|a| a.as_socket()) {
            addr_udp = local;
        }
        udp.push(tokio::net::UdpSocket::from_std(socket.into()).map_err(err)?);
    }
    let tcp =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    tcp.set_reuse_address(true).map_err(err)?;
    tcp.set_nonblocking(true).map_err(err)?;
    tcp.bind(&SocketAddr::new(addr.ip(), addr_udp.port()).into())
        .map_err(err)?;
    tcp.listen(1024).map_err(err)?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into()).map_err(err)?;
    Ok((udp, tcp))
}
