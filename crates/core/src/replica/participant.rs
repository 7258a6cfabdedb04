//! The participant of two-phase commit: the role a group's primary (its
//! sequencer, in an active group) plays for every transaction that touches
//! the group's keys.
//!
//! `canCommit?` (`on_can_commit`) becomes a `Prepare` entry; applying it
//! checks the part against the state at that point (versions, locks,
//! bounds) on every member alike, takes the locks and records the prepared
//! writes. The vote goes to the coordinator only once that entry is
//! committed, so every member of the view holds the prepared record and its
//! locks: a new primary still has them. `doCommit` / `doAbort`
//! (`on_do_commit`, `on_do_abort`) become a `Resolve` entry that applies or
//! drops the writes and releases the locks; `haveCommitted` follows its
//! commit. A transaction prepared for longer than `prepared_timeout_ms`
//! makes the primary ask the coordinator (`getDecision`), again every
//! `resend_ms` while it gets no answer.
//!
//! It must never vote yes before the prepare is durable on every member,
//! never release a lock before the decision is applied, never decide a
//! transaction's outcome itself, and never prepare a transaction it already
//! resolved. Everything here but the replicated state is volatile: a new
//! primary rebuilds it from its log and the coordinators' retries.

use super::{Ctx, Replica};
use crate::io::ClientToken;
use crate::limits::MAX_PREPARED_TXNS;
use crate::log::{Entry, Payload};
use crate::state::kv::Key;
use crate::state::op::validate_part;
use crate::state::sessions::Dedup;
use crate::state::txn::{AbortReason, LockMode, TxnId, TxnPart, Vote};
use crate::types::{Index, Millis, Mode, NodeId};
use crate::wire::{ClientRequest, PeerBody};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a primary tracks of its group's part in transactions, beyond the
/// replicated state. None of it survives a change of primary.
#[derive(Debug, Default)]
pub struct Participant {
    /// Prepare entries appended and not yet applied, by transaction.
    preparing: HashMap<TxnId, Index>,
    /// Coordinator nodes waiting for this group's vote.
    vote_waiters: HashMap<TxnId, Vec<NodeId>>,
    /// Resolve entries appended and not yet applied.
    resolving: HashMap<TxnId, Index>,
    /// Coordinator nodes waiting for `haveCommitted`.
    ack_waiters: HashMap<TxnId, Vec<NodeId>>,
    /// Parts of consistent reads waiting for writers' locks on their keys to
    /// go (their keys reserved meanwhile), with the coordinator nodes that
    /// asked. Ordered, so that they are prepared in the same order on every
    /// run of a seed.
    waiting: BTreeMap<TxnId, (Arc<TxnPart>, Vec<NodeId>)>,
    /// The locks that appended, unapplied prepares are about to take:
    /// (shared, exclusive) holders per key. A write to such a key waits, and
    /// a new prepare or one-group commit that conflicts is refused.
    pending_locks: HashMap<Key, (u32, u32)>,
    /// When this primary next asks the coordinator about each transaction
    /// prepared here.
    next_ask_ms: HashMap<TxnId, Millis>,
}

impl Participant {
    /// Whether a pending prepare will lock `key` against `mode`.
    pub(super) fn pending_conflict(&self, key: &[u8], mode: LockMode) -> bool {
        self.pending_locks
            .get(key)
            .is_some_and(|&(shared, exclusive)| exclusive > 0 || (mode == LockMode::Exclusive && shared > 0))
    }

    pub(super) fn is_pending_lock(&self, key: &[u8]) -> bool {
        self.pending_locks.contains_key(key)
    }

    /// Counts `part`'s locks as taken, though no applied prepare holds them
    /// yet: a pending prepare's, or a passive coordinator's own part while it
    /// collects votes.
    pub(super) fn lock_pending(&mut self, part: &TxnPart) {
        for (key, mode) in part.locks() {
            let l = self.pending_locks.entry(key.to_vec()).or_default();
            match mode {
                LockMode::Shared => l.0 += 1,
                LockMode::Exclusive => l.1 += 1,
            }
        }
    }

    /// Undoes `lock_pending`.
    pub(super) fn unlock_pending(&mut self, part: &TxnPart) {
        for (key, mode) in part.locks() {
            if let Some(l) = self.pending_locks.get_mut(key) {
                match mode {
                    LockMode::Shared => l.0 = l.0.saturating_sub(1),
                    LockMode::Exclusive => l.1 = l.1.saturating_sub(1),
                }
                if *l == (0, 0) {
                    self.pending_locks.remove(key);
                }
            }
        }
    }

