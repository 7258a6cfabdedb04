//! The vocabulary of transactions as the state machine sees them: what a
//! client asks to commit, the share of it one participant group holds, the
//! votes and outcomes, and the records a group keeps while a transaction is
//! prepared or decided.
//!
//! It owns only data and pure checks (limits, a request's digest, splitting
//! a request by group). It must never decide anything: the coordinator and
//! participant roles (`crate::txn`) and the state machine's `apply` do.

use crate::limits::{MAX_TXN_BYTES, MAX_TXN_KEYS};
use crate::state::kv::{Key, Value, Versioned, Write};
use crate::state::op::{check_key, check_value, LimitError};
use crate::types::{ClusterMap, GroupId, Index, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A transaction's identity: the request id its client committed it under
/// (unique like every request id; a retried commit reuses it) and its home
/// group, whose primary coordinates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    pub client: u64,
    /// The session of the commit's request id (see `RequestId::session`).
    pub session: Index,
    pub seq: u64,
    pub home: GroupId,
}

impl TxnId {
    pub fn new(id: RequestId, home: GroupId) -> TxnId {
        TxnId { client: id.client, session: id.session, seq: id.seq, home }
    }

    /// The request id of the client's commit, under which the coordinator
    /// records the outcome.
    pub fn request_id(&self) -> RequestId {
        RequestId { client: self.client, session: self.session, seq: self.seq }
    }
}

impl std::fmt::Display for TxnId {
    /// `CLIENT-SESSION-SEQ@HOME`, with the client id in hex: what the CLI
    /// prints and `TxnId::from_str` reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}-{}-{}@{}", self.client, self.session, self.seq, self.home)
    }
}

impl std::str::FromStr for TxnId {
    type Err = String;

    fn from_str(s: &str) -> Result<TxnId, String> {
        let bad = || {
            format!("`{s}` is not a transaction id (expected CLIENT-SESSION-SEQ@GROUP, e.g. 0badc0ffee0ddf00-5-17@2)")
        };
        let (rest, home) = s.split_once('@').ok_or_else(bad)?;
        let (client, rest) = rest.split_once('-').ok_or_else(bad)?;
        let (session, seq) = rest.split_once('-').ok_or_else(bad)?;
        Ok(TxnId {
            client: u64::from_str_radix(client, 16).map_err(|_| bad())?,
            session: session.parse().map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
            home: home.parse().map_err(|_| bad())?,
        })
    }
}

/// An assertion on a key's version at commit: the version the transaction
/// read, or one a compare names (0: the key must not exist).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Check {
    #[serde(with = "serde_bytes")]
    pub key: Key,
    pub version: u64,
}

/// A buffered write: a put (`Some` value) or a delete (`None`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnWrite {
    #[serde(with = "serde_bytes")]
    pub key: Key,
    /// Encoded as one blob, not byte by byte (a large value's encoding
    /// otherwise dominates its commit).
    #[serde(with = "serde_bytes")]
    pub value: Option<Value>,
}

impl TxnWrite {
    /// The state change this write makes when it commits at `version`.
    pub fn at(&self, version: u64) -> Write {
        match &self.value {
            Some(value) => Write::Put { key: self.key.clone(), value: value.clone(), version },
            None => Write::Delete { key: self.key.clone() },
        }
    }
}

/// What a client asks to commit: every version it relies on, and every
/// write it buffered. Committing is atomic over all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRequest {
    pub checks: Vec<Check>,
    pub writes: Vec<TxnWrite>,
    /// A consistent read (a read-only transaction, no writes): keys read at
    /// commit, each group's under shared locks, so the outcome carries all
    /// their values as of one instant. A participant waits for a writer's
    /// locks on them to go rather than voting no, so a read of many keys
    /// is not starved by writers that keep changing some of them.
    #[serde(default)]
    pub reads: Vec<Key>,
}

