//! The per-seed plan: cluster shape, workload and fault mix, drawn from the
//! seed before the run starts (swarm testing: each seed switches every fault
//! kind on or off and picks its own rates).
//!
//! It owns only the drawing of parameters; it never schedules anything. The
//! ranges here are the fault model of the crate docs made concrete: change
//! them only together with those docs.

use pactdb_core::types::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Network behaviour of peer links.
#[derive(Clone, Debug)]
pub struct NetProfile {
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    /// Probability that a message takes a long tail delay instead.
    pub tail_p: f64,
    pub tail_max_us: u64,
    pub drop_p: f64,
    pub dup_p: f64,
    /// Probability of an extra delay that reorders a message past later ones.
    pub reorder_p: f64,
    pub reorder_max_us: u64,
}

impl NetProfile {
    /// The healed network of the quiet phase: delays only.
    pub fn calm(&self) -> NetProfile {
        NetProfile {
            delay_min_us: 100,
            delay_max_us: 2_000,
            tail_p: 0.0,
            tail_max_us: 0,
            drop_p: 0.0,
            dup_p: 0.0,
            reorder_p: 0.0,
            reorder_max_us: 0,
        }
    }
}

/// The shapes a partition can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    /// One node cut off from every other node, both directions.
    Isolate,
    /// A majority and a minority, both directions.
    Split,
    /// Like `Split`, but only messages from one side to the other are cut.
    Asymmetric,
    /// One link cut, in one direction or both.
    Link,
}

#[derive(Clone, Debug)]
pub struct PartitionPlan {
    pub kinds: Vec<PartitionKind>,
    pub mean_gap_ms: u64,
    /// Some seeds hold every partition long enough for a full failover.
    pub min_len_ms: u64,
    pub max_len_ms: u64,
}

#[derive(Clone, Debug)]
pub struct CrashPlan {
    pub mean_gap_ms: u64,
    pub max_down_ms: u64,
    /// Probability that unsynced records partly reached the disk at a crash.
    pub unsynced_survive_p: f64,
    /// Probability that the last surviving unsynced record is torn.
    pub torn_p: f64,
    /// Probability that a crash, when it is due, waits for the next moment
    /// of two-phase commit (a coordinator asking for votes, logging or
    /// telling a decision; a participant logging a prepare or voting) and
    /// strikes in the middle of that step: the process dies after some of
    /// the step's messages and records left it, and before the rest. Such
    /// a crash is an ordinary crash plus the loss of the step's remaining
    /// messages, both within the fault model; it only aims at the moments
    /// where a protocol that acts before its state is durable shows it.
    pub txn_moment_p: f64,
}

/// What a node's step costs in simulated time. A step takes its inputs at
/// one instant (the runtime reads the clock once per batch) and ends later,
/// in proportion to its work; its messages and replies leave, and the node
/// takes its next inputs, only then. Now and then a step stalls (a big
/// apply, a snapshot, the process descheduled), which is what makes a read
/// checked against the step's start time late.
#[derive(Clone, Debug)]
pub struct StepCostPlan {
    pub per_input_us: u64,
    /// Per effect (message, reply, record) the step produced.
    pub per_effect_us: u64,
    /// Probability that a step, while faults are on, stalls.
    pub stall_p: f64,
    pub stall_max_ms: u64,
}

/// A primary cut off from every peer while its clients still reach it,
/// before the other faults start, with the network otherwise calm: the
/// liveness checker bounds how long its group's operations stall.
#[derive(Clone, Debug)]
pub struct IsolationPlan {
    pub len_ms: u64,
}

/// Leader hand-overs (`pactdb admin transfer-leader`) asked of a random
/// group's primary, while faults are on. Drawn from its own generator
/// (`HandoverPlan::draw`), so that every other draw of a seed, and so the
/// runs of seeds without hand-overs, stay as they were before it existed.
#[derive(Clone, Debug)]
pub struct HandoverPlan {
    pub mean_gap_ms: u64,
}

