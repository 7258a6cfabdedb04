//! `pactdb chaos`: faults across hosts, checked. Runs a workload against a
//! cluster of containers (the one `deploy/up.sh` makes) while it injects
//! faults one at a time in an order drawn from a seed, then heals
//! everything, reads every key back, and runs the simulator's checkers on
//! the client-side history. Prints `N ops, M faults, K anomalies`; exits 0
//! only if there was no anomaly and every fault was injected and recovered
//! from.
//!
//! This file owns the run: the options, connecting, the fault loop and its
//! settle waits, Ctrl-C, the end of the run. `chaos/workload.rs` owns the
//! clients and the recording, `chaos/faults.rs` the faults and the docker
//! backend, `chaos/report.rs` the checking and the report. It must never
//! leave a fault in place when it returns: every exit path (the end, an
//! error, Ctrl-C) restores every node first; and it must never wait
//! without a bound.

mod faults;
mod report;
mod workload;

use anyhow::{bail, Context};
use faults::{Backend, Docker, FaultKind, Planned};
use pactdb_client::Client;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::types::{ClusterMap, NodeId, View};
use pactdb_core::wire::{ClientMsg, ClientReply};
use pactdb_sim::history::Outcome;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use report::{Anomaly, FaultRecord};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use workload::{Keys, Recorder, Shared};

const EXIT_ANOMALY: i32 = 1;
const EXIT_INTERRUPTED: i32 = 130;
/// History client ids of the setup and of the final reads.
const SETUP_CLIENT: usize = 999;
const FINAL_CLIENT: usize = 1000;
/// How long the workload's tasks get to finish their last operation.
const STOP_GRACE: Duration = Duration::from_secs(40);
/// The longest the final reads of every key are retried, all together.
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restarted node gets to answer again (rolling restarts).
const NODE_UP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
Usually run through deploy/chaos.sh, which starts a cluster with deploy/up.sh when none runs,
passes its endpoints, and removes what it started at the end (see RELIABILITY.md).
Partitions need root: iptables runs in each container's network namespace (nsenter).")]
pub struct ChaosArgs {
    /// How long to run the workload with faults. Every selected fault kind
    /// is injected at least once, even if that takes longer.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,
    /// Seed of the fault schedule and the workload's choices (default:
    /// from the clock; printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Node N runs in the container named PREFIX + N.
    #[arg(long, env = "PACTDB_CONTAINER_PREFIX", default_value = "pactdb-node")]
    pub container_prefix: String,
    /// How many nodes the cluster has (default: as many as its map names).
    #[arg(long, env = "PACTDB_NODES")]
    pub nodes: Option<u32>,
    /// The faults to choose from (comma-separated): kill, pause, isolate,
    /// split, link, asymmetric, restart-all, rolling.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "kill,pause,isolate,split,link,asymmetric,restart-all,rolling"
    )]
    pub faults: Vec<FaultKind>,
    /// How long each fault is held before it is healed, in seconds, as
    /// MIN-MAX or one number (default: 3-5 for runs under 10 minutes,
    /// else 5-15).
    #[arg(long, value_parser = parse_hold)]
    pub hold: Option<(f64, f64)>,
    /// How long the cluster gets to serve writes on every group again
    /// after a fault is healed; beyond it, the fault counts as an anomaly.
    #[arg(long, default_value_t = 60)]
    pub settle_timeout: u64,
    /// A quiet stretch after each recovery, before the next fault (seconds).
    #[arg(long, default_value_t = 2.0)]
    pub quiet: f64,
    /// Register clients (each also a connection); two transfer clients and
    /// an auditor run besides.
    #[arg(long, default_value_t = 6)]
    pub clients: usize,
    /// A register client waits a random time up to this many milliseconds
    /// between two operations (a long run's history must stay checkable).
    #[arg(long, default_value_t = 20)]
    pub think_ms: u64,
    /// Write every recorded operation, transaction and fault as JSON lines.
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,
    /// Write a JSON summary (counts, faults, unavailability per kind,
    /// anomalies), as RELIABILITY.md's table takes it.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Self-test of the checkers: damage the recorded history on purpose
    /// (lost-write: a final read made to miss an acknowledged write), so
    /// the run must report an anomaly and exit non-zero.
    #[arg(long, value_enum, value_name = "KIND")]
    pub inject_anomaly: Option<Anomaly>,
}