/// Why a transaction aborted. Every reason is safe to retry (with a new
/// transaction: the aborted one never commits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AbortReason {
    /// A key's version is no longer the one the transaction read or named.
    VersionChanged {
        #[serde(with = "serde_bytes")]
        key: Key,
        expected: u64,
        actual: u64,
    },
    /// Another transaction holds a conflicting lock on the key (locks never
    /// wait: a conflict aborts at once).
    Locked {
        #[serde(with = "serde_bytes")]
        key: Key,
    },
    /// Not every participant voted within the coordinator's timeout.
    Timeout,
    /// The coordinator had no record of the transaction when it was asked
    /// for the outcome, so it recorded an abort (presumed abort).
    NoRecord,
    /// A participant could not take the transaction, for the reason given
    /// (a bound reached, a transaction id reused with other contents).
    Refused { reason: String },
    /// A participant no longer remembers every transaction of the commit's
    /// client session (it may have resolved this one and forgotten), so it
    /// refused to prepare it. The front end starts a new session.
    SessionExpired,
}

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        match self {
            AbortReason::VersionChanged { key, expected, actual } => {
                write!(f, "key `{}` is at version {actual}, not {expected}", show(key))
            }
            AbortReason::Locked { key } => write!(f, "key `{}` is locked by another transaction", show(key)),
            AbortReason::Timeout => write!(f, "not every group voted in time"),
            AbortReason::NoRecord => write!(f, "the coordinator had no record of it and recorded an abort"),
            AbortReason::Refused { reason } => write!(f, "{reason}"),
            AbortReason::SessionExpired => {
                write!(f, "a participant no longer remembers this client session's transactions (start a new session)")
            }
        }
    }
}

/// How a transaction ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOutcome {
    /// Every write took effect; `versions` are the written keys' new
    /// versions (a deleted key's is the version its deletion was prepared
    /// at); `reads` the values of a consistent read's keys (`None`: absent).
    Committed {
        versions: Vec<(Key, u64)>,
        #[serde(default)]
        reads: Vec<(Key, Option<Versioned>)>,
    },
    Aborted {
        reason: AbortReason,
    },
}

impl TxnOutcome {
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnOutcome::Committed { .. })
    }
}

/// A participant's answer to `canCommit?`: yes, with the versions its
/// writes will have and the values its part reads (under its locks), or no.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Vote {
    Yes {
        versions: Vec<(Key, u64)>,
        #[serde(default)]
        reads: Vec<(Key, Option<Versioned>)>,
    },
    No {
        reason: AbortReason,
    },
}

/// The share of a transaction one participant group holds: the checks and
/// writes on its keys, and a digest of the whole request, by which a
/// participant tells a retried `canCommit?` from a transaction id reused
/// with other contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnPart {
    pub checks: Vec<Check>,
    pub writes: Vec<TxnWrite>,
    /// Keys read under the part's locks (a consistent read).
    #[serde(default)]
    pub reads: Vec<Key>,
    pub digest: u64,
}

impl TxnPart {
    /// The keys this part locks (see `lock_modes`).
    pub fn locks(&self) -> Vec<(&[u8], LockMode)> {
        lock_modes(&self.checks, &self.writes, &self.reads)
    }

    /// A part of a consistent read: its participant waits for writers'
    /// locks on its keys to go instead of voting no.
    pub fn waits_for_locks(&self) -> bool {
        !self.reads.is_empty() && self.writes.is_empty()
    }
}

/// The keys a transaction (or one group's part of it) locks, each once:
/// written keys exclusively, then keys only checked or read, shared.
/// Borrowed, not copied: this runs on every member for every prepare and
/// resolution.
pub fn lock_modes<'a>(checks: &'a [Check], writes: &'a [TxnWrite], reads: &'a [Key]) -> Vec<(&'a [u8], LockMode)> {
    let n = checks.len() + writes.len() + reads.len();
    let mut out: Vec<(&[u8], LockMode)> = Vec::with_capacity(n);
    let keys = writes
        .iter()
        .map(|w| (&w.key[..], LockMode::Exclusive))
        .chain(checks.iter().map(|c| (&c.key[..], LockMode::Shared)))
        .chain(reads.iter().map(|k| (&k[..], LockMode::Shared)));
    if n <= 32 {
        // A transfer's two or three keys: comparing them pairwise is cheaper
        // than any set.
        for (k, m) in keys {
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, m));
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(n);
        out.extend(keys.filter(|(k, _)| seen.insert(*k)));
    }
    out
}

/// How a transaction holds a key while it is prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// Read (checked) only: other readers may share it.
    Shared,
    /// Written: no one else may hold the key.
    Exclusive,
}

/// A participant's record of a transaction it prepared: replicated through
/// its group's log before it votes yes, so any new primary holds it too.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// Shared with the prepare entry it came from, not copied.
    pub part: Arc<TxnPart>,
    /// The index of the prepare entry: the version its writes get. No other
    /// write to these keys can come between (they are locked), so versions
    /// still only grow and are unique per key.
    pub version: Index,
}

