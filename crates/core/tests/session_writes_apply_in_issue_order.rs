//! FIFO order of a front end's writes to one group: a write names the
//! newest earlier write of its session still unanswered at its front end
//! (`ClientRequest::prev`). The primary (or an active group's sequencer)
//! refuses it with `OutOfOrder` while that one has not reached the group,
//! runs it once that one ran or is pending ahead of it, and refuses with
//! `Overtaken` a write of the session issued before one already in the log.
//! So a session's writes are in the log, on every replica, in issue order,
//! also when a failover loses an earlier write and a later one reaches the
//! new primary first.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::log::Payload;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{Epoch, NodeId, RequestId};
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply, ClientRequest};
use pactdb_core::Effect;

/// Client 7's put of `key` as request `seq` of its session, naming `prev`.
fn put_after(seq: u64, prev: u64, epoch: Epoch, key: &str) -> ClientMsg {
    ClientMsg::Request(ClientRequest {
        id: rid(7, seq),
        group: GROUP,
        epoch,
        op: put(key, &format!("v{seq}")),
        consistency: Default::default(),
        after: 0,
        prev,
    })
}

/// The sequence numbers of client 7's requests in node `n`'s log of the
/// group, in log order.
fn seqs_in_log(h: &Harness, n: NodeId) -> Vec<u64> {
    let log = h.replica(n).log();
    log.range(log.base_index() + 1, log.last_index())
        .filter_map(|e| match &e.payload {
            Payload::Effects { id, .. } | Payload::Sequenced { id, .. } if id.client == 7 => Some(id.seq),
            _ => None,
        })
        .collect()
}

/// The request id and result of a reply (not the index it is covered by).
fn result_of(reply: ClientReply) -> (RequestId, Result<OpResult, ClientError>) {
    match reply {
        ClientReply::Response { id, result, .. } => (id, result),
        other => panic!("not a response: {other:?}"),
    }
}

fn refused(seq: u64, e: ClientError) -> ClientReply {
    response(rid(7, seq), Err(e))
}

#[test]
fn a_write_that_arrives_before_its_predecessor_is_refused_and_runs_after_it() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    // Seq 3 overtook seq 2 on the way: refused, nothing logged.
    let (early, fx) = h.client(node(1), put_after(3, 2, epoch, "b"));
    assert_eq!(fx, vec![Effect::Reply { token: early, reply: refused(3, ClientError::OutOfOrder { prev: 2 }) }]);

    // Seq 2 (nothing before it unanswered) runs; seq 3, sent again, runs
    // after it while seq 2 is still pending.
    let (second, fx) = h.client(node(1), put_after(2, 0, epoch, "a"));
    assert_eq!(persists(&fx).len(), 1);
    let (third, fx) = h.client(node(1), put_after(3, 2, epoch, "b"));
    assert_eq!(persists(&fx).len(), 1, "its predecessor is pending ahead of it");
    h.settle();
    assert_eq!(result_of(h.take_reply(second)), (rid(7, 2), Ok(OpResult::Written { version: 1 })));
    assert_eq!(result_of(h.take_reply(third)), (rid(7, 3), Ok(OpResult::Written { version: 2 })));
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(seqs_in_log(&h, node(n)), vec![2, 3], "node {n}");
    }
}

#[test]
fn a_write_whose_predecessor_already_ran_runs_at_once() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let (first, _) = h.client(node(1), put_after(1, 0, epoch, "a"));
    h.settle();
    assert_eq!(result_of(h.take_reply(first)), (rid(7, 1), Ok(OpResult::Written { version: 1 })));
    // Its answer was lost on the way back: the front end still names it.
    let (second, fx) = h.client(node(1), put_after(2, 1, epoch, "b"));
    assert_eq!(persists(&fx).len(), 1);
    h.settle();
    assert_eq!(result_of(h.take_reply(second)), (rid(7, 2), Ok(OpResult::Written { version: 2 })));
}

