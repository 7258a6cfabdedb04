//! Atomicity: a transaction's writes take effect in every group or in none.
//!
//! For each transaction whose keys span several groups, the observer's
//! record of committed log entries says which groups applied it and how (a
//! participant's `Resolve`, the home group's `Decide`, each carrying the
//! writes it applies). Once its client was told it committed, its
//! coordinator decided to commit, or any group applied it as committed,
//! every one of its writes must have been applied, with its value, by a
//! commit of its key's group, and at the end every replica of that group
//! must hold it (at its version, or a newer one). A client told it committed
//! must have been given a version for every key it wrote. A transaction whose client
//! was told it aborted or was refused, or whose coordinator decided to
//! abort, took effect nowhere, whatever its groups: no group applied it as
//! committed, no read returned one of its (unique) values, and no replica
//! holds one at the end.
//!
//! It judges only what took effect where; whether each group applied the
//! decision its coordinator made is the one-decision checker's business.

use super::{FinalReplica, Violation};
use crate::history::{show, History, TxnRecord, TxnResult};
use crate::observe::{Observations, TxnEntry};
use pactdb_core::state::kv::{Key, Value, Write};
use pactdb_core::state::op::OpResult;
use pactdb_core::state::txn::TxnId;
use pactdb_core::types::{ClusterMap, GroupId, Index, NodeId};
use std::collections::{BTreeMap, BTreeSet};

const PROPERTY: &str = "atomicity";
/// Violations reported per run; the first few tell the story.
const MAX_REPORTED: usize = 8;

/// What the committed logs say of one transaction.
#[derive(Default)]
struct Applied<'a> {
    /// Every group's resolution: (group, index, committed, the writes it
    /// applied).
    resolutions: Vec<(GroupId, Index, bool, &'a [Write])>,
    /// The coordinator's decision, if one was logged.
    decision: Option<bool>,
}

pub fn check(
    cluster: &ClusterMap,
    history: &History,
    obs: &Observations,
    finals: &[FinalReplica],
    faulty: Option<NodeId>,
) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut applied: BTreeMap<TxnId, Applied<'_>> = BTreeMap::new();
    // The version each committed transactional write took, as logged.
    let mut logged_versions: BTreeMap<(&Key, &Value), u64> = BTreeMap::new();
    for (&(g, i), l) in &obs.txn_log {
        let (txn, commit, writes) = match &l.entry {
            TxnEntry::Resolve { txn, commit, writes } => (txn, *commit, writes),
            TxnEntry::Decide { txn, commit, writes, .. } => {
                applied.entry(*txn).or_default().decision.get_or_insert(*commit);
                (txn, *commit, writes)
            }
            TxnEntry::Prepare { .. } => continue,
        };
        applied.entry(*txn).or_default().resolutions.push((g, i, commit, writes));
        for w in writes {
            if let Write::Put { key, value, version } = w {
                logged_versions.insert((key, value), *version);
            }
        }
    }
    let none = Applied::default();
    // Values of transactions that took effect nowhere, and why.
    let mut forbidden: BTreeMap<(&Key, &Value), (&TxnRecord, String)> = BTreeMap::new();
    for t in &history.txns {
        let a = applied.get(&t.txn).unwrap_or(&none);
        let not_committed = match (&t.outcome, a.decision) {
            (TxnResult::Aborted { reason }, _) => Some(format!("its client was told it aborted ({reason})")),
            (TxnResult::Refused { error }, _) => Some(format!("its client was told it was refused ({error})")),
            (_, Some(false)) => Some("its coordinator decided to abort it".to_string()),
            _ => None,
        };
        let committed_in: BTreeSet<(GroupId, Index)> =
            a.resolutions.iter().filter(|r| r.2).map(|r| (r.0, r.1)).collect();
        let multi_group = t.request.split(cluster, 0).len() > 1;
        if let Some(why) = &not_committed {
            for (g, i) in &committed_in {
                v.push(Violation::new(
                    PROPERTY,
                    format!("{}: {why}, but group {g} applied it as committed at index {i}", name(t)),
                ));
            }
            for w in &t.request.writes {
                if let Some(value) = &w.value {
                    forbidden.insert((&w.key, value), (t, why.clone()));
                }
            }
            continue;
        }
        let committed = match (&t.outcome, a.decision) {
            (TxnResult::Committed { .. }, _) => Some("its client was told it committed"),
            (_, Some(true)) => Some("its coordinator decided to commit it"),
            _ if !committed_in.is_empty() => Some("a group applied it as committed"),
            _ => None,
        };
        let Some(why) = committed else { continue };
        if multi_group {
            for w in &t.request.writes {
                let g = cluster.group_of(&w.key);
                let mut here = a.resolutions.iter().filter(|r| r.0 == g);
                if here.clone().any(|r| r.2 && r.3.iter().any(|x| applies(x, &w.key, w.value.as_ref()))) {
                    continue;
                }
                let did = match (here.clone().find(|r| r.2), here.next()) {
                    (Some(r), _) => format!("its commit at index {} did not carry it", r.1),
                    (None, Some(r)) => format!("it applied an abort at index {}", r.1),
                    (None, None) => "it never resolved the transaction".to_string(),
                };
                v.push(Violation::new(
                    PROPERTY,
                    format!("{}: {why}, but group {g} never applied its write of {:?} ({did})", name(t), show(&w.key)),
                ));
            }
        }
        if let TxnResult::Committed { versions } = &t.outcome {
            for w in t.request.writes.iter().filter(|w| !versions.iter().any(|(k, _)| *k == w.key)) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "{}: its client was told it committed, but given no version of {:?}",
                        name(t),
                        show(&w.key)
                    ),
                ));
            }
        }
        for w in &t.request.writes {
            let Some(value) = &w.value else { continue };
            let Some(version) = t.version_of(&w.key).or_else(|| logged_versions.get(&(&w.key, value)).copied()) else {
                continue;
            };
            let group = cluster.group_of(&w.key);
            for f in finals.iter().filter(|f| f.group == group && Some(f.node) != faulty) {
                let held = f.get(&w.key).map_or(0, |x| x.version);
                if held < version {
                    v.push(Violation::new(
                        PROPERTY,
                        format!(
                            "{}: {why}, but at the end node {} (group {group}) holds version {held} of {:?}, \
                             older than its write at version {version}",
                            name(t),
                            f.node,
                            show(&w.key)
                        ),
                    ));
                }
            }
        }
    }
    for o in &history.ops {
        if let Some(OpResult::Value(Some(x))) = o.result() {
            let key = o.key().to_vec();
            if let Some((t, why)) = forbidden.get(&(&key, &x.value)) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "op #{} (client {}) read {:?} = {:?}, written by {}, but {why}",
                        o.id,
                        o.client,
                        show(&key),
                        show(&x.value),
                        name(t)
                    ),
                ));
            }
        }
    }
    for f in finals.iter().filter(|f| Some(f.node) != faulty) {
        for (key, x) in &f.kv {
            if let Some((t, why)) = forbidden.get(&(key, &x.value)) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "at the end node {} holds {:?} = {:?}, written by {}, but {why}",
                        f.node,
                        show(key),
                        show(&x.value),
                        name(t)
                    ),
                ));
            }
        }
    }
    v.truncate(MAX_REPORTED);
    v
}

