//! Judging a chaos run and telling what happened.
//!
//! It owns feeding the recorded client history to the simulator's own
//! checkers (`pactdb_sim::check`): per-key linearizability over the
//! register view of the history (transactions' writes included) with the
//! final reads in it; no acknowledged write lost against the final reads;
//! the bank's total; strict serializability of the transactions. It also
//! owns the unavailability each fault caused, the self-test that damages a
//! history on purpose (`--inject-anomaly`), the per-fault lines, the one
//! summary line, and the JSON files (history, report).
//!
//! It must never drive the cluster or the faults, and never pass a history
//! a checker could not decide: checkers report that as a violation, and so
//! does this.

use pactdb_core::replica::Role;
use pactdb_core::state::kv::{Key, Versioned};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::types::{ClusterMap, GroupId};
use pactdb_sim::check::{self, FinalReplica, Violation};
use pactdb_sim::history::{History, Micros, Outcome};
use pactdb_sim::observe::Observations;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

/// One fault as it happened.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub n: usize,
    pub kind: &'static str,
    pub what: String,
    /// Microseconds since the run began.
    pub injected_us: Micros,
    /// When it was healed (the last restart, unpause or flush).
    pub healed_us: Option<Micros>,
    /// When every group served a write again after the heal.
    pub recovered_us: Option<Micros>,
    /// Why injecting, healing or recovering failed.
    pub error: Option<String>,
    /// The longest time no operation of the group succeeded, from the
    /// injection to the recovery, per group (seconds).
    pub unavailable_s: BTreeMap<GroupId, f64>,
}

impl FaultRecord {
    pub fn worst_unavailable_s(&self) -> f64 {
        self.unavailable_s.values().copied().fold(0.0, f64::max)
    }
}

/// The final state as the checkers' `FinalReplica`s: one per group, as if
/// its primary held exactly what the final linearizable reads returned.
pub fn finals_from_reads(cluster: &ClusterMap, reads: &[(Key, Option<Versioned>)]) -> Vec<FinalReplica> {
    let mut by_group: BTreeMap<GroupId, Vec<(Key, Versioned)>> =
        cluster.groups.iter().map(|g| (g.id, Vec::new())).collect();
    for (k, v) in reads {
        if let Some(v) = v {
            by_group.entry(cluster.group_of(k)).or_default().push((k.clone(), v.clone()));
        }
    }
    by_group
        .into_iter()
        .map(|(group, kv)| FinalReplica {
            node: 0,
            group,
            role: Role::Primary,
            view: None,
            commit: 0,
            applied: 0,
            digest: 0,
            kv,
            prepared: Vec::new(),
            locks: 0,
            decisions: Vec::new(),
        })
        .collect()
}

/// Runs the simulator's checkers that a client-side history can feed.
///
/// * linearizability (`check::linearizability`) of every key, over
///   `History::register_history` (transactions' writes as writes of their
///   keys), final reads included: a lost acknowledged write shows as a
///   final read that no linearization explains;
/// * no acknowledged write lost (`check::durability`), against `finals`;
/// * the bank (`check::bank`): every committed audit and the final state
///   hold the setup's total, no balance below zero;
/// * strict serializability (`check::serializability`) of the committed
///   transactions, from the versions their commits checked and wrote.
///   The simulator also feeds it the versions it saw in the nodes' logs;
///   here only what clients read and the final reads are known, which
///   can only leave out transactions of unknown outcome nobody saw.
pub fn run_checkers(cluster: &ClusterMap, history: &History, finals: &[FinalReplica]) -> Vec<Violation> {
    let obs = Observations::default();
    let registers = history.register_history();
    let mut v = Vec::new();
    v.extend(check::linearizability::check(&registers));
    v.extend(check::durability::check(cluster, &registers, &obs, finals, None));
    v.extend(check::bank::check(cluster, history, finals, None));
    v.extend(check::serializability::check(history, &obs, finals));
    v
}

