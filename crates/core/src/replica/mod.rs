//! Log replication of one group on one replica: the machinery both
//! replication modes share.
//!
//! This module owns a replica's log, its durability marks, its commit and
//! apply positions, and its role in the group's view: primary (the
//! sequencer, in an active group), backup (member), joining (caught up but
//! not yet in the view) or recovering (waiting to learn or win the view).
//! Each concern has its own file: `views.rs` (adopting and changing views,
//! becoming and ceasing to be primary), `primary.rs` (streaming the log,
//! acks, the commit rule, joins), `backup.rs` (taking appends and
//! snapshots, acking), `recovery.rs` (WAL replay), `requests.rs` (the
//! checks every client request passes), the two execution strategies,
//! `passive.rs` (the primary executes and ships effects) and `active.rs`
//! (the sequencer orders, every member executes and answers), and the two
//! roles of two-phase commit that a group's primary plays,
//! `coordinator.rs` (for the transactions whose home is this group) and
//! `participant.rs` (for every transaction that touches its keys), and
//! `placement.rs` (moving the group's replicas: `move-replica`).
//!
//! It never answers a client before the entry is durable on every member of
//! the view, never acks an entry before the `Persisted` input that covers
//! it, never serves a read without a lease, and becomes primary only by
//! winning a view compare-and-set in the config store during this
//! incarnation.

mod active;
mod backup;
mod coordinator;
mod handover;
mod participant;
mod passive;
mod placement;
mod primary;
mod reads;
mod recovery;
mod requests;
mod views;

pub use coordinator::Coordinator;
pub use participant::Participant;
pub use reads::MAX_CLOCK_DRIFT_PPM;

use crate::bugs::Bugs;
use crate::config::Change;
use crate::io::{ClientToken, Lsn, Outbox};
use crate::limits::{MAX_SNAPSHOT_CHUNK_BYTES, MAX_SNAPSHOT_PINNED_ENTRIES};
use crate::log::{Entry, Log, SharedEntry};
use crate::state::kv::{Key, KvStore, Versioned};
use crate::state::op::OpResult;
use crate::state::stream::{Cursor, Frozen, Partial};
use crate::state::{Applied, StateMachine};
use crate::types::{ClusterMap, Epoch, GroupId, Index, Millis, Mode, NodeId, RequestId, View};
use crate::wire::{ClientError, ClientReply, ClientRequest, PeerBody, ReplicaStatus, SnapshotTransfer, WalRecord};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// How a primary streams a snapshot to a member too far behind its log
/// (see `state::stream`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStreaming {
    /// Bytes per chunk (at most `MAX_SNAPSHOT_CHUNK_BYTES`; a chunk holds at
    /// least one whole key-value pair).
    pub chunk_bytes: u64,
    /// Bytes per second per stream, so that a transfer leaves the primary's
    /// network and event loop to the group's clients; 0: unthrottled.
    pub bytes_per_sec: u64,
}

impl Default for SnapshotStreaming {
    fn default() -> Self {
        SnapshotStreaming { chunk_bytes: MAX_SNAPSHOT_CHUNK_BYTES, bytes_per_sec: DEFAULT_SNAPSHOT_BYTES_PER_SEC }
    }
}

/// The default throttle of one snapshot stream: 200 MiB go in about four
/// seconds, a fraction of a gigabit link.
pub const DEFAULT_SNAPSHOT_BYTES_PER_SEC: u64 = 48 * 1024 * 1024;

/// A snapshot stream the primary has under way to one member.
#[derive(Clone, Debug)]
struct Outgoing {
    /// Shared by every member streamed the same snapshot.
    frozen: Arc<Frozen>,
    /// Bytes the member said it holds.
    acked: u64,
    /// Bytes sent (from `acked` on, at most the in-flight window ahead).
    sent: u64,
    /// Where `sent` stands among the items, to cut the next chunk there.
    cursor: Cursor,
    /// The throttle: no chunk before this time.
    next_send_ms: Millis,
    /// When the member last acknowledged a chunk (or the stream began):
    /// unacknowledged chunks are resent from `acked` after a silence.
    last_ack_ms: Millis,
    /// The offset the stream last went back to after a refused chunk.
    rewound_to: Option<u64>,
}

