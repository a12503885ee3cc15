//! TLS on the store's client and peer ports, with etcd's flags: a server
//! certificate and key, and with `--client-cert-auth` (or
//! `--peer-client-cert-auth`) only clients whose certificate the trusted
//! CA signed are served. The same files make the client side of peers,
//! and `channel` gives any client (the apiserver, peers) a gRPC channel
//! over TLS to an `https://` URL.
//!
//! ```text
//!   listener ─► accept ─► handshake (its own task, 10 s at most) ─► tonic
//!   https://host:port ─► TCP ─► TLS (ALPN h2, client cert) ─► tonic Channel
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint};

/// One side's files, as etcd names its flags (`--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, and the `--peer-` ones).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub trusted_ca_file: Option<PathBuf>,
    pub client_cert_auth: bool,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(format!("no certificate in {}", path.display()));
    }
    Ok(certs)
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certificates(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsFiles {
    /// Whether a certificate is given (the port then speaks TLS).
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    fn pair(
        &self,
    ) -> Result<
        (
            Vec<rustls::pki_types::CertificateDer<'static>>,
            rustls::pki_types::PrivateKeyDer<'static>,
        ),
        String,
    > {
        let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) else {
            return Err("a certificate needs its key (and a key its certificate)".into());
        };
        let pem = read(key)?;
        let key = rustls_pemfile::private_key(&mut pem.as_slice())
            .ok()
            .flatten()
            .ok_or_else(|| format!("no private key in {}", key.display()))?;
        Ok((certificates(cert)?, key))
    }

    /// The server side: its certificate; with client certificate
    /// authentication, only clients the trusted CA signed get in.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, String> {
        let (certs, key) = self.pair()?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match (&self.trusted_ca_file, self.client_cert_auth) {
            (Some(ca), true) => {
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots(ca)?),
                    provider(),
                )
                .build()
                .map_err(|e| e.to_string())?;
                builder.with_client_cert_verifier(verifier)
            }
            (None, true) => {
                return Err("client certificate authentication needs a trusted CA file".into())
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: trusts the CA file and presents the certificate,
    /// when given.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        let roots = match &self.trusted_ca_file {
            Some(ca) => roots(ca)?,
            None => return Err("connecting over TLS needs a trusted CA file".into()),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = if self.cert_file.is_some() {
            let (certs, key) = self.pair()?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())?
        } else {
            builder.with_no_client_auth()
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// An accepted TLS connection, as tonic serves it.
pub struct TlsConn(tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// The connections of `listener` once their handshake is done; a client
/// that fails it (no certificate, a wrong one) is logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn(tls))).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A lazily connecting gRPC channel to `url`: TLS with `tls` for
/// `https://` URLs (the host named in the URL is the name checked), plain
/// HTTP/2 otherwise.
pub fn channel(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    configure: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, String> {
    let Some(rest) = url.strip_prefix("https://") else {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
        return Ok(configure(endpoint).connect_lazy());
    };
    let Some(config) = tls else {
        return Err(format!("{url} is https but no TLS client files are given"));
    };
    let authority = rest.split('/').next().unwrap_or(rest).to_string();
    let host = match authority.rsplit_once(':') {
        Some((host, _)) => host.trim_matches(|c| c == '[' || c == ']').to_string(),
        None => authority.clone(),
    };
    let name =
        rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("{url}: {e}"))?;
    // tonic sees plain HTTP/2; TLS is this connector's.
    let endpoint =
        Endpoint::from_shared(format!("http://{authority}")).map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let connect = tower::service_fn(move |_: http::Uri| {
        let connector = connector.clone();
        let name = name.clone();
        let authority = authority.clone();
        async move {
            let tcp = TcpStream::connect(&authority).await?;
            let _ = tcp.set_nodelay(true);
            let tls = connector.connect(name, tcp).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(configure(endpoint).connect_with_connector_lazy(connect))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::never_connected;
    use crate::proto::etcdserverpb::{kv_client::KvClient, RangeRequest};

    async fn range(channel: Channel) -> tonic::Status {
        match KvClient::new(channel).range(RangeRequest::default()).await {
            Ok(_) => panic!("nothing serves this address"),
            Err(status) => status,
        }
    }

    fn client_config() -> Arc<rustls::ClientConfig> {
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Arc::new(config)
    }

    // A member that takes the connection and never answers the handshake
    // (as one whose machine stopped mid-way) times out connecting: that is
    // "never sent" over TLS as it is over plain HTTP, so a write may go to
    // another member.
    #[tokio::test]
    async fn a_connect_timeout_over_tls_counts_as_never_connected() {
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}", silent.local_addr().unwrap());
        let tls = client_config();
        let channel = channel(&url, Some(&tls), |e| {
            e.connect_timeout(Duration::from_millis(200))
        })
        .unwrap();
        let status = range(channel).await;
        assert!(never_connected(&status), "{status:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_counts_as_never_connected() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap();
        drop(closed);
        let tls = client_config();
        for url in [format!("http://{address}"), format!("https://{address}")] {
            let channel = channel(&url, Some(&tls), |e| {
                e.connect_timeout(Duration::from_millis(200))
            })
            .unwrap();
            let status = range(channel).await;
            assert!(never_connected(&status), "{url}: {status:?}");
        }
    }
}
