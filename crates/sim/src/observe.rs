//! What an omniscient observer notes about the replicas while the run goes
//! on: who was primary of which epoch and since when, which view each
//! replica held for each epoch, the state digest at every applied index,
//! which entry was committed at every index, the two-phase commit entries
//! among them (prepares, resolutions, decisions, as first seen committed:
//! entries compacted away later are noted already), the index at which each
//! client write request was committed (a request id committed at two
//! indexes ran twice), and which reads were served.
//!
//! It owns these records and the cheap consistency checks that are best done
//! as they are made (a digest or committed entry that differs from the one
//! seen before). It only reads replicas through the core's public
//! introspection (`role`, `view`, `applied_index`, `commit_index`, `log`,
//! `kv`), never changes them, and keeps every record bounded by the run's
//! length.

use crate::history::Micros;
use pactdb_core::log::{Entry, Payload, SharedEntry};
use pactdb_core::node::Node;
use pactdb_core::replica::Role;
use pactdb_core::state::kv::Write;
use pactdb_core::state::op::Op;
use pactdb_core::state::txn::TxnId;
use pactdb_core::types::{ClusterMap, Epoch, GroupId, Index, NodeId, RequestId, View};
use std::collections::{BTreeMap, HashMap};

/// Most inconsistencies kept per kind; one is enough to fail a seed.
const MAX_NOTES: usize = 8;

/// A read a primary answered from its own state.
#[derive(Clone, Debug)]
pub struct ReadServed {
    pub node: NodeId,
    pub group: GroupId,
    /// The epoch of the view the primary served it under.
    pub epoch: Epoch,
    /// When the primary decided to serve it (a read waiting for a pending
    /// write is decided when it arrives and answered when the write commits).
    pub at: Micros,
}

/// A two-phase commit entry of a group's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnEntry {
    /// A participant prepared its part (if the part's checks held);
    /// `consistent_read` if the part only reads, under shared locks.
    Prepare { txn: TxnId, consistent_read: bool },
    /// A participant applied the decision (`writes` if it commits).
    Resolve { txn: TxnId, commit: bool, writes: Vec<Write> },
    /// The coordinator's decision in the home group, which also resolves
    /// the home group's own part.
    Decide { txn: TxnId, commit: bool, outcome_committed: bool, participants: Vec<GroupId>, writes: Vec<Write> },
}

impl TxnEntry {
    fn of(e: &Entry) -> Option<TxnEntry> {
        match &e.payload {
            Payload::Prepare { txn, part } => {
                Some(TxnEntry::Prepare { txn: *txn, consistent_read: part.waits_for_locks() })
            }
            Payload::Resolve { txn, commit, writes } => {
                Some(TxnEntry::Resolve { txn: *txn, commit: *commit, writes: writes.clone() })
            }
            Payload::Decide { txn, commit, participants, outcome, writes, .. } => Some(TxnEntry::Decide {
                txn: *txn,
                commit: *commit,
                outcome_committed: outcome.is_committed(),
                participants: participants.clone(),
                writes: writes.clone(),
            }),
            Payload::Noop | Payload::Effects { .. } | Payload::Sequenced { .. } | Payload::Ended { .. } => None,
        }
    }

    pub fn txn(&self) -> TxnId {
        match self {
            TxnEntry::Prepare { txn, .. } | TxnEntry::Resolve { txn, .. } | TxnEntry::Decide { txn, .. } => *txn,
        }
    }
}

/// The request id of a client write an entry carries: a passive primary's
/// `Effects`, or an active group's sequenced write (not reads, and not
/// commits, whose decisions the decision checker follows).
fn write_id(e: &Entry) -> Option<RequestId> {
    match &e.payload {
        Payload::Effects { id, .. } => Some(*id),
        Payload::Sequenced { id, op } if !op.is_read() && !matches!(op, Op::Commit(_)) => Some(*id),
        _ => None,
    }
}

