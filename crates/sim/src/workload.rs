//! The clients: each one a real `FrontEnd` (request ids, retries, redirects,
//! dedup) driven by a small register workload on a handful of keys, so that
//! operations collide.
//!
//! A client runs one operation at a time (so its own operations are ordered
//! in real time), thinks for a random while, and picks the next one. It owns
//! the choice of operations and the recording of invocations and outcomes in
//! the history; it never looks at replica state, only at what its front end
//! tells it.

use crate::history::{History, Micros, Outcome};
use crate::plan::OpMix;
use pactdb_core::fe::{FeTiming, FrontEnd, OpId};
use pactdb_core::state::kv::Key;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::types::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// The front end's timing in the simulator: the defaults, with an operation
/// timeout short enough that operations stuck behind a fault resolve (as
/// indeterminate) well within the run.
pub fn fe_timing() -> FeTiming {
    FeTiming { attempt_timeout_ms: 500, backoff_base_ms: 5, backoff_max_ms: 200, op_timeout_ms: 4_000 }
}

pub struct Client {
    pub index: usize,
    pub fe: FrontEnd,
    /// The front end's own randomness, drawn from the seed.
    pub rng: ChaCha8Rng,
    /// The operation in flight: the front end's id and the history's.
    current: Option<(OpId, usize)>,
    next_op_at: Micros,
    issued: u64,
    keys: usize,
    mix: OpMix,
    think_max_us: Micros,
    /// The version this client last saw for each key; CAS expects it.
    last_version: BTreeMap<Key, u64>,
    /// No new operations once the run is winding down.
    pub stopped: bool,
}

impl Client {
    pub fn new(index: usize, seed: u64, nodes: Vec<NodeId>, keys: usize, mix: OpMix, think_max_ms: u64) -> Client {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let fe = FrontEnd::new(&mut rng, nodes, fe_timing());
        Client {
            index,
            fe,
            rng,
            current: None,
            next_op_at: 0,
            issued: 0,
            keys,
            mix,
            think_max_us: think_max_ms * 1_000,
            last_version: BTreeMap::new(),
            stopped: false,
        }
    }

    pub fn is_idle(&self) -> bool {
        self.current.is_none()
    }

    /// Starts the next operation if the client is idle and done thinking.
    pub fn maybe_start(&mut self, now: Micros, history: &mut History) {
        if self.stopped || self.current.is_some() || now < self.next_op_at {
            return;
        }
        let op = self.choose();
        let hid = history.invoke(self.index, op.clone(), now);
        let fid = self.fe.submit(now / 1_000, &mut self.rng, op);
        self.current = Some((fid, hid));
    }

    fn choose(&mut self) -> Op {
        self.issued += 1;
        let key: Key = format!("k{}", self.rng.gen_range(0..self.keys)).into_bytes();
        // Values are unique in the whole run, so a read tells which write it saw.
        let value = format!("c{}-{}", self.index, self.issued).into_bytes();
        let m = &self.mix;
        let total = m.get + m.put + m.cas + m.delete;
        let mut pick = self.rng.gen_range(0..total);
        if pick < m.get {
            return Op::Get { key };
        }
        pick -= m.get;
        if pick < m.put {
            return Op::Put { key, value };
        }
        pick -= m.put;
        if pick < m.cas {
            let expected_version = if self.rng.gen_bool(0.8) {
                self.last_version.get(&key).copied().unwrap_or(0)
            } else {
                self.rng.gen_range(0..=3)
            };
            return Op::Cas { key, expected_version, value };
        }
        Op::Delete { key }
    }

    /// The front end finished operation `op`. Returns false if it was not
    /// the one in flight (a stale completion the client ignores).
    pub fn on_done(&mut self, now: Micros, op: OpId, result: Result<OpResult, String>, history: &mut History) -> bool {
        let Some((fid, hid)) = self.current else { return false };
        if fid != op {
            return false;
        }
        self.current = None;
        let outcome = match result {
            Ok(r) => {
                let key = history.ops[hid].key().to_vec();
                let seen = match &r {
                    OpResult::Value(v) => v.as_ref().map_or(0, |v| v.version),
                    OpResult::Written { version } => *version,
                    OpResult::Deleted { .. } => 0,
                    OpResult::CasFailed { current_version } => *current_version,
                    OpResult::Txn(_) => 0,
                };
                self.last_version.insert(key, seen);
                Outcome::Ok(r)
            }
            Err(e) => Outcome::Failed(e),
        };
        history.complete(hid, now, outcome);
        let think = if self.think_max_us == 0 { 0 } else { self.rng.gen_range(0..=self.think_max_us) };
        self.next_op_at = now + think;
        true
    }
}
