//! Agreement of active members: healthy members of an active group execute
//! the same requests in the same order, so a voting front end never sees two
//! of them answer one request differently. It judges only the dissents the
//! front ends reported (`FeEffect::Dissent`); a run in which a member was
//! made to go wrong on purpose (the divergence demonstration, or the
//! `diverge_state` bug) is expected to dissent and is not judged.

use super::Violation;

const PROPERTY: &str = "agreement";

/// `dissents` counts the answers that differed from their group's majority;
/// `diverged_on_purpose` says a member's state was made to go wrong.
pub fn check(dissents: usize, diverged_on_purpose: bool) -> Vec<Violation> {
    if dissents == 0 || diverged_on_purpose {
        return Vec::new();
    }
    vec![Violation::new(
        PROPERTY,
        format!("{dissents} answers of healthy active members dissented from their group's majority"),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dissent_among_healthy_members_is_a_violation_and_one_from_a_diverged_member_is_not() {
        assert_eq!(check(0, false), vec![]);
        assert_eq!(check(2, true), vec![]);
        let v = check(2, false);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].property, "agreement");
    }
}
