//! The name rules of Kubernetes objects (`IsDNS1123Label`,
//! `IsDNS1123Subdomain`, `IsDNS1035Label`) as yes/no checks; the
//! apiserver words the errors.

fn is_alnum_lower(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// At most 63 lowercase alphanumerics or `-`, starting and ending with an
/// alphanumeric (namespace and Service names, DNS labels).
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| is_alnum_lower(c) || c == '-')
        && s.starts_with(is_alnum_lower)
        && s.ends_with(is_alnum_lower)
}

/// Dot-separated DNS labels, at most 253 characters (most object names).
pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// A DNS label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("web-1"));
        assert!(!is_dns1123_label("Web"));
        assert!(!is_dns1123_label("-web"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("example.com"));
        assert!(!is_dns1123_subdomain("web?x=1"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_dns1035_label("abc-123"));
        assert!(!is_dns1035_label("123-abc"));
    }
}
