//! How a replica follows its group's views: adopting newer ones, proposing
//! changes through the config store, becoming primary (inheriting the
//! uncommitted suffix, waiting out the predecessor's lease, appending the
//! no-op of its epoch) and stepping down.
//!
//! It must never make this replica primary of an epoch it did not win in
//! this incarnation, and never reuse an epoch after a restart.

use super::{Ctx, Progress, Replica};
use crate::config::Change;
use crate::log::{Entry, SharedEntry};
use crate::types::{Millis, Mode, View};
use crate::wire::{ClientError, ClientReply};
use rand::Rng;

impl Replica {
    /// Adopts `view`, just read from the config store (so no view of the
    /// group was newer when the read began), and notes that this replica's
    /// view is now confirmed.
    pub fn confirm_view(&mut self, ctx: &mut Ctx, view: View) {
        let epoch = view.epoch;
        self.adopt_view(ctx, view);
        if self.view.as_ref().is_some_and(|v| v.epoch >= epoch) {
            self.view_confirmed = true;
        }
    }

    /// Adopts `view` if it is newer than the one held.
    pub fn adopt_view(&mut self, ctx: &mut Ctx, view: View) {
        let was_primary = self.is_primary();
        self.adopt_view_as(ctx, view, was_primary);
    }

    /// Adopts `view`; `was_primary` is whether this replica served as
    /// primary of the view it held before (judged by the caller when it has
    /// already recorded winning the new one).
    pub(super) fn adopt_view_as(&mut self, ctx: &mut Ctx, view: View, was_primary: bool) {
        assert_eq!(view.group, self.group);
        if self.view.as_ref().is_some_and(|cur| view.epoch <= cur.epoch) || view.epoch < self.log.last_epoch() {
            return;
        }
        // A newer view settles any admission this replica left unresolved.
        self.unresolved_admission = None;
        let prev = self.view.as_ref().map(|v| (v.epoch, v.leader));
        self.note_handed_view(prev, &view);
        self.view = Some(view.clone());
        self.matched_upto = self.matched_upto.min(self.log.base_index());
        // A `sent_ms` is a time on the clock of the primary that stamped it.
        // Echoing the old primary's stamps to a new one would hand it lease
        // evidence from another clock (possibly far ahead of its own).
        self.last_sent_ms = 0;
        self.reset_primary_deadline(ctx);
        if self.is_primary() {
            if was_primary {
                self.on_own_view_change(ctx);
            } else {
                self.become_primary(ctx);
            }
        } else if was_primary {
            self.step_down(ctx);
        }
    }

    /// A backup suspects a silent primary after `primary_suspect_ms`, plus
    /// a random jitter of up to half of it, plus `primary_suspect_ms` for
    /// each backup listed before it in the view: the first backup replaces
    /// the primary alone, and the next only if the first has not done so a
    /// suspicion later. With jitter alone, backups whose deadlines fell
    /// within an fsync of each other duelled in the config store, each
    /// prepare preempting the other's accept (found by the simulator,
    /// passive seed 351: a cut-off primary's two backups took 230 ms to
    /// agree, then another view change).
    pub(super) fn reset_primary_deadline(&mut self, ctx: &mut Ctx) {
        let suspect = self.timing.primary_suspect_ms;
        let rank = self
            .view
            .as_ref()
            .map_or(0, |v| v.members.iter().filter(|&&m| m != v.leader).position(|&m| m == self.me).unwrap_or(0));
        let jitter = ctx.rng.gen_range(0..=suspect / 2);
        self.primary_deadline_ms = ctx.out.now() + suspect * (1 + rank as Millis) + jitter;
    }

