//! The replicated state machine of one group on one replica: what applying
//! the group's committed log produces, and nothing else.
//!
//! It owns the key-value store (`kv`), the exactly-once session table
//! (`sessions`), the request vocabulary and its pure execution (`op`), the
//! transaction vocabulary (`txn`), the lock table (`locks`), the records a
//! participant keeps of prepared and resolved transactions and a
//! coordinator of its unfinished decisions, and the snapshot that carries
//! all of it to a member that fell behind. It must never see an uncommitted
//! entry, and it must never depend on anything but the entries applied to
//! it, in order: every member that applies the same log holds the same
//! state.

pub mod kv;
pub mod locks;
pub mod op;
pub mod sessions;
pub mod stream;
pub mod txn;

use crate::bugs::Bugs;
use crate::limits::{MAX_LOCKED_KEYS, MAX_PREPARED_TXNS, MAX_SESSIONS};
use crate::log::{Entry, Payload};
use crate::types::{Epoch, GroupId, Index, RequestId};
use kv::{Key, KvStore, Versioned, Write};
use locks::LockTable;
use op::{execute, validate_part, ExecState, Op, OpResult};
use serde::{Deserialize, Serialize};
use sessions::{Dedup, Sessions};
use std::collections::BTreeMap;
use std::sync::Arc;
use txn::{AbortReason, Decision, LockMode, Prepared, TxnId, TxnOutcome, TxnPart, Vote};

/// Everything a group's applied log determines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMachine {
    pub kv: KvStore,
    /// Responses to client requests (and the outcomes of the transactions
    /// this group coordinated), for exactly-once retries.
    pub sessions: Sessions,
    /// Participant: the keys prepared transactions hold.
    pub locks: LockTable,
    /// Participant: transactions prepared here and not yet resolved.
    pub prepared: BTreeMap<TxnId, Prepared>,
    /// Participant: the final vote of every transaction resolved here
    /// (`Yes` if it committed), by home group and transaction id, so that a
    /// late or repeated `canCommit?` never prepares a finished transaction
    /// again, nor a late decision applies it twice. One table per home group
    /// (at most `MAX_GROUPS`), each of at most `max_sessions` sessions: a
    /// transaction id's session start is an index of its home group, and a
    /// table forgets by the starts it evicted (`Sessions::foreign`), so a
    /// transaction it may have forgotten is `Expired`, never `New`.
    pub resolved: BTreeMap<GroupId, Sessions<Vote>>,
    /// Coordinator: decisions not yet acknowledged by every participant.
    pub decisions: BTreeMap<TxnId, Decision>,
    /// Coordinator: the digest of every recent commit request, by id, so a
    /// commit that reuses an id with other contents is told so. A digest it
    /// forgot only loses that guard: whether a commit runs is the client
    /// session table's to say (`sessions`, which never takes a forgotten
    /// request for new).
    pub commit_digests: Sessions<u64>,
}

/// What applying one entry did, beyond changing the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing anyone waits for.
    Nothing,
    /// A client request was carried out; its clients get `response`.
    Answered { id: RequestId, response: OpResult },
    /// A prepare was decided here: the vote the coordinator gets.
    Voted { txn: TxnId, vote: Vote },
    /// A decision reached this participant group (its part is resolved).
    Resolved { txn: TxnId },
    /// The coordinator's decision is logged: the client gets the outcome the
    /// entry carries (see `Entry::decided_response`), and the participants
    /// are to be told.
    Decided { txn: TxnId },
}

