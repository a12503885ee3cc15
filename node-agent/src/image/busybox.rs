//! A `busybox` image made on the node from Debian's static busybox, so that
//! pods naming `busybox` run with no registry and no download (the Rust
//! twin of `scripts/busybox-image.sh`).
//!
//! ```text
//! /bin/busybox ──┬─ bytes ─────────────┐
//!                ├─ `busybox --list` ──┼─► layer.tar ──► docker save archive ──► ImageStore::import
//!                └─ `busybox` (banner) ┘   (one layer)   (manifest.json, config, repositories)
//! ```
//!
//! The layer holds `/bin/busybox`, a symlink per applet, `/etc/passwd`,
//! `/etc/group`, an `/etc/hosts` placeholder and the usual empty folders;
//! the config sets `PATH` and `Cmd ["sh"]`. Same busybox in, same bytes out:
//! entries are sorted, owned by 0:0, dated 1970-01-01 and the JSON is
//! written from structs (fixed key order), so the image id only changes
//! when the busybox binary does.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ImageStore, Reference};

/// Where Debian's `busybox-static` installs the binary.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// The name `ensure_loaded` gives the image.
pub const DEFAULT_TAG: &str = "busybox:latest";

/// The `PATH` of the image's config, as Docker's official images set it.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Every date in the image (config, history, tar entries): the epoch.
const EPOCH: &str = "1970-01-01T00:00:00Z";

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      nobody:x:65534:65534:nobody:/home:/bin/false\n";
const GROUP: &str = "root:x:0:\nnobody:x:65534:\n";
// Replaced by a bind mount in pods; here for `docker run` and plain runc.
const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// What building or loading the busybox image can fail at.
#[derive(Debug, thiserror::Error)]
pub enum BusyboxError {
    #[error("{} not found: install Debian's busybox-static", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is not a static busybox ({reason}): install Debian's busybox-static", path.display())]
    NotStatic { path: PathBuf, reason: String },
    #[error("{} has no --list ({reason}): want a static busybox (busybox-static)", path.display())]
    NoList { path: PathBuf, reason: String },
    #[error("invalid image tag {tag:?}: {reason}")]
    InvalidTag { tag: String, reason: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] super::Error),
}

pub type Result<T, E = BusyboxError> = std::result::Result<T, E>;

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> BusyboxError {
    let context = context.to_string();
    move |source| BusyboxError::Io { context, source }
}

/// Loads the busybox image into `store` unless a `busybox` image (whatever
/// its origin) is already there. Ok(true) when it was built and imported.
pub fn ensure_loaded(store: &ImageStore, busybox: &Path) -> Result<bool> {
    match store.resolve("busybox") {
        Ok(_) => return Ok(false),
        Err(super::Error::NotPresent { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // The store's own scratch folder: same file system as its blobs, so the
    // import moves the layer instead of copying it.
    let archive = store.dir.join("tmp").join(format!(
        "busybox-{}-{}.tar",
        std::process::id(),
        unique_suffix()
    ));
    let loaded = build_archive(busybox, &archive, DEFAULT_TAG)
        .and_then(|()| store.import(&archive).map_err(BusyboxError::from));
    let _ = fs::remove_file(&archive);
    for image in loaded? {
        tracing::info!(image = %image.id, from = %busybox.display(), "loaded the busybox image");
    }
    Ok(true)
}

/// Writes a `docker save` archive of the busybox image named `tag` (e.g.
/// `busybox:latest`) made from the static busybox at `busybox`.
pub fn build_archive(busybox: &Path, out: &Path, tag: &str) -> Result<()> {
    let (repo, tag_only) = split_tag(tag)?;
    let binary = match fs::read(busybox) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(BusyboxError::NotFound {
                path: busybox.to_path_buf(),
            })
        }
        Err(e) => return Err(io_err(format!("reading {}", busybox.display()))(e)),
    };
    // A dynamically linked busybox would find no libc in the image.
    check_static_elf(&binary).map_err(|reason| BusyboxError::NotStatic {
        path: busybox.to_path_buf(),
        reason,
    })?;
    let no_list = |reason: String| BusyboxError::NoList {
        path: busybox.to_path_buf(),
        reason,
    };
    let listed = Command::new(busybox)
        .arg("--list")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| no_list(e.to_string()))?;
    if !listed.status.success() {
        let stderr = String::from_utf8_lossy(&listed.stderr);
        return Err(no_list(format!("{}: {}", listed.status, stderr.trim())));
    }
    let applets = parse_applets(&String::from_utf8_lossy(&listed.stdout)).map_err(no_list)?;
    let version = banner(busybox);
    let bytes = archive_bytes(&ArchiveInput {
        busybox: &binary,
        applets: &applets,
        version: &version,
        repo: &repo,
        tag: &tag_only,
        architecture: super::host_architecture(),
    })?;
    write_atomically(out, &bytes)
}

