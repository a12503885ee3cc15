//! TLS material, made and loaded in one place: the cluster CA and the
//! apiserver's serving certificate (made on first start, kept in the data
//! dir and reused afterwards; `--tls-cert-file`/`--tls-private-key-file`
//! give them instead), serving certificates the CA issues to node agents,
//! self-signed ones for an agent on its own, and the rustls configurations
//! built from PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read or write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path} holds no usable {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("the certificate and key do not work together: {0}")]
    Rustls(#[from] rustls::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the generated files live in the data dir.
pub struct Files {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Files {
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("apiserver.crt"),
            key: dir.join("apiserver.key"),
        }
    }
}

/// Writes `text` readable by its owner only (a file that was there is
/// made so too).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    write(path, text, true)
}

fn write(path: &Path, text: &str, private: bool) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        // Created 0600: a key is never readable by others, not even briefly.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
        std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
    } else {
        std::fs::write(path, text).map_err(io)
    }
}

/// The parameters of a serving certificate for `names` and `ips`, named
/// after the first of them.
fn serving_params(names: &[String], ips: &[IpAddr]) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    for name in names {
        params
            .subject_alt_names
            .push(SanType::DnsName(name.clone().try_into()?));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    let common_name = names
        .first()
        .cloned()
        .or_else(|| ips.first().map(|ip| ip.to_string()))
        .unwrap_or_else(|| "shoal-agent".to_string());
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    Ok(params)
}

/// A self-signed serving certificate (`agent.crt`/`agent.key` in `dir`),
/// made once and kept, for a node agent started without
/// `--tls-cert-file`.
///
/// The apiserver verifies agents against `--kubelet-certificate-authority`
/// (default: the cluster CA), which did not sign this certificate: point
/// that flag at this `agent.crt` (it is its own CA), or give the agent a
/// certificate signed by the cluster CA ([`issue_serving_cert`], as
/// `shoal up` does).
pub fn ensure_self_signed(
    dir: &Path,
    names: &[String],
    ips: &[IpAddr],
) -> Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("agent.crt");
    let key_path = dir.join("agent.key");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let key = KeyPair::generate()?;
    let cert = serving_params(names, ips)?.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert_path, key_path))
}

