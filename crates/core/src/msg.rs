//! Every message that crosses a wire or reaches the disk, and their
//! encoding. Decoding is bounded and never panics: a malformed message is an
//! error the caller reports, nothing more.

use crate::kv::{KvStore, Op, OpResult, Sessions, Write};
use crate::limits::MAX_MESSAGE_BYTES;
use crate::types::{ClusterMap, Epoch, GroupId, Index, Millis, NodeId, RequestId, View};
use bincode::Options;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// A CASPaxos ballot: (round, proposer). Ordered lexicographically, so two
/// proposers never use the same ballot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    pub round: u64,
    pub node: NodeId,
}

/// The value of a config-store register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConfigValue {
    Cluster(ClusterMap),
    View(View),
}

/// An entry as the log, the WAL record and the appends to every backup hold
/// it: one allocation shared by all of them, never copied. Entries are
/// immutable once made, so sharing cannot change what any holder sees.
pub type SharedEntry = std::sync::Arc<Entry>;

/// One entry of a group's replicated log.
///
/// Passive mode: the request id, the response the primary computed, and the
/// state change it made (`op` is `None`). Active mode: the request id and the
/// request itself (`op`), which every member executes once the entry is
/// stable; `response` and `effects` are then unused (`Value(None)`, empty).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub epoch: Epoch,
    pub index: Index,
    pub request_id: RequestId,
    pub response: OpResult,
    pub effects: Vec<Write>,
    pub op: Option<Op>,
}

impl Entry {
    /// The entry a primary appends when it takes over a view with an
    /// uncommitted suffix inherited from an older epoch. A primary commits
    /// only up to an entry of its own epoch, so the inherited entries commit
    /// together with this one, and every member that acked it holds an entry
    /// of the new epoch durably: after a restart its log alone then refuses
    /// the appends of a deposed primary. Committing the inherited entries
    /// on their own left nothing durable of the new epoch: a restarted
    /// member that had also lost its lazy commit record took a stale
    /// primary's appends and cut entries committed in the new epoch (found
    /// by the simulator). This is Raft's no-op entry at the start of a term.
    pub fn noop(epoch: Epoch, index: Index) -> Entry {
        Entry {
            epoch,
            index,
            request_id: RequestId::NOOP,
            response: OpResult::Deleted { existed: false },
            effects: Vec::new(),
            op: None,
        }
    }

    pub fn is_noop(&self) -> bool {
        self.request_id == RequestId::NOOP
    }

    /// Bytes of payload, for batch limits.
    pub fn payload_bytes(&self) -> usize {
        let op_bytes = match &self.op {
            Some(Op::Put { key, value }) | Some(Op::Cas { key, value, .. }) => key.len() + value.len(),
            Some(Op::Get { key }) | Some(Op::Delete { key }) => key.len(),
            None => 0,
        };
        op_bytes
            + self
                .effects
                .iter()
                .map(|w| match w {
                    Write::Put { key, value, .. } => key.len() + value.len(),
                    Write::Delete { key } => key.len(),
                })
                .sum::<usize>()
            + 32
    }
}

/// A replica's whole applied state at one log position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub epoch: Epoch,
    pub kv: KvStore,
    pub sessions: Sessions,
}

/// Messages between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMsg {
    pub from: NodeId,
    pub body: PeerBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerBody {
    // Config store (CASPaxos).
    Prepare {
        key: String,
        ballot: Ballot,
    },
    Promise {
        key: String,
        ballot: Ballot,
        accepted: Option<(Ballot, ConfigValue)>,
    },
    Accept {
        key: String,
        ballot: Ballot,
        value: ConfigValue,
    },
    Accepted {
        key: String,
        ballot: Ballot,
    },
    /// The acceptor has promised a higher ballot; the proposer retries above it.
    Reject {
        key: String,
        ballot: Ballot,
        promised: Ballot,
    },
    /// A view won in the config store, told to everyone so caches refresh fast.
    ViewAnnounce {
        view: View,
    },

    // Passive replication.
    /// Entries from the primary of `view`, following `(prev_epoch, prev_index)`.
    Append {
        view: View,
        prev_index: Index,
        prev_epoch: Epoch,
        entries: Vec<SharedEntry>,
        commit_index: Index,
        sent_ms: Millis,
    },
    /// The backup holds, durably, every entry up to `match_index` as the
    /// primary's log has them. Echoes `sent_ms` to extend the primary's lease.
    AppendAck {
        group: GroupId,
        epoch: Epoch,
        match_index: Index,
        sent_ms: Millis,
    },
    /// The backup's log does not contain `(prev_epoch, prev_index)`; `last_index`
    /// is a hint where to resume.
    AppendReject {
        group: GroupId,
        epoch: Epoch,
        last_index: Index,
    },
    /// The whole state, for a member too far behind the primary's log.
    InstallSnapshot {
        view: View,
        snapshot: Box<Snapshot>,
        sent_ms: Millis,
    },
    /// A node placed in the group but not in its view asks to be caught up and
    /// re-admitted.
    Join {
        group: GroupId,
        last_index: Index,
    },
    /// The sender is behind: here is the current view.
    StaleEpoch {
        view: View,
    },
}

