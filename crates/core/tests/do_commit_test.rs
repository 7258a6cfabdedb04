//! doCommit / doAbort: a participant applies (or drops) its prepared writes
//! and releases the locks through a resolve entry, and acknowledges
//! (`haveCommitted`) only once that entry is committed; a repeated decision
//! is acknowledged without a second entry, and an abort of a transaction it
//! never prepared at once.

mod common;

use common::*;
use pactdb_core::log::Payload;
use pactdb_core::state::kv::{Versioned, Write};
use pactdb_core::state::txn::{TxnId, TxnRequest};
use pactdb_core::wire::{PeerBody, WalRecord};

/// Group 1 (primary node 2) holds transaction `seq` prepared, writing `b`.
fn prepared(h: &mut Harness, seq: u64, b: &str) -> TxnId {
    let id = TxnId { client: 9, session: 0, seq, home: GROUP };
    let req: TxnRequest = txn(&[], &[(key_in(GROUP, "a").as_str(), "1"), (b, "2")]);
    let part = part_of(h, &req, OTHER);
    h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part });
    h.settle();
    assert!(h.replica_of(node(2), OTHER).state().prepared.contains_key(&id));
    id
}

fn logged_payloads(fx: &[pactdb_core::Effect]) -> Vec<Payload> {
    persists(fx)
        .into_iter()
        .filter_map(|(_, r)| match r {
            WalRecord::Entry { entry, .. } => Some(entry.payload.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn do_commit_applies_the_writes_and_acknowledges_only_once_the_resolve_is_committed() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let id = prepared(&mut h, 1, &b);

    let fx = h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: id });
    let write = Write::Put { key: b.clone().into_bytes(), value: b"2".to_vec(), version: 1 };
    assert_eq!(logged_payloads(&fx), vec![Payload::Resolve { txn: id, commit: true, writes: vec![write] }]);
    assert!(!sends(&fx).iter().any(|(_, b)| matches!(b, PeerBody::HaveCommitted { .. })), "{fx:#?}");

    h.run_rounds_until(100, |h| h.sent.iter().any(|(_, m)| matches!(m.body, PeerBody::HaveCommitted { .. })));
    let r = h.replica_of(node(2), OTHER);
    assert!(r.commit_index() >= 2, "haveCommitted follows the resolve's commit");
    // Backups learn the commit index from the next heartbeat.
    h.run_for(20);
    for n in [1, 2, 3] {
        let s = h.replica_of(node(n), OTHER).state();
        assert_eq!(s.kv.get(b.as_bytes()), Some(&Versioned { value: b"2".to_vec(), version: 1 }), "node {n}");
        assert!(s.locks.is_empty() && s.prepared.is_empty(), "node {n} released everything");
    }
}

#[test]
fn do_abort_drops_the_writes_and_releases_the_locks() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let id = prepared(&mut h, 1, &b);
    let fx = h.inject(node(2), node(1), PeerBody::DoAbort { group: OTHER, txn: id });
    assert_eq!(logged_payloads(&fx), vec![Payload::Resolve { txn: id, commit: false, writes: vec![] }]);
    h.run_for(20);
    assert!(h.sent.iter().any(|(to, m)| *to == 1 && m.body == PeerBody::HaveCommitted { group: OTHER, txn: id }));
    for n in [1, 2, 3] {
        let s = h.replica_of(node(n), OTHER).state();
        assert_eq!(s.kv.get(b.as_bytes()), None, "node {n}");
        assert!(s.locks.is_empty() && s.prepared.is_empty(), "node {n}");
    }
}

#[test]
fn a_repeated_decision_is_acknowledged_without_a_second_entry() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let id = prepared(&mut h, 1, &b);
    h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: id });
    h.settle();
    let fx = h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: id });
    assert_eq!(sends(&fx), vec![(1, PeerBody::HaveCommitted { group: OTHER, txn: id })]);
    assert_eq!(fx.len(), 1, "{fx:#?}");
    // A late canCommit? of the finished transaction does not prepare it again.
    let part = part_of(&h, &txn(&[], &[(key_in(GROUP, "a").as_str(), "1"), (&b, "2")]), OTHER);
    let fx = h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part });
    assert!(persists(&fx).is_empty(), "{fx:#?}");
    assert!(h.replica_of(node(2), OTHER).state().prepared.is_empty());
}

#[test]
fn do_abort_of_a_transaction_never_prepared_here_is_acknowledged_at_once() {
    let mut h = Harness::two_groups();
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let fx = h.inject(node(2), node(1), PeerBody::DoAbort { group: OTHER, txn: id });
    assert_eq!(sends(&fx), vec![(1, PeerBody::HaveCommitted { group: OTHER, txn: id })]);
    assert_eq!(fx.len(), 1, "nothing is logged: {fx:#?}");
}

#[test]
fn do_commit_of_a_transaction_never_prepared_here_is_not_acknowledged() {
    let mut h = Harness::two_groups();
    let id = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let fx = h.inject(node(2), node(1), PeerBody::DoCommit { group: OTHER, txn: id });
    assert_eq!(fx, vec![], "acknowledging would hide a lost part");
}
