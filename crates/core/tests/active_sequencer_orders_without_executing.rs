//! In an active group the sequencer only orders: a request becomes the next
//! log entry, carrying the request itself, streamed to every member. Nobody,
//! the sequencer included, executes or answers it before it is stable, and
//! every member executes in the sequencer's order, whatever order the front
//! ends' copies reached it in.

mod common;

use common::*;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{PeerBody, WalRecord};
use pactdb_core::Effect;

#[test]
fn the_sequencer_logs_and_streams_the_request_without_executing_it() {
    let mut h = Harness::active(false);
    let view = h.view(node(1));
    let id = rid(7, 1);
    let req = request(id, view.epoch, put("k", "v"));

    // The front end's copies to the members: they only note who asked.
    for m in [2, 3] {
        let (_, fx) = h.client(node(m), req.clone());
        assert_eq!(fx, vec![], "member {m} neither answers nor forwards");
    }

    // The sequencer: its own record of the request, then one Append per
    // member. No reply, and nothing executed.
    let (_, fx) = h.client(node(1), req);
    let expected = sequenced(view.epoch, 1, id, put("k", "v"));
    match &fx[..] {
        [Effect::Persist { record: WalRecord::Entry { group: GROUP, entry }, .. }, Effect::Send { to: 2, msg: m2 }, Effect::Send { to: 3, msg: m3 }] =>
        {
            assert_eq!(&**entry, &expected);
            for m in [m2, m3] {
                match &m.body {
                    PeerBody::Append { view: v, prev_index: 0, prev_epoch: 0, entries, commit_index: 0, .. } => {
                        assert_eq!(v, &view);
                        assert_eq!(entries, &vec![expected.clone().into()]);
                    }
                    other => panic!("expected an Append of the request, got {other:?}"),
                }
            }
        }
        other => panic!("expected [Persist(entry), Append to 2, Append to 3], got {other:#?}"),
    }

    // The members log it and say nothing before their fsync (the ack comes
    // once the entry is durable).
    for m in [2, 3] {
        let fx = h.deliver(node(1), node(m));
        match &fx[..] {
            [Effect::Persist { record: WalRecord::Entry { group: GROUP, entry }, .. }] => {
                assert_eq!(&**entry, &expected);
            }
            other => panic!("expected [Persist(entry)] alone at member {m}, got {other:#?}"),
        }
    }

    assert!(h.replies.is_empty(), "nobody answers yet: {:?}", h.replies);
    for n in [1, 2, 3] {
        assert_eq!(h.replica(node(n)).applied_index(), 0, "node {n} executed nothing");
        assert_eq!(h.replica(node(n)).kv().get(b"k"), None, "node {n}'s state is untouched");
        assert_eq!(h.log_ids(n), vec![(view.epoch, 1)]);
    }
}

#[test]
fn every_member_executes_in_the_sequencer_order() {
    // Two clients write one key; the members hear them in the opposite order
    // from the sequencer. The sequencer's order wins everywhere.
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let (a, b) = (rid(7, 1), rid(8, 1));
    let req_a = request(a, epoch, put("k", "a"));
    let req_b = request(b, epoch, put("k", "b"));
    let mut tokens = Vec::new();
    for m in [2, 3] {
        let (tb, _) = h.client(node(m), req_b.clone());
        let (ta, _) = h.client(node(m), req_a.clone());
        tokens.push((ta, a, 1));
        tokens.push((tb, b, 2));
    }
    let (ta, fx) = h.client(node(1), req_a);
    tokens.push((ta, a, 1));
    let index_of = |fx: &[Effect]| match &persists(fx)[..] {
        [(_, WalRecord::Entry { entry, .. })] => entry.index,
        other => panic!("expected one entry record, got {other:?}"),
    };
    assert_eq!(index_of(&fx), 1);
    let (tb, fx) = h.client(node(1), req_b);
    tokens.push((tb, b, 2));
    assert_eq!(index_of(&fx), 2);
    assert!(h.replies.is_empty());

    h.settle();
    for (token, id, version) in tokens {
        assert_eq!(h.take_reply(token), response(id, Ok(OpResult::Written { version })));
    }
    assert!(h.replies.is_empty());
    for n in [1, 2, 3] {
        let r = h.replica(node(n));
        let ops: Vec<_> = r.log().range(1, 2).map(|e| (e.request_id().expect("a request"), sequenced_op(e))).collect();
        assert_eq!(ops, vec![(a, Some(put("k", "a"))), (b, Some(put("k", "b")))], "node {n}'s log");
        assert_eq!(r.applied_index(), 2);
        assert_eq!(
            r.kv().get(b"k"),
            Some(&Versioned { value: b"b".to_vec(), version: 2 }),
            "node {n} ends with the sequencer's last write"
        );
    }
}
