//! The workload `pactdb chaos` runs while it injects faults, and the
//! client-side history it records.
//!
//! It owns the keys (every one under a prefix unique to the run, so a run
//! on a cluster that served earlier runs sees only its own writes), the
//! register clients (get, put and compare-and-set of unique values on a
//! few keys per group), the bank (accounts spread over the groups, created
//! by one setup transaction; transfer clients move money between two of
//! them in a transaction; an auditor reads them all in one consistent
//! read), and the recording: every operation's invocation and completion
//! in microseconds since the run began, and its outcome mapped exactly as
//! the simulator maps a front end's (`FeError::never_ran`: refused, it
//! never ran; any other error or no answer in time: indeterminate).
//!
//! It must never judge the history (the checkers do) and never retry an
//! operation under a new identity after an indeterminate outcome while
//! pretending the first never ran: each attempt is its own record.

use pactdb_client::{Client, Error, TxnError};
use pactdb_core::state::kv::{Key, Versioned};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::txn::{TxnId, TxnRequest};
use pactdb_core::types::{ClusterMap, GroupId};
use pactdb_sim::history::{History, Micros, Outcome, TxnKind, TxnResult};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a client waits for one operation before it records it as
/// indeterminate (the front end gives up after 10 s itself).
pub const OP_TIMEOUT: Duration = Duration::from_secs(15);
/// A transaction's commit and its status query, together.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Register keys per group, and bank accounts per group.
const REGISTERS_PER_GROUP: usize = 3;
const ACCOUNTS_PER_GROUP: usize = 2;
/// Every account's balance at the start.
pub const INITIAL_BALANCE: i64 = 100;
/// A transfer moves at most this much.
const MAX_TRANSFER: i64 = 30;
/// The auditor's pause between two audits.
const AUDIT_EVERY: Duration = Duration::from_millis(700);

/// The history being recorded, shared by every client.
#[derive(Clone)]
pub struct Recorder {
    start: Instant,
    history: Arc<Mutex<History>>,
}

impl Recorder {
    pub fn new(start: Instant) -> Recorder {
        Recorder { start, history: Arc::new(Mutex::new(History::default())) }
    }

    pub fn now(&self) -> Micros {
        self.start.elapsed().as_micros() as Micros
    }

    pub fn invoke(&self, client: usize, op: Op) -> usize {
        let now = self.now();
        self.history.lock().expect("history lock").invoke(client, op, now)
    }

    pub fn complete(&self, id: usize, outcome: Outcome) {
        let now = self.now();
        self.history.lock().expect("history lock").complete(id, now, outcome)
    }

    fn begin_txn(&self, client: usize, kind: TxnKind, reads: Vec<usize>, request: TxnRequest) -> usize {
        let now = self.now();
        // The id is known once the commit answers; until then a placeholder.
        let txn = TxnId { client: 0, session: 0, seq: 0, home: 0 };
        self.history.lock().expect("history lock").begin_txn(client, kind, txn, reads, request, now)
    }

    fn complete_txn(
        &self,
        id: usize,
        txn: Option<TxnId>,
        outcome: TxnResult,
        read_values: Vec<(Key, Option<Versioned>)>,
    ) {
        let now = self.now();
        let mut h = self.history.lock().expect("history lock");
        h.complete_txn(id, Some(now), outcome);
        if let Some(txn) = txn {
            h.txns[id].txn = txn;
        }
        h.txns[id].read_values = read_values;
    }

    /// Runs `f` on what was recorded so far, without copying it.
    pub fn with<T>(&self, f: impl FnOnce(&History) -> T) -> T {
        f(&self.history.lock().expect("history lock"))
    }

    /// A copy of what was recorded so far.
    pub fn snapshot(&self) -> History {
        self.history.lock().expect("history lock").clone()
    }
}

/// A client error as the history records it.
pub fn outcome_of_error(e: &Error) -> Outcome {
    match e {
        Error::Fe(fe) if fe.never_ran() => Outcome::Refused(e.to_string()),
        _ => Outcome::Failed(e.to_string()),
    }
}

/// Runs one operation, bounded by `OP_TIMEOUT`, and records it; its
/// history id and outcome.
pub async fn recorded(rec: &Recorder, client_id: usize, client: &Client, op: Op) -> (usize, Outcome) {
    let id = rec.invoke(client_id, op.clone());
    let outcome = match tokio::time::timeout(OP_TIMEOUT, client.execute(op)).await {
        Ok(Ok(r)) => Outcome::Ok(r),
        Ok(Err(e)) => outcome_of_error(&e),
        Err(_) => Outcome::Failed(format!("no answer within {}s", OP_TIMEOUT.as_secs())),
    };
    rec.complete(id, outcome.clone());
    (id, outcome)
}

/// The keys of one run.
#[derive(Clone, Debug)]
pub struct Keys {
    pub registers: Vec<Key>,
    pub accounts: Vec<Key>,
    /// One key per group that the settle probe writes (never recorded).
    pub probes: Vec<(GroupId, Key)>,
}

