//! The tunnels between nodes: every pod reaches every other pod by its IP,
//! on any node, without NAT, and nothing crosses the wire in clear.
//!
//! ```text
//!   node A                                            node B
//!   pod ─ shoal0 ─ route 10.244.2.0/24 dev shoal-tun   shoal-tun ─ shoal0 ─ pod
//!                       │ (TUN: IP packets in userspace)   ▲
//!                       ▼                                  │
//!            QUIC datagram on A's connection to B ───────► B checks the
//!            (UDP 7443, mutual TLS, cluster CA)            source is in A's
//!                                                          podCIDR, writes it
//! ```
//!
//! One quinn endpoint per node both dials and accepts. Each node dials
//! every peer and sends its packets on that connection; it receives on the
//! connections peers dialed to it. A dialed peer must present a
//! certificate naming the Node dialed; a dialer must present one naming a
//! Node that is a peer, from that Node's address, and may only send
//! packets from that Node's pod range ([`identity`]).
//!
//! A packet too large for the connection's current datagram size (the
//! path's MTU less QUIC's overhead, which quinn's path-MTU discovery
//! tracks) is answered with ICMP "fragmentation needed" carrying that
//! size, as a router would; it is never dropped silently. A peer that is
//! down drops only the packets meant for it (counted): the TUN reader never
//! waits on a connection.
//!
//! [`Tunnel::set_peers`] takes the whole set of peers (from the Node
//! watch) and changes only what differs: a route and a dialer per peer.

pub mod identity;
pub mod metrics;
pub mod packet;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use rtnetlink::{Handle, RouteMessageBuilder};
use serde::Serialize;

pub use identity::Identity;

use crate::cidr::Ipv4Cidr;

/// The UDP port of the tunnels unless configured.
pub const DEFAULT_PORT: u16 = 7443;
/// The TUN device of every node.
pub const DEVICE: &str = "shoal-tun";
/// The Node annotation where an agent publishes its tunnel endpoint
/// (`address:port`).
pub const ENDPOINT_ANNOTATION: &str = "overlay.shoal.dev/endpoint";

/// IPv4 (20) + UDP (8) + a QUIC short header with quinn's 8-byte
/// connection ids (1 + 8 + up to 4 bytes of packet number), the AEAD tag
/// (16) and the DATAGRAM frame's type and length (1 + 2): 60 bytes, and
/// 20 more kept free so that a peer's slightly larger connection id or a
/// frame sharing the packet never pushes a full-size pod packet over.
pub const OVERHEAD: u16 = 80;

/// The MTU pods get on a node whose underlay (the interface that carries
/// the tunnels) has `underlay_mtu`: 1420 on the usual 1500.
pub fn pod_mtu(underlay_mtu: u16) -> u16 {
    underlay_mtu.saturating_sub(OVERHEAD).max(576)
}

/// Makes the pod network `cluster_cidr` unreachable from this node except
/// through more specific routes (its own bridge, the tunnel device): a
/// route of type `unreachable` with a low priority. Without it, packets for
/// other nodes' pods would leave by the default route, in clear, whenever
/// the tunnel is not up (the agent starting, stopped, waiting for its
/// certificate). Idempotent.
pub async fn guard_pod_network(cluster_cidr: Ipv4Cidr) -> Result<()> {
    use rtnetlink::packet_route::route::RouteType;
    let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
    let task = tokio::spawn(connection);
    let result = handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cluster_cidr.network(), cluster_cidr.prefix_len())
                .kind(RouteType::Unreachable)
                .priority(GUARD_PRIORITY)
                .build(),
        )
        .replace()
        .execute()
        .await
        .map_err(|source| Error::Netlink {
            what: format!("adding the unreachable route for {cluster_cidr}"),
            source,
        });
    task.abort();
    result
}

/// The priority (metric) of [`guard_pod_network`]'s route: behind any
/// route the tunnel adds (priority 0).
const GUARD_PRIORITY: u32 = 4096;