/// The request id of a write a front end's FIFO order covers (see
/// `check::fifo`): a single-key write (put, delete, compare-and-set), from
/// a passive primary's `Effects` (told by its response: a transaction's is
/// an outcome) or an active group's `Sequenced` request. Not reads, not
/// transactions.
fn fifo_write_id(e: &Entry) -> Option<RequestId> {
    use pactdb_core::state::op::OpResult;
    match &e.payload {
        Payload::Effects { id, response, .. } => {
            matches!(response, OpResult::Written { .. } | OpResult::Deleted { .. } | OpResult::CasFailed { .. })
                .then_some(*id)
        }
        Payload::Sequenced { id, op } => {
            matches!(op, Op::Put { .. } | Op::Delete { .. } | Op::Cas { .. }).then_some(*id)
        }
        _ => None,
    }
}

/// A two-phase commit entry as first seen committed.
#[derive(Clone, Debug)]
pub struct TxnLogged {
    pub entry: TxnEntry,
    /// The replica that was seen committing it first, and when.
    pub node: NodeId,
    pub at: Micros,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Seen {
    applied: Index,
    commit: Index,
    primary_epoch: Option<Epoch>,
    view_epoch: Option<Epoch>,
}

#[derive(Debug, Default)]
pub struct Observations {
    /// Every node that was primary of (group, epoch), with when it first was.
    pub primaries: BTreeMap<(GroupId, Epoch), Vec<(NodeId, Micros)>>,
    /// Every node that, as primary of (group, epoch), committed an entry of
    /// that epoch, with when it first did: from then on an older primary's
    /// read may miss that write.
    pub served: BTreeMap<(GroupId, Epoch), Vec<(NodeId, Micros)>>,
    /// The first view seen for each (group, epoch), by whom.
    pub views: BTreeMap<(GroupId, Epoch), (View, NodeId)>,
    /// Every view some proposer asked acceptors to accept: any of them may
    /// become chosen later, even after its proposer gave up or crashed.
    pub proposed: BTreeMap<(GroupId, Epoch), Vec<View>>,
    /// Two replicas held different views for the same epoch.
    pub view_conflicts: Vec<String>,
    /// Every cluster map some node learned (persisted as its
    /// `WalRecord::Cluster`), by version, with the first node seen with
    /// it. A node learns only maps chosen in the config store (a proposal
    /// that completed wrote or read it back through a majority, or a peer
    /// announced one it learned so), so these are chosen maps; a version
    /// nobody learned is missing.
    pub maps: BTreeMap<u64, (ClusterMap, NodeId)>,
    /// Two nodes learned different maps of the same version.
    pub map_conflicts: Vec<String>,
    /// The state digest first seen at each applied index.
    digests: HashMap<(GroupId, Index), (u64, NodeId, Micros)>,
    /// Two replicas had different states at the same applied index.
    pub divergences: Vec<String>,
    /// The epoch of the entry committed at each index (position `i - 1`);
    /// zero where no replica still held the entry when it was seen committed.
    pub committed: BTreeMap<GroupId, Vec<Epoch>>,
    /// Two replicas committed different entries at the same index.
    pub commit_conflicts: Vec<String>,
    /// Every two-phase commit entry seen committed, by group and index.
    pub txn_log: BTreeMap<(GroupId, Index), TxnLogged>,
    /// The index each client write (a passive `Effects` entry, or a
    /// sequenced write) was seen committed at, by group and request id.
    write_ids: HashMap<(GroupId, RequestId), Index>,
    /// Request ids committed at two indexes of a group's log: run twice.
    pub double_applies: Vec<String>,
    /// Every single-key write seen committed, by group and index (the
    /// first entry seen committed at each index): what the FIFO checker
    /// reads a session's order from.
    pub fifo_writes: BTreeMap<GroupId, BTreeMap<Index, RequestId>>,
    /// Each group's eviction mark (`Sessions::evicted_upto`) as it grew:
    /// when a replica of the group was first seen with it. A session
    /// starting below it was forgotten by then.
    pub eviction_marks: BTreeMap<GroupId, Vec<(Micros, Index)>>,
    pub reads: Vec<ReadServed>,
    /// Replicas that became primary without holding every entry seen
    /// committed before (a member admitted before it caught up, say).
    pub primary_gaps: Vec<String>,
    /// Messages that vouched for state that was not yet durable.
    pub premature_acks: Vec<String>,
    /// A member known to be faulty (the divergence demonstration): its
    /// state is expected to differ, so its digests are not compared.
    pub faulty: Option<NodeId>,
    seen: BTreeMap<(NodeId, GroupId), Seen>,
    /// Each node's entries as it wrote them to its WAL, until the observer
    /// saw them committed there. A step can commit, apply and compact an
    /// entry at once (a small `log_retain_entries`, a big batch), so that
    /// the in-memory log no longer holds it after the step; without these
    /// the checkers would never see what such entries carried.
    written: BTreeMap<(NodeId, GroupId), BTreeMap<Index, SharedEntry>>,
}

impl Observations {
    /// Whether group `g` had forgotten every session starting at `start`
    /// by time `at` (its eviction mark was above the start).
    pub fn session_forgotten(&self, g: GroupId, start: Index, at: Micros) -> bool {
        self.eviction_marks.get(&g).is_some_and(|m| m.iter().any(|&(t, mark)| t <= at && start < mark))
    }