/// The first line busybox prints when run with no arguments
/// (`BusyBox v1.35.0 (Debian 1:1.35.0-4+deb12u1+b1) multi-call binary.`),
/// or "" if it prints none.
fn banner(busybox: &Path) -> String {
    Command::new(busybox)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(|l| l.replace(['"', '\\'], "").trim().to_string())
        })
        .unwrap_or_default()
}

fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Writes `out` through a sibling temporary file, so a reader never sees
/// half an archive.
fn write_atomically(out: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "busybox.tar".into());
    let tmp = out.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let written = fs::write(&tmp, bytes)
        .map_err(io_err(format!("writing {}", tmp.display())))
        .and_then(|()| fs::rename(&tmp, out).map_err(io_err(format!("writing {}", out.display()))));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Splits a tag as `docker save` writes it into repository and tag
/// (`busybox` → `busybox`, `latest`; `registry:5000/bb:1` →
/// `registry:5000/bb`, `1`), after checking it is a valid image name
/// without a digest.
pub fn split_tag(tag: &str) -> Result<(String, String)> {
    let invalid = |reason: String| BusyboxError::InvalidTag {
        tag: tag.to_string(),
        reason,
    };
    let parsed = Reference::parse(tag).map_err(|e| invalid(e.reason))?;
    if parsed.digest.is_some() {
        return Err(invalid("a built image has no digest to pin".into()));
    }
    let slash = tag.rfind('/').map_or(0, |i| i + 1);
    Ok(match tag[slash..].rfind(':') {
        Some(colon) => {
            let at = slash + colon;
            (tag[..at].to_string(), tag[at + 1..].to_string())
        }
        None => (tag.to_string(), "latest".to_string()),
    })
}

/// The applet names of `busybox --list` output, sorted, without `busybox`
/// itself (it is the binary the links point at).
pub fn parse_applets(list: &str) -> Result<Vec<String>, String> {
    let mut applets = std::collections::BTreeSet::new();
    for name in list.split_whitespace() {
        if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
            return Err(format!("it lists {name:?}, which is not an applet name"));
        }
        if name != "busybox" {
            applets.insert(name.to_string());
        }
    }
    if !applets.contains("sh") {
        return Err("it has no sh applet".into());
    }
    Ok(applets.into_iter().collect())
}

/// Ok if `elf` is an ELF executable with no program interpreter (static,
/// static-pie included); why not otherwise.
pub fn check_static_elf(elf: &[u8]) -> Result<(), String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF executable".into());
    }
    let wide = match elf.get(4) {
        Some(1) => false,
        Some(2) => true,
        _ => return Err("unknown ELF class".into()),
    };
    let little = match elf.get(5) {
        Some(1) => true,
        Some(2) => false,
        _ => return Err("unknown ELF byte order".into()),
    };
    let truncated = || "truncated ELF header".to_string();
    let uint = |at: usize, len: usize| -> Result<u64, String> {
        let bytes = elf
            .get(at..at.checked_add(len).ok_or_else(truncated)?)
            .ok_or_else(truncated)?;
        let mut value = 0u64;
        for i in 0..len {
            let b = if little { bytes[len - 1 - i] } else { bytes[i] };
            value = (value << 8) | u64::from(b);
        }
        Ok(value)
    };
    const ET_EXEC: u64 = 2;
    const ET_DYN: u64 = 3;
    const PT_INTERP: u64 = 3;
    let kind = uint(16, 2)?;
    if kind != ET_EXEC && kind != ET_DYN {
        return Err("not an ELF executable".into());
    }
    let (phoff, phentsize, phnum) = if wide {
        (uint(32, 8)?, uint(54, 2)?, uint(56, 2)?)
    } else {
        (uint(28, 4)?, uint(42, 2)?, uint(44, 2)?)
    };
    for i in 0..phnum {
        let at = phentsize
            .checked_mul(i)
            .and_then(|o| o.checked_add(phoff))
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(truncated)?;
        if uint(at, 4)? == PT_INTERP {
            return Err("dynamically linked: it has an ELF interpreter".into());
        }
    }
    Ok(())
}

