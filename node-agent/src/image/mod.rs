//! The node's image store: images arrive as archives (`shoal image load`;
//! there is no registry), are checked and kept content-addressed, and are
//! unpacked once into a root filesystem that containers mount read-only as
//! the lower layer of their overlay.
//!
//! ```text
//! archive (docker save | OCI layout, plain or gzip)
//!    │ stage (unpack.rs: safe names)   find_images (archive.rs)
//!    ▼
//! <data-dir>/images/
//!    blobs/sha256/<hex>      config and layer blobs, sha256 checked on import
//!    rootfs/<config-hex>/    the layers applied in order (whiteouts done)
//!    index.json              image id → names, repo digests, size, config
//! ```
//!
//! Layers are *flattened* into one folder per image instead of one folder
//! per layer stacked as overlay lowerdirs: whiteouts then need no
//! character devices or `trusted.*` xattrs (so an unprivileged
//! `shoal image load` works too), a container's overlay has a single
//! lower folder whatever the layer count (no mount-option length limit),
//! and an image is unpacked once however many containers use it. The cost
//! is disk: two images sharing a base layer each hold a copy.
//!
//! Names are normalized as Kubernetes does ([`Reference`]), so `busybox`,
//! `docker.io/library/busybox:latest` and the image id all find the same
//! image.

mod archive;
pub mod busybox;
pub mod debian;
pub mod reference;
pub mod unpack;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use archive::host_architecture;

/// Where a node agent keeps its state (images, containers) by default.
pub const DEFAULT_AGENT_DATA_DIR: &str = "/var/lib/shoal/agent";
pub use reference::{InvalidReference, Reference};

/// What the image store can fail at.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a docker save or OCI layout archive: {path}: {reason}")]
    NotAnArchive { path: PathBuf, reason: String },
    #[error("{path}: {what} has digest {actual}, expected {expected}")]
    DigestMismatch {
        path: PathBuf,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: layer {layer}: {source}")]
    Layer {
        path: PathBuf,
        layer: String,
        #[source]
        source: unpack::UnpackError,
    },
    #[error("{path}: image config {config}: {reason}")]
    BadConfig {
        path: PathBuf,
        config: String,
        reason: String,
    },
    #[error("image {reference:?} is not present in the local image store")]
    NotPresent { reference: String },
    #[error(transparent)]
    InvalidReference(#[from] InvalidReference),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> Error {
    let context = context.to_string();
    move |source| Error::Io { context, source }
}

/// The parts of an image's config that decide how its containers run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The signal that stops its containers (`SIGQUIT` for nginx), as the
    /// container runtime honours it; SIGTERM when absent.
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
}

/// An image of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex>` of its config, as Docker and containerd name images.
    pub id: String,
    /// Normalized names with tags (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    /// `repository@sha256:<manifest digest>`, for images from OCI layouts.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Bytes of its blobs (config and layers as stored), as crictl shows.
    pub size: u64,
    /// Layer blob digests, bottom first.
    pub layers: Vec<String>,
    pub config: ImageConfig,
    /// The flattened root filesystem (not in the index: derived).
    #[serde(skip)]
    pub rootfs: PathBuf,
}

impl Image {
    /// The hex of the id without `sha256:`.
    pub fn id_hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    images: Vec<Image>,
}

/// The image store under `<data-dir>/images`.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// The shape of an image config file this store reads.
#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ImageConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn digest_of(hasher: Sha256) -> String {
    format!("sha256:{:x}", hasher.finalize())
}

fn digest_file(path: &Path) -> Result<(String, u64)> {
    let mut file = fs::File::open(path).map_err(io_err(format!("reading {}", path.display())))?;
    let mut hasher = Sha256::new();
    let size =
        io::copy(&mut file, &mut hasher).map_err(io_err(format!("reading {}", path.display())))?;
    Ok((digest_of(hasher), size))
}

/// A reader over a file that may be gzip-compressed (checked by magic).
fn maybe_gzip(path: &Path) -> io::Result<Box<dyn Read>> {
    let mut file = fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let head = io::Cursor::new(magic[..n].to_vec());
    let whole = head.chain(file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(whole)))
    } else {
        Ok(Box::new(whole))
    }
}

/// Holds the store's lock while alive (imports from two processes at once
/// must not interleave their index writes).
struct Lock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

