//! The simulated world of one seed and the script it runs: start the nodes,
//! bootstrap the cluster, run the workload under faults, heal everything,
//! let the cluster converge, and hand what happened to the checkers.
//!
//! It owns the event loop, the clocks, the client connections and the fault
//! schedule. Everything happens on one thread in simulated time, and every
//! choice is drawn from the seed's PRNG in a fixed order, so one seed always
//! produces the same run (the trace hash proves it). It never changes a
//! node's state except through `Node::step` and `Node::recover`, and it
//! delivers `Input::Persisted` only for records its disk made durable.

use crate::check::{self, FinalReplica, Isolation, Violation};
use crate::disk::Disk;
use crate::history::{History, Micros, TxnKind, TxnResult};
use crate::net::Net;
use crate::observe::{Observations, ReadServed};
use crate::plan::{gap_ms, OpMix, PartitionKind, Plan, Shape};
use crate::workload::{account_names, Client, ClientRole};
use pactdb_core::bugs::Bugs;
use pactdb_core::io::{release_under_lease, ClientToken, Effect, Input};
use pactdb_core::log::Payload;
use pactdb_core::node::{Checkpoint, Node, NodeConfig};
use pactdb_core::replica::Role;
use pactdb_core::types::{ClusterMap, GroupId, GroupSpec, Index, Mode, NodeAddrs, NodeId};
use pactdb_core::wire::{ClientError, ClientMsg, ClientReply, ConfigValue, PeerBody, PeerMsg, WalRecord};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::panic::AssertUnwindSafe;
use xxhash_rust::xxh3::Xxh3;

/// A run that processes more events than this is stuck in a loop; it fails
/// rather than running forever. Clean runs stay below 200 thousand.
const MAX_EVENTS: u64 = 5_000_000;
/// Most log entries (in `Append` messages) in flight at once. Past it the
/// network is overloaded and drops further appends, which bounds the
/// simulator's memory whatever the core does; clean runs stay far below.
const MAX_INFLIGHT_ENTRIES: u64 = 1_000_000;
/// Most log entries the nodes may put into messages over a whole run; a
/// clean run sends well under a million. Past it the run is stopped and
/// fails: a protocol that resends without bound is a bug too, and the
/// simulator must finish every seed in bounded time.
const MAX_SENT_ENTRIES: u64 = 30_000_000;
/// The cluster must be bootstrapped and have a primary per group by then.
const BOOTSTRAP_DEADLINE_US: Micros = 15_000_000;
/// How often at most a front end is ticked and its client considers a new
/// operation. A client is ticked only when something is due (a front end
/// timer, the end of its think time): idle ticks were most of a run's events.
const CLIENT_TICK_US: Micros = 2_000;
/// Most timeline lines kept for a verbose run.
const MAX_TIMELINE: usize = 2_000;
/// The bank's setup transaction must have committed by then after the
/// bootstrap (no faults are on yet).
const SETUP_DEADLINE_US: Micros = 10_000_000;
/// Inputs a node takes in one step at most: the runtime's bound
/// (`pactdb_node::runtime::MAX_INPUTS_PER_STEP`).
const MAX_INPUTS_PER_STEP: usize = 4096;
/// The calm network runs this long before a primary is isolated
/// (`Plan::isolation`), and this long after the partition heals, before the
/// other faults start.
const ISOLATION_LEAD_MS: u64 = 500;
const ISOLATION_TAIL_MS: u64 = 2_000;
/// A crash waiting for a two-phase commit moment gives up after this long.
const TXN_MOMENT_WAIT_US: Micros = 1_000_000;

/// What one seed did and which properties it violated.
#[derive(Clone, Debug)]
pub struct RunReport {
    pub seed: u64,
    pub violations: Vec<Violation>,
    /// xxh3 of the whole event trace: same seed, same hash.
    pub trace_hash: u64,
    pub events: u64,
    /// Operations the clients invoked, and how many succeeded (a
    /// transaction counts once, with its commit).
    pub ops: usize,
    pub ops_ok: usize,
    /// Transactions that committed.
    pub txns_committed: usize,
    pub sim_ms: u64,
    /// Answers a voting front end outvoted (`FeEffect::Dissent`), counted
    /// per dissenting member.
    pub dissents: usize,
    /// Disks compacted into a checkpoint, and restarts that replayed one.
    pub compactions: usize,
    pub restarts_from_checkpoint: usize,
    /// Snapshot chunks sent, chunks refused (a gap, a duplicate: the stream
    /// resumed from what the member held), and snapshots installed.
    pub snapshot_chunks: usize,
    pub snapshot_chunks_refused: usize,
    pub snapshots_installed: usize,
    /// Which rarely taken paths the run went through.
    pub coverage: Coverage,
    /// The seed's cluster shape and fault mix.
    pub plan: String,
    /// Notable events (faults, phases); filled only for verbose runs.
    pub timeline: Vec<String>,
}

impl RunReport {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// How often a run went through the paths a small, healthy cluster rarely
/// takes, so that a change that quietly stops reaching them shows (`pactdb
/// sim` prints the sums over all seeds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// `InstallSnapshot` messages primaries sent.
    pub snapshots_sent: u64,
    /// Snapshots members installed (persisted).
    pub snapshots_installed: u64,
    /// Log entries compacted away: per group, the highest base index any
    /// replica's in-memory log reached, summed over groups.
    pub entries_compacted: u64,
    /// The most requests one client had outstanding at once.
    pub max_in_flight: u64,
    /// Sessions evicted from the exactly-once tables: per group, the most
    /// any replica counted, summed over groups.
    pub sessions_evicted: u64,
    /// Operations that ended with `SessionExpired`.
    pub session_expired: u64,
    /// Epochs a member won by a leader hand-over (`TakeOver`).
    pub handovers: u64,
    /// Reads backups served (counted by the replicas alive at the end).
    pub backup_reads: u64,
    /// Replica moves asked of a primary (`MoveReplica`) and accepted.
    pub moves_started: u64,
    /// Nodes admitted into a group they were moved to.
    pub moves_admitted: u64,
    /// Members dropped from a group they were moved away from.
    pub moves_finished: u64,
    /// Spare nodes some chosen cluster map named (`AddNode`).
    pub nodes_added: u64,
    /// Nodes some chosen map named that the newest one seen no longer does
    /// (`RemoveNode`).
    pub nodes_removed: u64,
    /// Changes of the config store's members that settled: chosen maps
    /// with `config_settled` whose previous version was not settled.
    pub config_settles: u64,
}

impl Coverage {
    /// The sums (and, for `max_in_flight`, the maximum) of two runs.
    pub fn add(&self, o: &Coverage) -> Coverage {
        Coverage {
            snapshots_sent: self.snapshots_sent + o.snapshots_sent,
            snapshots_installed: self.snapshots_installed + o.snapshots_installed,
            entries_compacted: self.entries_compacted + o.entries_compacted,
            max_in_flight: self.max_in_flight.max(o.max_in_flight),
            sessions_evicted: self.sessions_evicted + o.sessions_evicted,
            session_expired: self.session_expired + o.session_expired,
            handovers: self.handovers + o.handovers,
            backup_reads: self.backup_reads + o.backup_reads,
            moves_started: self.moves_started + o.moves_started,
            moves_admitted: self.moves_admitted + o.moves_admitted,
            moves_finished: self.moves_finished + o.moves_finished,
            nodes_added: self.nodes_added + o.nodes_added,
            nodes_removed: self.nodes_removed + o.nodes_removed,
            config_settles: self.config_settles + o.config_settles,
        }
    }
}

thread_local! {
    /// Set while this thread runs a seed, with the location of the last
    /// panic inside it (see `quiet_panics`).
    static IN_SEED: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Makes panics inside a seed silent: `run_seed` reports them as violations
/// (with the location this hook records), so printing them as well would
/// only interleave backtraces from parallel runs. Panics anywhere else go to
/// the previous hook as usual.
pub fn quiet_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let in_seed = IN_SEED.with(|s| {
            let mut s = s.borrow_mut();
            let inside = s.is_some();
            if inside {
                *s = Some(info.location().map(|l| format!("{}:{}", l.file(), l.line())));
            }
            inside
        });
        if !in_seed {
            previous(info);
        }
    }));
}

/// How a seed runs, beyond the seed itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimOptions {
    /// The injected bugs (see `World::bugs_for` for who runs them).
    pub bugs: Bugs,
    /// What the caller fixes about the cluster shape (`--mode`).
    pub shape: Shape,
    /// The divergence demonstration: one member of group 0 (its first placed
    /// node) runs with `Bugs::diverge_state`, a known faulty member whose
    /// state silently goes wrong. The state checks (convergence, durability)
    /// leave that member out, since it is expected to differ; the client
    /// history is checked exactly as always.
    pub diverge_one: bool,
}

impl SimOptions {
    pub fn with_bugs(bugs: Bugs) -> SimOptions {
        SimOptions { bugs, ..SimOptions::default() }
    }
}

/// Runs one seed to the end and checks it, with mixed groups. A panic
/// inside the core (or the simulator) is reported as a violation, not
/// propagated.
pub fn run_seed(seed: u64, bugs: Bugs, verbose: bool) -> RunReport {
    run_seed_with(seed, SimOptions::with_bugs(bugs), verbose)
}

/// `run_seed` with every option.
pub fn run_seed_with(seed: u64, opts: SimOptions, verbose: bool) -> RunReport {
    let mut world = World::new(seed, opts, verbose);
    IN_SEED.with(|s| *s.borrow_mut() = Some(None));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| world.run_script()));
    let location = IN_SEED.with(|s| s.borrow_mut().take()).flatten();
    if let Err(panic) = outcome {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        let at = location.map_or(String::new(), |l| format!(" ({l})"));
        world.violations.push(Violation::new("no panic", format!("panicked at {}us: {msg}{at}", world.now)));
    }
    world.report()
}

/// A scheduled event. Messages are boxed: the event queue moves events
/// around on every push and pop, and unboxed messages made that copying a
/// fifth of the simulator's time. A client tick of an older `generation`
/// than the client's current one was superseded and does nothing.
#[derive(Debug)]
enum What {
    Tick {
        node: NodeId,
        inc: u64,
    },
    Fsync {
        node: NodeId,
        inc: u64,
        upto: u64,
    },
    Peer {
        to: NodeId,
        msg: Box<PeerMsg>,
    },
    ToNode {
        to: NodeId,
        token: ClientToken,
        msg: Box<ClientMsg>,
    },
    ToClient {
        client: usize,
        from: NodeId,
        reply: Box<ClientReply>,
    },
    Unreachable {
        client: usize,
        node: NodeId,
    },
    AdminReply {
        reply: Box<ClientReply>,
    },
    ClientTick {
        client: usize,
        generation: u64,
    },
    NextPartition,
    HealPartition,
    NextCrash,
    Restart {
        node: NodeId,
    },
    NextPause,
    NextHandover,
    NextMove,
    NextMember,
    Resume {
        node: NodeId,
        inc: u64,
    },
    /// A node's step ended: it takes the inputs that arrived meanwhile.
    StepEnded {
        node: NodeId,
        inc: u64,
    },
}

