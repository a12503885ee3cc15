//! The `kubernetes` Service's endpoints: every apiserver replica writes its
//! own address into Endpoints `default/kubernetes` and EndpointSlice
//! `default/kubernetes`, and a replica that dies drops out, as Kubernetes'
//! "lease" endpoint reconciler does.
//!
//! ```text
//!   every RENEW_INTERVAL: put /registry/masterleases/<ip>:<port>  (store lease, TTL LEASE_TTL)
//!   masterleases change (put, expiry, delete) ─┐
//!   every RENEW_INTERVAL ──────────────────────┴▶ list masterleases ─▶ wanted() ─▶ write what differs
//! ```
//!
//! Each replica keeps a key under `/registry/masterleases/` attached to a
//! store lease with a TTL; a replica that stops renewing loses its key when
//! the lease expires, and the watch on the prefix lets the survivors take
//! its address out at once. A replica stopped cleanly removes its own key
//! first. All replicas compute the same objects from the same keys, so they
//! do not fight.
//!
//! Differences from Kubernetes: replicas on one address with different
//! ports (several apiservers on one machine) are told apart: the key is
//! `<ip>:<port>` (Kubernetes: `<ip>`), and since an Endpoints subset and an
//! EndpointSlice carry one port list for all their addresses, each port gets
//! its own subset and slice (`kubernetes`, then `kubernetes-<port>`); with
//! one port for all (the usual case) the objects are Kubernetes' own.
//! Loopback addresses are allowed (Kubernetes refuses them in Endpoints),
//! so that `shoal up` on 127.0.0.1 has endpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{EndpointAddress, EndpointPort, EndpointSubset, Endpoints};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::json;
use shoal_store::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, DeleteRangeRequest, LeaseGrantRequest,
    LeaseRevokeRequest, PutRequest,
};
use tokio::sync::Notify;
use tonic::transport::Channel;

use crate::server::Api as Server;

/// The Service (in `default`) whose endpoints are the apiservers.
pub const SERVICE: &str = "kubernetes";
/// Where each replica's key lives, as in Kubernetes.
pub const LEASE_PREFIX: &str = "/registry/masterleases/";
/// How long a replica's key outlives its last renewal (Kubernetes: 15 s).
pub const LEASE_TTL: Duration = Duration::from_secs(15);
/// How often a replica renews its key and checks the objects (Kubernetes:
/// 10 s; more often here, so that a slow store election does not let a
/// live replica's key lapse).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);
/// How soon a failed renewal is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// One store call's limit before the next member is tried.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the store refused the apiserver's lease: {0}")]
    Store(String),
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error(transparent)]
    List(#[from] crate::storage::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The address an apiserver gives the cluster: `--advertise-address` when
/// given; else the bind address unless it is 0.0.0.0 (or `::`); else this
/// machine's address on its default route, or its first non-loopback IPv4;
/// 127.0.0.1 when it has none.
pub fn advertise_address(flag: Option<IpAddr>, bind_address: &str) -> IpAddr {
    if let Some(ip) = flag {
        return ip;
    }
    match bind_address.parse::<IpAddr>() {
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => default_route_address()
            .or_else(|| {
                std::fs::read_to_string("/proc/net/fib_trie")
                    .ok()
                    .and_then(|text| first_local_ipv4(&text))
            })
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    }
}

/// The source address the routing table picks for the outside world
/// (connecting a UDP socket sends nothing).
fn default_route_address() -> Option<IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// The first non-loopback local IPv4 address in `/proc/net/fib_trie`
/// (a line `|-- <ip>` followed by `/32 host LOCAL`).
pub fn first_local_ipv4(fib_trie: &str) -> Option<IpAddr> {
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(ip) = line.strip_prefix("|-- ") {
            last = ip.trim().parse().ok();
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                return Some(IpAddr::V4(ip));
            }
        }
    }
    None
}

/// One apiserver replica as its key says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Master {
    pub ip: IpAddr,
    pub port: u16,
}

impl Master {
    pub fn key(&self) -> String {
        format!("{LEASE_PREFIX}{}", SocketAddr::new(self.ip, self.port))
    }

    /// The key's value: an Endpoints object, as Kubernetes stores there.
    pub fn value(&self) -> serde_json::Value {
        json!({
            "kind": "Endpoints",
            "apiVersion": "v1",
            "metadata": {"name": self.ip.to_string()},
            "subsets": [{
                "addresses": [{"ip": self.ip.to_string()}],
                "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}],
            }],
        })
    }