/// A damage `--inject-anomaly` does to the recorded history, to show the
/// checkers catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Anomaly {
    /// The final read of a key that an acknowledged write wrote is made to
    /// find the key absent, as if that write had been lost.
    LostWrite,
}

/// Applies `anomaly` to the history and the final state; says what it did
/// (`None`: nothing to damage, e.g. no write was acknowledged).
pub fn inject(
    anomaly: Anomaly,
    history: &mut History,
    finals: &mut [FinalReplica],
    final_ops: &[usize],
) -> Option<String> {
    match anomaly {
        Anomaly::LostWrite => {
            for &id in final_ops.iter().rev() {
                let o = &history.ops[id];
                let key = o.key().to_vec();
                let Outcome::Ok(OpResult::Value(Some(_))) = &o.outcome else { continue };
                let acked = history.ops.iter().any(|w| {
                    w.key() == key.as_slice()
                        && matches!(w.op, Op::Put { .. } | Op::Cas { .. })
                        && matches!(w.outcome, Outcome::Ok(OpResult::Written { .. }))
                });
                if !acked {
                    continue;
                }
                history.ops[id].outcome = Outcome::Ok(OpResult::Value(None));
                for f in finals.iter_mut() {
                    f.kv.retain(|(k, _)| *k != key);
                }
                return Some(format!(
                    "made the final read #{id} of {:?} find the key absent (an acknowledged write lost)",
                    String::from_utf8_lossy(&key)
                ));
            }
            None
        }
    }
}

/// When each group's operations succeeded (single operations by their key,
/// committed transactions by every group they wrote or read), sorted.
pub fn successes(cluster: &ClusterMap, history: &History) -> BTreeMap<GroupId, Vec<Micros>> {
    let mut out: BTreeMap<GroupId, Vec<Micros>> = cluster.groups.iter().map(|g| (g.id, Vec::new())).collect();
    for o in &history.ops {
        if let (Outcome::Ok(_), Some(done)) = (&o.outcome, o.complete_us) {
            out.entry(cluster.group_of(o.key())).or_default().push(done);
        }
    }
    for t in history.txns.iter().filter(|t| t.outcome.is_committed()) {
        let Some(done) = t.complete_us else { continue };
        let keys = t.request.writes.iter().map(|w| &w.key).chain(t.request.reads.iter());
        let mut groups: Vec<GroupId> = keys.map(|k| cluster.group_of(k)).collect();
        groups.dedup();
        for g in groups {
            out.entry(g).or_default().push(done);
        }
    }
    for times in out.values_mut() {
        times.sort_unstable();
    }
    out
}

/// The longest stretch within [from, to] with no success, per group.
pub fn unavailability(successes: &BTreeMap<GroupId, Vec<Micros>>, from: Micros, to: Micros) -> BTreeMap<GroupId, f64> {
    successes
        .iter()
        .map(|(&g, times)| {
            let mut last = from;
            let mut worst = 0;
            for &t in times.iter().filter(|&&t| t > from && t <= to) {
                worst = worst.max(t - last);
                last = t;
            }
            worst = worst.max(to.saturating_sub(last));
            (g, worst as f64 / 1e6)
        })
        .collect()
}

/// Counts of what the history holds, for the summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    pub ops: usize,
    pub ops_ok: usize,
    pub ops_failed: usize,
    pub ops_refused: usize,
    pub txns: usize,
    pub txns_committed: usize,
    pub txns_aborted: usize,
    pub txns_unknown: usize,
}

pub fn counts(history: &History) -> Counts {
    let mut c = Counts { ops: history.ops.len(), txns: history.txns.len(), ..Default::default() };
    for o in &history.ops {
        match o.outcome {
            Outcome::Ok(_) => c.ops_ok += 1,
            Outcome::Refused(_) => c.ops_refused += 1,
            Outcome::Failed(_) | Outcome::Pending => c.ops_failed += 1,
        }
    }
    for t in &history.txns {
        if t.outcome.is_committed() {
            c.txns_committed += 1;
        } else if t.outcome.told_not_committed() {
            c.txns_aborted += 1;
        } else {
            c.txns_unknown += 1;
        }
    }
    c
}

