//! The bank workload: accounts that only ever pass money among themselves
//! in transactions, so the sum of their balances must never change.
//!
//! * `workload init bank --accounts N --balance B` writes `bank-meta` (N and
//!   B, so that `run` and `check` need not be told) and creates the accounts
//!   `acct-000000` ... (zero-padded to at least six digits, so keys sort),
//!   holding B each, as decimal text. Every write is create-if-absent (a
//!   compare-and-set on "does not exist"), many at once: a second run
//!   completes an interrupted one and never touches an account that exists,
//!   and a cluster that already holds a bank of another N or B is refused.
//! * `workload run bank`: closed-loop transfer clients. A transfer reads two
//!   random distinct accounts (both at once), moves a random amount from
//!   the first to the second, and commits both new balances on condition
//!   that neither account changed since it was read. The amount is drawn
//!   from `1..=--max-amount` and capped at the source's balance: an empty
//!   account moves 0, and the transfer still writes and commits both, so
//!   every transfer costs the same. An abort is counted and the client
//!   moves on to a new transfer; an outcome-unknown is counted apart. Audit
//!   clients read every account in one consistent read (a read-only
//!   transaction whose groups read their accounts under shared locks, as
//!   of one instant); an audit whose total is not N x B is an anomaly
//!   (exit 1).
//! * `workload check bank` sums every account in one consistent read
//!   (retrying aborts, bounded), checks the total, and checks that no
//!   prepared transaction, lock or unfinished decision is left on any node,
//!   waiting a bounded time for in-doubt ones to drain.
//!
//! Against etcd (`--target etcd://...`) a transfer is two `Range`s (value
//! and `mod_revision`) and one `Txn` comparing both `mod_revision`s and
//! putting both balances (a failed compare is the abort). An audit or a
//! check there is one `Range` over every account, which etcd serves as of
//! one revision: its form of a read-only transaction (a `Txn` comparing
//! every account is over etcd's default limit of 128 operations).

use super::etcd;
use super::{
    count_kind, cpu_time, parse_duration, Driver, Latency, LoadArgs, Place, ProgressLabels, Rng, Target, Window,
    ETCD_OP_TIMEOUT, MAX_LATENCY_US,
};
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use pactdb_client::{AbortReason, Client, TxnError};
use pactdb_core::limits::MAX_TXN_KEYS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The key that records the bank's shape (JSON: accounts, balance).
pub const META_KEY: &str = "bank-meta";
/// Every account's key starts with this.
const ACCOUNT_PREFIX: &str = "acct-";
/// The first key after every account key (`-` + 1 is `.`): the end of the
/// range an etcd audit reads.
const ACCOUNT_RANGE_END: &str = "acct.";
/// Digits of an account number at least (`acct-000042`).
const MIN_DIGITS: usize = 6;
/// Creates each init connection keeps in flight. A pactdb front end admits
/// at most `MAX_SESSION_RESPONSES` (128) requests at once; this stays under it.
const INIT_IN_FLIGHT_PER_CONN: usize = 64;
/// Anomalies described in the report (all are counted).
const MAX_ANOMALIES_KEPT: usize = 16;
/// Accounts named in a description of a broken sum.
const MAX_ACCOUNTS_NAMED: usize = 10;

#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// What to write to: `pactdb://HOST:PORT,...` or `etcd://HOST:PORT,...`.
    /// Default: the pactdb cluster the other commands find.
    #[arg(long)]
    pub target: Option<String>,
    /// Number of accounts.
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// Initial balance of every account.
    #[arg(long, default_value_t = 1_000)]
    pub balance: u64,
    /// Connections the creates are spread over (each keeps 64 in flight).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub conns: u16,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// The system, the transfer clients and their connections, the window.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Clients that audit all the time: read every account in one
    /// consistent read (on etcd one range), compare the total with accounts
    /// x balance. Each has a connection of its own.
    #[arg(long, default_value_t = 1)]
    pub audit_clients: usize,
    /// An audit client starts an audit at most this often (an audit holds
    /// shared locks on every account while it reads, so back to back they
    /// would keep most transfers out). 0: back to back.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub audit_every: Duration,
    /// A transfer moves a uniform amount in 1..=this, capped at the source's balance.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_amount: u64,
    /// Number of accounts (default: what `workload init bank` recorded in the cluster).
    #[arg(long)]
    pub accounts: Option<u64>,
    /// Initial balance of each account (default: what `workload init bank` recorded).
    #[arg(long)]
    pub balance: Option<u64>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// What to check: `pactdb://HOST:PORT,...` or `etcd://HOST:PORT,...`.
    /// Default: the pactdb cluster the other commands find.
    #[arg(long)]
    pub target: Option<String>,
    /// Number of accounts (default: what `workload init bank` recorded in the cluster).
    #[arg(long)]
    pub accounts: Option<u64>,
    /// Initial balance of each account (default: what `workload init bank` recorded).
    #[arg(long)]
    pub balance: Option<u64>,
    /// Attempts at reading every account in one committed transaction
    /// (an attempt aborts if a transfer commits meanwhile).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub attempts: u32,
    /// How long to wait for prepared transactions, locks and unfinished
    /// decisions to drain before reporting them.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
}

/// What `bank-meta` holds.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    accounts: u64,
    balance: u64,
}

/// A bank's shape: how many accounts, what each started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bank {
    accounts: u64,
    balance: u64,
    /// Digits of an account number.
    digits: usize,
}

impl Bank {
    fn new(accounts: u64, balance: u64) -> Bank {
        let digits = accounts.saturating_sub(1).to_string().len().max(MIN_DIGITS);
        Bank { accounts, balance, digits }
    }