    pub(super) fn become_primary(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let view = self.view.clone().expect("a primary has a view");
        self.progress.clear();
        for &m in view.members.iter().filter(|&&m| m != self.me) {
            let mut p = self.fresh_progress(now, false);
            // Re-stream the inherited uncommitted suffix at once: a backup
            // holding it acks it in one round trip, one lacking it rejects
            // and is walked back. Starting past the end left the suffix (and
            // the retries waiting on it) uncommitted until `retransmit_ms`.
            p.next_index = self.commit_index + 1;
            self.progress.insert(m, p);
        }
        // The uncommitted suffix this primary inherited is the truth now: it
        // becomes the overlay new requests execute against, and its request
        // ids count as pending so retries wait for them instead of rerunning.
        self.overlay.clear();
        self.pending_ids.clear();
        self.pending_fifo.clear();
        self.coordinator = Default::default();
        self.participant = Default::default();
        self.inherited_upto = self.log.last_index();
        let pending: Vec<SharedEntry> = self.log.range(self.commit_index + 1, self.log.last_index()).cloned().collect();
        for e in &pending {
            self.note_pending(e);
        }
        self.next_heartbeat_ms = now;
        self.dirty = true;
        // An old primary may still hold a read lease this replica granted
        // with its last ack. Serving before that lease runs out would let it
        // answer reads that miss this primary's writes (found by the
        // simulator: a backup kept acking a resumed primary while its own
        // view change was in flight, then won and served while the old
        // primary still served reads). `primary_suspect_ms` exceeds
        // `lease_ms` plus drift, so waiting it out from the last ack is safe.
        let granted = self.lease_granted_ms.unwrap_or(now);
        self.serve_after_ms = granted + self.timing.primary_suspect_ms;
        if self.handed_epoch == Some(view.epoch) {
            // Handed over by a primary that stays a member: it cannot serve
            // anything this primary's writes would make stale (see
            // `handover.rs`), so there is no lease to wait out.
            self.serve_after_ms = now;
        }
        self.cut_off_after_ms = self.serve_after_ms.max(now) + self.timing.lease_ms;
        self.append_noop_if_inherited(ctx);
    }

