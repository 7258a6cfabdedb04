//! The front end retries a refused or redirected request under the same
//! RequestId (that is what makes a retried write run at most once), and
//! sends it to the leader the refusal names.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeError};
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply, ClientRequest};

#[test]
fn stale_epoch_and_not_leader_redirect_with_the_same_id() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    let req = |epoch| {
        ClientMsg::Request(ClientRequest {
            id,
            group: GROUP,
            epoch,
            op: put("k", "v"),
            consistency: Default::default(),
            after: 0,
            prev: 0,
        })
    };
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 1, msg: req(2) }]);

    // Node 1 says epoch 3 is led by node 2: straight there, same id.
    fe.on_reply(1, &mut rng, 1, response(id, Err(ClientError::StaleEpoch { view: view(3, 2) })));
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 2, msg: req(3) }]);

    // Node 2 no longer leads (epoch 4, node 3): straight there, same id.
    fe.on_reply(2, &mut rng, 2, response(id, Err(ClientError::NotLeader { view: Some(view(4, 3)) })));
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 3, msg: req(4) }]);

    // A late refusal from an earlier attempt changes nothing.
    fe.on_reply(3, &mut rng, 1, response(id, Err(ClientError::StaleEpoch { view: view(3, 2) })));
    assert_eq!(fe.take_effects(), vec![]);

    fe.on_reply(4, &mut rng, 3, response(id, Ok(OpResult::Written { version: 9 })));
    assert_eq!(fe.take_effects(), vec![FeEffect::Done { op, id, result: Ok(OpResult::Written { version: 9 }) }]);
    assert_eq!(fe.outstanding(), 0);

    // A duplicate answer for a finished op is ignored.
    fe.on_reply(5, &mut rng, 3, response(id, Ok(OpResult::Written { version: 9 })));
    assert_eq!(fe.take_effects(), vec![]);
}

#[test]
fn a_leader_that_is_not_serving_yet_is_retried_after_a_back_off() {
    // A restarted primary is named leader but must first win a new epoch: it
    // answers NotLeader naming itself. The FE waits, then asks it again.
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    fe.take_effects();
    fe.on_reply(1, &mut rng, 1, response(id, Err(ClientError::NotLeader { view: Some(view(2, 1)) })));
    assert_eq!(fe.take_effects(), vec![], "no hot loop against a node that is not serving");
    let wake = fe.next_wake_ms().expect("the op waits");
    assert!(wake > 1, "a back-off, not an immediate retry");
    fe.on_tick(wake - 1, &mut rng);
    assert_eq!(fe.take_effects(), vec![]);
    fe.on_tick(wake, &mut rng);
    let effects = fe.take_effects();
    match &effects[..] {
        [e] => assert_eq!(
            sent_request(e),
            Some((
                1,
                ClientRequest {
                    id,
                    group: GROUP,
                    epoch: 2,
                    op: put("k", "v"),
                    consistency: Default::default(),
                    after: 0,
                    prev: 0
                }
            ))
        ),
        other => panic!("expected one resend, got {other:?}"),
    }
}

#[test]
fn an_unknown_leader_means_asking_for_views_then_retrying_the_same_id() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    fe.take_effects();
    fe.on_reply(1, &mut rng, 1, response(id, Err(ClientError::NotLeader { view: None })));
    let effects = fe.take_effects();
    assert!(matches!(&effects[..], [FeEffect::FetchViews { .. }]), "{effects:?}");
    let backoff_ends = fe.next_wake_ms().expect("the op waits");
    assert!(backoff_ends > 2, "the op backs off: {backoff_ends}");
    // The views arrive: epoch 3, node 3 leads. The op goes there at once
    // (no waiting out its back-off), under the same id.
    fe.on_reply(2, &mut rng, 2, ClientReply::Views { cluster: None, views: vec![view(3, 3)] });
    let effects = fe.take_effects();
    match &effects[..] {
        [e] => assert_eq!(
            sent_request(e),
            Some((
                3,
                ClientRequest {
                    id,
                    group: GROUP,
                    epoch: 3,
                    op: put("k", "v"),
                    consistency: Default::default(),
                    after: 0,
                    prev: 0
                }
            ))
        ),
        other => panic!("expected one resend to node 3, got {other:?}"),
    }
}

#[test]
fn refusals_that_a_retry_cannot_fix_end_the_op() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    for error in [
        ClientError::KeyTooLarge { len: 5000, max: 4096 },
        ClientError::BelowMinMembers { members: 1, min_members: 2 },
        ClientError::SessionExpired,
    ] {
        let op = fe.submit(0, &mut rng, put("k", "v"));
        fe.take_effects();
        let id = fe.request_id(op).expect("pending");
        fe.on_reply(1, &mut rng, 1, response(id, Err(error.clone())));
        assert_eq!(fe.take_effects(), vec![FeEffect::Done { op, id, result: Err(FeError::Refused(error)) }]);
    }
}