/// A coordinator's record of a decision whose participants have not all
/// acknowledged it yet (`haveCommitted`). A new primary of the home group
/// finds it here and drives the decision to the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub commit: bool,
    /// Every participant group other than the home group.
    pub participants: Vec<GroupId>,
}

impl TxnRequest {
    /// Every key the request touches, with duplicates.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.checks.iter().map(|c| &c.key).chain(self.writes.iter().map(|w| &w.key)).chain(self.reads.iter())
    }

    /// The key that names the home group: the first written key, or the
    /// first checked (then read) one for a read-only transaction.
    pub fn home_key(&self) -> Option<&Key> {
        self.writes
            .first()
            .map(|w| &w.key)
            .or_else(|| self.checks.first().map(|c| &c.key))
            .or_else(|| self.reads.first())
    }

    /// Checks the bounds every transaction must meet: key and value limits,
    /// `MAX_TXN_KEYS` keys, `MAX_TXN_BYTES` of keys and values, and no key
    /// written twice or checked at two versions (the request would contradict
    /// itself).
    pub fn validate(&self) -> Result<(), TxnLimitError> {
        let keys = self.checks.len() + self.writes.len() + self.reads.len();
        if keys == 0 {
            return Err(TxnLimitError::Empty);
        }
        if !self.reads.is_empty() && !self.writes.is_empty() {
            return Err(TxnLimitError::ReadsWithWrites);
        }
        if keys > MAX_TXN_KEYS {
            return Err(TxnLimitError::TooManyKeys { keys, max: MAX_TXN_KEYS });
        }
        let mut bytes = 0usize;
        let mut checked: BTreeMap<&Key, u64> = BTreeMap::new();
        for c in &self.checks {
            check_key(&c.key)?;
            bytes += c.key.len() + 8;
            if checked.insert(&c.key, c.version).is_some_and(|v| v != c.version) {
                return Err(TxnLimitError::Contradiction { key: c.key.clone() });
            }
        }
        let mut written = std::collections::BTreeSet::new();
        for w in &self.writes {
            check_key(&w.key)?;
            if let Some(v) = &w.value {
                check_value(v)?;
                bytes += v.len();
            }
            bytes += w.key.len();
            if !written.insert(&w.key) {
                return Err(TxnLimitError::Contradiction { key: w.key.clone() });
            }
        }
        for k in &self.reads {
            check_key(k)?;
            bytes += k.len();
        }
        if bytes > MAX_TXN_BYTES {
            return Err(TxnLimitError::TooManyBytes { bytes, max: MAX_TXN_BYTES });
        }
        Ok(())
    }

    /// A digest of the whole request (xxh3 of its encoding): the same
    /// transaction id with another digest is a reused id. The encoding is
    /// the wire's (format 2, postcard); a request prepared by a node of
    /// format 1 carries a bincode digest, so its retry after an upgrade
    /// reads as a reused id (see ARCHITECTURE.md, "Formats and versions").
    pub fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&crate::wire::encode(self))
    }

    /// The request split into one part per group, in group order; every part
    /// carries `digest`, the request's.
    pub fn split(&self, cluster: &ClusterMap, digest: u64) -> BTreeMap<GroupId, TxnPart> {
        let new = || TxnPart { checks: Vec::new(), writes: Vec::new(), reads: Vec::new(), digest };
        let mut parts: BTreeMap<GroupId, TxnPart> = BTreeMap::new();
        for c in &self.checks {
            parts.entry(cluster.group_of(&c.key)).or_insert_with(new).checks.push(c.clone());
        }
        for w in &self.writes {
            parts.entry(cluster.group_of(&w.key)).or_insert_with(new).writes.push(w.clone());
        }
        for k in &self.reads {
            parts.entry(cluster.group_of(k)).or_insert_with(new).reads.push(k.clone());
        }
        parts
    }
}

/// A transaction over its bounds, or contradicting itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnLimitError {
    Empty,
    /// A consistent read is read-only.
    ReadsWithWrites,
    TooManyKeys {
        keys: usize,
        max: usize,
    },
    TooManyBytes {
        bytes: usize,
        max: usize,
    },
    Contradiction {
        key: Key,
    },
    Limit(LimitError),
}

