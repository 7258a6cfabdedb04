//! After a failover the new primary's log is the truth: a backup holding
//! entries of an old epoch that the new primary lacks (never committed, since
//! commit needs every member) cuts them with a durable `Truncate` record and
//! ends with exactly the primary's log.

mod common;

use common::*;
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

/// Index 1 of epoch 2 is on every node; index 2 of epoch 2 only on backup 2
/// (durably). Primary 1 dies and node 3, lacking index 2, wins epoch 3.
/// Returns the harness and the two epochs.
fn diverged() -> (Harness, u64, u64) {
    let mut h = Harness::three_nodes();
    let e2 = h.view(node(1)).epoch;
    h.client(node(1), request(rid(7, 1), e2, put("a", "1")));
    h.settle();
    // A heartbeat tells the backups index 1 is committed, so node 3 inherits
    // no uncommitted suffix (and appends no no-op) when it takes over.
    h.advance(25);
    h.tick(node(1));
    h.settle();
    assert_eq!(h.replica(node(3)).commit_index(), 1);
    h.client(node(1), request(rid(7, 2), e2, put("b", "2")));
    h.drop_if(|to, _| to == 3);
    h.deliver(node(1), node(2));
    h.persist(node(2));
    h.crash(node(1));
    h.net.clear();
    // Only node 3 ticks, so only node 3 proposes.
    for _ in 0..1_000 {
        h.advance(1);
        h.tick(node(3));
        h.settle();
        if h.replica(node(3)).is_primary() {
            break;
        }
    }
    assert!(h.replica(node(3)).is_primary());
    let e3 = h.view(node(3)).epoch;
    (h, e2, e3)
}

#[test]
fn a_backup_cuts_the_old_epochs_suffix_the_new_primary_lacks() {
    let (mut h, e2, e3) = diverged();
    assert_eq!(h.log_ids(2), vec![(e2, 1), (e2, 2)]);
    assert_eq!(h.log_ids(3), vec![(e2, 1)]);
    assert_eq!(h.replica(node(2)).role(), Role::Backup);
    assert_eq!(h.view(node(2)).leader, 3);

    // The new primary writes index 2 in its epoch. Backup 2 sees its own
    // index 2 is of another epoch: it cuts after 1 (durably), then appends.
    let (token, _) = h.client(node(3), request(rid(8, 1), e3, put("c", "3")));
    let fx = h.deliver(node(3), node(2));
    match &fx[..] {
        [Effect::Persist { lsn: cut_lsn, record: WalRecord::Truncate { group: GROUP, index: 1 } }, Effect::Persist { lsn, record: WalRecord::Entry { group: GROUP, entry } }] =>
        {
            assert_eq!(*lsn, cut_lsn + 1);
            assert_eq!((entry.epoch, entry.index, entry.request_id()), (e3, 2, Some(rid(8, 1))));
        }
        other => panic!("expected [Truncate(1), Entry(3,2)] and no ack before the fsync, got {other:#?}"),
    }
    assert_eq!(h.log_ids(2), vec![(e2, 1), (e3, 2)]);

    // Once durable, the backup acks index 2; it ends with the primary's log.
    let fx = h.persist(node(2));
    assert!(matches!(&sends(&fx)[..], [(3, PeerBody::AppendAck { match_index: 2, .. })]), "{fx:#?}");
    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    assert_eq!(h.take_reply(token), response(rid(8, 1), Ok(OpResult::Written { version: 2 })));
    h.run_for(30);
    assert_eq!(h.log_ids(2), h.log_ids(3));
    assert_eq!(h.replica(node(2)).kv().digest(), h.replica(node(3)).kv().digest());
    assert_eq!(h.replica(node(2)).kv().get(b"b"), None, "the cut write never took effect");
    assert!(
        h.replies
            .iter()
            .all(|(_, _, r)| !matches!(r, pactdb_core::wire::ClientReply::Response { id, .. } if *id == rid(7, 2))),
        "the cut write was never acknowledged"
    );

    // The WAL says the same: replaying node 2's records gives the same log.
    let wal = &h.wal[&2];
    let cut = wal.iter().position(|r| matches!(r, WalRecord::Truncate { index: 1, .. })).expect("truncate persisted");
    assert!(wal[cut + 1..]
        .iter()
        .any(|r| matches!(r, WalRecord::Entry { entry, .. } if entry.epoch == e3 && entry.index == 2)));
    h.crash(node(2));
    h.restart(node(2));
    assert_eq!(h.log_ids(2), h.log_ids(3));
}

#[test]
fn a_backup_whose_prev_entry_is_of_an_old_epoch_rejects_and_is_walked_back() {
    let (mut h, e2, e3) = diverged();
    // Two writes at the new primary; the Append carrying index 2 is lost, so
    // backup 2 next sees prev = (index 2, epoch 3) against its own epoch 2.
    h.client(node(3), request(rid(8, 1), e3, put("c", "3")));
    h.drop_if(|to, _| to == 2);
    let (token, _) = h.client(node(3), request(rid(8, 2), e3, put("d", "4")));
    let fx = h.deliver(node(3), node(2));
    match &fx[..] {
        [Effect::Send { to: 3, msg }] => match &msg.body {
            PeerBody::AppendReject { group: GROUP, epoch, last_index: 1 } => assert_eq!(*epoch, e3),
            other => panic!("expected AppendReject(hint 1), got {other:?}"),
        },
        other => panic!("expected one AppendReject and nothing persisted, got {other:#?}"),
    }
    assert_eq!(h.log_ids(2), vec![(e2, 1), (e2, 2)], "a reject changes nothing");

    // The primary resends from the hint: prev = (1, epoch 2), which matches.
    let fx = h.deliver(node(2), node(3));
    match &sends(&fx)[..] {
        [(2, PeerBody::Append { prev_index: 1, prev_epoch, entries, .. })] => {
            assert_eq!(*prev_epoch, e2);
            assert_eq!(entries.iter().map(|e| (e.epoch, e.index)).collect::<Vec<_>>(), vec![(e3, 2), (e3, 3)]);
        }
        other => panic!("expected a resend from index 2, got {other:#?}"),
    }
    let fx = h.deliver(node(3), node(2));
    let records: Vec<_> = persists(&fx).into_iter().map(|(_, r)| r).collect();
    assert!(matches!(records[0], WalRecord::Truncate { group: GROUP, index: 1 }), "{records:#?}");
    assert_eq!(records.len(), 3, "the cut, then two entries: {records:#?}");

    h.run_until(1_000, |h| !h.replies_to(token).is_empty());
    assert_eq!(h.take_reply(token), response(rid(8, 2), Ok(OpResult::Written { version: 3 })));
    h.run_for(30);
    assert_eq!(h.log_ids(3), vec![(e2, 1), (e3, 2), (e3, 3)]);
    assert_eq!(h.log_ids(2), h.log_ids(3));
    assert_eq!(h.replica(node(2)).commit_index(), 3);
}
