//! The primary's (or sequencer's) side of log replication: streaming
//! entries to every member within the in-flight window, taking acks and
//! rejects, catching joiners up (with a snapshot when the entries are gone),
//! the commit rule, and the lease that lets it serve reads alone.
//!
//! It must never count an entry committed before its own copy is durable
//! and every member of the view (and a learner being admitted) acked it,
//! and never commit past the last entry of its own epoch.

use super::{Ctx, Outgoing, Replica};
use crate::limits::{MAX_APPEND_BYTES, MAX_APPEND_ENTRIES, MAX_INFLIGHT_ENTRIES, MAX_SNAPSHOT_CHUNKS_IN_FLIGHT};
use crate::log::{Entry, Payload};
use crate::state::kv::{Versioned, Write};
use crate::state::op::OpResult;
use crate::state::stream::{Cursor, Frozen, SnapshotId};
use crate::state::Applied;
use crate::types::RequestId;
use crate::types::{Epoch, Index, Millis, NodeId, View};
use crate::wire::{ClientError, ClientReply, PeerBody};
use std::sync::Arc;

impl Replica {
    /// Sends whatever each backup is missing, bounded by the in-flight window.
    pub(super) fn send_appends(&mut self, ctx: &mut Ctx, to: NodeId, heartbeat: bool) {
        let view = self.view.clone().expect("primary has a view");
        let now = ctx.out.now();
        let last = self.log.last_index();
        let base = self.log.base_index();
        let commit = self.commit_index;
        let Some(p) = self.progress.get_mut(&to) else { return };
        let acked_sent_ms = p.lease_sent_ms.unwrap_or(0);
        let mut sent_any = false;
        while p.next_index <= last && p.next_index - p.match_index <= MAX_INFLIGHT_ENTRIES {
            if p.next_index <= base {
                break;
            }
            let prev_index = p.next_index - 1;
            let prev_epoch = self.log.epoch_at(prev_index).expect("prev is within the log");
            let mut entries = Vec::new();
            let mut bytes = 0;
            for e in self.log.range(p.next_index, last) {
                if entries.len() >= MAX_APPEND_ENTRIES || (bytes > 0 && bytes + e.payload_bytes() > MAX_APPEND_BYTES) {
                    break;
                }
                bytes += e.payload_bytes();
                entries.push(e.clone());
            }
            p.next_index += entries.len() as Index;
            ctx.out.send(
                to,
                PeerBody::Append {
                    view: view.clone(),
                    prev_index,
                    prev_epoch,
                    entries,
                    commit_index: commit,
                    sent_ms: now,
                    acked_sent_ms,
                },
            );
            sent_any = true;
        }
        if p.next_index <= base {
            // The member needs entries this log no longer has: it gets the
            // state, streamed.
            return self.send_snapshot_chunks(ctx, to, view);
        }
        p.stream = None;
        if heartbeat && !sent_any {
            let prev_index = p.match_index.max(base);
            let prev_epoch = self.log.epoch_at(prev_index).expect("prev is within the log");
            ctx.out.send(
                to,
                PeerBody::Append {
                    view,
                    prev_index,
                    prev_epoch,
                    entries: Vec::new(),
                    commit_index: commit,
                    sent_ms: now,
                    acked_sent_ms,
                },
            );
        }
    }

