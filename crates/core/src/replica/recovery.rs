//! A replica rebuilt from its WAL after a restart: entries, truncations,
//! commit hints and snapshots replayed in order; and the records of a
//! checkpoint, which rebuild the same replica from far fewer of them.
//!
//! It must never treat anything replayed as more than the WAL promised: a
//! commit hint may have been lost, so only what the last surviving hint
//! covers is applied here; the rest waits for the primary.

use super::Replica;
use crate::log::SharedEntry;
use crate::state::stream::{Partial, StreamMeta};
use crate::state::Snapshot;
use crate::types::Index;
use crate::wire::WalRecord;

impl Replica {
    pub fn replay_entry(&mut self, entry: SharedEntry) {
        if entry.index <= self.log.base_index() {
            return;
        }
        if entry.index <= self.log.last_index() {
            self.log.truncate_after(entry.index - 1);
        }
        self.log.append(entry);
    }

    pub fn replay_truncate(&mut self, index: Index) {
        if index >= self.log.base_index() {
            self.log.truncate_after(index);
        }
    }

    pub fn replay_commit(&mut self, index: Index) {
        self.persisted_commit = self.persisted_commit.max(index);
    }

    pub fn replay_snapshot(&mut self, snapshot: Snapshot) {
        self.log.reset_to(snapshot.index, snapshot.epoch);
        self.state = snapshot.state;
        self.commit_index = snapshot.index;
        self.applied_index = snapshot.index;
        self.persisted_commit = self.persisted_commit.max(snapshot.index);
    }

    /// A chunk this replica took before it stopped, taken again; the chunk
    /// that completed a verified snapshot installs it.
    pub fn replay_snapshot_chunk(&mut self, meta: StreamMeta, offset: u64, data: &[u8]) {
        if self.take_snapshot_chunk(meta, offset, data) == Ok(true) {
            if let Some(snapshot) = self.finish_snapshot() {
                self.replay_snapshot(snapshot);
            }
        }
    }

    /// The partial stream a checkpoint recorded.
    pub fn replay_snapshot_partial(&mut self, partial: Box<Partial>) {
        self.incoming = Some(partial);
    }

    /// Ends recovery: everything replayed is durable, and the entries up to
    /// the last persisted commit are applied.
    pub fn finish_replay(&mut self, amnesiac: bool) {
        self.durable_index = self.log.last_index();
        self.commit_index = self.persisted_commit.min(self.log.last_index()).max(self.commit_index);
        self.amnesiac = amnesiac;
        self.apply_committed(None);
    }

    /// Whether this replica still waits to be caught up after a cut (its
    /// `CaughtUp` record is what ends that, durably).
    pub fn is_amnesiac(&self) -> bool {
        self.amnesiac
    }

    /// The WAL records that rebuild this replica's durable state, in replay
    /// order: its applied state as a snapshot, the entries after it (those
    /// not yet committed too), and its commit hint. Cheap: the state's
    /// key-value map is persistent and entries are shared, so this copies
    /// no key or value. Called between steps, when every change to the log
    /// has its record issued; entries before the applied index are left
    /// out (a member that needs them gets a snapshot instead).
    pub fn checkpoint_records(&self, out: &mut Vec<WalRecord>) {
        let applied = self.applied_index;
        if applied > 0 {
            let epoch = self.log.epoch_at(applied).expect("the log keeps every entry after the applied one");
            let snapshot = Snapshot { index: applied, epoch, state: self.state.clone() };
            out.push(WalRecord::Snapshot { group: self.group, snapshot: Box::new(snapshot) });
        }
        for e in self.log.range(applied + 1, self.log.last_index()) {
            out.push(WalRecord::Entry { group: self.group, entry: SharedEntry::clone(e) });
        }
        if self.persisted_commit > applied {
            out.push(WalRecord::Commit { group: self.group, index: self.persisted_commit });
        }
        if let Some(partial) = &self.incoming {
            out.push(WalRecord::SnapshotPartial { group: self.group, partial: partial.clone() });
        }
    }
}
