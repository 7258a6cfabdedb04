//! A tiny hand-driven cluster for the core's tests: events in, effects out.
//!
//! Nothing happens unless the test says so. `step` feeds one input to one
//! node and returns exactly the effects it produced, after routing them:
//! `Send`s go into `net` (delivered only by `deliver*`), `Persist`s wait in
//! `unsynced` (made durable only by `persist*`), `Reply`s are collected in
//! `replies`. `settle` and `run_for` are the coarse tools for setting a
//! scene; the assertions of a test use the fine ones.
#![allow(dead_code)]

use pactdb_core::bugs::Bugs;
use pactdb_core::log::{Entry, Payload};
use pactdb_core::replica::{Replica, ReplicaTiming, Role};
use pactdb_core::state::op::{Op, OpResult};
use pactdb_core::state::stream::{Cursor, Frozen, StreamMeta};
use pactdb_core::state::txn::{Check, TxnPart, TxnRequest, TxnWrite};
use pactdb_core::state::Snapshot;
use pactdb_core::types::{ClusterMap, Epoch, GroupId, GroupSpec, Millis, Mode, NodeAddrs, NodeId, RequestId, View};
use pactdb_core::wire::{ClientMsg, ClientReply, ClientRequest, PeerBody, PeerMsg, WalRecord};
use pactdb_core::{ClientToken, Effect, Input, Lsn, Node, NodeConfig};
use std::collections::{BTreeMap, BTreeSet};

/// The only group of the test clusters (the first of `two_groups`).
pub const GROUP: GroupId = 0;
/// The second group of `Harness::two_groups`.
pub const OTHER: GroupId = 1;

/// A key that `two_groups` places in `group` (the first `"{prefix}N"` that
/// hashes there).
pub fn key_in(group: GroupId, prefix: &str) -> String {
    let mut map = cluster_map(&[1, 2, 3], 1);
    map.groups.push(GroupSpec {
        id: OTHER,
        mode: Mode::Passive,
        placement: vec![2, 1, 3],
        min_members: 1,
        voting: false,
    });
    (0..).map(|i| format!("{prefix}{i}")).find(|k| map.group_of(k.as_bytes()) == group).expect("some key lands there")
}

/// A transaction request: checks `(key, version)`, then puts `(key, value)`.
pub fn txn(checks: &[(&str, u64)], puts: &[(&str, &str)]) -> TxnRequest {
    TxnRequest {
        checks: checks.iter().map(|(k, v)| Check { key: k.as_bytes().to_vec(), version: *v }).collect(),
        writes: puts
            .iter()
            .map(|(k, v)| TxnWrite { key: k.as_bytes().to_vec(), value: Some(v.as_bytes().to_vec()) })
            .collect(),
        reads: vec![],
    }
}

/// The part of `req` that `group` holds, as a coordinator sends it.
pub fn part_of(h: &Harness, req: &TxnRequest, group: GroupId) -> std::sync::Arc<TxnPart> {
    let cluster = h.node(node(1)).cluster().expect("node 1 knows the cluster map");
    std::sync::Arc::new(
        req.split(cluster, req.digest())
            .remove(&group)
            .unwrap_or_else(|| panic!("no key of the request is in group {group}")),
    )
}

/// A client's commit of `req` as request `id`, to `group` at `epoch`.
pub fn commit(id: RequestId, group: GroupId, epoch: Epoch, req: TxnRequest) -> ClientMsg {
    ClientMsg::Request(ClientRequest {
        id,
        group,
        epoch,
        op: Op::Commit(req),
        consistency: Default::default(),
        after: 0,
        prev: 0,
    })
}

/// A single-key request to `group`.
pub fn request_to(id: RequestId, group: GroupId, epoch: Epoch, op: Op) -> ClientMsg {
    ClientMsg::Request(ClientRequest { id, group, epoch, op, consistency: Default::default(), after: 0, prev: 0 })
}

/// How long a new passive primary refuses clients at most (from its last ack
/// as a backup, or from winning in a new incarnation): `primary_suspect_ms`
/// of the default timing, which the nodes of the harness run with.
pub fn lease_wait_ms() -> Millis {
    ReplicaTiming::default().primary_suspect_ms
}

