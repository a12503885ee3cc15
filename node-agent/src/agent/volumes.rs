//! A pod's volumes on this node: made under `<pod-dir>/volumes/<name>`
//! (or found on the host) by [`prepare`], turned into each container's
//! bind mounts by [`PodVolumes::mounts`], removed by [`teardown`].
//!
//! ```text
//!  emptyDir            <pod-dir>/volumes/<name>, mode 0777 (medium Memory: a tmpfs)
//!  configMap, secret,  <pod-dir>/volumes/<name>, written as kubelet's AtomicWriter:
//!  downwardAPI,          ..2024_05_01_10_00_00.123456789/<files>
//!  projected             ..data -> ..2024_05_01_10_00_00.123456789
//!                        <key>  -> ..data/<key>
//!                      (prepare again = the new contents swapped in at once;
//!                       read-only in the containers, as kubelet mounts them)
//!  hostPath            the host path itself, after kubelet's type check
//!  persistentVolumeClaim / ephemeral
//!                      the bound PV's spec.local.path or spec.hostPath.path
//! ```
//!
//! Nothing outside the pod directory is ever removed: hostPath and PV
//! directories are handed to the runtime, not copied or linked into it, and
//! [`teardown`] unmounts what is mounted under the pod directory (the
//! tmpfs emptyDirs) before it deletes anything, and refuses if a mount
//! remains.
//!
//! Errors from [`prepare`] read as kubelet's `FailedMount` events
//! (`MountVolume.SetUp failed for volume "x" : configmap "y" not found`);
//! the pod stays ContainerCreating and the worker retries. Errors from
//! [`PodVolumes::mounts`] are the container's CreateContainerConfigError.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, Pod, Secret, Volume,
};

use super::env::{self, EnvContext, Refs};
use crate::runtime::process::expand;
use crate::runtime::BindMount;

/// The default mode of configMap, secret, downwardAPI and projected files.
const DEFAULT_MODE: u32 = 0o644;
/// emptyDir volumes are world-writable, as kubelet makes them.
const EMPTY_DIR_MODE: u32 = 0o777;
/// The link to the current timestamped directory of an atomic volume.
const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";
/// What shoal's local provisioner (the API server's volumes controller)
/// marks its PersistentVolumes with; their directory is made here.
const LOCAL_PROVISIONER: &str = "shoal.dev/local";

/// What can go wrong with a pod's volumes.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A volume cannot be set up (kubelet's `FailedMount` event message).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
    SetUp { volume: String, message: String },
    /// The claim is not there, or not bound yet (the pod waits).
    #[error("error processing PVC {namespace}/{claim}: {message}")]
    Claim {
        namespace: String,
        claim: String,
        message: String,
    },
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NotFound { volume: String, container: String },
    #[error("error SubPath `{0}` must not be an absolute path")]
    SubPathAbsolute(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    SubPathBacksteps(String),
    #[error("subpath {subpath:?} not within volume path {base:?}")]
    SubPathEscapes { subpath: String, base: PathBuf },
    #[error("missing value for {0}")]
    SubPathExpr(String),
    #[error("failed to create subPath directory for volumeMount \"{mount}\" of container \"{container}\"")]
    SubPathCreate { mount: String, container: String },
    #[error("{path} is still mounted; not removing the pod directory")]
    StillMounted { path: PathBuf },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = VolumeError> = std::result::Result<T, E>;

fn io_err(context: impl std::fmt::Display) -> impl FnOnce(io::Error) -> VolumeError {
    let context = context.to_string();
    move |source| VolumeError::Io { context, source }
}

fn set_up(volume: &str, message: impl std::fmt::Display) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_owned(),
        message: message.to_string(),
    }
}

/// What a volume is, as far as teardown and mounting care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    EmptyDir,
    /// An emptyDir with `medium: Memory`.
    Tmpfs,
    /// configMap, secret, downwardAPI, projected.
    Projected,
    HostPath,
    Claim,
}

/// One prepared volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedVolume {
    /// What the containers' mounts bind.
    pub host_path: PathBuf,
    /// Always mounted read-only (projected volumes, read-only claims).
    pub read_only: bool,
    pub kind: VolumeKind,
}

/// A pod's prepared volumes, by volume name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodVolumes {
    pub volumes: BTreeMap<String, PreparedVolume>,
}

/// One file of an atomically written volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → contents.
pub type Payload = BTreeMap<String, FileProjection>;

/// `<pod-dir>/volumes`.
pub fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// What downwardAPI items read besides the pod (kubelet's volume host).
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub node_name: String,
    pub host_ip: String,
    pub pod_ip: String,
    /// The node's allocatable cpu and memory: what a resourceFieldRef
    /// item's `limits.*` reads for a container without that limit.
    pub node_allocatable_cpu_millis: u64,
    pub node_allocatable_memory_bytes: u64,
}

/// Makes every volume of the pod, idempotently: calling it again keeps
/// emptyDirs and refreshes configMap/secret/downwardAPI/projected contents.
pub fn prepare(pod: &Pod, refs: &Refs, pod_dir: &Path, ctx: &Context) -> Result<PodVolumes> {
    let ctx = EnvContext {
        pod,
        refs,
        node_name: &ctx.node_name,
        host_ip: &ctx.host_ip,
        pod_ip: &ctx.pod_ip,
        node_allocatable_cpu_millis: ctx.node_allocatable_cpu_millis,
        node_allocatable_memory_bytes: ctx.node_allocatable_memory_bytes,
    };
    prepare_in(pod_dir, &ctx)
}

/// [`prepare`] with the whole environment context (the pod, what it
/// refers to, the node's allocatable).
pub fn prepare_in(pod_dir: &Path, ctx: &EnvContext<'_>) -> Result<PodVolumes> {
    let root = volumes_dir(pod_dir);
    fs::create_dir_all(&root).map_err(io_err(format!("creating {}", root.display())))?;
    let mut out = PodVolumes::default();
    for volume in ctx.pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let prepared = prepare_volume(&root, ctx, volume)?;
        out.volumes.insert(volume.name.clone(), prepared);
    }
    Ok(out)
}

