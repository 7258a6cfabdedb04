//! Linearizability per key: a Wing–Gong–Lowe search (with Lowe's
//! memoisation of visited (linearized set, state) pairs) over a register
//! model with versions.
//!
//! The model is the key's value and version, plus a floor: the highest
//! version any write linearized so far produced. Versions are log indexes,
//! so every successful write must produce a version above the floor, and a
//! read must return exactly the current value and version.
//!
//! Indeterminate writes (the client never learned the outcome) may take
//! effect at any point after their invocation, or never: they have no
//! return event, and the search may finish without linearizing them. Their
//! version is taken from any observation of their (unique) value, and is
//! otherwise unknown, which the model treats as "matches any version".
//! Reads that did not succeed tell nothing and are left out. A write the
//! client was definitely refused (`Outcome::Refused`) never took effect:
//! it is left out too, so if it ran after all, a read of its value has no
//! write to explain it and the search fails.
//!
//! Indeterminate writes nobody observed are interchangeable: every
//! unobserved put (and every indeterminate delete, and every unobserved cas
//! with the same expected version) has the same precondition and effect,
//! and its only own constraint is "not before my invocation". So if a
//! linearization uses some of them, one exists that uses the earliest
//! invoked ones instead (swap any later one for an earlier unused one at
//! the same point). Each such group is therefore one pool, and the search
//! takes a pool's earliest unused member as a single candidate, remembering
//! only how many of each pool it used. Moreover a pooled op only ever needs
//! to go immediately before a listed op that is impossible without it and
//! possible with it: if that next op were possible either way, the state
//! without the pooled op is the same or strictly more useful (a real value
//! instead of one nobody can read), and two pooled ops in a row never do
//! more than the second alone. So the search only offers "pooled op, then
//! this op" pairs of that kind. Both steps are exact, and they turn
//! hundreds of refused or timed-out writes from an exponential blow-up into
//! a few candidates.
//!
//! Separately, since every value is written by exactly one operation, one
//! value seen with two different versions means a write executed twice.
//!
//! Transactions take part through their writes: the caller passes
//! `History::register_history`, in which every write of a transaction that
//! committed is a put with the version its commit reported, spanning the
//! commit's real-time interval, and every write of one whose outcome is
//! unknown is an indeterminate put. So single-key reads of a transaction's
//! keys are checked against its writes, and a value of an aborted
//! transaction has no write that could explain reading it.

use super::Violation;
use crate::history::{show, History, Micros, OpRecord, Outcome};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::wire::Consistency;
use std::collections::{BTreeMap, HashSet};
use xxhash_rust::xxh3::Xxh3;

/// Most search steps spent on one key before the checker gives up (and
/// reports that, since an undecided history is not a passing one). Each
/// step may remember one 16-byte key, so this also bounds memory.
const SEARCH_BUDGET: u64 = 5_000_000;
/// The value of every unobserved indeterminate write: no read returned it,
/// so which of them the register holds can never matter.
const PHANTOM: ValueId = ValueId::MAX;

/// The register's value: 0 is "absent", otherwise an interned value.
type ValueId = u32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Reg {
    value: ValueId,
    /// 0 when absent or unknown.
    version: u64,
    floor: u64,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Get(Option<(ValueId, u64)>),
    Put { value: ValueId, version: Option<u64> },
    Delete { existed: Option<bool> },
    Cas { expected: u64, value: ValueId, result: Option<CasResult> },
}

#[derive(Clone, Copy, Debug)]
enum CasResult {
    Written(u64),
    Failed(u64),
}

struct ModelOp {
    kind: Kind,
    /// Version of this write's value if anyone ever observed it.
    known_version: Option<u64>,
}

