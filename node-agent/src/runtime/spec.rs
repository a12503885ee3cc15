//! The OCI runtime spec (`config.json`) of a container: a pure function of
//! the merged process, the namespaces, mounts and CPU settings, written
//! with the `oci-spec` crate and run by runc.
//!
//! Defaults follow containerd's for Kubernetes: Docker's default
//! capability set, new pid/ipc/uts/mount namespaces, the network namespace
//! joined from a path (the pod sandbox's) or the host's (hostNetwork, which
//! also keeps the host's UTS namespace and so its hostname), the usual
//! /proc, /dev, /sys mounts with masked and read-only paths, all devices
//! denied but the standard ones (runc adds those).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, MountBuilder, ProcessBuilder,
    RootBuilder, Spec, UserBuilder,
};

use super::cgroup;
use super::process::ProcessSpec;

/// The network a container joins.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Network {
    /// The host's network (and UTS) namespace: `hostNetwork: true`.
    #[default]
    Host,
    /// The network namespace at this path (`/run/netns/<pod>`,
    /// `/proc/<pid>/ns/net`).
    Join(PathBuf),
}

/// A bind mount into the container: volumes, /etc/hosts, /etc/resolv.conf.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

/// Everything the spec is made of.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub process: &'a ProcessSpec,
    pub rootfs: &'a Path,
    pub hostname: Option<&'a str>,
    pub network: &'a Network,
    pub mounts: &'a [BindMount],
    pub cpu_request_millis: Option<u64>,
    pub cpu_limit_millis: Option<u64>,
    /// runc's cgroup for the container (`/shoal/<id>/ctr`).
    pub cgroups_path: &'a str,
    /// Give the process a terminal (`tty: true`).
    pub terminal: bool,
}

/// Why a spec cannot be built (a builder refused a value).
#[derive(Debug, thiserror::Error)]
#[error("building the OCI spec: {0}")]
pub struct SpecError(String);

fn err(e: impl std::fmt::Display) -> SpecError {
    SpecError(e.to_string())
}

/// Docker's (and containerd's) default capabilities.
pub fn default_capabilities() -> HashSet<Capability> {
    [
        Capability::Chown,
        Capability::DacOverride,
        Capability::Fsetid,
        Capability::Fowner,
        Capability::Mknod,
        Capability::NetRaw,
        Capability::Setgid,
        Capability::Setuid,
        Capability::Setfcap,
        Capability::Setpcap,
        Capability::NetBindService,
        Capability::SysChroot,
        Capability::Kill,
        Capability::AuditWrite,
    ]
    .into_iter()
    .collect()
}

pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let p = input.process;
    let caps = default_capabilities();
    // Non-root processes get no effective capabilities, as with Docker.
    let effective = if p.uid == 0 {
        caps.clone()
    } else {
        HashSet::new()
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(effective.clone())
        .effective(effective)
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(err)?;
    let mut user = UserBuilder::default().uid(p.uid).gid(p.gid);
    if !p.additional_gids.is_empty() {
        user = user.additional_gids(p.additional_gids.clone());
    }
    let process = ProcessBuilder::default()
        .terminal(input.terminal)
        .args(p.args.clone())
        .env(p.env.clone())
        .cwd(PathBuf::from(&p.cwd))
        .user(user.build().map_err(err)?)
        .capabilities(capabilities)
        .no_new_privileges(false)
        .build()
        .map_err(err)?;

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(err)?,
        );
    }
    let hostname = match input.network {
        Network::Host => None,
        Network::Join(path) => {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Network)
                    .path(path.clone())
                    .build()
                    .map_err(err)?,
            );
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::Uts)
                    .build()
                    .map_err(err)?,
            );
            input.hostname.map(str::to_string)
        }
    };

    let mut cpu = LinuxCpuBuilder::default().shares(cgroup::milli_cpu_to_shares(
        input.cpu_request_millis.unwrap_or(0),
    ));
    if let Some(quota) = input.cpu_limit_millis.and_then(cgroup::milli_cpu_to_quota) {
        cpu = cpu.quota(quota).period(cgroup::CPU_PERIOD_US);
    }
    let resources = LinuxResourcesBuilder::default()
        .devices(vec![LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(err)?])
        .cpu(cpu.build().map_err(err)?)
        .build()
        .map_err(err)?;
    let defaults = oci_spec::runtime::Linux::default();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(input.cgroups_path))
        .masked_paths(defaults.masked_paths().clone().unwrap_or_default())
        .readonly_paths(defaults.readonly_paths().clone().unwrap_or_default())
        .build()
        .map_err(err)?;

    let mut mounts = oci_spec::runtime::get_default_mounts();
    for m in input.mounts {
        let mode = if m.read_only { "ro" } else { "rw" };
        mounts.push(
            MountBuilder::default()
                .destination(m.destination.clone())
                .typ("bind")
                .source(m.source.clone())
                .options(vec![
                    "rbind".to_string(),
                    "rprivate".to_string(),
                    mode.to_string(),
                ])
                .build()
                .map_err(err)?,
        );
    }

    let mut spec = Spec::default();
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default()
            .path(input.rootfs.to_path_buf())
            .readonly(false)
            .build()
            .map_err(err)?,
    ));
    spec.set_hostname(hostname);
    spec.set_mounts(Some(mounts));
    spec.set_linux(Some(linux));
    spec.set_annotations(None);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process() -> ProcessSpec {
        ProcessSpec {
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        }
    }

    #[test]
    fn pod_containers_join_the_sandbox_network() {
        let p = process();
        let mounts = [BindMount {
            source: "/var/lib/x/hosts".into(),
            destination: "/etc/hosts".into(),
            read_only: true,
        }];
        let net = Network::Join("/run/netns/pod".into());
        let spec = build(&SpecInput {
            process: &p,
            rootfs: Path::new("/data/c/rootfs"),
            hostname: Some("web-0"),
            network: &net,
            mounts: &mounts,
            cpu_request_millis: Some(250),
            cpu_limit_millis: Some(500),
            cgroups_path: "/shoal/c1/ctr",
            terminal: false,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["hostname"], "web-0");
        assert_eq!(json["root"]["path"], "/data/c/rootfs");
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(ns
            .iter()
            .any(|n| n["type"] == "network" && n["path"] == "/run/netns/pod"));
        assert!(ns.iter().any(|n| n["type"] == "uts"));
        assert!(ns.iter().any(|n| n["type"] == "pid"));
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(json["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(json["linux"]["resources"]["cpu"]["period"], 100_000);
        assert_eq!(json["linux"]["cgroupsPath"], "/shoal/c1/ctr");
        let last = json["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["destination"], "/etc/hosts");
        assert_eq!(
            last["options"],
            serde_json::json!(["rbind", "rprivate", "ro"])
        );
        assert!(
            json["process"]["capabilities"]["effective"]
                .as_array()
                .unwrap()
                .len()
                > 10
        );
    }

    #[test]
    fn host_network_keeps_host_namespaces_and_hostname() {
        let mut p = process();
        p.uid = 1000;
        let spec = build(&SpecInput {
            process: &p,
            rootfs: Path::new("/r"),
            hostname: Some("ignored"),
            network: &Network::Host,
            mounts: &[],
            cpu_request_millis: None,
            cpu_limit_millis: None,
            cgroups_path: "/shoal/c2/ctr",
            terminal: true,
        })
        .unwrap();
        let json = serde_json::to_value(&spec).unwrap();
        assert!(json.get("hostname").is_none());
        let ns = json["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns
            .iter()
            .any(|n| n["type"] == "network" || n["type"] == "uts"));
        assert_eq!(json["linux"]["resources"]["cpu"]["shares"], 2);
        assert!(json["linux"]["resources"]["cpu"].get("quota").is_none());
        assert_eq!(
            json["process"]["capabilities"]["effective"],
            serde_json::json!([])
        );
        assert_eq!(json["process"]["user"]["uid"], 1000);
        assert_eq!(json["process"]["terminal"], true);
    }
}
