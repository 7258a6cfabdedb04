//! `Op::Scan` (the Redis front end's KEYS/SCAN/DBSIZE): the group's leader
//! answers a page of its committed keys in byte order under its lease, and
//! nothing is logged; a backup refuses and names the leader; a page over
//! `MAX_SCAN_KEYS` is refused.

mod common;

use common::*;
use pactdb_core::limits::MAX_SCAN_KEYS;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::wire::{ClientError, ClientReply};
use pactdb_core::Effect;

fn scan(after: Option<&str>, limit: u32) -> Op {
    Op::Scan { group: GROUP, after: after.map(|a| a.as_bytes().to_vec()), limit }
}

fn scanned(keys: &[&str], total: u64) -> OpResult {
    OpResult::Scanned { keys: keys.iter().map(|k| serde_bytes::ByteBuf::from(k.as_bytes().to_vec())).collect(), total }
}

#[test]
fn the_leader_answers_pages_of_committed_keys_under_its_lease() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let mut tokens = Vec::new();
    for (i, k) in ["c", "a", "d", "b"].iter().enumerate() {
        tokens.push(h.client(node(1), request(rid(7, i as u64 + 1), epoch, put(k, "v"))).0);
    }
    // A write not committed yet is not listed: the scan reads committed state.
    let (token, fx) = h.client(node(1), request(rid(9, 1), epoch, scan(None, 10)));
    let lease_expires_ms = match &fx[..] {
        [Effect::ReplyUnderLease { lease_expires_ms, .. }] => *lease_expires_ms,
        other => panic!("expected one reply under the lease, got {other:#?}"),
    };
    assert_eq!(
        fx,
        vec![Effect::ReplyUnderLease {
            token,
            reply: answered_at(rid(9, 1), Ok(scanned(&[], 0)), 0),
            lease_expires_ms
        }]
    );
    h.settle();
    for t in tokens {
        assert!(matches!(h.take_reply(t), ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }));
    }
    let commit = h.replica(node(1)).commit_index();
    assert_eq!(commit, 4);
    let lease_expires_ms = h.replica(node(1)).lease_expires_ms().expect("the primary holds its lease");

    // Pages in byte order, each after the last key of the one before; the
    // total counts every key of the group. Nothing is sent to the backups.
    let pages: [(Option<&str>, &[&str]); 3] = [(None, &["a", "b"]), (Some("b"), &["c", "d"]), (Some("d"), &[])];
    for (i, (after, keys)) in pages.into_iter().enumerate() {
        let id = rid(9, i as u64 + 2);
        let (token, fx) = h.client(node(1), request(id, epoch, scan(after, 2)));
        let reply = answered_at(id, Ok(scanned(keys, 4)), commit);
        assert_eq!(fx, vec![Effect::ReplyUnderLease { token, reply, lease_expires_ms }]);
    }

    // A backup does not answer a scan: it names the view, so the front end
    // goes to the leader.
    let id = rid(9, 10);
    let (token, fx) = h.client(node(2), request(id, epoch, scan(None, 2)));
    let not_leader = Err(ClientError::NotLeader { view: Some(h.view(node(2)).clone()) });
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(id, not_leader) }]);

    // Over the bound: refused, saying the limit.
    let id = rid(9, 11);
    let (token, fx) = h.client(node(1), request(id, epoch, scan(None, MAX_SCAN_KEYS as u32 + 1)));
    let reason = format!("a scan of {} keys exceeds the limit of {MAX_SCAN_KEYS} keys", MAX_SCAN_KEYS + 1);
    let refused = Err(ClientError::Malformed { reason });
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(id, refused) }]);
}