/// The refusal of a read at a primary that holds no lease.
pub(crate) fn no_lease() -> ClientError {
    ClientError::Unavailable { reason: "the primary's lease is not held".into() }
}

/// Timeouts of log replication (both modes), in milliseconds of local time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaTiming {
    /// The primary sends an (empty, if idle) `Append` this often; it doubles
    /// as the lease renewal.
    pub heartbeat_ms: Millis,
    /// How long a backup's ack lets the primary serve reads alone.
    pub lease_ms: Millis,
    /// A backup that has not heard from the primary for this long (plus a
    /// random jitter of up to half of it) proposes itself as primary. Must
    /// exceed `lease_ms` by more than the clock drift over `lease_ms`.
    pub primary_suspect_ms: Millis,
    /// A primary removes a backup that has not acked for this long.
    pub backup_timeout_ms: Millis,
    /// A backup that acks nothing new for this long gets its stream resent.
    pub retransmit_ms: Millis,
    /// A joining node repeats its `Join` this often.
    pub join_retry_ms: Millis,
    /// Longest a backup holds a read while it catches up (to the client's
    /// token or the primary's read index) before it refuses it.
    pub held_read_wait_ms: Millis,
}

impl Default for ReplicaTiming {
    fn default() -> Self {
        ReplicaTiming {
            heartbeat_ms: 10,
            lease_ms: 60,
            primary_suspect_ms: 100,
            backup_timeout_ms: 400,
            retransmit_ms: 250,
            join_retry_ms: 100,
            held_read_wait_ms: 200,
        }
    }
}

/// Timeouts of two-phase commit, in milliseconds of local time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnTiming {
    /// A coordinator resends `canCommit?` to a participant that has not
    /// voted, and a decision to one that has not acknowledged it, this
    /// often; a participant repeats `getDecision` this often.
    pub resend_ms: Millis,
    /// A coordinator that has not heard every vote after this long decides
    /// to abort.
    pub vote_timeout_ms: Millis,
    /// A participant that has held a transaction prepared this long (as far
    /// as its current primary knows) asks the coordinator for the decision.
    pub prepared_timeout_ms: Millis,
}

impl Default for TxnTiming {
    fn default() -> Self {
        TxnTiming { resend_ms: 100, vote_timeout_ms: 1_000, prepared_timeout_ms: 300 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// No view yet, or named leader of a view this incarnation did not win.
    Recovering,
    Primary,
    Backup,
    /// Placed in the group but not in its view: catching up to be re-admitted.
    Joining,
}

impl Role {
    /// The role's name in the design's words for `mode`.
    pub fn name(&self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Role::Primary, Mode::Active) => "sequencer",
            (Role::Backup, Mode::Active) => "member",
            _ => self.as_str(),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Recovering => "recovering",
            Role::Primary => "primary",
            Role::Backup => "backup",
            Role::Joining => "joining",
        }
    }
}

/// What the primary knows of one other replica.
#[derive(Clone, Debug)]
struct Progress {
    match_index: Index,
    next_index: Index,
    last_ack_ms: Millis,
    /// When `match_index` last moved, or the stream was last reset.
    last_progress_ms: Millis,
    /// Newest `sent_ms` this replica echoed in an ack (lease evidence).
    lease_sent_ms: Option<Millis>,
    /// Not in the view yet: streamed to but not waited for.
    learner: bool,
    /// The snapshot stream under way to it, when it needs entries the log
    /// no longer has.
    stream: Option<Outgoing>,
}

/// Requests a replica makes of the node during a step: view changes for the
/// config store, and messages for whoever leads another group (the node
/// knows the views).
#[derive(Debug, Default)]
pub struct Requests {
    pub view_changes: Vec<(GroupId, Change)>,
    pub group_sends: Vec<(GroupId, PeerBody)>,
}

/// Everything a replica needs from the node for one step.
pub struct Ctx<'a> {
    pub out: &'a mut Outbox,
    pub rng: &'a mut ChaCha8Rng,
    pub requests: &'a mut Requests,
    /// The cluster map, once the node knows it: how keys map to groups.
    pub cluster: Option<&'a ClusterMap>,
}

impl Ctx<'_> {
    /// Sends `body` to the leader of `group`, as far as this node knows it.
    pub fn send_to_group(&mut self, group: GroupId, body: PeerBody) {
        self.requests.group_sends.push((group, body));
    }
}

