//! The `pactdb` binary's transaction commands against real nodes: `get
//! --json`, `txn` from arguments and from stdin (human and `--json`),
//! `txn-status`, the transaction columns of `status`, and bad input, which
//! must get a clear error and the right exit code and change nothing.
//!
//! One cluster serves every case of the first test; the second kills its
//! cluster, so it has its own.

mod common;

use common::TestCluster;
use pactdb_client::TxnId;
use pactdb_core::limits::{MAX_TXN_KEYS, MAX_VALUE_BYTES};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

fn pactdb_command(cluster: &TestCluster, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pactdb"));
    cmd.arg("--endpoints")
        .arg(cluster.endpoints().join(","))
        .args(args)
        .env_remove("PACTDB_ENDPOINTS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `pactdb ARGS` against the cluster with `stdin` as its input.
async fn pactdb_with_input(cluster: &TestCluster, args: &[&str], stdin: &[u8]) -> Out {
    let mut child = pactdb_command(cluster, args).spawn().expect("pactdb starts");
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    // Fed from a task while the output is read: a large input would
    // otherwise fill the pipe while the child waits for us to read. A child
    // that stops reading early (a bad line) closes the pipe; that is fine.
    let feeder = tokio::spawn(async move {
        let _ = input.write_all(&data).await;
    });
    let out = child.wait_with_output().await.unwrap();
    feeder.await.unwrap();
    let out = Out {
        code: out.status.code().expect("pactdb exited rather than being killed"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert!(!out.stderr.contains("panicked"), "pactdb panicked: {out:?}");
    out
}

async fn pactdb(cluster: &TestCluster, args: &[&str]) -> Out {
    pactdb_with_input(cluster, args, b"").await
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not one JSON value ({e}): {text}"))
}

/// `get --json KEY`: (value, version); a missing key is (null, 0).
async fn get(cluster: &TestCluster, key: &str) -> (Value, u64) {
    let out = pactdb(cluster, &["get", "--json", key]).await;
    assert!(out.code == 0 || out.code == 3, "{out:?}");
    let v = parse(&out.stdout);
    assert_eq!(v["key"], key);
    (v["value"].clone(), v["version"].as_u64().unwrap())
}

/// The `KEY version=N` and `KEY deleted version=N` lines after COMMITTED.
fn printed_versions(stdout: &str) -> BTreeMap<String, u64> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("COMMITTED"));
    assert!(lines.next().is_some(), "no COMMITTED line in {stdout}");
    lines
        .map(|l| {
            let (key, version) = l.rsplit_once(" version=").unwrap_or_else(|| panic!("not a version line: {l}"));
            (key.trim_end_matches(" deleted").to_string(), version.parse().unwrap())
        })
        .collect()
}

/// The id in `COMMITTED (txn ID)` or `ABORTED: ... (txn ID)...`.
fn txn_id(stdout: &str) -> String {
    let start = stdout.find("(txn ").expect("a txn id") + "(txn ".len();
    let id = &stdout[start..start + stdout[start..].find(')').unwrap()];
    id.parse::<TxnId>().expect("the printed id parses");
    id.to_string()
}

/// Every group's state digest and key count as its leader reports them,
/// once every member agrees: equal before and after means nothing was
/// written.
async fn kv_state(cluster: &TestCluster) -> Vec<(u64, usize)> {
    cluster.wait_converged(None, Duration::from_secs(10)).await.unwrap();
    let mut out = Vec::new();
    for g in &cluster.map.groups {
        let view = cluster.view(g.id).await.unwrap();
        let status = cluster.status(view.leader).await.unwrap();
        let r = status.replicas.into_iter().find(|r| r.group == g.id).unwrap();
        out.push((r.digest, r.keys));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_transactions_reports_outcomes_and_refuses_bad_input() {
    // Two passive groups and an active one, like `pactdb demo`.
    let cluster = TestCluster::start_mixed(3, 2, 1, false, &[]).await;
    let client = cluster.client().await;
    let (a, b, c) = (cluster.key_in(0, "a"), cluster.key_in(1, "b"), cluster.key_in(2, "c"));

    // get --json shows the version; a missing key is null at version 0, exit 3.
    let v = client.put(a.clone(), "hello").await.unwrap();
    let out = pactdb(&cluster, &["get", "--json", &a]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(parse(&out.stdout), json!({"key": a, "value": "hello", "version": v}));
    let missing = cluster.key_in(0, "missing");
    let out = pactdb(&cluster, &["get", "--json", &missing]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(parse(&out.stdout), json!({"key": missing, "value": null, "version": 0}));
    let out = pactdb(&cluster, &["get", &missing]).await;
    assert_eq!((out.code, out.stdout.as_str()), (3, ""), "{out:?}");
    assert!(out.stderr.contains("not found"), "{out:?}");

    // A value that is not UTF-8: base64 in JSON, escaped for people.
    let bin = cluster.key_in(1, "bin");
    let vbin = client.put(bin.clone(), vec![0xff, b'a', 0xfe]).await.unwrap();
    let out = pactdb(&cluster, &["get", "--json", &bin]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(parse(&out.stdout), json!({"key": bin, "value_base64": "/2H+", "version": vbin}));
    let out = pactdb(&cluster, &["get", &bin]).await;
    assert_eq!((out.code, out.stdout.as_str()), (0, "\\xffa\\xfe\n"), "{out:?}");

    // A transaction over all three groups commits, and prints the versions
    // that get --json then shows.
    let out = pactdb(&cluster, &["txn", "put", &a, "100", "put", &b, "0", "put", &c, "7"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with("COMMITTED (txn "), "{out:?}");
    let versions = printed_versions(&out.stdout);
    assert_eq!(versions.keys().collect::<Vec<_>>(), [&a, &b, &c].into_iter().collect::<Vec<_>>());
    for (key, value) in [(&a, "100"), (&b, "0"), (&c, "7")] {
        assert_eq!(get(&cluster, key).await, (json!(value), versions[key]), "{key}");
    }

    // Gets print what they read; the writes commit; a delete's line says so.
    let out = pactdb(&cluster, &["txn", "get", &a, "get", &b, "put", &a, "70", "put", &b, "30", "delete", &c]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("{a} = 100 (version {})", versions[&a]));
    assert_eq!(lines[1], format!("{b} = 0 (version {})", versions[&b]));
    assert!(lines[2].starts_with("COMMITTED (txn "), "{out:?}");
    assert!(lines[5].starts_with(&format!("{c} deleted version=")), "{out:?}");
    let transfer = txn_id(&out.stdout);
    let transfer_versions = printed_versions(&out.stdout);
    assert_eq!(get(&cluster, &a).await, (json!("70"), transfer_versions[&a]));
    assert_eq!(get(&cluster, &b).await, (json!("30"), transfer_versions[&b]));
    assert_eq!(get(&cluster, &c).await, (Value::Null, 0));

    // A key written twice keeps its last write; a value starting with `-`
    // goes after `--`.
    let twice = cluster.key_in(2, "twice");
    let out = pactdb(&cluster, &["txn", "--", "put", &twice, "1", "put", &twice, "-2"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(get(&cluster, &twice).await.0, json!("-2"));

    // A stale --if aborts with exit 3 and writes nothing, not even the
    // other group's key.
    let untouched = cluster.key_in(1, "untouched");
    let before = kv_state(&cluster).await;
    let stale = format!("{a}={}", versions[&a]);
    let out = pactdb(&cluster, &["txn", "--if", &stale, "put", &a, "x", "put", &untouched, "y"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    let expected = format!("ABORTED: key `{a}` is at version {}, not {}", transfer_versions[&a], versions[&a]);
    assert!(out.stdout.starts_with(&expected), "{out:?}");
    let aborted = txn_id(&out.stdout);
    assert_eq!(kv_state(&cluster).await, before, "an aborted transaction wrote something");

    // --if KEY=0: the key must not exist.
    let fresh = cluster.key_in(2, "fresh");
    let if_absent = format!("{fresh}=0");
    let out = pactdb(&cluster, &["txn", "--if", &if_absent, "put", &fresh, "one"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let out = pactdb(&cluster, &["txn", "--if", &if_absent, "put", &fresh, "two"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.starts_with(&format!("ABORTED: key `{fresh}` is at version ")), "{out:?}");
    assert_eq!(get(&cluster, &fresh).await.0, json!("one"));

    // --json: one object with the reads (a missing key: null, version 0)
    // and the new versions.
    let out = pactdb(&cluster, &["txn", "--json", "get", &a, "get", &missing, "put", &b, "31"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let v = parse(&out.stdout);
    assert_eq!(v["outcome"], "committed");
    assert_eq!(v["reason"], Value::Null);
    v["txn"].as_str().unwrap().parse::<TxnId>().expect("the txn id parses");
    let (b_value, b_version) = get(&cluster, &b).await;
    assert_eq!(b_value, json!("31"));
    assert_eq!(
        v["reads"],
        json!({a.clone(): {"value": "70", "version": transfer_versions[&a]}, missing.clone(): {"value": null, "version": 0}})
    );
    assert_eq!(v["versions"], json!({b.clone(): b_version}));
    let out = pactdb(&cluster, &["txn", "--json", "--if", &stale, "put", &a, "q"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    let v = parse(&out.stdout);
    assert_eq!((&v["outcome"], &v["versions"]), (&json!("aborted"), &json!({})));
    assert!(v["reason"].as_str().unwrap().contains(&format!("key `{a}`")), "{v}");

    // stdin: each get prints as it is read; a put's value is the rest of
    // the line; blank and # lines are skipped.
    let script = format!("get {a}\nput {a}   hello  world \n# a comment\n\nget {a}\ndelete {b}\ncommit\n");
    let out = pactdb_with_input(&cluster, &["txn"], script.as_bytes()).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], format!("{a} = 70 (version {})", transfer_versions[&a]));
    assert_eq!(lines[1], format!("{a} = hello  world  (written by this transaction)"));
    assert!(lines[2].starts_with("COMMITTED (txn "), "{out:?}");
    let piped_versions = printed_versions(&out.stdout);
    assert_eq!(get(&cluster, &a).await, (json!("hello  world "), piped_versions[&a]));
    assert_eq!(get(&cluster, &b).await, (Value::Null, 0));

    // stdin with --json: a JSON line per get, then the outcome.
    let out =
        pactdb_with_input(&cluster, &["txn", "--json"], format!("get {a}\nput {b} back\ncommit\n").as_bytes()).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<Value> = out.stdout.lines().map(parse).collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[0], json!({"key": a, "value": "hello  world ", "version": piped_versions[&a]}));
    assert_eq!(lines[1]["outcome"], "committed");
    assert_eq!(get(&cluster, &b).await, (json!("back"), lines[1]["versions"][&b].as_u64().unwrap()));

    // stdin: `abort`, the end of input without `commit`, and a bad line all
    // discard the transaction.
    let before = kv_state(&cluster).await;
    let out = pactdb_with_input(&cluster, &["txn"], format!("put {a} zzz\nabort\n").as_bytes()).await;
    assert_eq!((out.code, out.stdout.as_str()), (3, "ABORTED: abort requested; nothing was written\n"), "{out:?}");
    let out = pactdb_with_input(&cluster, &["txn"], format!("put {a} zzz\n").as_bytes()).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.contains("the input ended without `commit`"), "{out:?}");
    let out = pactdb_with_input(&cluster, &["txn"], format!("put {a} zzz\nfrob {a}\ncommit\n").as_bytes()).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("error: line 2: unknown op `frob`"), "{out:?}");
    let out = pactdb_with_input(&cluster, &["txn"], format!("put {a}\ncommit\n").as_bytes()).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("line 1: `put` needs a VALUE"), "{out:?}");
    assert_eq!(kv_state(&cluster).await, before, "a discarded transaction wrote something");

    // txn-status: final answers, exit 0 committed and 3 aborted.
    let out = pactdb(&cluster, &["txn-status", &transfer]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.starts_with(&format!("COMMITTED (txn {transfer})")), "{out:?}");
    assert_eq!(printed_versions(&out.stdout), transfer_versions);
    let out = pactdb(&cluster, &["txn-status", "--json", &transfer]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let v = parse(&out.stdout);
    assert_eq!((&v["txn"], &v["outcome"]), (&json!(transfer), &json!("committed")));
    assert_eq!(v["versions"], serde_json::to_value(&transfer_versions).unwrap());
    let out = pactdb(&cluster, &["txn-status", &aborted]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.starts_with(&format!("ABORTED: key `{a}`")), "{out:?}");
    // An id no one committed under: asking records the abort, so it is final.
    let out = pactdb(&cluster, &["txn-status", "--json", "00000000000000ab-1-1@0"]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(parse(&out.stdout)["outcome"], "aborted");

    // Bad usage: exit 2, a clear error, nothing read or written.
    let before = kv_state(&cluster).await;
    let bad_if_version = format!("{a}=abc");
    let (if1, if2) = (format!("{a}=1"), format!("{a}=2"));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["txn", "frob", &a], "unknown op `frob`"),
        (vec!["txn", "put", &a], "`put` needs a VALUE"),
        (vec!["txn", "put", &a, "x", "delete"], "`delete` needs a KEY"),
        (vec!["txn", "get"], "`get` needs a KEY"),
        (vec!["txn", "--if", &bad_if_version, "put", &a, "x"], "version `abc` is not a number"),
        (vec!["txn", "--if", &a, "put", &a, "x"], "expected KEY=VERSION"),
        (vec!["txn", "--if", &if1, "--if", &if2, "put", &a, "x"], "at two versions"),
        (vec!["txn", "put", &a, "-5"], "unexpected argument '-5'"),
        (vec!["get"], "required"),
        (vec!["txn-status"], "required"),
        (vec!["txn-status", "banana"], "is not a transaction id"),
        (vec!["txn-status", "00000000000000ab-1-1@9"], "names group 9"),
    ];
    for (args, message) in &cases {
        let out = pactdb(&cluster, args).await;
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: ") && out.stderr.contains(message), "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}");
    }

    // What the cluster refuses: exit 1, a clear error, nothing written.
    let big_key = "k".repeat(5_000);
    let big_if = format!("{big_key}=1");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["txn", "put", &a, "x", "put", &big_key, "v"], "key of 5000 bytes exceeds the limit of 4096 bytes"),
        (vec!["txn", "get", &big_key], "key of 5000 bytes exceeds the limit"),
        (vec!["txn", "--if", &big_if, "put", &a, "x"], "key of 5000 bytes exceeds the limit"),
    ];
    for (args, message) in &cases {
        let out = pactdb(&cluster, args).await;
        assert_eq!(out.code, 1, "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: ") && out.stderr.contains(message), "{args:?}: {out:?}");
        assert!(out.stderr.contains("nothing was written"), "{out:?}");
    }
    // Over the transaction bounds, fed through stdin (no argument limits
    // there). Over MAX_TXN_BYTES is left to the core's unit tests: in a
    // debug build just encoding a 5 MiB commit takes about a second, and
    // with resends every 500 ms its refusal took 3 to 12 s here, at times
    // past the client's 10 s timeout (the commit is then looked up and
    // reported aborted: nothing written, but not the refusal).
    let mut too_many = (0..=MAX_TXN_KEYS).map(|i| format!("put many-{i} v\n")).collect::<String>();
    too_many.push_str("commit\n");
    let over_value = format!("put {a} {}\ncommit\n", "x".repeat(MAX_VALUE_BYTES + 1));
    for (input, message) in [
        (&too_many, format!("exceeds the limit of {MAX_TXN_KEYS} keys")),
        (&over_value, format!("value of {} bytes exceeds the limit", MAX_VALUE_BYTES + 1)),
    ] {
        let out = pactdb_with_input(&cluster, &["txn"], input.as_bytes()).await;
        assert_eq!(out.code, 1, "{out:?}");
        assert!(out.stderr.starts_with("error: ") && out.stderr.contains(&message), "{message}: {out:?}");
    }
    assert_eq!(kv_state(&cluster).await, before, "bad input wrote something");

    // status: per group and per member, the prepared transactions, locks
    // and the oldest one's age; once the cluster is quiet, none is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let out = pactdb(&cluster, &["status", "--json"]).await;
        assert_eq!(out.code, 0, "{out:?}");
        let v = parse(&out.stdout);
        let quiet = v["groups"].as_array().unwrap().iter().all(|g| {
            (&g["prepared"], &g["locks"], &g["oldest_prepared_ms"], &g["unfinished_decisions"])
                == (&json!(0), &json!(0), &Value::Null, &json!(0))
        });
        if quiet {
            break v;
        }
        assert!(Instant::now() < deadline, "transactions still in doubt: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for node in status["nodes"].as_array().unwrap() {
        for r in node["replicas"].as_array().unwrap() {
            assert_eq!((&r["prepared"], &r["locks"], &r["oldest_prepared_ms"]), (&json!(0), &json!(0), &Value::Null));
        }
    }
    let out = pactdb(&cluster, &["status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["GROUP", "MODE", "EPOCH", "LEADER", "MEMBERS", "PREPARED", "LOCKS", "OLDEST", "DECIDING"]
    );
    for line in &lines[1..=3] {
        assert_eq!(line.split_whitespace().skip(5).collect::<Vec<_>>(), ["0", "0", "-", "0"], "{line}");
    }
    assert!(lines[5].ends_with("PREPARED  LOCKS    OLDEST"), "{out:?}");
}

/// A commit that reaches no node: the CLI says the outcome is unknown
/// (exit 4) and names the id, and once the cluster is back `txn-status`
/// gives the final answer. Slow by nature: the commit and then the status
/// query each wait out the client's 10-second operation timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_no_node_answers_is_unknown_until_txn_status_settles_it() {
    let mut cluster = TestCluster::start(3, 2, &[]).await;
    let a = cluster.key_in(0, "a");
    let b = cluster.key_in(1, "b");
    let mut child = pactdb_command(&cluster, &["txn"]).spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // A get answered means the CLI is connected and the transaction open.
    input.write_all(format!("get {a}\n").as_bytes()).await.unwrap();
    let line = tokio::time::timeout(Duration::from_secs(20), output.next_line()).await.unwrap().unwrap();
    assert_eq!(line.as_deref(), Some(format!("{a} not found").as_str()));
    for id in 1..=3 {
        cluster.kill(id);
    }
    input.write_all(format!("put {a} lost\nput {b} lost\ncommit\n").as_bytes()).await.unwrap();
    drop(input);
    let mut rest = Vec::new();
    while let Some(line) = output.next_line().await.unwrap() {
        rest.push(line);
    }
    let done = child.wait_with_output().await.unwrap();
    let stderr = String::from_utf8(done.stderr).unwrap();
    assert_eq!(done.status.code(), Some(4), "{rest:?} {stderr}");
    assert!(rest[0].starts_with("UNKNOWN: the cluster did not say whether transaction "), "{rest:?}");
    let id = rest[0].split_whitespace().nth(8).unwrap().to_string();
    id.parse::<TxnId>().expect("the printed id parses");
    assert!(stderr.contains(&format!("ask later with: pactdb txn-status {id}")), "{stderr}");

    for id in 1..=3 {
        cluster.restart(id);
    }
    cluster.wait_converged(None, Duration::from_secs(30)).await.unwrap();
    // The commit never reached a node, so its coordinator has no record and
    // records an abort: the final answer.
    let out = pactdb(&cluster, &["txn-status", &id]).await;
    assert_eq!(out.code, 3, "{out:?}");
    assert!(out.stdout.starts_with("ABORTED: the coordinator had no record of it"), "{out:?}");
    assert_eq!(get(&cluster, &a).await, (Value::Null, 0));
    assert_eq!(get(&cluster, &b).await, (Value::Null, 0));
}