impl ModelOp {
    /// The state after this operation, or `None` if it cannot happen in `s`.
    fn step(&self, s: Reg) -> Option<Reg> {
        let present = s.value != 0;
        // Whether the current version equals `v` (an unknown version of a
        // present value matches any nonzero one), and the refined state.
        let version_is = |v: u64| -> Option<Reg> {
            match (present, s.version) {
                (false, _) => (v == 0).then_some(s),
                (true, 0) => (v != 0).then_some(Reg { version: v, floor: s.floor.max(v), ..s }),
                (true, cur) => (cur == v).then_some(s),
            }
        };
        let write = |value: ValueId, version: Option<u64>| -> Option<Reg> {
            match version {
                Some(v) if v <= s.floor => None,
                Some(v) => Some(Reg { value, version: v, floor: v }),
                None => Some(Reg { value, version: 0, floor: s.floor }),
            }
        };
        match self.kind {
            Kind::Get(None) => (!present).then_some(s),
            Kind::Get(Some((value, version))) => {
                if value != s.value {
                    return None;
                }
                version_is(version)
            }
            Kind::Put { value, version } => write(value, version.or(self.known_version)),
            Kind::Delete { existed } => {
                if existed.is_some_and(|e| e != present) {
                    return None;
                }
                Some(Reg { value: 0, version: 0, floor: s.floor })
            }
            Kind::Cas { expected, value, result } => match result {
                Some(CasResult::Written(v)) => {
                    version_is(expected)?;
                    write(value, Some(v))
                }
                Some(CasResult::Failed(current)) => {
                    if current == expected {
                        return None;
                    }
                    version_is(current)
                }
                None => {
                    version_is(expected)?;
                    write(value, self.known_version)
                }
            },
        }
    }
}

/// Checks every key's history.
pub fn check(history: &History) -> Vec<Violation> {
    let mut interner: BTreeMap<Vec<u8>, ValueId> = BTreeMap::new();
    let mut versions: BTreeMap<ValueId, (u64, usize)> = BTreeMap::new();
    let mut violations = observe_versions(&history.ops, &mut interner, &mut versions);
    for key in history.keys() {
        // Session and stale reads promise less (`check::session` judges them).
        let ops: Vec<&OpRecord> =
            history.for_key(&key).filter(|o| o.is_write() || o.consistency == Consistency::Linearizable).collect();
        if let Err(e) = check_key(&ops, &mut interner, &versions) {
            violations.push(Violation::new("linearizability", format!("key {:?}: {e}", show(&key))));
        }
    }
    violations
}

/// Notes the version every value was seen with (a successful write's, or a
/// read's), interning the values; a value seen with two versions was
/// written twice, which is reported.
fn observe_versions<'a>(
    ops: impl IntoIterator<Item = &'a OpRecord>,
    interner: &mut BTreeMap<Vec<u8>, ValueId>,
    versions: &mut BTreeMap<ValueId, (u64, usize)>,
) -> Vec<Violation> {
    let mut violations = Vec::new();
    for o in ops {
        let seen = match (&o.op, o.result()) {
            (Op::Put { value, .. } | Op::Cas { value, .. }, Some(OpResult::Written { version })) => {
                Some((value.clone(), *version))
            }
            (Op::Get { .. }, Some(OpResult::Value(Some(v)))) => Some((v.value.clone(), v.version)),
            _ => None,
        };
        if let Some((value, version)) = seen {
            let id = intern(interner, &value);
            let first = *versions.entry(id).or_insert((version, o.id));
            if first.0 != version {
                violations.push(Violation::new(
                    "exactly-once",
                    format!(
                        "value {:?} was seen with version {} (op #{}) and version {} (op #{}): one write took effect twice",
                        show(&value),
                        first.0,
                        first.1,
                        version,
                        o.id
                    ),
                ));
            }
        }
    }
    violations
}

fn intern(interner: &mut BTreeMap<Vec<u8>, ValueId>, value: &[u8]) -> ValueId {
    let next = interner.len() as ValueId + 1;
    *interner.entry(value.to_vec()).or_insert(next)
}

/// One operation of the search, with its real-time interval.
struct Timed<'a> {
    rec: &'a OpRecord,
    model: ModelOp,
    invoke: Micros,
    /// `None` for an indeterminate write: it never returns.
    ret: Option<Micros>,
}