/// One group's replica on this node.
#[derive(Debug)]
pub struct Replica {
    group: GroupId,
    me: NodeId,
    timing: ReplicaTiming,
    txn_timing: TxnTiming,
    bugs: Bugs,
    retain_entries: u64,
    streaming: SnapshotStreaming,
    /// Backup or joining: the one snapshot stream it is taking, if any.
    incoming: Option<Box<Partial>>,
    /// The bound of the client session table (`NodeConfig::max_sessions`).
    max_sessions: usize,
    view: Option<View>,
    /// The epoch this incarnation won as leader, if any.
    led_epoch: Option<Epoch>,
    /// The log may have lost acknowledged entries (the WAL was cut at
    /// recovery): never propose itself until a primary caught it up.
    amnesiac: bool,
    log: Log,
    durable_index: Index,
    /// (lsn, index): when `lsn` is durable, the log is durable up to `index`.
    marks: VecDeque<(Lsn, Index)>,
    /// Backup: highest index known to match the current primary's log.
    matched_upto: Index,
    /// Backup: newest `sent_ms` received from the primary, echoed in acks.
    last_sent_ms: Millis,
    acked_index: Index,
    commit_index: Index,
    applied_index: Index,
    persisted_commit: Index,
    /// What the committed log up to `applied_index` made.
    state: StateMachine,
    // Primary state.
    progress: BTreeMap<NodeId, Progress>,
    waiters: BTreeMap<Index, Vec<(ClientToken, RequestId)>>,
    pending_ids: HashMap<RequestId, Index>,
    /// The single-key writes among the pending entries (`Entry::fifo_write`),
    /// ordered by session and seq: the newest pending write of a session
    /// orders it as an applied one does (see `requests::fifo_order`).
    pending_fifo: BTreeSet<RequestId>,
    /// Uncommitted state: the newest pending write of each key and its index.
    overlay: HashMap<Key, (Option<Versioned>, Index)>,
    parked_reads: BTreeMap<Index, Vec<(ClientToken, RequestId, OpResult)>>,
    /// Active mode, any member: clients waiting for this member's own answer
    /// to a request, by request id (answered when it executes).
    awaiting: HashMap<RequestId, Vec<ClientToken>>,
    /// Insertion order of `awaiting`, to forget the oldest beyond its bound.
    awaiting_order: VecDeque<RequestId>,
    /// Active mode, sequencer: the commit index last sent to the members,
    /// who answer clients only once they learn an entry is stable.
    commit_sent: Index,
    parked_count: usize,
    next_heartbeat_ms: Millis,
    dirty: bool,
    /// A view change this replica proposed is in flight.
    view_change_in_flight: bool,
    /// A learner being added to the view: counted for commit from the moment
    /// its admission is proposed, so it holds everything committed.
    admitting: Option<NodeId>,
    /// A learner whose admission proposal gave up without an answer: it may
    /// still be chosen later (another proposer's read completes it), making
    /// the learner a member that can take over. Until a later proposal
    /// settles the register, it counts as a member for commit and for the
    /// lease (found by the simulator: a sole primary committed an entry
    /// alone after its admission proposal gave up; the admission was chosen
    /// anyway, and the admitted node took over without that entry).
    unresolved_admission: Option<NodeId>,
    /// This incarnation holds a view at least as new as one it read from the
    /// config store. An amnesiac replica acks nothing before that: its cut
    /// log may have lost the only evidence (entries of newer epochs) that a
    /// primary streaming to it is stale, and its acks would let that
    /// primary commit in a superseded epoch (found by the simulator: a
    /// partitioned sequencer of epoch 5 committed entries that conflicted
    /// with epoch 7's, acked by a member whose corrupt WAL lost epochs 6-8).
    view_confirmed: bool,
    // Backup state.
    primary_deadline_ms: Millis,
    next_join_ms: Millis,
    /// When this replica last sent an ack, which may have extended another
    /// primary's read lease; `None` if not yet in this incarnation (a
    /// previous one may have, just before it stopped).
    lease_granted_ms: Option<Millis>,
    /// A new primary serves clients only from this time on (see
    /// `become_primary`).
    serve_after_ms: Millis,
    /// Before this a primary is not judged cut off: `lease_ms` after it
    /// began to serve, or after it became primary if that was later.
    cut_off_after_ms: Millis,
    /// The last index of the log this replica held when it became primary.
    /// An earlier primary may have committed up to there, even though this
    /// one's commit index gets there only with its no-op (see `Entry::noop`).
    inherited_upto: Index,
    /// Primary: the transactions this group coordinates (volatile; the
    /// decisions themselves are in `state`).
    coordinator: Coordinator,
    /// Primary: this group's part in transactions (volatile; the prepared
    /// records and locks are in `state`).
    participant: Participant,
    /// Primary: requests held back while a prepared transaction locks their
    /// key, by key, and how many there are (at most `MAX_LOCK_WAITERS`).
    /// Ordered: they are released and refused in iteration order, which must
    /// not depend on a per-process hash seed (found by the simulator: one
    /// seed ran differently from run to run).
    lock_waiters: BTreeMap<Key, Vec<(ClientToken, ClientRequest)>>,
    lock_waiter_count: usize,
    /// When this replica first saw each prepared transaction, for the age
    /// `status` shows (a replayed one counts from the first tick).
    prepared_seen_ms: HashMap<crate::state::txn::TxnId, Millis>,
    /// Backup: reads held until this member may answer them (see `reads`).
    held_reads: VecDeque<reads::HeldRead>,
    /// Backup: the id of its next read index request.
    next_ask: u64,
    /// Backup: how fresh its state is known to be (stale reads).
    freshness: reads::Freshness,
    /// Reads this replica served as a backup since it started.
    backup_reads_served: u64,
    /// Primary: the leader hand-over under way, if any (see `handover.rs`).
    handover: Option<handover::Handover>,
    /// Backup: the epoch whose primary asked this replica to take over,
    /// while its proposal of the next epoch is open.
    taking_over: Option<Epoch>,
    /// The epoch this replica was handed by a primary that stays a member
    /// of it: it serves at once, without waiting out a read lease.
    handed_epoch: Option<Epoch>,
    /// Primary: hand-overs started to leave a group it was moved away from
    /// (each asks the next candidate, see `placement.rs`).
    move_handovers: u64,
}

