//! `pactdb workload`: load generators in the style of CockroachDB's
//! `workload run kv`.
//!
//! * `workload run kv`: closed-loop clients (each has one operation
//!   outstanding at a time) doing single-key puts and gets over a uniform key
//!   space, against pactdb or, with `--target etcd://...`, etcd, so both
//!   systems are measured by the same load generator. Latencies of
//!   successful operations go into an HDR histogram; failed operations are
//!   counted apart and never as successes.
//! * `workload init bank`, `workload run bank`, `workload check bank`: a
//!   bank of accounts whose total never changes, moved around by
//!   transactions and audited by read-only ones (see `workload/bank.rs`).
//! * `workload probe`: one client writes one key of a group in a tight loop
//!   and prints every gap between successful writes, to measure how long
//!   writes are unavailable when a primary dies.
//!
//! Only operations that complete inside the measurement window (after
//! `--ramp`, for `--duration`) count, so throughput is completions divided by
//! the window's length.

mod bank;
mod etcd;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use pactdb_client::{Client, Consistency};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Latencies are recorded in microseconds, up to this (longer ones saturate).
const MAX_LATENCY_US: u64 = 60_000_000;
/// How long workers may take to finish their last operation after the end.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// An etcd operation with no answer after this long fails (pactdb's front
/// end has the same total operation timeout).
const ETCD_OP_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct error messages kept for the report.
const MAX_ERROR_KINDS: usize = 16;

#[derive(clap::Args, Debug)]
pub struct WorkloadArgs {
    #[command(subcommand)]
    pub command: WorkloadCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum WorkloadCommand {
    /// Create a workload's initial data.
    Init {
        #[command(subcommand)]
        workload: InitWorkload,
    },
    /// Run a workload for a while and report throughput and latency.
    Run {
        #[command(subcommand)]
        workload: RunWorkload,
    },
    /// Check the invariants of the data a workload left (exit 1 if one is broken).
    Check {
        #[command(subcommand)]
        workload: CheckWorkload,
    },
    /// Write one key of a group in a tight loop and print every gap between
    /// successful writes of at least --gap-ms (pactdb only).
    Probe(ProbeArgs),
}

#[derive(clap::Subcommand, Debug)]
pub enum RunWorkload {
    /// Closed-loop clients doing single-key puts and gets over a uniform key space.
    Kv(KvArgs),
    /// Closed-loop clients moving money between random accounts in
    /// transactions, and auditors summing every account in one transaction.
    Bank(bank::RunArgs),
}

#[derive(clap::Subcommand, Debug)]
pub enum InitWorkload {
    /// Create the accounts of `workload run bank` (only those that do not exist yet).
    Bank(bank::InitArgs),
}

#[derive(clap::Subcommand, Debug)]
pub enum CheckWorkload {
    /// Sum every account in one transaction, compare with accounts x balance,
    /// and check that no prepared transaction or lock is left.
    Bank(bank::CheckArgs),
}

/// What every closed-loop workload run takes: the system, the clients and
/// their connections, the window, and how to report.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// What to load: `pactdb://HOST:PORT,...`, or `etcd://HOST:PORT,...` (etcd
    /// v3 over gRPC). Default: the pactdb cluster the other commands find
    /// (--endpoints, PACTDB_ENDPOINTS, ./pactdb-data/cluster.json).
    #[arg(long)]
    pub target: Option<String>,
    /// Concurrent closed-loop clients; each has one operation outstanding at a time.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Connections the clients share, client i using connection i mod N:
    /// pactdb front ends (`pactdb_client::Client`, one TCP connection per
    /// node it talks to) or etcd gRPC connections (spread over the endpoints
    /// round robin). Default: one per 16 clients.
    #[arg(long)]
    pub conns: Option<usize>,
    /// How long to measure (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Run this long before measuring; operations completed then are not counted.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Print one JSON object with the results on stdout (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// How often to report progress.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub display_every: Duration,
    /// Seed of the workload's random choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Threads of the load generator's runtime. One (the default) spends
    /// the least CPU per operation, which matters when the generator shares
    /// the machine with the servers it loads; either system is driven the
    /// same way.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
}