/// Per fault kind: how many, and the max and median unavailability.
#[derive(Clone, Debug, Serialize)]
pub struct KindSummary {
    pub kind: &'static str,
    pub injected: usize,
    pub failed: usize,
    pub max_unavailable_s: f64,
    pub median_unavailable_s: f64,
}

pub fn by_kind(faults: &[FaultRecord]) -> Vec<KindSummary> {
    let mut kinds: BTreeMap<&'static str, Vec<&FaultRecord>> = BTreeMap::new();
    for f in faults {
        kinds.entry(f.kind).or_default().push(f);
    }
    kinds
        .into_iter()
        .map(|(kind, fs)| {
            let mut u: Vec<f64> = fs.iter().map(|f| f.worst_unavailable_s()).collect();
            u.sort_by(f64::total_cmp);
            KindSummary {
                kind,
                injected: fs.len(),
                failed: fs.iter().filter(|f| f.error.is_some()).count(),
                max_unavailable_s: u.last().copied().unwrap_or(0.0),
                median_unavailable_s: u.get(u.len() / 2).copied().unwrap_or(0.0),
            }
        })
        .collect()
}

/// The whole run, as `--report` writes it.
#[derive(Serialize)]
pub struct Report<'a> {
    pub seed: u64,
    pub seconds: u64,
    pub elapsed_s: f64,
    pub counts: Counts,
    pub faults: &'a [FaultRecord],
    pub by_kind: Vec<KindSummary>,
    pub anomalies: Vec<String>,
    pub summary: String,
}

pub fn write_report(path: &Path, report: &Report) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

