//! The exactly-once table: the response of every recent request, by client,
//! replicated through the log so that any replica answers a retry with the
//! original response instead of running it again.
//!
//! It must never answer a request it has forgotten as new: a sequence number
//! at or below a client's `forgotten_upto` is `Expired`, never `New`.

use crate::limits::{MAX_SESSIONS, MAX_SESSION_RESPONSES};
use crate::state::op::OpResult;
use crate::types::{Index, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// What a replica remembers of one client: the responses of its recent
/// requests, so a retry gets the original answer instead of running again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session<R> {
    responses: BTreeMap<u64, R>,
    /// Every seq at or below this was forgotten; a retry of one gets
    /// `SessionExpired` instead of running twice.
    forgotten_upto: u64,
    last_active: Index,
}

impl<R> Default for Session<R> {
    fn default() -> Self {
        Session { responses: BTreeMap::new(), forgotten_upto: 0, last_active: 0 }
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
    by_client: HashMap<u64, Session<R>>,
    /// Ordered by (last_active, client), to forget the least recently active.
    by_activity: BTreeMap<(Index, u64), ()>,
}

impl<R> Default for Sessions<R> {
    fn default() -> Self {
        Sessions { by_client: HashMap::new(), by_activity: BTreeMap::new() }
    }
}

impl<R> Sessions<R> {
    pub fn lookup(&self, id: RequestId) -> Dedup<'_, R> {
        match self.by_client.get(&id.client) {
            None => Dedup::New,
            Some(s) => match s.responses.get(&id.seq) {
                Some(r) => Dedup::Done(r),
                None if id.seq <= s.forgotten_upto => Dedup::Expired,
                None => Dedup::New,
            },
        }
    }

    pub fn record(&mut self, id: RequestId, index: Index, response: R) {
        let s = self.by_client.entry(id.client).or_default();
        self.by_activity.remove(&(s.last_active, id.client));
        s.last_active = index;
        self.by_activity.insert((index, id.client), ());
        s.responses.insert(id.seq, response);
        while s.responses.len() > MAX_SESSION_RESPONSES {
            let (&oldest, _) = s.responses.iter().next().expect("non-empty");
            s.responses.remove(&oldest);
            s.forgotten_upto = s.forgotten_upto.max(oldest);
        }
        while self.by_client.len() > MAX_SESSIONS {
            let (&(_, client), _) = self.by_activity.iter().next().expect("non-empty");
            self.by_activity.remove(&(self.by_client[&client].last_active, client));
            self.by_client.remove(&client);
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
}