/// Why a client request failed. Each is a clear, actionable condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientError {
    /// This node does not lead the group; `view` says who does, if known.
    NotLeader {
        view: Option<View>,
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
    /// The request id was forgotten by the session table, so whether it ran
    /// cannot be told; it is not run again.
    SessionExpired,
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
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotLeader { view: Some(v) } => {
                write!(f, "not the leader of group {} (leader is node {} in epoch {})", v.group, v.leader, v.epoch)
            }
            ClientError::NotLeader { view: None } => write!(f, "not the leader, and the view is unknown"),
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
            ClientError::SessionExpired => write!(f, "request id too old to tell whether it ran; not run again"),
            ClientError::Busy => write!(f, "node busy, retry later"),
            ClientError::UnknownGroup { group } => write!(f, "group {group} is not known to this node"),
            ClientError::Unavailable { reason } => write!(f, "unavailable: {reason}"),
            ClientError::Malformed { reason } => write!(f, "malformed request: {reason}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// A client's key-value request to a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRequest {
    pub id: RequestId,
    pub group: GroupId,
    /// The epoch of the view the front end believes in.
    pub epoch: Epoch,
    pub op: Op,
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
    },
    Views {
        cluster: Option<ClusterMap>,
        views: Vec<View>,
    },
    Status(NodeStatus),
    Bootstrapped(Result<(), String>),
    /// The connection is about to be closed because the node could not
    /// understand what was sent.
    ProtocolError {
        reason: String,
    },
}

/// What a node writes to its WAL. Replaying these in order rebuilds the
/// node's durable state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WalRecord {
    /// A config-store acceptor's state for one register.
    Acceptor { key: String, promised: Ballot, accepted: Option<(Ballot, ConfigValue)> },
    /// A log entry of a group; an entry at index `i` replaces any entry at or
    /// after `i` (a divergent suffix is cut).
    Entry { group: GroupId, entry: SharedEntry },
    /// Entries after `index` of the group are void.
    Truncate { group: GroupId, index: Index },
    /// The group's commit index reached `index` (written lazily; replay
    /// applies entries up to the last one seen).
    Commit { group: GroupId, index: Index },
    /// The group's state was replaced by a snapshot.
    Snapshot { group: GroupId, snapshot: Box<Snapshot> },
    /// The WAL was cut at a recovery (a damaged record and everything after
    /// it were lost), so this node may have forgotten entries it acked and
    /// promises its acceptor made. Written because the cut WAL itself no
    /// longer shows it: without this record a later clean restart forgot the
    /// amnesia (found by the simulator). From here on the acceptor stays
    /// silent, and every replica stays amnesiac until `CaughtUp`.
    WalCut,
    /// The group's replica was caught up by a primary after a `WalCut`.
    CaughtUp { group: GroupId },
    /// This node's proposer may use ballot rounds up to `upto`; after a
    /// restart it starts above them, so it never reuses a ballot (see
    /// `config::Proposer::start_round`).
    ProposerRounds { upto: u64 },
}

impl WalRecord {
    /// Whether appending this record must be followed by an fsync of its
    /// own. A `Commit` record is a hint for replay (entries up to the last
    /// one seen are applied at once); losing it in a crash only means the
    /// replica learns its commit index again from the primary, so nothing
    /// ever waits for it to be durable. It rides along with the next record
    /// that does need an fsync. Every other record is a promise.
    pub fn needs_sync(&self) -> bool {
        !matches!(self, WalRecord::Commit { .. })
    }
}

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_MESSAGE_BYTES).allow_trailing_bytes()
}

/// Encodes any message. Infallible for our types (they hold no maps with
/// non-string keys that bincode could refuse).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    options().serialize(msg).expect("pactdb messages always serialize")
}

/// Decodes a message, bounded by `MAX_MESSAGE_BYTES`; never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_decodes_to_an_error_not_a_panic() {
        for bytes in [&[][..], &[0xff; 3][..], &[7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]] {
            assert!(decode::<ClientMsg>(bytes).is_err());
            assert!(decode::<PeerMsg>(bytes).is_err());
        }
        // A length prefix claiming a huge vector must not allocate it.
        let mut huge = encode(&ClientMsg::GetStatus);
        huge[0] = 0; // Request
        huge.extend_from_slice(&[0xfd; 9]);
        assert!(decode::<ClientMsg>(&huge).is_err());
    }

    #[test]
    fn round_trip() {
        let m = PeerMsg { from: 3, body: PeerBody::Join { group: 2, last_index: 9 } };
        assert_eq!(decode::<PeerMsg>(&encode(&m)).unwrap(), m);
    }
}
