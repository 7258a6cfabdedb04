//! Fuzzing: every decoder and every peer-message handler, fed arbitrary
//! input, answers with an error or drops the input; nothing panics.
//!
//! The corpus is fixed: the messages, WAL records and client requests that
//! real scenarios produce (a passive group with writes, two groups running
//! a transaction, an active group). Each case takes one of them and mutates
//! it with choices drawn by `arbitrary::Unstructured` from bytes of a seeded
//! RNG: bytes of its encoding changed (the encoding's integers are varints,
//! so a changed byte is mostly another small epoch, index or node id),
//! inserted, removed or spliced from another corpus item; or plain random
//! bytes. Whatever decodes is fed to a node in each role: primary, backup,
//! sequencer and active member, participant and coordinator, a restarted
//! replica that has not read its view, an amnesiac one, a backup whose log
//! was compacted by a snapshot, and a node that was never bootstrapped.
//!
//! `cargo test` runs a thousand cases per role (a few seconds). A longer
//! run, with another seed:
//!
//! ```text
//! PACTDB_FUZZ_CASES=200000 PACTDB_FUZZ_SEED=7 cargo test --release -p pactdb-core --test peer_input_never_panics
//! ```

mod common;

use arbitrary::Unstructured;
use common::*;
use pactdb_core::state::stream::{Cursor, Frozen, Partial};
use pactdb_core::state::{Snapshot, StateMachine};
use pactdb_core::types::NodeId;
use pactdb_core::wire::{self, ClientMsg, ClientReply, PeerBody, PeerMsg, WalRecord};
use pactdb_core::Input;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cases() -> usize {
    std::env::var("PACTDB_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000)
}

fn seed() -> u64 {
    std::env::var("PACTDB_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12)
}

/// The bytes one case draws its choices from.
fn case_bytes(rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut bytes = vec![0u8; 256];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// A mutation of one corpus item (or plain random bytes).
fn mutate(u: &mut Unstructured, corpus: &[Vec<u8>]) -> arbitrary::Result<Vec<u8>> {
    if corpus.is_empty() || u.ratio(1, 10)? {
        let n = u.int_in_range(0..=64)?;
        return (0..n).map(|_| u.arbitrary::<u8>()).collect();
    }
    let mut bytes = u.choose(corpus)?.clone();
    for _ in 0..u.int_in_range(1..=4)? {
        let len = bytes.len();
        match u.int_in_range(0..=5)? {
            // Another small integer: an epoch, index, node or group nearby.
            0 | 1 if len > 0 => {
                let i = u.int_in_range(0..=len - 1)?;
                bytes[i] = u.int_in_range(0..=12)?;
            }
            2 if len > 0 => {
                let i = u.int_in_range(0..=len - 1)?;
                bytes[i] = u.arbitrary()?;
            }
            3 => {
                let i = u.int_in_range(0..=len)?;
                bytes.insert(i, u.arbitrary()?);
            }
            4 if len > 0 => {
                let i = u.int_in_range(0..=len - 1)?;
                bytes.remove(i);
            }
            _ => {
                // Splice: the tail of another item.
                let other = u.choose(corpus)?;
                let (i, j) = (u.int_in_range(0..=len)?, u.int_in_range(0..=other.len())?);
                bytes.truncate(i);
                bytes.extend_from_slice(&other[j..]);
            }
        }
    }
    Ok(bytes)
}

/// Runs `cases()` mutations of `corpus` through `feed`, which gets the
/// mutated bytes.
fn fuzz(name: &str, salt: u64, corpus: &[Vec<u8>], mut feed: impl FnMut(&[u8])) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ salt);
    for case in 0..cases() {
        let raw = case_bytes(&mut rng);
        let mut u = Unstructured::new(&raw);
        let Ok(bytes) = mutate(&mut u, corpus) else { continue };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| feed(&bytes)));
        if let Err(e) = result {
            panic!("{name}: case {case} (seed {}) panicked on {bytes:?}: {e:?}", seed());
        }
    }
}

