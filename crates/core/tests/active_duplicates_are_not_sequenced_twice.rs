//! A request id the sequencer already ordered is never ordered again: a
//! retry while its entry is pending waits for it, a retry after it ran gets
//! the recorded answer at once, at the sequencer and at every member, and a
//! retry at a new sequencer after a failover finds the entry it inherited.
//! Each member executes the request once.

mod common;

use common::*;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::wire::WalRecord;
use pactdb_core::Effect;

/// Entry records in node `n`'s WAL, durable or not.
fn entry_records(h: &Harness, n: u64) -> usize {
    h.wal[&n]
        .iter()
        .chain(h.unsynced[&n].iter().map(|(_, r)| r))
        .filter(|r| matches!(r, WalRecord::Entry { entry, .. } if !entry.is_noop()))
        .count()
}

fn cas(value: &str) -> Op {
    Op::Cas { key: b"k".to_vec(), expected_version: 0, value: value.as_bytes().to_vec() }
}

#[test]
fn a_retry_at_the_sequencer_makes_no_second_entry() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    // A CAS: run twice, the second run would fail.
    let (first, fx) = h.client(node(1), request(id, epoch, cas("v1")));
    assert_eq!(persists(&fx).len(), 1);

    // The retry arrives before the entry is stable: no record, no Append,
    // no answer. (Its payload differs, to show it is not run.)
    let (second, fx) = h.client(node(1), request(id, epoch, cas("v2")));
    assert_eq!(fx, vec![], "a pending request is not sequenced again");

    // Once stable, both attempts get the one result, in the same step.
    h.deliver_all();
    h.persist(node(2));
    h.persist(node(3));
    h.deliver_all();
    let fx = h.persist(node(1));
    let ok = response(id, Ok(OpResult::Written { version: 1 }));
    assert_eq!(replies(&fx), vec![(first, ok.clone()), (second, ok.clone())]);

    // A retry after it ran is answered from the session table at once.
    let (third, fx) = h.client(node(1), request(id, epoch, cas("v3")));
    assert_eq!(fx, vec![Effect::Reply { token: third, reply: ok }]);

    h.settle();
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(h.log_ids(n), vec![(epoch, 1)], "node {n} has exactly one entry");
        assert_eq!(entry_records(&h, n), 1, "node {n} logged one entry record");
        assert_eq!(
            h.replica(node(n)).kv().get(b"k").map(|v| (v.value.clone(), v.version)),
            Some((b"v1".to_vec(), 1)),
            "node {n} ran the first attempt only"
        );
    }
}

#[test]
fn a_member_answers_a_retry_of_an_executed_request_at_once() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    let ok = response(id, Ok(OpResult::Written { version: 1 }));
    let req = request(id, epoch, cas("v1"));
    let (t2, _) = h.client(node(2), req.clone());
    let (t1, _) = h.client(node(1), req.clone());

    // Member 2 holds the entry but has not executed it: a retry there waits
    // with the first attempt.
    h.deliver(node(1), node(2));
    let (t2_retry, fx) = h.client(node(2), req.clone());
    assert_eq!(fx, vec![], "not executed yet: the retry waits");

    h.settle();
    assert_eq!(h.take_reply(t1), ok);
    assert_eq!(h.take_reply(t2), ok);
    assert_eq!(h.take_reply(t2_retry), ok);

    // Every member has executed it now: a retry (even with another payload)
    // is answered from its session table in the same step, and nothing is
    // sent or logged.
    for m in [2, 3] {
        let (t, fx) = h.client(node(m), request(id, epoch, cas("v2")));
        assert_eq!(
            fx,
            vec![Effect::Reply { token: t, reply: ok.clone() }],
            "member {m} answers from its session table"
        );
    }
    assert!(h.net.is_empty());
    h.run_for(30);
    for n in [1, 2, 3] {
        assert_eq!(h.log_ids(n), vec![(epoch, 1)], "node {n} has exactly one entry");
        assert_eq!(h.replica(node(n)).applied_index(), 1);
    }
}

#[test]
fn a_retry_at_the_new_sequencer_after_failover_is_not_sequenced_again() {
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    let id = rid(7, 1);
    // The request reaches both members durably, but the sequencer dies
    // before it hears their acks: nobody has executed or answered it.
    let req = request(id, epoch, cas("v1"));
    let (t2, _) = h.client(node(2), req.clone());
    let (t3, _) = h.client(node(3), req.clone());
    let (t1, _) = h.client(node(1), req);
    h.crash_primary_after_backups_persist();
    assert!(h.replies.is_empty());

    // A new sequencer takes over; stop the moment it has won.
    let s = h.run_until_a_backup_leads();
    let view = h.view(node(s));
    assert_eq!(view.epoch, epoch + 1);
    assert_eq!(h.replica(node(s)).applied_index(), 0);

    // The FE retries at the new epoch: the inherited entry is pending, so
    // nothing is logged or sent.
    let (retry, fx) = h.client(node(s), request(id, view.epoch, cas("v2")));
    assert_eq!(fx, vec![], "the retry waits for the inherited entry");
    h.settle();
    let ok = response(id, Ok(OpResult::Written { version: 1 }));
    assert_eq!(h.take_reply(retry), ok);
    // The first attempt's copies at the survivors are answered too.
    assert_eq!(h.take_reply(t2), ok);
    assert_eq!(h.take_reply(t3), ok);
    assert!(h.replies_to(t1).is_empty(), "node 1 is down");

    h.run_for(30);
    for n in [2, 3] {
        // The new sequencer's no-op (index 2) is what committed the
        // inherited entry.
        assert_eq!(
            h.log_ids(n),
            vec![(epoch, 1), (view.epoch, 2)],
            "node {n}: the request's entry once, then the no-op"
        );
        assert!(h.replica(node(n)).log().range(2, 2).all(|e| e.is_noop()));
        assert_eq!(entry_records(&h, n), 1, "node {n} logged one entry record of the request");
        assert_eq!(h.replica(node(n)).kv().get(b"k").map(|v| v.value.clone()), Some(b"v1".to_vec()));
    }
}
