//! The client-visible history of a run: every operation a client invoked,
//! when, and what it was told, and every transaction a client committed,
//! with the reads it made for it. The checkers read it; nothing else does.
//!
//! Times are global simulated microseconds (real time, as an outside
//! observer would measure it), not any node's drifting clock.

use pactdb_core::state::kv::{Key, Versioned};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::txn::{TxnId, TxnRequest};
use pactdb_core::wire::Consistency;

/// Global simulated time in microseconds.
pub type Micros = u64;

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still outstanding when the run ended.
    Pending,
    /// The cluster answered.
    Ok(OpResult),
    /// The front end gave up, or the cluster refused it in a way that does
    /// not prove it never ran (`FeError::never_ran` is false: a timeout, or
    /// a retry answered `SessionExpired` whose earlier attempt may have
    /// run). A write that failed this way may or may not have taken effect,
    /// so checkers treat it as indeterminate; a read that failed tells
    /// nothing.
    Failed(String),
    /// The cluster or the front end refused it definitely
    /// (`FeError::never_ran`: the request was invalid, or it was never
    /// sent): it never took effect and never
    /// will, and checkers hold it to that. A read refused this way tells
    /// nothing.
    Refused(String),
}

#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Position in the history (for a transaction's write fed to the
    /// register checkers, a number past every real operation).
    pub id: usize,
    pub client: usize,
    pub op: Op,
    pub invoke_us: Micros,
    /// When the client learned the outcome; `None` while pending.
    pub complete_us: Option<Micros>,
    pub outcome: Outcome,
    /// The transaction (its position in `History::txns`) whose write this
    /// record stands for, in `History::register_history`; `None` for an
    /// operation a client invoked.
    pub txn: Option<usize>,
    /// A read's consistency (writes: `Linearizable`). Only linearizable
    /// reads go to the linearizability checker; the others have their own
    /// (`check::session`).
    pub consistency: Consistency,
}

impl OpRecord {
    /// The key of the operation (empty for a transaction operation, which
    /// the register histories never hold).
    pub fn key(&self) -> &[u8] {
        self.op.key().unwrap_or_default()
    }

    pub fn is_write(&self) -> bool {
        !self.op.is_read()
    }

    /// A write whose effect is unknown: it may take effect at any time after
    /// its invocation, or never. A definitely refused write is not one: it
    /// never takes effect.
    pub fn is_indeterminate_write(&self) -> bool {
        self.is_write() && matches!(self.outcome, Outcome::Pending | Outcome::Failed(_))
    }

    /// A write the client was told definitely never took effect.
    pub fn is_refused(&self) -> bool {
        matches!(self.outcome, Outcome::Refused(_))
    }

    pub fn result(&self) -> Option<&OpResult> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }
}

/// What a transaction was for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxnKind {
    /// Creates every bank account with its initial balance, before the
    /// faults start.
    Setup,
    /// Moves money between two accounts it read.
    Transfer,
    /// Reads every account and commits without writing.
    Audit,
}

/// How a transaction ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnResult {
    /// Still outstanding when the run ended.
    Pending,
    /// Every write took effect, at these versions.
    Committed { versions: Vec<(Key, u64)> },
    /// The cluster answered that it aborted: it never commits.
    Aborted { reason: String },
    /// The commit was refused before it ran (the client library reports
    /// this as "nothing was committed"): it never commits either.
    Refused { error: String },
    /// Neither the commit nor the status query was answered.
    Unknown { error: String },
    /// The client crashed after it sent the commit and never learned the
    /// outcome.
    Abandoned,
}

impl TxnResult {
    pub fn is_committed(&self) -> bool {
        matches!(self, TxnResult::Committed { .. })
    }

    /// The client was told the transaction did not and will never commit.
    pub fn told_not_committed(&self) -> bool {
        matches!(self, TxnResult::Aborted { .. } | TxnResult::Refused { .. })
    }

    /// The client does not know whether it committed.
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, TxnResult::Pending | TxnResult::Unknown { .. } | TxnResult::Abandoned)
    }
}

/// One transaction a client committed (or tried to).
#[derive(Clone, Debug)]
pub struct TxnRecord {
    /// Position in `History::txns`.
    pub id: usize,
    pub client: usize,
    pub kind: TxnKind,
    /// Its identity: the commit's request id and its home group.
    pub txn: TxnId,
    /// The reads the client made for it, in order: positions in
    /// `History::ops` of `Get`s (their versions are the request's checks).
    pub reads: Vec<usize>,
    pub request: TxnRequest,
    /// When the client sent the commit.
    pub invoke_us: Micros,
    /// When it learned the outcome (from the commit or a status query).
    pub complete_us: Option<Micros>,
    pub outcome: TxnResult,
    /// A consistent read's values, as its commit returned them (`None`:
    /// absent): its reads happen at commit, not through `reads`.
    pub read_values: Vec<(Key, Option<Versioned>)>,
}

impl TxnRecord {
    /// The version its commit gave `key`, if it committed and wrote it.
    pub fn version_of(&self, key: &[u8]) -> Option<u64> {
        match &self.outcome {
            TxnResult::Committed { versions } => versions.iter().find(|(k, _)| k == key).map(|(_, v)| *v),
            _ => None,
        }
    }
}

/// Everything the clients did, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
    pub txns: Vec<TxnRecord>,
    /// Session tokens handed between clients: (from, to, when). A client's
    /// later session reads must see what the giver had seen (causal order).
    pub handoffs: Vec<(usize, usize, Micros)>,
}

