//! The simulated network between nodes: which links are cut, and how long a
//! message takes, if it arrives at all.
//!
//! It owns the partition state and the per-message fate (delay, drop,
//! duplicate). It never delivers anything itself: the event loop schedules
//! the deliveries it computes and asks `is_cut` again at delivery time, so a
//! partition also cuts the messages already in flight.

use crate::plan::{NetProfile, PartitionKind};
use pactdb_core::types::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeSet;

#[derive(Debug)]
pub struct Net {
    pub profile: NetProfile,
    /// Directed links that are cut: (from, to).
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Net {
    pub fn new(profile: NetProfile) -> Net {
        Net { profile, cut: BTreeSet::new() }
    }

    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// The delays after which copies of one message arrive: none if it is
    /// dropped, two if it is duplicated.
    pub fn fate(&self, rng: &mut ChaCha8Rng, from: NodeId, to: NodeId) -> Vec<u64> {
        if self.is_cut(from, to) {
            return Vec::new();
        }
        let p = &self.profile;
        if p.drop_p > 0.0 && rng.gen_bool(p.drop_p) {
            return Vec::new();
        }
        let copies = if p.dup_p > 0.0 && rng.gen_bool(p.dup_p) { 2 } else { 1 };
        (0..copies).map(|_| self.delay(rng)).collect()
    }

    fn delay(&self, rng: &mut ChaCha8Rng) -> u64 {
        let p = &self.profile;
        let mut d = rng.gen_range(p.delay_min_us..=p.delay_max_us.max(p.delay_min_us));
        if p.tail_p > 0.0 && rng.gen_bool(p.tail_p) {
            d += rng.gen_range(0..=p.tail_max_us);
        }
        if p.reorder_p > 0.0 && rng.gen_bool(p.reorder_p) {
            d += rng.gen_range(0..=p.reorder_max_us);
        }
        d
    }

    /// Cuts links according to `kind`; returns a description for the trace.
    /// `target`, if given, is the node cut off (or put in the minority, or
    /// at the cut link's end).
    pub fn partition(
        &mut self,
        rng: &mut ChaCha8Rng,
        nodes: &[NodeId],
        kind: PartitionKind,
        target: Option<NodeId>,
    ) -> String {
        let mut shuffled = crate::plan::pick(rng, nodes, nodes.len());
        if let Some(t) = target {
            let at = shuffled.iter().position(|&n| n == t).expect("target is a node");
            shuffled.swap(0, at);
        }
        match kind {
            PartitionKind::Isolate => {
                let lone = shuffled[0];
                for &n in nodes.iter().filter(|&&n| n != lone) {
                    self.cut.insert((lone, n));
                    self.cut.insert((n, lone));
                }
                format!("isolate node {lone}")
            }
            PartitionKind::Split | PartitionKind::Asymmetric => {
                let minority_len = rng.gen_range(1..=(nodes.len() - 1) / 2);
                let (minority, majority) = shuffled.split_at(minority_len);
                let one_way = kind == PartitionKind::Asymmetric;
                let minority_deaf = rng.gen_bool(0.5);
                for &a in minority {
                    for &b in majority {
                        if !one_way || minority_deaf {
                            self.cut.insert((b, a));
                        }
                        if !one_way || !minority_deaf {
                            self.cut.insert((a, b));
                        }
                    }
                }
                let how = if !one_way {
                    "both ways"
                } else if minority_deaf {
                    "minority hears nothing"
                } else {
                    "minority is not heard"
                };
                format!("split {minority:?} | {majority:?} ({how})")
            }
            PartitionKind::Link => {
                let (a, b) = (shuffled[0], shuffled[1]);
                self.cut.insert((a, b));
                if rng.gen_bool(0.5) {
                    self.cut.insert((b, a));
                    format!("cut link {a} <-> {b}")
                } else {
                    format!("cut link {a} -> {b}")
                }
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }
}
