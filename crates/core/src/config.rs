//! The config store: CASPaxos registers (Rystsov, 2018) holding the cluster
//! map and one view per group.
//!
//! It owns the acceptor state of this node and the proposals this node runs.
//! An acceptor never answers before its new state is durable (its replies go
//! through `Outbox::send_durable`). A proposal applies its change to the
//! newest accepted value a majority reports, so competing changes to the same
//! register serialise and, for views, exactly one proposal per epoch wins.

use crate::bugs::Bugs;
use crate::io::{Lsn, Outbox};
use crate::limits::{MAX_CONFIG_MEMBERS, MAX_CONFIG_QUEUE, MAX_NODES};
use crate::types::{ClusterMap, Epoch, GroupId, Millis, NodeAddrs, NodeId, View};
use crate::wire::{Ballot, ConfigValue, PeerBody, WalRecord};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

pub const CLUSTER_KEY: &str = "cluster";

pub fn view_key(group: GroupId) -> String {
    format!("group/{group}")
}

/// A change to one register: a pure function of its current value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Leaves the value as it is (a linearizable read).
    Read,
    /// Sets the cluster map if the register is empty.
    InitCluster(ClusterMap),
    /// Sets a group's first view if the register is empty.
    InitView(View),
    /// Replaces the view only if its epoch is still `expect_epoch`: this is
    /// the compare-and-set every view change goes through.
    ReplaceView { expect_epoch: Epoch, view: View },
    /// Adds a node to the cluster map (`pactdb admin add-node`); it also
    /// joins the config store if that has fewer than `MAX_CONFIG_MEMBERS`
    /// members and its last change settled. Adding a node already in the
    /// map at the same addresses changes nothing and succeeds (a retry).
    AddNode { id: NodeId, addrs: NodeAddrs },
    /// Removes a node from the cluster map (and from the config store's
    /// members: refused while the last change of them has not settled).
    /// The node must hold no replica any more; the proposer checks that
    /// against the views before proposing.
    RemoveNode { id: NodeId },
    /// Marks the change of config members made at map `version` settled:
    /// every register was rewritten through the new members.
    SettleConfig { version: u64 },
    /// Adds the lowest-numbered node that is not a config member to the
    /// config store, if it has fewer than `MAX_CONFIG_MEMBERS` and the map
    /// is still at `version` (settled): after a member was removed.
    FillConfig { version: u64 },
}

/// A map one version on from `m`, changed by `f`.
fn next_map(m: &ClusterMap, f: impl FnOnce(&mut ClusterMap)) -> Option<ConfigValue> {
    let mut next = m.clone();
    f(&mut next);
    next.version = m.version + 1;
    Some(ConfigValue::Cluster(next))
}

impl Change {
    /// Returns the new value and whether the change took effect.
    pub fn apply(&self, current: Option<&ConfigValue>) -> (Option<ConfigValue>, bool) {
        self.apply_with(current, Bugs::default())
    }

