//! Node certificates through the CSR API: what kube-controller-manager's
//! csrapproving and csrsigning controllers do for kubelet certificates,
//! for the signers `shoal.dev/node-overlay` (the overlay's tunnels) and
//! `kubernetes.io/kubelet-serving` (the agent's HTTPS endpoint for logs,
//! exec and attach).
//!
//! - **Approval**: a request for `CN=system:node:<node>` (DNS name
//!   `<node>`, nothing else) made by that node (`spec.username` is
//!   `system:node:<node>`) or by a cluster admin (group `system:masters`)
//!   is approved (`Approved`, reason `AutoApproved`). Anything else waits
//!   for a person (`kubectl certificate approve|deny`); a request that is
//!   not a node overlay request at all is denied.
//! - A **serving** request (`CN=system:node:<node>`, `O=system:nodes`, DNS
//!   names and IP addresses) made by the node or an admin is approved when
//!   every IP is one of the Node's addresses and every DNS name is the
//!   node's name or its Hostname address; otherwise it waits for a person.
//! - A **client** request (signer
//!   `kubernetes.io/kube-apiserver-client-kubelet`: `CN=system:node:<node>`,
//!   `O=system:nodes`, no names, client auth) is approved when its
//!   requester may `create` `certificatesigningrequests/nodeclient` (a
//!   first certificate, asked for with a bootstrap token) or, when the
//!   node asks for itself, `certificatesigningrequests/selfnodeclient` (a
//!   renewal), as a SubjectAccessReview decides: kube-controller-manager's
//!   csrapproving. Otherwise it waits for a person.
//! - **Signing**: an approved request of these signers is signed with the
//!   cluster CA (`--cluster-signing-cert-file`/`-key-file`) for
//!   `spec.expirationSeconds` (default and at most a year), and
//!   `status.certificate` gets the certificate followed by the CA's.
//!
//! Without a signing CA the loop does nothing and says so: the requests
//! stay pending.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use serde_json::json;
use shoal_core::tls::{self, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER, NODE_OVERLAY_SIGNER};

const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

struct Context {
    client: kube::Client,
    ca: Arc<tls::Ca>,
    nodes: crate::informers::Informer<Node>,
}

pub async fn run(client: kube::Client, settings: super::Settings) {
    let Some(ca) = settings.cluster_signing.clone() else {
        tracing::info!("no cluster signing CA (--cluster-signing-cert-file): node overlay certificate requests stay pending");
        return futures::future::pending().await;
    };
    let requests = settings.informers.get::<CertificateSigningRequest>(&client);
    let nodes = settings.informers.get::<Node>(&client);
    let controller = crate::run::over("csrsigning", &requests);
    crate::run::run_controller(
        "csrsigning",
        controller,
        reconcile,
        Arc::new(Context { client, ca, nodes }),
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
    /// A node client certificate: approve when the requester may create
    /// one of these subresources of `certificatesigningrequests` (a
    /// SubjectAccessReview each).
    Review {
        node: String,
        subresources: &'static [&'static str],
    },
    /// Approved but not a request this signer can sign: mark it Failed.
    Fail(String),
}

/// The usages Kubernetes allows a kubelet client certificate: these, with
/// or without key encipherment.
const CLIENT_USAGES: [&str; 3] = ["digital signature", "key encipherment", "client auth"];

/// The names a Node may have in its serving certificate: its name and
/// Hostname addresses (DNS), its other addresses (IP).
pub type NodeNames = (Vec<String>, Vec<String>);

pub fn node_names(node: &Node) -> NodeNames {
    let mut dns: Vec<String> = node.metadata.name.clone().into_iter().collect();
    let mut ips = Vec::new();
    for address in node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
    {
        if address.type_ == "Hostname" {
            dns.push(address.address.clone());
        } else {
            ips.push(address.address.clone());
        }
    }
    (dns, ips)
}

