//! The checkers: each reads what a run recorded (the client history, the
//! observer's notes, the final state of every replica) and reports every
//! property that was violated. Each property lives in its own file.
//!
//! Checkers only judge; they never drive the simulation, and they must never
//! accept a history that the property forbids just because it is awkward to
//! check: when a checker cannot decide (a search budget runs out), it
//! reports a violation rather than a pass.

pub mod agreement;
pub mod atomicity;
pub mod bank;
pub mod config_members;
pub mod convergence;
pub mod decision;
pub mod durability;
pub mod exactly_once;
pub mod fifo;
pub mod leadership;
pub mod linearizability;
pub mod liveness;
pub mod new_primary;
pub mod serializability;
pub mod session;

use crate::history::{History, Micros};
use crate::observe::Observations;
use pactdb_core::replica::Role;
use pactdb_core::state::kv::{Key, Versioned};
use pactdb_core::state::txn::TxnId;
use pactdb_core::types::{ClusterMap, GroupId, Index, NodeId, View};

/// One violated property, with enough detail to start debugging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub property: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(property: &'static str, detail: impl Into<String>) -> Violation {
        Violation { property, detail: detail.into() }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.property, self.detail)
    }
}

/// One replica at the end of the run.
#[derive(Clone, Debug)]
pub struct FinalReplica {
    pub node: NodeId,
    pub group: GroupId,
    pub role: Role,
    pub view: Option<View>,
    pub commit: Index,
    pub applied: Index,
    pub digest: u64,
    pub kv: Vec<(Key, Versioned)>,
    /// Transactions prepared here and not resolved.
    pub prepared: Vec<TxnId>,
    /// Keys a prepared transaction holds locked.
    pub locks: usize,
    /// Coordinator decisions not yet acknowledged by every participant.
    pub decisions: Vec<TxnId>,
}

impl FinalReplica {
    /// The value this replica holds for `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Versioned> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// Everything a run leaves for the checkers.
pub struct Facts<'a> {
    /// The bootstrap map (its groups never change).
    pub cluster: &'a ClusterMap,
    /// The newest cluster map the nodes learned: the nodes it names are
    /// the cluster at the end (`finals` holds only theirs).
    pub final_map: &'a ClusterMap,
    pub history: &'a History,
    pub obs: &'a Observations,
    pub finals: &'a [FinalReplica],
    /// A member known to be faulty (the divergence demonstration), whose
    /// state the state checks leave out.
    pub faulty: Option<NodeId>,
    /// Answers of active members that dissented from their group's
    /// majority, as voting front ends reported them.
    pub dissents: usize,
    /// A member's state was made to go wrong on purpose (`faulty`, or the
    /// `diverge_state` bug), so dissent is expected.
    pub diverged_on_purpose: bool,
    /// When the quiet phase began (every fault healed).
    pub heal_at: Micros,
    /// When the run ended.
    pub end_at: Micros,
    /// Primaries cut off from their peers (clients still reaching them) on
    /// an otherwise calm network.
    pub isolations: &'a [Isolation],
}

/// A primary cut off from every peer from `start` until `healed`, while its
/// clients still reached it, with no other fault until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isolation {
    pub node: NodeId,
    pub start: Micros,
    pub healed: Micros,
    pub until: Micros,
}

/// Runs every checker. The register checkers (durability,
/// linearizability) see transactions' writes as writes of their keys
/// (`History::register_history`).
pub fn check_all(facts: &Facts) -> Vec<Violation> {
    let mut v = Vec::new();
    let registers = facts.history.register_history();
    v.extend(leadership::check(facts.obs));
    v.extend(new_primary::check(facts.obs));
    v.extend(convergence::check(facts.cluster, facts.obs, facts.finals, facts.faulty));
    v.extend(convergence::check_named(facts.final_map, facts.finals));
    v.extend(config_members::check(facts.obs));
    v.extend(durability::check(facts.cluster, &registers, facts.obs, facts.finals, facts.faulty));
    v.extend(linearizability::check(&registers));
    v.extend(session::check(&registers));
    v.extend(exactly_once::check(facts.obs));
    v.extend(fifo::check(facts.obs));
    v.extend(atomicity::check(facts.cluster, facts.history, facts.obs, facts.finals, facts.faulty));
    v.extend(decision::check(facts.cluster, facts.history, facts.obs));
    v.extend(serializability::check(facts.history, facts.obs, facts.finals));
    v.extend(bank::check(facts.cluster, facts.history, facts.finals, facts.faulty));
    v.extend(liveness::check(facts.history, facts.finals, facts.heal_at, facts.end_at));
    v.extend(liveness::check_isolations(facts.cluster, facts.history, facts.isolations));
    v.extend(agreement::check(facts.dissents, facts.diverged_on_purpose));
    v
}

/// The replica whose state is a group's final truth: its primary, or if
/// there is none, the replica that applied the most. A member known to be
/// faulty (the divergence demonstration) is never the truth.
pub fn authority(finals: &[FinalReplica], group: GroupId, faulty: Option<NodeId>) -> Option<&FinalReplica> {
    let of_group = || finals.iter().filter(move |f| f.group == group && Some(f.node) != faulty);
    of_group().find(|f| f.role == Role::Primary).or_else(|| of_group().max_by_key(|f| f.applied))
}
