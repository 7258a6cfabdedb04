//! `pactdb admin move-replica`: the primary proposes the view with the new
//! placement; the node moved to learns it, joins, catches up as a learner
//! and is admitted once it holds every committed entry; then the node moved
//! from is dropped (after a hand-over, when it is the primary) and drops its
//! replica. Writes are served throughout and none is lost. The bug
//! `admit-before-caught-up` admits the learner with a short log.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{NodeId, View};
use pactdb_core::wire::{CatchUp, ClientMsg, ClientReply, PeerBody, PlacementChange, TransferRefused};

fn move_replica(from: NodeId, to: NodeId) -> ClientMsg {
    ClientMsg::MoveReplica { group: GROUP, from, to }
}

fn written(r: &ClientReply) -> bool {
    matches!(r, ClientReply::Response { result: Ok(OpResult::Written { .. }), .. })
}

/// Puts `k{seq}` through the current leader and runs until it is answered.
fn put_through_leader(h: &mut Harness, seq: u64) -> ClientReply {
    let leader = h.view_of(node(1).max(2), GROUP).leader;
    let epoch = h.view_of(leader, GROUP).epoch;
    let (t, _) = h.client(leader, request(rid(7, seq), epoch, put(&format!("k{seq}"), "v")));
    h.run_until(1_000, |h| !h.replies_to(t).is_empty());
    h.take_reply(t)
}

#[test]
fn a_move_admits_the_new_node_once_caught_up_and_then_drops_the_old_one() {
    let mut h = Harness::four_nodes_group_on_three();
    for seq in 1..=3 {
        assert!(written(&h.put_settled(seq)));
    }
    let before = h.view(node(1));
    let committed = h.replica(node(1)).commit_index();

    // The primary proposes the new placement at once, through the config
    // store, and answers the view it proposed.
    let (token, fx) = h.client(node(1), move_replica(3, 4));
    let proposed = View { placement: vec![1, 2, 4], ..before.next(1, vec![1, 2, 3]) };
    assert_eq!(replies(&fx), vec![(token, ClientReply::MoveStarted(Ok(proposed.clone())))]);
    assert!(sends(&fx).iter().any(|(_, b)| matches!(b, PeerBody::Prepare { key, .. } if key == "group/0")));

    // Node 4 learns the view, creates its replica, joins and catches up;
    // it is admitted only holding every committed entry.
    h.run_rounds_until(2_000, |h| h.view(node(1)).is_member(4));
    let admitted = h.view(node(1));
    assert_eq!((admitted.members.clone(), admitted.placement.clone()), (vec![1, 2, 3, 4], vec![1, 2, 4]));
    assert!(h.replica(node(4)).log().last_index() >= committed);

    // A write during the move is served, and waits for node 4 too.
    assert!(written(&put_through_leader(&mut h, 4)));

    // Then node 3 is dropped, and drops its replica.
    h.run_until(2_000, |h| h.view(node(1)).members == vec![1, 2, 4]);
    h.run_until(2_000, |h| h.replica_opt(node(3)).is_none());
    let last = h.view(node(1));
    assert_eq!((last.leader, last.placement.clone()), (1, vec![1, 2, 4]));
    assert!(h.replica(node(1)).status(h.now).placement_change.is_none());
    assert!(written(&put_through_leader(&mut h, 5)));
    h.run_for(30);
    for n in [2, 4] {
        assert_eq!(h.replica(node(n)).role(), Role::Backup);
        assert_eq!(h.replica(node(n)).kv().digest(), h.replica(node(1)).kv().digest());
        assert_eq!(h.replica(node(n)).applied_index(), h.replica(node(1)).applied_index());
    }
    assert_eq!(h.replica(node(4)).kv().len(), 5, "every acknowledged write is on node 4");

    // The node moved away is not taken back: its join is answered with the
    // view, and nothing is streamed to it.
    let fx = h.inject(node(1), 3, PeerBody::Join { group: GROUP, last_index: 0 });
    assert_eq!(sends(&fx), vec![(3, PeerBody::StaleEpoch { view: h.view(node(1)) })]);
}

#[test]
fn moving_the_primary_hands_its_leadership_over_first() {
    let mut h = Harness::four_nodes_group_on_three();
    assert!(written(&h.put_settled(1)));
    let (token, _) = h.client(node(1), move_replica(1, 4));
    assert!(matches!(h.take_reply(token), ClientReply::MoveStarted(Ok(_))));
    h.run_until(3_000, |h| {
        h.replica_opt(node(2)).is_some_and(|r| r.view().is_some_and(|v| v.members == vec![2, 3, 4]))
    });
    let view = h.view_of(2, GROUP);
    // The placed member furthest along (ties: the lowest id) took over.
    assert_eq!((view.leader, view.placement.clone()), (2, vec![2, 3, 4]));
    assert_eq!(h.replica(node(2)).role(), Role::Primary);
    h.run_until(2_000, |h| h.replica_opt(node(1)).is_none());
    assert!(written(&put_through_leader(&mut h, 2)));
    h.run_for(30);
    for n in [3, 4] {
        assert_eq!(h.replica(node(n)).kv().digest(), h.replica(node(2)).kv().digest());
    }
    assert_eq!(h.replica(node(4)).kv().len(), 2);
}

