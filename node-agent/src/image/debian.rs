//! Images built from Debian packages, for the names a registry would serve
//! (`nginx:1.25`, `postgres:15`): a declarative recipe (TOML) says the
//! packages, the users, the files and the image config; the build resolves
//! the packages' dependency closure and fetches the `.deb`s with the
//! machine's apt configuration, unpacks them without running any
//! maintainer script, applies the recipe and writes a `docker save`
//! archive that [`super::ImageStore::import`] (and `docker load`) take.
//!
//! ```text
//! recipe.toml ─┬─ apt-get -s (empty dpkg status) ─► closure (name version arch)
//!              │     └─ key = sha256(recipe, its files, closure) ─► <cache>/images/<name>-<key>.tar
//!              │                                                     (there already: nothing to do)
//!              ├─ apt-get --download-only ─► <cache>/debs/*.deb
//!              ├─ dpkg-deb --fsys-tarfile, each ─► tree (merged /usr, owners kept aside)
//!              ├─ users, dirs, symlinks, copies, files, removals
//!              └─ one layer (sorted, owners from the packages) + config ─► docker save archive
//! ```
//!
//! The dpkg status apt sees is empty, so the closure is what a fresh root
//! filesystem needs and not what this machine happens to have; apt's own
//! solver picks among alternatives, as it does on `apt-get install`.
//! Nothing runs as root inside the tree: what maintainer scripts would do
//! (a symlink, a default page, a user) is written in the recipe.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::busybox::{HistoryJson, RootFsJson};
use super::Reference;

/// Bumped when the build changes what it makes from the same inputs, so
/// that cached archives are not reused across such a change.
const BUILDER_VERSION: &str = "1";

/// Every date the builder writes itself (config, history, its own
/// entries): the epoch. Files from packages keep their packaged dates.
const EPOCH: &str = "1970-01-01T00:00:00Z";

/// `PATH` as Docker's official Debian-based images set it.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Top-level folders that are symlinks into `/usr` on Debian 12
/// (merged /usr); package entries under them are written under `/usr`.
const MERGED: [(&str, &str); 4] = [
    ("bin", "usr/bin"),
    ("sbin", "usr/sbin"),
    ("lib", "usr/lib"),
    ("lib64", "usr/lib64"),
];

/// What building an image can fail at.
#[derive(Debug, thiserror::Error)]
pub enum DebianError {
    #[error("{}: {reason}", path.display())]
    Recipe { path: PathBuf, reason: String },
    #[error("{}: package {name:?} is not in the apt sources of this machine (apt-get: {apt})", recipe.display())]
    UnknownPackage {
        recipe: PathBuf,
        name: String,
        apt: String,
    },
    #[error("{}: {what} failed: {detail}", recipe.display())]
    Apt {
        recipe: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{}: {what}: {detail}", deb.display())]
    Package {
        deb: PathBuf,
        what: String,
        detail: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = DebianError> = std::result::Result<T, E>;

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> DebianError {
    let context = context.to_string();
    move |source| DebianError::Io { context, source }
}

/// A recipe, as written in `images/<name>.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// The names the image gets (`nginx:1.25`, `nginx:latest`); the first
    /// names the cached archive.
    pub tags: Vec<String>,
    /// Debian packages; their dependencies (not recommends) come along.
    pub packages: Vec<String>,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub groups: Vec<Group>,
    #[serde(default)]
    pub dirs: Vec<Dir>,
    #[serde(default)]
    pub symlinks: Vec<Symlink>,
    /// Files copied inside the tree (what a postinst would copy).
    #[serde(default)]
    pub copies: Vec<CopiedFile>,
    /// Files from the recipe's folder put into the tree.
    #[serde(default)]
    pub files: Vec<File>,
    /// Paths removed from the tree (documentation, manuals).
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub config: Config,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// Its primary group's id; a group of the user's name is made with it
    /// unless `groups` has one.
    pub gid: u32,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default = "default_shell")]
    pub shell: String,
}

fn default_home() -> String {
    "/nonexistent".into()
}

