//! `pactdb demo`: a local cluster of child processes on 127.0.0.1, and the
//! `status` report. The demo writes `cluster.json` so that other commands,
//! tests and scripts find the nodes and know how to restart one.

use anyhow::{bail, Context};
use pactdb_client::{Client, Error};
use pactdb_core::types::{ClusterMap, GroupSpec, Mode, NodeAddrs, NodeId, View};
use pactdb_core::wire::{NodeStatus, ReplicaStatus};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const DEMO_PEER_BASE_PORT: u16 = 7000;
pub const DEMO_CLIENT_BASE_PORT: u16 = 7100;
/// Node N serves HTTP (API, /metrics, web view) on 8100+offset+N.
pub const DEMO_HTTP_BASE_PORT: u16 = 8100;

pub fn peer_port(id: NodeId) -> u16 {
    DEMO_PEER_BASE_PORT + id as u16
}

pub fn client_port(id: NodeId) -> u16 {
    DEMO_CLIENT_BASE_PORT + id as u16
}

pub fn http_port(id: NodeId) -> u16 {
    DEMO_HTTP_BASE_PORT + id as u16
}

/// Node N serves the Redis protocol on 6378+N (+ the port offset): 6379,
/// Redis's own port, for node 1.
pub const DEMO_REDIS_BASE_PORT: u16 = 6378;

pub fn redis_port(id: NodeId) -> u16 {
    DEMO_REDIS_BASE_PORT + id as u16
}

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Where every node keeps its WAL and log, and where cluster.json goes.
    #[arg(long, default_value = crate::cli::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// How many nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    pub nodes: u64,
    #[command(flatten)]
    pub layout: LayoutArgs,
    /// Port offset: node N listens on 7000+offset+N (peers), 7100+offset+N
    /// (clients), 8100+offset+N (HTTP) and 6378+offset+N (Redis protocol).
    #[arg(long, default_value_t = 0)]
    pub port_offset: u16,
    /// Passed to every node: WAL bytes between two snapshots.
    #[arg(long)]
    pub snapshot_wal_bytes: Option<u64>,
    /// Passed to every node: size at which the WAL starts a new segment.
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
}

/// The groups of a new cluster (`demo` and `bootstrap`).
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// How many replica groups.
    #[arg(long, default_value_t = 3)]
    pub groups: u32,
    /// How many of the groups use active replication (the last ones); the
    /// rest are passive (primary-backup).
    #[arg(long, default_value_t = 1)]
    pub active_groups: u32,
    /// Active groups answer in voting mode: the front end waits for f+1
    /// identical answers of their 2f+1 members.
    #[arg(long)]
    pub voting: bool,
    /// Members per group (at most the number of nodes).
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Writes are refused while a group's view has fewer members than this.
    #[arg(long, default_value_t = 1)]
    pub min_members: usize,
}

/// What `cluster.json` holds for one node.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct NodeInfo {
    pub id: NodeId,
    pub pid: u32,
    pub peer: String,
    pub client: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The node's HTTP address (API, /metrics, web view), if it serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The full command line that (re)starts this node.
    pub command: Vec<String>,
    /// Where the node serves the Redis protocol (`--redis-listen`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ClusterInfo {
    pub nodes: Vec<NodeInfo>,
    pub cluster: ClusterMap,
    /// The client certs dir (ca.crt, client.crt, client.key) that client
    /// commands use by default; none for a demo started with --insecure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certs_dir: Option<PathBuf>,
    /// Started with --insecure: client commands default to plaintext.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// The demo's certificates under `data_dir/certs`: the CA, `node-N/` per
