//! Who a node is on the overlay: a certificate from the cluster CA naming
//! the Node (DNS name `<node>`, subject `CN=system:node:<node>`), and the
//! mutual-TLS configurations built from it. A node dialing a peer checks
//! the peer's certificate names the Node it dialed; a node accepting a
//! connection takes the dialer's name from its certificate (see
//! [`peer_name`]) and only lets in a Node it knows, from that Node's
//! address.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The ALPN of the tunnel protocol: a peer speaking anything else is
/// refused during the handshake.
pub const ALPN: &[u8] = b"shoal-overlay/1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} holds no {1}")]
    Pem(String, &'static str),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("the CA certificates cannot verify clients: {0}")]
    Verifier(String),
    #[error("QUIC needs TLS 1.3 with an initial cipher suite: {0}")]
    Quic(String),
}

/// A node's certificate chain and key, and the CA its peers' chains must
/// lead to.
#[derive(Debug)]
pub struct Identity {
    pub ca: Vec<CertificateDer<'static>>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Self {
            ca: self.ca.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Identity {
    /// From PEM text: the CA certificate(s), the node's chain, its key.
    pub fn from_pem(ca: &str, chain: &str, key: &str) -> Result<Self, Error> {
        let certs = |text: &str, what: &str| -> Result<Vec<CertificateDer<'static>>, Error> {
            let certs: Vec<_> = rustls_pemfile_certs(text);
            if certs.is_empty() {
                return Err(Error::Pem(what.to_string(), "certificate"));
            }
            Ok(certs)
        };
        let ca = certs(ca, "the CA bundle")?;
        let chain = certs(chain, "the node certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|_| Error::Pem("the node key".into(), "private key"))?;
        Ok(Self { ca, chain, key })
    }

    /// From PEM files.
    pub fn from_files(ca: &Path, chain: &Path, key: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Read {
                path: path.display().to_string(),
                source,
            })
        };
        Self::from_pem(&read(ca)?, &read(chain)?, &read(key)?)
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>, Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in &self.ca {
            roots.add(cert.clone())?;
        }
        Ok(Arc::new(roots))
    }

    /// The accepting side: TLS 1.3, a client certificate from the CA
    /// required.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            self.roots()?,
            provider.clone(),
        )
        .build()
        .map_err(|e| Error::Verifier(e.to_string()))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| Error::Quic(e.to_string()))?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// The dialing side: the peer's certificate must come from the CA and
    /// name the Node dialed (the server name of the connection).
    pub fn client_config(&self) -> Result<quinn::ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::Quic(e.to_string()))?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }
}

fn rustls_pemfile_certs(text: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(|c| c.ok())
        .collect()
}

/// The Node a verified peer certificate names: its DNS name, when the
/// subject is `CN=system:node:<the same name>`. Anything else names no
/// Node.
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())?;
    let node = common_name.strip_prefix("system:node:")?;
    let san = cert.subject_alternative_name().ok()??;
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName(d) if *d == node))
        .then(|| node.to_string())
}

/// Whether the first certificate of `chain_pem` names `node` and stays
/// valid for at least `at_least` more.
pub fn valid_for(chain_pem: &str, node: &str, at_least: std::time::Duration) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(first) = rustls_pemfile_certs(chain_pem).into_iter().next() else {
        return false;
    };
    if peer_name(&first).as_deref() != Some(node) {
        return false;
    }
    let Ok((_, cert)) = X509Certificate::from_der(first.as_ref()) else {
        return false;
    };
    lasts(&cert, at_least)
}

fn lasts(cert: &x509_parser::prelude::X509Certificate<'_>, at_least: std::time::Duration) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    cert.validity().not_after.timestamp() > now + at_least.as_secs() as i64
}

/// Whether `key_pem` is the private key of the first certificate of
/// `chain_pem` (a pair not torn by a crash between two writes).
pub fn key_matches(chain_pem: &str, key_pem: &str) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(first) = rustls_pemfile_certs(chain_pem).into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(first.as_ref()) else {
        return false;
    };
    let Ok(key) = rcgen::KeyPair::from_pem(key_pem) else {
        return false;
    };
    use rcgen::PublicKeyData;
    key.subject_public_key_info() == cert.public_key().raw
}

/// Whether the first certificate of `chain_pem` is `node`'s client
/// certificate (subject `CN=system:node:<node>`) and stays valid for at
/// least `at_least` more.
pub fn client_valid_for(chain_pem: &str, node: &str, at_least: std::time::Duration) -> bool {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let Some(first) = rustls_pemfile_certs(chain_pem).into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(first.as_ref()) else {
        return false;
    };
    let named = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .and_then(|cn| cn.strip_prefix("system:node:"))
        == Some(node);
    named && lasts(&cert, at_least)
}

/// Whether the first certificate of `chain_pem` is a serving certificate
/// naming `node` and every one of `ips`, valid for `at_least` more.
pub fn serves(
    chain_pem: &str,
    node: &str,
    ips: &[std::net::IpAddr],
    at_least: std::time::Duration,
) -> bool {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    if !valid_for(chain_pem, node, at_least) {
        return false;
    }
    let Some(first) = rustls_pemfile_certs(chain_pem).into_iter().next() else {
        return false;
    };
    let Ok((_, cert)) = X509Certificate::from_der(first.as_ref()) else {
        return false;
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    ips.iter().all(|ip| {
        let octets = match ip {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        san.value
            .general_names
            .iter()
            .any(|n| matches!(n, GeneralName::IPAddress(a) if *a == octets.as_slice()))
    })
}

/// From a chain whose last certificate is the CA (as the node overlay
/// signer returns it) and the key.
pub fn from_issued(chain_pem: &str, key_pem: &str) -> Result<Identity, Error> {
    let certs = rustls_pemfile_certs(chain_pem);
    let Some(ca) = certs.last().cloned() else {
        return Err(Error::Pem("the issued certificate".into(), "certificate"));
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| Error::Pem("the node key".into(), "private key"))?;
    Ok(Identity {
        ca: vec![ca],
        chain: certs,
        key,
    })
}

/// The name in the certificate a connection's peer presented.
pub fn connection_peer_name(connection: &quinn::Connection) -> Option<String> {
    let identity = connection.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_name(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_certificates_name_their_node() {
        let dir = tempfile::tempdir().unwrap();
        let files = shoal_core::tls::Files::in_dir(dir.path());
        shoal_core::tls::ensure_generated(&files, &[]).unwrap();
        let ca = shoal_core::tls::Ca::load(&files.ca_cert, &files.ca_key).unwrap();
        let (cert, key) = shoal_core::tls::issue_node_cert(&ca, "node-a").unwrap();
        let identity = Identity::from_pem(ca.pem(), &cert, &key).unwrap();
        assert_eq!(peer_name(&identity.chain[0]).as_deref(), Some("node-a"));
        assert!(valid_for(
            &cert,
            "node-a",
            std::time::Duration::from_secs(3600)
        ));
        assert!(!valid_for(
            &cert,
            "node-b",
            std::time::Duration::from_secs(3600)
        ));
        assert!(!valid_for(
            &cert,
            "node-a",
            std::time::Duration::from_secs(400 * 86400)
        ));
        identity.server_config().unwrap();
        identity.client_config().unwrap();
        // The apiserver's serving certificate names no Node.
        let serving = std::fs::read_to_string(&files.cert).unwrap();
        let other = Identity::from_pem(ca.pem(), &serving, &key).unwrap();
        assert_eq!(peer_name(&other.chain[0]), None);
    }
}
