//! A primary that crashed and recovered from its WAL does not act as primary
//! of its old epoch: it may have lost unsynced entries its backups hold, and
//! reusing the epoch would let two different entries share an (epoch, index).
//! It first wins epoch e+1 through the config store, then streams in it.

mod common;

use common::*;
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{ClientError, PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn a_restarted_primary_wins_a_new_epoch_before_acting() {
    let mut h = Harness::three_nodes();
    let e2 = h.view(node(1)).epoch;
    let old_view = h.view(node(1));

    // Index 1 is committed everywhere. Index 2 reaches both backups durably,
    // but the primary crashes before its own fsync: its WAL lacks it.
    let (t1, _) = h.client(node(1), request(rid(7, 1), e2, put("a", "1")));
    h.settle();
    assert!(matches!(h.take_reply(t1), pactdb_core::wire::ClientReply::Response { result: Ok(_), .. }));
    h.client(node(1), request(rid(7, 2), e2, put("b", "2")));
    h.crash_primary_after_backups_persist();
    assert!(!h.wal[&1].iter().any(|r| matches!(r, WalRecord::Entry { entry, .. } if entry.index == 2)));

    h.restart(node(1));
    assert_eq!(h.log_ids(1), vec![(e2, 1)]);
    assert_eq!(h.replica(node(1)).role(), Role::Recovering);
    let mark = h.sent.len();

    // Before it knows any view, and after it learns it still names it leader
    // of epoch 2, it answers clients NotLeader and streams nothing.
    let (token, fx) = h.client(node(1), request(rid(7, 3), e2, put("c", "3")));
    assert_eq!(
        fx,
        vec![Effect::Reply { token, reply: response(rid(7, 3), Err(ClientError::NotLeader { view: None })) }]
    );
    let mut saw_old_view = false;
    for _ in 0..1_000 {
        h.advance(1);
        h.tick(node(1));
        h.settle();
        if h.replica(node(1)).view().is_some_and(|v| v.epoch == e2) && !saw_old_view {
            saw_old_view = true;
            assert_eq!(h.replica(node(1)).role(), Role::Recovering, "named leader of epoch 2, but did not win it");
            let (token, fx) = h.client(node(1), request(rid(7, 4), e2, put("c", "3")));
            assert_eq!(
                fx,
                vec![Effect::Reply {
                    token,
                    reply: response(rid(7, 4), Err(ClientError::NotLeader { view: Some(old_view.clone()) }))
                }]
            );
        }
        if h.replica(node(1)).is_primary() {
            break;
        }
    }
    assert!(saw_old_view, "it learned the old view before winning the new one");
    assert!(h.replica(node(1)).is_primary(), "the restarted node leads again");
    let view = h.view(node(1));
    assert_eq!(view.epoch, e2 + 1, "in a new epoch");
    assert_eq!((view.leader, view.members.clone()), (1, vec![1, 2, 3]));

    // Nothing it sent since the restart streamed in epoch 2.
    for (to, m) in &h.sent[mark..] {
        if m.from == 1 {
            if let PeerBody::Append { view, .. } | PeerBody::SnapshotChunk { view, .. } = &m.body {
                assert_eq!(view.epoch, e2 + 1, "streamed to {to} in the old epoch: {m:?}");
            }
        }
    }

    // Having just won in a new incarnation, it cannot know whom its previous
    // incarnation last granted a read lease (by acking as a backup), so it
    // first waits out any such lease from the moment it won: a write is
    // refused meanwhile, and nothing is written.
    let (token, fx) = h.client(node(1), request(rid(9, 1), view.epoch, put("d", "4")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(9, 1), Err(waiting_out_lease())) }]);
    h.wait_out_predecessor_lease();
    assert_eq!(h.log_ids(1), vec![(e2, 1)]);

    // Its first write takes index 2 in epoch 3; the backups' unacknowledged
    // index 2 of epoch 2 is cut, not confused with it.
    let (token, fx) = h.client(node(1), request(rid(9, 1), view.epoch, put("d", "4")));
    match &persists(&fx)[..] {
        [(_, WalRecord::Entry { entry, .. })] => {
            assert_eq!((entry.epoch, entry.index), (view.epoch, 2))
        }
        other => panic!("expected one entry record, got {other:#?}"),
    }
    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    assert_eq!(h.take_reply(token), response(rid(9, 1), Ok(OpResult::Written { version: 2 })));
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(h.log_ids(n), vec![(e2, 1), (view.epoch, 2)], "node {n}");
        assert_eq!(h.replica(n).kv().get(b"b"), None, "the lost write never took effect on node {n}");
    }
}

#[test]
fn a_restarted_backup_does_not_propose_itself_with_its_old_view() {
    // The symmetric case, briefly: a restarted backup knows no view, so it
    // neither leads nor acks anything until it learns the current one.
    let mut h = Harness::three_nodes();
    let view = h.view(node(1));
    h.crash(node(2));
    h.restart(node(2));
    // It knows from its stored cluster map that it is placed in the group,
    // but not the view: its replica waits, recovering.
    assert_eq!(h.replica_opt(node(2)).map(|r| r.role()), Some(Role::Recovering));
    assert_eq!(h.replica(node(2)).view(), None);
    h.run_for(100);
    assert_eq!(h.view(node(2)), view);
    assert_eq!(h.replica(node(2)).role(), Role::Backup);
    assert!(h.replica(node(1)).is_primary());
}