    /// Records a prepare, resolve or other entry of the uncommitted suffix.
    pub(super) fn note_pending(&mut self, e: &Entry) {
        match &e.payload {
            Payload::Prepare { txn, part } => {
                self.preparing.insert(*txn, e.index);
                self.lock_pending(part);
            }
            Payload::Resolve { txn, .. } => {
                self.resolving.insert(*txn, e.index);
            }
            _ => {}
        }
    }

    /// The entry was applied: it is no longer pending.
    pub(super) fn forget_pending(&mut self, e: &Entry) {
        match &e.payload {
            Payload::Prepare { txn, part } => {
                self.preparing.remove(txn);
                self.unlock_pending(part);
            }
            Payload::Resolve { txn, .. } => {
                self.resolving.remove(txn);
            }
            _ => {}
        }
    }
}

impl Replica {
    /// canCommit?: the coordinator of `txn` asks this group to prepare its
    /// part. Answered with a `Vote` to `from`, once the answer is durable.
    pub fn on_can_commit(&mut self, ctx: &mut Ctx, from: NodeId, txn: TxnId, part: Arc<TxnPart>) {
        if !self.serves_transactions(ctx) {
            return self.redirect(ctx, from);
        }
        let group = self.group;
        let send_vote = |ctx: &mut Ctx, vote: Vote| ctx.out.send(from, PeerBody::Vote { group, txn, vote });
        if let Some(p) = self.state.prepared.get(&txn) {
            // Already prepared (a retry, or a new coordinator after a
            // failover): the same answer again, unless the id was reused.
            let vote = if p.part.digest == part.digest {
                let versions = p.part.writes.iter().map(|w| (w.key.clone(), p.version)).collect();
                let reads = p.part.reads.iter().map(|k| (k.clone(), self.state.kv.get(k).cloned())).collect();
                Vote::Yes { versions, reads }
            } else {
                refused("the transaction id was reused with other contents")
            };
            return send_vote(ctx, vote);
        }
        if self.participant.preparing.contains_key(&txn) {
            self.participant.vote_waiters.entry(txn).or_default().push(from);
            return;
        }
        match self.state.resolved_vote(txn) {
            Dedup::Done(v) => return send_vote(ctx, v.clone()),
            Dedup::Expired => return send_vote(ctx, Vote::No { reason: AbortReason::SessionExpired }),
            Dedup::New => {}
        }
        let view = self.view.as_ref().expect("primary has a view");
        if view.members.len() < view.min_members {
            // The operator asked for at least `min_members` copies of every
            // write; a prepare is the promise of one, so it is refused like a
            // plain write.
            let reason = format!(
                "group {} has {} members in its view, below its min_members {}",
                self.group,
                view.members.len(),
                view.min_members
            );
            return send_vote(ctx, refused(&reason));
        }
        if self.log.last_index() - self.commit_index >= crate::limits::MAX_UNCOMMITTED_ENTRIES || ctx.out.overloaded {
            // Overloaded: no answer; the coordinator asks again.
            return;
        }
        if part.waits_for_locks() {
            if let Some((_, askers)) = self.participant.waiting.get_mut(&txn) {
                askers.push(from);
                return;
            }
            if self.read_part_blocked(&part, txn) {
                if self.participant.waiting.len() >= MAX_PREPARED_TXNS {
                    return send_vote(ctx, refused("too many consistent reads wait for locks here"));
                }
                // Its keys are reserved at once, so no new writer takes
                // them; it waits only for the writers already holding some.
                // Writers never wait, so this cannot deadlock.
                self.participant.lock_pending(&part);
                self.participant.waiting.insert(txn, (part, vec![from]));
                return;
            }
        }
        if self.mode() == Mode::Passive {
            // The primary can tell now whether the prepare will hold: its
            // view of the state at the end of its log sees every lock the
            // entry will meet, and more (a pending resolution still counts as
            // holding its locks). A doomed prepare is not logged.
            let view = self.primary_state();
            if let Err(reason) = validate_part(&part.checks, &part.writes, &part.reads, txn, &view) {
                return send_vote(ctx, Vote::No { reason });
            }
        }
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        let index = self.log.last_index() + 1;
        let entry = Entry { epoch, index, payload: Payload::Prepare { txn, part } };
        if self.bugs.vote_before_prepared_durable {
            let versions = match &entry.payload {
                Payload::Prepare { part, .. } => part.writes.iter().map(|w| (w.key.clone(), index)).collect(),
                _ => unreachable!("built above"),
            };
            send_vote(ctx, Vote::Yes { versions, reads: Vec::new() });
        } else {
            self.participant.vote_waiters.entry(txn).or_default().push(from);
        }
        self.note_pending(&entry);
        self.append_local(ctx, entry);
        self.dirty = true;
    }

