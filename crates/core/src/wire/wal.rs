//! What a node writes to its WAL: replaying these records in order rebuilds
//! the node's durable state (acceptor registers, every group's log, commit
//! hints, snapshots, and the marks of a recovery that cut the log).
//!
//! It owns only the record shapes and which of them promise durability.

use crate::log::SharedEntry;
use crate::state::stream::{Partial, SnapshotId, StreamMeta};
use crate::state::Snapshot;
use crate::types::{ClusterMap, GroupId, Index};
use crate::wire::peer::{Ballot, ConfigValue};
use serde::{Deserialize, Serialize};

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
    /// A chunk of a snapshot stream this replica took (see
    /// `PeerBody::SnapshotChunk`). Replay takes it as the message was taken,
    /// and installs the snapshot with the chunk that completes it. Lazy: it
    /// only saves resending the chunk after a restart; the install's
    /// promise is `SnapshotInstalled`.
    SnapshotChunk {
        group: GroupId,
        meta: StreamMeta,
        offset: u64,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The chunk before it completed a verified snapshot, installed. The
    /// member acknowledges the snapshot's index once this is durable (and
    /// with it every chunk before it).
    SnapshotInstalled { group: GroupId, id: SnapshotId },
    /// A replica's partial snapshot stream, in a checkpoint (never in the
    /// WAL itself: it may be larger than a record).
    SnapshotPartial { group: GroupId, partial: Box<Partial> },
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
    /// The cluster map, as this node first learned it. After a restart the
    /// node takes its peers and the config store's acceptors from it rather
    /// than from its flags (the runtime refuses flags that disagree), so a
    /// node restarted with another peer list can never count a majority of
    /// acceptors that does not overlap the others'.
    Cluster { map: ClusterMap },
}

impl WalRecord {
    /// Whether appending this record must be followed by an fsync of its
    /// own. A `Commit` record is a hint for replay (entries up to the last
    /// one seen are applied at once); losing it in a crash only means the
    /// replica learns its commit index again from the primary, so nothing
    /// ever waits for it to be durable. It rides along with the next record
    /// that does need an fsync. So does a `SnapshotChunk`: the
    /// `SnapshotInstalled` after it is the promise. Every other record is a
    /// promise.
    pub fn needs_sync(&self) -> bool {
        !matches!(self, WalRecord::Commit { .. } | WalRecord::SnapshotChunk { .. })
    }
}