fn parse_hold(s: &str) -> Result<(f64, f64), String> {
    let num = |t: &str| t.trim().parse::<f64>().map_err(|e| format!("{t:?}: {e}"));
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => (num(s)?, num(s)?),
    };
    if !(lo > 0.0 && hi >= lo && hi <= 600.0) {
        return Err("expected SECONDS or MIN-MAX, 0 < MIN <= MAX <= 600".into());
    }
    Ok((lo, hi))
}

/// One request to one node (views, status), outside any front end. With
/// `connect`, the only places the run opens connections.
async fn ask(addr: &str, msg: &ClientMsg) -> Option<ClientReply> {
    pactdb_client::call(addr, msg, Duration::from_secs(2)).await.ok()
}

/// The one place clients are made: every client of the run connects here.
pub async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    Client::connect(endpoints).await.with_context(|| format!("cannot reach the cluster at {}", endpoints.join(",")))
}

pub fn run(args: ChaosArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run_async(args, endpoints))
}

/// Everything the fault loop needs.
struct Ctx<B: Backend> {
    backend: B,
    endpoints: Vec<String>,
    cluster: ClusterMap,
    nodes: Vec<NodeId>,
    ips: BTreeMap<NodeId, String>,
    keys: Keys,
    probe: Client,
    rec: Recorder,
    settle: Duration,
}

impl<B: Backend> Ctx<B> {
    fn t(&self) -> String {
        format!("[t={:.1}s]", self.rec.now() as f64 / 1e6)
    }
}

