//! ClusterIP and NodePort allocation for Services.
//!
//! Each allocated address or port is a key of its own
//! (`/registry/shoal/serviceips/<ip>`, `/registry/shoal/nodeports/<port>`),
//! created in the same transaction as the Service with a guard that it is
//! absent. Two apiservers that pick the same address cannot both succeed, so
//! there are no duplicates without any lock; deleting the Service deletes
//! its keys in the same transaction too.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};
use shoal_core::cidr::Ipv4Cidr;

use crate::error::{ApiError, Cause, Result};
use crate::resources::Resource;
use crate::server::Api;
use crate::storage::{Guard, Op};

const IPS: &str = "/registry/shoal/serviceips/";
const PORTS: &str = "/registry/shoal/nodeports/";

/// The Service range (`--service-cluster-ip-range`, such as 10.96.0.0/12):
/// a /8 to a /28, host bits cleared as Go's `net.ParseCIDR` does.
pub fn parse_service_cidr(text: &str) -> Result<Ipv4Cidr, String> {
    let cidr = Ipv4Cidr::parse_masked(text).map_err(|e| e.to_string())?;
    if !(8..=28).contains(&cidr.prefix_len()) {
        return Err(format!(
            "{text:?}: the prefix length must be between 8 and 28"
        ));
    }
    Ok(cidr)
}

/// A range of ports such as 30000-32767.
pub fn parse_port_range(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("{text:?} is not a port range (like 30000-32767)"))?;
    let low: u16 = low.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    let high: u16 = high.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if low == 0 || low > high {
        return Err(format!("{text:?} is empty"));
    }
    Ok((low, high))
}

async fn taken(api: &Api, prefix: &str) -> Result<HashSet<String>> {
    let listed = api.store.list(prefix, None, 0, 0).await?;
    Ok(listed
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key[prefix.len()..]).into_owned())
        .collect())
}

/// Picks a free value at random, trying the whole range before giving up.
fn pick(
    taken: &HashSet<String>,
    low: u32,
    high: u32,
    show: impl Fn(u32) -> String,
) -> Option<String> {
    let span = high - low + 1;
    let start = rand::thread_rng().gen_range(0..span);
    (0..span)
        .map(|i| show(low + (start + i) % span))
        .find(|v| !taken.contains(v))
}

/// The node port of `spec.ports[i]`: the one asked for, checked to be in
/// range and free, or a free one picked at random; either way marked used.
fn node_port(
    (low, high): (u16, u16),
    used: &mut HashSet<String>,
    protocol: &str,
    asked: Option<i64>,
    i: usize,
) -> Result<i64, Cause> {
    let field = format!("spec.ports[{i}].nodePort");
    let number = match asked {
        Some(n) => {
            if n < i64::from(low) || n > i64::from(high) {
                return Err(Cause::invalid(
                    field,
                    &json!(n),
                    format!("provided port is not in the valid range. The range of valid ports is {low}-{high}"),
                ));
            }
            if used.contains(&format!("{protocol}-{n}")) {
                return Err(Cause::invalid(
                    field,
                    &json!(n),
                    "provided port is already allocated",
                ));
            }
            n
        }
        None => {
            let chosen = pick(used, u32::from(low), u32::from(high), |n| {
                format!("{protocol}-{n}")
            })
            .ok_or_else(|| {
                Cause::invalid(
                    field,
                    &json!(0),
                    "failed to allocate a nodePort: range is full",
                )
            })?;
            chosen
                .rsplit('-')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_default()
        }
    };
    used.insert(format!("{protocol}-{number}"));
    Ok(number)
}

