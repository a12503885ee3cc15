//! The real `etcdctl` (API 3) against a 3-member `shoal store` cluster on
//! loopback. Expected outputs are what etcd prints for the same commands:
//! every scenario also runs against a real etcd cluster (`etcd_reference_*`),
//! so an expectation that is not etcd's own fails there.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::{eventually, TestCluster};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn b64(s: &str) -> String {
    // etcdctl prints bytes as standard base64.
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Starts `etcdctl watch ...` and returns a channel of its output lines.
fn watch(endpoints: &str, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(support::etcdctl_tls())
        .arg("watch")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcdctl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn lines(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("watch output in time")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_kv_txn_watch_compaction() {
    kv_txn_watch_compaction(TestCluster::start(3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_reference_kv_txn_watch_compaction() {
    kv_txn_watch_compaction(TestCluster::start_etcd(3).await).await;
}

async fn kv_txn_watch_compaction(c: TestCluster) {
    assert_eq!(c.etcdctl_ok(&["put", "foo", "bar"]), "OK\n");
    assert_eq!(c.etcdctl_ok(&["get", "foo"]), "foo\nbar\n");

    // -w json: the same fields etcd prints, bytes in base64.
    let j = json(&c.etcdctl_ok(&["get", "foo", "-w", "json"]));
    let rev1 = j["kvs"][0]["mod_revision"].as_i64().expect("mod_revision");
    assert_eq!(rev1, 2, "a new store is at revision 1, as etcd's is");
    assert_eq!(j["kvs"][0]["key"], b64("foo"));
    assert_eq!(j["kvs"][0]["value"], b64("bar"));
    assert_eq!(j["kvs"][0]["version"], 1);
    assert_eq!(j["kvs"][0]["create_revision"], rev1);
    assert_eq!(j["count"], 1);
    assert_eq!(j["header"]["revision"], rev1);
    assert!(j["header"]["cluster_id"].as_u64().is_some());

    assert_eq!(c.etcdctl_ok(&["put", "foo", "baz"]), "OK\n");
    assert_eq!(c.etcdctl_ok(&["put", "foo2", "bar2"]), "OK\n");
    assert_eq!(
        c.etcdctl_ok(&["get", "foo", "--prefix"]),
        "foo\nbaz\nfoo2\nbar2\n"
    );
    assert_eq!(
        c.etcdctl_ok(&["get", "foo", &format!("--rev={rev1}")]),
        "foo\nbar\n"
    );
    assert_eq!(
        c.etcdctl_ok(&["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo2\n\n"
    );
    let j = json(&c.etcdctl_ok(&["get", "foo", "-w", "json"]));
    assert_eq!(j["kvs"][0]["version"], 2);
    assert_eq!(j["kvs"][0]["create_revision"], rev1);

    // Sorting, limits, counts and ranges, as etcd applies them.
    assert_eq!(
        c.etcdctl_ok(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=MODIFY",
            "--order=DESCEND"
        ]),
        "foo2
bar2
foo
baz
"
    );
    assert_eq!(
        c.etcdctl_ok(&["get", "foo", "--prefix", "--limit=1", "--order=DESCEND"]),
        "foo2
bar2
"
    );
    let j = json(&c.etcdctl_ok(&["get", "foo", "--prefix", "--limit=1", "-w", "json"]));
    assert_eq!(j["count"], 2);
    assert_eq!(j["more"], true);
    assert_eq!(
        c.etcdctl_ok(&["get", "foo", "foo2"]),
        "foo
baz
"
    );
    assert_eq!(
        c.etcdctl_ok(&["get", "foo1", "--from-key"]),
        "foo2
bar2
"
    );
    assert_eq!(
        c.etcdctl_ok(&[
            "get",
            "foo",
            "--prefix",
            "--sort-by=VALUE",
            "--print-value-only"
        ]),
        "bar2
baz
"
    );
    assert_eq!(
        c.etcdctl_ok(&["put", "foo", "baz", "--prev-kv"]),
        "OK
foo
baz
"
    );
    assert_eq!(
        c.etcdctl_ok(&["put", "foo", "--ignore-value"]),
        "OK
"
    );
    let out = c.etcdctl(&["put", "nokey", "--ignore-value"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: key not found"));
    let j = json(&c.etcdctl_ok(&["get", "foo", "-w", "json"]));
    assert_eq!(j["kvs"][0]["version"], 4);
    assert_eq!(j["kvs"][0]["value"], b64("baz"));

    // A revision from the future is refused in etcd's words.
    let out = c.etcdctl(&["get", "foo", "--rev=1000000"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision is a future revision"));

    // txn, interactive, fed on stdin.
    let out = support::etcdctl(
        &c.endpoints(),
        &["txn", "-i"],
        Some("value(\"foo2\") = \"bar2\"\n\nput foo3 yes\n\nput foo3 no\n\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n"
    );
    assert_eq!(c.etcdctl_ok(&["get", "foo3"]), "foo3\nyes\n");
    let out = support::etcdctl(
        &c.endpoints(),
        &["txn"],
        Some("mod(\"foo3\") < \"1\"\n\nput foo3 again\n\nget foo3\n\n"),
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "FAILURE\n\nfoo3\nyes\n"
    );

    // watch: live events, then a replay from a past revision.
    let (mut live, rx) = watch(&c.endpoints(), &["w", "--prefix"]);
    // Let the watch be established before writing.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.etcdctl_ok(&["put", "w1", "a"]);
    c.etcdctl_ok(&["del", "w1"]);
    assert_eq!(lines(&rx, 6), ["PUT", "w1", "a", "DELETE", "w1", ""]);
    let _ = live.kill();
    let (mut replay, rx) = watch(&c.endpoints(), &["foo", &format!("--rev={rev1}")]);
    assert_eq!(lines(&rx, 6), ["PUT", "foo", "bar", "PUT", "foo", "baz"]);
    let _ = replay.kill();

    assert_eq!(c.etcdctl_ok(&["del", "foo"]), "1\n");
    assert_eq!(c.etcdctl_ok(&["get", "foo"]), "");
    assert_eq!(c.etcdctl_ok(&["del", "nothing"]), "0\n");

    // compaction: older revisions are gone, as etcd reports it.
    let rev = json(&c.etcdctl_ok(&["get", "foo2", "-w", "json"]))["header"]["revision"]
        .as_i64()
        .expect("revision");
    assert_eq!(
        c.etcdctl_ok(&["compaction", &rev.to_string()]),
        format!("compacted revision {rev}\n")
    );
    let out = c.etcdctl(&["get", "foo", &format!("--rev={rev1}")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("etcdserver: mvcc: required revision has been compacted"));
    let (mut compacted, _rx) = watch(&c.endpoints(), &["foo", &format!("--rev={rev1}")]);
    let status = tokio::task::spawn_blocking(move || compacted.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(
        !status.success(),
        "a watch from a compacted revision is cancelled"
    );
    assert_eq!(c.etcdctl_ok(&["get", "foo2"]), "foo2\nbar2\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_leases() {
    leases(TestCluster::start(3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_reference_leases() {
    leases(TestCluster::start_etcd(3).await).await;
}

async fn leases(c: TestCluster) {
    let out = c.etcdctl_ok(&["lease", "grant", "60"]);
    // "lease 694d7c0e1b3a6c05 granted with TTL(60s)"
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words[0], "lease");
    assert_eq!(&words[2..], ["granted", "with", "TTL(60s)"]);
    let id = words[1].to_string();
    assert_eq!(id.len(), 16);

    assert_eq!(c.etcdctl_ok(&["put", "--lease", &id, "k", "v"]), "OK\n");
    assert_eq!(
        c.etcdctl_ok(&["lease", "keep-alive", "--once", &id]),
        format!("lease {id} keepalived with TTL(60)\n")
    );
    let ttl = c.etcdctl_ok(&["lease", "timetolive", &id, "--keys"]);
    assert!(
        ttl.starts_with(&format!("lease {id} granted with TTL(60s), remaining(")),
        "{ttl}"
    );
    assert!(ttl.ends_with("s), attached keys([k])\n"), "{ttl}");
    assert!(c.etcdctl_ok(&["lease", "list"]).contains(&id));
    assert_eq!(
        c.etcdctl_ok(&["lease", "revoke", &id]),
        format!("lease {id} revoked\n")
    );
    assert_eq!(c.etcdctl_ok(&["get", "k"]), "");
    assert_eq!(
        c.etcdctl_ok(&["lease", "timetolive", &id]),
        format!("lease {id} already expired\n")
    );

    // A lease that is not kept alive expires everywhere, with its keys.
    let out = c.etcdctl_ok(&["lease", "grant", "2"]);
    let short = out.split_whitespace().nth(1).expect("id").to_string();
    c.etcdctl_ok(&["put", "--lease", &short, "ephemeral", "x"]);
    assert_eq!(c.etcdctl_ok(&["get", "ephemeral"]), "ephemeral\nx\n");
    eventually(Duration::from_secs(15), "lease expiry", || async {
        c.etcdctl_ok(&["get", "ephemeral"]).is_empty().then_some(())
    })
    .await;
    for m in &c.members {
        let out = support::etcdctl(
            &m.client_url(),
            &["get", "ephemeral", "--consistency=s"],
            None,
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{}", m.name);
    }
    let out = c.etcdctl(&["put", "--lease", "1234", "k", "v"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcdserver: requested lease not found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn etcdctl_members_and_status() {
    members_and_status(TestCluster::start(3).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_reference_members_and_status() {
    members_and_status(TestCluster::start_etcd(3).await).await;
}

async fn members_and_status(mut c: TestCluster) {
    let list = eventually(Duration::from_secs(10), "members started", || async {
        let l = c.etcdctl_ok(&["member", "list"]);
        (!l.contains("unstarted")).then_some(l)
    })
    .await;
    let rows: Vec<Vec<String>> = list
        .lines()
        .map(|l| l.split(", ").map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 3);
    for m in &c.members {
        let row = rows
            .iter()
            .find(|r| r[2] == m.name)
            .unwrap_or_else(|| panic!("{} in {list}", m.name));
        assert!(
            u64::from_str_radix(&row[0], 16).is_ok(),
            "hex member id: {}",
            row[0]
        );
        assert_eq!(row[1], "started");
        assert_eq!(row[3], m.peer_url());
        assert_eq!(row[4], m.client_url());
        assert_eq!(row[5], "false");
    }

    // endpoint status: one row per member, exactly one leader.
    let status = c.etcdctl_ok(&["endpoint", "status"]);
    let leaders = status
        .lines()
        .filter(|l| l.split(", ").nth(4) == Some("true"))
        .count();
    assert_eq!(status.lines().count(), 3, "{status}");
    assert_eq!(leaders, 1, "{status}");
    // The whole cluster from one http:// endpoint, as a table.
    let first = c.members[0].client_url();
    let out = support::etcdctl(
        &first,
        &["endpoint", "status", "--cluster", "-w", "table"],
        None,
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for m in &c.members {
        assert!(
            table.contains(&format!("| {} |", m.client_url())),
            "{table}"
        );
    }
    assert_eq!(table.matches("|      true |").count(), 1, "{table}");
    // etcdctl prints health to stderr.
    let out = c.etcdctl(&["endpoint", "health"]);
    assert!(out.status.success());
    let health = String::from_utf8_lossy(&out.stderr);
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");

    // member add, start it as `existing`, it catches up; then remove it.
    c.etcdctl_ok(&["put", "before-add", "1"]);
    let i = c.add_member("s4");
    let peer = c.members[i].peer_url();
    // etcd refuses to add a voter until its members have been connected for
    // a few seconds ("unhealthy cluster"); retry as an operator would.
    let peer_flag = format!("--peer-urls={peer}");
    let out = eventually(Duration::from_secs(15), "member add", || async {
        let out = c.etcdctl(&["member", "add", "s4", &peer_flag]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert!(out.starts_with("Member "), "{out}");
    assert!(out.contains("ETCD_NAME=\"s4\""), "{out}");
    assert!(
        out.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{out}"
    );
    let new_id = out.split_whitespace().nth(1).expect("id").to_string();
    c.spawn(i, "existing");
    let url = c.members[i].client_url();
    eventually(Duration::from_secs(20), "new member caught up", || async {
        let out = support::etcdctl(&url, &["get", "before-add", "--consistency=s"], None);
        (String::from_utf8_lossy(&out.stdout) == "before-add\n1\n").then_some(())
    })
    .await;
    eventually(Duration::from_secs(10), "s4 started", || async {
        let l = c.etcdctl_ok(&["member", "list"]);
        l.lines()
            .any(|r| r.starts_with(&new_id) && r.contains(", started, s4, "))
            .then_some(())
    })
    .await;
    let err = eventually(Duration::from_secs(15), "duplicate member add", || async {
        let out = c.etcdctl(&["member", "add", "dup", &peer_flag]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!err.contains("unhealthy cluster")).then_some(err)
    })
    .await;
    assert!(err.contains("Peer URLs already exists"), "{err}");

    // Asked of the other members: an etcd member stops as soon as it is
    // removed, which may cut off its own answer.
    let others: Vec<String> = (0..i).map(|j| c.members[j].client_url()).collect();
    let out = support::etcdctl(&others.join(","), &["member", "remove", &new_id], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    // etcdctl pads ids to 16 columns ("Member %16x removed from cluster %16x").
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(
        words[..4],
        ["Member", new_id.as_str(), "removed", "from"],
        "{out}"
    );
    // A removed member takes no further part; stop it, as etcd stops.
    c.kill(i);
    eventually(
        Duration::from_secs(10),
        "member list without s4",
        || async { (c.etcdctl_ok(&["member", "list"]).lines().count() == 3).then_some(()) },
    )
    .await;
    let out = c.etcdctl(&["member", "remove", "1234"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("member not found"));
    assert_eq!(c.etcdctl_ok(&["put", "after-remove", "1"]), "OK\n");
}

/// A key as `-w json` shows it: key, value, create_revision, mod_revision,
/// version.
type Stored = (String, String, i64, i64, i64);

/// `etcdctl get "" --prefix -w json`: the revision and every key.
fn everything(c: &TestCluster) -> (i64, Vec<Stored>) {
    let out = json(&c.etcdctl_ok(&["get", "", "--prefix", "-w", "json"]));
    let field = |kv: &serde_json::Value, f: &str| kv[f].as_i64().unwrap_or(0);
    let kvs = out["kvs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|kv| {
            let text = |f: &str| {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(kv[f].as_str().unwrap_or(""))
                    .unwrap();
                String::from_utf8(raw).unwrap()
            };
            (
                text("key"),
                text("value"),
                field(kv, "create_revision"),
                field(kv, "mod_revision"),
                field(kv, "version"),
            )
        })
        .collect();
    (out["header"]["revision"].as_i64().unwrap(), kvs)
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_save_then_restore_into_a_new_cluster() {
    let c = TestCluster::start(3).await;
    let mut a_was_2 = 0;
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2"), ("c", "1"), ("a", "3")] {
        let put = json(&c.etcdctl_ok(&["put", k, v, "-w", "json"]));
        if (k, v) == ("a", "2") {
            a_was_2 = put["header"]["revision"].as_i64().unwrap();
        }
    }
    c.etcdctl_ok(&["del", "c"]);
    let (revision, kvs) = everything(&c);
    let file = c.dir.path().join("backup.db");
    let file_arg = file.to_str().unwrap();
    let first = c.members[0].client_url();
    let out = support::etcdctl(&first, &["snapshot", "save", file_arg], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(saved.contains("Snapshot saved at"), "{saved}");

    // Every member of a new cluster restored from the same file.
    let restored = TestCluster::start_prepared(3, |data_dir| {
        let out = Command::new(support::SHOAL)
            .args(["store", "restore", file_arg, "--data-dir"])
            .arg(data_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    })
    .await;
    assert_eq!(everything(&restored), (revision, kvs));
    // History is back too: "a" as it was two writes ago.
    let at = format!("--rev={a_was_2}");
    let old = restored.etcdctl_ok(&["get", "a", &at, "--print-value-only"]);
    assert_eq!(old, "2\n");
    restored.assert_same_data().await;
    // And the new cluster goes on from there.
    restored.etcdctl_ok(&["put", "after", "1"]);
    assert_eq!(everything(&restored).0, revision + 1);

    // A damaged file is refused, and no data dir is left behind.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let damaged = c.dir.path().join("damaged.db");
    std::fs::write(&damaged, &bytes).unwrap();
    let target = c.dir.path().join("never");
    let out = Command::new(support::SHOAL)
        .args(["store", "restore"])
        .arg(&damaged)
        .arg("--data-dir")
        .arg(&target)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is corrupted: its SHA-256 does not match"),
        "{err}"
    );
    assert!(!target.exists());
}
