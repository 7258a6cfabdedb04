//! The coordinator of two-phase commit: the role a group's primary (its
//! sequencer, in an active group) plays for every transaction whose home is
//! the group (the group of its first written key).
//!
//! A client's `Commit` (`on_commit_request`) whose keys all live in this
//! group commits in one log entry, with no two-phase commit. Otherwise the
//! coordinator sends `canCommit?` to every participant group (this one
//! included) and collects the votes (`on_vote`). All yes: it decides to
//! commit; any no, or not every vote within `vote_timeout_ms`: to abort.
//! The decision is a `Decide` entry in this group's log, and nobody hears
//! it (neither the client nor a participant) before that entry is committed
//! on every member: a new primary finds every decision in its log and
//! drives it to the end. Participants are told (`doCommit` / `doAbort`)
//! until each acknowledges (`on_have_committed`); acknowledged decisions
//! are retired in batches by `Ended` entries.
//!
//! Presumed abort: asked for the outcome of a transaction it has no record
//! of (`on_get_decision`, or a client's `TxnStatus`), the coordinator first
//! logs an abort for it (a tombstone), so that it can never commit later,
//! and answers only once that is committed; and it answers so only after
//! it has committed an entry of its own epoch, so its log holds every
//! decision an earlier primary may have made.
//!
//! It must never send a decision before it is durable in the home group,
//! never decide to commit without every participant's yes, and never read
//! "no record" as abort without recording the abort first.

use super::{Ctx, Replica};
use crate::io::ClientToken;
use crate::limits::{MAX_COORDINATED_TXNS, MAX_ENDED_PER_ENTRY};
use crate::log::{Entry, Payload};
use crate::state::kv::Write;
use crate::state::op::{execute_commit, validate_part, Op, OpResult};
use crate::state::sessions::Dedup;
use crate::state::txn::{AbortReason, TxnId, TxnOutcome, TxnPart, TxnRequest, Vote};
use crate::types::{GroupId, Index, Millis, Mode, NodeId, RequestId};
use crate::wire::{ClientError, ClientReply, PeerBody};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What a primary tracks of the transactions it coordinates, beyond the
/// replicated decisions. None of it survives a change of primary: a new
/// one finds the decisions in its log, and clients retry the rest.
#[derive(Debug, Default)]
pub struct Coordinator {
    /// Transactions collecting votes.
    collecting: BTreeMap<TxnId, Collecting>,
    /// Logged decisions being told to their participants.
    telling: BTreeMap<TxnId, Telling>,
    /// Decisions every participant acknowledged, for the next `Ended` entry.
    ended: Vec<TxnId>,
    /// Decisions in an `Ended` entry that is not applied yet.
    ending: BTreeSet<TxnId>,
    /// Who asked for the outcome of a transaction whose decision is being
    /// logged, or is still to be made. Ordered: a primary that steps down
    /// answers them in iteration order, which must not depend on a
    /// per-process hash seed (found by the simulator: one seed ran
    /// differently from run to run).
    askers: BTreeMap<TxnId, Vec<Asker>>,
}

#[derive(Debug)]
struct Collecting {
    /// The parts the participant groups were asked to prepare.
    parts: BTreeMap<GroupId, Arc<TxnPart>>,
    /// A passive home group's own part: checked by this primary when the
    /// commit arrived and locked in its memory (`Participant::lock_pending`)
    /// rather than prepared through the log; the decision entry carries its
    /// writes. Were this primary to fail first, the transaction ends by
    /// presumed abort, so nothing of it needs to survive.
    home: Option<Arc<TxnPart>>,
    votes: BTreeMap<GroupId, Vote>,
    /// The client's attempts (a retry adds one) waiting for the outcome.
    clients: Vec<(ClientToken, RequestId)>,
    digest: u64,
    deadline_ms: Millis,
    next_send_ms: Millis,
}

#[derive(Debug)]
struct Telling {
    commit: bool,
    participants: Vec<GroupId>,
    acked: BTreeSet<GroupId>,
    next_send_ms: Millis,
    /// A consistent read's release: no decision was logged, so none is
    /// retired once every participant acknowledged.
    unlogged: bool,
}