impl History {
    pub fn invoke(&mut self, client: usize, op: Op, now: Micros) -> usize {
        let id = self.ops.len();
        self.ops.push(OpRecord {
            id,
            client,
            op,
            invoke_us: now,
            complete_us: None,
            outcome: Outcome::Pending,
            txn: None,
            consistency: Consistency::Linearizable,
        });
        id
    }

    pub fn complete(&mut self, id: usize, now: Micros, outcome: Outcome) {
        let rec = &mut self.ops[id];
        debug_assert!(rec.complete_us.is_none(), "an operation completes once");
        rec.complete_us = Some(now);
        rec.outcome = outcome;
    }

    /// A client sent the commit of a transaction.
    pub fn begin_txn(
        &mut self,
        client: usize,
        kind: TxnKind,
        txn: TxnId,
        reads: Vec<usize>,
        request: TxnRequest,
        now: Micros,
    ) -> usize {
        let id = self.txns.len();
        self.txns.push(TxnRecord {
            id,
            client,
            kind,
            txn,
            reads,
            request,
            invoke_us: now,
            complete_us: None,
            outcome: TxnResult::Pending,
            read_values: Vec::new(),
        });
        id
    }

    /// The client learned what became of transaction `id` (`None`: it never
    /// will, having crashed).
    pub fn complete_txn(&mut self, id: usize, now: Option<Micros>, outcome: TxnResult) {
        let rec = &mut self.txns[id];
        debug_assert!(rec.outcome == TxnResult::Pending, "a transaction completes once");
        rec.complete_us = now;
        rec.outcome = outcome;
    }

    /// The distinct keys, sorted.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> = self.ops.iter().map(|o| o.key().to_vec()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The operations on one key, in invocation order.
    pub fn for_key<'a>(&'a self, key: &'a [u8]) -> impl Iterator<Item = &'a OpRecord> + 'a {
        self.ops.iter().filter(move |o| o.key() == key)
    }

    /// The history as the per-key register checkers see it: every operation
    /// a client invoked, plus one write for each write of a transaction that
    /// committed or may have (an aborted or refused one wrote nothing, so a
    /// read of its value has no write to explain it). A committed write has
    /// the version its commit reported and the commit's real-time interval;
    /// one of a transaction whose outcome is unknown is indeterminate. The
    /// workload's transactions never delete; a committed delete would be fed
    /// as an indeterminate one (its answer, whether the key existed, is not
    /// in a transaction's outcome).
    pub fn register_history(&self) -> History {
        let mut ops = self.ops.clone();
        for t in &self.txns {
            if t.outcome.told_not_committed() {
                continue;
            }
            for w in &t.request.writes {
                let (op, outcome) = match (&w.value, t.version_of(&w.key)) {
                    (Some(value), Some(version)) => (
                        Op::Put { key: w.key.clone(), value: value.clone() },
                        Outcome::Ok(OpResult::Written { version }),
                    ),
                    (Some(value), None) => (
                        Op::Put { key: w.key.clone(), value: value.clone() },
                        Outcome::Failed(format!("transaction outcome {:?}", t.outcome)),
                    ),
                    (None, _) => {
                        (Op::Delete { key: w.key.clone() }, Outcome::Failed("a transaction's delete".to_string()))
                    }
                };
                let id = ops.len();
                let complete_us = if t.outcome.is_committed() { t.complete_us } else { None };
                ops.push(OpRecord {
                    id,
                    client: t.client,
                    op,
                    invoke_us: t.invoke_us,
                    complete_us,
                    outcome,
                    txn: Some(t.id),
                    consistency: Consistency::Linearizable,
                });
            }
        }
        History { ops, txns: Vec::new(), handoffs: self.handoffs.clone() }
    }
}

/// Renders a key or value for a report.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::state::txn::TxnWrite;

    #[test]
    fn the_register_history_holds_the_writes_of_every_transaction_that_may_have_committed() {
        let mut h = History::default();
        let g = h.invoke(0, Op::Get { key: b"a".to_vec() }, 0);
        h.complete(g, 5, Outcome::Ok(OpResult::Value(None)));
        let put = |k: &str, v: &str| TxnWrite { key: k.into(), value: Some(v.into()) };
        let req = TxnRequest { writes: vec![put("a", "1"), put("b", "2")], ..Default::default() };
        let id = |seq| TxnId { client: 9, session: 0, seq, home: 0 };
        let committed = h.begin_txn(1, TxnKind::Transfer, id(1), vec![g], req.clone(), 10);
        let versions = vec![(b"a".to_vec(), 7), (b"b".to_vec(), 8)];
        h.complete_txn(committed, Some(20), TxnResult::Committed { versions });
        let aborted = h.begin_txn(1, TxnKind::Transfer, id(2), vec![], req.clone(), 30);
        h.complete_txn(aborted, Some(40), TxnResult::Aborted { reason: "locked".into() });
        h.begin_txn(1, TxnKind::Transfer, id(3), vec![], req, 50);
        let r = h.register_history();
        assert_eq!(r.ops.len(), 1 + 2 + 2, "the get, the committed writes and the pending ones");
        let a: Vec<&OpRecord> = r.for_key(b"a").collect();
        assert_eq!(a[1].result(), Some(&OpResult::Written { version: 7 }));
        assert_eq!((a[1].invoke_us, a[1].complete_us, a[1].txn), (10, Some(20), Some(0)));
        assert!(a[2].is_indeterminate_write(), "the pending transaction may commit any time, or never");
        assert_eq!(a[2].txn, Some(2));
    }
}
