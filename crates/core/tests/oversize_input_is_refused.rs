//! A key over `MAX_KEY_BYTES` or a value over `MAX_VALUE_BYTES` is refused
//! with a clear error, and nothing is written or replicated.

mod common;

use common::*;
use pactdb_core::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
use pactdb_core::state::op::Op;
use pactdb_core::wire::{ClientError, WalRecord};
use pactdb_core::Effect;

fn refused(h: &mut Harness, seq: u64, op: Op, error: ClientError) {
    let epoch = h.view(node(1)).epoch;
    let (token, fx) = h.client(node(1), request(rid(7, seq), epoch, op));
    assert_eq!(fx, vec![Effect::Reply { token, reply: response(rid(7, seq), Err(error)) }]);
}

#[test]
fn oversize_keys_and_values_are_refused_and_nothing_is_persisted() {
    let mut h = Harness::three_nodes();
    let big_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let big_value = vec![b'v'; MAX_VALUE_BYTES + 1];
    let key_error = ClientError::KeyTooLarge { len: MAX_KEY_BYTES + 1, max: MAX_KEY_BYTES };
    let value_error = ClientError::ValueTooLarge { len: MAX_VALUE_BYTES + 1, max: MAX_VALUE_BYTES };

    refused(&mut h, 1, Op::Put { key: big_key.clone(), value: b"v".to_vec() }, key_error.clone());
    refused(&mut h, 2, Op::Get { key: big_key.clone() }, key_error.clone());
    refused(&mut h, 3, Op::Delete { key: big_key.clone() }, key_error.clone());
    refused(&mut h, 4, Op::Cas { key: big_key, expected_version: 0, value: b"v".to_vec() }, key_error);
    refused(&mut h, 5, Op::Put { key: b"k".to_vec(), value: big_value.clone() }, value_error.clone());
    refused(&mut h, 6, Op::Cas { key: b"k".to_vec(), expected_version: 0, value: big_value }, value_error);

    assert!(h.net.is_empty(), "nothing replicated: {:?}", h.net);
    for n in [1, 2, 3] {
        assert!(h.unsynced[&n].is_empty(), "node {n} persisted nothing");
        assert_eq!(h.replica(n).last_index(), 0);
    }
    // A refused request id is not remembered as done: a valid retry runs.
    let epoch = h.view(node(1)).epoch;
    let (_, fx) = h.client(node(1), request(rid(7, 5), epoch, put("k", "small")));
    assert!(matches!(&persists(&fx)[..], [(_, WalRecord::Entry { .. })]), "{fx:#?}");
}

#[test]
fn the_limits_themselves_are_accepted() {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    let op = Op::Put { key: vec![b'k'; MAX_KEY_BYTES], value: vec![b'v'; MAX_VALUE_BYTES] };
    let (token, fx) = h.client(node(1), request(rid(7, 1), epoch, op));
    assert!(replies(&fx).is_empty(), "{:?}", replies(&fx));
    assert!(matches!(&persists(&fx)[..], [(_, WalRecord::Entry { .. })]));
    h.settle();
    assert!(matches!(h.take_reply(token), pactdb_core::wire::ClientReply::Response { result: Ok(_), .. }));
}
