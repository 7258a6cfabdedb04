//! getDecision and presumed abort: a coordinator asked about a transaction
//! it has no record of logs an abort for it first and answers only once that
//! is committed, so the transaction can never commit afterwards; one it has
//! a decision for is answered at once. A participant prepared for too long
//! asks by itself, and its locks go once the answer is applied.

mod common;

use common::*;
use pactdb_core::log::Payload;
use pactdb_core::replica::TxnTiming;
use pactdb_core::state::op::OpResult;
use pactdb_core::state::txn::{AbortReason, TxnId, TxnOutcome};
use pactdb_core::wire::{ClientReply, PeerBody, WalRecord};

fn logged(fx: &[pactdb_core::Effect]) -> Vec<Payload> {
    persists(fx)
        .into_iter()
        .filter_map(|(_, r)| match r {
            WalRecord::Entry { group: GROUP, entry } => Some(entry.payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn no_record_means_an_abort_is_logged_before_the_answer() {
    let mut h = Harness::two_groups();
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };

    // Node 1 leads epoch 2 but has committed nothing in it: its log may not
    // hold every decision an earlier primary made, so it answers nothing
    // for "no record" yet, and commits a no-op of its epoch first.
    let fx = h.inject(node(1), node(2), PeerBody::GetDecision { group: OTHER, txn: id });
    assert_eq!(logged(&fx), vec![Payload::Noop]);
    assert!(sends(&fx).iter().all(|(_, b)| matches!(b, PeerBody::Append { .. })), "{fx:#?}");
    h.settle();

    // Asked again (a participant repeats getDecision): the abort is logged.
    let fx = h.inject(node(1), node(2), PeerBody::GetDecision { group: OTHER, txn: id });
    let logged = logged(&fx);
    let abort = TxnOutcome::Aborted { reason: AbortReason::NoRecord };
    assert_eq!(
        logged,
        vec![Payload::Decide {
            txn: id,
            commit: false,
            participants: vec![],
            outcome: abort.clone(),
            writes: vec![],
            digest: 0
        }]
    );
    assert!(!sends(&fx).iter().any(|(_, b)| matches!(b, PeerBody::DoAbort { .. })), "not before it is durable");

    h.settle();
    assert!(h.sent.iter().any(|(to, m)| *to == 2 && m.body == PeerBody::DoAbort { group: OTHER, txn: id }));

    // The client's commit of that id, arriving late, gets the abort and runs nothing.
    let e = h.view_of(node(1), GROUP).epoch;
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let (token, fx) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));
    assert!(persists(&fx).is_empty() && sends(&fx).is_empty(), "{fx:#?}");
    assert_eq!(h.take_reply(token), answered_at(rid(9, 1), Ok(OpResult::Txn(abort)), 2));
}

#[test]
fn a_logged_decision_is_answered_at_once() {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(GROUP, "a"), key_in(OTHER, "b"));
    let e = h.view_of(node(1), GROUP).epoch;
    let (token, _) = h.client(node(1), commit(rid(9, 1), GROUP, e, txn(&[], &[(&a, "1"), (&b, "2")])));
    h.settle();
    h.take_reply(token);
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let fx = h.inject(node(1), node(3), PeerBody::GetDecision { group: OTHER, txn: id });
    assert_eq!(sends(&fx), vec![(3, PeerBody::DoCommit { group: OTHER, txn: id })]);
    assert_eq!(fx.len(), 1, "{fx:#?}");
}

#[test]
fn a_participant_prepared_for_too_long_asks_and_is_released_by_the_answer() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    // A coordinator (node 1, group 0) that never decides: it sent
    // canCommit? and forgot (as if it crashed before logging anything).
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let part = part_of(&h, &txn(&[], &[(key_in(GROUP, "a").as_str(), "1"), (&b, "2")]), OTHER);
    h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part });
    h.settle();
    let prepared_at = h.now;

    // Nothing happens before the timeout; then getDecision goes out.
    h.run_until(2_000, |h| h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::GetDecision { .. })));
    assert!(h.now >= prepared_at + TxnTiming::default().prepared_timeout_ms, "asked only after the timeout");
    assert!(h.sent.iter().any(|(to, m)| *to == 1 && m.body == PeerBody::GetDecision { group: OTHER, txn: id }));

    // The coordinator presumes abort (logged), the participant resolves it.
    h.run_until(500, |h| h.live().iter().all(|&n| h.replica_of(node(n), OTHER).state().prepared.is_empty()));
    for n in [1, 2, 3] {
        let s = h.replica_of(node(n), OTHER).state();
        assert!(s.locks.is_empty() && s.kv.get(b.as_bytes()).is_none(), "node {n}");
    }
    assert!(matches!(
        h.replica_of(node(1), GROUP).state().sessions.lookup(id.request_id()),
        pactdb_core::state::sessions::Dedup::Done(OpResult::Txn(TxnOutcome::Aborted { reason: AbortReason::NoRecord }))
    ));
}

#[test]
fn a_status_query_without_a_record_records_an_abort_too() {
    let mut h = Harness::two_groups();
    let id = TxnId { client: 9, session: 0, seq: 7, home: GROUP };
    let e = h.view_of(node(1), GROUP).epoch;
    let status = |seq| request_to(rid(4, seq), GROUP, e, pactdb_core::state::op::Op::TxnStatus { txn: id });
    // A primary that has committed nothing of its epoch cannot answer yet.
    let (token, fx) = h.client(node(1), status(1));
    assert_eq!(logged(&fx), vec![Payload::Noop]);
    assert!(matches!(
        h.take_reply(token),
        ClientReply::Response { result: Err(pactdb_core::wire::ClientError::Unavailable { .. }), .. }
    ));
    h.settle();
    let (token, fx) = h.client(node(1), status(2));
    assert!(matches!(&logged(&fx)[..], [Payload::Decide { commit: false, .. }]), "the abort is logged: {fx:#?}");
    assert!(h.replies_to(token).is_empty(), "answered once it is committed");
    h.settle();
    let abort = TxnOutcome::Aborted { reason: AbortReason::NoRecord };
    assert_eq!(
        h.take_reply(token),
        ClientReply::Response { id: rid(4, 2), result: Ok(OpResult::Txn(abort)), at: 0, stale_ms: None }
    );
}