/// Every message, WAL record and client request the scenarios produced.
struct Corpus {
    peer: Vec<Vec<u8>>,
    wal: Vec<Vec<u8>>,
    client: Vec<Vec<u8>>,
    replies: Vec<Vec<u8>>,
}

fn collect(h: &Harness, c: &mut Corpus) {
    let mut seen = std::collections::BTreeSet::new();
    for (_, m) in &h.sent {
        let b = wire::encode(m);
        if seen.insert(b.clone()) && c.peer.len() < 2_000 {
            c.peer.push(b);
        }
    }
    for recs in h.wal.values() {
        for r in recs {
            let b = wire::encode(r);
            if seen.insert(b.clone()) && c.wal.len() < 2_000 {
                c.wal.push(b);
            }
        }
    }
    for (_, _, r) in &h.replies {
        let b = wire::encode(r);
        if seen.insert(b.clone()) && c.replies.len() < 500 {
            c.replies.push(b);
        }
    }
}

fn corpus() -> Corpus {
    let mut c = Corpus { peer: vec![], wal: vec![], client: vec![], replies: vec![] };
    // A passive group with writes.
    let mut h = passive_with_writes();
    collect(&h, &mut c);
    // A snapshot stream, in small chunks: header pieces and items, the
    // member's acks, and the WAL records of taking it.
    let mut g = passive_with_writes();
    let snap = Snapshot { index: 30, epoch: g.view(node(2)).epoch, state: g.replica(node(1)).state().clone() };
    g.sent.clear();
    g.stream_snapshot(node(2), node(1), &snap, 24, |_| {});
    g.persist_all();
    collect(&g, &mut c);
    let frozen = Frozen::freeze(snap.index, snap.epoch, &snap.state);
    let mut at = Cursor::default();
    while let Some((data, next)) = frozen.chunk(at.offset, at, 24) {
        let body =
            PeerBody::SnapshotChunk { view: g.view(node(2)), meta: frozen.meta, offset: at.offset, data, sent_ms: 1 };
        c.peer.push(wire::encode(&PeerMsg { from: 1, body }));
        at = next;
    }
    let mut g = passive_with_writes();
    g.stream_snapshot(node(3), node(1), &snap, 24, |_| {});
    let checkpoint = g.node(node(3)).checkpoint();
    c.wal.extend(checkpoint.records.iter().map(wire::encode));
    h.crash(node(3));
    h.restart(node(3));
    h.run_for(200);
    collect(&h, &mut c);
    // Two groups and a transaction across them.
    let h = two_groups_after_a_transaction();
    collect(&h, &mut c);
    // An active group.
    let mut h = Harness::active(false);
    let epoch = h.view(node(1)).epoch;
    for i in 1..=3 {
        for n in [1, 2, 3] {
            h.client(node(n), request(rid(5, i), epoch, put("a", "x")));
        }
        h.run_for(20);
    }
    collect(&h, &mut c);
    for (i, op) in [put("k", "v"), get("k"), put("", "")].into_iter().enumerate() {
        c.client.push(wire::encode(&request(rid(3, i as u64 + 1), 2, op)));
    }
    c.client.push(wire::encode(&commit(rid(3, 9), 0, 2, txn(&[("a", 1)], &[("b", "2")]))));
    c.client.push(wire::encode(&ClientMsg::Bootstrap { cluster: cluster_map(&[1, 2, 3], 1) }));
    c.client.push(wire::encode(&ClientMsg::GetStatus));
    c
}

fn passive_with_writes() -> Harness {
    let mut h = Harness::three_nodes();
    let epoch = h.view(node(1)).epoch;
    for i in 1..=5 {
        h.client(node(1), request(rid(9, i), epoch, put(&format!("k{}", i % 3), "v")));
        h.run_for(15);
    }
    h.client(node(1), request(rid(9, 6), epoch, get("k1")));
    h.run_for(15);
    h
}