    /// Reads a key's value back; `None` when it is not one of ours.
    pub fn parse(value: &[u8]) -> Option<Master> {
        let endpoints: Endpoints = serde_json::from_slice(value).ok()?;
        let subset = endpoints.subsets?.into_iter().next()?;
        let ip = subset.addresses?.first()?.ip.parse().ok()?;
        let port = subset.ports?.first()?.port;
        Some(Master {
            ip,
            port: u16::try_from(port).ok()?,
        })
    }
}

fn https_port(port: u16) -> EndpointPort {
    EndpointPort {
        name: Some("https".into()),
        port: i32::from(port),
        protocol: Some("TCP".into()),
        app_protocol: None,
    }
}

/// The replicas grouped as the objects need them: by address family, then
/// port, each with its addresses in order.
fn groups(masters: &BTreeSet<Master>) -> BTreeMap<(bool, u16), Vec<IpAddr>> {
    let mut groups: BTreeMap<(bool, u16), Vec<IpAddr>> = BTreeMap::new();
    for m in masters {
        groups
            .entry((m.ip.is_ipv6(), m.port))
            .or_default()
            .push(m.ip);
    }
    groups
}

/// Endpoints `default/kubernetes` for these replicas: one subset per port.
pub fn wanted_endpoints(masters: &BTreeSet<Master>) -> Endpoints {
    let mut by_port: BTreeMap<u16, Vec<IpAddr>> = BTreeMap::new();
    for m in masters {
        by_port.entry(m.port).or_default().push(m.ip);
    }
    Endpoints {
        metadata: ObjectMeta {
            name: Some(SERVICE.into()),
            namespace: Some("default".into()),
            labels: Some([(SKIP_MIRROR_LABEL.to_string(), "true".to_string())].into()),
            ..ObjectMeta::default()
        },
        subsets: Some(
            by_port
                .into_iter()
                .map(|(port, ips)| EndpointSubset {
                    addresses: Some(
                        ips.into_iter()
                            .map(|ip| EndpointAddress {
                                ip: ip.to_string(),
                                ..EndpointAddress::default()
                            })
                            .collect(),
                    ),
                    not_ready_addresses: None,
                    ports: Some(vec![https_port(port)]),
                })
                .collect(),
        ),
    }
}

/// The EndpointSlices: `kubernetes` for the first (family, port) group,
/// `kubernetes-<port>` (`kubernetes-v6-<port>`) for any other.
pub fn wanted_slices(masters: &BTreeSet<Master>) -> Vec<EndpointSlice> {
    groups(masters)
        .into_iter()
        .enumerate()
        .map(|(i, ((v6, port), ips))| {
            let name = match (i, v6) {
                (0, _) => SERVICE.to_string(),
                (_, false) => format!("{SERVICE}-{port}"),
                (_, true) => format!("{SERVICE}-v6-{port}"),
            };
            let port = https_port(port);
            EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some("default".into()),
                    labels: Some([(SERVICE_NAME_LABEL.to_string(), SERVICE.to_string())].into()),
                    ..ObjectMeta::default()
                },
                address_type: if v6 { "IPv6" } else { "IPv4" }.into(),
                endpoints: ips
                    .into_iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(true),
                            ..EndpointConditions::default()
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
                ports: Some(vec![SlicePort {
                    name: port.name,
                    port: Some(port.port),
                    protocol: port.protocol,
                    app_protocol: None,
                }]),
            }
        })
        .collect()
}

fn labels_cover<K: kube::Resource>(current: &K, wanted: &K) -> bool {
    wanted
        .meta()
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| current.meta().labels.as_ref().and_then(|l| l.get(k)) == Some(v))
}

/// Whether the stored Endpoints already say what `wanted` says.
pub fn endpoints_match(current: &Endpoints, wanted: &Endpoints) -> bool {
    current.subsets == wanted.subsets && labels_cover(current, wanted)
}

/// Whether a stored slice already says what `wanted` says.
pub fn slice_matches(current: &EndpointSlice, wanted: &EndpointSlice) -> bool {
    current.address_type == wanted.address_type
        && current.endpoints == wanted.endpoints
        && current.ports == wanted.ports
        && labels_cover(current, wanted)
}

