//! The checkers: each reads what a run recorded (the client history, the
//! observer's notes, the final state of every replica) and reports every
//! property that was violated. Each property lives in its own file.
//!
//! Checkers only judge; they never drive the simulation, and they must never
//! accept a history that the property forbids just because it is awkward to
//! check: when a checker cannot decide (a search budget runs out), it
//! reports a violation rather than a pass.

pub mod convergence;
pub mod durability;
pub mod leadership;
pub mod linearizability;
pub mod liveness;

use crate::history::{History, Micros};
use crate::observe::Observations;
use pactdb_core::replica::Role;
use pactdb_core::state::kv::{Key, Versioned};
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
}

/// Everything a run leaves for the checkers.
pub struct Facts<'a> {
    pub cluster: &'a ClusterMap,
    pub history: &'a History,
    pub obs: &'a Observations,
    pub finals: &'a [FinalReplica],
    /// A member known to be faulty (the divergence demonstration), whose
    /// state the state checks leave out.
    pub faulty: Option<NodeId>,
    /// When the quiet phase began (every fault healed).
    pub heal_at: Micros,
    /// When the run ended.
    pub end_at: Micros,
}

/// Runs every checker.
pub fn check_all(facts: &Facts) -> Vec<Violation> {
    let mut v = Vec::new();
    v.extend(leadership::check(facts.obs));
    v.extend(convergence::check(facts.cluster, facts.obs, facts.finals, facts.faulty));
    v.extend(durability::check(facts.cluster, facts.history, facts.obs, facts.finals, facts.faulty));
    v.extend(linearizability::check(facts.history));
    v.extend(liveness::check(facts.history, facts.heal_at, facts.end_at));
    v
}
