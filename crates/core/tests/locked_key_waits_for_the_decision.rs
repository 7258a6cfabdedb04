//! A key a prepared transaction will write cannot be read or written until
//! the transaction resolves: its decision may already be known to a client,
//! so the old value would be a stale read, and a write in between would
//! slip under the prepared one. Both wait, and run once the lock is gone.

mod common;

use common::*;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::state::txn::TxnId;
use pactdb_core::wire::PeerBody;

fn prepare_b(h: &mut Harness, b: &str) -> TxnId {
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let part = part_of(h, &txn(&[], &[(key_in(GROUP, "a").as_str(), "1"), (b, "new")]), OTHER);
    h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part });
    h.settle();
    id
}

#[test]
fn a_read_of_a_prepared_key_waits_and_sees_the_committed_value() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let e = h.view_of(node(2), OTHER).epoch;
    let id = prepare_b(&mut h, &b);

    let (token, fx) = h.client(node(2), request_to(rid(5, 1), OTHER, e, get(&b)));
    assert_eq!(fx, vec![], "the read waits");
    h.settle();
    assert!(h.replies_to(token).is_empty());

    h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: id });
    h.settle();
    let read = Versioned { value: b"new".to_vec(), version: 1 };
    assert_eq!(h.take_reply(token), answered_at(rid(5, 1), Ok(OpResult::Value(Some(read))), 2));
}

#[test]
fn a_write_to_a_prepared_key_waits_and_lands_after_the_transaction() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let e = h.view_of(node(2), OTHER).epoch;
    let id = prepare_b(&mut h, &b);

    let (token, fx) = h.client(node(2), request_to(rid(5, 1), OTHER, e, put(&b, "later")));
    assert_eq!(fx, vec![], "nothing is logged while the key is locked");

    h.inject(node(2), node(1), PeerBody::DoAbort { group: OTHER, txn: id });
    h.settle();
    assert_eq!(h.take_reply(token), response(rid(5, 1), Ok(OpResult::Written { version: 3 })));
    let v = h.replica_of(node(2), OTHER).state().kv.get(b.as_bytes()).cloned();
    assert_eq!(v, Some(Versioned { value: b"later".to_vec(), version: 3 }));
}

#[test]
fn a_read_of_a_key_only_checked_by_a_prepared_transaction_does_not_wait() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let e = h.view_of(node(2), OTHER).epoch;
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let part = part_of(&h, &txn(&[(&b, 0)], &[(key_in(GROUP, "a").as_str(), "1")]), OTHER);
    h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part });
    h.settle();
    let (token, _) = h.client(node(2), request_to(rid(5, 1), OTHER, e, get(&b)));
    assert_eq!(h.take_reply(token), answered_at(rid(5, 1), Ok(OpResult::Value(None)), 1));
}