/// Whether `applied` is the write of `value` (`None`: a delete) to `key`.
fn applies(applied: &Write, key: &[u8], value: Option<&Value>) -> bool {
    match (applied, value) {
        (Write::Put { key: k, value: v, .. }, Some(value)) => k == key && v == value,
        (Write::Delete { key: k }, None) => k == key,
        _ => false,
    }
}

/// How a report names a transaction.
pub fn name(t: &TxnRecord) -> String {
    format!("txn #{} ({:?} {} of client {}, sent at {}us)", t.id, t.kind, t.txn, t.client, t.invoke_us)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Outcome, TxnKind};
    use crate::observe::TxnLogged;
    use pactdb_core::replica::Role;
    use pactdb_core::state::kv::Versioned;
    use pactdb_core::state::op::Op;
    use pactdb_core::state::txn::{Check, TxnRequest, TxnWrite};
    use pactdb_core::types::{GroupSpec, Mode};

    fn cluster(groups: u32) -> ClusterMap {
        ClusterMap::new(
            Default::default(),
            (0..groups)
                .map(|id| GroupSpec { id, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false })
                .collect(),
        )
    }

    /// Two keys in different groups of `cluster(2)`.
    fn two_keys(c: &ClusterMap) -> (Key, Key) {
        let a = (0..).map(|n| format!("a{n}").into_bytes()).find(|k| c.group_of(k) == 0).expect("some");
        let b = (0..).map(|n| format!("b{n}").into_bytes()).find(|k| c.group_of(k) == 1).expect("some");
        (a, b)
    }

    fn log(obs: &mut Observations, group: GroupId, index: Index, at: u64, entry: TxnEntry) {
        obs.txn_log.insert((group, index), TxnLogged { entry, node: 1, at });
    }

    fn final_of(group: GroupId, kv: Vec<(Key, Versioned)>) -> FinalReplica {
        FinalReplica {
            node: group as u64 + 1,
            group,
            role: Role::Primary,
            view: None,
            commit: 0,
            applied: 0,
            digest: 0,
            kv,
            prepared: vec![],
            locks: 0,
            decisions: vec![],
        }
    }

    /// A transfer between `a` (home, group 0) and `b` (group 1), and what a
    /// clean run of it logs and leaves, committed or aborted.
    fn transfer(commit: bool) -> (ClusterMap, History, Observations, Vec<FinalReplica>, TxnId) {
        let c = cluster(2);
        let (a, b) = two_keys(&c);
        let mut h = History::default();
        let txn = TxnId { client: 7, session: 0, seq: 3, home: 0 };
        let put = |k: &Key, v: &str| TxnWrite { key: k.clone(), value: Some(v.as_bytes().to_vec()) };
        let req = TxnRequest {
            checks: vec![Check { key: a.clone(), version: 0 }, Check { key: b.clone(), version: 0 }],
            writes: vec![put(&a, "5|x"), put(&b, "7|x")],
            reads: vec![],
        };
        let t = h.begin_txn(0, TxnKind::Transfer, txn, vec![], req, 100);
        let versions = vec![(a.clone(), 10), (b.clone(), 20)];
        let outcome =
            if commit { TxnResult::Committed { versions } } else { TxnResult::Aborted { reason: "locked".into() } };
        h.complete_txn(t, Some(500), outcome);
        let mut obs = Observations::default();
        let w = |k: &Key, v: &str, version| Write::Put { key: k.clone(), value: v.as_bytes().to_vec(), version };
        let writes = |k: &Key, v: &str, version| if commit { vec![w(k, v, version)] } else { vec![] };
        log(&mut obs, 0, 10, 200, TxnEntry::Prepare { txn, consistent_read: false });
        log(&mut obs, 1, 20, 210, TxnEntry::Prepare { txn, consistent_read: false });
        log(
            &mut obs,
            0,
            11,
            300,
            TxnEntry::Decide {
                txn,
                commit,
                outcome_committed: commit,
                participants: vec![1],
                writes: writes(&a, "5|x", 10),
            },
        );
        log(&mut obs, 1, 21, 400, TxnEntry::Resolve { txn, commit, writes: writes(&b, "7|x", 20) });
        let held = |k: &Key, v: &str, version| vec![(k.clone(), Versioned { value: v.as_bytes().to_vec(), version })];
        let finals = if commit {
            vec![final_of(0, held(&a, "5|x", 10)), final_of(1, held(&b, "7|x", 20))]
        } else {
            vec![final_of(0, vec![]), final_of(1, vec![])]
        };
        (c, h, obs, finals, txn)
    }

    #[test]
    fn passes_a_transfer_that_took_effect_everywhere_or_nowhere() {
        for commit in [true, false] {
            let (c, h, obs, finals, _) = transfer(commit);
            assert_eq!(check(&c, &h, &obs, &finals, None), vec![], "commit {commit}");
        }
    }

    #[test]
    fn rejects_a_commit_that_one_group_never_applied() {
        let (c, h, mut obs, mut finals, _) = transfer(true);
        obs.txn_log.remove(&(1, 21));
        finals[1].kv.clear();
        let v = check(&c, &h, &obs, &finals, None);
        assert!(v.iter().any(|v| v.detail.contains("group 1 never applied its write of")), "{v:?}");
        assert!(v.iter().any(|v| v.detail.contains("holds version 0")), "{v:?}");
        assert!(v.iter().all(|v| v.property == PROPERTY));
    }

    #[test]
    fn rejects_a_commit_that_one_group_applied_without_its_write() {
        let (c, h, mut obs, finals, txn) = transfer(true);
        let decide =
            TxnEntry::Decide { txn, commit: true, outcome_committed: true, participants: vec![1], writes: vec![] };
        log(&mut obs, 0, 11, 300, decide);
        let v = check(&c, &h, &obs, &finals, None);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("group 0 never applied its write") && v[0].detail.contains("did not carry it"));
    }

    #[test]
    fn rejects_an_abort_that_one_group_applied_as_a_commit_and_a_read_of_it() {
        let (c, mut h, mut obs, finals, txn) = transfer(false);
        let (_, b) = two_keys(&c);
        let w = Write::Put { key: b.clone(), value: b"7|x".to_vec(), version: 20 };
        log(&mut obs, 1, 21, 400, TxnEntry::Resolve { txn, commit: true, writes: vec![w] });
        let g = h.invoke(1, Op::Get { key: b.clone() }, 600);
        h.complete(g, 700, Outcome::Ok(OpResult::Value(Some(Versioned { value: b"7|x".to_vec(), version: 20 }))));
        let v = check(&c, &h, &obs, &finals, None);
        assert!(v.iter().any(|v| v.detail.contains("group 1 applied it as committed")), "{v:?}");
        assert!(v.iter().any(|v| v.detail.contains("op #0 (client 1) read")), "{v:?}");
    }
}