fn two_groups_after_a_transaction() -> Harness {
    let mut h = Harness::two_groups();
    let (a, b) = (key_in(0, "a"), key_in(1, "b"));
    let epoch = h.view_of(node(1), 0).epoch;
    h.client(node(1), commit(rid(4, 1), 0, epoch, txn(&[], &[(&a, "1"), (&b, "2")])));
    h.run_for(100);
    h
}

#[test]
fn decoders_never_panic() {
    let c = corpus();
    fuzz("PeerMsg", 1, &c.peer, |b| {
        if let Ok(m) = wire::decode::<PeerMsg>(b) {
            wire::encode(&m);
        }
    });
    fuzz("WalRecord", 2, &c.wal, |b| {
        if let Ok(r) = wire::decode::<WalRecord>(b) {
            wire::encode(&r);
        }
    });
    let snapshots: Vec<Vec<u8>> = c
        .wal
        .iter()
        .filter_map(|b| match wire::decode::<WalRecord>(b) {
            Ok(WalRecord::Snapshot { snapshot, .. }) => Some(wire::encode(&*snapshot)),
            _ => None,
        })
        .chain(std::iter::once(wire::encode(&Snapshot { index: 1, epoch: 1, state: StateMachine::default() })))
        .collect();
    fuzz("Snapshot", 3, &snapshots, |b| {
        if let Ok(s) = wire::decode::<Snapshot>(b) {
            s.is_intact();
        }
    });
    // The pieces of a snapshot stream, mutated: as a whole header, and as
    // items after a good header.
    let state = passive_with_writes().replica(node(1)).state().clone();
    let frozen = Frozen::freeze(9, 2, &state);
    let mut pieces = Vec::new();
    let mut at = Cursor::default();
    while let Some((data, next)) = frozen.chunk(at.offset, at, 40) {
        pieces.push(data);
        at = next;
    }
    let (header, _) = frozen.chunk(0, Cursor::default(), 1 << 20).expect("a header");
    fuzz("SnapshotChunk", 6, &pieces, |b| {
        let mut meta = frozen.meta;
        meta.header_bytes = b.len() as u64;
        meta.total_bytes = b.len() as u64 + 100;
        if let Ok(mut p) = Partial::new(meta) {
            let _ = p.take(0, b, false);
        }
        let mut p = Partial::new(frozen.meta).expect("a good stream");
        p.take(0, &header, false).expect("a good header");
        let _ = p.take(frozen.meta.header_bytes, b, false);
        let _ = p.clone().finish(false);
        let _ = p.take(frozen.meta.header_bytes, b, true);
        let _ = p.finish(true);
    });
    fuzz("ClientMsg", 4, &c.client, |b| {
        if let Ok(m) = wire::decode::<ClientMsg>(b) {
            wire::encode(&m);
        }
    });
    fuzz("ClientReply", 5, &c.replies, |b| {
        if let Ok(r) = wire::decode::<ClientReply>(b) {
            wire::encode(&r);
        }
    });
}

/// Feeds mutated peer messages (from a random sender) to node `to` of a
/// harness in some state, letting the cluster run a little after each.
fn fuzz_role(name: &str, salt: u64, peer: &[Vec<u8>], mut h: Harness, to: NodeId) {
    let mut step = 0u64;
    fuzz(name, salt, peer, |b| {
        let Ok(mut m) = wire::decode::<PeerMsg>(b) else { return };
        step += 1;
        // A peer other than the target: a message from itself never
        // crosses the network.
        if m.from == to || m.from > 4 {
            m.from = if to == 1 { 2 } else { 1 };
        }
        h.step(to, Input::Peer(m));
        if step.is_multiple_of(8) {
            h.run_for(5);
        }
    });
}

