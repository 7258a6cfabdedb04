//! A real cluster of `pactdb node` processes on loopback, for scenario tests.
//! Every node is a child process; `kill` is a real SIGKILL.
//!
//! Nodes run TLS with certificates of one CA per test process ([`certs`],
//! made with `pactdb certs`), unless a test passes `--insecure`. The client
//! certificate is this process's default client security and, through
//! `PACTDB_CERTS_DIR`, that of the `pactdb` commands tests run.

#![allow(dead_code)]

use pactdb_client::{call, Client};
use pactdb_core::types::{ClusterMap, GroupId, GroupSpec, Mode, NodeAddrs, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply, NodeStatus};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct TestNode {
    pub id: NodeId,
    pub peer: String,
    pub client: String,
    pub dir: PathBuf,
    pub args: Vec<String>,
    pub child: Option<Child>,
}

pub struct TestCluster {
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub map: ClusterMap,
    _tmp: tempfile::TempDir,
}

/// Runs `pactdb ARGS` and panics unless it succeeds.
pub fn pactdb_ok(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_pactdb")).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "pactdb {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Creates a CA in `dir` with `pactdb certs init`, a client certificate in
/// `dir/client` and node certificates for `nodes` in `dir/node-N`.
pub fn make_certs(dir: &Path, nodes: &[NodeId]) {
    let d = dir.to_string_lossy().to_string();
    pactdb_ok(&["certs", "init", "--dir", &d]);
    pactdb_ok(&["certs", "issue", "client", "--dir", &d, "--out", &format!("{d}/client")]);
    for &id in nodes {
        pactdb_ok(&[
            "certs",
            "issue",
            "node",
            "--dir",
            &d,
            "--id",
            &id.to_string(),
            "--out",
            &format!("{d}/node-{id}"),
        ]);
    }
}

/// This test process's CA dir (created on first use), with a client
/// certificate in `client/` and certificates for nodes 1 to 9 in `node-N/`.
/// The client certificate becomes the process's default client security and
/// `PACTDB_CERTS_DIR` for the commands the tests run.
pub fn certs() -> &'static Path {
    static CERTS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        make_certs(&dir, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
        let client = dir.join("client");
        pactdb_client::set_default_security(pactdb_client::ClientSecurity::Tls(
            pactdb_client::ClientTls::load(&client).expect("the test client certificate loads"),
        ));
        std::env::set_var("PACTDB_CERTS_DIR", &client);
        dir
    })
}

/// A free port below the kernel's ephemeral range (32768-60999 here).
/// A port the kernel handed out for `bind(0)` may later be given to some
/// outgoing connection as its local port, and a node restarted on it then
/// fails to bind (seen once as "node 2 did not start listening" in a full
/// test run). Ports below the range are never assigned that way. A
/// per-process counter keeps parallel tests in one binary apart; the pid
/// spreads test binaries that run one after the other.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (offset.wrapping_add(i)) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

impl TestCluster {
    /// Starts `n` nodes and bootstraps `groups` passive groups of up to 3 members.
    pub async fn start(n: u64, groups: u32, extra_args: &[&str]) -> TestCluster {
        Self::start_mixed(n, groups, 0, false, extra_args).await
    }

    /// Starts `n` nodes with `passive` passive groups followed by `active`
    /// active groups (voting if `voting`).
    pub async fn start_mixed(n: u64, passive: u32, active: u32, voting: bool, extra_args: &[&str]) -> TestCluster {
        let c = Self::spawn_mixed(n, passive, active, voting, extra_args);
        c.bootstrap().await;
        c
    }