impl What {
    fn tag(&self) -> u64 {
        match self {
            What::Tick { .. } => 1,
            What::Fsync { .. } => 2,
            What::Peer { .. } => 3,
            What::ToNode { .. } => 4,
            What::ToClient { .. } => 5,
            What::Unreachable { .. } => 6,
            What::AdminReply { .. } => 7,
            What::ClientTick { .. } => 8,
            What::NextPartition => 9,
            What::HealPartition => 10,
            What::NextCrash => 11,
            What::Restart { .. } => 12,
            What::NextPause => 13,
            What::Resume { .. } => 14,
            What::StepEnded { .. } => 15,
            What::NextHandover => 16,
            What::NextMove => 17,
            What::NextMember => 18,
        }
    }
}

struct Scheduled {
    at: Micros,
    seq: u64,
    what: What,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    /// Reversed, so the `BinaryHeap` pops the earliest event first; ties go
    /// to the event scheduled first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// One node's process, disk and clock.
struct Slot {
    cfg: NodeConfig,
    node: Option<Node>,
    /// Bumped at every crash, so events of a dead incarnation are ignored.
    inc: u64,
    disk: Disk,
    /// Clock rate deviation in parts per million, and start offset.
    drift_ppm: i64,
    offset_us: u64,
    tick_ms: u64,
    paused: bool,
    /// Inputs that arrived while paused or in the middle of a step,
    /// delivered in order (as one batch) on resume or when the step ends.
    held: Vec<Input>,
    /// The node's current step ends then (see `StepCostPlan`).
    busy_until: Micros,
    /// Recovery must pass `wal_was_cut`: a corrupt record was cut, and the
    /// node's own `WalCut` record of it is not durable yet. A runtime keeps
    /// this knowledge outside the log (the cut removed the evidence from it)
    /// until the node's record is on disk; the simulator does the same.
    cut_unrecorded: bool,
    /// The lsn of the `WalCut` record the node persists after a cut.
    cut_record_lsn: Option<u64>,
    /// A checkpoint that replaces the disk's prefix once the disk is
    /// durable up to it (as the runtime installs a snapshot file).
    checkpoint: Option<Checkpoint>,
    /// Records persisted since the last checkpoint was taken.
    since_checkpoint: usize,
    /// The disk's prefix is a checkpoint.
    compacted: bool,
    /// The runtime's copy of the newest cluster map the node learned (its
    /// `cluster-map` file, written whenever the node persists a map and
    /// kept across crashes): a restart follows it when the WAL holds no
    /// map (`NodeConfig::follow_map`), as the runtime does. Checkpoints
    /// leave the map out, so without it a node restarted from one asked
    /// the config store with map version 0 and every acceptor refused.
    map_file: Option<ClusterMap>,
}

impl Slot {
    /// The node's local monotonic clock in ms at global time `now`.
    fn local_ms(&self, now: Micros) -> u64 {
        let t = now as i128;
        let local = self.offset_us as i128 + t + t * self.drift_ppm as i128 / 1_000_000;
        (local / 1_000) as u64
    }

    /// Forgets a cut once the node's record of it is durable.
    fn note_durable(&mut self) {
        if self.cut_record_lsn.is_some_and(|lsn| self.disk.durable_lsn() >= lsn) {
            self.cut_unrecorded = false;
            self.cut_record_lsn = None;
        }
    }

    /// Global time between two ticks.
    fn tick_us(&self) -> Micros {
        let local = self.tick_ms as i128 * 1_000;
        (local - local * self.drift_ppm as i128 / 1_000_000) as Micros
    }
}

/// Who a client connection belongs to.
#[derive(Clone, Copy, Debug)]
enum Conn {
    Client { client: usize, node: NodeId },
    Admin { node: NodeId },
}

impl Conn {
    fn node(&self) -> NodeId {
        match self {
            Conn::Client { node, .. } | Conn::Admin { node } => *node,
        }
    }
}

struct World {
    seed: u64,
    bugs: Bugs,
    /// The one member whose state is known to go wrong, if any
    /// (`SimOptions::diverge_one`).
    faulty: Option<NodeId>,
    rng: ChaCha8Rng,
    plan: Plan,
    cluster: ClusterMap,
    now: Micros,
    queue: BinaryHeap<Scheduled>,
    seq: u64,
    slots: BTreeMap<NodeId, Slot>,
    clients: Vec<Client>,
    /// Each client's next tick, if one is scheduled, and its generation.
    client_ticks: Vec<(Option<Micros>, u64)>,
    net: Net,
    conns: BTreeMap<ClientToken, Conn>,
    next_token: ClientToken,
    /// Reads a primary accepted but answers later (waiting for a write).
    parked_reads: BTreeMap<ClientToken, ReadServed>,
    history: History,
    obs: Observations,
    trace: Xxh3,
    events: u64,
    verbose: bool,
    /// Print every input to stderr (`PACTDB_SIM_TRACE=1` with `--seed`).
    trace_inputs: bool,
    timeline: Vec<String>,
    faults_on: bool,
    /// Set when the run exceeded a work bound; it stops there and fails.
    runaway: Option<String>,
    sent_entries: u64,
    inflight_entries: u64,
    overloaded: bool,
    partitioned: bool,
    quiet: bool,
    /// The isolation phase: no reply is lost (the network is calm too).
    calm: bool,
    bootstrapped: bool,
    admin_waiting: bool,
    heal_at: Micros,
    dissents: usize,
    compactions: usize,
    restarts_from_checkpoint: usize,
    snapshot_chunks: usize,
    snapshot_chunks_refused: usize,
    snapshots_installed: usize,
    violations: Vec<Violation>,
    /// A crash waiting for the next two-phase commit moment, until then.
    txn_crash_armed: Option<Micros>,
    /// The isolated primaries of `isolate_a_primary`, for the liveness check.
    isolations: Vec<Isolation>,
    coverage: Coverage,
    /// The highest base index of each group's in-memory log seen so far.
    compacted: BTreeMap<GroupId, Index>,
    /// Draws the leader hand-overs (see `HandoverPlan`).
    handover_rng: ChaCha8Rng,
    /// The (group, epoch)s a member won by a hand-over.
    handed: BTreeSet<(GroupId, u64)>,
    /// Draws the replica moves (see `MovePlan`).
    move_rng: ChaCha8Rng,
    /// Moves a primary accepted, as (group, from, to).
    moves: BTreeSet<(GroupId, NodeId, NodeId)>,
    /// Every move asked, in order.
    asked_moves: Vec<(GroupId, NodeId, NodeId)>,
    /// Draws the membership changes (see `MembershipPlan`).
    member_rng: ChaCha8Rng,
    /// The node being removed (its replicas moved off first), and how
    /// many times the driver acted on it so far (bounded).
    removing: Option<(NodeId, u32)>,
    /// Nodes a `RemoveNode` took out of the map (as its answer said).
    removed: BTreeSet<NodeId>,
    /// Removed nodes that stopped for good (as the runtime exits once it
    /// learns it was removed): never stepped or restarted again.
    stopped: BTreeSet<NodeId>,
    /// When the last `AddNode`/`RemoveNode` was sent, while unanswered.
    member_asked: Option<Micros>,
}

impl World {
    fn new(seed: u64, opts: SimOptions, verbose: bool) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut plan = Plan::draw(&mut rng, opts.shape);
        let (handovers, handover_rng) = crate::plan::HandoverPlan::draw(seed);
        plan.handovers = handovers;
        let (moves, move_rng) = crate::plan::MovePlan::draw(seed);
        plan.moves = moves;
        let (membership, member_rng) = crate::plan::MembershipPlan::draw(seed, plan.nodes.len());
        plan.membership = membership;
        if opts.diverge_one {
            // The demonstration keeps each group on its members: a node
            // that joins copies its state from the group's leader, which may
            // be the faulty member, and then two members answer wrongly,
            // which no vote of three can mask (seen: voting seed 12 once
            // spare nodes made moves possible).
            plan.moves = None;
            plan.membership = None;
        }
        let faulty = opts.diverge_one.then(|| plan.groups[0].placement[0]);
        let bugs = opts.bugs;
        let cluster = ClusterMap::new(
            plan.nodes
                .iter()
                .map(|&n| (n, NodeAddrs { peer: format!("sim-{n}:7000"), client: format!("sim-{n}:7001") }))
                .collect(),
            plan.groups
                .iter()
                .enumerate()
                .map(|(i, g)| GroupSpec {
                    id: i as GroupId,
                    mode: if g.active { Mode::Active } else { Mode::Passive },
                    placement: g.placement.clone(),
                    min_members: g.min_members,
                    voting: g.voting,
                })
                .collect(),
        );
        let net = Net::new(plan.net.clone());
        World {
            seed,
            bugs,
            faulty,
            rng,
            plan,
            cluster,
            now: 0,
            queue: BinaryHeap::new(),
            seq: 0,
            slots: BTreeMap::new(),
            clients: Vec::new(),
            client_ticks: Vec::new(),
            net,
            conns: BTreeMap::new(),
            next_token: 1,
            parked_reads: BTreeMap::new(),
            history: History::default(),
            obs: {
                let mut obs = Observations::default();
                obs.faulty = faulty;
                obs
            },
            trace: Xxh3::new(),
            events: 0,
            verbose,
            trace_inputs: verbose && std::env::var_os("PACTDB_SIM_TRACE").is_some(),
            timeline: Vec::new(),
            faults_on: false,
            runaway: None,
            sent_entries: 0,
            inflight_entries: 0,
            overloaded: false,
            partitioned: false,
            quiet: false,
            calm: false,
            bootstrapped: false,
            admin_waiting: false,
            heal_at: 0,
            dissents: 0,
            compactions: 0,
            restarts_from_checkpoint: 0,
            snapshot_chunks: 0,
            snapshot_chunks_refused: 0,
            snapshots_installed: 0,
            violations: Vec::new(),
            txn_crash_armed: None,
            isolations: Vec::new(),
            coverage: Coverage::default(),
            compacted: BTreeMap::new(),
            handover_rng,
            handed: BTreeSet::new(),
            move_rng,
            moves: BTreeSet::new(),
            asked_moves: Vec::new(),
            member_rng,
            removing: None,
            removed: BTreeSet::new(),
            stopped: BTreeSet::new(),
            member_asked: None,
        }
    }

    // ----- The script -------------------------------------------------------