/// Allocates what a new Service needs, adding the guards and puts to its
/// transaction. Returns whether anything was allocated.
pub async fn on_create(
    api: &Api,
    resource: &Resource,
    object: &mut Value,
    guards: &mut Vec<Guard>,
    ops: &mut Vec<Op>,
) -> Result<bool> {
    if resource.kind != "Service" || !resource.group.is_empty() {
        return Ok(false);
    }
    let name = crate::object::name(object).to_string();
    let owner = format!(
        "{}/{}",
        crate::object::namespace(object).unwrap_or_default(),
        name
    );
    let kind = object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let mut allocated = false;
    let invalid = |causes| ApiError::invalid(resource, &name, causes);

    if kind != "ExternalName" {
        let requested = object
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let ip = if requested == "None" {
            None
        } else if requested.is_empty() {
            let used = taken(api, IPS).await?;
            let cidr = api.service_cidr;
            // Dynamic addresses come from above the first 1/16 of the
            // range, which is left for addresses chosen by hand (such as
            // the DNS service's).
            let size = u32::try_from(cidr.size()).unwrap_or(u32::MAX);
            let high = size - 2;
            let low = (size / 16).clamp(16, 256).min(high);
            let show = |n: u32| {
                cidr.nth(n.into())
                    .map(|ip| ip.to_string())
                    .unwrap_or_default()
            };
            let ip = pick(&used, low, high, show).ok_or_else(|| {
                invalid(vec![Cause::invalid(
                    "spec.clusterIPs",
                    &json!([]),
                    "failed to allocate IP: range is full",
                )])
            })?;
            Some(ip)
        } else {
            let parsed: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(vec![Cause::invalid(
                    "spec.clusterIPs[0]",
                    &json!(requested),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                )])
            })?;
            if !api.service_cidr.contains(parsed) {
                return Err(invalid(vec![Cause::invalid(
                    "spec.clusterIPs",
                    &json!([requested]),
                    format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                        api.service_cidr
                    ),
                )]));
            }
            if taken(api, IPS).await?.contains(&requested) {
                return Err(invalid(vec![Cause::invalid(
                    "spec.clusterIPs",
                    &json!([requested]),
                    format!("failed to allocate IP {requested}: provided IP is already allocated"),
                )]));
            }
            Some(requested)
        };
        match ip {
            Some(ip) => {
                let key = format!("{IPS}{ip}");
                guards.push(Guard::Absent(key.clone()));
                ops.push(Op::Put(key, owner.clone().into_bytes()));
                object["spec"]["clusterIP"] = json!(ip);
                object["spec"]["clusterIPs"] = json!([ip]);
                allocated = true;
            }
            None => {
                object["spec"]["clusterIPs"] = json!(["None"]);
            }
        }
    }

    if kind == "NodePort" || kind == "LoadBalancer" {
        let automatic = allocates_node_ports(object, &kind);
        let mut used = taken(api, PORTS).await?;
        let count = object
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        for i in 0..count {
            let port = &mut object["spec"]["ports"][i];
            let protocol = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let asked = port
                .get("nodePort")
                .and_then(Value::as_i64)
                .filter(|n| *n != 0);
            if asked.is_none() && !automatic {
                continue;
            }
            let number = node_port(api.node_ports, &mut used, &protocol, asked, i)
                .map_err(|cause| invalid(vec![cause]))?;
            let key = format!("{PORTS}{protocol}-{number}");
            guards.push(Guard::Absent(key.clone()));
            ops.push(Op::Put(key, owner.clone().into_bytes()));
            port["nodePort"] = json!(number);
            allocated = true;
        }
    }
    Ok(allocated)
}

/// Does a Service of type `kind` get node ports it did not ask for? A
/// LoadBalancer with `allocateLoadBalancerNodePorts: false` does not (one
/// asked for by number is still allocated), as in Kubernetes.
fn allocates_node_ports(object: &Value, kind: &str) -> bool {
    kind == "NodePort"
        || object
            .pointer("/spec/allocateLoadBalancerNodePorts")
            .and_then(Value::as_bool)
            != Some(false)
}

