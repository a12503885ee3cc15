//! shoal's pod network. Today: the network of one node, in the role a CNI
//! plugin plays for the kubelet. The agent calls [`Network::new`] once it
//! knows its `Node.spec.podCIDR`, then [`Network::create_sandbox`] before a
//! pod's containers start (runc joins the namespace at
//! [`Sandbox::netns_path`]) and [`Network::delete_sandbox`] after they
//! stopped.
//!
//! ```text
//!   names    sandbox ids, veth names, the bridge MAC             (pure)
//!   ipam     one file per allocated address under state_dir
//!   netns    namespaces kept by bind mounts; running code inside one
//!   network  bridge + veth + addresses + routes over netlink (rtnetlink)
//!   tunnel   the QUIC tunnels between nodes: a TUN device, a route per
//!            other node's podCIDR, mutual TLS with node certificates
//!   firewall accepts for the node's interfaces in the host's iptables
//!   proxy    the service proxy: Services and EndpointSlices as one
//!            nftables table (kube-proxy's nftables mode)
//! ```
//!
//! Coming next, in the same table: network policies.

pub mod firewall;
pub mod ipam;
pub mod names;
pub mod netns;
pub mod network;
pub mod proxy;
pub mod tunnel;

pub use network::{Error, Network, NodeNetwork, Result, Sandbox};
/// The node's range and the roles of its addresses.
pub use shoal_core::cidr::{self, Ipv4Cidr};