async fn run_async(args: ChaosArgs, endpoints: Vec<String>) -> anyhow::Result<i32> {
    let start = Instant::now();
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
            % 1_000_000_000
    });
    // Keys are unique to the run even with the same seed, so a cluster that
    // served earlier runs holds nothing under them.
    let run_tag = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64) ^ seed
    );
    println!(
        "chaos: seed {seed} (repeat the schedule with --seed {seed}), {}s, endpoints {}",
        args.seconds,
        endpoints.join(",")
    );
    let probe = connect(&endpoints).await?;
    let cluster = probe.cluster().clone();
    let mut nodes: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    if let Some(n) = args.nodes {
        nodes.retain(|&id| id <= n as NodeId);
    }
    if nodes.len() < 3 {
        bail!("chaos needs a cluster of at least 3 nodes; the map names {:?}", nodes);
    }
    let backend = Docker { prefix: args.container_prefix.clone() };
    let kinds: Vec<FaultKind> = {
        let mut k = args.faults.clone();
        k.dedup();
        k
    };
    backend.preflight(&nodes, kinds.iter().any(|k| k.is_partition())).await?;
    let ips = faults::node_ips(&cluster);
    let rec = Recorder::new(start);
    let keys = Keys::new(&cluster, &run_tag);
    let ctx = Ctx {
        backend,
        endpoints: endpoints.clone(),
        cluster: cluster.clone(),
        nodes,
        ips,
        keys: keys.clone(),
        probe,
        rec: rec.clone(),
        settle: Duration::from_secs(args.settle_timeout),
    };
    // Whatever an interrupted earlier run left behind.
    for e in faults::restore_all(&ctx.backend, &ctx.nodes).await {
        println!("warning: restoring before the run: {e}");
    }
    if let Err(e) = wait_serving(&ctx).await {
        bail!("the cluster does not serve before any fault: {e}");
    }
    let setup_client = connect(&endpoints).await?;
    workload::setup_bank(&rec, SETUP_CLIENT, &setup_client, &keys, &run_tag).await?;
    println!(
        "{} workload: {} register clients on {} keys, 2 transfer clients and an auditor on {} accounts",
        ctx.t(),
        args.clients,
        keys.registers.len(),
        keys.accounts.len()
    );
    let shared = Arc::new(Shared {
        rec: rec.clone(),
        keys: keys.clone(),
        run: run_tag.clone(),
        stop: false.into(),
        think_max: Duration::from_millis(args.think_ms),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        let c = connect(&endpoints).await?;
        tasks.spawn(workload::register_client(shared.clone(), i, c, seed ^ (i as u64 + 1) << 20));
    }
    for i in 0..2 {
        let id = args.clients + i;
        let c = connect(&endpoints).await?;
        tasks.spawn(workload::transfer_client(shared.clone(), id, c, seed ^ (id as u64 + 1) << 20));
    }
    let c = connect(&endpoints).await?;
    tasks.spawn(workload::audit_client(shared.clone(), args.clients + 2, c));

    let hold = match args.hold {
        Some((lo, hi)) => (Duration::from_secs_f64(lo), Duration::from_secs_f64(hi)),
        None if args.seconds < 600 => (Duration::from_secs(3), Duration::from_secs(5)),
        None => (Duration::from_secs(5), Duration::from_secs(15)),
    };
    let mut fault_log: Vec<FaultRecord> = Vec::new();
    // Ctrl-C or SIGTERM (deploy/chaos.sh forwards its signals as SIGTERM),
    // watched until the checks begin.
    let sig = signalled();
    tokio::pin!(sig);
    let interrupted = tokio::select! {
        _ = fault_loop(&ctx, &args, seed, &kinds, hold, &mut fault_log) => false,
        s = &mut sig => s,
    };
    shared.stop.store(true, Ordering::Relaxed);
    if interrupted {
        println!("\n{} interrupted: restoring every node", ctx.t());
        tasks.abort_all();
        for e in faults::restore_all(&ctx.backend, &ctx.nodes).await {
            println!("error: could not restore {e}");
        }
        if let Some(path) = &args.history {
            report::write_history(path, &rec.snapshot(), &fault_log)?;
        }
        return Ok(EXIT_INTERRUPTED);
    }
    // The end: stop the workload, heal, read everything back.
    let end = async {
        let finish = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(STOP_GRACE, finish).await.is_err() {
            tasks.abort_all();
        }
        let mut liveness: Vec<String> = Vec::new();
        for e in faults::restore_all(&ctx.backend, &ctx.nodes).await {
            liveness.push(format!("restoring at the end: {e}"));
        }
        if let Err(e) = wait_serving(&ctx).await {
            liveness.push(format!("after the last heal the cluster did not serve: {e}"));
        }
        println!("{} workload stopped; reading every key back", ctx.t());
        let final_client = connect(&endpoints).await?;
        let mut reads = Vec::new();
        let mut final_ops = Vec::new();
        let deadline = Instant::now() + FINAL_READS_TIMEOUT;
        for key in keys.registers.iter().chain(&keys.accounts) {
            match final_read(&rec, &final_client, key, deadline).await {
                Ok((id, value)) => {
                    final_ops.push(id);
                    reads.push((key.clone(), value));
                }
                Err(e) => {
                    liveness.push(format!("the final read of {:?} never succeeded: {e}", String::from_utf8_lossy(key)))
                }
            }
        }
        for _ in 0..5 {
            if workload::audit(&rec, FINAL_CLIENT, &final_client, &keys.accounts).await.is_committed() {
                break;
            }
        }
        anyhow::Ok((liveness, reads, final_ops))
    };
    let (mut liveness, reads, final_ops) = tokio::select! {
        r = end => r?,
        _ = &mut sig => {
            println!("\n{} interrupted: restoring every node", ctx.t());
            for e in faults::restore_all(&ctx.backend, &ctx.nodes).await {
                println!("error: could not restore {e}");
            }
            return Ok(EXIT_INTERRUPTED);
        }
    };
    let mut history = rec.snapshot();
    let mut finals = report::finals_from_reads(&cluster, &reads);
    if let Some(anomaly) = args.inject_anomaly {
        match report::inject(anomaly, &mut history, &mut finals, &final_ops) {
            Some(what) => println!("self-test: {what}"),
            None => liveness.push("self-test: nothing to damage (no acknowledged write was read back)".into()),
        }
    }
    let violations = report::run_checkers(&cluster, &history, &finals);
    let mut anomalies: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
    anomalies.extend(liveness.into_iter().map(|l| format!("[liveness] {l}")));
    for f in &fault_log {
        if f.error.as_deref().is_some_and(|e| e.starts_with("not recovered")) {
            anomalies.push(format!("[liveness] fault {} ({}): {}", f.n, f.what, f.error.as_deref().unwrap_or("")));
        }
    }
    let failed_faults: Vec<&FaultRecord> =
        fault_log.iter().filter(|f| f.error.as_deref().is_some_and(|e| !e.starts_with("not recovered"))).collect();

    // The report.
    let counts = report::counts(&history);
    let kinds_summary = report::by_kind(&fault_log);
    println!(
        "\nunavailability per fault (longest time with no successful operation on a group, injection to recovery):"
    );
    for f in &fault_log {
        let worst = f.unavailable_s.iter().max_by(|a, b| a.1.total_cmp(b.1));
        let worst = worst.map_or("-".to_string(), |(g, s)| format!("{s:.1}s (group {g})"));
        let status = f.error.as_deref().map_or(String::new(), |e| format!(" ERROR: {e}"));
        println!("  fault {:>2} {:<11} {worst:<18} {}{status}", f.n, f.kind, f.what);
    }
    println!("per kind:");
    for k in &kinds_summary {
        println!(
            "  {:<11} injected {:>2}{}  unavailable max {:.1}s median {:.1}s",
            k.kind,
            k.injected,
            if k.failed > 0 { format!(" ({} failed)", k.failed) } else { String::new() },
            k.max_unavailable_s,
            k.median_unavailable_s
        );
    }
    println!(
        "ops: {} single ({} ok, {} indeterminate, {} refused), {} transactions ({} committed, {} aborted or refused, {} unknown)",
        counts.ops,
        counts.ops_ok,
        counts.ops_failed,
        counts.ops_refused,
        counts.txns,
        counts.txns_committed,
        counts.txns_aborted,
        counts.txns_unknown
    );
    for f in &failed_faults {
        println!("fault {} was not injected as planned: {}", f.n, f.error.as_deref().unwrap_or(""));
    }
    for a in &anomalies {
        println!("anomaly: {a}");
    }
    let summary =
        format!("{} ops, {} faults, {} anomalies", counts.ops + counts.txns, fault_log.len(), anomalies.len());
    println!("{summary}");
    if let Some(path) = &args.history {
        report::write_history(path, &history, &fault_log)?;
    }
    if let Some(path) = &args.report {
        let r = report::Report {
            seed,
            seconds: args.seconds,
            elapsed_s: start.elapsed().as_secs_f64(),
            counts,
            faults: &fault_log,
            by_kind: kinds_summary,
            anomalies: anomalies.clone(),
            summary: summary.clone(),
        };
        report::write_report(path, &r)?;
    }
    Ok(if anomalies.is_empty() && failed_faults.is_empty() { 0 } else { EXIT_ANOMALY })
}