    /// The highest index any replica of `group` was ever seen to commit.
    pub fn max_commit(&self, group: GroupId) -> Index {
        self.committed.get(&group).map_or(0, |c| c.len() as Index)
    }

    /// How many indexes of `group` were seen committed without any replica
    /// still holding the entry (compacted away, or installed by snapshot):
    /// what they held is unknown, so a checker that concludes from an
    /// entry's absence says so.
    pub fn unseen_committed(&self, group: GroupId) -> usize {
        self.committed.get(&group).map_or(0, |c| c.iter().filter(|&&e| e == 0).count())
    }

    /// The node restarted: its in-memory state starts over, so changes are
    /// tracked from scratch (the records made so far stay).
    pub fn forget_node(&mut self, node: NodeId) {
        self.seen.retain(|(n, _), _| *n != node);
        // Its disk may have lost what it wrote last; what it replays is
        // read from its log again.
        self.written.retain(|(n, _), _| *n != node);
    }

    /// `node` wrote `entry` of `group` to its WAL (an entry at an index
    /// replaces any at or after it, as in the WAL).
    pub fn note_written(&mut self, node: NodeId, group: GroupId, entry: SharedEntry) {
        let mine = self.written.entry((node, group)).or_default();
        mine.split_off(&entry.index);
        mine.insert(entry.index, entry);
    }

    /// `node` cut its log of `group` after `index`.
    pub fn note_truncated(&mut self, node: NodeId, group: GroupId, index: Index) {
        if let Some(mine) = self.written.get_mut(&(node, group)) {
            mine.split_off(&(index + 1));
        }
    }

    /// `node` installed a snapshot of `group` at `index`: whatever it wrote
    /// at or below it was replaced, and never committed there.
    pub fn note_snapshot(&mut self, node: NodeId, group: GroupId, index: Index) {
        if let Some(mine) = self.written.get_mut(&(node, group)) {
            *mine = mine.split_off(&(index + 1));
        }
    }

