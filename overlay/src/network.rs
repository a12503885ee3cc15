//! The pod network of one node, in the role a CNI bridge plugin plays for
//! the kubelet: a bridge holding the node's gateway address, and per pod a
//! network namespace joined to the bridge by a veth pair.
//!
//! ```text
//!   node namespace                           pod namespace (<state_dir>/netns/<id>)
//!   ───────────────────────────────────      ───────────────────────────────────────
//!   shoal0  10.244.1.1/24 (gateway)          lo   up
//!     ├── veth1a2b3c4d5e6 ◄── veth pair ──►  eth0 10.244.1.2/24
//!     └── veth…                              default via 10.244.1.1
//!   ip_forward = 1
//! ```
//!
//! Every step is idempotent: [`Network::new`] finds a bridge it made
//! before and leaves it as it is; [`Network::create_sandbox`] for an id
//! whose sandbox exists returns it, and one left half-made (an agent killed
//! midway) is rebuilt with the same address; [`Network::delete_sandbox`]
//! of something already gone succeeds. The state that survives an agent
//! restart lives in the kernel (bridge, veths, namespaces kept by bind
//! mounts) and in `state_dir` (address allocations, see [`crate::ipam`]).
//!
//! Between nodes, packets for other nodes' pod ranges will leave through
//! the node's routing table (a route per remote podCIDR towards the QUIC
//! tunnel device): pods already send everything that is not on their
//! bridge to the gateway, so adding nodes changes nothing here.
//!
//! Calls use a netlink socket owned by the tokio runtime `new` ran on, so
//! a `Network` is used from that runtime. One sandbox id is handled by one
//! caller at a time (the agent's pod worker); different ids in parallel
//! are fine.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::cidr::{self, Ipv4Cidr};
use crate::ipam::{self, Ipam};
use crate::names::{self, NameError, POD_INTERFACE};
use crate::netns;

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pod CIDR: {0}")]
    InvalidPodCidr(#[from] cidr::ParseError),
    #[error("pod CIDR {0} is too small: a node needs at least a /30 (a gateway and one pod)")]
    PodCidrTooSmall(Ipv4Cidr),
    #[error(transparent)]
    InvalidName(#[from] NameError),
    #[error("{name} exists and is not a bridge (it is a {kind}); choose another bridge name")]
    NotABridge { name: String, kind: String },
    #[error("interface {name} belongs to sandbox {owner:?}, not to {id:?}")]
    VethNameCollision {
        name: String,
        owner: String,
        id: String,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{what}: interface {name} not found")]
    LinkMissing { what: &'static str, name: String },
    #[error("opening a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Ipam(#[from] ipam::Error),
    #[error(transparent)]
    Netns(#[from] netns::Error),
}

impl Error {
    /// The node's range has no free address: retrying will not help until
    /// a sandbox is deleted.
    pub fn is_exhausted(&self) -> bool {
        matches!(self, Error::Ipam(ipam::Error::Exhausted { .. }))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a node's pod network is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeNetwork {
    /// The node bridge, e.g. `shoal0`.
    pub bridge: String,
    /// The node's range, `Node.spec.podCIDR`, e.g. `10.244.1.0/24`.
    pub pod_cidr: String,
    /// Where allocations and namespace files live (kept across restarts).
    pub state_dir: PathBuf,
    /// The MTU of the pods' interfaces (both ends of each veth): the
    /// underlay's less the tunnels' overhead, see
    /// [`crate::tunnel::pod_mtu`].
    pub mtu: u16,
}

/// One pod's network, what an OCI runtime and the pod's status need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    /// The network namespace, for runc's `linux.namespaces[].path`.
    pub netns_path: PathBuf,
    /// The pod's address (`status.podIP`), on `eth0` in the namespace.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The host end of the veth pair, on the bridge.
    pub host_veth: String,
}

/// A node's pod network; see the module docs.
#[derive(Debug)]
pub struct Network {
    handle: Handle,
    bridge: String,
    pod_cidr: Ipv4Cidr,
    gateway: Ipv4Addr,
    netns_dir: PathBuf,
    ipam: Ipam,
    mtu: u16,
}

impl Network {
    /// Makes sure the node bridge exists with the gateway address (the first
    /// host of the pod CIDR), is up, and that the node forwards IPv4. Safe
    /// to call again on a node where it ran before.
    pub async fn new(config: NodeNetwork) -> Result<Self> {
        names::validate_link_name(&config.bridge)?;
        let pod_cidr: Ipv4Cidr = config.pod_cidr.parse()?;
        let gateway = pod_cidr.gateway().ok_or(Error::PodCidrTooSmall(pod_cidr))?;
        let ipam = Ipam::open(config.state_dir.join("ipam"), pod_cidr)?;
        let netns_dir = config.state_dir.join("netns");
        fs::create_dir_all(&netns_dir).map_err(|source| Error::Io {
            what: "creating",
            path: netns_dir.clone(),
            source,
        })?;

        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(connection);

        let network = Self {
            handle,
            bridge: config.bridge,
            pod_cidr,
            gateway,
            netns_dir,
            ipam,
            mtu: config.mtu,
        };
        network.ensure_bridge().await?;
        enable_ip_forward()?;
        tracing::info!(bridge = %network.bridge, pod_cidr = %pod_cidr, %gateway, "node pod network ready");
        Ok(network)
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    pub fn pod_cidr(&self) -> Ipv4Cidr {
        self.pod_cidr
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// Where the namespace of sandbox `id` is (or would be) kept.
    pub fn netns_path(&self, id: &str) -> Result<PathBuf> {
        names::validate_sandbox_id(id)?;
        Ok(self.netns_dir.join(id))
    }

    async fn ensure_bridge(&self) -> Result<()> {
        let name = &self.bridge;
        let link = match find_link(&self.handle, name).await? {
            Some(link) => link,
            None => {
                match self
                    .handle
                    .link()
                    .add(LinkBridge::new(name).build())
                    .execute()
                    .await
                {
                    Ok(()) => tracing::info!(bridge = %name, "created the node bridge"),
                    // Another agent start won the race: fine.
                    Err(e) if errno(&e) == Some(Errno::EEXIST) => {}
                    Err(source) => {
                        return Err(Error::Netlink {
                            what: format!("creating bridge {name}"),
                            source,
                        })
                    }
                }
                find_link(&self.handle, name)
                    .await?
                    .ok_or_else(|| Error::LinkMissing {
                        what: "creating the node bridge",
                        name: name.clone(),
                    })?
            }
        };
        match link_kind(&link) {
            Some(InfoKind::Bridge) => {}
            kind => {
                return Err(Error::NotABridge {
                    name: name.clone(),
                    kind: kind.map_or_else(|| "device".to_string(), |k| k.to_string()),
                })
            }
        }
        let index = link.header.index;

        // A fixed MAC, set once: see names::bridge_mac.
        let mac = names::bridge_mac(self.gateway);
        let current_mac = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(m) => Some(m.as_slice()),
            _ => None,
        });
        if current_mac != Some(mac.as_slice()) {
            self.handle
                .link()
                .set(
                    LinkUnspec::new_with_index(index)
                        .address(mac.to_vec())
                        .build(),
                )
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    what: format!("setting the MAC address of {name}"),
                    source,
                })?;
        }

        // The gateway address, and no other IPv4 address: one left from an
        // earlier range of this node would route that range here.
        let mut has_gateway = false;
        for address in ipv4_addresses(&self.handle, index).await? {
            let (ip, prefix_len) = address_of(&address);
            if ip == Some(self.gateway) && prefix_len == self.pod_cidr.prefix_len() {
                has_gateway = true;
            } else {
                tracing::warn!(bridge = %name, address = ?ip, prefix_len, "removing an address that is not this node's gateway");
                self.handle
                    .address()
                    .del(address)
                    .execute()
                    .await
                    .map_err(|source| Error::Netlink {
                        what: format!("removing an old address from {name}"),
                        source,
                    })?;
            }
        }
        if !has_gateway {
            self.handle
                .address()
                .add(index, IpAddr::V4(self.gateway), self.pod_cidr.prefix_len())
                .replace()
                .execute()
                .await
                .map_err(|source| Error::Netlink {
                    what: format!(
                        "adding {}/{} to {name}",
                        self.gateway,
                        self.pod_cidr.prefix_len()
                    ),
                    source,
                })?;
        }

        if !link.header.flags.contains(LinkFlags::Up) {
            self.set_up(index, name).await?;
        }
        Ok(())
    }

    async fn set_up(&self, index: u32, name: &str) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("setting {name} up"),
                source,
            })
    }

    /// The network of sandbox `id`: a new namespace with `lo` up and `eth0`
    /// (the pod end of a veth pair whose host end is on the bridge) holding
    /// the next free address, with a default route via the gateway. An
    /// existing sandbox is returned as it is.
    pub async fn create_sandbox(&self, id: &str) -> Result<Sandbox> {
        names::validate_sandbox_id(id)?;
        if let Some(existing) = self.sandbox(id).await? {
            return Ok(existing);
        }
        let result = self.build_sandbox(id).await;
        if let Err(e) = &result {
            if !e.is_exhausted() {
                tracing::warn!(sandbox = %id, error = %e, "sandbox creation failed; removing what was made");
            }
            if let Err(cleanup) = self.delete_sandbox(id).await {
                tracing::warn!(sandbox = %id, error = %cleanup, "could not remove a half-made sandbox");
            }
        }
        result
    }

    async fn build_sandbox(&self, id: &str) -> Result<Sandbox> {
        let ip = self.ipam.allocate(id)?;
        let netns_path = self.netns_dir.join(id);
        netns::create(&netns_path).await?;

        let host_veth = names::host_veth_name(id);
        // A veth left by an interrupted creation is made again from scratch.
        if let Some(old) = find_link(&self.handle, &host_veth).await? {
            self.check_veth_owner(&old, &host_veth, id)?;
            self.delete_link(old.header.index, &host_veth).await?;
        }

        // The pod end is born inside the namespace as eth0, so it never
        // clashes with a node interface of that name.
        let ns = fs::File::open(&netns_path).map_err(|source| Error::Io {
            what: "opening",
            path: netns_path.clone(),
            source,
        })?;
        let peer = LinkUnspec::new_with_name(POD_INTERFACE)
            .setns_by_fd(ns.as_raw_fd())
            .mtu(u32::from(self.mtu))
            .build();
        let veth = LinkVeth::new(&host_veth, POD_INTERFACE)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(u32::from(self.mtu))
            .build();
        self.handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("creating veth pair {host_veth}/{POD_INTERFACE}"),
                source,
            })?;
        drop(ns);

        let bridge = find_link(&self.handle, &self.bridge)
            .await?
            .ok_or_else(|| Error::LinkMissing {
                what: "attaching a pod",
                name: self.bridge.clone(),
            })?;
        let host =
            find_link(&self.handle, &host_veth)
                .await?
                .ok_or_else(|| Error::LinkMissing {
                    what: "attaching a pod",
                    name: host_veth.clone(),
                })?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host.header.index)
                    .controller(bridge.header.index)
                    .up()
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("attaching {host_veth} to {}", self.bridge),
                source,
            })?;

        // Hairpin: a pod's packets may come back out of its own port, as
        // they will once a Service address DNATs a pod's connection to
        // itself (kube-proxy relies on the same).
        self.handle
            .link()
            .set_port(LinkBridgePort::new(host.header.index).hairpin(true).build())
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("turning hairpin mode on for {host_veth}"),
                source,
            })?;

        let prefix_len = self.pod_cidr.prefix_len();
        let gateway = self.gateway;
        netns::run_in(&netns_path, move || {
            configure_pod_side(ip, prefix_len, gateway)
        })
        .await??;

        // Last: the alias marks the sandbox complete (see `sandbox`), so one
        // interrupted before this point is rebuilt, not adopted.
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(host.header.index)
                    .alias(names::veth_alias(id))
                    .build(),
            )
            .execute()
            .await
            .map_err(|source| Error::Netlink {
                what: format!("labelling {host_veth} with its sandbox"),
                source,
            })?;

        tracing::info!(sandbox = %id, %ip, veth = %host_veth, "sandbox network created");
        Ok(Sandbox {
            id: id.to_string(),
            netns_path,
            ip,
            prefix_len,
            gateway,
            host_veth,
        })
    }

    fn check_veth_owner(&self, link: &LinkMessage, name: &str, id: &str) -> Result<()> {
        match link_alias(link) {
            Some(alias) => match names::sandbox_id_from_alias(alias) {
                Some(owner) if owner != id => Err(Error::VethNameCollision {
                    name: name.to_string(),
                    owner: owner.to_string(),
                    id: id.to_string(),
                }),
                _ => Ok(()),
            },
            // Made by a creation interrupted before the alias was set.
            None => Ok(()),
        }
    }

    async fn delete_link(&self, index: u32, name: &str) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(()),
            Err(source) => Err(Error::Netlink {
                what: format!("deleting {name}"),
                source,
            }),
        }
    }

    /// The sandbox `id` if it is complete: an address, a mounted namespace
    /// and its veth, labelled with the id once everything else was done. After an agent restart this is how a pod's network is
    /// found again; `None` means it has to be (re)created.
    pub async fn sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        names::validate_sandbox_id(id)?;
        let Some(ip) = self.ipam.lookup(id)? else {
            return Ok(None);
        };
        let netns_path = self.netns_dir.join(id);
        if !netns::is_mounted(&netns_path) {
            return Ok(None);
        }
        let host_veth = names::host_veth_name(id);
        let Some(link) = find_link(&self.handle, &host_veth).await? else {
            return Ok(None);
        };
        if link_alias(&link).and_then(names::sandbox_id_from_alias) != Some(id) {
            return Ok(None);
        }
        Ok(Some(Sandbox {
            id: id.to_string(),
            netns_path,
            ip,
            prefix_len: self.pod_cidr.prefix_len(),
            gateway: self.gateway,
            host_veth,
        }))
    }

    /// Removes the network of sandbox `id`: its veth (both ends), its
    /// namespace file, its address. Whatever is already gone is skipped.
    pub async fn delete_sandbox(&self, id: &str) -> Result<()> {
        names::validate_sandbox_id(id)?;
        let host_veth = names::host_veth_name(id);
        if let Some(link) = find_link(&self.handle, &host_veth).await? {
            match self.check_veth_owner(&link, &host_veth, id) {
                Ok(()) => self.delete_link(link.header.index, &host_veth).await?,
                // Not ours to delete; the rest of the sandbox still goes.
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "leaving a veth alone"),
            }
        }
        netns::remove(&self.netns_dir.join(id))?;
        let released = self.ipam.release(id)?;
        tracing::info!(sandbox = %id, ?released, "sandbox network deleted");
        Ok(())
    }

    /// Every sandbox id with anything left on this node (an address, a
    /// namespace file, a veth on the bridge), sorted: what an agent
    /// compares with its pods after a restart to delete the orphans.
    pub async fn list(&self) -> Result<Vec<String>> {
        let mut ids: BTreeSet<String> = self.ipam.allocations()?.into_values().collect();
        let entries = fs::read_dir(&self.netns_dir).map_err(|source| Error::Io {
            what: "reading",
            path: self.netns_dir.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                what: "reading",
                path: self.netns_dir.clone(),
                source,
            })?;
            if let Some(name) = entry.file_name().to_str() {
                if names::validate_sandbox_id(name).is_ok() {
                    ids.insert(name.to_string());
                }
            }
        }
        // Veths on this bridge only: another agent sharing the namespace
        // (with its own bridge) keeps its own sandboxes.
        if let Some(bridge) = find_link(&self.handle, &self.bridge).await? {
            let mut links = self.handle.link().get().execute();
            while let Some(link) = links.try_next().await.map_err(|source| Error::Netlink {
                what: "listing interfaces".to_string(),
                source,
            })? {
                if link_controller(&link) != Some(bridge.header.index) {
                    continue;
                }
                if let Some(id) = link_alias(&link).and_then(names::sandbox_id_from_alias) {
                    ids.insert(id.to_string());
                }
            }
        }
        Ok(ids.into_iter().collect())
    }
}

