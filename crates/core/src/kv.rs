//! The key-value state machine and the session table that makes retries
//! exactly-once.
//!
//! It owns the applied state of one group on one replica. It must never see
//! an uncommitted write: the primary executes against an overlay (see
//! `passive.rs`) and only committed effects reach `KvStore::apply`.

use crate::limits::{MAX_KEY_BYTES, MAX_SESSIONS, MAX_SESSION_RESPONSES, MAX_VALUE_BYTES};
use crate::types::{Index, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// A client operation on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Get {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    Put {
        #[serde(with = "serde_bytes")]
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    /// Sets `value` only if the key's version equals `expected_version`
    /// (0 means "the key must not exist").
    Cas {
        #[serde(with = "serde_bytes")]
        key: Key,
        expected_version: u64,
        #[serde(with = "serde_bytes")]
        value: Value,
    },
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Get { key } | Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }

    pub fn is_read(&self) -> bool {
        matches!(self, Op::Get { .. })
    }

    /// Checks the limits every operation must meet before it is executed.
    pub fn validate(&self) -> Result<(), crate::msg::ClientError> {
        use crate::msg::ClientError;
        let key = self.key();
        if key.len() > MAX_KEY_BYTES {
            return Err(ClientError::KeyTooLarge { len: key.len(), max: MAX_KEY_BYTES });
        }
        if let Op::Put { value, .. } | Op::Cas { value, .. } = self {
            if value.len() > MAX_VALUE_BYTES {
                return Err(ClientError::ValueTooLarge { len: value.len(), max: MAX_VALUE_BYTES });
            }
        }
        Ok(())
    }
}

/// A value with its version. The version of a key is the log index of the
/// write that produced it, so versions only grow and are unique in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// Bytes are encoded as one blob, not element by element.
    #[serde(with = "serde_bytes")]
    pub value: Value,
    pub version: u64,
}

/// The outcome of an operation, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    Value(Option<Versioned>),
    Written { version: u64 },
    Deleted { existed: bool },
    CasFailed { current_version: u64 },
}

/// A state change, shipped from the primary to the backups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Write {
    Put {
        #[serde(with = "serde_bytes")]
        key: Key,
        #[serde(with = "serde_bytes")]
        value: Value,
        version: u64,
    },
    Delete {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
}

impl Write {
    pub fn key(&self) -> &[u8] {
        match self {
            Write::Put { key, .. } | Write::Delete { key } => key,
        }
    }
}

/// Executes `op` as log entry `index` against `current` (the key's value as
/// the primary sees it, including uncommitted writes). Pure: the caller
/// decides where the effects go.
pub fn execute(op: &Op, index: Index, current: Option<&Versioned>) -> (OpResult, Vec<Write>) {
    match op {
        Op::Get { .. } => (OpResult::Value(current.cloned()), Vec::new()),
        Op::Put { key, value } => (
            OpResult::Written { version: index },
            vec![Write::Put { key: key.clone(), value: value.clone(), version: index }],
        ),
        Op::Delete { key } => {
            let existed = current.is_some();
            let effects = if existed { vec![Write::Delete { key: key.clone() }] } else { Vec::new() };
            (OpResult::Deleted { existed }, effects)
        }
        Op::Cas { key, expected_version, value } => {
            let current_version = current.map_or(0, |v| v.version);
            if current_version != *expected_version {
                return (OpResult::CasFailed { current_version }, Vec::new());
            }
            (
                OpResult::Written { version: index },
                vec![Write::Put { key: key.clone(), value: value.clone(), version: index }],
            )
        }
    }
}

