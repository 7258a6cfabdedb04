//! A restarted replica acks nothing until it has read its group's view from
//! the config store in this incarnation: its log proves only the epochs of
//! its entries, and a member that had led newer epochs without writing in
//! them would otherwise ack a deposed primary and let it commit entries the
//! newer views lack (found by the simulator).

mod common;

use common::*;
use pactdb_core::wire::PeerBody;

#[test]
fn a_restarted_backup_acks_only_once_its_view_is_confirmed() {
    let mut h = Harness::three_nodes();
    h.crash(node(2));
    h.restart(node(2));
    assert!(h.replica_opt(node(2)).is_none_or(|r| r.awaiting_view_confirmation()));

    // The primary's heartbeat reaches it before any config-store read has:
    // it adopts the view the Append carries, but says nothing.
    h.advance(20);
    h.tick(node(1));
    let fx = h.deliver(node(1), node(2));
    assert!(
        sends(&fx).iter().all(|(_, b)| !matches!(b, PeerBody::AppendAck { .. })),
        "no ack before the view is confirmed: {fx:#?}"
    );
    assert!(h.replica(node(2)).awaiting_view_confirmation());

    // Its node reads the view from the store; the next heartbeat is acked.
    h.run_until(500, |h| !h.replica(node(2)).awaiting_view_confirmation());
    h.advance(20);
    h.tick(node(1));
    let fx = h.deliver(node(1), node(2));
    assert!(
        sends(&fx).iter().any(|(to, b)| *to == 1 && matches!(b, PeerBody::AppendAck { .. })),
        "acked once confirmed: {fx:#?}"
    );
}
