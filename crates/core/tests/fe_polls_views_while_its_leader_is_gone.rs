//! When its leader is unreachable, a front end keeps asking for views while
//! it backs off, and resends (same request id) the moment a view names a new
//! leader, instead of when its grown back-off ends. That lag was up to
//! `backoff_max_ms` of every failover.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeTiming};
use pactdb_core::wire::{ClientReply, ClientRequest};

#[test]
fn an_unreachable_leader_means_polling_views_then_resending_at_once() {
    let t = FeTiming::default();
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    fe.take_effects();

    // Node 1 is dead: every attempt there fails at once.
    let mut now = 1;
    fe.on_unreachable(now, &mut rng, 1);
    let mut fetch_times = Vec::new();
    while now < 400 {
        let effects = fe.take_effects();
        fetch_times.extend(effects.iter().filter(|e| matches!(e, FeEffect::FetchViews { .. })).map(|_| now));
        if effects.iter().any(|e| sent_request(e).is_some_and(|(to, _)| to == 1)) {
            fe.on_unreachable(now, &mut rng, 1);
            continue;
        }
        now = fe.next_wake_ms().expect("the op waits");
        fe.on_tick(now, &mut rng);
    }
    // Polled every `4 * backoff_base_ms` even once the back-off has grown to
    // `backoff_max_ms`.
    let poll = 4 * t.backoff_base_ms;
    assert!(fetch_times.len() as u64 >= 400 / poll / 2, "views asked for {} times: {fetch_times:?}", fetch_times.len());
    for w in fetch_times.windows(2) {
        assert!(w[1] - w[0] <= poll + 1, "a gap of {} ms between fetches: {fetch_times:?}", w[1] - w[0]);
    }

    // A view naming node 2 arrives: resent there at once, same id.
    fe.take_effects();
    fe.on_reply(now, &mut rng, 3, ClientReply::Views { cluster: None, views: vec![view(3, 2)] });
    let effects = fe.take_effects();
    match &effects[..] {
        [e] => assert_eq!(
            sent_request(e),
            Some((
                2,
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
        other => panic!("expected one resend to node 2, got {other:?}"),
    }
}