fn prepare_volume(root: &Path, ctx: &EnvContext<'_>, volume: &Volume) -> Result<PreparedVolume> {
    let name = volume.name.as_str();
    let dir = root.join(name);
    let projected = |payload: Payload| -> Result<PreparedVolume> {
        ensure_dir(&dir, 0o755).map_err(|e| set_up(name, e))?;
        write_atomic(&dir, &payload).map_err(|e| set_up(name, e))?;
        Ok(PreparedVolume {
            host_path: dir.clone(),
            read_only: true,
            kind: VolumeKind::Projected,
        })
    };

    if let Some(cm) = &volume.config_map {
        let optional = cm.optional == Some(true);
        let mode = mode_of(cm.default_mode);
        let payload = match ctx.refs.config_maps.get(&cm.name) {
            Some(obj) => config_map_payload(cm.items.as_deref(), obj, mode, optional),
            None if optional => Ok(Payload::new()),
            None => Err(format!("configmap \"{}\" not found", cm.name)),
        }
        .map_err(|e| set_up(name, e))?;
        return projected(payload);
    }
    if let Some(secret) = &volume.secret {
        let secret_name = secret.secret_name.as_deref().unwrap_or_default();
        let optional = secret.optional == Some(true);
        let mode = mode_of(secret.default_mode);
        let payload = match ctx.refs.secrets.get(secret_name) {
            Some(obj) => secret_payload(secret.items.as_deref(), obj, mode, optional),
            None if optional => Ok(Payload::new()),
            None => Err(format!("secret \"{secret_name}\" not found")),
        }
        .map_err(|e| set_up(name, e))?;
        return projected(payload);
    }
    if let Some(downward) = &volume.downward_api {
        let mode = mode_of(downward.default_mode);
        let payload = downward_payload(ctx, downward.items.as_deref().unwrap_or_default(), mode)
            .map_err(|e| set_up(name, e))?;
        return projected(payload);
    }
    if let Some(source) = &volume.projected {
        let payload = projected_payload(ctx, source).map_err(|e| set_up(name, e))?;
        return projected(payload);
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        check_host_path_type(&path, host.type_.as_deref().unwrap_or_default())
            .map_err(|e| set_up(name, e))?;
        return Ok(PreparedVolume {
            host_path: path,
            read_only: false,
            kind: VolumeKind::HostPath,
        });
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let path = claim_path(ctx, name, &claim.claim_name)?;
        return Ok(PreparedVolume {
            host_path: path,
            read_only: claim.read_only == Some(true),
            kind: VolumeKind::Claim,
        });
    }
    if volume.ephemeral.is_some() {
        let pod_name = ctx.pod.metadata.name.as_deref().unwrap_or_default();
        let path = claim_path(ctx, name, &format!("{pod_name}-{name}"))?;
        return Ok(PreparedVolume {
            host_path: path,
            read_only: false,
            kind: VolumeKind::Claim,
        });
    }
    // A volume without a source is an emptyDir (the API server's default).
    let unsupported = other_source(volume);
    if let Some(kind) = unsupported {
        return Err(set_up(
            name,
            format!("volume type {kind:?} is not supported by shoal's node agent"),
        ));
    }
    let empty = volume.empty_dir.clone().unwrap_or_default();
    ensure_dir(&dir, EMPTY_DIR_MODE).map_err(|e| set_up(name, e))?;
    match empty.medium.as_deref().unwrap_or_default() {
        "" => Ok(PreparedVolume {
            host_path: dir,
            read_only: false,
            kind: VolumeKind::EmptyDir,
        }),
        "Memory" => {
            let size = match &empty.size_limit {
                Some(q) => Some(
                    shoal_core::quantity::parse(&q.0)
                        .ok_or_else(|| set_up(name, format!("invalid sizeLimit {:?}", q.0)))?
                        .value(),
                ),
                None => None,
            };
            mount_tmpfs(&dir, size).map_err(|e| set_up(name, e))?;
            Ok(PreparedVolume {
                host_path: dir,
                read_only: false,
                kind: VolumeKind::Tmpfs,
            })
        }
        other => Err(set_up(
            name,
            format!("emptyDir medium {other:?} is not supported by shoal's node agent"),
        )),
    }
}

/// The source field of a volume this agent does not handle, if any.
fn other_source(volume: &Volume) -> Option<String> {
    let handled = [
        "name",
        "emptyDir",
        "configMap",
        "secret",
        "downwardAPI",
        "projected",
        "hostPath",
        "persistentVolumeClaim",
        "ephemeral",
    ];
    let value = serde_json::to_value(volume).ok()?;
    value
        .as_object()?
        .iter()
        .find(|(k, v)| !v.is_null() && !handled.contains(&k.as_str()))
        .map(|(k, _)| k.clone())
}

fn mode_of(mode: Option<i32>) -> u32 {
    mode.and_then(|m| u32::try_from(m).ok())
        .map_or(DEFAULT_MODE, |m| m & 0o7777)
}

/// configmap.MakePayload: all keys (data and binaryData), or the items.
pub fn config_map_payload(
    items: Option<&[KeyToPath]>,
    config_map: &ConfigMap,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let mut all: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (k, v) in config_map.data.iter().flatten() {
        all.insert(k, v.clone().into_bytes());
    }
    for (k, v) in config_map.binary_data.iter().flatten() {
        all.entry(k).or_insert_with(|| v.0.clone());
    }
    key_payload(
        items,
        &all,
        default_mode,
        optional,
        "configmap references non-existent config key",
    )
}

/// secret.MakePayload.
pub fn secret_payload(
    items: Option<&[KeyToPath]>,
    secret: &Secret,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let data = env::secret_data(secret);
    let all: BTreeMap<&str, Vec<u8>> = data.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    key_payload(
        items,
        &all,
        default_mode,
        optional,
        "secret references non-existent secret key",
    )
}

