//! With `min_members`, an operator trades availability for durability: once
//! the view shrinks below it, writes are refused (reads still served).

mod common;

use common::*;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::ClientError;
use pactdb_core::Effect;

/// Winning its own view change goes through the core's `become_primary`
/// (the new `led_epoch` is set before `adopt_view` asks whether it was
/// primary), so the primary then waits out a predecessor's read lease like a
/// new primary. Let that pass: these tests are about the view's size.
fn wait_after_own_view_change(h: &mut Harness) {
    h.wait_out_predecessor_lease();
}

#[test]
fn a_view_below_min_members_refuses_writes() {
    let mut h = Harness::three_nodes_min(3);
    let epoch = h.view(node(1)).epoch;
    // With every member present, writes go through.
    let (t, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    h.settle();
    assert_eq!(h.take_reply(t), response(rid(7, 1), Ok(OpResult::Written { version: 1 })));

    // Backup 3 dies; the primary removes it from the view.
    h.crash(node(3));
    h.run_until(1_000, |h| h.view(node(1)).epoch == epoch + 1);
    let view = h.view(node(1));
    assert_eq!((view.leader, view.members.clone(), view.min_members), (1, vec![1, 2], 3));
    assert!(h.replica(node(1)).is_primary());
    wait_after_own_view_change(&mut h);

    // Every kind of write is refused, and nothing is written.
    let writes = [
        put("k", "v2"),
        pactdb_core::state::op::Op::Delete { key: b"k".to_vec() },
        pactdb_core::state::op::Op::Cas { key: b"k".to_vec(), expected_version: 1, value: b"v3".to_vec() },
    ];
    for (seq, op) in (2..).zip(writes) {
        let (token, fx) = h.client(node(1), request(rid(7, seq), view.epoch, op));
        assert_eq!(
            fx,
            vec![Effect::Reply {
                token,
                reply: response(rid(7, seq), Err(ClientError::BelowMinMembers { members: 2, min_members: 3 }))
            }]
        );
    }
    assert_eq!(h.replica(node(1)).last_index(), 1);
    assert!(h.unsynced[&1].is_empty());

    // Reads of committed data are still served (the lease is held by 1 and 2).
    h.run_for(30);
    let (token, fx) = h.client(node(1), request(rid(7, 9), view.epoch, get("k")));
    match &replies(&fx)[..] {
        [(t, reply)] if *t == token => match reply {
            pactdb_core::wire::ClientReply::Response { result: Ok(OpResult::Value(Some(v))), .. } => {
                assert_eq!((v.value.as_slice(), v.version), (&b"v"[..], 1));
            }
            other => panic!("expected the committed value, got {other:?}"),
        },
        other => panic!("expected one reply, got {other:#?}"),
    }
}

/// At exactly `min_members` members the view still takes writes. (A view
/// cannot shrink past a config-store majority: the config members are the
/// group's nodes here, so two of three must stay up.)
#[test]
fn a_view_at_min_members_still_writes() {
    let mut h = Harness::three_nodes_min(2);
    let epoch = h.view(node(1)).epoch;
    h.crash(node(3));
    h.run_until(1_000, |h| h.view(node(1)).epoch == epoch + 1);
    let view = h.view(node(1));
    assert_eq!(view.members, vec![1, 2]);
    wait_after_own_view_change(&mut h);
    let (token, fx) = h.client(node(1), request(rid(7, 1), view.epoch, put("k", "v")));
    assert!(replies(&fx).is_empty() && persists(&fx).len() == 1, "{fx:#?}");
    h.settle();
    assert_eq!(h.take_reply(token), response(rid(7, 1), Ok(OpResult::Written { version: 1 })));
}

/// A write that already ran is not refused when retried: the retry learns
/// its recorded outcome. Answering BelowMinMembers would tell the client a
/// committed write was refused.
#[test]
fn a_retry_of_a_committed_write_gets_its_outcome_below_min_members() {
    let mut h = Harness::three_nodes_min(3);
    let epoch = h.view(node(1)).epoch;
    let (first, _) = h.client(node(1), request(rid(7, 1), epoch, put("k", "v")));
    h.settle();
    // The answer is lost on the way to the client, which will retry.
    let ok = h.take_reply(first);
    assert_eq!(ok, response(rid(7, 1), Ok(OpResult::Written { version: 1 })));

    h.crash(node(3));
    h.run_until(1_000, |h| h.view(node(1)).epoch == epoch + 1);
    let view = h.view(node(1));
    assert_eq!(view.members, vec![1, 2]);
    wait_after_own_view_change(&mut h);

    let (retry, fx) = h.client(node(1), request(rid(7, 1), view.epoch, put("k", "v")));
    assert_eq!(fx, vec![Effect::Reply { token: retry, reply: ok }]);
}