    fn run_script(&mut self) {
        let summary = self.plan.summary();
        self.note(format!("plan: {summary}"));
        self.start_nodes();
        if !self.bootstrap() {
            self.violations.push(Violation::new(
                "liveness",
                "the cluster did not bootstrap (with a primary per group) within 15s without faults",
            ));
            return;
        }
        self.start_clients();
        if !self.set_up_bank() {
            let outcome = self.history.txns.last().map_or(TxnResult::Pending, |t| t.outcome.clone());
            self.violations.push(Violation::new(
                "liveness",
                format!("the bank's setup transaction did not commit within 10s without faults: {outcome:?}"),
            ));
        }
        if let Some(iso) = self.plan.isolation.clone() {
            self.isolate_a_primary(iso.len_ms);
        }
        self.start_faults();
        self.run_for_ms(self.plan.fault_ms);
        self.heal_everything();
        self.run_for_ms(self.plan.quiet_ms - check::liveness::DRAIN_MS);
        self.stop_clients();
        self.run_for_ms(check::liveness::DRAIN_MS);
        if let Some(why) = self.runaway.take() {
            // The run was cut short: the final state means nothing.
            self.violations.push(Violation::new("bounded work", why));
            return;
        }
        self.check();
    }

    fn start_nodes(&mut self) {
        let nodes = self.plan.nodes.clone();
        let spares = self.plan.membership.as_ref().map_or(Vec::new(), |m| m.spares.clone());
        let drift = self.plan.drift_ppm_max as i64;
        for &id in nodes.iter().chain(&spares) {
            let spare = !nodes.contains(&id);
            // A spare's clock and seed come from the membership generator,
            // so the bootstrap nodes' draws stay as they were without it.
            let rng = if spare { &mut self.member_rng } else { &mut self.rng };
            let drift_ppm = if drift == 0 { 0 } else { rng.gen_range(-drift..=drift) };
            // A spare knows the running cluster's nodes (as `--peers` names
            // them), not itself: it is not in the map until it is added.
            let mut cfg = NodeConfig::new(id, nodes.clone());
            // A faulty member's state would spread in snapshots (see
            // `checkpoint_every_records` below).
            if let Some(p) = self.plan.snapshots.as_ref().filter(|_| self.faulty.is_none()) {
                cfg.log_retain_entries = p.log_retain_entries;
                cfg.snapshot_stream.chunk_bytes = p.chunk_bytes;
                cfg.snapshot_stream.bytes_per_sec = p.bytes_per_sec;
            }
            if let Some(n) = self.plan.max_sessions {
                cfg.max_sessions = n;
            }
            let rng = if spare { &mut self.member_rng } else { &mut self.rng };
            let (node_seed, offset_us, tick_ms) = (rng.gen(), rng.gen_range(0..1_000_000_000), rng.gen_range(5..=10));
            let slot = Slot {
                cfg: cfg.clone(),
                node: Some(Node::with_bugs(cfg, node_seed, self.bugs_for(id))),
                inc: 0,
                disk: Disk::default(),
                drift_ppm,
                offset_us,
                tick_ms,
                paused: false,
                held: Vec::new(),
                busy_until: 0,
                cut_unrecorded: false,
                cut_record_lsn: None,
                checkpoint: None,
                since_checkpoint: 0,
                compacted: false,
                map_file: None,
            };
            let rng = if spare { &mut self.member_rng } else { &mut self.rng };
            let first_tick = rng.gen_range(0..slot.tick_us());
            self.slots.insert(id, slot);
            self.schedule(first_tick, What::Tick { node: id, inc: 0 });
        }
    }

    /// Sends the cluster map to a random node until it is stored, then waits
    /// for every group to have a primary. Faults are not on yet.
    fn bootstrap(&mut self) -> bool {
        let mut next_try = 0;
        while self.now < BOOTSTRAP_DEADLINE_US {
            if !self.bootstrapped && !self.admin_waiting && self.now >= next_try {
                let node = self.plan.nodes[self.rng.gen_range(0..self.plan.nodes.len())];
                let token = self.new_token(Conn::Admin { node });
                let msg = ClientMsg::Bootstrap { cluster: self.cluster.clone() };
                self.schedule(500, What::ToNode { to: node, token, msg: Box::new(msg) });
                self.note(format!("bootstrap sent to node {node}"));
                self.admin_waiting = true;
                next_try = self.now + 3_000_000;
            }
            self.run_for_ms(50);
            if self.bootstrapped && self.every_group_has_primary() {
                self.note("bootstrapped".to_string());
                return true;
            }
            if self.admin_waiting && self.now >= next_try {
                // No answer in time: the admin's connection is abandoned.
                self.admin_waiting = false;
            }
        }
        false
    }

    fn every_group_has_primary(&self) -> bool {
        self.cluster.groups.iter().all(|g| {
            self.slots
                .values()
                .any(|s| s.node.as_ref().and_then(|n| n.replica(g.id)).is_some_and(|r| r.role() == Role::Primary))
        })
    }

    /// Creates every client: the register clients, then the bank's
    /// transfer clients and auditors. Only the first transfer client runs
    /// now, the bank's setup; the others wait for `set_up_bank`.
    fn start_clients(&mut self) {
        let bank = self.plan.bank.clone();
        let accounts = bank.as_ref().map_or(Vec::new(), |b| account_names(&self.cluster, b.accounts));
        let account_read_p = bank.as_ref().map_or(0.0, |b| b.account_read_p);
        let mut roles = Vec::new();
        for i in 0..self.plan.clients {
            let read_only = OpMix { get: 1, put: 0, cas: 0, delete: 0 };
            let mix = if i < self.plan.readers { read_only } else { self.plan.mix.clone() };
            roles.push(ClientRole::Register { keys: self.plan.keys, mix, account_read_p });
        }
        if let Some(b) = &bank {
            roles.extend((0..b.transfers).map(|_| ClientRole::Transfer { abandon_p: b.abandon_p }));
            roles.extend((0..b.auditors).map(|_| ClientRole::Audit));
        }
        let depth = self.plan.pipeline_depth;
        roles.extend((0..self.plan.pipelined).map(|_| ClientRole::Pipelined { keys: self.plan.keys, depth }));
        for (i, role) in roles.into_iter().enumerate() {
            let (nodes, cluster) = (self.plan.nodes.clone(), self.cluster.clone());
            let think_max_ms = match (&bank, &role) {
                (Some(b), ClientRole::Transfer { .. } | ClientRole::Audit) => b.think_max_ms,
                _ => self.plan.think_max_ms,
            };
            let mut c = Client::new(i, self.rng.gen(), nodes, cluster, role, accounts.clone(), think_max_ms);
            if self.plan.read_levels {
                c.use_read_levels();
            }
            match &bank {
                Some(b) if i == self.plan.clients => c.run_setup_first(b.initial),
                Some(_) => c.start_at(Micros::MAX),
                None => {}
            }
            self.clients.push(c);
            let first = self.rng.gen_range(0..CLIENT_TICK_US);
            self.client_ticks.push((Some(first), 0));
            self.schedule(first, What::ClientTick { client: i, generation: 0 });
        }
    }

    /// Makes sure client `client` is ticked when it next has something due,
    /// at most every `CLIENT_TICK_US`: a tick already scheduled early enough
    /// stays, a later one is superseded.
    fn schedule_client_tick(&mut self, client: usize) {
        let Some(due) = self.clients[client].next_due() else { return };
        let at = due.max(self.now + CLIENT_TICK_US);
        let (scheduled, generation) = self.client_ticks[client];
        if scheduled.is_some_and(|t| t <= at) {
            return;
        }
        self.client_ticks[client] = (Some(at), generation + 1);
        self.schedule(at - self.now, What::ClientTick { client, generation: generation + 1 });
    }

    /// Runs the bank's setup transaction, still without faults, then lets
    /// every client go. Returns false if the setup did not commit in time;
    /// the bank's clients then stay idle.
    fn set_up_bank(&mut self) -> bool {
        if self.plan.bank.is_none() {
            return true;
        }
        let deadline = self.now + SETUP_DEADLINE_US;
        let setup = self.plan.clients;
        let bank_clients = self.plan.bank.as_ref().map_or(0, |b| b.transfers + b.auditors);
        while self.now < deadline && self.clients[setup].setting_up() && self.runaway.is_none() {
            self.run_for_ms(50);
        }
        let committed = self.history.txns.iter().any(|t| t.kind == TxnKind::Setup && t.outcome.is_committed());
        self.note(format!("bank set up: {committed}"));
        for i in 0..self.clients.len() {
            let bank_client = (setup..setup + bank_clients).contains(&i);
            let c = &mut self.clients[i];
            if bank_client && !committed {
                c.stopped = true;
            } else if i != setup {
                c.start_at(self.now);
                self.schedule_client_tick(i);
            }
        }
        committed
    }

    /// Cuts the primary of the first passive group off from every other
    /// node for `len_ms`,
    /// while its clients still reach it, on an otherwise calm network and
    /// before any other fault: then whatever stalls the group's operations
    /// is this partition alone, and the liveness checker bounds it while the
    /// partition lasts and after it heals (`check::liveness::ISOLATION_BOUND_MS`).
    fn isolate_a_primary(&mut self, len_ms: u64) {
        let profile = self.net.profile.clone();
        self.net.profile = profile.calm();
        self.calm = true;
        self.run_for_ms(ISOLATION_LEAD_MS);
        let group = self.cluster.groups.iter().find(|g| g.mode == Mode::Passive).map(|g| g.id);
        let primary = group.and_then(|group| {
            self.slots.iter().find_map(|(&id, s)| {
                s.node.as_ref().and_then(|n| n.replica(group)).is_some_and(|r| r.role() == Role::Primary).then_some(id)
            })
        });
        if let (Some(id), Some(group)) = (primary, group) {
            let nodes = self.plan.nodes.clone();
            let what = self.net.partition(&mut self.rng, &nodes, PartitionKind::Isolate, Some(id));
            self.partitioned = true;
            let start = self.now;
            self.note(format!(
                "partition: {what}, the primary of group {group}, for {len_ms}ms (clients still reach it)"
            ));
            self.run_for_ms(len_ms);
            self.net.heal();
            self.partitioned = false;
            self.note("partition healed".to_string());
            self.run_for_ms(ISOLATION_TAIL_MS);
            self.isolations.push(Isolation { node: id, start, healed: start + len_ms * 1_000, until: self.now });
        }
        self.net.profile = profile;
        self.calm = false;
    }

    fn start_faults(&mut self) {
        self.faults_on = true;
        self.note("faults on".to_string());
        if let Some(p) = &self.plan.partitions {
            let gap = gap_ms(&mut self.rng, p.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextPartition);
        }
        if let Some(c) = &self.plan.crashes {
            let gap = gap_ms(&mut self.rng, c.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextCrash);
        }
        if let Some(p) = &self.plan.pauses {
            let gap = gap_ms(&mut self.rng, p.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextPause);
        }
        if let Some(h) = &self.plan.handovers {
            let gap = gap_ms(&mut self.handover_rng, h.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextHandover);
        }
        if let Some(m) = &self.plan.moves {
            let gap = gap_ms(&mut self.move_rng, m.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextMove);
        }
        if let Some(m) = &self.plan.membership {
            let gap = gap_ms(&mut self.member_rng, m.mean_gap_ms);
            self.schedule(gap * 1_000, What::NextMember);
        }
    }