/// Injects faults until `--seconds` have passed and every selected kind
/// ran once.
async fn fault_loop<B: Backend>(
    ctx: &Ctx<B>,
    args: &ChaosArgs,
    seed: u64,
    kinds: &[FaultKind],
    hold: (Duration, Duration),
    log: &mut Vec<FaultRecord>,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let deadline = Duration::from_secs(args.seconds);
    let quiet = Duration::from_secs_f64(args.quiet.max(0.0));
    // A quiet start: the workload's first operations run on a healthy cluster.
    tokio::time::sleep(quiet).await;
    let mut round_no = 0;
    'rounds: loop {
        round_no += 1;
        let round = faults::next_round(&mut rng, kinds);
        for (i, &kind) in round.iter().enumerate() {
            if round_no > 1 && ctx.rec.now() >= deadline.as_micros() as u64 {
                break 'rounds;
            }
            let views = current_views(&ctx.endpoints).await;
            let planned = faults::plan(&mut rng, kind, &ctx.nodes, &views, hold, &ctx.backend);
            let n = log.len() + 1;
            println!("{} fault {n} (round {round_no}: {}/{}): {}", ctx.t(), i + 1, round.len(), planned.what);
            let record = one_fault(ctx, n, &planned).await;
            match &record.error {
                Some(e) => println!("{} fault {n}: ERROR {e}", ctx.t()),
                None => println!(
                    "{} fault {n}: healed, every group serves again; longest gap {:.1}s",
                    ctx.t(),
                    record.worst_unavailable_s()
                ),
            }
            log.push(record);
            tokio::time::sleep(quiet).await;
        }
        if ctx.rec.now() >= deadline.as_micros() as u64 {
            break;
        }
    }
}

