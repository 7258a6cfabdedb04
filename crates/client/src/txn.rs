//! Transactions as a client writes them: reads served at once (their
//! versions recorded), writes buffered, one atomic commit over every group
//! touched. `Client::begin` gives an interactive `Txn`; `Client::txn` a
//! one-shot `TxnBuilder` with etcd-style compares.
//!
//! It owns the client's side of a transaction's outcome. It must never
//! report an outcome it does not know: a commit whose answer was lost is
//! looked up (`Client::txn_status`, which makes the coordinator record an
//! abort if it has no record, so the answer is final), and only if that
//! fails too is the outcome `OutcomeUnknown`.

use crate::{Client, Error};
use pactdb_core::fe::FeError;
use pactdb_core::state::kv::{Key, Value, Versioned};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::txn::{AbortReason, Check, TxnId, TxnOutcome, TxnRequest, TxnWrite};
use std::collections::{BTreeMap, HashMap};

/// A committed transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// `None` for a transaction that read and wrote nothing (nothing was sent).
    pub txn: Option<TxnId>,
    /// Every written key's new version.
    pub versions: BTreeMap<Key, u64>,
}

/// Why a commit did not succeed.
#[derive(thiserror::Error, Debug)]
pub enum TxnError {
    /// The transaction did not commit and never will: safe to retry (as a
    /// new transaction).
    #[error("transaction {txn} aborted: {reason}")]
    Aborted {
        /// The transaction's id.
        txn: TxnId,
        /// Why it aborted (a key read or compared was at another version, a
        /// lock was held, ...).
        reason: AbortReason,
    },
    /// Neither the commit nor a status query got an answer: the transaction
    /// may or may not have committed. `Client::txn_status(txn)` answers it
    /// later.
    #[error(
        "the outcome of transaction {txn} is unknown ({last_error}); `txn_status` tells it once the cluster answers"
    )]
    OutcomeUnknown {
        /// The id to ask about.
        txn: TxnId,
        /// What went wrong with the commit and then with the status query.
        last_error: String,
    },
    /// The transaction was refused before it ran (bad input, over a bound),
    /// or the client failed; nothing was committed.
    #[error(transparent)]
    Other(#[from] Error),
}

/// An interactive transaction: `get` reads at once, `put` and `delete`
/// buffer, `commit` commits everything atomically.
pub struct Txn {
    client: Client,
    /// What each key read returned (`None`: absent), in first-read order.
    reads: Vec<(Key, Option<Versioned>)>,
    /// Compares: versions the commit requires.
    compares: Vec<Check>,
    /// Buffered writes in first-write order (the first one names the home
    /// group); a later write of a key replaces its value in place.
    writes: Vec<TxnWrite>,
    /// Where each key is in `reads` and `writes`: a transaction of thousands
    /// of keys must not search them one by one.
    read_at: HashMap<Key, usize>,
    write_at: HashMap<Key, usize>,
}

impl Client {
    /// Starts an interactive transaction.
    pub fn begin(&self) -> Txn {
        Txn {
            client: self.clone(),
            reads: Vec::new(),
            compares: Vec::new(),
            writes: Vec::new(),
            read_at: HashMap::new(),
            write_at: HashMap::new(),
        }
    }

    /// Starts a one-shot transaction: compares, writes, commit.
    pub fn txn(&self) -> TxnBuilder {
        TxnBuilder { txn: self.begin() }
    }

    /// Reads every key of `keys` as of one instant, across groups: a
    /// read-only transaction whose participants read their keys under
    /// shared locks, waiting (briefly) for writers that hold some rather than
    /// aborting, so that even a read of thousands of keys under a write load
    /// gets through. Returns each key's value (`None`: absent) in the order
    /// asked. A key may be named once.
    pub async fn consistent_read(&self, keys: Vec<Key>) -> Result<Vec<(Key, Option<Versioned>)>, TxnError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let req = TxnRequest { checks: Vec::new(), writes: Vec::new(), reads: keys.clone() };
        let home = self.cluster().group_of(&keys[0]);
        let (id, result) = self.execute_with_id(Op::Commit(req)).await?;
        let txn = TxnId::new(id, home);
        let outcome = match result {
            Ok(OpResult::Txn(outcome)) => outcome,
            Ok(other) => return Err(Error::Other(format!("unexpected result {other:?}")).into()),
            // A read-only transaction changed nothing: asking how it ended
            // would not give its values back. It is simply not done.
            Err(FeError::Timeout { last_error }) => {
                let last_error = last_error.unwrap_or_else(|| "no answer".into());
                return Err(TxnError::OutcomeUnknown { txn, last_error });
            }
            Err(e) => return Err(Error::Fe(e).into()),
        };
        match outcome {
            TxnOutcome::Committed { reads, .. } => {
                let mut by_key: HashMap<Key, Option<Versioned>> = reads.into_iter().collect();
                Ok(keys.into_iter().map(|k| (k.clone(), by_key.remove(&k).flatten())).collect())
            }
            TxnOutcome::Aborted { reason } => Err(TxnError::Aborted { txn, reason }),
        }
    }

    /// What became of transaction `txn`. If its coordinator has no record of
    /// it, it records an abort first, so the answer is final either way.
    pub async fn txn_status(&self, txn: TxnId) -> Result<TxnOutcome, Error> {
        match self.execute(Op::TxnStatus { txn }).await? {
            OpResult::Txn(outcome) => Ok(outcome),
            other => Err(Error::Other(format!("unexpected result {other:?}"))),
        }
    }
}

