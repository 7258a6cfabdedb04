//! Transactions against real nodes, through the client library: a transfer
//! across groups commits atomically, a conflicting one aborts, compares
//! guard a one-shot commit, and a finished transaction's status is final.

mod common;

use common::TestCluster;
use pactdb_client::{AbortReason, TxnError, TxnOutcome};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_across_groups_commits_atomically_and_a_conflict_aborts() {
    let cluster = TestCluster::start(3, 3, &[]).await;
    let client = cluster.client().await;
    let a = cluster.key_in(0, "acct");
    let b = cluster.key_in(1, "acct");
    client.put(a.clone(), "100").await.unwrap();
    client.put(b.clone(), "0").await.unwrap();

    // A transfer: read both, write both.
    let mut t = client.begin();
    let va = t.get(a.clone()).await.unwrap().unwrap();
    let vb = t.get(b.clone()).await.unwrap().unwrap();
    assert_eq!((va.value.as_slice(), vb.value.as_slice()), (&b"100"[..], &b"0"[..]));
    t.put(a.clone(), "70");
    t.put(b.clone(), "30");

    // Meanwhile another client changes `b`: the transfer's read is stale.
    let mut u = client.begin();
    u.get(b.clone()).await.unwrap();
    u.put(b.clone(), "5");
    u.commit().await.expect("the first transaction commits");
    match t.commit().await {
        Err(TxnError::Aborted { reason: AbortReason::VersionChanged { key, .. }, .. }) => assert_eq!(key, b.as_bytes()),
        other => panic!("expected an abort on {b}'s version, got {other:?}"),
    }
    assert_eq!(client.get(a.clone()).await.unwrap().unwrap().value, b"100", "the abort wrote nothing");

    // Again, with fresh reads: it commits in both groups.
    let mut t = client.begin();
    t.get(a.clone()).await.unwrap();
    t.get(b.clone()).await.unwrap();
    t.put(a.clone(), "70");
    t.put(b.clone(), "35");
    let done = t.commit().await.expect("the transfer commits");
    let txn = done.txn.expect("it ran");
    let va = client.get(a.clone()).await.unwrap().unwrap();
    let vb = client.get(b.clone()).await.unwrap().unwrap();
    assert_eq!((va.value.as_slice(), vb.value.as_slice()), (&b"70"[..], &b"35"[..]));
    assert_eq!(done.versions.get(a.as_bytes()), Some(&va.version));
    assert_eq!(done.versions.get(b.as_bytes()), Some(&vb.version));

    // Its status is final.
    assert!(matches!(client.txn_status(txn).await.unwrap(), TxnOutcome::Committed { .. }));

    // One-shot, with compares: the stale one aborts, the right one commits.
    let stale = client.txn().when(a.clone(), va.version - 1).put(a.clone(), "x").commit().await;
    assert!(matches!(stale, Err(TxnError::Aborted { .. })), "{stale:?}");
    client.txn().when(a.clone(), va.version).when(b.clone(), vb.version).delete(b.clone()).commit().await.unwrap();
    assert_eq!(client.get(b.clone()).await.unwrap(), None);
    cluster.wait_converged(None, std::time::Duration::from_secs(10)).await.unwrap();
}