    /// The quiet phase begins: no new faults, every partition healed, the
    /// network calm, every paused node resumed and every crashed node back.
    fn heal_everything(&mut self) {
        self.faults_on = false;
        self.txn_crash_armed = None;
        self.quiet = true;
        self.heal_at = self.now;
        self.net.heal();
        self.partitioned = false;
        self.net.profile = self.net.profile.calm();
        self.note("heal: quiet phase begins".to_string());
        let ids: Vec<NodeId> = self.slots.keys().copied().filter(|id| !self.stopped.contains(id)).collect();
        for id in ids {
            let slot = &self.slots[&id];
            if slot.node.is_none() {
                self.restart(id);
            } else if slot.paused {
                self.resume(id);
            }
        }
    }

    fn stop_clients(&mut self) {
        for c in &mut self.clients {
            c.stopped = true;
        }
    }

    fn check(&mut self) {
        // The state checks judge the nodes the final map names: a removed
        // node (stopped, or still unaware it was removed) and a spare never
        // added hold no replica the cluster counts on. Every named node
        // must be up; the convergence check holds each against the final
        // views as before, and also fails a view that places a node the
        // map does not name.
        let final_map = self.current_map();
        let mut finals = Vec::new();
        for (id, slot) in &self.slots {
            if !final_map.nodes.contains_key(id) {
                continue;
            }
            let node = slot.node.as_ref().expect("every node of the map is up after the quiet phase");
            for r in node.replicas() {
                finals.push(FinalReplica {
                    node: node.id(),
                    group: r.group(),
                    role: r.role(),
                    view: r.view().cloned(),
                    commit: r.commit_index(),
                    applied: r.applied_index(),
                    digest: r.kv().digest(),
                    kv: r.kv().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    prepared: r.state().prepared.keys().copied().collect(),
                    locks: r.state().locks.len(),
                    decisions: r.state().decisions.keys().copied().collect(),
                });
            }
        }
        let facts = check::Facts {
            cluster: &self.cluster,
            final_map: &final_map,
            history: &self.history,
            obs: &self.obs,
            finals: &finals,
            faulty: self.faulty,
            dissents: self.dissents,
            diverged_on_purpose: self.faulty.is_some() || self.bugs.diverge_state,
            heal_at: self.heal_at,
            end_at: self.now,
            isolations: &self.isolations,
        };
        if self.trace_inputs {
            for o in &self.history.ops {
                eprintln!("HIST {o:?}");
            }
            for t in &self.history.txns {
                eprintln!("TXN {t:?}");
            }
        }
        let found = check::check_all(&facts);
        self.violations.extend(found);
    }

    fn report(&mut self) -> RunReport {
        let mut coverage = self.coverage;
        coverage.entries_compacted = self.compacted.values().sum();
        coverage.max_in_flight = self.clients.iter().map(|c| c.max_inflight as u64).max().unwrap_or(0);
        let mut evicted: BTreeMap<GroupId, u64> = BTreeMap::new();
        for slot in self.slots.values() {
            for r in slot.node.iter().flat_map(|n| n.replicas()) {
                let e = evicted.entry(r.group()).or_default();
                *e = (*e).max(r.state().sessions.evicted());
                coverage.backup_reads += r.backup_reads_served();
            }
        }
        coverage.sessions_evicted = evicted.values().sum();
        coverage.handovers = self.handed.len() as u64;
        let spares = self.plan.membership.as_ref().map_or(Vec::new(), |m| m.spares.clone());
        let (added, removed, settles) = self.obs.membership_counts(&spares);
        coverage.nodes_added = added;
        coverage.nodes_removed = removed;
        coverage.config_settles = settles;
        coverage.moves_started = self.moves.len() as u64;
        // A move is admitted once a view holds its target as a member, and
        // finished once a later view no longer holds its source.
        for &(g, from, to) in &self.moves {
            let views = self.obs.views.range((g, 0)..=(g, u64::MAX)).map(|(_, (v, _))| v);
            let admitted = views.clone().find(|v| v.is_member(to) && !v.is_placed(from)).map(|v| v.epoch);
            if let Some(e) = admitted {
                coverage.moves_admitted += 1;
                if views.filter(|v| v.epoch > e).any(|v| !v.is_member(from) && v.is_member(to)) {
                    coverage.moves_finished += 1;
                }
            }
        }
        let txns = &self.history.txns;
        let txns_ok = txns.iter().filter(|t| t.outcome.is_committed() || t.outcome.told_not_committed()).count();
        let ops_ok = self.history.ops.iter().filter(|o| o.result().is_some()).count() + txns_ok;
        RunReport {
            seed: self.seed,
            violations: std::mem::take(&mut self.violations),
            trace_hash: self.trace.digest(),
            events: self.events,
            ops: self.history.ops.len() + txns.len(),
            ops_ok,
            txns_committed: txns.iter().filter(|t| t.outcome.is_committed()).count(),
            sim_ms: self.now / 1_000,
            dissents: self.dissents,
            compactions: self.compactions,
            restarts_from_checkpoint: self.restarts_from_checkpoint,
            snapshot_chunks: self.snapshot_chunks,
            snapshot_chunks_refused: self.snapshot_chunks_refused,
            snapshots_installed: self.snapshots_installed,
            coverage,
            plan: self.plan.summary(),
            timeline: std::mem::take(&mut self.timeline),
        }
    }

    // ----- The event loop ---------------------------------------------------

    fn schedule(&mut self, delay_us: Micros, what: What) {
        self.seq += 1;
        self.queue.push(Scheduled { at: self.now + delay_us, seq: self.seq, what });
    }

    /// Runs events for `ms` of simulated time, unless the run has exceeded
    /// its work bounds (then it does nothing more).
    fn run_for_ms(&mut self, ms: u64) {
        let until = self.now + ms * 1_000;
        while self.runaway.is_none() && self.queue.peek().is_some_and(|e| e.at <= until) {
            let ev = self.queue.pop().expect("peeked");
            self.now = ev.at;
            self.events += 1;
            self.hash(&[ev.at, ev.what.tag()]);
            self.dispatch(ev.what);
            if self.events > MAX_EVENTS {
                self.runaway = Some(format!("more than {MAX_EVENTS} events by {}us", self.now));
            } else if self.sent_entries > MAX_SENT_ENTRIES {
                self.runaway = Some(format!("nodes sent more than {MAX_SENT_ENTRIES} log entries by {}us", self.now));
            }
        }
        self.now = until;
    }

    fn dispatch(&mut self, what: What) {
        match what {
            What::Tick { node, inc } => self.on_tick(node, inc),
            What::Fsync { node, inc, upto } => self.on_fsync(node, inc, upto),
            What::Peer { to, msg } => {
                self.inflight_entries -= entries_in(&msg.body);
                let up = self.slots[&to].node.is_some();
                if up && !self.net.is_cut(msg.from, to) {
                    self.deliver(to, Input::Peer(*msg));
                }
            }
            What::ToNode { to, token, msg } => {
                // A connection broken by a crash carries nothing further.
                if self.conns.contains_key(&token) {
                    self.deliver(to, Input::Client { token, msg: *msg });
                }
            }
            What::ToClient { client, from, reply } => {
                let now_ms = self.now / 1_000;
                let c = &mut self.clients[client];
                c.fe.on_reply(now_ms, &mut c.rng, from, *reply);
                self.drain_client(client);
            }
            What::Unreachable { client, node } => {
                let now_ms = self.now / 1_000;
                let c = &mut self.clients[client];
                c.fe.on_unreachable(now_ms, &mut c.rng, node);
                self.drain_client(client);
            }
            What::AdminReply { reply } if matches!(*reply, ClientReply::TransferStarted(_)) => {
                self.note(format!("transfer-leader answered: {reply:?}"));
            }
            What::AdminReply { reply } if matches!(*reply, ClientReply::MoveStarted(_)) => {
                self.note(format!("move-replica answered: {reply:?}"));
                if let ClientReply::MoveStarted(Ok(v)) = *reply {
                    // The move it asked for, read back from the placement.
                    if let Some(&(g, from, to)) = self
                        .asked_moves
                        .iter()
                        .find(|&&(g, from, to)| g == v.group && v.is_placed(to) && !v.is_placed(from))
                    {
                        self.moves.insert((g, from, to));
                    }
                }
            }
            What::AdminReply { reply } if matches!(*reply, ClientReply::ClusterChanged(_)) => {
                self.on_cluster_changed(*reply);
            }
            What::AdminReply { reply } => {
                self.note(format!("bootstrap answered: {reply:?}"));
                self.admin_waiting = false;
                if matches!(*reply, ClientReply::Bootstrapped(Ok(()))) {
                    self.bootstrapped = true;
                }
            }
            What::ClientTick { client, generation } => {
                if self.client_ticks[client].1 != generation {
                    return;
                }
                self.client_ticks[client].0 = None;
                self.maybe_hand_token(client);
                let now_ms = self.now / 1_000;
                let c = &mut self.clients[client];
                c.fe.on_tick(now_ms, &mut c.rng);
                self.drain_client(client);
            }
            What::NextPartition => self.next_partition(),
            What::HealPartition => {
                if self.partitioned {
                    self.net.heal();
                    self.partitioned = false;
                    self.note("partition healed".to_string());
                }
            }
            What::NextCrash => self.next_crash(),
            What::Restart { node } => {
                if self.slots[&node].node.is_none() && !self.stopped.contains(&node) {
                    self.restart(node);
                }
            }
            What::NextPause => self.next_pause(),
            What::NextHandover => self.next_handover(),
            What::NextMove => self.next_move(),
            What::NextMember => self.next_member(),
            What::Resume { node, inc } => {
                let s = &self.slots[&node];
                if s.inc == inc && s.paused {
                    self.resume(node);
                }
            }
            What::StepEnded { node, inc } => {
                let s = &self.slots[&node];
                if s.inc == inc && !s.paused && s.node.is_some() {
                    let held = std::mem::take(&mut self.slots.get_mut(&node).expect("slot").held);
                    self.step_held(node, held);
                }
            }
        }
    }

    // ----- Nodes ------------------------------------------------------------

    fn on_tick(&mut self, id: NodeId, inc: u64) {
        let slot = &self.slots[&id];
        if slot.inc != inc || slot.node.is_none() {
            return;
        }
        let (next, paused) = (slot.tick_us(), slot.paused);
        self.schedule(next, What::Tick { node: id, inc });
        // A paused process misses its ticks, and so does one in the middle of
        // a step; its clock keeps running.
        if !paused && self.now >= self.slots[&id].busy_until {
            self.step(id, Input::Tick);
        }
    }

