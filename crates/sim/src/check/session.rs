//! Reads weaker than linearizable (`Consistency::Session` and `Stale`),
//! each judged by what it promises:
//!
//! - "session guarantees": a client's session read sees its own earlier
//!   writes (read-your-writes) and nothing older than what its earlier reads
//!   saw (monotonic reads).
//! - "staleness bound": a read at `stale=MS` sees every write that
//!   completed more than MS before the read was invoked.
//! - "causal order": a client handed another client's session token
//!   (`History::handoffs`, as `pactdb get --after` does) sees, in its later
//!   session reads, every single-key write the giver completed before.
//!
//! Values are unique in a run, so a read names the write it saw. A read is
//! "older than" write `w` when the write it saw completed before `w` was
//! invoked (it precedes `w` in every order), or when it saw no value of a
//! key nobody ever deletes. Reads whose value is ambiguous (written twice)
//! or whose key is deleted somewhere are not judged by absence. It judges
//! the register history, so a transaction's writes count as writes, for
//! read-your-writes too (a client's committed transactions).

use super::Violation;
use crate::history::{show, History, OpRecord};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::wire::Consistency;
use std::collections::{BTreeMap, BTreeSet};

/// What a read saw.
enum Seen<'a> {
    Write(&'a OpRecord),
    Absent,
}

pub fn check(registers: &History) -> Vec<Violation> {
    let mut writers: BTreeMap<&[u8], Vec<&OpRecord>> = BTreeMap::new();
    let mut deleted: BTreeSet<&[u8]> = BTreeSet::new();
    for o in &registers.ops {
        match &o.op {
            Op::Put { value, .. } | Op::Cas { value, .. } if !o.is_refused() => {
                writers.entry(value.as_slice()).or_default().push(o)
            }
            Op::Delete { key } => {
                deleted.insert(key.as_slice());
            }
            _ => {}
        }
    }
    let seen = |r: &OpRecord| -> Option<Seen> {
        match r.result()? {
            OpResult::Value(Some(v)) => match writers.get(v.value.as_slice()).map(Vec::as_slice) {
                Some([w]) => Some(Seen::Write(w)),
                _ => None,
            },
            OpResult::Value(None) if !deleted.contains(r.key()) => Some(Seen::Absent),
            _ => None,
        }
    };
    let older = |s: &Seen, w: &OpRecord| match s {
        Seen::Write(x) => x.id != w.id && x.complete_us.is_some_and(|c| c < w.invoke_us),
        Seen::Absent => true,
    };
    let ok_write = |w: &OpRecord| w.is_write() && matches!(w.result(), Some(OpResult::Written { .. }));
    let mut violations = Vec::new();
    let reads = registers.ops.iter().filter(|o| o.op.is_read() && o.result().is_some());
    for r in reads {
        let Some(s) = seen(r) else { continue };
        let key = r.key();
        match r.consistency {
            Consistency::Linearizable => {}
            Consistency::Session => {
                let earlier = |o: &&OpRecord| {
                    o.client == r.client && o.key() == key && o.complete_us.is_some_and(|c| c < r.invoke_us)
                };
                for w in registers.ops.iter().filter(earlier).filter(|w| ok_write(w)) {
                    if older(&s, w) {
                        violations.push(Violation::new(
                            "session guarantees",
                            format!(
                                "client {}'s session read of key {:?} (op {}) missed its own earlier write (op {}): \
                                 read-your-writes",
                                r.client,
                                show(key),
                                r.id,
                                w.id
                            ),
                        ));
                    }
                }
                // Causal order: a token handed over before the read carries
                // every single-key write the giver completed before then.
                let handed = registers.handoffs.iter().filter(|&&(_, to, at)| to == r.client && at <= r.invoke_us);
                for &(from, _, at) in handed {
                    let given = |w: &&OpRecord| {
                        w.client == from
                            && w.key() == key
                            && w.txn.is_none()
                            && ok_write(w)
                            && w.complete_us.is_some_and(|c| c < at)
                    };
                    for w in registers.ops.iter().filter(given) {
                        if older(&s, w) {
                            violations.push(Violation::new(
                                "causal order",
                                format!(
                                    "client {}'s session read of key {:?} (op {}) missed a write (op {}) of client \
                                     {from}, whose token it was handed at {at} us",
                                    r.client,
                                    show(key),
                                    r.id,
                                    w.id
                                ),
                            ));
                        }
                    }
                }
                for r1 in registers.ops.iter().filter(earlier).filter(|o| o.op.is_read()) {
                    if let Some(Seen::Write(w1)) = seen(r1) {
                        if older(&s, w1) {
                            violations.push(Violation::new(
                                "session guarantees",
                                format!(
                                    "client {}'s session read of key {:?} (op {}) saw older than its earlier read \
                                     (op {}, which saw op {}): monotonic reads",
                                    r.client,
                                    show(key),
                                    r.id,
                                    r1.id,
                                    w1.id
                                ),
                            ));
                        }
                    }
                }
            }
            Consistency::Stale { max_ms } => {
                let bound = r.invoke_us.saturating_sub(max_ms * 1_000);
                let before = registers
                    .ops
                    .iter()
                    .filter(|w| w.key() == key && ok_write(w) && w.complete_us.is_some_and(|c| c < bound));
                for w in before {
                    if older(&s, w) {
                        violations.push(Violation::new(
                            "staleness bound",
                            format!(
                                "a read of key {:?} at stale={max_ms} (op {}) missed a write (op {}) that completed \
                                 {} us before it was invoked",
                                show(key),
                                r.id,
                                w.id,
                                r.invoke_us - w.complete_us.unwrap_or(0)
                            ),
                        ));
                    }
                }
            }
        }
    }
    violations
}
