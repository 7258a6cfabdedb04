//! Every message carries its epoch; one from an older epoch is refused and
//! answered with the current view, so the sender catches up instead of
//! acting on a view that no longer exists.

mod common;

use common::*;
use pactdb_core::log::{Entry, Payload};
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{ClientError, PeerBody, PeerMsg};
use pactdb_core::Effect;

#[test]
fn a_client_request_with_an_old_epoch_gets_the_current_view() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1));
    assert_eq!(view.epoch, 2);
    for op in [put("k", "v"), get("k")] {
        let (token, fx) = h.client(node(1), request(rid(7, 1), 1, op));
        assert_eq!(
            fx,
            vec![Effect::Reply {
                token,
                reply: response(rid(7, 1), Err(ClientError::StaleEpoch { view: view.clone() }))
            }]
        );
    }
    // A future epoch is no better: the primary has not won it.
    let (token, fx) = h.client(node(1), request(rid(7, 2), 3, put("k", "v")));
    assert_eq!(
        fx,
        vec![Effect::Reply { token, reply: response(rid(7, 2), Err(ClientError::StaleEpoch { view: view.clone() })) }]
    );
    assert!(h.unsynced[&1].is_empty(), "nothing was written");
    assert_eq!(h.replica(node(1)).last_index(), 0);
}

#[test]
fn an_append_from_an_old_epoch_gets_the_current_view() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(2));
    let mut old = view.clone();
    old.epoch = 1;
    // A delayed Append of epoch 1, carrying an entry, reaches backup 2.
    let entry = Entry {
        epoch: 1,
        index: 1,
        payload: Payload::Effects { id: rid(7, 1), response: OpResult::Deleted { existed: false }, writes: vec![] },
    };
    let fx = h.inject(
        node(2),
        node(1),
        PeerBody::Append {
            view: old,
            prev_index: 0,
            prev_epoch: 0,
            entries: vec![entry.into()],
            commit_index: 1,
            sent_ms: h.now,
            acked_sent_ms: 0,
        },
    );
    assert_eq!(
        fx,
        vec![Effect::Send { to: 1, msg: PeerMsg { from: 2, body: PeerBody::StaleEpoch { view: view.clone() } } }]
    );
    assert_eq!(h.replica(node(2)).last_index(), 0, "the stale entry was not taken");
    assert_eq!(h.replica(node(2)).commit_index(), 0);
    assert_eq!(h.view(node(2)), view);
}

/// The realistic case: an old primary, cut off while the others moved on,
/// comes back and streams in its old epoch. It is told the new view, stops
/// acting as primary, and answers its clients NotLeader.
#[test]
fn a_deposed_primary_learns_the_new_view_and_steps_down() {
    let mut h = Harness::three_nodes();
    h.isolate(node(1));
    // Only 2 and 3 run, until one of them leads epoch 3.
    let mut t = 0;
    while ![2, 3].iter().any(|&n| h.replica(n).is_primary()) {
        t += 1;
        assert!(t < 2000, "no new primary");
        h.advance(1);
        h.tick(node(2));
        h.tick(node(3));
        h.settle();
    }
    let new = h.view(node(2));
    assert_eq!(new.epoch, 3);
    assert!(!new.is_member(1));

    // Node 1 still believes it leads epoch 2 (its lease lapsed, so it must
    // not serve reads: it says it is cut off, naming its view).
    assert!(h.replica(node(1)).is_primary());
    assert!(!h.replica(node(1)).lease_valid(h.now));
    let (token, fx) = h.client(node(1), request(rid(7, 1), 2, get("k")));
    assert_eq!(
        replies(&fx),
        vec![(token, response(rid(7, 1), Err(ClientError::CutOff { view: h.view(node(1)).clone() })))]
    );

    // A write is refused the same way: it could not commit (the backups
    // refuse its epoch), so it is not even taken.
    let (wtoken, fx) = h.client(node(1), request(rid(7, 2), 2, put("k", "v")));
    assert_eq!(
        replies(&fx),
        vec![(wtoken, response(rid(7, 2), Err(ClientError::CutOff { view: h.view(node(1)).clone() })))]
    );
    h.heal(node(1));
    h.advance(20);
    h.tick(node(1));
    // It heartbeats both old backups in epoch 2.
    let appends: Vec<_> = h
        .net
        .iter()
        .filter(|(_, m)| m.from == 1 && matches!(m.body, PeerBody::Append { .. }))
        .map(|(to, m)| match &m.body {
            PeerBody::Append { view, prev_index: 0, entries, .. } if view.epoch == 2 => {
                (*to, entries.iter().map(|e| e.index).collect::<Vec<_>>())
            }
            other => panic!("expected an Append of epoch 2 after index 0, got {other:?}"),
        })
        .collect();
    assert_eq!(appends, vec![(2, vec![]), (3, vec![])], "it heartbeats both old backups: {:#?}", h.net);
    for b in [2, 3] {
        let fx = h.deliver_if(|to, m| to == b && m.from == 1 && matches!(m.body, PeerBody::Append { .. }));
        let stale = Effect::Send { to: 1, msg: PeerMsg { from: b, body: PeerBody::StaleEpoch { view: new.clone() } } };
        assert_eq!(fx, vec![stale], "backup {b} refuses the old epoch");
    }
    // Node 1 learns the view and steps down; nobody was waiting on it.
    let fx = h.deliver_if(|to, m| to == 1 && matches!(m.body, PeerBody::StaleEpoch { .. }));
    assert_eq!(replies(&fx), vec![]);
    assert_eq!(h.view(node(1)), new);
    assert_eq!(h.replica(node(1)).role(), Role::Joining);
    let (token, fx) = h.client(node(1), request(rid(7, 3), 3, put("k", "v")));
    assert_eq!(
        fx,
        vec![Effect::Reply { token, reply: response(rid(7, 3), Err(ClientError::NotLeader { view: Some(new) })) }]
    );
}