    fn on_fsync(&mut self, id: NodeId, inc: u64, upto: u64) {
        if self.slots[&id].inc != inc {
            return;
        }
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.disk.fsync_done(upto);
        slot.note_durable();
        if slot.checkpoint.as_ref().is_some_and(|c| c.upto_lsn <= slot.disk.durable_lsn()) {
            let c = slot.checkpoint.take().expect("checked");
            let (upto, n) = (c.upto_lsn, c.records.len());
            slot.disk.compact(c.upto_lsn, c.records);
            slot.compacted = true;
            self.compactions += 1;
            self.hash(&[id, upto, n as u64]);
            self.detail(format!("node {id} compacted its WAL up to lsn {upto} into {n} records"));
        }
        self.deliver(id, Input::Persisted { lsn: upto });
        self.start_fsync(id);
    }

    fn start_fsync(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        if let Some(upto) = slot.disk.start_fsync() {
            let inc = slot.inc;
            let latency = self.rng.gen_range(self.plan.fsync_min_us..=self.plan.fsync_max_us);
            self.schedule(latency, What::Fsync { node: id, inc, upto });
        }
    }

    /// Hands an input to a live node, or holds it while the node is paused.
    fn deliver(&mut self, id: NodeId, input: Input) {
        let slot = self.slots.get_mut(&id).expect("slot");
        if slot.node.is_none() {
            return;
        }
        if slot.paused {
            slot.held.push(input);
            return;
        }
        if self.now < slot.busy_until {
            if slot.held.is_empty() {
                let (after, inc) = (slot.busy_until - self.now, slot.inc);
                self.schedule(after, What::StepEnded { node: id, inc });
            }
            self.slots.get_mut(&id).expect("slot").held.push(input);
            return;
        }
        self.step(id, input);
    }

    /// Steps held inputs as the runtime does, in batches of at most its
    /// `MAX_INPUTS_PER_STEP`.
    fn step_held(&mut self, id: NodeId, held: Vec<Input>) {
        let mut held = held.into_iter().peekable();
        while held.peek().is_some() {
            if self.slots[&id].node.is_none() {
                // It crashed while catching up (at a two-phase commit moment).
                break;
            }
            let batch: Vec<Input> = held.by_ref().take(MAX_INPUTS_PER_STEP).collect();
            self.step_batch(id, batch);
        }
    }

    /// What a step of `inputs` inputs that produced `effects` effects costs,
    /// in simulated microseconds (see `StepCostPlan`).
    fn step_cost_us(&mut self, inputs: usize, effects: usize) -> Micros {
        let c = &self.plan.steps;
        let work = c.per_input_us * inputs as u64 + c.per_effect_us * effects as u64;
        let stall = self.faults_on && c.stall_p > 0.0 && self.rng.gen_bool(c.stall_p);
        if !stall {
            return work;
        }
        let ms = self.rng.gen_range(10..=c.stall_max_ms.max(10));
        work + ms * 1_000
    }

    fn step(&mut self, id: NodeId, input: Input) {
        self.step_batch(id, vec![input]);
    }

    /// One step of node `id`: every input at the instant the step begins
    /// (the node's clock read once, as the runtime does per batch); its
    /// messages and replies leave when the step ends (`step_cost_us` later).
    fn step_batch(&mut self, id: NodeId, inputs: Vec<Input>) {
        if self.trace_inputs {
            for input in &inputs {
                eprintln!("{:>12}us node {id} <- {input:?}", self.now);
            }
        }
        // Reads a passive primary serves on its own lease. (An active group
        // orders reads through its log, so no lease is involved.)
        let mut reads: Vec<(ClientToken, GroupId)> = inputs
            .iter()
            .filter_map(|input| match input {
                Input::Client { token, msg: ClientMsg::Request(r) } if r.op.is_read() && self.is_passive(r.group) => {
                    Some((*token, r.group))
                }
                _ => None,
            })
            .collect();
        let before = if self.verbose { self.roles(id) } else { Vec::new() };
        let n_inputs = inputs.len();
        let slot = self.slots.get_mut(&id).expect("slot");
        let now_ms = slot.local_ms(self.now);
        let node = slot.node.as_mut().expect("stepping a live node");
        let effects = node.step_batch(now_ms, inputs);
        self.hash(&[id, now_ms, effects.len() as u64]);
        let cut = self.txn_crash_cut(id, &effects);
        let kept = cut.unwrap_or(effects.len());
        let began = self.now;
        let cost = self.step_cost_us(n_inputs, kept);
        if cost >= 10_000 {
            self.note(format!("node {id} stalls for {}ms in a step", cost / 1_000));
        }
        let ends = began + cost;
        self.slots.get_mut(&id).expect("slot").busy_until = ends;
        // What the step produced leaves when it ends: everything below is
        // scheduled from then, and a lease is judged by the clock then.
        self.now = ends;
        let release_ms = self.slots[&id].local_ms(ends);
        for e in effects.into_iter().take(kept) {
            match e {
                Effect::Send { to, msg } => self.send_peer(id, to, msg),
                Effect::Reply { token, reply } => self.reply_from_step(id, &mut reads, token, reply),
                Effect::ReplyUnderLease { token, reply, lease_expires_ms } => {
                    let reply = release_under_lease(reply, lease_expires_ms, release_ms);
                    self.reply_from_step(id, &mut reads, token, reply);
                }
                Effect::Persist { lsn, record } => {
                    self.hash(&[lsn]);
                    match &record {
                        WalRecord::SnapshotInstalled { group, id: sid } => {
                            self.snapshots_installed += 1;
                            self.coverage.snapshots_installed += 1;
                            self.obs.note_snapshot(id, *group, sid.index);
                        }
                        WalRecord::Snapshot { group, snapshot } => self.obs.note_snapshot(id, *group, snapshot.index),
                        WalRecord::Entry { group, entry } => self.obs.note_written(id, *group, entry.clone()),
                        WalRecord::Truncate { group, index } => self.obs.note_truncated(id, *group, *index),
                        WalRecord::Cluster { map } => {
                            self.obs.note_map(id, map);
                            self.slots.get_mut(&id).expect("slot").map_file = Some(map.clone());
                        }
                        _ => {}
                    }
                    let slot = self.slots.get_mut(&id).expect("slot");
                    slot.disk.append(lsn, record);
                    slot.since_checkpoint += 1;
                }
            }
        }
        self.now = began;
        if cut.is_some() {
            // The process dies here, in the middle of its step: what it did
            // in memory is observed (its commits are real), the rest of its
            // messages and records never leave it.
            let node = self.slots[&id].node.as_ref().expect("live");
            self.obs.after_step(self.now, node);
            let c = self.plan.crashes.clone().expect("only a crash plan arms a crash");
            self.note(format!("crash node {id} in the middle of a two-phase commit step ({kept} effects out)"));
            self.crash(id, &c);
            let down = self.rng.gen_range(10..=c.max_down_ms.max(10));
            self.schedule(down * 1_000, What::Restart { node: id });
            return;
        }
        for (token, group) in reads {
            // Parked behind a pending write: decided now, answered later.
            if let Some(r) = self.read_served(id, group) {
                self.parked_reads.insert(token, r);
            }
        }
        self.start_fsync(id);
        // A member whose state silently goes wrong (`faulty`) would pass it
        // on in the snapshots that compaction makes routine (a restarted
        // member's log no longer reaches back, so it is sent the faulty
        // primary's state), and the voting demonstration needs exactly one
        // diverged member: its runs do not compact.
        if let Some(every) = self.plan.checkpoint_every_records.filter(|_| self.faulty.is_none()) {
            // Between steps, as the runtime takes them.
            let slot = self.slots.get_mut(&id).expect("slot");
            if slot.since_checkpoint >= every && slot.checkpoint.is_none() {
                slot.since_checkpoint = 0;
                slot.checkpoint = Some(slot.node.as_ref().expect("live").checkpoint());
            }
        }
        let node = self.slots[&id].node.as_ref().expect("live");
        self.obs.after_step(self.now, node);
        for r in node.replicas() {
            let base = self.compacted.entry(r.group()).or_default();
            *base = (*base).max(r.log().base_index());
            if r.leads_a_handed_epoch() {
                let epoch = r.view().map_or(0, |v| v.epoch);
                self.handed.insert((r.group(), epoch));
            }
        }
        if self.verbose {
            let after = self.roles(id);
            for a in after.iter().filter(|a| !before.contains(a)) {
                self.detail(format!("node {id} group {}: {} of epoch {} (commit {})", a.0, a.1, a.2, a.3));
            }
        }
        // A node the sim removed stops once it learns it (the runtime exits
        // then). A spare that learned the map before it was added is not
        // named by it either, but was never removed: it runs on.
        if self.removed.contains(&id) && self.slots[&id].node.as_ref().is_some_and(|n| n.is_removed()) {
            self.stop_removed(id);
        }
    }

    /// A reply of node `id`'s step, leaving now (when the step ends). A
    /// successful answer to one of the step's own passive reads is a read
    /// served now; the read is no longer waiting.
    fn reply_from_step(
        &mut self,
        id: NodeId,
        reads: &mut Vec<(ClientToken, GroupId)>,
        token: ClientToken,
        reply: ClientReply,
    ) {
        if let Some(i) = reads.iter().position(|(t, _)| *t == token) {
            let (_, group) = reads.swap_remove(i);
            if matches!(reply, ClientReply::Response { result: Ok(_), .. }) {
                let served = self.read_served(id, group);
                self.obs.reads.extend(served);
            }
        }
        self.reply(id, token, reply);
    }

    /// Where an armed crash cuts this step of node `id`: after the step's
    /// first two-phase commit moment (a coordinator's `canCommit?` or
    /// decision, a participant's vote, or a prepare or decision logged by a
    /// primary) and any number of the effects after it. `None` if no crash
    /// is armed or the step has no such moment.
    fn txn_crash_cut(&mut self, id: NodeId, effects: &[Effect]) -> Option<usize> {
        let until = self.txn_crash_armed?;
        if self.now > until {
            self.txn_crash_armed = None;
            return None;
        }
        let node = self.slots[&id].node.as_ref().expect("live");
        let is_primary = |g: GroupId| node.replica(g).is_some_and(|r| r.role() == Role::Primary);
        let moment = effects.iter().position(|e| match e {
            Effect::Send { msg, .. } => matches!(
                msg.body,
                PeerBody::CanCommit { .. }
                    | PeerBody::Vote { .. }
                    | PeerBody::DoCommit { .. }
                    | PeerBody::DoAbort { .. }
            ),
            Effect::Persist { record: WalRecord::Entry { group, entry }, .. } => {
                matches!(entry.payload, Payload::Prepare { .. } | Payload::Decide { .. }) && is_primary(*group)
            }
            _ => false,
        })?;
        self.txn_crash_armed = None;
        Some(self.rng.gen_range(moment + 1..=effects.len()))
    }