    /// `apply`, with the simulator's injected bugs (`Proposer::bugs`).
    fn apply_with(&self, current: Option<&ConfigValue>, bugs: Bugs) -> (Option<ConfigValue>, bool) {
        match (self, current) {
            (Change::Read, cur) => (cur.cloned(), true),
            (Change::InitCluster(m), None) => (Some(ConfigValue::Cluster(m.clone())), true),
            (Change::InitCluster(m), Some(cur)) => (Some(cur.clone()), *cur == ConfigValue::Cluster(m.clone())),
            (Change::InitView(v), None) => (Some(ConfigValue::View(v.clone())), true),
            (Change::InitView(_), Some(cur)) => (Some(cur.clone()), false),
            (Change::ReplaceView { expect_epoch, view }, Some(ConfigValue::View(cur)))
                if cur.epoch == *expect_epoch =>
            {
                assert_eq!(view.epoch, expect_epoch + 1, "a view change moves exactly one epoch");
                (Some(ConfigValue::View(view.clone())), true)
            }
            (Change::ReplaceView { .. }, cur) => (cur.cloned(), false),
            (Change::AddNode { id, addrs }, Some(ConfigValue::Cluster(m))) => {
                let unchanged = Some(ConfigValue::Cluster(m.clone()));
                match m.nodes.get(id) {
                    Some(a) => (unchanged, a == addrs),
                    None if m.nodes.len() >= MAX_NODES => (unchanged, false),
                    None if m.nodes.values().any(|a| a.peer == addrs.peer || a.client == addrs.client) => {
                        (unchanged, false)
                    }
                    None => {
                        let settled = m.config_settled || bugs.config_two_members_at_once;
                        let joins_config = settled && m.config_members.len() < MAX_CONFIG_MEMBERS;
                        let next = next_map(m, |n| {
                            n.nodes.insert(*id, addrs.clone());
                            if joins_config {
                                n.config_members.push(*id);
                                n.config_members.sort_unstable();
                                n.config_settled = false;
                            }
                        });
                        (next, true)
                    }
                }
            }
            (Change::RemoveNode { id }, Some(ConfigValue::Cluster(m))) => {
                let unchanged = Some(ConfigValue::Cluster(m.clone()));
                let member = m.config_members.contains(id);
                if !m.nodes.contains_key(id) {
                    // Already removed (a retry), or never there.
                    (unchanged, true)
                } else if m.nodes.len() == 1 || (member && (!m.config_settled || m.config_members.len() == 1)) {
                    (unchanged, false)
                } else {
                    let next = next_map(m, |n| {
                        n.nodes.remove(id);
                        for g in &mut n.groups {
                            g.placement.retain(|p| p != id);
                        }
                        if member {
                            n.config_members.retain(|c| c != id);
                            n.config_settled = false;
                        }
                    });
                    (next, true)
                }
            }
            // Only at exactly the version rewritten: a map that moved on since
            // may have other members (rewritten by nobody yet).
            (Change::SettleConfig { version }, Some(ConfigValue::Cluster(m))) => {
                if m.version == *version && !m.config_settled {
                    (next_map(m, |n| n.config_settled = true), true)
                } else {
                    (Some(ConfigValue::Cluster(m.clone())), false)
                }
            }
            (Change::FillConfig { version }, Some(ConfigValue::Cluster(m))) => {
                let spare = m.nodes.keys().copied().find(|n| !m.config_members.contains(n));
                match spare {
                    Some(n)
                        if m.version == *version && m.config_settled && m.config_members.len() < MAX_CONFIG_MEMBERS =>
                    {
                        let next = next_map(m, |c| {
                            c.config_members.push(n);
                            c.config_members.sort_unstable();
                            c.config_settled = false;
                        });
                        (next, true)
                    }
                    _ => (Some(ConfigValue::Cluster(m.clone())), false),
                }
            }
            (Change::AddNode { .. } | Change::RemoveNode { .. } | Change::SettleConfig { .. }, cur)
            | (Change::FillConfig { .. }, cur) => (cur.cloned(), false),
        }
    }
}

/// Who asked for a change, so the node can route the outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    Replica(GroupId),
    Bootstrap {
        token: u64,
    },
    Refresh,
    /// An operator's change of the cluster map (`AddNode`, `RemoveNode`).
    Admin {
        token: u64,
    },
    /// A rewrite of a register through the config members of map
    /// `version`, or the change that marks them settled (see
    /// `Node::settle_config`).
    Settle {
        version: u64,
    },
}

/// The outcome of a proposal. `value` is the register's value after it (when
/// the proposal completed); `applied` says whether the change took effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigOutcome {
    pub key: String,
    pub requester: Requester,
    pub change: Change,
    pub applied: bool,
    pub value: Option<ConfigValue>,
    /// False when the proposal gave up (no majority answered in time).
    pub completed: bool,
    /// The ballot of the proposal's last round: for a completed proposal
    /// that wrote `value`, a majority of acceptors accepted it at this ballot.
    pub ballot: Ballot,
}

#[derive(Clone, Debug, Default)]
struct Register {
    promised: Ballot,
    accepted: Option<(Ballot, ConfigValue)>,
}

/// Acceptor state for every register.
#[derive(Debug, Default)]
pub struct Acceptor {
    registers: BTreeMap<String, Register>,
}

impl Acceptor {
    /// Rebuilds state from a WAL record during recovery.
    pub fn replay(&mut self, key: String, promised: Ballot, accepted: Option<(Ballot, ConfigValue)>) {
        self.registers.insert(key, Register { promised, accepted });
    }

    /// The WAL records that rebuild the registers `which` selects, for a
    /// checkpoint. Every change of a register is persisted in the step that
    /// makes it, so between steps this is exactly what replay would give.
    pub fn checkpoint_records(&self, which: impl Fn(&str) -> bool) -> Vec<WalRecord> {
        self.registers
            .iter()
            .filter(|(k, _)| which(k))
            .map(|(k, r)| WalRecord::Acceptor { key: k.clone(), promised: r.promised, accepted: r.accepted.clone() })
            .collect()
    }

    /// The version of the cluster map this acceptor accepted last (0: none):
    /// see `Node::admits_round`.
    pub fn cluster_version(&self) -> u64 {
        match self.registers.get(CLUSTER_KEY).and_then(|r| r.accepted.as_ref()) {
            Some((_, ConfigValue::Cluster(m))) => m.version,
            _ => 0,
        }
    }

