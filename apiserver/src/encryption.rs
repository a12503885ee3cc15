//! Encryption at rest, as kube-apiserver's `--encryption-provider-config`:
//! an `EncryptionConfiguration` names, per resource, the providers in
//! order; the first one encrypts what is written, every one may decrypt
//! what is read (so that keys can be rotated: a new key first, the old one
//! after it, every object rewritten, then the old key removed).
//!
//! ```text
//!   write: value ──▶ first provider ──▶ k8s:enc:aesgcm:v1:<key name>:<nonce><ciphertext+tag>
//!   read:  k8s:enc:aesgcm:v1:<name>: ──▶ that key of an aesgcm provider
//!          anything else ──▶ as it is, if `identity` is a provider (else an error)
//! ```
//!
//! AES-GCM (`aesgcm`, 16- or 32-byte keys) with a random 12-byte nonce per
//! write and the store key as additional data, so that a value moved to
//! another key does not decrypt; `identity` stores as is. kube-apiserver's
//! `aescbc`, `secretbox` and `kms` are refused with a clear message.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;

/// What every encrypted value starts with.
const PREFIX: &str = "k8s:enc:";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the encryption configuration {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the encryption configuration {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
}

/// The file, as kube-apiserver reads it (`apiserver.config.k8s.io/v1`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    kind: Option<String>,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Debug, Deserialize)]
struct ResourceConfig {
    resources: Vec<String>,
    providers: Vec<BTreeMap<String, ProviderConfig>>,
}

#[derive(Debug, Default, Deserialize)]
struct ProviderConfig {
    #[serde(default)]
    keys: Vec<KeyConfig>,
}

#[derive(Debug, Deserialize)]
struct KeyConfig {
    name: String,
    secret: String,
}

/// One AES-GCM key.
struct Key {
    name: String,
    key: LessSafeKey,
}

enum Provider {
    Identity,
    AesGcm(Vec<Key>),
}

/// The providers of the resources whose store keys start with `prefix`.
struct Rule {
    prefix: String,
    providers: Vec<Provider>,
}

/// The loaded configuration: what to do with each store key's value.
pub struct Encryption {
    rules: Vec<Rule>,
    random: SystemRandom,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefixes: Vec<&str> = self.rules.iter().map(|r| r.prefix.as_str()).collect();
        f.debug_struct("Encryption")
            .field("prefixes", &prefixes)
            .finish()
    }
}