    /// Each replica's (group, role, view epoch, commit index), for the
    /// verbose timeline.
    fn roles(&self, id: NodeId) -> Vec<(GroupId, &'static str, u64, Index)> {
        let Some(n) = self.slots[&id].node.as_ref() else { return Vec::new() };
        n.replicas()
            .map(|r| (r.group(), r.role().as_str(), r.view().map_or(0, |v| v.epoch), r.commit_index()))
            .map(|(g, role, e, c)| (g, role, e, if role == "primary" { 0 } else { c }))
            .collect()
    }

    /// What, if anything, `body` vouches for that `from`'s disk has not made
    /// durable: an ack covers every entry up to its match index; a promise
    /// needs a durable promise at least as high, an accept answer a durable
    /// accepted ballot at least as high.
    fn vouches_for_unsynced(&self, from: NodeId, body: &PeerBody) -> Option<String> {
        let disk = &self.slots[&from].disk;
        let unsynced = disk.unsynced();
        let durable_register = |key: &str| {
            disk.durable().iter().rev().find_map(|r| match r {
                WalRecord::Acceptor { key: k, promised, accepted } if k == key => {
                    Some((*promised, accepted.as_ref().map(|(b, _)| *b)))
                }
                _ => None,
            })
        };
        match body {
            PeerBody::AppendAck { group, match_index, .. } => unsynced.iter().find_map(|r| match r {
                WalRecord::Entry { group: g, entry } if g == group && entry.index <= *match_index => {
                    Some(format!("acked group {group} up to {match_index}, entry {} not yet durable", entry.index))
                }
                WalRecord::Snapshot { group: g, snapshot } if g == group && snapshot.index <= *match_index => {
                    Some(format!("acked group {group} up to {match_index}, snapshot not yet durable"))
                }
                _ => None,
            }),
            PeerBody::Promise { key, ballot, .. } => {
                let durable = durable_register(key).is_some_and(|(promised, _)| promised >= *ballot);
                (!durable).then(|| format!("promised {ballot:?} for register {key:?} before that promise was durable"))
            }
            PeerBody::Accepted { key, ballot } => {
                let durable = durable_register(key).is_some_and(|(_, accepted)| accepted >= Some(*ballot));
                (!durable).then(|| format!("accepted {ballot:?} for register {key:?} before that was durable"))
            }
            _ => None,
        }
    }

    fn is_passive(&self, group: GroupId) -> bool {
        self.cluster.groups.iter().any(|g| g.id == group && g.mode == Mode::Passive)
    }

    /// The read `id` serves for `group` now, if it is primary of it.
    fn read_served(&self, id: NodeId, group: GroupId) -> Option<ReadServed> {
        // `self.now` is when the answer leaves the node.
        let r = self.slots[&id].node.as_ref()?.replica(group)?;
        let epoch = r.view()?.epoch;
        (r.role() == Role::Primary).then_some(ReadServed { node: id, group, epoch, at: self.now })
    }

    fn send_peer(&mut self, from: NodeId, to: NodeId, msg: PeerMsg) {
        self.hash(&[from, to, body_tag(&msg.body)]);
        // A stream's first chunk: a snapshot sent (resent after a restart
        // of the stream too).
        if let PeerBody::SnapshotChunk { offset: 0, .. } = &msg.body {
            self.coverage.snapshots_sent += 1;
        }
        if let PeerBody::Accept { value: ConfigValue::View(v), .. } = &msg.body {
            self.obs.note_proposed(v);
        }
        if let Some(what) = self.vouches_for_unsynced(from, &msg.body) {
            self.obs.note_premature(format!("at {}us node {from} told node {to}: {what}", self.now));
        }
        match &msg.body {
            PeerBody::SnapshotChunk { .. } => self.snapshot_chunks += 1,
            PeerBody::SnapshotAck { refused: true, .. } => self.snapshot_chunks_refused += 1,
            _ => {}
        }
        let delays = self.net.fate(&mut self.rng, from, to);
        let entries = entries_in(&msg.body);
        self.sent_entries += entries;
        if entries > 0 && self.inflight_entries + entries * delays.len() as u64 > MAX_INFLIGHT_ENTRIES {
            if !self.overloaded {
                self.overloaded = true;
                self.note(format!(
                    "network overloaded: over {MAX_INFLIGHT_ENTRIES} entries in flight, dropping appends"
                ));
            }
            return;
        }
        self.inflight_entries += entries * delays.len() as u64;
        if let Some((&last, rest)) = delays.split_last() {
            for &d in rest {
                self.schedule(d, What::Peer { to, msg: Box::new(msg.clone()) });
            }
            self.schedule(last, What::Peer { to, msg: Box::new(msg) });
        }
    }

    /// A node answers on a client connection.
    fn reply(&mut self, node: NodeId, token: ClientToken, reply: ClientReply) {
        self.hash(&[node, token]);
        let parked = self.parked_reads.remove(&token);
        let Some(conn) = self.conns.remove(&token) else { return };
        if let (Some(r), ClientReply::Response { result: Ok(_), .. }) = (parked, &reply) {
            // Served when its answer leaves, under the epoch it was read in.
            self.obs.reads.push(ReadServed { at: self.now, ..r });
        }
        let delay = self.client_delay();
        match conn {
            Conn::Admin { .. } => self.schedule(delay, What::AdminReply { reply: Box::new(reply) }),
            Conn::Client { client, .. } => {
                let lose = !self.quiet
                    && !self.calm
                    && self.plan.reply_loss_p > 0.0
                    && matches!(reply, ClientReply::Response { .. })
                    && self.rng.gen_bool(self.plan.reply_loss_p);
                if !lose {
                    self.schedule(delay, What::ToClient { client, from: node, reply: Box::new(reply) });
                } else if self.rng.gen_bool(0.5) {
                    // The connection reset: the front end notices at once.
                    self.schedule(delay, What::Unreachable { client, node });
                }
                // Otherwise the reply vanished and the attempt times out.
            }
        }
    }

    fn client_delay(&mut self) -> Micros {
        self.rng.gen_range(100..=self.plan.client_delay_max_us)
    }

    fn new_token(&mut self, conn: Conn) -> ClientToken {
        let token = self.next_token;
        self.next_token += 1;
        self.conns.insert(token, conn);
        token
    }

    // ----- Clients ----------------------------------------------------------

    /// Carries out what a front end asked for, until it asks nothing more.
    fn drain_client(&mut self, client: usize) {
        loop {
            let now = self.now;
            let c = &mut self.clients[client];
            c.maybe_start(now, &mut self.history);
            let effects = c.fe.take_effects();
            if effects.is_empty() {
                return self.schedule_client_tick(client);
            }
            for e in effects {
                match e {
                    pactdb_core::fe::FeEffect::Send { to, msg } => self.client_send(client, to, msg),
                    pactdb_core::fe::FeEffect::FetchViews { to } => self.client_send(client, to, ClientMsg::GetViews),
                    pactdb_core::fe::FeEffect::Dissent { members, .. } => self.dissents += members.len(),
                    // Who served a weaker read is not judged: the checkers judge what it saw.
                    pactdb_core::fe::FeEffect::ReadServed { .. } => {}
                    pactdb_core::fe::FeEffect::Done { op, id, result } => {
                        if let Err(pactdb_core::fe::FeError::Refused(ClientError::SessionExpired)) = &result {
                            self.coverage.session_expired += 1;
                        }
                        self.clients[client].on_done(now, op, id, result, &mut self.history);
                    }
                }
            }
        }
    }

    fn client_send(&mut self, client: usize, to: NodeId, msg: ClientMsg) {
        let delay = self.client_delay();
        self.hash(&[client as u64, to]);
        if self.slots[&to].node.is_none() {
            // Connection refused.
            self.schedule(delay, What::Unreachable { client, node: to });
            return;
        }
        let token = self.new_token(Conn::Client { client, node: to });
        self.schedule(delay, What::ToNode { to, token, msg: Box::new(msg) });
    }

    // ----- Faults -----------------------------------------------------------

    fn next_partition(&mut self) {
        let Some(p) = self.plan.partitions.clone() else { return };
        if !self.faults_on {
            return;
        }
        if !self.partitioned {
            let kind = p.kinds[self.rng.gen_range(0..p.kinds.len())];
            // Spares and added nodes too; not nodes removed for good.
            let nodes: Vec<NodeId> = self.slots.keys().copied().filter(|id| !self.stopped.contains(id)).collect();
            let all = nodes.clone();
            let target = self.pick_target(&all).filter(|_| self.rng.gen_bool(0.5));
            let what = self.net.partition(&mut self.rng, &nodes, kind, target);
            self.partitioned = true;
            let len = self.rng.gen_range(p.min_len_ms..=p.max_len_ms);
            self.note(format!("partition: {what} for {len}ms"));
            self.schedule(len * 1_000, What::HealPartition);
        }
        let gap = gap_ms(&mut self.rng, p.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextPartition);
    }

    fn next_crash(&mut self) {
        let Some(c) = self.plan.crashes.clone() else { return };
        if !self.faults_on {
            return;
        }
        let up: Vec<NodeId> = self.slots.iter().filter(|(_, s)| s.node.is_some()).map(|(&id, _)| id).collect();
        if c.txn_moment_p > 0.0 && self.txn_crash_armed.is_none() && self.rng.gen_bool(c.txn_moment_p) {
            // This crash strikes at the next two-phase commit moment.
            self.txn_crash_armed = Some(self.now + TXN_MOMENT_WAIT_US);
        } else if let Some(id) = self.pick_target(&up) {
            self.crash(id, &c);
            let down = self.rng.gen_range(10..=c.max_down_ms.max(10));
            self.schedule(down * 1_000, What::Restart { node: id });
        }
        let gap = gap_ms(&mut self.rng, c.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextCrash);
    }

    /// A node of `among` to hit with a fault: half the time a current
    /// primary (where failures hurt the most), otherwise any.
    fn pick_target(&mut self, among: &[NodeId]) -> Option<NodeId> {
        if among.is_empty() {
            return None;
        }
        let primaries: Vec<NodeId> = among
            .iter()
            .copied()
            .filter(|id| self.slots[id].node.as_ref().is_some_and(|n| n.replicas().any(|r| r.role() == Role::Primary)))
            .collect();
        if !primaries.is_empty() && self.rng.gen_bool(0.5) {
            return Some(primaries[self.rng.gen_range(0..primaries.len())]);
        }
        Some(among[self.rng.gen_range(0..among.len())])
    }

