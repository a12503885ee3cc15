//! Certificates by SNI from the `kubernetes.io/tls` Secrets that the
//! Ingresses' `spec.tls` name, reloaded with every change; a default
//! self-signed certificate for every other name and for Secrets that are
//! missing or do not parse (as ingress-nginx's fake certificate).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Secret;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::routes::TlsHost;

/// The certificates served, by name.
#[derive(Default)]
struct ByName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// By the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// For an entry without hosts.
    any: Option<Arc<CertifiedKey>>,
}

pub struct Certificates {
    by_name: RwLock<Arc<ByName>>,
    default: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Certificates")
    }
}

/// Why a Secret's certificate is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub namespace: String,
    pub secret: String,
    pub message: String,
}

/// A certificate and key from PEM.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or("tls.key holds no PEM private key")?;
    let key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| format!("tls.key: {e}"))?;
    let certified = CertifiedKey::new(certs, key);
    certified
        .keys_match()
        .map_err(|_| "tls.key is not the key of tls.crt".to_string())?;
    Ok(Arc::new(certified))
}

impl Certificates {
    /// With a fresh self-signed default certificate.
    pub fn new() -> Result<Certificates, String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut params = rcgen::CertificateParams::new(vec!["ingress.local".to_string()])
            .map_err(|e| e.to_string())?;
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            "shoal ingress default certificate",
        );
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let default = certified_key(cert.pem().as_bytes(), key.serialize_pem().as_bytes())?;
        Ok(Certificates {
            by_name: RwLock::default(),
            default,
        })
    }

    /// A server configuration that picks certificates here, HTTP/2 and
    /// HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Loads the certificates `hosts` name from `secrets`; what cannot be
    /// served is returned (its hosts get the default certificate).
    pub fn update(&self, hosts: &[TlsHost], secrets: &[Arc<Secret>]) -> Vec<Problem> {
        let mut by_name = ByName::default();
        let mut problems = Vec::new();
        let mut loaded: HashMap<(String, String), Option<Arc<CertifiedKey>>> = HashMap::new();
        for host in hosts {
            let key = (host.namespace.clone(), host.secret.clone());
            let certified = loaded
                .entry(key)
                .or_insert_with(|| match load(host, secrets) {
                    Ok(certified) => Some(certified),
                    Err(message) => {
                        problems.push(Problem {
                            namespace: host.namespace.clone(),
                            secret: host.secret.clone(),
                            message,
                        });
                        None
                    }
                })
                .clone();
            let Some(certified) = certified else {
                continue;
            };
            if host.host == "*" {
                by_name.any.get_or_insert(certified);
            } else if let Some(parent) = host.host.strip_prefix("*.") {
                by_name
                    .wildcard
                    .entry(parent.to_string())
                    .or_insert(certified);
            } else {
                by_name.exact.entry(host.host.clone()).or_insert(certified);
            }
        }
        *self.by_name.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(by_name);
        problems
    }

    /// The certificate for `name` (an SNI host name; none: the default).
    pub fn for_name(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let by_name = self
            .by_name
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let chosen = name.map(str::to_ascii_lowercase).and_then(|name| {
            by_name.exact.get(&name).cloned().or_else(|| {
                let (_, parent) = name.split_once('.')?;
                by_name.wildcard.get(parent).cloned()
            })
        });
        chosen
            .or_else(|| by_name.any.clone())
            .unwrap_or_else(|| self.default.clone())
    }
}

fn load(host: &TlsHost, secrets: &[Arc<Secret>]) -> Result<Arc<CertifiedKey>, String> {
    let secret = secrets
        .iter()
        .find(|s| {
            s.metadata.namespace.as_deref() == Some(host.namespace.as_str())
                && s.metadata.name.as_deref() == Some(host.secret.as_str())
        })
        .ok_or_else(|| format!("secret {}/{} not found", host.namespace, host.secret))?;
    from_secret(secret)
}

/// The certificate and key of a Secret (`tls.crt`, `tls.key`), or why it
/// has none (the message names the Secret).
pub fn from_secret(secret: &Secret) -> Result<Arc<CertifiedKey>, String> {
    let namespace = secret.metadata.namespace.as_deref().unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let empty = Default::default();
    let data = secret.data.as_ref().unwrap_or(&empty);
    let field = |field: &str| {
        data.get(field)
            .map(|b| b.0.as_slice())
            .ok_or_else(|| format!("secret {namespace}/{name} has no {field}"))
    };
    certified_key(field("tls.crt")?, field("tls.key")?)
        .map_err(|e| format!("secret {namespace}/{name}: {e}"))
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.for_name(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pem_pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn secret(name: &str, cert: &str, key: &str) -> Arc<Secret> {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": b64(cert), "tls.key": b64(key)},
            }))
            .unwrap(),
        )
    }

    fn host(host: &str, secret: &str) -> TlsHost {
        TlsHost {
            host: host.into(),
            namespace: "default".into(),
            secret: secret.into(),
        }
    }

    #[test]
    fn names_choose_certificates_and_the_rest_get_the_default() {
        let certificates = Certificates::new().unwrap();
        let (a_cert, a_key) = pem_pair("a.example.com");
        let (w_cert, w_key) = pem_pair("*.shop.example.com");
        let (_, other_key) = pem_pair("x");
        let secrets = vec![
            secret("a", &a_cert, &a_key),
            secret("w", &w_cert, &w_key),
            secret("mismatched", &a_cert, &other_key),
        ];
        let problems = certificates.update(
            &[
                host("a.example.com", "a"),
                host("*.shop.example.com", "w"),
                host("b.example.com", "missing"),
                host("c.example.com", "mismatched"),
            ],
            &secrets,
        );
        let messages: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "secret default/missing not found",
                "secret default/mismatched: tls.key is not the key of tls.crt"
            ]
        );
        let der = |name: Option<&str>| certificates.for_name(name).cert[0].clone();
        assert_eq!(der(Some("A.example.com")), a_cert_der(&a_cert));
        assert_eq!(der(Some("cart.shop.example.com")), a_cert_der(&w_cert));
        let default = certificates.default.cert[0].clone();
        assert_eq!(der(Some("b.example.com")), default);
        assert_eq!(der(Some("deep.cart.shop.example.com")), default);
        assert_eq!(der(None), default);
    }

    fn a_cert_der(pem: &str) -> rustls::pki_types::CertificateDer<'static> {
        rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap()
    }
}