/// `names` gives, for a node, the names [`node_names`] allows (None: no
/// such Node yet).
pub fn decide(
    csr: &CertificateSigningRequest,
    names: &dyn Fn(&str) -> Option<NodeNames>,
) -> Decision {
    let signer = csr.spec.signer_name.as_str();
    if ![
        NODE_OVERLAY_SIGNER,
        KUBELET_SERVING_SIGNER,
        KUBELET_CLIENT_SIGNER,
    ]
    .contains(&signer)
    {
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
    if signer == KUBELET_CLIENT_SIGNER {
        return decide_client(csr, &pem);
    }
    let (node, fits) = if signer == NODE_OVERLAY_SIGNER {
        match tls::csr_node(&pem) {
            Ok(node) => (node, true),
            Err(e) => return Decision::Deny(e.to_string()),
        }
    } else {
        match tls::serving_request(&pem) {
            Ok(request) => {
                let fits = names(&request.node).is_some_and(|(dns, ips)| {
                    request.dns.iter().all(|d| dns.contains(d))
                        && request.ips.iter().all(|ip| ips.contains(&ip.to_string()))
                });
                (request.node, fits)
            }
            Err(e) => return Decision::Deny(e.to_string()),
        }
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
    if (by_the_node || by_an_admin) && fits {
        Decision::Approve(node)
    } else {
        Decision::Wait
    }
}

/// As Kubernetes' csrapproving controller and kubelet client signer: a
/// request that is not a kubelet client request is left to a person (and
/// fails if someone approves it); one by the node itself is reviewed for
/// `selfnodeclient`, then `nodeclient`; anyone else's for `nodeclient`.
fn decide_client(csr: &CertificateSigningRequest, pem: &str) -> Decision {
    let approved = has_condition(csr, "Approved");
    let problem = match tls::node_client_request(pem) {
        Err(e) => Err(e.to_string()),
        Ok(node) => {
            let mut usages = csr.spec.usages.clone().unwrap_or_default();
            usages.sort();
            usages.dedup();
            let fits = usages.iter().all(|u| CLIENT_USAGES.contains(&u.as_str()))
                && ["digital signature", "client auth"]
                    .iter()
                    .all(|u| usages.iter().any(|have| have == u));
            if fits {
                Ok(node)
            } else {
                Err(format!(
                    "a kubelet client certificate has the usages digital signature and client auth (and perhaps key encipherment), not {usages:?}"
                ))
            }
        }
    };
    match (problem, approved) {
        (Err(message), true) => Decision::Fail(message),
        (Err(_), false) => Decision::Nothing,
        (Ok(_), true) => Decision::Sign,
        (Ok(node), false) => {
            let by_the_node = csr.spec.username.as_deref() == Some(&format!("system:node:{node}"));
            Decision::Review {
                node,
                subresources: if by_the_node {
                    &["selfnodeclient", "nodeclient"]
                } else {
                    &["nodeclient"]
                },
            }
        }
    }
}

/// Whether the requester of `csr` may create `subresource` of
/// certificatesigningrequests, as the apiserver's authorizer answers a
/// SubjectAccessReview.
async fn may_create(
    client: &kube::Client,
    csr: &CertificateSigningRequest,
    subresource: &str,
) -> Result<bool, kube::Error> {
    use k8s_openapi::api::authorization::v1::SubjectAccessReview;
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": csr.spec.username,
            "uid": csr.spec.uid,
            "groups": csr.spec.groups,
            "extra": csr.spec.extra,
            "resourceAttributes": {
                "group": "certificates.k8s.io",
                "resource": "certificatesigningrequests",
                "verb": "create",
                "subresource": subresource,
            },
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    let reviewed = Api::<SubjectAccessReview>::all(client.clone())
        .create(&kube::api::PostParams::default(), &review)
        .await?;
    Ok(reviewed.status.is_some_and(|s| s.allowed))
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
    let names = |node: &str| ctx.nodes.get(None, node).map(|n| node_names(&n));
    match decide(&csr, &names) {
        Decision::Nothing => {}
        // A serving request may fit once its Node has registered its
        // addresses.
        Decision::Wait => return Ok(Action::requeue(Duration::from_secs(2))),
        Decision::Deny(message) => {
            let patch = with_condition(&csr, condition("Denied", "NotANodeRequest", &message));
            api.patch_subresource("approval", &name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %message, "denied a certificate request");
        }
        Decision::Approve(node) => {
            let message = format!("Auto approving a certificate of node {node} for its agent");
            let patch = with_condition(&csr, condition("Approved", "AutoApproved", &message));
            api.patch_subresource("approval", &name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %node, "approved a node certificate request");
        }
        Decision::Review { node, subresources } => {
            let mut allowed = false;
            for subresource in subresources {
                if may_create(&ctx.client, &csr, subresource).await? {
                    allowed = true;
                    break;
                }
            }
            if !allowed {
                tracing::info!(csr = %name, %node, "a node client certificate request waits for a person: its requester may not create it");
                // A binding added later approves it.
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            let message = "Auto approving kubelet client certificate after SubjectAccessReview.";
            let patch = with_condition(&csr, condition("Approved", "AutoApproved", message));
            api.patch_subresource("approval", &name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %node, "approved a node client certificate request");
        }
        Decision::Fail(message) => {
            let patch = with_condition(
                &csr,
                condition("Failed", "SignerValidationFailure", &message),
            );
            api.patch_status(&name, &params, &Patch::Merge(&patch))
                .await?;
            tracing::info!(csr = %name, %message, "an approved certificate request cannot be signed");
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
            let signed = if csr.spec.signer_name == NODE_OVERLAY_SIGNER {
                tls::sign_node_csr(&ctx.ca, &pem, lifetime).map(|(chain, _)| chain)
            } else if csr.spec.signer_name == KUBELET_CLIENT_SIGNER {
                tls::sign_node_client_csr(&ctx.ca, &pem, lifetime).map(|(chain, _)| chain)
            } else {
                tls::sign_serving_csr(&ctx.ca, &pem, lifetime)
            };
            let patch = match signed {
                Ok(chain) => {
                    tracing::info!(csr = %name, signer = %csr.spec.signer_name, "signed a node certificate");
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

    fn no_nodes(_: &str) -> Option<NodeNames> {
        None
    }

    #[test]
    fn a_node_gets_its_own_certificate_and_no_other() {
        let own = request("n1", "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&own, &no_nodes), Decision::Approve("n1".into()));
        let other = request("n2", "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&other, &no_nodes), Decision::Wait);
        let admin = request("n2", "admin", &["system:masters"]);
        assert_eq!(decide(&admin, &no_nodes), Decision::Approve("n2".into()));
        let mut foreign = request("n1", "system:node:n1", &[]);
        foreign.spec.signer_name = "kubernetes.io/kube-apiserver-client".into();
        assert_eq!(decide(&foreign, &no_nodes), Decision::Nothing);
        let mut junk = request("n1", "system:node:n1", &[]);
        junk.spec.request = ByteString(b"not a request".to_vec());
        assert!(matches!(decide(&junk, &no_nodes), Decision::Deny(_)));
    }

    #[test]
    fn client_certificates_are_reviewed_for_their_requester() {
        let client = |user: &str, usages: &[&str]| {
            let (pem, _) = tls::node_client_csr("n1").unwrap();
            let mut csr = request("n1", user, &["system:bootstrappers"]);
            csr.spec.request = ByteString(pem.into_bytes());
            csr.spec.signer_name = KUBELET_CLIENT_SIGNER.into();
            csr.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
            csr
        };
        let usages = ["digital signature", "client auth"];
        assert_eq!(
            decide(&client("system:bootstrap:abcdef", &usages), &no_nodes),
            Decision::Review {
                node: "n1".into(),
                subresources: &["nodeclient"]
            }
        );
        assert_eq!(
            decide(&client("system:node:n1", &usages), &no_nodes),
            Decision::Review {
                node: "n1".into(),
                subresources: &["selfnodeclient", "nodeclient"]
            }
        );
        // Not a kubelet client request: left to a person, failed if
        // approved.
        let wrong = client("system:node:n1", &["client auth"]);
        assert_eq!(decide(&wrong, &no_nodes), Decision::Nothing);
        let mut approved = wrong.clone();
        approved.status =
            serde_json::from_value(json!({"conditions": [{"type": "Approved", "status": "True"}]}))
                .unwrap();
        assert!(matches!(decide(&approved, &no_nodes), Decision::Fail(_)));
        // The overlay's request (with a DNS name) is not a client request.
        let mut named = request("n1", "system:node:n1", &[]);
        named.spec.signer_name = KUBELET_CLIENT_SIGNER.into();
        named.spec.usages = Some(usages.iter().map(|u| u.to_string()).collect());
        assert_eq!(decide(&named, &no_nodes), Decision::Nothing);
    }

    #[test]
    fn serving_certificates_only_for_the_nodes_own_addresses() {
        let serving = |ips: &[&str]| {
            let ips: Vec<std::net::IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
            let (pem, _) = tls::node_serving_csr("n1", &ips).unwrap();
            let mut csr = request("n1", "system:node:n1", &["system:nodes"]);
            csr.spec.request = ByteString(pem.into_bytes());
            csr.spec.signer_name = KUBELET_SERVING_SIGNER.into();
            csr
        };
        let n1 = |node: &str| {
            (node == "n1").then(|| (vec!["n1".to_string()], vec!["172.30.0.31".to_string()]))
        };
        assert_eq!(
            decide(&serving(&["172.30.0.31"]), &n1),
            Decision::Approve("n1".into())
        );
        assert_eq!(decide(&serving(&["172.30.0.99"]), &n1), Decision::Wait);
        assert_eq!(
            decide(&serving(&["172.30.0.31"]), &no_nodes),
            Decision::Wait
        );
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
