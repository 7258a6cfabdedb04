//! The simulator proves its checkers catch `Bugs::execute_before_stable`;
//! that proof means something only if the switch really makes a member
//! execute and answer before the entry is stable. Here a member with the
//! bug answers as soon as the sequencer's Append reaches it (before its own
//! fsync, before anyone committed), while a correct member in the very same
//! state stays silent.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::WalRecord;
use pactdb_core::Effect;

#[test]
fn a_member_with_the_bug_answers_before_the_entry_is_stable() {
    let bugs = Bugs { execute_before_stable: true, ..Bugs::default() };
    let mut h = Harness::active_with_bugs(false, &[(2, bugs)]);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    let req = request(id, epoch, put("k", "v"));
    let (t2, _) = h.client(node(2), req.clone());
    let (t3, _) = h.client(node(3), req.clone());
    let (t1, _) = h.client(node(1), req);

    // Member 2 (the bug): the Append alone makes it execute and answer, in
    // the same step as it asks for the entry to be persisted.
    let fx = h.deliver(node(1), node(2));
    match &fx[..] {
        [Effect::Persist { record: WalRecord::Entry { .. }, .. }, Effect::Reply { token, reply }] => {
            assert_eq!(*token, t2);
            assert_eq!(reply, &response(id, Ok(OpResult::Written { version: 1 })));
        }
        other => panic!("expected [Persist(entry), Reply] from the buggy member, got {other:#?}"),
    }
    assert_eq!(h.replica(node(2)).applied_index(), 1, "executed");
    assert_eq!(h.replica(node(2)).commit_index(), 0, "while not stable");
    assert_eq!(h.replica(node(1)).commit_index(), 0, "the sequencer has committed nothing");
    assert_eq!(h.replica(node(2)).kv().get(b"k").map(|v| v.value.clone()), Some(b"v".to_vec()));

    // Member 3 (correct), the same input: logs it, answers nothing.
    let fx = h.deliver(node(1), node(3));
    assert!(replies(&fx).is_empty(), "{fx:#?}");
    assert_eq!(h.replica(node(3)).applied_index(), 0);

    // Nothing else is affected: once stable, the others answer, and the
    // buggy member does not answer twice.
    h.settle();
    let ok = response(id, Ok(OpResult::Written { version: 1 }));
    assert_eq!(h.take_reply(t1), ok);
    assert_eq!(h.take_reply(t3), ok);
    assert_eq!(h.replies_to(t2), vec![ok]);
}

#[test]
fn the_answered_write_can_be_lost() {
    // What makes the bug dangerous: the buggy member answered for an entry
    // no disk holds yet. The sequencer and that member lose power, and the
    // group carries on without the write the client was told happened.
    let bugs = Bugs { execute_before_stable: true, ..Bugs::default() };
    let mut h = Harness::active_with_bugs(false, &[(2, bugs)]);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    let (t2, _) = h.client(node(2), request(id, epoch, put("k", "v")));
    h.client(node(1), request(id, epoch, put("k", "v")));
    h.deliver(node(1), node(2));
    assert_eq!(
        h.replies_to(t2),
        vec![response(id, Ok(OpResult::Written { version: 1 }))],
        "the client was told the write happened"
    );
    h.crash(node(1));
    h.crash(node(2));
    h.net.clear();
    for n in [1, 2, 3] {
        assert!(
            !h.wal[&n].iter().any(|r| matches!(r, WalRecord::Entry { .. })),
            "node {n} holds no copy of the answered write"
        );
    }

    h.restart(node(1));
    h.restart(node(2));
    let leads = |h: &Harness, n| h.replica_opt(node(n)).is_some_and(|r| r.is_primary());
    h.run_until(5_000, |h| h.live().iter().any(|&n| leads(h, n)));
    let s = *h.live().iter().find(|&&n| leads(&h, n)).expect("a sequencer");
    let view = h.view(node(s));
    let (t, _) = h.client(node(s), request(rid(8, 1), view.epoch, get("k")));
    h.settle();
    assert_eq!(h.take_reply(t), answered_at(rid(8, 1), Ok(OpResult::Value(None)), 1), "the write is gone");
}