impl Encryption {
    /// Reads the configuration file at `path`.
    pub fn load(path: &Path) -> Result<Encryption, Error> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: shown.clone(),
            source,
        })?;
        Encryption::parse(&text).map_err(|reason| Error::Invalid {
            path: shown,
            reason,
        })
    }

    /// Parses the configuration's text (resources as `secrets`,
    /// `deployments.apps`).
    pub fn parse(text: &str) -> Result<Encryption, String> {
        let file: File = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        if let Some(kind) = &file.kind {
            if kind != "EncryptionConfiguration" {
                return Err(format!("kind is {kind:?}, not \"EncryptionConfiguration\""));
            }
        }
        let mut rules = Vec::new();
        for (i, config) in file.resources.iter().enumerate() {
            if config.providers.is_empty() {
                return Err(format!("resources[{i}]: providers must not be empty"));
            }
            let mut providers = Vec::new();
            for (j, named) in config.providers.iter().enumerate() {
                let mut entries = named.iter();
                let (Some((kind, settings)), None) = (entries.next(), entries.next()) else {
                    return Err(format!(
                        "resources[{i}].providers[{j}]: exactly one provider per entry"
                    ));
                };
                let at = format!("resources[{i}].providers[{j}].{kind}");
                providers.push(provider(kind, settings).map_err(|e| format!("{at}: {e}"))?);
            }
            for resource in &config.resources {
                let prefix = prefix_of(resource).ok_or_else(|| {
                    format!("resources[{i}]: {resource:?} is not a resource shoal stores (e.g. secrets, configmaps, deployments.apps)")
                })?;
                if rules.iter().any(|r: &Rule| r.prefix == prefix) {
                    continue;
                }
                rules.push(Rule {
                    prefix,
                    providers: providers.iter().map(Provider::clone_keys).collect(),
                });
            }
        }
        Ok(Encryption {
            rules,
            random: SystemRandom::new(),
        })
    }

    fn rule(&self, key: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| key.starts_with(&r.prefix))
    }

    /// The value to store under `key`; an error (nothing is written) when
    /// it cannot be encrypted.
    pub fn seal(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        match rule.providers.first() {
            Some(Provider::AesGcm(keys)) => match keys.first() {
                Some(first) => self.encrypt(key, first, value),
                None => Ok(value),
            },
            Some(Provider::Identity) | None => Ok(value),
        }
    }

    fn encrypt(&self, store_key: &str, key: &Key, mut value: Vec<u8>) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| format!("{store_key}: no random nonce from the system"))?;
        key.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(store_key.as_bytes()),
                &mut value,
            )
            .map_err(|_| format!("{store_key}: AES-GCM sealing failed"))?;
        let mut out = format!("{PREFIX}aesgcm:v1:{}:", key.name).into_bytes();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&value);
        Ok(out)
    }

    /// Is `stored` (as read from `key`) written otherwise than [`seal`]
    /// would write it now: encrypted with another key or provider, or not
    /// encrypted where it should be?
    ///
    /// [`seal`]: Encryption::seal
    pub fn is_stale(&self, key: &str, stored: &[u8]) -> bool {
        let Some(rule) = self.rule(key) else {
            return false;
        };
        match rule.providers.first() {
            Some(Provider::AesGcm(keys)) => match keys.first() {
                Some(first) => {
                    !stored.starts_with(format!("{PREFIX}aesgcm:v1:{}:", first.name).as_bytes())
                }
                None => false,
            },
            Some(Provider::Identity) | None => stored.starts_with(PREFIX.as_bytes()),
        }
    }

    /// The value read from `key`, decrypted; an error when no provider can
    /// read it (kube-apiserver's "no matching prefix found" / a wrong key).
    pub fn open(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, String> {
        let Some(rule) = self.rule(key) else {
            return Ok(value);
        };
        if let Some(rest) = value.strip_prefix(b"k8s:enc:aesgcm:v1:".as_slice()) {
            let colon = rest
                .iter()
                .position(|b| *b == b':')
                .ok_or_else(|| format!("{key}: an aesgcm value without a key name"))?;
            let name = String::from_utf8_lossy(&rest[..colon]);
            let sealed = &rest[colon + 1..];
            let found = rule
                .providers
                .iter()
                .filter_map(|p| match p {
                    Provider::AesGcm(keys) => Some(keys.iter()),
                    Provider::Identity => None,
                })
                .flatten()
                .find(|k| k.name == name)
                .ok_or_else(|| {
                    format!("{key}: encrypted with the key {name:?}, which the encryption configuration no longer has")
                })?;
            if sealed.len() < NONCE_LEN {
                return Err(format!("{key}: the encrypted value is truncated"));
            }
            let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
            let nonce = Nonce::try_assume_unique_for_key(nonce)
                .map_err(|_| format!("{key}: the encrypted value is truncated"))?;
            let mut buffer = ciphertext.to_vec();
            let plain = found
                .key
                .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buffer)
                .map_err(|_| format!("{key}: the value does not decrypt with the key {name:?}"))?;
            return Ok(plain.to_vec());
        }
        if value.starts_with(PREFIX.as_bytes()) {
            let provider = String::from_utf8_lossy(&value[PREFIX.len()..])
                .split(':')
                .next()
                .unwrap_or_default()
                .to_string();
            return Err(format!(
                "{key}: encrypted by the provider {provider:?}, which shoal does not have"
            ));
        }
        if rule
            .providers
            .iter()
            .any(|p| matches!(p, Provider::Identity))
        {
            Ok(value)
        } else {
            Err(format!(
                "{key}: stored unencrypted and the configuration has no identity provider to read it"
            ))
        }
    }
}

impl Provider {
    fn clone_keys(&self) -> Provider {
        match self {
            Provider::Identity => Provider::Identity,
            Provider::AesGcm(keys) => Provider::AesGcm(
                keys.iter()
                    .map(|k| Key {
                        name: k.name.clone(),
                        key: k.key.clone(),
                    })
                    .collect(),
            ),
        }
    }
}

fn provider(kind: &str, settings: &ProviderConfig) -> Result<Provider, String> {
    match kind {
        "identity" => Ok(Provider::Identity),
        "aesgcm" => {
            if settings.keys.is_empty() {
                return Err("keys must not be empty".into());
            }
            let mut keys: Vec<Key> = Vec::new();
            for key in &settings.keys {
                if key.name.is_empty() || key.name.contains(':') {
                    return Err(format!(
                        "key name {:?} must be non-empty without ':'",
                        key.name
                    ));
                }
                if keys.iter().any(|k| k.name == key.name) {
                    return Err(format!("key name {:?} is used twice", key.name));
                }
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(key.secret.trim())
                    .map_err(|e| format!("key {:?}: secret is not base64: {e}", key.name))?;
                let algorithm = match bytes.len() {
                    16 => &AES_128_GCM,
                    32 => &AES_256_GCM,
                    n => {
                        return Err(format!(
                            "key {:?}: secret is {n} bytes; aesgcm takes 16 or 32",
                            key.name
                        ))
                    }
                };
                let unbound = UnboundKey::new(algorithm, &bytes)
                    .map_err(|_| format!("key {:?}: not an AES key", key.name))?;
                keys.push(Key {
                    name: key.name.clone(),
                    key: LessSafeKey::new(unbound),
                });
            }
            Ok(Provider::AesGcm(keys))
        }
        "aescbc" | "secretbox" | "kms" => Err(format!(
            "the {kind} provider is not supported by shoal; use aesgcm (or identity)"
        )),
        other => Err(format!("unknown provider {other:?}")),
    }
}