/// The MTU of the interface that holds `address` (the underlay the
/// tunnels cross), read over netlink in the caller's network namespace;
/// 1500 when it cannot be told.
pub async fn underlay_mtu(address: std::net::IpAddr) -> u16 {
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    let Ok((connection, handle, _)) = rtnetlink::new_connection() else {
        return 1500;
    };
    let task = tokio::spawn(connection);
    let mut index = None;
    let mut addresses = handle.address().get().execute();
    while let Ok(Some(message)) = addresses.try_next().await {
        let holds = message.attributes.iter().any(|a| match a {
            AddressAttribute::Address(ip) | AddressAttribute::Local(ip) => *ip == address,
            _ => false,
        });
        if holds {
            index = Some(message.header.index);
            break;
        }
    }
    let mut mtu = None;
    if let Some(index) = index {
        let mut links = handle.link().get().match_index(index).execute();
        if let Ok(Some(link)) = links.try_next().await {
            mtu = link.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => u16::try_from(*m).ok(),
                _ => None,
            });
        }
    }
    task.abort();
    mtu.filter(|m| *m >= 1280).unwrap_or(1500)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the TUN device {device}: {source}")]
    Tun {
        device: String,
        #[source]
        source: std::io::Error,
    },
    #[error("binding the tunnel endpoint {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] identity::Error),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a node's tunnel end is set up.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The TUN device's name.
    pub device: String,
    /// The UDP address the endpoint binds (e.g. `0.0.0.0:7443`).
    pub listen: SocketAddr,
    /// The MTU of the interface the tunnels cross. The TUN device gets it
    /// (so that anything larger than a datagram reaches the tunnel and gets
    /// a fragmentation-needed with the real size); pods get
    /// [`pod_mtu`] of it.
    pub underlay_mtu: u16,
    /// This node's address on the pod network (its bridge gateway): the
    /// source of the node's own packets to other nodes' pods.
    pub local_address: Ipv4Addr,
    /// The whole pod network: routed into the tunnel device, so that a
    /// packet for a node not known yet is dropped there (counted) rather
    /// than leaving in clear by the default route.
    pub cluster_cidr: Option<Ipv4Cidr>,
    pub identity: Identity,
}

/// Another node, as its Node object describes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub pod_cidr: Ipv4Cidr,
    pub endpoint: SocketAddr,
}

/// Counters of one peer, for `/metrics` and `shoal overlay status`.
#[derive(Debug, Default)]
pub struct Counters {
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Sent to the peer while no connection to it was up.
    pub drop_no_connection: AtomicU64,
    /// Larger than the connection's datagram size (answered with ICMP).
    pub drop_too_big: AtomicU64,
    /// Refused by quinn (connection lost meanwhile).
    pub drop_send_error: AtomicU64,
    /// Arrived from the peer with a source outside its pod range.
    pub drop_spoofed: AtomicU64,
    pub connects: AtomicU64,
}

/// A snapshot of one peer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerStatus {
    pub name: String,
    pub endpoint: SocketAddr,
    pub pod_cidr: String,
    /// `connected`, `connecting` or `down: <last error>`.
    pub state: String,
    pub rtt_ms: Option<f64>,
    pub max_datagram: Option<usize>,
    pub incoming: usize,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub drop_no_connection: u64,
    pub drop_too_big: u64,
    pub drop_send_error: u64,
    pub drop_spoofed: u64,
    pub connects: u64,
}