/// Injects one fault, holds it, heals it, waits for the cluster to serve
/// again, and measures the unavailability it caused.
async fn one_fault<B: Backend>(ctx: &Ctx<B>, n: usize, p: &Planned) -> FaultRecord {
    let injected_us = ctx.rec.now();
    let result = inject_and_heal(ctx, p).await;
    let healed_us = Some(ctx.rec.now());
    let mut error = None;
    if let Err(e) = &result {
        error = Some(format!("{e:#}"));
        // Whatever is left of it goes, before anything else.
        for e in faults::restore_all(&ctx.backend, &ctx.nodes).await {
            println!("{} error restoring after fault {n}: {e}", ctx.t());
        }
    }
    let recovered_us = match wait_serving(ctx).await {
        Ok(()) => Some(ctx.rec.now()),
        Err(e) => {
            error.get_or_insert(format!("not recovered: {e}"));
            None
        }
    };
    if recovered_us.is_some() {
        // Not an anomaly by itself: the next fault is only fairer if every
        // replica is back in its group first.
        if let Err(e) = wait_full_views(ctx).await {
            println!("{} note: {e}", ctx.t());
        }
    }
    // A little of the recovered workload is in the window, so the gap ends
    // at the first success after recovery rather than at the probe.
    let until = recovered_us.unwrap_or_else(|| ctx.rec.now());
    let successes = ctx.rec.with(|h| report::successes(&ctx.cluster, h));
    let unavailable_s = report::unavailability(&successes, injected_us, until);
    FaultRecord {
        n,
        kind: p.kind.name(),
        what: p.what.clone(),
        injected_us,
        healed_us,
        recovered_us,
        error,
        unavailable_s,
    }
}

async fn inject_and_heal<B: Backend>(ctx: &Ctx<B>, p: &Planned) -> anyhow::Result<()> {
    let b = &ctx.backend;
    match p.kind {
        FaultKind::Kill => {
            b.kill(p.targets[0]).await?;
            tokio::time::sleep(p.hold).await;
            b.start(p.targets[0]).await?;
        }
        FaultKind::Pause => {
            b.pause(p.targets[0]).await?;
            tokio::time::sleep(p.hold).await;
            b.unpause(p.targets[0]).await?;
        }
        FaultKind::Isolate | FaultKind::Split | FaultKind::Link | FaultKind::Asymmetric => {
            let cut = faults::partition(b, p, &ctx.nodes, &ctx.ips).await;
            if cut.is_ok() {
                tokio::time::sleep(p.hold).await;
            }
            for &n in &ctx.nodes {
                b.heal(n).await?;
            }
            cut?;
        }
        FaultKind::RestartAll => {
            for &n in &p.targets {
                b.kill(n).await?;
            }
            tokio::time::sleep(p.hold).await;
            for &n in &p.targets {
                b.start(n).await?;
            }
        }
        FaultKind::Rolling => {
            for &n in &p.targets {
                println!("{}   rolling: stop {}", ctx.t(), b.name(n));
                b.stop(n, Duration::from_secs(10)).await?;
                b.start(n).await?;
                wait_node_up(ctx, n).await?;
                wait_serving(ctx).await.map_err(|e| anyhow::anyhow!("after restarting {}: {e}", b.name(n)))?;
                wait_full_views(ctx).await.map_err(|e| anyhow::anyhow!("after restarting {}: {e}", b.name(n)))?;
            }
        }
    }
    Ok(())
}

