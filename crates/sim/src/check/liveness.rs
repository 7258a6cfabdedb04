//! Liveness: once every fault is healed, the cluster serves again. Every
//! operation invoked after the quiet phase has had `SETTLE_MS` to restore
//! views must succeed within `BOUND_MS`, and nothing invoked before the
//! clients stop may still be outstanding at the end. The same holds for
//! transactions: a commit sent after the settling time must be answered
//! (committed or aborted: an abort is an answer) within the bound. And
//! every transaction comes to an end, even one whose client crashed: at the
//! end no replica holds a transaction prepared, a key locked, or a
//! decision some participant has not acknowledged.

use super::atomicity::name;
use super::{FinalReplica, Violation};
use crate::history::{History, Micros, Outcome, TxnResult};

/// Time the quiet phase gives the cluster to restart, re-elect and re-admit
/// before operations must succeed promptly.
pub const SETTLE_MS: u64 = 3_000;
/// How long an operation invoked after `SETTLE_MS` may take.
pub const BOUND_MS: u64 = 2_000;
/// Clients stop invoking this long before the run ends.
pub const DRAIN_MS: u64 = 2_500;

const PROPERTY: &str = "liveness";

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
