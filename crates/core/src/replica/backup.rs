//! A member's side of log replication: taking the primary's appends
//! (checking they follow its log, truncating a divergent suffix), taking a
//! snapshot when it is too far behind, and acking what is durable.
//!
//! It must never ack an entry before it is durable, never ack at all before
//! it has read its view from the config store in this incarnation, never
//! replace a committed entry, and never take a malformed append or snapshot
//! (it drops them; peer input never trips an assertion).

use super::{Ctx, Replica};
use crate::log::SharedEntry;
use crate::state::stream::{Partial, SnapshotId, StreamMeta};
use crate::state::Snapshot;
use crate::types::{Epoch, Index, Millis, NodeId, View};
use crate::wire::{PeerBody, WalRecord};

impl Replica {
    /// Handles a message of a view: adopts a newer one, and answers a sender
    /// that is behind with the current view. Returns false if the message
    /// must be dropped.
    pub(super) fn check_epoch(&mut self, ctx: &mut Ctx, from: NodeId, view: &View) -> bool {
        if let Some(cur) = &self.view {
            if view.epoch < cur.epoch {
                ctx.out.send(from, PeerBody::StaleEpoch { view: cur.clone() });
                return false;
            }
        }
        // The log's own entries prove a view at least as new as their epoch
        // exists, even when a restarted replica has not relearned the view
        // yet: a primary of an older epoch is stale, and its entries must
        // not truncate (possibly committed) newer ones (found by the
        // simulator: a restarted sole member of epoch 3 took appends from
        // the partitioned primary of epoch 2 and cut committed entries).
        if view.epoch < self.log.last_epoch() {
            return false;
        }
        self.adopt_view(ctx, view.clone());
        // A primary only streams after winning its view, so the sender leads it.
        view.leader == from && from != self.me
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_append(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        view: View,
        prev_index: Index,
        prev_epoch: Epoch,
        entries: Vec<SharedEntry>,
        // The primary's commit index, its clock when it sent this, and the
        // newest of its times this member echoed that it had received.
        (commit_index, sent_ms, acked_sent_ms): (Index, Millis, Millis),
    ) {
        if !self.check_epoch(ctx, from, &view) {
            return;
        }
        if !append_is_well_formed(&view, prev_index, prev_epoch, &entries) {
            // Only a faulty or corrupted peer sends this: taking it would
            // break the log's order (and its assertions). It is dropped,
            // never a crash; a correct primary resends what is missing.
            return;
        }
        self.reset_primary_deadline(ctx);
        self.last_sent_ms = self.last_sent_ms.max(sent_ms);
        let base = self.log.base_index();
        if prev_index > self.log.last_index() {
            let hint = self.log.last_index();
            return self.reject(ctx, from, hint);
        }
        if prev_index >= base && self.log.epoch_at(prev_index) != Some(prev_epoch) {
            // Walk back over the conflicting epoch's run so the primary skips
            // it in one round trip.
            let bad = self.log.epoch_at(prev_index);
            let mut hint = prev_index.saturating_sub(1);
            while hint > base && hint > self.commit_index && self.log.epoch_at(hint) == bad {
                hint -= 1;
            }
            return self.reject(ctx, from, hint);
        }
        let n = entries.len() as Index;
        let marks_before = self.marks.len();
        for e in entries {
            if e.index < base {
                continue;
            }
            if e.index == base {
                // A `prev_index` below the compacted base skipped the check
                // above, so the base itself is the last entry this append
                // can be checked against: it is committed, so a correct
                // primary holds the same one. One that disagrees is
                // faulty, and what follows would not extend this log
                // (epochs could even go backwards; found by review).
                if e.epoch != self.log.epoch_at(base).unwrap_or(e.epoch) {
                    return;
                }
                continue;
            }
            match self.log.epoch_at(e.index) {
                Some(ep) if ep == e.epoch => continue,
                // A committed entry is never replaced; a primary whose log
                // disagrees with it is faulty, and its append is dropped.
                Some(_) if e.index <= self.commit_index => return,
                Some(_) => {
                    if self.bugs.keep_divergent_suffix {
                        continue;
                    }
                    self.truncate_local(ctx, e.index - 1);
                }
                None => {}
            }
            if e.index != self.log.last_index() + 1 {
                break;
            }
            if e.epoch < self.log.last_epoch() {
                // Cannot follow a checked previous entry (epochs never go
                // backwards in a well-formed append); kept so that no peer
                // input can ever reach `Log::append`'s assertion.
                return;
            }
            self.append_local(ctx, e);
        }
        self.matched_upto = self.matched_upto.max((prev_index + n).min(self.log.last_index()));
        let commit = commit_index.min(self.matched_upto);
        self.note_primary_commit(view.epoch, commit_index, acked_sent_ms);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.apply_committed(Some(ctx.out));
        } else if self.bugs.execute_before_stable {
            self.apply_committed(Some(ctx.out));
        }
        self.note_applied_freshness();
        self.serve_held_reads(ctx);
        if self.amnesiac && self.commit_index >= commit_index {
            self.end_amnesia(ctx, view.epoch);
        }
        // Entries appended now are acked once durable (`on_persisted`), and
        // that ack carries this append's lease too. Acking at once as well
        // would only repeat the old match index: one more message each way
        // per append, on the path of every write.
        let acked_when_durable = self.marks.len() > marks_before && !self.bugs.ack_before_fsync;
        if !acked_when_durable {
            self.send_ack(ctx);
        }
    }

