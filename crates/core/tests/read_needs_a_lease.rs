//! The primary serves a read alone only while its lease holds: every other
//! member acked an `Append` sent less than `lease_ms` ago. Without it, a
//! newer primary may exist and the read could be stale.

mod common;

use common::*;
use pactdb_core::bugs::Bugs;
use pactdb_core::io::release_under_lease;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{ClientError, PeerBody};
use pactdb_core::Effect;

fn lease_ms() -> pactdb_core::types::Millis {
    pactdb_core::replica::ReplicaTiming::default().lease_ms
}

fn no_lease() -> Result<OpResult, ClientError> {
    Err(ClientError::Unavailable { reason: "the primary's lease is not held".into() })
}

#[test]
fn a_fresh_primary_serves_reads_only_once_every_backup_acked() {
    let mut h = Harness::fresh_primary(1);
    let epoch = h.view(node(1)).epoch;
    assert!(!h.replica(node(1)).lease_valid(h.now));

    // Won its epoch at `won_ms`: it first waits out any read lease its
    // predecessor may still hold (`lease_wait_ms` from winning, in a new
    // incarnation), refusing every request meanwhile, up to its last
    // millisecond. (The harness has since run until the backups read their
    // views from the config store.)
    let last_refused = h.won_ms + lease_wait_ms() - 1;
    assert!(h.now < last_refused, "the backups confirmed their views within the wait");
    for at in [h.now, last_refused] {
        h.advance(at - h.now);
        let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, get("k")));
        assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 1), Err(waiting_out_lease())) }]);
    }

    // The wait is over before its first heartbeat went out (no node ticked):
    // it serves now, but nothing is acked, so a read is refused.
    h.advance(1);
    assert!(!h.replica(node(1)).lease_valid(h.now));
    let (token, fx) = h.client(node(1), request(rid(7, 2), epoch, get("k")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 2), no_lease()) }]);

    // The first heartbeat goes out: one empty Append per backup.
    h.advance(1);
    let heartbeat_ms = h.now;
    let fx = h.tick(node(1));
    let appends: Vec<_> = sends(&fx).into_iter().filter(|(_, b)| matches!(b, PeerBody::Append { .. })).collect();
    assert_eq!(appends.len(), 2, "{fx:#?}");
    for (to, body) in &appends {
        assert!([2, 3].contains(to));
        assert!(matches!(body, PeerBody::Append { entries, sent_ms, .. } if entries.is_empty() && *sent_ms == h.now));
    }

    // Backup 2 acks; backup 3's ack is still on its way: refused.
    h.deliver_to(node(2));
    h.deliver(node(2), node(1));
    let (token, fx) = h.client(node(1), request(rid(7, 3), epoch, get("k")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 3), no_lease()) }]);

    // Backup 3 acks too: served, marked with the lease it relied on, which
    // ends `lease_ms` after the acked heartbeat was sent.
    h.deliver_to(node(3));
    h.deliver(node(3), node(1));
    let (token, fx) = h.client(node(1), request(rid(7, 4), epoch, get("k")));
    let lease_expires_ms = heartbeat_ms + lease_ms();
    let reply = response(rid(7, 4), Ok(OpResult::Value(None)));
    assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply, lease_expires_ms }]);
}

#[test]
fn a_lapsed_lease_serves_no_reads() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let sent = h.now; // three_nodes() ends with an acked heartbeat sent now
    let lease_ms = lease_ms();
    let lease_expires_ms = sent + lease_ms;
    let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, get("k")));
    let reply = response(rid(7, 1), Ok(OpResult::Value(None)));
    assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply, lease_expires_ms }]);

    // The backups go silent. The lease is counted from when the acked
    // heartbeat was sent, so it ends `lease_ms` after that, not after the ack.
    h.isolate(node(2));
    h.now = sent + lease_ms - 1;
    let (token, fx) = h.client(node(1), request(rid(7, 2), epoch, get("k")));
    let reply = response(rid(7, 2), Ok(OpResult::Value(None)));
    assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply, lease_expires_ms }]);
    // Past it, the primary is cut off from a backup and says so.
    h.now = sent + lease_ms;
    let (token, fx) = h.client(node(1), request(rid(7, 3), epoch, get("k")));
    let cut_off = Err(ClientError::CutOff { view: h.view(node(1)).clone() });
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 3), cut_off) }]);
}

