//! Reads in an active group are requests like any other: the sequencer
//! orders a Get as a log entry (it never answers from its own state, lease
//! or not), and every member answers it after executing it once it is
//! stable, so a read is ordered after every write sequenced before it.

mod common;

use common::*;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn a_get_is_sequenced_and_answered_by_every_member_after_stability() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let (t, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    h.settle();
    assert_eq!(h.take_reply(t), response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
    h.run_for(30);
    h.replies.clear();
    assert!(
        h.replica(node(1)).lease_valid(h.local_now(node(1))),
        "the sequencer holds a lease, and still does not read locally"
    );

    // The Get, multicast: members wait, the sequencer logs it as entry 2.
    let id = rid(8, 1);
    let req = request(id, epoch, get("k"));
    let (t2, fx) = h.client(node(2), req.clone());
    assert_eq!(fx, vec![]);
    let (t3, fx) = h.client(node(3), req.clone());
    assert_eq!(fx, vec![]);
    let (t1, fx) = h.client(node(1), req);
    let expected = sequenced(epoch, 2, id, get("k"));
    match &fx[..] {
        [Effect::Persist { record: WalRecord::Entry { group: GROUP, entry }, .. }, Effect::Send { to: 2, msg: m2 }, Effect::Send { to: 3, msg: m3 }] =>
        {
            assert_eq!(&**entry, &expected);
            for m in [m2, m3] {
                match &m.body {
                    PeerBody::Append { prev_index: 1, entries, commit_index: 1, .. } => {
                        assert_eq!(entries, &vec![expected.clone().into()])
                    }
                    other => panic!("expected an Append of the Get, got {other:?}"),
                }
            }
        }
        other => panic!("expected [Persist(Get entry), Append to 2, Append to 3], got {other:#?}"),
    }

    // Every member durably holds it, except the sequencer: no answer yet.
    for m in [2, 3] {
        h.deliver(node(1), node(m));
        h.persist(node(m));
        h.deliver(node(m), node(1));
    }
    assert!(h.replies.is_empty(), "a read is answered only once stable: {:?}", h.replies);
    for n in [1, 2, 3] {
        assert_eq!(h.replica(node(n)).applied_index(), 1, "node {n} has not executed the Get");
    }

    // Stable: every member executes it and answers its client once.
    h.persist(node(1));
    h.deliver_all();
    let value = answered_at(id, Ok(OpResult::Value(Some(Versioned { value: b"v".to_vec(), version: 1 }))), 2);
    for t in [t1, t2, t3] {
        assert_eq!(h.take_reply(t), value);
    }
    for n in [1, 2, 3] {
        assert_eq!(h.replica(node(n)).applied_index(), 2, "node {n} executed the Get");
        assert_eq!(h.log_ids(n), vec![(epoch, 1), (epoch, 2)]);
    }
    h.run_for(50);
    assert!(h.replies.is_empty(), "one answer per client: {:?}", h.replies);
}

#[test]
fn a_get_sees_every_write_sequenced_before_it_and_none_after() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    // A write, then a read of a missing key, then a read of the written key,
    // then a second write: all sequenced before any is stable.
    let (_, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "a")));
    let (missing, _) = h.client(node(1), request(rid(8, 1), epoch, get("other")));
    let (read, _) = h.client(node(1), request(rid(8, 2), epoch, get("k")));
    let (_, _) = h.client(node(1), request(rid(7, 2), epoch, put("k", "b")));
    assert!(h.replies.is_empty());
    h.settle();
    assert_eq!(h.take_reply(missing), answered_at(rid(8, 1), Ok(OpResult::Value(None)), 2));
    assert_eq!(
        h.take_reply(read),
        answered_at(rid(8, 2), Ok(OpResult::Value(Some(Versioned { value: b"a".to_vec(), version: 1 }))), 3)
    );
    for n in [1, 2, 3] {
        let ops: Vec<_> = h.replica(node(n)).log().range(1, 4).map(|e| sequenced_op(e)).collect();
        assert_eq!(
            ops,
            vec![Some(put("k", "a")), Some(get("other")), Some(get("k")), Some(put("k", "b"))],
            "node {n}'s log holds the reads in order"
        );
    }
}