struct Link {
    peer: Peer,
    outgoing: RwLock<Option<quinn::Connection>>,
    incoming: Mutex<Vec<quinn::Connection>>,
    state: Mutex<String>,
    counters: Counters,
    dialer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Link {
    fn close(&self) {
        if let Ok(mut dialer) = self.dialer.lock() {
            if let Some(task) = dialer.take() {
                task.abort();
            }
        }
        if let Ok(mut outgoing) = self.outgoing.write() {
            if let Some(c) = outgoing.take() {
                c.close(0u32.into(), b"peer removed");
            }
        }
        if let Ok(mut incoming) = self.incoming.lock() {
            for c in incoming.drain(..) {
                c.close(0u32.into(), b"peer removed");
            }
        }
    }

    fn status(&self) -> PeerStatus {
        let outgoing = self.outgoing.read().ok().and_then(|c| c.clone());
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let c = &self.counters;
        PeerStatus {
            name: self.peer.name.clone(),
            endpoint: self.peer.endpoint,
            pod_cidr: self.peer.pod_cidr.to_string(),
            state: self.state.lock().map(|s| s.clone()).unwrap_or_default(),
            rtt_ms: outgoing.as_ref().map(|c| c.rtt().as_secs_f64() * 1000.0),
            max_datagram: outgoing.as_ref().and_then(|c| c.max_datagram_size()),
            incoming: self.incoming.lock().map(|i| i.len()).unwrap_or(0),
            tx_packets: load(&c.tx_packets),
            tx_bytes: load(&c.tx_bytes),
            rx_packets: load(&c.rx_packets),
            rx_bytes: load(&c.rx_bytes),
            drop_no_connection: load(&c.drop_no_connection),
            drop_too_big: load(&c.drop_too_big),
            drop_send_error: load(&c.drop_send_error),
            drop_spoofed: load(&c.drop_spoofed),
            connects: load(&c.connects),
        }
    }
}

struct Inner {
    config: Config,
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    tun: tun_rs::AsyncDevice,
    tun_index: u32,
    handle: Handle,
    /// By peer name.
    links: RwLock<BTreeMap<String, Arc<Link>>>,
    /// Packets for no peer's range (a route left behind, a stale pod IP).
    drop_no_route: AtomicU64,
}

/// A node's end of the overlay; see the module docs. Dropping it stops
/// the tunnels and removes the TUN device (and with it the routes).
pub struct Tunnel {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(links) = self.inner.links.read() {
            for link in links.values() {
                link.close();
            }
        }
        self.inner.endpoint.close(0u32.into(), b"node stopping");
    }
}

fn transport(underlay_mtu: u16) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    // The whole underlay packet from the start (a UDP payload of the
    // interface's MTU less IPv4 and UDP headers); path-MTU discovery
    // still probes, and black-hole detection falls back to 1200 if the
    // path turns out smaller (pods then get fragmentation-needed).
    let udp_payload = underlay_mtu.saturating_sub(28).max(1200);
    transport.initial_mtu(udp_payload);
    let mut discovery = quinn::MtuDiscoveryConfig::default();
    discovery.upper_bound(udp_payload);
    transport.mtu_discovery_config(Some(discovery));
    // A peer silent for 5 s is gone; keep-alives every second keep NAT
    // and conntrack state and let RTT be measured on idle links.
    transport.keep_alive_interval(Some(Duration::from_secs(1)));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        5_000,
    ))));
    // Datagrams waiting to be sent: when full, quinn drops the oldest, so
    // an inner TCP flow sees loss (and slows down) instead of queueing
    // delay growing without bound. 2 MiB is about 1.6 ms at 10 Gbit/s
    // and a few RTTs of these paths; the receive side holds as much.
    transport.datagram_send_buffer_size(2 << 20);
    transport.datagram_receive_buffer_size(Some(4 << 20));
    // No streams are used.
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(0u32.into());
    transport
}

