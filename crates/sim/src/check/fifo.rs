//! FIFO order of a front end's writes: within one client session of one
//! group, the single-key writes committed in the group's log carry
//! increasing sequence numbers in log order. A front end numbers its
//! requests in the order it issues them, so a write committed after a
//! later-issued write of the same session was applied out of the order it
//! was issued in, whatever the clients were told (a write that timed out,
//! or whose answer was lost, counts too: it ran).
//!
//! It reads the observer's record of committed writes
//! (`Observations::fifo_writes`), noted as replicas commit, so compaction
//! cannot hide one. The same request id committed twice is the
//! exactly-once checker's to report, not this one's. Reads (never logged
//! in a passive group) and transactions (ordered by two-phase commit, see
//! ARCHITECTURE.md) are outside the order.

use super::Violation;
use crate::observe::Observations;
use pactdb_core::types::{Index, RequestId};
use std::collections::HashMap;

/// Violations reported per run at most; one is enough to fail a seed.
const MAX_REPORTED: usize = 8;

pub fn check(obs: &Observations) -> Vec<Violation> {
    let mut v = Vec::new();
    for (group, writes) in &obs.fifo_writes {
        // Per session: the highest seq committed so far, and where.
        let mut last: HashMap<(u64, Index), (u64, Index)> = HashMap::new();
        for (&index, &RequestId { client, session, seq }) in writes {
            let before = last.entry((client, session)).or_insert((seq, index));
            if seq < before.0 && v.len() < MAX_REPORTED {
                v.push(Violation::new(
                    "fifo",
                    format!(
                        "group {group}: client {client:x} session {session}: request seq {seq} committed at \
                         index {index}, after seq {} (issued later) at index {}",
                        before.0, before.1
                    ),
                ));
            }
            if seq > before.0 {
                *before = (seq, index);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(client: u64, session: Index, seq: u64) -> RequestId {
        RequestId { client, session, seq }
    }

    #[test]
    fn a_session_write_committed_after_a_later_issued_one_is_reported() {
        let mut obs = Observations::default();
        let log = obs.fifo_writes.entry(0).or_default();
        // Client 1's session at 2: seqs 1, 3 in order; then 2 after 3.
        log.insert(3, rid(1, 2, 1));
        log.insert(4, rid(1, 2, 3));
        // Another session and another client interleave in their own order.
        log.insert(5, rid(1, 9, 1));
        log.insert(6, rid(2, 2, 5));
        log.insert(7, rid(1, 2, 2));
        let v = check(&obs);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].property, "fifo");
        assert!(v[0].detail.contains("seq 2 committed at index 7, after seq 3"), "{}", v[0].detail);
    }

    #[test]
    fn writes_in_issue_order_with_gaps_and_a_duplicate_pass() {
        let mut obs = Observations::default();
        let log = obs.fifo_writes.entry(1).or_default();
        // Gaps are reads, transactions or other groups' requests; a
        // duplicate is the exactly-once checker's.
        for (i, seq) in [1, 4, 4, 9, 12].into_iter().enumerate() {
            log.insert(i as Index + 1, rid(7, 0, seq));
        }
        assert!(check(&obs).is_empty());
    }
}