/// Someone waiting to hear a transaction's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asker {
    /// A participant's `getDecision`: answered with `doCommit`/`doAbort`.
    Participant { node: NodeId, group: GroupId },
    /// A client's `TxnStatus` query.
    Client { token: ClientToken, id: RequestId },
}

impl Coordinator {
    pub(super) fn note_pending(&mut self, e: &Entry) {
        if let Payload::Ended { txns } = &e.payload {
            self.ending.extend(txns.iter().copied());
        }
    }

    pub(super) fn forget_pending(&mut self, e: &Entry) {
        if let Payload::Ended { txns } = &e.payload {
            for t in txns {
                self.ending.remove(t);
            }
        }
    }

    /// Transactions in progress here: collecting votes or being told.
    pub fn in_progress(&self) -> usize {
        self.collecting.len() + self.telling.len()
    }

    /// Whether `txn` is collecting votes here: a retry of its commit waits
    /// for the outcome.
    pub(super) fn is_collecting(&self, txn: TxnId) -> bool {
        self.collecting.contains_key(&txn)
    }
}

impl Replica {
    /// A client's commit of transaction `id`, whose home is this group. The
    /// request passed the checks of `on_client_request` (primary, epoch,
    /// limits, a retry of a finished or pending commit answered).
    /// `digest` is the request's (`TxnRequest::digest`), computed once.
    pub(super) fn on_commit_request(
        &mut self,
        ctx: &mut Ctx,
        token: ClientToken,
        id: RequestId,
        req: TxnRequest,
        digest: u64,
    ) {
        let reply =
            |ctx: &mut Ctx, result| ctx.out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        let Some(cluster) = ctx.cluster else {
            return reply(ctx, Err(ClientError::Unavailable { reason: "the cluster map is not known yet".into() }));
        };
        let home = cluster.group_of(req.home_key().expect("a validated transaction has a key"));
        if home != self.group {
            let reason = format!(
                "a transaction goes to its home group (the group of its first written key, else its first read one), \
                 group {home}, not group {}",
                self.group
            );
            return reply(ctx, Err(ClientError::Malformed { reason }));
        }
        let txn = TxnId::new(id, self.group);
        if let Some(c) = self.coordinator.collecting.get_mut(&txn) {
            if c.digest != digest {
                let reason = "the transaction id was reused with other contents".to_string();
                return reply(ctx, Err(ClientError::Malformed { reason }));
            }
            c.clients.push((token, id));
            return;
        }
        let parts: BTreeMap<GroupId, Arc<TxnPart>> =
            req.split(cluster, digest).into_iter().map(|(g, p)| (g, Arc::new(p))).collect();
        if parts.len() == 1 && req.reads.is_empty() {
            // One group holds every key: one entry commits it, no 2PC. A
            // passive primary decides it against its view of the end of its
            // log; an active group's members each check it as they apply it.
            if self.mode() == Mode::Active {
                return self.sequence(ctx, token, id, Op::Commit(req));
            }
            let index = self.log.last_index() + 1;
            let (outcome, writes) = execute_commit(&req, index, txn, &self.primary_state());
            let commit = outcome.is_committed();
            let index = self.log_decision(ctx, txn, commit, Vec::new(), outcome, writes, digest);
            return self.answer_when_applied(token, id, index);
        }
        if self.coordinator.in_progress() >= MAX_COORDINATED_TXNS {
            return reply(ctx, Err(ClientError::Busy));
        }
        let mut parts = parts;
        let home = match self.mode() {
            // An active group's part is prepared like any other: its
            // sequencer does not execute ahead of its log. So is a
            // consistent read's, which may have to wait for writers' locks
            // (the participant's prepare does that) and reads under its own.
            Mode::Active => None,
            Mode::Passive if !req.reads.is_empty() => None,
            Mode::Passive => {
                let part = parts.remove(&self.group).expect("the home group holds the home key");
                // Checked now against this primary's view of the end of its
                // log; from here on its locks keep every later request off
                // the part's keys until the decision is appended.
                if let Err(reason) = validate_part(&part.checks, &part.writes, &part.reads, txn, &self.primary_state())
                {
                    let outcome = TxnOutcome::Aborted { reason };
                    let index = self.log_decision(ctx, txn, false, Vec::new(), outcome, Vec::new(), digest);
                    return self.answer_when_applied(token, id, index);
                }
                self.participant.lock_pending(&part);
                Some(part)
            }
        };
        let now = ctx.out.now();
        for (&group, part) in &parts {
            ctx.send_to_group(group, PeerBody::CanCommit { group, txn, part: Arc::clone(part) });
        }
        let t = &self.txn_timing;
        self.coordinator.collecting.insert(
            txn,
            Collecting {
                parts,
                home,
                votes: BTreeMap::new(),
                clients: vec![(token, id)],
                digest,
                deadline_ms: now + t.vote_timeout_ms,
                next_send_ms: now + t.resend_ms,
            },
        );
    }

