//! The clients: each one a real `FrontEnd` (request ids, retries, redirects,
//! dedup) driven by a small workload, doing one front-end operation at a
//! time, as a client library does.
//!
//! Register clients run single-key operations on a handful of `k*` keys, so
//! that operations collide (their reads sometimes go to a bank account).
//! Bank clients run transactions over the accounts: a transfer reads two
//! accounts with plain gets and commits the new balances with the versions
//! read as checks; an audit reads every account and commits a read-only
//! transaction; the first transfer client first runs the setup that creates
//! every account. A commit that times out is looked up with a status query,
//! as the client library does. Some transfer clients crash right after they
//! send a commit, leaving its fate to the cluster. Pipelined clients keep
//! many single-key operations in flight at once, as a loaded connection
//! does, which fills the session table's per-client window.
//!
//! A client owns the choice of operations and the recording of invocations
//! and outcomes in the history. It never looks at replica state, only at
//! what its front end tells it.

use crate::history::{History, Micros, Outcome, TxnKind, TxnResult};
use crate::plan::OpMix;
use pactdb_core::fe::{FeError, FeTiming, FrontEnd, OpId};
use pactdb_core::state::kv::{Key, Versioned};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::txn::{Check, TxnId, TxnOutcome, TxnRequest, TxnWrite};
use pactdb_core::types::{ClusterMap, NodeId, RequestId};
use pactdb_core::wire::Consistency;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, VecDeque};

/// The front end's timing in the simulator: the defaults, with an operation
/// timeout short enough that operations stuck behind a fault resolve (as
/// indeterminate) well within the run.
pub fn fe_timing() -> FeTiming {
    FeTiming { attempt_timeout_ms: 500, backoff_base_ms: 5, backoff_max_ms: 200, op_timeout_ms: 4_000 }
}

/// The longest a crashing transfer client lives after it sent a commit.
const ABANDON_WITHIN_US: Micros = 50_000;

/// What a client does.
#[derive(Clone, Debug)]
pub enum ClientRole {
    /// Single-key operations on `keys` register keys, in these proportions;
    /// a read goes to a bank account with probability `account_read_p`.
    Register { keys: usize, mix: OpMix, account_read_p: f64 },
    /// Transfers between two accounts; the client crashes right after it
    /// sent a commit with probability `abandon_p`.
    Transfer { abandon_p: f64 },
    /// Audits of every account.
    Audit,
    /// Puts and gets on keys of its own (`p{client}-{n}`, at least `keys`
    /// and about one per request in flight), keeping up to `depth` of them
    /// in flight at once.
    Pipelined { keys: usize, depth: usize },
}

/// The front-end operation in flight, and what it is for.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// A single-key operation (a register operation, or a transaction's
    /// read): its position in `History::ops`.
    Single(usize),
    /// A transaction's commit: its position in `History::txns`.
    Commit(usize),
    /// A status query about a transaction whose commit timed out.
    Status(usize),
}

/// A transaction being put together.
#[derive(Debug)]
struct TxnTask {
    kind: TxnKind,
    /// Keys still to read, in order.
    to_read: VecDeque<Key>,
    /// What each read returned, with the read's position in the history.
    reads: Vec<(Key, Option<Versioned>, usize)>,
}

pub struct Client {
    pub index: usize,
    pub fe: FrontEnd,
    /// The front end's own randomness, drawn from the seed.
    pub rng: ChaCha8Rng,
    nodes: Vec<NodeId>,
    /// The cluster map, to name a transaction's home group as a client
    /// library does.
    cluster: ClusterMap,
    role: ClientRole,
    /// The bank accounts (empty when the seed has no bank).
    accounts: Vec<Key>,
    /// The operation in flight: the front end's id and what it is for.
    current: Option<(OpId, Step)>,
    /// The transaction being put together, if any.
    task: Option<TxnTask>,
    /// The setup to run first: every account's initial balance. It stays
    /// until a setup transaction committed or its outcome is unknown; one
    /// that aborted or was refused (nothing committed) is tried again.
    setup: Option<u64>,
    /// A commit whose outcome is to be looked up next.
    ask_status: Option<usize>,
    /// When this client crashes, having sent a commit.
    abandon_at: Option<Micros>,
    next_op_at: Micros,
    issued: u64,
    think_max_us: Micros,
    /// The version this client last saw for each key; CAS expects it.
    last_version: BTreeMap<Key, u64>,
    /// A pipelined client's operations in flight, with their positions in
    /// `History::ops`.
    inflight: BTreeMap<OpId, usize>,
    /// The most requests this client's front end ever had outstanding.
    pub max_inflight: usize,
    /// No new operations once the run is winding down.
    pub stopped: bool,
    /// Reads at a random consistency, from any member (`Plan::read_levels`).
    read_levels: bool,
}

