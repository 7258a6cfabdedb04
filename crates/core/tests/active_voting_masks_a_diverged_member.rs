//! `Bugs::diverge_state` makes one member's state silently go wrong (the
//! simulator's divergence injection). A voting front end still returns the
//! right value and names that member; a first-answer front end returns
//! whatever arrives first, the wrong value included. Members and front ends
//! are driven together here: the front end's sends go to the nodes, the
//! nodes' replies back to it.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::fe::{FeEffect, FrontEnd};
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{Mode, NodeId};
use pactdb_core::wire::{ClientMsg, ClientReply};
use pactdb_core::ClientToken;
use rand_chacha::ChaCha8Rng;

/// Node 3's state diverges; `k` = "v" is written through the group.
fn diverged_group(voting: bool) -> Harness {
    let bugs = Bugs { diverge_state: true, ..Bugs::default() };
    let mut h = Harness::active_with_bugs(voting, &[(3, bugs)]);
    let epoch = h.view(node(1)).epoch;
    let (t, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    h.settle();
    assert_eq!(h.take_reply(t), response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
    let value = |h: &Harness, n| h.replica(node(n)).kv().get(b"k").map(|v| v.value.clone());
    assert_eq!(value(&h, 1), Some(b"v".to_vec()));
    assert_eq!(value(&h, 2), Some(b"v".to_vec()));
    assert_eq!(value(&h, 3), Some(b"v!".to_vec()), "node 3's state went wrong");
    assert_ne!(h.replica(node(3)).kv().digest(), h.replica(node(1)).kv().digest());
    h
}

/// A front end's Get of "k", carried to the nodes and settled; returns the
/// front end and each node's reply, in node order.
fn read_k(h: &mut Harness, voting: bool) -> (FrontEnd, ChaCha8Rng, Vec<(NodeId, ClientReply)>) {
    let cluster = group_map(&[1, 2, 3], 1, Mode::Active, voting);
    let (mut fe, mut rng) = front_end_of(cluster, h.view(node(1)));
    fe.submit(h.now, &mut rng, get("k"));
    let send = |h: &mut Harness, fe: &mut FrontEnd| -> Vec<(NodeId, ClientToken)> {
        let mut asked = Vec::new();
        for e in fe.take_effects() {
            let (to, req) = sent_request(&e).expect("the front end only sends requests");
            let (token, _) = h.client(node(to), ClientMsg::Request(req));
            asked.push((to, token));
        }
        assert_eq!(asked.iter().map(|a| a.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        h.settle();
        asked
    };
    // The first attempt names no session: the sequencer says where one
    // starts (the members stay silent), and the front end sends it again.
    let asked = send(h, &mut fe);
    let open = h.take_reply(asked[0].1);
    fe.on_reply(h.now, &mut rng, 1, open);
    let asked = send(h, &mut fe);
    let answers = asked.into_iter().map(|(n, t)| (n, h.take_reply(t))).collect();
    (fe, rng, answers)
}

fn value(v: &str) -> OpResult {
    OpResult::Value(Some(Versioned { value: v.as_bytes().to_vec(), version: 1 }))
}

#[test]
fn a_voting_front_end_returns_the_right_value_and_names_the_diverged_member() {
    let mut h = diverged_group(true);
    let (mut fe, mut rng, answers) = read_k(&mut h, true);
    // The wrong answer arrives first.
    let order = [3, 1, 2];
    let mut done = Vec::new();
    for n in order {
        let (_, reply) = answers.iter().find(|a| a.0 == n).cloned().expect("every member answered");
        fe.on_reply(h.now, &mut rng, n, reply);
        done.extend(fe.take_effects());
    }
    match &done[..] {
        [FeEffect::Dissent { group: GROUP, members, .. }, FeEffect::Done { result, .. }] => {
            assert_eq!(members, &vec![3]);
            assert_eq!(result, &Ok(value("v")));
        }
        other => panic!("expected [Dissent(3), Done(v)], got {other:#?}"),
    }
}

#[test]
fn a_first_answer_front_end_can_return_the_diverged_value() {
    let mut h = diverged_group(false);
    let (mut fe, mut rng, answers) = read_k(&mut h, false);
    let (_, reply) = answers.iter().find(|a| a.0 == 3).cloned().expect("node 3 answered");
    fe.on_reply(h.now, &mut rng, 3, reply);
    match &fe.take_effects()[..] {
        [FeEffect::Done { result, .. }] => {
            assert_eq!(result, &Ok(value("v!")), "the first answer wins, wrong or not")
        }
        other => panic!("expected [Done], got {other:#?}"),
    }
}