#[test]
fn a_write_overtaken_by_a_later_one_of_its_session_never_runs() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    // The front end gave seq 4 up (a timeout) and sent seq 5 naming nothing
    // before it; a late copy of seq 4 arrives while seq 5 is pending, and
    // again after it committed.
    let (later, fx) = h.client(node(1), put_after(5, 0, epoch, "b"));
    assert_eq!(persists(&fx).len(), 1);
    let (late, fx) = h.client(node(1), put_after(4, 0, epoch, "a"));
    assert_eq!(fx, vec![Effect::Reply { token: late, reply: refused(4, ClientError::Overtaken { by: 5 }) }]);
    h.settle();
    assert_eq!(result_of(h.take_reply(later)), (rid(7, 5), Ok(OpResult::Written { version: 1 })));
    let (again, fx) = h.client(node(1), put_after(4, 0, epoch, "a"));
    assert_eq!(fx, vec![Effect::Reply { token: again, reply: refused(4, ClientError::Overtaken { by: 5 }) }]);
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(seqs_in_log(&h, node(n)), vec![5], "node {n}");
        assert_eq!(h.replica(node(n)).kv().get(b"a"), None, "node {n}: seq 4 never ran");
    }
}

#[test]
fn reads_transactions_and_other_sessions_do_not_order_a_write() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    // Client 7's seq 9 is in the log; a write of client 8, and one of
    // client 7 in another session (another start), are not held back by
    // it, nor overtaken.
    let (t, _) = h.client(node(1), put_after(9, 0, epoch, "a"));
    h.settle();
    h.take_reply(t);
    let other_client = ClientRequest {
        id: RequestId { client: 8, session: 0, seq: 1 },
        group: GROUP,
        epoch,
        op: put("b", "x"),
        consistency: Default::default(),
        after: 0,
        prev: 0,
    };
    let (_, fx) = h.client(node(1), ClientMsg::Request(other_client));
    assert_eq!(persists(&fx).len(), 1);
    let start = h.replica(node(1)).applied_index();
    let other_session = ClientRequest {
        id: RequestId { client: 7, session: start, seq: 3 },
        group: GROUP,
        epoch,
        op: put("c", "x"),
        consistency: Default::default(),
        after: 0,
        prev: 0,
    };
    let (_, fx) = h.client(node(1), ClientMsg::Request(other_session));
    assert_eq!(persists(&fx).len(), 1);
    // A read of the session with a lower seq is not a write: it is served.
    let (read, _) = h.client(node(1), request(rid(7, 2), epoch, get("a")));
    h.settle();
    assert!(matches!(h.take_reply(read), ClientReply::Response { result: Ok(_), .. }));
}

#[test]
fn after_a_failover_a_write_whose_predecessor_was_lost_waits_for_it() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    // Seq 1 reaches the primary only, which dies before sending it on.
    let (_, fx) = h.client(node(1), put_after(1, 0, epoch, "a"));
    assert_eq!(persists(&fx).len(), 1);
    h.net.clear();
    h.crash(node(1));
    let p = h.run_until_a_backup_leads();
    h.wait_out_predecessor_lease();
    let view = h.view(node(p));
    assert_eq!(view.epoch, epoch + 1);
    // The front end resends both; seq 2 gets there first.
    let (early, fx) = h.client(node(p), put_after(2, 1, view.epoch, "b"));
    assert_eq!(fx, vec![Effect::Reply { token: early, reply: refused(2, ClientError::OutOfOrder { prev: 1 }) }]);
    let (first, fx) = h.client(node(p), put_after(1, 0, view.epoch, "a"));
    assert_eq!(persists(&fx).len(), 1);
    let (second, fx) = h.client(node(p), put_after(2, 1, view.epoch, "b"));
    assert_eq!(persists(&fx).len(), 1);
    h.settle();
    assert!(matches!(h.take_reply(first), ClientReply::Response { result: Ok(_), .. }));
    assert!(matches!(h.take_reply(second), ClientReply::Response { result: Ok(_), .. }));
    h.run_for(30);
    for n in [2, 3] {
        assert_eq!(seqs_in_log(&h, node(n)), vec![1, 2], "node {n}");
    }
}