    /// Streams the member `to` a snapshot: the one under way if the log
    /// still continues it, else one another member is being streamed, else
    /// the state frozen now. Sends chunks from where the member stands, at
    /// most `MAX_SNAPSHOT_CHUNKS_IN_FLIGHT` ahead of its acknowledgements,
    /// no faster than the throttle.
    fn send_snapshot_chunks(&mut self, ctx: &mut Ctx, to: NodeId, view: View) {
        let now = ctx.out.now();
        let base = self.log.base_index();
        let usable = |s: &Outgoing| s.frozen.meta.id.index >= base;
        if !self.progress.get(&to).and_then(|p| p.stream.as_ref()).is_some_and(usable) {
            let shared = self.progress.values().filter_map(|p| p.stream.as_ref()).find(|s| usable(s));
            let frozen = match shared {
                Some(s) => Arc::clone(&s.frozen),
                None => {
                    let epoch = self.log.epoch_at(self.applied_index).unwrap_or(0);
                    Arc::new(Frozen::freeze(self.applied_index, epoch, &self.state))
                }
            };
            let Some(p) = self.progress.get_mut(&to) else { return };
            p.stream = Some(Outgoing {
                frozen,
                acked: 0,
                sent: 0,
                cursor: Cursor::default(),
                next_send_ms: now,
                last_ack_ms: now,
                rewound_to: None,
            });
        }
        let chunk_bytes = self.streaming.chunk_bytes;
        let rate = self.streaming.bytes_per_sec;
        let Some(s) = self.progress.get_mut(&to).and_then(|p| p.stream.as_mut()) else { return };
        let meta = s.frozen.meta;
        while s.sent < meta.total_bytes
            && s.sent - s.acked.min(s.sent) < MAX_SNAPSHOT_CHUNKS_IN_FLIGHT * chunk_bytes
            && now >= s.next_send_ms
        {
            let Some((data, next)) = s.frozen.chunk(s.sent, s.cursor, chunk_bytes) else {
                // The member holds a prefix that is no item boundary of this
                // stream (another sender's): start over.
                if s.sent == 0 {
                    break;
                }
                (s.sent, s.acked, s.cursor) = (0, 0, Cursor::default());
                continue;
            };
            let offset = s.sent;
            let len = data.len() as u64;
            s.sent += len;
            s.cursor = next;
            if rate > 0 {
                s.next_send_ms = s.next_send_ms.max(now) + (len * 1000).div_ceil(rate);
            }
            ctx.out.send(to, PeerBody::SnapshotChunk { view: view.clone(), meta, offset, data, sent_ms: now });
        }
    }

    /// A member holds `received` bytes of snapshot `id`: the stream goes on
    /// from there (backwards after a refused chunk or a lost partial
    /// stream, forwards when it held more from an earlier attempt).
    pub fn on_snapshot_ack(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        epoch: Epoch,
        id: SnapshotId,
        received: u64,
        refused: bool,
    ) {
        if !self.is_primary() || self.view.as_ref().is_some_and(|v| v.epoch != epoch) {
            return;
        }
        let now = ctx.out.now();
        let Some(p) = self.progress.get_mut(&from) else { return };
        let Some(s) = p.stream.as_mut().filter(|s| s.frozen.meta.id == id) else { return };
        if received > s.frozen.meta.total_bytes {
            return;
        }
        // A learner streamed a snapshot is alive; a member of the view is
        // not kept in it by chunks (commits wait for its acks of entries,
        // so it leaves the view and is re-admitted once caught up).
        if p.learner {
            p.last_ack_ms = now;
        }
        if received > s.sent {
            // It holds more, from an earlier attempt: go on from there.
            s.sent = received;
        } else if refused && s.rewound_to != Some(received) {
            // A chunk did not continue its stream (one before it was lost,
            // or it lost its partial stream): resend from what it holds,
            // once per position. Every chunk of the window behind the lost
            // one is refused alike; rewinding for each of them made a storm
            // of resends (found by the simulator).
            s.sent = received;
            s.rewound_to = Some(received);
        }
        if received > s.acked {
            s.last_ack_ms = now;
        }
        if received > s.acked || refused {
            s.acked = received;
        }
        if received == s.frozen.meta.total_bytes {
            // It holds the whole stream: appends go on after the snapshot's
            // index (a member whose install failed rejects them, and gets a
            // stream again). Waiting for its ack of the index instead left
            // a joiner that installed before it had confirmed its view (and
            // so acked nothing) waiting for a stream that had ended (found by
            // the simulator).
            p.next_index = p.next_index.max(s.frozen.meta.id.index + 1);
        }
        self.send_appends(ctx, from, false);
    }