    pub fn on_prepare(&mut self, out: &mut Outbox, from: NodeId, key: String, ballot: Ballot) {
        let reg = self.registers.entry(key.clone()).or_default();
        if ballot < reg.promised {
            out.send(from, PeerBody::Reject { key, ballot, promised: reg.promised });
            return;
        }
        if ballot > reg.promised {
            reg.promised = ballot;
            out.persist(WalRecord::Acceptor { key: key.clone(), promised: ballot, accepted: reg.accepted.clone() });
        }
        let accepted = reg.accepted.clone();
        out.send_durable(from, PeerBody::Promise { key, ballot, accepted });
    }

    /// Relearns a register after a WAL cut. An acceptor whose WAL was cut may
    /// have forgotten promises and accepts, so it stays silent for every
    /// register until it relearns it; making the silence last for good (as a
    /// durable cut does) would let ordinary torn tails, which the WAL cannot
    /// tell from corruption, silence a majority over time. `value` was just
    /// accepted at `ballot` by a majority of other acceptors, in a proposal
    /// of this node that completed while it stayed silent. So `value`
    /// reflects every value chosen before, and `ballot` exceeds every promise
    /// this acceptor forgot that a proposer could still use: such a promise
    /// only counts with a majority, which shares an acceptor with that round
    /// (other than this one), and that acceptor would have refused `ballot`.
    /// Adopting it, keeping any newer state still held, is therefore as safe
    /// as having taken part in that round.
    pub fn relearn(&mut self, out: &mut Outbox, key: String, ballot: Ballot, value: ConfigValue) {
        let reg = self.registers.entry(key.clone()).or_default();
        reg.promised = reg.promised.max(ballot);
        if reg.accepted.as_ref().is_none_or(|(b, _)| *b < ballot) {
            reg.accepted = Some((ballot, value));
        }
        out.persist(WalRecord::Acceptor { key, promised: reg.promised, accepted: reg.accepted.clone() });
    }

    pub fn on_accept(&mut self, out: &mut Outbox, from: NodeId, key: String, ballot: Ballot, value: ConfigValue) {
        let reg = self.registers.entry(key.clone()).or_default();
        if ballot < reg.promised {
            out.send(from, PeerBody::Reject { key, ballot, promised: reg.promised });
            return;
        }
        reg.promised = ballot;
        reg.accepted = Some((ballot, value));
        out.persist(WalRecord::Acceptor { key: key.clone(), promised: ballot, accepted: reg.accepted.clone() });
        out.send_durable(from, PeerBody::Accepted { key, ballot });
    }
}

#[derive(Debug)]
struct Pending {
    change: Change,
    requester: Requester,
    deadline_ms: Millis,
    /// Rounds started so far; each one waits twice as long as the last.
    rounds: u32,
    /// The value an earlier round of this proposal sent with its change
    /// applied, if one did.
    sent_applied: Option<ConfigValue>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting `retry_at_ms` before a new round (after a conflict or timeout).
    Backoff {
        retry_at_ms: Millis,
    },
    Prepare {
        promises: BTreeMap<NodeId, Option<(Ballot, ConfigValue)>>,
    },
    Accept {
        value: Option<ConfigValue>,
        applied: bool,
        accepted: BTreeSet<NodeId>,
    },
}

#[derive(Debug)]
struct Running {
    op: Pending,
    ballot: Ballot,
    phase: Phase,
    round_deadline_ms: Millis,
}

/// Timing of proposals.
#[derive(Clone, Debug)]
pub struct ProposerTiming {
    /// A round that has not reached a majority by then is retried.
    pub round_ms: Millis,
    /// A proposal gives up after this long.
    pub op_timeout_ms: Millis,
    /// Upper bound of the random back-off after a conflict.
    pub backoff_ms: Millis,
}

/// Ballot rounds a proposer reserves with one durable record.
const ROUND_RESERVATION: u64 = 4096;

/// Runs this node's proposals, one at a time per register (later ones queue).
#[derive(Debug)]
pub struct Proposer {
    acceptors: Vec<NodeId>,
    /// The version of the cluster map `acceptors` come from (0: from the
    /// node's flags), sent with every round.
    map_version: u64,
    timing: ProposerTiming,
    highest_round_seen: u64,
    /// Rounds up to this are reserved by a `ProposerRounds` record, which
    /// becomes durable at `reserved_lsn`.
    reserved_upto: u64,
    reserved_lsn: Lsn,
    running: BTreeMap<String, Running>,
    queued: BTreeMap<String, VecDeque<Pending>>,
    /// Only the simulator sets any (`Node::with_bugs`).
    pub bugs: Bugs,
}

