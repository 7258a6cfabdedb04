//! The boundary between the pure protocols and whoever drives them: the
//! inputs a node accepts, the effects it asks for, and the outbox that holds
//! back every effect that promises durability until its record is persisted.
//!
//! Nothing here performs IO; effects are plain data for the runtime or the
//! simulator to carry out.

use crate::limits::MAX_GATED_EFFECTS;
use crate::types::{Millis, NodeId};
use crate::wire::{ClientError, ClientMsg, ClientReply, PeerBody, PeerMsg, WalRecord};
use std::collections::VecDeque;

/// Identifies a client connection to the runtime, so a reply finds its way.
pub type ClientToken = u64;
/// Log sequence number of a WAL record, assigned by the node in order.
pub type Lsn = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; the runtime sends one every few milliseconds.
    Tick,
    Peer(PeerMsg),
    Client {
        token: ClientToken,
        msg: ClientMsg,
    },
    /// Every record up to and including `lsn` is durable on this node's disk.
    Persisted {
        lsn: Lsn,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    Send {
        to: NodeId,
        msg: PeerMsg,
    },
    Reply {
        token: ClientToken,
        reply: ClientReply,
    },
    /// A read the primary answered under its lease, which holds until
    /// `lease_expires_ms` of this node's local time. The step that made it
    /// was told the time once, when the step (a whole batch of inputs) began;
    /// a slow step can end after the lease did. So whoever releases it reads
    /// the clock again at release and sends what [`release_under_lease`]
    /// gives for that time: the answer while the lease still holds, a
    /// refusal after (by then a new primary may have taken writes the
    /// answer would miss).
    ReplyUnderLease {
        token: ClientToken,
        reply: ClientReply,
        lease_expires_ms: Millis,
    },
    /// Append `record` to the WAL and fsync; answer with `Input::Persisted`.
    /// A record that does not [need a sync of its
    /// own](crate::wire::WalRecord::needs_sync) may wait in the WAL, unsynced,
    /// until a later record is fsynced; a crash may lose it.
    Persist {
        lsn: Lsn,
        record: WalRecord,
    },
}

/// What a read served under a lease that holds until `lease_expires_ms`
/// sends when it is released at local time `now_ms`: its answer while the
/// lease holds, else a refusal (the front end retries it).
pub fn release_under_lease(reply: ClientReply, lease_expires_ms: Millis, now_ms: Millis) -> ClientReply {
    match reply {
        ClientReply::Response { id, result: Ok(_), .. } if now_ms >= lease_expires_ms => ClientReply::Response {
            id,
            result: Err(ClientError::Unavailable { reason: LEASE_RAN_OUT_BEFORE_RELEASE.to_string() }),
            at: 0,
            stale_ms: None,
        },
        r => r,
    }
}

/// The refusal of a read whose lease ran out before its answer left the node.
pub const LEASE_RAN_OUT_BEFORE_RELEASE: &str = "the primary's lease ran out before the read was answered";

/// Collects effects during one step. Effects queued "durable" are released
/// only once every record persisted before them is on disk, which is how the
/// core keeps its promise that nothing is acknowledged before fsync.
#[derive(Debug)]
pub struct Outbox {
    me: NodeId,
    pub(crate) now: Millis,
    effects: Vec<Effect>,
    next_lsn: Lsn,
    /// The lsn of the last record that needs an fsync of its own; durable
    /// effects wait for this one, never for a lazy record after it.
    last_sync_lsn: Lsn,
    durable_lsn: Lsn,
    gated: VecDeque<(Lsn, Effect)>,
    /// Messages this node sends to itself; the node delivers them in the same
    /// step, without a network hop.
    pub(crate) to_self: VecDeque<PeerMsg>,
    /// Set when more effects were gated than `MAX_GATED_EFFECTS`; the node
    /// then refuses new client work until the disk catches up.
    pub(crate) overloaded: bool,
}

