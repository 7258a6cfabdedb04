//! Real `pactdb node` processes on loopback and their data dirs: snapshots
//! keep a node's disk bounded under an endless overwrite workload and a
//! restart from snapshot plus WAL keeps every acknowledged write; and a
//! torn WAL tail on every node (a power loss) is cut quietly, so the
//! cluster serves again by itself.

mod common;

use common::TestCluster;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes in the files of `dir` (not recursive: the WAL dir is flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
}

fn files_named(dir: &Path, prefix: &str, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(suffix)
        })
        .collect();
    v.sort();
    v
}

/// Overwrites `keys` keys `rounds` times, one writer per key (so the last
/// acknowledged value of each key is known); returns those values.
async fn overwrite(client: &pactdb_client::Client, keys: usize, rounds: usize, tag: &str) -> BTreeMap<String, String> {
    let mut tasks = Vec::new();
    for k in 0..keys {
        let (c, tag) = (client.clone(), tag.to_string());
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{k}");
            let mut last = None;
            for r in 0..rounds {
                let value = format!("{tag}-{r}-{}", "x".repeat(200));
                c.put(key.clone(), value.clone()).await.expect("a write to a healthy cluster succeeds");
                last = Some(value);
            }
            (key, last.unwrap())
        }));
    }
    let mut acked = BTreeMap::new();
    for t in tasks {
        let (k, v) = t.await.unwrap();
        acked.insert(k, v);
    }
    acked
}

/// A client of a cluster that just restarted: its nodes learn the cluster
/// map from the config store first.
async fn connect(cluster: &TestCluster) -> pactdb_client::Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pactdb_client::Client::connect(&cluster.endpoints()).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "no client could connect after the restart: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_all_readable(client: &pactdb_client::Client, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        let got = client.get(k.clone()).await.expect("reads succeed");
        assert_eq!(got.map(|g| g.value), Some(v.clone().into_bytes()), "acknowledged write {k} was lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_data_dir_and_a_restart_after_truncation_loses_nothing() {
    const TRIGGER: u64 = 64 * 1024;
    const SEGMENT: u64 = 16 * 1024;
    let args = ["--snapshot-wal-bytes", "65536", "--wal-segment-bytes", "16384"];
    let mut cluster = TestCluster::start(3, 1, &args).await;
    let client = cluster.client().await;

    // About 2.4 MB of WAL per node: dozens of snapshots' worth.
    let mut acked = overwrite(&client, 40, 200, "a").await;
    // Let the last snapshot land.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        let wal = cluster.nodes[id].dir.join("wal");
        let snaps = files_named(&wal, "snap-", ".snap");
        assert!(!snaps.is_empty(), "node {id} wrote no snapshot\n{}", cluster.log_of(*id));
        assert!(snaps.len() <= 2, "node {id} keeps {} snapshots", snaps.len());
        let segments = files_named(&wal, "wal-", ".log");
        assert_ne!(
            segments[0].file_name().unwrap().to_string_lossy(),
            "wal-00000000000000000000.log",
            "node {id} deleted no WAL segment"
        );
        // Three snapshots (two kept, one being written), the WAL since the
        // older kept one (twice the trigger, a segment on either side), and
        // the current segment's preallocated megabyte.
        let snap_max = snaps.iter().map(|p| std::fs::metadata(p).unwrap().len()).max().unwrap();
        let bound = 3 * snap_max + 2 * TRIGGER + 3 * SEGMENT + 1024 * 1024 + 64 * 1024;
        let used = dir_bytes(&wal);
        eprintln!("FIGURE node {id} WAL dir {used} bytes, bound {bound} (snapshot {snap_max} bytes)");
        assert!(used <= bound, "node {id} uses {used} bytes, over the bound of {bound}");
    }

    // Every node dies at once and recovers from its snapshot and WAL.
    for id in &ids {
        cluster.kill(*id);
    }
    for id in &ids {
        cluster.restart(*id);
    }
    let client = connect(&cluster).await;
    assert_all_readable(&client, &acked).await;
    for id in &ids {
        assert!(cluster.log_of(*id).contains("recovering from snapshot"), "node {id} did not use its snapshot");
    }
    // And it carries on from there.
    acked.extend(overwrite(&client, 40, 5, "b").await);
    assert_all_readable(&client, &acked).await;
    cluster.wait_converged(None, Duration::from_secs(30)).await.unwrap();

    // Enough writes that the segments written since the restart are
    // deleted too (a node that had lost its map would have stored it again
    // when it relearned it). The snapshot carries the map, so a restart
    // with a peer list that disagrees with it is still refused at once.
    acked.extend(overwrite(&client, 40, 200, "c").await);
    assert_all_readable(&client, &acked).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill(1);
    let out = tokio::task::block_in_place(|| cluster.run_with_moved_peer(1, 2));
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("disagrees with the stored cluster map") && said.contains("refusing to start"), "{said}");
    cluster.restart(1);
    cluster.wait_converged(Some(1), Duration::from_secs(30)).await.unwrap();
}