/// What an archive is made of; everything that varies from one build to
/// another is here, so equal inputs give equal bytes.
#[derive(Debug, Clone, Copy)]
pub struct ArchiveInput<'a> {
    /// The busybox binary's bytes.
    pub busybox: &'a [u8],
    /// Applet names, from [`parse_applets`].
    pub applets: &'a [String],
    /// busybox's banner, kept in the image's history.
    pub version: &'a str,
    pub repo: &'a str,
    pub tag: &'a str,
    /// Go name of the architecture (`amd64`).
    pub architecture: &'a str,
}

/// One entry of a tar this module writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry<'a> {
    Dir { mode: u32 },
    File { mode: u32, data: &'a [u8] },
    Symlink { target: &'a str },
}

/// A tar of `entries` (paths without a trailing slash), in name order as
/// `tar --sort=name` walks a tree (a folder, then its children), every
/// entry owned by 0:0 and dated 0.
fn deterministic_tar(entries: BTreeMap<String, Entry<'_>>) -> Result<Vec<u8>> {
    let mut sorted: Vec<(String, Entry<'_>)> = entries.into_iter().collect();
    sorted.sort_by(|(a, _), (b, _)| a.split('/').cmp(b.split('/')));
    let tar_err = |path: &str| {
        let context = format!("writing tar entry {path}");
        move |source| BusyboxError::Io { context, source }
    };
    let mut builder = tar::Builder::new(Vec::new());
    for (path, entry) in &sorted {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        match entry {
            Entry::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                builder
                    .append_data(&mut header, format!("{path}/"), io::empty())
                    .map_err(tar_err(path))?;
            }
            Entry::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder
                    .append_data(&mut header, path, *data)
                    .map_err(tar_err(path))?;
            }
            Entry::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                builder
                    .append_link(&mut header, path, target)
                    .map_err(tar_err(path))?;
            }
        }
    }
    builder.into_inner().map_err(io_err("finishing a tar"))
}

/// The image's only layer.
fn layer_tar(input: &ArchiveInput<'_>) -> Result<Vec<u8>> {
    let mut entries = BTreeMap::new();
    for dir in ["bin", "etc", "var", "var/www", "home", "dev", "proc", "sys"] {
        entries.insert(dir.to_string(), Entry::Dir { mode: 0o755 });
    }
    entries.insert("tmp".into(), Entry::Dir { mode: 0o1777 });
    entries.insert("root".into(), Entry::Dir { mode: 0o700 });
    entries.insert(
        "bin/busybox".into(),
        Entry::File {
            mode: 0o755,
            data: input.busybox,
        },
    );
    for applet in input.applets {
        entries
            .entry(format!("bin/{applet}"))
            .or_insert(Entry::Symlink { target: "busybox" });
    }
    for (path, text) in [
        ("etc/passwd", PASSWD),
        ("etc/group", GROUP),
        ("etc/hosts", HOSTS),
    ] {
        entries.insert(
            path.into(),
            Entry::File {
                mode: 0o644,
                data: text.as_bytes(),
            },
        );
    }
    deterministic_tar(entries)
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    architecture: &'a str,
    os: &'a str,
    created: &'a str,
    config: RunJson<'a>,
    rootfs: RootFsJson,
    history: [HistoryJson; 1],
}

#[derive(Serialize)]
struct RunJson<'a> {
    #[serde(rename = "Env")]
    env: [&'a str; 1],
    #[serde(rename = "Cmd")]
    cmd: [&'a str; 1],
}

/// `rootfs` of an image config with one layer (also the Debian images').
#[derive(Serialize)]
pub(super) struct RootFsJson {
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) diff_ids: [String; 1],
}

/// A `history` entry of an image config.
#[derive(Serialize)]
pub(super) struct HistoryJson {
    pub(super) created: &'static str,
    pub(super) created_by: String,
}