impl Client {
    pub fn new(
        index: usize,
        seed: u64,
        nodes: Vec<NodeId>,
        cluster: ClusterMap,
        role: ClientRole,
        accounts: Vec<Key>,
        think_max_ms: u64,
    ) -> Client {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let fe = FrontEnd::new(&mut rng, nodes.clone(), fe_timing());
        Client {
            index,
            fe,
            rng,
            nodes,
            cluster,
            role,
            accounts,
            current: None,
            task: None,
            setup: None,
            ask_status: None,
            abandon_at: None,
            next_op_at: 0,
            issued: 0,
            think_max_us: think_max_ms * 1_000,
            last_version: BTreeMap::new(),
            inflight: BTreeMap::new(),
            max_inflight: 0,
            stopped: false,
            read_levels: false,
        }
    }

    /// Whether this client reads at random consistencies (and so may be
    /// handed another client's session token).
    pub fn reads_at_levels(&self) -> bool {
        self.read_levels && matches!(self.role, ClientRole::Register { .. })
    }

    /// Reads at a random consistency from now on, linearizable ones spread
    /// over the members too.
    pub fn use_read_levels(&mut self) {
        self.read_levels = true;
        self.fe.set_spread_linearizable(true);
    }

    /// Makes this client's first transaction the bank's setup: every
    /// account created (checked absent) with balance `initial`.
    pub fn run_setup_first(&mut self, initial: u64) {
        self.setup = Some(initial);
    }

    /// Whether the setup is still to commit.
    pub fn setting_up(&self) -> bool {
        self.setup.is_some()
    }

    /// Holds the client back until `at`.
    pub fn start_at(&mut self, at: Micros) {
        self.next_op_at = at;
    }

    pub fn is_idle(&self) -> bool {
        self.current.is_none() && self.inflight.is_empty()
    }

    /// When this client next has something to do without hearing from the
    /// cluster: a front-end timer, the end of its think time, a status query
    /// to send, its crash. `None` if nothing (a reply may still wake it).
    pub fn next_due(&self) -> Option<Micros> {
        let fe = self.fe.next_wake_ms().map(|ms| ms * 1_000);
        let full = match self.role {
            ClientRole::Pipelined { depth, .. } => self.inflight.len() >= depth,
            _ => false,
        };
        let start = match (self.current, self.ask_status, self.stopped) {
            (Some(_), _, _) => None,
            _ if full => None,
            (None, Some(_), _) => Some(0),
            (None, None, false) => Some(self.next_op_at).filter(|&t| t != Micros::MAX),
            (None, None, true) => None,
        };
        [fe, start, self.abandon_at].into_iter().flatten().min()
    }

    /// Starts the next operation if the client is idle and done thinking,
    /// and crashes it if its time has come.
    pub fn maybe_start(&mut self, now: Micros, history: &mut History) {
        if self.abandon_at.is_some_and(|at| now >= at) {
            self.crash(now, history);
        }
        if let ClientRole::Pipelined { keys, depth } = self.role {
            return self.fill_pipeline(now, history, keys, depth);
        }
        if self.current.is_some() {
            return;
        }
        if let Some(tid) = self.ask_status.take() {
            // Finishing a commit, even when stopped: its outcome is asked
            // at once, as the client library does.
            let txn = history.txns[tid].txn;
            let fid = self.fe.submit(now / 1_000, &mut self.rng, Op::TxnStatus { txn });
            self.current = Some((fid, Step::Status(tid)));
            return;
        }
        if self.stopped {
            self.task = None;
            return;
        }
        if now < self.next_op_at {
            return;
        }
        if self.task.is_none() {
            self.task = self.next_task();
        }
        match &mut self.task {
            None => self.start_single(now, history),
            Some(t) => match t.to_read.pop_front() {
                Some(key) => {
                    let hid = history.invoke(self.index, Op::Get { key }, now);
                    let op = history.ops[hid].op.clone();
                    let fid = self.fe.submit(now / 1_000, &mut self.rng, op);
                    self.current = Some((fid, Step::Single(hid)));
                }
                None => self.commit(now, history),
            },
        }
    }

