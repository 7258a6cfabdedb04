//! The simulator's acceptance tests, as the issue states them: a clean run
//! of the full fault mix passes (transactions included), every injectable
//! bug is caught within its first 1,000 seeds by the property it breaks,
//! and a seed replays with the same trace hash.
//!
//! They share the CI budget, so each stops as early as its claim allows.
//! `PACTDB_SIM_SEEDS` raises the number of clean seeds for a longer run.

use pactdb_core::bugs::Bugs;
use pactdb_sim::{all_cores, bug_names, coverage_line, describe_failures, parse_bug, run_seed, run_seeds, RunReport};

#[test]
fn clean_runs_of_the_full_fault_mix_pass() {
    let seeds = std::env::var("PACTDB_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let reports = run_seeds(0, seeds, Bugs::default(), all_cores(), false, |_| {});
    assert_eq!(reports.len() as u64, seeds);
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{} of {seeds} clean seeds failed:\n{}", failed.len(), describe_failures(&failed));
    // The runs did real work: operations completed under faults, and
    // transactions committed.
    let ok: usize = reports.iter().map(|r| r.ops_ok).sum();
    assert!(ok > seeds as usize * 100, "only {ok} operations succeeded over {seeds} seeds");
    let txns: usize = reports.iter().map(|r| r.txns_committed).sum();
    assert!(txns > seeds as usize * 50, "only {txns} transactions committed over {seeds} seeds");
    // Disks were compacted into checkpoints, and nodes restarted from them.
    let compactions: usize = reports.iter().map(|r| r.compactions).sum();
    let restarts: usize = reports.iter().map(|r| r.restarts_from_checkpoint).sum();
    assert!(compactions > seeds as usize, "only {compactions} compactions over {seeds} seeds");
    assert!(restarts > seeds as usize / 10, "only {restarts} restarts from a checkpoint over {seeds} seeds");
    // Members behind were caught up by streamed snapshots, over a network
    // that loses chunks (a refused chunk is a resumption).
    let chunks: usize = reports.iter().map(|r| r.snapshot_chunks).sum();
    let refused: usize = reports.iter().map(|r| r.snapshot_chunks_refused).sum();
    let installed: usize = reports.iter().map(|r| r.snapshots_installed).sum();
    eprintln!("snapshot streams over {seeds} seeds: {chunks} chunks sent, {refused} refused, {installed} installed");
    assert!(installed > 0 && chunks > installed, "{chunks} chunks made {installed} snapshots");
}

/// The runs reach the paths a small healthy cluster rarely takes: logs
/// compacted and members caught up by snapshot, clients with many requests
/// in flight, sessions evicted from the exactly-once tables and retries told
/// `SessionExpired`, leaders handed over by `transfer-leader`, replicas
/// moved by `move-replica` (admitted and the old member dropped), nodes
/// added and removed with the config store's members settling. Each is
/// switched on by a share of the seeds, so a few
/// dozen seeds reach all of them; a change that quietly stops reaching one
/// fails here.
#[test]
fn the_runs_reach_compaction_snapshots_pipelining_session_eviction_and_backup_reads() {
    let reports = run_seeds(0, 40, Bugs::default(), all_cores(), false, |_| {});
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{}", describe_failures(&failed));
    let line = coverage_line(&reports);
    let reached = |f: fn(&pactdb_sim::Coverage) -> u64| reports.iter().filter(|r| f(&r.coverage) > 0).count();
    assert!(reached(|c| c.snapshots_sent) > 0, "{line}");
    assert!(reached(|c| c.snapshots_installed) > 0, "{line}");
    assert!(reached(|c| c.entries_compacted) > 0, "{line}");
    assert!(reached(|c| u64::from(c.max_in_flight >= 4)) > 0, "{line}");
    assert!(reached(|c| c.sessions_evicted) > 0, "{line}");
    assert!(reached(|c| c.session_expired) > 0, "{line}");
    assert!(reached(|c| c.handovers) > 0, "{line}");
    assert!(reached(|c| c.backup_reads) > 0, "{line}");
    assert!(reached(|c| c.moves_finished) > 0, "{line}");
    // Nodes added and removed while faults were on, and the config store's
    // members changed (and settled) with them.
    assert!(reached(|c| c.nodes_added) > 0, "{line}");
    assert!(reached(|c| c.nodes_removed) > 0, "{line}");
    assert!(reached(|c| c.config_settles) > 0, "{line}");
}

/// The property each bug breaks: the checker meant for it must catch it,
/// not merely some other failure (a run cut short as "bounded work", or a
/// checker that trips on a side effect).
fn meant_for(bug: &str) -> &'static str {
    match bug {
        // The primary answers before its backups hold the entry; a crash
        // of the primary then loses an acknowledged write.
        "reply-before-replicated" => "no acknowledged write lost",
        // The client is told a write that ran never did.
        "refuse-executed-write" => "linearizability",
        "ack-before-fsync" => "durable before ack",
        "promote-without-cas" => "one leader per epoch",
        // A retried write runs again: its value appears at two versions.
        "skip-dedup" => "exactly-once",
        "read-without-lease" => "no read without lease",
        "keep-divergent-suffix" => "replicas converge",
        // A member executes an entry the next sequencer replaces.
        "execute-before-stable" => "replicas converge",
        "diverge-state" => "replicas converge",
        // A read leaves a stalled primary after its lease ran out, and a
        // newer primary committed meanwhile.
        "lease-checked-at-batch-start" => "no read without lease",
        // Members answer a retried read from two executions.
        "rerun-retried-read" => "agreement",
        // A retry whose session was evicted runs again: its request id is
        // committed twice.
        "forget-evicted-session" => "exactly-once",
        // A participant that voted no (or never prepared) is missing.
        "commit-without-all-votes" => "atomicity",
        // A participant applies a decision before it is committed.
        "decide-before-durable" => "one decision",
        // A commit is decided before a participant's prepare is committed.
        "vote-before-prepared-durable" => "one decision",
        // Two transactions read and overwrite the same version.
        "release-locks-at-prepare" => "strict serializability",
        // A participant commits what its coordinator never decided.
        "presume-commit" => "one decision",
        // A participant aborts on a decision its coordinator never logged.
        "abort-without-record" => "one decision",
        // A member installs a snapshot stream before its pairs arrived: its
        // state lacks keys the others hold.
        "install-incomplete-snapshot" => "replicas converge",
        // A backup answers a linearizable read from its state, which lags
        // the primary's commit by up to a heartbeat.
        "backup-read-ignores-index" => "linearizability",
        // A client reads from a backup that has not applied its write yet.
        "session-read-ignores-token" => "session guarantees",
        // A node moved in (or a dropped member rejoining) is admitted
        // before it caught up, and takes over lacking committed entries.
        "admit-before-caught-up" => "a new primary holds every committed entry",
        // A backup cut off from its primary answers from an old state.
        "stale-read-past-bound" => "staleness bound",
        // A token handed over is dropped: the read need not see the
        // giver's writes.
        "drop-handed-token" => "causal order",
        // A pipelined write that overtook an earlier one of its session on
        // the simulated network (or across a failover) is applied first.
        "fifo-ignores-order" => "fifo",
        // A second node joins the config store's members before the first
        // one's change settled.
        "config-two-members-at-once" => "config members change one at a time",
        other => panic!("bug {other} has no property meant to catch it: add it here"),
    }
}