/// The answer of a new passive primary that is still waiting out its
/// predecessor's read lease.
pub fn waiting_out_lease() -> pactdb_core::wire::ClientError {
    pactdb_core::wire::ClientError::Unavailable {
        reason: "a new primary is waiting out its predecessor's read lease".into(),
    }
}

/// Reads like prose in a scenario: `h.persist(node(2))`.
pub fn node(id: NodeId) -> NodeId {
    id
}

/// One passive group placed on `ids` (the first one leads epoch 1).
pub fn cluster_map(ids: &[NodeId], min_members: usize) -> ClusterMap {
    group_map(ids, min_members, Mode::Passive, false)
}

/// One group of `mode` placed on `ids` (the first one leads epoch 1);
/// `voting` matters to front ends of active groups only.
pub fn group_map(ids: &[NodeId], min_members: usize, mode: Mode, voting: bool) -> ClusterMap {
    ClusterMap::new(
        ids.iter()
            .map(|&n| {
                (n, NodeAddrs { peer: format!("127.0.0.1:{}", 7000 + n), client: format!("127.0.0.1:{}", 8000 + n) })
            })
            .collect(),
        vec![GroupSpec { id: GROUP, mode, placement: ids.to_vec(), min_members, voting }],
    )
}

pub fn rid(client: u64, seq: u64) -> RequestId {
    RequestId { client, session: 0, seq }
}

/// The id of a request a front end sent before its group named a session.
pub fn rid_unnamed(client: u64, seq: u64) -> RequestId {
    RequestId { client, session: RequestId::NO_SESSION, seq }
}

pub fn put(key: &str, value: &str) -> Op {
    Op::Put { key: key.as_bytes().to_vec(), value: value.as_bytes().to_vec() }
}

pub fn get(key: &str) -> Op {
    Op::Get { key: key.as_bytes().to_vec() }
}

pub fn request(id: RequestId, epoch: Epoch, op: Op) -> ClientMsg {
    ClientMsg::Request(ClientRequest {
        id,
        group: GROUP,
        epoch,
        op,
        consistency: Default::default(),
        after: 0,
        prev: 0,
    })
}

/// An active group's log entry: the request `op`, sequenced at `index` and
/// not executed.
pub fn sequenced(epoch: Epoch, index: u64, id: RequestId, op: Op) -> Entry {
    Entry { epoch, index, payload: Payload::Sequenced { id, op } }
}

/// The request an active group's entry carries, if it carries one.
pub fn sequenced_op(e: &Entry) -> Option<Op> {
    match &e.payload {
        Payload::Sequenced { op, .. } => Some(op.clone()),
        _ => None,
    }
}

/// The reply a node gives to a key-value request: a write's answer is
/// covered by its own log index, which is its version (`at`); other answers
/// here carry no index (see `answered_at` for those that do).
pub fn response(id: RequestId, result: Result<OpResult, pactdb_core::wire::ClientError>) -> ClientReply {
    let at = match &result {
        Ok(OpResult::Written { version }) => *version,
        _ => 0,
    };
    ClientReply::Response { id, result, at, stale_ms: None }
}

/// The reply to a request whose answer is covered by log index `at`.
pub fn answered_at(id: RequestId, result: Result<OpResult, pactdb_core::wire::ClientError>, at: u64) -> ClientReply {
    ClientReply::Response { id, result, at, stale_ms: None }
}

pub struct Harness {
    pub now: Millis,
    ids: Vec<NodeId>,
    nodes: BTreeMap<NodeId, Node>,
    /// Messages sent and not yet delivered, as (to, msg), in send order.
    pub net: Vec<(NodeId, PeerMsg)>,
    /// Every message ever sent, as (to, msg): for whole-history checks.
    pub sent: Vec<(NodeId, PeerMsg)>,
    /// Records a node asked to persist that are not durable yet.
    pub unsynced: BTreeMap<NodeId, Vec<(Lsn, WalRecord)>>,
    /// Durable records per node: what `restart` replays.
    pub wal: BTreeMap<NodeId, Vec<WalRecord>>,
    /// Every reply, as (node, token, reply).
    pub replies: Vec<(NodeId, ClientToken, ClientReply)>,
    /// Messages to or from these nodes are dropped.
    isolated: BTreeSet<NodeId>,
    /// How far each node's local clock is ahead of `now` (clocks are per
    /// node and unsynchronised; by default they agree).
    clock_offset: BTreeMap<NodeId, Millis>,
    next_token: ClientToken,
    restarts: u64,
    /// When node 1 won epoch 2 in `bootstrap_map`.
    pub won_ms: Millis,
}