impl HandoverPlan {
    /// Some seeds hand leadership over every few hundred milliseconds.
    pub fn draw(seed: u64) -> (Option<HandoverPlan>, ChaCha8Rng) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6861_6e64_6f76_6572);
        let plan = rng.gen_bool(0.4).then(|| HandoverPlan { mean_gap_ms: [150, 500, 1_500][rng.gen_range(0..3)] });
        (plan, rng)
    }
}

/// Replica moves (`pactdb admin move-replica`) asked of a random group's
/// primary while faults are on: a random member of its placement to a
/// random node that does not hold the group. Drawn from its own generator
/// (`MovePlan::draw`), for the same reason as `HandoverPlan`.
#[derive(Clone, Debug)]
pub struct MovePlan {
    pub mean_gap_ms: u64,
}

impl MovePlan {
    /// Some seeds move replicas every few hundred milliseconds.
    pub fn draw(seed: u64) -> (Option<MovePlan>, ChaCha8Rng) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d6f_7665_7265_706c);
        let plan = rng.gen_bool(0.4).then(|| MovePlan { mean_gap_ms: [200, 600, 1_500][rng.gen_range(0..3)] });
        (plan, rng)
    }
}

/// Membership changes while faults are on (`pactdb admin add-node`,
/// `remove-node`): the seed has one or two spare nodes, numbered after the
/// bootstrap's, that run (and crash, pause, get cut off) from the start but
/// are not in the bootstrap map. Now and then a spare is added, or a node
/// is removed: its replicas moved off first, then the node taken out of
/// the map. Drawn from its own generator (`MembershipPlan::draw`), for the
/// same reason as `HandoverPlan`.
#[derive(Clone, Debug)]
pub struct MembershipPlan {
    pub spares: Vec<NodeId>,
    pub mean_gap_ms: u64,
    /// Most nodes removed over the run.
    pub max_removals: usize,
}

impl MembershipPlan {
    /// Some seeds change the cluster's nodes every second or so. `nodes`
    /// is the bootstrap's node count; spares take the next ids.
    pub fn draw(seed: u64, nodes: usize) -> (Option<MembershipPlan>, ChaCha8Rng) {
        use rand::SeedableRng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6d65_6d62_6572_7368);
        let plan = rng.gen_bool(0.35).then(|| {
            let count = rng.gen_range(1..=2);
            MembershipPlan {
                spares: (nodes as NodeId + 1..=(nodes + count) as NodeId).collect(),
                mean_gap_ms: [300, 800, 2_000][rng.gen_range(0..3)],
                max_removals: rng.gen_range(1..=2),
            }
        });
        (plan, rng)
    }
}

#[derive(Clone, Debug)]
pub struct PausePlan {
    pub mean_gap_ms: u64,
    pub max_len_ms: u64,
}

#[derive(Clone, Debug)]
pub struct CorruptPlan {
    /// The nodes whose disks may ever hold a corrupt record: a minority.
    pub nodes: Vec<NodeId>,
    /// Probability that a restart of such a node finds a corrupt record.
    pub p: f64,
}

/// The bank workload of a seed: accounts (`acct-N`) spread over the groups
/// so that most transfers cross groups, each created with a known balance
/// by one setup transaction before the faults start, and the clients that
/// move money between them or audit them.
#[derive(Clone, Debug)]
pub struct BankPlan {
    pub accounts: usize,
    /// Every account's balance after the setup.
    pub initial: u64,
    /// Clients that transfer between two accounts (the first one also runs
    /// the setup).
    pub transfers: usize,
    /// Clients that read every account and commit a read-only transaction.
    pub auditors: usize,
    /// Probability that a transfer client crashes just after it sent a
    /// commit (its front end is gone; it never learns the outcome and never
    /// retries), leaving the transaction to the cluster.
    pub abandon_p: f64,
    /// Probability that a register client's read goes to an account.
    pub account_read_p: f64,
    /// Longest a bank client thinks between transactions. Never zero: a
    /// commit across groups costs several times a single write, and the
    /// bank's clients must not crowd out the rest of the run's work.
    pub think_max_ms: u64,
}

