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
    /// Sorted: the nodes that should hold the group. The primary admits a
    /// placed node once it holds every committed entry, and drops a member
    /// that is not placed once every placed node is a member (handing the
    /// leadership over first if it is that member). `pactdb admin
    /// move-replica` changes it, by a view compare-and-set like any other
    /// view change, so every primary that follows sees the same target.
    pub placement: Vec<NodeId>,
}

impl View {
    pub fn is_member(&self, node: NodeId) -> bool {
        self.members.contains(&node)
    }

    /// Whether this could be a view the config store holds: every view
    /// there is an initial view of a valid map or `next` of one, so its
    /// members are sorted, distinct, bounded and include its leader. A view
    /// from a peer that is not is dropped with its message: adopting one
    /// (a leader outside its members) tripped `next`'s assertion later
    /// (found by the fuzzer).
    pub fn is_well_formed(&self) -> bool {
        self.epoch >= 1
            && !self.members.is_empty()
            && self.members.len() <= crate::limits::MAX_NODES
            && self.members.windows(2).all(|w| w[0] < w[1])
            && self.members.contains(&self.leader)
            && (1..=crate::limits::MAX_NODES).contains(&self.min_members)
            && !self.placement.is_empty()
            && self.placement.len() <= crate::limits::MAX_NODES
            && self.placement.windows(2).all(|w| w[0] < w[1])
    }

    /// Whether `node` should hold the group (see `placement`).
    pub fn is_placed(&self, node: NodeId) -> bool {
        self.placement.contains(&node)
    }

    /// Members that are not placed: a placement change (`move-replica`)
    /// is under way until the primary drops them.
    pub fn leaving(&self) -> Vec<NodeId> {
        self.members.iter().copied().filter(|m| !self.is_placed(*m)).collect()
    }

    /// Placed nodes that are not members: catching up to be admitted (a
    /// node a move brings in, or a member that was dropped and rejoins).
    pub fn joining(&self) -> Vec<NodeId> {
        self.placement.iter().copied().filter(|n| !self.is_member(*n)).collect()
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
            placement: self.placement.clone(),
        }
    }

    /// The next view with `placement` instead (same leader and members).
    pub fn next_placement(&self, mut placement: Vec<NodeId>) -> View {
        placement.sort_unstable();
        placement.dedup();
        View { placement, ..self.next(self.leader, self.members.clone()) }
    }
}

/// Where a node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddrs {
    pub peer: String,
    pub client: String,
}

/// A group's description at bootstrap: `placement` is where its first view
/// puts it; from then on the view's own `placement` says where it lives.
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

/// The config store's acceptors among `nodes`: the first
/// `MAX_CONFIG_MEMBERS` by id.
pub fn config_members_of(nodes: impl IntoIterator<Item = NodeId>) -> Vec<NodeId> {
    let mut nodes: Vec<NodeId> = nodes.into_iter().collect();
    nodes.sort_unstable();
    nodes.dedup();
    nodes.truncate(crate::limits::MAX_CONFIG_MEMBERS);
    nodes
}

/// The cluster map, stored in the config store's `cluster` register.
///
/// It changes while the cluster serves (`Change::AddNode`,
/// `Change::RemoveNode`, ...), each change one version on. The config
/// store's acceptors are `config_members`, which a change alters by at most
/// one node, and only once the previous alteration has settled (see
/// `config.rs`: every register rewritten through the new members).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMap {
    pub nodes: BTreeMap<NodeId, NodeAddrs>,
    /// Indexed by position: keys hash onto `groups[hash % len]`.
    pub groups: Vec<GroupSpec>,
    /// 1 at bootstrap, plus one for every change.
    pub version: u64,
    /// The config store's acceptors (at most `MAX_CONFIG_MEMBERS`).
    pub config_members: Vec<NodeId>,
    /// False from a change of `config_members` until every register was
    /// rewritten through the new members; no other change of the members
    /// is made meanwhile.
    pub config_settled: bool,
}

impl ClusterMap {
    /// A new cluster's map: version 1, the config store on the first
    /// `MAX_CONFIG_MEMBERS` nodes by id.
    pub fn new(nodes: BTreeMap<NodeId, NodeAddrs>, groups: Vec<GroupSpec>) -> ClusterMap {
        let config_members = config_members_of(nodes.keys().copied());
        ClusterMap { nodes, groups, version: 1, config_members, config_settled: true }
    }

    /// Whether `other` is this map apart from its version and the config
    /// store's settling: what a repeated bootstrap compares.
    pub fn same_layout(&self, other: &ClusterMap) -> bool {
        self.nodes == other.nodes && self.groups == other.groups
    }

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
                let placement = members.clone();
                View { group: g.id, epoch: 1, mode: g.mode, leader, members, min_members: g.min_members, placement }
            })
            .collect()
    }

    /// The config store's acceptors. Once a node knows the map, this (and
    /// not its own flags) says who the acceptors are, so every node agrees
    /// on them and any two majorities overlap.
    pub fn config_members(&self) -> Vec<NodeId> {
        self.config_members.clone()
    }

    /// Whether a node's peer list (`--peers`: id and peer address of some
    /// nodes) agrees with this map: every node both name is at the same
    /// peer address. Nodes only one of them names are fine: the map
    /// changes while the cluster runs (`admin add-node`, `remove-node`),
    /// and once a node knows it, the map, not its flags, says who its peers
    /// are. A node the flags put elsewhere is a mistake worth stopping for.
    /// The error says what differs and the list that would agree.
    pub fn check_peers(&self, peers: &BTreeMap<NodeId, String>) -> Result<(), String> {
        let same_addr = |a: &str, b: &str| match (a.parse::<std::net::SocketAddr>(), b.parse::<std::net::SocketAddr>())
        {
            (Ok(x), Ok(y)) => x == y,
            _ => a == b,
        };
        let mut diffs = Vec::new();
        for (id, a) in &self.nodes {
            match peers.get(id) {
                Some(p) if !same_addr(p, &a.peer) => diffs.push(format!("node {id} is at {p}, not {}", a.peer)),
                _ => {}
            }
        }
        if diffs.is_empty() {
            return Ok(());
        }
        let wanted = self.nodes.iter().map(|(id, a)| format!("{id}={}", a.peer)).collect::<Vec<_>>().join(",");
        Err(format!(
            "the peer list disagrees with the stored cluster map: {}; the map's list is {wanted}",
            diffs.join("; ")
        ))
    }

    /// Checks a map a peer sent could be a map of a running cluster: nodes
    /// and groups within bounds, config members among the nodes. Unlike
    /// `validate`, it allows groups whose bootstrap placement lost nodes
    /// that were removed since.
    pub fn is_well_formed(&self) -> bool {
        let (n, g) = (self.nodes.len(), self.groups.len());
        (1..=crate::limits::MAX_NODES).contains(&n)
            && (1..=crate::limits::MAX_GROUPS).contains(&g)
            && (1..=crate::limits::MAX_CONFIG_MEMBERS).contains(&self.config_members.len())
            && self.config_members.iter().all(|m| self.nodes.contains_key(m))
            && self.version >= 1
    }

    /// Checks a new cluster's map is usable: groups exist, placements name
    /// known nodes.
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
