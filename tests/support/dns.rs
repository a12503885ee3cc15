//! The DNS suites' helpers: an NSD as the upstream for outside names, and
//! `dig` with readers for its output.

use std::net::IpAddr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use super::kube::eventually;
use super::{daemon, in_ci, kill_group};

/// The upstream for names outside the cluster: NSD serving `example.test`.
pub struct Nsd {
    child: Child,
    pub ip: IpAddr,
    pub port: u16,
}

const EXAMPLE_ZONE: &str = "$ORIGIN example.test.
$TTL 300
@    IN SOA ns.example.test. admin.example.test. 1 3600 600 86400 60
@    IN NS  ns.example.test.
ns   IN A   127.0.0.1
www  IN A   192.0.2.10
www  IN A   192.0.2.11
database IN A 192.0.2.20
";

impl Nsd {
    /// NSD on `ip:port`; `None` (outside CI) when it is not installed.
    pub fn start(dir: &Path, ip: IpAddr, port: u16) -> Option<Nsd> {
        let nsd = ["/usr/sbin/nsd", "/usr/bin/nsd"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(nsd) = nsd else {
            assert!(
                !in_ci(),
                "nsd is missing (scripts/install-deps.sh --tests installs it)"
            );
            eprintln!("skipping the forwarding checks: no nsd here");
            return None;
        };
        let dir = dir.join("nsd");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("example.test.zone"), EXAMPLE_ZONE).unwrap();
        let conf = format!(
            "server:
  ip-address: {ip}
  port: {port}
  username: \"\"
  chroot: \"\"
  zonesdir: \"{d}\"
  database: \"\"
  pidfile: \"{d}/nsd.pid\"
  xfrdfile: \"{d}/xfrd.state\"
  zonelistfile: \"{d}/zone.list\"
  logfile: \"{d}/nsd.log\"
  server-count: 1
remote-control:
  control-enable: no
zone:
  name: example.test
  zonefile: example.test.zone
",
            d = dir.display()
        );
        std::fs::write(dir.join("nsd.conf"), conf).unwrap();
        let child = daemon(nsd)
            .args(["-d", "-c"])
            .arg(dir.join("nsd.conf"))
            .spawn()
            .expect("start nsd");
        let nsd = Nsd { child, ip, port };
        let up = eventually(Duration::from_secs(10), || {
            dig(
                &nsd.ip.to_string(),
                nsd.port,
                &["+short", "www.example.test"],
            )
            .contains("192.0.2.10")
        });
        assert!(
            up,
            "nsd did not answer:\n{}",
            std::fs::read_to_string(dir.join("nsd.log")).unwrap_or_default()
        );
        Some(nsd)
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Nsd {
    /// `ip:port`, for `--upstream`.
    pub fn addr(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }
}

/// `dig @server -p port args`.
pub fn dig(server: &str, port: u16, args: &[&str]) -> String {
    let out = Command::new("dig")
        .args([
            &format!("@{server}"),
            "-p",
            &port.to_string(),
            "+time=3",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("run dig (Debian's dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The header's status (`NOERROR`, `NXDOMAIN`, ...) of a full dig answer.
pub fn status(answer: &str) -> &str {
    answer
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("")
}

/// The count of a section (`ANSWER`, `AUTHORITY`) in dig's header.
pub fn count(answer: &str, section: &str) -> usize {
    answer
        .split(&format!("{section}: "))
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

pub fn flags(answer: &str) -> String {
    answer
        .split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or("")
        .to_string()
}

/// dig's output with each run of blanks made one space, to match records
/// as `name. 5 IN A 10.96.0.20`.
pub fn squeeze(answer: &str) -> String {
    answer
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}