/// `per_group` keys of each group, named `PREFIX-N` for the lowest N that
/// land there.
fn spread(cluster: &ClusterMap, prefix: &str, per_group: usize) -> Vec<(GroupId, Key)> {
    let groups: Vec<GroupId> = cluster.groups.iter().map(|g| g.id).collect();
    let mut count: std::collections::BTreeMap<GroupId, usize> = groups.iter().map(|&g| (g, 0)).collect();
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < groups.len() * per_group && i < 100_000 {
        let key = format!("{prefix}-{i}").into_bytes();
        let g = cluster.group_of(&key);
        if let Some(c) = count.get_mut(&g).filter(|c| **c < per_group) {
            *c += 1;
            out.push((g, key));
        }
        i += 1;
    }
    out
}

impl Keys {
    pub fn new(cluster: &ClusterMap, run: &str) -> Keys {
        let registers = spread(cluster, &format!("chaos/{run}/reg"), REGISTERS_PER_GROUP);
        let accounts = spread(cluster, &format!("chaos/{run}/acct"), ACCOUNTS_PER_GROUP);
        let probes = spread(cluster, &format!("chaos/{run}/probe"), 1);
        Keys {
            registers: registers.into_iter().map(|(_, k)| k).collect(),
            accounts: accounts.into_iter().map(|(_, k)| k).collect(),
            probes,
        }
    }
}

/// A balance as written: `BALANCE|TAG`, the tag making every value unique
/// (the simulator's bank checker reads the same format).
fn balance_value(balance: i64, tag: &str) -> Vec<u8> {
    format!("{balance}|{tag}").into_bytes()
}