    /// A participant's vote.
    pub fn on_vote(&mut self, ctx: &mut Ctx, group: GroupId, txn: TxnId, vote: Vote) {
        if !self.is_primary() {
            return;
        }
        let Some(c) = self.coordinator.collecting.get_mut(&txn) else { return };
        if !c.parts.contains_key(&group) {
            return;
        }
        let vote = c.votes.entry(group).or_insert(vote).clone();
        match vote {
            Vote::No { reason } => self.decide(ctx, txn, Err(reason)),
            Vote::Yes { .. } if self.bugs.commit_without_all_votes => self.decide(ctx, txn, Ok(())),
            Vote::Yes { .. } if c.votes.len() == c.parts.len() => {
                if c.votes.values().all(|v| matches!(v, Vote::Yes { .. })) {
                    self.decide(ctx, txn, Ok(()))
                }
            }
            Vote::Yes { .. } => {}
        }
    }

    /// Decides `txn`: logs the decision, and tells everyone once it is
    /// committed (`on_decide_applied`).
    fn decide(&mut self, ctx: &mut Ctx, txn: TxnId, verdict: Result<(), AbortReason>) {
        let Some(c) = self.coordinator.collecting.remove(&txn) else { return };
        let commit = verdict.is_ok();
        if commit && c.home.is_none() && c.parts.values().all(|p| p.waits_for_locks()) {
            return self.finish_consistent_read(ctx, txn, c);
        }
        let participants: Vec<GroupId> = c.parts.keys().copied().filter(|g| *g != self.group).collect();
        let index = self.log.last_index() + 1;
        // The home group's part resolves with the decision itself: a part
        // this primary checked and locked takes the decision's index as its
        // version; one prepared through the log (an active home group) its
        // prepare's.
        let writes: Vec<Write> = match (&c.home, commit) {
            (_, false) => Vec::new(),
            (Some(home), true) => home.writes.iter().map(|w| w.at(index)).collect(),
            (None, true) => self.state.prepared_writes(txn).unwrap_or_default(),
        };
        let outcome = match verdict {
            Ok(()) => {
                let (mut versions, mut reads) = (Vec::new(), Vec::new());
                for v in c.votes.values() {
                    if let Vote::Yes { versions: vs, reads: rs } = v {
                        versions.extend(vs.iter().cloned());
                        reads.extend(rs.iter().cloned());
                    }
                }
                if let Some(home) = &c.home {
                    versions.extend(home.writes.iter().map(|w| (w.key.clone(), index)));
                }
                versions.sort();
                reads.sort_by(|a, b| a.0.cmp(&b.0));
                TxnOutcome::Committed { versions, reads }
            }
            Err(reason) => TxnOutcome::Aborted { reason },
        };
        let logged = self.log_decision(ctx, txn, commit, participants, outcome, writes, c.digest);
        debug_assert_eq!(logged, index);
        if let Some(home) = &c.home {
            // The decision is in the log now (its writes in the overlay):
            // later requests are ordered after it, so the part's locks go.
            self.participant.unlock_pending(home);
            self.release_lock_waiters(ctx);
        }
        for (token, id) in c.clients {
            self.answer_when_applied(token, id, index);
        }
        if self.bugs.decide_before_durable {
            self.tell_participants(ctx, txn);
        }
    }