/// Inside the pod's namespace (on its own thread): `lo` up, the address on
/// `eth0`, `eth0` up, the default route via the gateway.
fn configure_pod_side(ip: Ipv4Addr, prefix_len: u8, gateway: Ipv4Addr) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(Error::Socket)?;
    runtime.block_on(async {
        // Created here, so the socket talks to the pod's namespace.
        let (connection, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(connection);
        let netlink = |what: String| move |source| Error::Netlink { what, source };

        let lo = find_link(&handle, "lo").await?.ok_or(Error::LinkMissing {
            what: "configuring a pod namespace",
            name: "lo".to_string(),
        })?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(netlink("setting lo up in the pod".to_string()))?;

        let eth0 = find_link(&handle, POD_INTERFACE)
            .await?
            .ok_or(Error::LinkMissing {
                what: "configuring a pod namespace",
                name: POD_INTERFACE.to_string(),
            })?;
        let index = eth0.header.index;
        handle
            .address()
            .add(index, IpAddr::V4(ip), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(netlink(format!(
                "adding {ip}/{prefix_len} to {POD_INTERFACE}"
            )))?;
        handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(netlink(format!("setting {POD_INTERFACE} up")))?;
        handle
            .route()
            .add(
                RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gateway)
                    .output_interface(index)
                    .build(),
            )
            .replace()
            .execute()
            .await
            .map_err(netlink(format!("adding the default route via {gateway}")))?;
        Ok(())
    })
}

