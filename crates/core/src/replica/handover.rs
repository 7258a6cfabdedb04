//! Leader hand-over (`pactdb admin transfer-leader`): a primary gives its
//! group to another member with no write lost and a short write pause.
//!
//! The primary holds new writes (it keeps serving reads), waits until the
//! member it hands over to holds every entry of its log and every entry is
//! committed, and then sends it `TakeOver`. The member proposes itself as
//! leader of the next epoch with the same members, through the config
//! store's compare-and-set like every view change; having won it in this
//! incarnation, it is primary at once. The old primary learns the view,
//! steps down, and answers the writes it held with `NotLeader` and the new
//! view, so front ends resend them (same request ids) to the new primary
//! at once. If the member has not taken over within `HANDOVER_TIMEOUT_MS`
//! the primary gives up and runs the held writes itself.
//!
//! Why the new primary need not wait out its predecessor's read lease (as
//! one that replaces a failed primary must, see `become_primary`): the old
//! primary stays a member of the new view, so nothing commits in the new
//! epoch before it has acked an entry of that epoch, which it does only
//! after adopting the view and so stepping down. A read it answered before
//! that is ordered before every write of the new epoch. What the old
//! primary committed, the new one holds (it acked it), and a read of a key
//! whose entry the new primary has not yet seen committed waits for it.
//!
//! It must never drop a held write unanswered, never let a member take over
//! an epoch other than the one whose primary asked it, and never skip the
//! lease wait for a view its predecessor is not a member of.

use super::{Ctx, Replica, Role};
use crate::io::ClientToken;
use crate::limits::{HANDOVER_TIMEOUT_MS, MAX_HELD_FOR_HANDOVER};
use crate::types::{Epoch, Index, Millis, Mode, NodeId, View};
use crate::wire::{ClientError, ClientReply, ClientRequest, PeerBody, TransferRefused};

/// A hand-over under way at the primary.
#[derive(Debug)]
pub(super) struct Handover {
    to: NodeId,
    /// Gives up (and serves the held writes itself) at this time.
    deadline_ms: Millis,
    /// Writes that arrived since the hand-over began, in arrival order.
    held: Vec<(ClientToken, ClientRequest)>,
    /// `TakeOver` was sent at least once.
    asked: bool,
    /// When `TakeOver` may be sent again (it may be lost).
    next_ask_ms: Millis,
}

impl Replica {
    /// Starts handing the leadership to member `to`. Answers the view the
    /// hand-over starts from, or why it cannot start.
    pub fn on_transfer_leader(&mut self, ctx: &mut Ctx, to: NodeId) -> Result<View, TransferRefused> {
        let refuse = |reason: String, view: Option<View>| Err(TransferRefused { reason, view });
        if !self.is_primary() {
            let reason = format!("node {} does not lead group {}", self.me, self.group);
            return refuse(reason, self.view.clone());
        }
        let view = self.view.clone().expect("a primary has a view");
        if to == self.me {
            return refuse(format!("node {to} already leads group {}", self.group), Some(view));
        }
        if !view.is_member(to) {
            let reason =
                format!("node {to} is not a member of group {} (members {:?}); add it first", self.group, view.members);
            return refuse(reason, Some(view));
        }
        if let Some(h) = &self.handover {
            let reason = format!("a hand-over of group {} to node {} is already under way", self.group, h.to);
            return refuse(reason, Some(view));
        }
        let now = ctx.out.now();
        self.handover = Some(Handover {
            to,
            deadline_ms: now + HANDOVER_TIMEOUT_MS,
            held: Vec::new(),
            asked: false,
            next_ask_ms: now,
        });
        self.ask_take_over_if_ready(ctx);
        Ok(view)
    }

    /// Whether a write must be held rather than run: a hand-over is under way.
    pub(super) fn holds_writes(&self) -> bool {
        self.handover.is_some()
    }

    /// Holds a write until the hand-over ends (`Busy` past the bound).
    pub(super) fn hold_for_handover(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        let h = self.handover.as_mut().expect("holding for a hand-over under way");
        if h.held.len() >= MAX_HELD_FOR_HANDOVER {
            return ctx.out.reply(
                token,
                ClientReply::Response { id: req.id, result: Err(ClientError::Busy), at: 0, stale_ms: None },
            );
        }
        h.held.push((token, req));
    }

