//! A node upgraded in place reads the data dir the previous format wrote.
//!
//! `tests/fixtures/format-1/node-1` is the whole data dir of a one-node
//! cluster (WAL segments, snapshots, the stored cluster map) written by a
//! `pactdb node` of format 1 (bincode records, segments without a header,
//! `PACTSNP1` snapshots); its README says how and by which commit. A
//! current `pactdb node` opened on a copy recovers every key, writes new
//! records in the current format, and reopens again from the mix.
//!
//! The fixture names fixed loopback ports (a cluster map holds addresses,
//! and a node refuses to start with `--peers` that disagree with it):
//! 127.0.0.1:17301 (peers) and 127.0.0.1:17302 (clients), below the
//! range `tests/common` hands out.

mod common;

use pactdb_client::{call, Client};
use pactdb_core::types::{ClusterMap, GroupSpec, Mode, NodeAddrs};
use pactdb_core::wire::{ClientMsg, ClientReply};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PEER: &str = "127.0.0.1:17301";
const CLIENT: &str = "127.0.0.1:17302";
/// Small, so that the fixture holds snapshots and pruned, rolled segments.
// Plaintext: this test is about the data dir's formats, and the library's
// `Client::connect` speaks plaintext unless a process default says otherwise.
const NODE_FLAGS: [&str; 5] = ["--insecure", "--snapshot-wal-bytes", "8192", "--wal-segment-bytes", "4096"];
/// Times the fixture's writer wrote every key.
const ROUNDS: usize = 12;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-1/node-1")
}

/// What the fixture's writer acknowledged: every key's last value.
fn written_before() -> BTreeMap<String, String> {
    (0..24).map(|k| (format!("key-{k}"), format!("format-1-{k}-round-{ROUNDS}-{}", "v".repeat(k % 7 * 10)))).collect()
}

/// A node process, killed when dropped: a failing test leaves no node
/// holding the fixture's ports.
struct NodeProc(Child);

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(dir: &Path, log: &Path) -> NodeProc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = NodeProc(
        Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(["node", "--id", "1", "--data-dir"])
            .arg(dir)
            .args(["--listen", PEER, "--client-listen", CLIENT, "--peers", &format!("1={PEER}")])
            .args(NODE_FLAGS)
            .env("PACTDB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(CLIENT).is_err() {
        assert!(Instant::now() < deadline, "the node did not start listening on {CLIENT}");
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// SIGKILL, as a crash.
fn kill(node: NodeProc) {
    drop(node);
}

/// A client once the node serves (after a restart it first relearns the map).
async fn connect() -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(&[CLIENT.to_string()]).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "no client could connect: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn assert_readable(client: &Client, expected: &BTreeMap<String, String>, log: &Path) {
    for (k, v) in expected {
        let deadline = Instant::now() + Duration::from_secs(30);
        let got = loop {
            match client.get(k.clone()).await {
                Ok(got) => break got,
                Err(e) => {
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    assert!(Instant::now() < deadline, "reading {k} fails: {e:?}\n{log}");
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert_eq!(got.map(|g| g.value), Some(v.clone().into_bytes()), "{k} after the upgrade\n{log}");
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

fn files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn starts_with(path: &Path, magic: &[u8]) -> bool {
    std::fs::read(path).unwrap().starts_with(magic)
}

/// Where the intact records of a headerless (format 1) segment end: the
/// writer trims the preallocated zeros so the fixture stays small.
fn end_of_records(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 || at + 8 + len > bytes.len() {
            break;
        }
        at += 8 + len;
    }
    at
}

/// Writes the fixture. Run by hand, with the binary of the previous format:
/// `PACTDB_WRITE_FIXTURE=1 cargo test --test reads_previous_format -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the fixture; run only with the previous format's binary"]
async fn write_the_format_1_fixture() {
    assert!(std::env::var_os("PACTDB_WRITE_FIXTURE").is_some(), "set PACTDB_WRITE_FIXTURE=1 to overwrite it");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node-1");
    std::fs::create_dir_all(&dir).unwrap();
    let log = tmp.path().join("node.log");
    let node = start_node(&dir, &log);
    let map = ClusterMap::new(
        [(1, NodeAddrs { peer: PEER.to_string(), client: CLIENT.to_string() })].into_iter().collect(),
        (0..2)
            .map(|g| GroupSpec { id: g, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false })
            .collect(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call(CLIENT, &ClientMsg::Bootstrap { cluster: map.clone() }, Duration::from_secs(5)).await {
            Ok(ClientReply::Bootstrapped(Ok(()))) => break,
            other => assert!(Instant::now() < deadline, "bootstrap failed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = connect().await;
    for round in 1..=ROUNDS {
        for k in 0..24 {
            let value = format!("format-1-{k}-round-{round}-{}", "v".repeat(k % 7 * 10));
            client.put(format!("key-{k}"), value).await.unwrap();
        }
    }
    assert_readable(&client, &written_before(), &log).await;
    // Let a snapshot in flight land, then stop as a crash would.
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(node);
    let out = fixture_dir();
    let _ = std::fs::remove_dir_all(&out);
    copy_dir(&dir, &out);
    for seg in files(&out.join("wal"), "wal-") {
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes.truncate(end_of_records(&bytes));
        std::fs::write(&seg, bytes).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_reads_the_data_dir_the_previous_format_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node-1");
    copy_dir(&fixture_dir(), &dir);
    let wal = dir.join("wal");
    let old_segments = files(&wal, "wal-");
    let old_snapshots = files(&wal, "snap-");
    // The fixture is what format 1 wrote: headerless segments (one of them
    // not the first, so snapshots pruned some), `PACTSNP1` snapshots.
    assert!(old_segments.len() >= 2 && !old_snapshots.is_empty(), "{old_segments:?} {old_snapshots:?}");
    assert!(old_segments.iter().all(|s| !starts_with(s, b"PACTWAL\0")));
    assert!(old_snapshots.iter().all(|s| starts_with(s, b"PACTSNP1")));
    assert!(!old_segments[0].ends_with("wal-00000000000000000000.log"), "no segment was pruned: {old_segments:?}");
    // The stored cluster map too (a node stores it once, when it adopts it).
    assert!(!starts_with(&dir.join("cluster-map"), b"PACTMAP\0"));
    let log = tmp.path().join("node.log");

    // The upgraded node recovers every key from the old snapshot and WAL.
    let node = start_node(&dir, &log);
    let client = connect().await;
    let mut expected = written_before();
    assert_readable(&client, &expected, &log).await;
    assert!(std::fs::read_to_string(&log).unwrap().contains("recovering from snapshot"));

    // New writes go to format-2 segments, and enough of them take a new
    // snapshot (in format 2) and prune the old segments.
    for round in 1..=ROUNDS {
        for k in 0..24 {
            let (key, value) = (format!("key-{k}"), format!("format-2-{k}-round-{round}"));
            client.put(key.clone(), value.clone()).await.unwrap();
            expected.insert(key, value);
        }
    }
    assert_readable(&client, &expected, &log).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill(node);
    let segments = files(&wal, "wal-");
    let newest = segments.last().unwrap();
    assert!(starts_with(newest, b"PACTWAL\0"), "the newest segment {newest:?} is not in format 2");
    assert!(!old_segments.contains(newest), "format-2 records went into an old segment");
    assert!(files(&wal, "snap-").iter().any(|s| starts_with(s, b"PACTSNP2")), "no format-2 snapshot");

    // And it reopens from what it wrote (with whatever old files remain).
    let node = start_node(&dir, &log);
    let client = connect().await;
    assert_readable(&client, &expected, &log).await;
    kill(node);
}
