//! `pactdb admin transfer-leader`: the primary holds new writes, asks the
//! member once it holds and the primary committed every entry, the member
//! wins the next epoch with the same members and serves at once (no lease
//! to wait out: the old primary stays a member), and the held writes are
//! redirected to it, never refused or lost. A member that never takes over
//! makes the primary give up and run the held writes itself.

mod common;

use common::*;
use pactdb_core::limits::HANDOVER_TIMEOUT_MS;
use pactdb_core::replica::Role;
use pactdb_core::state::op::OpResult;
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply, PeerBody, TransferRefused};
use pactdb_core::Effect;

fn transfer(to: u64) -> ClientMsg {
    ClientMsg::TransferLeader { group: GROUP, to }
}

#[test]
fn a_caught_up_member_is_asked_at_once_and_serves_without_a_lease_wait() {
    let mut h = Harness::three_nodes();
    assert!(matches!(h.put_settled(1), ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }));
    let view = h.view(node(1));
    let last = h.replica(node(1)).last_index();
    assert_eq!(h.replica(node(1)).commit_index(), last);

    let (token, fx) = h.client(node(1), transfer(2));
    assert_eq!(
        fx,
        vec![
            Effect::Send {
                to: 2,
                msg: pactdb_core::wire::PeerMsg {
                    from: 1,
                    body: PeerBody::TakeOver { group: GROUP, epoch: 2, last_index: last, commit_index: last },
                },
            },
            Effect::Reply { token, reply: ClientReply::TransferStarted(Ok(view.clone())) },
        ]
    );

    // While the hand-over is under way a write is held: no reply, nothing
    // logged. A read is still served.
    let (held, fx) = h.client(node(1), request(rid(7, 2), 2, put("k2", "v2")));
    assert_eq!(fx, vec![]);
    let (read, fx) = h.client(node(1), request(rid(7, 3), 2, get("k1")));
    assert!(
        matches!(&replies(&fx)[..], [(t, ClientReply::Response { result: Ok(OpResult::Value(Some(_))), .. })] if *t == read)
    );

    // The member proposes itself for epoch 3 with the same members and wins.
    let start = h.now;
    h.settle();
    assert_eq!(h.now, start, "no time passed");
    let new = h.view(node(2));
    assert_eq!((new.epoch, new.leader, new.members.clone()), (3, 2, vec![1, 2, 3]));
    assert_eq!(h.replica(node(2)).role(), Role::Primary);
    assert_eq!(h.replica(node(1)).role(), Role::Backup);
    // The held write is told who leads now, so its front end resends it.
    assert_eq!(h.take_reply(held), response(rid(7, 2), Err(ClientError::NotLeader { view: Some(new.clone()) })));

    // The new primary serves at once: its predecessor is a member of its
    // view, so it need not wait out a lease.
    let (t, _) = h.client(node(2), request(rid(7, 2), 3, put("k2", "v2")));
    h.settle();
    assert!(matches!(h.take_reply(t), ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }));
    assert_eq!(h.now, start, "still no time passed");
    let (t, _) = h.client(node(2), request(rid(7, 4), 3, get("k1")));
    h.settle();
    // Its lease came with the acks of that write.
    assert!(matches!(h.take_reply(t), ClientReply::Response { result: Ok(OpResult::Value(Some(_))), .. }));
    // The next heartbeat tells the backups the commit index.
    h.run_for(20);
    for n in [1, 3] {
        assert_eq!(h.replica(node(n)).kv().digest(), h.replica(node(2)).kv().digest());
    }
}

#[test]
fn the_member_is_asked_only_once_it_holds_every_entry() {
    let mut h = Harness::three_nodes();
    // Node 2 misses the write's append.
    let (w, _) = h.client(node(1), request(rid(7, 1), 2, put("k1", "v1")));
    h.drop_if(|to, m| to == 2 && matches!(m.body, PeerBody::Append { .. }));
    h.settle();
    assert!(h.replies_to(w).is_empty(), "not committed without node 2");
    let (token, fx) = h.client(node(1), transfer(2));
    assert_eq!(fx, vec![Effect::Reply { token, reply: ClientReply::TransferStarted(Ok(h.view(node(1)))) }]);
    // The retransmission catches node 2 up; then it is asked and takes over.
    h.run_until(500, |h| h.view(node(2)).leader == 2 && h.replica(node(2)).is_primary());
    assert!(matches!(h.take_reply(w), ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }));
    assert_eq!(h.view(node(1)).epoch, 3);
}

