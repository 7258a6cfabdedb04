//! Real processes, driven the way an operator would: `pactdb demo` starts
//! three nodes; under a running `pactdb workload run kv` and writers of its
//! own, the test adds nodes 4 and 5 (`admin add-node`, then `pactdb node
//! --join`), runs `admin rebalance`, removes node 1 (`admin remove-node`,
//! after which node 1's process stops by itself) and keeps writing. No
//! client sees an error beyond retries, every acknowledged write is still
//! there, the config store ends on nodes 2-5, and every group's members end
//! with equal digests. Each step's duration is printed.

use pactdb_client::Client;
use pactdb_core::types::{ClusterMap, GroupId, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply, NodeStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Ports 7000+OFFSET+N and 7100+OFFSET+N: away from the demo's default and
/// from the ephemeral ports other tests bind.
const OFFSET: u16 = 850;

fn peer(n: NodeId) -> String {
    format!("127.0.0.1:{}", 7000 + OFFSET + n as u16)
}

fn client(n: NodeId) -> String {
    format!("127.0.0.1:{}", 7100 + OFFSET + n as u16)
}

fn endpoints(nodes: &[NodeId]) -> String {
    nodes.iter().map(|&n| client(n)).collect::<Vec<_>>().join(",")
}

/// A `pactdb` command with the demo's client certificate (TLS, the
/// demo's default).
fn pactdb() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_pactdb"));
    c.stdin(Stdio::null()).env("PACTDB_CERTS_DIR", data_dir().join("certs").join("client"));
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Every process the test started, stopped however the test ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SIGTERM first: the demo stops its nodes on it.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        std::thread::sleep(Duration::from_millis(500));
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The demo's nodes, should the demo itself have been killed first.
        let _ = Command::new("pkill").args(["-f", &format!("data-dir {}", data_dir().display())]).status();
    }
}

fn data_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pactdb-membership-test-{}", std::process::id()))
}

async fn admin(eps: &str, args: &[&str]) -> String {
    let mut cmd = pactdb();
    cmd.args(["--endpoints", eps, "admin"]).args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "admin {args:?} failed: {said}");
    assert!(!said.contains("panicked"), "{said}");
    said
}

