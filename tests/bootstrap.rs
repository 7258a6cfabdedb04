//! A cluster started by hand: `pactdb node` per node, then `pactdb
//! bootstrap`. The map it stores is the truth afterwards: bootstrapping
//! again with the same nodes is harmless, with another layout refused, and
//! a node restarted with a peer list that disagrees with the stored map
//! refuses to start, with a clear error and no panic.

mod common;

use common::TestCluster;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn pactdb(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pactdb")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_started_by_hand_is_bootstrapped_and_keeps_its_map() {
    // The same layout as `pactdb bootstrap`'s defaults: 3 groups, the last active.
    let mut c = TestCluster::spawn_mixed(3, 2, 1, false, &[]);
    let endpoints = c.endpoints().join(",");

    // Every node must be named: the map needs each one's client address.
    let partial = c.endpoints()[..2].join(",");
    let out = tokio::task::spawn_blocking(move || pactdb(&["bootstrap", "--endpoints", &partial])).await.unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("missing: 3="), "{}", text(&out));

    let eps = endpoints.clone();
    let out = tokio::task::spawn_blocking(move || pactdb(&["bootstrap", "--endpoints", &eps])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("bootstrapped: 3 nodes"), "{}", text(&out));

    let client = c.client().await;
    for g in 0..3 {
        let key = c.key_in(g, "hand");
        let version = client.put(key.clone(), "v").await.expect("the bootstrapped cluster takes writes");
        assert_eq!(client.get(key).await.unwrap().map(|v| v.version), Some(version));
    }

    // Again, same nodes and options: nothing to do, success.
    let eps = endpoints.clone();
    let out = tokio::task::spawn_blocking(move || pactdb(&["bootstrap", "--endpoints", &eps])).await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("already bootstrapped"), "{}", text(&out));
    // Another layout is refused: a map is never changed.
    let eps = endpoints.clone();
    let out = tokio::task::spawn_blocking(move || pactdb(&["bootstrap", "--endpoints", &eps, "--groups", "2"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("different map"), "{}", text(&out));

    // Node 3 restarted with a peer list that moves node 2 elsewhere.
    c.kill(3);
    let node2 = c.nodes[&2].peer.clone();
    let out = tokio::task::block_in_place(|| c.run_with_moved_peer(3, 2));
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("disagrees with the stored cluster map") && said.contains("refusing to start"), "{said}");
    assert!(said.contains(&format!("node 2 is at 127.0.0.1:9, not {node2}")), "{said}");
    assert!(!said.contains("panicked"), "{said}");

    // With its own flags it comes back and the cluster converges.
    c.restart(3);
    c.wait_converged(Some(3), Duration::from_secs(20)).await.expect("node 3 rejoins");
}