#[test]
fn peer_messages_to_a_passive_group_never_panic() {
    let c = corpus();
    fuzz_role("primary", 10, &c.peer, passive_with_writes(), node(1));
    fuzz_role("backup", 11, &c.peer, passive_with_writes(), node(2));
    let mut h = passive_with_writes();
    h.crash(node(3));
    h.restart(node(3));
    fuzz_role("restarted replica", 12, &c.peer, h, node(3));
    let mut h = passive_with_writes();
    h.crash(node(3));
    h.restart_with_cut_wal(node(3), 4);
    fuzz_role("amnesiac replica", 13, &c.peer, h, node(3));
    // A backup whose log was compacted: its base is past the primary's end.
    let mut h = passive_with_writes();
    let epoch = h.view(node(2)).epoch;
    let snapshot = Snapshot { index: 9, epoch, state: StateMachine::default() };
    h.stream_snapshot(node(2), node(1), &snapshot, 1024, |_| {});
    h.persist_all();
    fuzz_role("compacted backup", 14, &c.peer, h, node(2));
    // A backup holding half a snapshot stream (its last chunks withheld).
    let mut h = passive_with_writes();
    let snapshot = Snapshot { index: 40, epoch, state: h.replica(node(1)).state().clone() };
    h.stream_snapshot(node(2), node(1), &snapshot, 24, |meta| meta.total_bytes += 1_000);
    fuzz_role("backup mid-stream", 16, &c.peer, h, node(2));
    fuzz_role("node never bootstrapped", 15, &c.peer, Harness::new(&[1, 2, 3]), node(2));
}

#[test]
fn peer_messages_to_transactions_and_active_groups_never_panic() {
    let c = corpus();
    fuzz_role("coordinator", 20, &c.peer, two_groups_after_a_transaction(), node(1));
    fuzz_role("participant", 21, &c.peer, two_groups_after_a_transaction(), node(2));
    fuzz_role("sequencer", 22, &c.peer, Harness::active(false), node(1));
    fuzz_role("active member", 23, &c.peer, Harness::active(true), node(2));
}

/// Crashes the fuzzer found, kept: each is fed to the role it crashed.
#[test]
fn crashes_found_by_the_fuzzer_stay_fixed() {
    use pactdb_core::types::{Mode, View};
    // A view naming this node leader but not a member (seed 12, case 25 of
    // "restarted replica"): the restarted replica adopted it and, named
    // leader of a view it did not win, proposed `next` of it, tripping
    // `View::next`'s assertion. Such a view is now dropped with its message.
    let mut h = passive_with_writes();
    h.crash(node(3));
    h.restart(node(3));
    let forged = View {
        group: 0,
        epoch: 9,
        mode: Mode::Passive,
        leader: 3,
        members: vec![1, 2],
        min_members: 1,
        placement: vec![1, 2],
    };
    h.inject(node(3), node(1), PeerBody::ViewAnnounce { view: forged });
    h.run_for(300);
    assert!(h.replica(node(3)).view().is_none_or(|v| v.epoch < 9), "the forged view is not adopted");
    // A key-value map claiming billions of pairs (seed 12, case 667 of
    // "Snapshot", found in format 1): imbl's decoder reserved room for them
    // all and aborted on a capacity overflow. Decoded pair by pair now, it
    // is an error. The same claim in format 2: a snapshot of an empty state
    // whose map (the state's first field) claims 2^40 pairs.
    let empty = wire::encode(&Snapshot { index: 1, epoch: 1, state: StateMachine::default() });
    assert_eq!(empty[..3], [1, 1, 0], "index, epoch, then the map's length");
    let mut claimed = empty[..2].to_vec();
    claimed.extend_from_slice(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x20]);
    claimed.extend_from_slice(&empty[3..]);
    assert!(wire::decode::<Snapshot>(&claimed).is_err());
    // A view of a group the cluster map does not have makes no replica.
    let stray = View {
        group: 77,
        epoch: 2,
        mode: Mode::Passive,
        leader: 1,
        members: vec![1, 2, 3],
        min_members: 1,
        placement: vec![1, 2, 3],
    };
    h.inject(node(2), node(1), PeerBody::ViewAnnounce { view: stray });
    assert!(h.node(node(2)).replica(77).is_none());
}