fn default_shell() -> String {
    "/usr/sbin/nologin".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub gid: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dir {
    pub path: String,
    /// Octal, as a string (`"755"`, `"1777"`).
    #[serde(default = "default_dir_mode")]
    pub mode: String,
    /// A user of the recipe (or `root`).
    #[serde(default)]
    pub owner: Option<String>,
}

fn default_dir_mode() -> String {
    "755".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Symlink {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopiedFile {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub path: String,
    /// A file next to the recipe.
    pub source: String,
    #[serde(default = "default_file_mode")]
    pub mode: String,
}

fn default_file_mode() -> String {
    "644".into()
}

/// The image config, with Docker's meaning for each field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    /// `NAME=value`; `PATH` defaults to Docker's.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// Parses a recipe's text (`path` is for the messages).
pub fn parse_recipe(path: &Path, text: &str) -> Result<Recipe> {
    let recipe: Recipe = toml::from_str(text).map_err(|e| DebianError::Recipe {
        path: path.to_path_buf(),
        reason: e.to_string().trim().to_string(),
    })?;
    let bad = |reason: String| DebianError::Recipe {
        path: path.to_path_buf(),
        reason,
    };
    if recipe.tags.is_empty() {
        return Err(bad("no tags: name the image (tags = [\"name:tag\"])".into()));
    }
    for tag in &recipe.tags {
        let parsed = Reference::parse(tag).map_err(|e| bad(format!("tag {tag:?}: {e}")))?;
        if parsed.digest.is_some() {
            return Err(bad(format!("tag {tag:?}: a tag cannot carry a digest")));
        }
    }
    if recipe.packages.is_empty() {
        return Err(bad("no packages".into()));
    }
    for name in &recipe.packages {
        if !is_package_name(name) {
            return Err(bad(format!("{name:?} is not a Debian package name")));
        }
    }
    let users: Vec<&str> = recipe.users.iter().map(|u| u.name.as_str()).collect();
    for dir in &recipe.dirs {
        parse_mode(&dir.mode).map_err(|e| bad(format!("dir {}: {e}", dir.path)))?;
        if let Some(owner) = &dir.owner {
            if owner != "root" && !users.contains(&owner.as_str()) {
                return Err(bad(format!(
                    "dir {}: owner {owner:?} is not a user of the recipe",
                    dir.path
                )));
            }
        }
    }
    for file in &recipe.files {
        parse_mode(&file.mode).map_err(|e| bad(format!("file {}: {e}", file.path)))?;
    }
    let paths = recipe
        .dirs
        .iter()
        .map(|d| &d.path)
        .chain(recipe.symlinks.iter().map(|s| &s.path))
        .chain(recipe.copies.iter().flat_map(|c| [&c.from, &c.to]))
        .chain(recipe.files.iter().map(|f| &f.path))
        .chain(recipe.remove.iter());
    for p in paths {
        inside(p).map_err(|e| bad(format!("path {p:?}: {e}")))?;
    }
    for file in &recipe.files {
        let source = Path::new(&file.source);
        if source.is_absolute() || source.components().any(|c| c == Component::ParentDir) {
            return Err(bad(format!(
                "file source {:?} must be a name next to the recipe",
                file.source
            )));
        }
    }
    Ok(recipe)
}

/// Debian policy 5.6.1: lower case letters, digits, `+ - .`; two or more
/// characters, starting with a letter or digit.
fn is_package_name(name: &str) -> bool {
    name.len() >= 2
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("mode {text:?} is not an octal mode such as \"755\""))
}

/// An absolute path of the image as a relative path of the tree, with the
/// merged-/usr folders written under `usr/`; refuses `..`.
fn inside(path: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err("must not leave the image's root".into())
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err("is the image's root".into());
    }
    Ok(unmerge(&out))
}

/// `bin/sh` → `usr/bin/sh` (and so on for [`MERGED`]).
fn unmerge(path: &Path) -> PathBuf {
    let mut parts = path.components();
    let Some(first) = parts.next() else {
        return path.to_path_buf();
    };
    for (from, to) in MERGED {
        if first.as_os_str() == from {
            return Path::new(to).join(parts.as_path());
        }
    }
    path.to_path_buf()
}

/// One package of the closure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl Package {
    /// The file name apt gives its `.deb` (`:` of an epoch as `%3a`).
    fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

/// The closure from `apt-get install -s` output: its `Inst` lines
/// (`Inst libc6 (2.36-9 Debian:12.11/stable [amd64])`), sorted.
pub fn parse_simulation(out: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = out
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("Inst ")?;
            let (name, rest) = rest.split_once(' ')?;
            // `(version origins [arch])`, then maybe `[broken deps]`.
            let (inner, _) = rest.strip_prefix('(')?.split_once(')')?;
            let (version, _) = inner.split_once(' ')?;
            let arch = inner
                .rsplit_once('[')
                .and_then(|(_, a)| a.split_once(']'))
                .map(|(a, _)| a)?;
            Some(Package {
                name: name.to_string(),
                version: version.to_string(),
                arch: arch.to_string(),
            })
        })
        .collect();
    packages.sort();
    packages.dedup();
    packages
}

/// The packages apt says it cannot find, from its error output.
pub fn unknown_packages(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix("E: Unable to locate package ")
                .map(str::to_string)
                .or_else(|| {
                    l.strip_prefix("E: Package '")
                        .and_then(|r| r.split_once('\''))
                        .filter(|(_, rest)| rest.contains("has no installation candidate"))
                        .map(|(n, _)| n.to_string())
                })
        })
        .collect()
}

/// Where the build keeps what it fetched and made.
#[derive(Debug, Clone)]
pub struct Builder {
    /// `debs/` (apt's archives), `apt/` (apt's own cache), `images/`.
    pub cache: PathBuf,
    pub apt_get: PathBuf,
    pub dpkg_deb: PathBuf,
}

/// The default cache: `$SHOAL_IMAGE_CACHE`, else `$XDG_CACHE_HOME/shoal`
/// or `~/.cache/shoal`, else `/var/cache/shoal`.
pub fn default_cache() -> PathBuf {
    if let Some(dir) = std::env::var_os("SHOAL_IMAGE_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("shoal");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache/shoal");
    }
    PathBuf::from("/var/cache/shoal")
}

/// A built image's archive.
#[derive(Debug, Clone)]
pub struct Built {
    pub archive: PathBuf,
    pub tags: Vec<String>,
    /// The image id (`sha256:` of its config).
    pub id: String,
    /// Packages in the image.
    pub packages: usize,
    /// False when the archive was already there (same recipe, same
    /// packages).
    pub fresh: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            cache: default_cache(),
            apt_get: "apt-get".into(),
            dpkg_deb: "dpkg-deb".into(),
        }
    }
}

