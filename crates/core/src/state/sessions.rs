//! The exactly-once table: the response of every recent request, by client,
//! replicated through the log so that any replica answers a retry with the
//! original response instead of running it again.
//!
//! It must never answer a request it has forgotten as new: a sequence number
//! at or below a client's `forgotten_upto` is `Expired`, never `New`.

use crate::limits::{MAX_SESSIONS, MAX_SESSION_RESPONSES};
use crate::state::kv::FixedHashMap;
use crate::state::op::OpResult;
use crate::types::{Index, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What a replica remembers of one client: the responses of its recent
/// requests, so a retry gets the original answer instead of running again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session<R> {
    /// Sorted by sequence number, at most `MAX_SESSION_RESPONSES`. A
    /// client's requests complete nearly in order, so a response almost
    /// always goes at the back and the oldest leaves from the front: a
    /// sorted deque does that without the allocations of a B-tree (whose
    /// upkeep was the largest part of recording a response in the profile).
    responses: VecDeque<(u64, R)>,
    /// Every seq at or below this was forgotten; a retry of one gets
    /// `SessionExpired` instead of running twice.
    forgotten_upto: u64,
    last_active: Index,
}

impl<R> Default for Session<R> {
    fn default() -> Self {
        Session { responses: VecDeque::new(), forgotten_upto: 0, last_active: 0 }
    }
}

/// Outcome of looking a request up in the session table.
#[derive(Debug, PartialEq, Eq)]
pub enum Dedup<'a, R = OpResult> {
    New,
    Done(&'a R),
    Expired,
}

/// The exactly-once table, replicated through the log: every replica records
/// the response of every committed write under its request id. `R` is what
/// is remembered: a client's response, or (for a participant's record of
/// transactions it resolved) its final vote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions<R = OpResult> {
    /// A fixed hash (not the process-seeded default): cheaper for these
    /// integer keys, and the same on every replica.
    by_client: FixedHashMap<u64, Session<R>>,
    /// (last_active, client) of every record in log order, so the least
    /// recently active client is at the front. An entry whose client has
    /// been active since is stale and skipped; the queue is rebuilt when
    /// stale entries outnumber live ones (so it stays within twice the
    /// number of clients).
    activity: VecDeque<(Index, u64)>,
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions { by_client: FixedHashMap::default(), activity: VecDeque::new() }
    }
}

impl<R> Sessions<R> {
    pub fn lookup(&self, id: RequestId) -> Dedup<'_, R> {
        match self.by_client.get(&id.client) {
            None => Dedup::New,
            Some(s) => match s.responses.binary_search_by_key(&id.seq, |(seq, _)| *seq) {
                Ok(at) => Dedup::Done(&s.responses[at].1),
                Err(_) if id.seq <= s.forgotten_upto => Dedup::Expired,
                Err(_) => Dedup::New,
            },
        }
    }

    /// Records `response` for request `id`, applied at log `index` (indexes
    /// only grow from one call to the next).
    pub fn record(&mut self, id: RequestId, index: Index, response: R) {
        let s = self.by_client.entry(id.client).or_default();
        s.last_active = index;
        self.activity.push_back((index, id.client));
        match s.responses.back() {
            Some((last, _)) if *last >= id.seq => match s.responses.binary_search_by_key(&id.seq, |(seq, _)| *seq) {
                Ok(at) => s.responses[at].1 = response,
                Err(at) => s.responses.insert(at, (id.seq, response)),
            },
            _ => s.responses.push_back((id.seq, response)),
        }
        while s.responses.len() > MAX_SESSION_RESPONSES {
            let (oldest, _) = s.responses.pop_front().expect("non-empty");
            s.forgotten_upto = s.forgotten_upto.max(oldest);
        }
        while self.by_client.len() > MAX_SESSIONS {
            let (at, client) = self.activity.pop_front().expect("every client has a live activity entry");
            if self.by_client.get(&client).is_some_and(|s| s.last_active == at) {
                self.by_client.remove(&client);
            }
        }
        if self.activity.len() > 2 * self.by_client.len() + 64 {
            let mut live: Vec<(Index, u64)> = self.by_client.iter().map(|(&c, s)| (s.last_active, c)).collect();
            live.sort_unstable();
            self.activity = live.into();
        }
    }

    pub fn len(&self) -> usize {
        self.by_client.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_client.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_forget_old_responses_but_never_rerun_them() {
        let mut s = Sessions::default();
        for seq in 1..=(MAX_SESSION_RESPONSES as u64 + 5) {
            s.record(RequestId { client: 1, seq }, seq, OpResult::Deleted { existed: false });
        }
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1 }), Dedup::Expired);
        assert!(matches!(s.lookup(RequestId { client: 1, seq: 10 }), Dedup::Done(_)));
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1000 }), Dedup::New);
        assert_eq!(s.lookup(RequestId { client: 2, seq: 1 }), Dedup::New);
    }

    #[test]
    fn responses_recorded_out_of_order_are_found_and_the_smallest_is_forgotten_first() {
        let mut s = Sessions::default();
        let done = |n| OpResult::Written { version: n };
        let max = MAX_SESSION_RESPONSES as u64;
        // Every seq from 1 to max + 1, the odd ones first.
        let mut index = 0;
        for seq in (1..=max + 1).filter(|s| s % 2 == 1).chain((1..=max + 1).filter(|s| s % 2 == 0)) {
            index += 1;
            s.record(RequestId { client: 1, seq }, index, done(seq));
        }
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1 }), Dedup::Expired, "the smallest went first");
        for seq in 2..=max + 1 {
            assert_eq!(s.lookup(RequestId { client: 1, seq }), Dedup::Done(&done(seq)), "seq {seq}");
        }
    }

    #[test]
    fn the_least_recently_active_client_is_forgotten_and_the_queue_stays_bounded() {
        let mut s = Sessions::default();
        let r = OpResult::Deleted { existed: false };
        let mut index = 0;
        // Client 0 stays active; clients 1.. come and go past the bound.
        for client in 1..=(MAX_SESSIONS as u64 + 10) {
            index += 1;
            s.record(RequestId { client, seq: 1 }, index, r.clone());
            index += 1;
            s.record(RequestId { client: 0, seq: client }, index, r.clone());
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(matches!(s.lookup(RequestId { client: 0, seq: MAX_SESSIONS as u64 + 10 }), Dedup::Done(_)));
        assert_eq!(s.lookup(RequestId { client: 1, seq: 1 }), Dedup::New, "the oldest client was forgotten");
        assert!(matches!(s.lookup(RequestId { client: MAX_SESSIONS as u64 + 10, seq: 1 }), Dedup::Done(_)));
        assert!(s.activity.len() <= 2 * s.len() + 64);
    }
}
