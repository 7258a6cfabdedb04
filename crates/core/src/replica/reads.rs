//! Reads a backup of a passive group serves, at the consistency the client
//! chose (`wire::Consistency`), and the primary's side of them (read
//! indexes).
//!
//! - Linearizable: the backup asks the primary for a read index (the
//!   primary's commit index, given only while it holds its lease), and
//!   answers once it applied that far.
//! - Session: the backup answers once it applied the client's token index
//!   (`ClientRequest::after`).
//! - Stale (`max_ms`): the backup answers if its state is at most `max_ms`
//!   old. It knows how old without trusting the clocks to agree: an
//!   `Append` carries the newest primary time this member echoed in an ack
//!   the primary had received (`acked_sent_ms`); the member remembers when,
//!   by its own clock, it sent the first ack echoing that time. The
//!   primary's commit index in that append was current after that moment,
//!   so once the member applied it, its state is fresh as of that moment.
//!   Only the rate of the member's clock is trusted (`MAX_CLOCK_DRIFT_PPM`,
//!   as for the lease), and the age it reports is padded by it.
//!
//! Every level also waits while a prepared transaction holds the key for
//! writing (its decision may already be acknowledged elsewhere).
//!
//! It must never answer older than the level allows, never hold more than
//! `MAX_HELD_READS` reads, and never hold one longer than
//! `held_read_wait_ms`: a read not served in time is refused
//! (`Unavailable`) and the front end asks the primary instead.

use super::{Ctx, Replica, Role};
use crate::io::ClientToken;
use crate::limits::{MAX_ACK_TIMES, MAX_HELD_READS};
use crate::state::kv::Key;
use crate::state::op::OpResult;
use crate::types::{Epoch, Index, Millis, NodeId, RequestId};
use crate::wire::{ClientError, ClientReply, ClientRequest, Consistency, PeerBody};

/// The fastest a node's clock may run slow relative to real time, in parts
/// per million, that staleness bounds allow for: a member's elapsed local
/// time is padded by this much before it is compared to a bound. The lease
/// makes the same kind of assumption (`primary_suspect_ms` exceeds
/// `lease_ms` by more than the drift).
pub const MAX_CLOCK_DRIFT_PPM: u64 = 50_000;

/// A read a backup holds until it may answer it.
#[derive(Clone, Debug)]
pub(super) struct HeldRead {
    token: ClientToken,
    id: RequestId,
    key: Key,
    /// The index this member must have applied (the client's token, and the
    /// read index once known).
    need: Index,
    /// Linearizable: the read index request not answered yet.
    ask: Option<u64>,
    /// A stale read (held while its key was locked): its answer says how
    /// old the state is.
    stale: bool,
    deadline_ms: Millis,
}

/// What a member knows of how fresh its state is (see the module doc).
#[derive(Clone, Debug, Default)]
pub(super) struct Freshness {
    /// Local time as of which the applied state is known fresh.
    pub(super) as_of_ms: Option<Millis>,
    /// A commit index of the primary and the local time it was current
    /// after, waiting for this member to apply that far.
    pending: Option<(Index, Millis)>,
    /// (epoch, primary time echoed, local time of the first ack echoing it).
    acks: std::collections::VecDeque<(Epoch, Millis, Millis)>,
}

/// The refusal of a read a member could not serve: the front end retries
/// it at the primary.
fn behind(reason: &str) -> ClientError {
    ClientError::Unavailable { reason: format!("this backup cannot serve the read: {reason}") }
}

impl Replica {
    /// A read sent to this member while it is a backup of a passive group.
    pub(super) fn read_at_backup(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        let id = req.id;
        let now = ctx.out.now();
        if let Err(e) = req.op.validate() {
            return ctx.out.reply(token, ClientReply::response(id, Err(e.into())));
        }
        let view = self.view.clone().expect("a backup has a view");
        if req.epoch < view.epoch {
            // The front end's view is old: the node it takes for the leader
            // may be a backup now, and it would retry this read there for as
            // long as this member could not serve it. Teach it the view.
            let result = Err(ClientError::NotLeader { view: Some(view) });
            return ctx.out.reply(token, ClientReply::response(id, result));
        }
        let key = req.op.key().expect("a read names its key").to_vec();
        let mut need = req.after;
        if self.bugs.session_read_ignores_token {
            need = 0;
        }
        let mut ask = None;
        match req.consistency {
            Consistency::Stale { max_ms } => {
                let served = self.staleness_ms(now).filter(|&s| s <= max_ms || self.bugs.stale_read_past_bound);
                let Some(stale_ms) = served else {
                    let reason = format!("its state may be older than {max_ms} ms");
                    return ctx.out.reply(token, ClientReply::response(id, Err(behind(&reason))));
                };
                if !self.state.locks.is_written(&key) {
                    let result = Ok(OpResult::Value(self.state.kv.get(&key).cloned()));
                    let at = self.applied_index;
                    self.backup_reads_served += 1;
                    return ctx.out.reply(token, ClientReply::Response { id, result, at, stale_ms: Some(stale_ms) });
                }
                // Locked: held like a session read with no token.
            }
            Consistency::Session => {}
            Consistency::Linearizable if self.bugs.backup_read_ignores_index => {}
            Consistency::Linearizable => {
                let n = self.next_ask;
                self.next_ask += 1;
                ask = Some(n);
                ctx.out.send(view.leader, PeerBody::ReadIndex { group: self.group, epoch: view.epoch, ask: n });
            }
        }
        let stale = matches!(req.consistency, Consistency::Stale { .. });
        if ask.is_none() && need <= self.applied_index && !self.state.locks.is_written(&key) {
            // Answerable now: served without passing through the queue, whose
            // every pass looks at each held read (a scan per read showed as
            // the cost of backup reads under load).
            let result = Ok(OpResult::Value(self.state.kv.get(&key).cloned()));
            let stale_ms = if stale { self.staleness_ms(now) } else { None };
            self.backup_reads_served += 1;
            return ctx.out.reply(token, ClientReply::Response { id, result, at: self.applied_index, stale_ms });
        }
        if self.held_reads.len() >= MAX_HELD_READS {
            return ctx.out.reply(token, ClientReply::response(id, Err(ClientError::Busy)));
        }
        let deadline_ms = now + self.timing.held_read_wait_ms;
        self.held_reads.push_back(HeldRead { token, id, key, need, ask, stale, deadline_ms });
    }

