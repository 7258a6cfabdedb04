//! What clients (front ends, the CLI, the admin tools) and nodes say to each
//! other: requests, replies, errors and status.
//!
//! It owns only the shapes of these messages and the wording of errors.
//! Every error is a clear, actionable condition a person can read.

use crate::state::op::{LimitError, Op, OpResult};
use crate::state::txn::TxnLimitError;
use crate::types::{ClusterMap, Epoch, GroupId, Index, Millis, NodeId, RequestId, View};
use serde::{Deserialize, Serialize};

/// Why a client request failed. Each is a clear, actionable condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientError {
    /// This node does not lead the group; `view` says who does, if known.
    NotLeader {
        view: Option<View>,
    },
    /// This node leads `view` but has heard from its backups too little to
    /// hold its lease: it is cut off from them, and they may be replacing
    /// it. It serves nothing until they answer again; ask another member
    /// for the current view.
    CutOff {
        view: View,
    },
    /// The request named an epoch that is not the group's current one.
    StaleEpoch {
        view: View,
    },
    KeyTooLarge {
        len: usize,
        max: usize,
    },
    ValueTooLarge {
        len: usize,
        max: usize,
    },
    /// The view has fewer members than the group's `min_members`.
    BelowMinMembers {
        members: usize,
        min_members: usize,
    },
    /// The request id was forgotten by the session table (its response
    /// dropped, or its whole session evicted), so whether it ran cannot be
    /// told; it is not run again. The front end starts a new session.
    SessionExpired,
    /// The request named no session (`RequestId::NO_SESSION`); it did not
    /// run. The front end opens its session in the group at `start` and
    /// sends it again.
    OpenSession {
        start: Index,
    },
    /// The node is overloaded; retry after a back-off.
    Busy,
    /// The group is not known to this node (yet).
    UnknownGroup {
        group: GroupId,
    },
    /// The operation could not be completed, for the reason given.
    Unavailable {
        reason: String,
    },
    /// The request could not be decoded.
    Malformed {
        reason: String,
    },
    /// The transaction is empty, over a bound, or contradicts itself.
    InvalidTransaction {
        reason: String,
    },
    /// The write named an earlier write of its session (`ClientRequest::prev`)
    /// that has not reached the group yet; it did not run. The front end
    /// sends it again after the earlier one: a session's writes apply in
    /// the order they were issued.
    OutOfOrder {
        prev: u64,
    },
    /// A write of the same session issued later (sequence number `by`) ran
    /// or is pending already; this one did not run and, to keep the
    /// session's writes in issue order, never will (unless that later one
    /// is lost in a failover before it committed).
    Overtaken {
        by: u64,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotLeader { view: Some(v) } => {
                write!(f, "not the leader of group {} (leader is node {} in epoch {})", v.group, v.leader, v.epoch)
            }
            ClientError::NotLeader { view: None } => write!(f, "not the leader, and the view is unknown"),
            ClientError::CutOff { view } => write!(
                f,
                "node {} leads group {} in epoch {} but is cut off from its backups (its lease lapsed); ask another \
                 member for the current view",
                view.leader, view.group, view.epoch
            ),
            ClientError::StaleEpoch { view } => {
                write!(f, "stale epoch: group {} is at epoch {}", view.group, view.epoch)
            }
            ClientError::KeyTooLarge { len, max } => write!(f, "key of {len} bytes exceeds the limit of {max} bytes"),
            ClientError::ValueTooLarge { len, max } => {
                write!(f, "value of {len} bytes exceeds the limit of {max} bytes")
            }
            ClientError::BelowMinMembers { members, min_members } => write!(
                f,
                "writes refused: the group has {members} members in its view, below min_members {min_members}"
            ),
            ClientError::SessionExpired => {
                write!(f, "session expired: the request is too old to tell whether it ran, and was not run again")
            }
            ClientError::OpenSession { start } => write!(f, "no session named; open one at index {start}"),
            ClientError::Busy => write!(f, "node busy, retry later"),
            ClientError::UnknownGroup { group } => write!(f, "group {group} is not known to this node"),
            ClientError::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            ClientError::Malformed { reason } => write!(f, "malformed request: {reason}"),
            ClientError::InvalidTransaction { reason } => write!(f, "invalid transaction: {reason}"),
            ClientError::OutOfOrder { prev } => {
                write!(f, "out of order: this session's earlier write {prev} has not reached the group yet")
            }
            ClientError::Overtaken { by } => write!(
                f,
                "overtaken: this session's later write {by} was applied first, so this one was not run (FIFO order)"
            ),
        }
    }
}

impl std::error::Error for ClientError {}

