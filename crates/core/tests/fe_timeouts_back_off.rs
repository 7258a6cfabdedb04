//! A front end whose attempts go unanswered backs off exponentially (with
//! jitter, capped), keeps the same RequestId for every attempt, and gives up
//! with `Timeout` at the operation deadline.

mod common;

use common::fe::*;
use common::*;
use pactdb_core::fe::{FeEffect, FeError, FeTiming};
use pactdb_core::wire::ClientError;

#[test]
fn unanswered_attempts_back_off_exponentially_with_the_same_id() {
    let t = FeTiming::default();
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    let mut effects = fe.take_effects();
    let mut now = 0;
    let mut gaps = Vec::new();
    let mut attempts = 0;
    loop {
        // The attempt in flight.
        let sends: Vec<_> = effects.iter().filter_map(sent_request).collect();
        assert_eq!(sends.len(), 1, "one attempt at a time: {effects:?}");
        assert_eq!(sends[0].1.id, id, "every attempt reuses the id");
        attempts += 1;
        // Nothing but view queries until the attempt times out: once an
        // attempt went unanswered the front end suspects the silent leader
        // and asks the other nodes for a newer view every few ms meanwhile.
        let timeout_at = now + t.attempt_timeout_ms;
        if timeout_at >= t.op_timeout_ms {
            break;
        }
        if attempts == 1 {
            assert_eq!(fe.next_wake_ms(), Some(timeout_at), "no suspicion before the first timeout");
        }
        loop {
            let wake = fe.next_wake_ms().unwrap();
            assert!(wake <= timeout_at, "the attempt's timeout is {timeout_at}, the next wake-up {wake}");
            if wake == timeout_at {
                break;
            }
            fe.on_tick(wake, &mut rng);
            let fx = fe.take_effects();
            assert!(!fx.is_empty() && fx.iter().all(|e| matches!(e, FeEffect::FetchViews { .. })), "{fx:?}");
        }
        fe.on_tick(timeout_at - 1, &mut rng);
        assert_eq!(fe.take_effects(), vec![]);
        // Timed out: ask around for views, but do not resend at once.
        now = timeout_at;
        fe.on_tick(now, &mut rng);
        effects = fe.take_effects();
        assert!(effects.iter().all(|e| matches!(e, FeEffect::FetchViews { .. })), "no resend at once: {effects:?}");
        // The back-off, then the next attempt. Meanwhile the FE only asks
        // for views again and again (a new view would end the wait at once).
        let timed_out_at = now;
        loop {
            let wake = fe.next_wake_ms().unwrap();
            if wake >= t.op_timeout_ms {
                break;
            }
            fe.on_tick(wake - 1, &mut rng);
            assert_eq!(fe.take_effects(), vec![]);
            now = wake;
            fe.on_tick(now, &mut rng);
            effects = fe.take_effects();
            if effects.iter().any(|e| sent_request(e).is_some()) {
                break;
            }
            assert!(effects.iter().all(|e| matches!(e, FeEffect::FetchViews { .. })), "{effects:?}");
            assert!(!effects.is_empty(), "a wake-up with nothing to do");
        }
        if !effects.iter().any(|e| sent_request(e).is_some()) {
            break;
        }
        gaps.push(now - timed_out_at);
    }
    // Gap k lies in [cap/2, cap] with cap = min(base * 2^k, max).
    for (k, gap) in gaps.iter().enumerate() {
        let cap = (t.backoff_base_ms << (k + 1)).min(t.backoff_max_ms);
        assert!((cap / 2..=cap).contains(gap), "back-off {k}: {gap} ms not in [{}, {cap}]", cap / 2);
    }
    assert!(gaps.len() >= 6, "reaches the cap: {gaps:?}");
    assert!(gaps[5..].iter().all(|g| *g <= t.backoff_max_ms));
    assert!(attempts >= 10);

    // At the operation deadline: Timeout, and nothing more.
    fe.on_tick(t.op_timeout_ms, &mut rng);
    let effects = fe.take_effects();
    assert_eq!(
        effects.iter().filter(|e| matches!(e, FeEffect::Done { .. })).cloned().collect::<Vec<_>>(),
        vec![FeEffect::Done { op, id, result: Err(FeError::Timeout { last_error: Some("no answer in time".into()) }) }]
    );
    assert_eq!(fe.outstanding(), 0);
    assert_eq!(fe.next_wake_ms(), None);
}

#[test]
fn busy_answers_back_off_exponentially_up_to_the_cap() {
    let t = FeTiming::default();
    let (mut fe, mut rng) = front_end(view(2, 1));
    let op = fe.submit(0, &mut rng, put("k", "v"));
    let id = fe.request_id(op).expect("pending");
    fe.take_effects();
    let mut now = 0;
    for k in 1..=10u32 {
        fe.on_reply(now, &mut rng, 1, response(id, Err(ClientError::Busy)));
        assert_eq!(fe.take_effects(), vec![], "no immediate retry after Busy");
        let gap = fe.next_wake_ms().unwrap() - now;
        let cap = (t.backoff_base_ms << k).min(t.backoff_max_ms);
        assert!((cap / 2..=cap).contains(&gap), "after {k} Busy: {gap} ms not in [{}, {cap}]", cap / 2);
        now += gap;
        fe.on_tick(now, &mut rng);
        let effects = fe.take_effects();
        match &effects[..] {
            [e] => assert_eq!(sent_request(e).map(|(to, r)| (to, r.id)), Some((1, id))),
            other => panic!("expected one retry, got {other:?}"),
        }
    }
}
