//! A primary cut off from its backups, but still reachable by clients, stops
//! serving once its lease lapses and says so (`CutOff`, naming its view):
//! its writes could not commit and its reads may be stale, and the backups
//! that stopped hearing from it are replacing it. The front end then asks
//! the other members for the new view instead of waiting out the partition.

mod common;

use common::*;
use pactdb_core::replica::ReplicaTiming;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::ClientError;
use pactdb_core::Effect;

#[test]
fn a_primary_without_its_lease_refuses_reads_and_writes_with_cut_off() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1)).clone();
    let sent = h.now; // three_nodes() ends with an acked heartbeat sent now
    let lease_ms = ReplicaTiming::default().lease_ms;

    // Its peers are cut off; its lease still holds for `lease_ms` from the
    // last acked heartbeat, and it takes a write (which will wait).
    h.isolate(node(2));
    h.isolate(node(3));
    h.now = sent + lease_ms - 1;
    let (waiting, fx) = h.client(node(1), request(rid(7, 1), view.epoch, put("k", "v")));
    assert!(replies(&fx).is_empty(), "the write waits for its commit: {fx:?}");
    // A read of its key waits for it too.
    let (parked, fx) = h.client(node(1), request(rid(8, 1), view.epoch, get("k")));
    assert!(replies(&fx).is_empty(), "the read waits for the write: {fx:?}");

    // From the lease's end on, it refuses every request and says why.
    h.now = sent + lease_ms;
    assert!(h.replica(node(1)).cut_off(h.now));
    let cut_off = || Err(ClientError::CutOff { view: view.clone() });
    let (token, fx) = h.client(node(1), request(rid(7, 2), view.epoch, get("k")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 2), cut_off()) }]);
    let (token, fx) = h.client(node(1), request(rid(7, 3), view.epoch, put("k", "w")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 3), cut_off()) }]);
    // The next tick tells the clients still waiting here, so they ask
    // elsewhere now rather than after their attempt timeout (the write may
    // yet commit, here or at the next primary: a retry under its id runs
    // it at most once).
    let fx = h.tick(node(1));
    assert_eq!(replies(&fx), vec![(waiting, response(rid(7, 1), cut_off())), (parked, response(rid(8, 1), cut_off()))]);
    // A retry of the waiting write too: it cannot commit from here.
    let (token, fx) = h.client(node(1), request(rid(7, 1), view.epoch, put("k", "v")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 1), cut_off()) }]);
}

#[test]
fn a_primary_serves_again_once_its_backups_answer() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1)).clone();
    let lease_ms = ReplicaTiming::default().lease_ms;
    h.isolate(node(2));
    h.advance(lease_ms);
    let (token, fx) = h.client(node(1), request(rid(7, 1), view.epoch, get("k")));
    assert_eq!(
        fx,
        vec![Effect::Reply { token, reply: response(rid(7, 1), Err(ClientError::CutOff { view: view.clone() })) }]
    );

    // The partition heals before anyone replaced it: the next acked
    // heartbeat renews its lease, and it serves.
    h.heal(node(2));
    h.advance(1);
    let heartbeat_ms = h.now;
    h.tick(node(1));
    h.settle();
    assert!(!h.replica(node(1)).cut_off(h.now));
    let (token, fx) = h.client(node(1), request(rid(7, 2), view.epoch, get("k")));
    let reply = response(rid(7, 2), Ok(OpResult::Value(None)));
    assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply, lease_expires_ms: heartbeat_ms + lease_ms }]);
}

/// A fresh primary holds no lease until its first heartbeats are acked;
/// that is not being cut off, only not yet serving reads.
#[test]
fn a_fresh_primary_is_not_cut_off_before_its_first_acks() {
    let mut h = Harness::fresh_primary(1);
    let epoch = h.view(node(1)).epoch;
    h.advance(h.won_ms + lease_wait_ms() - h.now);
    assert!(!h.replica(node(1)).lease_valid(h.now));
    assert!(!h.replica(node(1)).cut_off(h.now));
    let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, get("k")));
    let no_lease = Err(ClientError::Unavailable { reason: "the primary's lease is not held".into() });
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 1), no_lease) }]);
}