    fn crash(&mut self, id: NodeId, plan: &crate::plan::CrashPlan) {
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.node.take().expect("crashing a live node");
        slot.inc += 1;
        slot.paused = false;
        slot.held.clear();
        slot.busy_until = 0;
        let damage = slot.disk.crash(&mut self.rng, plan.unsynced_survive_p, plan.torn_p);
        slot.note_durable();
        slot.cut_record_lsn = None;
        // A snapshot not yet installed dies with the process.
        slot.checkpoint = None;
        slot.since_checkpoint = 0;
        let corruptible = self.plan.corruption.clone().filter(|c| c.nodes.contains(&id));
        let mut corrupt = String::new();
        if let Some(c) = corruptible {
            if self.rng.gen_bool(c.p) && self.corruption_allowed(id) {
                let slot = self.slots.get_mut(&id).expect("slot");
                if let Some(cut) = slot.disk.corrupt(&mut self.rng) {
                    slot.cut_unrecorded = true;
                    corrupt = format!(", corrupt record: {cut} records cut");
                }
            }
        }
        // Every connection to the dead process breaks.
        let broken: Vec<(ClientToken, Conn)> =
            self.conns.iter().filter(|(_, c)| c.node() == id).map(|(&t, &c)| (t, c)).collect();
        for (token, conn) in broken {
            self.conns.remove(&token);
            self.parked_reads.remove(&token);
            match conn {
                Conn::Client { client, node, .. } => {
                    let delay = self.client_delay();
                    self.schedule(delay, What::Unreachable { client, node });
                }
                Conn::Admin { .. } => self.admin_waiting = false,
            }
        }
        self.obs.forget_node(id);
        self.hash(&[id, damage.lost as u64, damage.torn as u64]);
        let torn = if damage.torn { ", torn tail" } else { "" };
        self.note(format!("crash node {id} ({} unsynced records lost{torn}{corrupt})", damage.lost));
    }

    /// Whether corrupting `id`'s disk stays within the fault model: no other
    /// node is still amnesiac from a cut, and for every group placed on
    /// `id`, every view that is or may become current has another member
    /// that is up, not amnesiac, and holds every entry seen committed.
    fn corruption_allowed(&self, id: NodeId) -> bool {
        if self.slots.keys().any(|&n| n != id && self.amnesiac(n)) {
            return false;
        }
        let groups = self.groups_on(id);
        !groups.is_empty()
            && groups.into_iter().all(|g| {
                let candidates = self.obs.candidate_views(g);
                !candidates.is_empty()
                    && candidates.iter().all(|v| v.members.iter().any(|&m| m != id && self.holds_all_committed(m, g)))
            })
    }

    /// The groups node `id` holds or is to hold: those whose newest view
    /// seen places it or counts it as a member (moves change both), and
    /// before any view was seen, those the map places on it.
    fn groups_on(&self, id: NodeId) -> Vec<GroupId> {
        self.cluster
            .groups
            .iter()
            .filter(|g| match self.obs.views.range((g.id, 0)..=(g.id, u64::MAX)).next_back() {
                Some((_, (v, _))) => v.is_placed(id) || v.is_member(id),
                None => g.placement.contains(&id),
            })
            .map(|g| g.id)
            .collect()
    }

    /// Whether `m` is up, not amnesiac, and holds every entry of `group`
    /// seen committed (as committed, or with the committed entry's epoch).
    fn holds_all_committed(&self, m: NodeId, group: GroupId) -> bool {
        if self.amnesiac(m) {
            return false;
        }
        let Some(r) = self.slots[&m].node.as_ref().and_then(|n| n.replica(group)) else { return false };
        let committed = self.obs.committed.get(&group);
        (r.commit_index() + 1..=self.obs.max_commit(group)).all(|i| {
            let e = committed.map_or(0, |c| c[i as usize - 1]);
            e != 0 && r.log().epoch_at(i) == Some(e)
        })
    }

    /// Whether `id` may still be missing data after a cut, exactly as the
    /// core sees it: a cut not yet recorded, or a `WalCut` record not yet
    /// followed by a `CaughtUp` for every group placed on the node.
    fn amnesiac(&self, id: NodeId) -> bool {
        let slot = &self.slots[&id];
        if slot.cut_unrecorded {
            return true;
        }
        let mut caught_up = Vec::new();
        for r in slot.disk.records().rev() {
            match r {
                WalRecord::CaughtUp { group } => caught_up.push(*group),
                WalRecord::WalCut => {
                    return self.groups_on(id).iter().any(|g| !caught_up.contains(g));
                }
                _ => {}
            }
        }
        false
    }

    /// The bugs node `id` runs with: the injected ones, except that a state
    /// that silently goes wrong is one faulty member (node 1, or the chosen
    /// one of the divergence demonstration), not all.
    /// Now and then a client reading at levels is handed another such
    /// client's session token, as `pactdb get --after` does between
    /// processes: its later session reads must see what the giver had seen.
    fn maybe_hand_token(&mut self, to: usize) {
        if !self.clients[to].reads_at_levels() || !self.rng.gen_bool(0.05) {
            return;
        }
        let from = self.rng.gen_range(0..self.clients.len());
        if from == to || !self.clients[from].reads_at_levels() {
            return;
        }
        let token = self.clients[from].fe.token();
        if !self.bugs.drop_handed_token {
            self.clients[to].fe.observe_token(&token);
        }
        self.history.handoffs.push((from, to, self.now));
    }

    fn bugs_for(&self, id: NodeId) -> Bugs {
        let diverge = (self.bugs.diverge_state && id == 1) || self.faulty == Some(id);
        Bugs { diverge_state: diverge, ..self.bugs }
    }

    fn restart(&mut self, id: NodeId) {
        let seed = self.rng.gen();
        let slot = self.slots.get_mut(&id).expect("slot");
        let records = slot.disk.recover();
        self.restarts_from_checkpoint += usize::from(slot.compacted);
        let cut = slot.cut_unrecorded;
        let n = records.len();
        slot.cut_record_lsn = cut.then_some(n as u64 + 1);
        let bugs = self.bugs_for(id);
        let slot = self.slots.get_mut(&id).expect("slot");
        // As the runtime starts: the WAL's newest map, else its map file.
        let stored = records
            .iter()
            .rev()
            .find_map(|r| match r {
                WalRecord::Cluster { map } => Some(map.clone()),
                _ => None,
            })
            .or_else(|| slot.map_file.clone());
        let mut cfg = slot.cfg.clone();
        if let Some(map) = &stored {
            cfg.follow_map(map);
        }
        slot.node = Some(Node::recover(cfg, seed, bugs, records, cut));
        let (inc, tick) = (slot.inc, slot.tick_us());
        self.schedule(tick, What::Tick { node: id, inc });
        self.hash(&[id, n as u64]);
        self.note(format!("restart node {id} from {n} records{}", if cut { " (wal was cut)" } else { "" }));
    }

    fn next_pause(&mut self) {
        let Some(p) = self.plan.pauses.clone() else { return };
        if !self.faults_on {
            return;
        }
        let candidates: Vec<NodeId> =
            self.slots.iter().filter(|(_, s)| s.node.is_some() && !s.paused).map(|(&id, _)| id).collect();
        if let Some(id) = self.pick_target(&candidates) {
            let len = self.rng.gen_range(5..=p.max_len_ms.max(5));
            let slot = self.slots.get_mut(&id).expect("slot");
            slot.paused = true;
            let inc = slot.inc;
            self.note(format!("pause node {id} for {len}ms"));
            self.schedule(len * 1_000, What::Resume { node: id, inc });
        }
        let gap = gap_ms(&mut self.rng, p.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextPause);
    }

    /// Asks a random group's primary (as the nodes that are up see it) to
    /// hand its leadership to a random other member of its view.
    fn next_handover(&mut self) {
        let Some(h) = self.plan.handovers.clone() else { return };
        if !self.faults_on {
            return;
        }
        let group = self.cluster.groups[self.handover_rng.gen_range(0..self.cluster.groups.len())].id;
        let primary = self.slots.iter().find_map(|(&id, s)| {
            let r = s.node.as_ref()?.replica(group)?;
            (r.role() == Role::Primary && !s.paused).then(|| (id, r.view().cloned()))
        });
        if let Some((leader, Some(view))) = primary {
            let others: Vec<NodeId> = view.members.iter().copied().filter(|&m| m != leader).collect();
            if !others.is_empty() {
                let to = others[self.handover_rng.gen_range(0..others.len())];
                let token = self.new_token(Conn::Admin { node: leader });
                let msg = ClientMsg::TransferLeader { group, to };
                self.schedule(500, What::ToNode { to: leader, token, msg: Box::new(msg) });
                self.note(format!("transfer-leader of group {group} from node {leader} to node {to} asked"));
            }
        }
        let gap = gap_ms(&mut self.handover_rng, h.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextHandover);
    }

    /// Asks a random group's primary (as the nodes that are up see it) to
    /// move the group from a random placed node to a random node that does
    /// not hold it, when there is one and no move is under way.
    fn next_move(&mut self) {
        let Some(m) = self.plan.moves.clone() else { return };
        if !self.faults_on {
            return;
        }
        let group = self.cluster.groups[self.move_rng.gen_range(0..self.cluster.groups.len())].id;
        let primary = self.slots.iter().find_map(|(&id, s)| {
            let r = s.node.as_ref()?.replica(group)?;
            (r.role() == Role::Primary && !s.paused).then(|| (id, r.view().cloned()))
        });
        if let Some((leader, Some(view))) = primary {
            // Nodes of the newest map (added ones too), not one being removed.
            let map = self.current_map();
            let leaving = self.removing.map(|(n, _)| n);
            let free: Vec<NodeId> =
                map.nodes.keys().copied().filter(|&n| !view.is_placed(n) && Some(n) != leaving).collect();
            if !free.is_empty() && view.leaving().is_empty() {
                let from = view.placement[self.move_rng.gen_range(0..view.placement.len())];
                let to = free[self.move_rng.gen_range(0..free.len())];
                let token = self.new_token(Conn::Admin { node: leader });
                let msg = ClientMsg::MoveReplica { group, from, to };
                self.asked_moves.push((group, from, to));
                self.schedule(500, What::ToNode { to: leader, token, msg: Box::new(msg) });
                self.note(format!(
                    "move-replica of group {group} from node {from} to node {to} asked of node {leader}"
                ));
            }
        }
        let gap = gap_ms(&mut self.move_rng, m.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextMove);
    }

    /// The newest cluster map any running node learned (the bootstrap's
    /// before any did).
    fn current_map(&self) -> ClusterMap {
        self.slots
            .values()
            .filter_map(|s| s.node.as_ref()?.cluster())
            .max_by_key(|m| m.version)
            .unwrap_or(&self.cluster)
            .clone()
    }

    /// A running, unpaused node of `map` other than `not`, to ask a change of.
    fn pick_asked(&mut self, map: &ClusterMap, not: NodeId) -> Option<NodeId> {
        let up: Vec<NodeId> = map
            .nodes
            .keys()
            .copied()
            .filter(|&n| n != not && self.slots.get(&n).is_some_and(|s| s.node.is_some() && !s.paused))
            .collect();
        (!up.is_empty()).then(|| up[self.member_rng.gen_range(0..up.len())])
    }

