//! One entry of a group's replicated log, and what it carries.
//!
//! An entry is built once by the group's leader and then shared, never
//! copied, by the in-memory log, the WAL record and the appends to every
//! member. It must never change after it is made.

use crate::state::kv::Write;
use crate::state::op::{Op, OpResult};
use crate::state::txn::{TxnId, TxnOutcome, TxnPart};
use crate::types::{Epoch, GroupId, Index, RequestId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

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
/// which every member executes once the entry is stable. The two-phase
/// commit entries are the same in both modes: each is a deterministic step
/// that every member applies identically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A new leader's first entry of its epoch (see `Entry::noop`).
    Noop,
    /// Passive: request `id` as the primary executed it: the state change it
    /// made and the response the client gets.
    Effects { id: RequestId, response: OpResult, writes: Vec<Write> },
    /// Active: request `id` in the order the sequencer gave it.
    Sequenced { id: RequestId, op: Op },
    /// Participant: prepare this group's part of `txn`. Applying it checks
    /// the part against the state at this index (versions, locks, bounds);
    /// if it holds, the part's locks are taken and it is recorded prepared,
    /// its writes to take this entry's index as their version. The vote is
    /// sent only once this entry is committed.
    Prepare { txn: TxnId, part: Arc<TxnPart> },
    /// Participant: the decision on `txn` reached this group. The prepared
    /// writes (`writes`, already versioned; empty for an abort) take effect
    /// and the locks are released.
    Resolve { txn: TxnId, commit: bool, writes: Vec<Write> },
    /// Coordinator: the decision on `txn`, logged in its home group before
    /// any participant hears it. It answers the client's commit (`outcome`),
    /// leaves a record for the participants still to be told, and resolves
    /// the home group's own part like a `Resolve` (`writes`). A passive
    /// group commits a transaction of its own keys alone with one of these
    /// (no participants). `digest` is the request's (0 for a presumed abort,
    /// which had none): a later commit under the same id with other
    /// contents is refused.
    Decide {
        txn: TxnId,
        commit: bool,
        participants: Vec<GroupId>,
        outcome: TxnOutcome,
        writes: Vec<Write>,
        digest: u64,
    },
    /// Coordinator: every participant of these decisions acknowledged them
    /// (`haveCommitted`), so their records are dropped.
    Ended { txns: Vec<TxnId> },
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

    /// The client request this entry answers, if any: its response is
    /// recorded in the session table under this id. A transaction's decision
    /// answers its client's commit.
    pub fn request_id(&self) -> Option<RequestId> {
        match &self.payload {
            Payload::Effects { id, .. } | Payload::Sequenced { id, .. } => Some(*id),
            Payload::Decide { txn, .. } => Some(txn.request_id()),
            Payload::Noop | Payload::Prepare { .. } | Payload::Resolve { .. } | Payload::Ended { .. } => None,
        }
    }

    /// The request id of a single-key write the entry carries (a passive
    /// `Effects` whose response is a write's, an active `Sequenced` write):
    /// the entries a session's FIFO order is kept among.
    pub fn fifo_write(&self) -> Option<RequestId> {
        match &self.payload {
            Payload::Effects { id, response, .. } if response.is_fifo_write() => Some(*id),
            Payload::Sequenced { id, op } if op.is_fifo_write() => Some(*id),
            _ => None,
        }
    }

    /// The writes the entry makes, where they are known before it is applied
    /// (an active request's writes are known only once it is executed, a
    /// prepare's only when its transaction resolves).
    pub fn writes(&self) -> &[Write] {
        match &self.payload {
            Payload::Effects { writes, .. } | Payload::Resolve { writes, .. } | Payload::Decide { writes, .. } => {
                writes
            }
            Payload::Noop | Payload::Sequenced { .. } | Payload::Prepare { .. } | Payload::Ended { .. } => &[],
        }
    }

    /// Bytes of payload, for batch limits.
    pub fn payload_bytes(&self) -> usize {
        let txn_bytes = |checks: &[crate::state::txn::Check], writes: &[crate::state::txn::TxnWrite]| {
            checks.iter().map(|c| c.key.len() + 8).sum::<usize>()
                + writes.iter().map(|w| w.key.len() + w.value.as_ref().map_or(0, |v| v.len())).sum::<usize>()
        };
        let op_bytes = match &self.payload {
            Payload::Sequenced { op: Op::Put { key, value } | Op::Cas { key, value, .. }, .. } => {
                key.len() + value.len()
            }
            Payload::Sequenced { op: Op::Get { key } | Op::Delete { key }, .. } => key.len(),
            Payload::Sequenced { op: Op::Commit(req), .. } => txn_bytes(&req.checks, &req.writes),
            Payload::Prepare { part, .. } => txn_bytes(&part.checks, &part.writes),
            Payload::Ended { txns } => txns.len() * 24,
            Payload::Noop
            | Payload::Effects { .. }
            | Payload::Sequenced { op: Op::TxnStatus { .. } | Op::Scan { .. }, .. }
            | Payload::Resolve { .. }
            | Payload::Decide { .. } => 0,
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

    /// A decision's answer to its client's commit (`None` for any other
    /// entry).
    pub fn decided_response(&self) -> Option<OpResult> {
        match &self.payload {
            Payload::Decide { outcome, .. } => Some(OpResult::Txn(outcome.clone())),
            _ => None,
        }
    }
}
