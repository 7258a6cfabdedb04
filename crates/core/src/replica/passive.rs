//! Passive replication's execution strategy: the primary alone executes a
//! request, against its committed state plus the overlay of uncommitted
//! writes, and logs what the execution did (`Payload::Effects`); backups
//! only apply those effects. Reads are served by the primary alone, under
//! its lease.
//!
//! It must never answer a read with a value that could still be lost: a
//! read of a key with a pending write waits until that write commits.

use super::{Ctx, Replica};
use crate::io::ClientToken;
use crate::limits::MAX_PARKED_READS;
use crate::log::{Entry, Payload};
use crate::state::op::{execute, Op, OpResult};
use crate::types::RequestId;
use crate::wire::{ClientError, ClientReply};

impl Replica {
    /// Serves a read at the primary, under its lease.
    pub(super) fn read_passive(&mut self, ctx: &mut Ctx, token: ClientToken, id: RequestId, key: &[u8]) {
        let reply = |ctx: &mut Ctx, result| ctx.out.reply(token, ClientReply::Response { id, result });
        if !self.bugs.read_without_lease && !self.lease_valid(ctx.out.now()) {
            return reply(ctx, Err(ClientError::Unavailable { reason: "the primary's lease is not held".into() }));
        }
        let (result, wait_for) = match self.overlay.get(key) {
            Some((v, idx)) => (OpResult::Value(v.clone()), *idx),
            None => (OpResult::Value(self.state.kv.get(key).cloned()), 0),
        };
        if wait_for <= self.commit_index {
            return reply(ctx, Ok(result));
        }
        // The value read comes from a write that is not committed yet:
        // answer only once it is, so no read ever sees a lost write.
        if self.parked_count >= MAX_PARKED_READS {
            return reply(ctx, Err(ClientError::Busy));
        }
        self.parked_count += 1;
        self.parked_reads.entry(wait_for).or_default().push((token, id, result));
    }

    /// Executes a write at the primary and logs its effects; the client is
    /// answered when the entry commits.
    pub(super) fn execute_passive(&mut self, ctx: &mut Ctx, token: ClientToken, id: RequestId, op: Op) {
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        let index = self.log.last_index() + 1;
        let key = op.key();
        let current = match self.overlay.get(key) {
            Some((v, _)) => v.clone(),
            None => self.state.kv.get(key).cloned(),
        };
        let (response, writes) = execute(&op, index, current.as_ref());
        let entry = Entry { epoch, index, payload: Payload::Effects { id, response, writes } };
        self.note_pending(&entry);
        self.waiters.entry(index).or_default().push((token, id));
        self.append_local(ctx, entry);
        self.dirty = true;
    }
}