fn model_of(
    rec: &OpRecord,
    interner: &mut BTreeMap<Vec<u8>, ValueId>,
    versions: &BTreeMap<ValueId, (u64, usize)>,
) -> Option<ModelOp> {
    let result = match &rec.outcome {
        Outcome::Ok(r) => Some(r),
        _ if rec.op.is_read() => return None,
        // A definitely refused write never took effect: it is left out, so
        // a read of its (unique) value has no write to explain it.
        Outcome::Refused(_) => return None,
        Outcome::Pending | Outcome::Failed(_) => None,
    };
    let mut value_id = |v: &[u8]| intern(interner, v);
    let (kind, value) = match (&rec.op, result) {
        (Op::Get { .. }, Some(OpResult::Value(v))) => {
            (Kind::Get(v.as_ref().map(|v| (value_id(&v.value), v.version))), None)
        }
        (Op::Put { value, .. }, r) => {
            let id = value_id(value);
            let version = match r {
                Some(OpResult::Written { version }) => Some(*version),
                None => None,
                Some(other) => panic!("a put answered {other:?}"),
            };
            (Kind::Put { value: id, version }, Some(id))
        }
        (Op::Delete { .. }, r) => {
            let existed = match r {
                Some(OpResult::Deleted { existed }) => Some(*existed),
                None => None,
                Some(other) => panic!("a delete answered {other:?}"),
            };
            (Kind::Delete { existed }, None)
        }
        (Op::Cas { expected_version, value, .. }, r) => {
            let id = value_id(value);
            let result = match r {
                Some(OpResult::Written { version }) => Some(CasResult::Written(*version)),
                Some(OpResult::CasFailed { current_version }) => Some(CasResult::Failed(*current_version)),
                None => None,
                Some(other) => panic!("a cas answered {other:?}"),
            };
            (Kind::Cas { expected: *expected_version, value: id, result }, Some(id))
        }
        (op, r) => panic!("{op:?} answered {r:?}"),
    };
    let known_version = value.and_then(|id| versions.get(&id)).map(|(v, _)| *v);
    Some(ModelOp { kind, known_version })
}

/// The search over one key's operations.
fn check_key(
    recs: &[&OpRecord],
    interner: &mut BTreeMap<Vec<u8>, ValueId>,
    versions: &BTreeMap<ValueId, (u64, usize)>,
) -> Result<(), String> {
    let mut ops = Vec::new();
    let mut pools: BTreeMap<PoolKind, Vec<Micros>> = BTreeMap::new();
    for r in recs {
        let Some(model) = model_of(r, interner, versions) else { continue };
        if r.is_indeterminate_write() && model.known_version.is_none() {
            let kind = match model.kind {
                Kind::Put { .. } => PoolKind::Put,
                Kind::Delete { .. } => PoolKind::Delete,
                Kind::Cas { expected, .. } => PoolKind::Cas(expected),
                Kind::Get(_) => unreachable!("reads are never indeterminate writes"),
            };
            pools.entry(kind).or_default().push(r.invoke_us);
            continue;
        }
        let ret = if r.is_indeterminate_write() { None } else { r.complete_us };
        ops.push(Timed { rec: r, model, invoke: r.invoke_us, ret });
    }
    let pools: Vec<Pool> = pools
        .into_iter()
        .map(|(kind, mut invokes)| {
            invokes.sort_unstable();
            Pool { model: kind.model(), invokes }
        })
        .collect();
    search(&ops, &pools, SEARCH_BUDGET)
}

/// What makes unobserved indeterminate writes interchangeable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PoolKind {
    Put,
    Delete,
    Cas(u64),
}

impl PoolKind {
    fn model(self) -> ModelOp {
        let kind = match self {
            PoolKind::Put => Kind::Put { value: PHANTOM, version: None },
            PoolKind::Delete => Kind::Delete { existed: None },
            PoolKind::Cas(expected) => Kind::Cas { expected, value: PHANTOM, result: None },
        };
        ModelOp { kind, known_version: None }
    }
}

/// Interchangeable operations: the search uses the earliest unused one.
struct Pool {
    model: ModelOp,
    /// Invocation times, earliest first.
    invokes: Vec<Micros>,
}

/// Entry of the doubly linked event list: a call or a return of `op`.
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
    time: Micros,
}

/// A choice the search can make next.
#[derive(Clone, Copy, Debug)]
enum Cand {
    /// Linearize the op whose call is this event.
    Call(usize),
    /// Linearize the earliest unused member of this pool, then the op whose
    /// call is this event (which needs it).
    PoolThen(usize, usize),
}

/// One level of the depth-first search.
struct Frame {
    state: Reg,
    cands: Vec<Cand>,
    next: usize,
    /// The choice that led here, undone when the frame is abandoned.
    via: Option<Cand>,
}

