//! At most one leader per epoch, and no read served by a primary whose lease
//! may have lapsed.
//!
//! Over the whole run the observer noted every (group, epoch) a replica was
//! primary of, and the view each replica held for each epoch. Two primaries
//! of one epoch, or two different views of one epoch, break the first
//! property. For the second: a lease exists so that a primary stops serving
//! reads before anyone else can change the state as primary, so a read
//! served under epoch `e` after another node, as primary of a later epoch,
//! committed an entry of that epoch is a read from a primary whose lease had
//! lapsed (the read may miss that write). A newer primary that committed
//! nothing of its own epoch (it served reads, or finished entries it
//! inherited) changed nothing such a read could miss: an old primary may
//! then legitimately hold a lease again, granted by members that restarted
//! and forgot the newer view (views are not durable, and its members hold no
//! entry of it).

use super::Violation;
use crate::observe::Observations;

pub fn check(obs: &Observations) -> Vec<Violation> {
    let mut v = Vec::new();
    for ((group, epoch), who) in &obs.primaries {
        if who.len() > 1 {
            v.push(Violation::new(
                "one leader per epoch",
                format!("group {group} epoch {epoch} had primaries {who:?} (node, since us)"),
            ));
        }
    }
    for c in &obs.view_conflicts {
        v.push(Violation::new("one leader per epoch", format!("two views for one epoch: {c}")));
    }
    let mut stale = 0;
    for read in &obs.reads {
        let newer = obs
            .served
            .range((read.group, read.epoch + 1)..=(read.group, u64::MAX))
            .flat_map(|((_, e), who)| who.iter().map(move |(n, at)| (*e, *n, *at)))
            .find(|(_, n, at)| *n != read.node && *at <= read.at);
        if let Some((epoch, node, since)) = newer {
            stale += 1;
            if stale <= 3 {
                v.push(Violation::new(
                    "no read without lease",
                    format!(
                        "node {} served a read of group {} under epoch {} at {}us, but node {node} committed entries as primary of epoch {epoch} since {since}us",
                        read.node, read.group, read.epoch, read.at
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
    use crate::observe::ReadServed;

    #[test]
    fn rejects_two_leaders_in_one_epoch() {
        let mut obs = Observations::default();
        obs.primaries.insert((0, 2), vec![(1, 100)]);
        assert_eq!(check(&obs), vec![]);
        obs.primaries.insert((0, 3), vec![(1, 200), (2, 250)]);
        assert_eq!(check(&obs).len(), 1);
    }

    #[test]
    fn rejects_a_read_after_a_newer_primary_took_over() {
        let mut obs = Observations::default();
        obs.served.insert((0, 2), vec![(1, 100)]);
        obs.served.insert((0, 3), vec![(2, 500)]);
        obs.reads.push(ReadServed { node: 1, group: 0, epoch: 2, at: 400 });
        assert_eq!(check(&obs), vec![], "before the takeover the lease may hold");
        obs.reads.push(ReadServed { node: 1, group: 0, epoch: 2, at: 600 });
        let v = check(&obs);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].property, "no read without lease");
    }
}
