//! A backup serves a read only once its state is as new as the read's
//! consistency demands: a linearizable read waits for the primary's read
//! index, a session read for the client's token, and a stale read is
//! refused when the backup cannot tell its state is fresh enough. A front
//! end whose view is old is taught the current one instead.

mod common;

use common::*;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{Epoch, Index, Millis};
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply, ClientRequest, Consistency, PeerBody};
use pactdb_core::Effect;

fn read(seq: u64, epoch: Epoch, key: &str, consistency: Consistency, after: Index) -> ClientMsg {
    ClientMsg::Request(ClientRequest {
        id: rid(8, seq),
        group: GROUP,
        epoch,
        op: get(key),
        consistency,
        after,
        prev: 0,
    })
}

/// The primary's next heartbeat goes out (nothing delivered yet).
fn heartbeat(h: &mut Harness) {
    h.advance(pactdb_core::replica::ReplicaTiming::default().heartbeat_ms);
    h.tick(node(1));
}

fn value(v: &str, version: u64) -> OpResult {
    OpResult::Value(Some(Versioned { value: v.as_bytes().to_vec(), version }))
}

/// Client 7 writes k1 at the primary; the backups hold it but have not
/// heard it committed yet (the heartbeat that says so is dropped).
fn committed_at_primary_only() -> (Harness, Epoch, Index) {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let reply = h.put_settled(1);
    assert!(matches!(reply, ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }), "{reply:?}");
    let commit = h.replica(node(1)).commit_index();
    assert!(h.replica(node(2)).applied_index() < commit, "the backup has not applied the write yet");
    (h, epoch, commit)
}

#[test]
fn a_linearizable_read_at_a_backup_waits_for_the_primarys_read_index() {
    let (mut h, epoch, commit) = committed_at_primary_only();

    // The backup asks its primary for a read index and answers nothing yet.
    let (token, fx) = h.client(node(2), read(1, epoch, "k1", Consistency::Linearizable, 0));
    assert_eq!(sends(&fx), vec![(node(1), PeerBody::ReadIndex { group: GROUP, epoch, ask: 1 })]);
    assert!(replies(&fx).is_empty(), "{fx:?}");

    // The primary holds its lease: it names its commit index.
    let fx = h.deliver(node(2), node(1));
    let reply = PeerBody::ReadIndexReply { group: GROUP, epoch, ask: 1, index: Some(commit) };
    assert_eq!(sends(&fx), vec![(node(2), reply)]);

    // The backup has not applied that far: it still waits.
    let fx = h.deliver(node(1), node(2));
    assert!(replies(&fx).is_empty(), "{fx:?}");

    // The next heartbeat carries the commit index: the backup applies the
    // write and answers with it, covered by its applied index.
    heartbeat(&mut h);
    let fx = h.deliver(node(1), node(2));
    let answer = ClientReply::Response { id: rid(8, 1), result: Ok(value("v", 1)), at: commit, stale_ms: None };
    assert_eq!(replies(&fx), vec![(token, answer)]);
}

#[test]
fn a_primary_without_its_lease_vouches_for_no_read_index() {
    let (mut h, epoch, _) = committed_at_primary_only();
    // Long after the last acked heartbeat: the lease lapsed.
    h.advance(pactdb_core::replica::ReplicaTiming::default().lease_ms + 1);
    let (token, _) = h.client(node(2), read(1, epoch, "k1", Consistency::Linearizable, 0));
    let fx = h.deliver(node(2), node(1));
    assert_eq!(sends(&fx), vec![(node(2), PeerBody::ReadIndexReply { group: GROUP, epoch, ask: 1, index: None })]);

    // The backup refuses: the front end asks the primary itself.
    let fx = h.deliver(node(1), node(2));
    let reason = "this backup cannot serve the read: the primary could not vouch for a read index".to_string();
    assert_eq!(replies(&fx), vec![(token, response(rid(8, 1), Err(ClientError::Unavailable { reason })))]);
}

#[test]
fn a_session_read_waits_until_the_backup_applied_the_clients_token() {
    let (mut h, epoch, commit) = committed_at_primary_only();

    // The client saw the write (its token is the commit index): held.
    let (token, fx) = h.client(node(2), read(1, epoch, "k1", Consistency::Session, commit));
    assert!(fx.is_empty(), "a session read asks no one and answers nothing yet: {fx:?}");

    // A client with no token is served at once, from what the backup has.
    let (other, fx) = h.client(node(2), read(2, epoch, "k1", Consistency::Session, 0));
    let applied = h.replica(node(2)).applied_index();
    let old = ClientReply::Response { id: rid(8, 2), result: Ok(OpResult::Value(None)), at: applied, stale_ms: None };
    assert_eq!(replies(&fx), vec![(other, old)]);

    // The heartbeat lets the backup apply the write: the held read is served.
    heartbeat(&mut h);
    let fx = h.deliver(node(1), node(2));
    let answer = ClientReply::Response { id: rid(8, 1), result: Ok(value("v", 1)), at: commit, stale_ms: None };
    assert_eq!(replies(&fx), vec![(token, answer)]);
}

#[test]
fn a_session_read_the_backup_cannot_catch_up_to_is_refused_at_its_deadline() {
    let (mut h, epoch, commit) = committed_at_primary_only();
    let wait_ms: Millis = pactdb_core::replica::ReplicaTiming::default().held_read_wait_ms;
    let (token, _) = h.client(node(2), read(1, epoch, "k1", Consistency::Session, commit + 100));
    h.advance(wait_ms);
    let fx = h.tick(node(2));
    let reason = "this backup cannot serve the read: it did not catch up in time".to_string();
    assert_eq!(replies(&fx), vec![(token, response(rid(8, 1), Err(ClientError::Unavailable { reason })))]);
}

#[test]
fn a_stale_read_within_its_bound_is_served_and_says_how_old_the_state_may_be() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    // Two heartbeat rounds: the second append echoes the first round's ack.
    for _ in 0..2 {
        h.advance(1);
        h.tick(node(1));
        h.settle();
    }
    let stale_read = |h: &mut Harness, seq: u64| {
        let (token, fx) = h.client(node(2), read(seq, epoch, "k", Consistency::Stale { max_ms: 1_000 }, 0));
        match replies(&fx).as_slice() {
            [(t, ClientReply::Response { result: Ok(OpResult::Value(None)), stale_ms: Some(ms), .. })] => {
                assert_eq!(*t, token);
                *ms
            }
            other => panic!("expected a stale read served: {other:?}"),
        }
    };
    let first = stale_read(&mut h, 1);
    assert!(first <= 1_000);
    // 50 ms later, with no news from the primary, the state is 50 ms older,
    // and says so (padded by the clock drift allowed, never less).
    h.advance(50);
    let later = stale_read(&mut h, 2);
    assert!(later >= first + 50 && later <= first + 50 + 3, "{first} then {later}");
    // Refused once past the bound.
    let (token, fx) = h.client(node(2), read(3, epoch, "k", Consistency::Stale { max_ms: later - 1 }, 0));
    let reason = format!("this backup cannot serve the read: its state may be older than {} ms", later - 1);
    assert_eq!(replies(&fx), vec![(token, response(rid(8, 3), Err(ClientError::Unavailable { reason })))]);
}

#[test]
fn a_backup_teaches_a_front_end_with_an_old_view_the_current_one() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(2));
    let (token, fx) = h.client(node(2), read(1, view.epoch - 1, "k", Consistency::Session, 0));
    let taught = response(rid(8, 1), Err(ClientError::NotLeader { view: Some(view) }));
    assert_eq!(fx, vec![Effect::Reply { token, reply: taught }]);
}