/// node and `client/`. What exists already is kept, so a demo restarted on
/// its data dir keeps its CA (and a node added later gets a certificate).
/// Returns the client dir.
fn demo_certs(data_dir: &std::path::Path, ids: &[NodeId]) -> anyhow::Result<PathBuf> {
    use pactdb_node::tls::{CA_CERT, CLIENT_CERT, NODE_CERT};
    let certs = data_dir.join("certs");
    if !certs.join(CA_CERT).exists() {
        crate::certs::init_ca(&certs)?;
    }
    for &id in ids {
        let out = certs.join(format!("node-{id}"));
        if !out.join(NODE_CERT).exists() {
            crate::certs::issue_node(&certs, id, &[], &out)?;
        }
    }
    let client = certs.join("client");
    if !client.join(CLIENT_CERT).exists() {
        crate::certs::issue_client(&certs, "demo-client", &client)?;
    }
    Ok(client)
}

/// The demo's layout: `groups` groups of `replicas` members, placed round
/// robin so the leaders (first placed node) spread over the nodes.
pub fn layout(nodes: &BTreeMap<NodeId, NodeAddrs>, args: &LayoutArgs) -> ClusterMap {
    let (groups, replicas, min_members) = (args.groups, args.replicas, args.min_members);
    let first_active = groups.saturating_sub(args.active_groups);
    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    let groups = (0..groups)
        .map(|g| GroupSpec {
            id: g,
            mode: if g >= first_active { Mode::Active } else { Mode::Passive },
            placement: (0..replicas.min(ids.len())).map(|k| ids[(g as usize + k) % ids.len()]).collect(),
            min_members,
            voting: g >= first_active && args.voting,
        })
        .collect();
    ClusterMap::new(nodes.clone(), groups)
}

fn http_addr(id: NodeId, offset: u16) -> String {
    format!("127.0.0.1:{}", http_port(id) + offset)
}

