//! Passive (primary-backup) replication of one group on one replica.
//!
//! This module owns a replica's log, applied state, session table and its
//! role in the group's view: primary, backup, joining (caught up but not yet
//! in the view) or recovering (waiting to learn or win the view). It never
//! answers a client before the entry is durable on every member of the view,
//! never acks an entry before the `Persisted` input that covers it, never
//! serves a read without a lease, and becomes primary only by winning a view
//! compare-and-set in the config store during this incarnation.

use crate::config::Change;
use crate::io::{ClientToken, Lsn, Outbox};
use crate::kv::{execute, Dedup, Key, KvStore, OpResult, Sessions, Versioned, Write};
use crate::limits::{
    MAX_APPEND_BYTES, MAX_APPEND_ENTRIES, MAX_AWAITING, MAX_INFLIGHT_ENTRIES, MAX_PARKED_READS, MAX_UNCOMMITTED_ENTRIES,
};
use crate::log::Log;
use crate::msg::{
    ClientError, ClientReply, ClientRequest, Entry, PeerBody, ReplicaStatus, SharedEntry, Snapshot, WalRecord,
};
use crate::types::{Epoch, GroupId, Index, Millis, Mode, NodeId, RequestId, View};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A snapshot still unacknowledged after this many retransmit periods is
/// sent again.
const SNAPSHOT_RETRY_FACTOR: Millis = 10;

/// Bugs that the simulator can switch on to prove its checkers catch them.
/// Production code never constructs anything but `Bugs::default()`: no flag,
/// environment variable or config file of a node reaches this struct.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The primary answers before every backup acked the entry.
    pub reply_before_replicated: bool,
    /// A backup acks entries before they are durable.
    pub ack_before_fsync: bool,
    /// A backup makes itself primary without winning the view CAS.
    pub promote_without_cas: bool,
    /// A retried request is executed again.
    pub skip_dedup: bool,
    /// The primary serves reads without a valid lease.
    pub read_without_lease: bool,
    /// A backup keeps entries the new primary's log contradicts.
    pub keep_divergent_suffix: bool,
    /// An active-group member executes entries as soon as it holds them,
    /// before every member holds them (before they are stable).
    pub execute_before_stable: bool,
    /// This member's state silently goes wrong: every value it writes while
    /// executing an active-group request is altered.
    pub diverge_state: bool,
}

/// Timeouts of the passive protocol, in milliseconds of local time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PassiveTiming {
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

