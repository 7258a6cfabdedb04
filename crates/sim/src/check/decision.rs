//! One decision: every group applies the decision its transaction's
//! coordinator logged, and only once it is logged.
//!
//! From the two-phase commit entries the observer saw committed: the home
//! group's log holds at most one `Decide` per transaction (none anywhere
//! else), whose commit flag agrees with the outcome it records; a decision
//! to commit comes only after every participant group committed its
//! `Prepare`, since a participant votes yes only then (an active home group
//! prepares its own part too; a passive one's primary checks and locks it in
//! memory, and its decision carries the writes); every `Resolve` a
//! participant group applies matches the decision and comes after it, so no
//! group commits or aborts on a decision that was not made, or not yet
//! durable; and the client of a transaction spanning groups is told what the
//! decision says. The one exception is a consistent read: it writes nothing
//! and logs no decision (its coordinator answers with the values once every
//! group read them), and its groups release their read locks with an abort
//! `Resolve`; so for a transaction every group of which prepared a
//! read-only part, an abort `Resolve` without a decision is allowed, and
//! what its client was told is judged by the bank and serializability
//! checkers (its values), not here. The other is a transaction whose
//! session the home group forgot before any decision was logged: nothing can
//! decide it any more (its commit is refused as expired), and its prepared
//! participants are told abort without a record; an abort `Resolve` with no
//! decision anywhere is allowed once the home group's eviction mark passed
//! the transaction's session start. An entry's time is when any replica was
//! first seen committing it.
//!
//! Concluding that an entry is missing needs the whole log: if some of a
//! group's committed entries were never seen (compacted before any replica
//! was observed holding them), the report says so rather than passing.

use super::atomicity::name;
use super::Violation;
use crate::history::{History, Micros, TxnResult};
use crate::observe::{Observations, TxnEntry};
use pactdb_core::state::txn::TxnId;
use pactdb_core::types::{ClusterMap, GroupId, Index, Mode};
use std::collections::{BTreeMap, BTreeSet};

const PROPERTY: &str = "one decision";
/// Violations reported per run; the first few tell the story.
const MAX_REPORTED: usize = 8;

/// A decision as logged: where, when, and what.
#[derive(Clone, Debug)]
struct Decided {
    index: Index,
    at: Micros,
    commit: bool,
    participants: Vec<GroupId>,
}

/// What the committed logs hold of one transaction.
#[derive(Default)]
struct Logged {
    decisions: Vec<Decided>,
    /// (group, index, time, commit) of every `Resolve`.
    resolves: Vec<(GroupId, Index, Micros, bool)>,
    /// The first committed `Prepare` of each group, and when.
    prepares: BTreeMap<GroupId, (Index, Micros)>,
    /// Every prepare seen was a consistent read's (read-only) part.
    consistent_read: bool,
}

