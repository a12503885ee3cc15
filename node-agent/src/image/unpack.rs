//! Safe unpacking of tar archives: the outer image archive into a staging
//! folder, and image layers, in order, into one flattened root filesystem.
//!
//! Every entry name is checked before it touches the disk: absolute names
//! and `..` components are refused, and the folders an entry goes through
//! are resolved *inside* the target root (a symlink `a -> /etc` in a layer
//! makes `a/passwd` land in `<root>/etc/passwd`, never in the host's
//! `/etc`), as containerd's `fs.RootPath` does. Whiteouts are applied
//! while flattening: `.wh.NAME` deletes `NAME` from the lower layers and
//! `.wh..wh..opq` empties its folder, so the result is the view overlayfs
//! would give of the layers stacked.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

/// A whiteout: the file `.wh.NAME` hides `NAME`.
const WHITEOUT_PREFIX: &str = ".wh.";
/// An opaque folder marker: hides everything below its folder.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one name, as Linux's MAXSYMLINKS.
const MAX_SYMLINKS: usize = 40;

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refusing entry {entry:?}: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("reading the tar stream: {0}")]
    Tar(#[source] io::Error),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T, E = UnpackError> = std::result::Result<T, E>;

/// An entry name as a relative path of normal components, or why not.
pub fn clean_entry_name(raw: &Path) -> Result<PathBuf> {
    let shown = || raw.to_string_lossy().into_owned();
    let mut clean = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::UnsafeEntry {
                    entry: shown(),
                    reason: "absolute path".into(),
                })
            }
            Component::ParentDir => {
                return Err(UnpackError::UnsafeEntry {
                    entry: shown(),
                    reason: "path goes up with ..".into(),
                })
            }
        }
    }
    Ok(clean)
}