impl Tunnel {
    /// Creates the TUN device and the QUIC endpoint, and starts moving
    /// packets. No peers yet: see [`Tunnel::set_peers`].
    pub async fn start(config: Config) -> Result<Tunnel> {
        let tun_error = |source| Error::Tun {
            device: config.device.clone(),
            source,
        };
        let tun = tun_rs::DeviceBuilder::new()
            .name(&config.device)
            .mtu(config.underlay_mtu)
            .build_async()
            .map_err(tun_error)?;
        tun.set_mtu(config.underlay_mtu).map_err(tun_error)?;
        tun.enabled(true).map_err(tun_error)?;
        let tun_index = tun.if_index().map_err(tun_error)?;

        let transport = Arc::new(transport(config.underlay_mtu));
        let mut server = config.identity.server_config()?;
        server.transport_config(transport.clone());
        let mut client = config.identity.client_config()?;
        client.transport_config(transport);
        let socket = std::net::UdpSocket::bind(config.listen).map_err(|source| Error::Bind {
            address: config.listen,
            source,
        })?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| Error::Bind {
            address: config.listen,
            source,
        })?;

        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        let netlink = tokio::spawn(connection);

        if let Some(cidr) = config.cluster_cidr {
            handle
                .route()
                .add(
                    RouteMessageBuilder::<Ipv4Addr>::new()
                        .destination_prefix(cidr.network(), cidr.prefix_len())
                        .output_interface(tun_index)
                        .pref_source(config.local_address)
                        .build(),
                )
                .replace()
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    what: format!("routing the pod network {cidr} into {}", config.device),
                    source,
                })?;
        }
        tracing::info!(device = %config.device, listen = %config.listen, mtu = config.underlay_mtu, pod_mtu = pod_mtu(config.underlay_mtu), "overlay tunnel endpoint up");
        let inner = Arc::new(Inner {
            config,
            endpoint,
            client,
            tun,
            tun_index,
            handle,
            links: RwLock::new(BTreeMap::new()),
            drop_no_route: AtomicU64::new(0),
        });
        let tasks = vec![
            netlink,
            tokio::spawn(read_tun(inner.clone())),
            tokio::spawn(accept(inner.clone())),
        ];
        Ok(Tunnel { inner, tasks })
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.endpoint.local_addr().ok()
    }

    /// Makes the peers exactly `peers`: a route to each one's pod range
    /// through the TUN device and a connection dialed to it; peers no
    /// longer there lose both.
    pub async fn set_peers(&self, peers: Vec<Peer>) -> Result<()> {
        let wanted: BTreeMap<String, Peer> = peers
            .into_iter()
            .filter(|p| p.name != self.inner.config.node_name)
            .map(|p| (p.name.clone(), p))
            .collect();
        let (removed, added) = {
            let links = self.inner.links.read().map_err(|_| poisoned())?;
            let removed: Vec<Arc<Link>> = links
                .values()
                .filter(|l| wanted.get(&l.peer.name) != Some(&l.peer))
                .cloned()
                .collect();
            let added: Vec<Peer> = wanted
                .values()
                .filter(|p| links.get(&p.name).map(|l| &l.peer) != Some(*p))
                .cloned()
                .collect();
            (removed, added)
        };
        for link in removed {
            if let Ok(mut links) = self.inner.links.write() {
                links.remove(&link.peer.name);
            }
            link.close();
            if !added.iter().any(|p| p.pod_cidr == link.peer.pod_cidr) {
                self.inner.del_route(link.peer.pod_cidr).await?;
            }
            tracing::info!(peer = %link.peer.name, "overlay peer removed");
        }
        for peer in added {
            self.inner.add_route(peer.pod_cidr).await?;
            let link = Arc::new(Link {
                peer: peer.clone(),
                outgoing: RwLock::new(None),
                incoming: Mutex::new(Vec::new()),
                state: Mutex::new("connecting".into()),
                counters: Counters::default(),
                dialer: Mutex::new(None),
            });
            let task = tokio::spawn(dial(self.inner.clone(), link.clone()));
            if let Ok(mut dialer) = link.dialer.lock() {
                *dialer = Some(task);
            }
            if let Ok(mut links) = self.inner.links.write() {
                links.insert(peer.name.clone(), link);
            }
            tracing::info!(peer = %peer.name, endpoint = %peer.endpoint, pod_cidr = %peer.pod_cidr, "overlay peer added");
        }
        Ok(())
    }

    /// Every peer's state and counters.
    pub fn status(&self) -> Vec<PeerStatus> {
        self.inner
            .links
            .read()
            .map(|links| links.values().map(|l| l.status()).collect())
            .unwrap_or_default()
    }

    /// Packets that matched no peer.
    pub fn drop_no_route(&self) -> u64 {
        self.inner.drop_no_route.load(Ordering::Relaxed)
    }

    /// The counters in Prometheus' text format.
    pub fn metrics(&self) -> String {
        metrics::render(&self.status(), self.drop_no_route())
    }
}