fn key_payload(
    items: Option<&[KeyToPath]>,
    all: &BTreeMap<&str, Vec<u8>>,
    default_mode: u32,
    optional: bool,
    missing: &str,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    match items {
        None | Some([]) => {
            for (k, v) in all {
                payload.insert(
                    (*k).to_owned(),
                    FileProjection {
                        data: v.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for item in items {
                let Some(data) = all.get(item.key.as_str()) else {
                    if optional {
                        continue;
                    }
                    return Err(format!("{missing}: {}", item.key));
                };
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: data.clone(),
                        mode: item.mode.map_or(default_mode, |m| mode_of(Some(m))),
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// downwardapi.CollectData: metadata fields and resource values.
fn downward_payload(
    ctx: &EnvContext<'_>,
    items: &[DownwardAPIVolumeFile],
    default_mode: u32,
) -> Result<Payload, String> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            env::metadata_field(ctx.pod, &field.field_path)
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.as_deref().unwrap_or_default();
            env::find_container(ctx.pod, name).and_then(|c| env::resource_value(ctx, resource, c))
        } else {
            Ok(String::new())
        };
        match value {
            Ok(value) => {
                payload.insert(
                    clean_path(&item.path),
                    FileProjection {
                        data: value.into_bytes(),
                        mode: item.mode.map_or(default_mode, |m| mode_of(Some(m))),
                    },
                );
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// The projected volume plugin: the sources merged into one payload.
/// serviceAccountToken sources are the tokens `env::gather` asked the
/// apiserver for (bound to the pod); clusterTrustBundle sources are left
/// out.
fn projected_payload(
    ctx: &EnvContext<'_>,
    source: &k8s_openapi::api::core::v1::ProjectedVolumeSource,
) -> Result<Payload, String> {
    let default_mode = mode_of(source.default_mode);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for projection in source.sources.iter().flatten() {
        let part = if let Some(cm) = &projection.config_map {
            let optional = cm.optional == Some(true);
            match ctx.refs.config_maps.get(&cm.name) {
                Some(obj) => config_map_payload(cm.items.as_deref(), obj, default_mode, optional),
                None if optional => Ok(Payload::new()),
                None => Err(format!("configmap \"{}\" not found", cm.name)),
            }
        } else if let Some(secret) = &projection.secret {
            let optional = secret.optional == Some(true);
            match ctx.refs.secrets.get(&secret.name) {
                Some(obj) => secret_payload(secret.items.as_deref(), obj, default_mode, optional),
                None if optional => Ok(Payload::new()),
                None => Err(format!("secret \"{}\" not found", secret.name)),
            }
        } else if let Some(downward) = &projection.downward_api {
            downward_payload(
                ctx,
                downward.items.as_deref().unwrap_or_default(),
                default_mode,
            )
        } else if let Some(token) = &projection.service_account_token {
            match ctx.refs.tokens.get(&env::token_key(token)) {
                Some(value) => {
                    let mut part = Payload::new();
                    part.insert(
                        clean_path(&token.path),
                        FileProjection {
                            data: value.clone().into_bytes(),
                            mode: default_mode,
                        },
                    );
                    Ok(part)
                }
                None => Err("the service account token has not been issued".to_string()),
            }
        } else {
            Ok(Payload::new())
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(e) => errors.push(e),
        }
    }
    aggregate(errors).map(|()| payload)
}

/// utilerrors.NewAggregate's message: one error as itself, more as `[a, b]`.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

fn clean_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// AtomicWriter's validatePath.
fn validate_payload_path(path: &str) -> io::Result<()> {
    let invalid = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid path: {why}: {path}"),
        ))
    };
    if path.is_empty() {
        return invalid("must not be empty");
    }
    if path.starts_with('/') {
        return invalid("must be relative path");
    }
    if path.split('/').any(|c| c == "..") {
        return invalid("must not contain '..'");
    }
    if path.starts_with("..") {
        return invalid("must not start with '..'");
    }
    Ok(())
}

/// Makes a directory with `mode` if it is not there (the mode is set
/// explicitly: the umask would take bits off).
fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new().mode(mode).create(dir)?;
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        }
        Err(e) => Err(e),
    }
}

/// kubelet's AtomicWriter: the payload is written to a new timestamped
/// directory, `..data` is switched to it with a rename, and each top-level
/// name is a link through `..data`. Readers see the old files or the new
/// ones, never a mix. Returns whether anything changed.
pub fn write_atomic(dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut cleaned = Payload::new();
    for (path, file) in payload {
        validate_payload_path(path)?;
        cleaned.insert(clean_path(path), file.clone());
    }
    let data_link = dir.join(DATA_DIR);
    let old = fs::read_link(&data_link).ok();
    let top: BTreeSet<String> = cleaned
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_owned))
        .collect();

    let unchanged = match &old {
        Some(old) => same_contents(&dir.join(old), &cleaned)?,
        None => false,
    };
    if !unchanged {
        let ts_name = new_timestamp_dir(dir)?;
        let ts_dir = dir.join(&ts_name);
        for (path, file) in &cleaned {
            let target = ts_dir.join(path);
            if let Some(parent) = target.parent() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)?;
            }
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(file.mode)
                .open(&target)
                .and_then(|mut f| io::Write::write_all(&mut f, &file.data))?;
            fs::set_permissions(&target, fs::Permissions::from_mode(file.mode))?;
        }
        let tmp_link = dir.join(DATA_DIR_TMP);
        match fs::remove_file(&tmp_link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::os::unix::fs::symlink(&ts_name, &tmp_link)?;
        fs::rename(&tmp_link, &data_link)?;
    }

    // The user-visible links, then what the new payload no longer has.
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("..") || top.contains(&name) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            let target = fs::read_link(entry.path())?;
            if target.starts_with(DATA_DIR) {
                fs::remove_file(entry.path())?;
            }
        }
    }
    if !unchanged {
        if let Some(old) = old {
            let old_dir = dir.join(&old);
            // Only a timestamped directory of ours, inside `dir`.
            if old.components().count() == 1 && old.to_string_lossy().starts_with("..") {
                fs::remove_dir_all(&old_dir).or_else(|e| {
                    if e.kind() == io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            }
        }
    }
    Ok(!unchanged)
}

fn new_timestamp_dir(dir: &Path) -> io::Result<String> {
    let now = jiff::Timestamp::now();
    let base = format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    for attempt in 0..100u32 {
        let name = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}{attempt}")
        };
        match fs::DirBuilder::new().mode(0o755).create(dir.join(&name)) {
            Ok(()) => {
                fs::set_permissions(dir.join(&name), fs::Permissions::from_mode(0o755))?;
                return Ok(name);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("no free timestamped directory in {}", dir.display()),
    ))
}