impl LoadArgs {
    /// The target, after checking the counts and durations make sense.
    fn target(&self, default_endpoints: Vec<String>) -> anyhow::Result<Target> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.duration.is_zero() || self.display_every.is_zero() {
            bail!("--duration and --display-every must be positive");
        }
        Target::parse(self.target.as_deref(), default_endpoints)
    }

    /// The connections the clients share.
    fn conns(&self) -> usize {
        self.conns.unwrap_or(self.clients.div_ceil(16)).clamp(1, self.clients)
    }

    /// The seed, drawn from the clock if none was given.
    fn seed(&self) -> u64 {
        self.seed.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64))
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct KvArgs {
    #[command(flatten)]
    pub load: LoadArgs,
    /// Bytes per key (decimal key numbers, zero-padded).
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,
    /// Bytes per written value.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
    /// Percentage of operations that are reads (the rest are puts).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub read_percent: u8,
    /// Size of the key space; keys are drawn uniformly from it.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Consistency of the reads (pactdb): `linearizable`, `session`, or
    /// `stale=MS`. Session and stale reads go to any member of the key's
    /// group.
    #[arg(long, default_value = "linearizable", value_name = "LEVEL")]
    pub read_consistency: Consistency,
    /// Where linearizable reads go (pactdb): `leader` (the primary answers
    /// under its lease) or `any` (any member, which asks its primary for a
    /// read index first).
    #[arg(long, default_value = "leader", value_parser = ["leader", "any"])]
    pub read_from: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The group whose key is written (the first `probe-<group>-<n>` key that
    /// hashes to it).
    #[arg(long, default_value_t = 0)]
    pub group: u32,
    /// Stop after this long, or at SIGINT/SIGTERM.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Print every gap between successful writes at least this long (ms).
    #[arg(long, default_value_t = 10)]
    pub gap_ms: u64,
    /// Bytes per written value.
    #[arg(long, default_value_t = 128)]
    pub value_size: usize,
}

/// Parses `10s`, `1.5s`, `500ms`, `2m`, `1h`, `1m30s`, `250us`, or a bare
/// number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| format!("bad duration `{s}`"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len = rest[num_len..].find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], &rest[num_len..num_len + unit_len]);
        let n: f64 = num.parse().map_err(|_| format!("bad duration `{s}` (expected e.g. 10s, 500ms, 2m)"))?;
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(format!("bad unit `{unit}` in duration `{s}` (use h, m, s, ms, us, ns)")),
        };
        total += n * scale;
        rest = &rest[num_len + unit_len..];
    }
    secs_to_duration(total).ok_or_else(|| format!("bad duration `{s}`"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    (0.0..1e9).contains(&secs).then(|| Duration::from_secs_f64(secs))
}

/// Runs `pactdb workload ...`; `endpoints` are the pactdb nodes the other
/// commands would use.
pub fn run(args: WorkloadArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    // Load generators run on `--threads` threads; init and check are
    // bounded by the cluster, and one thread does for them.
    let threads = match &args.command {
        WorkloadCommand::Run { workload: RunWorkload::Kv(kv) } => Some(kv.load.threads),
        WorkloadCommand::Run { workload: RunWorkload::Bank(b) } => Some(b.load.threads),
        WorkloadCommand::Init { .. } | WorkloadCommand::Check { .. } => Some(1),
        WorkloadCommand::Probe(_) => None,
    };
    let rt = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n.into()).enable_all().build()?,
        None => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    match args.command {
        WorkloadCommand::Init { workload: InitWorkload::Bank(b) } => rt.block_on(bank::init(b, endpoints)),
        WorkloadCommand::Run { workload: RunWorkload::Kv(kv) } => rt.block_on(run_kv(kv, endpoints)),
        WorkloadCommand::Run { workload: RunWorkload::Bank(b) } => rt.block_on(bank::run(b, endpoints)),
        WorkloadCommand::Check { workload: CheckWorkload::Bank(b) } => rt.block_on(bank::check(b, endpoints)),
        WorkloadCommand::Probe(p) => rt.block_on(probe(p, endpoints)),
    }
}

/// Which system a workload talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pactdb(Vec<String>),
    Etcd(Vec<String>),
}