/// The allocation keys a Service holds.
fn held_keys(object: &Value) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(ip) = object.pointer("/spec/clusterIP").and_then(Value::as_str) {
        if ip != "None" && !ip.is_empty() {
            keys.push(format!("{IPS}{ip}"));
        }
    }
    for port in object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(n) = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            let protocol = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP");
            keys.push(format!("{PORTS}{protocol}-{n}"));
        }
    }
    keys
}

/// The deletes that release what a Service held.
pub fn on_delete(resource: &Resource, object: &Value) -> Vec<Op> {
    if resource.kind != "Service" || !resource.group.is_empty() {
        return Vec::new();
    }
    held_keys(object).into_iter().map(Op::Delete).collect()
}

/// An updated Service: node ports for ports that need one (a type changed
/// to NodePort, a port added), none for types without them, and the keys
/// of the new allocations taken and of the old ones released in the
/// update's transaction.
pub async fn on_update(
    api: &Api,
    resource: &Resource,
    old: &Value,
    object: &mut Value,
    guards: &mut Vec<Guard>,
    ops: &mut Vec<Op>,
) -> Result<()> {
    if resource.kind != "Service" || !resource.group.is_empty() {
        return Ok(());
    }
    let name = crate::object::name(object).to_string();
    let owner = format!(
        "{}/{name}",
        crate::object::namespace(object).unwrap_or_default()
    );
    let kind = object
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let wants_ports = kind == "NodePort" || kind == "LoadBalancer";
    let automatic = allocates_node_ports(object, &kind);
    let before: HashSet<String> = held_keys(old).into_iter().collect();
    let count = object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let mut used: Option<HashSet<String>> = None;
    for i in 0..count {
        let port = &mut object["spec"]["ports"][i];
        let protocol = port
            .get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string();
        let current = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0);
        match (wants_ports, current) {
            (true, None) if !automatic => {}
            (false, Some(_)) => {
                if let Some(map) = port.as_object_mut() {
                    map.remove("nodePort");
                }
            }
            (true, asked)
                if asked.is_none_or(|n| !before.contains(&format!("{PORTS}{protocol}-{n}"))) =>
            {
                // A new port, or one chosen by hand: as at create.
                if used.is_none() {
                    used = Some(taken(api, PORTS).await?);
                }
                let used = used.get_or_insert_with(HashSet::new);
                let number = node_port(api.node_ports, used, &protocol, asked, i)
                    .map_err(|cause| ApiError::invalid(resource, &name, vec![cause]))?;
                port["nodePort"] = json!(number);
            }
            _ => {}
        }
    }
    let after: HashSet<String> = held_keys(object).into_iter().collect();
    for key in after.difference(&before) {
        guards.push(Guard::Absent(key.clone()));
        ops.push(Op::Put(key.clone(), owner.clone().into_bytes()));
    }
    for key in before.difference(&after) {
        ops.push(Op::Delete(key.clone()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let c = parse_service_cidr("10.96.0.0/12").unwrap();
        assert!(c.contains("10.100.1.2".parse().unwrap()));
        assert!(!c.contains("10.112.0.1".parse().unwrap()));
        assert_eq!(parse_service_cidr("10.96.0.1/12").unwrap(), c);
        assert!(parse_service_cidr("10.96.0.0").is_err());
        assert!(parse_service_cidr("10.96.0.0/29").is_err());
        assert_eq!(parse_service_cidr("10.96.0.0/28").unwrap().size(), 16);
        assert_eq!(parse_port_range("30000-32767").unwrap(), (30000, 32767));
        assert!(parse_port_range("5-1").is_err());
    }

    #[test]
    fn picks_skip_taken_values() {
        let taken: HashSet<String> = (1..10).map(|n| n.to_string()).collect();
        assert_eq!(pick(&taken, 1, 10, |n| n.to_string()), Some("10".into()));
        let all: HashSet<String> = (1..=10).map(|n| n.to_string()).collect();
        assert_eq!(pick(&all, 1, 10, |n| n.to_string()), None);
    }
}
