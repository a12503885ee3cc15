//! Addresses for LoadBalancer Services from a pool (`--loadbalancer-ip-pool`,
//! a CIDR), as MetalLB does on bare metal: each such Service gets the first
//! free address (or the `spec.loadBalancerIP` it asks for, when free) in
//! `status.loadBalancer.ingress`; no two share one; an address goes back to
//! the pool when its Service is deleted or stops being a LoadBalancer.
//!
//! `plan` is pure: the Services as they are in, the changes out. Services
//! are served oldest first, and addresses already held are kept, so a
//! stale view converges to the same answer.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use shoal_core::cidr::Ipv4Cidr;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid address pool: {0}")]
    InvalidPool(#[from] shoal_core::cidr::ParseError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The usable addresses of a CIDR, first and last inclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub cidr: Ipv4Cidr,
    first: u32,
    last: u32,
}

impl Pool {
    /// Parses `a.b.c.d/n`; the network and broadcast addresses are left
    /// out for prefixes shorter than /31 (a /31 has two usable addresses,
    /// a /32 one).
    pub fn parse(text: &str) -> Result<Pool> {
        let cidr = Ipv4Cidr::parse_masked(text)?;
        let (first, last) = cidr.hosts();
        Ok(Pool {
            cidr,
            first: u32::from(first),
            last: u32::from(last),
        })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(ip))
    }

    /// The lowest address not in `used`.
    pub fn first_free(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        // `used` is sorted: walk it alongside the range instead of probing
        // every address of a large pool.
        let mut candidate = self.first;
        for ip in used.iter().map(|ip| u32::from(*ip)) {
            if ip < candidate {
                continue;
            }
            if ip > candidate {
                break;
            }
            candidate = candidate.checked_add(1)?;
        }
        (candidate <= self.last).then(|| Ipv4Addr::from(candidate))
    }
}

/// A Service as the allocator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    /// Type LoadBalancer, with no `loadBalancerClass` (another
    /// implementation's).
    pub wants: bool,
    /// `spec.loadBalancerIP`, if set.
    pub requested: Option<Ipv4Addr>,
    /// The IPv4 addresses in `status.loadBalancer.ingress`.
    pub holds: Vec<Ipv4Addr>,
    /// For the order: creation time, then namespace and name.
    pub created: String,
}

