//! The `pactdb sim` command: run many seeds in parallel, or one seed
//! verbosely, and say which failed and how to replay them.
//!
//! It owns argument parsing, the thread pool over seeds and the report
//! format. The output contract: every failing seed is printed with each
//! violated property and the exact replay command, a `coverage:` line says
//! how often the runs went through the rarely taken paths (snapshots,
//! compaction, pipelined clients, session eviction), and the last line is
//! `N passed, M failed`; the exit code is 0 exactly when nothing failed.

use crate::bugs::{bug_names, parse_bug};
use crate::plan::{Shape, SimMode};
use crate::sim::{run_seed_with, RunReport, SimOptions};
use pactdb_core::bugs::Bugs;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// One seed's result.
pub type SeedOutcome = RunReport;

/// Deterministic simulation of a whole pactdb cluster under faults.
#[derive(clap::Parser, Clone, Debug)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100)]
    pub seeds: u64,
    /// The first seed of the range.
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    /// Run just this seed, verbosely (for replaying a failure).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Switch on one of the bugs of `--list-bugs` in every node, to check
    /// that the checkers catch it.
    #[arg(long, value_name = "NAME")]
    pub inject_bug: Option<String>,
    /// List the bugs `--inject-bug` accepts.
    #[arg(long)]
    pub list_bugs: bool,
    /// Which replication modes the groups use: all passive, all active, or
    /// mixed (each group's mode drawn from the seed).
    #[arg(long, value_enum, default_value_t = SimMode::Mixed)]
    pub mode: SimMode,
}

/// Runs the command and returns the process exit code.
/// How many threads run seeds: every core.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The failing seeds of `reports` with their plans and violations, for a
/// test's failure message.
pub fn describe_failures(reports: &[&RunReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!("seed {} ({}):\n", r.seed, r.plan));
        for v in &r.violations {
            out.push_str(&format!("  {v}\n"));
        }
    }
    out
}

pub fn run_cli(args: SimArgs) -> i32 {
    if args.list_bugs {
        for name in bug_names() {
            println!("{name}");
        }
        return 0;
    }
    let bugs = match &args.inject_bug {
        None => Bugs::default(),
        Some(name) => match parse_bug(name) {
            Some(b) => b,
            None => {
                eprintln!("unknown bug {name:?}; --list-bugs shows the known ones");
                return 2;
            }
        },
    };
    let bug = args.inject_bug.as_deref();
    let mode = args.mode;
    let opts = SimOptions { bugs, shape: Shape { mode, voting: None }, diverge_one: false };
    crate::sim::quiet_panics();
    if let Some(seed) = args.seed {
        let report = run_seed_with(seed, opts, true);
        println!("seed {seed}: {}", report.plan);
        for line in &report.timeline {
            println!("  {line}");
        }
        println!(
            "seed {seed}: {} events, {} simulated ms, {} ops ({} succeeded, {} transactions committed), {} dissenting answers, trace hash {:016x}",
            report.events, report.sim_ms, report.ops, report.ops_ok, report.txns_committed, report.dissents, report.trace_hash
        );
        println!("{}", coverage_line(std::slice::from_ref(&report)));
        print_failure(&report, bug, mode);
        let failed = usize::from(!report.passed());
        println!("{} passed, {failed} failed", 1 - failed);
        return i32::from(failed > 0);
    }
    let started = Instant::now();
    let threads = all_cores();
    let reports = run_seeds_with(args.first_seed, args.seeds, opts, threads, false, |r| print_failure(r, bug, mode));
    let failed = reports.iter().filter(|r| !r.passed()).count();
    let secs = started.elapsed().as_secs_f64();
    let txns: usize = reports.iter().map(|r| r.txns_committed).sum();
    println!(
        "{} seeds in {secs:.1}s on {threads} threads ({:.1} seeds/s), {txns} transactions committed",
        reports.len(),
        reports.len() as f64 / secs.max(1e-9)
    );
    println!("{}", coverage_line(&reports));
    println!("{} passed, {failed} failed", reports.len() - failed);
    i32::from(failed > 0)
}