/// The store calls the replica's own key needs (leases are not part of
/// the REST layer's store client): tried on each member in turn.
struct Leases {
    channels: Vec<Channel>,
}

impl Leases {
    fn new(endpoints: &[String], tls: Option<&Arc<rustls::ClientConfig>>) -> Leases {
        let channels = endpoints
            .iter()
            .filter_map(|url| {
                let url = if url.contains("://") {
                    url.clone()
                } else {
                    format!("http://{url}")
                };
                shoal_store::tls::channel(&url, tls, |e| {
                    e.connect_timeout(Duration::from_secs(1)).tcp_nodelay(true)
                })
                .ok()
            })
            .collect();
        Leases { channels }
    }

    /// Puts `key` under a fresh lease of `ttl`; returns the lease.
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<i64> {
        let mut last = String::from("no store endpoints");
        for channel in &self.channels {
            let grant = LeaseGrantRequest {
                ttl: ttl.as_secs() as i64,
                id: 0,
            };
            let granted = tokio::time::timeout(
                CALL_TIMEOUT,
                LeaseClient::new(channel.clone()).lease_grant(grant),
            )
            .await;
            let id = match granted {
                Ok(Ok(response)) => response.into_inner().id,
                Ok(Err(status)) => {
                    last = status.message().to_string();
                    continue;
                }
                Err(_) => {
                    last = "timed out".into();
                    continue;
                }
            };
            let put = PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.clone(),
                lease: id,
                ..PutRequest::default()
            };
            match tokio::time::timeout(CALL_TIMEOUT, KvClient::new(channel.clone()).put(put)).await
            {
                Ok(Ok(_)) => return Ok(id),
                Ok(Err(status)) => last = status.message().to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(Error::Store(last))
    }

    /// Best effort: a lease no key uses any more expires by itself anyway.
    async fn revoke(&self, id: i64) {
        for channel in &self.channels {
            let mut client = LeaseClient::new(channel.clone());
            let call = client.lease_revoke(LeaseRevokeRequest { id });
            if let Ok(Ok(_)) = tokio::time::timeout(CALL_TIMEOUT, call).await {
                return;
            }
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let mut last = String::from("no store endpoints");
        for channel in &self.channels {
            let request = DeleteRangeRequest {
                key: key.as_bytes().to_vec(),
                ..DeleteRangeRequest::default()
            };
            let mut client = KvClient::new(channel.clone());
            let call = client.delete_range(request);
            match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(status)) => last = status.message().to_string(),
                Err(_) => last = "timed out".into(),
            }
        }
        Err(Error::Store(last))
    }
}