fn spawn_joiner(n: NodeId, dir: &Path, join: &str) -> Child {
    let log = std::fs::File::create(dir.join(format!("node-{n}.log"))).unwrap();
    // A certificate from the demo's CA, as an operator adding a node makes one.
    let certs = dir.join("certs");
    let node_certs = certs.join(format!("node-{n}"));
    let out = pactdb()
        .args(["certs", "issue", "node", "--dir", &certs.to_string_lossy(), "--id", &n.to_string()])
        .args(["--out", &node_certs.to_string_lossy()])
        .output()
        .unwrap();
    assert!(out.status.success(), "certs issue node {n}: {}", text(&out));
    pactdb()
        .args(["node", "--id", &n.to_string(), "--listen", &peer(n), "--client-listen", &client(n)])
        .args(["--certs-dir", &node_certs.to_string_lossy()])
        .args(["--data-dir", &dir.join(format!("node-{n}")).to_string_lossy(), "--join", join])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn status_of(n: NodeId) -> Option<NodeStatus> {
    match pactdb_client::call(&client(n), &ClientMsg::GetStatus, Duration::from_secs(2)).await {
        Ok(ClientReply::Status(s)) => Some(s),
        _ => None,
    }
}

async fn map_and_views(n: NodeId) -> Option<(ClusterMap, Vec<View>)> {
    match pactdb_client::call(&client(n), &ClientMsg::GetViews, Duration::from_secs(2)).await {
        Ok(ClientReply::Views { cluster: Some(c), views }) => Some((c, views)),
        _ => None,
    }
}

/// Every member of every group reports the primary's applied index and
/// digest, and the config store settled on `config`.
async fn converged(nodes: &[NodeId], config: &[NodeId]) -> Result<(), String> {
    let mut statuses = BTreeMap::new();
    for &n in nodes {
        statuses.insert(n, status_of(n).await.ok_or(format!("node {n} does not answer"))?);
    }
    let (map, views) = map_and_views(nodes[0]).await.ok_or("no map")?;
    if map.config_members != config || !map.config_settled {
        return Err(format!("config store on {:?}, settled {}", map.config_members, map.config_settled));
    }
    let of = |n: NodeId, g: GroupId| statuses.get(&n).and_then(|s| s.replicas.iter().find(|r| r.group == g).cloned());
    for v in &views {
        let p = of(v.leader, v.group).ok_or(format!("group {} leader {} unknown", v.group, v.leader))?;
        for &m in &v.members {
            let r = of(m, v.group).ok_or(format!("member {m} of group {} unknown", v.group))?;
            if (r.applied_index, r.digest) != (p.applied_index, p.digest) {
                return Err(format!("group {}: member {m} differs from primary {}", v.group, v.leader));
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_join_the_cluster_rebalances_and_node_1_leaves_while_clients_write() {
    let dir = data_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut procs = Processes(Vec::new());
    let demo_log = std::fs::File::create(dir.join("demo.log")).unwrap();
    procs.0.push(
        pactdb()
            .args(["demo", "--data-dir", &dir.to_string_lossy(), "--port-offset", &OFFSET.to_string()])
            .stdout(demo_log.try_clone().unwrap())
            .stderr(demo_log)
            .spawn()
            .unwrap(),
    );
    let first = endpoints(&[1, 2, 3]);
    let eps: Vec<String> = first.split(',').map(String::from).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let c = loop {
        // The demo makes its CA and client certificate first thing.
        let client_certs = dir.join("certs").join("client");
        if let Ok(tls) = pactdb_client::ClientTls::load(&client_certs) {
            pactdb_client::set_default_security(pactdb_client::ClientSecurity::Tls(tls));
        }
        if let Ok(c) = Client::connect(&eps).await {
            if c.put("warm-up", "1").await.is_ok() {
                break c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not come up: {:?}",
            std::fs::read_to_string(dir.join("demo.log"))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Writers of our own, to know exactly what was acknowledged.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (c, acked, failed, stop) = (c.clone(), acked.clone(), failed.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (k, v) = (format!("w{w}-{i}"), format!("v{w}-{i}"));
                match c.put(k.clone(), v.clone()).await {
                    Ok(_) => {
                        acked.lock().unwrap().insert(k, v);
                    }
                    Err(e) => {
                        eprintln!("writer {w}: {k}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
            }
        }));
    }
    // And the workload tool, as a user would run it.
    let workload = pactdb()
        .args(["--endpoints", &first, "workload", "run", "kv", "--duration", "25s", "--clients", "4"])
        .args(["--display-every", "5s", "--keys", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writes_at = |acked: &Arc<Mutex<BTreeMap<String, String>>>| acked.lock().unwrap().len();
    let mut steps: Vec<(String, Duration, usize)> = Vec::new();
    let mut step = |name: &str, began: Instant, before: usize, acked: &Arc<Mutex<BTreeMap<String, String>>>| {
        let took = began.elapsed();
        let writes = writes_at(acked) - before;
        println!("{name}: {:.1} s, {writes} writes acknowledged meanwhile", took.as_secs_f64());
        steps.push((name.to_string(), took, writes));
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    for n in [4, 5] {
        let (t, w) = (Instant::now(), writes_at(&acked));
        let said =
            admin(&first, &["add-node", "--id", &n.to_string(), "--peer", &peer(n), "--client", &client(n)]).await;
        assert!(said.contains(&format!("node {n} added")), "{said}");
        procs.0.push(spawn_joiner(n, &dir, &first));
        // Up once it answers with the map that names it.
        let up = Instant::now() + Duration::from_secs(30);
        while !map_and_views(n).await.is_some_and(|(m, _)| m.nodes.contains_key(&n)) {
            assert!(
                Instant::now() < up,
                "node {n} did not join: {:?}",
                std::fs::read_to_string(dir.join(format!("node-{n}.log")))
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        step(&format!("add node {n}"), t, w, &acked);
    }

    let (t, w) = (Instant::now(), writes_at(&acked));
    let said = admin(&first, &["rebalance"]).await;
    assert!(said.contains("rebalanced") || said.contains("nothing to do"), "{said}");
    step("rebalance", t, w, &acked);
    let (map, views) = map_and_views(2).await.expect("node 2 answers");
    for n in [4, 5] {
        assert!(views.iter().any(|v| v.is_member(n)), "node {n} holds nothing after the rebalance: {views:?}");
    }
    assert_eq!(map.config_members, vec![1, 2, 3, 4, 5]);

    let (t, w) = (Instant::now(), writes_at(&acked));
    let said = admin(&endpoints(&[2, 3, 4, 5]), &["remove-node", "1"]).await;
    assert!(said.contains("node 1 removed"), "{said}");
    step("remove node 1", t, w, &acked);
    // Node 1 stops by itself once it learns it was removed.
    let gone = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(client(1)).is_ok() {
        assert!(Instant::now() < gone, "node 1 still runs after its removal");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Keep writing a while on the changed cluster.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    let out = tokio::task::spawn_blocking(move || workload.wait_with_output().unwrap()).await.unwrap();
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let total = said.lines().find(|l| l.starts_with("total")).unwrap_or_else(|| panic!("no total line: {said}"));
    let fields: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(fields[2], "0", "the workload saw errors: {said}");
    println!("workload: {total}");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "a writer saw an error beyond retries");

    // Nothing acknowledged is lost, read through the nodes that remain.
    let c = Client::connect(&endpoints(&[2, 3, 4, 5]).split(',').map(String::from).collect::<Vec<_>>()).await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "too few writes to mean anything: {}", acked.len());
    for (k, v) in &acked {
        let got = c.get(k.clone()).await.expect("reads work").map(|x| x.value);
        assert_eq!(got.as_deref(), Some(v.as_bytes()), "acknowledged write of {k} lost");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match converged(&[2, 3, 4, 5], &[2, 3, 4, 5]).await {
            Ok(()) => {
                last.clear();
                break;
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.is_empty(), "the cluster did not converge: {last}");
    println!("{} acknowledged writes checked; steps: {steps:?}", acked.len());
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
