//! The coordinator's decision: logged in the home group, and committed there
//! (durable on every member) before any participant or the client hears it.
//! Every yes commits; one no aborts, and the aborted transaction's home part
//! is released too. A retried commit gets the recorded outcome.

mod common;

use common::*;
use pactdb_core::log::Payload;
use pactdb_core::state::op::OpResult;
use pactdb_core::state::txn::{AbortReason, TxnOutcome};
use pactdb_core::wire::{ClientReply, PeerBody};

fn committed_reply(r: &ClientReply) -> bool {
    matches!(r, ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Committed { .. })), .. })
}

#[test]
fn the_decision_is_durable_in_the_home_group_before_anyone_hears_it() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;

    // The commit goes to the home group's primary (node 1): canCommit? to
    // group 1's primary (node 2) and nothing else. Its own part it checks and
    // locks in memory; the decision will carry its writes.
    let (token, fx) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));
    assert_eq!(sends(&fx).len(), 1, "{fx:#?}");
    assert!(matches!(&sends(&fx)[..], [(2, PeerBody::CanCommit { group: OTHER, .. })]), "{fx:#?}");
    assert!(persists(&fx).is_empty(), "the home part is not prepared through the log: {fx:#?}");

    // While it collects votes, a write to the home key waits.
    let (put_token, fx) = h.client(node(1), request_to(rid(5, 1), GROUP, e, put(&a, "meanwhile")));
    assert_eq!(fx, vec![], "the write to a key of the undecided transaction waits");

    // Round by round until the decision is in node 1's log.
    let decide_index = |h: &Harness| {
        let log = h.replica_of(node(1), GROUP).log();
        log.range(1, log.last_index()).find(|e| matches!(e.payload, Payload::Decide { .. })).map(|e| e.index)
    };
    h.run_rounds_until(500, |h| decide_index(h).is_some());
    let d = decide_index(&h).unwrap();
    assert!(h.replica_of(node(1), GROUP).commit_index() < d, "just appended");
    assert!(
        !h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::DoCommit { .. })),
        "no doCommit before it is durable"
    );
    assert!(h.replies_to(token).is_empty(), "no answer before it is durable");

    // The first doCommit goes out only once the decision is committed.
    h.run_rounds_until(500, |h| h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::DoCommit { .. })));
    assert!(h.replica_of(node(1), GROUP).commit_index() >= d);
    h.settle();
    let reply = h.take_reply(token);
    assert!(committed_reply(&reply), "{reply:?}");
    // The waiting write ran after the decision, at a later version.
    match h.take_reply(put_token) {
        ClientReply::Response { result: Ok(OpResult::Written { version }), .. } => assert!(version > d),
        other => panic!("{other:?}"),
    }

    // Everyone applied it, every lock is gone, and the decision record was
    // retired once group 1 acknowledged (an `Ended` entry).
    h.run_for(30);
    for n in [1, 2, 3] {
        for g in [GROUP, OTHER] {
            let s = h.replica_of(node(n), g).state();
            assert!(s.locks.is_empty() && s.prepared.is_empty() && s.decisions.is_empty(), "node {n} group {g}: {s:?}");
        }
        assert_eq!(
            h.replica_of(node(n), GROUP).state().kv.get(a.as_bytes()).map(|v| v.value.clone()),
            Some(b"meanwhile".to_vec()),
            "the transaction's write, then the one that waited for it"
        );
        assert_eq!(
            h.replica_of(node(n), OTHER).state().kv.get(b.as_bytes()).map(|v| v.value.clone()),
            Some(b"2".to_vec())
        );
    }

    // A retried commit is answered from the record, without running again.
    let last = h.replica_of(node(1), GROUP).last_index();
    let (token, fx) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));
    assert!(persists(&fx).is_empty() && sends(&fx).is_empty(), "{fx:#?}");
    let reply = h.take_reply(token);
    assert!(committed_reply(&reply), "{reply:?}");
    assert_eq!(h.replica_of(node(1), GROUP).last_index(), last);
}

#[test]
fn one_no_vote_aborts_and_releases_the_home_part_too() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    let e1 = h.view_of(node(2), OTHER).epoch;
    // Group 1's `b` is at version 1; the transaction expects version 0.
    h.client(node(2), request_to(rid(5, 1), OTHER, e1, put(&b, "x")));
    h.settle();

    let (token, _) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[(&b, 0)], &[(&a, "1")])));
    h.run_until(500, |h| !h.replies_to(token).is_empty());
    match h.take_reply(token) {
        ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Aborted { reason })), .. } => {
            assert_eq!(reason, AbortReason::VersionChanged { key: b.clone().into_bytes(), expected: 0, actual: 1 })
        }
        other => panic!("expected an abort, got {other:?}"),
    }
    h.run_for(30);
    for n in [1, 2, 3] {
        let s = h.replica_of(node(n), GROUP).state();
        assert!(s.kv.get(a.as_bytes()).is_none(), "node {n}: the abort wrote nothing");
        assert!(s.locks.is_empty() && s.prepared.is_empty(), "node {n}: the home part was released");
    }
}

#[test]
fn a_transaction_of_one_group_commits_in_one_entry_without_two_phase_commit() {
    let mut h = Harness::two_groups();
    let (a1, a2) = (key_in(GROUP, "a"), key_in(GROUP, "z"));
    let e = h.view_of(node(1), GROUP).epoch;
    let (token, fx) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[(&a1, 0)], &[(&a1, "1"), (&a2, "2")])));
    let logged = persists(&fx);
    assert_eq!(logged.len(), 1, "{fx:#?}");
    assert!(matches!(
        &logged[0].1,
        pactdb_core::wire::WalRecord::Entry { group: GROUP, entry } if matches!(&entry.payload, Payload::Decide { commit: true, participants, writes, .. } if participants.is_empty() && writes.len() == 2)
    ));
    assert!(!sends(&fx).iter().any(|(_, b)| matches!(b, PeerBody::CanCommit { .. })));
    h.settle();
    match h.take_reply(token) {
        ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Committed { versions, .. })), .. } => {
            assert_eq!(versions, vec![(a1.into_bytes(), 1), (a2.into_bytes(), 1)])
        }
        other => panic!("{other:?}"),
    }
}