    /// A pipelined client sends operations until `depth` are in flight (or
    /// its front end's exactly-once window is full).
    fn fill_pipeline(&mut self, now: Micros, history: &mut History, keys: usize, depth: usize) {
        if self.stopped || now < self.next_op_at {
            return;
        }
        while self.inflight.len() < depth && self.fe.can_submit() {
            // Keys of its own, about one per request in flight: the
            // linearizability search stays small however deep the pipeline.
            let key: Key = format!("p{}-{}", self.index, self.rng.gen_range(0..keys.max(depth))).into_bytes();
            let op = if self.rng.gen_bool(0.7) { Op::Put { key, value: self.value("") } } else { Op::Get { key } };
            let hid = history.invoke(self.index, op.clone(), now);
            let fid = self.fe.submit(now / 1_000, &mut self.rng, op);
            self.inflight.insert(fid, hid);
            self.max_inflight = self.max_inflight.max(self.fe.outstanding());
        }
    }

    /// The transaction this client starts next, if it runs one.
    fn next_task(&mut self) -> Option<TxnTask> {
        let task = |kind, to_read: Vec<Key>| Some(TxnTask { kind, to_read: to_read.into(), reads: Vec::new() });
        if self.setup.is_some() {
            return task(TxnKind::Setup, Vec::new());
        }
        match self.role {
            ClientRole::Register { .. } | ClientRole::Pipelined { .. } => None,
            ClientRole::Transfer { .. } => {
                let n = self.accounts.len();
                let a = self.rng.gen_range(0..n);
                let b = (a + self.rng.gen_range(1..n)) % n;
                task(TxnKind::Transfer, vec![self.accounts[a].clone(), self.accounts[b].clone()])
            }
            // Half the audits are consistent reads: they read at commit,
            // under locks, so they do no reads of their own first.
            ClientRole::Audit if self.rng.gen_bool(0.5) => task(TxnKind::Audit, Vec::new()),
            ClientRole::Audit => task(TxnKind::Audit, self.accounts.clone()),
        }
    }

    /// A unique value, so that a read tells which write it saw.
    fn value(&mut self, prefix: &str) -> Vec<u8> {
        self.issued += 1;
        format!("{prefix}c{}-{}", self.index, self.issued).into_bytes()
    }

    fn start_single(&mut self, now: Micros, history: &mut History) {
        let op = self.choose();
        let hid = history.invoke(self.index, op.clone(), now);
        let consistency = if self.read_levels && op.is_read() {
            match self.rng.gen_range(0..4) {
                0 | 1 => Consistency::Linearizable,
                2 => Consistency::Session,
                _ => Consistency::Stale { max_ms: [5, 20, 100][self.rng.gen_range(0..3)] },
            }
        } else {
            Consistency::Linearizable
        };
        history.ops[hid].consistency = consistency;
        let fid = self.fe.submit_with(now / 1_000, &mut self.rng, op, consistency);
        self.current = Some((fid, Step::Single(hid)));
        self.max_inflight = self.max_inflight.max(self.fe.outstanding());
    }