fn poisoned() -> Error {
    Error::Socket(std::io::Error::other(
        "the overlay's peer table lock is poisoned",
    ))
}

impl Inner {
    fn route(&self, cidr: Ipv4Cidr) -> rtnetlink::packet_route::route::RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .output_interface(self.tun_index)
            .pref_source(self.config.local_address)
            .build()
    }

    async fn add_route(&self, cidr: Ipv4Cidr) -> Result<()> {
        self.handle
            .route()
            .add(self.route(cidr))
            .replace()
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("adding the route to {cidr} via {}", self.config.device),
                source,
            })
    }

    async fn del_route(&self, cidr: Ipv4Cidr) -> Result<()> {
        // Only a route of ours: one through the TUN device.
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        let mut ours = false;
        while let Ok(Some(route)) = routes.try_next().await {
            use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute};
            let dst = route.attributes.iter().any(|a| {
                matches!(a, RouteAttribute::Destination(RouteAddress::Inet(ip)) if *ip == cidr.network())
            }) && route.header.destination_prefix_length == cidr.prefix_len();
            let dev = route
                .attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == self.tun_index));
            ours |= dst && dev;
        }
        if !ours {
            return Ok(());
        }
        self.handle
            .route()
            .del(self.route(cidr))
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("removing the route to {cidr}"),
                source,
            })
    }

    fn link_for(&self, destination: Ipv4Addr) -> Option<Arc<Link>> {
        let links = self.links.read().ok()?;
        links
            .values()
            .find(|l| l.peer.pod_cidr.contains(destination))
            .cloned()
    }

    fn link_named(&self, name: &str) -> Option<Arc<Link>> {
        self.links.read().ok()?.get(name).cloned()
    }
}