    /// Sends an `AddNode` or `RemoveNode` to `to` on an admin connection.
    fn ask_member_change(&mut self, to: NodeId, msg: ClientMsg) {
        self.note(format!("{msg:?} asked of node {to}"));
        let token = self.new_token(Conn::Admin { node: to });
        self.member_asked = Some(self.now);
        self.schedule(500, What::ToNode { to, token, msg: Box::new(msg) });
    }

    /// Changes the cluster's nodes while faults are on (`MembershipPlan`):
    /// goes on with a removal under way, else adds a spare or starts
    /// removing a node. One change at a time, waiting for each answer (an
    /// unanswered one is given up after a while, like an operator's).
    fn next_member(&mut self) {
        let Some(m) = self.plan.membership.clone() else { return };
        if !self.faults_on {
            return;
        }
        if self.member_asked.is_some_and(|at| self.now < at + 3_000_000) {
            // Still waiting for the last answer.
        } else if let Some((id, tries)) = self.removing {
            self.drive_removal(id, tries);
        } else {
            let map = self.current_map();
            let spares: Vec<NodeId> =
                m.spares.iter().copied().filter(|n| !map.nodes.contains_key(n) && !self.removed.contains(n)).collect();
            let removable = self.removable(&map);
            let remove = self.removed.len() < m.max_removals && !removable.is_empty();
            if !spares.is_empty() && (!remove || self.member_rng.gen_bool(0.6)) {
                let id = spares[self.member_rng.gen_range(0..spares.len())];
                let addrs = NodeAddrs { peer: format!("sim-{id}:7000"), client: format!("sim-{id}:7001") };
                if let Some(to) = self.pick_asked(&map, id) {
                    self.ask_member_change(to, ClientMsg::AddNode { id, addrs });
                }
            } else if remove {
                let id = removable[self.member_rng.gen_range(0..removable.len())];
                self.note(format!("removing node {id}: its replicas move off first"));
                self.removing = Some((id, 0));
                self.drive_removal(id, 0);
            }
        }
        let gap = gap_ms(&mut self.member_rng, m.mean_gap_ms);
        self.schedule(gap * 1_000, What::NextMember);
    }

    /// The nodes of `map` that may be removed: at least three stay, and
    /// every group the node holds has somewhere else to move to (a node of
    /// the map its newest view does not place), so every group keeps its
    /// placement size. Never the known faulty member.
    fn removable(&self, map: &ClusterMap) -> Vec<NodeId> {
        if map.nodes.len() <= 3 {
            return Vec::new();
        }
        let faulty = self.faulty.or((self.bugs.diverge_state).then_some(1));
        map.nodes
            .keys()
            .copied()
            .filter(|&n| Some(n) != faulty)
            .filter(|&n| {
                self.cluster.groups.iter().all(|g| match self.newest_view(g.id) {
                    Some(v) if v.is_placed(n) || v.is_member(n) => {
                        map.nodes.keys().any(|&t| t != n && !v.is_placed(t) && !v.is_member(t))
                    }
                    _ => true,
                })
            })
            .collect()
    }

    fn newest_view(&self, group: GroupId) -> Option<&pactdb_core::types::View> {
        self.obs.views.range((group, 0)..=(group, u64::MAX)).next_back().map(|(_, (v, _))| v)
    }

    /// One step of removing node `id`: while a group's newest view places
    /// it, ask that group's primary to move it to a node it does not hold
    /// (one move per group at a time); once none does, ask for the
    /// `RemoveNode`. Given up after a bounded number of steps.
    fn drive_removal(&mut self, id: NodeId, tries: u32) {
        const MAX_REMOVAL_STEPS: u32 = 40;
        if tries >= MAX_REMOVAL_STEPS {
            self.note(format!("removing node {id}: given up after {tries} tries"));
            self.removing = None;
            return;
        }
        self.removing = Some((id, tries + 1));
        let map = self.current_map();
        if !map.nodes.contains_key(&id) {
            self.removing = None;
            self.removed.insert(id);
            return;
        }
        let mut holding = false;
        for g in self.cluster.groups.iter().map(|g| g.id).collect::<Vec<_>>() {
            let Some(v) = self.newest_view(g).cloned() else { continue };
            if !v.is_placed(id) && !v.is_member(id) {
                continue;
            }
            holding = true;
            // A move under way (the node leaving, or another) finishes first.
            if !v.is_placed(id) || !v.leaving().is_empty() || v.members.len() != v.placement.len() {
                continue;
            }
            let targets: Vec<NodeId> =
                map.nodes.keys().copied().filter(|&t| t != id && !v.is_placed(t) && !v.is_member(t)).collect();
            let leader = self.slots.iter().find_map(|(&n, s)| {
                let r = s.node.as_ref()?.replica(g)?;
                (r.role() == Role::Primary && !s.paused && r.view().is_some_and(|rv| rv.epoch == v.epoch)).then_some(n)
            });
            if let (Some(leader), false) = (leader, targets.is_empty()) {
                let to = targets[self.member_rng.gen_range(0..targets.len())];
                let token = self.new_token(Conn::Admin { node: leader });
                let msg = ClientMsg::MoveReplica { group: g, from: id, to };
                self.asked_moves.push((g, id, to));
                self.schedule(500, What::ToNode { to: leader, token, msg: Box::new(msg) });
                self.note(format!("move-replica of group {g} from node {id} to node {to} asked of node {leader}"));
            }
        }
        if !holding {
            if let Some(to) = self.pick_asked(&map, id) {
                self.ask_member_change(to, ClientMsg::RemoveNode { id });
            }
        }
    }

    /// The answer to an `AddNode` or `RemoveNode`.
    fn on_cluster_changed(&mut self, reply: ClientReply) {
        self.note(format!("cluster change answered: {reply:?}"));
        self.member_asked = None;
        let ClientReply::ClusterChanged(Ok(map)) = reply else { return };
        if let Some((id, _)) = self.removing.filter(|(id, _)| !map.nodes.contains_key(id)) {
            self.removing = None;
            self.removed.insert(id);
            if self.slots[&id].node.as_ref().is_none_or(|n| n.is_removed()) {
                self.stop_removed(id);
            }
        }
    }

    /// Stops removed node `id` for good, as the runtime does once it
    /// learns it was removed: its process ends, its connections break, and
    /// it is never restarted.
    fn stop_removed(&mut self, id: NodeId) {
        self.stopped.insert(id);
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.node = None;
        slot.inc += 1;
        slot.paused = false;
        slot.held.clear();
        slot.checkpoint = None;
        let broken: Vec<(ClientToken, Conn)> =
            self.conns.iter().filter(|(_, c)| c.node() == id).map(|(&t, &c)| (t, c)).collect();
        for (token, conn) in broken {
            self.conns.remove(&token);
            self.parked_reads.remove(&token);
            if let Conn::Client { client, node } = conn {
                let delay = self.client_delay();
                self.schedule(delay, What::Unreachable { client, node });
            }
        }
        self.obs.forget_node(id);
        self.note(format!("node {id} was removed from the cluster: it stops"));
    }

    fn resume(&mut self, id: NodeId) {
        let slot = self.slots.get_mut(&id).expect("slot");
        slot.paused = false;
        let held = std::mem::take(&mut slot.held);
        self.note(format!("resume node {id} ({} inputs waiting)", held.len()));
        self.step_held(id, held);
    }

    // ----- Trace --------------------------------------------------------------

    /// Feeds `words` to the trace hash, in one update: the same bytes, so
    /// the same digest as one update per word, for a fraction of the cost
    /// (the streaming hasher's per-call overhead showed in profiles).
    fn hash(&mut self, words: &[u64]) {
        let mut buf = [0u8; 32];
        for chunk in words.chunks(4) {
            for (i, w) in chunk.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
            }
            self.trace.update(&buf[..chunk.len() * 8]);
        }
    }

    /// A notable event: part of the trace, and of a verbose timeline.
    fn note(&mut self, line: String) {
        self.hash(&[xxhash_rust::xxh3::xxh3_64(line.as_bytes())]);
        self.detail(line);
    }

    /// A line only a verbose run shows; never hashed, so `--seed S` replays
    /// the trace hash of the batch run that found the seed.
    fn detail(&mut self, line: String) {
        if self.verbose && self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(format!("{:>9.3}ms {line}", self.now as f64 / 1_000.0));
        }
    }
}

/// How many log entries a message carries, for the network's bound.
fn entries_in(body: &PeerBody) -> u64 {
    match body {
        PeerBody::Append { entries, .. } => entries.len() as u64,
        _ => 0,
    }
}

/// A small fingerprint of a peer message for the trace hash.
fn body_tag(body: &PeerBody) -> u64 {
    match body {
        PeerBody::Prepare { ballot, .. } => 1 | ballot.round << 8,
        PeerBody::Promise { ballot, .. } => 2 | ballot.round << 8,
        PeerBody::Accept { ballot, .. } => 3 | ballot.round << 8,
        PeerBody::Accepted { ballot, .. } => 4 | ballot.round << 8,
        PeerBody::Reject { ballot, .. } => 5 | ballot.round << 8,
        PeerBody::ViewAnnounce { view } => 6 | view.epoch << 8,
        PeerBody::ClusterAnnounce { map } => 22 | map.version << 8,
        PeerBody::Append { prev_index, entries, commit_index, .. } => {
            7 | prev_index << 8 | (entries.len() as u64) << 32 | commit_index << 44
        }
        PeerBody::AppendAck { match_index, .. } => 8 | match_index << 8,
        PeerBody::AppendReject { last_index, .. } => 9 | last_index << 8,
        PeerBody::SnapshotChunk { meta, offset, .. } => 10 | meta.id.index << 8 | offset << 32,
        PeerBody::SnapshotAck { id, received, .. } => 19 | id.index << 8 | received << 32,
        PeerBody::Join { last_index, .. } => 11 | last_index << 8,
        PeerBody::StaleEpoch { view } => 12 | view.epoch << 8,
        PeerBody::TakeOver { epoch, last_index, .. } => 20 | epoch << 8 | last_index << 32,
        PeerBody::CanCommit { txn, .. } => 13 | txn.seq << 8,
        PeerBody::Vote { txn, .. } => 14 | txn.seq << 8,
        PeerBody::DoCommit { txn, .. } => 15 | txn.seq << 8,
        PeerBody::DoAbort { txn, .. } => 16 | txn.seq << 8,
        PeerBody::HaveCommitted { txn, .. } => 17 | txn.seq << 8,
        PeerBody::GetDecision { txn, .. } => 18 | txn.seq << 8,
        PeerBody::ReadIndex { ask, .. } => 20 | ask << 8,
        PeerBody::ReadIndexReply { ask, index, .. } => 21 | ask << 8 | index.unwrap_or(0) << 32,
    }
}