impl Builder {
    fn apt(&self, recipe: &Path, what: &str, args: &[String]) -> Result<String> {
        let status = self.cache.join("apt/status");
        let out = Command::new(&self.apt_get)
            .args(["-q", "-y", "--no-install-recommends"])
            .arg("-o")
            .arg(format!("Dir::State::status={}", status.display()))
            .arg("-o")
            .arg(format!("Dir::Cache={}", self.cache.join("apt").display()))
            .arg("-o")
            .arg(format!(
                "Dir::Cache::archives={}",
                self.cache.join("debs").display()
            ))
            .args(["-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| DebianError::Apt {
                recipe: recipe.to_path_buf(),
                what: what.into(),
                detail: format!("{}: {e} (apt-get is Debian's)", self.apt_get.display()),
            })?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            if let Some(name) = unknown_packages(&stderr).into_iter().next() {
                return Err(DebianError::UnknownPackage {
                    recipe: recipe.to_path_buf(),
                    name,
                    apt: stderr.trim().lines().last().unwrap_or("").to_string(),
                });
            }
            return Err(DebianError::Apt {
                recipe: recipe.to_path_buf(),
                what: what.into(),
                detail: stderr.trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Builds the image of the recipe at `path`, or finds it built.
    pub fn build(&self, path: &Path) -> Result<Built> {
        let text =
            fs::read_to_string(path).map_err(io_err(format!("reading {}", path.display())))?;
        let recipe = parse_recipe(path, &text)?;
        let folder = path.parent().unwrap_or(Path::new("."));
        let mut sources = BTreeMap::new();
        for file in &recipe.files {
            let source = folder.join(&file.source);
            let bytes = fs::read(&source).map_err(io_err(format!(
                "{}: reading {}",
                path.display(),
                source.display()
            )))?;
            sources.insert(file.source.clone(), bytes);
        }
        for sub in ["apt", "debs/partial", "images", "tmp"] {
            let dir = self.cache.join(sub);
            fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        }
        // One build at a time per cache, across processes (apt's downloads
        // and the archive names are shared).
        let lock_path = self.cache.join("lock");
        let lock_file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(format!("opening {}", lock_path.display())))?;
        let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| DebianError::Io {
                context: format!("locking {}", lock_path.display()),
                source: errno.into(),
            })?;
        // apt reads the dpkg status from here: empty, so nothing counts
        // as installed.
        let status = self.cache.join("apt/status");
        if !status.exists() {
            fs::write(&status, b"").map_err(io_err(format!("writing {}", status.display())))?;
        }
        let mut install = vec!["install".to_string(), "-s".to_string()];
        install.extend(recipe.packages.iter().cloned());
        let closure = parse_simulation(&self.apt(path, "resolving the packages", &install)?);
        if closure.is_empty() {
            return Err(DebianError::Apt {
                recipe: path.to_path_buf(),
                what: "resolving the packages".into(),
                detail: "apt-get -s listed no package to install".into(),
            });
        }
        let mut key = Sha256::new();
        key.update(BUILDER_VERSION.as_bytes());
        key.update(text.as_bytes());
        for (name, bytes) in &sources {
            key.update(name.as_bytes());
            key.update(Sha256::digest(bytes));
        }
        for p in &closure {
            key.update(format!("{} {} {}\n", p.name, p.version, p.arch).as_bytes());
        }
        let key = format!("{:x}", key.finalize());
        let stem = recipe.tags[0].replace(['/', ':'], "_");
        let archive = self
            .cache
            .join("images")
            .join(format!("{stem}-{}.tar", &key[..16]));
        let built = |id: String, fresh| Built {
            archive: archive.clone(),
            tags: recipe.tags.clone(),
            id,
            packages: closure.len(),
            fresh,
        };
        if let Some((id, _)) = read_id_file(&archive) {
            if archive.exists() {
                return Ok(built(id, false));
            }
        }
        install[1] = "--download-only".into();
        self.apt(path, "fetching the packages", &install)?;
        let tmp = self
            .cache
            .join("tmp")
            .join(format!("{stem}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let root = tmp.join("rootfs");
        let made = self
            .assemble(path, &recipe, &closure, &sources, &root)
            .and_then(|owners| {
                let layer = tmp.join("layer.tar");
                let diff_id = write_layer(&root, &owners, &layer)?;
                let staged = tmp.join("image.tar");
                let id = write_archive(&recipe, &closure, &key, &layer, &diff_id, &staged)?;
                fs::rename(&staged, &archive)
                    .map_err(io_err(format!("writing {}", archive.display())))?;
                write_id_file(&built(id.clone(), true), &archive)?;
                Ok(id)
            });
        let _ = fs::remove_dir_all(&tmp);
        made.map(|id| built(id, true))
    }

    /// Unpacks the closure into `root` and applies the recipe; returns
    /// the owners that are not root, by path in the tree.
    fn assemble(
        &self,
        recipe_path: &Path,
        recipe: &Recipe,
        closure: &[Package],
        sources: &BTreeMap<String, Vec<u8>>,
        root: &Path,
    ) -> Result<BTreeMap<PathBuf, (u32, u32)>> {
        fs::create_dir_all(root).map_err(io_err(format!("creating {}", root.display())))?;
        for (from, to) in MERGED {
            fs::create_dir_all(root.join(to)).map_err(io_err(format!("creating {to}")))?;
            std::os::unix::fs::symlink(to, root.join(from))
                .map_err(io_err(format!("linking {from}")))?;
        }
        let mut owners = BTreeMap::new();
        for package in closure {
            let deb = self.cache.join("debs").join(package.deb_name());
            if !deb.exists() {
                return Err(DebianError::Apt {
                    recipe: recipe_path.to_path_buf(),
                    what: "fetching the packages".into(),
                    detail: format!("{} is not in {}", package.deb_name(), deb.display()),
                });
            }
            self.unpack_deb(&deb, root, &mut owners)?;
        }
        apply(recipe, sources, root, &mut owners)?;
        Ok(owners)
    }

    /// Unpacks a `.deb`'s files (no maintainer script runs).
    fn unpack_deb(
        &self,
        deb: &Path,
        root: &Path,
        owners: &mut BTreeMap<PathBuf, (u32, u32)>,
    ) -> Result<()> {
        let failed = |what: &str, detail: String| DebianError::Package {
            deb: deb.to_path_buf(),
            what: what.into(),
            detail,
        };
        let mut child = Command::new(&self.dpkg_deb)
            .arg("--fsys-tarfile")
            .arg(deb)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed("dpkg-deb --fsys-tarfile", e.to_string()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("dpkg-deb --fsys-tarfile", "no output".into()))?;
        let unpacked =
            unpack_tar(stdout, root, owners).map_err(|e| failed("unpacking", e.to_string()));
        let out = child
            .wait_with_output()
            .map_err(|e| failed("dpkg-deb --fsys-tarfile", e.to_string()))?;
        if !out.status.success() {
            return Err(failed(
                "dpkg-deb --fsys-tarfile",
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        unpacked
    }
}

/// Unpacks a package's data tar into `root`: paths checked and moved under
/// `usr/` where /usr is merged, later packages replacing earlier files,
/// ownership not applied but noted in `owners`.
fn unpack_tar(
    reader: impl Read,
    root: &Path,
    owners: &mut BTreeMap<PathBuf, (u32, u32)>,
) -> io::Result<()> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path()?.to_string_lossy().into_owned();
        let rel = match inside(&raw) {
            Ok(rel) => rel,
            // `./` itself.
            Err(_) if Path::new(&raw).components().all(|c| c == Component::CurDir) => continue,
            Err(e) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("entry {raw:?}: {e}"),
                ))
            }
        };
        // The merged-/usr folders themselves are our symlinks.
        if MERGED.iter().any(|(_, to)| rel == Path::new(to)) && entry.header().entry_type().is_dir()
        {
            continue;
        }
        let dst = root.join(&rel);
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent)?;
        }
        let kind = entry.header().entry_type();
        if !kind.is_dir() {
            if let Ok(meta) = fs::symlink_metadata(&dst) {
                if meta.is_dir() {
                    fs::remove_dir_all(&dst)?;
                } else {
                    fs::remove_file(&dst)?;
                }
            }
        }
        let (uid, gid) = (entry.header().uid()?, entry.header().gid()?);
        if kind.is_hard_link() {
            let target = entry
                .link_name()?
                .map(|l| l.to_string_lossy().into_owned())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "hard link without target")
                })?;
            let target = inside(&target).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidData, format!("link {raw:?}: {e}"))
            })?;
            fs::hard_link(root.join(target), &dst)?;
        } else if kind.is_dir() {
            fs::create_dir_all(&dst)?;
            let mode = entry.header().mode()?;
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode))?;
        } else {
            entry.unpack(&dst)?;
        }
        if uid != 0 || gid != 0 {
            owners.insert(
                rel,
                (
                    u32::try_from(uid).unwrap_or(0),
                    u32::try_from(gid).unwrap_or(0),
                ),
            );
        } else {
            owners.remove(&rel);
        }
    }
    Ok(())
}