    /// A prepare entry was applied at this primary: the vote is final and
    /// durable on every member, so the coordinator may have it.
    pub(super) fn on_prepare_applied(&mut self, ctx: &mut Ctx, txn: TxnId, vote: Vote) {
        for to in self.participant.vote_waiters.remove(&txn).unwrap_or_default() {
            ctx.out.send(to, PeerBody::Vote { group: self.group, txn, vote: vote.clone() });
        }
    }

    /// doCommit: the coordinator of `txn` decided to commit.
    pub fn on_do_commit(&mut self, ctx: &mut Ctx, from: NodeId, txn: TxnId) {
        self.on_decision(ctx, from, txn, true);
    }

    /// doAbort: the coordinator of `txn` decided to abort.
    pub fn on_do_abort(&mut self, ctx: &mut Ctx, from: NodeId, txn: TxnId) {
        self.on_decision(ctx, from, txn, false);
    }

    fn on_decision(&mut self, ctx: &mut Ctx, from: NodeId, txn: TxnId, commit: bool) {
        if !self.serves_transactions(ctx) {
            return self.redirect(ctx, from);
        }
        if let Some((part, _)) = self.participant.waiting.remove(&txn) {
            // A consistent read still waiting for locks, given up by its
            // coordinator: it never prepared here.
            self.participant.unlock_pending(&part);
            self.release_lock_waiters(ctx);
        }
        let group = self.group;
        let ack = |ctx: &mut Ctx| ctx.out.send(from, PeerBody::HaveCommitted { group, txn });
        if self.participant.resolving.contains_key(&txn) {
            self.participant.ack_waiters.entry(txn).or_default().push(from);
            return;
        }
        if let Some(writes) = self.state.prepared_writes(txn) {
            let writes = if commit { writes } else { Vec::new() };
            self.participant.ack_waiters.entry(txn).or_default().push(from);
            self.append_own(ctx, Payload::Resolve { txn, commit, writes });
            return;
        }
        match self.state.resolved_vote(txn) {
            // Resolved already (a retry, or a new coordinator repeating it).
            Dedup::Done(_) => ack(ctx),
            _ if self.participant.preparing.contains_key(&txn) => {
                // The prepare is not applied here yet (this primary
                // inherited it): the coordinator repeats the decision.
            }
            // Resolved and forgotten: a commit needs this group's yes, and
            // a part voted yes stays prepared until it resolves.
            Dedup::Expired => ack(ctx),
            // Never prepared here (its canCommit? was lost, or it voted
            // no): an abort has nothing to undo.
            Dedup::New if !commit => ack(ctx),
            Dedup::New => {
                // A commit of a transaction this group never prepared: no
                // correct coordinator sends it (it needs this group's yes,
                // sent only once the prepare was durable on every member).
                // Acknowledging would hide a lost part; it is left
                // unanswered, and the simulator's checkers report it.
            }
        }
    }

    /// A resolve entry was applied at this primary: the coordinator may
    /// forget the decision as far as this group is concerned.
    pub(super) fn on_resolve_applied(&mut self, ctx: &mut Ctx, txn: TxnId) {
        self.participant.next_ask_ms.remove(&txn);
        for to in self.participant.ack_waiters.remove(&txn).unwrap_or_default() {
            ctx.out.send(to, PeerBody::HaveCommitted { group: self.group, txn });
        }
    }

    /// getDecision for every transaction prepared here for longer than
    /// `prepared_timeout_ms`, repeated every `resend_ms` until it resolves.
    /// A participant never decides alone, however long it waits.
    pub(super) fn tick_participant(&mut self, ctx: &mut Ctx) {
        if !self.serves_transactions(ctx) {
            return;
        }
        let now = ctx.out.now();
        let t = &self.txn_timing;
        let p = &mut self.participant;
        p.next_ask_ms.retain(|txn, _| self.state.prepared.contains_key(txn));
        for txn in self.state.prepared.keys() {
            if p.resolving.contains_key(txn) {
                continue;
            }
            let next = p.next_ask_ms.entry(*txn).or_insert(now + t.prepared_timeout_ms);
            if now >= *next {
                *next = now + t.resend_ms;
                ctx.send_to_group(txn.home, PeerBody::GetDecision { group: self.group, txn: *txn });
            }
        }
    }