#[test]
fn status_shows_the_node_catching_up_and_the_member_leaving() {
    let mut h = Harness::four_nodes_group_on_three();
    for seq in 1..=2 {
        assert!(written(&h.put_settled(seq)));
    }
    h.isolate(node(4));
    let (token, _) = h.client(node(1), move_replica(3, 4));
    assert!(matches!(h.take_reply(token), ClientReply::MoveStarted(Ok(_))));
    h.run_until(1_000, |h| h.view(node(1)).placement == vec![1, 2, 4]);
    let last = h.replica(node(1)).last_index();
    assert_eq!(
        h.replica(node(1)).status(h.now).placement_change,
        Some(PlacementChange {
            joining: vec![CatchUp { node: 4, heard: false, entries_left: last, bytes_left: 0, bytes_exact: false }],
            leaving: vec![3],
        })
    );
    // Node 3 stays a member while node 4 cannot catch up.
    h.run_for(500);
    assert_eq!(h.view(node(1)).members, vec![1, 2, 3]);
    h.heal(node(4));
    h.run_until(2_000, |h| h.view(node(1)).members == vec![1, 2, 4]);
    assert!(h.replica(node(1)).status(h.now).placement_change.is_none());
}

#[test]
fn refusals_name_the_reason_and_the_view() {
    let mut h = Harness::four_nodes_group_on_three();
    let view = h.view(node(1));
    let (t, _) = h.client(node(2), move_replica(3, 4));
    assert_eq!(
        h.take_reply(t),
        ClientReply::MoveStarted(Err(TransferRefused {
            reason: "node 2 does not lead group 0".into(),
            view: Some(view.clone())
        }))
    );
    let refused = |h: &mut Harness, from, to, says: &str| {
        let (t, _) = h.client(node(1), move_replica(from, to));
        match h.take_reply(t) {
            ClientReply::MoveStarted(Err(TransferRefused { reason, .. })) => {
                assert!(reason.contains(says), "{reason:?} says {says:?}")
            }
            other => panic!("move {from} -> {to} not refused: {other:?}"),
        }
    };
    refused(&mut h, 3, 3, "to itself");
    refused(&mut h, 4, 5, "node 4 does not hold group 0");
    // A move whose result holds already (a retried request) is answered
    // with the view, and changes nothing.
    let (t, fx) = h.client(node(1), move_replica(4, 3));
    assert_eq!(fx, vec![pactdb_core::Effect::Reply { token: t, reply: ClientReply::MoveStarted(Ok(view.clone())) }]);
    h.replies.clear();
    refused(&mut h, 3, 2, "node 2 already holds group 0");
    refused(&mut h, 3, 9, "node 9 is not in the cluster map");
    // One move at a time: while node 3 is still a member, a second one is
    // refused; the same move asked again is answered with the view.
    h.isolate(node(4));
    let (t, _) = h.client(node(1), move_replica(3, 4));
    assert!(matches!(h.take_reply(t), ClientReply::MoveStarted(Ok(_))));
    h.run_until(1_000, |h| h.view(node(1)).placement == vec![1, 2, 4]);
    refused(&mut h, 2, 3, "under way");
    let (t, _) = h.client(node(1), move_replica(3, 4));
    assert_eq!(h.take_reply(t), ClientReply::MoveStarted(Ok(h.view(node(1)))));
}

#[test]
fn the_bug_admit_before_caught_up_admits_a_learner_missing_committed_entries() {
    let bug = Bugs { admit_before_caught_up: true, ..Bugs::default() };
    let mut h = Harness::with_bugs(&[1, 2, 3, 4], &[(1, bug)]);
    let mut map = cluster_map(&[1, 2, 3, 4], 1);
    map.groups[0].placement = vec![1, 2, 3];
    let (token, _) = h.client(node(1), ClientMsg::Bootstrap { cluster: map });
    h.settle();
    assert_eq!(h.take_reply(token), ClientReply::Bootstrapped(Ok(())));
    h.run_until(500, |h| h.replica(node(1)).is_primary());
    h.wait_out_predecessor_lease();
    h.first_heartbeat();
    for seq in 1..=3 {
        assert!(written(&h.put_settled(seq)));
    }
    let committed = h.replica(node(1)).commit_index();
    // Node 4's appends are lost: it holds nothing.
    let (t, _) = h.client(node(1), move_replica(3, 4));
    assert!(matches!(h.take_reply(t), ClientReply::MoveStarted(Ok(_))));
    let deadline = h.now + 2_000;
    while !h.view(node(1)).is_member(4) {
        assert!(h.now < deadline, "node 4 never admitted");
        h.drop_if(|to, m| to == 4 && matches!(m.body, PeerBody::Append { .. } | PeerBody::SnapshotChunk { .. }));
        if !h.net.is_empty() {
            h.deliver_if(|_, _| true);
        } else if h.live().iter().any(|n| !h.unsynced[n].is_empty()) {
            h.persist_all();
        } else {
            h.advance(1);
            h.tick_all();
        }
    }
    assert!(h.replica(node(4)).log().last_index() < committed, "admitted without the committed entries");
}
