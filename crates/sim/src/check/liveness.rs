//! Liveness: once every fault is healed, the cluster serves again. Every
//! operation invoked after the quiet phase has had `SETTLE_MS` to restore
//! views must succeed within `BOUND_MS`, and nothing invoked before the
//! clients stop may still be outstanding at the end. The same holds for
//! transactions: a commit sent after the settling time must be answered
//! (committed or aborted: an abort is an answer) within the bound. And
//! every transaction comes to an end, even one whose client crashed: at the
//! end no replica holds a transaction prepared, a key locked, or a
//! decision some participant has not acknowledged.
//!
//! A primary cut off from its peers while its clients still reach it (the
//! simulator's isolation phase, on an otherwise calm network) must not stall
//! its group for the partition's length: its lease lapses, it says it is cut
//! off, the backups elect a new primary, and front ends find it. Every
//! register operation in flight at the cut (invoked at most
//! `ISOLATION_IN_FLIGHT_MS` before it) or invoked while the partition lasts, and
//! until a while after it heals, completes within `ISOLATION_BOUND_MS` of
//! when it was invoked or the partition began, whichever is later.

use super::atomicity::name;
use super::{FinalReplica, Violation};
use crate::history::{History, Micros, Outcome, TxnResult};
use pactdb_core::types::{ClusterMap, Mode};

/// Time the quiet phase gives the cluster to restart, re-elect and re-admit
/// before operations must succeed promptly.
pub const SETTLE_MS: u64 = 3_000;
/// How long an operation invoked after `SETTLE_MS` may take.
pub const BOUND_MS: u64 = 2_000;
/// Clients stop invoking this long before the run ends.
pub const DRAIN_MS: u64 = 2_500;

/// How long a primary cut off from its peers may stall an operation: the
/// lease (60 ms), the backups' suspicion (100 ms plus up to 50 of jitter),
/// the view change, the new primary's wait for the old lease (100 ms from
/// the last ack), and a front end's attempt timeout (500 ms) for a request
/// that reached the old primary before its lease lapsed. The goal is one
/// second of unavailability.
pub const ISOLATION_BOUND_MS: u64 = 1_000;

/// An operation invoked at most this long before the cut counts as in
/// flight at the cut (and is bounded from it).
pub const ISOLATION_IN_FLIGHT_MS: u64 = 100;

const PROPERTY: &str = "liveness";

/// Bounds how long an isolated primary stalls operations (see the module
/// docs): every register operation invoked before the isolation phase ends
/// and still running when the partition began completes within the bound
/// of the later of its invocation and the partition's start. Transactions
/// are left out (their votes and locks may wait on the cut-off node's
/// coordinator for longer, by design), and so are reads of their accounts.
pub fn check_isolations(cluster: &ClusterMap, history: &History, isolations: &[super::Isolation]) -> Vec<Violation> {
    // Passive groups only: an active group in voting mode needs f+1
    // members' answers, and one still joining when its sequencer is cut
    // off leaves it without them until it is admitted.
    let passive = |key: &[u8]| {
        let g = cluster.group_of(key);
        cluster.groups.iter().any(|s| s.id == g && s.mode == Mode::Passive)
    };
    let mut v = Vec::new();
    for iso in isolations {
        for o in history.ops.iter().filter(|o| o.txn.is_none()) {
            let register = o.op.key().is_some_and(|k| k.starts_with(b"k") && passive(k));
            // Done before the cut, or already stuck well before it (on a calm
            // network an operation is answered within milliseconds): not
            // the partition's doing (seed 869: a read invoked 500 ms before
            // the cut, while the group was still forming).
            let before = o.complete_us.is_some_and(|done| done < iso.start)
                || o.invoke_us + ISOLATION_IN_FLIGHT_MS * 1_000 < iso.start;
            // Invoked late enough that its bound ends after the calm phase:
            // other faults may have struck it.
            let late_invoke = o.invoke_us + ISOLATION_BOUND_MS * 1_000 > iso.until;
            if !register || before || late_invoke {
                continue;
            }
            let from = o.invoke_us.max(iso.start);
            let took = o.complete_us.map(|done| done - from);
            if took.is_some_and(|t| t <= ISOLATION_BOUND_MS * 1_000) {
                continue;
            }
            let took = took.map_or("never completed".to_string(), |t| format!("took {}ms", t / 1_000));
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "op #{} ({:?}) invoked at {}us, with node {} cut off from its peers from {}us to {}us, {took}",
                    o.id, o.op, o.invoke_us, iso.node, iso.start, iso.healed
                ),
            ));
            if v.len() >= 3 {
                return v;
            }
        }
    }
    v
}