/// How fresh a read must be, chosen per request by the client. Writes
/// ignore it (they always go to the primary).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// Never older than the latest write acknowledged before the read
    /// began. The primary serves it under its lease; a backup first asks
    /// the primary for a read index and answers once it applied that far.
    #[default]
    Linearizable,
    /// Never older than what this client saw before in the group (the
    /// request's `after` index): read-your-writes and monotonic reads.
    Session,
    /// Any member whose state is at most `max_ms` old; the reply says how old.
    Stale { max_ms: Millis },
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Consistency::Linearizable => write!(f, "linearizable"),
            Consistency::Session => write!(f, "session"),
            Consistency::Stale { max_ms } => write!(f, "stale={max_ms}"),
        }
    }
}

impl std::str::FromStr for Consistency {
    type Err = String;
    /// `linearizable`, `session`, `stale` (1000 ms) or `stale=MS`.
    fn from_str(s: &str) -> Result<Consistency, String> {
        match s {
            "linearizable" => Ok(Consistency::Linearizable),
            "session" => Ok(Consistency::Session),
            "stale" => Ok(Consistency::Stale { max_ms: 1_000 }),
            _ => match s.strip_prefix("stale=").map(str::parse::<Millis>) {
                Some(Ok(max_ms)) => Ok(Consistency::Stale { max_ms }),
                _ => Err(format!("unknown consistency `{s}`: use linearizable, session, stale or stale=MS")),
            },
        }
    }
}

/// A client's key-value request to a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: RequestId,
    pub group: GroupId,
    /// The epoch of the view the front end believes in.
    pub epoch: Epoch,
    pub op: Op,
    /// A read's consistency (see `Consistency`).
    pub consistency: Consistency,
    /// The highest index of the group this client has seen an answer
    /// reflect (its session token): a member serves the read only once it
    /// applied at least this far. 0: none.
    pub after: Index,
    /// FIFO order of a session's writes: for a single-key write, the
    /// sequence number of the newest earlier write of the same session to
    /// the same group that the front end had not seen answered when it sent
    /// this attempt; 0 if there is none (and for anything but a write). The
    /// group runs the write only once that one ran or can never run (see
    /// `replica::requests`), else answers `OutOfOrder`.
    pub prev: u64,
}

/// Everything a client (front end, CLI) may send to a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    Request(ClientRequest),
    /// The cluster map and every view this node knows.
    GetViews,
    /// This node's status (roles, indexes, digests).
    GetStatus,
    /// Store the cluster map and initial views in the config store (only if
    /// the cluster has none yet).
    Bootstrap {
        cluster: ClusterMap,
    },
    /// Who this node is: its id, and the peer list it was started with.
    /// Answered by the runtime (the core knows no addresses); `pactdb
    /// bootstrap` builds the cluster map from every node's answer.
    GetNodeInfo,
    /// Hand the leadership of `group` to member `to` (`pactdb admin
    /// transfer-leader`). Sent to the group's leader, which answers at once
    /// whether it started the hand-over; the new view shows when it is done.
    TransferLeader {
        group: GroupId,
        to: NodeId,
    },
    /// Move `group`'s replica from node `from` to node `to` (`pactdb admin
    /// move-replica`). Sent to the group's leader, which answers once it
    /// has proposed the new placement (or why it did not); `to` then
    /// catches up as a learner, is admitted, and `from` is dropped.
    MoveReplica {
        group: GroupId,
        from: NodeId,
        to: NodeId,
    },
    /// Add node `id` at `addrs` to the cluster map (`pactdb admin
    /// add-node`). Answered once the config store holds the new map.
    AddNode {
        id: NodeId,
        addrs: crate::types::NodeAddrs,
    },
    /// Remove node `id` from the cluster map (`pactdb admin remove-node`,
    /// once its replicas were moved off). Answered once the config store
    /// holds the new map.
    RemoveNode {
        id: NodeId,
    },
}

/// Why a leader hand-over (or a replica move) was not started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRefused {
    pub reason: String,
    /// The group's view as the node knows it: ask its leader instead.
    pub view: Option<View>,
}

/// Per-group status of one replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub group: GroupId,
    pub view: Option<View>,
    pub role: String,
    pub last_index: Index,
    pub commit_index: Index,
    pub applied_index: Index,
    pub digest: u64,
    pub keys: usize,
    /// Transactions prepared in this group and not yet resolved (in doubt,
    /// as far as this member knows).
    pub prepared: usize,
    /// Keys locked by those transactions.
    pub locks: usize,
    /// How long the oldest of them has been prepared, as this member saw it.
    pub oldest_prepared_ms: Option<Millis>,
    /// Decisions this group coordinated whose participants have not all
    /// acknowledged them yet.
    pub unfinished_decisions: usize,
    /// Snapshot streams under way on this replica.
    pub transfers: Vec<SnapshotTransfer>,
    /// A leader hand-over this primary has under way, if any.
    pub handover: Option<Handover>,
    /// A placement change this primary has under way (nodes catching up to
    /// be admitted, members to drop), if any.
    pub placement_change: Option<PlacementChange>,
    /// Client sessions in this replica's exactly-once table (at most
    /// `MAX_SESSIONS`); exported as a gauge at `/metrics`.
    pub sessions: usize,
}