fn spawn_node(info: &NodeInfo) -> anyhow::Result<Child> {
    std::fs::create_dir_all(&info.data_dir)?;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&info.log)?;
    let child = Command::new(&info.command[0])
        .args(&info.command[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting node {}", info.id))?;
    Ok(child)
}

fn wait_listening(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("nothing listens on {addr} after {timeout:?}")
}

pub fn run(args: DemoArgs, insecure: bool) -> anyhow::Result<i32> {
    if args.nodes == 0 || args.nodes > 9 {
        bail!("--nodes must be 1 to 9");
    }
    if args.layout.replicas == 0 || args.layout.replicas > args.nodes as usize {
        bail!("--replicas must be 1 to --nodes");
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let exe = std::env::current_exe()?.to_string_lossy().to_string();
    let ids: Vec<NodeId> = (1..=args.nodes).collect();
    let addrs: BTreeMap<NodeId, NodeAddrs> = ids
        .iter()
        .map(|&id| {
            let off = args.port_offset;
            let peer = format!("127.0.0.1:{}", peer_port(id) + off);
            let client = format!("127.0.0.1:{}", client_port(id) + off);
            (id, NodeAddrs { peer, client })
        })
        .collect();
    let peers = addrs.iter().map(|(id, a)| format!("{id}={}", a.peer)).collect::<Vec<_>>().join(",");
    // TLS unless --insecure: the demo's own CA, and the client certificate
    // that client commands find through cluster.json.
    let certs_dir = if insecure {
        pactdb_client::set_default_security(pactdb_client::ClientSecurity::Insecure);
        None
    } else {
        let client = demo_certs(&data_dir, &ids)?;
        pactdb_client::set_default_security(pactdb_client::ClientSecurity::Tls(pactdb_client::ClientTls::load(
            &client,
        )?));
        Some(client)
    };
    let mut nodes = Vec::new();
    let mut children = Vec::new();
    for (&id, a) in &addrs {
        let dir = data_dir.join(format!("node-{id}"));
        let command = vec![
            exe.clone(),
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.to_string_lossy().to_string(),
            "--listen".into(),
            a.peer.clone(),
            "--client-listen".into(),
            a.client.clone(),
            "--peers".into(),
            peers.clone(),
            "--http-listen".into(),
            http_addr(id, args.port_offset),
        ];
        let redis = format!("127.0.0.1:{}", redis_port(id) + args.port_offset);
        let mut command = command;
        match &certs_dir {
            Some(_) => command.extend([
                "--certs-dir".to_string(),
                data_dir.join("certs").join(format!("node-{id}")).to_string_lossy().to_string(),
            ]),
            None => command.push("--insecure".to_string()),
        }
        command.extend(["--redis-listen".to_string(), redis.clone()]);
        if let Some(n) = args.snapshot_wal_bytes {
            command.extend(["--snapshot-wal-bytes".to_string(), n.to_string()]);
        }
        if let Some(n) = args.wal_segment_bytes {
            command.extend(["--wal-segment-bytes".to_string(), n.to_string()]);
        }
        let mut info = NodeInfo {
            id,
            pid: 0,
            peer: a.peer.clone(),
            client: a.client.clone(),
            log: dir.join("node.log"),
            http: Some(http_addr(id, args.port_offset)),
            data_dir: dir,
            command,
            redis: Some(redis),
        };
        let child = spawn_node(&info)?;
        info.pid = child.id();
        children.push(child);
        nodes.push(info);
    }
    let stop = |children: &mut Vec<Child>| {
        for c in children.iter() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in children.iter_mut() {
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    };
    let cluster = layout(&addrs, &args.layout);
    let info = ClusterInfo { nodes: nodes.clone(), cluster: cluster.clone(), certs_dir: certs_dir.clone(), insecure };
    if let Err(e) = bootstrap(&info) {
        stop(&mut children);
        return Err(e);
    }
    let json_path = data_dir.join("cluster.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&info)?)?;
    println!(
        "pactdb demo: {} nodes, {} groups of {} members ({} passive, {} active{})",
        args.nodes,
        args.layout.groups,
        args.layout.replicas.min(args.nodes as usize),
        args.layout.groups - args.layout.active_groups.min(args.layout.groups),
        args.layout.active_groups.min(args.layout.groups),
        if args.layout.voting { ", voting" } else { "" }
    );
    for n in &nodes {
        println!("  node {}  client {}  peer {}  pid {}  log {}", n.id, n.client, n.peer, n.pid, n.log.display());
        if let Some(r) = &n.redis {
            println!("          redis {r}");
        }
    }
    let scheme = if certs_dir.is_some() { "https" } else { "http" };
    let urls: Vec<String> = nodes.iter().filter_map(|n| Some(format!("{scheme}://{}/", n.http.as_ref()?))).collect();
    println!("  web view, HTTP API and /metrics: {}", urls.join("  "));
    println!("cluster description: {}", json_path.display());
    match &certs_dir {
        Some(dir) => {
            println!("TLS: client certificate in {} (client commands find it through cluster.json)", dir.display())
        }
        None => println!("plaintext (--insecure): client commands find that through cluster.json"),
    }
    println!("try:  pactdb put greeting hello; pactdb get greeting; pactdb status");
    if let (Some(dir), Some(http)) = (&certs_dir, nodes.first().and_then(|n| n.http.as_ref())) {
        // The HTTP API asks for the same client certificate as the CLI.
        let d = dir.display();
        println!("      curl --cacert {d}/ca.crt --cert {d}/client.crt --key {d}/client.key https://{http}/v1/status");
    } else if let Some(http) = nodes.first().and_then(|n| n.http.as_ref()) {
        println!("      curl http://{http}/v1/status");
    }
    println!("Ctrl-C stops the cluster.");
    wait_for_signal();
    println!("stopping the nodes");
    stop(&mut children);
    Ok(0)
}

fn bootstrap(info: &ClusterInfo) -> anyhow::Result<()> {
    for n in &info.nodes {
        wait_listening(&n.client, Duration::from_secs(15))
            .with_context(|| format!("node {} did not start; see {}", n.id, n.log.display()))?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let endpoints: Vec<String> = info.nodes.iter().map(|n| n.client.clone()).collect();
    rt.block_on(crate::bootstrap::init_cluster(&info.cluster, &endpoints, Duration::from_secs(30)))
}

fn wait_for_signal() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    });
}

/// Prints every node's view of its groups: a table, or JSON.
pub async fn print_status(client: &Client, json: bool) -> anyhow::Result<i32> {
    let statuses = client.status_all().await;
    let (cluster, views) = client.views().await?;
    let cluster = cluster.unwrap_or_else(|| client.cluster().clone());
    if json {
        let value = pactdb_http::status::status_json(&cluster, views.values(), &statuses);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    // PREPARED: transactions prepared and not yet resolved (in doubt), LOCKS:
    // the keys they hold, OLDEST: how long the oldest has waited, DECIDING:
    // decisions the group coordinated that not every participant has
    // acknowledged. The group lines show its leader's figures.
    println!("GROUP  MODE     EPOCH  LEADER  MEMBERS     PREPARED  LOCKS    OLDEST   DECIDING");
    for v in views.values() {
        let members = v.members.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(",");
        let (prepared, locks, oldest, deciding) = match leader_status(&statuses, v) {
            Some(r) => (
                r.prepared.to_string(),
                r.locks.to_string(),
                age(r.oldest_prepared_ms),
                r.unfinished_decisions.to_string(),
            ),
            None => ("?".into(), "?".into(), "?".into(), "?".into()),
        };
        println!(
            "{:<6} {:<8} {:<6} {:<7} {:<11} {:<9} {:<8} {:<8} {}",
            v.group,
            v.mode.to_string(),
            v.epoch,
            v.leader,
            members,
            prepared,
            locks,
            oldest,
            deciding
        );
    }
    println!();
    println!(
        "NODE  GROUP  ROLE        EPOCH  LAST      COMMIT    APPLIED   KEYS     DIGEST            PREPARED  LOCKS    OLDEST"
    );
    for (id, s) in &statuses {
        match s {
            Ok(s) => {
                for r in &s.replicas {
                    println!(
                        "{:<5} {:<6} {:<11} {:<6} {:<9} {:<9} {:<9} {:<8} {:016x}  {:<9} {:<8} {}",
                        id,
                        r.group,
                        r.role,
                        r.view.as_ref().map_or("-".to_string(), |v| v.epoch.to_string()),
                        r.last_index,
                        r.commit_index,
                        r.applied_index,
                        r.keys,
                        r.digest,
                        r.prepared,
                        r.locks,
                        age(r.oldest_prepared_ms)
                    );
                }
            }
            Err(e) => println!("{id:<5} DOWN   {e}"),
        }
    }
    // Snapshot streams under way: bytes the member holds of the total, as
    // the sending primary and the taking member each see it.
    let transfers: Vec<String> = statuses
        .iter()
        .filter_map(|(id, s)| Some((id, s.as_ref().ok()?)))
        .flat_map(|(id, s)| {
            s.replicas.iter().flat_map(move |r| {
                r.transfers.iter().map(move |t| {
                    let (from, to) = if t.sending { (*id, t.peer) } else { (t.peer, *id) };
                    let side = if t.sending { "sender" } else { "receiver" };
                    format!(
                        "{:<6} {:<5} {:<5} {:<9} {:<9} {:>13} / {:<13} {:>5.1}%",
                        r.group,
                        from,
                        to,
                        side,
                        t.index,
                        t.bytes,
                        t.total,
                        100.0 * t.bytes as f64 / t.total.max(1) as f64
                    )
                })
            })
        })
        .collect();
    if !transfers.is_empty() {
        println!();
        println!("SNAPSHOT TRANSFERS");
        println!("GROUP  FROM  TO    SEEN BY   INDEX     BYTES SENT    / TOTAL");
        for t in transfers {
            println!("{t}");
        }
    }
    // Leader hand-overs under way, as their primary sees them: entries the
    // new leader still lacks, entries not yet committed, writes held.
    let handovers: Vec<String> = statuses
        .iter()
        .filter_map(|(id, s)| Some((id, s.as_ref().ok()?)))
        .flat_map(|(id, s)| {
            s.replicas.iter().filter_map(move |r| {
                let h = r.handover.as_ref()?;
                Some(format!(
                    "{:<6} {:<5} {:<5} {:<15} {:<12} {:<6} {}",
                    r.group,
                    id,
                    h.to,
                    h.entries_left,
                    h.uncommitted,
                    h.held,
                    if h.asked { "asked to take over" } else { "catching up" }
                ))
            })
        })
        .collect();
    // Placement changes under way (`move-replica`, or a dropped member
    // rejoining), as their primary sees them: who catches up, how far
    // behind, and who leaves once every placed node is a member.
    let changes: Vec<String> = statuses
        .iter()
        .filter_map(|(id, s)| Some((id, s.as_ref().ok()?)))
        .flat_map(|(id, s)| {
            s.replicas.iter().filter_map(|r| r.placement_change.as_ref().map(|c| (r.group, c))).flat_map(
                move |(g, c)| {
                    let joining = c.joining.iter().map(move |j| {
                        let state = if !j.heard {
                            "not joined yet".to_string()
                        } else {
                            format!("{}{} bytes behind", if j.bytes_exact { "" } else { ">=" }, j.bytes_left)
                        };
                        format!("{:<6} {:<7} {:<5} {:<8} {:<15} {}", g, id, j.node, "joining", j.entries_left, state)
                    });
                    let leaving = c.leaving.iter().map(move |n| {
                        format!(
                            "{:<6} {:<7} {:<5} {:<8} {:<15} {}",
                            g, id, n, "leaving", "-", "dropped once every placed node is a member"
                        )
                    });
                    joining.chain(leaving).collect::<Vec<_>>()
                },
            )
        })
        .collect();
    if !changes.is_empty() {
        println!();
        println!("PLACEMENT CHANGES");
        println!("GROUP  LEADER  NODE  CHANGE   ENTRIES BEHIND  STATE");
        for c in changes {
            println!("{c}");
        }
    }
    if !handovers.is_empty() {
        println!();
        println!("LEADER HAND-OVERS");
        println!("GROUP  FROM  TO    ENTRIES BEHIND  UNCOMMITTED  HELD   STATE");
        for h in handovers {
            println!("{h}");
        }
    }
    // Last, so that scripts reading the group table from the top keep
    // working.
    let list = |ids: &mut dyn Iterator<Item = NodeId>| ids.map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    println!();
    println!(
        "CLUSTER MAP version {}: nodes {}; config store on {}{}",
        cluster.version,
        list(&mut cluster.nodes.keys().copied()),
        list(&mut cluster.config_members.iter().copied()),
        if cluster.config_settled { "" } else { " (changing members: rewriting every register through them)" }
    );
    Ok(0)
}

/// The status its leader reported for the group `view` names, if it answered.
fn leader_status<'a>(statuses: &'a [(NodeId, Result<NodeStatus, Error>)], view: &View) -> Option<&'a ReplicaStatus> {
    let (_, status) = statuses.iter().find(|(id, _)| *id == view.leader)?;
    status.as_ref().ok()?.replicas.iter().find(|r| r.group == view.group)
}

/// How long the oldest prepared transaction has waited, for people: `-`
/// when none is prepared.
fn age(ms: Option<u64>) -> String {
    match ms {
        None => "-".to_string(),
        Some(ms) if ms < 1_000 => format!("{ms}ms"),
        Some(ms) if ms < 60_000 => format!("{:.1}s", ms as f64 / 1_000.0),
        Some(ms) => format!("{}m{:02}s", ms / 60_000, ms / 1_000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_read_in_the_unit_that_fits() {
        assert_eq!(age(None), "-");
        assert_eq!(age(Some(340)), "340ms");
        assert_eq!(age(Some(12_345)), "12.3s");
        assert_eq!(age(Some(185_000)), "3m05s");
    }
}
