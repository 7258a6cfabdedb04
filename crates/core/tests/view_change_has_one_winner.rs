//! When both backups suspect the primary, both propose themselves for the
//! next epoch; the config store's compare-and-set lets exactly one win, and
//! the loser follows the winner. At most one leader per epoch.

mod common;

use common::*;
use pactdb_core::replica::Role;
use pactdb_core::types::View;
use pactdb_core::wire::PeerBody;

/// Every view any node announced or streamed with, by epoch.
fn views_seen(h: &Harness) -> Vec<View> {
    let mut views: Vec<View> = h
        .sent
        .iter()
        .filter_map(|(_, m)| match &m.body {
            PeerBody::ViewAnnounce { view } | PeerBody::StaleEpoch { view } | PeerBody::Append { view, .. } => {
                Some(view.clone())
            }
            _ => None,
        })
        .collect();
    views.sort_by_key(|v| v.epoch);
    views.dedup();
    views
}

#[test]
fn two_backups_propose_and_exactly_one_becomes_primary() {
    let mut h = Harness::three_nodes();
    let e = h.view(node(1)).epoch;
    h.crash(node(1));

    // Let both backups' suspicion deadlines pass before anything is
    // delivered, so that both really do propose.
    let mut proposed = Vec::new();
    for _ in 0..1_000 {
        h.advance(1);
        for n in [2, 3] {
            h.tick(n);
            let prepares = h
                .net
                .iter()
                .any(|(_, m)| m.from == n && matches!(&m.body, PeerBody::Prepare { key, .. } if key == "group/0"));
            if prepares && !proposed.contains(&n) {
                proposed.push(n);
            }
        }
        if proposed.len() == 2 {
            break;
        }
    }
    assert_eq!(proposed.len(), 2, "both backups propose");

    // Now everything flows (with ticks, for back-offs after conflicts).
    h.run_until(5_000, |h| [2, 3].iter().any(|&n| h.replica(n).is_primary()));
    h.run_for(500);

    let primaries: Vec<_> = [2, 3].into_iter().filter(|&n| h.replica(n).is_primary()).collect();
    assert_eq!(primaries.len(), 1, "exactly one primary: {primaries:?}");
    let winner = primaries[0];
    let loser = 5 - winner;
    let view = h.view(winner);
    assert_eq!(view.epoch, e + 1, "the winner leads the next epoch");
    assert_eq!(view.leader, winner);
    assert_eq!(h.view(loser), view, "the loser follows the winner's view");
    assert_eq!(h.replica(loser).role(), Role::Backup);

    // No other view of that epoch was ever seen anywhere.
    for v in views_seen(&h).iter().filter(|v| v.epoch == e + 1) {
        assert_eq!(v, &view, "two different views of epoch {}", e + 1);
    }
}

#[test]
fn competing_proposals_in_lockstep_still_have_one_winner() {
    // Both proposers' messages are delivered in the same rounds, so their
    // ballots collide at every acceptor.
    let mut h = Harness::three_nodes();
    let e = h.view(node(1)).epoch;
    h.crash(node(1));
    let mut t = 0;
    while h.net.iter().filter(|(_, m)| matches!(&m.body, PeerBody::Prepare { key, .. } if key == "group/0")).count() < 2
    {
        t += 1;
        assert!(t < 1_000);
        h.advance(1);
        h.tick(node(2));
        h.tick(node(3));
    }
    // Deliver round by round (each round only what was in flight before it),
    // persisting after each, ticking in between.
    for _ in 0..5_000 {
        h.deliver_if(|_, _| true);
        h.persist_all();
        if [2, 3].iter().any(|&n| h.replica(n).is_primary()) {
            break;
        }
        h.advance(1);
        h.tick(node(2));
        h.tick(node(3));
    }
    h.run_for(300);
    let primaries: Vec<_> = [2, 3].into_iter().filter(|&n| h.replica(n).is_primary()).collect();
    assert_eq!(primaries.len(), 1, "{primaries:?}");
    assert_eq!(h.view(2), h.view(3));
    assert_eq!(h.view(2).epoch, e + 1);
    for v in views_seen(&h).iter().filter(|v| v.epoch == e + 1) {
        assert_eq!(v, &h.view(2));
    }
}