/// A hash of one (key, value, version): xxh3 of the key's length, the key,
/// the version and the value, one after the other. The digest travels in
/// snapshots, so this function is part of the wire and disk formats.
fn entry_hash(key: &[u8], value: &[u8], version: u64) -> u64 {
    // Hashing the concatenation in one shot gives the same value as feeding
    // the streaming hasher piece by piece, for a fraction of the cost (the
    // streaming hasher copied every piece into its buffer first, a
    // measurable part of applying a write).
    const INLINE: usize = 512;
    let len = 16 + key.len() + value.len();
    if len <= INLINE {
        let mut buf = [0u8; INLINE];
        buf[..8].copy_from_slice(&(key.len() as u64).to_le_bytes());
        buf[8..8 + key.len()].copy_from_slice(key);
        buf[8 + key.len()..16 + key.len()].copy_from_slice(&version.to_le_bytes());
        buf[16 + key.len()..len].copy_from_slice(value);
        return xxhash_rust::xxh3::xxh3_64(&buf[..len]);
    }
    let mut h = xxhash_rust::xxh3::Xxh3Default::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&version.to_le_bytes());
    h.update(value);
    h.digest()
}

/// A hash map with a fixed hash function: iteration order depends only on
/// what was inserted, so simulations stay deterministic from their seed.
pub type FixedHashMap<K, V> = HashMap<K, V, FixedState>;

/// The fixed hash function of `FixedHashMap` (xxh3 with its default seed).
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedState;

impl std::hash::BuildHasher for FixedState {
    type Hasher = xxhash_rust::xxh3::Xxh3Default;

    fn build_hasher(&self) -> Self::Hasher {
        xxhash_rust::xxh3::Xxh3Default::new()
    }
}

/// The applied key-value state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    /// Hashed, not ordered: point operations are all the store serves, and a
    /// hash lookup costs one key comparison where a B-tree costs a dozen.
    map: FixedHashMap<Key, Versioned>,
    /// XOR of a hash of every (key, value, version): adding and removing a
    /// pair is O(1), so replicas can compare whole states cheaply.
    digest: u64,
}

impl KvStore {
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.map.get(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn apply(&mut self, write: &Write) {
        match write {
            Write::Put { key, value, version } => {
                self.digest ^= entry_hash(key, value, *version);
                match self.map.get_mut(key.as_slice()) {
                    // An overwrite reuses the key and the old value's buffer:
                    // no allocation on the path of most writes.
                    Some(old) => {
                        self.digest ^= entry_hash(key, &old.value, old.version);
                        old.value.clear();
                        old.value.extend_from_slice(value);
                        old.version = *version;
                    }
                    None => {
                        self.map.insert(key.clone(), Versioned { value: value.clone(), version: *version });
                    }
                }
            }
            Write::Delete { key } => {
                if let Some(old) = self.map.remove(key) {
                    self.digest ^= entry_hash(key, &old.value, old.version);
                }
            }
        }
    }

    /// Recomputes the digest from scratch; used by tests and by snapshot
    /// installation to check that a received state is what was sent.
    pub fn recompute_digest(&self) -> u64 {
        self.map.iter().fold(0, |d, (k, v)| d ^ entry_hash(k, &v.value, v.version))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Versioned)> {
        self.map.iter()
    }
}

/// What a replica remembers of one client: the responses of its recent
/// requests, so a retry gets the original answer instead of running again.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    responses: BTreeMap<u64, OpResult>,
    /// Every seq at or below this was forgotten; a retry of one gets
    /// `SessionExpired` instead of running twice.
    forgotten_upto: u64,
    last_active: Index,
}

/// Outcome of looking a request up in the session table.
#[derive(Debug, PartialEq, Eq)]
pub enum Dedup<'a> {
    New,
    Done(&'a OpResult),
    Expired,
}

/// The exactly-once table, replicated through the log: every replica records
/// the response of every committed write under its request id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    by_client: HashMap<u64, Session>,
    /// Ordered by (last_active, client), to forget the least recently active.
    by_activity: BTreeMap<(Index, u64), ()>,
}

