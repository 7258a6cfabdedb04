//! The front end names a session once its group said where one may start,
//! keeps that id for every retry, and after `SessionExpired` reports the
//! error (never re-running the request under another id) and starts a new
//! session: a new client id, named again.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeError};
use pactdb_core::state::op::OpResult;
use pactdb_core::types::RequestId;
use pactdb_core::wire::{ClientError, ClientMsg, ClientRequest};

#[test]
fn a_session_is_named_once_and_renewed_after_it_expired() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let first_client = fe.client_id();
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let unnamed = rid_unnamed(first_client, op);
    let req = |id| {
        ClientMsg::Request(ClientRequest {
            id,
            group: GROUP,
            epoch: 2,
            op: put("k", "v"),
            consistency: Default::default(),
            after: 0,
            prev: 0,
        })
    };
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 1, msg: req(unnamed) }]);

    // The group names a start: the request goes again at once, in the
    // session starting there, and keeps that id.
    fe.on_reply(1, &mut rng, 1, response(unnamed, Err(ClientError::OpenSession { start: 40 })));
    let named = RequestId { client: first_client, session: 40, seq: op };
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 1, msg: req(named) }]);
    assert_eq!(fe.request_id(op), Some(named));
    fe.on_reply(2, &mut rng, 1, response(named, Ok(OpResult::Written { version: 41 })));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Done { op, id: named, result: Ok(OpResult::Written { version: 41 }) }]
    );

    // The next request goes straight out in the same session.
    let op2 = fe.submit(3, &mut rng, put("k", "v"));
    let id2 = RequestId { client: first_client, session: 40, seq: op2 };
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 1, msg: req(id2) }]);

    // Its session was evicted: the caller is told, nothing is resent.
    fe.on_reply(4, &mut rng, 1, response(id2, Err(ClientError::SessionExpired)));
    let expired = Err(FeError::Refused(ClientError::SessionExpired));
    assert_eq!(fe.take_effects(), vec![FeEffect::Done { op: op2, id: id2, result: expired }]);
    assert_eq!(fe.renewals(), 1);

    // A new session: a new client id, with no start named yet.
    assert_ne!(fe.client_id(), first_client);
    let op3 = fe.submit(5, &mut rng, put("k", "v"));
    assert_eq!(fe.take_effects(), vec![FeEffect::Send { to: 1, msg: req(rid_unnamed(fe.client_id(), op3)) }]);
}

#[test]
fn a_request_sent_before_a_renewal_is_still_answered_under_its_own_id() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let client = fe.client_id();
    // `prev`: the newest earlier write of the session still unanswered.
    let req = |id, prev| {
        ClientMsg::Request(ClientRequest {
            id,
            group: GROUP,
            epoch: 2,
            op: put("k", "v"),
            consistency: Default::default(),
            after: 0,
            prev,
        })
    };
    let op = fe.submit(0, &mut rng, put("k", "v"));
    fe.on_reply(1, &mut rng, 1, response(rid_unnamed(client, op), Err(ClientError::OpenSession { start: 40 })));
    fe.take_effects();

    // Two requests in flight in the session starting at 40.
    let (a, b) = (fe.submit(2, &mut rng, put("k", "v")), fe.submit(2, &mut rng, put("k", "v")));
    let (id_a, id_b) = (RequestId { client, session: 40, seq: a }, RequestId { client, session: 40, seq: b });
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Send { to: 1, msg: req(id_a, op) }, FeEffect::Send { to: 1, msg: req(id_b, a) }]
    );

    // The first is told its session expired: the front end renews...
    fe.on_reply(3, &mut rng, 1, response(id_a, Err(ClientError::SessionExpired)));
    fe.take_effects();
    assert_ne!(fe.client_id(), client);
    // ...and the second, still under the old id, takes the answer it gets.
    fe.on_reply(4, &mut rng, 1, response(id_b, Ok(OpResult::Written { version: 44 })));
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Done { op: b, id: id_b, result: Ok(OpResult::Written { version: 44 }) }]
    );
}
