//! The primary answers a write only once every member of the view, itself
//! included, holds the entry durably: that is what lets any survivor take
//! over without losing an acknowledged write.

mod common;

use common::*;
use pactdb_core::log::{Entry, Payload};
use pactdb_core::state::kv::Write;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn primary_replies_only_after_every_member_acked() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1));
    let id = rid(7, 1);

    // The put: the primary's own record, then one Append per backup. No reply.
    let (token, fx) = h.client(node(1), request(id, view.epoch, put("k", "v")));
    let expected = Entry {
        epoch: view.epoch,
        index: 1,
        payload: Payload::Effects {
            id,
            response: OpResult::Written { version: 1 },
            writes: vec![Write::Put { key: b"k".to_vec(), value: b"v".to_vec(), version: 1 }],
        },
    };
    match &fx[..] {
        [Effect::Persist { record: WalRecord::Entry { group: GROUP, entry }, .. }, Effect::Send { to: 2, msg: m2 }, Effect::Send { to: 3, msg: m3 }] =>
        {
            assert_eq!(&**entry, &expected);
            for m in [m2, m3] {
                match &m.body {
                    PeerBody::Append { view: v, prev_index: 0, prev_epoch: 0, entries, commit_index: 0, .. } => {
                        assert_eq!(v, &view);
                        assert_eq!(entries, &vec![expected.clone().into()]);
                    }
                    other => panic!("expected an Append of the entry, got {other:?}"),
                }
            }
        }
        other => panic!("expected [Persist, Append to 2, Append to 3], got {other:#?}"),
    }

    // Backup 2 persists and acks: not enough.
    h.deliver(node(1), node(2));
    h.persist(node(2));
    let fx = h.deliver(node(2), node(1));
    assert!(replies(&fx).is_empty(), "one backup is not every member: {fx:#?}");
    assert!(persists(&fx).is_empty(), "nothing is committed: {fx:#?}");

    // The primary's own fsync: still backup 3 missing.
    let fx = h.persist(node(1));
    assert_eq!(fx, vec![], "the primary's own fsync is not every member");

    // Backup 3 receives, but has not persisted: its lease echo is no ack.
    h.deliver(node(1), node(3));
    let fx = h.deliver(node(3), node(1));
    assert_eq!(fx, vec![], "an ack of index 0 commits nothing");
    assert!(h.replies.is_empty());
    assert_eq!(h.replica(node(1)).commit_index(), 0);

    // Backup 3 persists and acks: exactly one reply, then the commit record.
    h.persist(node(3));
    let fx = h.deliver(node(3), node(1));
    match &fx[..] {
        [Effect::Reply { token: t, reply }, Effect::Persist { record: WalRecord::Commit { group: GROUP, index: 1 }, .. }] =>
        {
            assert_eq!(*t, token);
            assert_eq!(reply, &response(id, Ok(OpResult::Written { version: 1 })));
        }
        other => panic!("expected [Reply, Persist(commit 1)], got {other:#?}"),
    }
    assert_eq!(h.replica(node(1)).commit_index(), 1);
    assert_eq!(h.replica(node(1)).kv().get(b"k").map(|v| v.version), Some(1));

    // Nothing more is ever answered for it.
    h.run_for(50);
    assert_eq!(h.replies_to(token).len(), 1);
}

#[test]
fn the_primary_own_fsync_is_needed_too() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let (token, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    for b in [2, 3] {
        h.deliver(node(1), node(b));
        h.persist(node(b));
        let fx = h.deliver(node(b), node(1));
        assert!(replies(&fx).is_empty(), "the primary has not persisted yet: {fx:#?}");
    }
    assert_eq!(h.replica(node(1)).commit_index(), 0);
    let fx = h.persist(node(1));
    match &fx[..] {
        [Effect::Reply { token: t, reply }, Effect::Persist { record: WalRecord::Commit { index: 1, .. }, .. }] => {
            assert_eq!(*t, token);
            assert_eq!(reply, &response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
        }
        other => panic!("expected [Reply, Persist(commit 1)], got {other:#?}"),
    }
}