    /// An amnesiac replica is caught up once it has committed everything the
    /// primary committed, up to an entry of the primary's own epoch: only
    /// then does it hold every entry an earlier primary may have committed
    /// (they all precede that entry). Merely advancing its commit index was
    /// not enough (found by the simulator: a replica cleared its amnesia
    /// while still missing committed entries, then won a view). And the
    /// primary must lead a view this replica confirmed with the config
    /// store: catching up with a stale primary proves nothing (found by the
    /// simulator: a member whose cut WAL lost epochs 6-7 "caught up" with the
    /// partitioned primary of epoch 5 and renewed its lease). The end of
    /// the amnesia is made durable so a later restart does not repeat it.
    pub(super) fn end_amnesia(&mut self, ctx: &mut Ctx, epoch: Epoch) {
        if self.view_confirmed && self.log.epoch_at(self.commit_index) == Some(epoch) {
            self.amnesiac = false;
            ctx.out.persist(WalRecord::CaughtUp { group: self.group });
        }
    }

    pub(super) fn reject(&mut self, ctx: &mut Ctx, to: NodeId, last_index: Index) {
        let epoch = self.view.as_ref().map_or(0, |v| v.epoch);
        ctx.out.send(to, PeerBody::AppendReject { group: self.group, epoch, last_index });
    }

    pub(super) fn send_ack(&mut self, ctx: &mut Ctx) {
        let Some(view) = &self.view else { return };
        // Until it has read the current view from the config store, a
        // restarted replica does not know whether it moved past this view
        // before it stopped: a member that had led epochs 9 and 10 without
        // writing an entry in them forgot them in a crash, acked the
        // deposed primary of epoch 8, and let it commit entries the newer
        // views lacked (found by the simulator). Its log alone proves only
        // the epochs of its entries.
        if view.leader == self.me || !self.view_confirmed {
            return;
        }
        let durable = if self.bugs.ack_before_fsync { self.log.last_index() } else { self.durable_index };
        let match_index = durable.min(self.matched_upto);
        self.acked_index = match_index;
        self.lease_granted_ms = Some(ctx.out.now());
        let (leader, epoch) = (view.leader, view.epoch);
        self.note_ack_sent(epoch, self.last_sent_ms, ctx.out.now());
        ctx.out.send(leader, PeerBody::AppendAck { group: self.group, epoch, match_index, sent_ms: self.last_sent_ms });
    }

    /// A chunk of a snapshot stream from the primary. It is taken only if
    /// it continues the one partial stream this replica holds (or starts a
    /// new one at offset 0), logged lazily, and acknowledged with the bytes
    /// held either way, so the primary resumes there. The chunk that
    /// completes the stream installs the snapshot, if its digest matches;
    /// the snapshot's index is acknowledged once that is durable.
    #[allow(clippy::too_many_arguments)]
    pub fn on_snapshot_chunk(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        view: View,
        meta: StreamMeta,
        offset: u64,
        data: &[u8],
        sent_ms: Millis,
    ) {
        if !self.check_epoch(ctx, from, &view) {
            return;
        }
        self.reset_primary_deadline(ctx);
        self.last_sent_ms = self.last_sent_ms.max(sent_ms);
        if meta.id.index <= self.commit_index {
            // Held already (a late chunk of a snapshot installed, or of one
            // older than what this replica committed since). Its committed
            // entries are every correct primary's: it says it matches up to
            // there. Acking the old match instead (0 after a restart from a
            // checkpoint) had the primary send the snapshot again after
            // every silence and never an append: a joiner stayed out of its
            // group for good (simulator, passive seed 427).
            self.matched_upto = self.matched_upto.max(self.commit_index);
            return self.send_ack(ctx);
        }
        let taken = self.take_snapshot_chunk(meta, offset, data);
        if taken.is_ok() {
            ctx.out.persist(WalRecord::SnapshotChunk { group: self.group, meta, offset, data: data.to_vec() });
        }
        let received = self.incoming.as_ref().filter(|p| p.meta == meta).map_or(0, |p| p.received);
        ctx.out.send(
            from,
            PeerBody::SnapshotAck {
                group: self.group,
                epoch: view.epoch,
                id: meta.id,
                received,
                refused: taken.is_err(),
            },
        );
        if taken == Ok(true) {
            if let Some(snapshot) = self.finish_snapshot() {
                self.install_snapshot(ctx, snapshot, view.epoch);
            }
        }
    }