impl Harness {
    /// Fresh nodes with empty disks; nothing bootstrapped.
    pub fn new(ids: &[NodeId]) -> Harness {
        Harness::with_bugs(ids, &[])
    }

    /// Like `new`, but the nodes named in `bugs` run with those bugs on.
    pub fn with_bugs(ids: &[NodeId], bugs: &[(NodeId, Bugs)]) -> Harness {
        Harness::with_config(ids, bugs, |_| {})
    }

    /// Like `with_bugs`, with every node's configuration changed by `tweak`.
    pub fn with_config(ids: &[NodeId], bugs: &[(NodeId, Bugs)], tweak: impl Fn(&mut NodeConfig)) -> Harness {
        let bugs_of = |id: NodeId| bugs.iter().find(|(n, _)| *n == id).map_or(Bugs::default(), |(_, b)| *b);
        let nodes = ids
            .iter()
            .map(|&id| {
                let mut cfg = NodeConfig::new(id, ids.to_vec());
                tweak(&mut cfg);
                (id, Node::with_bugs(cfg, id, bugs_of(id)))
            })
            .collect();
        Harness {
            now: 0,
            ids: ids.to_vec(),
            nodes,
            net: Vec::new(),
            sent: Vec::new(),
            unsynced: ids.iter().map(|&id| (id, Vec::new())).collect(),
            wal: ids.iter().map(|&id| (id, Vec::new())).collect(),
            replies: Vec::new(),
            isolated: BTreeSet::new(),
            clock_offset: BTreeMap::new(),
            next_token: 100,
            restarts: 0,
            won_ms: 0,
        }
    }

    /// Nodes 1, 2, 3 bootstrapped with `min_members`, up to the moment node 1
    /// has won epoch 2 (it must not lead epoch 1, which it did not win in
    /// this incarnation; `won_ms` says when) and every node has read its
    /// view from the config store (replicas ack only after that). Node 1 has sent no `Append` yet: its lease is not
    /// held, and it still refuses clients until `lease_wait_ms()` have passed
    /// (see `wait_out_predecessor_lease`). Every message is delivered and
    /// every record durable.
    pub fn fresh_primary(min_members: usize) -> Harness {
        let mut h = Harness::new(&[1, 2, 3]);
        h.bootstrap(min_members);
        h
    }

    /// Bootstraps nodes 1, 2, 3 through node 1 and runs until node 1 leads.
    pub fn bootstrap(&mut self, min_members: usize) {
        self.bootstrap_map(cluster_map(&[1, 2, 3], min_members));
    }

    /// Bootstraps `cluster` (one group placed on 1, 2, 3) through node 1 and
    /// runs until node 1 leads epoch 2.
    pub fn bootstrap_map(&mut self, cluster: ClusterMap) {
        let (token, _) = self.client(node(1), ClientMsg::Bootstrap { cluster });
        self.settle();
        assert_eq!(self.take_reply(token), ClientReply::Bootstrapped(Ok(())));
        self.run_until(500, |h| h.replica(node(1)).is_primary());
        assert_eq!(self.view(node(1)).epoch, 2);
        self.won_ms = self.now;
        // Backups ack only once they have read their view from the config
        // store in this incarnation.
        self.run_until(500, |h| h.live().iter().all(|&n| !h.replica(node(n)).awaiting_view_confirmation()));
    }

    /// `fresh_primary(1)`, after it waited out its predecessor's lease and
    /// then one more heartbeat round: node 1 is primary of epoch 2 serving
    /// clients and holding its lease (from a heartbeat sent and acked at
    /// `now`), 2 and 3 are its backups, all logs empty.
    pub fn three_nodes() -> Harness {
        Harness::three_nodes_min(1)
    }

    pub fn three_nodes_min(min_members: usize) -> Harness {
        let mut h = Harness::fresh_primary(min_members);
        h.wait_out_predecessor_lease();
        h.first_heartbeat();
        h
    }