/// Whether `ts_dir` holds exactly the payload (contents and modes).
fn same_contents(ts_dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut found = BTreeSet::new();
    if !collect_files(ts_dir, ts_dir, &mut found)? {
        return Ok(false);
    }
    if found.len() != payload.len() || !payload.keys().all(|k| found.contains(k)) {
        return Ok(false);
    }
    for (path, file) in payload {
        let full = ts_dir.join(path);
        let meta = fs::symlink_metadata(&full)?;
        if meta.permissions().mode() & 0o7777 != file.mode || fs::read(&full)? != file.data {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The regular files under `dir`, relative to `base`; false when `dir` is
/// gone.
fn collect_files(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> io::Result<bool> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect_files(base, &entry.path(), out)?;
        } else if let Ok(rel) = entry.path().strip_prefix(base) {
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    Ok(true)
}

/// kubelet's hostPath type check (`checkTypeInternal`). An empty type is
/// not checked by kubelet; containerd then makes a missing path a
/// directory, and so does this.
pub fn check_host_path_type(path: &Path, kind: &str) -> Result<(), String> {
    let shown = path.display();
    let meta = fs::metadata(path).ok();
    let exists = meta.is_some();
    let file_type = meta.as_ref().map(fs::Metadata::file_type);
    let is = |f: fn(&fs::FileType) -> bool| file_type.as_ref().is_some_and(f);
    match kind {
        "" => {
            if !exists {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| format!("mkdir {shown}: {e}"))?;
            }
            Ok(())
        }
        "DirectoryOrCreate" if !exists => fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(path)
            .map_err(|e| format!("mkdir {shown}: {e}")),
        "DirectoryOrCreate" | "Directory" => {
            if is(fs::FileType::is_dir) {
                Ok(())
            } else {
                Err(format!(
                    "hostPath type check failed: {shown} is not a directory"
                ))
            }
        }
        "FileOrCreate" if !exists => fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
            .map_err(|e| format!("open {shown}: {e}")),
        "FileOrCreate" | "File" => {
            if is(fs::FileType::is_file) {
                Ok(())
            } else {
                Err(format!("hostPath type check failed: {shown} is not a file"))
            }
        }
        "Socket" => {
            if is(FileTypeExt::is_socket) {
                Ok(())
            } else {
                Err(format!(
                    "hostPath type check failed: {shown} is not a socket file"
                ))
            }
        }
        "CharDevice" => {
            if is(FileTypeExt::is_char_device) {
                Ok(())
            } else {
                Err(format!(
                    "hostPath type check failed: {shown} is not a character device"
                ))
            }
        }
        "BlockDevice" => {
            if is(FileTypeExt::is_block_device) {
                Ok(())
            } else {
                Err(format!(
                    "hostPath type check failed: {shown} is not a block device"
                ))
            }
        }
        other => Err(format!("{other} is an invalid volume type")),
    }
}

/// The host directory of a claim's bound volume.
fn claim_path(ctx: &EnvContext<'_>, volume: &str, claim_name: &str) -> Result<PathBuf> {
    let namespace = ctx
        .pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let claim_err = |message: String| VolumeError::Claim {
        namespace: namespace.clone(),
        claim: claim_name.to_owned(),
        message,
    };
    let claim = ctx.refs.claims.get(claim_name).ok_or_else(|| {
        claim_err(format!(
            "failed to fetch PVC from API server: persistentvolumeclaims \"{claim_name}\" not found"
        ))
    })?;
    let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
    let bound_to = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let (Some("Bound"), Some(pv_name)) = (phase, bound_to) else {
        return Err(claim_err("PVC is not bound".into()));
    };
    let pv = ctx.refs.volumes.get(pv_name).ok_or_else(|| {
        claim_err(format!(
            "failed to fetch PV {pv_name} from API server: persistentvolumes \"{pv_name}\" not found"
        ))
    })?;
    volume_path(pv).map_err(|e| set_up(volume, e))
}

/// Where a PersistentVolume is on this host: `spec.local.path` (made when
/// shoal's provisioner created the volume) or `spec.hostPath.path` (type
/// checked as a hostPath volume).
pub fn volume_path(pv: &PersistentVolume) -> Result<PathBuf, String> {
    let spec = pv.spec.as_ref();
    if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
        let path = PathBuf::from(&local.path);
        let ours = pv
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/provisioned-by"))
            .is_some_and(|p| p == LOCAL_PROVISIONER);
        if ours {
            if !path.exists() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o777)
                    .create(&path)
                    .map_err(|e| format!("mkdir {}: {e}", path.display()))?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o777))
                    .map_err(|e| format!("chmod {}: {e}", path.display()))?;
            }
        } else if !path.exists() {
            return Err(format!("path {:?} does not exist", local.path));
        }
        return Ok(path);
    }
    if let Some(host) = spec.and_then(|s| s.host_path.as_ref()) {
        let path = PathBuf::from(&host.path);
        check_host_path_type(&path, host.type_.as_deref().unwrap_or_default())?;
        return Ok(path);
    }
    Err(format!(
        "persistent volume {:?}: only local and hostPath volumes are supported by shoal's node agent",
        pv.metadata.name.as_deref().unwrap_or_default()
    ))
}

/// Mounts a tmpfs on `dir` unless one is there.
fn mount_tmpfs(dir: &Path, size_bytes: Option<i128>) -> Result<(), String> {
    let real = fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mounted = mount_points_under(&real)
        .map_err(|e| format!("reading mountinfo: {e}"))?
        .contains(&real);
    if mounted {
        return Ok(());
    }
    let mut options = format!("mode={EMPTY_DIR_MODE:o}");
    if let Some(size) = size_bytes.filter(|s| *s > 0) {
        options.push_str(&format!(",size={size}"));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| format!("mount tmpfs on {}: {e}", dir.display()))
}