#[test]
fn refusals_name_the_reason_and_the_view() {
    let mut h = Harness::three_nodes();
    let view = h.view(node(1));
    let (t, _) = h.client(node(2), transfer(3));
    assert_eq!(
        h.take_reply(t),
        ClientReply::TransferStarted(Err(TransferRefused {
            reason: "node 2 does not lead group 0".into(),
            view: Some(view.clone())
        }))
    );
    let (t, _) = h.client(node(1), transfer(1));
    assert!(
        matches!(h.take_reply(t), ClientReply::TransferStarted(Err(TransferRefused { ref reason, .. })) if reason.contains("already leads"))
    );
    let (t, _) = h.client(node(1), transfer(9));
    assert!(
        matches!(h.take_reply(t), ClientReply::TransferStarted(Err(TransferRefused { ref reason, .. })) if reason.contains("not a member"))
    );
    // One hand-over at a time.
    h.drop_if(|_, _| true);
    let (t, _) = h.client(node(1), transfer(2));
    assert!(matches!(h.take_reply(t), ClientReply::TransferStarted(Ok(_))));
    let (t, _) = h.client(node(1), transfer(3));
    assert!(
        matches!(h.take_reply(t), ClientReply::TransferStarted(Err(TransferRefused { ref reason, .. })) if reason.contains("already under way"))
    );
}

#[test]
fn a_member_that_never_takes_over_makes_the_primary_give_up_and_run_the_held_writes() {
    let mut h = Harness::three_nodes();
    let (t, _) = h.client(node(1), transfer(2));
    assert!(matches!(h.take_reply(t), ClientReply::TransferStarted(Ok(_))));
    let (held, fx) = h.client(node(1), request(rid(7, 1), 2, put("k1", "v1")));
    assert_eq!(fx, vec![]);
    let status = h.replica(node(1)).status(h.now).handover.expect("a hand-over under way");
    assert_eq!((status.to, status.held, status.asked), (2, 1, true));
    // Every `TakeOver` is lost.
    let start = h.now;
    loop {
        h.drop_if(|_, m| matches!(m.body, PeerBody::TakeOver { .. }));
        h.settle();
        if !h.replies_to(held).is_empty() {
            break;
        }
        assert!(h.now < start + HANDOVER_TIMEOUT_MS + 10, "the primary never gave up");
        h.advance(1);
        h.tick_all();
    }
    assert!(h.now >= start + HANDOVER_TIMEOUT_MS);
    assert!(matches!(h.take_reply(held), ClientReply::Response { result: Ok(OpResult::Written { .. }), .. }));
    assert_eq!(h.view(node(1)).epoch, 2);
    assert!(h.replica(node(1)).status(h.now).handover.is_none());
}

#[test]
fn a_take_over_from_another_epoch_or_sender_is_ignored() {
    let mut h = Harness::three_nodes();
    let last = h.replica(node(2)).last_index();
    for (from, epoch) in [(1, 1), (1, 3), (3, 2)] {
        let fx = h.inject(node(2), from, PeerBody::TakeOver { group: GROUP, epoch, last_index: last, commit_index: 0 });
        assert_eq!(fx, vec![], "TakeOver of epoch {epoch} from node {from}");
    }
    // Nor is one that claims entries the member lacks.
    let fx = h.inject(node(2), 1, PeerBody::TakeOver { group: GROUP, epoch: 2, last_index: last + 1, commit_index: 0 });
    assert_eq!(fx, vec![]);
    assert_eq!(h.replica(node(2)).role(), Role::Backup);
}
