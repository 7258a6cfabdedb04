//! The exactly-once table: the response of every recent request, by client
//! session, replicated through the log so that any replica answers a retry
//! with the original response instead of running it again.
//!
//! It must never answer a request it has forgotten as new. A table in
//! bounded space forgets in two ways, and each leaves a mark:
//!
//! * a session keeps its last `MAX_SESSION_RESPONSES` responses; a sequence
//!   number at or below its `forgotten_upto` is `Expired`;
//! * past `max_sessions` sessions, the least recently active one is evicted
//!   whole, and the table remembers `evicted_upto`, the highest index at
//!   which any evicted session was last active.
//!
//! Eviction is told from novelty by the session start every request
//! carries (`RequestId::session`): an index its group had applied before
//! the front end sent anything in the session, so each of the session's
//! requests is applied above it. A request the table has no session for,
//! whose session starts below `evicted_upto`, may have run in a session
//! that was evicted after it (that session was last active at or above the
//! request's index, so above its start): it is `Expired`. One whose session
//! starts at or above `evicted_upto` cannot have: no session active above
//! its start was ever evicted. A session created while its start is below
//! `evicted_upto` (a pipelined request applied after an earlier one of the
//! same session was evicted) is marked `after_eviction`: it answers what it
//! recorded, and everything else is `Expired`. So the rule holds in O(1)
//! space per table, and every replica, applying the same log with the same
//! bound, forgets exactly the same requests.
//!
//! A front end whose request is `Expired` cannot tell whether it ran; it
//! reports so and starts a new session (a new client id and start).
//!
//! A participant's table of resolved transactions is keyed by ids whose
//! session starts are indexes of another group (the transaction's home), so
//! the indexes of its own log tell nothing about them. Such a table
//! (`Sessions::foreign`, one per home group) forgets by the same recency
//! but remembers `evicted_start`, the highest session start it evicted: a
//! session it does not hold whose start is at or below it may have been
//! evicted, and is `Expired`. Any table keeps `evicted_start` too; in a
//! table of its own group's sessions it says nothing new (an evicted
//! session was last active above its start, so `evicted_upto` is higher).

use crate::limits::{MAX_SESSIONS, MAX_SESSION_RESPONSES};
use crate::state::kv::FixedHashMap;
use crate::state::op::OpResult;
use crate::types::{Index, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// A client session: a client id and the index its session starts at.
type SessionKey = (u64, Index);

/// What a replica remembers of one session: the responses of its recent
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
    /// Created when the session's start was already below `evicted_upto`:
    /// an earlier record of this session may have been evicted, so any seq
    /// not in `responses` may have run.
    after_eviction: bool,
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
    by_session: FixedHashMap<SessionKey, Session<R>>,
    /// (last_active, session) of every record in log order, so the least
    /// recently active session is at the front. An entry whose session has
    /// been active since is stale and skipped; the queue is rebuilt when
    /// stale entries outnumber live ones (so it stays within twice the
    /// number of sessions).
    activity: VecDeque<(Index, SessionKey)>,
    /// The highest index at which an evicted session was last active
    /// (left at 0 in a `foreign` table, whose indexes and starts are of
    /// different logs).
    evicted_upto: Index,
    /// The highest start of a session evicted.
    evicted_start: Option<Index>,
    /// The sessions' starts are indexes of another group's log.
    foreign: bool,
    /// Sessions evicted so far (for the simulator's coverage report).
    evicted: u64,
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions {
            by_session: FixedHashMap::default(),
            activity: VecDeque::new(),
            evicted_upto: 0,
            evicted_start: None,
            foreign: false,
            evicted: 0,
        }
    }
}

impl<R> Sessions<R> {
    /// A table of sessions whose starts are indexes of another group's log
    /// (a participant's record of the transactions of one home group).
    pub fn foreign() -> Self {
        Sessions { foreign: true, ..Sessions::default() }
    }

    /// Whether a session starting at `start` may have been evicted.
    fn may_be_evicted(&self, start: Index) -> bool {
        start < self.evicted_upto || self.evicted_start.is_some_and(|w| start <= w)
    }

