//! A consistent read (a read-only transaction with `reads`) reads every key
//! as of one instant: each group reads its keys under shared locks. Where a
//! writer holds a key, the group waits for the writer to resolve instead of
//! voting no, and meanwhile reserves its keys, so new writers are refused
//! rather than starving the read.

mod common;

use common::*;
use pactdb_core::log::Payload;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::txn::{AbortReason, TxnId, TxnOutcome, TxnRequest, Vote};
use pactdb_core::wire::{ClientReply, PeerBody};

fn read_of(keys: &[&str]) -> TxnRequest {
    TxnRequest { reads: keys.iter().map(|k| k.as_bytes().to_vec()).collect(), ..Default::default() }
}

#[test]
fn a_consistent_read_waits_for_a_prepared_writer_and_sees_its_outcome() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    let e1 = h.view_of(node(2), OTHER).epoch;
    h.client(node(1), request_to(rid(5, 1), GROUP, e, put(&a, "a0")));
    h.client(node(2), request_to(rid(5, 2), OTHER, e1, put(&b, "b0")));
    h.settle();

    // A writer of `b` is prepared in group 1 (its coordinator silent for now).
    let writer = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let part = part_of(&h, &txn(&[], &[(&a, "x"), (&b, "b1")]), OTHER);
    h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: writer, part });
    h.settle();

    // The consistent read of both: group 1 does not vote, it waits.
    let (token, _) = h.client(node(1), request_to(rid(7, 1), GROUP, e, Op::Commit(read_of(&[&a, &b]))));
    h.settle();
    assert!(h.replies_to(token).is_empty(), "the read waits for the writer");
    assert!(!h.sent.iter().any(
        |(_, m)| matches!(&m.body, PeerBody::Vote { group: OTHER, txn, vote: Vote::No { .. } } if txn.client == 7)
    ));

    // A new writer of `b` meanwhile is refused: the read reserved it.
    let late = TxnId { client: 9, session: 0, seq: 2, home: GROUP };
    let part = part_of(&h, &txn(&[], &[(&a, "y"), (&b, "b2")]), OTHER);
    let fx = h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: late, part });
    assert!(
        matches!(&sends(&fx)[..], [(1, PeerBody::Vote { vote: Vote::No { reason: AbortReason::Locked { .. } }, .. })]),
        "{fx:#?}"
    );

    // The first writer commits in group 1; the read then goes through and
    // sees its value, with the version it was prepared at.
    h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: writer });
    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    match h.take_reply(token) {
        ClientReply::Response { result: Ok(OpResult::Txn(TxnOutcome::Committed { versions, reads })), .. } => {
            assert!(versions.is_empty());
            let got: Vec<(Vec<u8>, Option<Vec<u8>>)> =
                reads.into_iter().map(|(k, v)| (k, v.map(|v: Versioned| v.value))).collect();
            let mut want =
                vec![(a.clone().into_bytes(), Some(b"a0".to_vec())), (b.clone().into_bytes(), Some(b"b1".to_vec()))];
            want.sort();
            assert_eq!(got, want);
        }
        other => panic!("expected the committed read, got {other:?}"),
    }
    // It wrote nothing, so no decision was logged for it; its shared locks
    // are released in both groups.
    let log = h.replica_of(node(1), GROUP).log();
    assert!(
        !log.range(1, log.last_index()).any(|e| matches!(&e.payload, Payload::Decide { txn, .. } if txn.client == 7)),
        "a consistent read logs no decision"
    );
    h.run_for(50);
    for n in [1, 2, 3] {
        for g in [GROUP, OTHER] {
            let s = h.replica_of(node(n), g).state();
            assert!(s.prepared.is_empty() && s.locks.is_empty(), "node {n} group {g}");
        }
    }
}
