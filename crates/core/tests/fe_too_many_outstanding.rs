//! Replicas remember the last `MAX_SESSION_RESPONSES` responses per client,
//! so a front end may not run requests further apart than that: a request id
//! that old could no longer be told apart from a new one. Beyond the window,
//! `submit` refuses with `TooManyOutstanding`; `can_submit` says so first.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeError};
use pactdb_core::limits::MAX_SESSION_RESPONSES;
use pactdb_core::state::op::OpResult;

#[test]
fn can_submit_and_submit_agree_at_the_window_edge() {
    // The client library admits operations with `while fe.can_submit()`.
    // Every operation it admits that way must be sent, never refused.
    let (mut fe, mut rng) = front_end(view(2, 1));
    let mut ops = Vec::new();
    while fe.can_submit() {
        let op = fe.submit(0, &mut rng, put("k", "v"));
        let effects = fe.take_effects();
        assert!(
            matches!(&effects[..], [e] if sent_request(e).is_some()),
            "op {op} was admitted by can_submit, then: {effects:?}"
        );
        ops.push(op);
        assert!(ops.len() <= MAX_SESSION_RESPONSES, "the window is bounded");
    }
    assert_eq!(ops.len(), MAX_SESSION_RESPONSES, "a full window of requests may be outstanding");
    assert_eq!(fe.outstanding(), MAX_SESSION_RESPONSES);

    // One more is refused at once, and sends nothing.
    let op = fe.submit(0, &mut rng, put("k", "v"));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Done { op, id: rid_unnamed(fe.client_id(), op), result: Err(FeError::TooManyOutstanding) }]
    );
    assert_eq!(fe.outstanding(), MAX_SESSION_RESPONSES);
}

#[test]
fn the_window_is_counted_from_the_oldest_outstanding_request() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let mut ops = Vec::new();
    while fe.can_submit() {
        ops.push(fe.submit(0, &mut rng, put("k", "v")));
    }
    fe.take_effects();
    // Every request but the oldest completes: the window does not move.
    for &op in &ops[1..] {
        fe.on_reply(
            1,
            &mut rng,
            1,
            response(fe.request_id(op).expect("pending"), Ok(OpResult::Written { version: op })),
        );
    }
    assert_eq!(fe.outstanding(), 1);
    assert!(!fe.can_submit(), "the oldest request still pins the window");

    // The oldest completes: room again.
    fe.on_reply(
        2,
        &mut rng,
        1,
        response(fe.request_id(ops[0]).expect("pending"), Ok(OpResult::Written { version: 1 })),
    );
    fe.take_effects();
    assert!(fe.can_submit());
    let op = fe.submit(3, &mut rng, put("k", "v"));
    let effects = fe.take_effects();
    match &effects[..] {
        [e] => assert_eq!(sent_request(e).map(|(_, r)| r.id), Some(fe.request_id(op).expect("pending"))),
        other => panic!("expected the op to be sent, got {other:?}"),
    }
}
