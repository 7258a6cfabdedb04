//! A config-store acceptor refuses the rounds of a proposer that knows an
//! older cluster map than it learned, and answers with the map it knows: a
//! proposer whose acceptor set is two member changes old could count a
//! majority that misses the newest value (see `Node::admits_round`).

mod common;

use common::*;
use pactdb_core::wire::{Ballot, PeerBody, PeerMsg};
use pactdb_core::Effect;

const KEY: &str = "test/register";

#[test]
fn a_round_behind_the_learned_map_is_refused_with_the_map() {
    let mut h = Harness::three_nodes();
    let map = h.node(node(2)).cluster().cloned().expect("bootstrapped");
    assert_eq!(map.version, 1);
    let ballot = Ballot { round: 1000, node: 3 };

    // A node that knows no map yet (version 0) is told the map, nothing else.
    let fx = h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot, map_version: 0 });
    let told = Effect::Send { to: 3, msg: PeerMsg { from: 2, body: PeerBody::ClusterAnnounce { map: map.clone() } } };
    assert_eq!(fx, vec![told.clone()]);
    let fx = h.inject(
        node(2),
        node(3),
        PeerBody::Accept {
            key: KEY.into(),
            ballot,
            value: pactdb_core::wire::ConfigValue::Cluster(map.clone()),
            map_version: 0,
        },
    );
    assert_eq!(fx, vec![told]);

    // At the map's version the round goes on: the promise is persisted.
    let fx = h.inject(node(2), node(3), PeerBody::Prepare { key: KEY.into(), ballot, map_version: 1 });
    assert!(matches!(&fx[..], [Effect::Persist { .. }]), "{fx:#?}");
}