/// The mount points at or under `dir` (from /proc/self/mountinfo),
/// deepest first. `dir` is made absolute, symlinks resolved, first.
pub fn mount_points_under(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = fs::canonicalize(dir)?;
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    let mut out: Vec<PathBuf> = parse_mountinfo(&text)
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    Ok(out)
}

/// The mount points (field 5) of a mountinfo text, octal escapes decoded.
fn parse_mountinfo(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &field[i + 1..i + 4];
            if let Ok(b) = u8::from_str_radix(digits, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// [`try_teardown`], logging what fails (the next sync of the pods
/// directory tries again).
pub fn teardown(pod_dir: &Path) {
    if let Err(e) = try_teardown(pod_dir) {
        tracing::warn!(dir = %pod_dir.display(), error = %e, "cannot remove a pod directory");
    }
}

/// Unmounts what is mounted under the pod directory (tmpfs emptyDirs),
/// then removes the directory. hostPath and PV directories are never under
/// it; a mount that will not go makes this refuse rather than delete
/// through it.
pub fn try_teardown(pod_dir: &Path) -> Result<()> {
    if fs::symlink_metadata(pod_dir).is_err() {
        return Ok(());
    }
    let context = || format!("reading the mounts under {}", pod_dir.display());
    for mount in mount_points_under(pod_dir).map_err(io_err(context()))? {
        if let Err(e) = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %mount.display(), error = %e, "unmounting a pod volume");
        }
    }
    if let Some(path) = mount_points_under(pod_dir)
        .map_err(io_err(context()))?
        .into_iter()
        .next()
    {
        return Err(VolumeError::StillMounted { path });
    }
    // remove_dir_all does not follow symlinks: a link to a host path is
    // removed, not what it points to.
    fs::remove_dir_all(pod_dir).map_err(io_err(format!("removing {}", pod_dir.display())))
}

impl PodVolumes {
    /// The bind mounts of a container's volumeMounts; a `subPathExpr`
    /// needs [`PodVolumes::mounts_with_env`].
    pub fn mounts(&self, container: &Container) -> Result<Vec<BindMount>> {
        self.mounts_with_env(container, &[])
    }

    /// The bind mounts of a container's volumeMounts. `env` is the
    /// container's environment, for `subPathExpr`.
    pub fn mounts_with_env(
        &self,
        container: &Container,
        env: &[(String, String)],
    ) -> Result<Vec<BindMount>> {
        let mut out = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let volume = self
                .volumes
                .get(&mount.name)
                .ok_or_else(|| VolumeError::NotFound {
                    volume: mount.name.clone(),
                    container: container.name.clone(),
                })?;
            let sub_path = match mount.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
                Some(expr) => expand_sub_path(expr, env)?,
                None => mount.sub_path.clone().unwrap_or_default(),
            };
            let source = if sub_path.is_empty() {
                volume.host_path.clone()
            } else {
                check_sub_path(&sub_path)?;
                resolve_sub_path(&volume.host_path, &sub_path).map_err(|e| match e {
                    SubPathFailure::Escapes => VolumeError::SubPathEscapes {
                        subpath: sub_path.clone(),
                        base: volume.host_path.clone(),
                    },
                    SubPathFailure::Io(e) => {
                        tracing::warn!(
                            container = %container.name,
                            mount = %mount.name,
                            error = %e,
                            "creating a subPath"
                        );
                        VolumeError::SubPathCreate {
                            mount: mount.name.clone(),
                            container: container.name.clone(),
                        }
                    }
                })?
            };
            out.push(BindMount {
                source,
                destination: PathBuf::from(&mount.mount_path),
                read_only: mount.read_only == Some(true) || volume.read_only,
            });
        }
        Ok(out)
    }
}

/// `ExpandContainerVolumeMounts`: every referenced variable must be set
/// and not empty.
pub fn expand_sub_path(expr: &str, env: &[(String, String)]) -> Result<String> {
    let missing = RefCell::new(BTreeSet::new());
    let expanded = expand(expr, |name| {
        let value = env
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        if value.as_deref().is_none_or(str::is_empty) {
            missing.borrow_mut().insert(name.to_owned());
        }
        Some(value.unwrap_or_default())
    });
    let missing = missing.into_inner();
    if !missing.is_empty() {
        return Err(VolumeError::SubPathExpr(
            missing.into_iter().collect::<Vec<_>>().join(", "),
        ));
    }
    Ok(expanded)
}

/// A subPath must be relative and never step up.
pub fn check_sub_path(sub_path: &str) -> Result<()> {
    if Path::new(sub_path).is_absolute() {
        return Err(VolumeError::SubPathAbsolute(sub_path.to_owned()));
    }
    if sub_path.split('/').any(|c| c == "..") {
        return Err(VolumeError::SubPathBacksteps(sub_path.to_owned()));
    }
    Ok(())
}

#[derive(Debug)]
enum SubPathFailure {
    Escapes,
    Io(io::Error),
}

