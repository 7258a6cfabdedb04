//! A snapshot is peer input: one whose state does not hash to the digest it
//! carries (damaged on the way, or sent by a faulty peer) is refused. It is
//! neither persisted nor installed, and the backup does not crash.

mod common;

use common::*;
use pactdb_core::state::kv::{KvStore, Write};
use pactdb_core::state::{Snapshot, StateMachine};
use pactdb_core::wire::{self, PeerBody, WalRecord};
use pactdb_core::Effect;

fn state_with_one_key() -> KvStore {
    let mut kv = KvStore::default();
    kv.apply(&Write::Put { key: b"k".to_vec(), value: b"v".to_vec(), version: 5 });
    kv
}

fn install(h: &mut Harness, kv: KvStore) -> Vec<Effect> {
    let view = h.view(node(2));
    let snapshot = Snapshot { index: 5, epoch: view.epoch, state: StateMachine { kv, ..StateMachine::default() } };
    let sent_ms = h.now;
    h.inject(node(2), node(1), PeerBody::InstallSnapshot { view, snapshot: Box::new(snapshot), sent_ms })
}

fn persists_a_snapshot(fx: &[Effect]) -> bool {
    fx.iter().any(|e| matches!(e, Effect::Persist { record: WalRecord::Snapshot { .. }, .. }))
}

#[test]
fn a_snapshot_whose_state_does_not_match_its_digest_is_refused() {
    let mut h = Harness::three_nodes();
    // The only way to get a wrong digest is to tamper with the encoded
    // state, as a damaged message would: the digest is its last field.
    let mut bytes = wire::encode(&state_with_one_key());
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered: KvStore = wire::decode(&bytes).expect("still decodes");
    assert_ne!(tampered.digest(), tampered.recompute_digest());

    let fx = install(&mut h, tampered);
    assert!(!persists_a_snapshot(&fx), "a refused snapshot is not written: {fx:#?}");
    assert!(h.replica(node(2)).kv().is_empty(), "nor installed");
    assert_eq!(h.replica(node(2)).commit_index(), 0);

    // The same state with its true digest is taken.
    let fx = install(&mut h, state_with_one_key());
    assert!(persists_a_snapshot(&fx), "{fx:#?}");
    assert_eq!(h.replica(node(2)).kv().len(), 1);
}