    /// Every group of a consistent read voted yes: each read its keys under
    /// shared locks that all of them hold now, so the values are as of this
    /// one instant. It wrote nothing, so there is nothing to decide durably:
    /// the client gets the values at once, and every group (this one
    /// included) is told to release its locks, until each acknowledges. The
    /// release is an abort (for a transaction that writes nothing, the same
    /// as a commit), so that whatever else is ever decided about this id
    /// agrees with it: a presumed abort when a group asks after this primary
    /// failed, or the abort of a retry a new primary runs and times out on
    /// (found by the simulator: releasing with commit, then a presumed abort
    /// of the same id, gave one transaction two decisions).
    fn finish_consistent_read(&mut self, ctx: &mut Ctx, txn: TxnId, c: Collecting) {
        let mut reads = Vec::new();
        for v in c.votes.values() {
            if let Vote::Yes { reads: rs, .. } = v {
                reads.extend(rs.iter().cloned());
            }
        }
        reads.sort_by(|a, b| a.0.cmp(&b.0));
        let response = OpResult::Txn(TxnOutcome::Committed { versions: Vec::new(), reads });
        for (token, id) in c.clients {
            ctx.out.reply(token, ClientReply::Response { id, result: Ok(response.clone()), at: 0, stale_ms: None });
        }
        let participants: Vec<GroupId> = c.parts.keys().copied().collect();
        for &g in &participants {
            ctx.send_to_group(g, decision(g, txn, false));
        }
        let next_send_ms = ctx.out.now() + self.txn_timing.resend_ms;
        let telling = Telling { commit: false, participants, acked: BTreeSet::new(), next_send_ms, unlogged: true };
        self.coordinator.telling.insert(txn, telling);
    }

    /// Appends the decision on `txn` and returns its index.
    #[allow(clippy::too_many_arguments)]
    fn log_decision(
        &mut self,
        ctx: &mut Ctx,
        txn: TxnId,
        commit: bool,
        participants: Vec<GroupId>,
        outcome: TxnOutcome,
        writes: Vec<Write>,
        digest: u64,
    ) -> Index {
        self.append_own(ctx, Payload::Decide { txn, commit, participants, outcome, writes, digest })
    }

    /// Whether a commit under `id` of a request with `digest` reuses the id
    /// of a transaction with other contents (finished, being decided, or
    /// being sequenced).
    pub(super) fn reuses_txn_id(&self, id: RequestId, digest: u64) -> bool {
        if let Dedup::Done(d) = self.state.commit_digests.lookup_remembered(id) {
            return *d != digest;
        }
        let Some(&index) = self.pending_ids.get(&id) else { return false };
        match self.log.get(index).map(|e| &e.payload) {
            Some(Payload::Decide { digest: d, .. }) => *d != 0 && *d != digest,
            Some(Payload::Sequenced { op: Op::Commit(r), .. }) => r.digest() != digest,
            _ => false,
        }
    }

    /// The decision on `txn` is committed: the participants may hear it.
    pub(super) fn on_decide_applied(&mut self, ctx: &mut Ctx, txn: TxnId, response: &OpResult) {
        if !self.coordinator.telling.contains_key(&txn) {
            self.tell_participants(ctx, txn);
        }
        let commit = matches!(response, OpResult::Txn(o) if o.is_committed());
        for asker in self.coordinator.askers.remove(&txn).unwrap_or_default() {
            match asker {
                Asker::Participant { node, group } => send_decision(ctx, node, group, txn, commit),
                Asker::Client { token, id } => ctx
                    .out
                    .reply(token, ClientReply::Response { id, result: Ok(response.clone()), at: 0, stale_ms: None }),
            }
        }
    }

    /// Starts telling the participants of `txn`'s decision.
    fn tell_participants(&mut self, ctx: &mut Ctx, txn: TxnId) {
        let (commit, participants) = match self.state.decisions.get(&txn) {
            Some(d) => (d.commit, d.participants.clone()),
            // Only with `decide_before_durable`: the decision is not applied yet.
            None => match self.log.range(self.commit_index + 1, self.log.last_index()).find_map(|e| match &e.payload {
                Payload::Decide { txn: t, commit, participants, .. } if *t == txn => {
                    Some((*commit, participants.clone()))
                }
                _ => None,
            }) {
                Some(d) => d,
                None => return,
            },
        };
        if participants.is_empty() {
            return;
        }
        for &g in &participants {
            ctx.send_to_group(g, decision(g, txn, commit));
        }
        let next_send_ms = ctx.out.now() + self.txn_timing.resend_ms;
        let telling = Telling { commit, participants, acked: BTreeSet::new(), next_send_ms, unlogged: false };
        self.coordinator.telling.insert(txn, telling);
    }