    fn key(&self, i: u64) -> String {
        format!("{ACCOUNT_PREFIX}{i:0width$}", width = self.digits)
    }

    /// The account number a key names, if it is one of this bank's.
    fn index_of(&self, key: &[u8]) -> Option<u64> {
        let digits = key.strip_prefix(ACCOUNT_PREFIX.as_bytes())?;
        if digits.len() != self.digits || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let i: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        (i < self.accounts).then_some(i)
    }

    fn total(&self) -> u128 {
        u128::from(self.accounts) * u128::from(self.balance)
    }
}

fn parse_balance(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A key's value and version (pactdb's version, etcd's `mod_revision`).
type Read = Option<(Vec<u8>, u64)>;

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Commit {
    Committed,
    /// It did not commit and never will; the kind of reason.
    Aborted(String),
    /// It may or may not have committed.
    Unknown(String),
    /// It was refused or failed before it could run.
    Failed(String),
}

/// One connection of a `Driver`, cheap to clone into a task.
#[derive(Clone)]
enum Handle {
    Pactdb(Client),
    Etcd(etcd::Conn),
}

impl Driver {
    fn handle(&self, conn: usize) -> Handle {
        match self {
            Driver::Pactdb(c) => Handle::Pactdb(c[conn].clone()),
            Driver::Etcd(c) => Handle::Etcd(c[conn].clone()),
        }
    }

    /// Whether two keys live in different groups (`None`: etcd has one).
    fn cross_group(&self, a: &[u8], b: &[u8]) -> Option<bool> {
        match self {
            Driver::Pactdb(c) => Some(c[0].cluster().group_of(a) != c[0].cluster().group_of(b)),
            Driver::Etcd(_) => None,
        }
    }
}

/// Waits at most `ETCD_OP_TIMEOUT` for an etcd call (pactdb's front end
/// has the same total operation timeout of its own).
async fn etcd_call<T>(what: &str, call: impl Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(ETCD_OP_TIMEOUT, call).await.unwrap_or_else(|_| Err(format!("etcd {what} timed out")))
}

impl Handle {
    async fn read(&self, key: &[u8]) -> Result<Read, String> {
        match self {
            Handle::Pactdb(c) => {
                c.get(key.to_vec()).await.map(|v| v.map(|v| (v.value, v.version))).map_err(|e| e.to_string())
            }
            Handle::Etcd(c) => etcd_call("range", c.get_kv(key))
                .await
                .map(|kv| kv.map(|kv| (kv.value.to_vec(), kv.mod_revision as u64))),
        }
    }

    /// Writes `value` under `key` unless the key exists: `Ok(true)` if it
    /// wrote. A retried create cannot overwrite what it wrote itself
    /// (pactdb's request ids make the compare-and-set exactly-once).
    async fn create(&self, key: &[u8], value: &[u8]) -> Result<bool, String> {
        match self {
            Handle::Pactdb(c) => match c.cas(key.to_vec(), 0, value.to_vec()).await {
                Ok(Ok(_)) => Ok(true),
                Ok(Err(_)) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
            Handle::Etcd(c) => etcd_call("txn", c.put_if_unchanged(&[(key, 0)], &[(key, value)])).await,
        }
    }

    /// Commits `puts` if every key of `reads` is still at the version read
    /// (0: still absent). With no puts, a read-only commit.
    async fn commit_if_unchanged(&self, reads: &[(Vec<u8>, u64)], puts: &[(Vec<u8>, Vec<u8>)]) -> Commit {
        match self {
            Handle::Pactdb(c) => {
                let mut t = c.begin();
                for (key, version) in reads {
                    t.when(key.clone(), *version);
                }
                for (key, value) in puts {
                    t.put(key.clone(), value.clone());
                }
                match t.commit().await {
                    Ok(_) => Commit::Committed,
                    Err(TxnError::Aborted { reason, .. }) => Commit::Aborted(abort_kind(&reason)),
                    Err(TxnError::OutcomeUnknown { last_error, .. }) => Commit::Unknown(last_error),
                    Err(TxnError::Other(e)) => Commit::Failed(e.to_string()),
                }
            }
            Handle::Etcd(c) => {
                let compares: Vec<(&[u8], i64)> = reads.iter().map(|(k, v)| (k.as_slice(), *v as i64)).collect();
                let puts: Vec<(&[u8], &[u8])> = puts.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
                match etcd_call("txn", c.put_if_unchanged(&compares, &puts)).await {
                    Ok(true) => Commit::Committed,
                    Ok(false) => Commit::Aborted("a compared mod_revision changed".into()),
                    // The Txn may have reached etcd and been applied (a lost
                    // answer, a timeout, etcd's own "request timed out").
                    Err(e) => Commit::Unknown(e),
                }
            }
        }
    }

    /// One transfer of up to `amount` from `from` to `to`.
    async fn transfer(&self, from: &[u8], to: &[u8], amount: u64) -> Commit {
        // Both reads at once, on either system: the versions they return
        // are what the commit compares (as `Txn::get` would record them).
        let (a, b) = tokio::join!(self.read(from), self.read(to));
        let (a, b) = match (account(from, a), account(to, b)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => return Commit::Failed(e),
        };
        let amount = amount.min(a.0);
        let Some(to_balance) = b.0.checked_add(amount) else {
            return Commit::Failed(format!("account {} would overflow", show(to)));
        };
        let reads = [(from.to_vec(), a.1), (to.to_vec(), b.1)];
        let puts = [
            (from.to_vec(), (a.0 - amount).to_string().into_bytes()),
            (to.to_vec(), to_balance.to_string().into_bytes()),
        ];
        self.commit_if_unchanged(&reads, &puts).await
    }

    /// Reads every account and sums them as of one point: on pactdb one
    /// consistent read of every account (each group reads its accounts
    /// under shared locks, waiting for transfers that hold some, so an
    /// audit is not starved by the transfers around it); on etcd one range.
    /// `None` if `stop` was set meanwhile.
    async fn audit(&self, bank: &Bank, stop: Option<&AtomicBool>) -> Option<Result<Sum, Commit>> {
        match self {
            Handle::Pactdb(c) => {
                let keys: Vec<Vec<u8>> = (0..bank.accounts).map(|i| bank.key(i).into_bytes()).collect();
                let read = c.consistent_read(keys);
                let result = match stop {
                    Some(stop) => {
                        tokio::pin!(read);
                        loop {
                            tokio::select! {
                                r = &mut read => break r,
                                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                                    if stop.load(Ordering::Relaxed) {
                                        return None;
                                    }
                                }
                            }
                        }
                    }
                    None => read.await,
                };
                match result {
                    Ok(values) => {
                        let values = values.into_iter().enumerate().map(|(i, (_, v))| (i as u64, v.map(|v| v.value)));
                        Some(Ok(Sum::of(bank, values.collect(), 0)))
                    }
                    Err(TxnError::Aborted { reason, .. }) => Some(Err(Commit::Aborted(abort_kind(&reason)))),
                    Err(TxnError::OutcomeUnknown { last_error, .. }) => Some(Err(Commit::Failed(last_error))),
                    Err(TxnError::Other(e)) => Some(Err(Commit::Failed(e.to_string()))),
                }
            }
            Handle::Etcd(c) => {
                let kvs =
                    match etcd_call("range", c.range(ACCOUNT_PREFIX.as_bytes(), ACCOUNT_RANGE_END.as_bytes())).await {
                        Ok(kvs) => kvs,
                        Err(e) => return Some(Err(Commit::Failed(e))),
                    };
                let mut values = Vec::with_capacity(kvs.len());
                let mut others = 0;
                for kv in kvs {
                    match bank.index_of(&kv.key) {
                        Some(i) => values.push((i, Some(kv.value.to_vec()))),
                        None => others += 1,
                    }
                }
                Some(Ok(Sum::of(bank, values, others)))
            }
        }
    }
}

/// An account's balance and version from a read, or why there is none.
fn account(key: &[u8], read: Result<Read, String>) -> Result<(u64, u64), String> {
    match read? {
        None => Err(format!("account {} does not exist (was `workload init bank` run?)", show(key))),
        Some((value, version)) => match parse_balance(&value) {
            Some(b) => Ok((b, version)),
            None => Err(format!("account {} holds `{}`, not a balance", show(key), show(&value))),
        },
    }
}

/// The kind of an abort, for counting (the key named in it is left out).
fn abort_kind(reason: &AbortReason) -> String {
    match reason {
        AbortReason::VersionChanged { .. } => "a read version changed".into(),
        AbortReason::Locked { .. } => "a key was locked by another transaction".into(),
        AbortReason::Timeout => "not every group voted in time".into(),
        AbortReason::NoRecord => "the coordinator had no record of it".into(),
        AbortReason::Refused { reason } => format!("refused: {reason}"),
        AbortReason::SessionExpired => "a participant forgot the client session".into(),
    }
}

/// Runs `op(i)` for every `i` in `0..n`, at most `width` at a time, and
/// returns the results in index order; `None` if `stop` was set before
/// all of them finished (the rest are cancelled).
async fn bounded<T, Fut>(
    n: u64,
    width: usize,
    stop: Option<&AtomicBool>,
    mut op: impl FnMut(u64) -> Fut,
) -> Option<Vec<T>>
where
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = 0u64;
    loop {
        while next < n && tasks.len() < width {
            let (i, f) = (next, op(next));
            tasks.spawn(async move { (i, f.await) });
            next += 1;
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok((i, t))) => out[i as usize] = Some(t),
            Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Some(Err(e)) => unreachable!("no task here is cancelled while it is awaited: {e}"),
        }
        if stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
            tasks.abort_all();
            return None;
        }
    }
    Some(out.into_iter().map(|t| t.expect("every index ran")).collect())
}