fn search(ops: &[Timed], pools: &[Pool], budget: u64) -> Result<(), String> {
    let mut events: Vec<Event> = Vec::with_capacity(ops.len() * 2);
    for (i, o) in ops.iter().enumerate() {
        events.push(Event { op: i, is_call: true, time: o.invoke });
        if let Some(r) = o.ret {
            events.push(Event { op: i, is_call: false, time: r });
        }
    }
    // Calls sort before returns at the same instant: such operations count
    // as concurrent, which can only make the check more permissive.
    events.sort_by_key(|e| (e.time, !e.is_call, e.op));
    let n = events.len();
    let head = n;
    let nil = usize::MAX;
    let mut next: Vec<usize> = (0..=n).map(|i| if i + 1 < n { i + 1 } else { nil }).collect();
    let mut prev: Vec<usize> = (0..=n).map(|i| if i == 0 { head } else { i - 1 }).collect();
    next[head] = if n > 0 { 0 } else { nil };
    let mut ret_of = vec![nil; ops.len()];
    for (i, e) in events.iter().enumerate() {
        if !e.is_call {
            ret_of[e.op] = i;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, q) = (prev[i], next[i]);
        next[p] = q;
        if q != nil {
            prev[q] = p;
        }
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, i: usize| {
        let (p, q) = (prev[i], next[i]);
        next[p] = i;
        if q != nil {
            prev[q] = i;
        }
    };
    // The choices open in `state`: every call before the first return still
    // in the list that is possible now, and for one that is not, each pool
    // (whose next member was invoked by then) that makes it possible. Also
    // names the op of that first return (the one the search must place).
    let candidates = |next: &Vec<usize>, used: &[usize], state: Reg| -> (Vec<Cand>, Option<usize>) {
        let mut calls = Vec::new();
        let mut e = next[head];
        while e != nil && events[e].is_call {
            calls.push(e);
            e = next[e];
        }
        let first_return = (e != nil).then(|| events[e]);
        let until = first_return.map_or(Micros::MAX, |r| r.time);
        let mut cands = Vec::new();
        for e in calls {
            let model = &ops[events[e].op].model;
            if model.step(state).is_some() {
                cands.push(Cand::Call(e));
                continue;
            }
            for (p, pool) in pools.iter().enumerate() {
                let available = pool.invokes.get(used[p]).is_some_and(|&t| t <= until);
                if available && pool.model.step(state).and_then(|s| model.step(s)).is_some() {
                    cands.push(Cand::PoolThen(p, e));
                }
            }
        }
        (cands, first_return.map(|r| r.op))
    };

    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut used = vec![0usize; pools.len()];
    // Visited (linearized set, pool use, state) triples, as 128-bit hashes:
    // the sets themselves would need gigabytes on long histories, and a
    // collision (which could only hide a linearization, never invent one)
    // is vanishingly unlikely at this many entries.
    let mut cache: HashSet<u128> = HashSet::new();
    let key = |linearized: &[u64], used: &[usize], s: Reg| -> u128 {
        let mut h = Xxh3::new();
        linearized.iter().for_each(|w| h.update(&w.to_le_bytes()));
        used.iter().for_each(|u| h.update(&(*u as u64).to_le_bytes()));
        for w in [s.value as u64, s.version, s.floor] {
            h.update(&w.to_le_bytes());
        }
        h.digest128()
    };
    let mut returns_left = ops.iter().filter(|o| o.ret.is_some()).count();
    if returns_left == 0 {
        return Ok(());
    }
    let start = Reg { value: 0, version: 0, floor: 0 };
    let (cands, blocker) = candidates(&next, &used, start);
    let mut frames = vec![Frame { state: start, cands, next: 0, via: None }];
    // The deepest point reached, for the report: (depth, op to place there).
    let mut deepest: (usize, Option<usize>) = (0, blocker);
    let mut steps: u64 = 0;
    loop {
        steps += 1;
        if steps > budget {
            return Err(format!("search gave up after {budget} steps over {} operations", ops.len()));
        }
        let frame = frames.last_mut().expect("the root frame is never popped");
        if frame.next == frame.cands.len() {
            // Every choice from here failed: undo the one that led here.
            let done = frames.pop().expect("non-empty");
            let Some(via) = done.via else { return Err(explain(ops, deepest.1)) };
            let (Cand::Call(e) | Cand::PoolThen(_, e)) = via;
            if let Cand::PoolThen(p, _) = via {
                used[p] -= 1;
            }
            let op = events[e].op;
            linearized[op / 64] &= !(1 << (op % 64));
            if ret_of[op] != nil {
                relink(&mut next, &mut prev, ret_of[op]);
                returns_left += 1;
            }
            relink(&mut next, &mut prev, e);
            continue;
        }
        let cand = frame.cands[frame.next];
        frame.next += 1;
        let (Cand::Call(e) | Cand::PoolThen(_, e)) = cand;
        let op = events[e].op;
        let state = match cand {
            Cand::Call(_) => ops[op].model.step(frame.state),
            Cand::PoolThen(p, _) => pools[p].model.step(frame.state).and_then(|s| ops[op].model.step(s)),
        };
        let Some(state) = state else { continue };
        if let Cand::PoolThen(p, _) = cand {
            used[p] += 1;
        }
        linearized[op / 64] |= 1 << (op % 64);
        if !cache.insert(key(&linearized, &used, state)) {
            if let Cand::PoolThen(p, _) = cand {
                used[p] -= 1;
            }
            linearized[op / 64] &= !(1 << (op % 64));
            continue;
        }
        unlink(&mut next, &mut prev, e);
        if ret_of[op] != nil {
            unlink(&mut next, &mut prev, ret_of[op]);
            returns_left -= 1;
        }
        if returns_left == 0 {
            return Ok(());
        }
        let (cands, blocker) = candidates(&next, &used, state);
        if frames.len() >= deepest.0 {
            deepest = (frames.len(), blocker);
        }
        frames.push(Frame { state, cands, next: 0, via: Some(cand) });
    }
}

/// Describes where the search got stuck: the operation that could not be
/// placed, and every operation overlapping it in real time.
fn explain(ops: &[Timed], stuck: Option<usize>) -> String {
    let Some(stuck) = stuck else { return "no linearization".to_string() };
    let s = &ops[stuck];
    let end = s.ret.unwrap_or(Micros::MAX);
    let mut lines = vec![format!(
        "no linearization; it cannot place op #{} (client {}, {}), overlapping:",
        s.rec.id,
        s.rec.client,
        describe(s)
    )];
    let mut shown = 0;
    for o in ops.iter() {
        let o_end = o.ret.unwrap_or(Micros::MAX);
        let recent_write = o.rec.is_write() && o_end <= s.invoke && s.invoke - o_end.min(s.invoke) < 200_000;
        if (o.invoke <= end && o_end >= s.invoke) || recent_write {
            if shown >= 24 {
                lines.push("  ...".to_string());
                break;
            }
            shown += 1;
            lines.push(format!("  #{} client {}: {}", o.rec.id, o.rec.client, describe(o)));
        }
    }
    lines.join("\n")
}

fn describe(o: &Timed) -> String {
    let ret = o.ret.map_or("never".to_string(), |r| format!("{r}us"));
    let op = match &o.rec.op {
        Op::Get { .. } => "get".to_string(),
        Op::Put { value, .. } => format!("put {:?}", show(value)),
        Op::Delete { .. } => "delete".to_string(),
        Op::Cas { expected_version, value, .. } => format!("cas v{expected_version} -> {:?}", show(value)),
        Op::Commit(_) | Op::TxnStatus { .. } | Op::Scan { .. } => format!("{:?}", o.rec.op),
    };
    let outcome = match &o.rec.outcome {
        Outcome::Ok(OpResult::Value(Some(v))) => format!("{:?}@v{}", show(&v.value), v.version),
        Outcome::Ok(r) => format!("{r:?}"),
        Outcome::Failed(e) => format!("failed ({e})"),
        Outcome::Refused(e) => format!("refused ({e})"),
        Outcome::Pending => "pending".to_string(),
    };
    // A transaction's write is shown with the transaction it belongs to.
    let txn = o.rec.txn.map_or(String::new(), |t| format!("txn #{t} "));
    format!("{txn}{op} => {outcome} [{}us, {ret}]", o.invoke)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::state::kv::Versioned;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rec(h: &mut History, client: usize, op: Op, t: (Micros, Option<Micros>), outcome: Outcome) {
        let id = h.invoke(client, op, t.0);
        if let Some(end) = t.1 {
            h.complete(id, end, outcome);
        }
    }

    fn put(v: &str) -> Op {
        Op::Put { key: b"k".to_vec(), value: v.as_bytes().to_vec() }
    }

    fn get() -> Op {
        Op::Get { key: b"k".to_vec() }
    }

    fn read(v: &str, version: u64) -> Outcome {
        Outcome::Ok(OpResult::Value(Some(Versioned { value: v.as_bytes().to_vec(), version })))
    }

    #[test]
    fn accepts_a_sequential_history() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 1 }));
        rec(&mut h, 1, get(), (20, Some(30)), read("a", 1));
        rec(&mut h, 0, put("b"), (40, Some(50)), Outcome::Ok(OpResult::Written { version: 2 }));
        rec(&mut h, 1, get(), (60, Some(70)), read("b", 2));
        assert_eq!(check(&h), vec![]);
    }

    #[test]
    fn rejects_a_stale_read() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 1 }));
        rec(&mut h, 0, put("b"), (20, Some(30)), Outcome::Ok(OpResult::Written { version: 2 }));
        rec(&mut h, 1, get(), (40, Some(50)), read("a", 1));
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].property, "linearizability");
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_late_or_never() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 1 }));
        rec(&mut h, 1, put("x"), (15, Some(500)), Outcome::Failed("timed out".into()));
        rec(&mut h, 2, get(), (20, Some(30)), read("a", 1));
        rec(&mut h, 2, get(), (600, Some(700)), read("x", 5));
        rec(&mut h, 2, get(), (800, Some(900)), read("x", 5));
        assert_eq!(check(&h), vec![]);
        // But once overwritten it cannot come back.
        rec(&mut h, 0, put("c"), (1000, Some(1010)), Outcome::Ok(OpResult::Written { version: 6 }));
        rec(&mut h, 2, get(), (1100, Some(1200)), read("x", 5));
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn rejects_a_cas_that_succeeded_on_the_wrong_version() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 3 }));
        let cas = Op::Cas { key: b"k".to_vec(), expected_version: 2, value: b"b".to_vec() };
        rec(&mut h, 1, cas, (20, Some(30)), Outcome::Ok(OpResult::Written { version: 4 }));
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn rejects_a_write_executed_twice() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 7 }));
        rec(&mut h, 1, get(), (20, Some(30)), read("a", 9));
        let v = check(&h);
        assert!(v.iter().any(|v| v.property == "exactly-once"), "{v:?}");
    }

    #[test]
    fn a_definitely_refused_write_must_never_be_seen() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 1 }));
        rec(&mut h, 1, put("x"), (15, Some(30)), Outcome::Refused("below min_members".into()));
        rec(&mut h, 2, get(), (40, Some(50)), read("a", 1));
        assert_eq!(check(&h), vec![]);
        // It ran after all: no write explains the read.
        rec(&mut h, 2, get(), (60, Some(70)), read("x", 2));
        let v = check(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].property, "linearizability");
        // Had the client only timed out, the same read would be fine.
        h.ops[1].outcome = Outcome::Failed("timed out".into());
        assert_eq!(check(&h), vec![]);
    }

    /// The plain search: every order of the operations that respects real
    /// time (an op that returned before another was invoked goes first),
    /// each indeterminate write placed anywhere after its invocation or
    /// left out, with none of the optimised search's pools, pairs or memo.
    fn plain_search(recs: &[&OpRecord]) -> bool {
        let mut interner = BTreeMap::new();
        let mut versions = BTreeMap::new();
        observe_versions(recs.iter().copied(), &mut interner, &mut versions);
        let ops: Vec<(ModelOp, Micros, Option<Micros>)> = recs
            .iter()
            .filter_map(|r| {
                let model = model_of(r, &mut interner, &versions)?;
                let ret = if r.is_indeterminate_write() { None } else { r.complete_us };
                Some((model, r.invoke_us, ret))
            })
            .collect();
        fn dfs(ops: &[(ModelOp, Micros, Option<Micros>)], placed: u64, s: Reg) -> bool {
            let unplaced = |i: usize| placed & (1 << i) == 0;
            if (0..ops.len()).all(|i| !unplaced(i) || ops[i].2.is_none()) {
                return true;
            }
            (0..ops.len()).filter(|&i| unplaced(i)).any(|i| {
                let must_wait = (0..ops.len()).any(|j| unplaced(j) && ops[j].2.is_some_and(|r| r < ops[i].1));
                !must_wait && ops[i].0.step(s).is_some_and(|next| dfs(ops, placed | (1 << i), next))
            })
        }
        dfs(&ops, 0, Reg { value: 0, version: 0, floor: 0 })
    }

    /// A random history of one key: operations with random intervals, run
    /// against a true register at a random point inside each interval, so
    /// most histories are linearizable; some writes end indeterminate (run
    /// or not), some reads fail, and half the histories get one result
    /// corrupted, which makes many of them not linearizable.
    fn random_history(rng: &mut ChaCha8Rng) -> History {
        let n = rng.gen_range(2..=7);
        let mut ops: Vec<(Op, Micros, Micros, Micros)> = (0..n)
            .map(|i| {
                let op = match rng.gen_range(0..4) {
                    0 => get(),
                    1 => put(&format!("v{i}")),
                    2 => Op::Delete { key: b"k".to_vec() },
                    _ => Op::Cas {
                        key: b"k".to_vec(),
                        expected_version: rng.gen_range(0..4),
                        value: format!("v{i}").into_bytes(),
                    },
                };
                let invoke = rng.gen_range(0..60);
                let ret = invoke + rng.gen_range(1..30);
                (op, invoke, rng.gen_range(invoke..=ret), ret)
            })
            .collect();
        ops.sort_by_key(|o| o.2);
        let mut value: Option<(Vec<u8>, u64)> = None;
        let mut next_version = 1;
        let mut h = History::default();
        for (client, (op, invoke, _, ret)) in ops.into_iter().enumerate() {
            let indeterminate = !op.is_read() && rng.gen_bool(0.25);
            let runs = !indeterminate || rng.gen_bool(0.5);
            let result = match &op {
                Op::Get { .. } => OpResult::Value(value.clone().map(|(value, version)| Versioned { value, version })),
                Op::Put { value: v, .. } => {
                    let version = next_version;
                    if runs {
                        value = Some((v.clone(), version));
                        next_version += 1;
                    }
                    OpResult::Written { version }
                }
                Op::Delete { .. } => {
                    let existed = value.is_some();
                    if runs {
                        value = None;
                    }
                    OpResult::Deleted { existed }
                }
                Op::Cas { expected_version, value: v, .. } => {
                    let current = value.as_ref().map_or(0, |(_, version)| *version);
                    if current == *expected_version {
                        let version = next_version;
                        if runs {
                            value = Some((v.clone(), version));
                            next_version += 1;
                        }
                        OpResult::Written { version }
                    } else {
                        OpResult::CasFailed { current_version: current }
                    }
                }
                _ => unreachable!("only register operations"),
            };
            let failed_read = op.is_read() && rng.gen_bool(0.1);
            let outcome =
                if indeterminate || failed_read { Outcome::Failed("timed out".into()) } else { Outcome::Ok(result) };
            rec(&mut h, client, op, (invoke, Some(ret)), outcome);
        }
        if rng.gen_bool(0.5) {
            let i = rng.gen_range(0..h.ops.len());
            if let Outcome::Ok(r) = &mut h.ops[i].outcome {
                match r {
                    OpResult::Value(Some(v)) => v.version += rng.gen_range(1..3),
                    OpResult::Value(None) => {
                        *r = OpResult::Value(Some(Versioned { value: b"v0".to_vec(), version: 1 }))
                    }
                    OpResult::Written { version } => *version = rng.gen_range(1..6),
                    OpResult::Deleted { existed } => *existed = !*existed,
                    OpResult::CasFailed { current_version } => *current_version = rng.gen_range(0..4),
                    _ => {}
                }
            }
        }
        h
    }

    #[test]
    fn the_optimised_search_agrees_with_the_plain_search_on_random_small_histories() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let (mut linearizable, mut not) = (0, 0);
        for case in 0..4_000 {
            let h = random_history(&mut rng);
            let recs: Vec<&OpRecord> = h.ops.iter().collect();
            let plain = plain_search(&recs);
            let mut interner = BTreeMap::new();
            let mut versions = BTreeMap::new();
            observe_versions(&h.ops, &mut interner, &mut versions);
            let optimised = check_key(&recs, &mut interner, &versions);
            assert_eq!(
                optimised.is_ok(),
                plain,
                "case {case}: the optimised search says {optimised:?}, the plain one {plain}, on:\n{:#?}",
                h.ops
            );
            if plain {
                linearizable += 1;
            } else {
                not += 1;
            }
        }
        // Both verdicts were exercised, many times.
        assert!(linearizable > 500 && not > 500, "{linearizable} linearizable, {not} not");
    }

    #[test]
    fn rejects_versions_going_backwards() {
        let mut h = History::default();
        rec(&mut h, 0, put("a"), (0, Some(10)), Outcome::Ok(OpResult::Written { version: 5 }));
        rec(&mut h, 0, put("b"), (20, Some(30)), Outcome::Ok(OpResult::Written { version: 4 }));
        assert_eq!(check(&h).len(), 1);
    }
}