/// The running reconciler of one apiserver.
pub struct Handle {
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Takes this replica's address out (within a few seconds at most),
    /// then stops.
    pub async fn stop(mut self) {
        self.stop.notify_one();
        if tokio::time::timeout(Duration::from_secs(3), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

/// Starts the reconciler for the replica at `me`, writing the objects
/// through `client` (the apiserver's loopback client).
pub fn start(
    server: Arc<Server>,
    client: kube::Client,
    etcd_servers: &[String],
    me: Master,
) -> Handle {
    let stop = Arc::new(Notify::new());
    let leases = Leases::new(etcd_servers, server.store.tls());
    let task = tokio::spawn(run(server, client, leases, me, stop.clone()));
    Handle { stop, task }
}

async fn run(
    server: Arc<Server>,
    client: kube::Client,
    leases: Leases,
    me: Master,
    stop: Arc<Notify>,
) {
    tracing::info!(address = %SocketAddr::new(me.ip, me.port), "advertising this apiserver in Endpoints default/kubernetes");
    let changed = Arc::new(Notify::new());
    let watch = tokio::spawn(watch_leases(server.clone(), changed.clone()));
    let value = serde_json::to_vec(&me.value()).unwrap_or_default();
    let mut lease: Option<i64> = None;
    let mut next_renewal = tokio::time::Instant::now();
    loop {
        if tokio::time::Instant::now() >= next_renewal {
            // Renewed first, whatever happens below, so that at least the
            // other replicas list this one.
            next_renewal = match leases.put(&me.key(), value.clone(), LEASE_TTL).await {
                Ok(id) => {
                    if let Some(old) = lease.replace(id) {
                        leases.revoke(old).await;
                    }
                    tokio::time::Instant::now() + RENEW_INTERVAL
                }
                Err(e) => {
                    // The store may still be electing a leader (at start-up).
                    tracing::warn!(error = %e, "cannot renew this apiserver's lease; retrying");
                    tokio::time::Instant::now() + RETRY
                }
            };
        }
        if let Err(e) = reconcile(&server, &client).await {
            tracing::debug!(error = %e, "reconciling the kubernetes Service's endpoints failed");
        }
        tokio::select! {
            () = changed.notified() => {}
            () = tokio::time::sleep_until(next_renewal) => {}
            () = stop.notified() => break,
        }
    }
    watch.abort();
    // Out of the objects before this replica stops serving, as
    // Kubernetes' apiserver does on shutdown.
    if let Err(e) = leases.delete(&me.key()).await {
        tracing::warn!(error = %e, "cannot remove this apiserver's lease");
    }
    if let Some(id) = lease {
        leases.revoke(id).await;
    }
    if let Err(e) = reconcile(&server, &client).await {
        tracing::debug!(error = %e, "removing this apiserver from the kubernetes endpoints failed");
    }
}

/// Wakes the loop whenever a key under the prefix changes (a replica
/// starts, renews, stops, or its lease expires).
async fn watch_leases(server: Arc<Server>, changed: Arc<Notify>) {
    loop {
        let start = match server.store.revision().await {
            Ok(revision) => revision + 1,
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match server.store.watch(LEASE_PREFIX, start).await {
            Ok(stream) => {
                let mut stream = std::pin::pin!(stream);
                // Anything may have changed while no watch was open.
                changed.notify_one();
                while let Some(Ok(changes)) = stream.next().await {
                    if changes
                        .iter()
                        .any(|c| !matches!(c, crate::storage::Change::Progress(_)))
                    {
                        changed.notify_one();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot watch the apiservers' leases"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The replicas whose keys are alive now.
async fn masters(server: &Server) -> Result<BTreeSet<Master>> {
    let listed = server.store.list(LEASE_PREFIX, None, 0, 0).await?;
    Ok(listed
        .kvs
        .iter()
        .filter_map(|kv| Master::parse(&kv.value))
        .collect())
}

/// Brings the objects in line with the live keys (a few tries when another
/// replica writes at the same time).
async fn reconcile(server: &Server, client: &kube::Client) -> Result<()> {
    let mut tries = 0;
    loop {
        tries += 1;
        match reconcile_once(server, client).await {
            Err(Error::Api(kube::Error::Api(e))) if e.code == 409 && tries < 3 => continue,
            other => return other,
        }
    }
}

async fn reconcile_once(server: &Server, client: &kube::Client) -> Result<()> {
    let masters = masters(server).await?;
    // No keys at all (not even this replica's, just renewed) means the
    // listing is wrong, not that there are no apiservers: keep what is
    // there, as Kubernetes does.
    if masters.is_empty() {
        return Ok(());
    }
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let wanted = wanted_endpoints(&masters);
    match endpoints.get_opt(SERVICE).await? {
        None => {
            endpoints.create(&PostParams::default(), &wanted).await?;
        }
        Some(current) if !endpoints_match(&current, &wanted) => {
            let mut updated = current.clone();
            updated.subsets = wanted.subsets;
            updated
                .labels_mut()
                .extend(wanted.metadata.labels.unwrap_or_default());
            endpoints
                .replace(SERVICE, &PostParams::default(), &updated)
                .await?;
        }
        Some(_) => {}
    }

    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let existing = slices
        .list(&ListParams::default().labels(&format!("{SERVICE_NAME_LABEL}={SERVICE}")))
        .await?
        .items;
    let wanted = wanted_slices(&masters);
    for slice in &wanted {
        match existing.iter().find(|s| s.name_any() == slice.name_any()) {
            None => {
                slices.create(&PostParams::default(), slice).await?;
            }
            Some(current) if !slice_matches(current, slice) => {
                let mut updated = current.clone();
                updated.address_type = slice.address_type.clone();
                updated.endpoints = slice.endpoints.clone();
                updated.ports = slice.ports.clone();
                updated
                    .labels_mut()
                    .extend(slice.metadata.labels.clone().unwrap_or_default());
                slices
                    .replace(&slice.name_any(), &PostParams::default(), &updated)
                    .await?;
            }
            Some(_) => {}
        }
    }
    // Slices of a port no replica uses any more.
    for stale in existing
        .iter()
        .filter(|s| !wanted.iter().any(|w| w.name_any() == s.name_any()))
    {
        match slices
            .delete(&stale.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ip: &str, port: u16) -> Master {
        Master {
            ip: ip.parse().unwrap(),
            port,
        }
    }

    #[test]
    fn keys_and_values_round_trip() {
        let me = m("10.0.0.5", 6443);
        assert_eq!(me.key(), "/registry/masterleases/10.0.0.5:6443");
        let value = serde_json::to_vec(&me.value()).unwrap();
        assert_eq!(Master::parse(&value), Some(me));
        let v6 = m("fd00::1", 6443);
        assert_eq!(v6.key(), "/registry/masterleases/[fd00::1]:6443");
        assert_eq!(Master::parse(b"garbage"), None);
        assert_eq!(Master::parse(br#"{"subsets": []}"#), None);
    }

    #[test]
    fn replicas_on_one_port_make_kubernetes_own_objects() {
        let masters: BTreeSet<Master> = [m("10.0.0.6", 6443), m("10.0.0.5", 6443)].into();
        let endpoints = serde_json::to_value(wanted_endpoints(&masters)).unwrap();
        assert_eq!(
            endpoints,
            json!({
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                "subsets": [{
                    "addresses": [{"ip": "10.0.0.5"}, {"ip": "10.0.0.6"}],
                    "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
                }],
            })
        );
        let slices = wanted_slices(&masters);
        assert_eq!(slices.len(), 1);
        assert_eq!(
            serde_json::to_value(&slices[0]).unwrap(),
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": "kubernetes", "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4",
                "endpoints": [
                    {"addresses": ["10.0.0.5"], "conditions": {"ready": true}},
                    {"addresses": ["10.0.0.6"], "conditions": {"ready": true}},
                ],
                "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
            })
        );
    }

    #[test]
    fn replicas_on_one_address_with_different_ports_get_a_subset_each() {
        let masters: BTreeSet<Master> = [m("127.0.0.1", 20001), m("127.0.0.1", 20002)].into();
        let endpoints = wanted_endpoints(&masters);
        let subsets = endpoints.subsets.unwrap();
        assert_eq!(subsets.len(), 2);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 20001);
        assert_eq!(subsets[1].ports.as_ref().unwrap()[0].port, 20002);
        let names: Vec<String> = wanted_slices(&masters)
            .iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(names, ["kubernetes", "kubernetes-20002"]);
    }

    #[test]
    fn comparisons_ignore_what_the_server_adds() {
        let masters: BTreeSet<Master> = [m("10.0.0.5", 6443)].into();
        let wanted = wanted_endpoints(&masters);
        let mut stored = wanted.clone();
        stored.metadata.resource_version = Some("7".into());
        stored.labels_mut().insert("other".into(), "label".into());
        assert!(endpoints_match(&stored, &wanted));
        let fewer = wanted_endpoints(&[m("10.0.0.6", 6443)].into());
        assert!(!endpoints_match(&stored, &fewer));
        let slice = wanted_slices(&masters).remove(0);
        let mut stored = slice.clone();
        stored.metadata.uid = Some("u".into());
        assert!(slice_matches(&stored, &slice));
        stored.labels_mut().clear();
        assert!(!slice_matches(&stored, &slice));
    }

    #[test]
    fn the_advertised_address_follows_the_flag_then_the_bind_address() {
        let given: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(advertise_address(Some(given), "127.0.0.1"), given);
        assert_eq!(
            advertise_address(None, "127.0.0.1"),
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        );
        assert_eq!(
            advertise_address(None, "192.168.5.5"),
            "192.168.5.5".parse::<IpAddr>().unwrap()
        );
        assert!(!advertise_address(None, "0.0.0.0").is_unspecified());
    }

    #[test]
    fn local_addresses_from_the_fib_trie() {
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 172.18.0.3\n        /32 link BROADCAST\n     |-- 172.18.0.2\n        /32 host LOCAL\n";
        assert_eq!(first_local_ipv4(trie), Some("172.18.0.2".parse().unwrap()));
        assert_eq!(
            first_local_ipv4("Main:\n |-- 127.0.0.1\n /32 host LOCAL\n"),
            None
        );
    }
}
