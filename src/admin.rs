//! `pactdb admin`: operator commands that change who leads or holds a
//! group while the cluster serves. Today: `transfer-leader`.
//!
//! It only asks nodes and reads views; every decision (when to hand over,
//! whether the new view is installed) is the nodes' own, through the
//! config store. Every wait here is bounded.

use anyhow::{bail, Context};
use pactdb_client::{call, fetch_views};
use pactdb_core::types::{ClusterMap, GroupId, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply, TransferRefused};
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
}

pub async fn run(args: AdminArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    match args.command {
        AdminCommand::TransferLeader { group, to } => transfer_leader(&endpoints, group, to).await,
    }
}

fn client_addr(cluster: &ClusterMap, node: NodeId) -> anyhow::Result<String> {
    match cluster.nodes.get(&node) {
        Some(a) => Ok(a.client.clone()),
        None => bail!("node {node} is not in the cluster map"),
    }
}

async fn transfer_leader(endpoints: &[String], group: GroupId, to: NodeId) -> anyhow::Result<i32> {
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