    /// Takes a chunk into the partial stream (a chunk at offset 0 of
    /// another stream replaces it); says whether the stream is complete.
    pub(super) fn take_snapshot_chunk(&mut self, meta: StreamMeta, offset: u64, data: &[u8]) -> Result<bool, String> {
        if self.incoming.as_ref().is_none_or(|p| p.meta != meta) {
            if offset != 0 {
                return Err("a chunk of a stream not held, past its start".into());
            }
            self.incoming = Some(Box::new(Partial::new(meta)?));
        }
        let p = self.incoming.as_mut().expect("set above");
        let bug = self.bugs.install_incomplete_snapshot;
        p.take(offset, data, bug)?;
        Ok(p.is_complete() || (bug && p.has_header()))
    }

    /// The snapshot the complete partial stream holds, if its digest
    /// matches; the partial stream goes either way (a bad one starts over).
    pub(super) fn finish_snapshot(&mut self) -> Option<Snapshot> {
        let partial = self.incoming.take()?;
        partial.finish(self.bugs.install_incomplete_snapshot).ok()
    }

    /// Installs a verified snapshot, durably: its index is acked once the
    /// `SnapshotInstalled` record (and every chunk before it) is on disk.
    fn install_snapshot(&mut self, ctx: &mut Ctx, snapshot: Snapshot, epoch: Epoch) {
        let lsn = ctx.out.persist(WalRecord::SnapshotInstalled {
            group: self.group,
            id: SnapshotId { index: snapshot.index, epoch: snapshot.epoch },
        });
        self.marks.clear();
        self.durable_index = 0;
        self.marks.push_back((lsn, snapshot.index));
        self.matched_upto = snapshot.index;
        self.replay_snapshot(snapshot);
        if self.amnesiac {
            self.end_amnesia(ctx, epoch);
        }
        self.send_ack(ctx);
    }

    /// Suspects a silent primary and proposes itself in its place.
    pub(super) fn tick_backup(&mut self, ctx: &mut Ctx, view: &View) {
        let now = ctx.out.now();
        if now >= self.primary_deadline_ms && !self.view_change_in_flight && !self.amnesiac {
            let members = view.members.iter().copied().filter(|m| *m != view.leader).collect();
            let next = view.next(self.me, members);
            if self.bugs.promote_without_cas {
                self.led_epoch = Some(next.epoch);
                self.adopt_view(ctx, next);
                return;
            }
            self.propose_view(ctx, next);
            self.reset_primary_deadline(ctx);
        }
    }

    /// Asks the primary to be caught up and admitted.
    pub(super) fn tick_joining(&mut self, ctx: &mut Ctx, view: &View) {
        let now = ctx.out.now();
        // A node the view no longer places stays silent: its primary would
        // not take it, and its node drops this replica (see `Node`).
        if now >= self.next_join_ms && view.is_placed(self.me) {
            self.next_join_ms = now + self.timing.join_retry_ms;
            ctx.out.send(view.leader, PeerBody::Join { group: self.group, last_index: self.log.last_index() });
        }
    }
}

/// Whether an append's entries follow `(prev_epoch, prev_index)` as a log
/// can: consecutive indexes, epochs that never go backwards and never pass
/// the sender's view.
fn append_is_well_formed(view: &View, prev_index: Index, prev_epoch: Epoch, entries: &[SharedEntry]) -> bool {
    let mut index = prev_index;
    let mut epoch = prev_epoch;
    for e in entries {
        if Some(e.index) != index.checked_add(1) || e.epoch < epoch || e.epoch > view.epoch {
            return false;
        }
        index = e.index;
        epoch = e.epoch;
    }
    prev_epoch <= view.epoch
}