    /// Nodes 1 to 4 in the cluster, one passive group placed on 1, 2, 3
    /// (node 4 holds nothing), otherwise as `three_nodes`: node 1 primary of
    /// epoch 2 serving and holding its lease, 2 and 3 its backups.
    pub fn four_nodes_group_on_three() -> Harness {
        let mut h = Harness::new(&[1, 2, 3, 4]);
        let mut map = cluster_map(&[1, 2, 3, 4], 1);
        map.groups[0].placement = vec![1, 2, 3];
        let (token, _) = h.client(node(1), ClientMsg::Bootstrap { cluster: map });
        h.settle();
        assert_eq!(h.take_reply(token), ClientReply::Bootstrapped(Ok(())));
        h.run_until(500, |h| h.replica(node(1)).is_primary());
        h.won_ms = h.now;
        h.run_until(500, |h| [1, 2, 3].iter().all(|&n| !h.replica(node(n)).awaiting_view_confirmation()));
        h.wait_out_predecessor_lease();
        h.first_heartbeat();
        assert!(h.replica_opt(node(4)).is_none(), "node 4 holds no replica");
        h
    }

    /// Nodes 1, 2, 3 holding one active group (with `voting` for its front
    /// ends), after one heartbeat round: node 1 is the sequencer of epoch 2,
    /// 2 and 3 are members, all logs empty.
    pub fn active(voting: bool) -> Harness {
        Harness::active_with_bugs(voting, &[])
    }

    /// `active`, with the nodes named in `bugs` running those bugs.
    pub fn active_with_bugs(voting: bool, bugs: &[(NodeId, Bugs)]) -> Harness {
        let mut h = Harness::with_bugs(&[1, 2, 3], bugs);
        h.bootstrap_map(group_map(&[1, 2, 3], 1, Mode::Active, voting));
        h.first_heartbeat();
        assert_eq!(h.view(node(1)).mode, Mode::Active);
        h
    }

    /// Nodes 1, 2, 3 holding two passive groups: `GROUP` (0) led by node 1
    /// and `OTHER` (1) led by node 2, both in epoch 2, both primaries past
    /// their predecessor's lease and holding their own, every log empty.
    pub fn two_groups() -> Harness {
        Harness::two_groups_with_bugs(&[])
    }

    /// `two_groups`, with the nodes named in `bugs` running those bugs.
    pub fn two_groups_with_bugs(bugs: &[(NodeId, Bugs)]) -> Harness {
        Harness::two_groups_of(Mode::Passive, Mode::Passive, bugs)
    }

    /// `two_groups`, with `GROUP` in `home` mode and `OTHER` in `other` mode
    /// (an active group's leader is its sequencer).
    pub fn two_groups_of(home: Mode, other: Mode, bugs: &[(NodeId, Bugs)]) -> Harness {
        Harness::two_groups_with(home, other, 1, bugs)
    }

    /// `two_groups_of`, with `OTHER`'s `min_members` set.
    pub fn two_groups_with(home: Mode, other: Mode, other_min_members: usize, bugs: &[(NodeId, Bugs)]) -> Harness {
        let mut h = Harness::with_bugs(&[1, 2, 3], bugs);
        let mut map = group_map(&[1, 2, 3], 1, home, false);
        map.groups.push(GroupSpec {
            id: OTHER,
            mode: other,
            placement: vec![2, 1, 3],
            min_members: other_min_members,
            voting: false,
        });
        let (token, _) = h.client(node(1), ClientMsg::Bootstrap { cluster: map });
        h.settle();
        assert_eq!(h.take_reply(token), ClientReply::Bootstrapped(Ok(())));
        h.run_until(1_000, |h| h.replica_of(node(1), GROUP).is_primary() && h.replica_of(node(2), OTHER).is_primary());
        h.run_until(1_000, |h| {
            h.live().iter().all(|&n| [GROUP, OTHER].iter().all(|&g| !h.replica_of(n, g).awaiting_view_confirmation()))
        });
        h.wait_out_predecessor_lease();
        h.run_for(ReplicaTiming::default().heartbeat_ms * 2);
        for (n, g) in [(1, GROUP), (2, OTHER)] {
            let r = h.replica_of(node(n), g);
            assert!(r.lease_valid(h.local_now(node(n))), "node {n} holds group {g}'s lease");
            assert_eq!(r.view().map(|v| v.epoch), Some(2));
        }
        h.replies.clear();
        h
    }