impl ImageStore {
    /// Opens (creating if needed) the store of the agent data dir `data_dir`.
    pub fn open(data_dir: &Path) -> Result<ImageStore> {
        let dir = data_dir.join("images");
        for sub in ["blobs/sha256", "rootfs", "tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        }
        Ok(ImageStore { dir })
    }

    fn lock(&self) -> Result<Lock> {
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("opening {}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, errno)| Error::Io {
                context: format!("locking {}", path.display()),
                source: errno.into(),
            })
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(IndexFile::default()),
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        let mut index: IndexFile = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            context: format!("reading {}", path.display()),
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })?;
        for image in &mut index.images {
            image.rootfs = self.dir.join("rootfs").join(image.id_hex());
        }
        Ok(index)
    }

    fn write_index(&self, index: &IndexFile) -> Result<()> {
        let path = self.dir.join("index.json");
        let tmp = self
            .dir
            .join(format!("index.json.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(index).map_err(|e| Error::Io {
            context: "encoding the image index".into(),
            source: io::Error::other(e),
        })?;
        fs::write(&tmp, bytes).map_err(io_err(format!("writing {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// Every image, sorted by first name (unnamed last).
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut images = self.read_index()?.images;
        images.sort_by(|a, b| match (a.names.first(), b.names.first()) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.id.cmp(&b.id),
        });
        Ok(images)
    }

    /// The image `reference` names: a name (normalized), a name with a
    /// digest, or an image id (`sha256:<hex>` or the bare hex).
    pub fn resolve(&self, reference: &str) -> Result<Image> {
        let images = self.read_index()?.images;
        let not_present = || Error::NotPresent {
            reference: reference.to_string(),
        };
        let text = reference.trim();
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return images
                .into_iter()
                .find(|i| i.id_hex() == hex)
                .ok_or_else(not_present);
        }
        let parsed = Reference::parse(text)?;
        let found = match &parsed.digest {
            Some(digest) => {
                let pinned = format!("{}@{digest}", parsed.repository());
                images.into_iter().find(|i| {
                    i.repo_digests.contains(&pinned)
                        || (&i.id == digest
                            && i.names
                                .iter()
                                .any(|n| n.starts_with(&format!("{}:", parsed.repository()))))
                })
            }
            None => {
                let name = parsed.to_string();
                images.into_iter().find(|i| i.names.contains(&name))
            }
        };
        found.ok_or_else(not_present)
    }

    /// Imports every image of the archive at `path`; names that pointed at
    /// other images move to the new ones (as `docker load` retags).
    pub fn import(&self, path: &Path) -> Result<Vec<Image>> {
        let not_archive = |reason: String| Error::NotAnArchive {
            path: path.to_path_buf(),
            reason,
        };
        let reader = maybe_gzip(path).map_err(io_err(format!("reading {}", path.display())))?;
        let staging = self.dir.join("tmp").join(format!(
            "import-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        fs::create_dir_all(&staging).map_err(io_err(format!("creating {}", staging.display())))?;
        let result = (|| {
            let staged =
                unpack::stage_archive(reader, &staging).map_err(|e| not_archive(e.to_string()))?;
            let found = archive::find_images(&staged).map_err(|e| not_archive(e.to_string()))?;
            let _lock = self.lock()?;
            let mut index = self.read_index()?;
            let mut imported = Vec::new();
            for image in found {
                let image = self.import_one(path, image)?;
                // Names and digests now belong to this image only.
                for other in &mut index.images {
                    other.names.retain(|n| !image.names.contains(n));
                    other
                        .repo_digests
                        .retain(|d| !image.repo_digests.contains(d));
                }
                match index.images.iter_mut().find(|i| i.id == image.id) {
                    Some(existing) => {
                        for n in &image.names {
                            if !existing.names.contains(n) {
                                existing.names.push(n.clone());
                            }
                        }
                        for d in &image.repo_digests {
                            if !existing.repo_digests.contains(d) {
                                existing.repo_digests.push(d.clone());
                            }
                        }
                        imported.push(existing.clone());
                    }
                    None => {
                        index.images.push(image.clone());
                        imported.push(image);
                    }
                }
            }
            self.write_index(&index)?;
            Ok(imported)
        })();
        let _ = fs::remove_dir_all(&staging);
        result
    }

    fn store_blob(&self, from: &Path, digest: &str) -> Result<PathBuf> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let dest = self.dir.join("blobs/sha256").join(hex);
        if !dest.exists() {
            // Staged files are ours: move them (same file system).
            if fs::rename(from, &dest).is_err() {
                let tmp = dest.with_extension("tmp");
                fs::copy(from, &tmp).map_err(io_err(format!("writing {}", tmp.display())))?;
                fs::rename(&tmp, &dest).map_err(io_err(format!("writing {}", dest.display())))?;
            }
        }
        Ok(dest)
    }

    fn import_one(&self, path: &Path, found: archive::Found) -> Result<Image> {
        let config_bytes = fs::read(&found.config)
            .map_err(io_err(format!("reading {}", found.config.display())))?;
        let id = digest_of(Sha256::new_with_prefix(&config_bytes));
        if let Some(claimed) = &found.config_digest {
            if claimed != &id {
                return Err(Error::DigestMismatch {
                    path: path.to_path_buf(),
                    what: "image config".into(),
                    expected: claimed.clone(),
                    actual: id,
                });
            }
        }
        let config: ConfigFile =
            serde_json::from_slice(&config_bytes).map_err(|e| Error::BadConfig {
                path: path.to_path_buf(),
                config: id.clone(),
                reason: e.to_string(),
            })?;
        if config.rootfs.diff_ids.len() != found.layers.len() {
            return Err(Error::BadConfig {
                path: path.to_path_buf(),
                config: id.clone(),
                reason: format!(
                    "lists {} layers (rootfs.diff_ids), the manifest {}",
                    config.rootfs.diff_ids.len(),
                    found.layers.len()
                ),
            });
        }
        let mut size = config_bytes.len() as u64;
        // The staged layers, checked before anything enters the store: a
        // corrupt archive leaves the store as it was.
        let mut layers = Vec::new();
        for layer in &found.layers {
            let (digest, bytes) = digest_file(&layer.path)?;
            if let Some(claimed) = &layer.digest {
                if claimed != &digest {
                    return Err(Error::DigestMismatch {
                        path: path.to_path_buf(),
                        what: format!("layer {}", layer.path.display()),
                        expected: claimed.clone(),
                        actual: digest,
                    });
                }
            }
            size += bytes;
            layers.push((layer.path.clone(), digest));
        }
        let hex = id.strip_prefix("sha256:").unwrap_or(&id).to_string();
        let rootfs = self.dir.join("rootfs").join(&hex);
        let unpacked = if rootfs.exists() {
            // Unpacked before: the layers must still be what the config says.
            for ((staged, digest), diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
                let mut reader =
                    maybe_gzip(staged).map_err(io_err(format!("reading {}", staged.display())))?;
                let mut hasher = Sha256::new();
                io::copy(&mut reader, &mut hasher)
                    .map_err(io_err(format!("reading {}", staged.display())))?;
                let actual = digest_of(hasher);
                if &actual != diff_id {
                    return Err(Error::DigestMismatch {
                        path: path.to_path_buf(),
                        what: format!("uncompressed layer {digest}"),
                        expected: diff_id.clone(),
                        actual,
                    });
                }
            }
            None
        } else {
            let tmp = self
                .dir
                .join("tmp")
                .join(format!("rootfs-{hex}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).map_err(io_err(format!("creating {}", tmp.display())))?;
            let done = (|| {
                for ((staged, digest), diff_id) in layers.iter().zip(&config.rootfs.diff_ids) {
                    let layer_err = |source| Error::Layer {
                        path: path.to_path_buf(),
                        layer: digest.clone(),
                        source,
                    };
                    let reader = maybe_gzip(staged)
                        .map_err(io_err(format!("reading {}", staged.display())))?;
                    let mut hashing = Hashing {
                        inner: reader,
                        hasher: Sha256::new(),
                    };
                    unpack::apply_layer(&mut hashing, &tmp).map_err(layer_err)?;
                    // The tar's end-of-archive padding counts in the digest.
                    io::copy(&mut hashing, &mut io::sink())
                        .map_err(|e| layer_err(unpack::UnpackError::Tar(e)))?;
                    let actual = digest_of(hashing.hasher);
                    if &actual != diff_id {
                        return Err(Error::DigestMismatch {
                            path: path.to_path_buf(),
                            what: format!("uncompressed layer {digest}"),
                            expected: diff_id.clone(),
                            actual,
                        });
                    }
                }
                Ok(())
            })();
            if let Err(e) = done {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
            Some(tmp)
        };
        let mut blobs = Vec::new();
        for (staged, digest) in layers {
            blobs.push((self.store_blob(&staged, &digest)?, digest));
        }
        self.store_blob(&found.config, &id)?;
        if let Some(tmp) = unpacked {
            if let Err(e) = fs::rename(&tmp, &rootfs) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(io_err(format!("writing {}", rootfs.display()))(e));
            }
        }
        let mut names: Vec<String> = Vec::new();
        for n in &found.names {
            let n = n.to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let repo_digests = match &found.manifest_digest {
            Some(d) => found
                .names
                .iter()
                .map(|n| format!("{}@{d}", n.repository()))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => vec![],
        };
        Ok(Image {
            id,
            names,
            repo_digests,
            size,
            layers: blobs.into_iter().map(|(_, d)| d).collect(),
            config: config.config.unwrap_or_default(),
            rootfs,
        })
    }
}

/// Rows of `shoal image ls`, as `crictl images` prints them: IMAGE, TAG,
/// IMAGE ID (13 hex digits), SIZE (decimal units, 3 significant digits).
pub fn list_rows(images: &[Image]) -> Vec<[String; 4]> {
    let mut rows = Vec::new();
    for image in images {
        let id: String = image.id_hex().chars().take(13).collect();
        let size = human_size(image.size);
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for name in &image.names {
            if let Ok(r) = Reference::parse(name) {
                tags.entry(r.repository())
                    .or_default()
                    .push(r.tag.unwrap_or_else(|| "<none>".into()));
            }
        }
        if tags.is_empty() {
            rows.push(["<none>".into(), "<none>".into(), id.clone(), size.clone()]);
        }
        for (repo, tags) in tags {
            for tag in tags {
                rows.push([repo.clone(), tag, id.clone(), size.clone()]);
            }
        }
    }
    rows
}

/// docker/go-units' `HumanSizeWithPrecision(size, 3)`: `1.36MB`, `512B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    // %.4g, then trailing zeros trimmed, as Go's %g with precision 3.
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{size:.digits$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_crictl_does() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1_360_000), "1.36MB");
        assert_eq!(human_size(2_000_000), "2MB");
        assert_eq!(human_size(12_345_678), "12.3MB");
        assert_eq!(human_size(123_456_789), "123MB");
    }

    /// A docker save archive with one layer holding `files`.
    fn docker_archive(tags: &[&str], files: &[(&str, &str)]) -> Vec<u8> {
        let mut layer = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            layer.append_data(&mut h, name, data.as_bytes()).unwrap();
        }
        let layer = layer.into_inner().unwrap();
        let diff = digest_of(Sha256::new_with_prefix(&layer));
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [diff]},
        })
        .to_string();
        let config_hex = format!("{:x}", Sha256::digest(config.as_bytes()));
        let manifest = serde_json::json!([{
            "Config": format!("{config_hex}.json"), "RepoTags": tags, "Layers": ["l/layer.tar"],
        }])
        .to_string();
        let mut outer = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("manifest.json", manifest.as_bytes()),
            (&format!("{config_hex}.json")[..], config.as_bytes()),
            ("l/layer.tar", &layer[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            outer.append_data(&mut h, name, data).unwrap();
        }
        outer.into_inner().unwrap()
    }

    #[test]
    fn docker_save_archives_import_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        fs::write(
            &archive,
            docker_archive(&["busybox:latest"], &[("etc/x", "hi")]),
        )
        .unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        let images = store.import(&archive).unwrap();
        assert_eq!(images.len(), 1);
        assert_eq!(
            images[0].names,
            vec!["docker.io/library/busybox:latest".to_string()]
        );
        let image = store.resolve("busybox").unwrap();
        assert_eq!(image.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(
            fs::read_to_string(image.rootfs.join("etc/x")).unwrap(),
            "hi"
        );
        assert_eq!(store.resolve(&image.id).unwrap().id, image.id);
        assert_eq!(store.resolve(image.id_hex()).unwrap().id, image.id);
        let missing = store.resolve("busybox:1.36").unwrap_err().to_string();
        assert!(missing.contains("not present"), "{missing}");
        // Loading again is idempotent; a new image takes the tag over.
        store.import(&archive).unwrap();
        fs::write(&archive, docker_archive(&["busybox"], &[("etc/x", "new")])).unwrap();
        store.import(&archive).unwrap();
        let list = store.list().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(
            fs::read_to_string(store.resolve("busybox").unwrap().rootfs.join("etc/x")).unwrap(),
            "new"
        );
        let rows = list_rows(&list);
        assert_eq!(rows[0][0], "docker.io/library/busybox");
        assert_eq!(rows[0][1], "latest");
        assert_eq!(rows[1][0], "<none>");
    }

    #[test]
    fn gzip_archives_and_tampered_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        let plain = docker_archive(&["x/y:1"], &[("f", "data")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let archive = dir.path().join("a.tar.gz");
        fs::write(&archive, gz.finish().unwrap()).unwrap();
        store.import(&archive).unwrap();
        assert!(store.resolve("docker.io/x/y:1").is_ok());
        // Change a byte of the layer's content: the diff id no longer matches.
        let mut bad = docker_archive(&["x/z:1"], &[("f", "data")]);
        let at = bad.windows(4).position(|w| w == b"data").unwrap();
        bad[at] = b'D';
        fs::write(&archive, bad).unwrap();
        let err = store.import(&archive).unwrap_err().to_string();
        assert!(err.contains("expected sha256:"), "{err}");
        assert!(store.resolve("x/z:1").is_err());
    }

    #[test]
    fn non_archives_get_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        let file = dir.path().join("notes.txt");
        fs::write(&file, "hello, this is not an image\n".repeat(50)).unwrap();
        let err = store.import(&file).unwrap_err().to_string();
        assert!(
            err.starts_with("not a docker save or OCI layout archive"),
            "{err}"
        );
        let empty_tar = tar::Builder::new(Vec::new()).into_inner().unwrap();
        fs::write(&file, empty_tar).unwrap();
        let err = store.import(&file).unwrap_err().to_string();
        assert!(err.contains("no manifest.json"), "{err}");
        assert!(store.import(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn hostile_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        // An outer entry climbing out of the staging folder.
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.as_old_mut().name[..11].copy_from_slice(b"../../evil\0");
        header.set_cksum();
        let mut outer = tar::Builder::new(Vec::new());
        outer.append(&header, &b"x"[..]).unwrap();
        let archive = dir.path().join("evil.tar");
        fs::write(&archive, outer.into_inner().unwrap()).unwrap();
        let err = store.import(&archive).unwrap_err().to_string();
        assert!(
            err.starts_with("not a docker save or OCI layout archive"),
            "{err}"
        );
        assert!(err.contains("path goes up"), "{err}");
        assert!(!dir.path().join("data/evil").exists());
        // A manifest naming a file the archive does not hold.
        let mut outer = tar::Builder::new(Vec::new());
        let manifest =
            br#"[{"Config":"c.json","RepoTags":["a:b"],"Layers":["../../../etc/passwd"]}]"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        outer
            .append_data(&mut h, "manifest.json", &manifest[..])
            .unwrap();
        fs::write(&archive, outer.into_inner().unwrap()).unwrap();
        let err = store.import(&archive).unwrap_err().to_string();
        assert!(err.contains("does not hold"), "{err}");
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn oci_layouts_import_with_names_and_digests() {
        let dir = tempfile::tempdir().unwrap();
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o755);
        h.set_cksum();
        layer.append_data(&mut h, "bin/app", &b"#!"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &layer).unwrap();
        let layer_gz = gz.finish().unwrap();
        let hex = |b: &[u8]| format!("{:x}", Sha256::digest(b));
        let config = serde_json::json!({"architecture":"amd64","os":"linux",
            "config":{"Entrypoint":["/bin/app"],"WorkingDir":"/w","User":"65534"},
            "rootfs":{"type":"layers","diff_ids":[format!("sha256:{}", hex(&layer))]}})
        .to_string();
        let manifest = serde_json::json!({"schemaVersion":2,
            "mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":format!("sha256:{}", hex(config.as_bytes())),"size":config.len()},
            "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":format!("sha256:{}", hex(&layer_gz)),"size":layer_gz.len()}]})
        .to_string();
        let manifest_digest = format!("sha256:{}", hex(manifest.as_bytes()));
        let index = serde_json::json!({"schemaVersion":2,"manifests":[{
            "mediaType":"application/vnd.oci.image.manifest.v1+json","digest":manifest_digest,"size":manifest.len(),
            "annotations":{"io.containerd.image.name":"registry:5000/team/app:v1","org.opencontainers.image.ref.name":"v1"}}]})
        .to_string();
        let mut outer = tar::Builder::new(Vec::new());
        let files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index.into_bytes()),
            (
                format!("blobs/sha256/{}", hex(manifest.as_bytes())),
                manifest.clone().into_bytes(),
            ),
            (
                format!("blobs/sha256/{}", hex(config.as_bytes())),
                config.clone().into_bytes(),
            ),
            (format!("blobs/sha256/{}", hex(&layer_gz)), layer_gz.clone()),
        ];
        for (name, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            outer.append_data(&mut h, name, &data[..]).unwrap();
        }
        let archive = dir.path().join("oci.tar");
        fs::write(&archive, outer.into_inner().unwrap()).unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        store.import(&archive).unwrap();
        let image = store.resolve("registry:5000/team/app:v1").unwrap();
        assert_eq!(image.config.working_dir.as_deref(), Some("/w"));
        assert_eq!(image.config.user.as_deref(), Some("65534"));
        assert!(image.rootfs.join("bin/app").exists());
        let pinned = format!("registry:5000/team/app@{manifest_digest}");
        assert_eq!(store.resolve(&pinned).unwrap().id, image.id);
    }
}
