//! Concurrent clients do put / get / compare-and-swap on a few keys while
//! members are killed and restarted; the recorded history must be
//! linearizable (checked by a Porcupine-style checker).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/linearizability.rs"]
mod linearizability;
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use linearizability::{check, CheckResult, Input, Operation, Output};
use rand::{Rng, SeedableRng};
use shoal_store::proto::etcdserverpb::kv_client::KvClient;
use shoal_store::proto::etcdserverpb::{
    compare, request_op, Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use support::{channel, TestCluster};
use tonic::transport::Channel;

const KEYS: [&str; 3] = ["k0", "k1", "k2"];
const OP_TIMEOUT: Duration = Duration::from_secs(2);

async fn run_op(c: &mut KvClient<Channel>, key: &str, input: &Input) -> Option<Output> {
    let k = key.as_bytes().to_vec();
    let fut = async {
        match input {
            Input::Get => {
                let r = c
                    .range(RangeRequest {
                        key: k,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                let v = r
                    .kvs
                    .first()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
                Some(Output::Get(v))
            }
            Input::Put(v) => {
                c.put(PutRequest {
                    key: k,
                    value: v.clone().into_bytes(),
                    ..Default::default()
                })
                .await
                .ok()?;
                Some(Output::Put)
            }
            Input::Cas { expected, new } => {
                let cmp = match expected {
                    Some(e) => Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Value as i32,
                        key: k.clone(),
                        target_union: Some(compare::TargetUnion::Value(e.clone().into_bytes())),
                        range_end: vec![],
                    },
                    // Absent: never created (in its current generation).
                    None => Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Create as i32,
                        key: k.clone(),
                        target_union: Some(compare::TargetUnion::CreateRevision(0)),
                        range_end: vec![],
                    },
                };
                let r = c
                    .txn(TxnRequest {
                        compare: vec![cmp],
                        success: vec![RequestOp {
                            request: Some(request_op::Request::RequestPut(PutRequest {
                                key: k,
                                value: new.clone().into_bytes(),
                                ..Default::default()
                            })),
                        }],
                        failure: vec![],
                    })
                    .await
                    .ok()?
                    .into_inner();
                Some(Output::Cas(r.succeeded))
            }
        }
    };
    tokio::time::timeout(OP_TIMEOUT, fut).await.ok().flatten()
}

async fn client(
    id: usize,
    endpoints: Vec<String>,
    start: Instant,
    until: Instant,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id as u64);
    let mut clients: Vec<Option<KvClient<Channel>>> = vec![None; endpoints.len()];
    let mut last_seen: Vec<Option<String>> = vec![None; KEYS.len()];
    let mut n = 0;
    while Instant::now() < until {
        let e = rng.gen_range(0..endpoints.len());
        if clients[e].is_none() {
            clients[e] = channel(&endpoints[e]).await.ok().map(KvClient::new);
        }
        let Some(c) = clients[e].as_mut() else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let k = rng.gen_range(0..KEYS.len());
        n += 1;
        let value = format!("c{id}-{n}");
        let input = match rng.gen_range(0..10) {
            0..=3 => Input::Get,
            4..=6 => Input::Put(value),
            _ => Input::Cas {
                expected: last_seen[k].clone(),
                new: value,
            },
        };
        let call = start.elapsed().as_nanos() as u64;
        let output = run_op(c, KEYS[k], &input).await;
        let ret = start.elapsed().as_nanos() as u64;
        if let Some(Output::Get(v)) = &output {
            last_seen[k] = v.clone();
        }
        let op = match output {
            Some(output) => Operation {
                client: id,
                key: KEYS[k].to_string(),
                input,
                output,
                call,
                ret,
            },
            // A failed read observed nothing; a failed write may or may not
            // have happened.
            None if matches!(input, Input::Get) => continue,
            None => Operation {
                client: id,
                key: KEYS[k].to_string(),
                input,
                output: Output::Unknown,
                call,
                ret: u64::MAX,
            },
        };
        history.lock().expect("lock").push(op);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn history_under_member_crashes_is_linearizable() {
    let mut c = TestCluster::start(3).await;
    let endpoints: Vec<String> = c.members.iter().map(|m| m.client_url()).collect();
    let start = Instant::now();
    let until = start + Duration::from_secs(12);
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..6)
        .map(|i| tokio::spawn(client(i, endpoints.clone(), start, until, history.clone())))
        .collect();

    // Kill and restart one member at a time, the leader included.
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut round = 0;
    while Instant::now() + Duration::from_secs(3) < until {
        let victim = if round % 2 == 0 {
            c.leader().await.unwrap_or(0)
        } else {
            rng.gen_range(0..3)
        };
        round += 1;
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.kill(victim);
        tokio::time::sleep(Duration::from_millis(1200)).await;
        c.spawn(victim, "new");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    for cl in clients {
        cl.await.expect("client");
    }
    let history = history.lock().expect("lock").clone();
    let completed = history
        .iter()
        .filter(|o| !matches!(o.output, Output::Unknown))
        .count();
    assert!(completed > 100, "too few operations completed: {completed}");
    // Every member, once caught up, holds exactly the same data.
    c.assert_same_data().await;
    match check(&history, Duration::from_secs(60)) {
        CheckResult::Ok => {}
        CheckResult::Illegal { key, detail } => {
            panic!("history of {key} is not linearizable: {detail}")
        }
        CheckResult::Timeout => panic!("the checker timed out"),
    }
}
