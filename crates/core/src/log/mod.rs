//! A group's replicated log in memory: the entries after a base position
//! (everything at or before the base has been applied and compacted away),
//! and what an entry is (`entry.rs`).
//!
//! It owns only the sequence; durability is the replica's business. It must
//! never let two entries with the same (epoch, index) differ, which the
//! replicas guarantee by truncating before they overwrite.

pub mod entry;

use crate::types::{Epoch, Index};
pub use entry::{Entry, Payload, SharedEntry};
use std::collections::VecDeque;

#[derive(Debug, Default, Clone)]
pub struct Log {
    base_index: Index,
    base_epoch: Epoch,
    entries: VecDeque<SharedEntry>,
}

impl Log {
    pub fn base_index(&self) -> Index {
        self.base_index
    }

    pub fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    pub fn last_epoch(&self) -> Epoch {
        self.entries.back().map_or(self.base_epoch, |e| e.epoch)
    }

    /// The epoch of the entry at `index`, if this log still knows it.
    pub fn epoch_at(&self, index: Index) -> Option<Epoch> {
        if index == self.base_index {
            return Some(self.base_epoch);
        }
        self.get(index).map(|e| e.epoch)
    }

    pub fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.base_index {
            return None;
        }
        self.entries.get((index - self.base_index - 1) as usize).map(|e| &**e)
    }

    pub fn append(&mut self, entry: SharedEntry) {
        assert_eq!(entry.index, self.last_index() + 1, "log entries are appended in order");
        assert!(entry.epoch >= self.last_epoch(), "epochs never go backwards in a log");
        self.entries.push_back(entry);
    }

    /// Drops every entry after `index`.
    pub fn truncate_after(&mut self, index: Index) {
        assert!(index >= self.base_index, "cannot truncate into the compacted prefix");
        self.entries.truncate((index - self.base_index) as usize);
    }

    /// Forgets entries up to `index` (they are applied and no longer needed).
    pub fn compact_upto(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        let index = index.min(self.last_index());
        self.base_epoch = self.epoch_at(index).expect("index is within the log");
        let n = (index - self.base_index) as usize;
        self.entries.drain(..n);
        self.base_index = index;
    }

    /// Replaces the log with an empty one positioned at a snapshot.
    pub fn reset_to(&mut self, index: Index, epoch: Epoch) {
        self.entries.clear();
        self.base_index = index;
        self.base_epoch = epoch;
    }

    /// Entries in `[from, to]` (inclusive, clamped to what the log holds).
    pub fn range(&self, from: Index, to: Index) -> impl Iterator<Item = &SharedEntry> {
        let start = from.max(self.base_index + 1);
        let end = to.min(self.last_index());
        let (s, e) = if start > end {
            (0, 0)
        } else {
            ((start - self.base_index - 1) as usize, (end - self.base_index) as usize)
        };
        self.entries.range(s..e)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::op::OpResult;
    use crate::types::RequestId;

    fn e(epoch: Epoch, index: Index) -> Entry {
        let id = RequestId { client: 1, session: 0, seq: index };
        Entry {
            epoch,
            index,
            payload: Payload::Effects { id, response: OpResult::Deleted { existed: false }, writes: vec![] },
        }
    }

    #[test]
    fn append_truncate_compact() {
        let mut log = Log::default();
        for i in 1..=5 {
            log.append(e(1, i).into());
        }
        assert_eq!(log.last_index(), 5);
        log.truncate_after(3);
        assert_eq!(log.last_index(), 3);
        log.append(e(2, 4).into());
        assert_eq!(log.epoch_at(4), Some(2));
        log.compact_upto(2);
        assert_eq!(log.base_index(), 2);
        assert_eq!(log.epoch_at(2), Some(1));
        assert_eq!(log.get(2), None);
        assert_eq!(log.range(1, 10).map(|x| x.index).collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(log.range(4, 3).count(), 0);
    }
}