/// `root/rel` with every symlink on the way resolved inside `root`; the
/// last component is not followed (it is what an entry creates or
/// replaces). `rel` must be clean (see [`clean_entry_name`]).
pub fn resolve_in_root(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut parts: Vec<std::ffi::OsString> = rel.iter().map(|p| p.to_os_string()).collect();
    let Some(last) = parts.pop() else {
        return Ok(root.to_path_buf());
    };
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = parts.into();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        if part == "." || part.is_empty() {
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(UnpackError::UnsafeEntry {
                        entry: rel.to_string_lossy().into_owned(),
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                let target = fs::read_link(&candidate).map_err(|source| UnpackError::Write {
                    path: candidate.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                let mut next: Vec<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(p) => Some(p.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                next.extend(pending.drain(..));
                pending = next.into();
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    out.push(last);
    Ok(out)
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Removes whatever is at `path` (file, symlink or folder), if anything.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// What an outer archive holds: its regular files (written under the
/// staging folder) and its symlinks (kept as a map, never created).
#[derive(Debug, Default)]
pub struct Staged {
    pub root: PathBuf,
    pub symlinks: HashMap<PathBuf, PathBuf>,
}

impl Staged {
    /// The staged file a name of the archive stands for, following the
    /// archive's own symlinks (docker 25+ links `<id>/layer.tar` to
    /// `blobs/sha256/<hex>`), or None if the archive has no such file.
    pub fn file(&self, name: &str) -> Option<PathBuf> {
        let mut rel = clean_entry_name(Path::new(name)).ok()?;
        for _ in 0..MAX_SYMLINKS {
            if let Some(target) = self.symlinks.get(&rel) {
                let base = rel.parent().map(Path::to_path_buf).unwrap_or_default();
                let mut joined: Vec<&std::ffi::OsStr> = base.iter().collect();
                for c in target.components() {
                    match c {
                        Component::Normal(p) => joined.push(p),
                        Component::ParentDir => {
                            joined.pop()?;
                        }
                        Component::CurDir => {}
                        _ => return None,
                    }
                }
                rel = joined.iter().collect();
                continue;
            }
            let path = self.root.join(&rel);
            return fs::metadata(&path)
                .ok()
                .filter(|m| m.is_file())
                .map(|_| path);
        }
        None
    }
}

/// Unpacks an image archive (regular files and folders only; symlinks are
/// recorded) into `root`.
pub fn stage_archive(reader: impl Read, root: &Path) -> Result<Staged> {
    let mut archive = tar::Archive::new(reader);
    let mut staged = Staged {
        root: root.to_path_buf(),
        symlinks: HashMap::new(),
    };
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let rel = clean_entry_name(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = root.join(&rel);
        match entry.header().entry_type() {
            EntryType::Directory => fs::create_dir_all(&dest).map_err(write_err(&dest))?,
            EntryType::Regular | EntryType::Continuous => {
                if let Some(parent) = dest.parent() {
                    fs::create_dir_all(parent).map_err(write_err(parent))?;
                }
                let mut file = fs::File::create(&dest).map_err(write_err(&dest))?;
                io::copy(&mut entry, &mut file).map_err(UnpackError::Tar)?;
            }
            EntryType::Symlink | EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                // Hard links name their target from the archive root.
                let target = if entry.header().entry_type() == EntryType::Link {
                    let depth = rel.components().count().saturating_sub(1);
                    let mut up = PathBuf::new();
                    for _ in 0..depth {
                        up.push("..");
                    }
                    up.join(clean_entry_name(&target)?)
                } else {
                    target
                };
                staged.symlinks.insert(rel, target);
            }
            _ => {}
        }
    }
    Ok(staged)
}

/// What applying one layer did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Bytes of regular files written.
    pub bytes: u64,
    /// Entries skipped (device nodes that could not be created, ...).
    pub skipped: Vec<String>,
}

/// Applies one layer (an uncompressed tar stream) on top of `root`.
pub fn apply_layer(reader: impl Read, root: &Path) -> Result<Applied> {
    let is_root = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(reader);
    let mut applied = Applied::default();
    // Folder modes are set at the end: a read-only folder would refuse the
    // entries that come after it.
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
        let rel = clean_entry_name(&raw)?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dest = resolve_in_root(root, &rel)?;
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = dest
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| root.to_path_buf());
        if name == OPAQUE_MARKER {
            if let Ok(children) = fs::read_dir(&parent) {
                for child in children.flatten() {
                    remove_any(&child.path()).map_err(write_err(&child.path()))?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                return Err(UnpackError::UnsafeEntry {
                    entry: raw.to_string_lossy().into_owned(),
                    reason: "whiteout of no name".into(),
                });
            }
            let target = parent.join(hidden);
            remove_any(&target).map_err(write_err(&target))?;
            continue;
        }
        fs::create_dir_all(&parent).map_err(write_err(&parent))?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let uid = header
            .uid()
            .ok()
            .and_then(|u| u32::try_from(u).ok())
            .unwrap_or(0);
        let gid = header
            .gid()
            .ok()
            .and_then(|g| u32::try_from(g).ok())
            .unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        let kind = header.entry_type();
        match kind {
            EntryType::Directory => {
                match fs::symlink_metadata(&dest) {
                    Ok(meta) if meta.is_dir() => {}
                    Ok(_) => {
                        remove_any(&dest).map_err(write_err(&dest))?;
                        fs::create_dir(&dest).map_err(write_err(&dest))?;
                    }
                    Err(_) => fs::create_dir(&dest).map_err(write_err(&dest))?,
                }
                if is_root {
                    std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                        .map_err(write_err(&dest))?;
                }
                dir_modes.push((dest, mode));
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_any(&dest).map_err(write_err(&dest))?;
                let mut file = fs::File::create(&dest).map_err(write_err(&dest))?;
                applied.bytes += io::copy(&mut entry, &mut file).map_err(UnpackError::Tar)?;
                if is_root {
                    std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                        .map_err(write_err(&dest))?;
                }
                // After chown, which clears set-uid bits.
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(write_err(&dest))?;
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                file.set_modified(when).map_err(write_err(&dest))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                remove_any(&dest).map_err(write_err(&dest))?;
                // The target is only read inside the container, where the
                // root is the image's: it is stored as written.
                std::os::unix::fs::symlink(&target, &dest).map_err(write_err(&dest))?;
                if is_root {
                    std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                        .map_err(write_err(&dest))?;
                }
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(UnpackError::Tar)?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let source = resolve_in_root(root, &clean_entry_name(&target)?)?;
                remove_any(&dest).map_err(write_err(&dest))?;
                fs::hard_link(&source, &dest).map_err(write_err(&dest))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                remove_any(&dest).map_err(write_err(&dest))?;
                let sflag = match kind {
                    EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                let major = header.device_major().ok().flatten().unwrap_or(0);
                let minor = header.device_minor().ok().flatten().unwrap_or(0);
                let made = nix::sys::stat::mknod(
                    &dest,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(u64::from(major), u64::from(minor)),
                );
                if made.is_err() {
                    applied.skipped.push(rel.to_string_lossy().into_owned());
                }
            }
            // Pax and GNU extension headers are consumed by the tar crate;
            // anything else (sparse files, ...) is not in image layers.
            _ => applied.skipped.push(rel.to_string_lossy().into_owned()),
        }
    }
    for (dir, mode) in dir_modes.into_iter().rev() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(write_err(&dir))?;
    }
    Ok(applied)
}

/// Total size of the regular files below `path` (du-like, apparent size).
pub fn tree_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.size();
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar in memory from (name, kind, content or link target).
    fn tar_of(entries: &[(&str, EntryType, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, kind, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(if *kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            header.set_mtime(0);
            match kind {
                EntryType::Symlink | EntryType::Link => {
                    header.set_size(0);
                    builder.append_link(&mut header, name, data).unwrap();
                }
                _ => {
                    header.set_size(data.len() as u64);
                    // Written raw so that hostile names reach the reader.
                    let bytes = name.as_bytes();
                    let field = &mut header.as_old_mut().name;
                    field[..bytes.len()].copy_from_slice(bytes);
                    header.set_cksum();
                    builder.append(&header, data.as_bytes()).unwrap();
                }
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn entry_names_must_stay_relative() {
        assert_eq!(
            clean_entry_name(Path::new("./a/b")).unwrap(),
            PathBuf::from("a/b")
        );
        assert!(clean_entry_name(Path::new("/etc/passwd")).is_err());
        assert!(clean_entry_name(Path::new("a/../../x")).is_err());
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        assert_eq!(
            resolve_in_root(root, Path::new("evil/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("up/x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            resolve_in_root(root, Path::new("lib/a.so")).unwrap(),
            root.join("usr/lib/a.so")
        );
        // The last component is the entry itself, not followed.
        assert_eq!(
            resolve_in_root(root, Path::new("evil")).unwrap(),
            root.join("evil")
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(resolve_in_root(root, Path::new("loop/x")).is_err());
    }

    #[test]
    fn layers_flatten_with_whiteouts_and_opaque_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let lower = tar_of(&[
            ("a/", EntryType::Directory, ""),
            ("a/keep", EntryType::Regular, "1"),
            ("a/gone", EntryType::Regular, "2"),
            ("o/", EntryType::Directory, ""),
            ("o/old", EntryType::Regular, "3"),
            ("link", EntryType::Symlink, "a/keep"),
        ]);
        let upper = tar_of(&[
            ("a/.wh.gone", EntryType::Regular, ""),
            ("o/.wh..wh..opq", EntryType::Regular, ""),
            ("o/new", EntryType::Regular, "4"),
            ("hard", EntryType::Link, "a/keep"),
        ]);
        apply_layer(&lower[..], root).unwrap();
        apply_layer(&upper[..], root).unwrap();
        assert_eq!(fs::read_to_string(root.join("a/keep")).unwrap(), "1");
        assert!(!root.join("a/gone").exists());
        assert!(!root.join("o/old").exists());
        assert_eq!(fs::read_to_string(root.join("o/new")).unwrap(), "4");
        assert_eq!(
            fs::read_link(root.join("link")).unwrap(),
            PathBuf::from("a/keep")
        );
        assert_eq!(fs::read_to_string(root.join("hard")).unwrap(), "1");
        assert!(!root.join("a/.wh.gone").exists());
    }

    #[test]
    fn hostile_layers_are_refused_or_contained() {
        let outside = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let up = tar_of(&[("../escape", EntryType::Regular, "x")]);
        let err = apply_layer(&up[..], root).unwrap_err().to_string();
        assert!(err.contains("refusing entry"), "{err}");
        let abs = tar_of(&[("/abs", EntryType::Regular, "x")]);
        assert!(apply_layer(&abs[..], root).is_err());
        // A symlink to a host folder, then a file through it.
        let target = outside.path().to_string_lossy().into_owned();
        let through = tar_of(&[
            ("evil", EntryType::Symlink, &target),
            ("evil/file", EntryType::Regular, "x"),
        ]);
        apply_layer(&through[..], root).unwrap();
        assert!(!outside.path().join("file").exists());
        assert!(root
            .join(outside.path().strip_prefix("/").unwrap())
            .join("file")
            .exists());
        // A hard link to a host file.
        let hard = tar_of(&[("h", EntryType::Link, "../../../../etc/passwd")]);
        assert!(apply_layer(&hard[..], root).is_err());
        // Garbage is an error, not a panic.
        let _ = apply_layer(
            &b"this is not a tar archive at all, just some text"[..],
            root,
        );
    }

    #[test]
    fn staged_archives_follow_their_own_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tar_of(&[
            ("blobs/sha256/abc", EntryType::Regular, "layer"),
            ("id/layer.tar", EntryType::Symlink, "../blobs/sha256/abc"),
            ("bad", EntryType::Symlink, "../../etc/passwd"),
        ]);
        let staged = stage_archive(&archive[..], dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(staged.file("id/layer.tar").unwrap()).unwrap(),
            "layer"
        );
        assert!(staged.file("bad").is_none());
        assert!(staged.file("missing").is_none());
    }
}
