//! `shoal up --nodes N`: N node agents on this machine, each in a network
//! namespace of its own acting as a separate host, so that traffic between
//! pods of different nodes really crosses the overlay.
//!
//! ```text
//!   this machine (root namespace)            namespace shoal-node-1
//!   ─────────────────────────────            ─────────────────────────────────
//!   apiserver 127.0.0.1:PORT                 eth0 172.29.0.11/24, default via .1
//!   relay     172.29.0.1:PORT ──► apiserver  shoal agent (a child process,
//!   shoal-nodes 172.29.0.1/24 (bridge)         entered with nsenter --net)
//!     ├── shn1 ◄── veth ──► eth0 of node-1     shoal0 10.244.0.1/24, pods
//!     ├── shn2 ◄── veth ──► eth0 of node-2     shoal-tun, UDP 7443 (tunnels)
//!     └── …
//! ```
//!
//! The agents are the same `shoal agent` that runs on separate machines:
//! they know the apiserver only by the address in their kubeconfig and
//! each other only through their Node objects. Each gets a serving
//! certificate for its address from the cluster CA, and asks for its
//! overlay certificate through the CSR API as on any other machine. The namespaces, the bridge and the veths are kept
//! when `shoal up` stops (pods keep running and are re-adopted by the next
//! run) unless `--stop-pods-on-exit`; the accept rule for the bridge in the
//! host firewall is removed.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// The bridge the nodes' namespaces hang on.
pub const BRIDGE: &str = "shoal-nodes";
/// The host firewall chain accepting traffic bridged between the nodes.
pub const FIREWALL_CHAIN: &str = "SHOAL-NODES";

/// One simulated host.
pub struct HostNode {
    pub name: String,
    pub netns: String,
    pub address: Ipv4Addr,
    pub dir: PathBuf,
    child: Option<Child>,
    /// `nsenter` arguments that start its agent.
    argv: Vec<std::ffi::OsString>,
    stop_pods_on_exit: bool,
}

impl HostNode {
    /// Starts (or starts again) the node's agent, appending to its log.
    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .with_context(|| format!("opening {}/agent.log", self.dir.display()))?;
        let mut command = Command::new("nsenter");
        command
            .args(&self.argv)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if self.stop_pods_on_exit {
            command.arg("--stop-pods-on-exit");
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting the agent of {}", self.name))?;
        self.child = Some(child);
        Ok(())
    }
}