impl StateMachine {
    /// Applies the next committed entry and says what it did. A passive
    /// entry carries its effects and response; an active entry carries the
    /// request, which is executed here, in log order, against this member's
    /// state; the two-phase commit entries are deterministic steps.
    /// `bugs.diverge_state` makes this member's state silently go wrong.
    /// `group` is the group this state belongs to (its transactions' home
    /// or not); the client session table keeps at most `max_sessions`
    /// sessions (see `Sessions::record`).
    pub fn apply(&mut self, e: &Entry, bugs: &Bugs, group: GroupId, max_sessions: usize) -> Applied {
        match &e.payload {
            Payload::Noop => Applied::Nothing,
            Payload::Effects { id, response, writes } => {
                for w in writes {
                    self.kv.apply(w);
                }
                self.sessions.record(*id, e.index, response.clone(), max_sessions);
                Applied::Answered { id: *id, response: response.clone() }
            }
            Payload::Sequenced { id, op } => {
                // A transaction committed in one step is named by its
                // request id; it holds no locks, so the home group number
                // in its id does not matter to the lock checks.
                let txn = TxnId::new(*id, 0);
                let (response, mut writes) = execute(op, e.index, txn, &*self);
                if let Op::Commit(req) = op {
                    self.commit_digests.record(*id, e.index, req.digest(), MAX_SESSIONS);
                }
                if bugs.diverge_state {
                    for w in writes.iter_mut() {
                        if let Write::Put { value, .. } = w {
                            value.push(b'!');
                        }
                    }
                }
                for w in &writes {
                    self.kv.apply(w);
                }
                // Reads are remembered too: a retried read sequenced twice
                // must get the first execution's answer, or a voting front
                // end would see healthy members answer the same request
                // differently (one from each execution).
                if !(bugs.rerun_retried_read && op.is_read()) {
                    self.sessions.record(*id, e.index, response.clone(), max_sessions);
                }
                Applied::Answered { id: *id, response }
            }
            Payload::Prepare { txn, part } => {
                let vote = self.prepare(*txn, part, e.index, bugs, group);
                Applied::Voted { txn: *txn, vote }
            }
            Payload::Resolve { txn, commit, writes } => {
                self.resolve(*txn, *commit, writes, e.index, Some(max_sessions));
                Applied::Resolved { txn: *txn }
            }
            Payload::Decide { txn, commit, participants, outcome, writes, digest } => {
                // Copied once, for the record; whoever answers a client
                // copies it from the entry (only a primary or an awaited
                // member does).
                self.sessions.record(txn.request_id(), e.index, OpResult::Txn(outcome.clone()), max_sessions);
                if *digest != 0 {
                    self.commit_digests.record(txn.request_id(), e.index, *digest, MAX_SESSIONS);
                }
                if !participants.is_empty() {
                    self.decisions.insert(*txn, Decision { commit: *commit, participants: participants.clone() });
                }
                // The home group is a participant too; its part resolves
                // with the decision itself. The session record above is what
                // keeps a late `canCommit?` from preparing it again here
                // (see `prepare`), so no vote is remembered apart.
                self.resolve(*txn, *commit, writes, e.index, None);
                Applied::Decided { txn: *txn }
            }
            Payload::Ended { txns } => {
                for t in txns {
                    self.decisions.remove(t);
                }
                Applied::Nothing
            }
        }
    }

