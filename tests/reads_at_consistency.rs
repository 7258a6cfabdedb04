//! Reads at the consistency a client chooses, against real nodes: session
//! reads spread over the members see the client's own writes and never go
//! backwards, across a kill -9 of the primary; a token handed to another
//! client (`pactdb get --after`) makes that client's read see the write
//! (causal order); stale reads say which member served them and how old
//! its state was, within the bound asked for. In a passive and an active
//! group.

mod common;

use common::TestCluster;
use pactdb_client::{Consistency, Read};
use std::collections::BTreeSet;
use std::time::Duration;

fn number(read: &Read) -> u64 {
    read.value.as_ref().map_or(0, |v| String::from_utf8_lossy(&v.value).parse().expect("a number"))
}

fn cli(cluster: &TestCluster, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(args)
        .env_remove("PACTDB_ENDPOINTS")
        .output()
        .expect("pactdb runs");
    let (stdout, stderr) = (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap());
    assert!(!stderr.contains("panicked"), "{stderr}");
    (out.status.code().expect("exited"), stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_reads_see_own_writes_and_never_go_back_across_a_failover() {
    // Group 0 passive, group 1 active; every node is in both.
    let mut cluster = TestCluster::start_mixed(3, 1, 1, false, &[]).await;
    let keys = [cluster.key_in(0, "counter"), cluster.key_in(1, "counter")];
    let client = cluster.client().await;
    let mut served_by: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut last_seen = [0u64; 2];
    for i in 1..=120u64 {
        if i == 60 {
            // kill -9 the passive group's primary between two writes.
            let leader = cluster.view(0).await.expect("a view").leader;
            cluster.kill(leader);
        }
        for (g, key) in keys.iter().enumerate() {
            client.put(key.clone(), i.to_string()).await.expect("a write succeeds (retries hide the failover)");
            let read = client.get_with(key.clone(), Consistency::Session).await.expect("a session read");
            let seen = number(&read);
            assert!(seen >= i, "group {g}: read-your-writes broken: wrote {i}, read {seen}");
            assert!(seen >= last_seen[g], "group {g}: monotonic reads broken: {} then {seen}", last_seen[g]);
            last_seen[g] = seen;
            let served = read.served.expect("a session read says who served it");
            served_by.insert((g, served.by));
        }
    }
    for g in 0..2 {
        let members = served_by.iter().filter(|(group, _)| *group == g).count();
        assert!(members >= 2, "group {g}: session reads spread over the members: {served_by:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_handed_to_another_client_orders_its_read_after_the_write() {
    let cluster = TestCluster::start_mixed(3, 1, 1, false, &[]).await;
    for group in [0, 1] {
        let key = cluster.key_in(group, "handed");
        for i in 1..=15 {
            let value = format!("v{i}");
            let (code, stdout, _) = cli(&cluster, &["put", &key, &value, "--token"]);
            assert_eq!(code, 0, "{stdout}");
            let token = stdout.lines().find_map(|l| l.strip_prefix("token=")).expect("put --token prints the token");
            assert!(token.starts_with(&format!("{group}:")), "the token names the key's group: {token}");
            // Another process, another client: it has seen nothing itself.
            let (code, stdout, stderr) = cli(&cluster, &["get", &key, "--consistency", "session", "--after", token]);
            assert_eq!((code, stdout.trim()), (0, value.as_str()), "{stderr}");
            assert!(stderr.starts_with("(served by node "), "{stderr}");
        }
    }

    // Bad levels and tokens are usage errors that change nothing.
    let (code, _, stderr) = cli(&cluster, &["get", "k", "--consistency", "sometimes"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("use linearizable, session, stale or stale=MS"), "{stderr}");
    let (code, _, stderr) = cli(&cluster, &["get", "k", "--after", "0-17"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected GROUP:INDEX"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_reads_say_who_served_them_and_how_old_the_state_was() {
    let cluster = TestCluster::start(3, 1, &[]).await;
    let key = cluster.key_in(0, "stale");
    let client = cluster.client().await;
    client.put(key.clone(), "1").await.expect("a write");
    // Give the backups a heartbeat round trip or two to learn how fresh they are.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let leader = cluster.view(0).await.expect("a view").leader;
    let mut by_backups = 0;
    for _ in 0..60 {
        let read = client.get_with(key.clone(), Consistency::Stale { max_ms: 1_000 }).await.expect("a stale read");
        let served = read.served.expect("a stale read says who served it");
        let stale_ms = served.stale_ms.expect("and how old the state was");
        assert!(stale_ms <= 1_000, "served past its bound: {stale_ms} ms");
        assert_eq!(number(&read), 1, "a value written 200 ms before is within a 1 s bound");
        by_backups += usize::from(served.by != leader);
    }
    assert!(by_backups > 0, "backups served some of the 60 stale reads");

    let (code, stdout, stderr) = cli(&cluster, &["get", &key, "--consistency", "stale=1000", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    assert_eq!(v["value"], "1");
    assert!(v["served_by"].as_u64().is_some() && v["stale_ms"].as_u64().is_some_and(|ms| ms <= 1_000), "{v}");
}