/// Waits until a write to every group succeeds, bounded by the settle
/// timeout.
async fn wait_serving<B: Backend>(ctx: &Ctx<B>) -> Result<(), String> {
    let deadline = Instant::now() + ctx.settle;
    let mut pending: Vec<(u32, Vec<u8>)> = ctx.keys.probes.clone();
    let mut last_error = String::new();
    while !pending.is_empty() {
        if Instant::now() > deadline {
            let groups: Vec<String> = pending.iter().map(|(g, _)| g.to_string()).collect();
            return Err(format!(
                "groups {} served no write within {}s (last error: {last_error})",
                groups.join(","),
                ctx.settle.as_secs()
            ));
        }
        let mut set = tokio::task::JoinSet::new();
        for (g, key) in pending.clone() {
            let c = ctx.probe.clone();
            set.spawn(async move {
                let r = tokio::time::timeout(Duration::from_secs(3), c.put(key, b"probe".to_vec())).await;
                (g, r.map_err(|_| "no answer within 3s".to_string()).and_then(|r| r.map_err(|e| e.to_string())))
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok((g, Ok(_))) => pending.retain(|(pg, _)| *pg != g),
                Ok((_, Err(e))) => last_error = e,
                Err(e) => last_error = e.to_string(),
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The newest view of every group any endpoint knows.
async fn current_views(endpoints: &[String]) -> BTreeMap<u32, View> {
    let mut views: BTreeMap<u32, View> = BTreeMap::new();
    for ep in endpoints {
        if let Some(ClientReply::Views { views: vs, .. }) = ask(ep, &ClientMsg::GetViews).await {
            for v in vs {
                if views.get(&v.group).is_none_or(|old| old.epoch < v.epoch) {
                    views.insert(v.group, v);
                }
            }
        }
    }
    views
}

/// Waits until every group's newest view holds every node placed in it.
async fn wait_full_views<B: Backend>(ctx: &Ctx<B>) -> Result<(), String> {
    let deadline = Instant::now() + ctx.settle;
    loop {
        let views = current_views(&ctx.endpoints).await;
        let short: Vec<String> = views
            .values()
            .filter(|v| v.placement.iter().any(|p| !v.members.contains(p)))
            .map(|v| format!("group {} has members {:?} of {:?}", v.group, v.members, v.placement))
            .collect();
        if short.is_empty() && views.len() == ctx.cluster.groups.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("not every replica rejoined within {}s: {}", ctx.settle.as_secs(), short.join("; ")));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until node `n` answers a status request again.
async fn wait_node_up<B: Backend>(ctx: &Ctx<B>, n: NodeId) -> anyhow::Result<()> {
    let addr = ctx.cluster.nodes.get(&n).map(|a| a.client.clone()).context("a node of the map")?;
    let deadline = Instant::now() + NODE_UP_TIMEOUT;
    loop {
        if let Some(ClientReply::Status(_)) = ask(&addr, &ClientMsg::GetStatus).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not answer within {}s of its start", ctx.backend.name(n), NODE_UP_TIMEOUT.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Ctrl-C or SIGTERM: whether one came.
async fn signalled() -> bool {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        _ = term => true,
    }
}

/// A linearizable read of `key`, recorded, retried until it succeeds or
/// `deadline` passes; its history id and value.
async fn final_read(
    rec: &Recorder,
    client: &Client,
    key: &[u8],
    deadline: Instant,
) -> Result<(usize, Option<Versioned>), String> {
    loop {
        match workload::recorded(rec, FINAL_CLIENT, client, Op::Get { key: key.to_vec() }).await {
            (id, Outcome::Ok(OpResult::Value(v))) => return Ok((id, v)),
            (_, other) if Instant::now() > deadline => return Err(format!("{other:?}")),
            _ => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}