/// The machine's side: the bridge, the namespaces, the relay to the
/// apiserver and the agents.
pub struct Hosts {
    pub nodes: Vec<HostNode>,
    firewall: shoal_overlay::firewall::HostFirewall,
    relay: tokio::task::JoinHandle<()>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

fn link_exists(name: &str, netns: Option<&str>) -> bool {
    let mut command = Command::new("ip");
    if let Some(ns) = netns {
        command.args(["-n", ns]);
    }
    command
        .args(["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The subnet's `n`th address.
fn nth(subnet: shoal_core::cidr::Ipv4Cidr, n: u64) -> anyhow::Result<Ipv4Addr> {
    subnet
        .nth(n)
        .with_context(|| format!("{subnet} has no address number {n}"))
}

/// Makes (or finds) the bridge and one namespace per node, wired to it.
pub async fn prepare(
    names: &[String],
    subnet: shoal_core::cidr::Ipv4Cidr,
    dir: &Path,
) -> anyhow::Result<Vec<HostNode>> {
    let gateway = nth(subnet, 1)?;
    let prefix = subnet.prefix_len().to_string();
    if !link_exists(BRIDGE, None) {
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
    }
    ip(&[
        "addr",
        "replace",
        &format!("{gateway}/{prefix}"),
        "dev",
        BRIDGE,
    ])?;
    ip(&["link", "set", BRIDGE, "up"])?;
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let address = nth(subnet, 11 + i as u64)?;
        let netns = format!("shoal-{name}");
        let path = PathBuf::from("/run/netns").join(&netns);
        shoal_overlay::netns::create(&path)
            .await
            .with_context(|| format!("creating network namespace {netns}"))?;
        let host_end = format!("shn{}", i + 1);
        if !link_exists("eth0", Some(&netns)) {
            if link_exists(&host_end, None) {
                ip(&["link", "del", &host_end])?;
            }
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
        }
        ip(&["link", "set", &host_end, "master", BRIDGE, "up"])?;
        let addr = format!("{address}/{prefix}");
        ip(&["-n", &netns, "addr", "replace", &addr, "dev", "eth0"])?;
        ip(&["-n", &netns, "link", "set", "eth0", "up"])?;
        ip(&["-n", &netns, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &netns,
            "route",
            "replace",
            "default",
            "via",
            &gateway.to_string(),
        ])?;
        nodes.push(HostNode {
            name: name.clone(),
            netns,
            address,
            dir: dir.join("nodes").join(name),
            child: None,
            argv: Vec::new(),
            stop_pods_on_exit: false,
        });
    }
    Ok(nodes)
}

/// Relays TCP from `listen` (on the bridge) to the apiserver on loopback,
/// for the agents in their namespaces.
async fn relay(listener: tokio::net::TcpListener, target: std::net::SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}

/// What every agent is started with.
pub struct AgentSettings<'a> {
    pub cluster_dir: &'a Path,
    pub apiserver: std::net::SocketAddr,
    pub ca_pem: &'a str,
    /// The bootstrap token the agents ask for their certificates with.
    pub bootstrap_token: &'a str,
    pub stop_pods_on_exit: bool,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub cluster_cidr: shoal_core::cidr::Ipv4Cidr,
    /// Where the nodes' DNS forwards outside names (none: resolv.conf).
    pub dns_upstream: &'a [std::net::SocketAddr],
    /// How often each agent reports its usage (`--metrics-interval`).
    pub metrics_interval: Duration,
    /// The agents' Ingress flags.
    pub ingress: Vec<String>,
}

impl Hosts {
    /// Wires the namespaces, starts the relay and one agent per node.
    pub async fn start(
        mut nodes: Vec<HostNode>,
        subnet: shoal_core::cidr::Ipv4Cidr,
        settings: AgentSettings<'_>,
    ) -> anyhow::Result<Hosts> {
        let gateway = nth(subnet, 1)?;
        let firewall = shoal_overlay::firewall::HostFirewall::new(FIREWALL_CHAIN, &[BRIDGE]);
        firewall
            .install()
            .context("accepting the nodes' traffic in the host firewall")?;
        // An apiserver bound to every address is reachable on the bridge
        // already; else a relay listens there.
        let relay = match tokio::net::TcpListener::bind((gateway, settings.apiserver.port())).await
        {
            Ok(listener) => tokio::spawn(relay(listener, settings.apiserver)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => tokio::spawn(async {}),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("listening on {gateway}:{}", settings.apiserver.port())
                })
            }
        };
        let server = format!("https://{gateway}:{}", settings.apiserver.port());
        let ca_files = shoal_core::tls::Files::in_dir(&settings.cluster_dir.join("apiserver"));
        let exe = std::env::current_exe().context("finding the shoal binary")?;
        for node in &mut nodes {
            let pki = node.dir.join("pki");
            std::fs::create_dir_all(&pki)?;
            // The agent's serving certificate (logs, exec) for its address.
            let (cert, key) = (pki.join("agent.crt"), pki.join("agent.key"));
            shoal_core::tls::issue_serving_cert(
                &ca_files.ca_cert,
                &ca_files.ca_key,
                std::slice::from_ref(&node.name),
                &[std::net::IpAddr::V4(node.address)],
                &cert,
                &key,
            )
            .context("issuing an agent serving certificate")?;
            // The cluster's address from inside the namespace is the relay;
            // the apiserver's certificate names localhost. The agent joins
            // with the bootstrap token and writes its own kubeconfig.
            let bootstrap = node.dir.join("bootstrap-kubeconfig");
            crate::token::write_private(
                &bootstrap,
                &crate::up::kubeconfig(&server, settings.ca_pem, settings.bootstrap_token)
                    .replace("    server:", "    tls-server-name: localhost\n    server:"),
            )?;
            let kubeconfig = node.dir.join("kubeconfig");
            // A data dir of an older shoal up held the admin's kubeconfig
            // there; the agent writes its own instead.
            if std::fs::read_to_string(&kubeconfig).is_ok_and(|k| k.contains("token:")) {
                std::fs::remove_file(&kubeconfig)?;
            }
            let mut argv: Vec<std::ffi::OsString> = vec![
                format!("--net=/run/netns/{}", node.netns).into(),
                "--".into(),
                exe.clone().into(),
                "agent".into(),
                "--kubeconfig".into(),
                kubeconfig.into(),
                "--bootstrap-kubeconfig".into(),
                bootstrap.into(),
                "--node-name".into(),
                node.name.clone().into(),
                "--data-dir".into(),
                node.dir.join("agent").into(),
            ];
            for (flag, value) in [
                ("--node-ip", node.address.to_string()),
                ("--bind-address", node.address.to_string()),
                ("--cluster-dns", "10.96.0.10".to_string()),
                ("--cluster-cidr", settings.cluster_cidr.to_string()),
                (
                    "--restart-backoff-initial",
                    format!("{}ms", settings.backoff_initial.as_millis()),
                ),
                (
                    "--restart-backoff-max",
                    format!("{}ms", settings.backoff_max.as_millis()),
                ),
                (
                    "--metrics-interval",
                    format!("{}ms", settings.metrics_interval.as_millis()),
                ),
            ] {
                argv.push(flag.into());
                argv.push(value.into());
            }
            argv.extend(settings.ingress.iter().map(Into::into));
            if !settings.dns_upstream.is_empty() {
                let upstreams: Vec<String> = settings
                    .dns_upstream
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                argv.push("--dns-upstream".into());
                argv.push(upstreams.join(",").into());
            }
            // No shared token: each agent lets in the apiserver by its
            // client certificate and whoever else the apiserver authorizes
            // (SubjectAccessReview), so a node cannot reach another's pods.
            for (flag, path) in [
                ("--tls-cert-file", cert.as_path()),
                ("--tls-private-key-file", key.as_path()),
            ] {
                argv.push(flag.into());
                argv.push(path.into());
            }
            node.argv = argv;
            node.stop_pods_on_exit = settings.stop_pods_on_exit;
            node.spawn()?;
        }
        Ok(Hosts {
            nodes,
            firewall,
            relay,
        })
    }

