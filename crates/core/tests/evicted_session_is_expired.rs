//! A retry whose session the exactly-once table evicted is told
//! `SessionExpired` and never runs again, also after a restart from a
//! checkpoint; a request that names no session is told where one may start,
//! and runs only once it names it.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::state::op::OpResult;
use pactdb_core::state::sessions::Dedup;
use pactdb_core::types::RequestId;
use pactdb_core::wire::{decode_stored, encode_stored, ClientError, WalRecord};
use pactdb_core::{Effect, Node, NodeConfig};

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

#[test]
fn the_eviction_mark_survives_a_checkpoint_stored_as_a_snapshot_file() {
    let mut h = two_sessions(Bugs::default());
    evict_client_7(&mut h);
    // Node 1's checkpoint, through the encoding of the runtime's snapshot
    // files, and a node recovered from it alone (its WAL pruned).
    let records: Vec<WalRecord> = h
        .node(node(1))
        .checkpoint()
        .records
        .iter()
        .map(|r| decode_stored(&encode_stored(r)).expect("a stored record decodes"))
        .collect();
    let mut cfg = NodeConfig::new(node(1), vec![node(1), node(2), node(3)]);
    cfg.max_sessions = 2;
    let recovered = Node::recover(cfg, 77, Bugs::default(), records, false);
    let sessions = &recovered.replica(GROUP).expect("the group's replica").state().sessions;
    assert_eq!((sessions.len(), sessions.evicted(), sessions.evicted_upto()), (2, 1, 1));
    assert_eq!(sessions.lookup(rid(7, 1)), Dedup::Expired, "the request that ran");
    assert_eq!(sessions.lookup(rid(7, 2)), Dedup::Expired, "one that may have");
    assert!(matches!(sessions.lookup(rid(9, 1)), Dedup::Done(_)));
}
