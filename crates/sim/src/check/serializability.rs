//! Strict serializability of transactions: the committed transactions (and
//! those of unknown outcome whose writes were observed, so they did commit)
//! have one serial order that agrees with every version they read and wrote
//! and with real time.
//!
//! Versions order everything: a key's versions grow with every write, and
//! every value is unique, so the graph is exact. For each key, its writers
//! in version order (write-write edges); the writer of the version a
//! transaction read before the reader (write-read); a reader before the
//! first other transaction that wrote a newer version of the key
//! (read-write: had the writer come first, the reader would have seen its
//! version or a later one). A transaction's reads are the versions its
//! commit checked. Real time: a transaction whose client learned it
//! committed before another's commit was sent comes first (a chain of
//! completion times keeps these edges linear in number). Any cycle fails.
//!
//! A transaction's interval is its commit's: from sending it to learning
//! the outcome. Its reads came earlier, but its commit checked their
//! versions were still current and locked them, so it takes effect within
//! the commit.

use super::atomicity::name;
use super::{FinalReplica, Violation};
use crate::history::{show, History, Micros, Outcome, TxnRecord};
use crate::observe::{Observations, TxnEntry};
use pactdb_core::state::kv::{Key, Value, Write};
use pactdb_core::state::op::OpResult;
use std::collections::BTreeMap;

const PROPERTY: &str = "strict serializability";

/// Why one transaction must come before another.
#[derive(Clone, Debug)]
enum Edge {
    /// It wrote an older version of the key.
    WriteWrite(Key),
    /// The other read the version it wrote.
    WriteRead(Key),
    /// It read a version the other overwrote.
    ReadWrite(Key),
    /// Completion before invocation (through the chain of completions).
    RealTime,
}

