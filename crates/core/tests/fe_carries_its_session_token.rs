//! The front end keeps, per group, the highest index an answer was covered
//! by (its session token), sends it with every session and linearizable
//! read, takes in a token another client handed over, and spreads reads
//! weaker than linearizable over the members, retrying at the leader.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, SessionToken};
use pactdb_core::state::op::OpResult;
use pactdb_core::types::RequestId;
use pactdb_core::wire::{ClientError, ClientReply, Consistency};

fn answered(id: RequestId, result: OpResult, at: u64) -> ClientReply {
    ClientReply::Response { id, result: Ok(result), at, stale_ms: None }
}

/// Opens the front end's session in the group (start 5).
fn named(fe: &mut pactdb_core::fe::FrontEnd, rng: &mut rand_chacha::ChaCha8Rng) {
    let op = fe.submit(0, rng, put("k", "v0"));
    let (to, req) = fe.take_effects().iter().find_map(sent_request).expect("sent");
    fe.on_reply(0, rng, to, response(req.id, Err(ClientError::OpenSession { start: 5 })));
    let (to, req) = fe.take_effects().iter().find_map(sent_request).expect("resent");
    fe.on_reply(0, rng, to, answered(req.id, OpResult::Written { version: 1 }, 6));
    assert!(matches!(fe.take_effects().as_slice(), [FeEffect::Done { op: o, .. }] if *o == op));
}

#[test]
fn a_write_answer_moves_the_token_and_the_next_session_read_carries_it() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    named(&mut fe, &mut rng);
    assert_eq!(fe.token(), SessionToken([(GROUP, 6)].into()));

    let op = fe.submit(1, &mut rng, put("k", "v1"));
    let (_, req) = fe.take_effects().iter().find_map(sent_request).expect("sent");
    fe.on_reply(2, &mut rng, 1, answered(req.id, OpResult::Written { version: 2 }, 17));
    assert!(matches!(fe.take_effects().as_slice(), [FeEffect::Done { op: o, .. }] if *o == op));
    assert_eq!(fe.token().to_string(), "0:17");

    // A session read carries the token, to whichever member it goes.
    let read = fe.submit_with(3, &mut rng, get("k"), Consistency::Session);
    let (to, req) = fe.take_effects().iter().find_map(sent_request).expect("sent");
    assert_eq!((req.consistency, req.after), (Consistency::Session, 17));
    assert!([1, 2, 3].contains(&to));

    // Its answer says who served it, just before it is done.
    let value = OpResult::Value(None);
    fe.on_reply(4, &mut rng, to, answered(req.id, value.clone(), 17));
    assert_eq!(
        fe.take_effects(),
        vec![
            FeEffect::ReadServed { op: read, by: to, stale_ms: None },
            FeEffect::Done { op: read, id: req.id, result: Ok(value) }
        ]
    );
}

#[test]
fn a_token_handed_over_bounds_the_next_reads_from_below() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    named(&mut fe, &mut rng);
    fe.observe_token(&"0:40,3:9".parse().expect("a token"));
    // Never lowered by an older one.
    fe.observe_token(&"0:12".parse().expect("a token"));
    assert_eq!(fe.token().to_string(), "0:40,3:9");
    fe.submit_with(1, &mut rng, get("k"), Consistency::Linearizable);
    let (to, req) = fe.take_effects().iter().find_map(sent_request).expect("sent");
    assert_eq!((to, req.after), (1, 40), "a linearizable read goes to the leader, with the token");
}

#[test]
fn a_stale_read_carries_no_token_and_a_refused_one_is_retried_at_the_leader() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    named(&mut fe, &mut rng);
    let op = fe.submit_with(1, &mut rng, get("k"), Consistency::Stale { max_ms: 20 });
    let (to, req) = fe.take_effects().iter().find_map(sent_request).expect("sent");
    assert_eq!(req.after, 0, "a stale read is bounded by time, not by the token");
    let reason = "this backup cannot serve the read: its state may be older than 20 ms".to_string();
    fe.on_reply(2, &mut rng, to, response(req.id, Err(ClientError::Unavailable { reason })));
    assert!(fe.take_effects().is_empty(), "backs off first");
    let wake = fe.next_wake_ms().expect("a retry is due");
    fe.on_tick(wake, &mut rng);
    let (to, _) = fe.take_effects().iter().find_map(sent_request).expect("retried");
    assert_eq!(to, 1, "the retry goes to the leader (op {op})");
}

#[test]
fn a_token_that_is_not_group_colon_index_is_refused_with_the_form_it_takes() {
    let err = "0:1,x".parse::<SessionToken>().expect_err("malformed");
    assert_eq!(err, "bad session token part `x`: expected GROUP:INDEX, e.g. 0:17");
    assert_eq!("".parse::<SessionToken>(), Ok(SessionToken::default()));
}

#[test]
fn an_active_group_sends_a_session_read_to_one_member_and_takes_its_answer_without_a_vote() {
    let cluster = group_map(&[1, 2, 3], 1, pactdb_core::types::Mode::Active, true);
    let (mut fe, mut rng) = front_end_of(cluster, active_view(2, 1));
    let op = fe.submit_with(0, &mut rng, get("k"), Consistency::Session);
    let sent: Vec<_> = fe.take_effects().iter().filter_map(sent_request).collect();
    assert_eq!(sent.len(), 1, "one member, not a multicast: {sent:?}");
    let (to, req) = sent[0].clone();
    let value = OpResult::Value(None);
    fe.on_reply(1, &mut rng, to, answered(req.id, value.clone(), 3));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::ReadServed { op, by: to, stale_ms: None }, FeEffect::Done { op, id: req.id, result: Ok(value) }]
    );
}