    /// Notes every change in `node`'s replicas after one of its steps.
    pub fn after_step(&mut self, at: Micros, node: &Node) {
        let id = node.id();
        for r in node.replicas() {
            let g = r.group();
            let before = self.seen.get(&(id, g)).copied().unwrap_or_default();
            let mut now = before;
            now.view_epoch = r.view().map(|v| v.epoch);
            if now.view_epoch != before.view_epoch {
                if let Some(v) = r.view() {
                    self.note_view(id, v);
                }
            }
            now.primary_epoch = (r.role() == Role::Primary).then(|| r.view().map_or(0, |v| v.epoch));
            if let Some(e) = now.primary_epoch {
                if before.primary_epoch != Some(e) {
                    self.check_new_primary(at, id, r, e);
                    let who = self.primaries.entry((g, e)).or_default();
                    if !who.iter().any(|(n, _)| *n == id) {
                        who.push((id, at));
                    }
                }
            }
            let mark = r.state().sessions.evicted_upto();
            let marks = self.eviction_marks.entry(g).or_default();
            if marks.last().is_none_or(|&(_, m)| m < mark) {
                marks.push((at, mark));
            }
            now.applied = r.applied_index();
            if now.applied != before.applied && self.faulty != Some(id) {
                let digest = r.kv().digest();
                let first = *self.digests.entry((g, now.applied)).or_insert((digest, id, at));
                if first.0 != digest && self.divergences.len() < MAX_NOTES {
                    self.divergences.push(format!(
                        "group {g} at applied index {}: node {id} has digest {digest:016x} at {}us, \
                         node {} had {:016x} at {}us",
                        now.applied, at, first.1, first.0, first.2
                    ));
                }
            }
            now.commit = r.commit_index();
            if let Some(e) = now.primary_epoch.filter(|_| now.commit > before.commit) {
                if r.log().epoch_at(now.commit) == Some(e) {
                    self.note_served(at, id, g, e);
                }
            }
            if now.commit > before.commit {
                let committed = self.committed.entry(g).or_default();
                let written = self.written.entry((id, g)).or_default();
                for i in before.commit + 1..=now.commit {
                    // The log's entry, else the one this node wrote (the
                    // step may have compacted it away already).
                    let logged = r.log().get(i).or_else(|| written.get(&i).map(|e| &**e));
                    let epoch = r.log().epoch_at(i).or(logged.map(|e| e.epoch)).unwrap_or(0);
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.txn_log.entry((g, i)) {
                        if let Some(entry) = logged.and_then(TxnEntry::of) {
                            slot.insert(TxnLogged { entry, node: id, at });
                        }
                    }
                    if let Some(rid) = logged.and_then(write_id) {
                        let first = *self.write_ids.entry((g, rid)).or_insert(i);
                        if first != i && self.double_applies.len() < MAX_NOTES {
                            self.double_applies.push(format!(
                                "group {g}: request {rid:?} committed at index {first} and again at {i} \
                                 (seen by node {id} at {at}us)"
                            ));
                        }
                    }
                    if let Some(rid) = logged.and_then(fifo_write_id) {
                        self.fifo_writes.entry(g).or_default().entry(i).or_insert(rid);
                    }
                    let slot = i as usize - 1;
                    if committed.len() <= slot {
                        committed.resize(slot + 1, 0);
                    }
                    if committed[slot] == 0 {
                        committed[slot] = epoch;
                    } else if epoch != 0 && committed[slot] != epoch && self.commit_conflicts.len() < MAX_NOTES {
                        self.commit_conflicts.push(format!(
                            "group {g} index {i}: node {id} committed an entry of epoch {epoch}, \
                             another replica one of epoch {}",
                            committed[slot]
                        ));
                    }
                }
                // Seen committed here: no longer needed.
                *written = written.split_off(&(now.commit + 1));
            }
            self.seen.insert((id, g), now);
        }
    }

    /// `r` (on node `id`) just became primary of `epoch`: its log must hold
    /// every entry seen committed so far, all of older epochs (nothing of
    /// its own epoch commits before it leads). Entries at or below its log's
    /// base are held in its state (compacted, or installed by snapshot).
    fn check_new_primary(&mut self, at: Micros, id: NodeId, r: &pactdb_core::replica::Replica, epoch: Epoch) {
        let g = r.group();
        let committed = self.committed.get(&g);
        // Entries a newer epoch committed do not count: a replica that
        // finishes winning an older epoch late (its proposal was chosen
        // before the newer one) leads nobody, since every member of its
        // view that moved on refuses its appends (mixed seed 123).
        let max = committed.map_or(0, |c| c.iter().rposition(|&e| e < epoch).map_or(0, |i| i as Index + 1));
        let (base, last) = (r.log().base_index(), r.log().last_index());
        let gap = if last < max {
            Some(format!("its log ends at {last}"))
        } else {
            (base + 1..=max).find_map(|i| {
                let want = committed.map_or(0, |c| c[i as usize - 1]);
                let held = r.log().epoch_at(i);
                (want != 0 && held != Some(want))
                    .then(|| format!("it holds an entry of epoch {held:?} at {i}, where one of epoch {want} committed"))
            })
        };
        if let Some(gap) = gap {
            if self.primary_gaps.len() < MAX_NOTES {
                self.primary_gaps.push(format!(
                    "group {g}: node {id} became primary of epoch {epoch} at {at}us lacking committed entries \
                     (committed up to {max}): {gap}"
                ));
            }
        }
    }

