//! What a container runs, merged from its image config and its
//! description the way Kubernetes does it (pure functions, no I/O):
//!
//! - command/args: `$(VAR)` references expand against the container's own
//!   env (kubelet's `ExpandContainerCommandAndArgs`); then containerd's
//!   rule: a command replaces the image's Entrypoint *and* Cmd; args alone
//!   replace Cmd and keep Entrypoint; neither keeps both.
//! - env: a default PATH, HOSTNAME, then the image's Env, then the
//!   container's, a later value replacing an earlier one of the same name.
//! - working dir: the container's, else the image's, else `/`.
//! - user: runAsUser/runAsGroup, else the image's `User` (`name`, `uid`,
//!   `name:group`, `uid:gid`) looked up in the image's /etc/passwd and
//!   /etc/group.

use crate::image::ImageConfig;

/// The PATH containerd gives a container whose image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container side of the merge: fields of a Kubernetes container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerProcess {
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Already resolved values, in order.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
}

/// The merged process, as the OCI spec wants it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSpec {
    pub args: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Why a process cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("no command specified: the container has no command or args and the image no Entrypoint or Cmd")]
    NoCommand,
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoSuchUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoSuchGroup(String),
    #[error("working dir {0:?} is not an absolute path")]
    RelativeWorkingDir(String),
}

/// Kubernetes' `$(VAR)` expansion: defined names are replaced, undefined
/// ones stay as written, `$$` is a literal `$`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if after.is_empty() {
            out.push('$');
            rest = after;
            break;
        }
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(close) => {
                    let name = &inner[..close];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[close + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Sets `entry` (`KEY=VALUE`) in `env`, replacing an entry of that key.
fn set_env(env: &mut Vec<String>, entry: String) {
    let key = entry.split('=').next().unwrap_or_default().to_string();
    match env
        .iter_mut()
        .find(|e| e.split('=').next() == Some(key.as_str()))
    {
        Some(existing) => *existing = entry,
        None => env.push(entry),
    }
}

/// One line of /etc/passwd: (name, uid, gid).
fn passwd_entries(passwd: &str) -> impl Iterator<Item = (&str, u32, u32)> {
    passwd.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let uid = f.next()?.parse().ok()?;
        let gid = f.next()?.parse().ok()?;
        Some((name, uid, gid))
    })
}

/// One line of /etc/group: (name, gid, members).
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let _password = f.next()?;
        let gid = f.next()?.parse().ok()?;
        let members = f
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|m| !m.is_empty())
            .collect();
        Some((name, gid, members))
    })
}

/// (uid, gid, additional gids) for an image `User` string or a
/// runAsUser/runAsGroup pair.
pub fn resolve_user(
    image_user: &str,
    run_as_user: Option<u32>,
    run_as_group: Option<u32>,
    passwd: &str,
    group: &str,
) -> Result<(u32, u32, Vec<u32>), MergeError> {
    let (user_part, group_part) = match image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (image_user, None),
    };
    let (uid, mut gid, name) = match run_as_user {
        Some(uid) => {
            let entry = passwd_entries(passwd).find(|(_, u, _)| *u == uid);
            (
                uid,
                entry.map(|e| e.2).unwrap_or(0),
                entry.map(|e| e.0.to_string()),
            )
        }
        None if user_part.is_empty() => (0, 0, Some("root".to_string())),
        None => match user_part.parse::<u32>() {
            Ok(uid) => {
                let entry = passwd_entries(passwd).find(|(_, u, _)| *u == uid);
                (
                    uid,
                    entry.map(|e| e.2).unwrap_or(0),
                    entry.map(|e| e.0.to_string()),
                )
            }
            Err(_) => {
                let (name, uid, gid) = passwd_entries(passwd)
                    .find(|(n, _, _)| *n == user_part)
                    .ok_or_else(|| MergeError::NoSuchUser(user_part.to_string()))?;
                (uid, gid, Some(name.to_string()))
            }
        },
    };
    if run_as_user.is_none() {
        if let Some(g) = group_part.filter(|g| !g.is_empty()) {
            gid = match g.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    group_entries(group)
                        .find(|(n, _, _)| *n == g)
                        .ok_or_else(|| MergeError::NoSuchGroup(g.to_string()))?
                        .1
                }
            };
        }
    }
    if let Some(g) = run_as_group {
        gid = g;
    }
    let mut additional: Vec<u32> = Vec::new();
    if let Some(name) = name {
        for (_, g, members) in group_entries(group) {
            if members.contains(&name.as_str()) && g != gid && !additional.contains(&g) {
                additional.push(g);
            }
        }
    }
    Ok((uid, gid, additional))
}