    /// haveCommitted: participant `group` applied the decision on `txn`.
    pub fn on_have_committed(&mut self, _ctx: &mut Ctx, group: GroupId, txn: TxnId) {
        if !self.is_primary() {
            return;
        }
        let Some(t) = self.coordinator.telling.get_mut(&txn) else { return };
        t.acked.insert(group);
        if t.participants.iter().all(|g| t.acked.contains(g)) {
            let unlogged = t.unlogged;
            self.coordinator.telling.remove(&txn);
            if !unlogged {
                self.coordinator.ended.push(txn);
            }
        }
    }

    /// getDecision: participant `group`, prepared for long, asks what
    /// became of `txn`.
    pub fn on_get_decision(&mut self, ctx: &mut Ctx, from: NodeId, group: GroupId, txn: TxnId) {
        if !self.serves_transactions(ctx) {
            return self.redirect(ctx, from);
        }
        if let Some(d) = self.state.decisions.get(&txn) {
            return send_decision(ctx, from, group, txn, d.commit);
        }
        match self.state.sessions.lookup(txn.request_id()) {
            Dedup::Done(OpResult::Txn(o)) => return send_decision(ctx, from, group, txn, o.is_committed()),
            // The id answered something that is not a transaction: no
            // participant can hold a live prepare of it.
            Dedup::Done(_) => return,
            Dedup::New => {}
            // Its session was forgotten. A decision stays in `decisions`
            // until every participant applied it, so a participant still
            // prepared proves none was logged; and the transaction can
            // never commit now (its commit would be told `SessionExpired`).
            // Unless it is being decided right now, the answer is abort,
            // with no tombstone to log (logging one each time its record
            // was evicted again decided it twice; found by the simulator).
            Dedup::Expired => {}
        }
        let expired = matches!(self.state.sessions.lookup(txn.request_id()), Dedup::Expired);
        let asker = Asker::Participant { node: from, group };
        if self.pending_ids.contains_key(&txn.request_id()) || self.coordinator.collecting.contains_key(&txn) {
            // The decision is being logged, or still being made.
            let askers = self.coordinator.askers.entry(txn).or_default();
            if !askers.contains(&asker) {
                askers.push(asker);
            }
            return;
        }
        if expired {
            return send_decision(ctx, from, group, txn, false);
        }
        self.presume_abort(ctx, txn, asker);
    }

    /// A client asks what became of `txn` (home: this group).
    pub(super) fn on_txn_status(&mut self, ctx: &mut Ctx, token: ClientToken, id: RequestId, txn: TxnId) {
        let reply =
            |ctx: &mut Ctx, result| ctx.out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        if txn.home != self.group {
            let reason = format!("transaction {txn} has its home in group {}, not {}", txn.home, self.group);
            return reply(ctx, Err(ClientError::Malformed { reason }));
        }
        match self.state.sessions.lookup(txn.request_id()) {
            Dedup::Done(r @ OpResult::Txn(_)) => return reply(ctx, Ok(r.clone())),
            Dedup::Done(_) => {
                let reason = format!("request {txn} was not a transaction");
                return reply(ctx, Err(ClientError::Malformed { reason }));
            }
            Dedup::Expired => return reply(ctx, Err(ClientError::SessionExpired)),
            Dedup::New => {}
        }
        let asker = Asker::Client { token, id };
        if self.pending_ids.contains_key(&txn.request_id()) || self.coordinator.collecting.contains_key(&txn) {
            self.coordinator.askers.entry(txn).or_default().push(asker);
            return;
        }
        if !self.presume_abort(ctx, txn, asker) {
            let reason = "the new primary has not committed an entry of its own yet".to_string();
            reply(ctx, Err(ClientError::Unavailable { reason }));
        }
    }

    /// Records an abort for `txn`, of which this coordinator has no record,
    /// and answers `asker` once it is committed. Returns false if it cannot
    /// yet: a primary answers for "no record" only once it has committed an
    /// entry of its own epoch (it appends a no-op to get there).
    fn presume_abort(&mut self, ctx: &mut Ctx, txn: TxnId, asker: Asker) -> bool {
        if let Asker::Participant { node, group } = asker {
            if self.bugs.presume_commit {
                send_decision(ctx, node, group, txn, true);
                return true;
            }
            if self.bugs.abort_without_record {
                send_decision(ctx, node, group, txn, false);
                return true;
            }
        }
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        if self.log.epoch_at(self.commit_index) != Some(epoch) {
            self.append_noop_if_idle(ctx);
            return false;
        }
        let outcome = TxnOutcome::Aborted { reason: AbortReason::NoRecord };
        self.log_decision(ctx, txn, false, Vec::new(), outcome, Vec::new(), 0);
        self.coordinator.askers.entry(txn).or_default().push(asker);
        true
    }