#[test]
fn an_active_sequencer_orders_a_session_s_writes_in_issue_order() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let (early, fx) = h.client(node(1), put_after(3, 2, epoch, "b"));
    assert_eq!(fx, vec![Effect::Reply { token: early, reply: refused(3, ClientError::OutOfOrder { prev: 2 }) }]);
    let (_, fx) = h.client(node(1), put_after(2, 0, epoch, "a"));
    assert_eq!(persists(&fx).len(), 1);
    let (_, fx) = h.client(node(1), put_after(3, 2, epoch, "b"));
    assert_eq!(persists(&fx).len(), 1);
    let (late, fx) = h.client(node(1), put_after(1, 0, epoch, "c"));
    assert_eq!(fx, vec![Effect::Reply { token: late, reply: refused(1, ClientError::Overtaken { by: 3 }) }]);
    h.settle();
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(seqs_in_log(&h, node(n)), vec![2, 3], "node {n}");
    }
}

#[test]
fn a_write_naming_a_predecessor_not_below_it_is_malformed() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let (t, fx) = h.client(node(1), put_after(3, 3, epoch, "a"));
    let reason = "write 3 names 3 as an earlier write of its session".to_string();
    assert_eq!(fx, vec![Effect::Reply { token: t, reply: refused(3, ClientError::Malformed { reason }) }]);
}

#[test]
fn with_the_fifo_ignores_order_bug_a_write_runs_before_its_predecessor() {
    let bugs = Bugs { fifo_ignores_order: true, ..Bugs::default() };
    let mut h = Harness::with_bugs(&[1, 2, 3], &[(1, bugs)]);
    h.bootstrap(1);
    h.wait_out_predecessor_lease();
    h.first_heartbeat();
    let epoch = h.view(node(1)).epoch;
    let (_, fx) = h.client(node(1), put_after(3, 2, epoch, "b"));
    assert_eq!(persists(&fx).len(), 1, "run at once");
    let (_, fx) = h.client(node(1), put_after(2, 0, epoch, "a"));
    assert_eq!(persists(&fx).len(), 1);
    h.settle();
    assert_eq!(seqs_in_log(&h, node(1)), vec![3, 2]);
}

/// The front end names, in every attempt of a write, its session's newest
/// earlier write to the same group still unanswered.
mod front_end {
    use super::*;
    use common::fe::*;
    use pactdb_core::fe::FeEffect;

    fn sent(effects: &[FeEffect]) -> Vec<(u64, u64)> {
        effects.iter().filter_map(sent_request).map(|(_, r)| (r.id.seq, r.prev)).collect()
    }

    fn open_session(fe: &mut pactdb_core::fe::FrontEnd, rng: &mut rand_chacha::ChaCha8Rng, seq: u64) {
        let id = RequestId { client: fe.client_id(), session: RequestId::NO_SESSION, seq };
        fe.on_reply(1, rng, 1, response(id, Err(ClientError::OpenSession { start: 4 })));
    }

