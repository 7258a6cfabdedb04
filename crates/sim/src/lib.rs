//! pactdb-sim: a deterministic simulation tester for the very same sans-IO
//! core (`pactdb-core`) that a real node runs.
//!
//! # What this crate owns
//!
//! One simulated world per seed: 3 or 5 nodes, several front ends, a network,
//! a disk per node, a clock per node and a fault schedule, all driven by a
//! single-threaded discrete-event loop. Every choice (message delay, which
//! node crashes, what a client does next) comes from one seeded PRNG, so a
//! seed is a complete, replayable description of a run; a hash of the event
//! trace proves it. After the run, the checkers in [`check`] read the
//! recorded client history, the observations made during the run and the
//! final state of every replica, and report every property that was violated.
//!
//! It must never reach into the protocols' internals to make a run pass: the
//! nodes only ever see `Node::step` inputs, and the front ends only ever see
//! the calls a real client library makes. Bugs are injected solely through
//! the core's `Bugs` struct, which production code never constructs.
//!
//! # Fault model
//!
//! The design (DESIGN.md, section 7) claims: an acknowledged write is never
//! lost while fewer than all members of its group's view fail; histories are
//! linearizable per key; at most one leader per epoch, and no read from a
//! primary whose lease may have lapsed; a retried request runs at most once;
//! transactions are atomic across groups and strictly serializable, and
//! every transaction ends, even one whose client crashed.
//! The simulator injects every fault those claims say the system survives,
//! and nothing beyond them, so a clean run is genuinely expected to pass:
//!
//! * **Network** (peer links): per-message delay with jitter and occasional
//!   long tails (which also reorders), drop, duplication, and extra
//!   reordering delay; partitions that isolate one node, split the cluster
//!   into a majority and a minority, cut links in one direction only
//!   (asymmetric), or cut a single link. A partition also cuts messages
//!   already in flight, and is healed later; some seeds hold every partition
//!   at least a second, long enough for a complete failover. Client links
//!   (front end to node) are TCP-like: delayed, and a reply may be lost with
//!   its connection, which makes the front end retry the same request id.
//!   The network carries at most a million log entries at once and drops
//!   further appends beyond that, like an overloaded network.
//! * **Process**: crash at any moment (everything not yet fsynced may be
//!   lost), restart later through `Node::recover` with exactly the records
//!   that survived on disk, and pause (a stopped process whose inputs queue
//!   up; its clock keeps running). Any number of nodes may be down at once:
//!   a crash alone never loses fsynced data, so safety must hold regardless.
//!   On some seeds a share of the crashes waits for a moment of two-phase
//!   commit (a coordinator asking for votes, logging or sending a decision;
//!   a participant logging a prepare or voting) and strikes in the middle
//!   of that step: some of its messages and records left the process, the
//!   rest never do. That is an ordinary crash plus the loss of the step's
//!   remaining messages, so it is within the model; it aims at the moments
//!   where acting before a record is durable shows.
//! * **Disk**: `Input::Persisted` is given only after the simulated fsync
//!   covering the record completed. At a crash, a prefix of the unsynced
//!   records may have reached the disk anyway, and the last of them may be
//!   torn (partially written): recovery cuts the torn record. Nothing that
//!   was acknowledged is lost by a torn tail, so such a recovery passes
//!   `wal_was_cut = false`, as the runtime's WAL does for a damaged record
//!   at the very end of its last segment. Separately, a *durable* record
//!   (anywhere in the log, so with intact records after it, or inside a
//!   compacted checkpoint) may be corrupt at
//!   restart on a fixed minority of nodes chosen per seed; recovery then cuts
//!   the log at that record and passes `wal_was_cut = true`, as the runtime
//!   does for damage followed by more records. On half the seeds nodes
//!   also compact: every N records (20, 100 or 1,000) a node takes a
//!   checkpoint (`Node::checkpoint`) between steps, and once its disk is
//!   durable up to it the durable prefix is replaced by the checkpoint's
//!   records, as the runtime's snapshot files replace WAL segments; later
//!   restarts replay the checkpoint and what followed. A corrupt disk
//!   is a failed member, so it is injected only when the claim still covers
//!   it: for every group placed on the node, another up node that is not
//!   itself recovering from corruption holds every entry ever seen
//!   committed, and at most one node is recovering from corruption at a time
//!   (it counts as recovered once its replicas reach the highest commit index
//!   seen when it was corrupted).
//! * **Steps take time**: a node's step takes every input at one instant
//!   (its clock read once, as the runtime does per batch) and ends later, in
//!   proportion to its inputs and effects, and now and then (while faults
//!   are on) after a stall of 10-300 ms. Its messages and replies leave, a
//!   lease-marked read is judged by the clock, and the node takes the inputs
//!   that arrived meanwhile (as one batch), only when the step ends.
//! * **A cut-off primary**: on some seeds, before the other faults start and
//!   on an otherwise calm network, group 0's primary is cut off from every
//!   peer for 1.5-4 s while its clients still reach it, then healed.
//! * **Membership changes** (`MembershipPlan`, about a third of the seeds):
//!   one or two spare nodes outside the bootstrap map run from the start
//!   and take every fault above. While faults are on a spare is added
//!   (`AddNode`), or a node is removed: its replicas moved off first
//!   (`MoveReplica`), then `RemoveNode`, retried and bounded; never below
//!   three nodes, never one holding a group with nowhere to move. A removed
//!   node stops once it learns it (the runtime exits); the state checks
//!   judge only the nodes the final map names. A restart follows the
//!   runtime's cluster-map file when the WAL holds no map.
//! * **Clock**: every node's clock runs at its own rate, within a bounded
//!   drift (at most 4%, so the lease margin `primary_suspect_ms > lease_ms`
//!   holds with room to spare), from its own random offset. Clocks are
//!   monotonic; they never jump.
//!
//! Each seed picks its own mix (swarm testing): every fault kind is switched
//! on or off and given its own rate, so some seeds hammer one mechanism while
//! others combine many. Half of all crashes, pauses and partitions target a
//! node that is currently a primary, where failures hurt the most.
//!
//! The cluster has one to three groups of two or three members each, passive
//! or active (active groups of three may vote). The workload is several
//! clients, each a real front end doing one operation at a time, as a
//! client library does (`workload`). Register clients run get, put, cas
//! and delete on one to four `k*` keys, so that operations collide; some
//! only read, as read-heavy clients do (they stay with whichever primary
//! keeps answering them), and their reads sometimes go to a bank account.
//! Most seeds also run a bank: two to eight accounts (`acct-N`) spread over
//! the groups round-robin, so most transfers cross groups, created with a
//! known balance by one setup transaction before the faults start (retried
//! until it commits; one that does not within 10s fails the seed). Transfer
//! clients read two accounts with plain gets and commit the new balances,
//! with the versions read as checks; auditors either read every account and
//! commit a read-only transaction of the versions (optimistic), or read them
//! all in one consistent read (at commit, under locks), a coin flip per
//! audit. Every value written is unique in the run
//! (`{balance}|c{client}-{n}`), so a read tells which write it saw. A commit
//! that times out is looked up with a status query, as the client library
//! does; its outcome is unknown only if that fails too. Some transfer
//! clients crash just after they send a commit and come back as a new
//! client, leaving the transaction to the cluster's presumed abort.
//!
//! Three knobs reach what a small healthy cluster never does, each on about
//! a third of the seeds: replicas keep only 5 to 200 committed entries in
//! memory (`log_retain_entries`), so logs are compacted and members that
//! fall behind are caught up by snapshot; one or two pipelined clients keep
//! 4 to 32 puts and gets in flight; and each group's session table holds
//! fewer sessions than there are clients (`max_sessions`), so sessions are
//! evicted while their clients still retry, and those retries are told
//! `SessionExpired`. `RunReport::coverage` counts how often a run went
//! through each path (snapshots sent and installed, entries compacted, most
//! requests in flight, sessions evicted, `SessionExpired` answers), and
//! `pactdb sim` prints the sums over all seeds, so a change that quietly
//! stops reaching one shows.
//! `--mode passive|active|mixed` narrows the groups to one mode (the
//! default, mixed, draws each group's mode from the seed); the workload,
//! transactions included, is the same in every mode. Active groups run
//! under the same faults and the same checkers; in them the sequencer is
//! the primary (one per epoch), and reads go through the log, so the lease
//! check applies to passive primaries only.
//!
//! The divergence demonstration (`SimOptions::diverge_one`, used by the
//! tests) gives one member of an active group a state that silently goes
//! wrong. That member is known to be faulty, so the state checks
//! (convergence, durability) leave it out, while the client history is
//! checked as always: a voting front end must still never return a wrong
//! value; a first-answer front end does. Its seeds move no replica and
//! change no membership: a joining member copies the leader's state, which
//! may be the faulty member's, and a vote masks one wrong member, not two.
//!
//! After the fault phase comes a quiet phase: every partition is healed, the
//! network stops dropping and duplicating, paused nodes resume and crashed
//! nodes restart. The cluster then has ample simulated time to converge, and
//! the liveness checker requires every client operation to complete.
//!
//! # Checkers
//!
//! One property per file in [`check`], each judged on the client history
//! (`history`: single-key operations, and transactions with their reads,
//! checks, writes, times and outcome: committed with versions, aborted,
//! refused, unknown, abandoned or pending), the observer's notes taken
//! during the run (`observe`: roles, views, digests, and every committed
//! two-phase commit entry of each group, noted as replicas commit it, so
//! compaction cannot hide one) and every replica's final state:
//!
//! * leadership: one primary and one view per epoch; no read without lease;
//! * convergence: replicas agree at every applied index and at the end;
//! * durability: no acknowledged write lost, nothing acked before fsync;
//! * exactly-once: no client write's request id is committed at two indexes
//!   of its group's log (noted as replicas commit, so it holds whatever
//!   the clients were told);
//! * fifo: within a client session, the single-key writes committed in a
//!   group's log carry increasing sequence numbers (the order the front end
//!   issued them in), across failovers and reordering networks;
//! * linearizability per key (and exactly-once), with transactions' writes
//!   fed in as writes: a committed one at the version its commit reported,
//!   one of unknown outcome as indeterminate, an aborted one not at all (so
//!   reading its value fails). A client error is definite or not
//!   (`FeError::never_ran`): a write refused definitely (an invalid
//!   request, never sent) is checked as never having happened; a timeout,
//!   `SessionExpired` or a refusal that depends on the group's state
//!   (`BelowMinMembers`: an earlier attempt may still arrive and run) as
//!   indeterminate. The
//!   optimised search is compared with a plain one on thousands of random
//!   small histories (`check::linearizability` tests);
//! * atomicity: a transaction's writes take effect in every group or none,
//!   in the committed logs and in the final state, and no value of one that
//!   did not commit is ever read or held;
//! * one decision: at most one decision per transaction, logged in its home
//!   group; every participant applies that decision, and only after it was
//!   committed; a commit only after every part's prepare was committed; the
//!   client is told what was decided;
//! * strict serializability: the graph of committed (and observed)
//!   transactions, with write-write, write-read and read-write edges from
//!   versions and real-time edges, has no cycle;
//! * bank: every committed audit and the final state hold the initial
//!   total, and no balance is negative;
//! * liveness: every operation and commit completes, promptly once healed,
//!   and at the end no replica holds a prepared transaction, a lock or an
//!   unfinished decision; while a primary is cut off from its peers (and
//!   for two seconds after the heal), every register operation completes
//!   within a second of its start or the cut.
//! * agreement: healthy members of an active group never answer one
//!   request differently (as a voting front end sees them).
//!
//! Every run is bounded: at most five million events and thirty million log
//! entries sent (a clean run needs a few percent of either); a run past a
//! bound stops and fails as "bounded work", so a seed always finishes.
//!
//! # Debugging a seed
//!
//! `pactdb sim --seed S [--mode M] [--inject-bug B]` replays one seed and
//! prints its plan, a timeline of faults and role changes, and every
//! violation (use the `--mode` the failing run had). With
//! `PACTDB_SIM_TRACE=1` it also prints every input each node receives, and
//! the client history (operations, then transactions), to stderr.

pub mod bugs;
pub mod check;
pub mod cli;
pub mod disk;
pub mod history;
pub mod net;
pub mod observe;
pub mod plan;
pub mod sim;
pub mod workload;

pub use bugs::{bug_names, parse_bug};
pub use check::Violation;
pub use cli::{all_cores, coverage_line, describe_failures, run_cli, run_seeds, run_seeds_with, SeedOutcome, SimArgs};
pub use plan::{Shape, SimMode};
pub use sim::{quiet_panics, run_seed, run_seed_with, Coverage, RunReport, SimOptions};