/// What a recipe adds to the unpacked packages.
fn apply(
    recipe: &Recipe,
    sources: &BTreeMap<String, Vec<u8>>,
    root: &Path,
    owners: &mut BTreeMap<PathBuf, (u32, u32)>,
) -> Result<()> {
    let at = |p: &str| -> Result<PathBuf> {
        inside(p)
            .map(|rel| root.join(rel))
            .map_err(|reason| DebianError::Io {
                context: format!("recipe path {p:?}"),
                source: io::Error::new(io::ErrorKind::InvalidInput, reason),
            })
    };
    let rel = |p: &str| inside(p).unwrap_or_default();
    let write = |path: &Path, text: &[u8], mode: u32| -> Result<()> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        let _ = fs::remove_file(path);
        fs::write(path, text).map_err(io_err(format!("writing {}", path.display())))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("setting the mode of {}", path.display())))
    };
    for p in &recipe.remove {
        let path = at(p)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(_) => Ok(()),
        }
        .map_err(io_err(format!("removing {}", path.display())))?;
    }
    // Users and groups: root, nobody and the recipe's, as base-passwd
    // writes them.
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/sh\n");
    let mut group = String::from("root:x:0:\n");
    for user in &recipe.users {
        passwd.push_str(&format!(
            "{}:x:{}:{}:{}:{}:{}\n",
            user.name, user.uid, user.gid, user.name, user.home, user.shell
        ));
    }
    let mut groups: Vec<(String, u32)> = recipe
        .groups
        .iter()
        .map(|g| (g.name.clone(), g.gid))
        .collect();
    for user in &recipe.users {
        if !groups.iter().any(|(_, gid)| *gid == user.gid) {
            groups.push((user.name.clone(), user.gid));
        }
    }
    for (name, gid) in &groups {
        group.push_str(&format!("{name}:x:{gid}:\n"));
    }
    passwd.push_str("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    group.push_str("nogroup:x:65534:\n");
    write(&root.join("etc/passwd"), passwd.as_bytes(), 0o644)?;
    write(&root.join("etc/group"), group.as_bytes(), 0o644)?;
    for dir in ["tmp", "var/tmp"] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o1777))
            .map_err(io_err(format!("setting the mode of {}", path.display())))?;
    }
    for dir in ["root", "run", "proc", "sys", "dev", "etc", "home"] {
        let path = root.join(dir);
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
    }
    for dir in &recipe.dirs {
        let path = at(&dir.path)?;
        fs::create_dir_all(&path).map_err(io_err(format!("creating {}", path.display())))?;
        let mode = parse_mode(&dir.mode).unwrap_or(0o755);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("setting the mode of {}", path.display())))?;
        let owner = dir
            .owner
            .as_deref()
            .and_then(|o| recipe.users.iter().find(|u| u.name == o))
            .map(|u| (u.uid, u.gid));
        match owner {
            Some(ids) => owners.insert(rel(&dir.path), ids),
            None => owners.remove(&rel(&dir.path)),
        };
    }
    for copy in &recipe.copies {
        let (from, to) = (at(&copy.from)?, at(&copy.to)?);
        let bytes = fs::read(&from).map_err(io_err(format!("copying {}", copy.from)))?;
        let mode = fs::metadata(&from)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o644);
        write(&to, &bytes, mode)?;
    }
    for link in &recipe.symlinks {
        let path = at(&link.path)?;
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
        }
        if fs::symlink_metadata(&path).is_ok() {
            fs::remove_file(&path).map_err(io_err(format!("replacing {}", path.display())))?;
        }
        std::os::unix::fs::symlink(&link.target, &path)
            .map_err(io_err(format!("linking {}", path.display())))?;
    }
    for file in &recipe.files {
        let bytes = sources
            .get(&file.source)
            .map(Vec::as_slice)
            .unwrap_or_default();
        write(
            &at(&file.path)?,
            bytes,
            parse_mode(&file.mode).unwrap_or(0o644),
        )?;
    }
    Ok(())
}

