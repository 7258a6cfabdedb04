//! The cluster's status as JSON: what `pactdb status --json` prints and
//! `GET /v1/status` answers (and what the web view draws).
//!
//! It owns the JSON shape only; it must never change it in a way that
//! breaks scripts reading `status --json` (add fields, never rename).

use pactdb_core::types::{ClusterMap, NodeId, View};
use pactdb_core::wire::{NodeStatus, ReplicaStatus};
use serde_json::{json, Value};
use std::fmt::Display;

/// `{"cluster": .., "nodes": [..], "groups": [..]}` from every node's status
/// (or why it could not be had) and the groups' views.
pub fn status_json<'a, E: Display>(
    cluster: &ClusterMap,
    views: impl Iterator<Item = &'a View>,
    statuses: &[(NodeId, Result<NodeStatus, E>)],
) -> Value {
    let nodes: Vec<Value> = statuses
        .iter()
        .map(|(id, s)| match s {
            Ok(s) => {
                json!({"node": id, "up": true, "replicas": s.replicas.iter().map(replica_json).collect::<Vec<_>>()})
            }
            Err(e) => json!({"node": id, "up": false, "error": e.to_string()}),
        })
        .collect();
    // Per group, the transaction figures are its leader's (null if the
    // leader did not answer): it coordinates and decides.
    let groups: Vec<Value> = views
        .map(|v| {
            let lead = leader_status(statuses, v);
            json!({"group": v.group, "mode": v.mode.to_string(), "epoch": v.epoch, "leader": v.leader,
                "members": v.members, "min_members": v.min_members,
                "prepared": lead.map(|r| r.prepared), "locks": lead.map(|r| r.locks),
                "oldest_prepared_ms": lead.and_then(|r| r.oldest_prepared_ms),
                "unfinished_decisions": lead.map(|r| r.unfinished_decisions)})
        })
        .collect();
    let map = json!({"version": cluster.version, "nodes": cluster.nodes.keys().collect::<Vec<_>>(),
        "config_members": cluster.config_members, "config_settled": cluster.config_settled});
    json!({"cluster": map, "nodes": nodes, "groups": groups})
}

fn replica_json(r: &ReplicaStatus) -> Value {
    json!({
        "group": r.group, "role": r.role, "epoch": r.view.as_ref().map(|v| v.epoch),
        "leader": r.view.as_ref().map(|v| v.leader), "members": r.view.as_ref().map(|v| v.members.clone()),
        "last_index": r.last_index, "commit_index": r.commit_index, "applied_index": r.applied_index,
        "digest": format!("{:016x}", r.digest), "keys": r.keys,
        "prepared": r.prepared, "locks": r.locks, "oldest_prepared_ms": r.oldest_prepared_ms,
        "unfinished_decisions": r.unfinished_decisions,
        "sessions": r.sessions,
        "snapshot_transfers": r.transfers.iter().map(|t| json!({
            "peer": t.peer, "direction": if t.sending { "to" } else { "from" },
            "index": t.index, "bytes": t.bytes, "total": t.total,
        })).collect::<Vec<_>>(),
        "handover": r.handover.as_ref().map(|h| json!({
            "to": h.to, "entries_behind": h.entries_left, "uncommitted": h.uncommitted,
            "held_writes": h.held, "asked": h.asked,
        })),
        "placement_change": r.placement_change.as_ref().map(|c| json!({
            "joining": c.joining.iter().map(|j| json!({
                "node": j.node, "heard": j.heard, "entries_behind": j.entries_left,
                "bytes_behind": j.bytes_left, "bytes_exact": j.bytes_exact,
            })).collect::<Vec<_>>(),
            "leaving": c.leaving,
        })),
    })
}

/// The status its leader reported for the group `view` names, if it answered.
pub fn leader_status<'a, E>(statuses: &'a [(NodeId, Result<NodeStatus, E>)], view: &View) -> Option<&'a ReplicaStatus> {
    let (_, status) = statuses.iter().find(|(id, _)| *id == view.leader)?;
    status.as_ref().ok()?.replicas.iter().find(|r| r.group == view.group)
}