pub fn check(history: &History, finals: &[FinalReplica], heal_at: Micros, end_at: Micros) -> Vec<Violation> {
    let mut v = Vec::new();
    let settled = heal_at + SETTLE_MS * 1_000;
    let last_invoke = end_at.saturating_sub(DRAIN_MS * 1_000);
    // A request told its session expired got a prompt answer: its session
    // was evicted from a table that holds fewer sessions than there are
    // clients (as some seeds make it). That is the promised refusal, not a
    // stall; the front end goes on in a new session.
    let expired = pactdb_core::wire::ClientError::SessionExpired.to_string();
    let answered = |e: &str| e.contains(&expired);
    for o in &history.ops {
        if o.invoke_us > last_invoke {
            continue;
        }
        let late = |what: &str| {
            Violation::new(PROPERTY, format!("op #{} ({:?}) invoked at {}us {what}", o.id, o.op, o.invoke_us))
        };
        match (&o.outcome, o.complete_us) {
            (Outcome::Pending, _) => v.push(late("never completed")),
            (Outcome::Failed(e) | Outcome::Refused(e), Some(_)) if o.invoke_us >= settled && !answered(e) => {
                v.push(late(&format!("after the cluster healed failed: {e}")))
            }
            (Outcome::Ok(_), Some(done)) if o.invoke_us >= settled && done - o.invoke_us > BOUND_MS * 1_000 => {
                v.push(late(&format!("after the cluster healed took {}ms", (done - o.invoke_us) / 1_000)))
            }
            _ => {}
        }
        if v.len() >= 3 {
            break;
        }
    }
    for t in &history.txns {
        if t.invoke_us > last_invoke || v.len() >= 6 {
            continue;
        }
        let late = |what: String| Violation::new(PROPERTY, format!("{} {what}", name(t)));
        match (&t.outcome, t.complete_us) {
            (TxnResult::Pending, _) => v.push(late("never completed".to_string())),
            (TxnResult::Unknown { error } | TxnResult::Refused { error }, _)
                if t.invoke_us >= settled && !answered(error) =>
            {
                v.push(late(format!("after the cluster healed failed: {error}")))
            }
            (TxnResult::Committed { .. } | TxnResult::Aborted { .. }, Some(done))
                if t.invoke_us >= settled && done - t.invoke_us > BOUND_MS * 1_000 =>
            {
                v.push(late(format!("after the cluster healed took {}ms", (done - t.invoke_us) / 1_000)))
            }
            _ => {}
        }
    }
    for f in finals {
        if !f.prepared.is_empty() || f.locks > 0 || !f.decisions.is_empty() {
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "at the end node {} (group {}) still holds prepared transactions {:?}, {} locked keys and \
                     unfinished decisions {:?}",
                    f.node,
                    f.group,
                    f.prepared.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                    f.locks,
                    f.decisions.iter().map(|t| t.to_string()).collect::<Vec<_>>()
                ),
            ));
        }
    }
    v.truncate(9);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::state::op::{Op, OpResult};

    #[test]
    fn rejects_an_operation_stuck_after_heal() {
        let heal = 10_000_000;
        let end = heal + 8_000_000;
        let mut h = History::default();
        let get = || Op::Get { key: b"k".to_vec() };
        // Failing during the faults is fine.
        let a = h.invoke(0, get(), 1_000);
        h.complete(a, 4_000_000, Outcome::Failed("timed out".into()));
        let b = h.invoke(0, get(), heal + 4_000_000);
        h.complete(b, heal + 4_001_000, Outcome::Ok(OpResult::Value(None)));
        assert_eq!(check(&h, &[], heal, end), vec![]);
        h.invoke(1, get(), heal + 4_500_000);
        assert_eq!(check(&h, &[], heal, end).len(), 1, "still pending at the end");
    }

    fn cluster() -> ClusterMap {
        use pactdb_core::types::GroupSpec;
        let group = GroupSpec { id: 0, mode: Mode::Passive, placement: vec![1, 2, 3], min_members: 1, voting: false };
        ClusterMap::new(Default::default(), vec![group])
    }

    #[test]
    fn rejects_an_operation_stalled_by_an_isolated_primary() {
        let iso = crate::check::Isolation { node: 1, start: 10_000_000, healed: 13_000_000, until: 15_000_000 };
        let put = || Op::Put { key: b"k1".to_vec(), value: b"v".to_vec() };
        let mut h = History::default();
        // Done before the partition: not its business.
        let a = h.invoke(0, put(), 1_000_000);
        h.complete(a, 1_001_000, Outcome::Ok(OpResult::Written { version: 1 }));
        // Stuck long before it: another cause.
        h.invoke(6, put(), 9_000_000);
        // In flight when it began: bounded from its start.
        let b = h.invoke(1, put(), 9_950_000);
        h.complete(b, 10_900_000, Outcome::Ok(OpResult::Written { version: 2 }));
        // Invoked during it, answered (even with a failure) in time.
        let c = h.invoke(2, put(), 11_000_000);
        h.complete(c, 11_500_000, Outcome::Failed("refused".into()));
        // A transaction's account: left out.
        let d = h.invoke(3, Op::Get { key: b"acct-1".to_vec() }, 11_000_000);
        h.complete(d, 14_000_000, Outcome::Ok(OpResult::Value(None)));
        let cluster = cluster();
        assert_eq!(check_isolations(&cluster, &h, &[iso]), vec![]);
        let e = h.invoke(4, put(), 12_000_000);
        h.complete(e, 13_100_000, Outcome::Ok(OpResult::Written { version: 3 }));
        let v = check_isolations(&cluster, &h, &[iso]);
        assert!(v.len() == 1 && v[0].detail.contains("took 1100ms"), "{v:?}");
        // Never answered at all.
        h.invoke(5, put(), 12_500_000);
        assert_eq!(check_isolations(&cluster, &h, &[iso]).len(), 2);
    }

    #[test]
    fn rejects_a_transaction_left_unfinished() {
        use crate::history::TxnKind;
        use pactdb_core::replica::Role;
        use pactdb_core::state::txn::{TxnId, TxnRequest};
        let heal = 10_000_000;
        let end = heal + 8_000_000;
        let txn = TxnId { client: 1, session: 0, seq: 1, home: 0 };
        let mut h = History::default();
        let t = h.begin_txn(0, TxnKind::Transfer, txn, vec![], TxnRequest::default(), 1_000);
        // Its client crashed: it never learns the outcome, which is fine.
        h.complete_txn(t, None, TxnResult::Abandoned);
        let mut replica = FinalReplica {
            node: 1,
            group: 0,
            role: Role::Backup,
            view: None,
            commit: 5,
            applied: 5,
            digest: 0,
            kv: vec![],
            prepared: vec![],
            locks: 0,
            decisions: vec![],
        };
        assert_eq!(check(&h, &[replica.clone()], heal, end), vec![]);
        replica.prepared.push(txn);
        replica.locks = 2;
        let v = check(&h, &[replica], heal, end);
        assert!(v.len() == 1 && v[0].detail.contains("still holds prepared"), "{v:?}");
        // A commit sent after the cluster settled must be answered.
        h.begin_txn(0, TxnKind::Transfer, txn, vec![], TxnRequest::default(), heal + 4_000_000);
        assert_eq!(check(&h, &[], heal, end).len(), 1, "still pending at the end");
    }
}