/// The subPath's real path inside the volume, each missing directory made
/// with the volume's mode; a symlink leading out of the volume is refused.
fn resolve_sub_path(base: &Path, sub_path: &str) -> Result<PathBuf, SubPathFailure> {
    let base = fs::canonicalize(base).map_err(SubPathFailure::Io)?;
    let mode = fs::metadata(&base)
        .map_err(SubPathFailure::Io)?
        .permissions()
        .mode()
        & 0o7777;
    let mut current = base.clone();
    for component in Path::new(sub_path).components() {
        let Component::Normal(part) = component else {
            continue;
        };
        let next = current.join(part);
        match fs::symlink_metadata(&next) {
            Ok(_) => {
                // Follow what is there (a configMap key is a link through
                // ..data), but it must stay inside the volume.
                let real = fs::canonicalize(&next).map_err(|_| SubPathFailure::Escapes)?;
                if !real.starts_with(&base) {
                    return Err(SubPathFailure::Escapes);
                }
                current = real;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(&next)
                    .map_err(SubPathFailure::Io)?;
                fs::set_permissions(&next, fs::Permissions::from_mode(mode))
                    .map_err(SubPathFailure::Io)?;
                current = next;
            }
            Err(e) => return Err(SubPathFailure::Io(e)),
        }
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIVolumeSource, EmptyDirVolumeSource,
        HostPathVolumeSource, LocalVolumeSource, NFSVolumeSource, ObjectFieldSelector,
        PersistentVolumeClaim, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus,
        PersistentVolumeClaimVolumeSource, PersistentVolumeSpec, PodSpec, ProjectedVolumeSource,
        ResourceFieldSelector, SecretVolumeSource, VolumeMount, VolumeProjection,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::ByteString;

    fn pod(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn ctx() -> Context {
        Context {
            node_name: "node-1".into(),
            host_ip: "192.168.1.10".into(),
            pod_ip: "10.244.1.5".into(),
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory_bytes: 1 << 30,
        }
    }

    fn volume(name: &str) -> Volume {
        Volume {
            name: name.into(),
            ..Default::default()
        }
    }

    fn refs() -> Refs {
        let mut refs = Refs::default();
        refs.config_maps.insert(
            "cfg".into(),
            ConfigMap {
                data: Some(
                    [
                        ("app.conf".to_string(), "port=80\n".to_string()),
                        ("other".to_string(), "x".to_string()),
                    ]
                    .into(),
                ),
                binary_data: Some([("blob".to_string(), ByteString(vec![0, 1, 2]))].into()),
                ..Default::default()
            },
        );
        refs.secrets.insert(
            "creds".into(),
            Secret {
                data: Some([("password".to_string(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        );
        refs
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn config_map_and_secret_volumes_are_atomic_and_refreshable() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume("config");
        v.config_map = Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..Default::default()
        });
        let mut s = volume("secret");
        s.secret = Some(SecretVolumeSource {
            secret_name: Some("creds".into()),
            default_mode: Some(0o400),
            items: Some(vec![KeyToPath {
                key: "password".into(),
                path: "db/pw".into(),
                mode: None,
            }]),
            optional: None,
        });
        let p = pod(vec![v, s]);
        let mut r = refs();
        let vols = prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        let dir = tmp.path().join("volumes/config");
        assert_eq!(vols.volumes["config"].host_path, dir);
        assert!(vols.volumes["config"].read_only);
        assert_eq!(
            fs::read_to_string(dir.join("app.conf")).unwrap(),
            "port=80\n"
        );
        assert_eq!(fs::read(dir.join("blob")).unwrap(), [0, 1, 2]);
        assert_eq!(
            fs::read_link(dir.join("app.conf")).unwrap(),
            Path::new("..data/app.conf")
        );
        assert_eq!(mode(&dir.join("app.conf")), 0o644);
        let secret_dir = tmp.path().join("volumes/secret");
        assert_eq!(
            fs::read_to_string(secret_dir.join("db/pw")).unwrap(),
            "hunter2"
        );
        assert_eq!(mode(&secret_dir.join("db/pw")), 0o400);

        // Same contents: nothing rewritten.
        let before = fs::read_link(dir.join(DATA_DIR)).unwrap();
        prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        assert_eq!(fs::read_link(dir.join(DATA_DIR)).unwrap(), before);

        // New contents swap in; a key gone loses its link; old dir removed.
        r.config_maps.get_mut("cfg").unwrap().data =
            Some([("app.conf".to_string(), "port=81\n".to_string())].into());
        prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("app.conf")).unwrap(),
            "port=81\n"
        );
        assert!(fs::symlink_metadata(dir.join("other")).is_err());
        assert!(fs::symlink_metadata(dir.join(&before)).is_err());
        let timestamped: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        assert_eq!(timestamped.len(), 1);
    }

    #[test]
    fn missing_config_map_is_a_failed_mount_unless_optional() {
        let tmp = tempfile::tempdir().unwrap();
        let mut v = volume("config");
        v.config_map = Some(ConfigMapVolumeSource {
            name: "gone".into(),
            ..Default::default()
        });
        let p = pod(vec![v.clone()]);
        let r = refs();
        assert_eq!(
            prepare(&p, &r, tmp.path(), &ctx()).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"config\" : configmap \"gone\" not found"
        );
        v.config_map.as_mut().unwrap().optional = Some(true);
        let p = pod(vec![v]);
        prepare(&p, &r, tmp.path(), &ctx()).unwrap();

        let mut s = volume("s");
        s.secret = Some(SecretVolumeSource {
            secret_name: Some("nope".into()),
            ..Default::default()
        });
        let p = pod(vec![s]);
        assert_eq!(
            prepare(&p, &r, tmp.path(), &ctx()).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"s\" : secret \"nope\" not found"
        );

        let mut k = volume("k");
        k.config_map = Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            items: Some(vec![KeyToPath {
                key: "missing".into(),
                path: "m".into(),
                mode: None,
            }]),
            ..Default::default()
        });
        let p = pod(vec![k]);
        assert_eq!(
            prepare(&p, &r, tmp.path(), &ctx()).unwrap_err().to_string(),
            "MountVolume.SetUp failed for volume \"k\" : configmap references non-existent config key: missing"
        );
    }

    #[test]
    fn downward_api_and_projected() {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = volume("podinfo");
        d.downward_api = Some(DownwardAPIVolumeSource {
            items: Some(vec![
                DownwardAPIVolumeFile {
                    path: "labels".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.labels".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                },
                DownwardAPIVolumeFile {
                    path: "./name".into(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                },
                DownwardAPIVolumeFile {
                    path: "cpu_limit".into(),
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some("app".into()),
                        resource: "limits.cpu".into(),
                        divisor: None,
                    }),
                    ..Default::default()
                },
            ]),
            default_mode: None,
        });
        let mut pr = volume("kube-api-access-abcde");
        pr.projected = Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(
                        k8s_openapi::api::core::v1::ServiceAccountTokenProjection {
                            path: "token".into(),
                            expiration_seconds: Some(3607),
                            audience: None,
                        },
                    ),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "cfg".into(),
                        items: Some(vec![KeyToPath {
                            key: "app.conf".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    downward_api: Some(k8s_openapi::api::core::v1::DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                field_path: "metadata.namespace".into(),
                                api_version: Some("v1".into()),
                            }),
                            ..Default::default()
                        }]),
                    }),
                    ..Default::default()
                },
            ]),
        });
        let p = pod(vec![d, pr]);
        let mut r = refs();
        let full = EnvContext {
            pod: &p,
            refs: &r,
            node_name: "node-1",
            host_ip: "192.168.1.10",
            pod_ip: "10.244.1.5",
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory_bytes: 1 << 30,
        };
        // No token issued yet: the volume waits for it.
        assert!(prepare_in(tmp.path(), &full)
            .unwrap_err()
            .to_string()
            .contains("the service account token has not been issued"));
        r.tokens
            .insert((String::new(), 3607), "header.claims.signature".into());
        let full = EnvContext {
            pod: &p,
            refs: &r,
            node_name: "node-1",
            host_ip: "192.168.1.10",
            pod_ip: "10.244.1.5",
            node_allocatable_cpu_millis: 2000,
            node_allocatable_memory_bytes: 1 << 30,
        };
        prepare_in(tmp.path(), &full).unwrap();
        let dir = tmp.path().join("volumes/podinfo");
        assert_eq!(
            fs::read_to_string(dir.join("labels")).unwrap(),
            "app=\"web\""
        );
        assert_eq!(fs::read_to_string(dir.join("name")).unwrap(), "web-0");
        assert_eq!(fs::read_to_string(dir.join("cpu_limit")).unwrap(), "2");
        let dir = tmp.path().join("volumes/kube-api-access-abcde");
        assert_eq!(fs::read_to_string(dir.join("ca.crt")).unwrap(), "port=80\n");
        assert_eq!(fs::read_to_string(dir.join("namespace")).unwrap(), "shop");
        assert_eq!(
            fs::read_to_string(dir.join("token")).unwrap(),
            "header.claims.signature"
        );
    }

    #[test]
    fn empty_dir_host_path_and_unsupported() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let mut e = volume("scratch");
        e.empty_dir = Some(EmptyDirVolumeSource::default());
        let mut h = volume("logs");
        h.host_path = Some(HostPathVolumeSource {
            path: host.path().join("made").to_string_lossy().into_owned(),
            type_: Some("DirectoryOrCreate".into()),
        });
        let p = pod(vec![e, h, volume("no-source")]);
        let r = refs();
        let vols = prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        assert_eq!(mode(&tmp.path().join("volumes/scratch")), 0o777);
        assert_eq!(vols.volumes["no-source"].kind, VolumeKind::EmptyDir);
        assert!(host.path().join("made").is_dir());
        assert_eq!(vols.volumes["logs"].host_path, host.path().join("made"));

        let mut n = volume("nfs");
        n.nfs = Some(NFSVolumeSource {
            path: "/x".into(),
            server: "s".into(),
            read_only: None,
        });
        let p = pod(vec![n]);
        assert!(prepare(&p, &r, tmp.path(), &ctx())
            .unwrap_err()
            .to_string()
            .contains("volume type \"nfs\" is not supported"));
    }

    #[test]
    fn host_path_types() {
        let host = tempfile::tempdir().unwrap();
        let dir = host.path();
        let file = dir.join("f");
        fs::write(&file, "x").unwrap();
        assert_eq!(check_host_path_type(dir, "Directory"), Ok(()));
        assert_eq!(
            check_host_path_type(&file, "Directory"),
            Err(format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            ))
        );
        assert_eq!(check_host_path_type(&file, "File"), Ok(()));
        assert_eq!(
            check_host_path_type(dir, "File"),
            Err(format!(
                "hostPath type check failed: {} is not a file",
                dir.display()
            ))
        );
        let missing = dir.join("missing");
        assert!(check_host_path_type(&missing, "Directory").is_err());
        assert_eq!(
            check_host_path_type(&dir.join("new"), "FileOrCreate"),
            Ok(())
        );
        assert!(dir.join("new").is_file());
        assert_eq!(
            check_host_path_type(&file, "Socket"),
            Err(format!(
                "hostPath type check failed: {} is not a socket file",
                file.display()
            ))
        );
        let sock = dir.join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(check_host_path_type(&sock, "Socket"), Ok(()));
        assert_eq!(
            check_host_path_type(dir, "Weird"),
            Err("Weird is an invalid volume type".to_string())
        );
        // No type: made as a directory when missing (containerd's way).
        assert_eq!(check_host_path_type(&dir.join("a/b"), ""), Ok(()));
        assert!(dir.join("a/b").is_dir());
    }

    #[test]
    fn claims() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let mut v = volume("data");
        v.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
            claim_name: "data-web-0".into(),
            read_only: None,
        });
        let p = pod(vec![v]);
        let mut r = refs();
        assert_eq!(
            prepare(&p, &r, tmp.path(), &ctx()).unwrap_err().to_string(),
            "error processing PVC shop/data-web-0: failed to fetch PVC from API server: persistentvolumeclaims \"data-web-0\" not found"
        );
        let mut claim = PersistentVolumeClaim {
            spec: Some(PersistentVolumeClaimSpec::default()),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Pending".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        r.claims.insert("data-web-0".into(), claim.clone());
        assert_eq!(
            prepare(&p, &r, tmp.path(), &ctx()).unwrap_err().to_string(),
            "error processing PVC shop/data-web-0: PVC is not bound"
        );
        claim.spec.as_mut().unwrap().volume_name = Some("pvc-1".into());
        claim.status.as_mut().unwrap().phase = Some("Bound".into());
        r.claims.insert("data-web-0".into(), claim);
        let path = store.path().join("pvc-1");
        r.volumes.insert(
            "pvc-1".into(),
            PersistentVolume {
                metadata: ObjectMeta {
                    name: Some("pvc-1".into()),
                    annotations: Some(
                        [(
                            "pv.kubernetes.io/provisioned-by".to_string(),
                            LOCAL_PROVISIONER.to_string(),
                        )]
                        .into(),
                    ),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeSpec {
                    local: Some(LocalVolumeSource {
                        path: path.to_string_lossy().into_owned(),
                        fs_type: None,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let vols = prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        assert_eq!(vols.volumes["data"].host_path, path);
        assert!(path.is_dir());
        assert_eq!(mode(&path), 0o777);
    }

    #[test]
    fn mounts_with_sub_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let mut e = volume("scratch");
        e.empty_dir = Some(EmptyDirVolumeSource::default());
        let mut c = volume("config");
        c.config_map = Some(ConfigMapVolumeSource {
            name: "cfg".into(),
            ..Default::default()
        });
        let p = pod(vec![e, c]);
        let r = refs();
        let vols = prepare(&p, &r, tmp.path(), &ctx()).unwrap();
        let vm =
            |name: &str, path: &str, sub: Option<&str>, expr: Option<&str>, ro: Option<bool>| {
                VolumeMount {
                    name: name.into(),
                    mount_path: path.into(),
                    sub_path: sub.map(Into::into),
                    sub_path_expr: expr.map(Into::into),
                    read_only: ro,
                    ..Default::default()
                }
            };
        let container = Container {
            name: "app".into(),
            volume_mounts: Some(vec![
                vm("scratch", "/data", None, None, None),
                vm("scratch", "/cache", Some("cache/x"), None, Some(true)),
                vm("scratch", "/per-pod", None, Some("pods/$(POD_NAME)"), None),
                vm("config", "/etc/app.conf", Some("app.conf"), None, None),
                vm("config", "/etc/config", None, None, None),
            ]),
            ..Default::default()
        };
        let env = [("POD_NAME".to_string(), "web-0".to_string())];
        let mounts = vols.mounts_with_env(&container, &env).unwrap();
        let root = fs::canonicalize(tmp.path().join("volumes")).unwrap();
        assert_eq!(mounts[0].source, tmp.path().join("volumes/scratch"));
        assert!(!mounts[0].read_only);
        assert_eq!(mounts[1].source, root.join("scratch/cache/x"));
        assert!(mounts[1].read_only);
        assert!(root.join("scratch/cache/x").is_dir());
        assert_eq!(mode(&root.join("scratch/cache")), 0o777);
        assert_eq!(mounts[2].source, root.join("scratch/pods/web-0"));
        // A configMap key through ..data resolves to the real file.
        assert!(mounts[3].source.starts_with(root.join("config")));
        assert_eq!(fs::read_to_string(&mounts[3].source).unwrap(), "port=80\n");
        assert!(mounts[3].read_only && mounts[4].read_only);
        assert_eq!(mounts[4].destination, Path::new("/etc/config"));

        let one = |m: VolumeMount| {
            let c = Container {
                name: "app".into(),
                volume_mounts: Some(vec![m]),
                ..Default::default()
            };
            vols.mounts_with_env(&c, &env).unwrap_err().to_string()
        };
        assert_eq!(
            one(vm("scratch", "/x", Some("../../etc"), None, None)),
            "unable to provision SubPath `../../etc`: must not contain '..'"
        );
        assert_eq!(
            one(vm("scratch", "/x", Some("a/../b"), None, None)),
            "unable to provision SubPath `a/../b`: must not contain '..'"
        );
        assert_eq!(
            one(vm("scratch", "/x", Some("/etc"), None, None)),
            "error SubPath `/etc` must not be an absolute path"
        );
        assert_eq!(
            one(vm("scratch", "/x", None, Some("$(NOPE)/a"), None)),
            "missing value for NOPE"
        );
        assert_eq!(
            one(vm("gone", "/x", None, None, None)),
            "cannot find volume \"gone\" to mount into container \"app\""
        );
        // A symlink planted in the volume cannot lead out of it.
        std::os::unix::fs::symlink("/etc", root.join("scratch/evil")).unwrap();
        assert!(one(vm("scratch", "/x", Some("evil"), None, None))
            .starts_with("subpath \"evil\" not within volume path"));
        assert!(one(vm("scratch", "/x", Some("evil/passwd"), None, None)).starts_with("subpath"));
    }

    #[test]
    fn teardown_removes_only_the_pod_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        fs::write(host.path().join("keep"), "x").unwrap();
        let pod_dir = tmp.path().join("pod");
        let mut h = volume("host");
        h.host_path = Some(HostPathVolumeSource {
            path: host.path().to_string_lossy().into_owned(),
            type_: Some("Directory".into()),
        });
        let mut e = volume("scratch");
        e.empty_dir = Some(EmptyDirVolumeSource::default());
        let p = pod(vec![h, e]);
        let r = refs();
        prepare(&p, &r, &pod_dir, &ctx()).unwrap();
        // A link into the host path inside the pod dir is removed, not followed.
        std::os::unix::fs::symlink(host.path(), pod_dir.join("volumes/scratch/link")).unwrap();
        try_teardown(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
        assert!(host.path().join("keep").exists());
        try_teardown(&pod_dir).unwrap();
    }

    #[test]
    fn tmpfs_empty_dir_when_root() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let pod_dir = tmp.path().join("pod");
        let mut m = volume("mem");
        m.empty_dir = Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                "1Mi".into(),
            )),
        });
        let p = pod(vec![m]);
        let r = refs();
        let vols = prepare(&p, &r, &pod_dir, &ctx()).unwrap();
        assert_eq!(vols.volumes["mem"].kind, VolumeKind::Tmpfs);
        let dir = fs::canonicalize(pod_dir.join("volumes/mem")).unwrap();
        assert_eq!(
            mount_points_under(&dir).unwrap(),
            std::slice::from_ref(&dir)
        );
        // Idempotent: no second mount.
        prepare(&p, &r, &pod_dir, &ctx()).unwrap();
        assert_eq!(mount_points_under(&dir).unwrap().len(), 1);
        fs::write(dir.join("f"), "x").unwrap();
        try_teardown(&pod_dir).unwrap();
        assert!(!pod_dir.exists());
    }

    #[test]
    fn mountinfo_parsing() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            parse_mountinfo(text),
            [PathBuf::from("/mnt/with space"), PathBuf::from("/proc")]
        );
    }

    #[test]
    fn payload_paths_are_validated() {
        let tmp = tempfile::tempdir().unwrap();
        let file = FileProjection {
            data: vec![],
            mode: 0o644,
        };
        for bad in ["/abs", "../up", "a/../../b", "..hidden"] {
            let payload: Payload = [(bad.to_string(), file.clone())].into();
            assert!(write_atomic(tmp.path(), &payload).is_err(), "{bad}");
        }
    }
}