/// The sum of every account as one read saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sum {
    expected: u128,
    total: u128,
    /// Accounts found.
    found: u64,
    /// Account numbers with no value (at most `MAX_ACCOUNTS_NAMED`), and how many.
    missing: Vec<u64>,
    missing_count: u64,
    /// Accounts whose value is not a balance (at most `MAX_ACCOUNTS_NAMED`), and how many.
    malformed: Vec<(u64, String)>,
    malformed_count: u64,
    /// Keys under the account prefix that are not this bank's accounts (etcd only).
    others: u64,
}

impl Sum {
    fn of(bank: &Bank, values: Vec<(u64, Option<Vec<u8>>)>, others: u64) -> Sum {
        let mut seen = vec![false; bank.accounts as usize];
        let mut s = Sum {
            expected: bank.total(),
            total: 0,
            found: 0,
            missing: Vec::new(),
            missing_count: 0,
            malformed: Vec::new(),
            malformed_count: 0,
            others,
        };
        for (i, v) in values {
            let Some(v) = v else { continue };
            seen[i as usize] = true;
            s.found += 1;
            match parse_balance(&v) {
                Some(b) => s.total += u128::from(b),
                None => {
                    s.malformed_count += 1;
                    if s.malformed.len() < MAX_ACCOUNTS_NAMED {
                        s.malformed.push((i, show(&v)));
                    }
                }
            }
        }
        for (i, _) in seen.iter().enumerate().filter(|(_, seen)| !**seen) {
            s.missing_count += 1;
            if s.missing.len() < MAX_ACCOUNTS_NAMED {
                s.missing.push(i as u64);
            }
        }
        s
    }