    #[test]
    fn pipelined_writes_name_their_predecessor_and_wait_for_it_when_refused() {
        let (mut fe, mut rng) = front_end(view(2, 1));
        // Seq 1 opens the session.
        fe.submit(0, &mut rng, put("a", "1"));
        fe.take_effects();
        open_session(&mut fe, &mut rng, 1);
        assert_eq!(sent(&fe.take_effects()), vec![(1, 0)]);
        // Seq 2 a write, seq 3 a read (not ordered), seq 4 a write.
        fe.submit(1, &mut rng, put("b", "2"));
        fe.submit(1, &mut rng, get("a"));
        fe.submit(1, &mut rng, put("c", "4"));
        assert_eq!(sent(&fe.take_effects()), vec![(2, 1), (3, 0), (4, 2)]);
        // Seq 2 is answered; seq 4 is refused, as seq 2 had not arrived
        // when it did: its resend names seq 1, still unanswered.
        let client = fe.client_id();
        let id = |seq| RequestId { client, session: 4, seq };
        let (id2, id4) = (id(2), id(4));
        fe.on_reply(2, &mut rng, 1, response(id2, Ok(OpResult::Written { version: 1 })));
        fe.on_reply(2, &mut rng, 1, response(id4, Err(ClientError::OutOfOrder { prev: 2 })));
        assert_eq!(sent(&fe.take_effects()), vec![], "no resend at once");
        fe.on_tick(2 + 5, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![(4, 1)]);
        // Seq 1 is answered: nothing before seq 4 is unanswered any more.
        fe.on_reply(8, &mut rng, 1, response(id(1), Ok(OpResult::Written { version: 1 })));
        fe.on_reply(8, &mut rng, 1, response(id4, Err(ClientError::OutOfOrder { prev: 1 })));
        fe.on_tick(8 + 5, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![(4, 0)]);
    }

    /// One refused write must not slow its session's pipeline for good:
    /// the writes refused behind it (and any submitted while it waits) go
    /// out in the same tick as it, in order, not each a back-off base
    /// after the one before. That staircase was self-sustaining under a
    /// closed-loop load (64 writes in flight: ~100 ms per write, 35k down
    /// to 2.4k puts/s after one slow moment).
    #[test]
    fn writes_refused_behind_a_backed_off_write_are_resent_in_its_tick() {
        let (mut fe, mut rng) = front_end(view(2, 1));
        fe.submit(0, &mut rng, put("a", "1"));
        fe.take_effects();
        open_session(&mut fe, &mut rng, 1);
        assert_eq!(sent(&fe.take_effects()), vec![(1, 0)]);
        for key in ["b", "c", "d"] {
            fe.submit(1, &mut rng, put(key, "v"));
        }
        assert_eq!(sent(&fe.take_effects()), vec![(2, 1), (3, 2), (4, 3)]);
        let client = fe.client_id();
        let id = |seq| RequestId { client, session: 4, seq };
        // Seq 1 is refused as Busy and backs off; the group refuses the
        // later ones, which it got before seq 1 could run.
        fe.on_reply(2, &mut rng, 1, response(id(1), Err(ClientError::Busy)));
        for seq in 2..=4 {
            fe.on_reply(2, &mut rng, 1, response(id(seq), Err(ClientError::OutOfOrder { prev: seq - 1 })));
        }
        assert_eq!(sent(&fe.take_effects()), vec![], "no resend at once");
        // A write submitted meanwhile goes out, is refused too, and joins.
        fe.submit(3, &mut rng, put("e", "v"));
        assert_eq!(sent(&fe.take_effects()), vec![(5, 4)]);
        fe.on_reply(4, &mut rng, 1, response(id(5), Err(ClientError::OutOfOrder { prev: 4 })));
        assert_eq!(sent(&fe.take_effects()), vec![]);
        // All five go out together when seq 1's back-off ends, seq 1 first.
        let wake = fe.next_wake_ms().expect("pending");
        assert!(wake > 4, "seq 1 backs off: {wake}");
        fe.on_tick(wake - 1, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![]);
        fe.on_tick(wake, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![(1, 0), (2, 1), (3, 2), (4, 3), (5, 4)]);
        // If the earlier write is in flight already, a refused one is
        // resent a back-off base later (so that the earlier one arrives
        // first), as before.
        fe.on_reply(wake + 1, &mut rng, 1, response(id(3), Err(ClientError::OutOfOrder { prev: 2 })));
        assert_eq!(sent(&fe.take_effects()), vec![]);
        fe.on_tick(wake + 1 + 4, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![]);
        fe.on_tick(wake + 1 + 5, &mut rng);
        assert_eq!(sent(&fe.take_effects()), vec![(3, 2)]);
    }
}