impl Proposer {
    pub fn new(acceptors: Vec<NodeId>, timing: ProposerTiming) -> Proposer {
        assert!(!acceptors.is_empty(), "the config store needs acceptors");
        Proposer {
            acceptors,
            map_version: 0,
            timing,
            highest_round_seen: 0,
            reserved_upto: 0,
            reserved_lsn: 0,
            running: BTreeMap::new(),
            queued: BTreeMap::new(),
            bugs: Bugs::default(),
        }
    }

    /// The acceptors changed (the node learned a cluster map). Later
    /// messages of rounds already running go to the new set, and count its
    /// majority: the sets differ by at most one member, so any majority of
    /// one shares an acceptor with any majority of the other.
    pub fn set_acceptors(&mut self, acceptors: Vec<NodeId>, map_version: u64) {
        if !acceptors.is_empty() {
            self.acceptors = acceptors;
            self.map_version = map_version;
        }
    }

    pub fn map_version(&self) -> u64 {
        self.map_version
    }

    /// Recovery: an earlier incarnation reserved rounds up to `upto`.
    /// The ballot rounds reserved durably (`WalRecord::ProposerRounds`).
    pub fn reserved_rounds(&self) -> u64 {
        self.reserved_upto
    }

    pub fn recover_rounds(&mut self, upto: u64) {
        self.highest_round_seen = self.highest_round_seen.max(upto);
        self.reserved_upto = self.reserved_upto.max(upto);
    }

