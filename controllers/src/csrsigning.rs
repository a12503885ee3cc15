//! Node overlay certificates through the CSR API: what
//! kube-controller-manager's csrapproving and csrsigning controllers do
//! for kubelet certificates, for the signer `shoal.dev/node-overlay`.
//!
//! - **Approval**: a request for `CN=system:node:<node>` (DNS name
//!   `<node>`, nothing else) made by that node (`spec.username` is
//!   `system:node:<node>`) or by a cluster admin (group `system:masters`)
//!   is approved (`Approved`, reason `AutoApproved`). Anything else waits
//!   for a person (`kubectl certificate approve|deny`); a request that is
//!   not a node overlay request at all is denied.
//! - **Signing**: an approved request of this signer is signed with the
//!   cluster CA (`--cluster-signing-cert-file`/`-key-file`) for
//!   `spec.expirationSeconds` (default and at most a year), and
//!   `status.certificate` gets the certificate followed by the CA's.
//!
//! Without a signing CA the loop does nothing and says so: the requests
//! stay pending.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;
use shoal_core::tls::{self, NODE_OVERLAY_SIGNER};

const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

struct Context {
    client: kube::Client,
    ca: Arc<tls::Ca>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let Some(ca) = settings.cluster_signing.clone() else {
        tracing::info!("no cluster signing CA (--cluster-signing-cert-file): node overlay certificate requests stay pending");
        return futures::future::pending().await;
    };
    let requests = settings.informers.get::<CertificateSigningRequest>(&client);
    let controller = crate::run::over(&requests);
    crate::run::run_controller(
        "csrsigning",
        controller,
        reconcile,
        Arc::new(Context { client, ca }),
    )
    .await;
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// What the loop does with a request, decided from it alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours, already issued, denied or failed: nothing.
    Nothing,
    /// Not a node overlay request: deny with this message.
    Deny(String),
    /// The node asks for its own certificate (or an admin for it):
    /// approve.
    Approve(String),
    /// Approved: sign.
    Sign,
    /// Someone else asks for a node's certificate: wait for a person.
    Wait,
}

pub fn decide(csr: &CertificateSigningRequest) -> Decision {
    if csr.spec.signer_name != NODE_OVERLAY_SIGNER {
        return Decision::Nothing;
    }
    let issued = csr
        .status
        .as_ref()
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    if issued || has_condition(csr, "Denied") || has_condition(csr, "Failed") {
        return Decision::Nothing;
    }
    let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
    let node = match tls::csr_node(&pem) {
        Ok(node) => node,
        Err(e) => return Decision::Deny(e.to_string()),
    };
    if has_condition(csr, "Approved") {
        return Decision::Sign;
    }
    let by_the_node = csr.spec.username.as_deref() == Some(&format!("system:node:{node}"));
    let by_an_admin = csr
        .spec
        .groups
        .as_ref()
        .is_some_and(|g| g.iter().any(|g| g == "system:masters"));
    if by_the_node || by_an_admin {
        Decision::Approve(node)
    } else {
        Decision::Wait
    }
}

fn condition(kind: &str, reason: &str, message: &str) -> serde_json::Value {
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    })
}

fn with_condition(csr: &CertificateSigningRequest, added: serde_json::Value) -> serde_json::Value {
    let mut conditions: Vec<serde_json::Value> = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(|c| {
            c.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    conditions.push(added);
    json!({"status": {"conditions": conditions}})
}

async fn reconcile(
    csr: Arc<CertificateSigningRequest>,
    ctx: Arc<Context>,
) -> Result<Action, kube::Error> {
    let name = csr.name_any();
    let api: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let params = PatchParams::default();
    match decide(&csr) {
        Decision::Nothing | Decision::Wait => {}
        Decision::Deny(message) => {
            let patch = with_condition(&csr, condition("Denied", "NotANodeRequest", &message));
            api.patch_subresource("approval", &name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %message, "denied a certificate request");
        }
        Decision::Approve(node) => {
            let message = format!("Auto approving the overlay certificate of node {node}");
            let patch = with_condition(&csr, condition("Approved", "AutoApproved", &message));
            api.patch_subresource("approval", &name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %node, "approved a node overlay certificate request");
        }
        Decision::Sign => {
            let lifetime = csr
                .spec
                .expiration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(MAX_LIFETIME)
                .clamp(Duration::from_secs(600), MAX_LIFETIME);
            let pem = String::from_utf8_lossy(&csr.spec.request.0).into_owned();
            let patch = match tls::sign_node_csr(&ctx.ca, &pem, lifetime) {
                Ok((chain, node)) => {
                    tracing::info!(csr = %name, %node, "signed a node overlay certificate");
                    json!({"status": {"certificate": ByteString(chain.into_bytes())}})
                }
                Err(e) => {
                    with_condition(&csr, condition("Failed", "SigningFailed", &e.to_string()))
                }
            };
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await?;
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(node: &str, user: &str, groups: &[&str]) -> CertificateSigningRequest {
        let (pem, _) = tls::node_csr(node).unwrap();
        serde_json::from_value(json!({
            "metadata": {"name": "r"},
            "spec": {
                "request": ByteString(pem.into_bytes()),
                "signerName": NODE_OVERLAY_SIGNER,
                "username": user,
                "groups": groups,
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_node_gets_its_own_certificate_and_no_other() {
        let own = request("n1", "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&own), Decision::Approve("n1".into()));
        let other = request("n2", "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&other), Decision::Wait);
        let admin = request("n2", "admin", &["system:masters"]);
        assert_eq!(decide(&admin), Decision::Approve("n2".into()));
        let mut foreign = request("n1", "system:node:n1", &[]);
        foreign.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert_eq!(decide(&foreign), Decision::Nothing);
        let mut junk = request("n1", "system:node:n1", &[]);
        junk.spec.request = ByteString(b"not a request".to_vec());
        assert!(matches!(decide(&junk), Decision::Deny(_)));
    }

    #[test]
    fn approved_requests_are_signed_by_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let files = tls::Files::in_dir(dir.path());
        tls::ensure_generated(&files, &[]).unwrap();
        let ca = tls::Ca::load(&files.ca_cert, &files.ca_key).unwrap();
        let (pem, _) = tls::node_csr("n1").unwrap();
        let (chain, node) = tls::sign_node_csr(&ca, &pem, MAX_LIFETIME).unwrap();
        assert_eq!(node, "n1");
        assert!(chain.ends_with(ca.pem()));
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
    }
}