    /// Whether request `id` ran (its response), may have run and was
    /// forgotten, or is new. Only for a table in the index space of the
    /// request's group (the client session table): `id.session` is compared
    /// with indexes of this table.
    pub fn lookup(&self, id: RequestId) -> Dedup<'_, R> {
        match self.by_session.get(&(id.client, id.session)) {
            None if self.may_be_evicted(id.session) => Dedup::Expired,
            None => Dedup::New,
            Some(s) => match s.responses.binary_search_by_key(&id.seq, |(seq, _)| *seq) {
                Ok(at) => Dedup::Done(&s.responses[at].1),
                Err(_) if id.seq <= s.forgotten_upto || s.after_eviction => Dedup::Expired,
                Err(_) => Dedup::New,
            },
        }
    }

    /// What the table remembers of `id`, `New` if it remembers nothing of its
    /// session: what the tables answered before evictions left a mark, kept
    /// for `Bugs::forget_evicted_session` and for the coordinator's commit
    /// digests (which only guard against an id reused with other contents;
    /// whether a commit runs is the client session table's to say).
    pub fn lookup_remembered(&self, id: RequestId) -> Dedup<'_, R> {
        match self.by_session.get(&(id.client, id.session)) {
            None => Dedup::New,
            Some(s) => match s.responses.binary_search_by_key(&id.seq, |(seq, _)| *seq) {
                Ok(at) => Dedup::Done(&s.responses[at].1),
                Err(_) if id.seq <= s.forgotten_upto => Dedup::Expired,
                Err(_) => Dedup::New,
            },
        }
    }

    /// Records `response` for request `id`, applied at log `index` (indexes
    /// only grow from one call to the next), keeping at most `max_sessions`
    /// sessions (capped at `MAX_SESSIONS`): past it, the least recently
    /// active session is evicted.
    pub fn record(&mut self, id: RequestId, index: Index, response: R, max_sessions: usize) {
        let key = (id.client, id.session);
        let after_eviction = self.may_be_evicted(id.session);
        let s = self.by_session.entry(key).or_insert_with(|| Session {
            responses: VecDeque::new(),
            forgotten_upto: 0,
            last_active: 0,
            after_eviction,
        });
        s.last_active = index;
        self.activity.push_back((index, key));
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
        while self.by_session.len() > max_sessions.clamp(1, MAX_SESSIONS) {
            let (at, key) = self.activity.pop_front().expect("every session has a live activity entry");
            if self.by_session.get(&key).is_some_and(|s| s.last_active == at) {
                self.by_session.remove(&key);
                if !self.foreign {
                    self.evicted_upto = self.evicted_upto.max(at);
                }
                self.evicted_start = Some(self.evicted_start.map_or(key.1, |w| w.max(key.1)));
                self.evicted += 1;
            }
        }
        if self.activity.len() > 2 * self.by_session.len() + 64 {
            let mut live: Vec<(Index, SessionKey)> = self.by_session.iter().map(|(&k, s)| (s.last_active, k)).collect();
            live.sort_unstable();
            self.activity = live.into();
        }
    }

    /// Sessions held now.
    pub fn len(&self) -> usize {
        self.by_session.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_session.is_empty()
    }

    /// The highest index at which an evicted session was last active: a
    /// session starting below it and not held is forgotten.
    pub fn evicted_upto(&self) -> Index {
        self.evicted_upto
    }

    /// Sessions evicted since the group began.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }
}