/// Turns on IPv4 forwarding (of the caller's namespace): pods reach other
/// nodes and the outside through the node.
fn enable_ip_forward() -> Result<()> {
    let path = Path::new(IP_FORWARD);
    let io = |what| {
        move |source| Error::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let current = fs::read_to_string(path).map_err(io("reading"))?;
    if current.trim() != "1" {
        fs::write(path, "1\n").map_err(io("writing"))?;
        tracing::info!("enabled IPv4 forwarding");
    }
    Ok(())
}

/// The link called `name`, if there is one.
async fn find_link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link),
        Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(source) => Err(Error::Netlink {
            what: format!("looking up {name}"),
            source,
        }),
    }
}

async fn ipv4_addresses(handle: &Handle, index: u32) -> Result<Vec<AddressMessage>> {
    handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter(|a| futures::future::ready(a.header.family == AddressFamily::Inet))
        .try_collect()
        .await
        .map_err(|source| Error::Netlink {
            what: "listing addresses".to_string(),
            source,
        })
}

fn address_of(message: &AddressMessage) -> (Option<Ipv4Addr>, u8) {
    let ip = message.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    });
    let ip = ip.or_else(|| {
        message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        })
    });
    (ip, message.header.prefix_len)
}

fn link_kind(link: &LinkMessage) -> Option<&InfoKind> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(kind) => Some(kind),
            _ => None,
        }),
        _ => None,
    })
}