impl Txn {
    /// Reads `key` (at its group's primary, under its lease) and records the
    /// version read: the commit succeeds only if it is still the key's
    /// version then. A key this transaction wrote reads as written; a key
    /// read before reads the same again.
    pub async fn get(&mut self, key: impl Into<Vec<u8>>) -> Result<Option<Versioned>, Error> {
        let key = key.into();
        if let Some(&i) = self.write_at.get(&key) {
            return Ok(self.writes[i].value.clone().map(|value| Versioned { value, version: 0 }));
        }
        if let Some(&i) = self.read_at.get(&key) {
            return Ok(self.reads[i].1.clone());
        }
        let v = self.client.get(key.clone()).await?;
        self.read_at.insert(key.clone(), self.reads.len());
        self.reads.push((key, v.clone()));
        Ok(v)
    }

    /// Buffers a write of `value` to `key`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.write(key.into(), Some(value.into()));
    }

    /// Buffers a deletion of `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.write(key.into(), None);
    }

    /// Requires `key` to be at `version` when the transaction commits (0:
    /// the key must not exist).
    pub fn when(&mut self, key: impl Into<Vec<u8>>, version: u64) {
        let key = key.into();
        match self.compares.iter_mut().find(|c| c.key == key) {
            Some(c) => c.version = version,
            None => self.compares.push(Check { key, version }),
        }
    }

    fn write(&mut self, key: Key, value: Option<Value>) {
        match self.write_at.get(&key) {
            Some(&i) => self.writes[i].value = value,
            None => {
                self.write_at.insert(key.clone(), self.writes.len());
                self.writes.push(TxnWrite { key, value });
            }
        }
    }

    /// What each read returned so far, in first-read order.
    pub fn reads(&self) -> &[(Key, Option<Versioned>)] {
        &self.reads
    }

    /// The request `commit` sends: every compare, every read's version (a
    /// compare on the same key wins), every buffered write.
    pub fn request(&self) -> TxnRequest {
        let mut checks = self.compares.clone();
        let compared: std::collections::HashSet<&Key> = self.compares.iter().map(|c| &c.key).collect();
        for (key, v) in &self.reads {
            if !compared.contains(key) {
                checks.push(Check { key: key.clone(), version: v.as_ref().map_or(0, |v| v.version) });
            }
        }
        TxnRequest { checks, writes: self.writes.clone(), reads: Vec::new() }
    }

    /// Commits atomically over every group the transaction touched. A
    /// retried commit (after a lost answer) runs at most once.
    pub async fn commit(self) -> Result<Committed, TxnError> {
        let req = self.request();
        if req.checks.is_empty() && req.writes.is_empty() {
            return Ok(Committed { txn: None, versions: BTreeMap::new() });
        }
        let cluster = self.client.cluster();
        let home = cluster.group_of(req.home_key().expect("a request with a check or a write has a key"));
        let (id, result) = self.client.execute_with_id(Op::Commit(req)).await?;
        let txn = TxnId::new(id, home);
        match result {
            Ok(OpResult::Txn(outcome)) => outcome_of(txn, outcome),
            Ok(other) => Err(Error::Other(format!("unexpected result {other:?}")).into()),
            // The commit may have run: ask. A coordinator without a record
            // of it records an abort, so whatever it answers is final. Only
            // a refusal that proves the request never ran (`never_ran`) is
            // final by itself: a state-dependent one (below min_members, a
            // session forgotten) may answer a retry while an earlier attempt
            // is still in flight and commits.
            Err(FeError::Timeout { last_error }) => {
                lookup(&self.client, txn, last_error.unwrap_or_else(|| "no answer".into())).await
            }
            Err(e) if !e.never_ran() => lookup(&self.client, txn, e.to_string()).await,
            Err(e) => Err(Error::Fe(e).into()),
        }
    }
}

/// The outcome of a commit whose answer was lost.
async fn lookup(client: &Client, txn: TxnId, first: String) -> Result<Committed, TxnError> {
    match client.txn_status(txn).await {
        Ok(outcome) => outcome_of(txn, outcome),
        Err(e) => Err(TxnError::OutcomeUnknown { txn, last_error: format!("{first}; status: {e}") }),
    }
}

fn outcome_of(txn: TxnId, outcome: TxnOutcome) -> Result<Committed, TxnError> {
    match outcome {
        TxnOutcome::Committed { versions, .. } => {
            Ok(Committed { txn: Some(txn), versions: versions.into_iter().collect() })
        }
        TxnOutcome::Aborted { reason } => Err(TxnError::Aborted { txn, reason }),
    }
}

/// A one-shot transaction: `client.txn().when(k, v).put(k, v).commit()`.
pub struct TxnBuilder {
    txn: Txn,
}

impl TxnBuilder {
    /// Requires `key` to be at `version` at commit (0: must not exist).
    pub fn when(mut self, key: impl Into<Vec<u8>>, version: u64) -> Self {
        self.txn.when(key, version);
        self
    }

    /// Writes `value` to `key` at commit.
    pub fn put(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.txn.put(key, value);
        self
    }

    /// Deletes `key` at commit.
    pub fn delete(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.txn.delete(key);
        self
    }

    /// Commits atomically, as [`Txn::commit`].
    pub async fn commit(self) -> Result<Committed, TxnError> {
        self.txn.commit().await
    }
}
