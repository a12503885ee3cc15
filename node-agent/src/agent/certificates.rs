//! Certificates an agent asks the cluster for through the CSR API
//! (`certificates.k8s.io/v1`), as the kubelet does: its overlay identity
//! (signer `shoal.dev/node-overlay`, see `overlay.rs`) and the serving
//! certificate of its HTTPS endpoint (signer
//! `kubernetes.io/kubelet-serving`, for its name and addresses), both
//! approved and signed by the controllers (`csrsigning`).

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::Api;
use serde_json::json;

/// How long before it expires a requested certificate is asked for again.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Creates a CertificateSigningRequest `<prefix>-<random>` for `csr_pem`
/// and waits until it is signed; returns the issued chain (the
/// certificate, then the CA's). A denied or failed request is an error.
pub async fn request(
    client: &kube::Client,
    prefix: &str,
    signer: &str,
    csr_pem: String,
    usages: &[&str],
) -> Result<String, String> {
    use rand::Rng;
    let suffix: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(5)
        .map(|c| char::from(c).to_ascii_lowercase())
        .collect();
    let name = format!("{prefix}-{suffix}");
    let object: CertificateSigningRequest = serde_json::from_value(json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": k8s_openapi::ByteString(csr_pem.into_bytes()),
            "signerName": signer,
            "usages": usages,
        },
    }))
    .map_err(|e| e.to_string())?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let mut backoff = Duration::from_millis(500);
    loop {
        match api.create(&kube::api::PostParams::default(), &object).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) => {
                tracing::warn!(csr = %name, error = %e, "creating a certificate request; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::info!(csr = %name, %signer, "asked for a certificate");
    let started = tokio::time::Instant::now();
    let mut said = false;
    loop {
        if let Ok(csr) = api.get(&name).await {
            let status = csr.status.unwrap_or_default();
            if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                tracing::info!(csr = %name, "certificate issued");
                return Ok(String::from_utf8_lossy(&cert.0).into_owned());
            }
            for c in status.conditions.unwrap_or_default() {
                if (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True" {
                    return Err(format!(
                        "certificate request {name} {}: {}",
                        c.type_.to_lowercase(),
                        c.message.unwrap_or_default()
                    ));
                }
            }
        }
        if !said && started.elapsed() > Duration::from_secs(30) {
            said = true;
            tracing::warn!(csr = %name, "the certificate request is not signed yet: are the controllers running with a cluster signing CA? (kubectl certificate approve approves it by hand)");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The agent's serving certificate for `node` at `ips`, at `cert`/`key`:
/// kept while it names them and has more than 30 days left, else asked
/// for (signer `kubernetes.io/kubelet-serving`).
pub async fn serving(
    client: &kube::Client,
    node: &str,
    ips: &[IpAddr],
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    if let Ok(chain) = std::fs::read_to_string(cert) {
        if key.exists() && shoal_overlay::tunnel::identity::serves(&chain, node, ips, RENEW_BEFORE)
        {
            return Ok(());
        }
    }
    let (csr_pem, key_pem) = shoal_core::tls::node_serving_csr(node, ips)
        .map_err(|e| format!("making a certificate request: {e}"))?;
    let chain = request(
        client,
        &format!("node-serving-{node}"),
        shoal_core::tls::KUBELET_SERVING_SIGNER,
        csr_pem,
        &["digital signature", "key encipherment", "server auth"],
    )
    .await?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    shoal_core::tls::write_pair(cert, &chain, key, &key_pem).map_err(|e| e.to_string())
}

/// Where a node keeps its client certificate and the kubeconfig that
/// uses it, and how it got its first one.
pub struct ClientFiles<'a> {
    /// The kubeconfig the agent runs with (written here).
    pub kubeconfig: &'a Path,
    /// A kubeconfig with a bootstrap token (the kubelet's
    /// `--bootstrap-kubeconfig`), used when there is no valid certificate.
    pub bootstrap: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The node's own identity, as the kubelet's TLS bootstrap makes it.
///
/// - `files.kubeconfig` is the agent's own: written by it, naming
///   `files.cert`. Any other file there is refused, not overwritten.
/// - Without a certificate of `node` (or with one that has expired, or a
///   key that is not its own), a new key and a request for
///   `CN=system:node:<node>`, `O=system:nodes` (signer
///   `kubernetes.io/kube-apiserver-client-kubelet`) are sent with the
///   bootstrap kubeconfig; the controllers approve and sign it. The
///   certificate and key are written, then a kubeconfig naming them (server
///   and CA from the bootstrap kubeconfig).
/// - With less than 30 days left, the request is sent with the current
///   certificate (a renewal); if it is not signed within a minute the
///   agent goes on with the current one.
///
/// Returns a client of that kubeconfig.
pub async fn node_client(files: &ClientFiles<'_>, node: &str) -> Result<kube::Client, String> {
    let ours = std::fs::read_to_string(files.kubeconfig)
        .map(|text| text.contains(&files.cert.display().to_string()))
        .ok();
    if ours == Some(false) {
        return Err(format!(
            "{} exists and is not this agent's own kubeconfig (it does not use {}): give --kubeconfig the path the agent writes its own at",
            files.kubeconfig.display(),
            files.cert.display()
        ));
    }
    let chain = std::fs::read_to_string(files.cert).unwrap_or_default();
    let key = std::fs::read_to_string(files.key).unwrap_or_default();
    let valid = |at_least| {
        ours == Some(true)
            && shoal_overlay::tunnel::identity::client_valid_for(&chain, node, at_least)
            && shoal_overlay::tunnel::identity::key_matches(&chain, &key)
    };
    if valid(RENEW_BEFORE) {
        // Kept.
    } else if valid(Duration::from_secs(60)) {
        tracing::info!(%node, "the node's client certificate expires within 30 days; asking for a new one");
        let renewal = async {
            let client = shoal_core::client::from_file(files.kubeconfig)
                .await
                .map_err(|e| format!("reading {}: {e}", files.kubeconfig.display()))?;
            let (chain, key) = ask(&client, node).await?;
            write(files, &chain, &key)
        };
        match tokio::time::timeout(Duration::from_secs(60), renewal).await {
            Ok(Ok(())) => tracing::info!(%node, "the node's client certificate is renewed"),
            Ok(Err(e)) => {
                tracing::warn!(%node, error = %e, "renewing the node's client certificate failed; going on with the current one")
            }
            Err(_) => {
                tracing::warn!(%node, "the renewal of the node's client certificate was not signed within a minute; going on with the current one")
            }
        }
    } else {
        tracing::info!(%node, kubeconfig = %files.bootstrap.display(), "asking for the node's client certificate with the bootstrap kubeconfig");
        let cluster = shoal_core::client::cluster_of(files.bootstrap)?;
        let client = shoal_core::client::from_file(files.bootstrap)
            .await
            .map_err(|e| format!("reading {}: {e}", files.bootstrap.display()))?;
        let (chain, key) = ask(&client, node).await?;
        write(files, &chain, &key)?;
        let text = shoal_core::client::kubeconfig(
            &cluster,
            &[
                ("client-certificate", &files.cert.display().to_string()),
                ("client-key", &files.key.display().to_string()),
            ],
        );
        replace(files.kubeconfig, &text)?;
        tracing::info!(%node, kubeconfig = %files.kubeconfig.display(), "the node's client certificate is issued");
    }
    shoal_core::client::from_file(files.kubeconfig)
        .await
        .map_err(|e| format!("reading {}: {e}", files.kubeconfig.display()))
}

/// A new key and a signed client certificate of `node`: (chain, key).
async fn ask(client: &kube::Client, node: &str) -> Result<(String, String), String> {
    let (csr_pem, key_pem) = shoal_core::tls::node_client_csr(node)
        .map_err(|e| format!("making a certificate request: {e}"))?;
    let chain = request(
        client,
        &format!("node-client-{node}"),
        shoal_core::tls::KUBELET_CLIENT_SIGNER,
        csr_pem,
        &["digital signature", "client auth"],
    )
    .await?;
    Ok((chain, key_pem))
}

/// Writes the key, then the certificate, each whole (written aside, then
/// renamed): a crash leaves either pair or a key that does not match,
/// which the next start notices.
fn write(files: &ClientFiles<'_>, chain: &str, key: &str) -> Result<(), String> {
    if let Some(dir) = files.cert.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let (cert_new, key_new) = (aside(files.cert), aside(files.key));
    shoal_core::tls::write_pair(&cert_new, chain, &key_new, key).map_err(|e| e.to_string())?;
    std::fs::rename(&key_new, files.key)
        .map_err(|e| format!("writing {}: {e}", files.key.display()))?;
    std::fs::rename(&cert_new, files.cert)
        .map_err(|e| format!("writing {}: {e}", files.cert.display()))
}

/// `path` with `.new` added to its name: where it is written before it
/// is renamed into place.
fn aside(path: &Path) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    name.into()
}

/// Writes `text` at `path` whole (aside, then renamed).
fn replace(path: &Path, text: &str) -> Result<(), String> {
    let aside = aside(path);
    std::fs::write(&aside, text).map_err(|e| format!("writing {}: {e}", aside.display()))?;
    std::fs::rename(&aside, path).map_err(|e| format!("writing {}: {e}", path.display()))
}
