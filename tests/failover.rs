//! Crashes: the leader killed while clients write, the whole cluster killed
//! and restarted, a member wiped and re-added. No acknowledged write may be
//! lost.

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_store::proto::etcdserverpb::{PutRequest, RangeRequest};
use support::{eventually, kv, TestCluster};

/// Writes unique keys through random members until told to stop; returns
/// the keys whose put was acknowledged.
async fn writer(
    endpoints: Vec<String>,
    client: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let url = &endpoints[(client + i as usize) % endpoints.len()];
        let key = format!("acked/{client}/{i}");
        i += 1;
        let Ok(mut c) = kv(url).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let put = c.put(PutRequest {
            key: key.clone().into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        });
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), put).await {
            acked.lock().expect("lock").push(key);
        }
    }
}

/// Every key under `acked/` as member `url` sees it.
async fn stored_keys(url: &str, serializable: bool) -> Option<BTreeSet<String>> {
    let mut c = kv(url).await.ok()?;
    let resp = c
        .range(RangeRequest {
            key: b"acked/".to_vec(),
            range_end: b"acked0".to_vec(),
            keys_only: true,
            serializable,
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

fn missing(acked: &[String], stored: &BTreeSet<String>) -> Vec<String> {
    acked
        .iter()
        .filter(|k| !stored.contains(*k))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_crash_loses_no_acknowledged_write() {
    let mut c = TestCluster::start(3).await;
    let endpoints: Vec<String> = c.members.iter().map(|m| m.client_url()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..4)
        .map(|i| tokio::spawn(writer(endpoints.clone(), i, stop.clone(), acked.clone())))
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let old = c.leader().await.expect("a leader");
    let before = acked.lock().expect("lock").len();
    assert!(before > 0, "writes were acknowledged before the crash");
    c.kill(old);
    let killed_at = Instant::now();

    // A new leader serves within a few election timeouts (1 s each).
    eventually(
        Duration::from_secs(10),
        "writes after the crash",
        || async { (acked.lock().expect("lock").len() > before + 10).then_some(()) },
    )
    .await;
    let failover = killed_at.elapsed();
    assert!(
        failover < Duration::from_secs(8),
        "failover took {failover:?}"
    );
    let new = c.leader().await.expect("a new leader");
    assert_ne!(new, old);

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();

    c.spawn(old, "new");
    c.wait_leader(Duration::from_secs(20)).await;
    let stored = stored_keys(&c.members[new].client_url(), false)
        .await
        .expect("read");
    assert!(
        missing(&acked, &stored).is_empty(),
        "lost: {:?}",
        missing(&acked, &stored)
    );
    // The restarted member catches up too.
    let url = c.members[old].client_url();
    eventually(Duration::from_secs(20), "old leader caught up", || async {
        let s = stored_keys(&url, true).await?;
        missing(&acked, &s).is_empty().then_some(())
    })
    .await;

    // Kill all three and start them again: every write is back.
    for i in 0..3 {
        c.kill(i);
    }
    for i in 0..3 {
        c.spawn(i, "new");
    }
    c.wait_leader(Duration::from_secs(30)).await;
    for m in &c.members {
        let url = m.client_url();
        let s = eventually(
            Duration::from_secs(20),
            "read after full restart",
            || async { stored_keys(&url, false).await },
        )
        .await;
        let lost = missing(&acked, &s);
        assert!(
            lost.is_empty(),
            "{} lost {} of {} writes after restart: {:?}",
            m.name,
            lost.len(),
            acked.len(),
            &lost[..lost.len().min(10)]
        );
    }
    c.assert_same_data().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wiped_member_readded_catches_up_by_snapshot() {
    // Small snapshots, so the log the new member would need is purged.
    let mut c = TestCluster::start_with(3, &["--snapshot-count", "50"]).await;
    let url = c.members[0].client_url();
    let mut client = kv(&url).await.expect("client");
    let mut keys = Vec::new();
    for i in 0..300 {
        let key = format!("acked/{i}");
        client
            .put(PutRequest {
                key: key.clone().into_bytes(),
                value: vec![b'x'; 100],
                ..Default::default()
            })
            .await
            .expect("put");
        keys.push(key);
    }
    // Replace the member that does not lead.
    let leader = c.leader().await.expect("leader");
    let victim = (0..3).find(|i| *i != leader).expect("a follower");
    let id = format!("{:x}", support_member_id(&c, victim).await);
    c.wipe(victim);
    c.etcdctl_ok(&["member", "remove", &id]);
    let peer = c.members[victim].peer_url();
    c.etcdctl_ok(&[
        "member",
        "add",
        &c.members[victim].name.clone(),
        &format!("--peer-urls={peer}"),
    ]);
    c.spawn(victim, "existing");
    let vurl = c.members[victim].client_url();
    let s = eventually(
        Duration::from_secs(30),
        "re-added member caught up",
        || async {
            let s = stored_keys(&vurl, true).await?;
            missing(&keys, &s).is_empty().then_some(s)
        },
    )
    .await;
    assert_eq!(s.len(), keys.len());
    // It takes part again: writes still commit with another member down.
    let other = (0..3)
        .find(|i| *i != leader && *i != victim)
        .expect("third member");
    c.kill(other);
    c.wait_leader(Duration::from_secs(20)).await;
    let mut client = kv(&c.members[leader].client_url()).await.expect("client");
    client
        .put(PutRequest {
            key: b"acked/after".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("a write commits with the re-added member's vote");
    // The member rebuilt from a snapshot holds the very same history.
    c.assert_same_data().await;
}

async fn support_member_id(c: &TestCluster, i: usize) -> u64 {
    let mut m = support::maintenance(&c.members[i].client_url())
        .await
        .expect("client");
    m.status(shoal_store::proto::etcdserverpb::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .header
        .expect("header")
        .member_id
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_a_member_promptly_even_with_open_streams() {
    let mut c = TestCluster::start(3).await;
    let url = c.members[0].client_url();
    let mut client = kv(&url).await.expect("client");
    client
        .put(PutRequest {
            key: b"acked/kept".to_vec(),
            value: b"1".to_vec(),
            ..Default::default()
        })
        .await
        .expect("put");
    // A watch held open on the member being stopped.
    let mut watch = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .args(support::etcdctl_tls())
        .args(["watch", "acked/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let took = c.terminate(0).expect("the member exits on SIGTERM");
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    let _ = watch.kill();
    let _ = watch.wait();
    c.spawn(0, "new");
    let url = c.members[0].client_url();
    eventually(
        Duration::from_secs(20),
        "the data after a restart",
        || async {
            let s = stored_keys(&url, false).await?;
            s.contains("acked/kept").then_some(())
        },
    )
    .await;
}
