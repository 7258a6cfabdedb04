//! A node: every protocol role one process plays, behind one
//! `step(now, input) -> effects` function.
//!
//! The node owns the config-store acceptor and proposer, its cached cluster
//! map and views, and one replica per group placed on it. It routes inputs to
//! them and collects their effects. It never performs IO, reads a clock or
//! uses randomness it was not given: the runtime and the simulator drive it
//! the same way.

use crate::bugs::Bugs;
use crate::config::{view_key, Acceptor, Change, ConfigOutcome, Proposer, ProposerTiming, Requester, CLUSTER_KEY};
use crate::io::{ClientToken, Effect, Input, Lsn, Outbox};
use crate::limits::MAX_CONFIG_QUEUE;
use crate::replica::{Ctx, Replica, ReplicaTiming, Requests, SnapshotStreaming, TxnTiming};
use crate::types::{config_members_of, ClusterMap, GroupId, Millis, NodeId, View};
use crate::wire::{
    ClientError, ClientMsg, ClientReply, ConfigValue, NodeStatus, PeerBody, PeerMsg, TransferRefused, WalRecord,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A node's static configuration.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    /// Every node of the cluster (announcements go to all of them). From
    /// the runtime's peer list until the node knows the cluster map, then
    /// the map's nodes.
    pub nodes: Vec<NodeId>,
    /// The config store's acceptors (at most 5; a majority must be up):
    /// likewise from the peer list, then from the cluster map.
    pub config_members: Vec<NodeId>,
    /// The version of the cluster map `nodes` and `config_members` come
    /// from (0: from the peer list). A runtime restarting a node that had
    /// learned a map passes the map's (see `NodeConfig::follow_map`).
    pub map_version: u64,
    pub passive: ReplicaTiming,
    pub txn: TxnTiming,
    pub proposer: ProposerTiming,
    /// How often a node re-reads the views it caches from the config store.
    pub refresh_ms: Millis,
    /// Committed entries kept in memory for catching backups up.
    pub log_retain_entries: u64,
    /// How a primary streams snapshots to members far behind.
    pub snapshot_stream: SnapshotStreaming,
    /// Client sessions each group's exactly-once table holds (at most
    /// `MAX_SESSIONS`, the default); past it the least recently active is
    /// evicted, and its retries are told `SessionExpired`. Every node of a
    /// cluster should use the same value: a different one is still safe
    /// (each replica judges by what it forgot itself), but members would
    /// forget different sessions. The simulator makes it small on some
    /// seeds, to reach eviction.
    pub max_sessions: usize,
}

impl NodeConfig {
    /// A configuration with the default timing; config members are the
    /// first five nodes by id.
    pub fn new(id: NodeId, mut nodes: Vec<NodeId>) -> NodeConfig {
        nodes.sort_unstable();
        nodes.dedup();
        let config_members = config_members_of(nodes.iter().copied());
        NodeConfig {
            id,
            nodes,
            config_members,
            map_version: 0,
            passive: ReplicaTiming::default(),
            txn: TxnTiming::default(),
            proposer: ProposerTiming { round_ms: 100, op_timeout_ms: 2_000, backoff_ms: 20 },
            refresh_ms: 2_000,
            log_retain_entries: crate::limits::DEFAULT_LOG_RETAIN_ENTRIES,
            snapshot_stream: SnapshotStreaming::default(),
            max_sessions: crate::limits::MAX_SESSIONS,
        }
    }
}

impl NodeConfig {
    /// Takes the nodes and config members from a cluster map this node
    /// learned earlier (the runtime keeps a copy), rather than from flags:
    /// after membership changes the flags may name another acceptor set.
    pub fn follow_map(&mut self, map: &ClusterMap) {
        self.nodes = map.nodes.keys().copied().collect();
        self.config_members = map.config_members();
        self.map_version = map.version;
    }
}

/// A node's durable state at one point of its WAL, as the records that
/// rebuild it: replaying `records` and then the WAL records issued after
/// `upto_lsn` recovers the same node as replaying the whole WAL would. The
/// runtime writes it to disk as a snapshot file and then deletes the WAL
/// that it covers; the simulator replaces its disk's prefix with it.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The last lsn issued when the checkpoint was taken: every record up to
    /// it is reflected in `records`, none after it.
    pub upto_lsn: Lsn,
    pub records: Vec<WalRecord>,
}

#[derive(Debug)]
struct BootstrapState {
    token: ClientToken,
    cluster: ClusterMap,
    pending: BTreeSet<String>,
    /// The cluster register was written (or found holding this map).
    cluster_done: bool,
}

/// A rewrite of every register through new config members (see
/// `Node::settle_config`).
#[derive(Debug)]
struct Settling {
    /// The map version whose config members the rewrite goes through.
    version: u64,
    /// Registers not yet rewritten.
    pending: BTreeSet<String>,
}

pub struct Node {
    cfg: NodeConfig,
    bugs: Bugs,
    rng: ChaCha8Rng,
    out: Outbox,
    acceptor: Acceptor,
    proposer: Proposer,
    cluster: Option<ClusterMap>,
    views: BTreeMap<GroupId, View>,
    replicas: BTreeMap<GroupId, Replica>,
    bootstraps: Vec<BootstrapState>,
    next_refresh_ms: Millis,
    /// When groups with no view may next be read eagerly.
    next_eager_ms: Millis,
    started: bool,
    /// The WAL lost records at some recovery (a durable `WalCut`), so this
    /// acceptor may have forgotten promises it made: it stays silent rather
    /// than break the config store's safety (a majority of healthy acceptors
    /// carries on), for each register until it relearns it.
    acceptor_silenced: bool,
    /// Registers the acceptor relearned since the last `WalCut` (see
    /// `Acceptor::relearn`); it answers for these again.
    relearned: BTreeSet<String>,
    /// Groups whose replica was caught up since the last `WalCut`; every
    /// other replica of a node whose WAL was cut is amnesiac.
    caught_up: BTreeSet<GroupId>,
    /// Operators' changes of the cluster map waiting for the config store
    /// (at most `MAX_CONFIG_QUEUE`, the proposer's own bound).
    admin: Vec<ClientToken>,
    /// The rewrite this node runs for the config members' last change.
    settling: Option<Settling>,
    /// When the cluster map is next re-read at a refresh.
    next_map_refresh_ms: Millis,
}

/// The cluster map is re-read every this many refreshes (see `refresh`).
const MAP_REFRESH_EVERY: Millis = 4;

