//! The config store's members change one at a time: over every cluster map
//! chosen in the config store (the maps nodes learned, `Observations::maps`),
//! two consecutive versions' `config_members` differ by at most one node,
//! and a map that changes the members comes from a settled map (every
//! register was rewritten through the previous change's members first).
//! Only then do any two majorities of successive acceptor sets overlap and
//! hold every register's value. And no two different maps of one version
//! are ever chosen (a version is one compare-and-set of the register).
//!
//! A version no node learned (its proposer crashed before it learned it,
//! and a later change applied on top of it) leaves a gap: the pair around
//! it is not judged, as what happened in between is unknown.

use super::Violation;
use crate::observe::Observations;

const PROPERTY: &str = "config members change one at a time";

pub fn check(obs: &Observations) -> Vec<Violation> {
    let mut v = Vec::new();
    for c in &obs.map_conflicts {
        v.push(Violation::new(PROPERTY, format!("two maps chosen for one version: {c}")));
    }
    for ((&version, (prev, _)), (&next_version, (next, by))) in obs.maps.iter().zip(obs.maps.iter().skip(1)) {
        if next_version != version + 1 || prev.config_members == next.config_members {
            continue;
        }
        let gone = prev.config_members.iter().filter(|m| !next.config_members.contains(m)).count();
        let new = next.config_members.iter().filter(|m| !prev.config_members.contains(m)).count();
        let why = if gone + new > 1 {
            "changes more than one member"
        } else if !prev.config_settled {
            "changes the members of a map whose last change of them had not settled"
        } else {
            continue;
        };
        v.push(Violation::new(
            PROPERTY,
            format!(
                "map version {next_version} (learned by node {by}) {why}: members {:?} (settled {}) at version \
                 {version}, {:?} at {next_version}",
                prev.config_members, prev.config_settled, next.config_members
            ),
        ));
        if v.len() >= 4 {
            break;
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use pactdb_core::types::{ClusterMap, NodeAddrs, NodeId};

    fn map(version: u64, members: &[NodeId], settled: bool) -> ClusterMap {
        let addrs = |n: NodeId| NodeAddrs { peer: format!("n{n}:1"), client: format!("n{n}:2") };
        let mut m = ClusterMap::new((1..=5).map(|n| (n, addrs(n))).collect(), vec![]);
        m.version = version;
        m.config_members = members.to_vec();
        m.config_settled = settled;
        m
    }

    #[test]
    fn accepts_one_member_at_a_time_each_after_settling() {
        let mut obs = Observations::default();
        obs.note_map(1, &map(1, &[1, 2, 3], true));
        obs.note_map(1, &map(2, &[1, 2, 3, 4], false));
        obs.note_map(2, &map(3, &[1, 2, 3, 4], true));
        obs.note_map(3, &map(4, &[1, 2, 3, 4, 5], false));
        obs.note_map(2, &map(4, &[1, 2, 3, 4, 5], false));
        assert_eq!(check(&obs), vec![]);
    }

    #[test]
    fn rejects_a_change_before_the_last_one_settled() {
        let mut obs = Observations::default();
        obs.note_map(1, &map(1, &[1, 2, 3], true));
        obs.note_map(1, &map(2, &[1, 2, 3, 4], false));
        obs.note_map(1, &map(3, &[1, 2, 3, 4, 5], false));
        let v = check(&obs);
        assert!(v.len() == 1 && v[0].detail.contains("had not settled"), "{v:?}");
    }

    #[test]
    fn rejects_two_members_at_once() {
        let mut obs = Observations::default();
        obs.note_map(1, &map(1, &[1, 2, 3], true));
        obs.note_map(1, &map(2, &[1, 2, 4], false));
        let v = check(&obs);
        assert!(v.len() == 1 && v[0].detail.contains("more than one"), "{v:?}");
        // Across a version nobody learned, nothing is judged.
        let mut gap = Observations::default();
        gap.note_map(1, &map(1, &[1, 2, 3], true));
        gap.note_map(1, &map(3, &[1, 2, 4], false));
        assert_eq!(check(&gap), vec![]);
    }

    #[test]
    fn rejects_two_maps_of_one_version() {
        let mut obs = Observations::default();
        obs.note_map(1, &map(2, &[1, 2, 3, 4], false));
        obs.note_map(2, &map(2, &[1, 2, 3, 5], false));
        let v = check(&obs);
        assert!(v.len() == 1 && v[0].detail.contains("two maps"), "{v:?}");
    }
}