impl Target {
    pub fn parse(target: Option<&str>, default_endpoints: Vec<String>) -> anyhow::Result<Target> {
        let Some(t) = target else {
            return Ok(Target::Pactdb(default_endpoints));
        };
        let split = |list: &str| -> anyhow::Result<Vec<String>> {
            let eps: Vec<String> =
                list.split(',').map(|s| s.trim().trim_end_matches('/').to_string()).filter(|s| !s.is_empty()).collect();
            if eps.is_empty() {
                bail!("--target `{t}` names no HOST:PORT");
            }
            if let Some(bad) = eps.iter().find(|e| e.contains("://") || !e.contains(':')) {
                bail!("`{bad}` in --target `{t}` is not HOST:PORT");
            }
            Ok(eps)
        };
        if let Some(list) = t.strip_prefix("etcd://") {
            Ok(Target::Etcd(split(list)?))
        } else if let Some(list) = t.strip_prefix("pactdb://") {
            Ok(Target::Pactdb(split(list)?))
        } else {
            bail!("--target `{t}` must start with pactdb:// or etcd://")
        }
    }

    fn system(&self) -> &'static str {
        match self {
            Target::Pactdb(_) => "pactdb",
            Target::Etcd(_) => "etcd",
        }
    }

    fn endpoints(&self) -> &[String] {
        match self {
            Target::Pactdb(e) | Target::Etcd(e) => e,
        }
    }
}

/// The connections the clients share.
enum Driver {
    Pactdb(Vec<Client>),
    Etcd(Vec<etcd::Conn>),
}

impl Driver {
    async fn connect(target: &Target, conns: usize) -> anyhow::Result<Driver> {
        Ok(match target {
            Target::Pactdb(eps) => {
                let mut clients = Vec::with_capacity(conns);
                for _ in 0..conns {
                    clients.push(Client::connect(eps).await.with_context(|| {
                        format!("cannot reach pactdb at {} (is `pactdb demo` running?)", eps.join(","))
                    })?);
                }
                Driver::Pactdb(clients)
            }
            Target::Etcd(eps) => {
                let mut out = Vec::with_capacity(conns);
                for i in 0..conns {
                    let ep = &eps[i % eps.len()];
                    out.push(etcd::connect(ep).await.with_context(|| format!("cannot reach etcd at {ep}"))?);
                }
                Driver::Etcd(out)
            }
        })
    }

    async fn put(&self, conn: usize, key: Vec<u8>, value: Vec<u8>) -> Result<(), String> {
        match self {
            Driver::Pactdb(c) => c[conn].put(key, value).await.map(|_| ()).map_err(|e| e.to_string()),
            Driver::Etcd(c) => match tokio::time::timeout(ETCD_OP_TIMEOUT, c[conn].put(&key, &value)).await {
                Ok(r) => r,
                Err(_) => Err("etcd put timed out".into()),
            },
        }
    }

    async fn get_at(&self, conn: usize, key: Vec<u8>, consistency: Consistency) -> Result<(), String> {
        match self {
            Driver::Pactdb(c) => c[conn].get_with(key, consistency).await.map(|_| ()).map_err(|e| e.to_string()),
            Driver::Etcd(c) => match tokio::time::timeout(ETCD_OP_TIMEOUT, c[conn].get(&key)).await {
                Ok(r) => r.map(|_| ()),
                Err(_) => Err("etcd get timed out".into()),
            },
        }
    }
}

/// A small, fast generator (xorshift64*) seeded through splitmix64; every
/// client has its own.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut z = seed.wrapping_add(stream.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

/// What one measurement window collected.
struct Stats {
    reads: Histogram<u64>,
    writes: Histogram<u64>,
    read_errors: u64,
    write_errors: u64,
    error_kinds: BTreeMap<String, u64>,
}

impl Stats {
    fn new() -> Stats {
        let h = || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds");
        Stats { reads: h(), writes: h(), read_errors: 0, write_errors: 0, error_kinds: BTreeMap::new() }
    }
}

