//! A new primary holds every committed entry: when a replica becomes
//! primary of an epoch, its log (with its state up to the log's base)
//! holds every entry seen committed in the group so far. Every view change
//! relies on it: a member is admitted only once it holds every committed
//! entry, and a member can lead only if it acked everything its view
//! committed. A node admitted early (the bug `admit-before-caught-up`) that
//! then takes over breaks it, even when no client later reads what it
//! lacks. The observer makes the check as it sees each new primary
//! (`Observations::primary_gaps`); this only reports it.

use super::Violation;
use crate::observe::Observations;

const PROPERTY: &str = "a new primary holds every committed entry";

pub fn check(obs: &Observations) -> Vec<Violation> {
    obs.primary_gaps.iter().map(|g| Violation::new(PROPERTY, g.clone())).collect()
}