impl Default for PassiveTiming {
    fn default() -> Self {
        PassiveTiming {
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
    timing: PassiveTiming,
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
    kv: KvStore,
    sessions: Sessions,
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
    pub fn new(group: GroupId, me: NodeId, timing: PassiveTiming, retain_entries: u64, bugs: Bugs) -> Replica {
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
            kv: KvStore::default(),
            sessions: Sessions::default(),
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

    // ----- Recovery -----------------------------------------------------

    pub fn replay_entry(&mut self, entry: SharedEntry) {
        if entry.index <= self.log.base_index() {
            return;
        }
        if entry.index <= self.log.last_index() {
            self.log.truncate_after(entry.index - 1);
        }
        self.log.append(entry);
    }

    pub fn replay_truncate(&mut self, index: Index) {
        if index >= self.log.base_index() {
            self.log.truncate_after(index);
        }
    }

    pub fn replay_commit(&mut self, index: Index) {
        self.persisted_commit = self.persisted_commit.max(index);
    }

    pub fn replay_snapshot(&mut self, snapshot: Snapshot) {
        self.log.reset_to(snapshot.index, snapshot.epoch);
        self.kv = snapshot.kv;
        self.sessions = snapshot.sessions;
        self.commit_index = snapshot.index;
        self.applied_index = snapshot.index;
        self.persisted_commit = self.persisted_commit.max(snapshot.index);
    }

    /// Ends recovery: everything replayed is durable, and the entries up to
    /// the last persisted commit are applied.
    pub fn finish_replay(&mut self, amnesiac: bool) {
        self.durable_index = self.log.last_index();
        self.commit_index = self.persisted_commit.min(self.log.last_index()).max(self.commit_index);
        self.amnesiac = amnesiac;
        self.apply_committed(None);
    }

    // ----- Queries --------------------------------------------------------

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
        &self.kv
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
            digest: self.kv.digest(),
            keys: self.kv.len(),
        }
    }

    /// Whether the primary may serve a read alone at `now`: every other
    /// member acked an `Append` sent less than `lease_ms` ago. A learner
    /// this primary proposed to admit counts as a member until the proposal
    /// is settled: the new view may be chosen without this primary learning
    /// it, and the learner could then take over without ever having granted
    /// a lease (found by the simulator: a sole primary kept serving reads
    /// after the member it admitted had taken over and served writes).
    /// A replica acks nothing until it has read its view from the config
    /// store in this incarnation; the node reads it eagerly rather than at
    /// the next periodic refresh.
    pub fn awaiting_view_confirmation(&self) -> bool {
        !self.view_confirmed
    }

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

    // ----- Views ------------------------------------------------------------

    /// Adopts `view`, just read from the config store (so no view of the
    /// group was newer when the read began), and notes that this replica's
    /// view is now confirmed.
    pub fn confirm_view(&mut self, ctx: &mut Ctx, view: View) {
        let epoch = view.epoch;
        self.adopt_view(ctx, view);
        if self.view.as_ref().is_some_and(|v| v.epoch >= epoch) {
            self.view_confirmed = true;
        }
    }

    /// Adopts `view` if it is newer than the one held.
    pub fn adopt_view(&mut self, ctx: &mut Ctx, view: View) {
        let was_primary = self.is_primary();
        self.adopt_view_as(ctx, view, was_primary);
    }

    /// Adopts `view`; `was_primary` is whether this replica served as
    /// primary of the view it held before (judged by the caller when it has
    /// already recorded winning the new one).
    fn adopt_view_as(&mut self, ctx: &mut Ctx, view: View, was_primary: bool) {
        assert_eq!(view.group, self.group);
        if self.view.as_ref().is_some_and(|cur| view.epoch <= cur.epoch) || view.epoch < self.log.last_epoch() {
            return;
        }
        // A newer view settles any admission this replica left unresolved.
        self.unresolved_admission = None;
        self.view = Some(view.clone());
        self.matched_upto = self.matched_upto.min(self.log.base_index());
        // A `sent_ms` is a time on the clock of the primary that stamped it.
        // Echoing the old primary's stamps to a new one would hand it lease
        // evidence from another clock (possibly far ahead of its own).
        self.last_sent_ms = 0;
        self.reset_primary_deadline(ctx);
        if self.is_primary() {
            if was_primary {
                self.on_own_view_change(ctx);
            } else {
                self.become_primary(ctx);
            }
        } else if was_primary {
            self.step_down(ctx);
        }
    }

    fn reset_primary_deadline(&mut self, ctx: &mut Ctx) {
        let jitter = ctx.rng.gen_range(0..=self.timing.primary_suspect_ms / 2);
        self.primary_deadline_ms = ctx.out.now() + self.timing.primary_suspect_ms + jitter;
    }

    fn become_primary(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let view = self.view.clone().expect("a primary has a view");
        self.progress.clear();
        for &m in view.members.iter().filter(|&&m| m != self.me) {
            let mut p = self.fresh_progress(now, false);
            // Re-stream the inherited uncommitted suffix at once: a backup
            // holding it acks it in one round trip, one lacking it rejects
            // and is walked back. Starting past the end left the suffix (and
            // the retries waiting on it) uncommitted until `retransmit_ms`.
            p.next_index = self.commit_index + 1;
            self.progress.insert(m, p);
        }
        // The uncommitted suffix this primary inherited is the truth now: it
        // becomes the overlay new requests execute against, and its request
        // ids count as pending so retries wait for them instead of rerunning.
        self.overlay.clear();
        self.pending_ids.clear();
        self.inherited_upto = self.log.last_index();
        let pending: Vec<SharedEntry> = self.log.range(self.commit_index + 1, self.log.last_index()).cloned().collect();
        for e in &pending {
            self.note_pending(e);
        }
        self.next_heartbeat_ms = now;
        self.dirty = true;
        // An old primary may still hold a read lease this replica granted
        // with its last ack. Serving before that lease runs out would let it
        // answer reads that miss this primary's writes (found by the
        // simulator: a backup kept acking a resumed primary while its own
        // view change was in flight, then won and served while the old
        // primary still served reads). `primary_suspect_ms` exceeds
        // `lease_ms` plus drift, so waiting it out from the last ack is safe.
        let granted = self.lease_granted_ms.unwrap_or(now);
        self.serve_after_ms = granted + self.timing.primary_suspect_ms;
        self.append_noop_if_inherited(ctx);
    }

    fn fresh_progress(&self, now: Millis, learner: bool) -> Progress {
        Progress {
            match_index: 0,
            next_index: self.log.last_index() + 1,
            last_ack_ms: now,
            last_progress_ms: now,
            lease_sent_ms: None,
            learner,
            snapshot_sent_ms: None,
        }
    }

    /// The primary changed its own view (removed or admitted a member).
    fn on_own_view_change(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let view = self.view.clone().expect("primary has a view");
        for &m in view.members.iter().filter(|&&m| m != self.me) {
            let fresh = self.fresh_progress(now, false);
            let p = self.progress.entry(m).or_insert(fresh);
            p.learner = false;
        }
        self.progress.retain(|id, p| p.learner || view.is_member(*id));
        self.append_noop_if_inherited(ctx);
        self.dirty = true;
        self.advance_commit(ctx);
    }

    /// A primary commits only up to an entry of its own epoch (see
    /// `advance_commit`); when its log ends in uncommitted entries of an
    /// older epoch, a no-op entry of its epoch lets them commit without
    /// waiting for the next client write (see `Entry::noop`).
    ///
    /// A passive primary appends it only once it may serve (`serve_after_ms`):
    /// the no-op makes the inherited entries visible, and the predecessor
    /// may still be serving reads under its lease until then (found by the
    /// simulator when the no-op was appended at once).
    fn append_noop_if_inherited(&mut self, ctx: &mut Ctx) {
        let epoch = self.view.as_ref().expect("primary has a view").epoch;
        if self.mode() == Mode::Passive && ctx.out.now() < self.serve_after_ms {
            return;
        }
        if self.log.last_index() > self.commit_index && self.log.last_epoch() != epoch {
            let index = self.log.last_index() + 1;
            self.append_local(ctx, Entry::noop(epoch, index));
            self.dirty = true;
        }
    }

    fn step_down(&mut self, ctx: &mut Ctx) {
        let view = self.view.clone();
        for (_, ws) in std::mem::take(&mut self.waiters) {
            for (token, id) in ws {
                ctx.out.reply(
                    token,
                    ClientReply::Response { id, result: Err(ClientError::NotLeader { view: view.clone() }) },
                );
            }
        }
        for (_, rs) in std::mem::take(&mut self.parked_reads) {
            for (token, id, _) in rs {
                ctx.out.reply(
                    token,
                    ClientReply::Response { id, result: Err(ClientError::NotLeader { view: view.clone() }) },
                );
            }
        }
        self.parked_count = 0;
        self.overlay.clear();
        self.pending_ids.clear();
        self.progress.clear();
        self.admitting = None;
    }

    fn note_pending(&mut self, e: &Entry) {
        if e.is_noop() {
            return;
        }
        self.pending_ids.insert(e.request_id, e.index);
        for w in &e.effects {
            let v = match w {
                Write::Put { value, version, .. } => Some(Versioned { value: value.clone(), version: *version }),
                Write::Delete { .. } => None,
            };
            self.overlay.insert(w.key().to_vec(), (v, e.index));
        }
    }

    /// The outcome of a view change this replica proposed.
    pub fn on_view_change_outcome(&mut self, ctx: &mut Ctx, applied: bool, current: Option<View>) {
        self.view_change_in_flight = false;
        let admitting = self.admitting.take();
        // A proposal that completed settled the register either way; one
        // that gave up may still be chosen later.
        self.unresolved_admission = if current.is_some() { None } else { admitting.or(self.unresolved_admission) };
        if let Some(v) = current {
            // Judged before `led_epoch` moves: a primary that changed its own
            // view (removed or admitted a member) keeps serving, rather than
            // starting over as a new primary that waits out a lease.
            let was_primary = self.is_primary();
            if applied && v.leader == self.me {
                self.led_epoch = Some(v.epoch);
                if let Some(n) = admitting {
                    debug_assert!(v.is_member(n));
                }
            }
            self.adopt_view_as(ctx, v, was_primary);
            // The outcome carries the register's value as the store holds it.
            self.view_confirmed = true;
        }
    }

    fn propose_view(&mut self, ctx: &mut Ctx, view: View) {
        let expect_epoch = self.view.as_ref().expect("proposals start from a view").epoch;
        self.view_change_in_flight = true;
        ctx.requests.view_changes.push((self.group, Change::ReplaceView { expect_epoch, view }));
    }

    // ----- Client requests --------------------------------------------------

    pub fn on_client_request(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        let id = req.id;
        let reply = |out: &mut Outbox, result| out.reply(token, ClientReply::Response { id, result });
        let active = self.mode() == Mode::Active;
        if active && !self.is_primary() {
            return self.on_member_request(ctx, token, req);
        }
        if !self.is_primary() {
            return reply(ctx.out, Err(ClientError::NotLeader { view: self.view.clone() }));
        }
        if id == RequestId::NOOP {
            let reason = "client id 0 is reserved for the primary's no-op entries".to_string();
            return reply(ctx.out, Err(ClientError::Malformed { reason }));
        }
        let view = self.view.clone().expect("primary has a view");
        if req.epoch != view.epoch {
            return reply(ctx.out, Err(ClientError::StaleEpoch { view }));
        }
        if !active && ctx.out.now() < self.serve_after_ms {
            let reason = "a new primary is waiting out its predecessor's read lease".to_string();
            return reply(ctx.out, Err(ClientError::Unavailable { reason }));
        }
        if let Err(e) = req.op.validate() {
            return reply(ctx.out, Err(e));
        }
        let now = ctx.out.now();
        if req.op.is_read() && !active {
            if !self.bugs.read_without_lease && !self.lease_valid(now) {
                return reply(
                    ctx.out,
                    Err(ClientError::Unavailable { reason: "the primary's lease is not held".into() }),
                );
            }
            let key = req.op.key();
            let (result, wait_for) = match self.overlay.get(key) {
                Some((v, idx)) => (OpResult::Value(v.clone()), *idx),
                None => (OpResult::Value(self.kv.get(key).cloned()), 0),
            };
            if wait_for <= self.commit_index {
                return reply(ctx.out, Ok(result));
            }
            // The value read comes from a write that is not committed yet:
            // answer only once it is, so no read ever sees a lost write.
            if self.parked_count >= MAX_PARKED_READS {
                return reply(ctx.out, Err(ClientError::Busy));
            }
            self.parked_count += 1;
            self.parked_reads.entry(wait_for).or_default().push((token, id, result));
            return;
        }
        // Retries are looked up before min_members is enforced: a write that
        // already ran must get its recorded outcome, not a refusal that would
        // tell the client a committed write did not happen.
        if !self.bugs.skip_dedup {
            match self.sessions.lookup(id) {
                Dedup::Done(r) => return reply(ctx.out, Ok(r.clone())),
                Dedup::Expired => return reply(ctx.out, Err(ClientError::SessionExpired)),
                Dedup::New => {}
            }
            if let Some(&index) = self.pending_ids.get(&id) {
                if active {
                    self.await_answer(token, id);
                } else {
                    self.waiters.entry(index).or_default().push((token, id));
                }
                return;
            }
        }
        if view.members.len() < view.min_members && !req.op.is_read() {
            return reply(
                ctx.out,
                Err(ClientError::BelowMinMembers { members: view.members.len(), min_members: view.min_members }),
            );
        }
        if self.log.last_index() - self.commit_index >= MAX_UNCOMMITTED_ENTRIES || ctx.out.overloaded {
            return reply(ctx.out, Err(ClientError::Busy));
        }
        let index = self.log.last_index() + 1;
        if active {
            self.await_answer(token, id);
            // Sequencing only: the request is executed by every member,
            // this one included, once every member holds it durably.
            let entry = Entry {
                epoch: view.epoch,
                index,
                request_id: id,
                response: OpResult::Value(None),
                effects: Vec::new(),
                op: Some(req.op),
            };
            self.note_pending(&entry);
            self.append_local(ctx, entry);
            self.dirty = true;
            return;
        }
        let key = req.op.key();
        let current = match self.overlay.get(key) {
            Some((v, _)) => v.clone(),
            None => self.kv.get(key).cloned(),
        };
        let (response, effects) = execute(&req.op, index, current.as_ref());
        let entry = Entry { epoch: view.epoch, index, request_id: id, response, effects, op: None };
        self.note_pending(&entry);
        self.waiters.entry(index).or_default().push((token, id));
        self.append_local(ctx, entry);
        self.dirty = true;
    }

    /// Active mode, a member that is not the sequencer: it answers a request
    /// only by executing it, so it remembers who asked. A retry of a request
    /// it already executed gets the recorded answer at once.
    fn on_member_request(&mut self, ctx: &mut Ctx, token: ClientToken, req: ClientRequest) {
        if req.op.validate().is_err() || req.id == RequestId::NOOP {
            // The sequencer answers with the error; members stay silent.
            return;
        }
        match self.sessions.lookup(req.id) {
            Dedup::Done(r) => {
                let result = Ok(r.clone());
                ctx.out.reply(token, ClientReply::Response { id: req.id, result });
            }
            Dedup::Expired => {}
            Dedup::New => self.await_answer(token, req.id),
        }
    }

    fn await_answer(&mut self, token: ClientToken, id: RequestId) {
        let tokens = self.awaiting.entry(id).or_default();
        if tokens.is_empty() {
            self.awaiting_order.push_back(id);
        }
        if !tokens.contains(&token) {
            tokens.push(token);
        }
        while self.awaiting_order.len() > MAX_AWAITING {
            let old = self.awaiting_order.pop_front().expect("non-empty");
            self.awaiting.remove(&old);
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

    // ----- Durability ---------------------------------------------------

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

    // ----- Primary: replication -------------------------------------------

    /// Sends whatever each backup is missing, bounded by the in-flight window.
    fn send_appends(&mut self, ctx: &mut Ctx, to: NodeId, heartbeat: bool) {
        let view = self.view.clone().expect("primary has a view");
        let now = ctx.out.now();
        let last = self.log.last_index();
        let base = self.log.base_index();
        let commit = self.commit_index;
        let Some(p) = self.progress.get_mut(&to) else { return };
        let mut sent_any = false;
        while p.next_index <= last && p.next_index - p.match_index <= MAX_INFLIGHT_ENTRIES {
            if p.next_index <= base {
                break;
            }
            let prev_index = p.next_index - 1;
            let prev_epoch = self.log.epoch_at(prev_index).expect("prev is within the log");
            let mut entries = Vec::new();
            let mut bytes = 0;
            for e in self.log.range(p.next_index, last) {
                if entries.len() >= MAX_APPEND_ENTRIES || (bytes > 0 && bytes + e.payload_bytes() > MAX_APPEND_BYTES) {
                    break;
                }
                bytes += e.payload_bytes();
                entries.push(e.clone());
            }
            p.next_index += entries.len() as Index;
            ctx.out.send(
                to,
                PeerBody::Append {
                    view: view.clone(),
                    prev_index,
                    prev_epoch,
                    entries,
                    commit_index: commit,
                    sent_ms: now,
                },
            );
            sent_any = true;
        }
        if p.next_index <= base {
            // The backup needs entries this log no longer has: send the state.
            // A snapshot is the whole state: cloning, encoding and installing
            // it takes long under load, so it is resent only after a long
            // silence. Resending it every retransmit period made a busy
            // primary clone its state over and over while the first copy was
            // still on its way (found by the benchmark at 200,000 entries).
            if p.snapshot_sent_ms.is_none_or(|t| now >= t + SNAPSHOT_RETRY_FACTOR * self.timing.retransmit_ms) {
                p.snapshot_sent_ms = Some(now);
                let snapshot = Snapshot {
                    index: self.applied_index,
                    epoch: self.log.epoch_at(self.applied_index).unwrap_or(0),
                    kv: self.kv.clone(),
                    sessions: self.sessions.clone(),
                };
                ctx.out.send(to, PeerBody::InstallSnapshot { view, snapshot: Box::new(snapshot), sent_ms: now });
            }
            return;
        }
        if heartbeat && !sent_any {
            let prev_index = p.match_index.max(base);
            let prev_epoch = self.log.epoch_at(prev_index).expect("prev is within the log");
            ctx.out.send(
                to,
                PeerBody::Append {
                    view,
                    prev_index,
                    prev_epoch,
                    entries: Vec::new(),
                    commit_index: commit,
                    sent_ms: now,
                },
            );
        }
    }

    pub fn on_append_ack(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, match_index: Index, sent_ms: Millis) {
        if !self.is_primary() || self.view.as_ref().is_some_and(|v| v.epoch != epoch) {
            return;
        }
        let now = ctx.out.now();
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack_ms = now;
        p.lease_sent_ms = Some(p.lease_sent_ms.map_or(sent_ms, |s| s.max(sent_ms)));
        let match_index = match_index.min(last);
        if match_index > p.match_index {
            p.match_index = match_index;
            p.last_progress_ms = now;
        }
        p.next_index = p.next_index.max(p.match_index + 1);
        // A learner holding everything committed is as current as any member:
        // from its admission on, commits wait for it. Asking it to be within
        // a few entries of the primary's last index as well could never hold
        // under a steady write load, so a removed backup stayed out forever.
        // Everything committed includes what an earlier primary may have
        // committed of the inherited suffix, before this primary's own commit
        // index covers it (found by the simulator: a learner admitted while
        // the no-op was pending lacked entries the previous primary had
        // committed, then won a view without them).
        let learner_caught_up = p.learner && p.match_index >= self.commit_index.max(self.inherited_upto);
        self.advance_commit(ctx);
        if learner_caught_up && !self.view_change_in_flight {
            let view = self.view.clone().expect("primary has a view");
            let mut members = view.members.clone();
            members.push(from);
            self.admitting = Some(from);
            let next = view.next(self.me, members);
            self.propose_view(ctx, next);
        }
        self.send_appends(ctx, from, false);
    }

    pub fn on_append_reject(&mut self, ctx: &mut Ctx, from: NodeId, epoch: Epoch, last_index: Index) {
        if !self.is_primary() || self.view.as_ref().is_some_and(|v| v.epoch != epoch) {
            return;
        }
        let now = ctx.out.now();
        let Some(p) = self.progress.get_mut(&from) else { return };
        p.last_ack_ms = now;
        // A log shorter than what the backup acked means it lost acked
        // entries (its WAL was cut at recovery). Keeping the old match would
        // probe past its end forever, in a hot reject loop, and stall commit.
        // (Lowering match never lowers commit_index; at worst a reordered
        // reject costs a resend.)
        p.match_index = p.match_index.min(last_index);
        p.next_index = (last_index + 1).max(p.match_index + 1).min(p.next_index);
        p.last_progress_ms = now;
        self.send_appends(ctx, from, true);
    }

    pub fn on_join(&mut self, ctx: &mut Ctx, from: NodeId, last_index: Index) {
        if !self.is_primary() {
            if let Some(v) = &self.view {
                ctx.out.send(from, PeerBody::StaleEpoch { view: v.clone() });
            }
            return;
        }
        let now = ctx.out.now();
        let is_member = self.view.as_ref().is_some_and(|v| v.is_member(from));
        let fresh = self.fresh_progress(now, !is_member);
        let p = self.progress.entry(from).or_insert(fresh);
        p.last_ack_ms = now;
        p.next_index = p.next_index.min(last_index + 1).max(p.match_index + 1);
        self.send_appends(ctx, from, true);
    }

    fn advance_commit(&mut self, ctx: &mut Ctx) {
        let view = self.view.clone().expect("primary has a view");
        let mut commit = self.durable_index;
        if self.bugs.reply_before_replicated {
            commit = self.log.last_index();
        }
        for m in view.members.iter().chain(self.admitting.iter()).chain(self.unresolved_admission.iter()) {
            if *m == self.me {
                continue;
            }
            let matched = self.progress.get(m).map_or(0, |p| p.match_index);
            if !self.bugs.reply_before_replicated {
                commit = commit.min(matched);
            }
        }
        // Only an entry of this primary's epoch commits, and with it all
        // before it: an inherited entry counted as committed on its own
        // leaves no durable trace of this epoch on the members (see
        // `Entry::noop`).
        let own_epoch = self.log.epoch_at(commit) == Some(view.epoch) || self.bugs.reply_before_replicated;
        if commit > self.commit_index && own_epoch {
            self.commit_index = commit;
            self.apply_committed_primary(ctx);
        }
    }

    fn apply_committed_primary(&mut self, ctx: &mut Ctx) {
        let from = self.applied_index + 1;
        let to = self.commit_index;
        // The log is lent out while its entries are applied, so they are
        // read in place rather than cloned (nothing below touches the log).
        let log = std::mem::take(&mut self.log);
        for e in log.range(from, to) {
            let response = self.apply_entry(e);
            self.answer_awaiting(ctx.out, e.request_id, &response);
            self.pending_ids.remove(&e.request_id);
            for w in &e.effects {
                if self.overlay.get(w.key()).is_some_and(|(_, i)| *i == e.index) {
                    self.overlay.remove(w.key());
                }
            }
            if let Some(ws) = self.waiters.remove(&e.index) {
                for (token, id) in ws {
                    ctx.out.reply(token, ClientReply::Response { id, result: Ok(response.clone()) });
                }
            }
        }
        self.log = log;
        while let Some((&i, _)) = self.parked_reads.first_key_value() {
            if i > self.commit_index {
                break;
            }
            let (_, rs) = self.parked_reads.pop_first().expect("non-empty");
            self.parked_count -= rs.len();
            for (token, id, result) in rs {
                ctx.out.reply(token, ClientReply::Response { id, result: Ok(result) });
            }
        }
        self.compact();
    }

    /// Applies the next entry and returns its response. A passive entry
    /// carries its effects and response; an active entry carries the request,
    /// which is executed here, in log order, against this member's state.
    fn apply_entry(&mut self, e: &Entry) -> OpResult {
        assert_eq!(e.index, self.applied_index + 1, "entries are applied in order");
        let response = match &e.op {
            None => {
                for w in &e.effects {
                    self.kv.apply(w);
                }
                e.response.clone()
            }
            Some(op) => {
                let (response, mut effects) = execute(op, e.index, self.kv.get(op.key()));
                if self.bugs.diverge_state {
                    for w in effects.iter_mut() {
                        if let Write::Put { value, .. } = w {
                            value.push(b'!');
                        }
                    }
                }
                for w in &effects {
                    self.kv.apply(w);
                }
                response
            }
        };
        if !e.is_noop() {
            self.sessions.record(e.request_id, e.index, response.clone());
        }
        self.applied_index = e.index;
        response
    }

    /// Active mode: this member answers every client that asked it.
    fn answer_awaiting(&mut self, out: &mut Outbox, id: RequestId, response: &OpResult) {
        if let Some(tokens) = self.awaiting.remove(&id) {
            for token in tokens {
                out.reply(token, ClientReply::Response { id, result: Ok(response.clone()) });
            }
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
            let response = self.apply_entry(e);
            if let Some(out) = out.as_deref_mut() {
                self.answer_awaiting(out, e.request_id, &response);
            }
        }
        self.log = log;
        self.compact();
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

    // ----- Backup -----------------------------------------------------------

    /// Handles a message of a view: adopts a newer one, and answers a sender
    /// that is behind with the current view. Returns false if the message
    /// must be dropped.
    fn check_epoch(&mut self, ctx: &mut Ctx, from: NodeId, view: &View) -> bool {
        if let Some(cur) = &self.view {
            if view.epoch < cur.epoch {
                ctx.out.send(from, PeerBody::StaleEpoch { view: cur.clone() });
                return false;
            }
        }
        // The log's own entries prove a view at least as new as their epoch
        // exists, even when a restarted replica has not relearned the view
        // yet: a primary of an older epoch is stale, and its entries must
        // not truncate (possibly committed) newer ones (found by the
        // simulator: a restarted sole member of epoch 3 took appends from
        // the partitioned primary of epoch 2 and cut committed entries).
        if view.epoch < self.log.last_epoch() {
            return false;
        }
        self.adopt_view(ctx, view.clone());
        // A primary only streams after winning its view, so the sender leads it.
        view.leader == from && from != self.me
    }

    #[allow(clippy::too_many_arguments)]
    pub fn on_append(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        view: View,
        prev_index: Index,
        prev_epoch: Epoch,
        entries: Vec<SharedEntry>,
        commit_index: Index,
        sent_ms: Millis,
    ) {
        if !self.check_epoch(ctx, from, &view) {
            return;
        }
        if !append_is_well_formed(&view, prev_index, prev_epoch, &entries) {
            // Only a faulty or corrupted peer sends this: taking it would
            // break the log's order (and its assertions). It is dropped,
            // never a crash; a correct primary resends what is missing.
            return;
        }
        self.reset_primary_deadline(ctx);
        self.last_sent_ms = self.last_sent_ms.max(sent_ms);
        let base = self.log.base_index();
        if prev_index > self.log.last_index() {
            let hint = self.log.last_index();
            return self.reject(ctx, from, hint);
        }
        if prev_index >= base && self.log.epoch_at(prev_index) != Some(prev_epoch) {
            // Walk back over the conflicting epoch's run so the primary skips
            // it in one round trip.
            let bad = self.log.epoch_at(prev_index);
            let mut hint = prev_index.saturating_sub(1);
            while hint > base && hint > self.commit_index && self.log.epoch_at(hint) == bad {
                hint -= 1;
            }
            return self.reject(ctx, from, hint);
        }
        let n = entries.len() as Index;
        let marks_before = self.marks.len();
        for e in entries {
            if e.index <= self.log.base_index() {
                continue;
            }
            match self.log.epoch_at(e.index) {
                Some(ep) if ep == e.epoch => continue,
                // A committed entry is never replaced; a primary whose log
                // disagrees with it is faulty, and its append is dropped.
                Some(_) if e.index <= self.commit_index => return,
                Some(_) => {
                    if self.bugs.keep_divergent_suffix {
                        continue;
                    }
                    self.truncate_local(ctx, e.index - 1);
                }
                None => {}
            }
            if e.index != self.log.last_index() + 1 {
                break;
            }
            self.append_local(ctx, e);
        }
        self.matched_upto = self.matched_upto.max((prev_index + n).min(self.log.last_index()));
        let commit = commit_index.min(self.matched_upto);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.apply_committed(Some(ctx.out));
        } else if self.bugs.execute_before_stable {
            self.apply_committed(Some(ctx.out));
        }
        if self.amnesiac && self.commit_index >= commit_index {
            self.end_amnesia(ctx, view.epoch);
        }
        // Entries appended now are acked once durable (`on_persisted`), and
        // that ack carries this append's lease too. Acking at once as well
        // would only repeat the old match index: one more message each way
        // per append, on the path of every write.
        let acked_when_durable = self.marks.len() > marks_before && !self.bugs.ack_before_fsync;
        if !acked_when_durable {
            self.send_ack(ctx);
        }
    }

    /// An amnesiac replica is caught up once it has committed everything the
    /// primary committed, up to an entry of the primary's own epoch: only
    /// then does it hold every entry an earlier primary may have committed
    /// (they all precede that entry). Merely advancing its commit index was
    /// not enough (found by the simulator: a replica cleared its amnesia
    /// while still missing committed entries, then won a view). And the
    /// primary must lead a view this replica confirmed with the config
    /// store: catching up with a stale primary proves nothing (found by the
    /// simulator: a member whose cut WAL lost epochs 6-7 "caught up" with the
    /// partitioned primary of epoch 5 and renewed its lease). The end of
    /// the amnesia is made durable so a later restart does not repeat it.
    fn end_amnesia(&mut self, ctx: &mut Ctx, epoch: Epoch) {
        if self.view_confirmed && self.log.epoch_at(self.commit_index) == Some(epoch) {
            self.amnesiac = false;
            ctx.out.persist(WalRecord::CaughtUp { group: self.group });
        }
    }

    fn reject(&mut self, ctx: &mut Ctx, to: NodeId, last_index: Index) {
        let epoch = self.view.as_ref().map_or(0, |v| v.epoch);
        ctx.out.send(to, PeerBody::AppendReject { group: self.group, epoch, last_index });
    }

    fn send_ack(&mut self, ctx: &mut Ctx) {
        let Some(view) = &self.view else { return };
        // Until it has read the current view from the config store, a
        // restarted replica does not know whether it moved past this view
        // before it stopped: a member that had led epochs 9 and 10 without
        // writing an entry in them forgot them in a crash, acked the
        // deposed primary of epoch 8, and let it commit entries the newer
        // views lacked (found by the simulator). Its log alone proves only
        // the epochs of its entries.
        if view.leader == self.me || !self.view_confirmed {
            return;
        }
        let durable = if self.bugs.ack_before_fsync { self.log.last_index() } else { self.durable_index };
        let match_index = durable.min(self.matched_upto);
        self.acked_index = match_index;
        self.lease_granted_ms = Some(ctx.out.now());
        ctx.out.send(
            view.leader,
            PeerBody::AppendAck { group: self.group, epoch: view.epoch, match_index, sent_ms: self.last_sent_ms },
        );
    }

    pub fn on_install_snapshot(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        view: View,
        snapshot: Snapshot,
        sent_ms: Millis,
    ) {
        if !self.check_epoch(ctx, from, &view) {
            return;
        }
        self.reset_primary_deadline(ctx);
        self.last_sent_ms = self.last_sent_ms.max(sent_ms);
        if snapshot.index <= self.commit_index {
            return self.send_ack(ctx);
        }
        if snapshot.kv.digest() != snapshot.kv.recompute_digest() {
            // The state is not what its sender hashed: damaged on the way or
            // by a faulty peer. It is refused, not installed and not a crash
            // (bad input never panics); the primary sends another later.
            return;
        }
        let lsn = ctx.out.persist(WalRecord::Snapshot { group: self.group, snapshot: Box::new(snapshot.clone()) });
        self.marks.clear();
        self.durable_index = 0;
        self.marks.push_back((lsn, snapshot.index));
        self.matched_upto = snapshot.index;
        self.replay_snapshot(snapshot);
        if self.amnesiac {
            self.end_amnesia(ctx, view.epoch);
        }
        self.send_ack(ctx);
    }

    pub fn on_stale_epoch(&mut self, ctx: &mut Ctx, view: View) {
        self.adopt_view(ctx, view);
    }

    // ----- Time -------------------------------------------------------------

    pub fn on_tick(&mut self, ctx: &mut Ctx) {
        let now = ctx.out.now();
        let Some(view) = self.view.clone() else { return };
        match self.role() {
            Role::Primary => {
                self.append_noop_if_inherited(ctx);
                if now >= self.next_heartbeat_ms {
                    self.next_heartbeat_ms = now + self.timing.heartbeat_ms;
                    let peers: Vec<NodeId> = self.progress.keys().copied().collect();
                    for p in peers {
                        self.send_appends(ctx, p, true);
                    }
                }
                let mut resend = Vec::new();
                for (&id, p) in self.progress.iter_mut() {
                    if p.match_index < self.log.last_index() && now >= p.last_progress_ms + self.timing.retransmit_ms {
                        p.next_index = p.match_index + 1;
                        p.last_progress_ms = now;
                        resend.push(id);
                    }
                }
                for id in resend {
                    self.send_appends(ctx, id, false);
                }
                // Forget learners that went quiet.
                let timeout = self.timing.backup_timeout_ms;
                let admitted = [self.admitting, self.unresolved_admission];
                self.progress
                    .retain(|id, p| !p.learner || admitted.contains(&Some(*id)) || now < p.last_ack_ms + timeout * 10);
                if self.unresolved_admission.is_some() && !self.view_change_in_flight {
                    // Settle the register: a new epoch with the same members
                    // either wins (the old admission can no longer be chosen)
                    // or reports the view that did.
                    let next = view.next(self.me, view.members.clone());
                    self.propose_view(ctx, next);
                }
                if !self.view_change_in_flight {
                    let dead: Vec<NodeId> = view
                        .members
                        .iter()
                        .copied()
                        .filter(|m| *m != self.me)
                        .filter(|m| self.progress.get(m).is_none_or(|p| now >= p.last_ack_ms + timeout))
                        .collect();
                    if !dead.is_empty() {
                        let members = view.members.iter().copied().filter(|m| !dead.contains(m)).collect();
                        let next = view.next(self.me, members);
                        self.propose_view(ctx, next);
                    }
                }
            }
            Role::Backup => {
                if now >= self.primary_deadline_ms && !self.view_change_in_flight && !self.amnesiac {
                    let members = view.members.iter().copied().filter(|m| *m != view.leader).collect();
                    let next = view.next(self.me, members);
                    if self.bugs.promote_without_cas {
                        self.led_epoch = Some(next.epoch);
                        self.adopt_view(ctx, next);
                        return;
                    }
                    self.propose_view(ctx, next);
                    self.reset_primary_deadline(ctx);
                }
            }
            Role::Recovering => {
                // Named leader by a view this incarnation did not win: the
                // log may have lost unsynced entries that backups hold, so it
                // must not reuse the epoch. Move to a fresh one first. An
                // amnesiac one may also have lost committed entries, so it
                // waits for a backup to take over and catch it up instead
                // (found by the simulator: it won the view with a short log).
                if view.leader == self.me && !self.view_change_in_flight && !self.amnesiac {
                    let next = view.next(self.me, view.members.clone());
                    self.propose_view(ctx, next);
                }
            }
            Role::Joining => {
                if now >= self.next_join_ms {
                    self.next_join_ms = now + self.timing.join_retry_ms;
                    ctx.out.send(view.leader, PeerBody::Join { group: self.group, last_index: self.log.last_index() });
                }
            }
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
}

/// Whether an append's entries follow `(prev_epoch, prev_index)` as a log
/// can: consecutive indexes, epochs that never go backwards and never pass
/// the sender's view.
fn append_is_well_formed(view: &View, prev_index: Index, prev_epoch: Epoch, entries: &[SharedEntry]) -> bool {
    let mut index = prev_index;
    let mut epoch = prev_epoch;
    for e in entries {
        if Some(e.index) != index.checked_add(1) || e.epoch < epoch || e.epoch > view.epoch {
            return false;
        }
        index = e.index;
        epoch = e.epoch;
    }
    prev_epoch <= view.epoch
}
