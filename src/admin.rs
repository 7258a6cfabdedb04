//! `pactdb admin`: operator commands that change who leads or holds a
//! group while the cluster serves: `transfer-leader`, `move-replica`, and
//! `rebalance` (planned and run in `rebalance.rs`, step by step through the
//! first two).
//!
//! It only asks nodes and reads views; every decision (when to hand over,
//! whether the new view is installed) is the nodes' own, through the
//! config store. Every wait here is bounded.

use anyhow::{bail, Context};
use pactdb_client::{call, fetch_views};
use pactdb_core::types::{ClusterMap, GroupId, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply, TransferRefused};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one question to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a hand-over may take before the command gives up waiting (the
/// primary itself gives up after `HANDOVER_TIMEOUT_MS`).
const HANDOVER_WAIT: Duration = Duration::from_secs(5);
/// How often the new leader is asked for its view while waiting.
const POLL: Duration = Duration::from_millis(2);
/// Redirects followed when the node asked is no longer the leader.
const MAX_REDIRECTS: usize = 3;

#[derive(clap::Args, Debug)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum AdminCommand {
    /// Hand the leadership of a group to another member of its view, with no
    /// write lost: the primary holds new writes, brings the member fully up
    /// to date, and the member wins the next epoch and serves at once.
    /// Prints the new view and how long the hand-over took.
    TransferLeader {
        #[arg(long)]
        group: GroupId,
        /// The member to hand over to.
        #[arg(long)]
        to: NodeId,
    },
    /// Move a group's replica from one node to another while it serves:
    /// the new node catches up as a learner (log entries, or a streamed
    /// snapshot), is admitted to the view once it holds every committed
    /// entry, and then the old one is dropped (after handing the
    /// leadership over, if it leads). Prints each step as it happens, with
    /// the new node's catch-up progress, and how long each took.
    MoveReplica {
        #[arg(long)]
        group: GroupId,
        /// The node that holds the replica now.
        #[arg(long)]
        from: NodeId,
        /// The node to move it to (in the cluster, not holding the group).
        #[arg(long)]
        to: NodeId,
        /// Give up waiting after this many seconds (the move itself goes
        /// on: `pactdb status` shows it).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Add a node to the cluster map while the cluster serves. Start the
    /// node afterwards with `pactdb node ... --join ENDPOINTS` at the same
    /// addresses; it holds no replica until one is moved to it (`admin
    /// rebalance`). The config store takes it as a member if it has fewer
    /// than five, one member at a time.
    AddNode {
        /// The new node's id (unused in the cluster).
        #[arg(long)]
        id: NodeId,
        /// The address it listens on for other nodes (its --listen).
        #[arg(long)]
        peer: String,
        /// The address it listens on for clients (its --client-listen).
        #[arg(long)]
        client: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 30)]
        wait_secs: u64,
    },
    /// Remove a node from the cluster while it serves: its replicas move
    /// off first, one group at a time, to the least loaded nodes (as
    /// `move-replica` would); then the node leaves the map (and the config
    /// store, which takes another node in if there is one), and its process
    /// stops by itself. Refused if a group would have nowhere to go or the
    /// config store would lose its majority.
    RemoveNode {
        /// The node to remove.
        id: NodeId,
        /// Give up after this many seconds (moves already made stay made).
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
    /// Spread replicas and leaders evenly over every node of the cluster
    /// (after nodes joined, they hold nothing): plans replica moves from
    /// the most to the least loaded nodes, then leader hand-overs, prints
    /// the plan and runs it one step at a time, each as `move-replica` or
    /// `transfer-leader` would. Groups with a move under way are skipped.
    Rebalance {
        /// Print the plan and stop.
        #[arg(long)]
        dry_run: bool,
        /// Give up waiting for one move after this many seconds (it goes
        /// on: `pactdb status` shows it), and stop. A leader hand-over
        /// waits at most 5 s, as in `transfer-leader`.
        #[arg(long, default_value_t = 600)]
        wait_secs: u64,
    },
}

pub async fn run(args: AdminArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    match args.command {
        AdminCommand::TransferLeader { group, to } => transfer_leader(&endpoints, group, to).await,
        AdminCommand::MoveReplica { group, from, to, wait_secs } => {
            move_replica(&endpoints, group, from, to, Duration::from_secs(wait_secs)).await
        }
        AdminCommand::AddNode { id, peer, client, wait_secs } => {
            crate::membership::add_node(&endpoints, id, peer, client, Duration::from_secs(wait_secs)).await
        }
        AdminCommand::RemoveNode { id, wait_secs } => {
            crate::membership::remove_node(&endpoints, id, Duration::from_secs(wait_secs)).await
        }
        AdminCommand::Rebalance { dry_run, wait_secs } => {
            crate::rebalance::run(&endpoints, dry_run, Duration::from_secs(wait_secs)).await
        }
    }
}