pub fn check(cluster: &ClusterMap, history: &History, obs: &Observations) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut txns: BTreeMap<TxnId, Logged> = BTreeMap::new();
    for (&(g, i), l) in &obs.txn_log {
        let t = txns.entry(l.entry.txn()).or_default();
        match &l.entry {
            TxnEntry::Prepare { consistent_read, .. } => {
                if t.prepares.is_empty() {
                    t.consistent_read = *consistent_read;
                }
                t.consistent_read &= *consistent_read;
                t.prepares.entry(g).or_insert((i, l.at));
            }
            TxnEntry::Resolve { commit, writes, .. } => {
                // A consistent read's release writes nothing; one that wrote
                // is no release.
                if !writes.is_empty() {
                    t.consistent_read = false;
                }
                t.resolves.push((g, i, l.at, *commit))
            }
            TxnEntry::Decide { txn, commit, outcome_committed, participants, .. } => {
                if g != txn.home {
                    v.push(Violation::new(
                        PROPERTY,
                        format!(
                            "group {g} logged a decision on {txn} at index {i}, but its home is group {}",
                            txn.home
                        ),
                    ));
                    continue;
                }
                if commit != outcome_committed {
                    v.push(Violation::new(
                        PROPERTY,
                        format!("the decision on {txn} at index {i} says commit {commit}, but records the outcome committed {outcome_committed}"),
                    ));
                }
                t.decisions.push(Decided { index: i, at: l.at, commit: *commit, participants: participants.clone() });
            }
        }
    }
    let unseen = |g: GroupId| match obs.unseen_committed(g) {
        0 => String::new(),
        n => format!(" ({n} committed entries of group {g} were never seen, so it may be among them)"),
    };
    for (txn, t) in &txns {
        let home = txn.home;
        if t.decisions.len() > 1 {
            let all: Vec<String> =
                t.decisions.iter().map(|d| format!("commit {} at index {}", d.commit, d.index)).collect();
            v.push(Violation::new(PROPERTY, format!("group {home} decided {txn} more than once: {}", all.join(", "))));
        }
        let decision = t.decisions.first();
        for &(g, i, at, commit) in &t.resolves {
            let did = if commit { "commit" } else { "abort" };
            // A consistent read logs no decision: its groups release their
            // shared locks with an abort on the coordinator's word, which
            // any abort logged for its id later (a presumed abort, a retry
            // that timed out) agrees with.
            if !commit && t.consistent_read && t.prepares.contains_key(&g) {
                continue;
            }
            // The home group forgot the transaction's session before this
            // abort, and never logged a decision: none can be logged any
            // more (its commit would be told `SessionExpired`), so a prepared
            // participant asking is told abort without a record (logging one
            // each time the record was forgotten again would decide twice).
            if !commit && decision.is_none() && obs.session_forgotten(home, txn.session, at) {
                continue;
            }
            match decision {
                None => v.push(Violation::new(
                    PROPERTY,
                    format!("group {g} applied the {did} of {txn} at index {i} ({at}us), but its coordinator never logged a decision{}", unseen(home)),
                )),
                Some(d) if d.commit != commit => v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "group {g} applied the {did} of {txn} at index {i} ({at}us), but its coordinator decided commit {} at index {} ({}us)",
                        d.commit, d.index, d.at
                    ),
                )),
                Some(d) if at < d.at => v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "group {g} applied the {did} of {txn} at {at}us (index {i}), before its coordinator's decision was committed at {}us (index {})",
                        d.at, d.index
                    ),
                )),
                Some(_) => {}
            }
        }
        let Some(d) = decision.filter(|d| d.commit) else { continue };
        // A passive home group's part was checked and locked by its primary,
        // not prepared through its log.
        let home_prepares = cluster.groups.iter().any(|s| s.id == home && s.mode == Mode::Active);
        let prepared_groups = d.participants.iter().copied().chain(home_prepares.then_some(home));
        for g in prepared_groups.collect::<BTreeSet<GroupId>>() {
            match t.prepares.get(&g) {
                None => v.push(Violation::new(
                    PROPERTY,
                    format!("{txn} was decided to commit at index {} ({}us), but group {g} never committed its prepare{}", d.index, d.at, unseen(g)),
                )),
                Some(&(i, at)) if at > d.at => v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "{txn} was decided to commit at {}us (index {}), before group {g} committed its prepare at {at}us (index {i})",
                        d.at, d.index
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    for t in &history.txns {
        let parts = t.request.split(cluster, 0);
        if parts.len() < 2 && t.request.reads.is_empty() {
            continue;
        }
        if !t.request.reads.is_empty() {
            // A consistent read: no decision is logged for it.
            continue;
        }
        let decision = txns.get(&t.txn).and_then(|l| l.decisions.first());
        // A presumed abort names no participants (whoever is prepared asks);
        // a decision to commit names every group holding a part.
        if let Some(d) = decision.filter(|d| d.commit) {
            let expected: Vec<GroupId> = parts.keys().copied().filter(|g| *g != t.txn.home).collect();
            if d.participants != expected {
                v.push(Violation::new(
                    PROPERTY,
                    format!("{}: its decision names participants {:?}, but its parts are in groups {expected:?} besides the home group", name(t), d.participants),
                ));
            }
        }
        let told = match &t.outcome {
            TxnResult::Committed { .. } => true,
            TxnResult::Aborted { .. } => false,
            _ => continue,
        };
        match decision {
            None => v.push(Violation::new(
                PROPERTY,
                format!(
                    "{}: its client was told {:?}, but its coordinator never logged a decision{}",
                    name(t),
                    t.outcome,
                    unseen(t.txn.home)
                ),
            )),
            Some(d) if d.commit != told => v.push(Violation::new(
                PROPERTY,
                format!(
                    "{}: its client was told {:?}, but its coordinator decided commit {} at index {}",
                    name(t),
                    t.outcome,
                    d.commit,
                    d.index
                ),
            )),
            Some(_) => {}
        }
    }
    v.truncate(MAX_REPORTED);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::TxnLogged;

    fn log(obs: &mut Observations, group: GroupId, index: Index, at: u64, entry: TxnEntry) {
        obs.txn_log.insert((group, index), TxnLogged { entry, node: 1, at });
    }

    fn cluster() -> ClusterMap {
        use pactdb_core::types::{GroupSpec, Mode};
        ClusterMap::new(
            Default::default(),
            (0..2)
                .map(|id| GroupSpec { id, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false })
                .collect(),
        )
    }

    const T: TxnId = TxnId { client: 7, session: 0, seq: 3, home: 0 };

    /// A clean commit of `T` between groups 0 (home) and 1.
    fn clean() -> Observations {
        let mut obs = Observations::default();
        log(&mut obs, 0, 10, 200, TxnEntry::Prepare { txn: T, consistent_read: false });
        log(&mut obs, 1, 20, 210, TxnEntry::Prepare { txn: T, consistent_read: false });
        let decide =
            TxnEntry::Decide { txn: T, commit: true, outcome_committed: true, participants: vec![1], writes: vec![] };
        log(&mut obs, 0, 11, 300, decide);
        log(&mut obs, 1, 21, 400, TxnEntry::Resolve { txn: T, commit: true, writes: vec![] });
        obs
    }

    #[test]
    fn passes_a_decision_every_group_applied_after_it_was_made() {
        assert_eq!(check(&cluster(), &History::default(), &clean()), vec![]);
    }

    #[test]
    fn rejects_a_commit_without_a_decision_and_a_resolution_against_it() {
        let mut obs = clean();
        obs.txn_log.remove(&(0, 11));
        let v = check(&cluster(), &History::default(), &obs);
        assert!(v[0].detail.contains("never logged a decision"), "{v:?}");
        let mut obs = clean();
        log(&mut obs, 1, 21, 400, TxnEntry::Resolve { txn: T, commit: false, writes: vec![] });
        let v = check(&cluster(), &History::default(), &obs);
        assert!(v[0].detail.contains("applied the abort") && v[0].detail.contains("decided commit true"), "{v:?}");
        assert!(v.iter().all(|v| v.property == PROPERTY));
    }

    #[test]
    fn rejects_acting_on_a_decision_or_a_vote_before_it_was_durable() {
        let mut obs = clean();
        log(&mut obs, 1, 21, 250, TxnEntry::Resolve { txn: T, commit: true, writes: vec![] });
        let v = check(&cluster(), &History::default(), &obs);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("before its coordinator's decision was committed"), "{v:?}");
        let mut obs = clean();
        log(&mut obs, 1, 20, 350, TxnEntry::Prepare { txn: T, consistent_read: false });
        let v = check(&cluster(), &History::default(), &obs);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("before group 1 committed its prepare"), "{v:?}");
    }

    #[test]
    fn rejects_two_decisions() {
        let mut obs = clean();
        let abort =
            TxnEntry::Decide { txn: T, commit: false, outcome_committed: false, participants: vec![], writes: vec![] };
        log(&mut obs, 0, 30, 900, abort);
        let v = check(&cluster(), &History::default(), &obs);
        assert!(v.iter().any(|v| v.detail.contains("more than once")), "{v:?}");
    }
}