/// Writes `out` while hashing what is written.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Every path under `root`, a folder before its children, names sorted
/// (as `tar --sort=name` walks); symlinks to folders are not followed.
fn walk(root: &Path) -> io::Result<Vec<PathBuf>> {
    fn visit(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        let mut names: Vec<PathBuf> = fs::read_dir(root.join(rel))?
            .map(|e| e.map(|e| rel.join(e.file_name())))
            .collect::<io::Result<_>>()?;
        names.sort();
        for path in names {
            let is_dir = fs::symlink_metadata(root.join(&path))?.is_dir();
            out.push(path.clone());
            if is_dir {
                visit(root, &path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(root, Path::new(""), &mut out)?;
    Ok(out)
}

/// The image's one layer, from the tree: returns its diff id
/// (`sha256:<hex>` of the tar).
fn write_layer(root: &Path, owners: &BTreeMap<PathBuf, (u32, u32)>, out: &Path) -> Result<String> {
    let file = fs::File::create(out).map_err(io_err(format!("writing {}", out.display())))?;
    let mut builder = tar::Builder::new(Hashing {
        inner: io::BufWriter::new(file),
        hash: Sha256::new(),
    });
    builder.follow_symlinks(false);
    let paths = walk(root).map_err(io_err(format!("reading {}", root.display())))?;
    for rel in paths {
        let full = root.join(&rel);
        let meta =
            fs::symlink_metadata(&full).map_err(io_err(format!("reading {}", full.display())))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        let (uid, gid) = owners.get(&rel).copied().unwrap_or((0, 0));
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_username("").ok();
        header.set_groupname("").ok();
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        let context = || format!("writing {} into the layer", rel.display());
        if meta.is_dir() {
            builder
                .append_data(&mut header, &rel, io::empty())
                .map_err(io_err(context()))?;
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&full).map_err(io_err(context()))?;
            header.set_size(0);
            builder
                .append_link(&mut header, &rel, &target)
                .map_err(io_err(context()))?;
        } else if meta.is_file() {
            let data = fs::File::open(&full).map_err(io_err(context()))?;
            builder
                .append_data(&mut header, &rel, data)
                .map_err(io_err(context()))?;
        }
    }
    let hashing = builder
        .into_inner()
        .map_err(io_err("finishing the layer"))?;
    let Hashing { inner, hash } = hashing;
    inner
        .into_inner()
        .map_err(|e| DebianError::Io {
            context: "finishing the layer".into(),
            source: e.into_error(),
        })?
        .sync_all()
        .map_err(io_err("finishing the layer"))?;
    Ok(format!("sha256:{:x}", hash.finalize()))
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    architecture: &'a str,
    os: &'a str,
    created: &'a str,
    config: RunJson,
    rootfs: RootFsJson,
    history: [HistoryJson; 1],
}

#[derive(Serialize)]
struct RunJson {
    #[serde(rename = "Env")]
    env: Vec<String>,
    #[serde(rename = "Entrypoint", skip_serializing_if = "Option::is_none")]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", skip_serializing_if = "Option::is_none")]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", skip_serializing_if = "Option::is_none")]
    working_dir: Option<String>,
    #[serde(rename = "User", skip_serializing_if = "Option::is_none")]
    user: Option<String>,
    #[serde(rename = "ExposedPorts", skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(rename = "StopSignal", skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(rename = "Labels")]
    labels: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ManifestJson {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: [String; 1],
}

fn to_json(value: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| DebianError::Io {
        context: "encoding the image's JSON".into(),
        source: io::Error::other(e),
    })
}

/// The image config of a recipe.
fn config_json(recipe: &Recipe, closure: &[Package], key: &str, diff_id: &str) -> Result<Vec<u8>> {
    let c = &recipe.config;
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let exposed_ports = c
        .exposed_ports
        .iter()
        .map(|p| {
            let port = if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            };
            (port, BTreeMap::new())
        })
        .collect();
    let labels = BTreeMap::from([
        ("shoal.recipe".to_string(), key.to_string()),
        ("shoal.packages".to_string(), recipe.packages.join(" ")),
    ]);
    let listed: Vec<String> = closure
        .iter()
        .map(|p| format!("{}={}", p.name, p.version))
        .collect();
    to_json(&ConfigJson {
        architecture: super::host_architecture(),
        os: "linux",
        created: EPOCH,
        config: RunJson {
            env,
            entrypoint: c.entrypoint.clone(),
            cmd: c.cmd.clone(),
            working_dir: c.working_dir.clone(),
            user: c.user.clone(),
            exposed_ports,
            stop_signal: c.stop_signal.clone(),
            labels,
        },
        rootfs: RootFsJson {
            kind: "layers",
            diff_ids: [diff_id.to_string()],
        },
        history: [HistoryJson {
            created: EPOCH,
            created_by: format!("shoal image build: {}", listed.join(" ")),
        }],
    })
}

/// A `docker save` archive of the image: `<diff>/layer.tar`,
/// `<config>.json`, `manifest.json`, `repositories`. Returns the image id.
fn write_archive(
    recipe: &Recipe,
    closure: &[Package],
    key: &str,
    layer: &Path,
    diff_id: &str,
    out: &Path,
) -> Result<String> {
    let config = config_json(recipe, closure, key, diff_id)?;
    let config_hex = format!("{:x}", Sha256::digest(&config));
    let diff_hex = diff_id.trim_start_matches("sha256:");
    let layer_path = format!("{diff_hex}/layer.tar");
    let mut tags = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for tag in &recipe.tags {
        let parsed = Reference::parse(tag).map_err(|e| DebianError::Io {
            context: format!("tag {tag:?}"),
            source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        let name = parsed.to_string();
        let (repo, t) = name.rsplit_once(':').unwrap_or((&name, "latest"));
        tags.push(name.clone());
        repositories
            .entry(repo.to_string())
            .or_default()
            .insert(t.to_string(), diff_hex.to_string());
    }
    let manifest = to_json(&[ManifestJson {
        config: format!("{config_hex}.json"),
        repo_tags: tags,
        layers: [layer_path.clone()],
    }])?;
    let repositories = to_json(&repositories)?;
    let file = fs::File::create(out).map_err(io_err(format!("writing {}", out.display())))?;
    let mut builder = tar::Builder::new(io::BufWriter::new(file));
    let entry = |builder: &mut tar::Builder<io::BufWriter<fs::File>>, name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, data)
            .map_err(io_err(format!("writing {name} into {}", out.display())))
    };
    let mut dir = tar::Header::new_gnu();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_mtime(0);
    dir.set_size(0);
    builder
        .append_data(&mut dir, format!("{diff_hex}/"), io::empty())
        .map_err(io_err(format!("writing {}", out.display())))?;
    let mut header = tar::Header::new_gnu();
    let layer_file =
        fs::File::open(layer).map_err(io_err(format!("reading {}", layer.display())))?;
    let size = layer_file
        .metadata()
        .map_err(io_err(format!("reading {}", layer.display())))?
        .len();
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_size(size);
    header.set_entry_type(tar::EntryType::Regular);
    builder
        .append_data(&mut header, &layer_path, layer_file)
        .map_err(io_err(format!("writing the layer into {}", out.display())))?;
    entry(&mut builder, &format!("{diff_hex}/VERSION"), b"1.0")?;
    entry(&mut builder, &format!("{config_hex}.json"), &config)?;
    entry(&mut builder, "manifest.json", &manifest)?;
    entry(&mut builder, "repositories", &repositories)?;
    let mut writer = builder
        .into_inner()
        .map_err(io_err(format!("finishing {}", out.display())))?;
    writer
        .flush()
        .map_err(io_err(format!("finishing {}", out.display())))?;
    Ok(format!("sha256:{config_hex}"))
}

/// Whether this machine can build images: apt-get and dpkg-deb run.
fn can_build(builder: &Builder) -> bool {
    [&builder.apt_get, &builder.dpkg_deb].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The catalog of a node: the built-in recipes when `build` and this
/// machine can build them (apt-get and dpkg-deb, as on Debian), and the
/// archives of `archives`; None when it has neither.
pub fn node_catalog(build: bool, archives: Option<&Path>) -> Option<std::sync::Arc<Catalog>> {
    let builder = Builder::default();
    let mut catalog = if build && can_build(&builder) {
        match Catalog::builtin(builder) {
            Ok(catalog) => catalog,
            Err(e) => {
                tracing::warn!(error = %e, "no image builds from Debian packages on this node");
                Catalog::default()
            }
        }
    } else {
        if build {
            tracing::info!(
                "no apt-get or dpkg-deb: no image builds from Debian packages on this node"
            );
        }
        Catalog::default()
    };
    if let Some(dir) = archives {
        match catalog.add_archives(dir) {
            Ok(n) => {
                tracing::info!(archives = n, dir = %dir.display(), "images to load on first use")
            }
            Err(e) => tracing::warn!(error = %e, "image archives"),
        }
    }
    (!catalog.recipes.is_empty() || !catalog.archives.is_empty())
        .then(|| std::sync::Arc::new(catalog))
}

/// Writes what the store needs to know of an archive without opening it,
/// next to it (`<archive>.id`): the image id, then one tag per line.
pub fn write_id_file(built: &Built, archive: &Path) -> Result<()> {
    let path = archive.with_extension("id");
    let mut text = format!("{}\n", built.id);
    for tag in &built.tags {
        text.push_str(tag);
        text.push('\n');
    }
    fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))
}

/// Reads an `<archive>.id` file: the id and the tags.
fn read_id_file(archive: &Path) -> Option<(String, Vec<String>)> {
    let text = fs::read_to_string(archive.with_extension("id")).ok()?;
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let id = lines
        .next()
        .filter(|id| id.starts_with("sha256:"))?
        .to_string();
    Some((id, lines.map(str::to_string).collect()))
}

/// The recipes shipped in the binary (the repository's `images/`).
pub const BUILTIN: [(&str, &str); 3] = [
    ("nginx.toml", include_str!("../../../images/nginx.toml")),
    (
        "postgres.toml",
        include_str!("../../../images/postgres.toml"),
    ),
    (
        "postgres-entrypoint.sh",
        include_str!("../../../images/postgres-entrypoint.sh"),
    ),
];

/// The images a node can provide when a pod names one that is not in its
/// store, as a registry would serve it: the built-in recipes (one build
/// at a time) and archives waiting in a folder (`shoal image build -o`).
#[derive(Debug, Default)]
pub struct Catalog {
    builder: Option<Builder>,
    /// Each recipe with its tags, normalized (`docker.io/library/nginx:1.25`).
    recipes: Vec<(PathBuf, Vec<String>)>,
    /// Archives with an id file, their tags normalized.
    archives: Vec<(Built, Vec<String>)>,
    building: std::sync::Mutex<()>,
}

fn normalized(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| Reference::parse(t).ok().map(|r| r.to_string()))
        .collect()
}

