//! IPv4 ranges in CIDR notation (`10.244.1.0/24`): the cluster's pod
//! network and its per-node ranges (`Node.spec.podCIDR`), the Service
//! range, LoadBalancer pools. The roles of the addresses in a node's range:
//!
//! ```text
//!   10.244.1.0     network address        never handed out
//!   10.244.1.1     gateway (node bridge)  never handed out
//!   10.244.1.2 ..  pods
//!   10.244.1.255   broadcast              never handed out
//! ```
//!
//! Pure: no I/O, so every rule here is unit-tested.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Why a string is not a usable IPv4 CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{input:?} is not in CIDR notation (expected an address and a prefix length, like 10.244.1.0/24)")]
    MissingPrefix { input: String },
    #[error("{input:?}: {address:?} is not an IPv4 address")]
    BadAddress { input: String, address: String },
    #[error("{input:?}: prefix length {prefix:?} is not a number from 0 to 32")]
    BadPrefix { input: String, prefix: String },
    #[error("{input:?} has host bits set; the network is {network}")]
    HostBitsSet { input: String, network: Ipv4Cidr },
}

/// An IPv4 network: its (canonical) network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// Parses as Go's `net.ParseCIDR` does for flags: host bits are
    /// allowed and cleared (`10.1.2.3/24` is `10.1.2.0/24`).
    pub fn parse_masked(input: &str) -> Result<Self, ParseError> {
        match input.parse() {
            Err(ParseError::HostBitsSet { network, .. }) => Ok(network),
            other => other,
        }
    }

    /// The network containing `address` with this prefix length (host bits
    /// cleared). `None` when `prefix_len > 32`.
    pub fn containing(address: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        let mask = mask(prefix_len)?;
        Some(Self {
            network: Ipv4Addr::from(u32::from(address) & mask),
            prefix_len,
        })
    }

    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The last address of the range.
    pub fn broadcast(&self) -> Ipv4Addr {
        let host_bits = !mask(self.prefix_len).unwrap_or(u32::MAX);
        Ipv4Addr::from(u32::from(self.network) | host_bits)
    }

    /// Number of addresses in the range, network and broadcast included.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        let mask = mask(self.prefix_len).unwrap_or(u32::MAX);
        u32::from(address) & mask == u32::from(self.network)
    }

    /// The node's own address on its bridge: the first host of the range.
    /// `None` for /31 and /32, which have no room for a gateway and a pod.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix_len <= 30).then(|| Ipv4Addr::from(u32::from(self.network) + 1))
    }

    /// The addresses pods may get: everything but the network address, the
    /// gateway and the broadcast address, in ascending order. Empty for /31
    /// and /32.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + Clone {
        let (first, last) = if self.prefix_len <= 30 {
            (u32::from(self.network) + 2, u32::from(self.broadcast()) - 1)
        } else {
            // An empty range.
            (1, 0)
        };
        (first..=last).map(Ipv4Addr::from)
    }

    /// How many pods the range holds.
    pub fn pod_capacity(&self) -> u64 {
        self.size().saturating_sub(3)
    }

    /// The `n`-th address of the range (0 is the network address); `None`
    /// past its end.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.network) + n as u32))
    }

    /// The first and last addresses a host may have: the range without its
    /// network and broadcast addresses, except in a /31 (two hosts, RFC
    /// 3021) and a /32 (one).
    pub fn hosts(&self) -> (Ipv4Addr, Ipv4Addr) {
        let (network, broadcast) = (u32::from(self.network), u32::from(self.broadcast()));
        if self.prefix_len < 31 {
            (Ipv4Addr::from(network + 1), Ipv4Addr::from(broadcast - 1))
        } else {
            (self.network, Ipv4Addr::from(broadcast))
        }
    }

    /// The ranges of length `prefix_len` this one splits into, in order
    /// (none when `prefix_len` is shorter than this range's or over 32).
    pub fn subnets(&self, prefix_len: u8) -> impl Iterator<Item = Ipv4Cidr> + Clone {
        let count = if (self.prefix_len..=32).contains(&prefix_len) {
            1u64 << (prefix_len - self.prefix_len)
        } else {
            0
        };
        let (network, step) = (
            u64::from(u32::from(self.network)),
            1u64 << (32 - prefix_len.min(32)),
        );
        (0..count).map(move |i| Ipv4Cidr {
            network: Ipv4Addr::from((network + i * step) as u32),
            prefix_len,
        })
    }
}

fn mask(prefix_len: u8) -> Option<u32> {
    match prefix_len {
        0 => Some(0),
        1..=32 => Some(u32::MAX << (32 - u32::from(prefix_len))),
        _ => None,
    }
}