impl Node {
    /// A node with an empty disk. `seed` feeds its only source of randomness.
    pub fn new(cfg: NodeConfig, seed: u64) -> Node {
        Node::with_bugs(cfg, seed, Bugs::default())
    }

    /// Only the simulator passes bugs other than the default.
    pub fn with_bugs(cfg: NodeConfig, seed: u64, bugs: Bugs) -> Node {
        let mut proposer = Proposer::new(cfg.config_members.clone(), cfg.proposer.clone());
        proposer.set_acceptors(cfg.config_members.clone(), cfg.map_version);
        proposer.bugs = bugs;
        Node {
            out: Outbox::new(cfg.id, 1),
            rng: ChaCha8Rng::seed_from_u64(seed),
            bugs,
            acceptor: Acceptor::default(),
            proposer,
            cluster: None,
            views: BTreeMap::new(),
            replicas: BTreeMap::new(),
            bootstraps: Vec::new(),
            next_refresh_ms: 0,
            next_eager_ms: 0,
            started: false,
            acceptor_silenced: false,
            caught_up: BTreeSet::new(),
            relearned: BTreeSet::new(),
            admin: Vec::new(),
            settling: None,
            next_map_refresh_ms: 0,
            cfg,
        }
    }

    /// Rebuilds durable state from the WAL, in order. `wal_was_cut` says the
    /// WAL lost a corrupt part at recovery: replicas then wait to be caught up
    /// by a primary before they may ever propose themselves. The node records
    /// the cut in its WAL (`WalRecord::WalCut`, its first persist), and the
    /// runtime must keep passing `wal_was_cut` until that record is durable.
    pub fn recover(cfg: NodeConfig, seed: u64, bugs: Bugs, records: Vec<WalRecord>, wal_was_cut: bool) -> Node {
        let n = records.len() as Lsn;
        let mut node = Node::with_bugs(cfg, seed, bugs);
        node.out = Outbox::new(node.cfg.id, n + 1);
        for r in records {
            match r {
                WalRecord::Acceptor { key, promised, accepted } => {
                    // After a cut, the acceptor writes a register only once
                    // it relearned it.
                    if node.acceptor_silenced {
                        node.relearned.insert(key.clone());
                    }
                    node.acceptor.replay(key, promised, accepted)
                }
                WalRecord::Entry { group, entry } => node.replica_mut(group).replay_entry(entry),
                WalRecord::Truncate { group, index } => node.replica_mut(group).replay_truncate(index),
                WalRecord::Commit { group, index } => node.replica_mut(group).replay_commit(index),
                WalRecord::Snapshot { group, snapshot } => node.replica_mut(group).replay_snapshot(*snapshot),
                WalRecord::SnapshotChunk { group, meta, offset, data } => {
                    node.replica_mut(group).replay_snapshot_chunk(meta, offset, &data)
                }
                WalRecord::SnapshotInstalled { .. } => {}
                WalRecord::SnapshotPartial { group, partial } => {
                    node.replica_mut(group).replay_snapshot_partial(partial)
                }
                WalRecord::WalCut => {
                    node.acceptor_silenced = true;
                    node.caught_up.clear();
                    node.relearned.clear();
                }
                WalRecord::CaughtUp { group } => {
                    node.caught_up.insert(group);
                }
                WalRecord::ProposerRounds { upto } => node.proposer.recover_rounds(upto),
                WalRecord::Cluster { map } => node.adopt_cluster(map),
            }
        }
        if wal_was_cut {
            node.out.persist(WalRecord::WalCut);
            node.acceptor_silenced = true;
            node.caught_up.clear();
            node.relearned.clear();
        }
        let (cut, caught_up) = (node.acceptor_silenced, &node.caught_up);
        for (g, r) in node.replicas.iter_mut() {
            r.finish_replay(cut && !caught_up.contains(g));
        }
        node
    }