    pub fn on_append_ack(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, match_index: Index, sent_ms: Millis) {
        if !self.is_primary() || self.view.as_ref().is_some_and(|v| v.epoch != epoch) {
            return;
        }
        let now = ctx.out.now();
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack_ms = now;
        p.lease_sent_ms = Some(p.lease_sent_ms.map_or(sent_ms, |s| s.max(sent_ms)));
        let match_index = match_index.min(last);
        if match_index > p.match_index {
            p.match_index = match_index;
            p.last_progress_ms = now;
        }
        p.next_index = p.next_index.max(p.match_index + 1);
        // A learner holding everything committed is as current as any member:
        // from its admission on, commits wait for it. Asking it to be within
        // a few entries of the primary's last index as well could never hold
        // under a steady write load, so a removed backup stayed out forever.
        // Everything committed includes what an earlier primary may have
        // committed of the inherited suffix, before this primary's own commit
        // index covers it (found by the simulator: a learner admitted while
        // the no-op was pending lacked entries the previous primary had
        // committed, then won a view without them).
        let learner_caught_up = p.learner && p.match_index >= self.commit_index.max(self.inherited_upto);
        // Only a node the view still places is admitted (a move may have
        // replaced it while it caught up).
        let placed = self.view.as_ref().is_some_and(|v| v.is_placed(from));
        let learner_caught_up = learner_caught_up && placed;
        self.advance_commit(ctx);
        if learner_caught_up && !self.view_change_in_flight {
            let view = self.view.clone().expect("primary has a view");
            let mut members = view.members.clone();
            members.push(from);
            self.admitting = Some(from);
            let next = view.next(self.me, members);
            self.propose_view(ctx, next);
        }
        self.send_appends(ctx, from, false);
    }

    pub fn on_append_reject(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, last_index: Index) {
        if !self.is_primary() || self.view.as_ref().is_some_and(|v| v.epoch != epoch) {
            return;
        }
        let now = ctx.out.now();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack_ms = now;
        // A log shorter than what the backup acked means it lost acked
        // entries (its WAL was cut at recovery). Keeping the old match would
        // probe past its end forever, in a hot reject loop, and stall commit.
        // (Lowering match never lowers commit_index; at worst a reordered
        // reject costs a resend.)
        p.match_index = p.match_index.min(last_index);
        p.next_index = (last_index + 1).max(p.match_index + 1).min(p.next_index);
        p.last_progress_ms = now;
        self.send_appends(ctx, from, true);
    }

    pub fn on_join(&mut self, ctx: &mut Ctx, from: NodeId, last_index: Index) {
        if !self.is_primary() {
            if let Some(v) = &self.view {
                ctx.out.send(from, PeerBody::StaleEpoch { view: v.clone() });
            }
            return;
        }
        let now = ctx.out.now();
        let view = self.view.clone().expect("a primary has a view");
        let is_member = view.is_member(from);
        if !is_member && !view.is_placed(from) {
            // Not placed (moved away): told the view, which its node drops
            // its replica for.
            ctx.out.send(from, PeerBody::StaleEpoch { view });
            return;
        }
        let fresh = self.fresh_progress(now, !is_member);
        let p = self.progress.entry(from).or_insert(fresh);
        p.last_ack_ms = now;
        p.next_index = p.next_index.min(last_index + 1).max(p.match_index + 1);
        let learner = p.learner;
        if self.bugs.admit_before_caught_up && learner && !self.view_change_in_flight && self.admitting.is_none() {
            // The bug: admitted at once, holding whatever it holds.
            let mut members = view.members.clone();
            members.push(from);
            self.admitting = Some(from);
            let next = view.next(self.me, members);
            self.propose_view(ctx, next);
        }
        self.send_appends(ctx, from, true);
    }

    pub(super) fn advance_commit(&mut self, ctx: &mut Ctx) {
        let view = self.view.clone().expect("primary has a view");
        let mut commit = self.durable_index;
        if self.bugs.reply_before_replicated {
            commit = self.log.last_index();
        }
        for m in view.members.iter().chain(self.admitting.iter()).chain(self.unresolved_admission.iter()) {
            if *m == self.me {
                continue;
            }
            let matched = self.progress.get(m).map_or(0, |p| p.match_index);
            if !self.bugs.reply_before_replicated {
                commit = commit.min(matched);
            }
        }
        // Only an entry of this primary's epoch commits, and with it all
        // before it: an inherited entry counted as committed on its own
        // leaves no durable trace of this epoch on the members (see
        // `Entry::noop`).
        let own_epoch = self.log.epoch_at(commit) == Some(view.epoch) || self.bugs.reply_before_replicated;
        if commit > self.commit_index && own_epoch {
            self.commit_index = commit;
            self.apply_committed_primary(ctx);
        }
        self.ask_take_over_if_ready(ctx);
    }

