//! A new primary commits the uncommitted suffix it inherited from an older
//! epoch only together with an entry of its own epoch (its no-op). Counted
//! as committed on its own, an inherited entry leaves no durable trace of
//! the new epoch on the members: a member that restarted, having lost its
//! lazy commit record, then took a deposed primary's appends and cut entries
//! committed in the new epoch (found by the simulator).

mod common;

use common::*;
use pactdb_core::state::op::OpResult;

#[test]
fn inherited_entries_commit_only_with_the_new_primarys_noop() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    // The write reaches both backups durably; the primary dies before it
    // hears their acks.
    let (lost, _) = h.client(node(1), request(id, epoch, put("k", "v")));
    h.crash_primary_after_backups_persist();
    assert!(h.replies_to(lost).is_empty());

    let p = h.run_until_a_backup_leads();
    let b = if p == 2 { 3 } else { 2 }; // the other old backup
    let view = h.view(node(p));
    assert_eq!(view.epoch, epoch + 1);
    // It logs a no-op of its epoch after the inherited entry.
    assert_eq!(h.log_ids(p), vec![(epoch, 1), (view.epoch, 2)]);
    assert!(h.replica(node(p)).log().range(2, 2).all(|e| e.is_noop()));

    // The backup makes both durable and acks them, while the primary's own
    // no-op is not durable yet. Index 1 is now durable on every member, but
    // it is of the old epoch: nothing commits.
    h.deliver(node(p), node(b));
    h.persist(node(b));
    h.deliver(node(b), node(p));
    assert_eq!(h.replica(node(b)).log().last_epoch(), view.epoch);
    assert_eq!(h.replica(node(p)).commit_index(), 0, "an inherited entry does not commit on its own");

    // The no-op durable at the primary too: both commit together.
    h.persist(node(p));
    assert_eq!(h.replica(node(p)).commit_index(), 2);
    h.wait_out_predecessor_lease();
    for n in [p, b] {
        assert_eq!(h.log_ids(n), vec![(epoch, 1), (view.epoch, 2)]);
        assert_eq!(h.replica(node(n)).applied_index(), 2);
        assert_eq!(h.replica(node(n)).kv().get(b"k").map(|v| v.value.clone()), Some(b"v".to_vec()));
    }
    // A retry is answered from the session table at once.
    let (retry, fx) = h.client(node(p), request(id, view.epoch, put("k", "v")));
    // Answered from the session table: covered by the applied index (2,
    // past the new primary's no-op).
    assert_eq!(replies(&fx), vec![(retry, answered_at(id, Ok(OpResult::Written { version: 1 }), 2))]);
}

#[test]
fn a_client_cannot_use_the_noop_request_id() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let (t, fx) = h.client(node(1), request(pactdb_core::types::RequestId::NOOP, epoch, put("k", "v")));
    match &replies(&fx)[..] {
        [(
            tok,
            pactdb_core::wire::ClientReply::Response {
                result: Err(pactdb_core::wire::ClientError::Malformed { .. }),
                ..
            },
        )] => {
            assert_eq!(*tok, t)
        }
        other => panic!("expected a Malformed error, got {other:#?}"),
    }
    assert!(persists(&fx).is_empty(), "nothing is logged");
}