    /// Starts the nodes of `start_mixed` without bootstrapping them, as an
    /// operator who runs `pactdb node` by hand; `map` is the map the test
    /// means them to get.
    pub fn spawn_mixed(n: u64, passive: u32, active: u32, voting: bool, extra_args: &[&str]) -> TestCluster {
        let groups = passive + active;
        let tmp = tempfile::tempdir().unwrap();
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            nodes.insert(
                id,
                TestNode {
                    id,
                    peer: format!("127.0.0.1:{}", free_port()),
                    client: format!("127.0.0.1:{}", free_port()),
                    dir: tmp.path().join(format!("node-{id}")),
                    args: vec![],
                    child: None,
                },
            );
        }
        let peers = nodes.values().map(|t| format!("{}={}", t.id, t.peer)).collect::<Vec<_>>().join(",");
        let tls = !extra_args.contains(&"--insecure");
        if !tls {
            pactdb_client::set_default_security(pactdb_client::ClientSecurity::Insecure);
            std::env::set_var("PACTDB_INSECURE", "1");
        }
        for t in nodes.values_mut() {
            t.args = vec![
                "node".into(),
                "--id".into(),
                t.id.to_string(),
                "--data-dir".into(),
                t.dir.to_string_lossy().to_string(),
                "--listen".into(),
                t.peer.clone(),
                "--client-listen".into(),
                t.client.clone(),
                "--peers".into(),
                peers.clone(),
            ];
            if tls {
                t.args.extend([
                    "--certs-dir".to_string(),
                    certs().join(format!("node-{}", t.id)).to_string_lossy().to_string(),
                ]);
            }
            t.args.extend(extra_args.iter().map(|s| s.to_string()));
        }
        let ids: Vec<NodeId> = nodes.keys().copied().collect();
        let map = ClusterMap::new(
            nodes.values().map(|t| (t.id, NodeAddrs { peer: t.peer.clone(), client: t.client.clone() })).collect(),
            (0..groups)
                .map(|g| GroupSpec {
                    id: g,
                    mode: if g >= passive { Mode::Active } else { Mode::Passive },
                    placement: (0..3.min(ids.len())).map(|k| ids[(g as usize + k) % ids.len()]).collect(),
                    min_members: 1,
                    voting: g >= passive && voting,
                })
                .collect(),
        );
        let mut c = TestCluster { nodes, map, _tmp: tmp };
        for id in ids {
            c.restart(id);
        }
        c
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(|t| t.client.clone()).collect()
    }

    /// Starts (or restarts) a node with the same command line as before.
    pub fn restart(&mut self, id: NodeId) {
        let t = self.nodes.get_mut(&id).unwrap();
        std::fs::create_dir_all(&t.dir).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(t.dir.join("node.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(&t.args)
            .env("PACTDB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        t.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&t.client).is_err() {
            assert!(Instant::now() < deadline, "node {id} did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs node `id` (stopped) once with a `--peers` that moves node
    /// `moved` to 127.0.0.1:9, and returns what it printed when it exited;
    /// a node that keeps running past 10 s is killed and the test fails.
    /// Its own command line is untouched, so `restart` brings it back.
    pub fn run_with_moved_peer(&self, id: NodeId, moved: NodeId) -> std::process::Output {
        let t = &self.nodes[&id];
        let peers_at = t.args.iter().position(|a| a == "--peers").unwrap() + 1;
        let mut bad_args = t.args.clone();
        bad_args[peers_at] = bad_args[peers_at].replace(&self.nodes[&moved].peer, "127.0.0.1:9");
        let mut child = Command::new(env!("CARGO_BIN_EXE_pactdb"))
            .args(&bad_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("node {id} with a disagreeing --peers kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    }

    /// SIGKILL: the process gets no chance to flush anything.
    pub fn kill(&mut self, id: NodeId) {
        let t = self.nodes.get_mut(&id).unwrap();
        if let Some(mut c) = t.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log_of(&self, id: NodeId) -> String {
        std::fs::read_to_string(self.nodes[&id].dir.join("node.log")).unwrap_or_default()
    }

    async fn bootstrap(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let first = self.nodes.values().next().unwrap().client.clone();
        loop {
            match call(&first, &ClientMsg::Bootstrap { cluster: self.map.clone() }, Duration::from_secs(5)).await {
                Ok(ClientReply::Bootstrapped(Ok(()))) => break,
                other => assert!(Instant::now() < deadline, "bootstrap failed: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoints()).await.expect("client connects")
    }

    pub async fn status(&self, id: NodeId) -> Option<NodeStatus> {
        match call(&self.nodes[&id].client, &ClientMsg::GetStatus, Duration::from_secs(2)).await {
            Ok(ClientReply::Status(s)) => Some(s),
            _ => None,
        }
    }

    /// The view of a group as the live nodes report it (newest epoch wins).
    pub async fn view(&self, group: GroupId) -> Option<View> {
        let mut best: Option<View> = None;
        for id in self.nodes.keys() {
            if let Some(s) = self.status(*id).await {
                for r in s.replicas.into_iter().filter(|r| r.group == group) {
                    if let Some(v) = r.view {
                        if best.as_ref().is_none_or(|b| b.epoch < v.epoch) {
                            best = Some(v);
                        }
                    }
                }
            }
        }
        best
    }

    /// A key that routes to `group`, made from `prefix`.
    pub fn key_in(&self, group: GroupId, prefix: &str) -> String {
        (0u64..).map(|i| format!("{prefix}-{i}")).find(|k| self.map.group_of(k.as_bytes()) == group).unwrap()
    }

    /// Waits until every member of every group's view reports the same
    /// applied index and digest as the group's primary, and `must_be_member`
    /// is in every view it is placed in.
    pub async fn wait_converged(&self, must_be_member: Option<NodeId>, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.converged(must_be_member).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last)
    }

    async fn converged(&self, must_be_member: Option<NodeId>) -> Result<(), String> {
        let mut statuses = BTreeMap::new();
        for id in self.nodes.keys() {
            if self.nodes[id].child.is_some() {
                statuses.insert(*id, self.status(*id).await.ok_or(format!("node {id} does not answer"))?);
            }
        }
        for g in &self.map.groups {
            let view = self.view(g.id).await.ok_or(format!("group {} has no view", g.id))?;
            if let Some(m) = must_be_member {
                if g.placement.contains(&m) && !view.is_member(m) {
                    return Err(format!("node {m} is not back in group {}'s view {view:?}", g.id));
                }
            }
            let of = |n: NodeId| statuses.get(&n).and_then(|s| s.replicas.iter().find(|r| r.group == g.id).cloned());
            let primary = of(view.leader).ok_or(format!("group {} leader {} unknown", g.id, view.leader))?;
            for m in &view.members {
                let r = of(*m).ok_or(format!("member {m} of group {} unknown", g.id))?;
                if r.applied_index != primary.applied_index || r.digest != primary.digest {
                    return Err(format!(
                        "group {}: member {m} applied {} digest {:x}, primary {} applied {} digest {:x}",
                        g.id, r.applied_index, r.digest, view.leader, primary.applied_index, primary.digest
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for t in self.nodes.values_mut() {
            if let Some(mut c) = t.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