    /// A checkpoint of everything this node has issued to its WAL so far
    /// (see `Checkpoint`). Taken between steps; cheap, so that a driver can
    /// take one without stalling: the key-value maps are persistent and log
    /// entries shared, and what is copied (session tables, locks, prepared
    /// records, acceptor registers) is bounded by `limits.rs`. It may cover
    /// records that are not durable yet: whoever stores it must not let it
    /// replace the WAL before the WAL is durable up to `upto_lsn`.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut records = Vec::new();
        // Not the stored cluster map: a node restarted from a checkpoint
        // relearns it from the config store, and the runtime keeps a copy in
        // a file of its own for its start-up check of `--peers`. With the map
        // replayed first, the simulator showed a joiner stuck for good
        // (passive seed 427, fixed in `on_install_snapshot`) and another
        // kept out of its group for seconds (passive seed 1886), both from
        // replicas created before their own records were replayed.
        let rounds = self.proposer.reserved_rounds();
        if rounds > 0 {
            records.push(WalRecord::ProposerRounds { upto: rounds });
        }
        // Replay treats a register's record after a `WalCut` as relearned,
        // so the relearned ones go after it, the others before.
        let silenced = self.acceptor_silenced;
        let relearned = &self.relearned;
        records.extend(self.acceptor.checkpoint_records(|k| !(silenced && relearned.contains(k))));
        if silenced {
            records.push(WalRecord::WalCut);
            records.extend(self.acceptor.checkpoint_records(|k| relearned.contains(k)));
            // The replicas know which were caught up in this incarnation
            // (`caught_up` holds only what recovery read).
            let caught_up = self.replicas.iter().filter(|(_, r)| !r.is_amnesiac()).map(|(&g, _)| g);
            records.extend(caught_up.map(|group| WalRecord::CaughtUp { group }));
        }
        for r in self.replicas.values() {
            r.checkpoint_records(&mut records);
        }
        Checkpoint { upto_lsn: self.out.last_lsn(), records }
    }

    fn replica_mut(&mut self, group: GroupId) -> &mut Replica {
        let (id, timing, txn_timing, retain, bugs) =
            (self.cfg.id, self.cfg.passive.clone(), self.cfg.txn.clone(), self.cfg.log_retain_entries, self.bugs);
        let streaming = self.cfg.snapshot_stream;
        let max_sessions = self.cfg.max_sessions;
        // A replica first created after a cut may have lost all its records.
        let amnesiac = self.acceptor_silenced && !self.caught_up.contains(&group);
        self.replicas.entry(group).or_insert_with(|| {
            let mut r = Replica::new(group, id, timing, txn_timing, retain, max_sessions, bugs);
            r.set_snapshot_streaming(streaming);
            if amnesiac {
                r.finish_replay(true);
            }
            r
        })
    }

    /// Runs `f` on the group's replica (created if missing) with a context.
    fn with_replica<R>(
        &mut self,
        group: GroupId,
        requests: &mut Requests,
        f: impl FnOnce(&mut Replica, &mut Ctx) -> R,
    ) -> R {
        self.replica_mut(group);
        let r = self.replicas.get_mut(&group).expect("just created");
        f(r, &mut Ctx { out: &mut self.out, rng: &mut self.rng, requests, cluster: self.cluster.as_ref() })
    }

    /// Whether this node's acceptor answers for register `key`.
    fn is_acceptor(&self, key: &str) -> bool {
        self.cfg.config_members.contains(&self.cfg.id) && (!self.acceptor_silenced || self.relearned.contains(key))
    }

    pub fn id(&self) -> NodeId {
        self.cfg.id
    }

    pub fn replica(&self, group: GroupId) -> Option<&Replica> {
        self.replicas.get(&group)
    }

    pub fn replicas(&self) -> impl Iterator<Item = &Replica> {
        self.replicas.values()
    }

    pub fn cluster(&self) -> Option<&ClusterMap> {
        self.cluster.as_ref()
    }

    pub fn known_view(&self, group: GroupId) -> Option<&View> {
        self.views.get(&group)
    }

    /// The single entry point: feed one input, get the effects to carry out.
    pub fn step(&mut self, now: Millis, input: Input) -> Vec<Effect> {
        self.step_batch(now, std::iter::once(input))
    }

    /// Feeds several inputs and flushes once, so replication messages and WAL
    /// records of many client requests travel together.
    pub fn step_batch(&mut self, now: Millis, inputs: impl IntoIterator<Item = Input>) -> Vec<Effect> {
        self.out.now = now;
        if !self.started {
            self.started = true;
            self.next_refresh_ms = now;
        }
        let mut requests = Requests::default();
        for input in inputs {
            match input {
                Input::Tick => self.on_tick(&mut requests),
                Input::Peer(msg) => {
                    if self.is_plausible(&msg) {
                        self.on_peer(&mut requests, msg)
                    }
                }
                Input::Client { token, msg } => self.on_client(&mut requests, token, msg),
                Input::Persisted { lsn } => self.on_persisted(&mut requests, lsn),
            }
            self.drain_local(&mut requests);
        }
        for r in self.replicas.values_mut() {
            let mut ctx =
                Ctx { out: &mut self.out, rng: &mut self.rng, requests: &mut requests, cluster: self.cluster.as_ref() };
            r.flush(&mut ctx);
        }
        self.drain_local(&mut requests);
        self.out.take_effects()
    }

    /// Delivers messages to self and starts requested view changes until
    /// nothing more is produced.
    fn drain_local(&mut self, requests: &mut Requests) {
        loop {
            for (group, body) in std::mem::take(&mut requests.group_sends) {
                // To whoever leads the group as far as this node knows; if
                // it knows no view, the message is dropped and its sender's
                // timer sends it again.
                if let Some(v) = self.views.get(&group) {
                    self.out.send(v.leader, body);
                }
            }
            for (group, change) in std::mem::take(&mut requests.view_changes) {
                if !self.proposer.propose(&mut self.out, view_key(group), change.clone(), Requester::Replica(group)) {
                    // The queue is full: report the proposal as failed so the
                    // replica may try again later.
                    let outcome = ConfigOutcome {
                        key: view_key(group),
                        requester: Requester::Replica(group),
                        change,
                        applied: false,
                        value: None,
                        completed: false,
                        ballot: Default::default(),
                    };
                    self.on_outcome(requests, outcome);
                }
            }
            let Some(msg) = self.out.to_self.pop_front() else { break };
            self.on_peer(requests, msg);
        }
    }

    fn ctx<'a>(
        out: &'a mut Outbox,
        rng: &'a mut ChaCha8Rng,
        requests: &'a mut Requests,
        cluster: Option<&'a ClusterMap>,
    ) -> Ctx<'a> {
        Ctx { out, rng, requests, cluster }
    }

    fn on_tick(&mut self, requests: &mut Requests) {
        let now = self.out.now;
        for outcome in self.proposer.on_tick(&mut self.out, &mut self.rng) {
            self.on_outcome(requests, outcome);
        }
        // A replica whose view neither places it nor counts it as a member
        // was moved away: no primary streams to it or waits for it any
        // more, so it is dropped (its records leave the WAL with the next
        // checkpoint; a restart that replays them drops it again once it
        // has read the view).
        let me = self.cfg.id;
        self.replicas.retain(|_, r| r.view().is_none_or(|v| v.is_member(me) || v.is_placed(me)));
        for r in self.replicas.values_mut() {
            r.on_tick(&mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()));
        }
        if now >= self.next_refresh_ms {
            // Jittered: nodes started together refreshed in lockstep, every
            // node's read of a register preempting the others' and the view
            // change a primary queued behind its own read (found by the
            // simulator, passive seed 343: a group with a cut-off backup got
            // its new view only after a second of duelling reads).
            let refresh = self.cfg.refresh_ms.max(2);
            self.next_refresh_ms = now + self.rng.gen_range(refresh / 2..=refresh * 3 / 2);
            self.refresh();
        } else if now >= self.next_eager_ms {
            // Groups with no view at all are refreshed eagerly, but about
            // once a round, not every tick: each read's prepare preempts a
            // proposal in flight, so every node re-reading an empty register
            // each tick starved the bootstrap's own `InitView` (found by the
            // simulator). The jitter keeps nodes from reading in lockstep.
            let round = self.cfg.proposer.round_ms.max(2);
            self.next_eager_ms = now + self.rng.gen_range(round / 2..=round * 3 / 2);
            // So are the views of amnesiac replicas, which ack nothing until
            // they have read theirs: waiting for the periodic refresh kept a
            // recovered member out of its group for seconds (found by the
            // simulator).
            let missing: Vec<GroupId> = self
                .replicas
                .values()
                .filter(|r| r.view().is_none() || r.awaiting_view_confirmation())
                .map(|r| r.group())
                .collect();
            for g in missing {
                self.read_register(view_key(g));
            }
            if self.cluster.is_none() && !self.replicas.is_empty() {
                self.read_register(CLUSTER_KEY.to_string());
            }
        }
    }

    fn read_register(&mut self, key: String) {
        if !self.proposer.is_busy(&key) {
            self.proposer.propose(&mut self.out, key, Change::Read, Requester::Refresh);
        }
    }

    fn refresh(&mut self) {
        // The map too, every few refreshes: it changes while the cluster
        // serves, and a node that missed the announcement of a change
        // learns it here. Not at every refresh: each read's prepare preempts
        // rounds on that register, and changes of the map are announced.
        // And not before there is any sign of a map (none learned, accepted
        // or given by `--join`, and no replica): before the bootstrap every
        // node's read of the empty register preempted the others' and the
        // bootstrap's own `InitCluster`, which never finished (found by the
        // simulator, mixed seeds 0, 22, 30, 36 and 39: no bootstrap within
        // 15 s). A node that knows nothing yet learns the map when
        // announced, or by the eager read once it holds a replica.
        let now = self.out.now;
        let sign = self.cluster.is_some() || self.known_map_version() > 0 || !self.replicas.is_empty();
        if sign && (self.cluster.is_none() || now >= self.next_map_refresh_ms) {
            self.next_map_refresh_ms = now + self.cfg.refresh_ms * MAP_REFRESH_EVERY;
            self.read_register(CLUSTER_KEY.to_string());
        }
        if let Some(c) = &self.cluster {
            let groups: Vec<GroupId> = c.groups.iter().map(|g| g.id).collect();
            for g in groups {
                self.read_register(view_key(g));
            }
        }
        self.settle_config();
    }

    /// The newest cluster map version this node knows of: learned, given
    /// (`--join`, a stored map), or accepted by its acceptor.
    fn known_map_version(&self) -> u64 {
        let learned = self.cluster.as_ref().map_or(0, |c| c.version);
        learned.max(self.cfg.map_version).max(self.acceptor.cluster_version())
    }

    /// Refuses a config-store round of a proposer that knows an older map
    /// than this node learned (and tells it the newer map: learned maps were
    /// chosen), or one two versions older than a map its acceptor accepted.
    /// Returns whether the round may go on.
    ///
    /// Why: a proposer whose acceptor set is two member changes old could
    /// count a majority that misses the newest value. Each change of the
    /// members (version `v` to `v + 1`) is settled by version `v + 2`, which
    /// a majority of the new members accepted before any later change of
    /// members was made; that majority shares an acceptor with every
    /// majority of the old members, and that acceptor refuses rounds of
    /// version `v` or older. A map only accepted is never more than one
    /// version past the newest chosen one (it was built on that one), so
    /// proposers that know the newest chosen map are never refused for it:
    /// refusing them (an earlier version of this rule) left a store whose
    /// acceptors had accepted an unchosen map refusing every proposer.
    fn admits_round(&mut self, from: NodeId, map_version: u64) -> bool {
        let learned = self.cluster.as_ref().map_or(0, |c| c.version).max(self.cfg.map_version);
        if map_version < learned {
            if let Some(c) = self.cluster.as_ref().filter(|c| c.version > map_version) {
                self.out.send(from, PeerBody::ClusterAnnounce { map: c.clone() });
            }
            return false;
        }
        map_version + 1 >= self.acceptor.cluster_version()
    }

    /// A proposer's round says a newer map exists than this node knows:
    /// read the map (acceptors that learned it refuse the read and announce
    /// it). A node added to the config store's members that missed the
    /// announcement otherwise stayed silent as an acceptor for good (it
    /// answers only once its map names it), and one without any map never
    /// read it (`refresh`): with a member silent and crashes, the store
    /// never settled and every group lost its view (found by the simulator,
    /// mixed seed 201).
    fn note_round_map_version(&mut self, map_version: u64) {
        if map_version > self.known_map_version() {
            self.read_register(CLUSTER_KEY.to_string());
        }
    }

    /// Drives the config store's own membership to its target, one member
    /// at a time. After a change of the members (map version `v`, not
    /// settled) every register is rewritten through the new members (a
    /// read, which writes the value back at a new ballot), so that a
    /// majority of them holds every value; only then is the change marked
    /// settled, and only a settled map may change the members again. Two
    /// sets one member apart always share an acceptor between any two of
    /// their majorities; with the rewrite, the next set's majorities find
    /// every value too. A settled store with fewer members than it could
    /// have (after a member was removed) takes the next node in.
    ///
    /// Run by every config member (the first to finish wins; the others'
    /// changes then find the map moved on and apply nothing).
    fn settle_config(&mut self) {
        let me = self.cfg.id;
        let Some(map) = self.cluster.clone() else { return };
        if !map.config_members.contains(&me) || !map.nodes.contains_key(&me) {
            return;
        }
        if map.config_settled {
            self.settling = None;
            let target = map.nodes.len().min(crate::limits::MAX_CONFIG_MEMBERS);
            if map.config_members.len() < target && !self.proposer.is_busy(CLUSTER_KEY) {
                let (change, requester) =
                    (Change::FillConfig { version: map.version }, Requester::Settle { version: map.version });
                self.proposer.propose(&mut self.out, CLUSTER_KEY.to_string(), change, requester);
            }
            return;
        }
        if self.settling.as_ref().is_some_and(|s| s.version == map.version) {
            return;
        }
        let mut pending: BTreeSet<String> = map.groups.iter().map(|g| view_key(g.id)).collect();
        pending.insert(CLUSTER_KEY.to_string());
        for key in &pending {
            let requester = Requester::Settle { version: map.version };
            self.proposer.propose(&mut self.out, key.clone(), Change::Read, requester);
        }
        self.settling = Some(Settling { version: map.version, pending });
    }

    /// A settle proposal finished: a rewrite, or the change marking the
    /// map settled (or taking the next member in).
    fn on_settle_outcome(&mut self, version: u64, outcome: &ConfigOutcome) {
        if outcome.change != Change::Read {
            if !outcome.applied {
                // The map moved on, or the store did not answer: the next
                // refresh looks again and starts over if still unsettled.
                self.settling = None;
            }
            return;
        }
        // A rewrite for an older change went through other members.
        let Some(s) = self.settling.as_mut().filter(|s| s.version == version) else { return };
        if !outcome.completed {
            // Started over at the next refresh.
            self.settling = None;
            return;
        }
        s.pending.remove(&outcome.key);
        if s.pending.is_empty() {
            let version = s.version;
            // Kept (empty) until the settled map is learned, so the rewrite
            // is not started again meanwhile.
            let change = Change::SettleConfig { version };
            self.proposer.propose(&mut self.out, CLUSTER_KEY.to_string(), change, Requester::Settle { version });
        }
    }

    /// Whether a peer message's views and config values could come from a
    /// correct peer: well formed, and of a group and nodes of the cluster
    /// map once it is known. Anything else is dropped whole (a faulty or
    /// corrupted peer; a correct one never sends it), never taken in and
    /// never a panic later.
    fn is_plausible(&self, msg: &PeerMsg) -> bool {
        // Members the map does not name are allowed: the map changes while
        // the cluster serves, and a view still naming a node just removed
        // must reach its members, whose primary then places the group
        // elsewhere (`replica::placement`); dropping it wedged the group.
        let view_ok = |v: &View| {
            v.is_well_formed() && self.cluster.as_ref().is_none_or(|c| c.groups.iter().any(|g| g.id == v.group))
        };
        // An acceptor stores registers it need not understand; only a value
        // nobody could hold is refused.
        let value_ok = |value: &ConfigValue| match value {
            ConfigValue::View(v) => v.is_well_formed(),
            ConfigValue::Cluster(c) => c.is_well_formed(),
        };
        // A promised value must fit its register (`fits_key`).
        msg.from != self.cfg.id
            && match &msg.body {
                PeerBody::Promise { key, accepted: Some((_, value)), .. } => value_ok(value) && fits_key(key, value),
                PeerBody::Accept { value, .. } => value_ok(value),
                PeerBody::ClusterAnnounce { map } => map.is_well_formed(),
                PeerBody::ViewAnnounce { view }
                | PeerBody::StaleEpoch { view }
                | PeerBody::Append { view, .. }
                | PeerBody::SnapshotChunk { view, .. } => view_ok(view),
                _ => true,
            }
    }

    fn on_peer(&mut self, requests: &mut Requests, msg: PeerMsg) {
        let from = msg.from;
        match msg.body {
            PeerBody::Prepare { key, ballot, map_version } => {
                self.note_round_map_version(map_version);
                if self.is_acceptor(&key) && self.admits_round(from, map_version) {
                    self.acceptor.on_prepare(&mut self.out, from, key, ballot);
                }
            }
            PeerBody::Accept { key, ballot, value, map_version } => {
                self.note_round_map_version(map_version);
                if self.is_acceptor(&key) && self.admits_round(from, map_version) {
                    self.acceptor.on_accept(&mut self.out, from, key, ballot, value);
                }
            }
            PeerBody::ClusterAnnounce { map } => {
                self.learn_cluster(map);
            }
            PeerBody::Promise { key, ballot, accepted } => {
                self.proposer.on_promise(&mut self.out, from, key, ballot, accepted);
            }
            PeerBody::Accepted { key, ballot } => {
                if let Some(outcome) = self.proposer.on_accepted(&mut self.out, from, key, ballot) {
                    self.on_outcome(requests, outcome);
                }
            }
            PeerBody::Reject { key, ballot, promised } => {
                self.proposer.on_reject(&mut self.out, &mut self.rng, key, ballot, promised);
            }
            PeerBody::ViewAnnounce { view } | PeerBody::StaleEpoch { view } => self.learn_view(requests, view, false),
            PeerBody::Append { view, prev_index, prev_epoch, entries, commit_index, sent_ms, acked_sent_ms } => {
                self.note_view(&view);
                if !self.may_hold(&view) {
                    return;
                }
                self.with_replica(view.group, requests, |r, ctx| {
                    r.on_append(
                        ctx,
                        from,
                        view,
                        prev_index,
                        prev_epoch,
                        entries,
                        (commit_index, sent_ms, acked_sent_ms),
                    )
                });
            }
            PeerBody::ReadIndex { group, epoch, ask } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    let ctx = &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref());
                    r.on_read_index(ctx, from, epoch, ask);
                }
            }
            PeerBody::ReadIndexReply { group, epoch, ask, index } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    let ctx = &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref());
                    r.on_read_index_reply(ctx, epoch, ask, index);
                }
            }
            PeerBody::SnapshotChunk { view, meta, offset, data, sent_ms } => {
                self.note_view(&view);
                if !self.may_hold(&view) {
                    return;
                }
                self.with_replica(view.group, requests, |r, ctx| {
                    r.on_snapshot_chunk(ctx, from, view, meta, offset, &data, sent_ms)
                });
            }
            PeerBody::SnapshotAck { group, epoch, id, received, refused } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    r.on_snapshot_ack(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        epoch,
                        id,
                        received,
                        refused,
                    );
                }
            }
            PeerBody::AppendAck { group, epoch, match_index, sent_ms } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    r.on_append_ack(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        epoch,
                        match_index,
                        sent_ms,
                    );
                }
            }
            PeerBody::AppendReject { group, epoch, last_index } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    r.on_append_reject(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        epoch,
                        last_index,
                    );
                }
            }
            PeerBody::CanCommit { group, txn, part } => {
                self.with_group(requests, from, group, |r, ctx| r.on_can_commit(ctx, from, txn, part))
            }
            PeerBody::DoCommit { group, txn } => {
                self.with_group(requests, from, group, |r, ctx| r.on_do_commit(ctx, from, txn))
            }
            PeerBody::DoAbort { group, txn } => {
                self.with_group(requests, from, group, |r, ctx| r.on_do_abort(ctx, from, txn))
            }
            PeerBody::Vote { group, txn, vote } => {
                self.with_group(requests, from, txn.home, |r, ctx| r.on_vote(ctx, group, txn, vote))
            }
            PeerBody::HaveCommitted { group, txn } => {
                self.with_group(requests, from, txn.home, |r, ctx| r.on_have_committed(ctx, group, txn))
            }
            PeerBody::GetDecision { group, txn } => {
                self.with_group(requests, from, txn.home, |r, ctx| r.on_get_decision(ctx, from, group, txn))
            }
            PeerBody::TakeOver { group, epoch, last_index, commit_index } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    r.on_take_over(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        epoch,
                        last_index,
                        commit_index,
                    );
                }
            }
            PeerBody::Join { group, last_index } => {
                if let Some(r) = self.replicas.get_mut(&group) {
                    r.on_join(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        last_index,
                    );
                }
            }
        }
    }

    /// Runs `f` on this node's replica of `group`, for a two-phase commit
    /// message from `from`. A node that holds no replica of the group tells
    /// the sender the view it knows, so its next attempt goes to the leader.
    fn with_group(
        &mut self,
        requests: &mut Requests,
        from: NodeId,
        group: GroupId,
        f: impl FnOnce(&mut Replica, &mut Ctx),
    ) {
        match self.replicas.get_mut(&group) {
            Some(r) => f(r, &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref())),
            None => {
                if let Some(view) = self.views.get(&group) {
                    self.out.send(from, PeerBody::StaleEpoch { view: view.clone() });
                }
            }
        }
    }

    /// Whether this node holds, or is to hold, a replica of `view`'s group:
    /// it has one, or the view places it or counts it as a member. A stream
    /// from a primary that has not yet learned this node was moved away
    /// must not bring a dropped replica back.
    fn may_hold(&self, view: &View) -> bool {
        let me = self.cfg.id;
        self.replicas.contains_key(&view.group) || view.is_member(me) || view.is_placed(me)
    }

    /// Caches a view without touching replicas.
    fn note_view(&mut self, view: &View) {
        let newer = self.views.get(&view.group).is_none_or(|v| v.epoch < view.epoch);
        if newer {
            self.views.insert(view.group, view.clone());
        }
    }

    /// Caches a view and hands it to this node's replica of the group.
    /// `from_store` says the view was just read from the config store (not
    /// relayed by a peer, which may be stale).
    fn learn_view(&mut self, requests: &mut Requests, view: View, from_store: bool) {
        self.note_view(&view);
        // The view, not the map's bootstrap placement, says where a group
        // lives: a node a move placed it on creates its replica here.
        let placed = view.is_member(self.cfg.id) || view.is_placed(self.cfg.id);
        if placed || self.replicas.contains_key(&view.group) {
            self.with_replica(view.group, requests, |r, ctx| {
                if from_store {
                    r.confirm_view(ctx, view)
                } else {
                    r.adopt_view(ctx, view)
                }
            });
        }
    }

    /// Takes the cluster map read from the config store; the first time,
    /// persists it, so a restart knows the cluster's nodes and acceptors
    /// without trusting its flags.
    ///
    /// Only a newer version replaces the map: announcements and reads may
    /// arrive out of order. Returns whether the map changed.
    fn learn_cluster(&mut self, cluster: ClusterMap) -> bool {
        if self.cluster.as_ref().is_some_and(|c| c.version >= cluster.version) {
            return false;
        }
        self.out.persist(WalRecord::Cluster { map: cluster.clone() });
        self.adopt_cluster(cluster);
        self.next_map_refresh_ms = self.out.now + self.cfg.refresh_ms * MAP_REFRESH_EVERY;
        self.settle_config();
        // A bootstrap still waiting for its cluster register (its rounds
        // are refused by acceptors that learned a map, and the map may be
        // announced before its own proposal reports) goes on to the views
        // if the map is its own, and is refused otherwise. Its views are
        // proposed either way (an existing one is only read), so a
        // bootstrap answered Ok always has every view.
        let map = self.cluster.clone().expect("just adopted");
        let mut pos = 0;
        while pos < self.bootstraps.len() {
            let b = &self.bootstraps[pos];
            if b.cluster_done {
                pos += 1;
            } else if b.cluster.same_layout(&map) {
                self.start_bootstrap_views(pos);
                pos += 1;
            } else {
                let b = self.bootstraps.remove(pos);
                let reason = "the cluster is already bootstrapped with a different map".to_string();
                self.out.reply(b.token, ClientReply::Bootstrapped(Err(reason)));
            }
        }
        true
    }

    /// Learns a map a proposal of this node just wrote or read, and tells
    /// every node of the old and the new map about it when it is news.
    fn learn_and_announce_cluster(&mut self, map: ClusterMap) {
        let mut to: BTreeSet<NodeId> = self.cfg.nodes.iter().copied().collect();
        to.extend(map.nodes.keys().copied());
        if !self.learn_cluster(map.clone()) {
            return;
        }
        for n in to {
            if n != self.cfg.id {
                self.out.send(n, PeerBody::ClusterAnnounce { map: map.clone() });
            }
        }
    }

    /// Whether the cluster map this node knows no longer names it: it was
    /// removed (`pactdb admin remove-node`) and should stop.
    pub fn is_removed(&self) -> bool {
        self.cluster.as_ref().is_some_and(|c| !c.nodes.contains_key(&self.cfg.id))
    }

    /// Makes the map this node's truth: its replicas, the nodes it
    /// announces to, and the config store's acceptors. Flags that named
    /// others (the runtime refuses to go on with them) must not leave this
    /// node counting majorities of a different acceptor set.
    fn adopt_cluster(&mut self, cluster: ClusterMap) {
        let me = self.cfg.id;
        for g in cluster.groups.iter().filter(|g| g.placement.contains(&me)) {
            self.replica_mut(g.id);
        }
        self.cfg.nodes = cluster.nodes.keys().copied().collect();
        self.cfg.config_members = cluster.config_members();
        self.cfg.map_version = cluster.version;
        self.proposer.set_acceptors(self.cfg.config_members.clone(), cluster.version);
        self.cluster = Some(cluster);
    }

    fn announce(&mut self, view: &View) {
        for n in self.cfg.nodes.clone() {
            if n != self.cfg.id {
                self.out.send(n, PeerBody::ViewAnnounce { view: view.clone() });
            }
        }
    }

    fn on_outcome(&mut self, requests: &mut Requests, mut outcome: ConfigOutcome) {
        // Acceptors store values they need not understand, so a faulty
        // peer's `Accept` can leave a view of another group under a group's
        // register, and this node's own acceptor answers its proposer
        // without passing `is_plausible`. Such a value is no value of the
        // register: a replica asserts its views are its own (found by the
        // fuzzer once proposals took their own acceptor's promise).
        if outcome.value.as_ref().is_some_and(|v| !fits_key(&outcome.key, v)) {
            outcome.value = None;
        }
        let relearn = outcome.completed
            && self.acceptor_silenced
            && self.cfg.config_members.contains(&self.cfg.id)
            && !self.relearned.contains(&outcome.key);
        if let (true, Some(value)) = (relearn, &outcome.value) {
            self.acceptor.relearn(&mut self.out, outcome.key.clone(), outcome.ballot, value.clone());
            self.relearned.insert(outcome.key.clone());
        }
        if outcome.applied {
            if let Some(ConfigValue::View(v)) = &outcome.value {
                if !matches!(outcome.change, Change::Read) {
                    let v = v.clone();
                    self.announce(&v);
                }
            }
        }
        match outcome.requester {
            Requester::Replica(group) => {
                let current = match outcome.value {
                    Some(ConfigValue::View(v)) => Some(v),
                    _ => None,
                };
                if let Some(v) = &current {
                    self.note_view(v);
                }
                let applied = outcome.applied;
                if !self.replicas.contains_key(&group) {
                    // The replica that proposed was dropped (moved away)
                    // meanwhile: a new, empty one must not take its win and
                    // lead with nothing (simulator, mixed seed 91). The view
                    // is noted; if this node is placed, it joins as usual.
                    return;
                }
                self.with_replica(group, requests, |r, ctx| r.on_view_change_outcome(ctx, applied, current));
            }
            Requester::Refresh => match outcome.value {
                Some(ConfigValue::Cluster(c)) => self.learn_and_announce_cluster(c),
                Some(ConfigValue::View(v)) => self.learn_view(requests, v, true),
                None => {}
            },
            Requester::Settle { version } => {
                self.on_settle_outcome(version, &outcome);
                match outcome.value {
                    Some(ConfigValue::Cluster(c)) if outcome.completed => self.learn_and_announce_cluster(c),
                    Some(ConfigValue::View(v)) if outcome.completed => self.learn_view(requests, v, true),
                    _ => {}
                }
            }
            Requester::Admin { token } => self.on_admin_outcome(token, outcome),
            Requester::Bootstrap { token } => self.on_bootstrap_outcome(requests, token, outcome),
        }
    }

    fn on_bootstrap_outcome(&mut self, requests: &mut Requests, token: ClientToken, outcome: ConfigOutcome) {
        let Some(pos) = self.bootstraps.iter().position(|b| b.token == token) else { return };
        if outcome.key == CLUSTER_KEY && self.bootstraps[pos].cluster_done {
            // The map was learned first (announced by a node that read it),
            // and the views are under way already.
            return;
        }
        if !outcome.completed {
            self.bootstraps.remove(pos);
            let reason = "the config store did not answer (is a majority of config members up?)".to_string();
            return self.out.reply(token, ClientReply::Bootstrapped(Err(reason)));
        }
        if outcome.key == CLUSTER_KEY {
            let wanted = self.bootstraps[pos].cluster.clone();
            match outcome.value {
                Some(ConfigValue::Cluster(c)) if c == wanted => {
                    // Learning the map starts the views (`start_bootstrap_views`);
                    // if it was known already, they start here.
                    self.learn_cluster(c);
                    if let Some(pos) = self.bootstraps.iter().position(|b| b.token == token && !b.cluster_done) {
                        self.start_bootstrap_views(pos);
                    }
                    return;
                }
                _ => {
                    self.bootstraps.remove(pos);
                    let reason = "the cluster is already bootstrapped with a different map".to_string();
                    return self.out.reply(token, ClientReply::Bootstrapped(Err(reason)));
                }
            }
        } else {
            self.bootstraps[pos].pending.remove(&outcome.key);
            if let Some(ConfigValue::View(v)) = outcome.value {
                self.announce(&v);
                self.learn_view(requests, v, true);
            }
        }
        if self.bootstraps[pos].pending.is_empty() {
            self.bootstraps.remove(pos);
            self.out.reply(token, ClientReply::Bootstrapped(Ok(())));
        }
    }

    /// The bootstrap at `pos` has its map in the config store: it proposes
    /// every group's first view.
    fn start_bootstrap_views(&mut self, pos: usize) {
        let b = &mut self.bootstraps[pos];
        b.cluster_done = true;
        let token = b.token;
        for v in b.cluster.initial_views() {
            let key = view_key(v.group);
            b.pending.insert(key.clone());
            self.proposer.propose(&mut self.out, key, Change::InitView(v), Requester::Bootstrap { token });
        }
    }

    fn on_client(&mut self, requests: &mut Requests, token: ClientToken, msg: ClientMsg) {
        match msg {
            ClientMsg::Request(req) => match self.replicas.get_mut(&req.group) {
                Some(r) => r.on_client_request(
                    &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                    token,
                    req,
                ),
                None => {
                    let result = match self.views.get(&req.group) {
                        Some(v) => Err(ClientError::NotLeader { view: Some(v.clone()) }),
                        None => Err(ClientError::UnknownGroup { group: req.group }),
                    };
                    self.out.reply(token, ClientReply::Response { id: req.id, result, at: 0, stale_ms: None });
                }
            },
            ClientMsg::GetViews => {
                let reply =
                    ClientReply::Views { cluster: self.cluster.clone(), views: self.views.values().cloned().collect() };
                self.out.reply(token, reply);
            }
            ClientMsg::TransferLeader { group, to } => {
                let result = match self.replicas.get_mut(&group) {
                    Some(r) => r.on_transfer_leader(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        to,
                    ),
                    None => Err(TransferRefused {
                        reason: format!("node {} holds no replica of group {group}", self.cfg.id),
                        view: self.views.get(&group).cloned(),
                    }),
                };
                self.out.reply(token, ClientReply::TransferStarted(result));
            }
            ClientMsg::MoveReplica { group, from, to } => {
                let result = match self.replicas.get_mut(&group) {
                    Some(r) => r.on_move_replica(
                        &mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()),
                        from,
                        to,
                    ),
                    None => Err(TransferRefused {
                        reason: format!("node {} holds no replica of group {group}", self.cfg.id),
                        view: self.views.get(&group).cloned(),
                    }),
                };
                self.out.reply(token, ClientReply::MoveStarted(result));
            }
            ClientMsg::AddNode { id, addrs } => self.on_add_node(token, id, addrs),
            ClientMsg::RemoveNode { id } => self.on_remove_node(token, id),
            ClientMsg::GetNodeInfo => {
                // The runtime answers it; the core knows no addresses.
                let reason = "node info is answered by the node's runtime".to_string();
                self.out.reply(token, ClientReply::ProtocolError { reason });
            }
            ClientMsg::GetStatus => {
                let now = self.out.now;
                let status =
                    NodeStatus { node: self.cfg.id, replicas: self.replicas.values().map(|r| r.status(now)).collect() };
                self.out.reply(token, ClientReply::Status(status));
            }
            ClientMsg::Bootstrap { cluster } => {
                if let Err(e) = cluster.validate() {
                    return self.out.reply(token, ClientReply::Bootstrapped(Err(e)));
                }
                if let Some(c) = &self.cluster {
                    // Bootstrapped already (the config store refuses the
                    // rounds of a node that knows no map, once it has one).
                    // The same layout again makes sure every view exists (a
                    // bootstrap whose node crashed between the map and the
                    // views left some out) and succeeds.
                    if !c.same_layout(&cluster) {
                        let reason = "the cluster is already bootstrapped with a different map".to_string();
                        return self.out.reply(token, ClientReply::Bootstrapped(Err(reason)));
                    }
                    let state = BootstrapState { token, cluster, pending: BTreeSet::new(), cluster_done: false };
                    self.bootstraps.push(state);
                    return self.start_bootstrap_views(self.bootstraps.len() - 1);
                }
                // The map is written through this node's proposer, to the
                // acceptors its own peer list names; a map naming other
                // nodes would name other acceptors, and the majorities
                // would not need to overlap.
                let named: Vec<NodeId> = cluster.nodes.keys().copied().collect();
                if named != self.cfg.nodes {
                    let reason = format!(
                        "the map names nodes {named:?}, but node {} knows nodes {:?} (its --peers or its stored map)",
                        self.cfg.id, self.cfg.nodes
                    );
                    return self.out.reply(token, ClientReply::Bootstrapped(Err(reason)));
                }
                let state =
                    BootstrapState { token, cluster: cluster.clone(), pending: BTreeSet::new(), cluster_done: false };
                self.bootstraps.push(state);
                self.proposer.propose(
                    &mut self.out,
                    CLUSTER_KEY.to_string(),
                    Change::InitCluster(cluster),
                    Requester::Bootstrap { token },
                );
            }
        }
    }

    /// `pactdb admin add-node`: checks the request against the map this
    /// node knows, for a clear refusal, and proposes it; the config store's
    /// compare-and-set decides (`Change::AddNode`).
    fn on_add_node(&mut self, token: ClientToken, id: NodeId, addrs: crate::types::NodeAddrs) {
        let refusal = match &self.cluster {
            None => Some("this node does not know the cluster map yet (is the cluster bootstrapped?)".to_string()),
            Some(c) => add_node_refusal(c, id, &addrs),
        };
        self.propose_admin(token, refusal, Change::AddNode { id, addrs });
    }

    /// `pactdb admin remove-node`, once the node holds no replica.
    fn on_remove_node(&mut self, token: ClientToken, id: NodeId) {
        let refusal = match &self.cluster {
            None => Some("this node does not know the cluster map yet (is the cluster bootstrapped?)".to_string()),
            Some(c) if !c.nodes.contains_key(&id) => {
                return self.out.reply(token, ClientReply::ClusterChanged(Ok(c.clone())))
            }
            Some(c) => {
                let holding: Vec<GroupId> =
                    self.views.values().filter(|v| v.is_member(id) || v.is_placed(id)).map(|v| v.group).collect();
                if holding.is_empty() {
                    remove_node_refusal(c, id)
                } else {
                    Some(format!(
                        "node {id} still holds groups {holding:?}: move its replicas off first \
                         (`pactdb admin remove-node` does, then removes it)"
                    ))
                }
            }
        };
        self.propose_admin(token, refusal, Change::RemoveNode { id });
    }

    fn propose_admin(&mut self, token: ClientToken, refusal: Option<String>, change: Change) {
        if let Some(reason) = refusal {
            return self.out.reply(token, ClientReply::ClusterChanged(Err(reason)));
        }
        if self.admin.len() >= MAX_CONFIG_QUEUE
            || !self.proposer.propose(&mut self.out, CLUSTER_KEY.to_string(), change, Requester::Admin { token })
        {
            let reason = "too many cluster changes are waiting at this node; try again".to_string();
            return self.out.reply(token, ClientReply::ClusterChanged(Err(reason)));
        }
        self.admin.push(token);
    }

    fn on_admin_outcome(&mut self, token: ClientToken, outcome: ConfigOutcome) {
        self.admin.retain(|t| *t != token);
        let map = match outcome.value {
            Some(ConfigValue::Cluster(c)) if outcome.completed => c,
            _ => {
                let reason = "the config store did not answer (is a majority of config members up?)".to_string();
                return self.out.reply(token, ClientReply::ClusterChanged(Err(reason)));
            }
        };
        self.learn_and_announce_cluster(map.clone());
        let reply = if outcome.applied {
            Ok(map)
        } else {
            // Judged against the map the store holds, which moved on since
            // the request was checked here.
            let reason = match &outcome.change {
                Change::AddNode { id, addrs } => add_node_refusal(&map, *id, addrs),
                Change::RemoveNode { id } => remove_node_refusal(&map, *id),
                _ => None,
            };
            Err(reason.unwrap_or_else(|| "the cluster map changed meanwhile; try again".to_string()))
        };
        self.out.reply(token, ClientReply::ClusterChanged(reply));
    }

    fn on_persisted(&mut self, requests: &mut Requests, lsn: Lsn) {
        self.out.on_persisted(lsn);
        for r in self.replicas.values_mut() {
            r.on_persisted(&mut Self::ctx(&mut self.out, &mut self.rng, requests, self.cluster.as_ref()), lsn);
        }
    }
}

