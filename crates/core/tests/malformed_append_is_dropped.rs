//! An `Append` that no correct primary sends (a gap in its indexes, epochs
//! that go backwards or pass the sender's view, an entry that would replace
//! a committed one) is dropped by the backup: nothing is written, the log
//! is unchanged, and the backup does not crash.

mod common;

use common::*;
use pactdb_core::log::{Entry, Payload, SharedEntry};
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{Epoch, Index};
use pactdb_core::wire::PeerBody;
use pactdb_core::Effect;

fn entry(epoch: Epoch, index: Index) -> SharedEntry {
    Entry {
        epoch,
        index,
        payload: Payload::Effects { id: rid(7, index), response: OpResult::Deleted { existed: false }, writes: vec![] },
    }
    .into()
}

/// Sends backup 2 an append of the current view, as from primary 1.
fn append(h: &mut Harness, prev_index: Index, prev_epoch: Epoch, entries: Vec<SharedEntry>) -> Vec<Effect> {
    let view = h.view(node(2));
    let sent_ms = h.now;
    h.inject(
        node(2),
        node(1),
        PeerBody::Append { view, prev_index, prev_epoch, entries, commit_index: 0, sent_ms, acked_sent_ms: 0 },
    )
}

fn log_of(h: &Harness, n: u64) -> Vec<(Epoch, Index)> {
    let r = h.replica(node(n));
    r.log().range(1, r.last_index()).map(|e| (e.epoch, e.index)).collect()
}

#[test]
fn appends_no_correct_primary_sends_are_dropped() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(2)).epoch;
    let (_, fx) = h.client(node(1), request(rid(9, 1), epoch, put("k", "v")));
    assert!(!fx.is_empty());
    h.run_for(30); // committed everywhere, and the backups know it
    assert_eq!(h.replica(node(2)).commit_index(), 1);
    let before = log_of(&h, 2);
    assert_eq!(before, vec![(epoch, 1)]);

    let cases: Vec<(&str, Index, Epoch, Vec<SharedEntry>)> = vec![
        ("a gap in the indexes", 1, epoch, vec![entry(epoch, 2), entry(epoch, 4)]),
        ("an index that does not follow prev_index", 1, epoch, vec![entry(epoch, 3)]),
        ("an epoch lower than the entry before it", 1, epoch, vec![entry(epoch - 1, 2)]),
        ("an epoch beyond the sender's view", 1, epoch, vec![entry(epoch + 1, 2)]),
        ("a prev_epoch beyond the sender's view", 1, epoch + 1, vec![]),
        ("a different entry at a committed index", 0, 0, vec![entry(epoch - 1, 1)]),
        ("a wrong epoch for index 0", 0, epoch, vec![]),
    ];
    for (what, prev_index, prev_epoch, entries) in cases {
        let fx = append(&mut h, prev_index, prev_epoch, entries);
        assert!(!fx.iter().any(|e| matches!(e, Effect::Persist { .. })), "{what}: nothing is written: {fx:#?}");
        assert_eq!(log_of(&h, 2), before, "{what}: the log is unchanged");
        assert_eq!(h.replica(node(2)).commit_index(), 1, "{what}");
    }

    // A well-formed append of the next entry is still taken.
    let fx = append(&mut h, 1, epoch, vec![entry(epoch, 2)]);
    assert!(fx.iter().any(|e| matches!(e, Effect::Persist { .. })), "{fx:#?}");
    assert_eq!(log_of(&h, 2), vec![(epoch, 1), (epoch, 2)]);
}

/// An append whose `prev_index` lies below the backup's compacted base skips
/// the previous-entry check (the backup no longer knows that entry); its
/// entries must still agree with the base, or an entry of an older epoch
/// would follow it (found by review: it tripped `Log::append`'s epoch
/// assertion). A correct primary's append below the base is still taken.
#[test]
fn append_below_the_compacted_base_must_agree_with_it() {
    use pactdb_core::state::{Snapshot, StateMachine};
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(2)).epoch;
    let view = h.view(node(2));
    let _ = view;
    let snapshot = Snapshot { index: 10, epoch, state: StateMachine::default() };
    h.stream_snapshot(node(2), node(1), &snapshot, 1024, |_| {});
    h.persist_all();
    assert_eq!(h.replica(node(2)).log().base_index(), 10);
    assert_eq!(h.replica(node(2)).commit_index(), 10);

    // Entries 9..=11 of epoch 1 after (8, 1): entry 10 contradicts the
    // base (epoch 2), and entry 11 would go back an epoch.
    let fx = append(&mut h, 8, epoch - 1, vec![entry(epoch - 1, 9), entry(epoch - 1, 10), entry(epoch - 1, 11)]);
    assert!(!fx.iter().any(|e| matches!(e, Effect::Persist { .. })), "nothing is written: {fx:#?}");
    assert_eq!(h.replica(node(2)).last_index(), 10, "the log is unchanged");

    // The same positions as a correct primary has them are taken.
    let fx = append(&mut h, 8, epoch, vec![entry(epoch, 9), entry(epoch, 10), entry(epoch, 11)]);
    assert!(fx.iter().any(|e| matches!(e, Effect::Persist { .. })), "{fx:#?}");
    assert_eq!(log_of(&h, 2), vec![(epoch, 11)]);
}