    /// Node `n`'s replica of `group`.
    pub fn replica_of(&self, n: NodeId, group: GroupId) -> &Replica {
        self.nodes[&n].replica(group).unwrap_or_else(|| panic!("node {n} has no replica of group {group}"))
    }

    /// The view node `n` holds of `group`.
    pub fn view_of(&self, n: NodeId, group: GroupId) -> View {
        self.replica_of(n, group).view().cloned().unwrap_or_else(|| panic!("node {n} has no view of group {group}"))
    }

    /// Node 1, primary, heartbeats once (at the first tick its heartbeat
    /// is due; for a fresh primary, the very next one) and hears every ack.
    pub fn first_heartbeat(&mut self) {
        let deadline = self.now + ReplicaTiming::default().heartbeat_ms;
        loop {
            assert!(self.now < deadline, "node 1 sends no heartbeat");
            self.advance(1);
            let heartbeat = sends(&self.tick(node(1))).iter().any(|(_, b)| matches!(b, PeerBody::Append { .. }));
            for n in self.live().into_iter().filter(|&n| n != 1) {
                self.tick(n);
            }
            self.settle();
            if heartbeat {
                break;
            }
        }
        assert!(self.replica(node(1)).lease_valid(self.local_now(node(1))), "node 1 holds its lease");
        for n in [2, 3] {
            assert_eq!(self.replica(node(n)).role(), Role::Backup);
            assert_eq!(self.view(node(n)), self.view(node(1)));
        }
        self.replies.clear();
    }

    // ----- Fine-grained driving ------------------------------------------

    /// Feeds one input to node `n` and returns exactly the effects it produced
    /// (after routing them).
    pub fn step(&mut self, n: NodeId, input: Input) -> Vec<Effect> {
        let node = self.nodes.get_mut(&n).unwrap_or_else(|| panic!("node {n} is down"));
        let now = self.now + self.clock_offset.get(&n).copied().unwrap_or(0);
        let effects = node.step(now, input);
        self.route(n, &effects);
        effects
    }

