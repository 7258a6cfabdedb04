//! Real `pactdb node` processes on loopback: one client pipelines writes
//! to one key of each of two groups (32 in flight, `Client::submit`) while
//! the primary of the first group is killed with SIGKILL. Every write is
//! acknowledged (retries are the front end's business), and the versions
//! the writes got increase in the order they were issued, in both groups:
//! the groups applied the client's writes in issue order (FIFO), across the
//! failover too. The final value of each key is its last write.

mod common;

use common::TestCluster;
use pactdb_client::Submitted;
use pactdb_core::state::op::{Op, OpResult};
use std::collections::VecDeque;
use std::time::Instant;

const WRITES: usize = 600;
const IN_FLIGHT: usize = 32;
/// Writes issued before the kill.
const KILL_AFTER: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_apply_in_issue_order_across_a_primary_kill() {
    let mut cluster = TestCluster::start(3, 2, &[]).await;
    let client = cluster.client().await;
    let keys = [cluster.key_in(0, "fifo"), cluster.key_in(1, "fifo")];
    let view = cluster.view(0).await.expect("group 0 has a view");
    let victim = view.leader;

    // Write i goes to keys[i % 2] with value i; (i, version) per key once
    // acknowledged.
    let mut acked: [Vec<(usize, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut errors = Vec::new();
    let mut in_flight: VecDeque<(usize, Submitted)> = VecDeque::new();
    let mut killed_at = None;
    let started = Instant::now();
    for i in 0..WRITES {
        if i == KILL_AFTER {
            cluster.kill(victim);
            killed_at = Some(Instant::now());
        }
        if in_flight.len() >= IN_FLIGHT {
            let (j, s) = in_flight.pop_front().unwrap();
            note(&mut acked, &mut errors, j, s.result().await);
        }
        let op = Op::Put { key: keys[i % 2].clone().into_bytes(), value: i.to_string().into_bytes() };
        in_flight.push_back((i, client.submit(op).await.expect("the front end takes it")));
    }
    while let Some((j, s)) = in_flight.pop_front() {
        note(&mut acked, &mut errors, j, s.result().await);
    }
    eprintln!(
        "FIGURE {WRITES} pipelined writes ({IN_FLIGHT} in flight) with primary {victim} of group 0 killed after \
         {KILL_AFTER}: {} ms in all, {} ms from the kill",
        started.elapsed().as_millis(),
        killed_at.unwrap().elapsed().as_millis()
    );
    assert!(errors.is_empty(), "writes failed: {errors:?}");

    let new_view = cluster.view(0).await.unwrap();
    assert_ne!(new_view.leader, victim, "a new primary took over group 0");
    for (g, writes) in acked.iter().enumerate() {
        assert_eq!(writes.len(), WRITES / 2, "group {g}: every write acknowledged");
        // Issue order is i; the version a write got is its place in the
        // key's history. They must increase together.
        for pair in writes.windows(2) {
            let ((i, vi), (j, vj)) = (pair[0], pair[1]);
            assert!(vi < vj, "group {g}: write {i} (version {vi}) applied after write {j} (version {vj})");
        }
        let got = client.get(keys[g].clone()).await.expect("reads succeed").expect("the key exists");
        let (last, version) = *writes.last().unwrap();
        assert_eq!(
            (got.value, got.version),
            (last.to_string().into_bytes(), version),
            "group {g}: the last write wins"
        );
    }
}

fn note(
    acked: &mut [Vec<(usize, u64)>; 2],
    errors: &mut Vec<(usize, String)>,
    i: usize,
    result: Result<OpResult, pactdb_client::Error>,
) {
    match result {
        Ok(OpResult::Written { version }) => acked[i % 2].push((i, version)),
        Ok(other) => errors.push((i, format!("unexpected result {other:?}"))),
        Err(e) => errors.push((i, e.to_string())),
    }
}