    fn ok(&self) -> bool {
        self.total == self.expected && self.missing_count == 0 && self.malformed_count == 0
    }

    /// What is wrong, in words (empty if nothing is).
    fn problems(&self, bank: &Bank) -> Vec<String> {
        let mut out = Vec::new();
        if self.total != self.expected {
            let (sign, diff) = if self.total > self.expected {
                ("+", self.total - self.expected)
            } else {
                ("-", self.expected - self.total)
            };
            out.push(format!(
                "the total is {}, expected {} ({} accounts x {}): off by {sign}{diff}",
                self.total, self.expected, bank.accounts, bank.balance
            ));
        }
        let names = |ids: &mut dyn Iterator<Item = String>, count: u64| {
            let mut s = ids.collect::<Vec<_>>().join(", ");
            if count > MAX_ACCOUNTS_NAMED as u64 {
                s.push_str(&format!(" and {} more", count - MAX_ACCOUNTS_NAMED as u64));
            }
            s
        };
        if self.missing_count > 0 {
            out.push(format!(
                "{} not exist: {}",
                accounts(self.missing_count, "does", "do"),
                names(&mut self.missing.iter().map(|i| bank.key(*i)), self.missing_count)
            ));
        }
        if self.malformed_count > 0 {
            out.push(format!(
                "{} something other than a balance: {}",
                accounts(self.malformed_count, "holds", "hold"),
                names(
                    &mut self.malformed.iter().map(|(i, v)| format!("{} = `{v}`", bank.key(*i))),
                    self.malformed_count
                )
            ));
        }
        out
    }
}

/// "1 account does", "2 accounts do".
fn accounts(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 account {one}")
    } else {
        format!("{n} accounts {many}")
    }
}

/// Reads `bank-meta`; `Ok(None)` if it does not exist.
async fn read_meta(h: &Handle) -> anyhow::Result<Option<Meta>> {
    let Some((value, _)) = h.read(META_KEY.as_bytes()).await.map_err(|e| anyhow::anyhow!("reading {META_KEY}: {e}"))?
    else {
        return Ok(None);
    };
    let meta = serde_json::from_slice(&value)
        .with_context(|| format!("`{META_KEY}` holds `{}`, not a bank's shape", show(&value)))?;
    Ok(Some(meta))
}

/// The bank to run or check: what the flags give, the rest from `bank-meta`.
async fn resolve_bank(h: &Handle, accounts: Option<u64>, balance: Option<u64>) -> anyhow::Result<(Bank, String)> {
    if let (Some(a), Some(b)) = (accounts, balance) {
        return Ok((Bank::new(a, b), "as given".into()));
    }
    let Some(meta) = read_meta(h).await? else {
        bail!(
            "no bank here: `{META_KEY}` does not exist. Run `pactdb workload init bank` first, or give --accounts and --balance"
        );
    };
    let source = if accounts.is_some() || balance.is_some() { "partly from" } else { "from" };
    Ok((Bank::new(accounts.unwrap_or(meta.accounts), balance.unwrap_or(meta.balance)), format!("{source} {META_KEY}")))
}

fn describe(target: &Target) -> String {
    format!("{} at {}", target.system(), target.endpoints().join(","))
}

/// `workload init bank`.
pub async fn init(args: InitArgs, default_endpoints: Vec<String>) -> anyhow::Result<i32> {
    let target = Target::parse(args.target.as_deref(), default_endpoints)?;
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let conns = usize::from(args.conns);
    let driver = Driver::connect(&target, conns).await?;
    let meta = Meta { accounts: args.accounts, balance: args.balance };
    let h = driver.handle(0);
    let meta_json = serde_json::to_vec(&meta)?;
    // The shape first: a second init with another shape is refused before
    // it writes anything, and one with the same shape completes the first.
    let created_meta = h.create(META_KEY.as_bytes(), &meta_json).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    if !created_meta {
        match read_meta(&h).await? {
            Some(m) if m == meta => {}
            Some(m) => {
                eprintln!(
                    "error: {} already holds a bank of {} accounts of {} ({META_KEY}); `workload init bank` never \
                     changes an existing bank. Check it with `workload check bank`, or start from an empty cluster.",
                    describe(&target),
                    m.accounts,
                    m.balance
                );
                return Ok(1);
            }
            None => bail!("`{META_KEY}` existed a moment ago and now does not; is another init running?"),
        }
    }
    let bank = Bank::new(args.accounts, args.balance);
    let balance = args.balance.to_string().into_bytes();
    let started = Instant::now();
    let results = bounded(bank.accounts, INIT_IN_FLIGHT_PER_CONN * conns, None, |i| {
        let (h, key, value) = (driver.handle(i as usize % conns), bank.key(i).into_bytes(), balance.clone());
        async move { h.create(&key, &value).await }
    })
    .await
    .expect("nothing stops an init");
    let secs = started.elapsed().as_secs_f64();
    let created = results.iter().filter(|r| matches!(r, Ok(true))).count();
    let existed = results.iter().filter(|r| matches!(r, Ok(false))).count();
    let mut errors = BTreeMap::new();
    for e in results.into_iter().filter_map(Result::err) {
        count_kind(&mut errors, e);
    }
    println!(
        "bank: {} accounts of {} ({} to {}) at {}: created {created}, {existed} existed already and were left as they \
         were{}, in {secs:.2} s ({:.0} creates/s)",
        bank.accounts,
        bank.balance,
        bank.key(0),
        bank.key(bank.accounts - 1),
        describe(&target),
        if created_meta { "" } else { " (the bank was initialised before)" },
        bank.accounts as f64 / secs.max(1e-9),
    );
    if errors.is_empty() {
        return Ok(0);
    }
    for (e, n) in &errors {
        eprintln!("error x{n}: {e}");
    }
    eprintln!(
        "{} accounts were not created; run `workload init bank` again with the same flags to create them",
        errors.values().sum::<u64>()
    );
    Ok(1)
}