/// The store prefix of a resource as an EncryptionConfiguration names it:
/// `secrets` (core), `deployments.apps` (with its group).
fn prefix_of(resource: &str) -> Option<String> {
    let (name, group) = resource.split_once('.').unwrap_or((resource, ""));
    let known = crate::resources::all().find(|r| r.plural == name && r.group == group)?;
    Some(known.prefix(None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY1: &str = "c2hvYWwtc2hvYWwtc2hvYWwtc2hvYWwtc2hvYWwtMTI="; // 32 bytes
    const KEY2: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes

    fn config(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n{providers}"
        )
    }

    #[test]
    fn secrets_are_sealed_with_the_first_key_and_read_with_any() {
        let one = Encryption::parse(&config(&format!(
            "  - aesgcm:\n      keys:\n      - {{name: key1, secret: {KEY1}}}\n  - identity: {{}}\n"
        )))
        .unwrap();
        let key = "/registry/secrets/default/s";
        let sealed = one.seal(key, b"{\"data\":{}}".to_vec()).unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(4).any(|w| w == b"data"));
        assert_eq!(one.open(key, sealed.clone()).unwrap(), b"{\"data\":{}}");
        // Bound to its key: moved elsewhere it does not decrypt.
        assert!(one
            .open("/registry/secrets/default/t", sealed.clone())
            .is_err());
        // Not a secret: untouched both ways.
        assert_eq!(
            one.seal("/registry/configmaps/default/c", b"x".to_vec())
                .unwrap(),
            b"x"
        );
        // What was stored before encryption reads through identity.
        assert_eq!(one.open(key, b"plain".to_vec()).unwrap(), b"plain");

        // Rotation: key2 first, key1 still read; then key1 gone.
        let rotated = Encryption::parse(&config(&format!(
            "  - aesgcm:\n      keys:\n      - {{name: key2, secret: {KEY2}}}\n      - {{name: key1, secret: {KEY1}}}\n"
        )))
        .unwrap();
        assert_eq!(rotated.open(key, sealed.clone()).unwrap(), b"{\"data\":{}}");
        let resealed = rotated.seal(key, b"v".to_vec()).unwrap();
        assert!(resealed.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        assert!(
            rotated.is_stale(key, &sealed),
            "key1 is not the first any more"
        );
        assert!(!rotated.is_stale(key, &rotated.seal(key, b"v".to_vec()).unwrap()));
        assert!(rotated.is_stale(key, b"plain"));
        assert!(!one.is_stale(key, &sealed));
        assert!(!one.is_stale("/registry/configmaps/default/c", b"plain"));
        let only_two = Encryption::parse(&config(&format!(
            "  - aesgcm:\n      keys:\n      - {{name: key2, secret: {KEY2}}}\n"
        )))
        .unwrap();
        assert_eq!(only_two.open(key, resealed).unwrap(), b"v");
        let lost = only_two.open(key, sealed).unwrap_err();
        assert!(lost.contains("no longer has"), "{lost}");
        let plain = only_two.open(key, b"plain".to_vec()).unwrap_err();
        assert!(plain.contains("no identity provider"), "{plain}");
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        for (providers, fragment) in [
            (
                "  - aescbc:\n      keys:\n      - {name: k, secret: MDEyMzQ1Njc4OWFiY2RlZg==}\n",
                "not supported",
            ),
            (
                "  - aesgcm:\n      keys:\n      - {name: k, secret: c2hvcnQ=}\n",
                "takes 16 or 32",
            ),
            (
                "  - aesgcm:\n      keys:\n      - {name: k, secret: '%%%'}\n",
                "not base64",
            ),
            ("  - aesgcm:\n      keys: []\n", "keys must not be empty"),
            ("  - nothing: {}\n", "unknown provider"),
        ] {
            let error = Encryption::parse(&config(providers)).unwrap_err();
            assert!(error.contains(fragment), "{error}");
        }
        let error = Encryption::parse(
            "kind: EncryptionConfiguration\nresources:\n- resources: [widgets]\n  providers:\n  - identity: {}\n",
        )
        .unwrap_err();
        assert!(error.contains("\"widgets\" is not a resource"), "{error}");
        let error = Encryption::parse("kind: Pod\n").unwrap_err();
        assert!(error.contains("not \"EncryptionConfiguration\""), "{error}");
    }
}