/// A new CA's parameters (subject `CN=shoal-ca`, as [`Ca::load`] rebuilds
/// them) and key.
fn new_ca() -> Result<(CertificateParams, KeyPair)> {
    let key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name.push(DnType::CommonName, "shoal-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = rcgen::date_time_ymd(2024, 1, 1);
    ca.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok((ca, key))
}

/// A CA of its own at `ca_cert`/`ca_key`, made unless both exist: for a
/// component trusted apart from the cluster CA (`shoal up`'s store, as
/// kubeadm gives etcd its own CA, so that no user or node certificate
/// opens the store).
pub fn ensure_ca(ca_cert: &Path, ca_key: &Path) -> Result<Ca> {
    if !(ca_cert.exists() && ca_key.exists()) {
        let (params, key) = new_ca()?;
        let cert = params.self_signed(&key)?;
        write(ca_key, &key.serialize_pem(), true)?;
        write(ca_cert, &cert.pem(), false)?;
    }
    Ca::load(ca_cert, ca_key)
}

/// Makes the CA and serving certificate unless they exist already.
pub fn ensure_generated(files: &Files, names: &[String]) -> Result<()> {
    if files.ca_cert.exists() && files.cert.exists() && files.key.exists() {
        return Ok(());
    }
    let (ca, ca_key) = new_ca()?;
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let issuer = Issuer::from_params(&ca, &ca_key);
    let cert = params.signed_by(&key, &issuer)?;

    write(&files.ca_cert, &ca_cert.pem(), false)?;
    write(&files.ca_key, &ca_key.serialize_pem(), true)?;
    write(&files.key, &key.serialize_pem(), true)?;
    write(
        &files.cert,
        &format!("{}{}", cert.pem(), ca_cert.pem()),
        false,
    )?;
    Ok(())
}

/// The names a locally generated serving certificate is valid for.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
        "10.96.0.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    for name in extra {
        if !name.is_empty() && name != "0.0.0.0" && !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// HTTP/2 and HTTP/1.1, as the apiserver serves.
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// HTTP/1.1 only, as the node agent serves (exec and attach are HTTP/1.1
/// upgrades, as the apiserver's proxy makes them).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// A server configuration from PEM files (a certificate chain and its key)
/// offering the `alpn` protocols.
pub fn server_config(cert: &Path, key: &Path, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    let (certs, key) = pem_pair(&read(cert)?, cert, &read(key)?, key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A certificate chain and its key from PEM (`cert_origin` and
/// `key_origin` name where they came from in errors).
fn pem_pair(
    cert_pem: &[u8],
    cert_origin: &Path,
    key_pem: &[u8],
    key_origin: &Path,
) -> Result<(
    Vec<rustls::pki_types::CertificateDer<'static>>,
    rustls::pki_types::PrivateKeyDer<'static>,
)> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .filter_map(|c| c.ok())
        .collect();
    if certs.is_empty() {
        return Err(Error::Pem {
            path: cert_origin.to_path_buf(),
            what: "certificate",
        });
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .ok()
        .flatten()
        .ok_or_else(|| Error::Pem {
            path: key_origin.to_path_buf(),
            what: "private key",
        })?;
    Ok((certs, key))
}

/// [`server_config`] that also asks clients for a certificate signed by
/// the CAs in `client_ca` (PEM); clients without one are still served
/// (they authenticate otherwise), a certificate the CAs did not sign ends
/// the handshake.
pub fn server_config_with_client_ca(
    cert: &Path,
    key: &Path,
    alpn: &[&[u8]],
    client_ca: &Path,
) -> Result<Arc<rustls::ServerConfig>> {
    let base = server_config(cert, key, alpn)?;
    let pem = std::fs::read(client_ca).map_err(|source| Error::Io {
        path: client_ca.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Pem {
        path: client_ca.to_path_buf(),
        what: match e {
            rustls::server::VerifierBuilderError::NoRootAnchors => "CA certificate",
            _ => "client CA",
        },
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(base.cert_resolver.clone());
    config.alpn_protocols = base.alpn_protocols.clone();
    Ok(Arc::new(config))
}

/// A client configuration trusting the CAs in `ca` (PEM); with no such
/// file, one that trusts nothing (every agent connection then fails with
/// a clear error rather than the server refusing to start).
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let roots = roots(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// [`client_config`] that presents a client certificate: `cert_pem` (the
/// certificate, then its chain) and `key_pem`, e.g. the apiserver's to
/// agents (`--kubelet-client-certificate`). `origin` names where they
/// came from in errors.
pub fn client_config_with_identity(
    ca: &Path,
    cert_pem: &str,
    key_pem: &str,
    origin: &Path,
) -> Result<Arc<rustls::ClientConfig>> {
    let (certs, key) = pem_pair(cert_pem.as_bytes(), origin, key_pem.as_bytes(), origin)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CAs in `ca` (PEM); none when it cannot be read.
fn roots(ca: &Path) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(pem) = std::fs::read(ca) {
        for cert in rustls_pemfile::certs(&mut pem.as_slice()).flatten() {
            roots.add(cert)?;
        }
    }
    Ok(roots)
}

/// The user a client certificate (DER) names, as Kubernetes reads it: the
/// subject's common name, and its organizations as groups.
pub fn certificate_subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    Some((name, groups))
}

/// The cluster CA, loaded to sign with: the files [`ensure_generated`]
/// made (`ca.crt` and `ca.key` in the apiserver's data dir), or given
/// with the controllers' `--cluster-signing-cert-file`/`-key-file`.
///
/// The issuer is rebuilt from the parameters `ensure_generated` uses (rcgen
/// reads no certificates without its x509 parser), and every certificate
/// issued is verified against `ca.crt` before it is handed out: a CA that
/// shoal did not make is reported, not used to write a certificate nobody
/// trusts.
pub struct Ca {
    path: PathBuf,
    pem: String,
    key: KeyPair,
    params: CertificateParams,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Ca {
    pub fn load(ca_cert: &Path, ca_key: &Path) -> Result<Ca> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let pem = read(ca_cert)?;
        let key = KeyPair::from_pem(&read(ca_key)?).map_err(|_| Error::Pem {
            path: ca_key.to_path_buf(),
            what: "private key",
        })?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "shoal-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        Ok(Ca {
            path: ca_cert.to_path_buf(),
            pem,
            key,
            params,
        })
    }

    /// The CA certificate (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Signs `params` for `key`'s public half and checks the result chains
    /// to this CA for `server_name`, returning the certificate's PEM.
    pub fn sign(
        &self,
        params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<String> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(key, &issuer)?;
        self.verify(cert.der(), server_name)?;
        Ok(cert.pem())
    }

    /// Signs client certificate `params` for `key`'s public half and checks
    /// that the result is a client certificate chaining to this CA.
    pub fn sign_client(
        &self,
        params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<String> {
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(key, &issuer)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(self.roots()?, provider)
                .build()
                .map_err(|_| self.not_this_ca())?;
        verifier
            .verify_client_cert(cert.der(), &[], rustls::pki_types::UnixTime::now())
            .map_err(|_| self.not_this_ca())?;
        Ok(cert.pem())
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        for root in rustls_pemfile::certs(&mut self.pem.as_bytes()).flatten() {
            roots.add(root)?;
        }
        Ok(Arc::new(roots))
    }

    fn not_this_ca(&self) -> Error {
        Error::Pem {
            path: self.path.clone(),
            what: "CA certificate made by shoal (subject CN=shoal-ca) for this CA key",
        }
    }

    fn verify(
        &self,
        der: &rustls::pki_types::CertificateDer<'_>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> Result<()> {
        use rustls::client::danger::ServerCertVerifier;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(self.roots()?, provider)
                .build()
                .map_err(|_| self.not_this_ca())?;
        verifier
            .verify_server_cert(
                der,
                &[],
                &server_name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .map_err(|_| self.not_this_ca())?;
        Ok(())
    }
}

/// Issues a serving certificate for `names` and `ips`, signed by the
/// cluster CA, and writes it (followed by the CA certificate) and its key
/// to `out_cert` and `out_key`. `shoal up` gives its node agents
/// certificates this way, so the apiserver's default
/// `--kubelet-certificate-authority` (the cluster CA) trusts them.
pub fn issue_serving_cert(
    ca_cert: &Path,
    ca_key: &Path,
    names: &[String],
    ips: &[std::net::IpAddr],
    out_cert: &Path,
    out_key: &Path,
) -> Result<()> {
    let ca = Ca::load(ca_cert, ca_key)?;
    let key = KeyPair::generate()?;
    let server_name = match (names.first(), ips.first()) {
        (Some(name), _) => rustls::pki_types::ServerName::try_from(name.clone()),
        (None, Some(ip)) => Ok(rustls::pki_types::ServerName::from(*ip)),
        (None, None) => rustls::pki_types::ServerName::try_from("shoal-agent".to_string()),
    }
    .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    let pem = ca.sign(serving_params(names, ips)?, &key, server_name)?;
    write(out_key, &key.serialize_pem(), true)?;
    write(out_cert, &format!("{pem}{}", ca.pem()), false)?;
    Ok(())
}

/// The name a node's certificate carries: subject
/// `CN=system:node:<node>, O=system:nodes` (as kubelet certificates) and
/// the DNS name `<node>`, valid to serve and to connect (the overlay's
/// QUIC tunnels are mutual TLS).
pub fn node_params(node: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(vec![node.to_string()])?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("system:node:{node}"));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:nodes");
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    Ok(params)
}

/// A node certificate for `node` (see [`node_params`]), signed by `ca`,
/// valid for a year: the PEM of the certificate and of its new key.
pub fn issue_node_cert(ca: &Ca, node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = node_params(node)?;
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(300);
    params.not_after = now + std::time::Duration::from_secs(365 * 24 * 3600);
    let name = rustls::pki_types::ServerName::try_from(node.to_string())
        .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    let pem = ca.sign(params, &key, name)?;
    Ok((pem, key.serialize_pem()))
}

/// The signer name of node overlay certificates: the CSRs an agent makes
/// for its tunnel identity, approved for the node that asks and signed
/// with the cluster CA by the controllers (`csrsigning`).
pub const NODE_OVERLAY_SIGNER: &str = "shoal.dev/node-overlay";

/// A certificate signing request for `node`'s overlay certificate (see
/// [`node_params`]) with a new key: the PEM of the request and of the key.
pub fn node_csr(node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let csr = node_params(node)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// Why a CSR is not a node overlay certificate request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    #[error("the request is not a PEM certificate request: {0}")]
    Parse(String),
    #[error("the subject must be CN=system:node:<node>, O=system:nodes")]
    Subject,
    #[error("the subject alternative names do not fit a certificate of node {0}")]
    Names(String),
    #[error("signing: {0}")]
    Sign(String),
}

/// The node a node overlay CSR (PEM) is for, when it asks for exactly
/// what [`node_csr`] asks for.
pub fn csr_node(pem: &str) -> std::result::Result<String, CsrError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    csr_node_of(&csr.params)
}

fn csr_node_of(params: &CertificateParams) -> std::result::Result<String, CsrError> {
    let request = node_request_of(params)?;
    if request.dns != [request.node.clone()] || !request.ips.is_empty() {
        return Err(CsrError::Names(request.node));
    }
    Ok(request.node)
}

/// What a node's certificate request asks for: subject
/// `CN=system:node:<node>, O=system:nodes`, and these names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequest {
    pub node: String,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

fn node_request_of(params: &CertificateParams) -> std::result::Result<NodeRequest, CsrError> {
    let mut common_name = None;
    let mut organization = None;
    for (kind, value) in params.distinguished_name.iter() {
        let value = dn_text(value);
        match kind {
            DnType::CommonName => common_name = Some(value),
            DnType::OrganizationName => organization = Some(value),
            _ => return Err(CsrError::Subject),
        }
    }
    let node = common_name
        .as_deref()
        .and_then(|cn| cn.strip_prefix("system:node:"))
        .filter(|n| !n.is_empty())
        .ok_or(CsrError::Subject)?
        .to_string();
    if organization.as_deref() != Some("system:nodes") {
        return Err(CsrError::Subject);
    }
    let mut dns = Vec::new();
    let mut ips = Vec::new();
    for name in &params.subject_alt_names {
        match name {
            SanType::DnsName(d) => dns.push(d.as_str().to_string()),
            SanType::IpAddress(ip) => ips.push(*ip),
            _ => return Err(CsrError::Names(node)),
        }
    }
    Ok(NodeRequest { node, dns, ips })
}

/// The signer of the agents' serving certificates (logs, exec, attach),
/// as Kubernetes names the kubelet's.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// A serving certificate request for `node` at `ips` (DNS name `<node>`),
/// with a new key: the PEM of the request and of the key.
pub fn node_serving_csr(node: &str, ips: &[IpAddr]) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = node_params(node)?;
    params
        .subject_alt_names
        .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let csr = params.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// What a serving certificate request (PEM) asks for: a node's subject
/// and at least one name.
pub fn serving_request(pem: &str) -> std::result::Result<NodeRequest, CsrError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    let request = node_request_of(&csr.params)?;
    if request.dns.is_empty() && request.ips.is_empty() {
        return Err(CsrError::Names(request.node));
    }
    Ok(request)
}

/// Signs a serving certificate request with `ca` for `lifetime`, for the
/// names it asks (the caller checked them): the certificate followed by
/// the CA's.
pub fn sign_serving_csr(
    ca: &Ca,
    pem: &str,
    lifetime: std::time::Duration,
) -> std::result::Result<String, CsrError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    let request = node_request_of(&csr.params)?;
    let mut params = node_params(&request.node).map_err(|e| CsrError::Sign(e.to_string()))?;
    params.subject_alt_names = csr.params.subject_alt_names.clone();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(300);
    params.not_after = now + lifetime;
    let name = match (request.dns.first(), request.ips.first()) {
        (Some(d), _) => rustls::pki_types::ServerName::try_from(d.clone())
            .map_err(|e| CsrError::Sign(e.to_string()))?,
        (None, Some(ip)) => rustls::pki_types::ServerName::from(*ip),
        (None, None) => return Err(CsrError::Names(request.node)),
    };
    let cert = ca
        .sign(params, &csr.public_key, name)
        .map_err(|e| CsrError::Sign(e.to_string()))?;
    Ok(format!("{cert}{}", ca.pem()))
}

/// A certificate of `ca` for `common_name` (with `groups` as O values),
/// to serve `names` and `ips` when `server`, to connect as a client when
/// `client`, valid for a hundred years (as the generated CA): the PEM of
/// the certificate followed by the CA's, and of its new key. `shoal up`
/// gives its store members (both) and the apiserver's store connection
/// (client) theirs this way.
pub fn issue_cert(
    ca: &Ca,
    common_name: &str,
    groups: &[&str],
    names: &[String],
    ips: &[IpAddr],
    server: bool,
    client: bool,
) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = serving_params(names, ips)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for group in groups {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *group);
    }
    params.extended_key_usages = [
        (server, rcgen::ExtendedKeyUsagePurpose::ServerAuth),
        (client, rcgen::ExtendedKeyUsagePurpose::ClientAuth),
    ]
    .into_iter()
    .filter_map(|(wanted, usage)| wanted.then_some(usage))
    .collect();
    let pem = if server {
        let server_name = match (names.first(), ips.first()) {
            (Some(name), _) => rustls::pki_types::ServerName::try_from(name.clone()),
            (None, Some(ip)) => Ok(rustls::pki_types::ServerName::from(*ip)),
            (None, None) => rustls::pki_types::ServerName::try_from(common_name.to_string()),
        }
        .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        ca.sign(params, &key, server_name)?
    } else {
        ca.sign_client(params, &key)?
    };
    Ok((format!("{pem}{}", ca.pem()), key.serialize_pem()))
}

/// The signer of the agents' client certificates (their identity
/// towards the apiserver), as Kubernetes names the kubelet's.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// A node's client certificate parameters: subject
/// `CN=system:node:<node>, O=system:nodes`, no names, client auth only.
fn node_client_params(node: &str) -> Result<CertificateParams> {
    let mut params = node_params(node)?;
    params.subject_alt_names.clear();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

/// A client certificate request for `node` with a new key: the PEM of the
/// request and of the key.
pub fn node_client_csr(node: &str) -> Result<(String, String)> {
    let key = KeyPair::generate()?;
    let csr = node_client_params(node)?.serialize_request(&key)?;
    Ok((csr.pem()?, key.serialize_pem()))
}

/// The node a client certificate request (PEM) is for, when it asks for
/// what Kubernetes allows of `kubernetes.io/kube-apiserver-client-kubelet`:
/// the node's subject and no subject alternative names.
pub fn node_client_request(pem: &str) -> std::result::Result<String, CsrError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    let request = node_request_of(&csr.params)?;
    if !request.dns.is_empty() || !request.ips.is_empty() {
        return Err(CsrError::Names(request.node));
    }
    Ok(request.node)
}

/// Signs a node client certificate request with `ca` for `lifetime`: the
/// certificate followed by the CA's, and the node it names.
pub fn sign_node_client_csr(
    ca: &Ca,
    pem: &str,
    lifetime: std::time::Duration,
) -> std::result::Result<(String, String), CsrError> {
    let node = node_client_request(pem)?;
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    let mut params = node_client_params(&node).map_err(|e| CsrError::Sign(e.to_string()))?;
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(300);
    params.not_after = now + lifetime;
    let cert = ca
        .sign_client(params, &csr.public_key)
        .map_err(|e| CsrError::Sign(e.to_string()))?;
    Ok((format!("{cert}{}", ca.pem()), node))
}

/// A node client certificate for `node`, signed by `ca` for a year: the
/// PEM of the certificate (followed by the CA's) and of its new key.
/// `shoal up` gives its own agent its identity this way, as kubeadm writes
/// the first control-plane node's kubelet.conf.
pub fn issue_node_client_cert(ca: &Ca, node: &str) -> Result<(String, String)> {
    let (csr, key) = node_client_csr(node)?;
    let (chain, _) =
        sign_node_client_csr(ca, &csr, std::time::Duration::from_secs(365 * 24 * 3600))
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
    Ok((chain, key))
}

fn dn_text(value: &rcgen::DnValue) -> String {
    match value {
        rcgen::DnValue::Utf8String(s) => s.clone(),
        rcgen::DnValue::PrintableString(s) => s.as_str().to_string(),
        rcgen::DnValue::Ia5String(s) => s.as_str().to_string(),
        rcgen::DnValue::TeletexString(s) => s.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// Signs a node overlay CSR (PEM) with `ca` for `lifetime`: the issued
/// certificate followed by the CA's (so the requester learns the CA its
/// peers chain to), and the node it names. Only what the signer allows is
/// issued: the node's DNS name, server and client auth.
pub fn sign_node_csr(
    ca: &Ca,
    pem: &str,
    lifetime: std::time::Duration,
) -> std::result::Result<(String, String), CsrError> {
    let csr = rcgen::CertificateSigningRequestParams::from_pem(pem)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    let node = csr_node_of(&csr.params)?;
    let mut params = node_params(&node).map_err(|e| CsrError::Sign(e.to_string()))?;
    let now = time_now();
    params.not_before = now - std::time::Duration::from_secs(300);
    params.not_after = now + lifetime;
    let name = rustls::pki_types::ServerName::try_from(node.clone())
        .map_err(|e| CsrError::Sign(e.to_string()))?;
    let cert = ca
        .sign(params, &csr.public_key, name)
        .map_err(|e| CsrError::Sign(e.to_string()))?;
    Ok((format!("{cert}{}", ca.pem()), node))
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Writes a key (0600) and a certificate.
pub fn write_pair(cert: &Path, cert_pem: &str, key: &Path, key_pem: &str) -> Result<()> {
    write(key, key_pem, true)?;
    write(cert, cert_pem, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_and_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        ensure_generated(&files, &default_names(&[])).unwrap();
        server_config(&files.cert, &files.key, ALPN_H2_HTTP1).unwrap();
        let before = std::fs::read(&files.ca_cert).unwrap();
        ensure_generated(&files, &default_names(&[])).unwrap();
        assert_eq!(before, std::fs::read(&files.ca_cert).unwrap());
    }

    #[test]
    fn issued_serving_certificates_chain_to_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        ensure_generated(&files, &default_names(&[])).unwrap();
        let (cert, key) = (dir.path().join("agent.crt"), dir.path().join("agent.key"));
        let ip: std::net::IpAddr = "10.0.0.7".parse().unwrap();
        issue_serving_cert(
            &files.ca_cert,
            &files.ca_key,
            &["node-1".to_string()],
            &[ip],
            &cert,
            &key,
        )
        .unwrap();
        server_config(&cert, &key, ALPN_HTTP1).unwrap();
        client_config(&files.ca_cert).unwrap();
        // A CA key that does not belong to the CA certificate is refused.
        let other = tempfile::tempdir().unwrap();
        let other_files = Files::in_dir(other.path());
        ensure_generated(&other_files, &default_names(&[])).unwrap();
        let err = issue_serving_cert(&files.ca_cert, &other_files.ca_key, &[], &[ip], &cert, &key)
            .unwrap_err();
        assert!(matches!(err, Error::Pem { .. }), "{err}");
    }
}

#[cfg(test)]
mod node_certificate_tests {
    use super::*;

    #[test]
    fn serving_requests_are_signed_for_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        ensure_generated(&files, &[]).unwrap();
        let ca = Ca::load(&files.ca_cert, &files.ca_key).unwrap();
        let ip: IpAddr = "172.30.0.31".parse().unwrap();
        let (pem, _) = node_serving_csr("n1", &[ip]).unwrap();
        let request = serving_request(&pem).unwrap();
        assert_eq!(request.node, "n1");
        assert_eq!(request.dns, ["n1"]);
        assert_eq!(request.ips, [ip]);
        let chain = sign_serving_csr(&ca, &pem, std::time::Duration::from_secs(3600)).unwrap();
        assert!(chain.ends_with(ca.pem()));
        // An overlay request asks for the name alone.
        let (pem, _) = node_csr("n1").unwrap();
        assert_eq!(csr_node(&pem).unwrap(), "n1");
        let (pem, _) = node_serving_csr("n1", &[ip]).unwrap();
        assert!(csr_node(&pem).is_err());
    }

    #[test]
    fn client_requests_name_a_node_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        ensure_generated(&files, &[]).unwrap();
        let ca = Ca::load(&files.ca_cert, &files.ca_key).unwrap();
        let (pem, _) = node_client_csr("n1").unwrap();
        assert_eq!(node_client_request(&pem).unwrap(), "n1");
        let (chain, node) =
            sign_node_client_csr(&ca, &pem, std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(node, "n1");
        assert!(chain.ends_with(ca.pem()));
        // Requests with names (the overlay's, a serving one) are not
        // client requests.
        let (pem, _) = node_csr("n1").unwrap();
        assert_eq!(node_client_request(&pem), Err(CsrError::Names("n1".into())));
        let (chain, key) = issue_cert(
            &ca,
            "store-member",
            &[],
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap()],
            true,
            true,
        )
        .unwrap();
        assert!(chain.ends_with(ca.pem()) && key.contains("PRIVATE KEY"));
        let (chain, _) = issue_node_client_cert(&ca, "n2").unwrap();
        let der = rustls_pemfile::certs(&mut chain.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            cert.subject().to_string(),
            "CN=system:node:n2, O=system:nodes"
        );
    }
}