/// Relative weights of the operations clients issue.
#[derive(Clone, Debug)]
pub struct OpMix {
    pub get: u32,
    pub put: u32,
    pub cas: u32,
    pub delete: u32,
}

/// Which replication modes a seed's groups use (`--mode`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SimMode {
    /// Passive groups only.
    Passive,
    /// Active groups only.
    Active,
    /// Each group's mode drawn from the seed, so most seeds run both.
    #[default]
    Mixed,
}

/// What the caller fixes about the cluster shape; the seed draws the rest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub mode: SimMode,
    /// Every group has three members, and active groups vote (`true`) or
    /// take the first answer (`false`); `None` draws both from the seed.
    pub voting: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct GroupPlan {
    pub placement: Vec<NodeId>,
    pub min_members: usize,
    /// Active replication instead of passive.
    pub active: bool,
    /// Active groups of three or more: the front end votes (f+1 answers).
    pub voting: bool,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub nodes: Vec<NodeId>,
    pub groups: Vec<GroupPlan>,
    pub clients: usize,
    /// How many of the clients only read (they stay with whichever primary
    /// keeps answering them, as read-heavy clients do).
    pub readers: usize,
    pub keys: usize,
    pub mix: OpMix,
    pub think_max_ms: u64,
    pub fault_ms: u64,
    pub quiet_ms: u64,
    pub net: NetProfile,
    pub client_delay_max_us: u64,
    /// Probability that a reply to a client is lost with its connection.
    pub reply_loss_p: f64,
    pub partitions: Option<PartitionPlan>,
    pub crashes: Option<CrashPlan>,
    pub pauses: Option<PausePlan>,
    pub corruption: Option<CorruptPlan>,
    /// Largest clock rate deviation, in parts per million.
    pub drift_ppm_max: u64,
    pub fsync_min_us: u64,
    pub fsync_max_us: u64,
    /// The bank workload, on most seeds.
    pub bank: Option<BankPlan>,
    /// Nodes checkpoint after this many WAL records and compact their disk
    /// into the checkpoint once it is durable (as the runtime's on-disk
    /// snapshots do), on some seeds.
    pub checkpoint_every_records: Option<usize>,
    pub steps: StepCostPlan,
    pub isolation: Option<IsolationPlan>,
    /// On some seeds, replicas keep few entries, so that a member that
    /// falls behind gets a snapshot, streamed in small (even tiny) chunks.
    pub snapshots: Option<SnapshotPlan>,
    /// Clients that keep many requests in flight at once (pipelined), on
    /// some seeds, and how many each keeps.
    pub pipelined: usize,
    /// Register clients read at a random consistency (linearizable reads
    /// spread over the members too), not only linearizable at the primary.
    pub read_levels: bool,
    pub pipeline_depth: usize,
    /// Sessions each group's exactly-once table holds
    /// (`NodeConfig::max_sessions`): below the number of clients on some
    /// seeds, so that sessions are evicted while their clients still retry.
    pub max_sessions: Option<usize>,
    pub handovers: Option<HandoverPlan>,
    pub moves: Option<MovePlan>,
    pub membership: Option<MembershipPlan>,
}

/// How a seed makes members take snapshots.
#[derive(Clone, Debug)]
pub struct SnapshotPlan {
    pub log_retain_entries: u64,
    pub chunk_bytes: u64,
    /// The per-stream throttle, 0 for none.
    pub bytes_per_sec: u64,
}

/// Longest simulated time the quiet phase gives the cluster to converge.
pub const QUIET_MS: u64 = 8_000;

