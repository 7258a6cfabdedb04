//! `pactdb admin add-node` and `pactdb admin remove-node`: the cluster's
//! node list changing while it serves.
//!
//! It owns the operator's side of a membership change: the checks that give
//! a clear refusal before anything moves, moving a leaving node's replicas
//! off one group at a time (`admin::move_replica`), and asking a node to
//! change the map. It never changes the map itself: the config store's
//! compare-and-set decides (`Change::AddNode`, `Change::RemoveNode`), and
//! the nodes change the config store's own members one at a time. Every
//! wait is bounded.

use anyhow::{bail, Context};
use pactdb_client::{call, fetch_views};
use pactdb_core::types::{ClusterMap, GroupId, NodeAddrs, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long one question to a node may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long to wait between asking again after a refusal that passes by
/// itself (a view cache that has not seen a move yet; the config store
/// still settling its last change of members).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Asks the endpoints, one after the other, to make `msg`'s change; the
/// first answer decides. A refusal that may pass (`transient`) is asked
/// again until `wait` is over.
async fn change_map(endpoints: &[String], msg: ClientMsg, wait: Duration) -> anyhow::Result<ClusterMap> {
    let started = Instant::now();
    let mut last = String::from("no endpoints given");
    loop {
        for ep in endpoints {
            match call(ep, &msg, CALL_TIMEOUT).await {
                Ok(ClientReply::ClusterChanged(Ok(map))) => return Ok(map),
                Ok(ClientReply::ClusterChanged(Err(reason))) if !transient(&reason) => bail!("{reason}"),
                Ok(ClientReply::ClusterChanged(Err(reason))) => {
                    last = reason;
                    break;
                }
                Ok(other) => last = format!("{ep} answered {other:?}"),
                Err(e) => last = format!("{ep}: {e}"),
            }
        }
        if started.elapsed() >= wait {
            bail!("the cluster map was not changed within {} s: {last}", wait.as_secs());
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Whether a node's refusal may pass by itself.
fn transient(reason: &str) -> bool {
    ["try again", "still holds", "did not answer", "not know the cluster map"].iter().any(|s| reason.contains(s))
}

fn list(ids: impl IntoIterator<Item = NodeId>) -> String {
    ids.into_iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

fn config_line(map: &ClusterMap) -> String {
    format!(
        "config store on {}{}",
        list(map.config_members.iter().copied()),
        if map.config_settled { "" } else { " (taking in its new member set)" }
    )
}

pub async fn add_node(
    endpoints: &[String],
    id: NodeId,
    peer: String,
    client: String,
    wait: Duration,
) -> anyhow::Result<i32> {
    for (what, addr) in [("--peer", &peer), ("--client", &client)] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            bail!("{what} {addr} is not an IP address and port (like 127.0.0.1:7004)");
        }
    }
    let started = Instant::now();
    let addrs = NodeAddrs { peer: peer.clone(), client: client.clone() };
    let map = change_map(endpoints, ClientMsg::AddNode { id, addrs }, wait).await?;
    println!(
        "node {id} added in {:.1} ms: map version {}, nodes {}; {}",
        started.elapsed().as_secs_f64() * 1_000.0,
        map.version,
        list(map.nodes.keys().copied()),
        config_line(&map)
    );
    let join = map.nodes.values().map(|a| a.client.clone()).filter(|c| *c != client).collect::<Vec<_>>().join(",");
    println!("start it with:");
    println!(
        "  pactdb node --id {id} --listen {peer} --client-listen {client} --data-dir DIR --join {join} --certs-dir CERTS"
    );
    println!("(CERTS: its certificate, `pactdb certs issue node --dir CA_DIR --id {id} --out CERTS`; or --insecure)");
    println!("it holds no replica until one is moved to it (`pactdb admin rebalance` or `admin move-replica`)");
    Ok(0)
}

/// Where each of `leaving`'s replicas goes: to the node holding the fewest
/// replicas that does not hold that group (ties: lowest id). Refuses when a
/// group has nowhere to go: it would fall below its placement size, which
/// `remove-node` never shrinks (and never below `min_members`).
pub fn plan_moves(
    cluster: &ClusterMap,
    views: &BTreeMap<GroupId, View>,
    leaving: NodeId,
) -> Result<Vec<(GroupId, NodeId)>, String> {
    let mut load: BTreeMap<NodeId, usize> = cluster.nodes.keys().filter(|n| **n != leaving).map(|&n| (n, 0)).collect();
    for v in views.values() {
        for n in &v.placement {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    let mut moves = Vec::new();
    for v in views.values().filter(|v| v.is_placed(leaving) || v.is_member(leaving)) {
        if !v.is_placed(leaving) {
            // Already moved off; the group's primary drops it from the
            // members by itself.
            continue;
        }
        let target = load.iter().filter(|(n, _)| !v.is_placed(**n)).min_by_key(|(n, l)| (**l, **n)).map(|(n, _)| *n);
        match target {
            Some(to) => {
                *load.get_mut(&to).expect("listed") += 1;
                moves.push((v.group, to));
            }
            None => {
                return Err(format!(
                    "group {} is on nodes {} and every other node already holds it: removing node {leaving} would \
                     leave it {} replicas (min_members {}); add a node first",
                    v.group,
                    list(v.placement.iter().copied()),
                    v.placement.len() - 1,
                    v.min_members
                ))
            }
        }
    }
    Ok(moves)
}

pub async fn remove_node(endpoints: &[String], id: NodeId, wait: Duration) -> anyhow::Result<i32> {
    let started = Instant::now();
    let (cluster, _) = fetch_views(endpoints).await.context("reading the cluster map")?;
    if !cluster.nodes.contains_key(&id) {
        println!("node {id} is not in the cluster (nodes {}): nothing to do", list(cluster.nodes.keys().copied()));
        return Ok(0);
    }
    if cluster.nodes.len() == 1 {
        bail!("node {id} is the cluster's last node");
    }
    let (views, silent) = crate::admin::newest_views(&cluster).await;
    // The config store must keep a majority of its members up without this
    // node, or the removal (and everything after it) could not be agreed.
    if cluster.config_members.contains(&id) {
        let remaining: Vec<NodeId> = cluster.config_members.iter().copied().filter(|m| *m != id).collect();
        let up = remaining.iter().filter(|m| !silent.contains_key(m)).count();
        if remaining.is_empty() || up < remaining.len() / 2 + 1 {
            bail!(
                "node {id} is a config store member; without it the store would have members {} of which only {up} \
                 answer, not a majority: bring the others back first",
                list(remaining.iter().copied())
            );
        }
    }
    let moves = plan_moves(&cluster, &views, id).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(down) = moves.iter().map(|(_, to)| *to).find(|to| silent.contains_key(to)) {
        bail!("node {down} does not answer, and a replica of node {id} would move to it: bring it back first");
    }
    println!(
        "removing node {id}: {} replica(s) to move off ({})",
        moves.len(),
        moves.iter().map(|(g, to)| format!("group {g} to node {to}")).collect::<Vec<_>>().join(", ")
    );
    for (group, to) in &moves {
        let step = Instant::now();
        let left = wait.saturating_sub(started.elapsed());
        let code = crate::admin::move_replica(endpoints, *group, id, *to, left).await?;
        if code != 0 {
            bail!("moving group {group} off node {id} failed; node {id} stays in the cluster");
        }
        println!("  group {group} moved to node {to} in {:.1} ms", step.elapsed().as_secs_f64() * 1_000.0);
    }
    let step = Instant::now();
    let left = wait.saturating_sub(started.elapsed()).max(Duration::from_secs(10));
    let map = change_map(endpoints, ClientMsg::RemoveNode { id }, left).await?;
    println!(
        "node {id} removed from the map in {:.1} ms: map version {}, nodes {}; {}",
        step.elapsed().as_secs_f64() * 1_000.0,
        map.version,
        list(map.nodes.keys().copied()),
        config_line(&map)
    );
    println!("done in {:.1} s; node {id} stops by itself once it learns the new map", started.elapsed().as_secs_f64());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::types::Mode;

    fn map(nodes: &[NodeId]) -> ClusterMap {
        let addrs = |n: NodeId| NodeAddrs { peer: format!("127.0.0.1:{}", 7000 + n), client: format!("x:{n}") };
        ClusterMap::new(nodes.iter().map(|&n| (n, addrs(n))).collect(), vec![])
    }

    fn view(group: GroupId, placement: &[NodeId]) -> View {
        View {
            group,
            epoch: 3,
            mode: Mode::Passive,
            leader: placement[0],
            members: placement.to_vec(),
            min_members: 2,
            placement: placement.to_vec(),
        }
    }

    #[test]
    fn a_leaving_nodes_replicas_go_to_the_least_loaded_nodes_not_holding_the_group() {
        let views =
            [view(0, &[1, 2, 3]), view(1, &[1, 3, 4]), view(2, &[2, 3, 4])].into_iter().map(|v| (v.group, v)).collect();
        // Loads without node 1: 2 -> 2, 3 -> 3, 4 -> 2, 5 -> 0. Group 0 (on
        // 1, 2, 3) goes to 5 (load 0, then 1); group 1 (on 1, 3, 4) may go to
        // 2 (load 2) or 5 (load 1): 5 again.
        assert_eq!(plan_moves(&map(&[1, 2, 3, 4, 5]), &views, 1), Ok(vec![(0, 5), (1, 5)]));
        // With node 5 holding two groups already (loads 2 -> 3, 3 -> 5,
        // 4 -> 3, 5 -> 2), group 0 still goes to 5, and group 1 then ties
        // between 2 and 5 (3 each): the lower id, 2.
        let mut busy = views.clone();
        busy.insert(7, view(7, &[5, 3, 4]));
        busy.insert(8, view(8, &[5, 2, 3]));
        assert_eq!(plan_moves(&map(&[1, 2, 3, 4, 5]), &busy, 1), Ok(vec![(0, 5), (1, 2)]));
    }

    #[test]
    fn a_group_with_nowhere_to_go_is_refused() {
        let views = [view(0, &[1, 2, 3])].into_iter().map(|v| (v.group, v)).collect();
        let err = plan_moves(&map(&[1, 2, 3]), &views, 1).unwrap_err();
        assert!(err.contains("group 0") && err.contains("add a node first"), "{err}");
    }

    #[test]
    fn refusals_that_pass_by_themselves_are_asked_again() {
        assert!(transient("node 1 still holds groups [0]: move its replicas off first"));
        assert!(transient(
            "the config store is still taking in its last change of members; try again in a few seconds"
        ));
        assert!(!transient("node 4 is already in the cluster at peer a and client b"));
    }
}