impl Claim {
    pub fn from_service(svc: &Service) -> Claim {
        let spec = svc.spec.as_ref();
        Claim {
            namespace: svc.metadata.namespace.clone().unwrap_or_default(),
            name: svc.metadata.name.clone().unwrap_or_default(),
            wants: spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                && spec.and_then(|s| s.load_balancer_class.as_ref()).is_none(),
            requested: spec
                .and_then(|s| s.load_balancer_ip.as_deref())
                .and_then(|ip| ip.parse().ok()),
            holds: svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref().and_then(|ip| ip.parse().ok()))
                .collect(),
            created: svc
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write this address as the Service's ingress.
    Assign {
        namespace: String,
        name: String,
        ip: Ipv4Addr,
    },
    /// Clear the Service's ingress (it gave its address back).
    Release { namespace: String, name: String },
    /// Nothing to give: the Service stays `<pending>`.
    Pending {
        namespace: String,
        name: String,
        reason: String,
    },
}

pub fn plan(pool: Option<&Pool>, claims: &[Claim]) -> Vec<Change> {
    let mut claims: Vec<&Claim> = claims.iter().collect();
    claims.sort_by(|a, b| {
        (&a.created, &a.namespace, &a.name).cmp(&(&b.created, &b.namespace, &b.name))
    });
    let mut changes = Vec::new();
    let Some(pool) = pool else {
        for c in claims.iter().filter(|c| c.wants && c.holds.is_empty()) {
            changes.push(Change::Pending {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                reason: "no address pool is configured (--loadbalancer-ip-pool)".into(),
            });
        }
        return changes;
    };
    let mut used = BTreeSet::new();
    let mut waiting = Vec::new();
    for c in &claims {
        let ours: Vec<Ipv4Addr> = c
            .holds
            .iter()
            .copied()
            .filter(|ip| pool.contains(*ip))
            .collect();
        if !c.wants {
            if !ours.is_empty() {
                changes.push(Change::Release {
                    namespace: c.namespace.clone(),
                    name: c.name.clone(),
                });
            }
            continue;
        }
        // Kept: exactly one address of the pool, not taken by an older
        // Service, and the one asked for if one is.
        let keep = match ours.as_slice() {
            [ip] if c.holds.len() == 1
                && !used.contains(ip)
                && c.requested.is_none_or(|r| r == *ip) =>
            {
                Some(*ip)
            }
            _ => None,
        };
        match keep {
            Some(ip) => {
                used.insert(ip);
            }
            None => waiting.push(*c),
        }
    }
    for c in waiting {
        let pick = match c.requested {
            Some(ip) if !pool.contains(ip) => Err(format!(
                "requested IP {ip} is not in the pool {}",
                pool.cidr
            )),
            Some(ip) if used.contains(&ip) => Err(format!("requested IP {ip} is already in use")),
            Some(ip) => Ok(ip),
            None => pool
                .first_free(&used)
                .ok_or_else(|| format!("no available IPs in the pool {}", pool.cidr)),
        };
        match pick {
            Ok(ip) => {
                used.insert(ip);
                changes.push(Change::Assign {
                    namespace: c.namespace.clone(),
                    name: c.name.clone(),
                    ip,
                });
            }
            Err(reason) => changes.push(Change::Pending {
                namespace: c.namespace.clone(),
                name: c.name.clone(),
                reason,
            }),
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, created: &str, wants: bool, holds: &[&str]) -> Claim {
        Claim {
            namespace: "default".into(),
            name: name.into(),
            wants,
            requested: None,
            holds: holds.iter().map(|ip| ip.parse().unwrap()).collect(),
            created: created.into(),
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn pools_skip_network_and_broadcast() {
        let pool = Pool::parse("172.30.255.0/30").unwrap();
        assert_eq!(pool.first_free(&BTreeSet::new()), Some(ip("172.30.255.1")));
        assert!(!pool.contains(ip("172.30.255.0")) && !pool.contains(ip("172.30.255.3")));
        let used = BTreeSet::from([ip("172.30.255.1"), ip("172.30.255.2")]);
        assert_eq!(pool.first_free(&used), None);
        let pair = Pool::parse("10.0.0.4/31").unwrap();
        assert!(pair.contains(ip("10.0.0.4")) && pair.contains(ip("10.0.0.5")));
        let one = Pool::parse("10.0.0.9/32").unwrap();
        assert_eq!(one.first_free(&BTreeSet::new()), Some(ip("10.0.0.9")));
        // Host bits are ignored, as in a route.
        assert_eq!(
            Pool::parse("10.1.2.3/24").unwrap().cidr.to_string(),
            "10.1.2.0/24"
        );
        assert!(Pool::parse("10.0.0.0").is_err());
        assert!(Pool::parse("10.0.0.0/33").is_err());
        assert!(Pool::parse("fd00::/64").is_err());
        // Gaps are filled first.
        let big = Pool::parse("10.0.0.0/24").unwrap();
        let used = BTreeSet::from([ip("10.0.0.1"), ip("10.0.0.3")]);
        assert_eq!(big.first_free(&used), Some(ip("10.0.0.2")));
    }

    #[test]
    fn services_get_addresses_in_order_and_the_rest_wait() {
        let pool = Pool::parse("172.30.255.0/30").unwrap();
        let claims = vec![
            claim("c", "3", true, &[]),
            claim("a", "1", true, &[]),
            claim("b", "2", true, &["172.30.255.2"]),
            claim("plain", "0", false, &[]),
        ];
        let changes = plan(Some(&pool), &claims);
        assert_eq!(
            changes,
            vec![
                Change::Assign {
                    namespace: "default".into(),
                    name: "a".into(),
                    ip: ip("172.30.255.1")
                },
                Change::Pending {
                    namespace: "default".into(),
                    name: "c".into(),
                    reason: "no available IPs in the pool 172.30.255.0/30".into()
                },
            ]
        );
    }

    #[test]
    fn addresses_come_back_and_are_never_shared() {
        let pool = Pool::parse("172.30.255.0/30").unwrap();
        // "a" was deleted: "c" gets its address.
        let claims = vec![
            claim("b", "2", true, &["172.30.255.2"]),
            claim("c", "3", true, &[]),
        ];
        assert_eq!(
            plan(Some(&pool), &claims),
            vec![Change::Assign {
                namespace: "default".into(),
                name: "c".into(),
                ip: ip("172.30.255.1")
            }]
        );
        // A type change releases; a duplicate is moved off.
        let claims = vec![
            claim("a", "1", false, &["172.30.255.1"]),
            claim("b", "2", true, &["172.30.255.2"]),
            claim("dup", "3", true, &["172.30.255.2"]),
        ];
        assert_eq!(
            plan(Some(&pool), &claims),
            vec![
                Change::Release {
                    namespace: "default".into(),
                    name: "a".into()
                },
                Change::Assign {
                    namespace: "default".into(),
                    name: "dup".into(),
                    ip: ip("172.30.255.1")
                },
            ]
        );
    }

    #[test]
    fn requested_addresses_and_no_pool() {
        let pool = Pool::parse("10.0.0.0/29").unwrap();
        let mut wants_five = claim("a", "1", true, &[]);
        wants_five.requested = Some(ip("10.0.0.5"));
        let mut outside = claim("b", "2", true, &[]);
        outside.requested = Some(ip("192.168.0.1"));
        let changes = plan(Some(&pool), &[wants_five.clone(), outside]);
        assert_eq!(
            changes[0],
            Change::Assign {
                namespace: "default".into(),
                name: "a".into(),
                ip: ip("10.0.0.5")
            }
        );
        assert!(
            matches!(&changes[1], Change::Pending { reason, .. } if reason.contains("not in the pool"))
        );
        assert!(
            matches!(&plan(None, &[wants_five])[0], Change::Pending { reason, .. } if reason.contains("--loadbalancer-ip-pool"))
        );
    }
}
