//! The little of IPv4 the tunnel reads: addresses, the don't-fragment
//! bit, and the ICMP "fragmentation needed" a router sends back when a
//! packet is larger than the next hop carries (RFC 792, RFC 1191).

use std::net::Ipv4Addr;

/// The fields of an IPv4 header the tunnel needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Header {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub dont_fragment: bool,
    pub header_len: usize,
    pub protocol: u8,
}

/// The header of `packet`, or None when it is not a whole IPv4 header.
pub fn ipv4(packet: &[u8]) -> Option<Ipv4Header> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    Some(Ipv4Header {
        source: addr(12),
        destination: addr(16),
        dont_fragment: packet[6] & 0x40 != 0,
        header_len,
        protocol: packet[9],
    })
}

const ICMP: u8 = 1;

/// The ICMP "destination unreachable, fragmentation needed and DF set"
/// (type 3, code 4) that `router` sends to the source of `packet`, naming
/// `mtu` as the next hop's MTU: the original header and the first 8 bytes
/// of its payload, as RFC 792 asks. None for a packet that must not be
/// answered with ICMP (not IPv4, or itself an ICMP error).
pub fn fragmentation_needed(packet: &[u8], router: Ipv4Addr, mtu: u16) -> Option<Vec<u8>> {
    let header = ipv4(packet)?;
    if header.protocol == ICMP {
        // Never an error about an error (RFC 1122 3.2.2); echo is fine.
        let icmp_type = *packet.get(header.header_len)?;
        if !matches!(icmp_type, 0 | 8) {
            return None;
        }
    }
    let quoted = &packet[..packet.len().min(header.header_len + 8)];
    let icmp_len = 8 + quoted.len();
    let total = 20 + icmp_len;
    let mut out = vec![0u8; total];
    // IPv4 header.
    out[0] = 0x45;
    out[1] = 0xc0; // internetwork control, as routers send errors
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64; // TTL
    out[9] = ICMP;
    out[12..16].copy_from_slice(&router.octets());
    out[16..20].copy_from_slice(&header.source.octets());
    let sum = checksum(&out[..20]);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    // ICMP.
    let icmp = &mut out[20..];
    icmp[0] = 3;
    icmp[1] = 4;
    icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
    icmp[8..].copy_from_slice(quoted);
    let sum = checksum(icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(out)
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet of `len` bytes with DF set.
    fn packet(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 244, 1, 2]);
        p[16..20].copy_from_slice(&[10, 244, 2, 3]);
        let sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn reads_the_header() {
        let h = ipv4(&packet(100)).unwrap();
        assert_eq!(h.source, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(h.destination, Ipv4Addr::new(10, 244, 2, 3));
        assert!(h.dont_fragment);
        assert_eq!(h.header_len, 20);
        assert_eq!(ipv4(&[0x60; 40]), None, "IPv6 is not read");
        assert_eq!(ipv4(&[0x45; 10]), None, "a short header is not read");
    }

    #[test]
    fn fragmentation_needed_goes_back_to_the_sender_with_valid_checksums() {
        let original = packet(1500);
        let router = Ipv4Addr::new(10, 244, 1, 1);
        let reply = fragmentation_needed(&original, router, 1380).unwrap();
        let h = ipv4(&reply).unwrap();
        assert_eq!(h.source, router);
        assert_eq!(h.destination, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(h.protocol, ICMP);
        assert_eq!(reply.len(), 20 + 8 + 28);
        assert_eq!(checksum(&reply[..20]), 0, "IP checksum verifies");
        assert_eq!(checksum(&reply[20..]), 0, "ICMP checksum verifies");
        assert_eq!(&reply[20..22], &[3, 4]);
        assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1380);
        assert_eq!(&reply[28..], &original[..28]);
        // No error about an ICMP error.
        assert_eq!(fragmentation_needed(&reply, router, 1380), None);
    }
}