/// Where the last intact record of a WAL segment ends (past its header).
fn end_of_records(bytes: &[u8]) -> usize {
    let mut at = if bytes.starts_with(b"PACTWAL\0") { 16 } else { 0 };
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap());
        if len == 0 || at + 8 + len > bytes.len() || crc32c_of(&bytes[at + 8..at + 8 + len]) != crc {
            break;
        }
        at += 8 + len;
    }
    at
}

/// CRC32C (Castagnoli), bit by bit: the test needs it for a few records.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82f6_3b78 } else { crc >> 1 };
        }
    }
    !crc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_on_every_node_is_cut_quietly_and_the_cluster_serves_again() {
    let mut cluster = TestCluster::start(3, 2, &[]).await;
    let client = cluster.client().await;
    let acked = overwrite(&client, 20, 5, "t").await;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();

    // A power loss: every node dies, each in the middle of writing a record.
    for id in &ids {
        cluster.kill(*id);
    }
    for id in &ids {
        let wal = cluster.nodes[id].dir.join("wal");
        let last = files_named(&wal, "wal-", ".log").pop().unwrap();
        let mut bytes = std::fs::read(&last).unwrap();
        let end = end_of_records(&bytes);
        // The header of a 300-byte record and the first 40 bytes of it.
        let mut torn = Vec::new();
        torn.extend_from_slice(&300u32.to_le_bytes());
        torn.extend_from_slice(&0xdead_beefu32.to_le_bytes());
        torn.extend((0..40u8).map(|i| i.wrapping_mul(37) | 1));
        bytes.truncate(end);
        bytes.extend_from_slice(&torn);
        // What follows is what preallocation left: zeros.
        bytes.resize(bytes.len().max(end + 4096), 0);
        std::fs::write(&last, &bytes).unwrap();
    }
    let restarted = Instant::now();
    for id in &ids {
        cluster.restart(*id);
    }

    // Writes to every group resume by themselves.
    let client = connect(&cluster).await;
    for g in 0..2 {
        let key = cluster.key_in(g, "after-power-loss");
        loop {
            if client.put(key.clone(), "ok").await.is_ok() {
                break;
            }
            assert!(
                restarted.elapsed() < Duration::from_secs(30),
                "group {g} never served again\n{}",
                cluster.log_of(1)
            );
        }
    }
    eprintln!("FIGURE writes served again {} ms after restarting every node", restarted.elapsed().as_millis());
    assert_all_readable(&client, &acked).await;
    for id in &ids {
        let log = cluster.log_of(*id);
        assert!(log.contains("torn tail"), "node {id} did not report its torn tail\n{log}");
        assert!(!log.contains("corrupt record"), "node {id} took its torn tail for corruption\n{log}");
        assert!(!cluster.nodes[id].dir.join("wal-was-cut").exists());
    }
}