/// A committed audit whose total is wrong is an anomaly.
fn anomaly_text(sum: &Sum, bank: &Bank) -> String {
    format!("a committed audit saw {}", sum.problems(bank).join("; "))
}

struct RunConfig {
    bank: Bank,
    conns: usize,
    max_amount: u64,
    seed: u64,
    audit_every: Duration,
}

#[derive(Default)]
struct AuditStats {
    committed: u64,
    aborted: u64,
    errors: u64,
    anomalies: u64,
    details: Vec<String>,
    kinds: BTreeMap<String, u64>,
}

struct BankStats {
    /// Latency of committed transfers.
    committed: Histogram<u64>,
    /// Committed transfers whose accounts are in different groups.
    cross_group: u64,
    aborts: u64,
    errors: u64,
    unknown: u64,
    abort_kinds: BTreeMap<String, u64>,
    error_kinds: BTreeMap<String, u64>,
    unknown_kinds: BTreeMap<String, u64>,
    /// Audits of the whole run, ramp included: they check correctness, not speed.
    audits: AuditStats,
    audit_latency: Histogram<u64>,
}

impl BankStats {
    fn new() -> BankStats {
        let h = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        BankStats {
            committed: h(),
            cross_group: 0,
            aborts: 0,
            errors: 0,
            unknown: 0,
            abort_kinds: BTreeMap::new(),
            error_kinds: BTreeMap::new(),
            unknown_kinds: BTreeMap::new(),
            audits: AuditStats::default(),
            audit_latency: h(),
        }
    }
}

struct BankShared {
    window: Window,
    stats: Mutex<BankStats>,
}

fn latency_us(started: Instant, finished: Instant) -> u64 {
    (finished.duration_since(started).as_micros().max(1) as u64).min(MAX_LATENCY_US)
}

impl BankShared {
    fn record_transfer(&self, started: Instant, finished: Instant, outcome: Commit, cross_group: Option<bool>) {
        if self.window.place(finished, outcome == Commit::Committed) != Place::Inside {
            return;
        }
        let mut s = self.stats.lock().expect("stats lock");
        match outcome {
            Commit::Committed => {
                s.committed.saturating_record(latency_us(started, finished));
                s.cross_group += u64::from(cross_group == Some(true));
            }
            Commit::Aborted(kind) => {
                s.aborts += 1;
                count_kind(&mut s.abort_kinds, kind);
            }
            Commit::Unknown(e) => {
                s.unknown += 1;
                count_kind(&mut s.unknown_kinds, e);
            }
            Commit::Failed(e) => {
                s.errors += 1;
                count_kind(&mut s.error_kinds, e);
            }
        }
    }

    fn record_audit(&self, started: Instant, finished: Instant, result: Result<Sum, Commit>, bank: &Bank) {
        let mut s = self.stats.lock().expect("stats lock");
        match result {
            Ok(sum) => {
                s.audits.committed += 1;
                s.audit_latency.saturating_record(latency_us(started, finished));
                if !sum.ok() {
                    let text = anomaly_text(&sum, bank);
                    eprintln!("ANOMALY: {text}");
                    s.audits.anomalies += 1;
                    if s.audits.details.len() < MAX_ANOMALIES_KEPT {
                        s.audits.details.push(text);
                    }
                }
            }
            Err(Commit::Aborted(kind)) => {
                s.audits.aborted += 1;
                count_kind(&mut s.audits.kinds, format!("aborted: {kind}"));
            }
            Err(Commit::Unknown(e) | Commit::Failed(e)) => {
                s.audits.errors += 1;
                count_kind(&mut s.audits.kinds, format!("failed: {e}"));
            }
            Err(Commit::Committed) => unreachable!("a committed audit carries its sum"),
        }
    }
}

async fn transfer_client(idx: usize, driver: Arc<Driver>, cfg: Arc<RunConfig>, shared: Arc<BankShared>) {
    let h = driver.handle(idx % cfg.conns);
    let mut rng = Rng::new(cfg.seed, idx as u64);
    let n = cfg.bank.accounts;
    while !shared.window.stopping() {
        let from = rng.below(n);
        let to = match rng.below(n - 1) {
            t if t >= from => t + 1,
            t => t,
        };
        let amount = 1 + rng.below(cfg.max_amount);
        let (from, to) = (cfg.bank.key(from).into_bytes(), cfg.bank.key(to).into_bytes());
        let started = Instant::now();
        let outcome = h.transfer(&from, &to, amount).await;
        shared.record_transfer(started, Instant::now(), outcome, driver.cross_group(&from, &to));
    }
}

async fn audit_client(idx: usize, driver: Arc<Driver>, cfg: Arc<RunConfig>, shared: Arc<BankShared>) {
    let h = driver.handle(cfg.conns + idx);
    while !shared.window.stopping() {
        let started = Instant::now();
        // An audit still reading when the run ends is dropped, not counted.
        let Some(result) = h.audit(&cfg.bank, Some(&shared.window.stop)).await else { break };
        shared.record_audit(started, Instant::now(), result, &cfg.bank);
        let next = started + cfg.audit_every;
        while Instant::now() < next && !shared.window.stopping() {
            tokio::time::sleep((next - Instant::now()).min(Duration::from_millis(50))).await;
        }
    }
}