impl Outbox {
    pub fn new(me: NodeId, first_lsn: Lsn) -> Outbox {
        Outbox {
            me,
            now: 0,
            effects: Vec::new(),
            next_lsn: first_lsn,
            last_sync_lsn: first_lsn.saturating_sub(1),
            durable_lsn: first_lsn.saturating_sub(1),
            gated: VecDeque::new(),
            to_self: VecDeque::new(),
            overloaded: false,
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn now(&self) -> Millis {
        self.now
    }

    fn emit(&mut self, effect: Effect) {
        match effect {
            Effect::Send { to, msg } if to == self.me => self.to_self.push_back(msg),
            e => self.effects.push(e),
        }
    }

    pub fn send(&mut self, to: NodeId, body: PeerBody) {
        let msg = PeerMsg { from: self.me, body };
        self.emit(Effect::Send { to, msg });
    }

    pub fn reply(&mut self, token: ClientToken, reply: ClientReply) {
        self.emit(Effect::Reply { token, reply });
    }

    /// Answers a read served under a lease that holds until
    /// `lease_expires_ms` (see `Effect::ReplyUnderLease`).
    pub fn reply_under_lease(&mut self, token: ClientToken, reply: ClientReply, lease_expires_ms: Millis) {
        self.emit(Effect::ReplyUnderLease { token, reply, lease_expires_ms });
    }

    /// Queues a record for the WAL and returns its lsn.
    pub fn persist(&mut self, record: WalRecord) -> Lsn {
        let lsn = self.next_lsn;
        self.next_lsn += 1;
        if record.needs_sync() {
            self.last_sync_lsn = lsn;
        }
        self.effects.push(Effect::Persist { lsn, record });
        lsn
    }

    /// The lsn of the last record queued so far (0 if none).
    pub fn last_lsn(&self) -> Lsn {
        self.next_lsn - 1
    }

    /// The lsn of the last queued record that needs an fsync (0 if none):
    /// once it is durable, every promise made so far is kept.
    pub fn last_sync_lsn(&self) -> Lsn {
        self.last_sync_lsn
    }

    pub fn durable_lsn(&self) -> Lsn {
        self.durable_lsn
    }

    /// Sends `body` once everything persisted so far is durable.
    pub fn send_durable(&mut self, to: NodeId, body: PeerBody) {
        let msg = PeerMsg { from: self.me, body };
        self.gate(Effect::Send { to, msg });
    }

    fn gate(&mut self, effect: Effect) {
        let lsn = self.last_sync_lsn;
        if lsn <= self.durable_lsn {
            self.emit(effect);
        } else {
            self.overloaded = self.gated.len() >= MAX_GATED_EFFECTS;
            self.gated.push_back((lsn, effect));
        }
    }

    /// Releases every gated effect whose records are now durable.
    pub fn on_persisted(&mut self, lsn: Lsn) {
        assert!(lsn < self.next_lsn, "persisted lsn {lsn} was never issued");
        self.durable_lsn = self.durable_lsn.max(lsn);
        while let Some((l, _)) = self.gated.front() {
            if *l > self.durable_lsn {
                break;
            }
            let (_, e) = self.gated.pop_front().expect("front exists");
            self.emit(e);
        }
        self.overloaded = self.gated.len() >= MAX_GATED_EFFECTS;
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Ballot;

    #[test]
    fn durable_send_waits_for_its_record() {
        let mut out = Outbox::new(1, 1);
        let lsn = out.persist(WalRecord::Truncate { group: 0, index: 0 });
        out.send_durable(2, PeerBody::Accepted { key: "k".into(), ballot: Ballot::default() });
        let effects = out.take_effects();
        assert_eq!(effects.len(), 1, "only the persist, the send is held: {effects:?}");
        assert!(matches!(effects[0], Effect::Persist { lsn: 1, .. }));
        out.on_persisted(lsn);
        let effects = out.take_effects();
        assert!(matches!(&effects[..], [Effect::Send { to: 2, .. }]));
    }

    #[test]
    fn durable_send_does_not_wait_for_a_lazy_commit_record() {
        let mut out = Outbox::new(1, 1);
        let entry_lsn = out.persist(WalRecord::Truncate { group: 0, index: 0 });
        out.on_persisted(entry_lsn);
        out.take_effects();
        let commit_lsn = out.persist(WalRecord::Commit { group: 0, index: 3 });
        assert_eq!(out.last_sync_lsn(), entry_lsn);
        out.send_durable(2, PeerBody::Accepted { key: "k".into(), ballot: Ballot::default() });
        let effects = out.take_effects();
        assert!(
            matches!(&effects[..], [Effect::Persist { lsn, .. }, Effect::Send { to: 2, .. }] if *lsn == commit_lsn),
            "the send is released at once: {effects:?}"
        );
    }

    #[test]
    fn send_to_self_is_looped_back() {
        let mut out = Outbox::new(1, 1);
        out.send(1, PeerBody::Join { group: 0, last_index: 0 });
        assert!(out.take_effects().is_empty());
        assert_eq!(out.to_self.len(), 1);
    }
}