    /// Whether this replica acts for its group in two-phase commit now: it
    /// is the primary and, in a passive group, no longer waiting out its
    /// predecessor's lease (it takes no work before that).
    pub(super) fn serves_transactions(&self, ctx: &Ctx) -> bool {
        self.is_primary() && (self.mode() == Mode::Active || ctx.out.now() >= self.serve_after_ms)
    }

    /// Tells a node that sent a transaction message to a non-primary who
    /// leads the group, so its next attempt goes there.
    pub(super) fn redirect(&mut self, ctx: &mut Ctx, to: NodeId) {
        if let Some(view) = &self.view {
            if view.leader != self.me {
                ctx.out.send(to, PeerBody::StaleEpoch { view: view.clone() });
            }
        }
    }

    /// Holds `req` until no prepared transaction locks its key against it.
    pub(super) fn wait_for_lock(&mut self, ctx: &mut Ctx, token: ClientToken, key: &[u8], req: ClientRequest) {
        if self.lock_waiter_count >= crate::limits::MAX_LOCK_WAITERS {
            let id = req.id;
            let result = Err(crate::wire::ClientError::Busy);
            return ctx.out.reply(token, crate::wire::ClientReply::Response { id, result, at: 0, stale_ms: None });
        }
        self.lock_waiter_count += 1;
        self.lock_waiters.entry(key.to_vec()).or_default().push((token, req));
    }

    /// Whether a prepared (or about to be prepared) transaction's lock keeps
    /// `op` on `key` from running now: a read waits for a transaction that
    /// will write the key; a write waits for any that holds it.
    ///
    /// A read waits for a prepare still in the log's uncommitted suffix too:
    /// a new primary inherits prepares its predecessor may already have
    /// committed and voted on, so their transaction may be decided and
    /// acknowledged while this primary's applied state holds no lock yet
    /// (found by the simulator: a new passive primary answered a read with
    /// the value a transaction acknowledged as committed had replaced).
    pub(super) fn blocked_by_lock(&self, key: &[u8], read: bool) -> bool {
        if read {
            self.state.locks.is_written(key) || self.participant.pending_conflict(key, LockMode::Shared)
        } else {
            self.state.locks.is_held(key) || self.participant.is_pending_lock(key)
        }
    }

    /// Whether a writer (another transaction) holds, or is about to hold, a
    /// key of a consistent read's part exclusively.
    fn read_part_blocked(&self, part: &TxnPart, txn: TxnId) -> bool {
        part.locks().iter().any(|(key, _)| {
            self.state.locks.conflicts(key, LockMode::Shared, txn)
                || self.participant.pending_conflict(key, LockMode::Shared)
        })
    }

    /// Prepares every consistent read that was waiting for locks which are
    /// gone now.
    fn release_waiting_reads(&mut self, ctx: &mut Ctx) {
        let waiting: Vec<TxnId> = self.participant.waiting.keys().copied().collect();
        for txn in waiting {
            let (part, _) = &self.participant.waiting[&txn];
            let part = Arc::clone(part);
            // Its own reservation does not block it.
            self.participant.unlock_pending(&part);
            if self.read_part_blocked(&part, txn) {
                self.participant.lock_pending(&part);
                continue;
            }
            let (part, askers) = self.participant.waiting.remove(&txn).expect("listed above");
            for from in askers {
                self.on_can_commit(ctx, from, txn, Arc::clone(&part));
            }
        }
    }

    /// Runs again every held request whose key is free now.
    pub(super) fn release_lock_waiters(&mut self, ctx: &mut Ctx) {
        if !self.participant.waiting.is_empty() {
            self.release_waiting_reads(ctx);
        }
        if self.lock_waiters.is_empty() {
            return;
        }
        let free: Vec<Key> = self
            .lock_waiters
            .iter()
            .filter(|(key, reqs)| reqs.iter().any(|(_, r)| !self.blocked_by_lock(key, r.op.is_read())))
            .map(|(key, _)| key.clone())
            .collect();
        for key in free {
            let reqs = self.lock_waiters.remove(&key).unwrap_or_default();
            self.lock_waiter_count -= reqs.len();
            for (token, req) in reqs {
                self.on_client_request(ctx, token, req);
            }
        }
    }
}

fn refused(reason: &str) -> Vote {
    Vote::No { reason: AbortReason::Refused { reason: reason.to_string() } }
}
