//! Letting the cluster's traffic through the host's own firewall.
//!
//! A host that runs Docker sets the iptables `FORWARD` policy to DROP and
//! `net.bridge.bridge-nf-call-iptables = 1`, so every packet bridged or
//! routed through the node bridge and the tunnel device is dropped: two
//! pods on one node cannot even ping each other. An accept in a table of
//! our own would not help (a drop in any table wins), so, as flannel and
//! kube-router do, the agent adds its accepts where the drop is: the
//! iptables `filter` table's `FORWARD` chain, through a chain of its own.
//!
//! ```text
//!   FORWARD           -j SHOAL-FORWARD        (inserted first)
//!   SHOAL-FORWARD     -i shoal0 -j ACCEPT
//!                     -o shoal0 -j ACCEPT     (and the same for shoal-tun)
//! ```
//!
//! Each iptables backend that is in use (`iptables-nft`, `iptables-legacy`:
//! a FORWARD chain with rules or a policy other than ACCEPT) gets it; on a
//! host where neither filters forwarded traffic nothing is added.
//! [`HostFirewall::install`] is idempotent (the chain is refilled, the jump
//! added once) and [`HostFirewall::remove`] takes everything away again.
//! Only interfaces the agent owns are accepted: the host's other forwarding
//! stays as its firewall says.

use std::process::Command;

#[derive(Debug, thiserror::Error)]
#[error("{tool} {args}: {message}")]
pub struct Error {
    tool: String,
    args: String,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The iptables front-ends to look at: both backends where both are
/// installed (Docker may use either), else plain `iptables`.
fn tools() -> Vec<&'static str> {
    let both: Vec<&'static str> = ["iptables-nft", "iptables-legacy"]
        .into_iter()
        .filter(|t| on_path(t))
        .collect();
    if !both.is_empty() {
        return both;
    }
    if on_path("iptables") {
        vec!["iptables"]
    } else {
        vec![]
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// The accepts of one set of interfaces, under one chain name.
#[derive(Debug, Clone)]
pub struct HostFirewall {
    chain: String,
    interfaces: Vec<String>,
}

impl HostFirewall {
    /// `chain` is ours alone (e.g. `SHOAL-FORWARD`); `interfaces` are the
    /// devices whose forwarded traffic is accepted both ways.
    pub fn new(chain: &str, interfaces: &[&str]) -> Self {
        Self {
            chain: chain.to_string(),
            interfaces: interfaces.iter().map(|i| i.to_string()).collect(),
        }
    }

    pub fn chain(&self) -> &str {
        &self.chain
    }

    /// Adds (or refreshes) the accepts in every iptables backend that
    /// filters forwarded traffic; returns the backends changed.
    pub fn install(&self) -> Result<Vec<&'static str>> {
        let mut changed = Vec::new();
        for tool in tools() {
            if !filters_forwarding(tool)? {
                continue;
            }
            if run(tool, &["-t", "filter", "-S", &self.chain]).is_err() {
                run(tool, &["-t", "filter", "-N", &self.chain])?;
            }
            run(tool, &["-t", "filter", "-F", &self.chain])?;
            for interface in &self.interfaces {
                for direction in ["-i", "-o"] {
                    run(
                        tool,
                        &[
                            "-t",
                            "filter",
                            "-A",
                            &self.chain,
                            direction,
                            interface,
                            "-j",
                            "ACCEPT",
                        ],
                    )?;
                }
            }
            let jump = ["-t", "filter", "-C", "FORWARD", "-j", &self.chain];
            if run(tool, &jump).is_err() {
                run(
                    tool,
                    &["-t", "filter", "-I", "FORWARD", "1", "-j", &self.chain],
                )?;
            }
            tracing::info!(tool, chain = %self.chain, interfaces = ?self.interfaces, "accepting the cluster's forwarded traffic in the host firewall");
            changed.push(tool);
        }
        Ok(changed)
    }

    /// Removes the jump and the chain from every backend that has them.
    pub fn remove(&self) -> Result<()> {
        for tool in tools() {
            if run(tool, &["-t", "filter", "-S", &self.chain]).is_err() {
                continue;
            }
            while run(tool, &["-t", "filter", "-D", "FORWARD", "-j", &self.chain]).is_ok() {}
            run(tool, &["-t", "filter", "-F", &self.chain])?;
            run(tool, &["-t", "filter", "-X", &self.chain])?;
            tracing::info!(tool, chain = %self.chain, "removed the host firewall accepts");
        }
        Ok(())
    }

    /// Whether `tool`'s FORWARD chain jumps to our chain (for tests and
    /// `shoal overlay status`).
    pub fn installed_in(&self, tool: &str) -> bool {
        run(tool, &["-t", "filter", "-C", "FORWARD", "-j", &self.chain]).is_ok()
    }

    /// The backends that hold our chain now.
    pub fn installed(&self) -> Vec<&'static str> {
        tools()
            .into_iter()
            .filter(|t| self.installed_in(t))
            .collect()
    }
}

/// A FORWARD chain with rules, or a policy other than ACCEPT, filters
/// forwarded traffic; an empty accepting one (a backend nobody uses) does
/// not, and is left alone.
fn filters_forwarding(tool: &str) -> Result<bool> {
    let rules = match run(tool, &["-t", "filter", "-S", "FORWARD"]) {
        Ok(rules) => rules,
        // No filter table in this backend (module absent): nothing filters.
        Err(_) => return Ok(false),
    };
    Ok(rules
        .lines()
        .any(|l| l.starts_with("-A ") || (l.starts_with("-P ") && !l.ends_with(" ACCEPT"))))
}

/// Runs `tool -w ARGS` (waiting for the xtables lock), returning stdout.
fn run(tool: &str, args: &[&str]) -> Result<String> {
    let error = |message: String| Error {
        tool: tool.to_string(),
        args: args.join(" "),
        message,
    };
    let output = Command::new(tool)
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| error(e.to_string()))?;
    if !output.status.success() {
        return Err(error(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