    pub(super) fn fresh_progress(&self, now: Millis, learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index: self.log.last_index() + 1,
            last_ack_ms: now,
            last_progress_ms: now,
            lease_sent_ms: None,
            learner,
            stream: None,
        }
    }

    /// The primary changed its own view (removed or admitted a member).
    pub(super) fn on_own_view_change(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let view = self.view.clone().expect("primary has a view");
        for &m in view.members.iter().filter(|&&m| m != self.me) {
            let fresh = self.fresh_progress(now, false);
            let p = self.progress.entry(m).or_insert(fresh);
            p.learner = false;
        }
        self.progress.retain(|id, p| p.learner || view.is_member(*id));
        self.append_noop_if_inherited(ctx);
        self.dirty = true;
        self.advance_commit(ctx);
    }

    /// A primary commits only up to an entry of its own epoch (see
    /// `advance_commit`); when its log ends in uncommitted entries of an
    /// older epoch, a no-op entry of its epoch lets them commit without
    /// waiting for the next client write (see `Entry::noop`).
    ///
    /// A passive primary appends it only once it may serve (`serve_after_ms`):
    /// the no-op makes the inherited entries visible, and the predecessor
    /// may still be serving reads under its lease until then (found by the
    /// simulator when the no-op was appended at once).
    pub(super) fn append_noop_if_inherited(&mut self, ctx: &mut Ctx) {
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        if self.mode() == Mode::Passive && ctx.out.now() < self.serve_after_ms {
            return;
        }
        if self.log.last_index() > self.commit_index && self.log.last_epoch() != epoch {
            let index = self.log.last_index() + 1;
            self.append_local(ctx, Entry::noop(epoch, index));
            self.dirty = true;
        }
    }

    /// Appends a no-op of this primary's epoch if its log ends in an older
    /// one, so that its commit index can reach an entry of its own epoch (a
    /// coordinator needs that before it may answer for a transaction it has
    /// no record of).
    pub(super) fn append_noop_if_idle(&mut self, ctx: &mut Ctx) {
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        if self.mode() == Mode::Passive && ctx.out.now() < self.serve_after_ms {
            return;
        }
        if self.log.last_epoch() != epoch {
            let index = self.log.last_index() + 1;
            self.append_local(ctx, Entry::noop(epoch, index));
            self.dirty = true;
        }
    }

    pub(super) fn step_down(&mut self, ctx: &mut Ctx) {
        let view = self.view.clone();
        for (_, ws) in std::mem::take(&mut self.waiters) {
            for (token, id) in ws {
                ctx.out.reply(
                    token,
                    ClientReply::Response {
                        id,
                        result: Err(ClientError::NotLeader { view: view.clone() }),
                        at: 0,
                        stale_ms: None,
                    },
                );
            }
        }
        for (_, rs) in std::mem::take(&mut self.parked_reads) {
            for (token, id, _) in rs {
                ctx.out.reply(
                    token,
                    ClientReply::Response {
                        id,
                        result: Err(ClientError::NotLeader { view: view.clone() }),
                        at: 0,
                        stale_ms: None,
                    },
                );
            }
        }
        for (_, reqs) in std::mem::take(&mut self.lock_waiters) {
            for (token, req) in reqs {
                let result = Err(ClientError::NotLeader { view: view.clone() });
                ctx.out.reply(token, ClientReply::Response { id: req.id, result, at: 0, stale_ms: None });
            }
        }
        self.lock_waiter_count = 0;
        self.end_handover(ctx, &view);
        self.coordinator_step_down(ctx);
        self.participant = Default::default();
        self.parked_count = 0;
        self.overlay.clear();
        self.pending_ids.clear();
        self.pending_fifo.clear();
        self.progress.clear();
        self.admitting = None;
    }

    /// The outcome of a view change this replica proposed.
    pub fn on_view_change_outcome(&mut self, ctx: &mut Ctx, applied: bool, current: Option<View>) {
        self.view_change_in_flight = false;
        let admitting = self.admitting.take();
        // A proposal that completed settled the register either way; one
        // that gave up may still be chosen later.
        self.unresolved_admission = if current.is_some() { None } else { admitting.or(self.unresolved_admission) };
        if let Some(v) = current {
            // Judged before `led_epoch` moves: a primary that changed its own
            // view (removed or admitted a member) keeps serving, rather than
            // starting over as a new primary that waits out a lease.
            let was_primary = self.is_primary();
            let held = self.view.as_ref().is_some_and(|cur| cur.epoch == v.epoch);
            if applied && v.leader == self.me {
                self.led_epoch = Some(v.epoch);
                if let Some(n) = admitting {
                    debug_assert!(v.is_member(n));
                }
            }
            self.adopt_view_as(ctx, v, was_primary);
            if held && !was_primary && self.is_primary() {
                // It learned the view it won before the outcome (from a peer
                // or a read), stepped down as "recovering" then, and adopting
                // the same epoch again changes nothing: it becomes primary
                // here (found by the simulator: without this, a primary
                // served with no pending request ids, so a retried commit of
                // an inherited, still uncommitted decision ran two-phase
                // commit again and the home group logged two decisions).
                self.become_primary(ctx);
            }
            // The outcome carries the register's value as the store holds it.
            self.view_confirmed = true;
        }
    }

    pub(super) fn propose_view(&mut self, ctx: &mut Ctx, view: View) {
        let expect_epoch = self.view.as_ref().expect("proposals start from a view").epoch;
        self.view_change_in_flight = true;
        ctx.requests.view_changes.push((self.group, Change::ReplaceView { expect_epoch, view }));
    }

    pub fn on_stale_epoch(&mut self, ctx: &mut Ctx, view: View) {
        self.adopt_view(ctx, view);
    }

    /// Named leader of a view this incarnation did not win.
    pub(super) fn tick_recovering(&mut self, ctx: &mut Ctx, view: &View) {
        // Named leader by a view this incarnation did not win: the
        // log may have lost unsynced entries that backups hold, so it
        // must not reuse the epoch. Move to a fresh one first. An
        // amnesiac one may also have lost committed entries, so it
        // waits for a backup to take over and catch it up instead
        // (found by the simulator: it won the view with a short log).
        if view.leader == self.me && !self.view_change_in_flight && !self.amnesiac {
            let next = view.next(self.me, view.members.clone());
            self.propose_view(ctx, next);
        }
    }
}
