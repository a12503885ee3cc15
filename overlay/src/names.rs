//! Names the pod network derives from a sandbox id, and the checks on names
//! that come from outside (sandbox ids, the bridge name).
//!
//! A sandbox id becomes a file name (`<state_dir>/netns/<id>`) and, hashed,
//! an interface name (`veth<11 hex digits>`: Linux allows 15 bytes), so
//! both must be derived the same way after an agent restart: the hash is
//! FNV-1a, fixed here, not `std`'s `DefaultHasher`, whose algorithm may
//! change between Rust releases.
//!
//! Pure: no I/O.

use std::net::Ipv4Addr;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_LINK_NAME: usize = 15;

/// Longest sandbox id: room for `<namespace>_<name>_<uid>`-style ids while
/// staying far below file-name limits.
pub const MAX_SANDBOX_ID: usize = 200;

/// The pod-side interface, as Kubernetes network plugins name it.
pub const POD_INTERFACE: &str = "eth0";

/// Prefix of the alias set on a host veth; the rest is the sandbox id, so
/// that a veth can be traced back to its sandbox after a restart.
pub const VETH_ALIAS_PREFIX: &str = "shoal-sandbox:";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("sandbox id {id:?} is invalid: {reason}")]
    InvalidSandboxId { id: String, reason: &'static str },
    #[error("interface name {name:?} is invalid: {reason}")]
    InvalidLinkName { name: String, reason: &'static str },
}

/// A sandbox id is used as a file name: 1 to [`MAX_SANDBOX_ID`] characters
/// from `[A-Za-z0-9_.-]`, not starting with a dot (no `.`, `..`, hidden
/// files). Pod UIDs and `<namespace>_<name>_<uid>` both qualify.
pub fn validate_sandbox_id(id: &str) -> Result<(), NameError> {
    let invalid = |reason| NameError::InvalidSandboxId {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if id.len() > MAX_SANDBOX_ID {
        return Err(invalid("it is longer than 200 characters"));
    }
    if id.starts_with('.') {
        return Err(invalid("it starts with a dot"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(invalid(
            "only letters, digits, '_', '.' and '-' are allowed",
        ));
    }
    Ok(())
}

/// An interface name the kernel accepts: 1 to 15 bytes, no '/', ':' or
/// whitespace, not `.` or `..`.
pub fn validate_link_name(name: &str) -> Result<(), NameError> {
    let invalid = |reason| NameError::InvalidLinkName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("it is empty"));
    }
    if name.len() > MAX_LINK_NAME {
        return Err(invalid("it is longer than 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it is '.' or '..'"));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(invalid("'/', ':' and whitespace are not allowed"));
    }
    Ok(())
}

/// 64-bit FNV-1a: small, stable across Rust releases and machines.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// MurmurHash3's 64-bit finaliser: FNV-1a alone leaves ids that differ in
/// their last byte (`pod-1`, `pod-2`) with names that differ in one digit.
fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The host end of a sandbox's veth pair: `veth` and 11 hex digits (44 bits)
/// of the id's hash, 15 bytes, the most an interface name may have.
pub fn host_veth_name(sandbox_id: &str) -> String {
    format!("veth{:011x}", mix64(fnv1a64(sandbox_id.as_bytes())) >> 20)
}

/// The alias written on a sandbox's host veth.
pub fn veth_alias(sandbox_id: &str) -> String {
    format!("{VETH_ALIAS_PREFIX}{sandbox_id}")
}

/// The sandbox id in a host veth's alias, if the alias is one of ours.
pub fn sandbox_id_from_alias(alias: &str) -> Option<&str> {
    alias
        .strip_prefix(VETH_ALIAS_PREFIX)
        .filter(|id| validate_sandbox_id(id).is_ok())
}

/// A fixed MAC address for the node bridge, derived from its gateway
/// address: locally administered, unicast (`02:`), then `5c` and the four
/// bytes of the address. A bridge without a set address takes the lowest
/// address of its ports, so every pod joining could change the gateway's
/// MAC under the other pods' ARP caches.
pub fn bridge_mac(gateway: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = gateway.octets();
    [0x02, 0x5c, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sandbox_ids() {
        for ok in [
            "a",
            "0b6c4a3e-1f0d-4c53-9e1a-2b0e6f1d9c11",
            "default_nginx-7c5ddbdf54-x2x7l_0b6c4a3e",
            "a.b",
        ] {
            assert_eq!(validate_sandbox_id(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "a\0b", "é"] {
            assert!(validate_sandbox_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_sandbox_id(&"x".repeat(MAX_SANDBOX_ID)).is_ok());
        assert!(validate_sandbox_id(&"x".repeat(MAX_SANDBOX_ID + 1)).is_err());
        assert_eq!(
            validate_sandbox_id("a/b").unwrap_err().to_string(),
            "sandbox id \"a/b\" is invalid: only letters, digits, '_', '.' and '-' are allowed"
        );
    }

    #[test]
    fn link_names() {
        for ok in ["shoal0", "cni0", "br-0123456789ab", "a"] {
            assert_eq!(validate_link_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "sixteen-bytes-xx"] {
            assert!(validate_link_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        // Pinned: an agent restarted with a newer build must find the veths
        // it created before.
        assert_eq!(host_veth_name("pod-a"), "veth0a92269eaa0");
        assert_eq!(host_veth_name("pod-b"), "veth8ffd7c42dfd");
        let name = host_veth_name("0b6c4a3e-1f0d-4c53-9e1a-2b0e6f1d9c11");
        assert_eq!(name.len(), MAX_LINK_NAME);
        assert!(name.starts_with("veth"));
        assert_eq!(validate_link_name(&name), Ok(()));

        let names: std::collections::BTreeSet<_> = (0..10_000)
            .map(|i| host_veth_name(&format!("pod-{i}")))
            .collect();
        assert_eq!(names.len(), 10_000);
    }

    #[test]
    fn aliases_round_trip() {
        assert_eq!(veth_alias("pod-1"), "shoal-sandbox:pod-1");
        assert_eq!(sandbox_id_from_alias("shoal-sandbox:pod-1"), Some("pod-1"));
        assert_eq!(sandbox_id_from_alias("shoal-sandbox:../x"), None);
        assert_eq!(sandbox_id_from_alias("something else"), None);
    }

    #[test]
    fn bridge_mac_is_local_unicast_and_follows_the_gateway() {
        let mac = bridge_mac(Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(mac, [0x02, 0x5c, 10, 244, 1, 1]);
        assert_eq!(mac[0] & 0x01, 0, "unicast");
        assert_eq!(mac[0] & 0x02, 0x02, "locally administered");
        assert_ne!(mac, bridge_mac(Ipv4Addr::new(10, 244, 2, 1)));
    }
}
