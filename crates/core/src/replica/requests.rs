//! The checks every client request to a group passes before either
//! execution strategy sees it: leadership, epoch, limits, the session table
//! (a retry gets its recorded answer, or waits for its pending entry), a
//! primary cut off from its backups (refused: ask elsewhere), the
//! view's `min_members`, and back-pressure.
//!
//! A request whose key a prepared transaction locks waits here until the
//! transaction resolves; a transaction's commit or status query goes on to
//! the coordinator.
//!
//! It must never run a request twice: a request id already executed or
//! pending, or one the session table may have forgotten (`SessionExpired`),
//! never reaches `execute_passive`, `sequence` or the coordinator again; nor
//! does a request that names no session yet (`OpenSession`).

use super::{Ctx, Replica};
use crate::io::{ClientToken, Outbox};
use crate::limits::MAX_UNCOMMITTED_ENTRIES;
use crate::state::op::Op;
use crate::state::sessions::Dedup;
use crate::state::txn::TxnId;
use crate::types::{Mode, RequestId};
use crate::wire::{ClientError, ClientReply, ClientRequest, Consistency};

impl Replica {
    pub fn on_client_request(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        let id = req.id;
        let reply =
            |out: &mut Outbox, result| out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        let active = self.mode() == Mode::Active;
        let weak = req.consistency != Consistency::Linearizable;
        if req.op.is_read() && self.role() == super::Role::Backup && (!active || weak) {
            // Any member of a passive group serves reads, at the client's
            // consistency (see `reads`); in an active group, reads weaker
            // than linearizable (a linearizable one goes through the
            // sequencer's order like a write).
            return self.read_at_backup(ctx, token, req);
        }
        if active && !self.is_primary() {
            return self.on_member_request(ctx, token, req);
        }
        if !self.is_primary() {
            return reply(ctx.out, Err(ClientError::NotLeader { view: self.view.clone() }));
        }
        if id == RequestId::NOOP {
            let reason = "client id 0 is reserved".to_string();
            return reply(ctx.out, Err(ClientError::Malformed { reason }));
        }
        let view = self.view.clone().expect("primary has a view");
        if req.epoch != view.epoch {
            return reply(ctx.out, Err(ClientError::StaleEpoch { view }));
        }
        if !active && ctx.out.now() < self.serve_after_ms {
            let reason = "a new primary is waiting out its predecessor's read lease".to_string();
            return reply(ctx.out, Err(ClientError::Unavailable { reason }));
        }
        if self.cut_off(ctx.out.now()) {
            // Writes could not commit and reads may be stale: say so at
            // once, so the front end asks the other members for a newer
            // view instead of waiting here for the whole partition.
            return reply(ctx.out, Err(ClientError::CutOff { view }));
        }
        if let Err(e) = req.op.validate() {
            return reply(ctx.out, Err(e.into()));
        }
        if let Op::TxnStatus { txn } = req.op {
            return self.on_txn_status(ctx, token, id, txn);
        }
        if req.op.is_read() && !active {
            return self.read_passive(ctx, token, req);
        }
        if self.holds_writes() {
            // Reads go on; writes wait for the new primary (or for this one
            // to give the hand-over up), so none is refused.
            return self.hold_for_handover(ctx, token, req);
        }
        // Retries are looked up before min_members is enforced: a write that
        // already ran must get its recorded outcome, not a refusal that would
        // tell the client a committed write did not happen.
        let digest = match &req.op {
            Op::Commit(txn) => txn.digest(),
            _ => 0,
        };
        if let Op::Commit(_) = &req.op {
            if self.reuses_txn_id(id, digest) {
                let reason = "the transaction id was reused with other contents".to_string();
                return reply(ctx.out, Err(ClientError::Malformed { reason }));
            }
        }
        if id.session == RequestId::NO_SESSION {
            // Whatever runs is recorded under its session, so a request must
            // name one first: any index this group applied is a start below
            // every index the client's requests will be applied at.
            return reply(ctx.out, Err(ClientError::OpenSession { start: self.applied_index }));
        }
        if !self.bugs.skip_dedup {
            let known = if self.bugs.forget_evicted_session {
                self.state.sessions.lookup_remembered(id)
            } else {
                self.state.sessions.lookup(id)
            };
            match known {
                Dedup::Done(r) => {
                    // Recorded when its entry applied: the applied index
                    // covers it (the client's session token moves past it).
                    let (result, at) = (Ok(r.clone()), self.applied_index);
                    return ctx.out.reply(token, ClientReply::Response { id, result, at, stale_ms: None });
                }
                Dedup::Expired => return reply(ctx.out, Err(ClientError::SessionExpired)),
                Dedup::New => {}
            }
            if let Some(&index) = self.pending_ids.get(&id) {
                if active {
                    self.await_answer(token, id);
                } else {
                    self.waiters.entry(index).or_default().push((token, id));
                }
                return;
            }
            // A commit whose two-phase commit is under way is pending too:
            // its retry joins the first attempt (found by the simulator: a
            // retry refused below min_members told the client nothing was
            // committed, and the votes then arriving committed it).
            if let Op::Commit(txn) = &req.op {
                if self.coordinator.is_collecting(TxnId::new(id, self.group)) {
                    return self.on_commit_request(ctx, token, id, txn.clone(), digest);
                }
            }
        }
        if view.members.len() < view.min_members && !req.op.is_read() {
            return reply(
                ctx.out,
                Err(ClientError::BelowMinMembers { members: view.members.len(), min_members: view.min_members }),
            );
        }
        if self.log.last_index() - self.commit_index >= MAX_UNCOMMITTED_ENTRIES || ctx.out.overloaded {
            return reply(ctx.out, Err(ClientError::Busy));
        }
        if let Some(key) = req.op.key() {
            if self.blocked_by_lock(key, req.op.is_read()) {
                let key = key.to_vec();
                return self.wait_for_lock(ctx, token, &key, req);
            }
        }
        match req.op {
            Op::Commit(txn) => self.on_commit_request(ctx, token, id, txn, digest),
            op if active => self.sequence(ctx, token, id, op),
            op => self.execute_passive(ctx, token, id, op),
        }
    }
}
