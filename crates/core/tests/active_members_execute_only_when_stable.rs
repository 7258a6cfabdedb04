//! Every member of an active group executes a request only once it is
//! stable (durable on every member of the view), and learns that only from
//! the sequencer's commit index. Holding the entry durably itself is not
//! enough. Then each member that the client asked answers exactly once, with
//! the sequencer's result; a member nobody asked executes silently.

mod common;

use common::*;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn members_answer_only_after_learning_the_entry_is_stable() {
    let mut h = Harness::active(false);
    let view = h.view(node(1));
    let id = rid(7, 1);
    let req = request(id, view.epoch, put("k", "v"));
    let ok = response(id, Ok(OpResult::Written { version: 1 }));

    // The client's copy reaches member 2 and the sequencer; its copy to
    // member 3 is lost.
    let (t2, fx) = h.client(node(2), req.clone());
    assert_eq!(fx, vec![]);
    let (t1, _) = h.client(node(1), req);

    // Both members log the entry, persist it and ack it: no answer.
    for m in [2, 3] {
        h.deliver(node(1), node(m));
        let fx = h.persist(node(m));
        match &fx[..] {
            [Effect::Send { to: 1, msg }] => assert!(
                matches!(msg.body, PeerBody::AppendAck { match_index: 1, .. }),
                "member {m} acks the durable entry: {msg:?}"
            ),
            other => panic!("expected only the ack of index 1 from member {m}, got {other:#?}"),
        }
        assert_eq!(h.replica(node(m)).applied_index(), 0, "member {m} has not executed");
    }

    // The sequencer hears both acks but its own copy is not durable: the
    // entry is not stable.
    for m in [2, 3] {
        let fx = h.deliver(node(m), node(1));
        assert_eq!(fx, vec![], "the sequencer's own fsync is missing");
    }
    assert_eq!(h.replica(node(1)).commit_index(), 0);

    // A heartbeat still says commit index 0: member 2, holding the entry
    // durably, must not execute or answer.
    h.advance(20);
    h.tick(node(1));
    let fx = h.deliver(node(1), node(2));
    match &fx[..] {
        [Effect::Send { to: 1, msg }] => {
            assert!(matches!(msg.body, PeerBody::AppendAck { match_index: 1, .. }), "{msg:?}")
        }
        other => panic!("expected only an ack from member 2, got {other:#?}"),
    }
    assert_eq!(h.replica(node(2)).applied_index(), 0);
    assert!(h.replies.is_empty(), "{:?}", h.replies);

    // The sequencer's fsync makes the entry stable: it executes, answers,
    // and tells every member the new commit index at once.
    let fx = h.persist(node(1));
    match &fx[..] {
        [Effect::Reply { token, reply }, Effect::Send { to: 2, msg: m2 }, Effect::Send { to: 3, msg: m3 }, Effect::Persist { record: WalRecord::Commit { group: GROUP, index: 1 }, .. }] =>
        {
            assert_eq!((*token, reply), (t1, &ok));
            for m in [m2, m3] {
                assert!(
                    matches!(&m.body, PeerBody::Append { entries, commit_index: 1, .. } if entries.is_empty()),
                    "expected an empty Append carrying commit index 1, got {m:?}"
                );
            }
        }
        other => panic!("expected [Reply, Append(commit 1) to 2 and 3, Persist(commit 1)], got {other:#?}"),
    }

    // Member 2 learns it is stable: executes, answers its client once with
    // the sequencer's result, and records the commit.
    let fx = h.deliver(node(1), node(2));
    match &fx[..] {
        [Effect::Reply { token, reply }, Effect::Send { to: 1, msg }, Effect::Persist { record: WalRecord::Commit { group: GROUP, index: 1 }, .. }] =>
        {
            assert_eq!((*token, reply), (t2, &ok));
            assert!(matches!(msg.body, PeerBody::AppendAck { match_index: 1, .. }), "{msg:?}");
        }
        other => panic!("expected [Reply, AppendAck, Persist(commit 1)] at member 2, got {other:#?}"),
    }

    // Member 3 (its stale heartbeat first, then the commit index) executes
    // too, but nobody asked it: no answer.
    let fx = h.deliver(node(1), node(3));
    assert!(replies(&fx).is_empty(), "member 3 has no client to answer: {fx:#?}");
    assert!(
        matches!(&persists(&fx)[..], [(_, WalRecord::Commit { group: GROUP, index: 1 })]),
        "member 3 records the commit and nothing else: {fx:#?}"
    );

    let value = Some(Versioned { value: b"v".to_vec(), version: 1 });
    for n in [1, 2, 3] {
        assert_eq!(h.replica(node(n)).applied_index(), 1, "node {n} executed the entry");
        assert_eq!(h.replica(node(n)).kv().get(b"k").cloned(), value, "node {n}'s state");
    }

    // Exactly one answer per asked member, ever.
    h.run_for(100);
    assert_eq!(h.replies_to(t1), vec![ok.clone()]);
    assert_eq!(h.replies_to(t2), vec![ok]);
    assert_eq!(h.replies.len(), 2, "{:?}", h.replies);
}

#[test]
fn a_member_missing_one_ack_holds_every_answer_back() {
    // The sequencer and member 2 hold the entry durably; member 3 received
    // it but never reaches its disk. Nobody may answer.
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    let req = request(id, epoch, put("k", "v"));
    let mut tokens = Vec::new();
    for n in [2, 3, 1] {
        tokens.push(h.client(node(n), req.clone()).0);
    }
    h.deliver_all();
    h.persist(node(1));
    h.persist(node(2));
    h.deliver_all();
    for _ in 0..5 {
        h.advance(20);
        h.tick_all();
        h.deliver_all();
        h.persist(node(1));
        h.persist(node(2));
    }
    assert!(h.replies.is_empty(), "answered before stable: {:?}", h.replies);
    for n in [1, 2, 3] {
        assert_eq!(h.replica(node(n)).applied_index(), 0, "node {n} executed before stable");
        assert_eq!(h.replica(node(n)).commit_index(), 0);
    }

    // Member 3's fsync: stable, and every asked member answers once.
    h.persist(node(3));
    h.settle();
    for t in tokens {
        assert_eq!(h.take_reply(t), response(id, Ok(OpResult::Written { version: 1 })));
    }
}