/// TUN → peers: each packet to the connection of the peer whose range
/// holds its destination.
async fn read_tun(inner: Arc<Inner>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = match inner.tun.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "reading the TUN device");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let packet = &buf[..n];
        let Some(header) = packet::ipv4(packet) else {
            continue; // IPv6 router solicitations and the like
        };
        let Some(link) = inner.link_for(header.destination) else {
            inner.drop_no_route.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let connection = link.outgoing.read().ok().and_then(|c| c.clone());
        let Some(connection) = connection else {
            link.counters
                .drop_no_connection
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let max = connection.max_datagram_size().unwrap_or(0);
        if n > max {
            link.counters.drop_too_big.fetch_add(1, Ordering::Relaxed);
            let mtu = u16::try_from(max).unwrap_or(u16::MAX).max(68);
            if header.dont_fragment {
                // From the far end of the tunnel (the peer's gateway), as
                // from the next router: an error from one of this node's
                // own addresses would be a martian to the node's own
                // packets.
                let router = link
                    .peer
                    .pod_cidr
                    .gateway()
                    .unwrap_or(inner.config.local_address);
                if let Some(reply) = packet::fragmentation_needed(packet, router, mtu) {
                    let _ = inner.tun.send(&reply).await;
                }
            } else {
                tracing::debug!(peer = %link.peer.name, size = n, max, "dropping a packet without DF larger than the tunnel carries");
            }
            continue;
        }
        match connection.send_datagram(Bytes::copy_from_slice(packet)) {
            Ok(()) => {
                link.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                link.counters
                    .tx_bytes
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                link.counters
                    .drop_send_error
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Keeps a connection dialed to the peer: reconnects with back-off from
/// 200 ms to 5 s, reset after a connection that lasted.
async fn dial(inner: Arc<Inner>, link: Arc<Link>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let set_state = |s: String| {
            if let Ok(mut state) = link.state.lock() {
                *state = s;
            }
        };
        let attempt = async {
            let connecting = inner
                .endpoint
                .connect_with(inner.client.clone(), link.peer.endpoint, &link.peer.name)
                .map_err(|e| e.to_string())?;
            tokio::time::timeout(Duration::from_secs(5), connecting)
                .await
                .map_err(|_| "handshake timed out".to_string())?
                .map_err(|e| e.to_string())
        };
        match attempt.await {
            Ok(connection) => {
                link.counters.connects.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %link.peer.name, endpoint = %link.peer.endpoint, "overlay tunnel connected");
                if let Ok(mut outgoing) = link.outgoing.write() {
                    *outgoing = Some(connection.clone());
                }
                set_state("connected".into());
                let started = tokio::time::Instant::now();
                // Datagrams a peer sends back on this connection are
                // taken too (none today: each side sends on its own).
                let reason = tokio::select! {
                    reason = connection.closed() => reason.to_string(),
                    reason = receive(&inner, &link, &connection) => reason,
                };
                if let Ok(mut outgoing) = link.outgoing.write() {
                    *outgoing = None;
                }
                tracing::info!(peer = %link.peer.name, %reason, "overlay tunnel lost");
                set_state(format!("down: {reason}"));
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = Duration::from_millis(200);
                }
            }
            Err(e) => {
                tracing::debug!(peer = %link.peer.name, error = %e, "overlay tunnel not connected");
                set_state(format!("down: {e}"));
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Accepts peers' connections: only a Node that is a peer, from its
/// address.
async fn accept(inner: Arc<Inner>) {
    while let Some(incoming) = inner.endpoint.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let connection = match incoming.await {
                Ok(c) => c,
                Err(e) => {
                    tracing::info!(%remote, error = %e, "refused an overlay connection");
                    return;
                }
            };
            let name = identity::connection_peer_name(&connection);
            let link = name.as_deref().and_then(|n| inner.link_named(n));
            let link = match link {
                Some(link) if link.peer.endpoint.ip() == remote.ip() => link,
                Some(link) => {
                    tracing::warn!(%remote, node = %link.peer.name, expected = %link.peer.endpoint.ip(), "refused an overlay connection: the certificate names a node at another address");
                    connection.close(1u32.into(), b"not from the node's address");
                    return;
                }
                None => {
                    // Also a node this one has not seen yet (its Node
                    // watch is behind): the dialer retries.
                    tracing::info!(%remote, name = ?name, "refused an overlay connection: not a known node");
                    connection.close(1u32.into(), b"unknown node");
                    return;
                }
            };
            if let Ok(mut incoming) = link.incoming.lock() {
                incoming.retain(|c| c.close_reason().is_none());
                incoming.push(connection.clone());
            }
            let reason = receive(&inner, &link, &connection).await;
            tracing::debug!(peer = %link.peer.name, %reason, "overlay connection from peer ended");
            if let Ok(mut incoming) = link.incoming.lock() {
                incoming.retain(|c| c.stable_id() != connection.stable_id());
            };
        });
    }
}

/// Peer → TUN: datagrams from `link`'s node whose source is in its pod
/// range; returns why the connection ended.
async fn receive(inner: &Inner, link: &Link, connection: &quinn::Connection) -> String {
    loop {
        let datagram = match connection.read_datagram().await {
            Ok(d) => d,
            Err(e) => return e.to_string(),
        };
        let from_peer =
            packet::ipv4(&datagram).is_some_and(|h| link.peer.pod_cidr.contains(h.source));
        if !from_peer {
            link.counters.drop_spoofed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        link.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
        link.counters
            .rx_bytes
            .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if let Err(e) = inner.tun.send(&datagram).await {
            tracing::debug!(error = %e, "writing to the TUN device");
        }
    }
}
