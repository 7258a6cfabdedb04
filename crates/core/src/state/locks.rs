//! The lock table of a participant group: which prepared transaction holds
//! which key, shared (checked only) or exclusive (written).
//!
//! Locks never wait: a request that conflicts is told so at once, and the
//! transaction votes no. The table is part of the replicated state (a
//! prepare entry takes its locks when applied, a resolution releases them),
//! so a new primary holds exactly the locks its predecessor's log took. It
//! must never hold a lock of a transaction that is not prepared here.

use crate::state::kv::{FixedHashMap, Key};
use crate::state::txn::{LockMode, TxnId};
use serde::{Deserialize, Serialize};

/// Who holds one key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lock {
    writer: Option<TxnId>,
    /// Sorted; a transaction appears at most once.
    readers: Vec<TxnId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    map: FixedHashMap<Key, Lock>,
}

impl LockTable {
    /// Whether `txn` taking `key` in `mode` conflicts with another holder:
    /// an exclusive lock conflicts with any other holder, a shared one with
    /// another transaction's exclusive lock.
    pub fn conflicts(&self, key: &[u8], mode: LockMode, txn: TxnId) -> bool {
        let Some(l) = self.map.get(key) else { return false };
        if l.writer.is_some_and(|w| w != txn) {
            return true;
        }
        mode == LockMode::Exclusive && l.readers.iter().any(|r| *r != txn)
    }

    /// Whether a transaction holds `key` exclusively (it will write it).
    pub fn is_written(&self, key: &[u8]) -> bool {
        self.map.get(key).is_some_and(|l| l.writer.is_some())
    }

    /// Every key a transaction holds exclusively (at most `MAX_LOCKED_KEYS`).
    pub fn written_keys(&self) -> impl Iterator<Item = &Key> {
        self.map.iter().filter(|(_, l)| l.writer.is_some()).map(|(k, _)| k)
    }

    /// Whether any transaction holds `key`.
    pub fn is_held(&self, key: &[u8]) -> bool {
        self.map.contains_key(key)
    }

    /// Takes `key` for `txn`. The caller checked `conflicts` first.
    pub fn lock(&mut self, key: &[u8], mode: LockMode, txn: TxnId) {
        let l = self.map.entry(key.to_vec()).or_default();
        match mode {
            LockMode::Exclusive => l.writer = Some(txn),
            LockMode::Shared => {
                if let Err(at) = l.readers.binary_search(&txn) {
                    l.readers.insert(at, txn);
                }
            }
        }
    }

    /// Releases whatever `txn` holds on `key`.
    pub fn unlock(&mut self, key: &[u8], txn: TxnId) {
        let Some(l) = self.map.get_mut(key) else { return };
        if l.writer == Some(txn) {
            l.writer = None;
        }
        l.readers.retain(|r| *r != txn);
        if l.writer.is_none() && l.readers.is_empty() {
            self.map.remove(key);
        }
    }

    /// Keys locked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seq: u64) -> TxnId {
        TxnId { client: 1, session: 0, seq, home: 0 }
    }

    #[test]
    fn exclusive_excludes_everyone_else_and_shared_excludes_only_writers() {
        let mut l = LockTable::default();
        l.lock(b"k", LockMode::Shared, t(1));
        assert!(!l.conflicts(b"k", LockMode::Shared, t(2)), "readers share");
        assert!(l.conflicts(b"k", LockMode::Exclusive, t(2)), "a writer waits for no reader");
        assert!(!l.conflicts(b"k", LockMode::Exclusive, t(1)), "its own read lock does not stop a txn");
        l.lock(b"k", LockMode::Exclusive, t(1));
        assert!(l.conflicts(b"k", LockMode::Shared, t(2)));
        assert!(l.is_written(b"k"));
        l.unlock(b"k", t(1));
        assert!(l.is_empty(), "released keys leave the table");
    }
}