/// The audits of a run.
#[derive(Serialize, Debug, Clone)]
pub struct AuditFigures {
    pub clients: usize,
    /// Audits that committed (over the whole run, ramp included).
    pub committed: u64,
    /// Audits that aborted (a transfer changed an account meanwhile).
    pub aborted: u64,
    /// Audits that failed or whose outcome is unknown.
    pub errors: u64,
    /// Committed audits whose total was not accounts x balance.
    pub anomalies: u64,
    /// Latency of committed audits.
    pub latency_ms: Latency,
    /// The first anomalies, described.
    pub anomaly_details: Vec<String>,
    /// Why audits did not commit, and how often.
    pub kinds: BTreeMap<String, u64>,
}

/// The `--json` report of `workload run bank`.
#[derive(Serialize, Debug, Clone)]
pub struct BankReport {
    pub workload: &'static str,
    pub system: &'static str,
    pub endpoints: Vec<String>,
    /// Transfer clients.
    pub clients: usize,
    /// Connections the transfer clients share (audit clients have one each).
    pub conns: usize,
    pub threads: u16,
    pub accounts: u64,
    pub balance: u64,
    pub max_amount: u64,
    pub seed: u64,
    pub ramp_s: f64,
    /// Length of the measurement window (shorter than --duration if stopped early).
    pub elapsed_s: f64,
    /// Transfers committed in the window.
    pub transfers: u64,
    pub transfers_per_sec: f64,
    /// Transfers that aborted in the window (counted apart, never as transfers).
    pub aborts: u64,
    pub aborts_per_sec: f64,
    /// Transfers that failed (a read or the commit refused) in the window.
    pub errors: u64,
    /// Transfers whose commit outcome is unknown, in the window.
    pub unknown: u64,
    /// Latency of committed transfers (reads and commit).
    pub latency_ms: Latency,
    /// Committed transfers whose two accounts are in different groups
    /// (`null` for etcd, which has one).
    pub cross_group: Option<u64>,
    pub cross_group_percent: Option<f64>,
    pub audits: AuditFigures,
    pub abort_kinds: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    pub unknown_kinds: BTreeMap<String, u64>,
    /// Transfers that completed after the window closed (not counted).
    pub late: u64,
    /// Clients still waiting for an operation when the run gave up on them.
    pub abandoned: u64,
    /// CPU this load generator used (user + system), in cores.
    pub client_cpu_cores: f64,
}

/// `workload run bank`.
pub async fn run(args: RunArgs, default_endpoints: Vec<String>) -> anyhow::Result<i32> {
    let load = &args.load;
    let target = load.target(default_endpoints)?;
    let conns = load.conns();
    let driver = Arc::new(Driver::connect(&target, conns + args.audit_clients).await?);
    let (bank, source) = resolve_bank(&driver.handle(0), args.accounts, args.balance).await?;
    if bank.accounts < 2 {
        bail!("a transfer needs two accounts; this bank has {}", bank.accounts);
    }
    if matches!(target, Target::Pactdb(_)) && args.audit_clients > 0 && bank.accounts > MAX_TXN_KEYS as u64 {
        bail!(
            "an audit reads every account in one transaction, and a transaction holds at most {MAX_TXN_KEYS} keys; \
             this bank has {} accounts: use --audit-clients 0",
            bank.accounts
        );
    }
    let seed = load.seed();
    let cfg = Arc::new(RunConfig { bank, conns, max_amount: args.max_amount, seed, audit_every: args.audit_every });
    let cpu_start = (cpu_time(), Instant::now());
    eprintln!(
        "workload bank: {}: {} transfer clients over {} connections, {} audit clients, {} accounts of {} ({source}), \
         amounts up to {}, ramp {:?}, duration {:?}",
        describe(&target),
        load.clients,
        conns,
        args.audit_clients,
        bank.accounts,
        bank.balance,
        args.max_amount,
        load.ramp,
        load.duration
    );
    let shared =
        Arc::new(BankShared { window: Window::new(load.ramp, load.duration), stats: Mutex::new(BankStats::new()) });
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..load.clients {
        workers.spawn(transfer_client(i, driver.clone(), cfg.clone(), shared.clone()));
    }
    for i in 0..args.audit_clients {
        workers.spawn(audit_client(i, driver.clone(), cfg.clone(), shared.clone()));
    }
    let labels = ProgressLabels { done: "transfers", failed: "not committed" };
    let abandoned = shared.window.run(load.ramp + load.duration, load.display_every, labels, &mut workers).await?;
    let client_cpu_cores = (cpu_time() - cpu_start.0) / cpu_start.1.elapsed().as_secs_f64();

    let elapsed_s = shared.window.elapsed_s();
    let s = std::mem::replace(&mut *shared.stats.lock().expect("stats lock"), BankStats::new());
    let rate = |n: u64| if elapsed_s > 0.0 { n as f64 / elapsed_s } else { 0.0 };
    let transfers = s.committed.len();
    let pactdb = matches!(target, Target::Pactdb(_));
    let report = BankReport {
        workload: "bank",
        system: target.system(),
        endpoints: target.endpoints().to_vec(),
        clients: load.clients,
        conns,
        threads: load.threads,
        accounts: bank.accounts,
        balance: bank.balance,
        max_amount: args.max_amount,
        seed,
        ramp_s: load.ramp.as_secs_f64(),
        elapsed_s,
        transfers,
        transfers_per_sec: rate(transfers),
        aborts: s.aborts,
        aborts_per_sec: rate(s.aborts),
        errors: s.errors,
        unknown: s.unknown,
        latency_ms: Latency::of(&s.committed),
        cross_group: pactdb.then_some(s.cross_group),
        cross_group_percent: pactdb.then(|| {
            if transfers > 0 {
                100.0 * s.cross_group as f64 / transfers as f64
            } else {
                0.0
            }
        }),
        audits: AuditFigures {
            clients: args.audit_clients,
            committed: s.audits.committed,
            aborted: s.audits.aborted,
            errors: s.audits.errors,
            anomalies: s.audits.anomalies,
            latency_ms: Latency::of(&s.audit_latency),
            anomaly_details: s.audits.details,
            kinds: s.audits.kinds,
        },
        abort_kinds: s.abort_kinds,
        error_kinds: s.error_kinds,
        unknown_kinds: s.unknown_kinds,
        late: shared.window.late.load(Ordering::Relaxed),
        abandoned,
        client_cpu_cores,
    };
    if load.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    if report.audits.anomalies > 0 {
        eprintln!("{} committed audits saw a wrong total: the bank is broken", report.audits.anomalies);
        return Ok(1);
    }
    Ok(if report.transfers == 0 { 1 } else { 0 })
}

