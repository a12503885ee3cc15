//! A store leader's death costs clients a pause, not errors: the real
//! etcdctl writes one key after another through all three members while
//! the leader is SIGKILLed, against shoal and against etcd 3.4 in the same
//! test; and a client creating ConfigMaps through an apiserver sees no
//! error while the store's leader is killed under it.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::proto::etcdserverpb::RangeRequest;
use support::kube::{kubectl_at, Apiserver};
use support::{eventually, kv, TestCluster};

/// What a stream of puts saw around a leader kill.
#[derive(Debug)]
struct PutStream {
    sent: usize,
    failed: Vec<String>,
    /// The longest time between two successful puts.
    longest_gap: Duration,
}

/// One `etcdctl put` after another (as a user's script would), with every
/// member as an endpoint and etcdctl's own timeouts.
fn put_loop(
    endpoints: String,
    stop: Arc<AtomicBool>,
) -> (Vec<(String, Instant, bool)>, Vec<String>) {
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("stream/{i:05}");
        i += 1;
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(support::etcdctl_tls())
            .args(["put", &key, "v"])
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl is installed (apt-get install etcd-client)");
        let ok = out.status.success();
        if !ok {
            errors.push(format!(
                "{key}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        outcomes.push((key, Instant::now(), ok));
    }
    (outcomes, errors)
}

/// Every `stream/` key member `url` has (a serializable read: its own copy).
async fn keys_on(url: &str) -> Option<BTreeSet<String>> {
    let mut c = kv(url).await.ok()?;
    let resp = c
        .range(RangeRequest {
            key: b"stream/".to_vec(),
            range_end: b"stream0".to_vec(),
            keys_only: true,
            serializable: true,
            ..Default::default()
        })
        .await
        .ok()?
        .into_inner();
    Some(
        resp.kvs
            .into_iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect(),
    )
}

/// Puts for 2 s, kills the leader, puts for 6 s more; then restarts the
/// killed member and checks that every acknowledged put is on every member.
async fn put_stream_across_a_leader_kill(mut c: TestCluster) -> PutStream {
    let endpoints = c.endpoints();
    let stop = Arc::new(AtomicBool::new(false));
    let puts = std::thread::spawn({
        let stop = stop.clone();
        move || put_loop(endpoints, stop)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c.leader().await.expect("a leader");
    c.kill(leader);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let (outcomes, failed) = puts.join().unwrap();

    let mut longest_gap = Duration::ZERO;
    let mut last_ok: Option<Instant> = None;
    for (_, at, ok) in &outcomes {
        if *ok {
            if let Some(last) = last_ok {
                longest_gap = longest_gap.max(*at - last);
            }
            last_ok = Some(*at);
        }
    }
    let acked: Vec<String> = outcomes
        .iter()
        .filter(|(_, _, ok)| *ok)
        .map(|(k, _, _)| k.clone())
        .collect();

    c.spawn(leader, "new");
    for m in &c.members {
        let url = m.client_url();
        let acked = &acked;
        eventually(
            Duration::from_secs(30),
            &format!("{} ({:?}) to hold every acknowledged put", m.name, c.kind),
            || async {
                let stored = keys_on(&url).await?;
                acked.iter().all(|k| stored.contains(k)).then_some(())
            },
        )
        .await;
    }
    PutStream {
        sent: outcomes.len(),
        failed,
        longest_gap,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_costs_a_pause_not_errors_as_with_etcd() {
    let shoal = put_stream_across_a_leader_kill(TestCluster::start(3).await).await;
    let etcd = put_stream_across_a_leader_kill(TestCluster::start_etcd(3).await).await;
    eprintln!("shoal: {shoal:?}\netcd:  {etcd:?}");
    assert!(shoal.sent > 50 && etcd.sent > 50, "too few puts to compare");
    assert!(
        shoal.failed.len() <= etcd.failed.len() + 2,
        "shoal failed {} of {} puts, etcd {} of {}: {:?}",
        shoal.failed.len(),
        shoal.sent,
        etcd.failed.len(),
        etcd.sent,
        shoal.failed
    );
    assert!(
        shoal.longest_gap <= etcd.longest_gap + Duration::from_millis(500),
        "longest pause between puts: shoal {:?}, etcd {:?}",
        shoal.longest_gap,
        etcd.longest_gap
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_configmaps_through_a_store_leader_kill_sees_no_error() {
    let mut store = TestCluster::start(3).await;
    let dir = tempfile::tempdir().unwrap();
    let api = Apiserver::start(&store.endpoints(), dir.path(), None);
    let kubeconfig = api.kubeconfig.clone();
    assert!(support::kube::eventually(Duration::from_secs(20), || {
        kubectl_at(&kubeconfig, &["get", "namespace", "default"])
            .status
            .success()
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let created = std::thread::spawn({
        let (stop, errors, kubeconfig) = (stop.clone(), errors.clone(), kubeconfig.clone());
        move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("cm-{i:04}");
                i += 1;
                let out = kubectl_at(
                    &kubeconfig,
                    &["create", "configmap", &name, "--from-literal=k=v"],
                );
                if !out.status.success() {
                    errors.lock().unwrap().push(format!(
                        "{name}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
            }
            i
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = store.leader().await.expect("a leader");
    store.kill(leader);
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = created.join().unwrap();
    let errors = errors.lock().unwrap().clone();
    assert!(sent > 10, "only {sent} creates were sent");
    assert!(
        errors.is_empty(),
        "{} of {sent} creates failed: {errors:?}\n{}",
        errors.len(),
        api.log()
    );
    let listed = kubectl_at(&kubeconfig, &["get", "configmaps", "-o", "name"]);
    let names = String::from_utf8_lossy(&listed.stdout);
    let count = names
        .lines()
        .filter(|l| l.starts_with("configmap/cm-"))
        .count();
    assert_eq!(count, sent, "{names}");
}

/// The status of every running member: (raft term, leader id) as each
/// sees them.
async fn terms(c: &TestCluster) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    for i in c.running() {
        let mut m = support::maintenance(&c.members[i].client_url())
            .await
            .unwrap();
        let s = m
            .status(shoal_store::proto::etcdserverpb::StatusRequest {})
            .await
            .unwrap()
            .into_inner();
        seen.push((s.raft_term, s.leader));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_member_back_from_a_pause_does_not_depose_the_leader() {
    let c = TestCluster::start(3).await;
    let leader = c.leader().await.expect("a leader");
    let before = terms(&c).await;
    let follower = (leader + 1) % 3;
    // Cut off for three election timeouts: it stands for election as soon
    // as it runs again.
    c.pause(follower, true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.pause(follower, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.leader().await, Some(leader), "the leader changed");
    let after = terms(&c).await;
    assert_eq!(
        before, after,
        "terms and leaders before and after the pause"
    );
}
