//! A retried request (same RequestId) is executed at most once: a retry
//! while the first attempt is pending waits for it, a retry after commit gets
//! the recorded response, and a retry at a new primary after a failover finds
//! the entry in the log it inherited.

mod common;

use common::*;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::wire::WalRecord;
use pactdb_core::Effect;

#[test]
fn the_same_request_id_twice_makes_one_entry_and_one_answer() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    let (first, fx) = h.client(node(1), request(id, epoch, put("k", "v1")));
    assert_eq!(persists(&fx).len(), 1);

    // The retry arrives before the first attempt commits: no new entry, no
    // Append, no answer yet. (Its payload differs, to show it is not run.)
    let (second, fx) = h.client(node(1), request(id, epoch, put("k", "v2")));
    assert_eq!(fx, vec![], "a pending request is not run again");

    // Commit: both attempts get the first attempt's response, in one step.
    h.deliver_all();
    h.persist(node(1));
    h.persist(node(2));
    h.deliver_all();
    h.persist(node(3));
    let fx = h.deliver(node(3), node(1));
    let ok = response(id, Ok(OpResult::Written { version: 1 }));
    assert_eq!(replies(&fx), vec![(first, ok.clone()), (second, ok.clone())]);

    // A retry after commit is answered from the session table at once.
    let (third, fx) = h.client(node(1), request(id, epoch, put("k", "v3")));
    assert_eq!(fx, vec![Effect::Reply { token: third, reply: ok }]);

    h.run_for(30); // a heartbeat tells the backups the commit index
    for n in [1, 2, 3] {
        assert_eq!(h.log_ids(n), vec![(epoch, 1)], "node {n} has exactly one entry");
        assert_eq!(h.replica(n).kv().get(b"k").map(|v| v.value.clone()), Some(b"v1".to_vec()));
    }
    let entries = h.wal[&1].iter().filter(|r| matches!(r, WalRecord::Entry { .. })).count();
    assert_eq!(entries, 1, "one entry record in the primary's WAL");
}

#[test]
fn a_non_idempotent_retry_is_not_rerun() {
    // A CAS retried after it ran would fail the second time if re-executed.
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let cas = Op::Cas { key: b"k".to_vec(), expected_version: 0, value: b"v".to_vec() };
    let (t1, _) = h.client(node(1), request(rid(7, 1), epoch, cas.clone()));
    h.settle();
    let first = h.take_reply(t1);
    assert_eq!(first, response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
    let (t2, fx) = h.client(node(1), request(rid(7, 1), epoch, cas));
    assert_eq!(fx, vec![Effect::Reply { token: t2, reply: first }]);
}

#[test]
fn a_retry_at_the_new_primary_after_failover_runs_once() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    // The write reaches both backups durably, but the primary dies before it
    // hears their acks: the client never gets an answer.
    let (lost, _) = h.client(node(1), request(id, epoch, put("k", "v")));
    h.crash_primary_after_backups_persist();
    assert!(h.replies_to(lost).is_empty());

    // A new primary takes over; stop the moment it has won, before its
    // first Appends of epoch 3 are delivered.
    let p = h.run_until_a_backup_leads();
    let view = h.view(node(p));
    assert_eq!(view.epoch, epoch + 1);
    assert_eq!(h.replica(node(p)).commit_index(), 0, "the inherited entry is not committed yet");

    // The FE retries there with the same id: not executed again (no record,
    // no Append), and answered with the original response once the inherited
    // entry commits, one round trip later. (No Unavailable first: a new
    // primary waits out its predecessor's read lease until `lease_wait_ms`
    // after its own last ack, here sent when the old primary's last Append
    // arrived; it suspected that primary at least that long after, so the
    // wait is already over when it wins.)
    let (retry, fx) = h.client(node(p), request(id, view.epoch, put("k", "v")));
    assert_eq!(fx, vec![], "the retry waits for the inherited entry");
    // Deliveries and fsyncs only, no time passing: the new primary
    // re-streams its suffix without waiting for a retransmit timer.
    h.settle();
    assert_eq!(h.take_reply(retry), response(id, Ok(OpResult::Written { version: 1 })));

    // And a retry after that is answered from the session table.
    let (again, fx) = h.client(node(p), request(id, view.epoch, put("k", "v")));
    // From the session table: covered by the applied index.
    assert_eq!(
        fx,
        vec![Effect::Reply { token: again, reply: answered_at(id, Ok(OpResult::Written { version: 1 }), 2) }]
    );
    h.run_for(30);
    for n in [2, 3] {
        // The request's entry once; index 2 is the new primary's no-op,
        // which is what committed the inherited entry.
        assert_eq!(h.log_ids(n), vec![(epoch, 1), (view.epoch, 2)], "node {n}: the request ran once");
        assert!(h.replica(node(n)).log().range(2, 2).all(|e| e.is_noop()));
    }
}
