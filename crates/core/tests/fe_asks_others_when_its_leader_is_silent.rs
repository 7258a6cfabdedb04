//! A leader that stays silent past the attempt timeout, or says it is cut
//! off from its backups, may be being replaced while it is still reachable.
//! The front end keeps its view (a view fetched from that leader, no newer,
//! is no news), asks the other nodes for views until a newer one comes, and
//! resends the moment one names a new leader (same request id).

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeTiming};
use pactdb_core::wire::{ClientError, ClientReply, ClientRequest};

fn fetches(effects: &[FeEffect]) -> Vec<u64> {
    effects.iter().filter_map(|e| if let FeEffect::FetchViews { to } = e { Some(*to) } else { None }).collect()
}

#[test]
fn a_silent_leader_makes_the_front_end_ask_the_other_members() {
    let t = FeTiming::default();
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = rid_unnamed(fe.client_id(), op);
    let request = |epoch| ClientRequest {
        id,
        group: GROUP,
        epoch,
        op: put("k", "v"),
        consistency: Default::default(),
        after: 0,
        prev: 0,
    };
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Send { to: 1, msg: pactdb_core::wire::ClientMsg::Request(request(2)) }]
    );

    // Node 1 stays silent past the attempt timeout: exactly one question,
    // to another node, and nothing resent yet.
    let mut now = t.attempt_timeout_ms;
    fe.on_tick(now, &mut rng);
    let effects = fe.take_effects();
    let asked = fetches(&effects);
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert!(asked.len() == 1 && asked[0] != 1, "asked {asked:?}");
    assert_eq!(fe.suspected(GROUP), Some((2, 1)));

    // Node 1 itself repeats its own view: no news, nothing resent.
    fe.on_reply(now, &mut rng, 1, ClientReply::Views { cluster: None, views: vec![view(2, 1)] });
    assert_eq!(fe.take_effects(), vec![]);

    // It keeps asking others while no newer view is known, never node 1.
    let mut asked = Vec::new();
    while now < t.attempt_timeout_ms + 300 {
        now = fe.next_wake_ms().expect("the op waits");
        fe.on_tick(now, &mut rng);
        let effects = fe.take_effects();
        asked.extend(fetches(&effects));
        if effects.iter().any(|e| sent_request(e).is_some()) {
            // A retry to node 1 after the back-off; it stays silent.
            assert!(effects.iter().filter_map(sent_request).all(|(to, _)| to == 1), "{effects:?}");
        }
    }
    assert!(asked.len() >= 300 / (4 * t.backoff_base_ms) as usize / 2, "asked only {asked:?}");
    assert!(asked.iter().all(|&n| n != 1), "asked the silent leader: {asked:?}");

    // Node 3 knows the new view: resent to node 2 at once, same id.
    fe.on_reply(now, &mut rng, 3, ClientReply::Views { cluster: None, views: vec![view(3, 2)] });
    assert_eq!(
        fe.take_effects(),
        vec![FeEffect::Send { to: 2, msg: pactdb_core::wire::ClientMsg::Request(request(3)) }]
    );
    assert_eq!(fe.suspected(GROUP), None);
}

#[test]
fn a_leader_that_says_it_is_cut_off_makes_the_front_end_ask_elsewhere_at_once() {
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = rid_unnamed(fe.client_id(), op);
    fe.take_effects();

    let reply = response(id, Err(ClientError::CutOff { view: view(2, 1) }));
    fe.on_reply(3, &mut rng, 1, reply);
    let effects = fe.take_effects();
    let asked = fetches(&effects);
    assert_eq!(effects.len(), 1, "one question, nothing resent: {effects:?}");
    assert!(asked.len() == 1 && asked[0] != 1, "asked {asked:?}");
    assert_eq!(fe.suspected(GROUP), Some((2, 1)));

    fe.on_reply(4, &mut rng, asked[0], ClientReply::Views { cluster: None, views: vec![view(3, 3)] });
    let effects = fe.take_effects();
    match &effects[..] {
        [e] => assert_eq!(
            sent_request(e),
            Some((
                3,
                ClientRequest {
                    id,
                    group: GROUP,
                    epoch: 3,
                    op: put("k", "v"),
                    consistency: Default::default(),
                    after: 0,
                    prev: 0
                }
            ))
        ),
        other => panic!("expected one resend to node 3, got {other:?}"),
    }
}