/// A reference's normalized name; None with a digest (a build cannot
/// promise one).
fn plain_name(reference: &str) -> Option<String> {
    let name = Reference::parse(reference).ok()?;
    name.digest.is_none().then(|| name.to_string())
}

impl Catalog {
    /// The built-in recipes, written under the cache's `recipes/` for
    /// the build to read (and to show what was built from).
    pub fn builtin(builder: Builder) -> Result<Catalog> {
        let dir = builder.cache.join("recipes");
        fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let mut recipes = Vec::new();
        for (name, text) in BUILTIN {
            let path = dir.join(name);
            if fs::read_to_string(&path).ok().as_deref() != Some(text) {
                let tmp = dir.join(format!(".{name}.{}", std::process::id()));
                fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
                fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))?;
            }
            if name.ends_with(".toml") {
                let recipe = parse_recipe(&path, text)?;
                recipes.push((path, normalized(&recipe.tags)));
            }
        }
        Ok(Catalog {
            builder: Some(builder),
            recipes,
            ..Catalog::default()
        })
    }

    /// Adds the archives of `dir` that have an id file (as `shoal image
    /// build -o` writes); returns how many.
    pub fn add_archives(&mut self, dir: &Path) -> Result<usize> {
        let entries = fs::read_dir(dir).map_err(io_err(format!("reading {}", dir.display())))?;
        let mut added = 0;
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|x| x != "tar") {
                continue;
            }
            let Some((id, tags)) = read_id_file(&path) else {
                continue;
            };
            let names = normalized(&tags);
            let built = Built {
                archive: path,
                tags,
                id,
                packages: 0,
                fresh: false,
            };
            self.archives.push((built, names));
            added += 1;
        }
        Ok(added)
    }

    /// The recipe that makes the image `reference` names, if any.
    pub fn recipe_for(&self, reference: &str) -> Option<&Path> {
        let name = plain_name(reference)?;
        self.recipes
            .iter()
            .find(|(_, tags)| tags.contains(&name))
            .map(|(path, _)| path.as_path())
    }

    /// Whether the catalog can provide the image `reference` names.
    pub fn provides(&self, reference: &str) -> bool {
        let Some(name) = plain_name(reference) else {
            return false;
        };
        self.archives.iter().any(|(_, tags)| tags.contains(&name))
            || self.recipe_for(reference).is_some()
    }

    /// Every recipe of the catalog.
    pub fn recipes(&self) -> impl Iterator<Item = &Path> {
        self.recipes.iter().map(|(p, _)| p.as_path())
    }

    /// Puts the image `reference` names into `store`: from an archive of
    /// the catalog, else built from its recipe (or found built).
    pub fn fetch(&self, reference: &str, store: &super::ImageStore) -> Result<super::Image> {
        let name = plain_name(reference).unwrap_or_default();
        if let Some((built, _)) = self.archives.iter().find(|(_, tags)| tags.contains(&name)) {
            return load(built, store);
        }
        let (Some(recipe), Some(builder)) = (self.recipe_for(reference), &self.builder) else {
            return Err(DebianError::Io {
                context: format!("image {reference:?}"),
                source: io::Error::new(io::ErrorKind::NotFound, "no recipe or archive makes it"),
            });
        };
        let _one_at_a_time = self
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let built = builder.build(recipe)?;
        load(&built, store)
    }
}

