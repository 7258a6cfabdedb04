//! Real `pactdb node` processes on loopback: a group holding over 200 MiB,
//! more than one message may carry, catches a member up by streaming its
//! snapshot in chunks. A backup is killed, the group writes on until the
//! entries it missed are compacted away, and the restarted backup rejoins
//! (by a snapshot, the only way left) while writes continue; its digest then
//! equals the primary's. `pactdb status` shows the transfer as bytes sent of
//! the total while it runs.

mod common;

use common::TestCluster;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const VALUE_BYTES: usize = 256 * 1024;
const KEYS: usize = 820; // 205 MiB of values
const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_far_behind_a_group_of_200_mib_rejoins_by_a_streamed_snapshot() {
    let mut cluster = TestCluster::start(
        3,
        1,
        &["--log-retain-entries", "20", "--snapshot-wal-bytes", "134217728", "--snapshot-bytes-per-sec", "100000000"],
    )
    .await;
    let client = cluster.client().await;
    let value = |i: usize, round: u8| {
        let mut v = vec![round; VALUE_BYTES];
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    };
    let filled_at = Instant::now();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(8) {
        let mut tasks = Vec::new();
        for &i in chunk {
            let (c, v) = (client.clone(), value(i, 1));
            tasks.push(tokio::spawn(async move { c.put(format!("big-{i}"), v).await }));
        }
        for t in tasks {
            t.await.unwrap().expect("a write to a healthy cluster succeeds");
        }
    }
    eprintln!("FIGURE filled {} MiB in {} ms", (KEYS * VALUE_BYTES) as u64 / MIB, filled_at.elapsed().as_millis());

    // A backup the loaded primary dropped from its view catches up first.
    let settled = Instant::now();
    let view = loop {
        let view = cluster.view(0).await.expect("group 0 has a view");
        if view.members.len() == 3 || settled.elapsed() > Duration::from_secs(60) {
            break view;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let backup = (1..=3).find(|m| *m != view.leader).expect("a backup");
    cluster.kill(backup);
    // Far more writes than the 20 entries the primary keeps: the backup's
    // missing entries are gone from every log.
    for i in 0..200 {
        client.put(format!("big-{i}"), value(i, 2)).await.expect("writes go on without the backup");
    }

    // Writers keep going while the backup rejoins.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (c, stop, written) = (client.clone(), stop.clone(), written.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if c.put(format!("during-{w}-{}", i % 50), format!("v{i}")).await.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }

    let restarted_at = Instant::now();
    cluster.restart(backup);
    let mut progress_seen = Vec::new();
    loop {
        assert!(
            restarted_at.elapsed() < Duration::from_secs(120),
            "node {backup} did not rejoin; transfers seen {progress_seen:?}\n{}",
            cluster.log_of(backup)
        );
        let view = cluster.view(0).await.expect("a view");
        if let Some(s) = cluster.status(view.leader).await {
            for r in &s.replicas {
                for t in r.transfers.iter().filter(|t| t.sending && t.peer == backup) {
                    progress_seen.push((t.bytes, t.total));
                }
            }
        }
        if view.is_member(backup) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rejoin = restarted_at.elapsed();
    let writes_during = written.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    eprintln!(
        "FIGURE node {backup} rejoined a group of {} MiB {} ms after its restart; {writes_during} writes \
         acknowledged meanwhile; transfer progress seen in status: {:?}",
        (KEYS * VALUE_BYTES) as u64 / MIB,
        rejoin.as_millis(),
        progress_seen.iter().map(|(b, t)| format!("{} / {} MiB", b / MIB, t / MIB)).collect::<Vec<_>>()
    );
    assert!(writes_during > 0, "the group kept taking writes while the member caught up");
    let (_, total) = *progress_seen.first().expect("status showed the transfer under way");
    assert!(total > 200 * MIB, "the snapshot streamed was {total} bytes, not the whole state");
    assert!(total > pactdb_core::limits::MAX_MESSAGE_BYTES, "larger than any one message");

    cluster
        .wait_converged(Some(backup), Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("node {backup} did not converge: {e}"));
    let primary = cluster.view(0).await.unwrap().leader;
    let (a, b) = (cluster.status(primary).await.unwrap(), cluster.status(backup).await.unwrap());
    let (a, b) = (&a.replicas[0], &b.replicas[0]);
    assert_eq!((a.digest, a.keys), (b.digest, b.keys), "the rejoined member holds the primary's state");
    assert!(b.keys >= KEYS);
    // The rejoined member serves as one: the group commits with it.
    client.put("big-0", value(0, 3)).await.unwrap();
    assert_eq!(client.get("big-0").await.unwrap().unwrap().value, value(0, 3));
}