    /// Prepares `part` of `txn` as entry `index`, if it may be: not finished
    /// here already, within the bounds, no lock against it, every check
    /// holding. Prepared, it holds its locks until it resolves.
    fn prepare(&mut self, txn: TxnId, part: &Arc<TxnPart>, index: Index, bugs: &Bugs, group: GroupId) -> Vote {
        if let Some(p) = self.prepared.get(&txn) {
            return if p.part.digest == part.digest {
                yes(p)
            } else {
                no("the transaction id was reused with other contents")
            };
        }
        match self.resolved_vote(txn) {
            Dedup::Done(v) => return v.clone(),
            Dedup::Expired => return Vote::No { reason: AbortReason::SessionExpired },
            Dedup::New => {}
        }
        // In the home group the decision itself is the record: a transaction
        // decided here is never prepared again.
        let decided = if txn.home == group { self.sessions.lookup(txn.request_id()) } else { Dedup::New };
        if let Dedup::Expired = decided {
            // Its decision may have been recorded and forgotten.
            return Vote::No { reason: AbortReason::SessionExpired };
        }
        if let Dedup::Done(OpResult::Txn(outcome)) = decided {
            return match outcome {
                TxnOutcome::Committed { versions, reads } => {
                    let written = |k: &Key| part.writes.iter().any(|w| w.key == *k);
                    let read = |k: &Key| part.reads.contains(k);
                    Vote::Yes {
                        versions: versions.iter().filter(|(k, _)| written(k)).cloned().collect(),
                        reads: reads.iter().filter(|(k, _)| read(k)).cloned().collect(),
                    }
                }
                TxnOutcome::Aborted { reason } => Vote::No { reason: reason.clone() },
            };
        }
        if self.prepared.len() >= MAX_PREPARED_TXNS {
            return no(&format!("the group holds {MAX_PREPARED_TXNS} prepared transactions, its limit"));
        }
        let locks = part.locks();
        if self.locks.len() + locks.len() > MAX_LOCKED_KEYS {
            return no(&format!(
                "the group holds {} locked keys, near its limit of {MAX_LOCKED_KEYS}",
                self.locks.len()
            ));
        }
        if let Err(reason) = validate_part(&part.checks, &part.writes, &part.reads, txn, &*self) {
            return Vote::No { reason };
        }
        if !bugs.release_locks_at_prepare {
            for (key, mode) in &locks {
                self.locks.lock(key, *mode, txn);
            }
        }
        let p = Prepared { part: Arc::clone(part), version: index };
        let mut vote = yes(&p);
        if let Vote::Yes { reads, .. } = &mut vote {
            // Read under the locks just taken: every group of a consistent
            // read holds its keys so, all at once, before anyone commits.
            *reads = part.reads.iter().map(|k| (k.clone(), self.kv.get(k).cloned())).collect();
        }
        self.prepared.insert(txn, p);
        vote
    }

    /// The decision on `txn` reached this group at `index`: a commit's
    /// `writes` take effect (a prepared part's, or a one-group transaction's),
    /// a prepared part releases its locks, and the final vote is remembered
    /// (so a late `canCommit?` cannot prepare the transaction again). A
    /// decision already applied here is not applied twice.
    fn resolve(&mut self, txn: TxnId, commit: bool, writes: &[Write], index: Index, remember: Option<usize>) {
        let prepared = self.prepared.remove(&txn);
        // A participant's late decision for what it may have resolved and
        // forgotten applies nothing (a commit needs its yes, so it held the
        // transaction prepared until it resolved it). The home group's own
        // decision is logged once (its client session table sees to that),
        // so there only a remembered resolution means "applied already".
        let first = prepared.is_some()
            || match self.resolved_vote(txn) {
                Dedup::New => true,
                Dedup::Expired => remember.is_none(),
                Dedup::Done(_) => false,
            };
        if let Some(p) = &prepared {
            for (key, _) in p.part.locks() {
                self.locks.unlock(key, txn);
            }
        }
        if commit && first {
            for w in writes {
                self.kv.apply(w);
            }
        }
        if let Some(max_sessions) = remember.filter(|_| first) {
            let table = self.resolved.entry(txn.home).or_insert_with(Sessions::foreign);
            table.record(txn.request_id(), index, final_vote(commit, prepared.as_ref()), max_sessions);
        }
    }

    /// What this participant remembers of `txn`'s resolution: its final
    /// vote, `Expired` if it may have resolved it and forgotten, or `New`.
    pub fn resolved_vote(&self, txn: TxnId) -> Dedup<'_, Vote> {
        match self.resolved.get(&txn.home) {
            Some(table) => table.lookup(txn.request_id()),
            None => Dedup::New,
        }
    }

    /// The writes a prepared transaction makes here if it commits.
    pub fn prepared_writes(&self, txn: TxnId) -> Option<Vec<Write>> {
        self.prepared.get(&txn).map(|p| p.part.writes.iter().map(|w| w.at(p.version)).collect())
    }
}

fn yes(p: &Prepared) -> Vote {
    Vote::Yes { versions: p.part.writes.iter().map(|w| (w.key.clone(), p.version)).collect(), reads: Vec::new() }
}

fn no(reason: &str) -> Vote {
    Vote::No { reason: AbortReason::Refused { reason: reason.to_string() } }
}