/// Imports a built image into `store` unless it is there with its names.
pub fn load(built: &Built, store: &super::ImageStore) -> Result<super::Image> {
    // Imported before (same config, so the same layers): nothing to stage
    // again, only names to check.
    if let Ok(image) = store.resolve(&built.id) {
        let named = built
            .tags
            .iter()
            .all(|t| Reference::parse(t).is_ok_and(|r| image.names.contains(&r.to_string())));
        if named {
            return Ok(image);
        }
    }
    let imported = store.import(&built.archive).map_err(|e| DebianError::Io {
        context: format!("importing {}", built.archive.display()),
        source: io::Error::other(e.to_string()),
    })?;
    imported.into_iter().next().ok_or_else(|| DebianError::Io {
        context: format!("importing {}", built.archive.display()),
        source: io::Error::other("the archive held no image"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_are_checked() {
        let p = Path::new("r.toml");
        let ok = parse_recipe(
            p,
            r#"
tags = ["nginx:1.25"]
packages = ["nginx"]
[[users]]
name = "www-data"
uid = 33
gid = 33
[[dirs]]
path = "/var/www/html"
owner = "www-data"
[config]
cmd = ["nginx", "-g", "daemon off;"]
exposed_ports = ["80"]
stop_signal = "SIGQUIT"
"#,
        )
        .unwrap();
        assert_eq!(ok.users[0].home, "/nonexistent");
        for (text, needle) in [
            ("packages = [\"a1\"]", "missing field `tags`"),
            ("tags = []\npackages = [\"nginx\"]", "no tags"),
            (
                "tags = [\"Nginx\"]\npackages = [\"nginx\"]",
                "tag \"Nginx\"",
            ),
            (
                "tags = [\"x\"]\npackages = [\"Bad_Name\"]",
                "not a Debian package name",
            ),
            (
                "tags = [\"x\"]\npackages = [\"ok\"]\nextra = 1",
                "unknown field `extra`",
            ),
            (
                "tags = [\"x\"]\npackages = [\"ok\"]\n[[dirs]]\npath = \"/a\"\nowner = \"who\"",
                "owner \"who\"",
            ),
            (
                "tags = [\"x\"]\npackages = [\"ok\"]\n[[dirs]]\npath = \"/../etc\"",
                "must not leave",
            ),
            (
                "tags = [\"x\"]\npackages = [\"ok\"]\n[[dirs]]\npath = \"/a\"\nmode = \"999\"",
                "octal mode",
            ),
            (
                "tags = [\"x\"]\npackages = [\"ok\"]\n[[files]]\npath = \"/a\"\nsource = \"../x\"",
                "next to the recipe",
            ),
        ] {
            let e = parse_recipe(p, text).unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.starts_with("r.toml: "), "{e}");
        }
    }

    #[test]
    fn apt_simulation_gives_the_closure() {
        let out = "NOTE: This is only a simulation!\n\
            Inst libc6 (2.36-9+deb12u14 Debian:12.11/stable, Debian-Security:12/stable-security [amd64])\n\
            Inst libcap2 (1:2.66-4+deb12u3+b1 Debian:12.11/stable [amd64]) []\n\
            Inst nginx-common (1.22.1-9+deb12u12 Debian-Security:12/stable-security [all])\n\
            Conf libc6 (2.36-9+deb12u14 Debian:12.11/stable [amd64])\n";
        let closure = parse_simulation(out);
        assert_eq!(
            closure.iter().map(Package::deb_name).collect::<Vec<_>>(),
            [
                "libc6_2.36-9+deb12u14_amd64.deb",
                "libcap2_1%3a2.66-4+deb12u3+b1_amd64.deb",
                "nginx-common_1.22.1-9+deb12u12_all.deb"
            ]
        );
        assert_eq!(
            unknown_packages("Reading package lists...\nE: Unable to locate package no-such-pkg\n"),
            ["no-such-pkg"]
        );
        assert_eq!(
            unknown_packages("E: Package 'mail-transport-agent' has no installation candidate\n"),
            ["mail-transport-agent"]
        );
    }

    #[test]
    fn paths_stay_inside_and_follow_merged_usr() {
        assert_eq!(inside("/bin/sh").unwrap(), Path::new("usr/bin/sh"));
        assert_eq!(
            inside("./lib64/ld.so").unwrap(),
            Path::new("usr/lib64/ld.so")
        );
        assert_eq!(inside("/etc/nginx").unwrap(), Path::new("etc/nginx"));
        assert_eq!(inside("/binary").unwrap(), Path::new("binary"));
        assert!(inside("/a/../../b").is_err());
        assert!(inside("/").is_err());
    }

    #[test]
    fn a_package_tar_unpacks_with_owners_noted() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add =
            |path: &str, kind: tar::EntryType, data: &[u8], uid: u64, link: Option<&str>| {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(kind);
                h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
                h.set_uid(uid);
                h.set_gid(uid);
                h.set_size(data.len() as u64);
                match link {
                    Some(target) => tar.append_link(&mut h, path, target).unwrap(),
                    None => tar.append_data(&mut h, path, data).unwrap(),
                }
            };
        add("./", tar::EntryType::Directory, b"", 0, None);
        add("./bin/", tar::EntryType::Directory, b"", 0, None);
        add("./bin/tool", tar::EntryType::Regular, b"x", 0, None);
        add("./var/lib/app/", tar::EntryType::Directory, b"", 33, None);
        add(
            "./usr/bin/tool2",
            tar::EntryType::Link,
            b"",
            0,
            Some("./bin/tool"),
        );
        add("./usr/bin/t", tar::EntryType::Symlink, b"", 0, Some("tool"));
        let bytes = tar.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let mut owners = BTreeMap::new();
        unpack_tar(&bytes[..], root, &mut owners).unwrap();
        assert_eq!(fs::read(root.join("usr/bin/tool")).unwrap(), b"x");
        assert_eq!(fs::read(root.join("usr/bin/tool2")).unwrap(), b"x");
        assert_eq!(
            fs::read_link(root.join("usr/bin/t")).unwrap(),
            Path::new("tool")
        );
        assert_eq!(owners.get(Path::new("var/lib/app")), Some(&(33, 33)));
        // A path escaping the root is refused.
        let mut evil = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(1);
        h.set_mode(0o644);
        h.as_gnu_mut().unwrap().name[..12].copy_from_slice(b"../../escape");
        h.set_cksum();
        evil.append(&h, &b"x"[..]).unwrap();
        let bytes = evil.into_inner().unwrap();
        let e = unpack_tar(&bytes[..], root, &mut owners).unwrap_err();
        assert!(e.to_string().contains("must not leave"), "{e}");
    }

    #[test]
    fn the_walk_puts_folders_first_and_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/b"), "").unwrap();
        fs::write(root.join("usr/a"), "").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let walked: Vec<String> = walk(root)
            .unwrap()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        assert_eq!(walked, ["bin", "usr", "usr/a", "usr/bin", "usr/bin/b"]);
    }
}