/// A run's measurement window and the counters its progress reports read,
/// shared by the clients, the reporter and the coordinator of every
/// `workload run`.
struct Window {
    base: Instant,
    /// The window: completions at `ramp_us <= t < end_us` (since `base`) count.
    ramp_us: u64,
    end_us: AtomicU64,
    stop: AtomicBool,
    /// Every success, for progress reports (ramp included).
    done: AtomicU64,
    /// Every other completion, for progress reports (ramp included).
    failed: AtomicU64,
    /// Completions after the window closed (not counted).
    late: AtomicU64,
}

/// Where a completion falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Ramp,
    Inside,
    Late,
}

impl Window {
    fn new(ramp: Duration, duration: Duration) -> Window {
        let ramp_us = ramp.as_micros() as u64;
        Window::at(Instant::now(), ramp_us, ramp_us + duration.as_micros() as u64)
    }

    fn at(base: Instant, ramp_us: u64, end_us: u64) -> Window {
        Window {
            base,
            ramp_us,
            end_us: AtomicU64::new(end_us),
            stop: AtomicBool::new(false),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    /// Counts a completion for the progress reports and says where in the
    /// run it falls; only `Place::Inside` goes into the figures.
    fn place(&self, finished: Instant, ok: bool) -> Place {
        let t = finished.duration_since(self.base).as_micros() as u64;
        if ok {
            self.done.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if t < self.ramp_us {
            return Place::Ramp;
        }
        if t >= self.end_us.load(Ordering::Relaxed) {
            self.late.fetch_add(1, Ordering::Relaxed);
            return Place::Late;
        }
        Place::Inside
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Closes the window now (a signal asked to stop early).
    fn stop_now(&self) {
        let now = self.base.elapsed().as_micros() as u64;
        self.end_us.fetch_min(now.max(self.ramp_us), Ordering::Relaxed);
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Length of the measurement window in seconds (shorter than asked if
    /// a signal closed it early).
    fn elapsed_s(&self) -> f64 {
        self.end_us.load(Ordering::Relaxed).saturating_sub(self.ramp_us) as f64 / 1e6
    }

    /// Runs until the window closes or a signal closes it early, drawing
    /// progress, then gives the clients `SHUTDOWN_GRACE` to finish their
    /// last operation. Returns how many clients were abandoned.
    async fn run(
        &self,
        total: Duration,
        display_every: Duration,
        labels: ProgressLabels,
        workers: &mut tokio::task::JoinSet<()>,
    ) -> anyhow::Result<u64> {
        let progress = Progress::new(total, display_every, labels);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(display_every);
        tick.tick().await;
        let deadline = tokio::time::Instant::from_std(self.base + total);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tokio::signal::ctrl_c() => { self.stop_now(); break; }
                _ = term.recv() => { self.stop_now(); break; }
                _ = tick.tick() => progress.update(self),
            }
        }
        self.stop.store(true, Ordering::Relaxed);
        progress.finish(self);

        // Let every client finish its last operation (bounded).
        let grace = tokio::time::sleep(SHUTDOWN_GRACE);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                joined = workers.join_next() => if joined.is_none() { break },
                _ = &mut grace => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        let abandoned = workers.len() as u64;
        workers.abort_all();
        Ok(abandoned)
    }
}

/// Distinct messages kept per kind of failure, for the report: each of the
/// first `MAX_ERROR_KINDS` messages counted on its own, the rest together.
fn count_kind(kinds: &mut BTreeMap<String, u64>, kind: String) {
    if let Some(n) = kinds.get_mut(&kind) {
        *n += 1;
    } else if kinds.len() < MAX_ERROR_KINDS {
        kinds.insert(kind, 1);
    } else {
        *kinds.entry("(others)".into()).or_default() += 1;
    }
}

/// State the kv clients, the reporter and the coordinator share.
struct Shared {
    window: Window,
    stats: Mutex<Stats>,
}

impl Shared {
    fn record(&self, started: Instant, finished: Instant, read: bool, result: Result<(), String>) {
        if self.window.place(finished, result.is_ok()) != Place::Inside {
            return;
        }
        let mut s = self.stats.lock().expect("stats lock");
        match result {
            Ok(()) => {
                let us = finished.duration_since(started).as_micros().max(1) as u64;
                let h = if read { &mut s.reads } else { &mut s.writes };
                h.saturating_record(us.min(MAX_LATENCY_US));
            }
            Err(e) => {
                if read {
                    s.read_errors += 1;
                } else {
                    s.write_errors += 1;
                }
                count_kind(&mut s.error_kinds, e);
            }
        }
    }
}

struct KvConfig {
    clients: usize,
    conns: usize,
    key_size: usize,
    value_size: usize,
    read_percent: u64,
    keys: u64,
    seed: u64,
    read_consistency: Consistency,
}

async fn kv_client(idx: usize, driver: Arc<Driver>, cfg: Arc<KvConfig>, shared: Arc<Shared>) {
    let conn = idx % cfg.conns;
    let mut rng = Rng::new(cfg.seed, idx as u64);
    let mut value: Vec<u8> = (0..cfg.value_size).map(|_| rng.next() as u8).collect();
    let width = cfg.key_size;
    let mut n = 0u64;
    while !shared.window.stopping() {
        let k = rng.below(cfg.keys);
        let key = format!("{k:0width$}").into_bytes();
        let read = cfg.read_percent > 0 && rng.below(100) < cfg.read_percent;
        let started = Instant::now();
        let result = if read {
            driver.get_at(conn, key, cfg.read_consistency).await
        } else {
            // Every written value differs from the one before.
            for (b, x) in value.iter_mut().zip(n.to_le_bytes()) {
                *b = x;
            }
            driver.put(conn, key, value.clone()).await
        };
        shared.record(started, Instant::now(), read, result);
        n += 1;
    }
}

#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// One kind of operation's figures.
#[derive(Serialize, Debug, Clone)]
pub struct OpFigures {
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub latency_ms: Latency,
}

/// The `--json` report.
#[derive(Serialize, Debug, Clone)]
pub struct KvReport {
    pub workload: &'static str,
    pub system: &'static str,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    /// Threads of the load generator's runtime.
    pub threads: u16,
    pub key_size: usize,
    pub value_size: usize,
    pub read_percent: u8,
    /// The reads' consistency, and where linearizable ones went.
    pub read_consistency: String,
    pub read_from: String,
    pub keys: u64,
    pub seed: u64,
    pub ramp_s: f64,
    /// Length of the measurement window (shorter than --duration if stopped early).
    pub elapsed_s: f64,
    /// Successful operations completed in the window.
    pub ops: u64,
    /// Failed operations completed in the window (never counted in `ops`).
    pub errors: u64,
    pub ops_per_sec: f64,
    /// Latency of every successful operation, reads and writes together.
    pub latency_ms: Latency,
    pub writes: OpFigures,
    pub reads: OpFigures,
    /// Operations that completed after the window closed (not counted).
    pub late: u64,
    /// Clients still waiting for an operation when the run gave up on them.
    pub abandoned: u64,
    /// CPU this load generator used (user + system), in cores, averaged
    /// over the whole run: it shares the machine with the system under test.
    pub client_cpu_cores: f64,
    /// Distinct error messages and how often each occurred in the window.
    pub error_kinds: BTreeMap<String, u64>,
}

async fn run_kv(args: KvArgs, default_endpoints: Vec<String>) -> anyhow::Result<i32> {
    let load = &args.load;
    let target = load.target(default_endpoints)?;
    if args.keys == 0 {
        bail!("--keys must be at least 1");
    }
    let digits = (args.keys - 1).to_string().len();
    if args.key_size < digits {
        bail!("--key-size {} cannot hold {} distinct keys (needs {digits} bytes)", args.key_size, args.keys);
    }
    let conns = load.conns();
    let seed = load.seed();
    let cfg = Arc::new(KvConfig {
        clients: load.clients,
        conns,
        key_size: args.key_size,
        value_size: args.value_size,
        read_percent: u64::from(args.read_percent),
        keys: args.keys,
        seed,
        read_consistency: args.read_consistency,
    });
    let driver = Arc::new(Driver::connect(&target, conns).await?);
    match &*driver {
        Driver::Etcd(_) if args.read_consistency != Consistency::Linearizable || args.read_from != "leader" => {
            bail!("--read-consistency and --read-from apply to pactdb only (etcd reads here are linearizable)")
        }
        Driver::Etcd(_) => {}
        Driver::Pactdb(clients) => {
            for c in clients {
                c.spread_linearizable_reads(args.read_from == "any").await?;
            }
        }
    }
    let cpu_start = (cpu_time(), Instant::now());
    eprintln!(
        "workload kv: {} at {}: {} clients over {} connections, {} B keys, {} B values, {}% reads ({} from {}), {} keys, ramp {:?}, duration {:?}",
        target.system(),
        target.endpoints().join(","),
        cfg.clients,
        conns,
        cfg.key_size,
        cfg.value_size,
        args.read_percent,
        args.read_consistency,
        args.read_from,
        cfg.keys,
        load.ramp,
        load.duration
    );
    let shared = Arc::new(Shared { window: Window::new(load.ramp, load.duration), stats: Mutex::new(Stats::new()) });
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..cfg.clients {
        workers.spawn(kv_client(i, driver.clone(), cfg.clone(), shared.clone()));
    }
    let abandoned =
        shared.window.run(load.ramp + load.duration, load.display_every, ProgressLabels::OPS, &mut workers).await?;
    let client_cpu_cores = (cpu_time() - cpu_start.0) / cpu_start.1.elapsed().as_secs_f64();

    let elapsed_s = shared.window.elapsed_s();
    let stats = std::mem::replace(&mut *shared.stats.lock().expect("stats lock"), Stats::new());
    let figures = |h: &Histogram<u64>, errors: u64| OpFigures {
        ops: h.len(),
        errors,
        ops_per_sec: if elapsed_s > 0.0 { h.len() as f64 / elapsed_s } else { 0.0 },
        latency_ms: Latency::of(h),
    };
    let mut all = stats.writes.clone();
    all.add(&stats.reads).expect("histograms of equal bounds merge");
    let report = KvReport {
        workload: "kv",
        system: target.system(),
        endpoints: target.endpoints().to_vec(),
        clients: cfg.clients,
        conns,
        threads: load.threads,
        key_size: cfg.key_size,
        value_size: cfg.value_size,
        read_percent: args.read_percent,
        read_consistency: args.read_consistency.to_string(),
        read_from: args.read_from.clone(),
        keys: cfg.keys,
        seed,
        ramp_s: load.ramp.as_secs_f64(),
        elapsed_s,
        ops: all.len(),
        errors: stats.read_errors + stats.write_errors,
        ops_per_sec: if elapsed_s > 0.0 { all.len() as f64 / elapsed_s } else { 0.0 },
        latency_ms: Latency::of(&all),
        writes: figures(&stats.writes, stats.write_errors),
        reads: figures(&stats.reads, stats.read_errors),
        late: shared.window.late.load(Ordering::Relaxed),
        abandoned,
        client_cpu_cores,
        error_kinds: stats.error_kinds,
    };
    if load.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.ops == 0 { 1 } else { 0 })
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_time() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

fn print_report(r: &KvReport) {
    println!(
        "{} kv: {} clients, {} connections, {} B keys, {} B values, {}% reads ({} from {}), {} keys",
        r.system, r.clients, r.conns, r.key_size, r.value_size, r.read_percent, r.read_consistency, r.read_from, r.keys
    );
    println!(
        "{:<7} {:>8} {:>8} {:>10} {:>11} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "op",
        "elapsed",
        "errors",
        "ops",
        "ops/sec",
        "mean(ms)",
        "p50(ms)",
        "p90(ms)",
        "p99(ms)",
        "p99.9(ms)",
        "max(ms)"
    );
    let row = |name: &str, ops: u64, errors: u64, rate: f64, l: &Latency| {
        println!(
            "{:<7} {:>7.1}s {:>8} {:>10} {:>11.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.3} {:>9.3}",
            name, r.elapsed_s, errors, ops, rate, l.mean, l.p50, l.p90, l.p99, l.p99_9, l.max
        );
    };
    if r.read_percent > 0 && r.read_percent < 100 {
        row("read", r.reads.ops, r.reads.errors, r.reads.ops_per_sec, &r.reads.latency_ms);
        row("write", r.writes.ops, r.writes.errors, r.writes.ops_per_sec, &r.writes.latency_ms);
    }
    row("total", r.ops, r.errors, r.ops_per_sec, &r.latency_ms);
    if r.late > 0 {
        println!("({} operations in flight when the window closed were not counted)", r.late);
    }
    if r.abandoned > 0 {
        println!("({} clients still had an operation outstanding {SHUTDOWN_GRACE:?} after the end)", r.abandoned);
    }
    println!("(this load generator used {:.2} cores of CPU)", r.client_cpu_cores);
    for (e, n) in &r.error_kinds {
        println!("error x{n}: {e}");
    }
}

/// What a run's progress calls its successes and its other completions.
#[derive(Debug, Clone, Copy)]
struct ProgressLabels {
    done: &'static str,
    failed: &'static str,
}

impl ProgressLabels {
    const OPS: ProgressLabels = ProgressLabels { done: "ops", failed: "errors" };
}

/// Progress on stderr: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: Duration,
    labels: ProgressLabels,
    last: Mutex<(Instant, u64)>,
}

impl Progress {
    fn new(total: Duration, every: Duration, labels: ProgressLabels) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
                    .expect("a valid progress template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(every.min(Duration::from_millis(200)));
            bar
        });
        if bar.is_none() {
            let rate = format!("{}/sec", labels.done);
            eprintln!("{:>8} {:>12} {:>12} {:>13}", "elapsed", rate, labels.done, labels.failed);
        }
        Progress { bar, total, labels, last: Mutex::new((Instant::now(), 0)) }
    }

    fn update(&self, window: &Window) {
        let now = Instant::now();
        let done = window.done.load(Ordering::Relaxed);
        let failed = window.failed.load(Ordering::Relaxed);
        let mut last = self.last.lock().expect("progress lock");
        let secs = now.duration_since(last.0).as_secs_f64();
        let rate = if secs > 0.0 { done.saturating_sub(last.1) as f64 / secs } else { 0.0 };
        *last = (now, done);
        let elapsed = now.duration_since(window.base);
        let phase = if (elapsed.as_micros() as u64) < window.ramp_us { " (ramp)" } else { "" };
        let ProgressLabels { done: what, failed: failed_what } = self.labels;
        match &self.bar {
            Some(bar) => {
                bar.set_position(elapsed.as_millis() as u64);
                bar.set_message(format!(
                    "{:.0}s/{:.0}s{phase}  {rate:.0} {what}/s  {done} {what}  {failed} {failed_what}",
                    elapsed.as_secs_f64(),
                    self.total.as_secs_f64()
                ));
            }
            None => eprintln!("{:>7.1}s {:>12.0} {:>12} {:>13}{phase}", elapsed.as_secs_f64(), rate, done, failed),
        }
    }

    fn finish(&self, window: &Window) {
        if let Some(bar) = &self.bar {
            self.update(window);
            bar.finish_and_clear();
        }
    }
}

fn unix_ms(base_wall: SystemTime, base: Instant, at: Instant) -> u128 {
    (base_wall + at.duration_since(base)).duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// `workload probe`: writes one key of `--group` in a tight loop; prints
/// `gap from=<unix ms> to=<unix ms> ms=<length> errors=<failed writes>` for
/// every gap between successful writes (completions) of at least `--gap-ms`,
/// as it happens, and a summary line at the end.
async fn probe(args: ProbeArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    let client = Client::connect(&endpoints)
        .await
        .with_context(|| format!("cannot reach pactdb at {} (is `pactdb demo` running?)", endpoints.join(",")))?;
    let cluster = client.cluster().clone();
    if !cluster.groups.iter().any(|g| g.id == args.group) {
        bail!("the cluster has no group {}", args.group);
    }
    let key = (0u64..)
        .map(|i| format!("probe-{}-{i}", args.group))
        .find(|k| cluster.group_of(k.as_bytes()) == args.group)
        .expect("some key maps to every group");
    let mut value = vec![b'p'; args.value_size];
    let gap = Duration::from_millis(args.gap_ms);
    let (base_wall, base) = (SystemTime::now(), Instant::now());
    let deadline = base + args.duration;
    println!("probe key={key} group={} from={}", args.group, unix_ms(base_wall, base, base));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stop = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
    tokio::pin!(stop);
    let (mut writes, mut errors, mut gap_errors) = (0u64, 0u64, 0u64);
    let mut longest = Duration::ZERO;
    let mut last_ok: Option<Instant> = None;
    let mut n = 0u64;
    loop {
        for (b, x) in value.iter_mut().zip(n.to_le_bytes()) {
            *b = x;
        }
        n += 1;
        let result = tokio::select! {
            r = client.put(key.clone(), value.clone()) => r,
            _ = &mut stop => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
        };
        let now = Instant::now();
        match result {
            Ok(_) => {
                writes += 1;
                if let Some(prev) = last_ok {
                    let g = now.duration_since(prev);
                    longest = longest.max(g);
                    if g >= gap {
                        println!(
                            "gap from={} to={} ms={:.1} errors={gap_errors}",
                            unix_ms(base_wall, base, prev),
                            unix_ms(base_wall, base, now),
                            g.as_secs_f64() * 1000.0
                        );
                        let _ = std::io::stdout().flush();
                    }
                }
                last_ok = Some(now);
                gap_errors = 0;
            }
            Err(e) => {
                errors += 1;
                gap_errors += 1;
                eprintln!("probe: write failed: {e}");
            }
        }
    }
    println!(
        "probe done writes={writes} errors={errors} longest_gap_ms={:.1} to={}",
        longest.as_secs_f64() * 1000.0,
        unix_ms(base_wall, base, Instant::now())
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn parses_targets() {
        let default = vec!["127.0.0.1:7101".to_string()];
        assert_eq!(Target::parse(None, default.clone()).unwrap(), Target::Pactdb(default.clone()));
        assert_eq!(
            Target::parse(Some("etcd://127.0.0.1:2379,127.0.0.1:22379"), default.clone()).unwrap(),
            Target::Etcd(vec!["127.0.0.1:2379".into(), "127.0.0.1:22379".into()])
        );
        assert_eq!(Target::parse(Some("pactdb://h:1"), default.clone()).unwrap(), Target::Pactdb(vec!["h:1".into()]));
        assert!(Target::parse(Some("redis://h:1"), default.clone()).is_err());
        assert!(Target::parse(Some("etcd://"), default.clone()).is_err());
        assert!(Target::parse(Some("etcd://http://h:1"), default).is_err());
    }

    #[test]
    fn rng_is_uniform_enough_and_in_range() {
        let mut rng = Rng::new(42, 7);
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            let x = rng.below(10);
            buckets[x as usize] += 1;
        }
        assert!(buckets.iter().all(|&b| (9_000..11_000).contains(&b)), "{buckets:?}");
        assert_ne!(Rng::new(42, 1).next(), Rng::new(42, 2).next());
    }

    #[test]
    fn failed_operations_are_never_counted_as_successes() {
        let shared = Shared {
            window: Window::at(Instant::now() - Duration::from_secs(1), 0, u64::MAX),
            stats: Mutex::new(Stats::new()),
        };
        let t = Instant::now();
        shared.record(t, t + Duration::from_millis(2), false, Ok(()));
        shared.record(t, t + Duration::from_millis(3), false, Err("boom".into()));
        shared.record(t, t + Duration::from_millis(1), true, Err("boom".into()));
        let s = shared.stats.lock().unwrap();
        assert_eq!(s.writes.len(), 1);
        assert_eq!(s.reads.len(), 0);
        assert_eq!((s.write_errors, s.read_errors), (1, 1));
        assert_eq!(s.error_kinds.get("boom"), Some(&2));
    }

    #[test]
    fn completions_outside_the_window_are_not_counted() {
        let base = Instant::now();
        let shared = Shared { window: Window::at(base, 1_000_000, 2_000_000), stats: Mutex::new(Stats::new()) };
        shared.record(base, base + Duration::from_millis(500), false, Ok(()));
        shared.record(base, base + Duration::from_millis(1500), false, Ok(()));
        shared.record(base, base + Duration::from_millis(2500), false, Ok(()));
        assert_eq!(shared.stats.lock().unwrap().writes.len(), 1);
        assert_eq!(shared.window.late.load(Ordering::Relaxed), 1);
        assert_eq!(shared.window.done.load(Ordering::Relaxed), 3);
    }
}
