//! A config-store acceptor answers `Promise` and `Accepted` only once the
//! state they promise is durable: an acceptor that forgot a promise after a
//! crash could let two proposals win the same epoch. (A `Reject` may go out
//! at once: it reveals only a promise that is already durable.)

mod common;

use common::*;
use pactdb_core::types::{Mode, View};
use pactdb_core::wire::{Ballot, ConfigValue, PeerBody, PeerMsg, WalRecord};
use pactdb_core::Effect;

const KEY: &str = "test/register";

fn value(epoch: u64) -> ConfigValue {
    ConfigValue::View(View {
        group: 9,
        epoch,
        mode: Mode::Passive,
        leader: 3,
        members: vec![2, 3],
        min_members: 1,
        placement: vec![2, 3],
    })
}

#[test]
fn promise_is_held_until_persisted() {
    let mut h = Harness::three_nodes();
    let ballot = Ballot { round: 1000, node: 3 };

    let fx = h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot, map_version: 1 });
    let lsn = match &fx[..] {
        [Effect::Persist { lsn, record: WalRecord::Acceptor { key, promised, accepted: None } }] => {
            assert_eq!((key.as_str(), *promised), (KEY, ballot));
            *lsn
        }
        other => panic!("expected only the acceptor's record, got {other:#?}"),
    };

    // The same Prepare again (a duplicate): no new record, and no Promise
    // either, because the first one is not durable yet.
    let fx = h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot, map_version: 1 });
    assert_eq!(fx, vec![], "nothing may leave before the promise is durable");

    // Durable: both Promises go out, and nothing else.
    let fx = h.persist_upto(node(2), lsn);
    let promise = Effect::Send {
        to: 3,
        msg: PeerMsg { from: 2, body: PeerBody::Promise { key: KEY.into(), ballot, accepted: None } },
    };
    assert_eq!(fx, vec![promise.clone(), promise]);
}

#[test]
fn accepted_is_held_until_persisted() {
    let mut h = Harness::three_nodes();
    let ballot = Ballot { round: 1000, node: 3 };
    h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot, map_version: 1 });
    h.persist(node(2));

    let fx = h.inject(node(2), node(3), PeerBody::Accept { key: KEY.into(), ballot, value: value(5), map_version: 1 });
    let lsn = match &fx[..] {
        [Effect::Persist { lsn, record: WalRecord::Acceptor { key, promised, accepted: Some((b, v)) } }] => {
            assert_eq!((key.as_str(), *promised, *b, v), (KEY, ballot, ballot, &value(5)));
            *lsn
        }
        other => panic!("expected only the acceptor's record, got {other:#?}"),
    };

    let fx = h.persist_upto(node(2), lsn);
    assert_eq!(
        fx,
        vec![Effect::Send { to: 3, msg: PeerMsg { from: 2, body: PeerBody::Accepted { key: KEY.into(), ballot } } }]
    );

    // A later Prepare learns the accepted value, again only once durable.
    let higher = Ballot { round: 1001, node: 1 };
    let fx = h.inject(node(2), node(1), PeerBody::Prepare { key: KEY.into(), ballot: higher, map_version: 1 });
    assert!(matches!(&fx[..], [Effect::Persist { .. }]), "{fx:#?}");
    let fx = h.persist(node(2));
    assert_eq!(
        fx,
        vec![Effect::Send {
            to: 1,
            msg: PeerMsg {
                from: 2,
                body: PeerBody::Promise { key: KEY.into(), ballot: higher, accepted: Some((ballot, value(5))) }
            }
        }]
    );
}

#[test]
fn a_refusal_promises_nothing_and_needs_no_fsync() {
    let mut h = Harness::three_nodes();
    let high = Ballot { round: 1000, node: 3 };
    h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot: high, map_version: 1 });
    h.persist(node(2));

    let low = Ballot { round: 999, node: 1 };
    for body in [
        PeerBody::Prepare { key: KEY.into(), ballot: low, map_version: 1 },
        PeerBody::Accept { key: KEY.into(), ballot: low, value: value(5), map_version: 1 },
    ] {
        let fx = h.inject(node(2), node(1), body);
        assert_eq!(
            fx,
            vec![Effect::Send {
                to: 1,
                msg: PeerMsg { from: 2, body: PeerBody::Reject { key: KEY.into(), ballot: low, promised: high } }
            }]
        );
    }
}

/// In a real view change the winner learns it only after a majority of
/// acceptors persisted the new view.
#[test]
fn a_view_change_completes_only_after_a_majority_persisted() {
    let mut h = Harness::three_nodes();
    h.isolate(node(1));
    // Node 2 stops hearing from the primary and proposes itself.
    let proposes =
        |h: &Harness| h.net.iter().any(|(_, m)| matches!(&m.body, PeerBody::Prepare { key, .. } if key == "group/0"));
    for _ in 0..400 {
        h.advance(1);
        h.tick(node(2));
        if proposes(&h) {
            break;
        }
    }
    assert!(proposes(&h), "node 2 suspects the primary");

    let mark = h.sent.len();
    // Everything flows, but node 3 never reaches its disk: node 2's own
    // acceptor is one of three, no majority, so node 2 must not win. Node 2
    // keeps running: a ballot refused as too low is retried higher after a
    // back-off, until one reaches node 3's acceptor as a promise to persist.
    for t in 0.. {
        assert!(t < 2_000, "node 3 is never asked for a promise to persist");
        h.deliver_all();
        h.persist(node(2));
        if !h.unsynced[&3].is_empty() {
            break;
        }
        h.advance(1);
        h.tick(node(2));
    }
    for _ in 0..50 {
        h.deliver_all();
        h.persist(node(2));
    }
    assert!(h.net.is_empty());
    assert!(!h.replica(node(2)).is_primary(), "won without a durable majority");
    // Node 3 promised and accepted nothing before its fsync. It may refuse
    // a ballot lower than one it promised earlier at once: a Reject reveals
    // only a promise that is already durable.
    let answers: Vec<&PeerBody> =
        h.sent[mark..].iter().filter(|(to, m)| *to == 2 && m.from == 3).map(|(_, m)| &m.body).collect();
    for body in &answers {
        match body {
            PeerBody::Reject { key, promised, .. } => assert!(
                h.wal[&3].iter().any(|r| matches!(
                    r,
                    WalRecord::Acceptor { key: k, promised: p, .. } if (k, p) == (key, promised)
                )),
                "node 3 revealed a promise it had not persisted: {body:?}"
            ),
            other => panic!("node 3 answered {other:?} before its fsync"),
        }
    }

    // Node 3's fsync releases its answers (its promise among them), and the
    // proposal completes.
    let fx = h.persist(node(3));
    let released = sends(&fx);
    assert!(
        released.iter().all(|(to, _)| *to == 2) && released.iter().any(|(_, b)| matches!(b, PeerBody::Promise { .. })),
        "{fx:#?}"
    );
    h.settle();
    assert!(h.replica(node(2)).is_primary());
    assert_eq!(h.view(node(2)).epoch, 3);
}
