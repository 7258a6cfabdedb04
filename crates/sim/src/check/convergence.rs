//! Replicas converge: at every applied index all replicas of a group had the
//! same state (checked throughout the run), no two replicas committed
//! different entries at one index, and after the quiet phase each group has
//! a primary, every placed node (as the final view places them) is back in
//! its view and no other node is, and every member of the
//! view has applied exactly what the primary committed, with the same state.
//! (In an active group the primary is the sequencer.)
//!
//! A member known to be faulty (`faulty`, the divergence demonstration) is
//! expected to hold another state: it must still be back in the view and
//! have applied everything, but its digest is not compared, and the others'
//! digests are compared with a healthy member's rather than with it.

use super::{FinalReplica, Violation};
use crate::observe::Observations;
use pactdb_core::replica::Role;
use pactdb_core::types::{ClusterMap, NodeId};

const PROPERTY: &str = "replicas converge";

pub fn check(
    cluster: &ClusterMap,
    obs: &Observations,
    finals: &[FinalReplica],
    faulty: Option<NodeId>,
) -> Vec<Violation> {
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
        // The state every healthy member must hold: the primary's, unless
        // the primary is the faulty member.
        let reference = if faulty == Some(primary.node) {
            of_group
                .iter()
                .find(|f| Some(f.node) != faulty && view.is_member(f.node) && f.applied == primary.commit)
                .copied()
        } else {
            Some(*primary)
        };
        // A move asked during the faults has finished: the members are
        // exactly the placed nodes (the view's placement, which moves
        // change, not the map's bootstrap placement).
        if !view.leaving().is_empty() {
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "group {}: members {:?} of the final view (epoch {}) that are no longer placed ({:?}) were never dropped",
                    g.id, view.leaving(), view.epoch, view.placement
                ),
            ));
        }
        for &node in &view.placement {
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
            let healthy = Some(node) != faulty;
            let digest_differs = healthy && reference.is_some_and(|f| f.digest != r.digest);
            if r.applied != primary.commit || digest_differs {
                let want = reference.unwrap_or(primary);
                v.push(Violation::new(
                    PROPERTY,
                    format!(
                        "group {}: member {node} applied {} (digest {:016x}), primary {} committed {} \
                         (node {} holds digest {:016x})",
                        g.id, r.applied, r.digest, primary.node, primary.commit, want.node, want.digest
                    ),
                ));
            }
        }
    }
    v
}

/// Every member and placed node of each group's final view is a node the
/// final cluster map names: a node is removed only once no view places it
/// (`RemoveNode` is refused before), so a final view that still counts a
/// removed node lost a replica the group relies on.
pub fn check_named(final_map: &ClusterMap, finals: &[FinalReplica]) -> Vec<Violation> {
    let mut v = Vec::new();
    let groups: std::collections::BTreeSet<_> = finals.iter().map(|f| f.group).collect();
    for g in groups {
        let view = finals.iter().filter(|f| f.group == g).filter_map(|f| f.view.as_ref()).max_by_key(|v| v.epoch);
        let Some(view) = view else { continue };
        let unnamed: std::collections::BTreeSet<NodeId> =
            view.members.iter().chain(&view.placement).copied().filter(|n| !final_map.nodes.contains_key(n)).collect();
        if !unnamed.is_empty() {
            v.push(Violation::new(
                PROPERTY,
                format!(
                    "group {g}: the final view (epoch {}) holds nodes {unnamed:?} the final cluster map (version {}) \
                     no longer names",
                    view.epoch, final_map.version
                ),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::types::{GroupSpec, Mode, View};

    fn cluster() -> ClusterMap {
        ClusterMap::new(
            Default::default(),
            vec![GroupSpec { id: 0, mode: Mode::Passive, placement: vec![1, 2], min_members: 1, voting: false }],
        )
    }

    fn replica(node: u64, role: Role, applied: u64, digest: u64) -> FinalReplica {
        let view = View {
            group: 0,
            epoch: 3,
            mode: Mode::Passive,
            leader: 1,
            members: vec![1, 2],
            min_members: 1,
            placement: vec![1, 2],
        };
        FinalReplica {
            node,
            group: 0,
            role,
            view: Some(view),
            commit: applied,
            applied,
            digest,
            kv: vec![],
            prepared: vec![],
            locks: 0,
            decisions: vec![],
        }
    }

    #[test]
    fn rejects_a_member_with_another_state() {
        let obs = Observations::default();
        let good = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 7)];
        assert_eq!(check(&cluster(), &obs, &good, None), vec![]);
        let bad = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 8)];
        assert_eq!(check(&cluster(), &obs, &bad, None).len(), 1);
        let behind = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 4, 7)];
        assert_eq!(check(&cluster(), &obs, &behind, None).len(), 1);
    }

    #[test]
    fn a_known_faulty_member_may_hold_another_state() {
        let obs = Observations::default();
        let faulty_backup = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 8)];
        assert_eq!(check(&cluster(), &obs, &faulty_backup, Some(2)), vec![]);
        assert_eq!(check(&cluster(), &obs, &faulty_backup, Some(1)), vec![]);
        let behind = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 4, 8)];
        assert_eq!(check(&cluster(), &obs, &behind, Some(2)).len(), 1, "it must still apply everything");
    }

    #[test]
    fn rejects_a_final_view_on_a_node_the_map_no_longer_names() {
        use pactdb_core::types::NodeAddrs;
        let addrs = |n: u64| NodeAddrs { peer: format!("n{n}:1"), client: format!("n{n}:2") };
        let mut map = cluster();
        map.nodes = [1, 2, 3].into_iter().map(|n| (n, addrs(n))).collect();
        let finals = [replica(1, Role::Primary, 5, 7), replica(2, Role::Backup, 5, 7)];
        assert_eq!(check_named(&map, &finals), vec![]);
        map.nodes.remove(&2);
        let v = check_named(&map, &finals);
        assert!(v.len() == 1 && v[0].detail.contains("nodes {2}"), "{v:?}");
    }

    #[test]
    fn rejects_a_group_without_primary() {
        let obs = Observations::default();
        let none = [replica(1, Role::Recovering, 5, 7), replica(2, Role::Backup, 5, 7)];
        assert_eq!(check(&cluster(), &obs, &none, None).len(), 1);
    }
}
