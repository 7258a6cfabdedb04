//! A snapshot stream no newer than what a backup has committed installs
//! nothing, but the backup's ack still says how far its log matches the
//! primary's.

mod common;

use common::*;
use pactdb_core::state::Snapshot;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

fn persists_a_snapshot(fx: &[Effect]) -> bool {
    fx.iter().any(|e| {
        matches!(
            e,
            Effect::Persist { record: WalRecord::SnapshotInstalled { .. } | WalRecord::SnapshotChunk { .. }, .. }
        )
    })
}

/// A snapshot no newer than what the backup has committed installs nothing,
/// but the ack must say how far the backup's log matches: its commit index
/// (committed entries are the primary's too). A backup restarted with a
/// fresh match of 0 acked 0, the primary kept sending it the snapshot after
/// every silence and never an append, and the joiner stayed out of its
/// group for good (simulator, passive seed 427).
#[test]
fn a_snapshot_the_backup_already_has_is_acked_with_its_commit_index() {
    let mut h = Harness::three_nodes();
    for seq in 1..=3 {
        h.put_settled(seq);
    }
    h.crash(node(2));
    h.restart(node(2));
    h.run_until(500, |h| h.replica_opt(node(2)).is_some_and(|r| !r.awaiting_view_confirmation()));
    let committed = h.replica(node(2)).commit_index();
    assert!(committed > 0, "node 2 replayed its commits");

    let snapshot =
        Snapshot { index: committed, epoch: h.view(node(1)).epoch, state: h.replica(node(1)).state().clone() };
    let fx = h.stream_snapshot(node(2), node(1), &snapshot, 1024 * 1024, |_| {});
    assert!(!persists_a_snapshot(&fx), "nothing to install: {fx:#?}");
    let acks: Vec<_> = sends(&fx)
        .into_iter()
        .filter_map(|(to, b)| match b {
            PeerBody::AppendAck { match_index, .. } => Some((to, match_index)),
            _ => None,
        })
        .collect();
    assert!(!acks.is_empty(), "every chunk is acked: {fx:#?}");
    assert!(acks.iter().all(|&a| a == (1, committed)), "{acks:?} should all be (1, {committed})");
}
