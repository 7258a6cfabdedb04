//! One entry of a group's replicated log, and what it carries.
//!
//! An entry is built once by the group's leader and then shared, never
//! copied, by the in-memory log, the WAL record and the appends to every
//! member. It must never change after it is made.

use crate::state::kv::Write;
use crate::state::op::{Op, OpResult};
use crate::types::{Epoch, Index, RequestId};
use serde::{Deserialize, Serialize};

/// An entry as the log, the WAL record and the appends to every backup hold
/// it: one allocation shared by all of them, never copied. Entries are
/// immutable once made, so sharing cannot change what any holder sees.
pub type SharedEntry = std::sync::Arc<Entry>;

/// One entry of a group's replicated log: its position and its payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub epoch: Epoch,
    pub index: Index,
    pub payload: Payload,
}

/// What an entry carries. Passive groups log what their primary's execution
/// did (`Effects`); active groups log the request itself (`Sequenced`),
/// which every member executes once the entry is stable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A new leader's first entry of its epoch (see `Entry::noop`).
    Noop,
    /// Passive: request `id` as the primary executed it: the state change it
    /// made and the response the client gets.
    Effects { id: RequestId, response: OpResult, writes: Vec<Write> },
    /// Active: request `id` in the order the sequencer gave it.
    Sequenced { id: RequestId, op: Op },
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
        Entry { epoch, index, payload: Payload::Noop }
    }

    pub fn is_noop(&self) -> bool {
        matches!(self.payload, Payload::Noop)
    }

    /// The client request this entry carries out, if any.
    pub fn request_id(&self) -> Option<RequestId> {
        match &self.payload {
            Payload::Noop => None,
            Payload::Effects { id, .. } | Payload::Sequenced { id, .. } => Some(*id),
        }
    }

    /// The writes a passive entry makes (an active entry's writes are known
    /// only once it is executed).
    pub fn writes(&self) -> &[Write] {
        match &self.payload {
            Payload::Effects { writes, .. } => writes,
            Payload::Noop | Payload::Sequenced { .. } => &[],
        }
    }

    /// Bytes of payload, for batch limits.
    pub fn payload_bytes(&self) -> usize {
        let op_bytes = match &self.payload {
            Payload::Sequenced { op: Op::Put { key, value } | Op::Cas { key, value, .. }, .. } => {
                key.len() + value.len()
            }
            Payload::Sequenced { op: Op::Get { key } | Op::Delete { key }, .. } => key.len(),
            Payload::Noop | Payload::Effects { .. } => 0,
        };
        op_bytes
            + self
                .writes()
                .iter()
                .map(|w| match w {
                    Write::Put { key, value, .. } => key.len() + value.len(),
                    Write::Delete { key } => key.len(),
                })
                .sum::<usize>()
            + 32
    }
}
