//! The vocabulary shared by every protocol: identifiers, views and the
//! cluster map. This module owns no behaviour beyond small pure helpers.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub type NodeId = u64;
pub type GroupId = u32;
pub type Epoch = u64;
/// Position in a group's replicated log; index 0 is the empty log.
pub type Index = u64;
/// Milliseconds of a node's local monotonic clock, passed into `step`.
pub type Millis = u64;

/// A front end's unique request identity. Retries reuse it, which is what
/// makes a retried write run at most once.
///
/// `session` is where the client's session in the request's group starts:
/// an index the group had applied before the front end sent anything in
/// that session, so every request of the session is applied above it. The
/// session table uses it to tell a request it forgot (its session started
/// before the newest session it evicted) from a new one (see
/// `state::sessions`). `NO_SESSION` asks the group to name a start first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId {
    pub client: u64,
    pub session: Index,
    pub seq: u64,
}

impl RequestId {
    /// The id of a primary's no-op entry (see `Entry::noop`). Client id 0 is
    /// reserved for it: front ends never pick it and primaries refuse it.
    pub const NOOP: RequestId = RequestId { client: 0, session: 0, seq: 0 };
    /// The session of a request sent before its group named a start: it is
    /// never run, only answered with `ClientError::OpenSession`.
    pub const NO_SESSION: Index = Index::MAX;
}

/// How a group replicates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Primary-backup: the primary executes and ships effects.
    Passive,
    /// Total-order multicast: the sequencer orders, every member executes.
    Active,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Passive => write!(f, "passive"),
            Mode::Active => write!(f, "active"),
        }
    }
}

/// A group's view, agreed in the config store. Every change goes from epoch
/// `e` to `e + 1` through a compare-and-set, so at most one view exists per
/// epoch and therefore at most one leader per epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub group: GroupId,
    pub epoch: Epoch,
    pub mode: Mode,
    pub leader: NodeId,
    /// Sorted, and always contains `leader`.
    pub members: Vec<NodeId>,
    /// Writes are refused while fewer members than this are in the view.
    pub min_members: usize,
}

impl View {
    pub fn is_member(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }

    /// The next view: same group and mode, epoch plus one.
    pub fn next(&self, leader: NodeId, mut members: Vec<NodeId>) -> View {
        members.sort_unstable();
        members.dedup();
        debug_assert!(members.contains(&leader));
        View {
            group: self.group,
            epoch: self.epoch + 1,
            mode: self.mode,
            leader,
            members,
            min_members: self.min_members,
        }
    }
}

/// Where a node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddrs {
    pub peer: String,
    pub client: String,
}

/// A group's static description: the nodes that may ever hold it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSpec {
    pub id: GroupId,
    pub mode: Mode,
    pub placement: Vec<NodeId>,
    pub min_members: usize,
    /// Active groups only: the front end returns an answer only when f+1 of
    /// the 2f+1 members gave it, which masks a member whose state went wrong.
    #[serde(default)]
    pub voting: bool,
}

/// The cluster map, stored in the config store's `cluster` register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub nodes: BTreeMap<NodeId, NodeAddrs>,
    /// Indexed by position: keys hash onto `groups[hash % len]`.
    pub groups: Vec<GroupSpec>,
}

impl ClusterMap {
    /// The group a key belongs to. The hash is fixed (xxh3 with seed 0) so
    /// every front end and every version of pactdb routes a key the same way.
    pub fn group_of(&self, key: &[u8]) -> GroupId {
        assert!(!self.groups.is_empty(), "a cluster map has at least one group");
        let h = xxhash_rust::xxh3::xxh3_64(key);
        self.groups[(h % self.groups.len() as u64) as usize].id
    }

    /// The initial view of every group: epoch 1, leader the first placed node.
    pub fn initial_views(&self) -> Vec<View> {
        self.groups
            .iter()
            .map(|g| {
                let mut members = g.placement.clone();
                let leader = members[0];
                members.sort_unstable();
                View { group: g.id, epoch: 1, mode: g.mode, leader, members, min_members: g.min_members }
            })
            .collect()
    }

    /// Checks the map is usable: groups exist, placements name known nodes.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() || self.nodes.len() > crate::limits::MAX_NODES {
            return Err(format!("a cluster needs 1 to {} nodes", crate::limits::MAX_NODES));
        }
        if self.groups.is_empty() || self.groups.len() > crate::limits::MAX_GROUPS {
            return Err(format!("a cluster needs 1 to {} groups", crate::limits::MAX_GROUPS));
        }
        for g in &self.groups {
            if g.placement.is_empty() {
                return Err(format!("group {} has no nodes", g.id));
            }
            for n in &g.placement {
                if !self.nodes.contains_key(n) {
                    return Err(format!("group {} is placed on unknown node {n}", g.id));
                }
            }
            if g.min_members == 0 || g.min_members > g.placement.len() {
                return Err(format!("group {}: min_members must be 1..={}", g.id, g.placement.len()));
            }
        }
        Ok(())
    }
}