/// A transaction in the graph.
struct Txn<'a> {
    rec: &'a TxnRecord,
    reads: Vec<(&'a Key, u64)>,
    writes: Vec<(&'a Key, u64)>,
    /// When its client learned it committed (`None` if it never did).
    complete: Option<Micros>,
}

pub fn check(history: &History, obs: &Observations, finals: &[FinalReplica]) -> Vec<Violation> {
    // The version every observed value had: from reads, committed log
    // entries and final states.
    let mut seen: BTreeMap<(&[u8], &Value), u64> = BTreeMap::new();
    for o in &history.ops {
        if let Outcome::Ok(OpResult::Value(Some(v))) = &o.outcome {
            seen.insert((o.key(), &v.value), v.version);
        }
    }
    for l in obs.txn_log.values() {
        if let TxnEntry::Resolve { writes, .. } | TxnEntry::Decide { writes, .. } = &l.entry {
            for w in writes {
                if let Write::Put { key, value, version } = w {
                    seen.insert((key, value), *version);
                }
            }
        }
    }
    for f in finals {
        for (k, v) in &f.kv {
            seen.insert((k, &v.value), v.version);
        }
    }
    let mut txns = Vec::new();
    for t in &history.txns {
        let writes: Vec<(&Key, u64)> = if t.outcome.is_committed() {
            t.request.writes.iter().filter_map(|w| Some((&w.key, t.version_of(&w.key)?))).collect()
        } else if t.outcome.is_indeterminate() {
            let observed = t.request.writes.iter().filter_map(|w| {
                let version = seen.get(&(w.key.as_slice(), w.value.as_ref()?))?;
                Some((&w.key, *version))
            });
            observed.collect()
        } else {
            continue;
        };
        if !t.outcome.is_committed() && writes.is_empty() {
            // Nothing shows that it committed.
            continue;
        }
        // What it read: the versions its commit checked, and a consistent
        // read's values at the versions they had (absent: version 0).
        let consistent = t.read_values.iter().map(|(k, v)| (k, v.as_ref().map_or(0, |x| x.version)));
        let reads = t.request.checks.iter().map(|c| (&c.key, c.version)).chain(consistent).collect();
        let complete = t.complete_us.filter(|_| t.outcome.is_committed());
        txns.push(Txn { rec: t, reads, writes, complete });
    }
    check_txns(&txns)
}

fn check_txns(txns: &[Txn]) -> Vec<Violation> {
    let n = txns.len();
    let mut edges: Vec<Vec<(usize, Edge)>> = vec![Vec::new(); n];
    let mut writers: BTreeMap<&Key, Vec<(u64, usize)>> = BTreeMap::new();
    for (i, t) in txns.iter().enumerate() {
        for &(k, v) in &t.writes {
            writers.entry(k).or_default().push((v, i));
        }
    }
    for (k, ws) in writers.iter_mut() {
        ws.sort_unstable();
        for pair in ws.windows(2) {
            let ((va, a), (vb, b)) = (pair[0], pair[1]);
            if va == vb {
                return vec![Violation::new(
                    PROPERTY,
                    format!("{} and {} both wrote {:?} at version {va}", name(txns[a].rec), name(txns[b].rec), show(k)),
                )];
            }
            edges[a].push((b, Edge::WriteWrite(k.to_vec())));
        }
    }
    for (r, t) in txns.iter().enumerate() {
        for &(k, v) in &t.reads {
            let Some(ws) = writers.get(k) else { continue };
            let at = ws.partition_point(|&(wv, _)| wv < v);
            if let Some(&(wv, w)) = ws.get(at) {
                if wv == v && w != r {
                    edges[w].push((r, Edge::WriteRead(k.clone())));
                }
            }
            if let Some(&(_, w)) = ws[at..].iter().find(|&&(wv, w)| wv > v && w != r) {
                edges[r].push((w, Edge::ReadWrite(k.clone())));
            }
        }
    }
    // Real time: one chain node per completion, in time order; a
    // transaction points to its completion's node, and the latest
    // completion strictly before a commit was sent points to it.
    let mut completions: Vec<(Micros, usize)> =
        txns.iter().enumerate().filter_map(|(i, t)| Some((t.complete?, i))).collect();
    completions.sort_unstable();
    let m = completions.len();
    edges.resize(n + m, Vec::new());
    for (c, &(_, i)) in completions.iter().enumerate() {
        edges[i].push((n + c, Edge::RealTime));
        if c + 1 < m {
            edges[n + c].push((n + c + 1, Edge::RealTime));
        }
    }
    for (i, t) in txns.iter().enumerate() {
        let before = completions.partition_point(|&(at, _)| at < t.rec.invoke_us);
        if before > 0 {
            edges[n + before - 1].push((i, Edge::RealTime));
        }
    }
    match find_cycle(&edges) {
        None => Vec::new(),
        Some(cycle) => vec![Violation::new(PROPERTY, describe(txns, &cycle))],
    }
}

/// A cycle of the graph, as the edges taken: (from, to, edge).
fn find_cycle(edges: &[Vec<(usize, Edge)>]) -> Option<Vec<(usize, usize, Edge)>> {
    // Iterative depth-first search; `color`: 0 unvisited, 1 on the stack, 2 done.
    let mut color = vec![0u8; edges.len()];
    for root in 0..edges.len() {
        if color[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        color[root] = 1;
        while let Some(&(u, e)) = stack.last() {
            if e == edges[u].len() {
                color[u] = 2;
                stack.pop();
                continue;
            }
            // Each frame keeps the index of the next edge to follow, so the
            // edge a frame took to its child is the one before it.
            stack.last_mut().expect("non-empty").1 += 1;
            let w = edges[u][e].0;
            match color[w] {
                0 => {
                    color[w] = 1;
                    stack.push((w, 0));
                }
                1 => {
                    // Back edge: the stack from `w` up to `u`, then back to `w`.
                    let from = stack.iter().position(|&(x, _)| x == w).expect("on the stack");
                    let mut cycle: Vec<(usize, usize, Edge)> = stack[from..]
                        .windows(2)
                        .map(|p| {
                            let (a, ea) = p[0];
                            let (b, _) = p[1];
                            (a, b, edges[a][ea - 1].1.clone())
                        })
                        .collect();
                    cycle.push((u, w, edges[u][e].1.clone()));
                    return Some(cycle);
                }
                _ => {}
            }
        }
    }
    None
}

/// The cycle in words, with the chain of completions folded into one
/// real-time step.
fn describe(txns: &[Txn], cycle: &[(usize, usize, Edge)]) -> String {
    let n = txns.len();
    let mut lines = vec!["a cycle of transactions, each of which must come before the next:".to_string()];
    let mut from: Option<usize> = None;
    for (a, b, e) in cycle {
        if *a < n {
            from = Some(*a);
        }
        if *b >= n {
            continue;
        }
        let Some(f) = from else { continue };
        let (tf, tb) = (&txns[f], &txns[*b]);
        let why = match e {
            Edge::WriteWrite(k) => format!("wrote {:?} at an older version", show(k)),
            Edge::WriteRead(k) => format!("wrote the version of {:?} the next one read", show(k)),
            Edge::ReadWrite(k) => format!("read a version of {:?} the next one overwrote", show(k)),
            Edge::RealTime => format!(
                "completed at {}us, before the next one's commit was sent at {}us",
                tf.complete.unwrap_or_default(),
                tb.rec.invoke_us
            ),
        };
        lines.push(format!("  {} {why}", name(tf.rec)));
        from = None;
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{TxnKind, TxnResult};
    use pactdb_core::state::kv::Versioned;
    use pactdb_core::state::op::Op;
    use pactdb_core::state::txn::{Check, TxnId, TxnRequest, TxnWrite};

    /// A committed transaction reading `reads` (key, version) and writing
    /// `writes` (key, version), sent at `at.0` and answered at `at.1`.
    fn txn(h: &mut History, reads: &[(&str, u64)], writes: &[(&str, u64)], at: (u64, u64)) {
        let seq = h.txns.len() as u64 + 1;
        let req = TxnRequest {
            checks: reads.iter().map(|(k, v)| Check { key: k.as_bytes().to_vec(), version: *v }).collect(),
            writes: writes
                .iter()
                .map(|(k, v)| TxnWrite { key: k.as_bytes().to_vec(), value: Some(format!("{k}@{v}").into_bytes()) })
                .collect(),
            reads: vec![],
        };
        let versions = writes.iter().map(|(k, v)| (k.as_bytes().to_vec(), *v)).collect();
        let id = h.begin_txn(0, TxnKind::Transfer, TxnId { client: 1, session: 0, seq, home: 0 }, vec![], req, at.0);
        h.complete_txn(id, Some(at.1), TxnResult::Committed { versions });
    }

    fn run(h: &History) -> Vec<Violation> {
        check(h, &Observations::default(), &[])
    }

    #[test]
    fn passes_transfers_in_version_and_real_time_order() {
        let mut h = History::default();
        txn(&mut h, &[("a", 0), ("b", 0)], &[("a", 1), ("b", 1)], (0, 10));
        txn(&mut h, &[("a", 1), ("b", 1)], &[("a", 5), ("b", 6)], (20, 30));
        // Concurrent with the next: reads b@6, which the next overwrites.
        txn(&mut h, &[("b", 6)], &[], (40, 90));
        txn(&mut h, &[("a", 5), ("b", 6)], &[("a", 7), ("b", 8)], (50, 60));
        assert_eq!(run(&h), vec![]);
    }

    #[test]
    fn rejects_a_lost_update() {
        // Both read a@1 and both wrote a: one must have missed the other.
        let mut h = History::default();
        txn(&mut h, &[("a", 0)], &[("a", 1)], (0, 10));
        txn(&mut h, &[("a", 1)], &[("a", 5)], (20, 60));
        txn(&mut h, &[("a", 1)], &[("a", 7)], (20, 60));
        let v = run(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].property, PROPERTY);
    }

    #[test]
    fn rejects_a_read_of_an_old_version_after_a_newer_one_completed() {
        let mut h = History::default();
        txn(&mut h, &[("a", 0)], &[("a", 1)], (0, 10));
        txn(&mut h, &[("a", 1)], &[("a", 5)], (20, 30));
        // Sent after the write of a@5 completed, yet it read a@1.
        txn(&mut h, &[("a", 1), ("b", 0)], &[("b", 3)], (40, 50));
        let v = run(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].detail.contains("before the next one's commit was sent"), "{v:?}");
        // Sent before it completed instead, the same reads are fine.
        h.txns[2].invoke_us = 25;
        assert_eq!(run(&h), vec![]);
    }

    #[test]
    fn an_unknown_outcome_takes_part_once_its_write_was_seen() {
        let mut h = History::default();
        txn(&mut h, &[("a", 0)], &[("a", 1)], (0, 10));
        txn(&mut h, &[("a", 1)], &[("a", 5)], (20, 30));
        txn(&mut h, &[("a", 1)], &[("a", 7)], (20, 30));
        h.txns[2].outcome = TxnResult::Unknown { error: "timed out".into() };
        assert_eq!(run(&h), vec![], "nothing shows the third committed");
        let g = h.invoke(2, Op::Get { key: b"a".to_vec() }, 100);
        let seen = Versioned { value: b"a@7".to_vec(), version: 7 };
        h.complete(g, 110, Outcome::Ok(OpResult::Value(Some(seen))));
        assert_eq!(run(&h).len(), 1, "its write was read: it committed, and lost the first's update");
    }
}