fn print_report(r: &BankReport) {
    println!(
        "{} bank: {} transfer clients over {} connections, {} audit clients, {} accounts of {}, amounts up to {}",
        r.system, r.clients, r.conns, r.audits.clients, r.accounts, r.balance, r.max_amount
    );
    println!(
        "{:>8} {:>10} {:>12} {:>8} {:>9} {:>7} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "elapsed",
        "transfers",
        "transfers/s",
        "aborts",
        "aborts/s",
        "errors",
        "unknown",
        "mean(ms)",
        "p50(ms)",
        "p90(ms)",
        "p99(ms)",
        "p99.9(ms)",
        "max(ms)"
    );
    let l = &r.latency_ms;
    println!(
        "{:>7.1}s {:>10} {:>12.1} {:>8} {:>9.1} {:>7} {:>8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.3}",
        r.elapsed_s,
        r.transfers,
        r.transfers_per_sec,
        r.aborts,
        r.aborts_per_sec,
        r.errors,
        r.unknown,
        l.mean,
        l.p50,
        l.p90,
        l.p99,
        l.p99_9,
        l.max
    );
    match (r.cross_group, r.cross_group_percent) {
        (Some(n), Some(p)) => {
            println!("cross-group share of committed transfers: {p:.1} % ({n} of {})", r.transfers)
        }
        _ => println!("cross-group share of committed transfers: n/a ({} has one group)", r.system),
    }
    let a = &r.audits;
    println!(
        "audits (whole run): {} committed, {} aborted, {} failed, {} anomalies; committed audit p50 {:.3} ms",
        a.committed, a.aborted, a.errors, a.anomalies, a.latency_ms.p50
    );
    for d in &a.anomaly_details {
        println!("anomaly: {d}");
    }
    if r.late > 0 {
        println!("({} transfers in flight when the window closed were not counted)", r.late);
    }
    if r.abandoned > 0 {
        println!("({} clients still had an operation outstanding after the end)", r.abandoned);
    }
    println!("(this load generator used {:.2} cores of CPU)", r.client_cpu_cores);
    for (kinds, what) in [(&r.abort_kinds, "abort"), (&r.unknown_kinds, "unknown"), (&r.error_kinds, "error")] {
        for (e, n) in kinds {
            println!("{what} x{n}: {e}");
        }
    }
    for (e, n) in &a.kinds {
        println!("audit {e} x{n}");
    }
}

/// `workload check bank`.
pub async fn check(args: CheckArgs, default_endpoints: Vec<String>) -> anyhow::Result<i32> {
    let target = Target::parse(args.target.as_deref(), default_endpoints)?;
    let driver = Driver::connect(&target, 1).await?;
    let h = driver.handle(0);
    let (bank, source) = resolve_bank(&h, args.accounts, args.balance).await?;
    if matches!(target, Target::Pactdb(_)) && bank.accounts > MAX_TXN_KEYS as u64 {
        bail!(
            "the check reads every account in one transaction, which holds at most {MAX_TXN_KEYS} keys; this bank has {}",
            bank.accounts
        );
    }
    println!(
        "bank: {} accounts of {} ({source}) at {}: expected total {}",
        bank.accounts,
        bank.balance,
        describe(&target),
        bank.total()
    );
    let mut problems = Vec::new();

    // 1. The total, read in one committed transaction.
    let how = match &h {
        Handle::Pactdb(_) => "every account read and committed read-only in one transaction",
        Handle::Etcd(_) => "one range over every account (etcd serves it as of one revision)",
    };
    let started = Instant::now();
    let mut last = String::new();
    let mut sum = None;
    for attempt in 1..=args.attempts {
        match h.audit(&bank, None).await.expect("a check is never stopped") {
            Ok(s) => {
                sum = Some((s, attempt));
                break;
            }
            Err(Commit::Aborted(kind)) => last = format!("aborted: {kind}"),
            Err(Commit::Unknown(e) | Commit::Failed(e)) => last = format!("failed: {e}"),
            Err(Commit::Committed) => unreachable!("a committed audit carries its sum"),
        }
        if attempt < args.attempts {
            tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(20)))).await;
        }
    }
    match sum {
        Some((s, attempt)) => {
            println!(
                "sum: {} over {} accounts ({how}; attempt {attempt} of at most {}, {:.2} s)",
                s.total,
                s.found,
                args.attempts,
                started.elapsed().as_secs_f64()
            );
            if s.others > 0 {
                println!("note: {} other keys under `{ACCOUNT_PREFIX}` are not accounts of this bank", s.others);
            }
            problems.extend(s.problems(&bank));
        }
        None => problems.push(format!(
            "could not read every account in one committed transaction in {} attempts (last: {last})",
            args.attempts
        )),
    }

    // 2. Nothing left in doubt.
    match &driver {
        Driver::Pactdb(clients) => {
            println!(
                "in-doubt: waiting at most {:.1} s for prepared transactions, locks and unfinished decisions to drain",
                args.drain_timeout.as_secs_f64()
            );
            let (left, waited, nodes) = wait_drained(&clients[0], args.drain_timeout).await;
            if left.is_empty() {
                println!(
                    "in-doubt: none on {nodes} nodes (0 prepared, 0 locks, 0 unfinished decisions; after {:.1} s)",
                    waited.as_secs_f64()
                );
            } else {
                println!("in-doubt: still there after {:.1} s:", waited.as_secs_f64());
                for l in &left {
                    println!("  {l}");
                }
                problems.push(format!("{} replicas still hold in-doubt state or did not answer", left.len()));
            }
        }
        Driver::Etcd(_) => println!("in-doubt: not applicable (etcd has no prepared transactions)"),
    }

    if problems.is_empty() {
        println!("bank check: OK");
        return Ok(0);
    }
    for p in &problems {
        println!("discrepancy: {p}");
    }
    println!("bank check: FAILED");
    Ok(1)
}

