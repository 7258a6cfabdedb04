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
//! FIFO order of a session's writes is kept here too (`fifo_order`): a
//! single-key write runs only after the earlier write its front end names
//! (`ClientRequest::prev`) ran or is pending, and never after a later write
//! of its session ran or is pending. The log this primary or sequencer
//! appends to is every member's order, so every replica applies a session's
//! writes in the order they were issued.
//!
//! It must never run a request twice: a request id already executed or
//! pending, or one the session table may have forgotten (`SessionExpired`),
//! never reaches `execute_passive`, `sequence` or the coordinator again; nor
//! does a request that names no session yet (`OpenSession`). It must never
//! run a session's write after one its front end issued later.

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
        if let Op::Scan { group, after, limit } = req.op {
            return self.on_scan(ctx, token, id, req.epoch, group, after, limit);
        }
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
        if req.op.is_fifo_write() && !self.bugs.fifo_ignores_order {
            if let Err(e) = self.fifo_order(id, req.prev) {
                return reply(ctx.out, Err(e));
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

    /// `Op::Scan`: a page of this group's keys, read from the leader's
    /// applied (committed) state, never logged and never deduplicated (it
    /// changes nothing, so a retry may simply run again). A passive primary
    /// answers only under its lease, like a read. While a prepared
    /// transaction will write a key the page covers, the page is refused
    /// (`Unavailable`, the front end retries after a back-off): its
    /// decision may already be acknowledged, and a client that wrote a key
    /// with MSET must find it listed.
    #[allow(clippy::too_many_arguments)]
    fn on_scan(
        &mut self,
        ctx: &mut Ctx,
        token: ClientToken,
        id: RequestId,
        epoch: crate::types::Epoch,
        group: crate::types::GroupId,
        after: Option<crate::state::kv::Key>,
        limit: u32,
    ) {
        let reply =
            |out: &mut Outbox, result| out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        if !self.is_primary() {
            return reply(ctx.out, Err(ClientError::NotLeader { view: self.view.clone() }));
        }
        let view = self.view.clone().expect("primary has a view");
        if group != self.group {
            let reason = format!("a scan of group {group} was sent to group {}", self.group);
            return reply(ctx.out, Err(ClientError::Malformed { reason }));
        }
        if epoch != view.epoch {
            return reply(ctx.out, Err(ClientError::StaleEpoch { view }));
        }
        let op = Op::Scan { group, after, limit };
        if let Err(e) = op.validate() {
            return reply(ctx.out, Err(e.into()));
        }
        let Op::Scan { after, limit, .. } = op else { unreachable!("built above") };
        let keys = self.state.kv.scan(after.as_deref(), limit as usize);
        let covered = |k: &[u8]| {
            after.as_deref().is_none_or(|a| k > a)
                && (keys.len() < limit as usize || keys.last().is_some_and(|last| k <= last.as_slice()))
        };
        if self.state.locks.written_keys().any(|k| covered(k)) {
            let reason = "a prepared transaction writes keys of this page; its decision is awaited".to_string();
            return reply(ctx.out, Err(ClientError::Unavailable { reason }));
        }
        let result = crate::state::op::OpResult::Scanned {
            keys: keys.into_iter().map(serde_bytes::ByteBuf::from).collect(),
            total: self.state.kv.len() as u64,
        };
        if self.mode() == Mode::Active {
            // The sequencer's applied state; it holds no lease to check.
            return ctx.out.reply(token, ClientReply::Response { id, result: Ok(result), at: 0, stale_ms: None });
        }
        if ctx.out.now() < self.serve_after_ms {
            let reason = "a new primary is waiting out its predecessor's read lease".to_string();
            return reply(ctx.out, Err(ClientError::Unavailable { reason }));
        }
        self.answer_read(ctx, token, id, result);
    }

    /// Whether write `id`, whose front end names `prev` as its session's
    /// newest earlier write still unanswered, may run now, by the session's
    /// newest write applied or pending here (`high`; the request itself is
    /// neither, the session table and `pending_ids` answered those):
    ///
    /// * `id.seq < high`: a write issued later is in the log before it; it
    ///   must never run (`Overtaken`). Only an attempt its front end gave up
    ///   on meets this (a front end that still waits for a write names it
    ///   as `prev` of every later one, so none of them gets ahead of it).
    /// * `prev > high`: the earlier write has not reached this group (lost
    ///   with the previous primary, or overtaken on the way); running this
    ///   one now would put it first (`OutOfOrder`: the front end resends
    ///   after the earlier one). `prev <= high` means it ran, is pending
    ///   ahead of this one, or was overtaken and never runs.
    ///
    /// Judged against applied and pending entries alike: pending entries
    /// are in the log before anything appended now, and every member
    /// applies the log in one order, so the order decided here is every
    /// replica's.
    pub(super) fn fifo_order(&self, id: RequestId, prev: u64) -> Result<(), ClientError> {
        if prev >= id.seq {
            let reason = format!("write {} names {prev} as an earlier write of its session", id.seq);
            return Err(ClientError::Malformed { reason });
        }
        let applied = self.state.sessions.fifo_high(id.client, id.session);
        let session = |seq| RequestId { client: id.client, session: id.session, seq };
        let pending = self.pending_fifo.range(session(0)..=session(u64::MAX)).next_back().map_or(0, |r| r.seq);
        let high = applied.max(pending);
        if id.seq < high {
            return Err(ClientError::Overtaken { by: high });
        }
        if prev > high {
            return Err(ClientError::OutOfOrder { prev });
        }
        Ok(())
    }
}