    /// A proposer sent `view` to the acceptors.
    pub fn note_proposed(&mut self, view: &View) {
        let all = self.proposed.entry((view.group, view.epoch)).or_default();
        if !all.contains(view) {
            all.push(view.clone());
        }
    }

    /// The views of `group` that are or may become current: the newest one
    /// a replica holds, and every newer or equal one a proposer sent out.
    pub fn candidate_views(&self, group: GroupId) -> Vec<View> {
        let newest = self.views.range((group, 0)..=(group, Epoch::MAX)).next_back().map(|(_, (v, _))| v.clone());
        let from = newest.as_ref().map_or(0, |v| v.epoch);
        let proposed = self.proposed.range((group, from)..=(group, Epoch::MAX)).flat_map(|(_, vs)| vs.iter().cloned());
        newest.into_iter().chain(proposed).collect()
    }

    /// `node` sent a message vouching for state its disk has not made
    /// durable yet.
    pub fn note_premature(&mut self, what: String) {
        if self.premature_acks.len() < MAX_NOTES {
            self.premature_acks.push(what);
        }
    }

    /// `node` committed an entry of its own `epoch` as primary.
    pub fn note_served(&mut self, at: Micros, node: NodeId, group: GroupId, epoch: Epoch) {
        let who = self.served.entry((group, epoch)).or_default();
        if !who.iter().any(|(n, _)| *n == node) {
            who.push((node, at));
        }
    }

    /// `node` learned cluster map `map`.
    pub fn note_map(&mut self, node: NodeId, map: &ClusterMap) {
        match self.maps.get(&map.version) {
            None => {
                self.maps.insert(map.version, (map.clone(), node));
            }
            Some((first, by)) if first != map && self.map_conflicts.len() < MAX_NOTES => {
                self.map_conflicts
                    .push(format!("version {}: node {node} learned {map:?}, node {by} learned {first:?}", map.version));
            }
            Some(_) => {}
        }
    }

    /// From the maps learned: how many of `spares` some map named (added),
    /// how many nodes some map named that the newest no longer does
    /// (removed), and how many changes of the config store's members
    /// settled (a settled map whose previous version was not).
    pub fn membership_counts(&self, spares: &[NodeId]) -> (u64, u64, u64) {
        let Some((newest, _)) = self.maps.values().next_back() else { return (0, 0, 0) };
        let named: std::collections::BTreeSet<NodeId> =
            self.maps.values().flat_map(|(m, _)| m.nodes.keys().copied()).collect();
        let added = spares.iter().filter(|n| named.contains(n)).count() as u64;
        let removed = named.iter().filter(|n| !newest.nodes.contains_key(n)).count() as u64;
        let settles = self
            .maps
            .iter()
            .filter(|(v, (m, _))| {
                m.config_settled && self.maps.get(&(**v - 1)).is_some_and(|(prev, _)| !prev.config_settled)
            })
            .count() as u64;
        (added, removed, settles)
    }

    fn note_view(&mut self, node: NodeId, v: &View) {
        match self.views.get(&(v.group, v.epoch)) {
            None => {
                self.views.insert((v.group, v.epoch), (v.clone(), node));
            }
            Some((first, by)) if first != v && self.view_conflicts.len() < MAX_NOTES => {
                self.view_conflicts.push(format!(
                    "group {} epoch {}: node {node} holds {v:?}, node {by} held {first:?}",
                    v.group, v.epoch
                ));
            }
            Some(_) => {}
        }
    }
}