    fn majority(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    /// Whether a proposal for `key` is running or queued.
    pub fn is_busy(&self, key: &str) -> bool {
        self.running.contains_key(key) || self.queued.get(key).is_some_and(|q| !q.is_empty())
    }

    /// Starts (or queues) a change. Returns false if the queue is full.
    pub fn propose(&mut self, out: &mut Outbox, key: String, change: Change, requester: Requester) -> bool {
        let deadline_ms = out.now() + self.timing.op_timeout_ms;
        let op = Pending { change, requester, deadline_ms, rounds: 0, sent_applied: None };
        // A change does not wait behind a refresh read of the same register:
        // the read is dropped (nobody waits on it, and the change's outcome
        // carries the register's value too). Queued behind it, a view change
        // waited for as long as the read lost rounds to other nodes' reads.
        let refresh_read = |r: &Running| r.op.change == Change::Read && r.op.requester == Requester::Refresh;
        if op.change != Change::Read && self.running.get(&key).is_some_and(refresh_read) {
            self.running.remove(&key);
        }
        if self.running.contains_key(&key) {
            let q = self.queued.entry(key).or_default();
            if q.len() >= MAX_CONFIG_QUEUE {
                return false;
            }
            q.push_back(op);
            return true;
        }
        self.start_round(out, key, op);
        true
    }

    /// How long a phase of the op's current round may take. It doubles with
    /// every retry (up to 16 rounds' worth): with a fixed length, a cluster
    /// whose round trip plus fsync exceeds `round_ms` abandons every round
    /// just before it would finish, and each retry's higher ballot preempts
    /// the late accepts of the last one (found by the simulator: bootstrap
    /// never finished with 30 ms links and 60 ms fsyncs).
    fn phase_ms(round_ms: Millis, op: &Pending) -> Millis {
        round_ms << op.rounds.saturating_sub(1).min(4)
    }

    /// A random back-off before the op's next round, growing with the
    /// rounds it already lost: a fixed window much shorter than a round let
    /// every node's refresh read keep preempting a view change on slow links
    /// (found by the simulator: a group stayed without a primary for seconds).
    fn backoff(timing: &ProposerTiming, op: &Pending, rng: &mut ChaCha8Rng) -> Millis {
        let window = timing.backoff_ms.max(1) << op.rounds.min(5);
        rng.gen_range(1..=window)
    }

    fn start_round(&mut self, out: &mut Outbox, key: String, mut op: Pending) {
        op.rounds = op.rounds.saturating_add(1);
        self.highest_round_seen += 1;
        let ballot = Ballot { round: self.highest_round_seen, node: out.me() };
        // A ballot must never be used twice, not even by a later incarnation
        // of this node, whose round counter starts over: acceptors would take
        // the old round's accepted value (and late `Accepted`s) for the new
        // round's, and a stale value would outrank a chosen one (found by the
        // simulator: a restarted node reused its ballot and wrote an old view
        // back over a newer one, so one epoch got two views). Rounds are
        // therefore reserved durably, in blocks, before they are used.
        if ballot.round > self.reserved_upto {
            self.reserved_upto = ballot.round + ROUND_RESERVATION;
            self.reserved_lsn = out.persist(WalRecord::ProposerRounds { upto: self.reserved_upto });
        }
        let reserved = out.durable_lsn() >= self.reserved_lsn;
        for &a in &self.acceptors {
            let prepare = PeerBody::Prepare { key: key.clone(), ballot, map_version: self.map_version };
            if reserved {
                out.send(a, prepare);
            } else {
                out.send_durable(a, prepare);
            }
        }
        let round_deadline_ms = out.now() + Self::phase_ms(self.timing.round_ms, &op);
        self.running.insert(
            key,
            Running { op, ballot, phase: Phase::Prepare { promises: BTreeMap::new() }, round_deadline_ms },
        );
    }

    pub fn on_promise(
        &mut self,
        out: &mut Outbox,
        from: NodeId,
        key: String,
        ballot: Ballot,
        accepted: Option<(Ballot, ConfigValue)>,
    ) {
        let majority = self.majority();
        let Some(run) = self.running.get_mut(&key) else { return };
        if run.ballot != ballot {
            return;
        }
        let Phase::Prepare { promises } = &mut run.phase else { return };
        promises.insert(from, accepted);
        if promises.len() < majority {
            return;
        }
        // The newest accepted value among a majority is the register's value.
        let current = promises.values().flatten().max_by_key(|(b, _)| *b).map(|(_, v)| v.clone());
        let (value, applied) = match (&run.op.sent_applied, current) {
            // The value an earlier round of this very proposal sent with its
            // change applied, read back after that round lost its majority
            // of acks to a competing prepare (whose proposer wrote the same
            // value back at its own ballot): the change took effect, once.
            // Judged again, a view change would see its own epoch and report
            // "not applied", and a backup that won, not knowing it, moved to
            // yet another epoch (found by the simulator, passive seed 351 and
            // mixed seed 238: a cut-off primary's backups took two or three
            // view changes). Nobody else proposes this value: a view names
            // its proposer as leader, and one this node proposed in an
            // earlier incarnation cannot have been chosen before this
            // proposal read the register without it, so it never served.
            (Some(mine), Some(cur)) if *mine == cur => (Some(cur), true),
            (_, current) => run.op.change.apply_with(current.as_ref(), self.bugs),
        };
        match &value {
            Some(v) => {
                if applied {
                    run.op.sent_applied = Some(v.clone());
                }
                for &a in &self.acceptors {
                    let map_version = self.map_version;
                    out.send(a, PeerBody::Accept { key: key.clone(), ballot, value: v.clone(), map_version });
                }
                run.phase = Phase::Accept { value, applied, accepted: BTreeSet::new() };
                run.round_deadline_ms = out.now() + Self::phase_ms(self.timing.round_ms, &run.op);
            }
            None => {
                // An empty register read stays empty: nothing to write back.
                let run = self.running.remove(&key).expect("running");
                self.finish(out, key, run.op, run.ballot, Some((None, applied)));
            }
        }
    }

    /// Returns the outcome when this accept completes the proposal.
    pub fn on_accepted(
        &mut self,
        out: &mut Outbox,
        from: NodeId,
        key: String,
        ballot: Ballot,
    ) -> Option<ConfigOutcome> {
        let majority = self.majority();
        let run = self.running.get_mut(&key)?;
        if run.ballot != ballot {
            return None;
        }
        let Phase::Accept { accepted, .. } = &mut run.phase else { return None };
        accepted.insert(from);
        if accepted.len() < majority {
            return None;
        }
        let run = self.running.remove(&key).expect("running");
        let Phase::Accept { value, applied, .. } = run.phase else { unreachable!("checked above") };
        Some(self.finish(out, key, run.op, run.ballot, Some((value, applied))))
    }

    pub fn on_reject(&mut self, out: &mut Outbox, rng: &mut ChaCha8Rng, key: String, ballot: Ballot, promised: Ballot) {
        self.highest_round_seen = self.highest_round_seen.max(promised.round);
        let Some(run) = self.running.get_mut(&key) else { return };
        if run.ballot != ballot || matches!(run.phase, Phase::Backoff { .. }) {
            return;
        }
        // Back off a random time so competing proposers stop colliding.
        let retry_at_ms = out.now() + Self::backoff(&self.timing, &run.op, rng);
        run.phase = Phase::Backoff { retry_at_ms };
    }

    /// Ends a proposal. `result` is the register's value and whether the
    /// change took effect, or `None` if the proposal gave up.
    fn finish(
        &mut self,
        out: &mut Outbox,
        key: String,
        op: Pending,
        ballot: Ballot,
        result: Option<(Option<ConfigValue>, bool)>,
    ) -> ConfigOutcome {
        let completed = result.is_some();
        let (value, applied) = result.unwrap_or((None, false));
        let outcome = ConfigOutcome {
            key: key.clone(),
            requester: op.requester,
            change: op.change,
            applied,
            value,
            completed,
            ballot,
        };
        if let Some(next) = self.queued.get_mut(&key).and_then(|q| q.pop_front()) {
            self.start_round(out, key, next);
        }
        outcome
    }

    /// Retries rounds that stalled and gives up on proposals past their
    /// deadline. Returns the proposals that gave up.
    pub fn on_tick(&mut self, out: &mut Outbox, rng: &mut ChaCha8Rng) -> Vec<ConfigOutcome> {
        let now = out.now();
        let mut gave_up = Vec::new();
        let keys: Vec<String> = self.running.keys().cloned().collect();
        for key in keys {
            let run = self.running.get_mut(&key).expect("listed");
            if now >= run.op.deadline_ms {
                let run = self.running.remove(&key).expect("listed");
                gave_up.push(self.finish(out, key, run.op, run.ballot, None));
                continue;
            }
            let retry = match run.phase {
                Phase::Backoff { retry_at_ms } => now >= retry_at_ms,
                _ if now >= run.round_deadline_ms => {
                    run.phase = Phase::Backoff { retry_at_ms: now + Self::backoff(&self.timing, &run.op, rng) };
                    false
                }
                _ => false,
            };
            if retry {
                let run = self.running.remove(&key).expect("listed");
                self.start_round(out, key, run.op);
            }
        }
        gave_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::Effect;
    use crate::types::Mode;
    use rand::SeedableRng;

    fn view(epoch: Epoch, leader: NodeId) -> View {
        View {
            group: 0,
            epoch,
            mode: Mode::Passive,
            leader,
            members: vec![1, 2, 3],
            min_members: 1,
            placement: vec![1, 2, 3],
        }
    }

    #[test]
    fn acceptor_promise_waits_for_fsync() {
        let mut acc = Acceptor::default();
        let mut out = Outbox::new(1, 1);
        acc.on_prepare(&mut out, 2, "k".into(), Ballot { round: 1, node: 2 });
        let effects = out.take_effects();
        assert!(matches!(&effects[..], [Effect::Persist { lsn: 1, .. }]), "{effects:?}");
        out.on_persisted(1);
        let effects = out.take_effects();
        assert!(
            matches!(&effects[..], [Effect::Send { to: 2, msg }] if matches!(msg.body, PeerBody::Promise { .. })),
            "{effects:?}"
        );
    }

    #[test]
    fn acceptor_rejects_lower_ballots() {
        let mut acc = Acceptor::default();
        let mut out = Outbox::new(1, 1);
        acc.on_prepare(&mut out, 2, "k".into(), Ballot { round: 5, node: 2 });
        out.on_persisted(1);
        out.take_effects();
        acc.on_accept(&mut out, 3, "k".into(), Ballot { round: 4, node: 3 }, ConfigValue::View(view(1, 1)));
        let effects = out.take_effects();
        assert!(
            matches!(&effects[..], [Effect::Send { to: 3, msg }] if matches!(msg.body, PeerBody::Reject { promised: Ballot { round: 5, node: 2 }, .. })),
            "{effects:?}"
        );
    }

    fn map_of(nodes: &[NodeId]) -> ClusterMap {
        let addrs = |n: NodeId| NodeAddrs { peer: format!("p{n}"), client: format!("c{n}") };
        ClusterMap::new(nodes.iter().map(|&n| (n, addrs(n))).collect(), vec![])
    }

    fn applied(change: Change, map: &ClusterMap) -> (ClusterMap, bool) {
        match change.apply(Some(&ConfigValue::Cluster(map.clone()))) {
            (Some(ConfigValue::Cluster(m)), ok) => (m, ok),
            other => panic!("not a map: {other:?}"),
        }
    }

    /// The config store's members change one node at a time, each change
    /// settled before the next: a node added to an unsettled store is a
    /// node of the map but not a member until `FillConfig` takes it in.
    #[test]
    fn config_members_change_one_at_a_time_and_only_when_settled() {
        let m1 = map_of(&[1, 2, 3]);
        let add =
            |id: NodeId| Change::AddNode { id, addrs: NodeAddrs { peer: format!("p{id}"), client: format!("c{id}") } };
        let (m2, ok) = applied(add(4), &m1);
        assert!(ok);
        assert_eq!((m2.version, m2.config_members.clone(), m2.config_settled), (2, vec![1, 2, 3, 4], false));
        // Unsettled: node 5 joins the map only.
        let (m3, ok) = applied(add(5), &m2);
        assert!(ok);
        assert_eq!((m3.version, m3.config_members.clone(), m3.config_settled), (3, vec![1, 2, 3, 4], false));
        // Removing a member waits for the settle; a stale settle applies nothing.
        assert_eq!(applied(Change::RemoveNode { id: 1 }, &m3), (m3.clone(), false));
        assert_eq!(applied(Change::SettleConfig { version: 2 }, &m3), (m3.clone(), false));
        let (m4, ok) = applied(Change::SettleConfig { version: 3 }, &m3);
        assert!(ok);
        assert_eq!((m4.version, m4.config_settled), (4, true));
        let (m5, ok) = applied(Change::FillConfig { version: 4 }, &m4);
        assert!(ok);
        assert_eq!((m5.config_members.clone(), m5.config_settled), (vec![1, 2, 3, 4, 5], false));
        let m6 = applied(Change::SettleConfig { version: 5 }, &m5).0;
        let (m7, ok) = applied(Change::RemoveNode { id: 1 }, &m6);
        assert!(ok);
        assert_eq!((m7.nodes.len(), m7.config_members.clone(), m7.config_settled), (4, vec![2, 3, 4, 5], false));
        // The same node again at the same addresses: a retry, nothing changes.
        assert_eq!(applied(add(4), &m7), (m7.clone(), true));
        // Another node at node 4's addresses is refused.
        let clash = Change::AddNode { id: 9, addrs: NodeAddrs { peer: "p4".into(), client: "c9".into() } };
        assert_eq!(applied(clash, &m7), (m7.clone(), false));
    }

    #[test]
    fn replace_view_is_a_compare_and_set() {
        let cur = ConfigValue::View(view(4, 1));
        let win = Change::ReplaceView { expect_epoch: 4, view: view(5, 2) };
        assert_eq!(win.apply(Some(&cur)), (Some(ConfigValue::View(view(5, 2))), true));
        let lose = Change::ReplaceView { expect_epoch: 3, view: view(4, 3) };
        assert_eq!(lose.apply(Some(&cur)), (Some(cur.clone()), false));
    }

    /// What a proposer sent, to others and to its own acceptor.
    fn sent_bodies(out: &mut Outbox) -> Vec<PeerBody> {
        let mut bodies: Vec<PeerBody> = out
            .take_effects()
            .into_iter()
            .filter_map(|e| match e {
                Effect::Send { msg, .. } => Some(msg.body),
                _ => None,
            })
            .collect();
        bodies.extend(out.to_self.drain(..).map(|m| m.body));
        bodies
    }

    /// A view change whose accepts were preempted, and whose value a
    /// competing proposer then wrote back at its own ballot, reads its own
    /// value on its next round: it won, once, and says so (judged again, the
    /// compare-and-set would see its own epoch and report a loss).
    #[test]
    fn a_proposal_that_reads_back_its_own_value_won() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let timing = ProposerTiming { round_ms: 100, op_timeout_ms: 10_000, backoff_ms: 10 };
        let mut p = Proposer::new(vec![1, 2, 3], timing);
        let mut out = Outbox::new(2, 1);
        let key = view_key(0);
        let change = Change::ReplaceView { expect_epoch: 4, view: view(5, 2) };
        p.propose(&mut out, key.clone(), change.clone(), Requester::Replica(0));
        out.on_persisted(out.last_lsn());
        let prepare = PeerBody::Prepare { key: key.clone(), ballot: Ballot { round: 1, node: 2 }, map_version: 0 };
        assert_eq!(sent_bodies(&mut out), vec![prepare.clone(), prepare.clone(), prepare]);
        let first = Ballot { round: 1, node: 2 };
        let old = Some((Ballot { round: 1, node: 1 }, ConfigValue::View(view(4, 1))));
        p.on_promise(&mut out, 1, key.clone(), first, old.clone());
        p.on_promise(&mut out, 2, key.clone(), first, old);
        let accept =
            PeerBody::Accept { key: key.clone(), ballot: first, value: ConfigValue::View(view(5, 2)), map_version: 0 };
        assert_eq!(sent_bodies(&mut out), vec![accept.clone(), accept.clone(), accept]);
        // Node 3 prepares over it, reads the new view and writes it back.
        let theirs = Ballot { round: 5, node: 3 };
        p.on_reject(&mut out, &mut rng, key.clone(), first, theirs);
        out.now = 1_000;
        assert_eq!(p.on_tick(&mut out, &mut rng), vec![]);
        let second = Ballot { round: 6, node: 2 };
        let prepare = PeerBody::Prepare { key: key.clone(), ballot: second, map_version: 0 };
        assert_eq!(sent_bodies(&mut out), vec![prepare.clone(), prepare.clone(), prepare]);
        let written_back = Some((theirs, ConfigValue::View(view(5, 2))));
        p.on_promise(&mut out, 1, key.clone(), second, written_back.clone());
        p.on_promise(&mut out, 3, key.clone(), second, written_back);
        out.take_effects();
        assert_eq!(p.on_accepted(&mut out, 1, key.clone(), second), None);
        let outcome = p.on_accepted(&mut out, 3, key.clone(), second).expect("a majority accepted");
        assert_eq!(
            outcome,
            ConfigOutcome {
                key,
                requester: Requester::Replica(0),
                change,
                applied: true,
                value: Some(ConfigValue::View(view(5, 2))),
                completed: true,
                ballot: second,
            }
        );
    }

    /// Two proposers race for the same epoch through three acceptors with
    /// messages delivered in an adversarial interleaving; exactly one wins.
    #[test]
    fn competing_view_changes_have_one_winner() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let timing = ProposerTiming { round_ms: 100, op_timeout_ms: 10_000, backoff_ms: 10 };
        let mut accs: BTreeMap<NodeId, (Acceptor, Outbox)> =
            (1..=3).map(|i| (i, (Acceptor::default(), Outbox::new(i, 1)))).collect();
        for (_, (acc, out)) in accs.iter_mut() {
            acc.replay(
                view_key(0),
                Ballot::default(),
                Some((Ballot { round: 1, node: 1 }, ConfigValue::View(view(4, 1)))),
            );
            out.on_persisted(0);
        }
        let mut props: BTreeMap<NodeId, (Proposer, Outbox)> = [2, 3]
            .into_iter()
            .map(|i| (i, (Proposer::new(vec![1, 2, 3], timing.clone()), Outbox::new(i, 1))))
            .collect();
        for (&i, (p, out)) in props.iter_mut() {
            p.propose(
                out,
                view_key(0),
                Change::ReplaceView { expect_epoch: 4, view: view(5, i) },
                Requester::Replica(0),
            );
        }
        let mut outcomes = Vec::new();
        let mut queue: VecDeque<(NodeId, crate::wire::PeerMsg)> = VecDeque::new();
        for now in 0..2000u64 {
            for (&from, (p, out)) in props.iter_mut() {
                out.now = now;
                outcomes.extend(p.on_tick(out, &mut rng));
                // Proposers persist their ballot-round reservations.
                let last = out.last_lsn();
                if last > out.durable_lsn() {
                    out.on_persisted(last);
                }
                for e in out.take_effects() {
                    if let Effect::Send { to, msg } = e {
                        queue.push_back((to, msg));
                    }
                }
                while let Some(m) = out.to_self.pop_front() {
                    queue.push_back((from, m));
                }
            }
            // Deliver in a shuffled order.
            let mut batch: Vec<_> = queue.drain(..).collect();
            for i in (1..batch.len()).rev() {
                batch.swap(i, rng.gen_range(0..=i));
            }
            for (to, msg) in batch {
                let from = msg.from;
                match msg.body {
                    PeerBody::Prepare { key, ballot, .. } => {
                        let (acc, out) = accs.get_mut(&to).unwrap();
                        acc.on_prepare(out, from, key, ballot)
                    }
                    PeerBody::Accept { key, ballot, value, .. } => {
                        let (acc, out) = accs.get_mut(&to).unwrap();
                        acc.on_accept(out, from, key, ballot, value)
                    }
                    PeerBody::Promise { key, ballot, accepted } => {
                        let (p, out) = props.get_mut(&to).unwrap();
                        p.on_promise(out, from, key, ballot, accepted)
                    }
                    PeerBody::Accepted { key, ballot } => {
                        let (p, out) = props.get_mut(&to).unwrap();
                        outcomes.extend(p.on_accepted(out, from, key, ballot))
                    }
                    PeerBody::Reject { key, ballot, promised } => {
                        let (p, out) = props.get_mut(&to).unwrap();
                        p.on_reject(out, &mut rng, key, ballot, promised)
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            for (&from, (_, out)) in accs.iter_mut() {
                let last = out.last_lsn();
                if last > out.durable_lsn() {
                    out.on_persisted(last);
                }
                for e in out.take_effects() {
                    if let Effect::Send { to, msg } = e {
                        queue.push_back((to, msg));
                    }
                }
                while let Some(m) = out.to_self.pop_front() {
                    queue.push_back((from, m));
                }
            }
            if outcomes.len() == 2 {
                break;
            }
        }
        assert_eq!(outcomes.len(), 2, "both proposals finish");
        assert_eq!(outcomes.iter().filter(|o| o.applied).count(), 1, "exactly one wins: {outcomes:?}");
        let winner = outcomes.iter().find(|o| o.applied).unwrap();
        for o in &outcomes {
            assert_eq!(o.value, winner.value, "the loser learns the winner's view");
        }
    }
}