fn final_vote(commit: bool, p: Option<&Prepared>) -> Vote {
    match (commit, p) {
        (true, Some(p)) => yes(p),
        (true, None) => Vote::Yes { versions: Vec::new(), reads: Vec::new() },
        (false, _) => no("the transaction was aborted"),
    }
}

impl ExecState for StateMachine {
    fn get(&self, key: &[u8]) -> Option<Versioned> {
        self.kv.get(key).cloned()
    }

    fn lock_conflict(&self, key: &[u8], mode: LockMode, txn: TxnId) -> bool {
        self.locks.conflicts(key, mode, txn)
    }
}

/// A replica's whole applied state at one log position.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub index: Index,
    pub epoch: Epoch,
    pub state: StateMachine,
}

impl Snapshot {
    /// Whether the state is what its sender hashed: the key-value digest it
    /// carries matches one computed from its contents.
    pub fn is_intact(&self) -> bool {
        self.state.kv.digest() == self.state.kv.recompute_digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use txn::TxnWrite;

    /// Group 1, a participant of transactions whose home is group 0.
    const HERE: GroupId = 1;

    fn txn(client: u64, session: Index) -> TxnId {
        TxnId { client, session, seq: 1, home: 0 }
    }

    /// A part writing `b` = "v" in this group.
    fn part() -> Arc<TxnPart> {
        let writes = vec![TxnWrite { key: b"b".to_vec(), value: Some(b"v".to_vec()) }];
        Arc::new(TxnPart { checks: Vec::new(), writes, reads: Vec::new(), digest: 5 })
    }

    fn entry(index: Index, payload: Payload) -> Entry {
        Entry { epoch: 1, index, payload }
    }

    /// Prepares and commits `txn` at `index` and `index + 1`.
    fn prepare_and_commit(s: &mut StateMachine, t: TxnId, index: Index, max_sessions: usize) {
        let applied =
            s.apply(&entry(index, Payload::Prepare { txn: t, part: part() }), &Bugs::default(), HERE, max_sessions);
        assert!(matches!(applied, Applied::Voted { vote: Vote::Yes { .. }, .. }), "{applied:?}");
        let writes = s.prepared_writes(t).expect("prepared");
        s.apply(
            &entry(index + 1, Payload::Resolve { txn: t, commit: true, writes }),
            &Bugs::default(),
            HERE,
            max_sessions,
        );
    }

    #[test]
    fn a_participant_never_prepares_or_applies_again_a_transaction_it_forgot() {
        let mut s = StateMachine::default();
        // Room for one session per home group: the second transaction's
        // session evicts the first's, which started at home index 50.
        prepare_and_commit(&mut s, txn(1, 50), 1, 1);
        prepare_and_commit(&mut s, txn(2, 40), 3, 1);
        assert_eq!(s.kv.get(b"b").map(|v| v.version), Some(3));
        assert_eq!(s.resolved_vote(txn(1, 50)), Dedup::Expired);
        // A late canCommit? for it is refused, and takes no lock.
        let late = Payload::Prepare { txn: txn(1, 50), part: part() };
        let applied = s.apply(&entry(5, late), &Bugs::default(), HERE, 1);
        let refused = Vote::No { reason: AbortReason::SessionExpired };
        assert_eq!(applied, Applied::Voted { txn: txn(1, 50), vote: refused });
        assert!(s.prepared.is_empty() && s.locks.is_empty());
        // A late decision applies nothing.
        let writes = vec![Write::Put { key: b"b".to_vec(), value: b"v".to_vec(), version: 6 }];
        s.apply(&entry(6, Payload::Resolve { txn: txn(1, 50), commit: true, writes }), &Bugs::default(), HERE, 1);
        assert_eq!(s.kv.get(b"b").map(|v| v.version), Some(3), "the late decision applied nothing");
        // A session that starts after the one evicted cannot have been
        // forgotten: its transaction prepares.
        prepare_and_commit(&mut s, txn(3, 51), 7, 1);
        assert_eq!(s.kv.get(b"b").map(|v| v.version), Some(7));
    }
}