/// A placement change under way at the primary (`move-replica`, or a
/// dropped member rejoining): who still catches up, and who leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementChange {
    /// Placed nodes not yet in the view, with what they still lack.
    pub joining: Vec<CatchUp>,
    /// Members that are no longer placed: dropped once every placed node
    /// is a member.
    pub leaving: Vec<NodeId>,
}

/// How far a node catching up to be admitted is behind the primary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatchUp {
    pub node: NodeId,
    /// Whether the primary has heard from it (its `Join`).
    pub heard: bool,
    /// Log entries it still lacks (up to the primary's last index).
    pub entries_left: u64,
    /// Bytes it still lacks: what remains of a snapshot stream under way,
    /// plus the payload of the log entries after its position (counted
    /// over at most `MAX_CATCHUP_SCAN_ENTRIES`; `bytes_exact` says whether
    /// every entry was counted).
    pub bytes_left: u64,
    pub bytes_exact: bool,
}

/// A leader hand-over under way at the primary: writes are held until `to`
/// holds every entry and the primary has committed them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handover {
    pub to: NodeId,
    /// Entries `to` still lacks (as its acks say).
    pub entries_left: u64,
    /// Entries not yet committed.
    pub uncommitted: u64,
    /// Writes held until the hand-over ends.
    pub held: usize,
    /// Whether `TakeOver` was sent.
    pub asked: bool,
}

/// A snapshot stream under way: sent by a primary to `peer`, or taken by a
/// member from `peer` (the leader it knows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotTransfer {
    pub peer: NodeId,
    pub sending: bool,
    /// The log index the snapshot stands for.
    pub index: Index,
    /// Bytes the member holds (as it acknowledged them, on the sender).
    pub bytes: u64,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: NodeId,
    pub replicas: Vec<ReplicaStatus>,
}

/// Everything a node sends back to a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientReply {
    Response {
        id: RequestId,
        result: Result<OpResult, ClientError>,
        /// An index of the group the answer is covered by: every entry up
        /// to it is committed, and a member that applied that far reflects
        /// at least what the answer did. The front end keeps the highest it
        /// saw per group (the session token). 0 when not known.
        at: Index,
        /// A read served under `Consistency::Stale`: how old the serving
        /// member's state may be, at most, when it answered.
        stale_ms: Option<Millis>,
    },
    Views {
        cluster: Option<ClusterMap>,
        views: Vec<View>,
    },
    Status(NodeStatus),
    Bootstrapped(Result<(), String>),
    NodeInfo {
        node: NodeId,
        /// Every node's peer address, as this node was started with them.
        peers: std::collections::BTreeMap<NodeId, String>,
    },
    /// The answer to `TransferLeader`: the view the hand-over starts from,
    /// or why it was not started (with the view this node knows, if any,
    /// so the caller can ask the leader it names).
    TransferStarted(Result<View, TransferRefused>),
    /// The answer to `MoveReplica`: the view with the new placement this
    /// leader proposed (or holds, if the move was already made), or why it
    /// did not.
    MoveStarted(Result<View, TransferRefused>),
    /// The answer to `AddNode` / `RemoveNode`: the new map, or why not.
    ClusterChanged(Result<ClusterMap, String>),
    /// The connection is about to be closed because the node could not
    /// understand what was sent.
    ProtocolError {
        reason: String,
    },
}

impl ClientReply {
    /// An answer to request `id` covered by no known index.
    pub fn response(id: RequestId, result: Result<OpResult, ClientError>) -> ClientReply {
        ClientReply::Response { id, result, at: 0, stale_ms: None }
    }
}

impl From<LimitError> for ClientError {
    fn from(e: LimitError) -> ClientError {
        match e {
            LimitError::KeyTooLarge { len, max } => ClientError::KeyTooLarge { len, max },
            LimitError::ValueTooLarge { len, max } => ClientError::ValueTooLarge { len, max },
            LimitError::Txn(e) => {
                let reason = match *e {
                    TxnLimitError::Empty => "a transaction needs at least one read, compare or write".to_string(),
                    TxnLimitError::ReadsWithWrites => {
                        "a consistent read is read-only: it cannot carry writes".to_string()
                    }
                    TxnLimitError::TooManyKeys { keys, max } => {
                        format!("a transaction of {keys} keys exceeds the limit of {max} keys")
                    }
                    TxnLimitError::TooManyBytes { bytes, max } => {
                        format!("a transaction of {bytes} bytes exceeds the limit of {max} bytes")
                    }
                    TxnLimitError::Contradiction { key } => format!(
                        "the transaction writes key `{}` twice or expects two versions of it",
                        String::from_utf8_lossy(&key)
                    ),
                    TxnLimitError::Limit(l) => return l.into(),
                };
                ClientError::InvalidTransaction { reason }
            }
            LimitError::ScanTooLarge { limit, max } => {
                ClientError::Malformed { reason: format!("a scan of {limit} keys exceeds the limit of {max} keys") }
            }
        }
    }
}