    pub(super) fn apply_committed_primary(&mut self, ctx: &mut Ctx) {
        let from = self.applied_index + 1;
        let to = self.commit_index;
        // The log is lent out while its entries are applied, so they are
        // read in place rather than cloned. Nothing in this loop may touch
        // the log; what would (the work that was waiting for a lock) runs
        // after it.
        let log = std::mem::take(&mut self.log);
        let mut locks_changed = false;
        for e in log.range(from, to) {
            let applied = self.apply_entry(e);
            self.forget_pending(e);
            match applied {
                Applied::Nothing => {}
                Applied::Answered { id, response } => self.answer_applied(ctx, e.index, id, &response),
                Applied::Voted { txn, vote } => {
                    locks_changed = true;
                    self.on_prepare_applied(ctx, txn, vote);
                }
                Applied::Resolved { txn } => {
                    locks_changed = true;
                    self.on_resolve_applied(ctx, txn);
                }
                Applied::Decided { txn } => {
                    locks_changed = true;
                    let response = e.decided_response().expect("a decision applied as one");
                    self.answer_applied(ctx, e.index, txn.request_id(), &response);
                    self.on_decide_applied(ctx, txn, &response);
                }
            }
        }
        self.log = log;
        while let Some((&i, _)) = self.parked_reads.first_key_value() {
            if i > self.commit_index {
                break;
            }
            let (_, rs) = self.parked_reads.pop_first().expect("non-empty");
            self.parked_count -= rs.len();
            // Still under the lease: the write it waited for committed, but
            // a lease that lapsed meanwhile may mean a newer primary.
            for (token, id, result) in rs {
                self.answer_read(ctx, token, id, result);
            }
        }
        self.compact();
        if locks_changed {
            self.release_lock_waiters(ctx);
        }
    }

    /// A primary cut off from its backups tells the clients waiting for
    /// its writes to commit, and its parked reads, that it is cut off, so
    /// that they ask elsewhere now rather than after their attempt timeout.
    /// A write told so may still commit here (if the partition heals in
    /// time) or be inherited by the next primary: the front end retries it
    /// under the same request id, which runs it at most once.
    fn release_waiting_clients(&mut self, ctx: &mut Ctx, view: &View) {
        let cut_off = || Err(ClientError::CutOff { view: view.clone() });
        for (_, ws) in std::mem::take(&mut self.waiters) {
            for (token, id) in ws {
                ctx.out.reply(token, ClientReply::Response { id, result: cut_off(), at: 0, stale_ms: None });
            }
        }
        for (_, rs) in std::mem::take(&mut self.parked_reads) {
            for (token, id, _) in rs {
                ctx.out.reply(token, ClientReply::Response { id, result: cut_off(), at: 0, stale_ms: None });
            }
        }
        self.parked_count = 0;
    }

    /// Answers the clients of request `id`, carried out by entry `index`.
    fn answer_applied(&mut self, ctx: &mut Ctx, index: Index, id: RequestId, response: &OpResult) {
        self.answer_awaiting(ctx.out, id, response, index);
        if let Some(ws) = self.waiters.remove(&index) {
            for (token, id) in ws {
                let written = matches!(response, OpResult::Written { .. } | OpResult::Deleted { .. });
                if self.bugs.refuse_executed_write && written && id.seq % 3 == 0 {
                    let refusal = ClientError::Malformed { reason: "refused (bug refuse-executed-write)".into() };
                    ctx.out.reply(token, ClientReply::Response { id, result: Err(refusal), at: 0, stale_ms: None });
                    continue;
                }
                // Covered by its own index, which is committed: a member
                // that applied that far holds this write (the client's
                // session token moves past it). For a single-key write that
                // is its version.
                let at = index;
                ctx.out.reply(token, ClientReply::Response { id, result: Ok(response.clone()), at, stale_ms: None });
            }
        }
    }

