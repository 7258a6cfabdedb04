//! Replicas converge: at every applied index all replicas of a group had the
//! same state (checked throughout the run), no two replicas committed
//! different entries at one index, and after the quiet phase each group has
//! a primary, every placed node is back in its view, and every member of the
//! view has applied exactly what the primary committed, with the same state.

use super::{FinalReplica, Violation};
use crate::observe::Observations;
use pactdb_core::passive::Role;
use pactdb_core::types::ClusterMap;

const PROPERTY: &str = "replicas converge";

pub fn check(cluster: &ClusterMap, obs: &Observations, finals: &[FinalReplica]) -> Vec<Violation> {
    let mut v: Vec<Violation> = Vec::new();
    for d in &obs.divergences {
        v.push(Violation::new(PROPERTY, format!("diverged: {d}")));
    }
    for c in &obs.commit_conflicts {
        v.push(Violation::new(PROPERTY, format!("different entries committed: {c}")));
    }
    for g in &cluster.groups {
        let of_group: Vec<&FinalReplica> = finals.iter().filter(|f| f.group == g.id).collect();
        let Some(view) = of_group.iter().filter_map(|f| f.view.as_ref()).max_by_key(|v| v.epoch) else {
            v.push(Violation::new(PROPERTY, format!("group {} has no view on any node at the end", g.id)));
            continue;
        };
        let Some(primary) = of_group.iter().find(|f| f.node == view.leader && f.role == Role::Primary) else {
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "group {}: leader {} of the final view (epoch {}) is not serving as primary",
                    g.id, view.leader, view.epoch
                ),
            ));
            continue;
        };
        for &node in &g.placement {
            let Some(r) = of_group.iter().find(|f| f.node == node) else {
                v.push(Violation::new(
                    PROPERTY,
                    format!("group {}: placed node {node} has no replica at the end", g.id),
                ));
                continue;
            };
            let epoch = r.view.as_ref().map(|v| v.epoch);
            if !view.is_member(node) || epoch != Some(view.epoch) {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "group {}: node {node} is not back in the final view {:?} (it holds epoch {epoch:?}, role {})",
                        g.id,
                        view.members,
                        r.role.as_str()
                    ),
                ));
                continue;
            }
            if r.applied != primary.commit || r.digest != primary.digest {
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "group {}: member {node} applied {} (digest {:016x}), primary {} committed {} (digest {:016x})",
                        g.id, r.applied, r.digest, primary.node, primary.commit, primary.digest
                    ),
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::types::{GroupSpec, Mode, View};

    fn cluster() -> ClusterMap {
        ClusterMap {
            nodes: Default::default(),
            groups: vec![GroupSpec {
                id: 0,
                mode: Mode::Passive,
                placement: vec![1, 2],
                min_members: 1,
                voting: false,
            }],
        }
    }

    fn replica(node: u64, role: Role, applied: u64, digest: u64) -> FinalReplica {
        let view = View { group: 0, epoch: 3, mode: Mode::Passive, leader: 1, members: vec![1, 2], min_members: 1 };
        FinalReplica { node, group: 0, role, view: Some(view), commit: applied, applied, digest, kv: vec![] }
    }

    #[test]
    fn rejects_a_member_with_another_state() {
        let obs = Observations::default();
        let good = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 7)];
        assert_eq!(check(&cluster(), &obs, &good), vec![]);
        let bad = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 8)];
        assert_eq!(check(&cluster(), &obs, &bad).len(), 1);
        let behind = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 4, 7)];
        assert_eq!(check(&cluster(), &obs, &behind).len(), 1);
    }

    #[test]
    fn rejects_a_group_without_primary() {
        let obs = Observations::default();
        let none = [replica(1, Role::Recovering, 5, 7), replica(2, Role::Backup, 5, 7)];
        assert_eq!(check(&cluster(), &obs, &none).len(), 1);
    }
}