/// The step that served a read was told the time once, when it began; a
/// slow step (or a slow batch of inputs) can end after the lease did. The
/// read is released only while its lease holds, by the clock at release.
#[test]
fn a_read_released_after_its_lease_ran_out_is_refused() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let lease_expires_ms = h.now + lease_ms();
    let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, get("k")));
    let answer = response(rid(7, 1), Ok(OpResult::Value(None)));
    assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply: answer.clone(), lease_expires_ms }]);

    // Released before the lease ends: the answer. At its end or later: a
    // refusal the front end retries.
    assert_eq!(release_under_lease(answer.clone(), lease_expires_ms, lease_expires_ms - 1), answer);
    let ran_out = response(
        rid(7, 1),
        Err(ClientError::Unavailable { reason: "the primary's lease ran out before the read was answered".into() }),
    );
    assert_eq!(release_under_lease(answer.clone(), lease_expires_ms, lease_expires_ms), ran_out);
    assert_eq!(release_under_lease(answer, lease_expires_ms, lease_expires_ms + 500), ran_out);
    // A refusal needs no lease and is released as it is.
    let refused = response(rid(7, 1), no_lease());
    assert_eq!(release_under_lease(refused.clone(), lease_expires_ms, lease_expires_ms + 500), refused);
}

/// The bug `lease-checked-at-batch-start` is today's behaviour before the
/// fix: the read is answered with no expiry, so nothing stops its release
/// after the lease ran out.
#[test]
fn with_the_bug_a_read_carries_no_lease_expiry() {
    let bugs = Bugs { lease_checked_at_batch_start: true, ..Bugs::default() };
    let mut h = Harness::with_bugs(&[1, 2, 3], &[(1, bugs)]);
    h.bootstrap(1);
    h.wait_out_predecessor_lease();
    h.first_heartbeat();
    let epoch = h.view(node(1)).epoch;
    let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, get("k")));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 1), Ok(OpResult::Value(None))) }]);
}

#[test]
fn a_read_of_an_uncommitted_write_waits_for_its_commit() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let (wtoken, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    // The read sees the pending write, so it is answered only when that
    // write commits: never a value that could still be lost.
    let (rtoken, fx) = h.client(node(1), request(rid(8, 1), epoch, get("k")));
    assert_eq!(fx, vec![]);
    h.settle();
    let written = h.take_reply(wtoken);
    assert_eq!(written, response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
    match h.take_reply(rtoken) {
        pactdb_core::wire::ClientReply::Response { id, result: Ok(OpResult::Value(Some(v))), .. } => {
            assert_eq!((id, v.value.as_slice(), v.version), (rid(8, 1), &b"v"[..], 1));
        }
        other => panic!("expected the written value, got {other:?}"),
    }
}

/// Clocks are local to each node: a `sent_ms` means something only to the
/// primary that stamped it. A backup must not echo the old primary's stamps
/// to a new primary, or the new primary takes them as lease evidence on its
/// own clock.
#[test]
fn a_new_primary_does_not_take_the_old_primarys_clock_as_its_lease() {
    let mut h = Harness::new(&[1, 2, 3]);
    h.set_clock_ahead(node(1), 1_000_000); // node 1 has been up for long
    h.bootstrap(1);
    h.first_heartbeat();
    h.crash(node(1));

    // A backup takes over and heartbeats; the other one acks.
    let leads = |h: &Harness, n| h.replica(n).is_primary() && h.replica(n).lease_valid(h.local_now(n));
    h.run_until(2_000, |h| leads(h, 2) || leads(h, 3));
    let p = if leads(&h, 2) { 2 } else { 3 };
    let epoch = h.view(node(p)).epoch;
    assert_eq!(h.view(node(p)).members, vec![2, 3]);
    let acks: Vec<_> = h
        .sent
        .iter()
        .filter_map(|(to, m)| match &m.body {
            PeerBody::AppendAck { epoch: e, sent_ms, .. } if *to == p && *e == epoch => Some(*sent_ms),
            _ => None,
        })
        .collect();
    assert!(!acks.is_empty());
    for sent_ms in acks {
        assert!(sent_ms <= h.local_now(p), "node {p} was echoed a time it never stamped: {sent_ms}");
    }

    // The new primary is cut off. Its lease must lapse `lease_ms` after its
    // last acked heartbeat, on its own clock.
    h.isolate(node(p));
    h.run_for(500);
    assert!(!h.replica(node(p)).lease_valid(h.local_now(p)), "lease still held after 500 ms without acks");
    let (token, fx) = h.client(node(p), request(rid(7, 1), epoch, get("k")));
    let cut_off = Err(ClientError::CutOff { view: h.view(node(p)).clone() });
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, 1), cut_off) }]);
}