    fn route(&mut self, from: NodeId, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::Send { to, msg } => {
                    assert_eq!(msg.from, from, "a node sends as itself");
                    assert_ne!(*to, from, "sends to self never leave the node");
                    self.sent.push((*to, msg.clone()));
                    if !self.isolated.contains(&from) && !self.isolated.contains(to) {
                        self.net.push((*to, msg.clone()));
                    }
                }
                Effect::Persist { lsn, record } => {
                    let q = self.unsynced.get_mut(&from).expect("known node");
                    let last = q.last().map(|(l, _)| *l);
                    assert!(last.is_none_or(|l| *lsn == l + 1), "lsns are issued in order");
                    q.push((*lsn, record.clone()));
                }
                Effect::Reply { token, reply } => self.replies.push((from, *token, reply.clone())),
                // Released at once, at the time of the step: the lease it was
                // marked with holds then.
                Effect::ReplyUnderLease { token, reply, .. } => self.replies.push((from, *token, reply.clone())),
            }
        }
    }

    /// A client message to node `n`, under a fresh token.
    pub fn client(&mut self, n: NodeId, msg: ClientMsg) -> (ClientToken, Vec<Effect>) {
        self.next_token += 1;
        let token = self.next_token;
        let effects = self.step(n, Input::Client { token, msg });
        (token, effects)
    }

    /// Client 7's put of `k{seq}` (request `seq`) to the primary, node 1,
    /// run until it settles; returns the reply.
    pub fn put_settled(&mut self, seq: u64) -> ClientReply {
        let epoch = self.view(node(1)).epoch;
        let (t, _) = self.client(node(1), request(rid(7, seq), epoch, put(&format!("k{seq}"), "v")));
        self.settle();
        self.take_reply(t)
    }

    /// A message that `from` never really sent (a delayed or forged one)
    /// handed straight to `to`.
    pub fn inject(&mut self, to: NodeId, from: NodeId, body: PeerBody) -> Vec<Effect> {
        self.step(to, Input::Peer(PeerMsg { from, body }))
    }

    /// Streams `snapshot` to `to` as its primary `from` would, in chunks of
    /// `chunk_bytes` (with the stream's announced shape changed by
    /// `tamper`); returns the effects of every chunk.
    pub fn stream_snapshot(
        &mut self,
        to: NodeId,
        from: NodeId,
        snapshot: &Snapshot,
        chunk_bytes: u64,
        tamper: impl Fn(&mut StreamMeta),
    ) -> Vec<Effect> {
        let view = self.view(to);
        let frozen = Frozen::freeze(snapshot.index, snapshot.epoch, &snapshot.state);
        let mut meta = frozen.meta;
        tamper(&mut meta);
        let mut at = Cursor::default();
        let mut fx = Vec::new();
        while let Some((data, next)) = frozen.chunk(at.offset, at, chunk_bytes) {
            let sent_ms = self.now;
            let body = PeerBody::SnapshotChunk { view: view.clone(), meta, offset: at.offset, data, sent_ms };
            fx.extend(self.inject(to, from, body));
            at = next;
        }
        fx
    }

    pub fn tick(&mut self, n: NodeId) -> Vec<Effect> {
        self.step(n, Input::Tick)
    }

    pub fn tick_all(&mut self) {
        for n in self.live() {
            self.tick(n);
        }
    }

    /// Node `n`'s local clock.
    pub fn local_now(&self, n: NodeId) -> Millis {
        self.now + self.clock_offset.get(&n).copied().unwrap_or(0)
    }

    /// Sets node `n`'s local clock `ms` ahead of `now`.
    pub fn set_clock_ahead(&mut self, n: NodeId, ms: Millis) {
        self.clock_offset.insert(n, ms);
    }

    pub fn advance(&mut self, ms: Millis) {
        self.now += ms;
    }

    /// Delivers, in send order, the messages in flight that `pick` selects;
    /// returns the effects of those deliveries.
    pub fn deliver_if(&mut self, mut pick: impl FnMut(NodeId, &PeerMsg) -> bool) -> Vec<Effect> {
        let (now, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.net).into_iter().partition(|(to, m)| pick(*to, m));
        self.net = later;
        let mut effects = Vec::new();
        for (to, msg) in now {
            if self.nodes.contains_key(&to) {
                effects.extend(self.step(to, Input::Peer(msg)));
            }
        }
        effects
    }

    /// Delivers every message in flight from `from` to `to`.
    pub fn deliver(&mut self, from: NodeId, to: NodeId) -> Vec<Effect> {
        self.deliver_if(|t, m| t == to && m.from == from)
    }

    /// Delivers every message in flight to `to`.
    pub fn deliver_to(&mut self, to: NodeId) -> Vec<Effect> {
        self.deliver_if(|t, _| t == to)
    }

    /// Delivers messages until none is in flight (records stay unsynced).
    pub fn deliver_all(&mut self) {
        for _ in 0..10_000 {
            if self.net.is_empty() {
                return;
            }
            self.deliver_if(|_, _| true);
        }
        panic!("messages never stop flowing");
    }

    /// Drops every message in flight that `pick` selects.
    pub fn drop_if(&mut self, mut pick: impl FnMut(NodeId, &PeerMsg) -> bool) {
        self.net.retain(|(to, m)| !pick(*to, m));
    }

    /// Makes every record node `n` issued durable, and tells it.
    pub fn persist(&mut self, n: NodeId) -> Vec<Effect> {
        let Some(&(lsn, _)) = self.unsynced[&n].last() else {
            return Vec::new();
        };
        self.persist_upto(n, lsn)
    }

    /// Makes node `n`'s records up to `lsn` durable, and tells it.
    pub fn persist_upto(&mut self, n: NodeId, lsn: Lsn) -> Vec<Effect> {
        let q = self.unsynced.get_mut(&n).expect("known node");
        let cut = q.iter().position(|(l, _)| *l > lsn).unwrap_or(q.len());
        let done: Vec<_> = q.drain(..cut).collect();
        self.wal.get_mut(&n).expect("known node").extend(done.into_iter().map(|(_, r)| r));
        self.step(n, Input::Persisted { lsn })
    }

    pub fn persist_all(&mut self) {
        for n in self.live() {
            self.persist(n);
        }
    }

    // ----- Coarse driving -------------------------------------------------

    /// Delivers every message and persists every record until nothing moves.
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.net.is_empty() {
                self.deliver_all();
            } else if self.live().iter().any(|n| !self.unsynced[n].is_empty()) {
                self.persist_all();
            } else {
                return;
            }
        }
        panic!("the cluster never settles");
    }

    /// Settles, then lets time pass 1 ms at a time, ticking every live node
    /// and settling, until `done` holds. Panics after `max_ms`.
    pub fn run_until(&mut self, max_ms: Millis, mut done: impl FnMut(&Harness) -> bool) {
        let deadline = self.now + max_ms;
        loop {
            self.settle();
            if done(self) {
                return;
            }
            assert!(self.now < deadline, "condition not reached within {max_ms} ms");
            self.advance(1);
            self.tick_all();
        }
    }

    /// Like `run_until`, but checks `done` after every round of deliveries
    /// and fsyncs, so it stops at the first moment `done` holds, with what
    /// that moment produced still in flight.
    pub fn run_rounds_until(&mut self, max_ms: Millis, mut done: impl FnMut(&Harness) -> bool) {
        let deadline = self.now + max_ms;
        loop {
            if done(self) {
                return;
            }
            if !self.net.is_empty() {
                self.deliver_if(|_, _| true);
            } else if self.live().iter().any(|n| !self.unsynced[n].is_empty()) {
                self.persist_all();
            } else {
                assert!(self.now < deadline, "condition not reached within {max_ms} ms");
                self.advance(1);
                self.tick_all();
            }
        }
    }

    /// Lets `ms` pass, 1 ms at a time, ticking and settling.
    pub fn run_for(&mut self, ms: Millis) {
        let end = self.now + ms;
        self.run_until(ms, |h| h.now >= end);
    }

    /// Runs (`run_for`) until a passive primary that won its epoch at or
    /// before `now` serves clients. It first waits out any read lease its
    /// predecessor may hold: until `lease_wait_ms()` after its last ack as a
    /// backup, or after winning if it sent none in this incarnation; either
    /// moment is no later than the win.
    pub fn wait_out_predecessor_lease(&mut self) {
        self.run_for(lease_wait_ms());
    }

    // ----- Faults ---------------------------------------------------------

    /// Cuts `n` off: what it sends and what is sent to it is lost.
    pub fn isolate(&mut self, n: NodeId) {
        self.isolated.insert(n);
        self.net.retain(|(to, m)| *to != n && m.from != n);
    }

    pub fn heal(&mut self, n: NodeId) {
        self.isolated.remove(&n);
    }

    /// Node `n` loses power: its unsynced records and the messages to it are
    /// gone.
    pub fn crash(&mut self, n: NodeId) {
        self.nodes.remove(&n).expect("node is up");
        self.unsynced.get_mut(&n).expect("known node").clear();
        self.net.retain(|(to, _)| *to != n);
    }

    /// What node 1 (the primary) sent reaches nodes 2 and 3 and is durable
    /// there, then node 1 dies before it hears their acks.
    pub fn crash_primary_after_backups_persist(&mut self) {
        self.deliver_if(|_, m| m.from == 1);
        self.persist(node(2));
        self.persist(node(3));
        self.crash(node(1));
        self.net.clear();
    }

    /// After node 1 (the primary) died: runs round by round, stopping the
    /// moment node 2 or 3 has won a view (before its first appends of the
    /// new epoch are delivered), and returns the winner.
    pub fn run_until_a_backup_leads(&mut self) -> NodeId {
        self.run_rounds_until(2_000, |h| [2, 3].iter().any(|&n| h.replica(node(n)).is_primary()));
        if self.replica(node(2)).is_primary() {
            2
        } else {
            3
        }
    }

    /// Node `n` comes back from its durable records.
    pub fn restart(&mut self, n: NodeId) {
        assert!(!self.nodes.contains_key(&n), "crash it first");
        self.restarts += 1;
        let cfg = NodeConfig::new(n, self.ids.clone());
        let records = self.wal[&n].clone();
        let node = Node::recover(cfg, n + 1000 * self.restarts, Bugs::default(), records, false);
        self.nodes.insert(n, node);
    }

    /// Node `n` comes back, but recovery found its WAL damaged and cut it
    /// after the first `keep` records (`wal_was_cut`).
    pub fn restart_with_cut_wal(&mut self, n: NodeId, keep: usize) {
        assert!(!self.nodes.contains_key(&n), "crash it first");
        self.restarts += 1;
        let wal = self.wal.get_mut(&n).expect("known node");
        wal.truncate(keep);
        let cfg = NodeConfig::new(n, self.ids.clone());
        let node = Node::recover(cfg, n + 1000 * self.restarts, Bugs::default(), wal.clone(), true);
        self.nodes.insert(n, node);
    }

    // ----- Looking --------------------------------------------------------

    pub fn live(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, n: NodeId) -> &Node {
        &self.nodes[&n]
    }

    pub fn replica(&self, n: NodeId) -> &Replica {
        self.nodes[&n].replica(GROUP).unwrap_or_else(|| panic!("node {n} has no replica"))
    }

    pub fn replica_opt(&self, n: NodeId) -> Option<&Replica> {
        self.nodes[&n].replica(GROUP)
    }

    pub fn view(&self, n: NodeId) -> View {
        self.replica(n).view().cloned().unwrap_or_else(|| panic!("node {n} has no view"))
    }

    /// The (epoch, index) of every entry in node `n`'s log.
    pub fn log_ids(&self, n: NodeId) -> Vec<(Epoch, u64)> {
        let log = self.replica(n).log();
        log.range(log.base_index() + 1, log.last_index()).map(|e| (e.epoch, e.index)).collect()
    }

    /// Removes and returns the only reply sent under `token`.
    pub fn take_reply(&mut self, token: ClientToken) -> ClientReply {
        let mine: Vec<usize> = (0..self.replies.len()).filter(|&i| self.replies[i].1 == token).collect();
        assert_eq!(mine.len(), 1, "exactly one reply for token {token}: {:?}", self.replies);
        self.replies.remove(mine[0]).2
    }

    /// The replies sent under `token`, left in place.
    pub fn replies_to(&self, token: ClientToken) -> Vec<ClientReply> {
        self.replies.iter().filter(|r| r.1 == token).map(|r| r.2.clone()).collect()
    }
}

