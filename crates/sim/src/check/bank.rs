//! The bank: money is neither made nor lost, and no balance goes negative.
//!
//! The setup transaction created every account with a known balance, so
//! the total is known exactly, and a transfer only moves money between two
//! accounts. So every committed audit (a read-only transaction over every
//! account, whose commit checked that all it read was still current: a
//! consistent snapshot) and the final state of the accounts must hold that
//! same total, and no balance read, committed or left at the end is below
//! zero. A seed whose setup did not commit has no known total; the script
//! reports that setup as a failure of its own.

use super::{authority, FinalReplica, Violation};
use crate::history::{show, History, TxnKind};
use crate::workload::balance;
use pactdb_core::state::op::OpResult;
use pactdb_core::types::{ClusterMap, NodeId};

const PROPERTY: &str = "bank";
/// Violations reported per run; the first few tell the story.
const MAX_REPORTED: usize = 8;

pub fn check(
    cluster: &ClusterMap,
    history: &History,
    finals: &[FinalReplica],
    faulty: Option<NodeId>,
) -> Vec<Violation> {
    let Some(setup) = history.txns.iter().find(|t| t.kind == TxnKind::Setup && t.outcome.is_committed()) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    let accounts: Vec<&[u8]> = setup.request.writes.iter().map(|w| w.key.as_slice()).collect();
    let total: i64 = setup.request.writes.iter().filter_map(|w| balance(w.value.as_deref()?)).sum();
    for o in &history.ops {
        if let Some(OpResult::Value(Some(x))) = o.result() {
            if accounts.contains(&o.key()) && balance(&x.value).is_none_or(|b| b < 0) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "op #{} (client {}) read {:?} = {:?}: not a balance of zero or more",
                        o.id,
                        o.client,
                        show(o.key()),
                        show(&x.value)
                    ),
                ));
            }
        }
    }
    for t in history.txns.iter().filter(|t| t.outcome.is_committed()) {
        for w in &t.request.writes {
            if accounts.contains(&w.key.as_slice()) && w.value.as_deref().and_then(balance).is_none_or(|b| b < 0) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "committed txn #{} ({}) wrote {:?} = {:?}: not a balance of zero or more",
                        t.id,
                        t.txn,
                        show(&w.key),
                        w.value.as_deref().map(show)
                    ),
                ));
            }
        }
        if t.kind != TxnKind::Audit {
            continue;
        }
        let mut sum = 0;
        let mut read = Vec::new();
        // An optimistic audit read through plain reads; a consistent one got
        // its values from its commit.
        let values = t.reads.iter().map(|&r| {
            let o = &history.ops[r];
            let value = match o.result() {
                Some(OpResult::Value(Some(x))) => Some(x.value.as_slice()),
                _ => None,
            };
            (o.key(), value)
        });
        let consistent = t.read_values.iter().map(|(k, v)| (k.as_slice(), v.as_ref().map(|x| x.value.as_slice())));
        for (key, value) in values.chain(consistent) {
            match value {
                Some(value) => {
                    sum += balance(value).unwrap_or(0);
                    read.push(format!("{}={}", show(key), show(value)));
                }
                None => read.push(format!("{}=absent", show(key))),
            }
        }
        if read.len() != accounts.len() || sum != total {
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "committed audit txn #{} ({}, sent at {}us) saw a total of {sum} over {} accounts, not {total} over {}: {}",
                    t.id,
                    t.txn,
                    t.invoke_us,
                    read.len(),
                    accounts.len(),
                    read.join(" ")
                ),
            ));
        }
    }
    let mut sum = 0;
    let mut held = Vec::new();
    for &a in &accounts {
        let group = cluster.group_of(a);
        let Some(f) = authority(finals, group, faulty) else { continue };
        match f.get(a).map(|x| (balance(&x.value), x)) {
            Some((Some(b), x)) if b >= 0 => {
                sum += b;
                held.push(format!("{}={}", show(a), show(&x.value)));
            }
            other => {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "at the end node {} holds {:?} = {:?}: not a balance of zero or more",
                        f.node,
                        show(a),
                        other.map(|(_, x)| show(&x.value))
                    ),
                ));
            }
        }
    }
    if sum != total {
        v.push(Violation::new(
            PROPERTY,
            format!("at the end the accounts hold {sum} in total, not {total}: {}", held.join(" ")),
        ));
    }
    v.truncate(MAX_REPORTED);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, TxnResult};
    use pactdb_core::replica::Role;
    use pactdb_core::state::kv::Versioned;
    use pactdb_core::state::op::Op;
    use pactdb_core::state::txn::{Check, TxnId, TxnRequest, TxnWrite};
    use pactdb_core::types::{GroupSpec, Mode};

    fn cluster() -> ClusterMap {
        ClusterMap::new(
            Default::default(),
            vec![GroupSpec { id: 0, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false }],
        )
    }

    fn final_state(balances: &[(&str, &str)]) -> Vec<FinalReplica> {
        let kv = balances
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), Versioned { value: v.as_bytes().to_vec(), version: 9 }))
            .collect();
        vec![FinalReplica {
            node: 1,
            group: 0,
            role: Role::Primary,
            view: None,
            commit: 9,
            applied: 9,
            digest: 0,
            kv,
            prepared: vec![],
            locks: 0,
            decisions: vec![],
        }]
    }

    /// Two accounts of 50 each, and an audit that read `a` and `b` as given.
    fn bank(a: &str, b: &str) -> History {
        let mut h = History::default();
        let write = |k: &str, v: &str| TxnWrite { key: k.into(), value: Some(v.into()) };
        let setup = TxnRequest {
            checks: vec![Check { key: b"a".to_vec(), version: 0 }, Check { key: b"b".to_vec(), version: 0 }],
            writes: vec![write("a", "50|s-1"), write("b", "50|s-2")],
            reads: vec![],
        };
        let s = h.begin_txn(0, TxnKind::Setup, TxnId { client: 1, session: 0, seq: 1, home: 0 }, vec![], setup, 0);
        h.complete_txn(s, Some(10), TxnResult::Committed { versions: vec![(b"a".to_vec(), 3), (b"b".to_vec(), 3)] });
        let mut reads = Vec::new();
        for (k, v) in [("a", a), ("b", b)] {
            let r = h.invoke(1, Op::Get { key: k.into() }, 20);
            let value = Versioned { value: v.as_bytes().to_vec(), version: 5 };
            h.complete(r, 30, Outcome::Ok(OpResult::Value(Some(value))));
            reads.push(r);
        }
        let checks = vec![Check { key: b"a".to_vec(), version: 5 }, Check { key: b"b".to_vec(), version: 5 }];
        let audit = TxnRequest { checks, ..Default::default() };
        let t = h.begin_txn(1, TxnKind::Audit, TxnId { client: 2, session: 0, seq: 9, home: 0 }, reads, audit, 40);
        h.complete_txn(t, Some(50), TxnResult::Committed { versions: vec![] });
        h
    }

    #[test]
    fn passes_when_every_audit_and_the_end_hold_the_initial_total() {
        let h = bank("30|c1-1", "70|c1-2");
        assert_eq!(check(&cluster(), &h, &final_state(&[("a", "0|c1-3"), ("b", "100|c1-4")]), None), vec![]);
    }

    #[test]
    fn rejects_money_made_in_an_audit_or_at_the_end_and_a_negative_balance() {
        let h = bank("50|s-1", "70|c1-2");
        let v = check(&cluster(), &h, &final_state(&[("a", "50|s-1"), ("b", "50|s-2")]), None);
        assert!(v.len() == 1 && v[0].detail.contains("total of 120"), "{v:?}");
        let h = bank("30|c1-1", "70|c1-2");
        let v = check(&cluster(), &h, &final_state(&[("a", "-10|c1-3"), ("b", "110|c1-4")]), None);
        assert!(v.iter().any(|v| v.detail.contains("not a balance of zero or more")), "{v:?}");
        let v = check(&cluster(), &h, &final_state(&[("a", "30|c1-3"), ("b", "100|c1-4")]), None);
        assert!(v.len() == 1 && v[0].detail.contains("130 in total"), "{v:?}");
        assert!(v.iter().all(|v| v.property == PROPERTY));
    }
}