/// Polls every node's status until no replica holds a prepared
/// transaction, a lock or an unfinished decision, or `timeout` passes.
/// Returns what is left (or which node did not answer), how long it
/// waited, and how many nodes it asked.
async fn wait_drained(client: &Client, timeout: Duration) -> (Vec<String>, Duration, usize) {
    let started = Instant::now();
    loop {
        let statuses = client.status_all().await;
        let nodes = statuses.len();
        let mut left = Vec::new();
        for (node, status) in statuses {
            match status {
                Err(e) => left.push(format!("node {node} did not answer: {e}")),
                Ok(s) => {
                    for r in s.replicas {
                        if r.prepared > 0 || r.locks > 0 || r.unfinished_decisions > 0 {
                            left.push(format!(
                                "node {node}, group {} ({}): {} prepared, {} locks, {} unfinished decisions{}",
                                r.group,
                                r.role,
                                r.prepared,
                                r.locks,
                                r.unfinished_decisions,
                                r.oldest_prepared_ms.map_or(String::new(), |ms| format!(", oldest prepared {ms} ms"))
                            ));
                        }
                    }
                }
            }
        }
        if left.is_empty() || started.elapsed() >= timeout {
            return (left, started.elapsed(), nodes);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_keys_are_zero_padded_so_they_sort_and_read_back() {
        let small = Bank::new(100, 5);
        assert_eq!(small.key(42), "acct-000042");
        assert_eq!(small.index_of(b"acct-000042"), Some(42));
        assert_eq!(small.index_of(b"acct-000100"), None, "past the last account");
        assert_eq!(small.index_of(b"acct-42"), None);
        assert_eq!(small.index_of(b"bank-meta"), None);
        let big = Bank::new(10_000_001, 5);
        assert_eq!(big.key(7), "acct-00000007");
        let mut keys: Vec<String> = (0..2_000).map(|i| Bank::new(2_000, 1).key(i)).collect();
        let ordered = keys.clone();
        keys.sort();
        assert_eq!(keys, ordered);
        assert_eq!(Bank::new(10_000, 1_000).total(), 10_000_000);
    }

    #[test]
    fn a_sum_names_what_is_wrong() {
        let bank = Bank::new(4, 10);
        let good = Sum::of(&bank, (0..4).map(|i| (i, Some(b"10".to_vec()))).collect(), 0);
        assert!(good.ok());
        assert!(good.problems(&bank).is_empty());
        let moved = Sum::of(
            &bank,
            vec![
                (0, Some(b"0".to_vec())),
                (1, Some(b"20".to_vec())),
                (2, Some(b"10".to_vec())),
                (3, Some(b"10".to_vec())),
            ],
            0,
        );
        assert!(moved.ok(), "money moved, none made");

        let off = Sum::of(&bank, vec![(0, Some(b"999".to_vec())), (1, None), (2, Some(b"x".to_vec()))], 0);
        assert!(!off.ok());
        assert_eq!((off.total, off.found, off.missing.clone(), off.malformed_count), (999, 2, vec![1, 3], 1));
        let text = off.problems(&bank).join("; ");
        assert!(text.contains("the total is 999, expected 40 (4 accounts x 10): off by +959"), "{text}");
        assert!(text.contains("2 accounts do not exist: acct-000001, acct-000003"), "{text}");
        assert!(text.contains("acct-000002 = `x`"), "{text}");
        let short = Sum::of(&bank, (0..4).map(|i| (i, Some(b"9".to_vec()))).collect(), 0);
        assert!(short.problems(&bank)[0].ends_with("off by -4"));
    }

    #[test]
    fn abort_kinds_leave_out_the_key() {
        let a = abort_kind(&AbortReason::VersionChanged { key: b"acct-000001".to_vec(), expected: 1, actual: 2 });
        let b = abort_kind(&AbortReason::VersionChanged { key: b"acct-000002".to_vec(), expected: 5, actual: 9 });
        assert_eq!(a, b);
        assert_ne!(a, abort_kind(&AbortReason::Locked { key: b"k".to_vec() }));
    }

    #[tokio::test]
    async fn bounded_runs_everything_in_order_never_more_than_width_at_once() {
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let out = bounded(100, 7, None, |i| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                running.fetch_sub(1, Ordering::SeqCst);
                i * 2
            }
        })
        .await
        .unwrap();
        assert_eq!(out, (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let most = most.load(Ordering::SeqCst);
        assert!((2..=7).contains(&most), "{most} at once");
        let stop = AtomicBool::new(true);
        assert!(bounded(100, 7, Some(&stop), |i| async move { i }).await.is_none());
    }
}
