//! A backup acknowledges an entry only once the `Persisted` input covering
//! its WAL record has arrived: an ack is a promise that the entry survives a
//! crash, and the primary answers clients on the strength of it.

mod common;

use common::*;
use pactdb_core::log::{Entry, Payload};
use pactdb_core::state::kv::Write;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn backup_acks_an_entry_only_after_it_is_persisted() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1));
    h.client(node(1), request(rid(7, 1), view.epoch, put("k", "v")));

    // The backup gets the entry: it asks for it to be persisted and sends
    // nothing yet (its ack, lease echo included, waits for the fsync).
    let fx = h.deliver(node(1), node(2));
    let expected_entry = Entry {
        epoch: view.epoch,
        index: 1,
        payload: Payload::Effects {
            id: rid(7, 1),
            response: OpResult::Written { version: 1 },
            writes: vec![Write::Put { key: b"k".to_vec(), value: b"v".to_vec(), version: 1 }],
        },
    };
    let entry_lsn = match &fx[..] {
        [Effect::Persist { lsn, record: WalRecord::Entry { group: GROUP, entry } }] => {
            assert_eq!(&**entry, &expected_entry);
            *lsn
        }
        other => panic!("expected [Persist(entry)] alone, got {other:#?}"),
    };

    // Time passes and heartbeats arrive: still no ack of index 1.
    h.advance(20);
    h.tick(node(1));
    let fx = h.deliver(node(1), node(2));
    assert!(persists(&fx).is_empty(), "a heartbeat persists nothing: {fx:#?}");
    match &sends(&fx)[..] {
        [(1, PeerBody::AppendAck { match_index: 0, sent_ms, .. })] => assert_eq!(*sent_ms, h.now),
        other => panic!("the heartbeat is answered without acking index 1: {other:#?}"),
    }

    // A `Persisted` below the entry's lsn does not cover it.
    if entry_lsn > 1 {
        let fx = h.persist_upto(node(2), entry_lsn - 1);
        assert!(sends(&fx).iter().all(|(_, b)| !matches!(b, PeerBody::AppendAck { match_index: 1, .. })), "{fx:#?}");
    }

    // The covering `Persisted`: exactly one ack, of index 1, to the primary.
    let fx = h.persist_upto(node(2), entry_lsn);
    match &fx[..] {
        [Effect::Send { to: 1, msg }] => match &msg.body {
            PeerBody::AppendAck { group: GROUP, epoch, match_index: 1, sent_ms } => {
                assert_eq!(*epoch, view.epoch);
                assert_eq!(*sent_ms, h.now, "echoes the newest heartbeat's time for the lease");
            }
            other => panic!("expected AppendAck(1), got {other:?}"),
        },
        other => panic!("expected exactly one AppendAck, got {other:#?}"),
    }

    // Persisting again (nothing new) acks nothing again.
    assert_eq!(h.persist(node(2)), vec![]);
}

#[test]
fn a_batch_is_acked_up_to_the_persisted_prefix_only() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    for seq in 1..=3 {
        h.client(node(1), request(rid(7, seq), epoch, put(&format!("k{seq}"), "v")));
    }
    let fx = h.deliver(node(1), node(2));
    let lsns: Vec<_> = persists(&fx)
        .into_iter()
        .map(|(lsn, r)| {
            assert!(matches!(r, WalRecord::Entry { .. }), "{r:?}");
            lsn
        })
        .collect();
    assert_eq!(lsns.len(), 3, "one record per entry: {fx:#?}");
    assert!(sends(&fx).is_empty(), "no ack before the fsync: {fx:#?}");

    // Durable up to the second entry: ack says 2, not 3.
    let fx = h.persist_upto(node(2), lsns[1]);
    assert!(
        matches!(&sends(&fx)[..], [(1, PeerBody::AppendAck { match_index: 2, .. })]),
        "ack covers exactly the durable prefix: {fx:#?}"
    );
    let fx = h.persist_upto(node(2), lsns[2]);
    assert!(matches!(&sends(&fx)[..], [(1, PeerBody::AppendAck { match_index: 3, .. })]), "{fx:#?}");
}
