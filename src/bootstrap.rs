//! `pactdb bootstrap`: initialises a cluster whose nodes were started by
//! hand with `pactdb node`, and the one routine that stores a cluster map
//! (`demo` uses it too).
//!
//! It builds the map only from what the nodes say about themselves (their
//! id and the `--peers` they were started with) and refuses when they
//! disagree: the config store's acceptors are the map's first nodes, so a
//! map built from one node's flags while another has other flags could let
//! two majorities miss each other. It never changes a map once stored.

use crate::demo::{layout, LayoutArgs};
use anyhow::{bail, Context};
use pactdb_client::{call, Client};
use pactdb_core::types::{ClusterMap, NodeAddrs, NodeId};
use pactdb_core::wire::{ClientMsg, ClientReply};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one question to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the whole bootstrap (map, views, a serving primary per group)
/// may take.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub layout: LayoutArgs,
}

pub async fn run(args: BootstrapArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    if endpoints.is_empty() {
        eprintln!("error: `pactdb bootstrap` needs --endpoints: the client address of every node");
        return Ok(crate::cli::EXIT_USAGE);
    }
    let nodes = identify(&endpoints).await?;
    if args.layout.replicas == 0 || args.layout.replicas > nodes.len() {
        bail!("--replicas must be 1 to the number of nodes ({})", nodes.len());
    }
    let map = layout(&nodes, &args.layout);
    map.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Already bootstrapped? The same map again is a no-op; another is refused.
    for ep in &endpoints {
        if let Ok(ClientReply::Views { cluster: Some(stored), .. }) = call(ep, &ClientMsg::GetViews, CALL_TIMEOUT).await
        {
            if stored == map {
                println!("already bootstrapped with this map; nothing to do");
                return Ok(0);
            }
            bail!(
                "the cluster is already bootstrapped with a different map ({} nodes, {} groups); it is never changed",
                stored.nodes.len(),
                stored.groups.len()
            );
        }
    }
    init_cluster(&map, &endpoints, BOOTSTRAP_TIMEOUT).await?;
    println!(
        "bootstrapped: {} nodes (config store on {:?}), {} groups",
        map.nodes.len(),
        map.config_members(),
        map.groups.len()
    );
    for g in &map.groups {
        println!("  group {} {} on nodes {:?}", g.id, g.mode, g.placement);
    }
    Ok(0)
}

/// Asks every endpoint who it is. Every node must be given, once, and all
/// must have been started with the same peer list.
async fn identify(endpoints: &[String]) -> anyhow::Result<BTreeMap<NodeId, NodeAddrs>> {
    let mut nodes: BTreeMap<NodeId, NodeAddrs> = BTreeMap::new();
    let mut first: Option<(NodeId, BTreeMap<NodeId, String>)> = None;
    for ep in endpoints {
        let reply = call(ep, &ClientMsg::GetNodeInfo, CALL_TIMEOUT)
            .await
            .with_context(|| format!("asking {ep} who it is (is `pactdb node` running there?)"))?;
        let ClientReply::NodeInfo { node, peers } = reply else {
            bail!("{ep} answered {reply:?} when asked who it is");
        };
        match &first {
            None => first = Some((node, peers.clone())),
            Some((n, p)) if *p != peers => bail!(
                "node {node} ({ep}) was started with --peers {}, but node {n} with --peers {}; \
                 start every node with the same list",
                list(&peers),
                list(p)
            ),
            Some(_) => {}
        }
        let peer =
            peers.get(&node).cloned().with_context(|| format!("node {node} ({ep}) is not in its own --peers"))?;
        if nodes.insert(node, NodeAddrs { peer, client: ep.clone() }).is_some() {
            bail!("node {node} is listed twice in --endpoints");
        }
    }
    let (_, peers) = first.context("no endpoints given")?;
    let missing: Vec<String> =
        peers.iter().filter(|(id, _)| !nodes.contains_key(id)).map(|(id, a)| format!("{id}={a}")).collect();
    if !missing.is_empty() {
        bail!("--endpoints must name every node's client address; missing: {}", missing.join(", "));
    }
    Ok(nodes)
}

fn list(peers: &BTreeMap<NodeId, String>) -> String {
    peers.iter().map(|(id, a)| format!("{id}={a}")).collect::<Vec<_>>().join(",")
}

/// Stores `cluster` through whichever endpoint answers, then waits until
/// every group has a primary that serves reads.
pub async fn init_cluster(cluster: &ClusterMap, endpoints: &[String], timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    'boot: while Instant::now() < deadline {
        for ep in endpoints {
            match call(ep, &ClientMsg::Bootstrap { cluster: cluster.clone() }, CALL_TIMEOUT).await {
                Ok(ClientReply::Bootstrapped(Ok(()))) => break 'boot,
                Ok(ClientReply::Bootstrapped(Err(e))) if e.contains("different map") || e.contains("names nodes") => {
                    bail!("{e}")
                }
                Ok(other) => last = format!("{other:?}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if Instant::now() >= deadline {
        bail!("bootstrap did not complete: {last}");
    }
    let client = Client::connect(endpoints).await?;
    for g in &cluster.groups {
        let key = (0u64..)
            .map(|i| format!("probe-{i}"))
            .find(|k| cluster.group_of(k.as_bytes()) == g.id)
            .expect("some key maps to every group");
        let mut ok = false;
        while Instant::now() < deadline && !ok {
            ok = client.get(key.clone()).await.is_ok();
        }
        if !ok {
            bail!("group {} has no serving primary", g.id);
        }
    }
    Ok(())
}
