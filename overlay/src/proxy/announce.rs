//! The LoadBalancer addresses this node answers for, as MetalLB's layer-2
//! mode does: each address is announced by one node (the first, by name,
//! of the nodes holding ready endpoints of its Service, so every agent
//! agrees without talking), which holds it as a /32 on `lo`. The kernel
//! then answers ARP for it on the node's interfaces, traffic for it
//! arrives at that node, and the table's maps steer it to the endpoints.
//! When the endpoints move, another node takes the address over.
//!
//! The addresses carry the label `lo:shoal-lb`, so that a restarted agent
//! finds the ones it added and nothing else is touched.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::AddressFamily;

/// The label of the announced addresses (at most 15 bytes, starting with
/// the device's name, as the kernel requires).
pub const LABEL: &str = "lo:shoal-lb";

/// Makes the labelled addresses on `lo` exactly `wanted`.
pub async fn announce(wanted: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|e| format!("a netlink socket: {e}"))?;
    let connection = tokio::spawn(connection);
    let result = reconcile(&handle, wanted).await;
    connection.abort();
    result
}

async fn reconcile(handle: &rtnetlink::Handle, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), String> {
    let lo = handle
        .link()
        .get()
        .match_name("lo".to_string())
        .execute()
        .try_next()
        .await
        .map_err(|e| format!("looking up lo: {e}"))?
        .ok_or("no lo device")?;
    let index = lo.header.index;
    let ours: Vec<(Ipv4Addr, AddressMessage)> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_filter(|a| futures::future::ready(a.header.family == AddressFamily::Inet))
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| format!("listing the addresses of lo: {e}"))?
        .into_iter()
        .filter(|a| {
            a.attributes
                .iter()
                .any(|attr| matches!(attr, AddressAttribute::Label(l) if l == LABEL))
        })
        .filter_map(|a| {
            let ip = a.attributes.iter().find_map(|attr| match attr {
                AddressAttribute::Local(IpAddr::V4(ip))
                | AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            })?;
            Some((ip, a))
        })
        .collect();
    for (ip, message) in &ours {
        if !wanted.contains(ip) {
            handle
                .address()
                .del(message.clone())
                .execute()
                .await
                .map_err(|e| format!("removing {ip} from lo: {e}"))?;
            tracing::info!(address = %ip, "no longer answering for a LoadBalancer address");
        }
    }
    for ip in wanted {
        if ours.iter().any(|(held, _)| held == ip) {
            continue;
        }
        let mut request = handle.address().add(index, IpAddr::V4(*ip), 32);
        request
            .message_mut()
            .attributes
            .push(AddressAttribute::Label(LABEL.to_string()));
        request
            .execute()
            .await
            .map_err(|e| format!("adding {ip} to lo: {e}"))?;
        tracing::info!(address = %ip, "answering for a LoadBalancer address");
    }
    Ok(())
}
