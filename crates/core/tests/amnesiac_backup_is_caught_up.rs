//! A backup whose WAL was cut at recovery may have lost entries it had
//! acknowledged. The primary must notice (its rejects name a log shorter than
//! what it acked) and stream it what it lost, rather than probe forever at a
//! position the backup no longer has while the group stops committing.

mod common;

use common::*;
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};

#[test]
fn a_backup_that_lost_acked_entries_is_caught_up_and_writes_go_on() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    for seq in 1..=2 {
        assert_eq!(h.put_settled(seq), response(rid(7, seq), Ok(OpResult::Written { version: seq })));
    }

    // Node 3 crashes; recovery finds its WAL torn and cuts it before the
    // first entry: both acked entries are gone.
    h.crash(node(3));
    let keep = h.wal[&3].iter().position(|r| matches!(r, WalRecord::Entry { .. })).unwrap();
    h.restart_with_cut_wal(node(3), keep);
    assert_eq!(h.replica_opt(node(3)).map_or(0, |r| r.last_index()), 0);
    // It comes back before the primary removed it: still a member, whose
    // acks of indexes 1 and 2 the primary remembers.
    h.run_until(150, |h| h.replica_opt(node(3)).is_some_and(|r| r.role() == Role::Backup));
    assert!(h.view(node(1)).is_member(3));

    // The next write must commit, and node 3 must end with the whole log.
    let (t, _) = h.client(node(1), request(rid(7, 3), epoch, put("k3", "v")));
    h.run_until(2_000, |h| !h.replies_to(t).is_empty());
    let reply = h.take_reply(t);
    assert!(matches!(reply, pactdb_core::wire::ClientReply::Response { result: Ok(_), .. }), "{reply:?}");
    h.run_for(50);
    assert_eq!(h.log_ids(node(3)), h.log_ids(node(1)));
    assert_eq!(h.replica(node(3)).kv().digest(), h.replica(node(1)).kv().digest());
    let rejects = h.sent.iter().filter(|(_, m)| matches!(m.body, PeerBody::AppendReject { .. })).count();
    assert!(rejects < 20, "the primary probed {rejects} times");
}
