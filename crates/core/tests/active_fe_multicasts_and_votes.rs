//! The front end of an active group sends each request to every member of
//! the view. Without voting it completes the operation with the first
//! answer, from any member; in voting mode it waits for f+1 identical
//! answers (of a group placed on 2f+1 nodes) and names the members that
//! answered differently.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FrontEnd, OpId};
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{Mode, RequestId};
use pactdb_core::wire::{ClientMsg, ClientRequest};
use rand_chacha::ChaCha8Rng;

fn active_front_end(voting: bool) -> (FrontEnd, ChaCha8Rng) {
    front_end_of(group_map(&[1, 2, 3], 1, Mode::Active, voting), active_view(2, 1))
}

/// Submits a put of "k" and returns its op and request id.
fn submit(fe: &mut FrontEnd, rng: &mut ChaCha8Rng) -> (OpId, RequestId) {
    let op = fe.submit(0, rng, put("k", "v"));
    (op, fe.request_id(op).expect("pending"))
}

fn value(v: &str, version: u64) -> OpResult {
    OpResult::Value(Some(Versioned { value: v.as_bytes().to_vec(), version }))
}

#[test]
fn a_request_goes_to_every_member_and_the_first_answer_completes_it() {
    let (mut fe, mut rng) = active_front_end(false);
    let (op, id) = submit(&mut fe, &mut rng);
    let req = ClientMsg::Request(ClientRequest {
        id,
        group: GROUP,
        epoch: 2,
        op: put("k", "v"),
        consistency: Default::default(),
        after: 0,
        prev: 0,
    });
    assert_eq!(
        fe.take_effects(),
        vec![
            FeEffect::Send { to: 1, msg: req.clone() },
            FeEffect::Send { to: 2, msg: req.clone() },
            FeEffect::Send { to: 3, msg: req }
        ],
        "one copy per member, the same request id everywhere"
    );

    // Member 3, not the sequencer, answers first: that completes it.
    let ok = OpResult::Written { version: 1 };
    fe.on_reply(1, &mut rng, 3, response(id, Ok(ok.clone())));
    assert_eq!(fe.take_effects(), vec![FeEffect::Done { op, id, result: Ok(ok.clone()) }]);
    assert_eq!(fe.outstanding(), 0);

    // The other members' answers come later and change nothing.
    for m in [1, 2] {
        fe.on_reply(2, &mut rng, m, response(id, Ok(ok.clone())));
        assert_eq!(fe.take_effects(), vec![]);
    }
}

#[test]
fn voting_needs_two_identical_answers_of_three() {
    let (mut fe, mut rng) = active_front_end(true);
    let (op, id) = submit(&mut fe, &mut rng);
    let sent: Vec<_> = fe.take_effects().iter().filter_map(sent_request).map(|(to, _)| to).collect();
    assert_eq!(sent, vec![1, 2, 3]);

    let answer = value("v", 1);
    fe.on_reply(1, &mut rng, 2, response(id, Ok(answer.clone())));
    assert_eq!(fe.take_effects(), vec![], "one answer of three decides nothing");
    // The same member again is still one vote.
    fe.on_reply(2, &mut rng, 2, response(id, Ok(answer.clone())));
    assert_eq!(fe.take_effects(), vec![], "a member's repeated answer is one vote");

    fe.on_reply(3, &mut rng, 3, response(id, Ok(answer.clone())));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Done { op, id, result: Ok(answer.clone()) }],
        "two identical answers decide, with no dissent"
    );
    fe.on_reply(4, &mut rng, 1, response(id, Ok(answer)));
    assert_eq!(fe.take_effects(), vec![]);
}

#[test]
fn voting_reports_the_member_that_answered_differently() {
    let (mut fe, mut rng) = active_front_end(true);
    let (op, id) = submit(&mut fe, &mut rng);
    fe.take_effects();

    let right = value("v", 1);
    let wrong = value("v!", 1);
    fe.on_reply(1, &mut rng, 1, response(id, Ok(right.clone())));
    assert_eq!(fe.take_effects(), vec![]);
    // Two answers, different: nothing is decided, nothing returned.
    fe.on_reply(2, &mut rng, 3, response(id, Ok(wrong.clone())));
    assert_eq!(fe.take_effects(), vec![], "two different answers decide nothing");

    fe.on_reply(3, &mut rng, 2, response(id, Ok(right.clone())));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Dissent { op, group: GROUP, members: vec![3] }, FeEffect::Done { op, id, result: Ok(right) }]
    );
}

#[test]
fn voting_after_a_member_left_the_view_still_needs_f_plus_one() {
    // The group is placed on 2f+1 = 3 nodes; one crashed and was removed
    // from the view. A single answer must still not decide: if it came from
    // a member whose state went wrong, nothing would mask it.
    let cluster = group_map(&[1, 2, 3], 1, Mode::Active, true);
    let shrunk = pactdb_core::types::View { members: vec![1, 2], ..active_view(3, 1) };
    let (mut fe, mut rng) = front_end_of(cluster, shrunk);
    let (op, id) = submit(&mut fe, &mut rng);
    let sent: Vec<_> = fe.take_effects().iter().filter_map(sent_request).map(|(to, _)| to).collect();
    assert_eq!(sent, vec![1, 2], "only the view's members are asked");

    let wrong = value("v!", 1);
    let right = value("v", 1);
    fe.on_reply(1, &mut rng, 2, response(id, Ok(wrong)));
    assert_eq!(fe.take_effects(), vec![], "one answer is not f+1 = 2");
    fe.on_reply(2, &mut rng, 1, response(id, Ok(right.clone())));
    assert_eq!(fe.take_effects(), vec![], "two different answers decide nothing");
    assert_eq!(fe.outstanding(), 1);

    // A second operation where both remaining members agree completes.
    let (op2, id2) = submit(&mut fe, &mut rng);
    fe.take_effects();
    fe.on_reply(3, &mut rng, 1, response(id2, Ok(right.clone())));
    assert_eq!(fe.take_effects(), vec![]);
    fe.on_reply(4, &mut rng, 2, response(id2, Ok(right.clone())));
    assert_eq!(fe.take_effects(), vec![FeEffect::Done { op: op2, id: id2, result: Ok(right) }]);
    assert_ne!(op, op2);
}