impl Plan {
    pub fn draw(rng: &mut ChaCha8Rng, shape: Shape) -> Plan {
        let n = if rng.gen_bool(0.5) { 3 } else { 5 };
        let nodes: Vec<NodeId> = (1..=n as NodeId).collect();
        let groups = (0..rng.gen_range(1..=3))
            .map(|_| {
                let drawn_size = rng.gen_range(2..=3);
                let size = if shape.voting.is_some() { 3 } else { drawn_size };
                let placement = pick(rng, &nodes, size);
                // Mostly the default; sometimes refuse writes below two members.
                let min_members = if rng.gen_bool(0.15) { 2 } else { 1 };
                // Both drawn whatever the mode, so that the rest of a seed's
                // plan does not depend on `--mode`.
                let drawn_active = rng.gen_bool(0.4);
                let drawn_voting = rng.gen_bool(0.5);
                let active = match shape.mode {
                    SimMode::Passive => false,
                    SimMode::Active => true,
                    SimMode::Mixed => drawn_active,
                };
                let voting = active && size >= 3 && shape.voting.unwrap_or(drawn_voting);
                GroupPlan { placement, min_members, active, voting }
            })
            .collect();
        let mix = OpMix {
            get: rng.gen_range(1..=6),
            put: rng.gen_range(1..=6),
            cas: rng.gen_range(0..=4),
            delete: rng.gen_range(0..=2),
        };
        let delay_max_us = [1_000, 3_000, 10_000, 30_000][rng.gen_range(0..4)];
        let net = NetProfile {
            delay_min_us: rng.gen_range(50..=500),
            delay_max_us,
            tail_p: if rng.gen_bool(0.5) { rng.gen_range(0.001..0.05) } else { 0.0 },
            tail_max_us: rng.gen_range(20_000..=300_000),
            drop_p: if rng.gen_bool(0.5) { rng.gen_range(0.001..0.15) } else { 0.0 },
            dup_p: if rng.gen_bool(0.4) { rng.gen_range(0.001..0.1) } else { 0.0 },
            reorder_p: if rng.gen_bool(0.4) { rng.gen_range(0.001..0.1) } else { 0.0 },
            reorder_max_us: rng.gen_range(1_000..=50_000),
        };
        let kinds: Vec<PartitionKind> =
            [PartitionKind::Isolate, PartitionKind::Split, PartitionKind::Asymmetric, PartitionKind::Link]
                .into_iter()
                .filter(|_| rng.gen_bool(0.6))
                .collect();
        let partitions = (rng.gen_bool(0.6) && !kinds.is_empty()).then(|| {
            let min_len_ms = [50, 300, 1_000][rng.gen_range(0..3)];
            PartitionPlan {
                kinds,
                mean_gap_ms: rng.gen_range(200..=2_000),
                min_len_ms,
                max_len_ms: min_len_ms + rng.gen_range(100..=3_000),
            }
        });
        let crashes = rng.gen_bool(0.6).then(|| CrashPlan {
            mean_gap_ms: rng.gen_range(200..=2_000),
            max_down_ms: rng.gen_range(50..=3_000),
            unsynced_survive_p: rng.gen_range(0.0..1.0),
            torn_p: rng.gen_range(0.0..0.8),
            // Drawn with the bank, below, so the draws above stay as they were.
            txn_moment_p: 0.0,
        });
        let pauses = rng
            .gen_bool(0.4)
            .then(|| PausePlan { mean_gap_ms: rng.gen_range(300..=3_000), max_len_ms: rng.gen_range(20..=1_000) });
        // A minority of nodes may ever see a corrupt record: one of three,
        // up to two of five. It takes a crash to find one.
        let corruption = (crashes.is_some() && rng.gen_bool(0.5)).then(|| {
            let count = if n == 5 { rng.gen_range(1..=2) } else { 1 };
            CorruptPlan { nodes: pick(rng, &nodes, count), p: rng.gen_range(0.2..=1.0) }
        });
        let fsync_min_us = rng.gen_range(50..=500);
        let fsync_max_us = [1_000, 5_000, 20_000, 60_000][rng.gen_range(0..4)];
        let clients = rng.gen_range(2..=5);
        // Drawn last, so that everything above is what it was before the
        // bank existed.
        let bank = rng.gen_bool(0.85).then(|| BankPlan {
            accounts: rng.gen_range(2..=8),
            initial: rng.gen_range(10..=1_000),
            transfers: rng.gen_range(1..=2),
            auditors: rng.gen_range(0..=1),
            abandon_p: if rng.gen_bool(0.5) { rng.gen_range(0.01..0.1) } else { 0.0 },
            account_read_p: rng.gen_range(0.0..0.5),
            think_max_ms: [10, 30, 60][rng.gen_range(0..3)],
        });
        let mut crashes = crashes;
        if let Some(c) = crashes.as_mut() {
            if bank.is_some() && rng.gen_bool(0.5) {
                c.txn_moment_p = rng.gen_range(0.1..0.6);
            }
        }
        // Drawn after everything else, so that the draws above stay as
        // they were before steps cost time.
        let steps = StepCostPlan {
            per_input_us: rng.gen_range(2..=30),
            per_effect_us: rng.gen_range(1..=10),
            stall_p: if rng.gen_bool(0.5) { rng.gen_range(0.0005..0.005) } else { 0.0 },
            stall_max_ms: [30, 100, 300][rng.gen_range(0..3)],
        };
        let isolation = rng.gen_bool(0.3).then(|| IsolationPlan { len_ms: rng.gen_range(1_500..=4_000) });
        let checkpoint_every_records = rng.gen_bool(0.5).then(|| [20, 100, 1_000][rng.gen_range(0..3)]);
        let snapshots = rng.gen_bool(0.4).then(|| SnapshotPlan {
            // Not fewer: the checkers see committed entries in the logs
            // after each step, and a step that applied and dropped more
            // than the log keeps hid them (runs with 2 failed for that).
            log_retain_entries: [20, 100][rng.gen_range(0..2)],
            // Not smaller: a stream of 16-byte chunks, resent after each
            // restart, ran past the simulator's bound on events.
            chunk_bytes: [256, 4096, 1 << 20][rng.gen_range(0..3)],
            bytes_per_sec: [0, 0, 50_000, 500_000][rng.gen_range(0..4)],
        });
        // The coverage knobs, drawn after everything else.
        let pipelined = if rng.gen_bool(0.35) { rng.gen_range(1..=2) } else { 0 };
        let pipeline_depth = rng.gen_range(4..=32);
        let total = clients + pipelined + bank.as_ref().map_or(0, |b| b.transfers + b.auditors);
        let max_sessions = rng.gen_bool(0.35).then(|| rng.gen_range((total / 2).max(1)..total));
        let read_levels = rng.gen_bool(0.5);
        Plan {
            nodes,
            groups,
            clients,
            readers: rng.gen_range(0..=(clients - 1).min(2)),
            keys: rng.gen_range(1..=4),
            mix,
            think_max_ms: [0, 2, 10, 30][rng.gen_range(0..4)],
            fault_ms: rng.gen_range(3_000..=10_000),
            quiet_ms: QUIET_MS,
            net,
            client_delay_max_us: rng.gen_range(200..=3_000),
            reply_loss_p: if rng.gen_bool(0.4) { rng.gen_range(0.005..0.1) } else { 0.0 },
            partitions,
            crashes,
            pauses,
            corruption,
            drift_ppm_max: [0, 1_000, 10_000, 40_000][rng.gen_range(0..4)],
            fsync_min_us,
            fsync_max_us,
            bank,
            checkpoint_every_records,
            steps,
            isolation,
            snapshots,
            pipelined,
            pipeline_depth,
            max_sessions,
            read_levels,
            handovers: None,
            moves: None,
            membership: None,
        }
    }

