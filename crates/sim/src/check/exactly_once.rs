//! Exactly-once: no client write request is committed twice. The observer
//! notes the index at which every write request id (a passive primary's
//! `Effects`, an active group's sequenced write) was first seen committed in
//! its group's log; the same id at another index ran again, whatever the
//! clients were told. It catches a retry the session table took for new
//! (for instance after evicting its session) even when no read happened to
//! see the first run's value, which the history check of the same name
//! (one value seen at two versions, in `linearizability`) needs.

use super::Violation;
use crate::observe::Observations;

pub fn check(obs: &Observations) -> Vec<Violation> {
    obs.double_applies.iter().map(|d| Violation::new("exactly-once", d.clone())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_committed_twice_is_reported() {
        let mut obs = Observations::default();
        assert!(check(&obs).is_empty());
        obs.double_applies.push("group 0: request 7 committed at index 3 and again at 9".into());
        let v = check(&obs);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].property, "exactly-once");
    }
}