impl FromStr for Ipv4Cidr {
    type Err = ParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (address, prefix) =
            input
                .trim()
                .split_once('/')
                .ok_or_else(|| ParseError::MissingPrefix {
                    input: input.to_string(),
                })?;
        let address: Ipv4Addr = address.parse().map_err(|_| ParseError::BadAddress {
            input: input.to_string(),
            address: address.to_string(),
        })?;
        let bad_prefix = || ParseError::BadPrefix {
            input: input.to_string(),
            prefix: prefix.to_string(),
        };
        // u8::from_str accepts a leading '+'; CIDR notation does not.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_prefix());
        }
        let prefix_len: u8 = prefix.parse().map_err(|_| bad_prefix())?;
        let cidr = Self::containing(address, prefix_len).ok_or_else(bad_prefix)?;
        if cidr.network != address {
            return Err(ParseError::HostBitsSet {
                input: input.to_string(),
                network: cidr,
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_a_node_range() {
        let c = cidr("10.244.1.0/24");
        assert_eq!(c.network(), Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(c.prefix_len(), 24);
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(c.gateway(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert_eq!(c.to_string(), "10.244.1.0/24");
        assert_eq!(c.size(), 256);
        assert_eq!(c.pod_capacity(), 253);
    }

    #[test]
    fn pod_addresses_skip_network_gateway_and_broadcast() {
        let c = cidr("10.244.1.0/24");
        let all: Vec<_> = c.pod_addresses().collect();
        assert_eq!(all.len(), 253);
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 244, 1, 2)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 244, 1, 254)));

        let small: Vec<_> = cidr("192.168.0.8/29").pod_addresses().collect();
        assert_eq!(
            small,
            (10..=14)
                .map(|d| Ipv4Addr::new(192, 168, 0, d))
                .collect::<Vec<_>>()
        );
        assert_eq!(cidr("192.168.0.8/30").pod_addresses().count(), 1);
        assert_eq!(cidr("192.168.0.8/31").pod_addresses().count(), 0);
        assert_eq!(cidr("192.168.0.8/31").gateway(), None);
        assert_eq!(cidr("192.168.0.8/32").pod_addresses().count(), 0);
    }

    #[test]
    fn nth_hosts_and_subnets() {
        let c = cidr("10.96.0.0/12");
        assert_eq!(c.size(), 1 << 20);
        assert_eq!(c.nth(10), Some(Ipv4Addr::new(10, 96, 0, 10)));
        assert_eq!(c.nth(1 << 20), None);
        assert_eq!(
            cidr("172.18.255.0/24").hosts(),
            (
                Ipv4Addr::new(172, 18, 255, 1),
                Ipv4Addr::new(172, 18, 255, 254)
            )
        );
        let p2p = cidr("10.0.0.2/31");
        assert_eq!(
            p2p.hosts(),
            (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 3))
        );
        let one = cidr("10.0.0.7/32");
        assert_eq!(one.hosts(), (one.network(), one.network()));

        let nodes: Vec<String> = cidr("10.244.0.0/16")
            .subnets(24)
            .map(|c| c.to_string())
            .collect();
        assert_eq!(nodes.len(), 256);
        assert_eq!(nodes[0], "10.244.0.0/24");
        assert_eq!(nodes[255], "10.244.255.0/24");
        assert_eq!(cidr("10.0.0.0/8").subnets(8).count(), 1);
        assert_eq!(cidr("10.0.0.0/24").subnets(16).count(), 0);
        assert_eq!(cidr("10.0.0.0/24").subnets(33).count(), 0);
        assert_eq!(
            cidr("0.0.0.0/0").subnets(1).last(),
            Some(cidr("128.0.0.0/1"))
        );
        assert_eq!(cidr("10.0.0.0/30").subnets(32).count(), 4);
    }

    #[test]
    fn contains() {
        let c = cidr("10.244.1.0/24");
        assert!(c.contains(Ipv4Addr::new(10, 244, 1, 77)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 2, 1)));
        assert!(cidr("0.0.0.0/0").contains(Ipv4Addr::new(8, 8, 8, 8)));
        assert_eq!(cidr("0.0.0.0/0").broadcast(), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn rejects_what_is_not_a_canonical_cidr() {
        assert!(matches!(
            "10.244.1.0".parse::<Ipv4Cidr>(),
            Err(ParseError::MissingPrefix { .. })
        ));
        assert!(matches!(
            "10.244.1/24".parse::<Ipv4Cidr>(),
            Err(ParseError::BadAddress { .. })
        ));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/x",
            "10.0.0.0/-1",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(ParseError::BadPrefix { .. })),
                "{bad}"
            );
        }
        let err = "10.244.1.5/24".parse::<Ipv4Cidr>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"10.244.1.5/24\" has host bits set; the network is 10.244.1.0/24"
        );
        assert!("fd00::/64".parse::<Ipv4Cidr>().is_err());
        assert_eq!(
            Ipv4Cidr::parse_masked("10.244.1.5/24"),
            Ok(cidr("10.244.1.0/24"))
        );
        assert!(Ipv4Cidr::parse_masked("10.244.1.5").is_err());
    }
}
