//! Liveness: once every fault is healed, the cluster serves again. Every
//! operation invoked after the quiet phase has had `SETTLE_MS` to restore
//! views must succeed within `BOUND_MS`, and nothing invoked before the
//! clients stop may still be outstanding at the end.

use super::Violation;
use crate::history::{History, Micros, Outcome};

/// Time the quiet phase gives the cluster to restart, re-elect and re-admit
/// before operations must succeed promptly.
pub const SETTLE_MS: u64 = 3_000;
/// How long an operation invoked after `SETTLE_MS` may take.
pub const BOUND_MS: u64 = 2_000;
/// Clients stop invoking this long before the run ends.
pub const DRAIN_MS: u64 = 2_500;

const PROPERTY: &str = "liveness";

pub fn check(history: &History, heal_at: Micros, end_at: Micros) -> Vec<Violation> {
    let mut v = Vec::new();
    let settled = heal_at + SETTLE_MS * 1_000;
    let last_invoke = end_at.saturating_sub(DRAIN_MS * 1_000);
    for o in &history.ops {
        if o.invoke_us > last_invoke {
            continue;
        }
        let late = |what: &str| {
            Violation::new(PROPERTY, format!("op #{} ({:?}) invoked at {}us {what}", o.id, o.op, o.invoke_us))
        };
        match (&o.outcome, o.complete_us) {
            (Outcome::Pending, _) => v.push(late("never completed")),
            (Outcome::Failed(e), Some(_)) if o.invoke_us >= settled => {
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
        assert_eq!(check(&h, heal, end), vec![]);
        h.invoke(1, get(), heal + 4_500_000);
        assert_eq!(check(&h, heal, end).len(), 1, "still pending at the end");
    }
}
