//! TLS, driven the way users meet it: a node with a certificate of another
//! CA cannot join, a client without credentials (or with another CA's)
//! cannot read or write and is told why, a bad certificate is refused and
//! the refusal is in the node's log, and a client with the cluster's
//! certificate works across a failover. Nodes run TLS with this process's
//! CA (`common::certs`).

mod common;

use common::{certs, make_certs, TestCluster};
use pactdb_client::{ClientSecurity, ClientTls};
use pactdb_core::wire::{ClientMsg, ClientReply};
use pactdb_node::net::FramedConn;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `pactdb ARGS` against `cluster` with no credentials from the
/// environment (and in an empty dir, so no demo's cluster.json either):
/// whatever security the test means is in `args`.
fn pactdb_bare(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pactdb"))
        .args(args)
        .current_dir(cwd)
        .env_remove("PACTDB_CERTS_DIR")
        .env_remove("PACTDB_INSECURE")
        .env_remove("PACTDB_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Waits until some node's log has a line containing every one of `words`.
fn wait_for_log(cluster: &TestCluster, words: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for id in cluster.nodes.keys() {
            let log = cluster.log_of(*id);
            if let Some(line) = log.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return line.to_string();
            }
        }
        assert!(Instant::now() < deadline, "no node logged a line with {words:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_credentials_cannot_read_or_write_and_is_told_why() {
    let cluster = TestCluster::start(3, 2, &[]).await;
    let eps = cluster.endpoints().join(",");
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let good = certs().join("client");
    let good = good.to_string_lossy();

    // The legitimate client writes a value the others then try to read.
    let out = pactdb_bare(cwd, &["--endpoints", &eps, "--certs-dir", &good, "put", "secret", "v1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // No credentials at all: told what to pass, before connecting.
    for args in [&["put", "secret", "v2"][..], &["get", "secret"][..]] {
        let out = pactdb_bare(cwd, &[&["--endpoints", &eps][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("no TLS credentials: pass --certs-dir DIR"), "{err}");
        assert!(err.contains("--insecure"), "{err}");
    }

    // The CA but no client certificate: the node refuses the handshake.
    let no_cert = cwd.join("ca-only");
    std::fs::create_dir_all(&no_cert).unwrap();
    std::fs::copy(certs().join("ca.crt"), no_cert.join("ca.crt")).unwrap();
    for args in [&["put", "secret", "v2"][..], &["get", "secret"][..]] {
        let out =
            pactdb_bare(cwd, &[&["--endpoints", &eps, "--certs-dir", &no_cert.to_string_lossy()][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{err}");
        assert!(err.contains("refused the connection: TLS handshake failed"), "{err}");
        assert!(err.contains("the node requires a client certificate from the cluster CA; pass --certs-dir"), "{err}");
    }
    wait_for_log(&cluster, &["refused a TLS connection from 127.0.0.1:", "client port", "no client certificate"]);

    // Plaintext against TLS nodes.
    for args in [&["put", "secret", "v2"][..], &["get", "secret"][..]] {
        let out = pactdb_bare(cwd, &[&["--endpoints", &eps, "--insecure"][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("refused the connection: the node speaks TLS"), "{err}");
        assert!(err.contains("pass --certs-dir"), "{err}");
    }
    wait_for_log(&cluster, &["refused a TLS connection from 127.0.0.1:", "not a TLS client hello"]);

    // A client certificate of another CA (trusting the cluster's CA, so
    // that it is the node that judges the certificate): refused, and logged.
    let other = cwd.join("other-ca");
    make_certs(&other, &[]);
    let mixed = cwd.join("other-client");
    std::fs::create_dir_all(&mixed).unwrap();
    std::fs::copy(certs().join("ca.crt"), mixed.join("ca.crt")).unwrap();
    std::fs::copy(other.join("client/client.crt"), mixed.join("client.crt")).unwrap();
    std::fs::copy(other.join("client/client.key"), mixed.join("client.key")).unwrap();
    let out = pactdb_bare(cwd, &["--endpoints", &eps, "--certs-dir", &mixed.to_string_lossy(), "put", "secret", "v3"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("refused the connection: TLS handshake failed"), "{err}");
    assert!(err.contains("requires a client certificate from the cluster CA"), "{err}");
    wait_for_log(&cluster, &["refused a TLS connection from 127.0.0.1:", "client port", "UnknownIssuer"]);

    // Wholly another CA's certs dir: its client does not trust the nodes.
    let other_client = other.join("client");
    let out = pactdb_bare(cwd, &["--endpoints", &eps, "--certs-dir", &other_client.to_string_lossy(), "get", "secret"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("the node's certificate is not accepted (UnknownIssuer)"), "{err}");

    // None of them wrote: the value is the legitimate client's.
    let out = pactdb_bare(cwd, &["--endpoints", &eps, "--certs-dir", &good, "get", "secret"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_certificate_of_another_ca_cannot_join() {
    let cluster = TestCluster::start(3, 2, &[]).await;
    let eps = cluster.endpoints().join(",");
    let tmp = tempfile::tempdir().unwrap();
    let good = certs().join("client");
    let (peer, client) = (free_addr(), free_addr());
    let out = pactdb_bare(
        tmp.path(),
        &[
            "--endpoints",
            &eps,
            "--certs-dir",
            &good.to_string_lossy(),
            "admin",
            "add-node",
            "--id",
            "4",
            "--peer",
            &peer,
            "--client",
            &client,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "add-node: {}{}", stdout(&out), stderr(&out));

    // Node 4 with a certificate of another CA.
    let other = tmp.path().join("other-ca");
    make_certs(&other, &[4]);
    let started = Instant::now();
    let out = pactdb_bare(
        tmp.path(),
        &[
            "node",
            "--id",
            "4",
            "--data-dir",
            &tmp.path().join("node-4").to_string_lossy(),
            "--listen",
            &peer,
            "--client-listen",
            &client,
            "--join",
            &eps,
            "--certs-dir",
            &other.join("node-4").to_string_lossy(),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(20), "the refused join should fail at once");
    let err = stderr(&out);
    assert!(err.contains("cannot join"), "{err}");
    assert!(err.contains("refused the connection"), "{err}");
    assert!(err.contains("UnknownIssuer"), "{err}");
    // The cluster saw the handshake fail.
    wait_for_log(&cluster, &["refused a TLS connection from 127.0.0.1:", "client port"]);

    // Node 4 is in no group's view, and the cluster keeps serving.
    let c = cluster.client().await;
    c.put("after", "1").await.unwrap();
    assert_eq!(c.get("after").await.unwrap().unwrap().value, b"1");
    for g in 0..2 {
        let v = cluster.view(g).await.unwrap();
        assert!(!v.members.contains(&4), "group {g}: {v:?}");
    }
}

/// A free loopback address.
fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_certificates_on_the_peer_port_are_refused_and_logged() {
    let mut cluster = TestCluster::start(3, 1, &[]).await;

    // A client certificate of the cluster's own CA, presented on the peer
    // port: it is no node certificate.
    let tls = ClientTls::load(&certs().join("client")).unwrap();
    let peer = cluster.nodes[&1].peer.clone();
    let result = async {
        let mut conn = FramedConn::connect_with(&peer, &ClientSecurity::Tls(tls)).await?;
        conn.send(&[b"pretending to be a node".to_vec()]).await?;
        let mut buf = Vec::new();
        conn.recv(&mut buf).await.map_err(|e| std::io::Error::other(e.to_string()))
    }
    .await;
    assert!(result.is_err(), "a client certificate was accepted on the peer port");
    let line = wait_for_log(&cluster, &["refused a TLS connection from 127.0.0.1:", "peer port"]);
    assert!(line.contains("not a node certificate"), "{line}");

    // Node 3 restarted with node 2's certificate: its peers, dialing node 3,
    // find a certificate for node-2 and hang up; what node 3 sends on its
    // own connections (authenticated as node 2) is dropped.
    cluster.kill(3);
    let at = cluster.nodes[&3].args.iter().position(|a| a == "--certs-dir").unwrap() + 1;
    let right = cluster.nodes[&3].args[at].clone();
    cluster.nodes.get_mut(&3).unwrap().args[at] = certs().join("node-2").to_string_lossy().to_string();
    cluster.restart(3);
    let c = cluster.client().await;
    c.put("k", "v").await.unwrap();
    let line = wait_for_log(&cluster, &["cannot connect to peer", "NotValidForName"]);
    assert!(line.contains("peer=3") || line.contains("peer: 3"), "{line}");
    wait_for_log(&cluster, &["dropping a peer message from node 3 on a connection authenticated as node 2"]);

    // With its own certificate again, node 3 is a member as before.
    cluster.kill(3);
    cluster.nodes.get_mut(&3).unwrap().args[at] = right;
    cluster.restart(3);
    cluster.wait_converged(Some(3), Duration::from_secs(30)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_the_cluster_certificate_reads_and_writes_across_a_failover() {
    let mut cluster = TestCluster::start(3, 1, &[]).await;
    let eps = cluster.endpoints().join(",");
    let tmp = tempfile::tempdir().unwrap();
    let good = certs().join("client").to_string_lossy().to_string();
    let out = pactdb_bare(tmp.path(), &["--endpoints", &eps, "--certs-dir", &good, "put", "k", "before"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let leader = cluster.view(0).await.unwrap().leader;
    cluster.kill(leader);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pactdb_bare(tmp.path(), &["--endpoints", &eps, "--certs-dir", &good, "put", "k", "after"]);
        if out.status.code() == Some(0) {
            break;
        }
        assert!(Instant::now() < deadline, "no write after the failover: {}", stderr(&out));
    }
    let out = pactdb_bare(tmp.path(), &["--endpoints", &eps, "--certs-dir", &good, "get", "k"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "after");

    // The in-process client (this process's default security) agrees.
    match pactdb_client::call(&cluster.nodes[&(leader % 3 + 1)].client, &ClientMsg::GetStatus, Duration::from_secs(2))
        .await
    {
        Ok(ClientReply::Status(_)) => {}
        other => panic!("status over TLS: {other:?}"),
    }
}

/// Stops a demo (SIGTERM: it stops its nodes) however the test ends, and
/// then the nodes cluster.json names, should the demo not have.
struct Demo(std::process::Child, std::path::PathBuf);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let info = std::fs::read_to_string(self.1.join("pactdb-data/cluster.json")).unwrap_or_default();
        if let Ok(info) = serde_json::from_str::<serde_json::Value>(&info) {
            for n in info["nodes"].as_array().into_iter().flatten() {
                if let Some(pid) = n["pid"].as_u64() {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).stderr(Stdio::null()).status();
                }
            }
        }
    }
}

/// Starts `pactdb demo` in `cwd` (its data in ./pactdb-data) and waits
/// until a client command run there, with no credentials given, succeeds.
fn start_demo(cwd: &Path, offset: u16) -> Demo {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(cwd.join("demo.log")).unwrap();
    let started =
        std::fs::read_to_string(cwd.join("demo.log")).unwrap_or_default().matches("Ctrl-C stops the cluster").count();
    let demo = Demo(
        Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(["demo", "--port-offset", &offset.to_string()])
            .current_dir(cwd)
            .env_remove("PACTDB_CERTS_DIR")
            .env_remove("PACTDB_INSECURE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
        cwd.to_path_buf(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Up once it says how to stop it (it handles SIGTERM from then on).
        let said = std::fs::read_to_string(cwd.join("demo.log")).unwrap_or_default();
        if said.matches("Ctrl-C stops the cluster").count() > started && pactdb_bare(cwd, &["status"]).status.success()
        {
            std::thread::sleep(Duration::from_millis(200));
            return demo;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not come up: {}",
            std::fs::read_to_string(cwd.join("demo.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_demo_runs_tls_by_default_and_client_commands_find_its_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let demo = start_demo(cwd, 880);
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cwd.join("pactdb-data/cluster.json")).unwrap()).unwrap();
    let client_dir = info["certs_dir"].as_str().expect("cluster.json names the client certs dir").to_string();
    assert!(Path::new(&client_dir).join("client.crt").exists());
    assert!(info["nodes"][0]["command"].as_array().unwrap().iter().any(|a| a == "--certs-dir"));
    let ca = std::fs::read(cwd.join("pactdb-data/certs/ca.crt")).unwrap();

    let out = pactdb_bare(cwd, &["put", "greeting", "hello"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = pactdb_bare(cwd, &["--insecure", "get", "greeting"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the node speaks TLS"), "{}", stderr(&out));

    // Restarted on its data dir, the demo keeps its CA and its data.
    drop(demo);
    let _demo = start_demo(cwd, 880);
    assert_eq!(std::fs::read(cwd.join("pactdb-data/certs/ca.crt")).unwrap(), ca, "the CA was replaced");
    let out = pactdb_bare(cwd, &["get", "greeting"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "hello");
}

#[test]
fn certs_init_refuses_to_overwrite_and_keys_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("ca");
    let out = pactdb_bare(tmp.path(), &["certs", "init", "--dir", &d.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(d.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
    let ca = std::fs::read(d.join("ca.crt")).unwrap();
    let out = pactdb_bare(tmp.path(), &["certs", "init", "--dir", &d.to_string_lossy()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("already exists; refusing to overwrite"), "{}", stderr(&out));
    assert_eq!(std::fs::read(d.join("ca.crt")).unwrap(), ca);

    let out = pactdb_bare(
        tmp.path(),
        &["certs", "issue", "node", "--dir", &d.to_string_lossy(), "--id", "4", "--host", "db4.example"]
            .iter()
            .chain(&["--host", "10.1.2.3", "--out", &tmp.path().join("n4").to_string_lossy()])
            .copied()
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for f in ["ca.crt", "node.crt", "node.key"] {
        assert!(tmp.path().join("n4").join(f).exists(), "{f}");
    }
    assert_eq!(std::fs::metadata(tmp.path().join("n4/node.key")).unwrap().permissions().mode() & 0o777, 0o600);

    // A node started with neither --certs-dir nor --insecure refuses, naming both.
    let out =
        pactdb_bare(tmp.path(), &["node", "--id", "1", "--listen", "127.0.0.1:1", "--client-listen", "127.0.0.1:2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--certs-dir DIR") && stderr(&out).contains("--insecure"), "{}", stderr(&out));
    // Both: a usage error.
    let out = pactdb_bare(tmp.path(), &["node", "--id", "1", "--certs-dir", "x", "--insecure"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
