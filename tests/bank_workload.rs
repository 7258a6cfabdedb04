//! `pactdb workload init/run/check bank` as a user runs them, against a
//! real 3-node cluster: the bank is created, transfers commit, audits see
//! no anomaly, the check finds the total intact and nothing in doubt; and
//! the check catches a bank broken by a plain `put` to one account.

mod common;

use common::TestCluster;
use std::process::{Command, Output};

const ACCOUNTS: u64 = 200;
const BALANCE: u64 = 100;

fn pactdb(cluster: &TestCluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(args)
        .output()
        .expect("the pactdb binary runs")
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_keeps_its_total_under_transfers_and_the_check_catches_a_broken_one() {
    let cluster = TestCluster::start(3, 3, &[]).await;
    let (accounts, balance) = (ACCOUNTS.to_string(), BALANCE.to_string());

    let init = pactdb(&cluster, &["workload", "init", "bank", "--accounts", &accounts, "--balance", &balance]);
    assert_eq!(init.status.code(), Some(0), "{}", text(&init));
    assert!(String::from_utf8_lossy(&init.stdout).contains(&format!("created {ACCOUNTS}")), "{}", text(&init));
    // Init again with the same shape: nothing is overwritten. Another shape: refused.
    let again = pactdb(&cluster, &["workload", "init", "bank", "--accounts", &accounts, "--balance", &balance]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stdout).contains("created 0"), "{}", text(&again));
    let other = pactdb(&cluster, &["workload", "init", "bank", "--accounts", "10", "--balance", &balance]);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("already holds a bank"), "{}", text(&other));

    // A short run: the shape comes from the cluster (bank-meta).
    let run = pactdb(
        &cluster,
        &["workload", "run", "bank", "--clients", "8", "--audit-clients", "1", "--duration", "3s", "--json"],
    );
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("--json prints one JSON object");
    assert_eq!(report["workload"], "bank");
    assert_eq!(report["system"], "pactdb");
    assert_eq!(report["accounts"], ACCOUNTS);
    assert_eq!(report["balance"], BALANCE);
    assert!(report["transfers"].as_u64().unwrap() > 0, "no transfer committed: {report}");
    assert_eq!(report["audits"]["anomalies"], 0, "{report}");
    for field in
        ["transfers_per_sec", "aborts", "aborts_per_sec", "errors", "unknown", "cross_group", "cross_group_percent"]
    {
        assert!(report[field].is_number(), "`{field}` missing or not a number: {report}");
    }
    for field in ["committed", "aborted", "errors", "anomalies"] {
        assert!(report["audits"][field].is_u64(), "`audits.{field}` missing: {report}");
    }
    for p in ["p50", "p90", "p99", "p99_9", "max", "mean"] {
        assert!(report["latency_ms"][p].is_number(), "`latency_ms.{p}` missing: {report}");
    }
    let audits = ["committed", "aborted", "errors"].iter().map(|f| report["audits"][f].as_u64().unwrap()).sum::<u64>();
    assert!(audits > 0, "the audit client finished no audit in 3 s: {report}");
    // With 3 groups, about two transfers in three cross groups; a share
    // of exactly 0 or 100 % would mean the share is not computed.
    let share = report["cross_group_percent"].as_f64().unwrap();
    assert!(share > 0.0 && share < 100.0, "cross-group share {share}: {report}");

    let check = pactdb(&cluster, &["workload", "check", "bank"]);
    assert_eq!(check.status.code(), Some(0), "{}", text(&check));
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(out.contains(&format!("sum: {} over {ACCOUNTS} accounts", ACCOUNTS * BALANCE)), "{}", text(&check));
    assert!(out.contains("bank check: OK"), "{}", text(&check));

    // Break the bank: one account written directly, outside any transfer.
    let read = pactdb(&cluster, &["get", "acct-000007"]);
    assert_eq!(read.status.code(), Some(0), "{}", text(&read));
    let before: u64 = String::from_utf8_lossy(&read.stdout).trim().parse().expect("an account holds a number");
    let after = before + 12_345;
    let put = pactdb(&cluster, &["put", "acct-000007", &after.to_string()]);
    assert_eq!(put.status.code(), Some(0), "{}", text(&put));
    let broken = pactdb(&cluster, &["workload", "check", "bank"]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
    let out = String::from_utf8_lossy(&broken.stdout);
    let total = ACCOUNTS * BALANCE;
    assert!(
        out.contains(&format!("discrepancy: the total is {}, expected {total}", total + 12_345)),
        "{}",
        text(&broken)
    );
    assert!(out.contains("off by +12345"), "{}", text(&broken));
    assert!(out.contains("bank check: FAILED"), "{}", text(&broken));

    // A deleted account is named.
    let del = pactdb(&cluster, &["delete", "acct-000011"]);
    assert_eq!(del.status.code(), Some(0), "{}", text(&del));
    let missing = pactdb(&cluster, &["workload", "check", "bank"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(
        String::from_utf8_lossy(&missing.stdout).contains("1 account does not exist: acct-000011"),
        "{}",
        text(&missing)
    );
}