    /// Answers every held read this member may answer now, and refuses
    /// those past their deadline (or all of them, once it is no backup).
    pub(super) fn serve_held_reads(&mut self, ctx: &mut Ctx) {
        if self.held_reads.is_empty() {
            return;
        }
        let now = ctx.out.now();
        let backup = self.role() == Role::Backup;
        let held = std::mem::take(&mut self.held_reads);
        for r in held {
            let ready = r.ask.is_none() && r.need <= self.applied_index && !self.state.locks.is_written(&r.key);
            if backup && ready {
                let result = Ok(OpResult::Value(self.state.kv.get(&r.key).cloned()));
                let stale_ms = if r.stale { self.staleness_ms(now) } else { None };
                let reply = ClientReply::Response { id: r.id, result, at: self.applied_index, stale_ms };
                self.backup_reads_served += 1;
                ctx.out.reply(r.token, reply);
            } else if !backup || now >= r.deadline_ms {
                let reason = if backup { "it did not catch up in time" } else { "it is no longer a backup" };
                ctx.out.reply(r.token, ClientReply::response(r.id, Err(behind(reason))));
            } else {
                self.held_reads.push_back(r);
            }
        }
    }

    /// The primary's answer to a read index request.
    pub fn on_read_index_reply(&mut self, ctx: &mut Ctx, epoch: Epoch, ask: u64, index: Option<Index>) {
        let _ = epoch;
        let mut refused = Vec::new();
        for r in self.held_reads.iter_mut().filter(|r| r.ask == Some(ask)) {
            match index {
                Some(i) => {
                    r.need = r.need.max(i);
                    r.ask = None;
                }
                None => refused.push((r.token, r.id)),
            }
        }
        self.held_reads.retain(|r| !refused.iter().any(|(t, _)| *t == r.token));
        for (token, id) in refused {
            let reason = "the primary could not vouch for a read index";
            ctx.out.reply(token, ClientReply::response(id, Err(behind(reason))));
        }
        self.serve_held_reads(ctx);
    }

    /// A backup asks for a read index: the primary names its commit index
    /// only while it is the primary of `epoch`, serves (its predecessor's
    /// lease ran out) and holds its own lease, so no other primary can have
    /// had a write acknowledged that this index misses. A primary that
    /// inherited entries names the last of them: an earlier primary may
    /// have committed them.
    pub fn on_read_index(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, ask: u64) {
        let now = ctx.out.now();
        let current = self.is_primary() && self.view.as_ref().is_some_and(|v| v.epoch == epoch);
        let index = (current && now >= self.serve_after_ms && self.lease_valid(now))
            .then(|| self.commit_index.max(self.inherited_upto));
        ctx.out.send(from, PeerBody::ReadIndexReply { group: self.group, epoch, ask, index });
    }

    /// How old this member's applied state may be at local time `now`, in
    /// ms, padded for clock drift; `None` if it does not know.
    pub(super) fn staleness_ms(&self, now: Millis) -> Option<Millis> {
        let age = now.saturating_sub(self.freshness.as_of_ms?);
        Some(age + age * MAX_CLOCK_DRIFT_PPM / 1_000_000 + 1)
    }

    /// Notes that this member sent an ack echoing primary time `sent_ms` at
    /// local time `now` (only the first ack echoing a time is kept: the
    /// primary may have received any of them).
    pub(super) fn note_ack_sent(&mut self, epoch: Epoch, sent_ms: Millis, now: Millis) {
        let acks = &mut self.freshness.acks;
        if acks.back().is_some_and(|&(e, s, _)| e == epoch && s == sent_ms) {
            return;
        }
        if acks.len() >= MAX_ACK_TIMES {
            acks.pop_front();
        }
        acks.push_back((epoch, sent_ms, now));
    }

    /// An append of the primary of `epoch` carried its commit index and the
    /// newest time of its this member echoed: this member's state will be
    /// fresh as of when it sent that echo, once it applied that index.
    pub(super) fn note_primary_commit(&mut self, epoch: Epoch, commit_index: Index, acked_sent_ms: Millis) {
        let f = &mut self.freshness;
        if let Some(&(_, _, local)) = f.acks.iter().find(|&&(e, s, _)| e == epoch && s == acked_sent_ms) {
            if f.pending.is_none_or(|(_, l)| l <= local) {
                f.pending = Some((commit_index, local));
            }
        }
        // Older echoes of this primary will not be named again.
        f.acks.retain(|&(e, s, _)| e != epoch || s >= acked_sent_ms);
        self.note_applied_freshness();
    }

    /// Moves the freshness mark once the state reached a pending commit index.
    pub(super) fn note_applied_freshness(&mut self) {
        let f = &mut self.freshness;
        if let Some((index, local)) = f.pending {
            if index <= self.applied_index {
                f.as_of_ms = Some(f.as_of_ms.map_or(local, |a| a.max(local)));
                f.pending = None;
            }
        }
    }
}