impl From<LimitError> for TxnLimitError {
    fn from(e: LimitError) -> TxnLimitError {
        TxnLimitError::Limit(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{GroupSpec, Mode, NodeAddrs};

    fn map(groups: u32) -> ClusterMap {
        ClusterMap::new(
            [(1, NodeAddrs { peer: "a".into(), client: "b".into() })].into_iter().collect(),
            (0..groups)
                .map(|id| GroupSpec { id, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false })
                .collect(),
        )
    }

    fn put(k: &str, v: &str) -> TxnWrite {
        TxnWrite { key: k.into(), value: Some(v.into()) }
    }

    #[test]
    fn txn_ids_print_and_parse_back() {
        let id = TxnId { client: 0xdead_beef, session: 5, seq: 17, home: 2 };
        assert_eq!(id.to_string(), "00000000deadbeef-5-17@2");
        assert_eq!(id.to_string().parse::<TxnId>(), Ok(id));
        for bad in ["", "17@2", "xyz-1-1@2", "ab-1@2", "ab-1-1", "ab-1-1@", "ab-x-1@1", "ab-1-x@1"] {
            assert!(bad.parse::<TxnId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_request_splits_by_group_and_every_part_carries_its_digest() {
        let cluster = map(3);
        let req = TxnRequest {
            checks: (0..10).map(|i| Check { key: format!("c{i}").into_bytes(), version: i }).collect(),
            writes: (0..10).map(|i| put(&format!("w{i}"), "v")).collect(),
            reads: vec![],
        };
        let parts = req.split(&cluster, req.digest());
        assert!(parts.len() > 1, "20 keys over 3 groups land in more than one");
        let (mut checks, mut writes) = (0, 0);
        for (g, p) in &parts {
            assert_eq!(p.digest, req.digest());
            assert!(p.checks.iter().all(|c| cluster.group_of(&c.key) == *g));
            assert!(p.writes.iter().all(|w| cluster.group_of(&w.key) == *g));
            checks += p.checks.len();
            writes += p.writes.len();
        }
        assert_eq!((checks, writes), (10, 10));
    }

    #[test]
    fn bounds_and_contradictions_are_refused() {
        assert_eq!(TxnRequest::default().validate(), Err(TxnLimitError::Empty));
        let many =
            TxnRequest { writes: (0..=MAX_TXN_KEYS).map(|i| put(&i.to_string(), "")).collect(), ..Default::default() };
        assert!(matches!(many.validate(), Err(TxnLimitError::TooManyKeys { .. })));
        let twice = TxnRequest { writes: vec![put("k", "a"), put("k", "b")], ..Default::default() };
        assert_eq!(twice.validate(), Err(TxnLimitError::Contradiction { key: b"k".to_vec() }));
        let two_versions = TxnRequest {
            checks: vec![Check { key: b"k".to_vec(), version: 1 }, Check { key: b"k".to_vec(), version: 2 }],
            ..Default::default()
        };
        assert!(two_versions.validate().is_err());
        let ok = TxnRequest {
            checks: vec![Check { key: b"k".to_vec(), version: 1 }],
            writes: vec![put("k", "v")],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        let mixed = TxnRequest { reads: vec![b"r".to_vec()], ..ok.clone() };
        assert_eq!(mixed.validate(), Err(TxnLimitError::ReadsWithWrites));
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn a_part_locks_written_keys_exclusively_and_checked_ones_shared() {
        let part = TxnPart {
            checks: vec![Check { key: b"a".to_vec(), version: 1 }, Check { key: b"b".to_vec(), version: 1 }],
            writes: vec![put("b", "x"), put("c", "y")],
            reads: vec![],
            digest: 0,
        };
        let expected: Vec<(&[u8], LockMode)> =
            vec![(b"b", LockMode::Exclusive), (b"c", LockMode::Exclusive), (b"a", LockMode::Shared)];
        assert_eq!(part.locks(), expected);
        // The same through the set a large transaction uses.
        let many: Vec<Check> =
            (0..40).map(|i| Check { key: format!("k{}", i % 20).into_bytes(), version: 0 }).collect();
        let writes = vec![put("k3", "x")];
        let modes = lock_modes(&many, &writes, &[]);
        assert_eq!(modes.len(), 20, "each key once");
        assert_eq!(modes[0], (&b"k3"[..], LockMode::Exclusive), "a written key is exclusive even if checked");
        assert!(modes[1..].iter().all(|(_, m)| *m == LockMode::Shared));
    }
}
