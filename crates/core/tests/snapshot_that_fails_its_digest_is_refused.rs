//! A snapshot stream is peer input: one whose contents do not hash to the
//! digest it announces (damaged on the way, or sent by a faulty peer) is
//! refused once complete. It is neither installed nor acknowledged, and the
//! backup does not crash; the same stream with its true digest is taken.

mod common;

use common::*;
use pactdb_core::state::kv::{KvStore, Write};
use pactdb_core::state::{Snapshot, StateMachine};
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

fn snapshot(h: &Harness) -> Snapshot {
    let mut kv = KvStore::default();
    for i in 0..20u64 {
        kv.apply(&Write::Put { key: format!("k{i}").into_bytes(), value: vec![7; 40], version: i + 1 });
    }
    Snapshot { index: 25, epoch: h.view(node(2)).epoch, state: StateMachine { kv, ..StateMachine::default() } }
}

fn installs(fx: &[Effect]) -> bool {
    fx.iter().any(|e| matches!(e, Effect::Persist { record: WalRecord::SnapshotInstalled { .. }, .. }))
}

fn refusals(fx: &[Effect]) -> usize {
    fx.iter()
        .filter(|e| matches!(e, Effect::Send { msg, .. } if matches!(msg.body, PeerBody::SnapshotAck { refused: true, .. })))
        .count()
}

#[test]
fn a_snapshot_stream_whose_digest_does_not_match_is_refused() {
    let mut h = Harness::three_nodes();
    let snap = snapshot(&h);

    let fx = h.stream_snapshot(node(2), node(1), &snap, 100, |meta| meta.digest ^= 1);
    assert!(!installs(&fx), "a stream that fails its digest is not installed: {fx:#?}");
    assert!(h.replica(node(2)).kv().is_empty(), "nor applied");
    assert_eq!(h.replica(node(2)).commit_index(), 0);
    assert_eq!(refusals(&fx), 0, "every chunk continued the stream");

    // The same stream with its true digest is taken, in several chunks.
    let fx = h.stream_snapshot(node(2), node(1), &snap, 100, |_| {});
    let chunks =
        fx.iter().filter(|e| matches!(e, Effect::Persist { record: WalRecord::SnapshotChunk { .. }, .. })).count();
    assert!(chunks > 3, "{chunks} chunks");
    assert!(installs(&fx), "{fx:#?}");
    assert_eq!(h.replica(node(2)).kv().len(), 20);
    assert_eq!(h.replica(node(2)).kv().digest(), snap.state.kv.digest());
}