    /// Heartbeats, retransmissions, and the view changes a primary makes:
    /// dropping members that stopped acking, settling an admission.
    pub(super) fn tick_primary(&mut self, ctx: &mut Ctx, view: &View) {
        let now = ctx.out.now();
        if self.cut_off(now) {
            self.release_waiting_clients(ctx, view);
        }
        self.tick_handover(ctx);
        if !self.is_primary() {
            return;
        }
        self.append_noop_if_inherited(ctx);
        if now >= self.next_heartbeat_ms {
            self.next_heartbeat_ms = now + self.timing.heartbeat_ms;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for p in peers {
                self.send_appends(ctx, p, true);
            }
        }
        let mut resend = Vec::new();
        for (&id, p) in self.progress.iter_mut() {
            if p.match_index < self.log.last_index() && now >= p.last_progress_ms + self.timing.retransmit_ms {
                p.next_index = p.match_index + 1;
                p.last_progress_ms = now;
                resend.push(id);
            }
        }
        for (&id, p) in self.progress.iter_mut() {
            if let Some(s) = p.stream.as_mut().filter(|s| s.sent > s.acked) {
                // Chunks lost on the way (a connection dropped): resent from
                // what the member holds, not from the start.
                if now >= s.last_ack_ms + self.timing.retransmit_ms {
                    s.sent = s.acked;
                    s.last_ack_ms = now;
                    s.rewound_to = None;
                    resend.push(id);
                }
            }
        }
        resend.sort_unstable();
        resend.dedup();
        for id in resend {
            self.send_appends(ctx, id, false);
        }
        // Forget learners that went quiet.
        let timeout = self.timing.backup_timeout_ms;
        let admitted = [self.admitting, self.unresolved_admission];
        self.progress.retain(|id, p| !p.learner || admitted.contains(&Some(*id)) || now < p.last_ack_ms + timeout * 10);
        // And learners the placement no longer names (moved away while
        // they caught up): streaming on to them kept their node's replica
        // alive, recreated by each append after it dropped it (found by the
        // simulator, passive seed 221).
        self.progress.retain(|id, p| !p.learner || admitted.contains(&Some(*id)) || view.is_placed(*id));
        if self.unresolved_admission.is_some() && !self.view_change_in_flight {
            // Settle the register: a new epoch with the same members
            // either wins (the old admission can no longer be chosen)
            // or reports the view that did.
            let next = view.next(self.me, view.members.clone());
            self.propose_view(ctx, next);
        }
        self.tick_placement(ctx, view);
        if !self.view_change_in_flight {
            let dead: Vec<NodeId> = view
                .members
                .iter()
                .copied()
                .filter(|m| *m != self.me)
                .filter(|m| self.progress.get(m).is_none_or(|p| now >= p.last_ack_ms + timeout))
                .collect();
            if !dead.is_empty() {
                let members = view.members.iter().copied().filter(|m| !dead.contains(m)).collect();
                let next = view.next(self.me, members);
                self.propose_view(ctx, next);
            }
        }
    }

    /// Appends `payload` as the next entry of this primary's (or
    /// sequencer's) epoch: recorded as pending, persisted, and streamed to
    /// the backups at the end of the step. Returns its index.
    pub(super) fn append_own(&mut self, ctx: &mut Ctx, payload: Payload) -> Index {
        let epoch = self.view.as_ref().expect("a primary has a view").epoch;
        let index = self.log.last_index() + 1;
        let entry = Entry { epoch, index, payload };
        self.note_pending(&entry);
        self.append_local(ctx, entry);
        self.dirty = true;
        index
    }

    /// Records an entry of the uncommitted suffix: its request id is pending
    /// (a retry waits for it rather than running again), the writes known
    /// before it applies join the overlay that new requests execute against,
    /// and a prepare's locks count as taken.
    pub(super) fn note_pending(&mut self, e: &Entry) {
        self.participant.note_pending(e);
        self.coordinator.note_pending(e);
        if let Some(id) = e.request_id() {
            self.pending_ids.insert(id, e.index);
        }
        if let Some(id) = e.fifo_write() {
            self.pending_fifo.insert(id);
        }
        for w in e.writes() {
            let v = match w {
                Write::Put { value, version, .. } => Some(Versioned { value: value.clone(), version: *version }),
                Write::Delete { .. } => None,
            };
            self.overlay.insert(w.key().to_vec(), (v, e.index));
        }
    }

    /// The entry committed: it is no longer pending, and its writes leave
    /// the overlay unless a later pending entry wrote the key again.
    pub(super) fn forget_pending(&mut self, e: &Entry) {
        self.participant.forget_pending(e);
        self.coordinator.forget_pending(e);
        if let Some(id) = e.request_id() {
            self.pending_ids.remove(&id);
        }
        if let Some(id) = e.fifo_write() {
            self.pending_fifo.remove(&id);
        }
        for w in e.writes() {
            if self.overlay.get(w.key()).is_some_and(|(_, i)| *i == e.index) {
                self.overlay.remove(w.key());
            }
        }
    }
}