/// Why `map` cannot take node `id` at `addrs` (`None`: it can, or has it).
fn add_node_refusal(map: &ClusterMap, id: NodeId, addrs: &crate::types::NodeAddrs) -> Option<String> {
    if id == 0 {
        return Some("node ids start at 1".to_string());
    }
    if let Some(a) = map.nodes.get(&id) {
        return (a != addrs)
            .then(|| format!("node {id} is already in the cluster at peer {} and client {}", a.peer, a.client));
    }
    if map.nodes.len() >= crate::limits::MAX_NODES {
        return Some(format!("the cluster has {} nodes, the most it may have", map.nodes.len()));
    }
    if let Some((other, _)) = map.nodes.iter().find(|(_, a)| a.peer == addrs.peer || a.client == addrs.client) {
        return Some(format!("node {other} already uses one of those addresses"));
    }
    None
}

/// Why `map` cannot lose node `id` (`None`: it can, or it is gone).
fn remove_node_refusal(map: &ClusterMap, id: NodeId) -> Option<String> {
    if !map.nodes.contains_key(&id) {
        return None;
    }
    if map.nodes.len() == 1 {
        return Some(format!("node {id} is the cluster's last node"));
    }
    if map.config_members.contains(&id) {
        if map.config_members.len() == 1 {
            return Some(format!("node {id} is the config store's only member; add a node first"));
        }
        if !map.config_settled {
            return Some(
                "the config store is still taking in its last change of members; try again in a few seconds"
                    .to_string(),
            );
        }
    }
    None
}

/// Whether `value` could be the value of register `key`: a proposal takes a
/// promised value for its register's value, so it must also be of that
/// register (a view change that read a view of another group under its own
/// group's key adopted it, and a replica asserts its views are its own).
fn fits_key(key: &str, value: &ConfigValue) -> bool {
    match value {
        ConfigValue::View(v) => key == view_key(v.group),
        ConfigValue::Cluster(_) => key == CLUSTER_KEY,
    }
}
