//! Bugs the simulator can switch on, one at a time, to prove that its
//! checkers catch what each one breaks.
//!
//! Production code never constructs anything but `Bugs::default()`: no flag,
//! environment variable or config file of a node reaches this struct. It
//! must never hold anything but switches that make a protocol wrong.

/// The bugs, all off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// The primary answers before every backup acked the entry.
    pub reply_before_replicated: bool,
    /// A backup acks entries before they are durable.
    pub ack_before_fsync: bool,
    /// A backup makes itself primary without winning the view CAS.
    pub promote_without_cas: bool,
    /// A retried request is executed again.
    pub skip_dedup: bool,
    /// The primary serves reads without a valid lease.
    pub read_without_lease: bool,
    /// A backup keeps entries the new primary's log contradicts.
    pub keep_divergent_suffix: bool,
    /// An active-group member executes entries as soon as it holds them,
    /// before every member holds them (before they are stable).
    pub execute_before_stable: bool,
    /// This member's state silently goes wrong: every value it writes while
    /// executing an active-group request is altered.
    pub diverge_state: bool,
}
