//! Real `pactdb node` processes on loopback: kill -9 a primary while writes
//! run; nothing acknowledged is lost, writes resume by themselves, and the
//! killed node rejoins with the same state digest as the primary.

mod common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_primary_lose_nothing_and_rejoin() {
    let mut cluster = TestCluster::start(3, 3, &[]).await;
    let client = cluster.client().await;

    // 1,000 keys, 50 writes at a time.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for chunk in (0..1000).collect::<Vec<_>>().chunks(50) {
        let mut tasks = Vec::new();
        for i in chunk {
            let (c, k, v) = (client.clone(), format!("key-{i}"), format!("value-{i}"));
            tasks.push(tokio::spawn(async move { c.put(k.clone(), v.clone()).await.map(|_| (k, v)) }));
        }
        for t in tasks {
            let (k, v) = t.await.unwrap().expect("a write to a healthy cluster succeeds");
            acked.insert(k, v);
        }
    }

    // Writers keep running across the kill; each records what was acked.
    let during: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (c, during, stop) = (client.clone(), during.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (k, v) = (format!("during-{w}-{i}"), format!("v-{w}-{i}"));
                if c.put(k.clone(), v.clone()).await.is_ok() {
                    during.lock().unwrap().insert(k, v);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let group = 0;
    let view = cluster.view(group).await.expect("group 0 has a view");
    let victim = view.leader;
    let probe_key = cluster.key_in(group, "probe");
    cluster.kill(victim);
    let killed_at = Instant::now();

    // The first successful write to the victim's group after the kill.
    let probe = cluster.client().await;
    let mut n = 0;
    loop {
        n += 1;
        if probe.put(probe_key.clone(), format!("after-{n}")).await.is_ok() {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "writes to group {group} never resumed");
    }
    let unavailable = killed_at.elapsed();
    eprintln!("FIGURE write unavailability after kill -9 of primary {victim}: {} ms", unavailable.as_millis());

    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let during = during.lock().unwrap().clone();
    assert!(!during.is_empty(), "the writers acknowledged something");

    // Every acknowledged write is still readable.
    for (k, v) in acked.iter().chain(during.iter()) {
        let got = client.get(k.clone()).await.expect("reads succeed after failover");
        assert_eq!(got.map(|g| g.value), Some(v.clone().into_bytes()), "acknowledged write {k} was lost");
    }
    let new_view = cluster.view(group).await.unwrap();
    assert_ne!(new_view.leader, victim, "a new primary took over");
    assert!(new_view.epoch > view.epoch);

    // The killed node comes back, catches up and is CASed back in.
    let restarted_at = Instant::now();
    cluster.restart(victim);
    cluster
        .wait_converged(Some(victim), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("node {victim} did not rejoin: {e}\n{}", cluster.log_of(victim)));
    eprintln!(
        "FIGURE rejoin of node {victim} (restart to digest match in every group): {} ms",
        restarted_at.elapsed().as_millis()
    );

    // And the cluster keeps taking writes.
    client.put(probe_key.clone(), "final").await.unwrap();
    assert_eq!(client.get(probe_key).await.unwrap().unwrap().value, b"final");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_behind_member_is_caught_up_by_snapshot() {
    // Keep only 20 entries in memory, so a node that misses hundreds of
    // writes can only be caught up with a snapshot.
    let mut cluster = TestCluster::start(3, 1, &["--log-retain-entries", "20"]).await;
    let client = cluster.client().await;
    let view = cluster.view(0).await.unwrap();
    let backup = *view.members.iter().find(|m| **m != view.leader).unwrap();
    cluster.kill(backup);
    for i in 0..300 {
        client.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    cluster.restart(backup);
    cluster
        .wait_converged(Some(backup), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("node {backup} did not catch up: {e}"));
    let s = cluster.status(backup).await.unwrap();
    let r = s.replicas.iter().find(|r| r.group == 0).unwrap();
    assert_eq!(r.keys, 300);
}
