//! Image references, normalized as Kubernetes and containerd normalize them
//! (docker/distribution's `ParseNormalizedNamed`): `busybox` →
//! `docker.io/library/busybox:latest`, `registry:5000/x/y:t` keeps its
//! registry, `name@sha256:<hex>` pins a digest. Pure: no I/O.

use std::fmt;

/// The registry of names without one.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The namespace of single-component Docker Hub names (`busybox`).
const OFFICIAL_PREFIX: &str = "library/";

/// A normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// `docker.io`, `registry:5000`, `localhost`, ...
    pub domain: String,
    /// `library/busybox`, `x/y`.
    pub path: String,
    /// `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// `sha256:<64 hex>`.
    pub digest: Option<String>,
}

/// Why a reference does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {reason}")]
pub struct InvalidReference {
    pub reference: String,
    pub reason: String,
}

impl Reference {
    /// `docker.io/library/busybox`: the name without tag or digest.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Parses and normalizes `text`.
    pub fn parse(text: &str) -> Result<Reference, InvalidReference> {
        let invalid = |reason: &str| InvalidReference {
            reference: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() {
            return Err(invalid("empty"));
        }
        if text.len() > 4096 {
            return Err(invalid("too long"));
        }
        let (name, digest) = match text.split_once('@') {
            Some((name, digest)) => {
                validate_digest(digest).map_err(|r| invalid(&r))?;
                (name, Some(digest.to_string()))
            }
            None => (text, None),
        };
        // A ':' after the last '/' starts the tag; one before is a port.
        let (name, tag) = match name.rfind(':') {
            Some(i) if !name[i..].contains('/') => (&name[..i], Some(&name[i + 1..])),
            _ => (name, None),
        };
        if let Some(tag) = tag {
            validate_tag(tag).map_err(|r| invalid(&r))?;
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        validate_domain(&domain).map_err(|r| invalid(&r))?;
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("{OFFICIAL_PREFIX}{path}")
        } else {
            path
        };
        validate_path(&path).map_err(|r| invalid(&r))?;
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_string()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_string()),
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn validate_digest(digest: &str) -> Result<(), String> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        return Err(format!("digest {digest:?} is not sha256:<hex>"));
    };
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(format!(
            "digest {digest:?} is not sha256 followed by 64 hex digits"
        ));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}"
        ))
    }
}

fn validate_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry port {port:?} is not a number"));
        }
    }
    let ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("registry {domain:?} is not a host name"))
    }
}

fn validate_path(path: &str) -> Result<(), String> {
    for component in path.split('/') {
        if component.is_empty() {
            return Err("empty path component".to_string());
        }
        if component.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err("repository name must be lowercase".to_string());
        }
        let bytes = component.as_bytes();
        let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let starts_and_ends =
            bytes.first().is_some_and(|b| alnum(*b)) && bytes.last().is_some_and(|b| alnum(*b));
        let chars_ok = bytes
            .iter()
            .all(|b| alnum(*b) || matches!(b, b'.' | b'_' | b'-'));
        if !starts_and_ends || !chars_ok {
            return Err(format!(
                "path component {component:?} is not [a-z0-9]+ with . _ - separators"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        match Reference::parse(text) {
            Ok(r) => r.to_string(),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn docker_hub_names_get_library_and_latest() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("library/busybox"), "docker.io/library/busybox:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("bitnami/nginx:1.2"), "docker.io/bitnami/nginx:1.2");
    }

    #[test]
    fn registries_with_ports_and_localhost_are_kept() {
        assert_eq!(norm("registry:5000/x/y:t"), "registry:5000/x/y:t");
        assert_eq!(norm("registry:5000/x"), "registry:5000/x:latest");
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("quay.io/a/b"), "quay.io/a/b:latest");
        let r = Reference::parse("registry:5000/x/y:t").unwrap();
        assert_eq!(r.repository(), "registry:5000/x/y");
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn digests_pin_without_a_default_tag() {
        let hex = "a".repeat(64);
        assert_eq!(
            norm(&format!("busybox@sha256:{hex}")),
            format!("docker.io/library/busybox@sha256:{hex}")
        );
        assert_eq!(
            norm(&format!("busybox:1.36@sha256:{hex}")),
            format!("docker.io/library/busybox:1.36@sha256:{hex}")
        );
        assert!(norm("busybox@sha256:abc").starts_with("error"));
        assert!(norm("busybox@md5:abc").starts_with("error"));
    }

    #[test]
    fn bad_names_are_errors_not_panics() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "a//b",
            "/busybox",
            "busybox/",
            "a:b:c",
            "ré",
            "x@",
            "reg:port/x",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
