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
//! checks every client request passes), and the two execution strategies,
//! `passive.rs` (the primary executes and ships effects) and `active.rs`
//! (the sequencer orders, every member executes and answers).
//!
//! It never answers a client before the entry is durable on every member of
//! the view, never acks an entry before the `Persisted` input that covers
//! it, never serves a read without a lease, and becomes primary only by
//! winning a view compare-and-set in the config store during this
//! incarnation.

mod active;
mod backup;
mod passive;
mod primary;
mod recovery;
mod requests;
mod views;

use crate::bugs::Bugs;
use crate::config::Change;
use crate::io::{ClientToken, Lsn, Outbox};
use crate::log::{Entry, Log, SharedEntry};
use crate::state::kv::{Key, KvStore, Versioned};
use crate::state::op::OpResult;
use crate::state::StateMachine;
use crate::types::{Epoch, GroupId, Index, Millis, Mode, NodeId, RequestId, View};
use crate::wire::{ReplicaStatus, WalRecord};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A snapshot still unacknowledged after this many retransmit periods is
/// sent again.
const SNAPSHOT_RETRY_FACTOR: Millis = 10;

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
        }
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
    snapshot_sent_ms: Option<Millis>,
}

/// Requests a replica makes of the node (the config store) during a step.
#[derive(Debug, Default)]
pub struct Requests {
    pub view_changes: Vec<(GroupId, Change)>,
}

/// Everything a replica needs from the node for one step.
pub struct Ctx<'a> {
    pub out: &'a mut Outbox,
    pub rng: &'a mut ChaCha8Rng,
    pub requests: &'a mut Requests,
}

/// One group's replica on this node.
#[derive(Debug)]
pub struct Replica {
    group: GroupId,
    me: NodeId,
    timing: ReplicaTiming,
    bugs: Bugs,
    retain_entries: u64,
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
    /// The last index of the log this replica held when it became primary.
    /// An earlier primary may have committed up to there, even though this
    /// one's commit index gets there only with its no-op (see `Entry::noop`).
    inherited_upto: Index,
}

impl Replica {
    pub fn new(group: GroupId, me: NodeId, timing: ReplicaTiming, retain_entries: u64, bugs: Bugs) -> Replica {
        Replica {
            group,
            me,
            timing,
            bugs,
            retain_entries: retain_entries.max(1),
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
            inherited_upto: 0,
        }
    }

    pub fn group(&self) -> GroupId {
        self.group
    }

    pub fn view(&self) -> Option<&View> {
        self.view.as_ref()
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

    pub fn status(&self) -> ReplicaStatus {
        ReplicaStatus {
            group: self.group,
            view: self.view.clone(),
            role: self.role().name(self.mode()).to_string(),
            last_index: self.log.last_index(),
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            digest: self.state.kv.digest(),
            keys: self.state.kv.len(),
        }
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
        let Some(view) = &self.view else { return false };
        if !self.is_primary() {
            return false;
        }
        let admitted = self.admitting.iter().chain(self.unresolved_admission.iter());
        view.members.iter().chain(admitted).filter(|&&m| m != self.me).all(|m| {
            self.progress.get(m).and_then(|p| p.lease_sent_ms).is_some_and(|sent| now < sent + self.timing.lease_ms)
        })
    }

    pub fn on_tick(&mut self, ctx: &mut Ctx) {
        let Some(view) = self.view.clone() else { return };
        match self.role() {
            Role::Primary => self.tick_primary(ctx, &view),
            Role::Backup => self.tick_backup(ctx, &view),
            Role::Recovering => self.tick_recovering(ctx, &view),
            Role::Joining => self.tick_joining(ctx, &view),
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
            let answer = self.apply_entry(e);
            if let (Some(out), Some((id, response))) = (out.as_deref_mut(), answer) {
                self.answer_awaiting(out, id, &response);
            }
        }
        self.log = log;
        self.compact();
    }

    /// Applies the next entry to the state machine and returns the request
    /// it carried out with its response, if it carried one out.
    fn apply_entry(&mut self, e: &Entry) -> Option<(RequestId, OpResult)> {
        assert_eq!(e.index, self.applied_index + 1, "entries are applied in order");
        let answer = self.state.apply(e, &self.bugs);
        self.applied_index = e.index;
        answer
    }

    fn compact(&mut self) {
        let held = self.applied_index.saturating_sub(self.log.base_index());
        // Drop just the excess, every time: a few entries per batch cost
        // nothing, while dropping half the log at once stalled the event
        // loop long enough under load for backups to suspect the primary
        // (found by the benchmark at 200,000 entries per group).
        if held > self.retain_entries {
            self.log.compact_upto(self.applied_index - self.retain_entries);
        }
    }
}