impl Sessions<OpResult> {
    /// FIFO order of a session's writes (see `ClientRequest::prev`): the
    /// highest sequence number of a single-key write the session applied,
    /// or the highest it forgot (anything at or below `forgotten_upto` is
    /// `Expired` and never runs again). A write of the session with a lower
    /// number that has not run must never run: it would apply after one
    /// its front end issued later. 0 for a session the table does not hold.
    /// Costs a walk back over the session's last responses to its newest
    /// write (at most `MAX_SESSION_RESPONSES`, usually one).
    pub fn fifo_high(&self, client: u64, session: Index) -> u64 {
        let Some(s) = self.by_session.get(&(client, session)) else { return 0 };
        let newest_write = s.responses.iter().rev().find(|(_, r)| r.is_fifo_write()).map_or(0, |(seq, _)| *seq);
        newest_write.max(s.forgotten_upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(client: u64, session: Index, seq: u64) -> RequestId {
        RequestId { client, session, seq }
    }

    #[test]
    fn fifo_high_is_the_newest_write_recorded_or_the_highest_forgotten() {
        let mut s = Sessions::default();
        let written = |v| OpResult::Written { version: v };
        assert_eq!(s.fifo_high(1, 0), 0, "a session the table does not hold");
        s.record(rid(1, 0, 2), 1, written(1), MAX_SESSIONS);
        s.record(rid(1, 0, 5), 2, OpResult::CasFailed { current_version: 1 }, MAX_SESSIONS);
        // A read (active groups record them) and a transaction's outcome are
        // not writes a session's order is kept among.
        s.record(rid(1, 0, 7), 3, OpResult::Value(None), MAX_SESSIONS);
        let aborted =
            OpResult::Txn(crate::state::txn::TxnOutcome::Aborted { reason: crate::state::txn::AbortReason::NoRecord });
        s.record(rid(1, 0, 8), 4, aborted, MAX_SESSIONS);
        assert_eq!(s.fifo_high(1, 0), 5);
        assert_eq!(s.fifo_high(1, 9), 0, "another session of the same client");
        // Past the window, the highest forgotten seq bounds it from below.
        for seq in 100..100 + MAX_SESSION_RESPONSES as u64 {
            s.record(rid(1, 0, seq), seq, OpResult::Value(None), MAX_SESSIONS);
        }
        assert_eq!(s.fifo_high(1, 0), 8);
    }

    #[test]
    fn sessions_forget_old_responses_but_never_rerun_them() {
        let mut s = Sessions::default();
        for seq in 1..=(MAX_SESSION_RESPONSES as u64 + 5) {
            s.record(rid(1, 0, seq), seq, OpResult::Deleted { existed: false }, MAX_SESSIONS);
        }
        assert_eq!(s.lookup(rid(1, 0, 1)), Dedup::Expired);
        assert!(matches!(s.lookup(rid(1, 0, 10)), Dedup::Done(_)));
        assert_eq!(s.lookup(rid(1, 0, 1000)), Dedup::New);
        assert_eq!(s.lookup(rid(2, 0, 1)), Dedup::New);
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
            s.record(rid(1, 0, seq), index, done(seq), MAX_SESSIONS);
        }
        assert_eq!(s.lookup(rid(1, 0, 1)), Dedup::Expired, "the smallest went first");
        for seq in 2..=max + 1 {
            assert_eq!(s.lookup(rid(1, 0, seq)), Dedup::Done(&done(seq)), "seq {seq}");
        }
    }

    #[test]
    fn the_least_recently_active_session_is_evicted_and_the_queue_stays_bounded() {
        let mut s = Sessions::default();
        let r = OpResult::Deleted { existed: false };
        let bound = 50;
        let mut index = 0;
        // Client 0 stays active; clients 1.. come and go past the bound.
        for client in 1..=(bound as u64 + 10) {
            index += 1;
            s.record(rid(client, 0, 1), index, r.clone(), bound);
            index += 1;
            s.record(rid(0, 0, client), index, r.clone(), bound);
        }
        assert_eq!(s.len(), bound);
        // 61 sessions came, 50 stay: clients 1..=11 went, last active at
        // indexes 1, 3, .., 21.
        assert_eq!(s.evicted(), 11);
        assert_eq!(s.evicted_upto(), 21);
        assert_eq!(s.lookup(rid(11, 0, 1)), Dedup::Expired);
        assert_eq!(s.lookup(rid(12, 0, 1)), Dedup::Done(&r));
        assert!(matches!(s.lookup(rid(0, 0, bound as u64 + 10)), Dedup::Done(_)));
        assert!(matches!(s.lookup(rid(bound as u64 + 10, 0, 1)), Dedup::Done(_)));
        assert!(s.activity.len() <= 2 * s.len() + 64);
    }

    #[test]
    fn a_retry_from_an_evicted_session_is_expired_never_new() {
        let mut s = Sessions::default();
        let r = |v| OpResult::Written { version: v };
        // Client 7's session starts at 4; its request runs at 5.
        s.record(rid(7, 4, 1), 5, r(5), 2);
        s.record(rid(8, 5, 1), 6, r(6), 2);
        s.record(rid(9, 6, 1), 7, r(7), 2);
        // Three sessions, two held: client 7's, the least recently active,
        // is gone, and the table remembers it was last active at 5.
        assert_eq!((s.len(), s.evicted(), s.evicted_upto()), (2, 1, 5));
        assert_eq!(s.lookup(rid(7, 4, 1)), Dedup::Expired, "the request it ran");
        assert_eq!(s.lookup(rid(7, 4, 2)), Dedup::Expired, "a request it may have run");
        // Today's behaviour, kept for `Bugs::forget_evicted_session`: new.
        assert_eq!(s.lookup_remembered(rid(7, 4, 1)), Dedup::New);
        // A session starting where the evicted one was last active, or later,
        // is new: nothing of it can have run at or below its start.
        assert_eq!(s.lookup(rid(7, 5, 1)), Dedup::New);
        assert_eq!(s.lookup(rid(10, 7, 1)), Dedup::New);
        // Sessions still held answer as before.
        assert_eq!(s.lookup(rid(9, 6, 1)), Dedup::Done(&r(7)));
        assert_eq!(s.lookup(rid(9, 6, 2)), Dedup::New);
    }

    #[test]
    fn a_session_recreated_after_its_eviction_answers_only_what_it_recorded() {
        let mut s = Sessions::default();
        let r = |v| OpResult::Written { version: v };
        // Client 7 pipelines seqs 1 and 2 in its session starting at 4; seq 1
        // runs at 5, and its session is evicted before seq 2 runs at 8.
        s.record(rid(7, 4, 1), 5, r(5), 2);
        s.record(rid(8, 5, 1), 6, r(6), 2);
        s.record(rid(9, 6, 1), 7, r(7), 2);
        s.record(rid(7, 4, 2), 8, r(8), 2);
        assert_eq!(s.lookup(rid(7, 4, 2)), Dedup::Done(&r(8)));
        // Seq 1 is not in the new record, yet it ran: expired, not new.
        assert_eq!(s.lookup(rid(7, 4, 1)), Dedup::Expired);
        assert_eq!(s.lookup(rid(7, 4, 3)), Dedup::Expired);
        assert_eq!(s.lookup_remembered(rid(7, 4, 1)), Dedup::New);
    }

    #[test]
    fn a_foreign_table_expires_by_the_starts_it_evicted() {
        let mut s: Sessions<u64> = Sessions::foreign();
        // Sessions of another group start at 40 and 90; this table's own
        // indexes are far below (1, 2, 3), and tell nothing about them.
        s.record(rid(1, 90, 1), 1, 1, 2);
        s.record(rid(2, 40, 1), 2, 2, 2);
        s.record(rid(3, 10, 1), 3, 3, 2);
        // Client 1's session, the least recently active, went: every
        // session starting at or below 90 it does not hold may have been
        // evicted, any starting above it cannot have been.
        assert_eq!((s.len(), s.evicted(), s.evicted_upto()), (2, 1, 0));
        assert_eq!(s.lookup(rid(1, 90, 1)), Dedup::Expired, "the one it evicted");
        assert_eq!(s.lookup(rid(4, 90, 1)), Dedup::Expired, "one it may have evicted");
        assert_eq!(s.lookup(rid(4, 91, 1)), Dedup::New);
        // Sessions held answer as before, whatever their start.
        assert_eq!(s.lookup(rid(3, 10, 1)), Dedup::Done(&3));
        assert_eq!(s.lookup(rid(3, 10, 2)), Dedup::New);
        // A session recreated at or below the mark answers only what it
        // recorded.
        s.record(rid(5, 60, 2), 4, 5, 2);
        assert_eq!(s.lookup(rid(5, 60, 2)), Dedup::Done(&5));
        assert_eq!(s.lookup(rid(5, 60, 1)), Dedup::Expired);
        assert_eq!(s.lookup_remembered(rid(1, 90, 1)), Dedup::New);
    }

    #[test]
    fn the_bound_is_at_most_max_sessions_and_at_least_one() {
        let mut s = Sessions::default();
        s.record(rid(1, 0, 1), 1, OpResult::Deleted { existed: false }, 0);
        s.record(rid(2, 0, 1), 2, OpResult::Deleted { existed: false }, 0);
        assert_eq!((s.len(), s.evicted_upto()), (1, 1));
        assert_eq!(s.lookup(rid(1, 0, 1)), Dedup::Expired);
    }
}
