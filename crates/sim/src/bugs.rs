//! The names of the bugs the simulator can inject, and their mapping onto the
//! core's `Bugs` struct. This is the only place outside the core that builds
//! a `Bugs` value other than the default; no flag, environment variable or
//! config of a node reaches it. Every node runs with the injected bug,
//! except `diverge-state`, which models one faulty member (see
//! `sim::World::bugs_for`).

use pactdb_core::bugs::Bugs;

/// Every injectable bug, by its command-line name. `execute-before-stable`,
/// `diverge-state` and `rerun-retried-read` concern active groups only; the
/// six after them concern two-phase commit; `install-incomplete-snapshot`
/// needs a snapshot stream that loses a chunk; `config-two-members-at-once`
/// needs a seed that adds nodes (`MembershipPlan`).
const BUGS: [&str; 26] = [
    "reply-before-replicated",
    "refuse-executed-write",
    "ack-before-fsync",
    "promote-without-cas",
    "skip-dedup",
    "forget-evicted-session",
    "read-without-lease",
    "lease-checked-at-batch-start",
    "keep-divergent-suffix",
    "execute-before-stable",
    "diverge-state",
    "rerun-retried-read",
    "commit-without-all-votes",
    "decide-before-durable",
    "vote-before-prepared-durable",
    "release-locks-at-prepare",
    "presume-commit",
    "abort-without-record",
    "install-incomplete-snapshot",
    "backup-read-ignores-index",
    "session-read-ignores-token",
    "stale-read-past-bound",
    "drop-handed-token",
    "fifo-ignores-order",
    "admit-before-caught-up",
    "config-two-members-at-once",
];

/// The names accepted by `--inject-bug`, in a stable order.
pub fn bug_names() -> &'static [&'static str] {
    &BUGS
}

/// The `Bugs` value for one named bug, or `None` for an unknown name.
pub fn parse_bug(name: &str) -> Option<Bugs> {
    let mut bugs = Bugs::default();
    match name {
        "reply-before-replicated" => bugs.reply_before_replicated = true,
        "refuse-executed-write" => bugs.refuse_executed_write = true,
        "ack-before-fsync" => bugs.ack_before_fsync = true,
        "promote-without-cas" => bugs.promote_without_cas = true,
        "skip-dedup" => bugs.skip_dedup = true,
        "forget-evicted-session" => bugs.forget_evicted_session = true,
        "read-without-lease" => bugs.read_without_lease = true,
        "lease-checked-at-batch-start" => bugs.lease_checked_at_batch_start = true,
        "keep-divergent-suffix" => bugs.keep_divergent_suffix = true,
        "execute-before-stable" => bugs.execute_before_stable = true,
        "diverge-state" => bugs.diverge_state = true,
        "rerun-retried-read" => bugs.rerun_retried_read = true,
        "commit-without-all-votes" => bugs.commit_without_all_votes = true,
        "decide-before-durable" => bugs.decide_before_durable = true,
        "vote-before-prepared-durable" => bugs.vote_before_prepared_durable = true,
        "release-locks-at-prepare" => bugs.release_locks_at_prepare = true,
        "presume-commit" => bugs.presume_commit = true,
        "abort-without-record" => bugs.abort_without_record = true,
        "install-incomplete-snapshot" => bugs.install_incomplete_snapshot = true,
        "backup-read-ignores-index" => bugs.backup_read_ignores_index = true,
        "session-read-ignores-token" => bugs.session_read_ignores_token = true,
        "stale-read-past-bound" => bugs.stale_read_past_bound = true,
        "drop-handed-token" => bugs.drop_handed_token = true,
        "fifo-ignores-order" => bugs.fifo_ignores_order = true,
        "admit-before-caught-up" => bugs.admit_before_caught_up = true,
        "config-two-members-at-once" => bugs.config_two_members_at_once = true,
        _ => return None,
    }
    Some(bugs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_to_a_distinct_bug() {
        let all: Vec<Bugs> = bug_names().iter().map(|n| parse_bug(n).expect("known")).collect();
        for (i, a) in all.iter().enumerate() {
            assert_ne!(*a, Bugs::default());
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert!(parse_bug("no-such-bug").is_none());
    }
}