    /// Starts again every agent that exited (killed, crashed), as a
    /// service manager would on a real host.
    pub fn restart_exited(&mut self) {
        for node in &mut self.nodes {
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                println!(
                    "node agent of {} exited ({status}); starting it again",
                    node.name
                );
                if let Err(e) = node.spawn() {
                    eprintln!("{e:#}");
                    node.child = None;
                }
            }
        }
    }

    /// Stops the agents (SIGTERM, then SIGKILL after 30 s), the relay and
    /// the firewall accept; with `remove`, also the namespaces and the
    /// bridge.
    pub async fn stop(mut self, remove: bool) {
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) | Err(_) => break,
                        Ok(None) if tokio::time::Instant::now() > deadline => {
                            eprintln!("node agent of {}: did not stop within 30 s", node.name);
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
            }
        }
        self.relay.abort();
        if let Err(e) = self.firewall.remove() {
            eprintln!("removing the host firewall accept: {e}");
        }
        if remove {
            for (i, node) in self.nodes.iter().enumerate() {
                let _ = ip(&["link", "del", &format!("shn{}", i + 1)]);
                let _ =
                    shoal_overlay::netns::remove(&PathBuf::from("/run/netns").join(&node.netns));
            }
            let _ = ip(&["link", "del", BRIDGE]);
        }
    }
}