/// One line of what the runs covered: each count summed over the runs, with
/// how many runs reached it (so a change that quietly stops reaching a path
/// shows as a zero).
pub fn coverage_line(reports: &[RunReport]) -> String {
    let total = reports.iter().fold(crate::sim::Coverage::default(), |a, r| a.add(&r.coverage));
    let seeds = |f: fn(&crate::sim::Coverage) -> u64| reports.iter().filter(|r| f(&r.coverage) > 0).count();
    format!(
        "coverage: snapshots sent {} ({} seeds), installed {} ({} seeds); entries compacted {} ({} seeds); \
         most requests in flight per client {} (pipelined in {} seeds); sessions evicted {} ({} seeds); \
         SessionExpired answers {} ({} seeds); leader hand-overs {} ({} seeds); reads served by backups {} ({} seeds); \
         replica moves started {} ({} seeds), admitted {}, finished {} ({} seeds); \
         nodes added {} ({} seeds), removed {} ({} seeds); config-member changes settled {} ({} seeds)",
        total.snapshots_sent,
        seeds(|c| c.snapshots_sent),
        total.snapshots_installed,
        seeds(|c| c.snapshots_installed),
        total.entries_compacted,
        seeds(|c| c.entries_compacted),
        total.max_in_flight,
        seeds(|c| u64::from(c.max_in_flight > 1)),
        total.sessions_evicted,
        seeds(|c| c.sessions_evicted),
        total.session_expired,
        seeds(|c| c.session_expired),
        total.handovers,
        seeds(|c| c.handovers),
        total.backup_reads,
        seeds(|c| c.backup_reads),
        total.moves_started,
        seeds(|c| c.moves_started),
        total.moves_admitted,
        total.moves_finished,
        seeds(|c| c.moves_finished),
        total.nodes_added,
        seeds(|c| c.nodes_added),
        total.nodes_removed,
        seeds(|c| c.nodes_removed),
        total.config_settles,
        seeds(|c| c.config_settles),
    )
}

/// The command that replays one seed.
pub fn replay_command(seed: u64, bug: Option<&str>, mode: SimMode) -> String {
    let mode = match mode {
        SimMode::Mixed => "",
        SimMode::Passive => " --mode passive",
        SimMode::Active => " --mode active",
    };
    match bug {
        Some(b) => format!("pactdb sim --seed {seed}{mode} --inject-bug {b}"),
        None => format!("pactdb sim --seed {seed}{mode}"),
    }
}

fn print_failure(report: &RunReport, bug: Option<&str>, mode: SimMode) {
    if report.passed() {
        return;
    }
    let mut text = format!("seed {} FAILED ({})\n", report.seed, report.plan);
    for v in &report.violations {
        text.push_str(&format!("  {v}\n"));
    }
    text.push_str(&format!("  replay: {}", replay_command(report.seed, bug, mode)));
    println!("{text}");
}

/// Runs seeds `first .. first + count` on `threads` threads and returns their
/// reports in seed order. `on_done` sees each report as it completes. With
/// `stop_at_failure`, no new seed starts once one failed; every seed below
/// the first failure still completes, so the lowest failing seed is exact.
pub fn run_seeds(
    first: u64,
    count: u64,
    bugs: Bugs,
    threads: usize,
    stop_at_failure: bool,
    on_done: impl Fn(&RunReport) + Sync,
) -> Vec<RunReport> {
    run_seeds_with(first, count, SimOptions::with_bugs(bugs), threads, stop_at_failure, on_done)
}

/// `run_seeds` with every option.
pub fn run_seeds_with(
    first: u64,
    count: u64,
    opts: SimOptions,
    threads: usize,
    stop_at_failure: bool,
    on_done: impl Fn(&RunReport) + Sync,
) -> Vec<RunReport> {
    let next = AtomicU64::new(first);
    let stop = AtomicBool::new(false);
    let end = first.saturating_add(count);
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let report = run_seed_with(seed, opts, false);
                if !report.passed() && stop_at_failure {
                    stop.store(true, Ordering::SeqCst);
                }
                on_done(&report);
                results.lock().expect("no thread panics while holding it").push(report);
            });
        }
    });
    let mut reports = results.into_inner().expect("threads finished");
    reports.sort_by_key(|r| r.seed);
    reports
}
