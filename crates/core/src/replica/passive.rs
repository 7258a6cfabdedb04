//! Passive replication's execution strategy: the primary alone executes a
//! request, against its committed state plus the overlay of uncommitted
//! writes, and logs what the execution did (`Payload::Effects`); backups
//! only apply those effects. Reads are served by the primary alone, under
//! its lease.
//!
//! It must never answer a read with a value that could still be lost: a
//! read of a key with a pending write waits until that write commits.

use super::{Ctx, Participant, Replica};
use crate::io::ClientToken;
use crate::limits::MAX_PARKED_READS;
use crate::log::Payload;
use crate::state::kv::{Key, Versioned};
use crate::state::op::{execute, ExecState, Op, OpResult};
use crate::state::txn::{LockMode, TxnId};
use crate::state::StateMachine;
use crate::types::{Index, RequestId};
use crate::wire::{ClientError, ClientReply, ClientRequest};
use std::collections::HashMap;

impl Replica {
    /// Serves a read at the primary, under its lease.
    pub(super) fn read_passive(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        let id = req.id;
        let reply =
            |ctx: &mut Ctx, result| ctx.out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        if !self.bugs.read_without_lease && !self.lease_valid(ctx.out.now()) {
            return reply(ctx, Err(super::no_lease()));
        }
        let key = req.op.key().expect("a read names its key");
        if self.blocked_by_lock(key, true) {
            // A prepared transaction will write the key, and may already be
            // decided: the value here could be one a client already saw
            // overwritten. The read waits for the decision.
            let key = key.to_vec();
            return self.wait_for_lock(ctx, token, &key, req);
        }
        let (result, wait_for) = match self.overlay.get(key) {
            Some((v, idx)) => (OpResult::Value(v.clone()), *idx),
            None => (OpResult::Value(self.state.kv.get(key).cloned()), 0),
        };
        if wait_for <= self.commit_index {
            return self.answer_read(ctx, token, id, result);
        }
        // The value read comes from a write that is not committed yet:
        // answer only once it is, so no read ever sees a lost write.
        if self.parked_count >= MAX_PARKED_READS {
            return reply(ctx, Err(ClientError::Busy));
        }
        self.parked_count += 1;
        self.parked_reads.entry(wait_for).or_default().push((token, id, result));
    }

    /// Executes a write (or a transaction that touches this group only) at
    /// the primary and logs its effects; the client is answered when the
    /// entry commits.
    pub(super) fn execute_passive(&mut self, ctx: &mut Ctx, token: ClientToken, id: RequestId, op: Op) {
        // Executed against the state as of the entry it will be.
        let index = self.log.last_index() + 1;
        let txn = TxnId::new(id, self.group);
        let (response, writes) = execute(&op, index, txn, &self.primary_state());
        self.waiters.entry(index).or_default().push((token, id));
        let appended = self.append_own(ctx, Payload::Effects { id, response, writes });
        debug_assert_eq!(appended, index);
    }

    /// The state as the next entry will find it, seen from the primary: the
    /// applied state plus the overlay of uncommitted writes, and every lock
    /// held or about to be taken by a pending prepare (locks a pending
    /// resolution will release still count: the view is conservative).
    pub(super) fn primary_state(&self) -> PrimaryState<'_> {
        PrimaryState { state: &self.state, overlay: &self.overlay, participant: &self.participant }
    }
}

/// See `Replica::primary_state`.
pub(super) struct PrimaryState<'a> {
    state: &'a StateMachine,
    overlay: &'a HashMap<Key, (Option<Versioned>, Index)>,
    participant: &'a Participant,
}

impl ExecState for PrimaryState<'_> {
    fn get(&self, key: &[u8]) -> Option<Versioned> {
        match self.overlay.get(key) {
            Some((v, _)) => v.clone(),
            None => self.state.kv.get(key).cloned(),
        }
    }

    fn lock_conflict(&self, key: &[u8], mode: LockMode, txn: TxnId) -> bool {
        self.state.locks.conflicts(key, mode, txn) || self.participant.pending_conflict(key, mode)
    }
}
