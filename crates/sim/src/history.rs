//! The client-visible history of a run: every operation a client invoked,
//! when, and what it was told. The checkers read it; nothing else does.
//!
//! Times are global simulated microseconds (real time, as an outside
//! observer would measure it), not any node's drifting clock.

use pactdb_core::state::kv::Key;
use pactdb_core::state::op::{Op, OpResult};

/// Global simulated time in microseconds.
pub type Micros = u64;

/// How an operation ended, as its client saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still outstanding when the run ended.
    Pending,
    /// The cluster answered.
    Ok(OpResult),
    /// The front end gave up or the cluster refused. A write that failed
    /// this way may or may not have taken effect, so checkers treat it as
    /// indeterminate; a read that failed tells nothing.
    Failed(String),
}

#[derive(Clone, Debug)]
pub struct OpRecord {
    /// Position in the history.
    pub id: usize,
    pub client: usize,
    pub op: Op,
    pub invoke_us: Micros,
    /// When the client learned the outcome; `None` while pending.
    pub complete_us: Option<Micros>,
    pub outcome: Outcome,
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
    /// its invocation, or never.
    pub fn is_indeterminate_write(&self) -> bool {
        self.is_write() && !matches!(self.outcome, Outcome::Ok(_))
    }

    pub fn result(&self) -> Option<&OpResult> {
        match &self.outcome {
            Outcome::Ok(r) => Some(r),
            _ => None,
        }
    }
}

/// Everything the clients did, in invocation order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub ops: Vec<OpRecord>,
}

impl History {
    pub fn invoke(&mut self, client: usize, op: Op, now: Micros) -> usize {
        let id = self.ops.len();
        self.ops.push(OpRecord { id, client, op, invoke_us: now, complete_us: None, outcome: Outcome::Pending });
        id
    }

    pub fn complete(&mut self, id: usize, now: Micros, outcome: Outcome) {
        let rec = &mut self.ops[id];
        debug_assert!(rec.complete_us.is_none(), "an operation completes once");
        rec.complete_us = Some(now);
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
}

/// Renders a key or value for a report.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