/// The process of a container: see the module doc for the rules.
pub fn merge(
    image: &ImageConfig,
    container: &ContainerProcess,
    hostname: Option<&str>,
    passwd: &str,
    group: &str,
) -> Result<ProcessSpec, MergeError> {
    let lookup = |name: &str| {
        container
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let command: Vec<String> = container
        .command
        .iter()
        .map(|c| expand(c, lookup))
        .collect();
    let mut args: Vec<String> = container.args.iter().map(|a| expand(a, lookup)).collect();
    let command = if command.is_empty() {
        if args.is_empty() {
            args = image.cmd.clone().unwrap_or_default();
        }
        image.entrypoint.clone().unwrap_or_default()
    } else {
        command
    };
    let argv: Vec<String> = command.into_iter().chain(args).collect();
    if argv.is_empty() {
        return Err(MergeError::NoCommand);
    }

    let mut env = vec![DEFAULT_PATH.to_string()];
    if let Some(hostname) = hostname {
        set_env(&mut env, format!("HOSTNAME={hostname}"));
    }
    for e in image.env.iter().flatten() {
        set_env(&mut env, e.clone());
    }
    for (k, v) in &container.env {
        set_env(&mut env, format!("{k}={v}"));
    }

    let cwd = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(MergeError::RelativeWorkingDir(cwd));
    }

    let (uid, gid, additional_gids) = resolve_user(
        image.user.as_deref().unwrap_or(""),
        container.run_as_user,
        container.run_as_group,
        passwd,
        group,
    )?;
    Ok(ProcessSpec {
        args: argv,
        env,
        cwd,
        uid,
        gid,
        additional_gids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn image(entrypoint: Option<&[&str]>, cmd: Option<&[&str]>) -> ImageConfig {
        ImageConfig {
            entrypoint: entrypoint.map(v),
            cmd: cmd.map(v),
            env: Some(v(&["PATH=/image/bin", "A=image"])),
            working_dir: Some("/srv".into()),
            ..Default::default()
        }
    }

    fn argv(image: &ImageConfig, command: &[&str], args: &[&str]) -> Vec<String> {
        let c = ContainerProcess {
            command: v(command),
            args: v(args),
            ..Default::default()
        };
        merge(image, &c, None, "", "").unwrap().args
    }

    /// The table of Kubernetes' "Define a Command and Arguments for a
    /// Container" page (Entrypoint/Cmd vs command/args).
    #[test]
    fn command_and_args_follow_kubernetes_table() {
        let img = image(Some(&["/ep-1"]), Some(&["foo", "bar"]));
        assert_eq!(argv(&img, &[], &[]), v(&["/ep-1", "foo", "bar"]));
        assert_eq!(argv(&img, &["/ep-2"], &[]), v(&["/ep-2"]));
        assert_eq!(
            argv(&img, &[], &["zoo", "boo"]),
            v(&["/ep-1", "zoo", "boo"])
        );
        assert_eq!(
            argv(&img, &["/ep-2"], &["zoo", "boo"]),
            v(&["/ep-2", "zoo", "boo"])
        );
        let cmd_only = image(None, Some(&["sh"]));
        assert_eq!(argv(&cmd_only, &[], &[]), v(&["sh"]));
        assert_eq!(argv(&cmd_only, &[], &["echo", "x"]), v(&["echo", "x"]));
        let none = image(None, None);
        let err = merge(&none, &ContainerProcess::default(), None, "", "").unwrap_err();
        assert_eq!(err, MergeError::NoCommand);
    }

    #[test]
    fn variables_expand_as_kubelet_expands_them() {
        let env = |name: &str| match name {
            "MESSAGE" => Some("hello".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("$(MESSAGE) world", env), "hello world");
        assert_eq!(expand("$(UNDEFINED)", env), "$(UNDEFINED)");
        assert_eq!(expand("$$(MESSAGE)", env), "$(MESSAGE)");
        assert_eq!(expand("$$$(MESSAGE)", env), "$hello");
        assert_eq!(expand("[$(EMPTY)]", env), "[]");
        assert_eq!(expand("$(MESSAGE", env), "$(MESSAGE");
        assert_eq!(expand("cost $5 $", env), "cost $5 $");
        assert_eq!(expand("ünï$(MESSAGE)cödé", env), "ünïhellocödé");
        let img = image(None, Some(&["sh"]));
        let c = ContainerProcess {
            command: v(&["echo", "$(GREETING)"]),
            env: vec![("GREETING".into(), "hi".into())],
            ..Default::default()
        };
        assert_eq!(
            merge(&img, &c, None, "", "").unwrap().args,
            v(&["echo", "hi"])
        );
    }

    #[test]
    fn env_container_overrides_image_overrides_defaults() {
        let img = image(None, Some(&["sh"]));
        let c = ContainerProcess {
            env: vec![("A".into(), "container".into()), ("B".into(), "b=c".into())],
            ..Default::default()
        };
        let p = merge(&img, &c, Some("pod-1"), "", "").unwrap();
        assert_eq!(
            p.env,
            v(&["PATH=/image/bin", "HOSTNAME=pod-1", "A=container", "B=b=c"])
        );
        let bare = ImageConfig {
            cmd: Some(v(&["sh"])),
            ..Default::default()
        };
        let p = merge(&bare, &ContainerProcess::default(), None, "", "").unwrap();
        assert_eq!(p.env, v(&[DEFAULT_PATH]));
        assert_eq!(p.cwd, "/");
    }

    #[test]
    fn working_dir_container_then_image_then_root() {
        let img = image(None, Some(&["sh"]));
        assert_eq!(
            merge(&img, &ContainerProcess::default(), None, "", "")
                .unwrap()
                .cwd,
            "/srv"
        );
        let c = ContainerProcess {
            working_dir: Some("/data".into()),
            ..Default::default()
        };
        assert_eq!(merge(&img, &c, None, "", "").unwrap().cwd, "/data");
        let c = ContainerProcess {
            working_dir: Some("data".into()),
            ..Default::default()
        };
        assert!(merge(&img, &c, None, "", "").is_err());
    }

    #[test]
    fn users_resolve_from_the_image_files() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nweb:x:33:33::/var/www:/bin/sh\n";
        let group = "root:x:0:\nnobody:x:65534:\nweb:x:33:\nlogs:x:4:web,other\n";
        assert_eq!(
            resolve_user("", None, None, passwd, group).unwrap(),
            (0, 0, vec![])
        );
        assert_eq!(
            resolve_user("nobody", None, None, passwd, group).unwrap(),
            (65534, 65534, vec![])
        );
        assert_eq!(
            resolve_user("web", None, None, passwd, group).unwrap(),
            (33, 33, vec![4])
        );
        assert_eq!(
            resolve_user("1000", None, None, passwd, group).unwrap(),
            (1000, 0, vec![])
        );
        assert_eq!(
            resolve_user("33:logs", None, None, passwd, group).unwrap(),
            (33, 4, vec![])
        );
        assert_eq!(
            resolve_user("1000:1000", None, None, passwd, group).unwrap(),
            (1000, 1000, vec![])
        );
        assert_eq!(
            resolve_user("web", Some(65534), None, passwd, group).unwrap(),
            (65534, 65534, vec![])
        );
        assert_eq!(
            resolve_user("", Some(5), Some(6), passwd, group).unwrap(),
            (5, 6, vec![])
        );
        assert_eq!(
            resolve_user("ghost", None, None, passwd, group).unwrap_err(),
            MergeError::NoSuchUser("ghost".into())
        );
        assert!(resolve_user("web:ghosts", None, None, passwd, group).is_err());
    }
}