fn link_controller(link: &LinkMessage) -> Option<u32> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(index) => Some(*index),
        _ => None,
    })
}

fn link_alias(link: &LinkMessage) -> Option<&str> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(alias) => Some(alias.as_str()),
        _ => None,
    })
}

/// The errno of a kernel refusal.
fn errno(error: &rtnetlink::Error) -> Option<Errno> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(Errno::from_raw(message.raw_code().abs())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}

    /// The agent shares one Network between pod workers on a multi-thread
    /// runtime: it and its futures must cross threads.
    #[test]
    fn network_and_its_futures_can_cross_threads() {
        assert_send_sync::<Network>();
        #[allow(dead_code)]
        fn futures(network: &Network) {
            assert_send(&network.create_sandbox("x"));
            assert_send(&network.sandbox("x"));
            assert_send(&network.delete_sandbox("x"));
            assert_send(&network.list());
            assert_send(&Network::new(NodeNetwork {
                bridge: String::new(),
                pod_cidr: String::new(),
                state_dir: PathBuf::new(),
                mtu: 1500,
            }));
        }
    }

    #[test]
    fn exhaustion_is_told_apart() {
        let range: Ipv4Cidr = "10.244.1.0/30".parse().unwrap();
        let full = Error::Ipam(ipam::Error::Exhausted {
            range,
            capacity: range.pod_capacity(),
        });
        assert!(full.is_exhausted());
        assert_eq!(
            full.to_string(),
            "no free pod address in 10.244.1.0/30: all 1 are allocated"
        );
        assert!(!Error::PodCidrTooSmall(range).is_exhausted());
    }
}
