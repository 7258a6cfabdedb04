//! Messages between nodes: the config store's CASPaxos rounds, log
//! replication between a group's leader and its members, and joins.
//!
//! It owns only the shapes of these messages. Decoding them is bounded and
//! never panics (see `wire::decode`); what a malformed one means is the
//! receiving protocol's business, and it must drop, never trip over, one.

use crate::log::SharedEntry;
use crate::state::stream::{SnapshotId, StreamMeta};
use crate::state::txn::{TxnId, TxnPart, Vote};
use crate::types::{ClusterMap, Epoch, GroupId, Index, Millis, NodeId, View};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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

/// Messages between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerMsg {
    pub from: NodeId,
    pub body: PeerBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerBody {
    // Config store (CASPaxos).
    /// `map_version` is the version of the cluster map whose config
    /// members the proposer uses (0: it knows no map yet). An acceptor that
    /// knows a newer map ignores the round: a proposer two member changes
    /// behind could count a majority that misses the newest value.
    Prepare {
        key: String,
        ballot: Ballot,
        map_version: u64,
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
        map_version: u64,
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
    /// A cluster map the sender read from the config store (so chosen): sent
    /// to every node when it changes, and to a proposer whose round named
    /// an older map.
    ClusterAnnounce {
        map: ClusterMap,
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
        /// The newest `sent_ms` this member echoed in an ack the primary
        /// received before sending this (0: none). The member knows when it
        /// sent that ack by its own clock, so it knows its state is at least
        /// as fresh as the primary's commit index at that moment, with no
        /// assumption on the two clocks' agreement (see `replica::reads`).
        acked_sent_ms: Millis,
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
    /// A piece of the state, for a member too far behind the primary's log:
    /// the bytes at `offset` of the snapshot stream `meta` describes (see
    /// `state::stream`).
    SnapshotChunk {
        view: View,
        meta: StreamMeta,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        sent_ms: Millis,
    },
    /// The member holds the first `received` bytes of snapshot `id` (not
    /// necessarily durably: it only says where to resume). `refused`: the
    /// chunk that prompted it did not continue the stream.
    SnapshotAck {
        group: GroupId,
        epoch: Epoch,
        id: SnapshotId,
        received: u64,
        refused: bool,
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
    /// A leader hand-over (`pactdb admin transfer-leader`): the primary of
    /// `epoch`, which stopped taking writes, tells the member it hands over
    /// to that it holds everything up to `last_index` and has committed up
    /// to `commit_index`; the member proposes itself as leader of the next
    /// epoch, with the same members.
    TakeOver {
        group: GroupId,
        epoch: Epoch,
        last_index: Index,
        commit_index: Index,
    },

    // Two-phase commit. Every message names the participant group it is
    // about; the coordinator is the primary of `txn.home`.
    /// canCommit?: the coordinator asks participant `group` to prepare `part`.
    CanCommit {
        group: GroupId,
        txn: TxnId,
        part: Arc<TxnPart>,
    },
    /// Participant `group`'s vote, durable in its group before it is sent.
    Vote {
        group: GroupId,
        txn: TxnId,
        vote: Vote,
    },
    /// doCommit: the decision, durable in the home group, is to commit.
    DoCommit {
        group: GroupId,
        txn: TxnId,
    },
    /// doAbort: the decision, durable in the home group, is to abort.
    DoAbort {
        group: GroupId,
        txn: TxnId,
    },
    /// haveCommitted: participant `group` applied the decision (either one).
    HaveCommitted {
        group: GroupId,
        txn: TxnId,
    },
    /// getDecision: participant `group`, prepared for long, asks the
    /// coordinator; the answer is a `DoCommit` or `DoAbort`.
    GetDecision {
        group: GroupId,
        txn: TxnId,
    },
    /// A backup holds a linearizable read: it asks the primary of `epoch`
    /// for a read index (request `ask`).
    ReadIndex {
        group: GroupId,
        epoch: Epoch,
        ask: u64,
    },
    /// The primary's answer: its commit index, while it holds its lease;
    /// `None` when it cannot vouch for one (no lease, not primary of that
    /// epoch, still waiting out its predecessor's lease).
    ReadIndexReply {
        group: GroupId,
        epoch: Epoch,
        ask: u64,
        index: Option<Index>,
    },
}