/// Creates every account in one transaction (each must not exist yet),
/// recorded as the bank's setup. Retried while it aborts or is refused;
/// an outcome that stays unknown is an error.
pub async fn setup_bank(
    rec: &Recorder,
    client_id: usize,
    client: &Client,
    keys: &Keys,
    run: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut t = client.begin();
        for (i, k) in keys.accounts.iter().enumerate() {
            t.when(k.clone(), 0);
            t.put(k.clone(), balance_value(INITIAL_BALANCE, &format!("{run}-setup-{i}")));
        }
        let tid = rec.begin_txn(client_id, TxnKind::Setup, Vec::new(), t.request());
        let (txn, outcome) = commit(t).await;
        let committed = outcome.is_committed();
        let unknown = outcome.is_indeterminate();
        let shown = format!("{outcome:?}");
        rec.complete_txn(tid, txn, outcome, Vec::new());
        if committed {
            return Ok(());
        }
        if unknown {
            anyhow::bail!("the bank's setup transaction has an unknown outcome: {shown}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("the bank's setup transaction did not commit in {attempt} attempts: {shown}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Commits `t` (bounded) and says how it ended, as the history records it.
async fn commit(t: pactdb_client::Txn) -> (Option<TxnId>, TxnResult) {
    match tokio::time::timeout(COMMIT_TIMEOUT, t.commit()).await {
        Ok(Ok(c)) => (c.txn, TxnResult::Committed { versions: c.versions.into_iter().collect() }),
        Ok(Err(TxnError::Aborted { txn, reason })) => (Some(txn), TxnResult::Aborted { reason: reason.to_string() }),
        Ok(Err(TxnError::OutcomeUnknown { txn, last_error })) => (Some(txn), TxnResult::Unknown { error: last_error }),
        Ok(Err(TxnError::Other(e))) => match outcome_of_error(&e) {
            Outcome::Refused(error) => (None, TxnResult::Refused { error }),
            _ => (None, TxnResult::Unknown { error: e.to_string() }),
        },
        Err(_) => (None, TxnResult::Unknown { error: format!("no answer within {}s", COMMIT_TIMEOUT.as_secs()) }),
    }
}

/// What the workload's clients share.
pub struct Shared {
    pub rec: Recorder,
    pub keys: Keys,
    pub run: String,
    pub stop: AtomicBool,
    /// A register client waits up to this long between two operations, so
    /// that a long run's history stays small enough to check.
    pub think_max: Duration,
}

/// A client that gets, puts and compare-and-sets random register keys
/// until told to stop.
pub async fn register_client(shared: Arc<Shared>, client_id: usize, client: Client, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut last_version: std::collections::HashMap<Key, u64> = Default::default();
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let key = shared.keys.registers[rng.gen_range(0..shared.keys.registers.len())].clone();
        n += 1;
        let value = format!("{}-c{client_id}-{n}", shared.run).into_bytes();
        let op = match rng.gen_range(0..10) {
            0..=4 => Op::Get { key: key.clone() },
            5..=7 => Op::Put { key: key.clone(), value },
            _ => Op::Cas { key: key.clone(), expected_version: last_version.get(&key).copied().unwrap_or(0), value },
        };
        if let (_, Outcome::Ok(r)) = recorded(&shared.rec, client_id, &client, op).await {
            let seen = match r {
                OpResult::Value(v) => v.map_or(0, |v| v.version),
                OpResult::Written { version } => version,
                OpResult::CasFailed { current_version } => current_version,
                _ => 0,
            };
            last_version.insert(key, seen);
        }
        let think = rng.gen_range(0..=shared.think_max.as_millis() as u64);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
}

/// A client that moves money between two random accounts, one
/// transaction at a time, until told to stop.
pub async fn transfer_client(shared: Arc<Shared>, client_id: usize, client: Client, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let accounts = &shared.keys.accounts;
    let mut n = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        n += 1;
        let a = rng.gen_range(0..accounts.len());
        let b = (a + rng.gen_range(1..accounts.len())) % accounts.len();
        let mut t = client.begin();
        let mut reads = Vec::new();
        let mut balances = Vec::new();
        for k in [&accounts[a], &accounts[b]] {
            let id = shared.rec.invoke(client_id, Op::Get { key: k.clone() });
            let outcome = match tokio::time::timeout(OP_TIMEOUT, t.get(k.clone())).await {
                Ok(Ok(v)) => Outcome::Ok(OpResult::Value(v)),
                Ok(Err(e)) => outcome_of_error(&e),
                Err(_) => Outcome::Failed(format!("no answer within {}s", OP_TIMEOUT.as_secs())),
            };
            shared.rec.complete(id, outcome.clone());
            reads.push(id);
            match outcome {
                Outcome::Ok(OpResult::Value(Some(v))) => balances.push(pactdb_sim::workload::balance(&v.value)),
                _ => balances.push(None),
            }
        }
        let (Some(from), Some(to)) = (balances[0], balances[1]) else {
            // A read failed (or found no balance, which the bank checker
            // reports): give the transfer up.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let amount = rng.gen_range(0..=MAX_TRANSFER).min(from.max(0));
        t.put(accounts[a].clone(), balance_value(from - amount, &format!("{}-t{client_id}-{n}a", shared.run)));
        t.put(accounts[b].clone(), balance_value(to + amount, &format!("{}-t{client_id}-{n}b", shared.run)));
        let tid = shared.rec.begin_txn(client_id, TxnKind::Transfer, reads, t.request());
        let (txn, outcome) = commit(t).await;
        let failed = !outcome.is_committed();
        shared.rec.complete_txn(tid, txn, outcome, Vec::new());
        if failed {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(10..100))).await;
        }
    }
}

/// Reads every account in one consistent read, recorded as an audit.
pub async fn audit(rec: &Recorder, client_id: usize, client: &Client, accounts: &[Key]) -> TxnResult {
    let request = TxnRequest { checks: Vec::new(), writes: Vec::new(), reads: accounts.to_vec() };
    let tid = rec.begin_txn(client_id, TxnKind::Audit, Vec::new(), request);
    let (outcome, values) = match tokio::time::timeout(COMMIT_TIMEOUT, client.consistent_read(accounts.to_vec())).await
    {
        Ok(Ok(values)) => (TxnResult::Committed { versions: Vec::new() }, values),
        Ok(Err(TxnError::Aborted { reason, .. })) => (TxnResult::Aborted { reason: reason.to_string() }, Vec::new()),
        Ok(Err(TxnError::OutcomeUnknown { last_error, .. })) => (TxnResult::Unknown { error: last_error }, Vec::new()),
        Ok(Err(TxnError::Other(e))) => match outcome_of_error(&e) {
            Outcome::Refused(error) => (TxnResult::Refused { error }, Vec::new()),
            _ => (TxnResult::Unknown { error: e.to_string() }, Vec::new()),
        },
        Err(_) => (TxnResult::Unknown { error: format!("no answer within {}s", COMMIT_TIMEOUT.as_secs()) }, Vec::new()),
    };
    rec.complete_txn(tid, None, outcome.clone(), values);
    outcome
}

/// Audits the bank every `AUDIT_EVERY` until told to stop.
pub async fn audit_client(shared: Arc<Shared>, client_id: usize, client: Client) {
    while !shared.stop.load(Ordering::Relaxed) {
        audit(&shared.rec, client_id, &client, &shared.keys.accounts).await;
        tokio::time::sleep(AUDIT_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::fe::FeError;
    use pactdb_core::wire::ClientError;

    #[test]
    fn client_errors_map_like_the_simulators() {
        let refused = Error::Fe(FeError::TooManyOutstanding);
        assert!(matches!(outcome_of_error(&refused), Outcome::Refused(_)));
        let timeout = Error::Fe(FeError::Timeout { last_error: None });
        assert!(matches!(outcome_of_error(&timeout), Outcome::Failed(_)));
        let expired = Error::Fe(FeError::Refused(ClientError::SessionExpired));
        assert!(matches!(outcome_of_error(&expired), Outcome::Failed(_)), "a retry's refusal may hide a run");
        assert!(matches!(outcome_of_error(&Error::Closed), Outcome::Failed(_)));
    }
}
