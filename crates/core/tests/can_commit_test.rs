//! canCommit?: a participant votes yes only once its prepare (the part's
//! writes and locks) is durable on every member of its group, votes no at
//! once on a conflict without logging anything, and answers a repeated
//! question the same way without preparing twice.

mod common;

use common::*;
use pactdb_core::log::{Entry, Payload};
use pactdb_core::state::txn::{AbortReason, LockMode, TxnId, Vote};
use pactdb_core::types::Mode;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

/// A transaction coordinated by group 0 (node 1) that writes `b` in group 1.
fn writes_b(h: &Harness, seq: u64, b: &str) -> (TxnId, PeerBody) {
    let txn = TxnId { client: 9, session: 0, seq, home: GROUP };
    let part = part_of(h, &txn_req(b), OTHER);
    (txn, PeerBody::CanCommit { group: OTHER, txn, part })
}

fn txn_req(b: &str) -> pactdb_core::state::txn::TxnRequest {
    txn(&[], &[(key_in(GROUP, "a").as_str(), "1"), (b, "2")])
}

#[test]
fn a_participant_votes_yes_only_once_its_prepare_is_durable_on_every_member() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let (id, can_commit) = writes_b(&h, 1, &b);
    let PeerBody::CanCommit { part, .. } = can_commit.clone() else { unreachable!() };
    let view = h.view_of(node(2), OTHER);

    // The prepare is logged and streamed; nobody hears a vote.
    let fx = h.inject(node(2), node(1), can_commit);
    let prepare = Entry { epoch: view.epoch, index: 1, payload: Payload::Prepare { txn: id, part } };
    match &fx[..] {
        [Effect::Persist { record: WalRecord::Entry { group: OTHER, entry }, .. }, Effect::Send { to: 1, msg: m1 }, Effect::Send { to: 3, msg: m3 }] =>
        {
            assert_eq!(&**entry, &prepare);
            for m in [m1, m3] {
                assert!(
                    matches!(&m.body, PeerBody::Append { entries, .. } if entries == &vec![prepare.clone().into()])
                );
            }
        }
        other => panic!("expected [Persist(Prepare), Append to 1, Append to 3], got {other:#?}"),
    }

    // Its own fsync and one backup's ack are not every member.
    assert!(sends(&h.persist(node(2))).is_empty());
    h.deliver(node(2), node(1));
    h.persist(node(1));
    let fx = h.deliver(node(1), node(2));
    assert!(
        !sends(&fx).iter().any(|(_, b)| matches!(b, PeerBody::Vote { .. })),
        "one backup is not every member: {fx:#?}"
    );

    // The last member's ack commits the prepare: now the vote goes out, with
    // the version its write will have (the prepare's index).
    h.deliver(node(2), node(3));
    h.persist(node(3));
    let fx = h.deliver(node(3), node(2));
    let votes: Vec<_> = sends(&fx).into_iter().filter(|(_, b)| matches!(b, PeerBody::Vote { .. })).collect();
    assert_eq!(
        votes,
        vec![(
            1,
            PeerBody::Vote {
                group: OTHER,
                txn: id,
                vote: Vote::Yes { versions: vec![(b.clone().into_bytes(), 1)], reads: vec![] }
            }
        )]
    );
    let state = h.replica_of(node(2), OTHER).state();
    assert!(state.prepared.contains_key(&id));
    assert!(state.locks.conflicts(
        b.as_bytes(),
        LockMode::Shared,
        TxnId { client: 9, session: 0, seq: 2, home: GROUP }
    ));
    assert!(state.kv.get(b.as_bytes()).is_none(), "a prepared write is not visible");
}

#[test]
fn a_conflicting_prepare_gets_a_no_at_once_and_logs_nothing() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let (_, first) = writes_b(&h, 1, &b);
    h.inject(node(2), node(1), first);
    h.settle();

    let (second, can_commit) = writes_b(&h, 2, &b);
    let fx = h.inject(node(2), node(1), can_commit);
    let no = Vote::No { reason: AbortReason::Locked { key: b.into_bytes() } };
    assert_eq!(sends(&fx), vec![(1, PeerBody::Vote { group: OTHER, txn: second, vote: no })]);
    assert_eq!(fx.len(), 1, "nothing is persisted or streamed: {fx:#?}");
}

#[test]
fn a_stale_read_version_gets_a_no() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let e = h.view_of(node(2), OTHER).epoch;
    h.client(node(2), request_to(rid(5, 1), OTHER, e, put(&b, "v")));
    h.settle();
    let txn = TxnId { client: 9, session: 0, seq: 1, home: GROUP };
    let part = part_of(&h, &txn_of_check(&b, 7), OTHER);
    let fx = h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn, part });
    let no = Vote::No { reason: AbortReason::VersionChanged { key: b.into_bytes(), expected: 7, actual: 1 } };
    assert_eq!(
        fx,
        vec![Effect::Send {
            to: 1,
            msg: pactdb_core::wire::PeerMsg { from: 2, body: PeerBody::Vote { group: OTHER, txn, vote: no } }
        }]
    );
}

fn txn_of_check(b: &str, version: u64) -> pactdb_core::state::txn::TxnRequest {
    txn(&[(b, version)], &[(key_in(GROUP, "a").as_str(), "1")])
}

#[test]
fn a_repeated_can_commit_gets_the_same_vote_without_a_second_prepare() {
    let mut h = Harness::two_groups();
    let b = key_in(OTHER, "b");
    let (id, can_commit) = writes_b(&h, 1, &b);
    h.inject(node(2), node(1), can_commit.clone());
    h.settle();

    let fx = h.inject(node(2), node(1), can_commit);
    let yes = Vote::Yes { versions: vec![(b.clone().into_bytes(), 1)], reads: vec![] };
    assert_eq!(sends(&fx), vec![(1, PeerBody::Vote { group: OTHER, txn: id, vote: yes })]);
    assert_eq!(fx.len(), 1, "nothing is persisted: {fx:#?}");

    // The same id with other contents is refused, and the prepared part stays.
    let mut other = part_of(&h, &txn_req(&b), OTHER);
    std::sync::Arc::make_mut(&mut other).digest ^= 1;
    let fx = h.inject(node(2), node(1), PeerBody::CanCommit { group: OTHER, txn: id, part: other });
    assert!(
        matches!(&sends(&fx)[..], [(1, PeerBody::Vote { vote: Vote::No { reason: AbortReason::Refused { .. } }, .. })]),
        "{fx:#?}"
    );
    assert!(h.replica_of(node(2), OTHER).state().prepared.contains_key(&id));
}

#[test]
fn a_group_below_its_min_members_votes_no_and_logs_nothing() {
    let mut h = Harness::two_groups_with(Mode::Passive, Mode::Passive, 3, &[]);
    let b = key_in(OTHER, "b");
    // Node 3 goes silent; group 1's primary (node 2) drops it: two members
    // left of the three its operator asked for.
    h.isolate(node(3));
    h.run_until(3_000, |h| h.view_of(node(2), OTHER).members == vec![1, 2]);
    let (txn, can_commit) = writes_b(&h, 1, &b);
    let fx = h.inject(node(2), node(1), can_commit);
    match &sends(&fx)[..] {
        [(1, PeerBody::Vote { txn: t, vote: Vote::No { reason: AbortReason::Refused { reason } }, .. })] => {
            assert_eq!(*t, txn);
            assert!(reason.contains("min_members"), "{reason}");
        }
        other => panic!("expected a no naming min_members, got {other:?}"),
    }
    assert!(persists(&fx).is_empty(), "{fx:#?}");
}