    /// One line naming the faults this seed switched on.
    pub fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{} nodes, {} groups {:?}, {} clients ({} read-only) on {} keys",
            self.nodes.len(),
            self.groups.len(),
            self.groups
                .iter()
                .map(|g| format!(
                    "{}{:?}",
                    if g.voting {
                        "voting "
                    } else if g.active {
                        "active "
                    } else {
                        ""
                    },
                    g.placement
                ))
                .collect::<Vec<_>>(),
            self.clients,
            self.readers,
            self.keys
        )];
        let n = &self.net;
        parts.push(format!(
            "delay {}..{}us tail {:.3} drop {:.3} dup {:.3} reorder {:.3}",
            n.delay_min_us, n.delay_max_us, n.tail_p, n.drop_p, n.dup_p, n.reorder_p
        ));
        if let Some(p) = &self.partitions {
            parts.push(format!(
                "partitions {:?} every ~{}ms for {}..{}ms",
                p.kinds, p.mean_gap_ms, p.min_len_ms, p.max_len_ms
            ));
        }
        if let Some(c) = &self.crashes {
            parts.push(format!(
                "crashes every ~{}ms down up to {}ms torn {:.2} at 2pc moments {:.2}",
                c.mean_gap_ms, c.max_down_ms, c.torn_p, c.txn_moment_p
            ));
        }
        if let Some(p) = &self.pauses {
            parts.push(format!("pauses every ~{}ms up to {}ms", p.mean_gap_ms, p.max_len_ms));
        }
        if let Some(c) = &self.corruption {
            parts.push(format!("corruption on {:?} p {:.2}", c.nodes, c.p));
        }
        if let Some(b) = &self.bank {
            parts.push(format!(
                "bank of {} accounts at {} with {} transfer clients (abandon {:.2}) and {} auditors thinking up to {}ms, \
                 account reads {:.2}",
                b.accounts, b.initial, b.transfers, b.abandon_p, b.auditors, b.think_max_ms, b.account_read_p
            ));
        }
        if let Some(n) = self.checkpoint_every_records {
            parts.push(format!("checkpoints every {n} records"));
        }
        let st = &self.steps;
        parts.push(format!(
            "steps {}us/input {}us/effect, stalls {:.4} up to {}ms",
            st.per_input_us, st.per_effect_us, st.stall_p, st.stall_max_ms
        ));
        if let Some(i) = &self.isolation {
            parts.push(format!("a primary isolated for {}ms first", i.len_ms));
        }
        if let Some(p) = &self.snapshots {
            parts.push(format!(
                "logs keep {} entries, snapshots in chunks of {} bytes at {} bytes/s",
                p.log_retain_entries, p.chunk_bytes, p.bytes_per_sec
            ));
        }
        if self.read_levels {
            parts.push("reads at every consistency, from any member".to_string());
        }
        if self.pipelined > 0 {
            parts.push(format!("{} pipelined clients with {} requests in flight", self.pipelined, self.pipeline_depth));
        }
        if let Some(m) = &self.moves {
            parts.push(format!("replica moves every ~{}ms", m.mean_gap_ms));
        }
        if let Some(m) = &self.membership {
            parts.push(format!(
                "spare nodes {:?}, nodes added or removed (at most {}) every ~{}ms",
                m.spares, m.max_removals, m.mean_gap_ms
            ));
        }
        if let Some(h) = &self.handovers {
            parts.push(format!("leader hand-overs every ~{}ms", h.mean_gap_ms));
        }
        if let Some(n) = self.max_sessions {
            parts.push(format!("session tables hold {n}"));
        }
        parts.push(format!(
            "drift {}ppm fsync {}..{}us reply loss {:.3} faults {}ms",
            self.drift_ppm_max, self.fsync_min_us, self.fsync_max_us, self.reply_loss_p, self.fault_ms
        ));
        parts.join("; ")
    }
}

/// `count` distinct elements of `from`, in random order.
pub fn pick(rng: &mut ChaCha8Rng, from: &[NodeId], count: usize) -> Vec<NodeId> {
    let mut all = from.to_vec();
    for i in (1..all.len()).rev() {
        all.swap(i, rng.gen_range(0..=i));
    }
    all.truncate(count);
    all
}

/// A random gap with the given mean, at least 1 ms. Uniform rather than
/// exponential: `f64::ln` may round differently on another platform, and a
/// seed must replay the same everywhere.
pub fn gap_ms(rng: &mut ChaCha8Rng, mean_ms: u64) -> u64 {
    rng.gen_range(1..=mean_ms.max(1) * 2)
}
