//! The applied key-value state of one group on one replica: every key's
//! value and version, and a digest of the whole that replicas compare.
//!
//! It must never see an uncommitted write: the passive primary executes
//! against an overlay (see `replica/passive.rs`) and only committed writes
//! reach `KvStore::apply`.
//!
//! The map is persistent (a hash array mapped trie whose nodes are shared
//! between copies): a clone costs O(1), so a checkpoint of the store for an
//! on-disk snapshot or a catch-up is taken without stopping the event loop,
//! and only the nodes a later write touches are copied, once.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

pub type Key = Vec<u8>;
pub type Value = Vec<u8>;

/// A value with its version. The version of a key is the log index of the
/// write that produced it, so versions only grow and are unique in a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    /// Bytes are encoded as one blob, not element by element.
    #[serde(with = "serde_bytes")]
    pub value: Value,
    pub version: u64,
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

/// A persistent hash map with the fixed hash function: O(1) to clone, and
/// its iteration order is the same on every replica and in every run.
pub type PersistentMap<K, V> = imbl::GenericHashMap<K, V, FixedState, imbl::shared_ptr::DefaultSharedPtr>;

/// The applied key-value state of one group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    /// Hashed, not ordered: point operations are all the store serves, and a
    /// hash lookup costs a few key comparisons where a B-tree costs a dozen.
    /// Persistent, so that a checkpoint is a cheap clone (see the module doc).
    #[serde(deserialize_with = "deserialize_map")]
    map: PersistentMap<Key, Versioned>,
    /// XOR of a hash of every (key, value, version): adding and removing a
    /// pair is O(1), so replicas can compare whole states cheaply.
    digest: u64,
}

/// Decodes the map one pair at a time. imbl's own decoder reserves room
/// for as many pairs as the input claims, so a claimed length of billions
/// aborted the process on a capacity overflow (found by the fuzzer in a
/// snapshot header): bad input must never panic.
fn deserialize_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PersistentMap<Key, Versioned>, D::Error> {
    struct Pairs;
    impl<'de> serde::de::Visitor<'de> for Pairs {
        type Value = PersistentMap<Key, Versioned>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of keys to versioned values")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = PersistentMap::default();
            while let Some((k, v)) = access.next_entry::<Key, Versioned>()? {
                map.insert(k, v);
            }
            Ok(map)
        }
    }
    d.deserialize_map(Pairs)
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
                    // no allocation on the path of most writes (unless a
                    // checkpoint still shares this part of the map).
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

    /// The first `limit` keys after `after` (all keys when `None`), in byte
    /// order. The map is hashed, not ordered, so this walks every key once
    /// and keeps the `limit` smallest in a bounded heap: O(n log limit) per
    /// page, with `limit` bounded by `MAX_SCAN_KEYS` by the caller.
    pub fn scan(&self, after: Option<&[u8]>, limit: usize) -> Vec<Key> {
        let mut heap: std::collections::BinaryHeap<&Key> = std::collections::BinaryHeap::with_capacity(limit + 1);
        if limit == 0 {
            return Vec::new();
        }
        for k in self.map.keys() {
            if after.is_some_and(|a| k.as_slice() <= a) {
                continue;
            }
            if heap.len() < limit {
                heap.push(k);
            } else if heap.peek().is_some_and(|top| k < *top) {
                heap.pop();
                heap.push(k);
            }
        }
        heap.into_sorted_vec().into_iter().cloned().collect()
    }

    /// Whether `other` shares this store's whole map (a clone not written to
    /// since): the O(1) clone's promise, for tests.
    pub fn shares_map_with(&self, other: &KvStore) -> bool {
        self.map.ptr_eq(&other.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_pages_through_every_key_in_byte_order() {
        let mut kv = KvStore::default();
        for k in ["b", "a", "d", "c", "e"] {
            kv.apply(&Write::Put { key: k.into(), value: b"v".to_vec(), version: 1 });
        }
        let keys = |v: Vec<Key>| v.into_iter().map(|k| String::from_utf8(k).unwrap()).collect::<Vec<_>>();
        assert_eq!(keys(kv.scan(None, 2)), ["a", "b"]);
        assert_eq!(keys(kv.scan(Some(b"b"), 2)), ["c", "d"]);
        assert_eq!(keys(kv.scan(Some(b"d"), 2)), ["e"]);
        assert_eq!(keys(kv.scan(Some(b"e"), 2)), Vec::<String>::new());
        assert_eq!(keys(kv.scan(None, 0)), Vec::<String>::new());
        assert_eq!(keys(kv.scan(Some(b"bb"), 10)), ["c", "d", "e"]);
    }

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
    fn a_clone_shares_the_map_and_writes_to_either_stay_apart() {
        let mut a = KvStore::default();
        for i in 0..1000u64 {
            a.apply(&put(&format!("k{i}"), "v", i));
        }
        let b = a.clone();
        assert!(a.shares_map_with(&b), "a clone copies nothing");
        a.apply(&put("k7", "changed", 2000));
        a.apply(&Write::Delete { key: "k8".into() });
        assert!(!a.shares_map_with(&b));
        assert_eq!(b.get(b"k7"), Some(&Versioned { value: b"v".to_vec(), version: 7 }));
        assert!(b.get(b"k8").is_some());
        assert_eq!(b.len(), 1000);
        assert_eq!(a.len(), 999);
        assert_eq!(b.digest(), b.recompute_digest());
        assert_eq!(a.digest(), a.recompute_digest());
        // The encoding is a plain map, whatever the map's representation.
        let decoded: KvStore = crate::wire::decode(&crate::wire::encode(&b)).unwrap();
        assert_eq!(decoded, b);
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
}