#[derive(Serialize)]
struct ManifestJson<'a> {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: [String; 1],
    #[serde(rename = "Layers")]
    layers: [&'a str; 1],
}

#[derive(Serialize)]
struct LayerJson<'a> {
    id: &'a str,
    created: &'a str,
    os: &'a str,
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| BusyboxError::Io {
        context: "encoding the busybox image's JSON".into(),
        source: io::Error::other(e),
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The `docker save` archive of the image: `<diff-id>/layer.tar` (with
/// `VERSION` and `json` as `docker save` writes them), `<config-id>.json`,
/// `manifest.json` and `repositories`.
pub fn archive_bytes(input: &ArchiveInput<'_>) -> Result<Vec<u8>> {
    let layer = layer_tar(input)?;
    let diff_hex = sha256_hex(&layer);
    let config = to_json(&ConfigJson {
        architecture: input.architecture,
        os: "linux",
        created: EPOCH,
        config: RunJson {
            env: [PATH_ENV],
            cmd: ["sh"],
        },
        rootfs: RootFsJson {
            kind: "layers",
            diff_ids: [format!("sha256:{diff_hex}")],
        },
        history: [HistoryJson {
            created: EPOCH,
            created_by: format!("shoal busybox image: {}", input.version),
        }],
    })?;
    let config_hex = sha256_hex(&config);
    let layer_path = format!("{diff_hex}/layer.tar");
    let manifest = to_json(&[ManifestJson {
        config: format!("{config_hex}.json"),
        repo_tags: [format!("{}:{}", input.repo, input.tag)],
        layers: [&layer_path],
    }])?;
    let layer_json = to_json(&LayerJson {
        id: &diff_hex,
        created: EPOCH,
        os: "linux",
    })?;
    let repositories = to_json(&BTreeMap::from([(
        input.repo,
        BTreeMap::from([(input.tag, &diff_hex)]),
    )]))?;
    let mut entries = BTreeMap::new();
    let file = |data| Entry::File { mode: 0o644, data };
    entries.insert(diff_hex.clone(), Entry::Dir { mode: 0o755 });
    entries.insert(layer_path.clone(), file(&layer));
    entries.insert(format!("{diff_hex}/VERSION"), file(b"1.0"));
    entries.insert(format!("{diff_hex}/json"), file(&layer_json));
    entries.insert(format!("{config_hex}.json"), file(&config));
    entries.insert("manifest.json".into(), file(&manifest));
    entries.insert("repositories".into(), file(&repositories));
    deterministic_tar(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// The real busybox, or None (with a note) where it is not installed.
    fn real_busybox() -> Option<PathBuf> {
        let path = PathBuf::from(DEFAULT_BUSYBOX);
        if path.exists() {
            Some(path)
        } else {
            println!("skipped: {DEFAULT_BUSYBOX} is absent (apt-get install busybox-static)");
            None
        }
    }

    fn entries_of(tar_bytes: &[u8]) -> Vec<(String, tar::EntryType, Option<String>, u32)> {
        let mut archive = tar::Archive::new(tar_bytes);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                assert_eq!((h.uid().unwrap(), h.gid().unwrap()), (0, 0));
                assert_eq!(h.mtime().unwrap(), 0);
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    e.link_name()
                        .unwrap()
                        .map(|l| l.to_string_lossy().into_owned()),
                    h.mode().unwrap(),
                )
            })
            .collect()
    }

    fn file_in(tar_bytes: &[u8], name: &str) -> Vec<u8> {
        let mut archive = tar::Archive::new(tar_bytes);
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            if e.path().unwrap().to_string_lossy() == name {
                let mut data = Vec::new();
                io::Read::read_to_end(&mut e, &mut data).unwrap();
                return data;
            }
        }
        panic!("{name} not in the archive");
    }

    fn fake_input<'a>(applets: &'a [String]) -> ArchiveInput<'a> {
        ArchiveInput {
            busybox: b"not really busybox",
            applets,
            version: "BusyBox v0 (test)",
            repo: "busybox",
            tag: "latest",
            architecture: "amd64",
        }
    }

    #[test]
    fn busybox_tags_split_as_docker_save_writes_them() {
        let split = |t: &str| split_tag(t).unwrap();
        assert_eq!(split("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(split("busybox:1.35"), ("busybox".into(), "1.35".into()));
        assert_eq!(
            split("registry:5000/team/bb"),
            ("registry:5000/team/bb".into(), "latest".into())
        );
        assert_eq!(
            split("registry:5000/bb:v1"),
            ("registry:5000/bb".into(), "v1".into())
        );
        assert!(split_tag("Busybox").is_err());
        let digest = format!("busybox@sha256:{}", "a".repeat(64));
        assert!(split_tag(&digest)
            .unwrap_err()
            .to_string()
            .contains("no digest"));
    }

    #[test]
    fn busybox_applet_lists_are_checked() {
        let applets = parse_applets("[\n[[\nsh\nbusybox\nls\nsh\n").unwrap();
        assert_eq!(applets, ["[", "[[", "ls", "sh"]);
        assert!(parse_applets("sh\n../etc\n").is_err());
        assert!(parse_applets("sh\nsbin/ip\n").is_err());
        assert!(parse_applets("").unwrap_err().contains("no sh"));
    }

    /// A minimal ELF64 little-endian header with program headers of `types`.
    fn elf64(types: &[u32]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[16..18].copy_from_slice(&2u16.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for t in types {
            let mut ph = vec![0u8; 56];
            ph[..4].copy_from_slice(&t.to_le_bytes());
            elf.extend(ph);
        }
        elf
    }

    #[test]
    fn busybox_must_be_a_static_elf() {
        assert_eq!(check_static_elf(&elf64(&[1, 1, 4])), Ok(()));
        let dynamic = check_static_elf(&elf64(&[6, 3, 1])).unwrap_err();
        assert!(dynamic.contains("dynamically linked"), "{dynamic}");
        assert!(check_static_elf(b"#!/bin/sh\necho hi\n").is_err());
        // Program headers past the end of the file.
        let mut cut = elf64(&[1, 3]);
        cut.truncate(100);
        assert!(check_static_elf(&cut).is_err());
        // 32-bit, big-endian, one PT_INTERP.
        let mut elf = vec![0u8; 52 + 32];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 1;
        elf[5] = 2;
        elf[16..18].copy_from_slice(&2u16.to_be_bytes());
        elf[28..32].copy_from_slice(&52u32.to_be_bytes());
        elf[42..44].copy_from_slice(&32u16.to_be_bytes());
        elf[44..46].copy_from_slice(&1u16.to_be_bytes());
        elf[52..56].copy_from_slice(&3u32.to_be_bytes());
        assert!(check_static_elf(&elf).is_err());
        elf[52..56].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(check_static_elf(&elf), Ok(()));
    }

    #[test]
    fn busybox_archive_layout_is_sorted_and_imports() {
        let applets: Vec<String> = ["sh", "ls", "[", "zcat"].map(String::from).to_vec();
        let bytes = archive_bytes(&fake_input(&applets)).unwrap();
        assert_eq!(bytes, archive_bytes(&fake_input(&applets)).unwrap());
        let outer = entries_of(&bytes);
        let names: Vec<&str> = outer.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names.len(), 7);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(&names[5..], ["manifest.json", "repositories"]);

        let manifest: serde_json::Value =
            serde_json::from_slice(&file_in(&bytes, "manifest.json")).unwrap();
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let layer_name = manifest[0]["Layers"][0].as_str().unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "busybox:latest");
        let config_bytes = file_in(&bytes, config_name);
        assert_eq!(
            format!("{}.json", sha256_hex(&config_bytes)),
            config_name,
            "the config is named by its digest"
        );
        let config: serde_json::Value = serde_json::from_slice(&config_bytes).unwrap();
        let layer = file_in(&bytes, layer_name);
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&layer))
        );
        assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
        assert_eq!(config["config"]["Env"], serde_json::json!([PATH_ENV]));
        assert_eq!(config["architecture"], "amd64");
        let repositories: serde_json::Value =
            serde_json::from_slice(&file_in(&bytes, "repositories")).unwrap();
        assert_eq!(
            repositories["busybox"]["latest"],
            layer_name.trim_end_matches("/layer.tar")
        );

        let inner = entries_of(&layer);
        let listed: Vec<(&str, u32)> = inner.iter().map(|e| (e.0.as_str(), e.3)).collect();
        assert_eq!(
            listed,
            [
                ("bin/", 0o755),
                ("bin/[", 0o777),
                ("bin/busybox", 0o755),
                ("bin/ls", 0o777),
                ("bin/sh", 0o777),
                ("bin/zcat", 0o777),
                ("dev/", 0o755),
                ("etc/", 0o755),
                ("etc/group", 0o644),
                ("etc/hosts", 0o644),
                ("etc/passwd", 0o644),
                ("home/", 0o755),
                ("proc/", 0o755),
                ("root/", 0o700),
                ("sys/", 0o755),
                ("tmp/", 0o1777),
                ("var/", 0o755),
                ("var/www/", 0o755),
            ]
        );
        let sh = inner.iter().find(|e| e.0 == "bin/sh").unwrap();
        assert_eq!(sh.1, tar::EntryType::Symlink);
        assert_eq!(sh.2.as_deref(), Some("busybox"));

        // The store takes it (it never runs the binary).
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("bb.tar");
        fs::write(&archive, &bytes).unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        store.import(&archive).unwrap();
        let image = store.resolve("docker.io/library/busybox:latest").unwrap();
        assert_eq!(
            fs::read(image.rootfs.join("bin/busybox")).unwrap(),
            b"not really busybox"
        );
        assert_eq!(
            fs::read_to_string(image.rootfs.join("etc/passwd")).unwrap(),
            PASSWD
        );
    }

    #[test]
    fn busybox_missing_or_not_static_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.tar");
        let missing = dir.path().join("bin/busybox");
        let err = build_archive(&missing, &out, DEFAULT_TAG).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} not found: install Debian's busybox-static",
                missing.display()
            )
        );
        let script = dir.path().join("busybox");
        fs::write(&script, "#!/bin/sh\necho sh\n").unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let err = build_archive(&script, &out, DEFAULT_TAG).unwrap_err();
        assert!(matches!(err, BusyboxError::NotStatic { .. }), "{err}");
        assert!(err.to_string().contains("busybox-static"), "{err}");
        // A static ELF that is no busybox: it cannot run (no --list).
        fs::write(&script, elf64(&[1])).unwrap();
        let err = build_archive(&script, &out, DEFAULT_TAG).unwrap_err();
        assert!(matches!(err, BusyboxError::NoList { .. }), "{err}");
        assert!(!out.exists());

        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        assert!(ensure_loaded(&store, &missing).is_err());
        assert!(store.list().unwrap().is_empty());
    }

    #[test]
    fn busybox_image_builds_imports_and_loads_once() {
        let Some(busybox) = real_busybox() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("out/busybox.tar");
        build_archive(&busybox, &archive, DEFAULT_TAG).unwrap();
        let store = ImageStore::open(&dir.path().join("data")).unwrap();
        store.import(&archive).unwrap();
        let image = store.resolve("busybox").unwrap();
        assert_eq!(image.config.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(image.config.env, Some(vec![PATH_ENV.to_string()]));
        assert_eq!(
            fs::read_link(image.rootfs.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read(image.rootfs.join("bin/busybox")).unwrap(),
            fs::read(&busybox).unwrap()
        );
        let mode = |p: &str| {
            fs::symlink_metadata(image.rootfs.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode("root"), 0o700);
        assert_eq!(mode("bin/busybox"), 0o755);
        assert!(image.rootfs.join("var/www").is_dir());

        let fresh = ImageStore::open(&dir.path().join("other")).unwrap();
        assert!(ensure_loaded(&fresh, &busybox).unwrap());
        assert!(!ensure_loaded(&fresh, &busybox).unwrap());
        assert_eq!(fresh.resolve("busybox").unwrap().id, image.id);
        let leftovers: Vec<_> = fs::read_dir(dir.path().join("other/images/tmp"))
            .unwrap()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn busybox_archives_are_byte_identical() {
        let Some(busybox) = real_busybox() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.tar"), dir.path().join("b.tar"));
        build_archive(&busybox, &a, DEFAULT_TAG).unwrap();
        build_archive(&busybox, &b, DEFAULT_TAG).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let other_tag = dir.path().join("c.tar");
        build_archive(&busybox, &other_tag, "busybox:1.35").unwrap();
        assert_ne!(fs::read(&a).unwrap(), fs::read(&other_tag).unwrap());
    }
}
