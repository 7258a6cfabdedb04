//! No acknowledged write is lost: the final state of every key, as the
//! group's final primary holds it, must account for every write a client
//! was told succeeded.
//!
//! For each key: the final version must be at least that of every
//! acknowledged put or cas (versions are log indexes and only grow), unless
//! the key is absent and some delete may have run after that write; a final
//! value must have been written by some operation of the history (with the
//! version that operation reported, if it reported one); and an
//! acknowledged delete that began after the final value's write had
//! completed must have removed it.
//!
//! It also reports what the observer caught at the source: a node that
//! acked log entries, or an acceptor that answered, before the simulated
//! disk had made the state it vouched for durable. Such an ack loses an
//! acknowledged write as soon as the wrong node crashes at the wrong time,
//! which end-to-end checks only see when that crash happens.

use super::{authority, FinalReplica, Violation};
use crate::history::{show, History, OpRecord};
use crate::observe::Observations;
use pactdb_core::state::kv::Versioned;
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::types::{ClusterMap, NodeId};
use std::collections::BTreeMap;

const PROPERTY: &str = "no acknowledged write lost";

pub fn check(
    cluster: &ClusterMap,
    history: &History,
    obs: &Observations,
    finals: &[FinalReplica],
    faulty: Option<NodeId>,
) -> Vec<Violation> {
    let mut violations: Vec<Violation> =
        obs.premature_acks.iter().map(|p| Violation::new("durable before ack", p.clone())).collect();
    for key in history.keys() {
        let group = cluster.group_of(&key);
        let Some(auth) = authority(finals, group, faulty) else { continue };
        let state: BTreeMap<&[u8], &Versioned> = auth.kv.iter().map(|(k, v)| (k.as_slice(), v)).collect();
        let ops: Vec<&OpRecord> = history.for_key(&key).collect();
        let final_value = state.get(key.as_slice()).copied();
        let k = show(&key);
        let node = auth.node;
        if let Some(e) = check_key(&ops, final_value) {
            violations.push(Violation::new(PROPERTY, format!("key {k:?} on node {node} (group {group}): {e}")));
        }
    }
    violations
}

fn written_version(o: &OpRecord) -> Option<u64> {
    match o.result() {
        Some(OpResult::Written { version }) => Some(*version),
        _ => None,
    }
}

fn writes_value(o: &OpRecord, value: &[u8]) -> bool {
    matches!(&o.op, Op::Put { value: v, .. } | Op::Cas { value: v, .. } if v == value)
}

/// Returns what is wrong with `final_value` given the operations on its key.
fn check_key(ops: &[&OpRecord], final_value: Option<&Versioned>) -> Option<String> {
    let newest_acked = ops.iter().filter_map(|o| written_version(o).map(|v| (v, *o))).max_by_key(|(v, _)| *v);
    match final_value {
        Some(fv) => {
            if let Some((v, w)) = newest_acked {
                if fv.version < v {
                    return Some(format!(
                        "final version {} is older than acknowledged write #{} (version {v})",
                        fv.version, w.id
                    ));
                }
            }
            let Some(writer) = ops.iter().find(|o| writes_value(o, &fv.value)) else {
                return Some(format!("final value {:?} was never written by any client", show(&fv.value)));
            };
            if let Some(v) = written_version(writer) {
                if v != fv.version {
                    return Some(format!(
                        "final value {:?} has version {}, but its write #{} reported version {v}",
                        show(&fv.value),
                        fv.version,
                        writer.id
                    ));
                }
            }
            // The writer finished before an acknowledged delete began, and
            // no other write can bring its unique value back.
            if let Some(done) = writer.complete_us.filter(|_| writer.result().is_some()) {
                if let Some(d) =
                    ops.iter().find(|o| matches!(o.op, Op::Delete { .. }) && o.result().is_some() && o.invoke_us > done)
                {
                    return Some(format!(
                        "acknowledged delete #{} began after write #{} of the final value {:?} completed",
                        d.id,
                        writer.id,
                        show(&fv.value)
                    ));
                }
            }
            None
        }
        None => {
            let (v, w) = newest_acked?;
            // Some delete, acknowledged or not, must be able to follow it.
            // Some delete must be able to follow it: an indeterminate one
            // may take effect at any time, an acknowledged one must not have
            // finished before the write began.
            let deleted_after = ops.iter().any(|o| {
                matches!(o.op, Op::Delete { .. })
                    && (o.is_indeterminate_write() || o.complete_us.is_some_and(|c| c > w.invoke_us))
            });
            (!deleted_after).then(|| {
                format!(
                    "the key is gone, but acknowledged write #{} (version {v}) was never followed by a delete",
                    w.id
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Outcome;

    fn history(ops: Vec<(Op, u64, u64, Outcome)>) -> History {
        let mut h = History::default();
        for (i, (op, a, b, out)) in ops.into_iter().enumerate() {
            let id = h.invoke(i, op, a);
            h.complete(id, b, out);
        }
        h
    }

    fn put(v: &str) -> Op {
        Op::Put { key: b"k".to_vec(), value: v.as_bytes().to_vec() }
    }

    fn final_state(v: Option<(&str, u64)>) -> Option<Versioned> {
        v.map(|(v, version)| Versioned { value: v.as_bytes().to_vec(), version })
    }

    fn run(h: &History, f: Option<Versioned>) -> Option<String> {
        let ops: Vec<&OpRecord> = h.ops.iter().collect();
        check_key(&ops, f.as_ref())
    }

    #[test]
    fn rejects_a_lost_acknowledged_write() {
        let h = history(vec![
            (put("a"), 0, 10, Outcome::Ok(OpResult::Written { version: 1 })),
            (put("b"), 20, 30, Outcome::Ok(OpResult::Written { version: 2 })),
        ]);
        assert!(run(&h, final_state(Some(("b", 2)))).is_none());
        assert!(run(&h, final_state(Some(("a", 1)))).is_some(), "b was acknowledged, then lost");
        assert!(run(&h, None).is_some(), "no delete ever ran");
    }

    #[test]
    fn rejects_an_ack_before_fsync() {
        let cluster = ClusterMap::new(Default::default(), vec![]);
        let mut obs = Observations::default();
        assert_eq!(check(&cluster, &History::default(), &obs, &[], None), vec![]);
        obs.note_premature("node 2 acked group 0 up to 7, entry 7 not yet durable".into());
        let v = check(&cluster, &History::default(), &obs, &[], None);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].property, "durable before ack");
    }

    #[test]
    fn rejects_a_value_nobody_wrote_and_a_lost_delete() {
        let h = history(vec![
            (put("a"), 0, 10, Outcome::Ok(OpResult::Written { version: 1 })),
            (Op::Delete { key: b"k".to_vec() }, 20, 30, Outcome::Ok(OpResult::Deleted { existed: true })),
        ]);
        assert!(run(&h, None).is_none());
        assert!(run(&h, final_state(Some(("a", 1)))).is_some(), "the delete was lost");
        assert!(run(&h, final_state(Some(("zz", 9)))).is_some(), "a phantom value");
    }
}