    /// Resends what went unanswered, aborts what waited too long for votes,
    /// takes over the decisions a previous primary left unfinished, and
    /// retires acknowledged ones.
    pub(super) fn tick_coordinator(&mut self, ctx: &mut Ctx) {
        if !self.serves_transactions(ctx) {
            return;
        }
        let now = ctx.out.now();
        let resend = self.txn_timing.resend_ms;
        let mut timed_out = Vec::new();
        for (txn, c) in self.coordinator.collecting.iter_mut() {
            if now >= c.deadline_ms {
                timed_out.push(*txn);
            } else if now >= c.next_send_ms {
                c.next_send_ms = now + resend;
                for (&group, part) in &c.parts {
                    if !c.votes.contains_key(&group) {
                        let body = PeerBody::CanCommit { group, txn: *txn, part: Arc::clone(part) };
                        ctx.send_to_group(group, body);
                    }
                }
            }
        }
        for txn in timed_out {
            self.decide(ctx, txn, Err(AbortReason::Timeout));
        }
        let c = &mut self.coordinator;
        let logged_telling = c.telling.values().filter(|t| !t.unlogged).count();
        if self.state.decisions.len() > logged_telling + c.ended.len() + c.ending.len() {
            // Decisions an earlier primary logged and did not finish.
            let adopt: Vec<TxnId> = self
                .state
                .decisions
                .keys()
                .filter(|t| !c.telling.contains_key(t) && !c.ended.contains(t) && !c.ending.contains(t))
                .copied()
                .collect();
            for txn in adopt {
                let d = &self.state.decisions[&txn];
                let t = Telling {
                    commit: d.commit,
                    participants: d.participants.clone(),
                    acked: BTreeSet::new(),
                    next_send_ms: now,
                    unlogged: false,
                };
                c.telling.insert(txn, t);
            }
        }
        for (txn, t) in c.telling.iter_mut() {
            if now >= t.next_send_ms {
                t.next_send_ms = now + resend;
                for &g in t.participants.iter().filter(|g| !t.acked.contains(g)) {
                    ctx.send_to_group(g, decision(g, *txn, t.commit));
                }
            }
        }
        if !c.ended.is_empty() && c.ending.is_empty() {
            let n = c.ended.len().min(MAX_ENDED_PER_ENTRY);
            let txns: Vec<TxnId> = c.ended.drain(..n).collect();
            self.append_own(ctx, Payload::Ended { txns });
        }
    }

    /// The primary stopped being primary: everyone waiting on it is told to
    /// go to the new one.
    pub(super) fn coordinator_step_down(&mut self, ctx: &mut Ctx) {
        let view = self.view.clone();
        let c = std::mem::take(&mut self.coordinator);
        let not_leader = |ctx: &mut Ctx, token, id| {
            let result = Err(ClientError::NotLeader { view: view.clone() });
            ctx.out.reply(token, ClientReply::Response { id, result, at: 0, stale_ms: None });
        };
        for (_, col) in c.collecting {
            for (token, id) in col.clients {
                not_leader(ctx, token, id);
            }
        }
        for (_, askers) in c.askers {
            for a in askers {
                if let Asker::Client { token, id } = a {
                    not_leader(ctx, token, id);
                }
            }
        }
    }
}

/// doCommit or doAbort, for participant `group`.
fn decision(group: GroupId, txn: TxnId, commit: bool) -> PeerBody {
    if commit {
        PeerBody::DoCommit { group, txn }
    } else {
        PeerBody::DoAbort { group, txn }
    }
}

/// Answers a participant's `getDecision` (sent from `node`).
fn send_decision(ctx: &mut Ctx, node: NodeId, group: GroupId, txn: TxnId, commit: bool) {
    ctx.out.send(node, decision(group, txn, commit));
}