    fn choose(&mut self) -> Op {
        let ClientRole::Register { keys, ref mix, account_read_p } = self.role else {
            unreachable!("only register clients run single operations")
        };
        let m = mix.clone();
        let key: Key = format!("k{}", self.rng.gen_range(0..keys)).into_bytes();
        // Values are unique in the whole run, so a read tells which write it saw.
        let value = self.value("");
        let total = m.get + m.put + m.cas + m.delete;
        let mut pick = self.rng.gen_range(0..total);
        if pick < m.get {
            if !self.accounts.is_empty() && self.rng.gen_bool(account_read_p) {
                let a = self.rng.gen_range(0..self.accounts.len());
                return Op::Get { key: self.accounts[a].clone() };
            }
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

    /// Every read of the transaction is done: sends its commit.
    fn commit(&mut self, now: Micros, history: &mut History) {
        let task = self.task.take().expect("a transaction to commit");
        let checks: Vec<Check> = task
            .reads
            .iter()
            .map(|(key, v, _)| Check { key: key.clone(), version: v.as_ref().map_or(0, |v| v.version) })
            .collect();
        let writes = match task.kind {
            TxnKind::Setup => {
                let initial = self.setup.expect("a setup to run");
                let accounts = self.accounts.clone();
                let checks = accounts.iter().map(|k| Check { key: k.clone(), version: 0 }).collect();
                let writes = accounts
                    .into_iter()
                    .map(|key| TxnWrite { key, value: Some(self.value(&format!("{initial}|"))) })
                    .collect();
                return self.send_commit(
                    now,
                    history,
                    task.kind,
                    Vec::new(),
                    TxnRequest { checks, writes, reads: Vec::new() },
                );
            }
            TxnKind::Audit if task.reads.is_empty() => {
                let req = TxnRequest { reads: self.accounts.clone(), ..Default::default() };
                return self.send_commit(now, history, task.kind, Vec::new(), req);
            }
            TxnKind::Audit => Vec::new(),
            TxnKind::Transfer => {
                let balances: Option<Vec<i64>> =
                    task.reads.iter().map(|(_, v, _)| v.as_ref().and_then(|v| balance(&v.value))).collect();
                let Some(mut b) = balances else {
                    // An account it cannot read a balance from: nothing to do.
                    return self.think(now);
                };
                let (mut from, mut to) = (0, 1);
                if b[from] <= 0 {
                    (from, to) = (to, from);
                }
                let amount = if b[from] <= 0 { 0 } else { self.rng.gen_range(1..=b[from]) };
                b[from] -= amount;
                b[to] += amount;
                task.reads
                    .iter()
                    .zip(b)
                    .map(|((key, _, _), balance)| TxnWrite {
                        key: key.clone(),
                        value: Some(self.value(&format!("{balance}|"))),
                    })
                    .collect()
            }
        };
        let reads = task.reads.iter().map(|(_, _, hid)| *hid).collect();
        self.send_commit(now, history, task.kind, reads, TxnRequest { checks, writes, reads: Vec::new() });
    }

    fn send_commit(&mut self, now: Micros, history: &mut History, kind: TxnKind, reads: Vec<usize>, req: TxnRequest) {
        let home = self.cluster.group_of(req.home_key().expect("a transaction touches a key"));
        let fid = self.fe.submit(now / 1_000, &mut self.rng, Op::Commit(req.clone()));
        // The id is final once the group named the session (see `on_done`).
        let id = self.fe.request_id(fid).unwrap_or(RequestId {
            client: self.fe.client_id(),
            session: RequestId::NO_SESSION,
            seq: fid,
        });
        let txn = TxnId::new(id, home);
        let tid = history.begin_txn(self.index, kind, txn, reads, req, now);
        self.current = Some((fid, Step::Commit(tid)));
        if let ClientRole::Transfer { abandon_p } = self.role {
            if kind == TxnKind::Transfer && abandon_p > 0.0 && self.rng.gen_bool(abandon_p) {
                self.abandon_at = Some(now + self.rng.gen_range(0..=ABANDON_WITHIN_US));
            }
        }
    }

    /// The client crashes with its commit in flight: it never learns the
    /// outcome, and comes back as a new client (a new front end, so a new
    /// client id) that knows nothing of it.
    fn crash(&mut self, now: Micros, history: &mut History) {
        self.abandon_at = None;
        if let Some((fid, step @ (Step::Commit(tid) | Step::Status(tid)))) = self.current.take() {
            if let (Step::Commit(_), Some(id)) = (step, self.fe.request_id(fid)) {
                // The commit went out under this id (or never ran, if its
                // session was still unnamed).
                history.txns[tid].txn = TxnId::new(id, history.txns[tid].txn.home);
            }
            history.complete_txn(tid, None, TxnResult::Abandoned);
        }
        self.ask_status = None;
        self.task = None;
        self.fe = FrontEnd::new(&mut self.rng, self.nodes.clone(), fe_timing());
        self.think(now);
    }

    fn think(&mut self, now: Micros) {
        let think = if self.think_max_us == 0 { 0 } else { self.rng.gen_range(0..=self.think_max_us) };
        self.next_op_at = now + think;
    }

    /// The front end finished operation `op`. Returns false if it was not
    /// the one in flight (a stale completion the client ignores).
    pub fn on_done(
        &mut self,
        now: Micros,
        op: OpId,
        id: RequestId,
        result: Result<OpResult, FeError>,
        history: &mut History,
    ) -> bool {
        if let Some(hid) = self.inflight.remove(&op) {
            let outcome = match result {
                Ok(r) => Outcome::Ok(r),
                Err(e) if e.never_ran() => Outcome::Refused(e.to_string()),
                Err(e) => Outcome::Failed(e.to_string()),
            };
            history.complete(hid, now, outcome);
            return true;
        }
        let Some((fid, step)) = self.current else { return false };
        if fid != op {
            return false;
        }
        self.current = None;
        if let Step::Commit(tid) = step {
            // The transaction is named by the id its commit went out under.
            history.txns[tid].txn = TxnId::new(id, history.txns[tid].txn.home);
        }
        match step {
            Step::Single(hid) => self.single_done(now, hid, result, history),
            Step::Commit(tid) => match result {
                Ok(r) => self.txn_done(now, tid, r, history),
                // The commit may have run (a timeout, or a refusal that
                // depends on the group's state while an earlier attempt may
                // still be in flight): ask, like the client library.
                Err(e) if !e.never_ran() => {
                    self.ask_status = Some(tid);
                }
                Err(e) => {
                    history.complete_txn(tid, Some(now), TxnResult::Refused { error: e.to_string() });
                    self.txn_over(now, tid, history);
                }
            },
            Step::Status(tid) => match result {
                Ok(r) => self.txn_done(now, tid, r, history),
                Err(e) => {
                    history.complete_txn(tid, Some(now), TxnResult::Unknown { error: e.to_string() });
                    self.txn_over(now, tid, history);
                }
            },
        }
        if !matches!(step, Step::Single(_)) {
            // The commit is over, one way or another: no crash is pending.
            self.abandon_at = self.abandon_at.filter(|_| self.ask_status.is_some());
        }
        true
    }

    fn single_done(&mut self, now: Micros, hid: usize, result: Result<OpResult, FeError>, history: &mut History) {
        let outcome = match result {
            Ok(r) => {
                let key = history.ops[hid].key().to_vec();
                let seen = match &r {
                    OpResult::Value(v) => v.as_ref().map_or(0, |v| v.version),
                    OpResult::Written { version } => *version,
                    OpResult::Deleted { .. } => 0,
                    OpResult::CasFailed { current_version } => *current_version,
                    OpResult::Txn(_) | OpResult::Scanned { .. } => 0,
                };
                self.last_version.insert(key, seen);
                Outcome::Ok(r)
            }
            Err(e) if e.never_ran() => Outcome::Refused(e.to_string()),
            Err(e) => Outcome::Failed(e.to_string()),
        };
        let read = match (&outcome, self.task.is_some()) {
            (Outcome::Ok(OpResult::Value(v)), true) => Some(v.clone()),
            _ => None,
        };
        history.complete(hid, now, outcome);
        match (read, &mut self.task) {
            (Some(v), Some(t)) => {
                // The transaction goes on at once with its next read or commit.
                t.reads.push((history.ops[hid].key().to_vec(), v, hid));
                self.next_op_at = now;
            }
            (None, Some(_)) => {
                // A read failed: the transaction is given up before it commits.
                self.task = None;
                self.think(now);
            }
            (_, None) => self.think(now),
        }
    }

    fn txn_done(&mut self, now: Micros, tid: usize, result: OpResult, history: &mut History) {
        let outcome = match result {
            OpResult::Txn(TxnOutcome::Committed { versions, reads }) => {
                history.txns[tid].read_values = reads;
                TxnResult::Committed { versions }
            }
            OpResult::Txn(TxnOutcome::Aborted { reason }) => TxnResult::Aborted { reason: reason.to_string() },
            other => TxnResult::Unknown { error: format!("a commit answered {other:?}") },
        };
        history.complete_txn(tid, Some(now), outcome);
        self.txn_over(now, tid, history);
    }

    /// The client knows all it will know of transaction `tid`.
    fn txn_over(&mut self, now: Micros, tid: usize, history: &History) {
        let t = &history.txns[tid];
        if t.kind == TxnKind::Setup && !t.outcome.told_not_committed() {
            self.setup = None;
        }
        self.think(now);
    }
}

/// The balance an account's value holds: `"{balance}|{who wrote it}"`.
pub fn balance(value: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(value).ok()?;
    s.split('|').next()?.parse().ok()
}

/// `count` account names spread over the groups of `cluster` round-robin
/// (`acct-N`, the lowest free N of each group), so that most pairs of
/// accounts live in different groups when there are several.
pub fn account_names(cluster: &ClusterMap, count: usize) -> Vec<Key> {
    let mut taken = Vec::new();
    let mut out = Vec::new();
    for i in 0..count {
        let group = cluster.groups[i % cluster.groups.len()].id;
        let n = (0..)
            .find(|n| !taken.contains(n) && cluster.group_of(format!("acct-{n}").as_bytes()) == group)
            .expect("some name hashes to every group");
        taken.push(n);
        out.push(format!("acct-{n}").into_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::types::{GroupSpec, Mode};

    #[test]
    fn balances_parse_and_accounts_spread_over_every_group() {
        assert_eq!(balance(b"120|c3-7"), Some(120));
        assert_eq!(balance(b"-5|c3-7"), Some(-5));
        assert_eq!(balance(b"c3-7"), None);
        let cluster = ClusterMap::new(
            Default::default(),
            (0..3)
                .map(|id| GroupSpec { id, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false })
                .collect(),
        );
        let names = account_names(&cluster, 8);
        let mut per_group = [0; 3];
        for n in &names {
            per_group[cluster.group_of(n) as usize] += 1;
        }
        assert_eq!(per_group, [3, 3, 2]);
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 8);
    }
}
