//! The two archive formats an image arrives in, read from a staged
//! (unpacked) archive: `docker save` (`manifest.json` listing each image's
//! config file, tags and layer tars) and the OCI image layout (`oci-layout`,
//! `index.json` → manifests → config and layer blobs under `blobs/`).
//! Docker 25+ writes both in one archive; `manifest.json` wins then because
//! it carries the tags.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::reference::{validate_digest, Reference};
use super::unpack::Staged;

/// One image found in an archive, before its files are checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Names the archive gives it (tags), normalized.
    pub names: Vec<Reference>,
    /// Digest of its manifest (OCI layouts only), for `name@sha256:` use.
    pub manifest_digest: Option<String>,
    pub config: PathBuf,
    /// The config's digest as the archive claims it (OCI) or None (docker
    /// save, where it is the file name and is computed anyway).
    pub config_digest: Option<String>,
    pub layers: Vec<FoundLayer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FoundLayer {
    pub path: PathBuf,
    /// The blob digest the manifest claims (OCI), checked on import.
    pub digest: Option<String>,
}

/// Why an archive's index does not describe images.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("no manifest.json (docker save) or index.json (OCI layout) in it")]
    Unrecognized,
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("{file} names {missing:?}, which the archive does not hold")]
    Missing { file: String, missing: String },
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Deserialize, Clone)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize, Clone)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// The Go name of this machine's architecture, as image platforms use.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// The images a staged archive describes.
pub fn find_images(staged: &Staged) -> Result<Vec<Found>, FormatError> {
    if let Some(manifest) = staged.file("manifest.json") {
        return docker_save(staged, &manifest);
    }
    if let Some(index) = staged.file("index.json") {
        return oci_layout(staged, &index);
    }
    Err(FormatError::Unrecognized)
}

fn read_json<T: for<'de> Deserialize<'de>>(
    path: &std::path::Path,
    file: &str,
) -> Result<T, FormatError> {
    let bytes = std::fs::read(path).map_err(|e| FormatError::Invalid {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| FormatError::Invalid {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

fn docker_save(staged: &Staged, manifest: &std::path::Path) -> Result<Vec<Found>, FormatError> {
    let entries: Vec<DockerEntry> = read_json(manifest, "manifest.json")?;
    if entries.is_empty() {
        return Err(FormatError::Invalid {
            file: "manifest.json".into(),
            reason: "lists no image".into(),
        });
    }
    let missing = |name: &str| FormatError::Missing {
        file: "manifest.json".into(),
        missing: name.to_string(),
    };
    let mut found = Vec::new();
    for entry in entries {
        let config = staged
            .file(&entry.config)
            .ok_or_else(|| missing(&entry.config))?;
        let layers = entry
            .layers
            .iter()
            .map(|l| {
                Ok(FoundLayer {
                    path: staged.file(l).ok_or_else(|| missing(l))?,
                    digest: None,
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        let names = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| {
                Reference::parse(t).map_err(|e| FormatError::Invalid {
                    file: "manifest.json".into(),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        found.push(Found {
            names,
            manifest_digest: None,
            config,
            config_digest: None,
            layers,
        });
    }
    Ok(found)
}

fn blob(staged: &Staged, digest: &str, file: &str) -> Result<PathBuf, FormatError> {
    validate_digest(digest).map_err(|reason| FormatError::Invalid {
        file: file.to_string(),
        reason,
    })?;
    let name = format!("blobs/{}", digest.replacen(':', "/", 1));
    staged.file(&name).ok_or(FormatError::Missing {
        file: file.to_string(),
        missing: name,
    })
}

fn oci_layout(staged: &Staged, index_path: &std::path::Path) -> Result<Vec<Found>, FormatError> {
    let index: Index = read_json(index_path, "index.json")?;
    let mut found = Vec::new();
    // (descriptor, name from an outer index) still to look at; nested
    // indexes (multi-platform images) are followed to this machine's
    // platform.
    let mut pending: Vec<(Descriptor, Option<String>)> =
        index.manifests.into_iter().map(|d| (d, None)).collect();
    let mut seen = 0;
    while let Some((desc, outer_name)) = pending.pop() {
        seen += 1;
        if seen > 1000 {
            return Err(FormatError::Invalid {
                file: "index.json".into(),
                reason: "too many nested manifests".into(),
            });
        }
        let name = desc
            .annotations
            .get("io.containerd.image.name")
            .cloned()
            .or_else(|| {
                // `ref.name` is often only a tag ("latest"); a full reference
                // has a '/' or ':'.
                desc.annotations
                    .get("org.opencontainers.image.ref.name")
                    .filter(|n| n.contains('/') || n.contains(':'))
                    .cloned()
            })
            .or(outer_name);
        let path = blob(staged, &desc.digest, "index.json")?;
        if INDEX_TYPES.contains(&desc.media_type.as_str()) {
            let nested: Index = read_json(&path, &desc.digest)?;
            let arch = host_architecture();
            let pick = nested.manifests.into_iter().find(|m| {
                m.platform
                    .as_ref()
                    .is_none_or(|p| p.os == "linux" && p.architecture == arch)
            });
            if let Some(m) = pick {
                pending.push((m, name));
            }
            continue;
        }
        let manifest: Manifest = read_json(&path, &desc.digest)?;
        let layers = manifest
            .layers
            .iter()
            .map(|l| {
                Ok(FoundLayer {
                    path: blob(staged, &l.digest, &desc.digest)?,
                    digest: Some(l.digest.clone()),
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        let names = match name {
            Some(n) => vec![Reference::parse(&n).map_err(|e| FormatError::Invalid {
                file: "index.json".into(),
                reason: e.to_string(),
            })?],
            None => vec![],
        };
        found.push(Found {
            names,
            manifest_digest: Some(desc.digest.clone()),
            config: blob(staged, &manifest.config.digest, &desc.digest)?,
            config_digest: Some(manifest.config.digest.clone()),
            layers,
        });
    }
    if found.is_empty() {
        return Err(FormatError::Invalid {
            file: "index.json".into(),
            reason: format!("no manifest for linux/{}", host_architecture()),
        });
    }
    found.reverse();
    Ok(found)
}
