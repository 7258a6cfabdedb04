//! Active groups coordinate and take part in transactions like passive
//! ones: their prepare, decision and resolution are entries every member
//! applies alike, and every member's state ends the same.

mod common;

use common::*;
use pactdb_core::state::op::OpResult;
use pactdb_core::state::txn::TxnOutcome;
use pactdb_core::types::Mode;
use pactdb_core::wire::ClientReply;

fn run(home: Mode, other: Mode) {
    let mut h = Harness::two_groups_of(home, other, &[]);
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    let (token, _) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[(&b, 0)], &[(&a, "1"), (&b, "2")])));
    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    let reply = h.replies_to(token).remove(0);
    assert!(
        matches!(reply, ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Committed { .. })), .. }),
        "{home} home, {other} participant: {reply:?}"
    );
    // A second transaction expecting `b` absent aborts: it is there now.
    let (token, _) = h.client(node(1), commit(rid(9, 2), GROUP, e, txn(&[(&b, 0)], &[(&a, "3")])));
    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    let reply = h.replies_to(token).remove(0);
    assert!(
        matches!(reply, ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Aborted { .. })), .. }),
        "{reply:?}"
    );
    h.run_for(50);
    for g in [GROUP, OTHER] {
        let digests: Vec<u64> = [1, 2, 3].iter().map(|&n| h.replica_of(node(n), g).state().kv.digest()).collect();
        assert!(digests.windows(2).all(|w| w[0] == w[1]), "group {g}: {digests:?}");
        for n in [1, 2, 3] {
            let s = h.replica_of(node(n), g).state();
            assert!(s.locks.is_empty() && s.prepared.is_empty(), "node {n} group {g}");
        }
    }
    assert_eq!(h.replica_of(node(3), GROUP).state().kv.get(a.as_bytes()).map(|v| v.value.clone()), Some(b"1".to_vec()));
}

#[test]
fn passive_home_with_an_active_participant() {
    run(Mode::Passive, Mode::Active);
}

#[test]
fn active_home_with_a_passive_participant() {
    run(Mode::Active, Mode::Passive);
}

#[test]
fn both_active() {
    run(Mode::Active, Mode::Active);
}