impl Replica {
    pub fn new(
        group: GroupId,
        me: NodeId,
        timing: ReplicaTiming,
        txn_timing: TxnTiming,
        retain_entries: u64,
        max_sessions: usize,
        bugs: Bugs,
    ) -> Replica {
        Replica {
            group,
            me,
            timing,
            txn_timing,
            bugs,
            retain_entries: retain_entries.max(1),
            streaming: SnapshotStreaming::default(),
            incoming: None,
            max_sessions: max_sessions.clamp(1, crate::limits::MAX_SESSIONS),
            view: None,
            led_epoch: None,
            amnesiac: false,
            log: Log::default(),
            durable_index: 0,
            marks: VecDeque::new(),
            matched_upto: 0,
            last_sent_ms: 0,
            acked_index: 0,
            commit_index: 0,
            applied_index: 0,
            persisted_commit: 0,
            state: StateMachine::default(),
            progress: BTreeMap::new(),
            waiters: BTreeMap::new(),
            pending_ids: HashMap::new(),
            pending_fifo: BTreeSet::new(),
            overlay: HashMap::new(),
            parked_reads: BTreeMap::new(),
            awaiting: HashMap::new(),
            awaiting_order: VecDeque::new(),
            commit_sent: 0,
            parked_count: 0,
            next_heartbeat_ms: 0,
            dirty: false,
            view_change_in_flight: false,
            admitting: None,
            unresolved_admission: None,
            view_confirmed: false,
            primary_deadline_ms: 0,
            next_join_ms: 0,
            lease_granted_ms: None,
            serve_after_ms: 0,
            cut_off_after_ms: 0,
            inherited_upto: 0,
            coordinator: Coordinator::default(),
            participant: Participant::default(),
            lock_waiters: BTreeMap::new(),
            lock_waiter_count: 0,
            prepared_seen_ms: HashMap::new(),
            held_reads: VecDeque::new(),
            next_ask: 1,
            freshness: reads::Freshness::default(),
            backup_reads_served: 0,
            handover: None,
            taking_over: None,
            handed_epoch: None,
            move_handovers: 0,
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn set_snapshot_streaming(&mut self, streaming: SnapshotStreaming) {
        self.streaming = SnapshotStreaming {
            chunk_bytes: streaming.chunk_bytes.clamp(1, MAX_SNAPSHOT_CHUNK_BYTES),
            bytes_per_sec: streaming.bytes_per_sec,
        };
    }

    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
    }

    /// Reads this replica served as a backup since it started.
    pub fn backup_reads_served(&self) -> u64 {
        self.backup_reads_served
    }

    pub fn role(&self) -> Role {
        match &self.view {
            None => Role::Recovering,
            Some(v) if v.leader == self.me => {
                if self.led_epoch == Some(v.epoch) {
                    Role::Primary
                } else {
                    Role::Recovering
                }
            }
            Some(v) if v.is_member(self.me) => Role::Backup,
            Some(_) => Role::Joining,
        }
    }

    /// The group's replication mode (passive until a view says otherwise).
    pub fn mode(&self) -> Mode {
        self.view.as_ref().map_or(Mode::Passive, |v| v.mode)
    }

    pub fn is_primary(&self) -> bool {
        self.role() == Role::Primary
    }

    pub fn kv(&self) -> &KvStore {
        &self.state.kv
    }

    pub fn state(&self) -> &StateMachine {
        &self.state
    }

    pub fn applied_index(&self) -> Index {
        self.applied_index
    }

    pub fn commit_index(&self) -> Index {
        self.commit_index
    }

    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    pub fn log(&self) -> &Log {
        &self.log
    }

    /// This replica's status at `now` (its local time).
    pub fn status(&self, now: Millis) -> ReplicaStatus {
        let oldest = self.state.prepared.keys().map(|t| self.prepared_seen_ms.get(t).copied().unwrap_or(now)).min();
        ReplicaStatus {
            group: self.group,
            view: self.view.clone(),
            role: self.role().name(self.mode()).to_string(),
            last_index: self.log.last_index(),
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            digest: self.state.kv.digest(),
            keys: self.state.kv.len(),
            prepared: self.state.prepared.len(),
            locks: self.state.locks.len(),
            oldest_prepared_ms: oldest.map(|t| now.saturating_sub(t)),
            unfinished_decisions: self.state.decisions.len(),
            transfers: self.transfers(),
            handover: self.handover_status(),
            placement_change: self.placement_status(),
            sessions: self.state.sessions.len(),
        }
    }

    /// Snapshot streams under way: those this primary sends, by member, and
    /// the one this replica takes.
    fn transfers(&self) -> Vec<SnapshotTransfer> {
        let sending = self.progress.iter().filter_map(|(&peer, p)| {
            let s = p.stream.as_ref()?;
            let meta = s.frozen.meta;
            Some(SnapshotTransfer {
                peer,
                sending: true,
                index: meta.id.index,
                bytes: s.acked,
                total: meta.total_bytes,
            })
        });
        let leader = self.view.as_ref().map_or(0, |v| v.leader);
        let taking = self.incoming.iter().map(|p| SnapshotTransfer {
            peer: leader,
            sending: false,
            index: p.meta.id.index,
            bytes: p.received,
            total: p.meta.total_bytes,
        });
        sending.chain(taking).collect()
    }

    /// A replica acks nothing until it has read its view from the config
    /// store in this incarnation; the node reads it eagerly rather than at
    /// the next periodic refresh.
    pub fn awaiting_view_confirmation(&self) -> bool {
        !self.view_confirmed
    }

    /// Whether the primary may serve a read alone at `now`: every other
    /// member acked an `Append` sent less than `lease_ms` ago. A learner
    /// this primary proposed to admit counts as a member until the proposal
    /// is settled: the new view may be chosen without this primary learning
    /// it, and the learner could then take over without ever having granted
    /// a lease (found by the simulator: a sole primary kept serving reads
    /// after the member it admitted had taken over and served writes).
    pub fn lease_valid(&self, now: Millis) -> bool {
        self.lease_expires_ms().is_some_and(|expires| now < expires)
    }

    /// Whether this primary is cut off from its backups: it has served long
    /// enough to hold a lease (`lease_ms` past the time it began to serve,
    /// or became primary if that was later: time for several heartbeats to
    /// be acked) and holds none now. Counted from the time it began to
    /// serve only, a backup that won its view long after its last ack (a
    /// later-ranked backup, a slow config store) refused everything as cut
    /// off before it had sent a single heartbeat. Its
    /// writes cannot commit and its reads may be stale, and the backups
    /// that stopped hearing from it may be replacing it, so it refuses
    /// requests with `CutOff` until they answer again. A sole member is
    /// never cut off.
    pub fn cut_off(&self, now: Millis) -> bool {
        self.is_primary() && now >= self.cut_off_after_ms && !self.lease_valid(now)
    }

    /// When the primary's lease runs out (local time): `lease_ms` after the
    /// oldest of the newest `Append`s each other member acked. `None` when
    /// this replica is not primary or some member has acked none; a sole
    /// member's lease never runs out.
    pub fn lease_expires_ms(&self) -> Option<Millis> {
        let view = self.view.as_ref()?;
        if !self.is_primary() {
            return None;
        }
        let admitted = self.admitting.iter().chain(self.unresolved_admission.iter());
        let mut expires = Millis::MAX;
        for m in view.members.iter().chain(admitted).filter(|&&m| m != self.me) {
            let sent = self.progress.get(m).and_then(|p| p.lease_sent_ms)?;
            expires = expires.min(sent + self.timing.lease_ms);
        }
        Some(expires)
    }

    /// Answers a read served under the lease: marked with the lease's
    /// expiry, so that it is not released after it (see
    /// `Effect::ReplyUnderLease`). With no lease held now it is refused.
    fn answer_read(&self, ctx: &mut Ctx, token: ClientToken, id: RequestId, result: OpResult) {
        let now = ctx.out.now();
        // The value read is committed (or waited for its write to commit):
        // the commit index covers it.
        let reply = ClientReply::Response { id, result: Ok(result), at: self.commit_index, stale_ms: None };
        if self.bugs.read_without_lease || self.bugs.lease_checked_at_batch_start {
            return ctx.out.reply(token, reply);
        }
        match self.lease_expires_ms() {
            Some(expires) if now < expires => ctx.out.reply_under_lease(token, reply, expires),
            _ => ctx.out.reply(token, ClientReply::Response { id, result: Err(no_lease()), at: 0, stale_ms: None }),
        }
    }

    pub fn on_tick(&mut self, ctx: &mut Ctx) {
        self.note_prepared_ages(ctx.out.now());
        self.serve_held_reads(ctx);
        let Some(view) = self.view.clone() else { return };
        match self.role() {
            Role::Primary => {
                self.tick_primary(ctx, &view);
                self.tick_coordinator(ctx);
                self.tick_participant(ctx);
            }
            Role::Backup => self.tick_backup(ctx, &view),
            Role::Recovering => self.tick_recovering(ctx, &view),
            Role::Joining => self.tick_joining(ctx, &view),
        }
    }

    /// Notes when each prepared transaction was first seen here, for the
    /// age `status` reports (one replayed from the WAL counts from now).
    fn note_prepared_ages(&mut self, now: Millis) {
        if self.prepared_seen_ms.len() != self.state.prepared.len() {
            let prepared = &self.state.prepared;
            self.prepared_seen_ms.retain(|t, _| prepared.contains_key(t));
            for t in prepared.keys() {
                self.prepared_seen_ms.entry(*t).or_insert(now);
            }
        }
    }

    /// Answers client request `id` on `token` once entry `index` is applied:
    /// a passive primary replies with the entry's response; an active
    /// member replies when it executes the request.
    fn answer_when_applied(&mut self, token: ClientToken, id: RequestId, index: Index) {
        if self.mode() == Mode::Active {
            self.await_answer(token, id);
        } else {
            self.waiters.entry(index).or_default().push((token, id));
        }
    }

    /// Sends what the step produced, in one batch per backup, and records the
    /// commit index lazily in the WAL.
    pub fn flush(&mut self, ctx: &mut Ctx) {
        if self.dirty && self.is_primary() {
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for p in peers {
                self.send_appends(ctx, p, false);
            }
            // A group of one commits on its own fsync.
            self.advance_commit(ctx);
        }
        self.dirty = false;
        if self.is_primary() && self.mode() == Mode::Active && self.commit_index > self.commit_sent {
            // Members answer clients only once they learn an entry is
            // stable, so the sequencer tells them at once rather than at the
            // next heartbeat.
            self.commit_sent = self.commit_index;
            let peers: Vec<NodeId> = self.progress.keys().copied().collect();
            for p in peers {
                self.send_appends(ctx, p, true);
            }
        }
        if self.commit_index > self.persisted_commit {
            self.persisted_commit = self.commit_index;
            ctx.out.persist(WalRecord::Commit { group: self.group, index: self.commit_index });
        }
    }

    /// Appends to this replica's own log and queues the WAL record.
    fn append_local(&mut self, ctx: &mut Ctx, entry: impl Into<SharedEntry>) {
        let entry = entry.into();
        let index = entry.index;
        let lsn = ctx.out.persist(WalRecord::Entry { group: self.group, entry: SharedEntry::clone(&entry) });
        self.log.append(entry);
        self.marks.push_back((lsn, index));
    }

    fn truncate_local(&mut self, ctx: &mut Ctx, index: Index) {
        assert!(index >= self.commit_index, "a committed entry is never truncated");
        ctx.out.persist(WalRecord::Truncate { group: self.group, index });
        self.log.truncate_after(index);
        self.durable_index = self.durable_index.min(index);
        self.matched_upto = self.matched_upto.min(index);
        self.marks.retain(|&(_, i)| i <= index);
    }

    pub fn on_persisted(&mut self, ctx: &mut Ctx, lsn: Lsn) {
        let before = self.durable_index;
        while let Some(&(l, i)) = self.marks.front() {
            if l > lsn {
                break;
            }
            self.marks.pop_front();
            self.durable_index = i;
        }
        if self.durable_index == before {
            return;
        }
        if self.is_primary() {
            self.advance_commit(ctx);
        } else {
            self.send_ack(ctx);
        }
    }

    /// Applies committed entries (or, with the `execute_before_stable` bug,
    /// everything held), answering waiting clients when `out` is given (it is
    /// not during WAL replay).
    fn apply_committed(&mut self, mut out: Option<&mut Outbox>) {
        let upto = if self.bugs.execute_before_stable && self.mode() == Mode::Active {
            self.log.last_index()
        } else {
            self.commit_index
        };
        // Lent out, as in `apply_committed_primary`, to apply without cloning.
        let log = std::mem::take(&mut self.log);
        for e in log.range(self.applied_index + 1, upto) {
            match (self.apply_entry(e), out.as_deref_mut()) {
                (Applied::Answered { id, response }, Some(out)) => self.answer_awaiting(out, id, &response, e.index),
                (Applied::Decided { txn }, Some(out)) if self.awaiting.contains_key(&txn.request_id()) => {
                    let response = e.decided_response().expect("a decision applied as one");
                    self.answer_awaiting(out, txn.request_id(), &response, e.index)
                }
                _ => {}
            }
        }
        self.log = log;
        self.compact();
    }

    /// Applies the next entry to the state machine and says what it did.
    fn apply_entry(&mut self, e: &Entry) -> Applied {
        assert_eq!(e.index, self.applied_index + 1, "entries are applied in order");
        let applied = self.state.apply(e, &self.bugs, self.group, self.max_sessions);
        self.applied_index = e.index;
        applied
    }

    fn compact(&mut self) {
        let held = self.applied_index.saturating_sub(self.log.base_index());
        // Drop just the excess, every time: a few entries per batch cost
        // nothing, while dropping half the log at once stalled the event
        // loop long enough under load for backups to suspect the primary
        // (found by the benchmark at 200,000 entries per group).
        if held > self.retain_entries {
            let mut upto = self.applied_index - self.retain_entries;
            // A member taking a snapshot continues from the log after the
            // snapshot's index: those entries are kept while it streams, up
            // to a bound (past it the member gets a newer snapshot).
            let streamed = self.progress.values().filter_map(|p| p.stream.as_ref());
            if let Some(pin) = streamed.map(|s| s.frozen.meta.id.index).min() {
                let floor = self.applied_index.saturating_sub(self.retain_entries + MAX_SNAPSHOT_PINNED_ENTRIES);
                upto = upto.min(pin.max(floor));
            }
            if upto > self.log.base_index() {
                self.log.compact_upto(upto);
            }
        }
    }
}
