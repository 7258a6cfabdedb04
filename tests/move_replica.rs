//! Real `pactdb node` processes on loopback: `pactdb admin move-replica`
//! moves group 0 off its primary onto a node that held nothing while
//! writers run; no writer sees an error beyond retries, every
//! acknowledged write is still there, and the members end with equal
//! digests, the old node out of the view.

mod common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_primarys_replica_loses_nothing_while_writers_run() {
    // Four nodes, one group on nodes 1, 2, 3: node 4 holds nothing.
    let cluster = TestCluster::start(4, 1, &[]).await;
    let client = cluster.client().await;
    for i in 0..200 {
        client.put(format!("before-{i}"), format!("v-{i}")).await.expect("a healthy cluster takes writes");
    }

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, acked, failed, stop) = (client.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("during-{w}-{i}"), format!("v-{w}-{i}"));
                match c.put(k.clone(), v.clone()).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(k, v);
                    }
                    Err(_) => {
                        failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let view = cluster.view(0).await.expect("group 0 has a view");
    let from = view.leader;
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .args(["--endpoints", &cluster.endpoints().join(","), "admin", "move-replica", "--group", "0"])
        .args(["--from", &from.to_string(), "--to", "4", "--wait-secs", "60"])
        .output()
        .expect("pactdb runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "move-replica failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("moved from node {from} to node 4")), "{stdout}");
    eprintln!("FIGURE move-replica of group 0 from primary {from} to node 4: {} ms", started.elapsed().as_millis());

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty(), "the writers acknowledged something");
    assert_eq!(failed.load(std::sync::atomic::Ordering::Relaxed), 0, "no writer saw an error");

    let new = cluster.view(0).await.unwrap();
    assert!(new.is_member(4) && !new.is_member(from), "{new:?}");
    assert_eq!(new.placement, new.members);
    cluster.wait_converged(None, Duration::from_secs(30)).await.expect("members converge");
    for (k, v) in (0..200).map(|i| (format!("before-{i}"), format!("v-{i}"))).chain(acked) {
        let got = client.get(k.clone()).await.expect("reads succeed after the move");
        assert_eq!(got.map(|g| g.value), Some(v.into_bytes()), "acknowledged write {k} was lost");
    }
}