impl Sessions {
    pub fn lookup(&self, id: RequestId) -> Dedup<'_> {
        match self.by_client.get(&id.client) {
            None => Dedup::New,
            Some(s) => match s.responses.get(&id.seq) {
                Some(r) => Dedup::Done(r),
                None if id.seq <= s.forgotten_upto => Dedup::Expired,
                None => Dedup::New,
            },
        }
    }

    pub fn record(&mut self, id: RequestId, index: Index, response: OpResult) {
        let s = self.by_client.entry(id.client).or_default();
        self.by_activity.remove(&(s.last_active, id.client));
        s.last_active = index;
        self.by_activity.insert((index, id.client), ());
        s.responses.insert(id.seq, response);
        while s.responses.len() > MAX_SESSION_RESPONSES {
            let (&oldest, _) = s.responses.iter().next().expect("non-empty");
            s.responses.remove(&oldest);
            s.forgotten_upto = s.forgotten_upto.max(oldest);
        }
        while self.by_client.len() > MAX_SESSIONS {
            let (&(_, client), _) = self.by_activity.iter().next().expect("non-empty");
            self.by_activity.remove(&(self.by_client[&client].last_active, client));
            self.by_client.remove(&client);
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str, version: u64) -> Write {
        Write::Put { key: k.into(), value: v.into(), version }
    }

    #[test]
    fn digest_is_incremental_and_order_independent() {
        let mut a = KvStore::default();
        let mut b = KvStore::default();
        a.apply(&put("x", "1", 1));
        a.apply(&put("y", "2", 2));
        b.apply(&put("y", "2", 2));
        b.apply(&put("x", "1", 1));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest(), a.recompute_digest());
        a.apply(&Write::Delete { key: "x".into() });
        assert_eq!(a.digest(), a.recompute_digest());
        assert_ne!(a.digest(), b.digest());
    }

    #[test]
    fn entry_hash_is_the_streaming_hash_of_the_concatenation() {
        for (klen, vlen) in [(0, 0), (16, 128), (40, 456), (40, 457), (100, 5000)] {
            let key: Vec<u8> = (0..klen).map(|i| i as u8).collect();
            let value: Vec<u8> = (0..vlen).map(|i| (i * 7) as u8).collect();
            let mut h = xxhash_rust::xxh3::Xxh3Default::new();
            h.update(&(key.len() as u64).to_le_bytes());
            h.update(&key);
            h.update(&9u64.to_le_bytes());
            h.update(&value);
            assert_eq!(entry_hash(&key, &value, 9), h.digest(), "key {klen} B, value {vlen} B");
        }
    }

    #[test]
    fn cas_compares_versions() {
        let cur = Versioned { value: b"v".to_vec(), version: 7 };
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 6, value: b"n".to_vec() };
        assert_eq!(execute(&op, 9, Some(&cur)), (OpResult::CasFailed { current_version: 7 }, vec![]));
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 7, value: b"n".to_vec() };
        let (r, w) = execute(&op, 9, Some(&cur));
        assert_eq!(r, OpResult::Written { version: 9 });
        assert_eq!(w, vec![put("k", "n", 9)]);
        let op = Op::Cas { key: b"k".to_vec(), expected_version: 0, value: b"n".to_vec() };
        assert_eq!(execute(&op, 9, None).0, OpResult::Written { version: 9 });
    }

    #[test]
    fn sessions_forget_old_responses_but_never_rerun_them() {
        let mut s = Sessions::default();
        for seq in 1..=(MAX_SESSION_RESPONSES as u64 + 5) {
            s.record(RequestId { client: 1, seq }, seq, OpResult::Deleted { existed: false });
        }
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1 }), Dedup::Expired);
        assert!(matches!(s.lookup(RequestId { client: 1, seq: 10 }), Dedup::Done(_)));
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1000 }), Dedup::New);
        assert_eq!(s.lookup(RequestId { client: 2, seq: 1 }), Dedup::New);
    }

    #[test]
    fn oversize_input_is_refused() {
        let op = Op::Put { key: vec![0; MAX_KEY_BYTES + 1], value: vec![] };
        assert!(op.validate().is_err());
        let op = Op::Put { key: vec![0; 4], value: vec![0; MAX_VALUE_BYTES + 1] };
        assert!(op.validate().is_err());
        let op = Op::Put { key: vec![0; MAX_KEY_BYTES], value: vec![0; MAX_VALUE_BYTES] };
        assert!(op.validate().is_ok());
    }
}
