//! Active replication's execution strategy: the sequencer (the view's
//! leader) only orders requests (`Payload::Sequenced`); every member
//! executes each one once it is stable (held durably by every member), in
//! log order, and answers the clients that asked it. Reads go through the
//! log like writes, so no lease is involved.
//!
//! It must never execute an entry before it is stable (see
//! `Bugs::execute_before_stable`), and never sequence a request id twice.

use super::{Ctx, Replica};
use crate::io::{ClientToken, Outbox};
use crate::limits::MAX_AWAITING;
use crate::log::Payload;
use crate::state::op::{Op, OpResult};
use crate::state::sessions::Dedup;
use crate::types::{Index, RequestId};
use crate::wire::{ClientReply, ClientRequest};

impl Replica {
    /// The sequencer orders a request: it appends it, unexecuted; every
    /// member, this one included, executes it once every member holds it
    /// durably.
    pub(super) fn sequence(&mut self, ctx: &mut Ctx, token: ClientToken, id: RequestId, op: Op) {
        self.await_answer(token, id);
        self.append_own(ctx, Payload::Sequenced { id, op });
    }

    /// Active mode, a member that is not the sequencer: it answers a request
    /// only by executing it, so it remembers who asked. A retry of a request
    /// it already executed gets the recorded answer at once.
    pub(super) fn on_member_request(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        if req.op.validate().is_err() || req.id == RequestId::NOOP {
            // The sequencer answers with the error; members stay silent.
            return;
        }
        if let Op::TxnStatus { txn } = req.op {
            // Only the sequencer coordinates; a member answers what it knows.
            if let Dedup::Done(r @ OpResult::Txn(_)) = self.state.sessions.lookup(txn.request_id()) {
                ctx.out
                    .reply(token, ClientReply::Response { id: req.id, result: Ok(r.clone()), at: 0, stale_ms: None });
            }
            return;
        }
        if let Op::Commit(txn) = &req.op {
            if self.reuses_txn_id(req.id, txn.digest()) {
                // The sequencer answers with the error; members stay silent.
                return;
            }
        }
        if req.id.session == RequestId::NO_SESSION {
            // The sequencer names a start; members stay silent.
            return;
        }
        let known = if self.bugs.forget_evicted_session {
            self.state.sessions.lookup_remembered(req.id)
        } else {
            self.state.sessions.lookup(req.id)
        };
        match known {
            Dedup::Done(r) => {
                // Recorded when its entry applied: the applied index covers it.
                let (result, at) = (Ok(r.clone()), self.applied_index);
                ctx.out.reply(token, ClientReply::Response { id: req.id, result, at, stale_ms: None });
            }
            Dedup::Expired => {}
            Dedup::New => self.await_answer(token, req.id),
        }
    }

    pub(super) fn await_answer(&mut self, token: ClientToken, id: RequestId) {
        let tokens = self.awaiting.entry(id).or_default();
        if tokens.is_empty() {
            self.awaiting_order.push_back(id);
        }
        if !tokens.contains(&token) {
            tokens.push(token);
        }
        while self.awaiting_order.len() > MAX_AWAITING {
            let old = self.awaiting_order.pop_front().expect("non-empty");
            self.awaiting.remove(&old);
        }
    }

    /// Active mode: this member answers every client that asked it. `at`
    /// is the index the answer is covered by (the entry's, once applied).
    pub(super) fn answer_awaiting(&mut self, out: &mut Outbox, id: RequestId, response: &OpResult, at: Index) {
        if let Some(tokens) = self.awaiting.remove(&id) {
            for token in tokens {
                out.reply(token, ClientReply::Response { id, result: Ok(response.clone()), at, stale_ms: None });
            }
        }
    }
}