    /// Sends `TakeOver` once the member holds every entry and every entry
    /// is committed (then the member needs nothing more from this primary,
    /// and no client waits here for a commit). A passive primary still
    /// waiting out its own predecessor's lease does not hand over: the
    /// member would serve at once, while that predecessor might not have
    /// stopped yet.
    pub(super) fn ask_take_over_if_ready(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let last = self.log.last_index();
        let Some(h) = self.handover.as_ref() else { return };
        if h.asked && now < h.next_ask_ms {
            return;
        }
        let to = h.to;
        let caught_up = self.progress.get(&to).is_some_and(|p| p.match_index >= last);
        let serving = self.mode() == Mode::Active || now >= self.serve_after_ms;
        if !caught_up || self.commit_index < last || !serving || !self.is_primary() {
            return;
        }
        let epoch = self.view.as_ref().expect("a primary has a view").epoch;
        let h = self.handover.as_mut().expect("checked above");
        h.asked = true;
        h.next_ask_ms = now + self.timing.heartbeat_ms.max(1);
        let body = PeerBody::TakeOver { group: self.group, epoch, last_index: last, commit_index: self.commit_index };
        ctx.out.send(to, body);
    }

    /// Gives up a hand-over that took too long, or whose member left the
    /// view, and runs the writes it held.
    pub(super) fn tick_handover(&mut self, ctx: &mut Ctx) {
        let Some(h) = &self.handover else { return };
        let member = self.view.as_ref().is_some_and(|v| v.is_member(h.to));
        if ctx.out.now() >= h.deadline_ms || !member {
            self.give_up_handover(ctx);
        } else {
            self.ask_take_over_if_ready(ctx);
        }
    }

    fn give_up_handover(&mut self, ctx: &mut Ctx) {
        let Some(h) = self.handover.take() else { return };
        for (token, req) in h.held {
            self.on_client_request(ctx, token, req);
        }
    }

    /// Stepping down ends a hand-over (whether or not it was the one that
    /// made this replica step down): the held writes are told who leads now,
    /// and their front ends resend them there under the same ids.
    pub(super) fn end_handover(&mut self, ctx: &mut Ctx, view: &Option<View>) {
        let Some(h) = self.handover.take() else { return };
        for (token, req) in h.held {
            let result = Err(ClientError::NotLeader { view: view.clone() });
            ctx.out.reply(token, ClientReply::Response { id: req.id, result, at: 0, stale_ms: None });
        }
    }

    /// The primary of `epoch` asks this member to take over. It does only
    /// as a member of that very view, confirmed with the config store, that
    /// holds everything the primary holds; otherwise the request is ignored
    /// (the primary gives up after its timeout).
    pub fn on_take_over(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, last_index: Index, commit_index: Index) {
        let Some(view) = self.view.clone() else { return };
        let ready = self.role() == Role::Backup
            && view.epoch == epoch
            && view.leader == from
            && self.view_confirmed
            && !self.amnesiac
            && !self.view_change_in_flight
            && self.matched_upto >= last_index
            && self.durable_index >= last_index;
        if !ready {
            return;
        }
        // The primary committed this far; entries it committed are served
        // as committed at once rather than after this epoch's first entry.
        let commit = commit_index.min(self.matched_upto);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.apply_committed(Some(ctx.out));
        }
        self.taking_over = Some(epoch);
        let next = view.next(self.me, view.members.clone());
        self.propose_view(ctx, next);
    }

    /// Notes, as `view` replaces `prev`, whether it is the hand-over this
    /// replica asked for: the next epoch, led by this replica, with the
    /// previous leader still a member. Only such a view lets it serve at
    /// once (see the module comment).
    pub(super) fn note_handed_view(&mut self, prev: Option<(Epoch, NodeId)>, view: &View) {
        if let (Some(asked), Some((epoch, leader))) = (self.taking_over, prev) {
            let handed = asked == epoch
                && view.epoch == epoch + 1
                && view.leader == self.me
                && leader != self.me
                && view.is_member(leader);
            if handed {
                self.handed_epoch = Some(view.epoch);
            }
        }
        self.taking_over = None;
    }

    /// Whether this replica is primary of an epoch it was handed (and so
    /// served at once).
    pub fn leads_a_handed_epoch(&self) -> bool {
        self.is_primary() && self.view.as_ref().is_some_and(|v| self.handed_epoch == Some(v.epoch))
    }

    pub(super) fn handover_status(&self) -> Option<crate::wire::Handover> {
        let h = self.handover.as_ref()?;
        let last = self.log.last_index();
        let matched = self.progress.get(&h.to).map_or(0, |p| p.match_index);
        Some(crate::wire::Handover {
            to: h.to,
            entries_left: last.saturating_sub(matched),
            uncommitted: last.saturating_sub(self.commit_index),
            held: h.held.len(),
            asked: h.asked,
        })
    }
}
