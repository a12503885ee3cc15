//! What shoal cannot serve as an Ingress asks (pure): TLS Secrets that are
//! missing or hold no usable certificate (their hosts get the default
//! certificate) and annotations that do not parse (their defaults apply).
//! The controllers tell each as a Warning event on the Ingress, as
//! `kubectl describe ingress` shows.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;

use crate::routes::Limits;

/// A Warning event's reason and message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Warning {
    pub reason: &'static str,
    pub message: String,
}

/// The warnings about `ingress`; `secret` finds a Secret of its namespace
/// by name.
pub fn warnings(ingress: &Ingress, secret: impl Fn(&str) -> Option<Arc<Secret>>) -> Vec<Warning> {
    let mut warnings = Vec::new();
    let namespace = ingress.metadata.namespace.as_deref().unwrap_or_default();
    // Each Secret once, with every host it should serve.
    let mut hosts_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for tls in ingress.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
        let Some(name) = tls.secret_name.as_deref() else {
            continue;
        };
        let hosts = hosts_of.entry(name).or_default();
        match tls.hosts.as_deref() {
            Some(named) if !named.is_empty() => hosts.extend(named.iter().map(String::as_str)),
            _ => hosts.push("every host"),
        }
    }
    for (name, hosts) in hosts_of {
        let served = format!("serving the default certificate for {}", hosts.join(", "));
        match secret(name) {
            None => warnings.push(Warning {
                reason: "SecretNotFound",
                message: format!("secret {namespace}/{name} not found: {served}"),
            }),
            Some(found) => {
                if let Err(problem) = crate::tls::from_secret(&found) {
                    warnings.push(Warning {
                        reason: "InvalidCertificate",
                        message: format!("{problem}: {served}"),
                    });
                }
            }
        }
    }
    let annotations = ingress.metadata.annotations.clone().unwrap_or_default();
    let (_, problems) = Limits::from_annotations(&annotations);
    warnings.extend(problems.into_iter().map(|message| Warning {
        reason: "InvalidAnnotation",
        message,
    }));
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_broken_secrets_and_bad_annotations_are_told() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["good.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let secret = |name: &str, crt: &str, key: &str| -> Arc<Secret> {
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": name, "namespace": "shop"},
                    "type": "kubernetes.io/tls",
                    "data": {"tls.crt": b64(crt), "tls.key": b64(key)},
                }))
                .unwrap(),
            )
        };
        let secrets = [
            secret("good", &cert.pem(), &key.serialize_pem()),
            secret("broken", "not a certificate", &key.serialize_pem()),
        ];
        let find = |name: &str| {
            secrets
                .iter()
                .find(|s| s.metadata.name.as_deref() == Some(name))
                .cloned()
        };
        let ingress: Ingress = serde_json::from_value(json!({
            "metadata": {
                "name": "web", "namespace": "shop",
                "annotations": {"shoal.io/proxy-read-timeout": "soon"},
            },
            "spec": {"tls": [
                {"hosts": ["good.test"], "secretName": "good"},
                {"hosts": ["a.test", "b.test"], "secretName": "missing"},
                {"secretName": "broken"},
            ]},
        }))
        .unwrap();
        let warnings = warnings(&ingress, find);
        let told: Vec<(&str, &str)> = warnings
            .iter()
            .map(|w| (w.reason, w.message.as_str()))
            .collect();
        assert_eq!(
            told,
            [
                (
                    "InvalidCertificate",
                    "secret shop/broken: tls.crt holds no PEM certificate: serving the default certificate for every host"
                ),
                (
                    "SecretNotFound",
                    "secret shop/missing not found: serving the default certificate for a.test, b.test"
                ),
                (
                    "InvalidAnnotation",
                    "shoal.io/proxy-read-timeout: \"soon\" is not a number of seconds above 0; using 60"
                ),
            ]
        );
        let fine: Ingress = serde_json::from_value(json!({
            "metadata": {"name": "ok", "namespace": "shop"},
            "spec": {"tls": [{"hosts": ["good.test"], "secretName": "good"}]},
        }))
        .unwrap();
        assert!(super::warnings(&fine, find).is_empty());
    }
}
