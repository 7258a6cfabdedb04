//! Real `pactdb node` processes, an active group: writes continue with no
//! client-visible error while a non-sequencer member is killed; after the
//! sequencer is killed writes resume; nothing acknowledged is lost; the
//! restarted members rejoin with equal digests.

mod common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_group_survives_member_and_sequencer_kills() {
    // Group 0 passive, group 1 active.
    let mut cluster = TestCluster::start_mixed(3, 1, 1, false, &[]).await;
    let client = cluster.client().await;
    let group = 1;
    let keys: Vec<String> = (0..200).map(|i| cluster.key_in(group, &format!("a{i}"))).collect();

    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let spawn_writers = |w0: usize| {
        (w0..w0 + 4)
            .map(|w| {
                let (c, acked, errors, stop, keys) =
                    (client.clone(), acked.clone(), errors.clone(), stop.clone(), keys.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let k = keys[(w * 50 + i) % keys.len()].clone();
                        let v = format!("w{w}-{i}");
                        match c.put(k.clone(), v.clone()).await {
                            Ok(_) => {
                                acked.lock().unwrap().insert(k, v);
                            }
                            Err(e) => {
                                eprintln!("write error: {e}");
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect::<Vec<_>>()
    };

    // Phase 1: kill a member that is not the sequencer while writes run.
    let writers = spawn_writers(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = cluster.view(group).await.unwrap();
    let member = *view.members.iter().find(|m| **m != view.leader).unwrap();
    cluster.kill(member);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no client-visible error while a member died");
    let after_member = cluster.view(group).await.unwrap();
    assert!(!after_member.is_member(member), "the dead member was removed from the view");

    // The member comes back and is admitted again (the config store needs a
    // majority of the three nodes for the next view change).
    cluster.restart(member);
    cluster
        .wait_converged(Some(member), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("member {member} did not rejoin: {e}"));

    // Phase 2: kill the sequencer; writes resume by themselves.
    let sequencer = after_member.leader;
    let probe_key = keys[0].clone();
    cluster.kill(sequencer);
    let killed_at = Instant::now();
    let probe = cluster.client().await;
    loop {
        if probe.put(probe_key.clone(), "after-sequencer-kill").await.is_ok() {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(20), "writes never resumed");
    }
    acked.lock().unwrap().insert(probe_key.clone(), "after-sequencer-kill".into());
    eprintln!(
        "FIGURE active group: client-visible gap after kill -9 of the sequencer: {} ms",
        killed_at.elapsed().as_millis()
    );

    // Every acknowledged write is readable.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "the writers made progress");
    for (k, v) in &acked {
        let got = probe.get(k.clone()).await.unwrap();
        assert_eq!(got.map(|g| g.value), Some(v.clone().into_bytes()), "acknowledged write to {k} lost");
    }

    // The old sequencer comes back, catches up and rejoins; digests match.
    cluster.restart(sequencer);
    cluster
        .wait_converged(Some(sequencer), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("node {sequencer} did not rejoin: {e}"));
}
