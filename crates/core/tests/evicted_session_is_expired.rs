//! A retry whose session the exactly-once table evicted is told
//! `SessionExpired` and never runs again; a request that names no session
//! is told where one may start, and runs only once it names it.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::RequestId;
use pactdb_core::wire::ClientError;
use pactdb_core::Effect;

/// Nodes 1, 2, 3 serving one group whose session tables hold two sessions;
/// node 1 primary, with `bugs` on every node.
fn two_sessions(bugs: Bugs) -> Harness {
    let mut h = Harness::with_config(&[1, 2, 3], &[(1, bugs), (2, bugs), (3, bugs)], |cfg| cfg.max_sessions = 2);
    h.bootstrap(1);
    h.wait_out_predecessor_lease();
    h.first_heartbeat();
    h
}

/// Runs `id`'s put to the end and returns the answer.
fn run(h: &mut Harness, id: RequestId, value: &str) -> pactdb_core::wire::ClientReply {
    let epoch = h.view(node(1)).epoch;
    let (t, _) = h.client(node(1), request(id, epoch, put("k", value)));
    h.settle();
    h.take_reply(t)
}

/// Client 7 writes at index 1; clients 8 and 9 write at 2 and 3, which
/// evicts client 7's session (the least recently active of three, with
/// room for two).
fn evict_client_7(h: &mut Harness) {
    assert_eq!(run(h, rid(7, 1), "a"), response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
    assert_eq!(run(h, rid(8, 1), "b"), response(rid(8, 1), Ok(OpResult::Written { version: 2 })));
    assert_eq!(run(h, rid(9, 1), "c"), response(rid(9, 1), Ok(OpResult::Written { version: 3 })));
    let sessions = &h.replica(node(1)).state().sessions;
    assert_eq!((sessions.len(), sessions.evicted(), sessions.evicted_upto()), (2, 1, 1));
}

#[test]
fn a_retry_from_an_evicted_session_is_expired_and_not_run() {
    let mut h = two_sessions(Bugs::default());
    evict_client_7(&mut h);
    let epoch = h.view(node(1)).epoch;
    // The late retry of the write that ran, and a new request of the same
    // session: both refused at once, nothing appended.
    for id in [rid(7, 1), rid(7, 2)] {
        let (t, fx) = h.client(node(1), request(id, epoch, put("k", "again")));
        assert_eq!(fx, vec![Effect::Reply { token: t, reply: response(id, Err(ClientError::SessionExpired)) }]);
    }
    h.settle();
    assert_eq!(h.replica(node(1)).last_index(), 3, "nothing ran again");
    assert_eq!(h.replica(node(1)).kv().get(b"k").map(|v| v.version), Some(3));
}

#[test]
fn a_request_without_a_session_is_told_a_start_and_runs_once_it_names_it() {
    let mut h = two_sessions(Bugs::default());
    evict_client_7(&mut h);
    let epoch = h.view(node(1)).epoch;
    let unnamed = rid_unnamed(7, 3);
    let (t, fx) = h.client(node(1), request(unnamed, epoch, put("k", "d")));
    let open = ClientError::OpenSession { start: 3 };
    assert_eq!(fx, vec![Effect::Reply { token: t, reply: response(unnamed, Err(open)) }]);
    // A session starting at 3 is new: no session active above 1 was evicted.
    let id = RequestId { client: 7, session: 3, seq: 3 };
    assert_eq!(run(&mut h, id, "d"), response(id, Ok(OpResult::Written { version: 4 })));
}

#[test]
fn with_forget_evicted_session_the_retry_runs_again() {
    let bug = Bugs { forget_evicted_session: true, ..Bugs::default() };
    let mut h = two_sessions(bug);
    evict_client_7(&mut h);
    // Today's behaviour before sessions carried their start: the retry is
    // taken for new and written a second time, at a new version.
    assert_eq!(run(&mut h, rid(7, 1), "a"), response(rid(7, 1), Ok(OpResult::Written { version: 4 })));
    assert_eq!(h.replica(node(1)).last_index(), 4);
}
