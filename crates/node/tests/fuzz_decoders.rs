//! Fuzzing the runtime's decoders: the frame reader and WAL recovery, fed
//! arbitrary bytes (mutations of valid frames and segments, and plain random
//! bytes), return an error or cut what is damaged; nothing panics, and every
//! record recovery hands back decodes to a `WalRecord` or is refused with an
//! error, as the runtime does at start-up.
//!
//! Choices come from `arbitrary::Unstructured` over bytes of a seeded RNG,
//! so a run is repeatable. A longer run:
//!
//! ```text
//! PACTDB_FUZZ_CASES=100000 PACTDB_FUZZ_SEED=7 cargo test --release -p pactdb-node --test fuzz_decoders
//! ```

use arbitrary::Unstructured;
use pactdb_core::wire::{self, WalRecord};
use pactdb_node::frame::{encode_frame, read_frame};
use pactdb_node::runtime::decode_wal_record;
use pactdb_node::wal::{Wal, WalOptions};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn cases(default: usize) -> usize {
    std::env::var("PACTDB_FUZZ_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("PACTDB_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(12)
}

fn mutate(u: &mut Unstructured, base: &[u8]) -> arbitrary::Result<Vec<u8>> {
    if u.ratio(1, 10)? {
        let n = u.int_in_range(0..=256)?;
        return (0..n).map(|_| u.arbitrary::<u8>()).collect();
    }
    let mut bytes = base.to_vec();
    for _ in 0..u.int_in_range(1..=4)? {
        let len = bytes.len();
        match u.int_in_range(0..=4)? {
            0 | 1 if len > 0 => {
                let i = u.int_in_range(0..=len - 1)?;
                bytes[i] = u.arbitrary()?;
            }
            2 => {
                let i = u.int_in_range(0..=len)?;
                bytes.insert(i, u.arbitrary()?);
            }
            3 if len > 0 => {
                let i = u.int_in_range(0..=len - 1)?;
                bytes.remove(i);
            }
            _ => {
                let i = u.int_in_range(0..=len)?;
                bytes.truncate(i);
            }
        }
    }
    Ok(bytes)
}

fn each_case(salt: u64, n: usize, base: &[u8], mut f: impl FnMut(usize, Vec<u8>)) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ salt);
    for case in 0..n {
        let mut raw = vec![0u8; 512];
        rng.fill_bytes(&mut raw);
        let mut u = Unstructured::new(&raw);
        if let Ok(bytes) = mutate(&mut u, base) {
            f(case, bytes);
        }
    }
}

/// A few real records, as the core writes them.
fn records() -> Vec<Vec<u8>> {
    use pactdb_core::wire::Ballot;
    vec![
        wire::encode(&WalRecord::ProposerRounds { upto: 4096 }),
        wire::encode(&WalRecord::Acceptor {
            key: "group/0".into(),
            promised: Ballot { round: 3, node: 1 },
            accepted: None,
        }),
        wire::encode(&WalRecord::Commit { group: 0, index: 7 }),
        wire::encode(&WalRecord::Truncate { group: 1, index: 2 }),
        wire::encode(&WalRecord::WalCut),
    ]
}

#[test]
fn frames_from_arbitrary_bytes_never_panic() {
    let mut stream = Vec::new();
    for r in records() {
        encode_frame(&mut stream, &r);
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    each_case(1, cases(3_000), &stream, |case, bytes| {
        rt.block_on(async {
            let mut reader: &[u8] = &bytes;
            let mut buf = Vec::new();
            // Frames until the first error: the connection closes there.
            for _ in 0..64 {
                match read_frame(&mut reader, &mut buf).await {
                    Ok(()) => {
                        let _ = wire::decode::<pactdb_core::wire::PeerMsg>(&buf);
                        let _ = wire::decode::<pactdb_core::wire::ClientMsg>(&buf);
                    }
                    Err(_) => return,
                }
            }
            panic!("case {case}: 64 frames from {} bytes", bytes.len());
        })
    });
}

#[test]
fn wal_recovery_from_arbitrary_bytes_never_panics() {
    // A real segment to mutate.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    {
        let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
        for r in records() {
            wal.append(&r).unwrap();
        }
        wal.sync().unwrap();
    }
    let seg = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let name = seg.file_name().unwrap().to_owned();
    let mut segment = std::fs::read(&seg).unwrap();
    // Only the records and a little of the zero-filled tail matter.
    let used = segment.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    segment.truncate(used + 64);
    // Cases cost a few file operations each, so fewer run by default.
    each_case(2, cases(200), &segment, |case, bytes| {
        let dir = tmp.path().join(format!("case-{case}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(&name), &bytes).unwrap();
        // An I/O error is an answer too; only a panic fails.
        if let Ok((wal, raw)) = Wal::open(&dir, WalOptions::default()) {
            for (i, r) in raw.iter().enumerate() {
                // The runtime refuses to start on a record that passes its
                // checksum but does not decode; either way, no panic. A
                // damaged header may make the segment read as format 1:
                // both decoders see every record.
                let _ = decode_wal_record(wal.format_of(wal.first_seq() + i as u64), r);
                let _ = pactdb_node::legacy::decode_v1::<WalRecord>(r);
                let _ = wire::decode::<WalRecord>(r);
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    });
}