/// The history and the faults as JSON lines, in time order of invocation.
pub fn write_history(path: &Path, history: &History, faults: &[FaultRecord]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for f in faults {
        writeln!(out, "{}", serde_json::json!({ "type": "fault", "fault": f }))?;
    }
    for o in &history.ops {
        let line = serde_json::json!({
            "type": "op", "id": o.id, "client": o.client, "op": format!("{:?}", o.op),
            "invoke_us": o.invoke_us, "complete_us": o.complete_us, "outcome": format!("{:?}", o.outcome),
        });
        writeln!(out, "{line}")?;
    }
    for t in &history.txns {
        let line = serde_json::json!({
            "type": "txn", "id": t.id, "client": t.client, "kind": format!("{:?}", t.kind),
            "txn": t.txn.to_string(), "reads": t.reads, "request": format!("{:?}", t.request),
            "invoke_us": t.invoke_us, "complete_us": t.complete_us, "outcome": format!("{:?}", t.outcome),
            "read_values": format!("{:?}", t.read_values),
        });
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::state::txn::{Check, TxnId, TxnRequest, TxnWrite};
    use pactdb_core::types::{GroupSpec, Mode};
    use pactdb_sim::history::{TxnKind, TxnResult};

    /// Final reads: each key and what it held (`None`: absent).
    type Reads = Vec<(Key, Option<Versioned>)>;

    fn cluster() -> ClusterMap {
        let g = |id| GroupSpec { id, mode: Mode::Passive, placement: vec![1], min_members: 1, voting: false };
        ClusterMap::new(Default::default(), vec![g(0), g(1)])
    }

    /// Two register writes, a read, a bank of two accounts with one
    /// transfer and one audit, and the final reads: a clean run.
    fn clean() -> (History, Reads, Vec<usize>) {
        let mut h = History::default();
        let ok = |version| Outcome::Ok(OpResult::Written { version });
        let k = |s: &str| s.as_bytes().to_vec();
        let put = |v: &str| Op::Put { key: k("r"), value: k(v) };
        let w1 = h.invoke(0, put("v1"), 0);
        h.complete(w1, 10, ok(3));
        let w2 = h.invoke(1, put("v2"), 20);
        h.complete(w2, 30, ok(5));
        let r = h.invoke(0, Op::Get { key: k("r") }, 40);
        h.complete(r, 50, Outcome::Ok(OpResult::Value(Some(Versioned { value: k("v2"), version: 5 }))));
        let w = |key: &str, v: &str| TxnWrite { key: k(key), value: Some(k(v)) };
        let setup = TxnRequest {
            checks: vec![Check { key: k("a"), version: 0 }, Check { key: k("b"), version: 0 }],
            writes: vec![w("a", "100|s0"), w("b", "100|s1")],
            reads: vec![],
        };
        let id = |seq| TxnId { client: 1, session: 0, seq, home: 0 };
        let s = h.begin_txn(2, TxnKind::Setup, id(1), vec![], setup, 60);
        h.complete_txn(s, Some(70), TxnResult::Committed { versions: vec![(k("a"), 7), (k("b"), 7)] });
        let transfer = TxnRequest {
            checks: vec![Check { key: k("a"), version: 7 }, Check { key: k("b"), version: 7 }],
            writes: vec![w("a", "90|t1"), w("b", "110|t2")],
            reads: vec![],
        };
        let t = h.begin_txn(3, TxnKind::Transfer, id(2), vec![], transfer, 80);
        h.complete_txn(t, Some(90), TxnResult::Committed { versions: vec![(k("a"), 9), (k("b"), 9)] });
        let mut finals = Vec::new();
        let mut final_ops = Vec::new();
        for (key, value, version) in [("r", "v2", 5), ("a", "90|t1", 9), ("b", "110|t2", 9)] {
            let v = Versioned { value: k(value), version };
            let id = h.invoke(9, Op::Get { key: k(key) }, 100);
            h.complete(id, 110, Outcome::Ok(OpResult::Value(Some(v.clone()))));
            finals.push((k(key), Some(v)));
            final_ops.push(id);
        }
        (h, finals, final_ops)
    }

    #[test]
    fn a_clean_history_passes_every_checker() {
        let (h, reads, _) = clean();
        let finals = finals_from_reads(&cluster(), &reads);
        assert_eq!(run_checkers(&cluster(), &h, &finals), vec![]);
    }

    #[test]
    fn an_injected_lost_write_is_caught() {
        let (mut h, reads, final_ops) = clean();
        let mut finals = finals_from_reads(&cluster(), &reads);
        let what = inject(Anomaly::LostWrite, &mut h, &mut finals, &final_ops).expect("something to damage");
        let v = run_checkers(&cluster(), &h, &finals);
        assert!(!v.is_empty(), "{what}: no checker noticed");
        assert!(v.iter().any(|v| v.property == "linearizability"), "{v:?}");
        assert!(v.iter().any(|v| v.property == "no acknowledged write lost"), "{v:?}");
    }

    #[test]
    fn money_made_at_the_end_is_caught() {
        let (h, mut reads, _) = clean();
        reads[1].1 = Some(Versioned { value: b"95|t1".to_vec(), version: 9 });
        let finals = finals_from_reads(&cluster(), &reads);
        let v = run_checkers(&cluster(), &h, &finals);
        assert!(v.iter().any(|v| v.property == "bank"), "{v:?}");
    }

    #[test]
    fn unavailability_is_the_longest_gap_between_successes_in_the_window() {
        let s: BTreeMap<GroupId, Vec<Micros>> = [(0, vec![1_000_000, 2_000_000, 6_000_000, 6_500_000])].into();
        let u = unavailability(&s, 1_500_000, 7_000_000);
        assert_eq!(u[&0], 4.0);
        let u = unavailability(&s, 6_600_000, 9_600_000);
        assert_eq!(u[&0], 3.0, "no success at all: the whole window");
    }
}
