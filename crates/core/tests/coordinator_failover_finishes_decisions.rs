//! A coordinator's primary that dies mid-protocol blocks nothing for long:
//! a decision it logged is found in the home group's log by the new
//! primary, which tells the participants; a transaction it had not decided
//! is aborted by the new primary when a participant asks (presumed abort,
//! logged first), and the participant's locks go.

mod common;

use common::*;
use pactdb_core::log::Payload;
use pactdb_core::state::kv::Versioned;
use pactdb_core::wire::PeerBody;

fn new_leader_of_group0(h: &Harness) -> Option<NodeId> {
    [2, 3].into_iter().find(|&n| h.replica_of(node(n), GROUP).is_primary())
}

use pactdb_core::types::NodeId;

#[test]
fn a_new_primary_tells_the_participants_a_decision_its_predecessor_logged() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));

    // The decision commits in group 0; its doCommit is lost with node 1.
    h.run_rounds_until(500, |h| h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::DoCommit { .. })));
    h.drop_if(|_, m| matches!(m.body, PeerBody::DoCommit { .. }));
    h.crash(node(1));
    for n in [2, 3] {
        let log = h.replica_of(node(n), GROUP).log();
        assert!(
            log.range(1, log.last_index()).any(|e| matches!(e.payload, Payload::Decide { commit: true, .. })),
            "node {n} holds the decision"
        );
    }

    // A new primary of group 0 takes the decision over; group 1 applies it.
    h.run_until(3_000, |h| {
        new_leader_of_group0(h).is_some()
            && [2, 3].iter().all(|&n| {
                let s = h.replica_of(node(n), OTHER).state();
                s.prepared.is_empty() && s.kv.get(b.as_bytes()).is_some()
            })
    });
    for n in [2, 3] {
        let s = h.replica_of(node(n), OTHER).state();
        assert_eq!(s.kv.get(b.as_bytes()), Some(&Versioned { value: b"2".to_vec(), version: 1 }), "node {n}");
        assert!(s.locks.is_empty(), "node {n}");
        assert_eq!(
            h.replica_of(node(n), GROUP).state().kv.get(a.as_bytes()).map(|v| v.value.clone()),
            Some(b"1".to_vec())
        );
    }
    // And retires it once group 1 acknowledged.
    h.run_until(1_000, |h| [2, 3].iter().all(|&n| h.replica_of(node(n), GROUP).state().decisions.is_empty()));
}

#[test]
fn an_undecided_transaction_is_aborted_by_the_new_primary_when_a_participant_asks() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));

    // Group 1 prepares and votes; node 1 dies before it logs a decision.
    h.run_rounds_until(500, |h| h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::Vote { group: OTHER, .. })));
    h.drop_if(|to, _| to == 1);
    h.crash(node(1));
    assert!(h.replica_of(node(2), OTHER).state().prepared.len() == 1, "group 1 holds it prepared");

    h.run_until(5_000, |h| {
        new_leader_of_group0(h).is_some()
            && [2, 3].iter().all(|&n| h.replica_of(node(n), OTHER).state().prepared.is_empty())
    });
    let leader = new_leader_of_group0(&h).unwrap();
    let log = h.replica_of(node(leader), GROUP).log();
    assert!(
        log.range(1, log.last_index()).any(|e| matches!(e.payload, Payload::Decide { commit: false, .. })),
        "the abort was logged before it was sent"
    );
    for n in [2, 3] {
        let s = h.replica_of(node(n), OTHER).state();
        assert!(s.kv.get(b.as_bytes()).is_none() && s.locks.is_empty(), "node {n}");
        assert!(h.replica_of(node(n), GROUP).state().kv.get(a.as_bytes()).is_none(), "node {n}");
    }
}
