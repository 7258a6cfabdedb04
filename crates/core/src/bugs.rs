//! Bugs the simulator can switch on, one at a time, to prove that its
//! checkers catch what each one breaks.
//!
//! Production code never constructs anything but `Bugs::default()`: no flag,
//! environment variable or config file of a node reaches this struct. It
//! must never hold anything but switches that make a protocol wrong.

/// The bugs, all off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The primary answers before every backup acked the entry.
    pub reply_before_replicated: bool,
    /// The primary answers some writes it executed (every third request of
    /// a client) with a definite refusal (`Malformed`) instead of
    /// their result: the client is told a write that ran never did.
    pub refuse_executed_write: bool,
    /// A backup acks entries before they are durable.
    pub ack_before_fsync: bool,
    /// A backup makes itself primary without winning the view CAS.
    pub promote_without_cas: bool,
    /// A retried request is executed again.
    pub skip_dedup: bool,
    /// The session table forgets that it evicted sessions: a retry whose
    /// session was evicted (or recreated after an eviction) is taken as new
    /// and runs again, as before sessions carried their start.
    pub forget_evicted_session: bool,
    /// The primary serves reads without a valid lease.
    pub read_without_lease: bool,
    /// The primary checks its lease only against the time its step began
    /// (the runtime reads the clock once per batch of inputs) and marks no
    /// read with the lease's expiry, so a slow step releases reads after
    /// the lease ran out.
    pub lease_checked_at_batch_start: bool,
    /// A backup keeps entries the new primary's log contradicts.
    pub keep_divergent_suffix: bool,
    /// An active-group member executes entries as soon as it holds them,
    /// before every member holds them (before they are stable).
    pub execute_before_stable: bool,
    /// An active-group member does not remember the answers of reads, so a
    /// retried read sequenced twice runs again and members answer it from
    /// different executions.
    pub rerun_retried_read: bool,
    /// This member's state silently goes wrong: every value it writes while
    /// executing an active-group request is altered.
    pub diverge_state: bool,
    /// Two-phase commit: the coordinator decides to commit on the first
    /// yes vote, without waiting for every participant's.
    pub commit_without_all_votes: bool,
    /// Two-phase commit: the coordinator tells participants its decision as
    /// soon as it appends it, before the decision is durable in its group.
    pub decide_before_durable: bool,
    /// Two-phase commit: a participant votes yes when it appends the
    /// prepare, before the prepared record is durable on its group.
    pub vote_before_prepared_durable: bool,
    /// Two-phase commit: a prepared transaction takes no locks (as if it
    /// released them once it voted).
    pub release_locks_at_prepare: bool,
    /// Two-phase commit: a coordinator with no record of a transaction
    /// answers `getDecision` with commit.
    pub presume_commit: bool,
    /// Two-phase commit: a coordinator with no record of a transaction
    /// answers `getDecision` with abort without recording the abort, so the
    /// transaction may still commit later.
    pub abort_without_record: bool,
    /// A member taking a streamed snapshot installs it as soon as its
    /// header arrived, before the key-value pairs, without checking the
    /// digest (and takes a chunk past a lost one as if the gap held
    /// nothing).
    pub install_incomplete_snapshot: bool,
    /// A backup answers a linearizable read from its own state, without
    /// asking the primary for a read index.
    pub backup_read_ignores_index: bool,
    /// A backup answers a session read without waiting to have applied the
    /// client's token index.
    pub session_read_ignores_token: bool,
    /// A backup answers a stale read however old its state is.
    pub stale_read_past_bound: bool,
    /// A front end drops the session token another client handed it
    /// (`FrontEnd::observe_token`). The front end takes no bugs: the
    /// simulator, which hands tokens between its clients, applies this one
    /// where it hands them.
    pub drop_handed_token: bool,
    /// A primary (or sequencer) runs a session's write as it arrives,
    /// without the FIFO checks (`Replica::fifo_order`): a write that
    /// overtook an earlier one of its session on the way (or across a
    /// failover) is applied first.
    pub fifo_ignores_order: bool,
    /// A primary admits a learner (a node a move brings in, or a dropped
    /// member rejoining) into the view as soon as it joins, before it holds
    /// every committed entry.
    pub admit_before_caught_up: bool,
    /// The config store: `Change::AddNode` makes the new node a config
    /// member even while the last change of the members has not settled
    /// (not every register was rewritten through them yet), so two member
    /// changes follow each other and majorities of the store's acceptor
    /// sets before and after need not overlap.
    pub config_two_members_at_once: bool,
}
