//! The simulator's acceptance tests for active groups, as issue 4 states
//! them: a clean run of active groups under the full fault mix passes,
//! `execute-before-stable` is caught within its first 1,000 seeds, and the
//! divergence demonstration: with one member of an active group whose state
//! silently goes wrong, a voting front end never returns a wrong value while
//! a first-answer front end does.
//!
//! They share the CI budget with `tests/sim.rs`, so each stops as early as
//! its claim allows. `PACTDB_SIM_SEEDS` raises the number of clean seeds.

use pactdb_core::bugs::Bugs;
use pactdb_sim::{all_cores, describe_failures, parse_bug, run_seeds_with, RunReport, Shape, SimMode, SimOptions};

fn active(bugs: Bugs) -> SimOptions {
    SimOptions { bugs, shape: Shape { mode: SimMode::Active, voting: None }, diverge_one: false }
}

#[test]
fn clean_runs_of_active_groups_under_the_full_fault_mix_pass() {
    let seeds = std::env::var("PACTDB_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(300);
    let reports = run_seeds_with(0, seeds, active(Bugs::default()), all_cores(), false, |_| {});
    assert_eq!(reports.len() as u64, seeds);
    let failed: Vec<&RunReport> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "{} of {seeds} clean active seeds failed:\n{}",
        failed.len(),
        describe_failures(&failed)
    );
    let ok: usize = reports.iter().map(|r| r.ops_ok).sum();
    assert!(ok > seeds as usize * 100, "only {ok} operations succeeded over {seeds} seeds");
    let dissents: usize = reports.iter().map(|r| r.dissents).sum();
    eprintln!("clean active: {ok} operations succeeded, {dissents} dissenting answers");
    // Healthy members execute the same requests in the same order: a voting
    // front end never sees them disagree.
    assert_eq!(dissents, 0, "healthy members of a voting group answered differently");
    // Every group of every seed was active: the plan says so.
    assert!(reports.iter().all(|r| !r.plan.contains("[\"[") && !r.plan.contains(", \"[")), "a passive group ran");
}

#[test]
fn execute_before_stable_is_caught_within_its_first_1000_seeds() {
    let bugs = parse_bug("execute-before-stable").expect("listed");
    assert!(bugs.execute_before_stable);
    let reports = run_seeds_with(0, 1_000, active(bugs), all_cores(), true, |_| {});
    let Some(first) = reports.iter().find(|r| !r.passed()) else {
        panic!("execute-before-stable was not caught in 1000 seeds");
    };
    let properties: Vec<&str> = first.violations.iter().map(|v| v.property).collect();
    eprintln!("execute-before-stable: first caught by seed {} ({properties:?})", first.seed);
}

/// Seeds of the divergence demonstration: every group active with three
/// members, voting as given, and one member of group 0 whose state silently
/// goes wrong (`SimOptions::diverge_one`: `Bugs::diverge_state` on that node
/// only). Convergence and durability leave that member's state out, as it
/// is expected to differ; the client history is checked as always.
fn diverged(voting: bool, seeds: u64, stop_at_failure: bool) -> Vec<RunReport> {
    let opts = SimOptions {
        bugs: Bugs::default(),
        shape: Shape { mode: SimMode::Active, voting: Some(voting) },
        diverge_one: true,
    };
    run_seeds_with(0, seeds, opts, all_cores(), stop_at_failure, |_| {})
}

/// A client was given the diverged member's value: the linearizability
/// checker found no place for a read of a value nobody wrote (the diverged
/// member appends `!` to every value it stores).
fn wrong_value_seen(r: &RunReport) -> bool {
    r.violations.iter().any(|v| v.property == "linearizability" && v.detail.contains("!\"@v"))
}

#[test]
fn a_voting_front_end_masks_a_diverged_member_and_a_first_answer_one_does_not() {
    // First answer: the diverged member's answer is sometimes the first to
    // arrive, and the client is told a value nobody wrote.
    let first_answer = diverged(false, 200, true);
    let caught = first_answer.iter().find(|r| !r.passed()).expect("a first-answer front end returned a wrong value");
    assert!(
        wrong_value_seen(caught),
        "seed {} failed, but not by a wrong value:\n{}",
        caught.seed,
        describe_failures(&[caught])
    );
    eprintln!("first answer: seed {} returned a wrong value: {}", caught.seed, caught.violations[0]);
    // Voting, same seeds and faults: every history stays linearizable.
    let voting = diverged(true, 100, false);
    let failed: Vec<&RunReport> = voting.iter().filter(|r| !r.passed()).collect();
    assert!(failed.is_empty(), "{} voting seeds failed:\n{}", failed.len(), describe_failures(&failed));
    let ok: usize = voting.iter().map(|r| r.ops_ok).sum();
    assert!(ok > 100 * 100, "only {ok} operations succeeded over 100 voting seeds");
    assert!(voting.iter().all(|r| r.plan.contains("voting")));
    // The divergence was real there too: the voting front ends outvoted
    // wrong answers (reported as dissent) rather than never seeing any.
    let dissents: usize = voting.iter().map(|r| r.dissents).sum();
    assert!(dissents > 0, "no voting front end ever saw a dissenting answer");
    eprintln!("voting: {} seeds linearizable, {dissents} dissenting answers outvoted", voting.len());
}