// ----- Picking effects apart ----------------------------------------------

/// The messages among `effects`, as (to, body).
pub fn sends(effects: &[Effect]) -> Vec<(NodeId, PeerBody)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send { to, msg } => Some((*to, msg.body.clone())),
            _ => None,
        })
        .collect()
}

/// The records among `effects`, as (lsn, record).
pub fn persists(effects: &[Effect]) -> Vec<(Lsn, WalRecord)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { lsn, record } => Some((*lsn, record.clone())),
            _ => None,
        })
        .collect()
}

/// The replies among `effects`, as (token, reply).
pub fn replies(effects: &[Effect]) -> Vec<(ClientToken, ClientReply)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply { token, reply } | Effect::ReplyUnderLease { token, reply, .. } => {
                Some((*token, reply.clone()))
            }
            _ => None,
        })
        .collect()
}

// ----- Front end ------------------------------------------------------------

pub mod fe {
    use super::*;
    use pactdb_core::fe::{FeEffect, FeTiming, FrontEnd};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    pub fn view(epoch: Epoch, leader: NodeId) -> View {
        View {
            group: GROUP,
            epoch,
            mode: Mode::Passive,
            leader,
            members: vec![1, 2, 3],
            min_members: 1,
            placement: vec![1, 2, 3],
        }
    }

    /// The view of the active group on nodes 1..=3.
    pub fn active_view(epoch: Epoch, leader: NodeId) -> View {
        View { mode: Mode::Active, ..view(epoch, leader) }
    }

    /// A front end that knows the cluster map of nodes 1..=3 and `view`.
    pub fn front_end(view: View) -> (FrontEnd, ChaCha8Rng) {
        front_end_of(cluster_map(&[1, 2, 3], 1), view)
    }

    /// A front end that knows `cluster` and `view`.
    pub fn front_end_of(cluster: ClusterMap, view: View) -> (FrontEnd, ChaCha8Rng) {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let mut fe = FrontEnd::new(&mut rng, vec![1, 2, 3], FeTiming::default());
        let reply = ClientReply::Views { cluster: Some(cluster), views: vec![view] };
        fe.on_reply(0, &mut rng, 1, reply);
        assert_eq!(fe.take_effects(), vec![]);
        (fe, rng)
    }

    /// The request an FE effect sends, if it sends one.
    pub fn sent_request(e: &FeEffect) -> Option<(NodeId, ClientRequest)> {
        match e {
            FeEffect::Send { to, msg: ClientMsg::Request(r) } => Some((*to, r.clone())),
            _ => None,
        }
    }
}