fn client_addr(cluster: &ClusterMap, node: NodeId) -> anyhow::Result<String> {
    match cluster.nodes.get(&node) {
        Some(a) => Ok(a.client.clone()),
        None => bail!("node {node} is not in the cluster map"),
    }
}

pub(crate) async fn transfer_leader(endpoints: &[String], group: GroupId, to: NodeId) -> anyhow::Result<i32> {
    let (cluster, views) = fetch_views(endpoints).await.context("reading the cluster's views")?;
    let Some(mut view) = views.into_iter().find(|v| v.group == group) else {
        bail!("group {group} has no view (is it in the cluster map?)");
    };
    if view.leader == to {
        println!("group {group}: node {to} already leads epoch {}", view.epoch);
        return Ok(0);
    }
    let started = Instant::now();
    let mut from = None;
    for _ in 0..=MAX_REDIRECTS {
        let addr = client_addr(&cluster, view.leader)?;
        match call(&addr, &ClientMsg::TransferLeader { group, to }, CALL_TIMEOUT).await? {
            ClientReply::TransferStarted(Ok(v)) => {
                from = Some(v);
                break;
            }
            ClientReply::TransferStarted(Err(TransferRefused { reason, view: Some(v) })) if v.leader != view.leader => {
                eprintln!("{reason}; asking node {}", v.leader);
                view = v;
            }
            ClientReply::TransferStarted(Err(TransferRefused { reason, .. })) => bail!("{reason}"),
            other => bail!("unexpected reply from node {}: {other:?}", view.leader),
        }
    }
    let Some(from) = from else { bail!("the leader of group {group} kept changing; try again") };
    let addr = client_addr(&cluster, to)?;
    let deadline = started + HANDOVER_WAIT;
    loop {
        if let Ok(ClientReply::Views { views, .. }) = call(&addr, &ClientMsg::GetViews, CALL_TIMEOUT).await {
            if let Some(v) = views.into_iter().find(|v: &View| v.group == group && v.epoch > from.epoch) {
                let ms = started.elapsed().as_secs_f64() * 1_000.0;
                if v.leader != to {
                    eprintln!(
                        "group {group}: epoch {} is led by node {}, not node {to} (another view change won); took {ms:.1} ms",
                        v.epoch, v.leader
                    );
                    return Ok(1);
                }
                println!(
                    "group {group}: node {to} leads epoch {} (members {:?}), handed over by node {} in {ms:.1} ms",
                    v.epoch, v.members, from.leader
                );
                return Ok(0);
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "node {to} did not take over group {group} within {} s (the primary gives up and serves again)",
                HANDOVER_WAIT.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How often a move's progress is read.
const MOVE_POLL: Duration = Duration::from_millis(50);
/// How often the catch-up progress is printed.
const MOVE_REPORT: Duration = Duration::from_secs(1);
/// A move whose placement no view shows after this long is asked again
/// (the leader's proposal lost to another view change; asking again is
/// harmless: a made move is answered with the view).
const MOVE_REASK: Duration = Duration::from_secs(2);

/// The newest view of every group that any node of the map holds, and why
/// each node that did not answer did not (`admin move-replica` polls it;
/// `rebalance` and `remove-node` refuse to plan when nodes are silent).
pub(crate) async fn newest_views(cluster: &ClusterMap) -> (BTreeMap<GroupId, View>, BTreeMap<NodeId, String>) {
    let mut newest: BTreeMap<GroupId, View> = BTreeMap::new();
    let mut silent = BTreeMap::new();
    for (&id, a) in &cluster.nodes {
        match call(&a.client, &ClientMsg::GetViews, CALL_TIMEOUT).await {
            Ok(ClientReply::Views { views, .. }) => {
                for v in views {
                    if newest.get(&v.group).is_none_or(|n| n.epoch < v.epoch) {
                        newest.insert(v.group, v);
                    }
                }
            }
            Ok(other) => {
                silent.insert(id, format!("node {id} answered {other:?}"));
            }
            Err(e) => {
                silent.insert(id, format!("node {id}: {e}"));
            }
        }
    }
    (newest, silent)
}

/// The newest view of `group` any node of the cluster holds.
async fn newest_view(cluster: &ClusterMap, group: GroupId) -> Option<View> {
    newest_views(cluster).await.0.remove(&group)
}

/// Asks the group's leader to start the move, following redirects.
async fn ask_move(cluster: &ClusterMap, mut view: View, from: NodeId, to: NodeId) -> anyhow::Result<View> {
    let group = view.group;
    for _ in 0..=MAX_REDIRECTS {
        let addr = client_addr(cluster, view.leader)?;
        match call(&addr, &ClientMsg::MoveReplica { group, from, to }, CALL_TIMEOUT).await? {
            ClientReply::MoveStarted(Ok(v)) => return Ok(v),
            ClientReply::MoveStarted(Err(TransferRefused { reason, view: Some(v) })) if v.leader != view.leader => {
                eprintln!("{reason}; asking node {}", v.leader);
                view = v;
            }
            ClientReply::MoveStarted(Err(TransferRefused { reason, .. })) => bail!("{reason}"),
            other => bail!("unexpected reply from node {}: {other:?}", view.leader),
        }
    }
    bail!("the leader of group {group} kept changing; try again")
}

/// The catch-up progress of `to` as the group's leader reports it.
async fn catch_up_line(cluster: &ClusterMap, view: &View, to: NodeId) -> Option<String> {
    let addr = cluster.nodes.get(&view.leader)?.client.clone();
    let ClientReply::Status(s) = call(&addr, &ClientMsg::GetStatus, CALL_TIMEOUT).await.ok()? else { return None };
    let r = s.replicas.into_iter().find(|r| r.group == view.group)?;
    let c = r.placement_change?.joining.into_iter().find(|c| c.node == to)?;
    Some(if c.heard {
        format!(
            "  node {to} catching up: {} entries, {}{} bytes behind",
            c.entries_left,
            if c.bytes_exact { "" } else { "at least " },
            c.bytes_left
        )
    } else {
        format!("  node {to} has not joined yet ({} entries to catch up)", c.entries_left)
    })
}

pub(crate) async fn move_replica(
    endpoints: &[String],
    group: GroupId,
    from: NodeId,
    to: NodeId,
    wait: Duration,
) -> anyhow::Result<i32> {
    let (cluster, _) = fetch_views(endpoints).await.context("reading the cluster's views")?;
    if !cluster.nodes.contains_key(&to) {
        bail!("node {to} is not in the cluster map (nodes {:?})", cluster.nodes.keys().collect::<Vec<_>>());
    }
    let Some(view) = newest_view(&cluster, group).await else {
        bail!("group {group} has no view (is it in the cluster map?)");
    };
    let done = |v: &View| v.is_member(to) && !v.is_member(from) && !v.is_placed(from);
    if done(&view) {
        println!("group {group}: already on {:?} (epoch {}), not on node {from}", view.members, view.epoch);
        return Ok(0);
    }
    let started = Instant::now();
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1_000.0;
    let proposed = ask_move(&cluster, view, from, to).await?;
    println!("group {group}: moving from node {from} to node {to} (placement {:?})", proposed.placement);
    let (mut placed_at, mut admitted_at) = (None, None);
    let (mut asked_at, mut reported_at) = (Instant::now(), Instant::now());
    loop {
        if let Some(v) = newest_view(&cluster, group).await {
            let placed = v.is_placed(to) && !v.is_placed(from);
            if placed && placed_at.is_none() {
                placed_at = Some(ms(started));
                println!("  placement changed in epoch {} after {:.1} ms", v.epoch, ms(started));
            }
            if !placed && Instant::now() >= asked_at + MOVE_REASK {
                asked_at = Instant::now();
                ask_move(&cluster, v.clone(), from, to).await?;
            }
            if placed && v.is_member(to) && admitted_at.is_none() {
                admitted_at = Some(ms(started));
                println!("  node {to} admitted in epoch {} after {:.1} ms", v.epoch, ms(started));
            }
            if placed && admitted_at.is_none() && Instant::now() >= reported_at + MOVE_REPORT {
                reported_at = Instant::now();
                if let Some(line) = catch_up_line(&cluster, &v, to).await {
                    println!("{line}");
                }
            }
            if done(&v) {
                println!(
                    "group {group}: moved from node {from} to node {to} in {:.1} ms; epoch {} led by node {} \
                     (members {:?})",
                    ms(started),
                    v.epoch,
                    v.leader,
                    v.members
                );
                return Ok(0);
            }
        }
        if started.elapsed() >= wait {
            bail!(
                "the move of group {group} did not finish within {} s (it goes on; `pactdb status` shows it)",
                wait.as_secs()
            );
        }
        tokio::time::sleep(MOVE_POLL).await;
    }
}