#[test]
fn every_injected_bug_is_caught_within_its_first_1000_seeds_by_the_property_meant_for_it() {
    for &name in bug_names() {
        let bugs = parse_bug(name).expect("listed bugs parse");
        let meant = meant_for(name);
        let mut first_failure: Option<(u64, Vec<&'static str>)> = None;
        let mut caught = None;
        // Seeds run a batch at a time, one per core, until one fails by the
        // property meant for the bug.
        let batch = all_cores() as u64;
        let mut start = 0;
        while caught.is_none() && start < 1_000 {
            let reports = run_seeds(start, batch.min(1_000 - start), bugs, all_cores(), false, |_| {});
            for r in reports.iter().filter(|r| !r.passed()) {
                let mut properties: Vec<&str> = r.violations.iter().map(|v| v.property).collect();
                properties.dedup();
                first_failure.get_or_insert((r.seed, properties.clone()));
                if properties.contains(&meant) {
                    caught = Some((r.seed, properties));
                    break;
                }
            }
            start += batch;
        }
        let Some((seed, properties)) = caught else {
            panic!("bug {name} was not caught by {meant} in 1000 seeds (first failure: {first_failure:?})");
        };
        eprintln!("{name}: caught by {meant} at seed {seed} ({properties:?}); first failure {first_failure:?}");
    }
}

#[test]
fn a_failing_seed_replays_with_the_same_trace_hash() {
    let bugs = parse_bug("skip-dedup").expect("known bug");
    let reports = run_seeds(0, 1_000, bugs, all_cores(), true, |_| {});
    let found = reports.iter().find(|r| !r.passed()).expect("skip-dedup is caught");
    // Replayed twice, once verbosely as `pactdb sim --seed S` does.
    for verbose in [false, true] {
        let again = run_seed(found.seed, bugs, verbose);
        assert_eq!(again.trace_hash, found.trace_hash, "seed {} (verbose {verbose}) replayed differently", found.seed);
        assert_eq!(again.violations, found.violations);
        assert_eq!((again.events, again.ops), (found.events, found.ops));
    }
    // A different seed is a different run.
    let other = run_seed(found.seed + 1, bugs, false);
    assert_ne!(other.trace_hash, found.trace_hash);
}
