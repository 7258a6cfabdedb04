//! The front end's logic: what hides replication from a client.
//!
//! It owns request identities (a random client id, the start of its session
//! in each group, and a sequence number per request, kept across retries so
//! a retried write runs at most once), the cached cluster map and views,
//! routing of keys to groups, and the retry policy (redirects, timeouts,
//! back-off). It never performs IO: the async client library and the
//! simulator carry out its `FeEffect`s and feed back replies and time.
//!
//! Sessions: a request first goes out with `RequestId::NO_SESSION` until the
//! group named a start (`ClientError::OpenSession`, one round trip per group
//! and session); from then on its id never changes. A request told
//! `SessionExpired` fails with that error (it may have run before, and is
//! never sent again), and the front end starts a new session: a new client
//! id, and new starts. It never re-runs a request under a new id. A commit
//! aborted because a participant no longer remembers the session's
//! transactions (`AbortReason::SessionExpired`) starts a new session too,
//! before the next request.

use crate::limits::MAX_SESSION_RESPONSES;
use crate::state::op::{Op, OpResult};
use crate::state::txn::{AbortReason, TxnOutcome};
use crate::types::{ClusterMap, Epoch, GroupId, Index, Millis, Mode, NodeId, RequestId, View};
use crate::wire::{ClientError, ClientMsg, ClientReply, ClientRequest, Consistency};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Identifies an operation submitted to this front end (its sequence number).
pub type OpId = u64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeTiming {
    /// An attempt with no answer after this long is retried.
    pub attempt_timeout_ms: Millis,
    /// First back-off after a refusal; doubles up to `backoff_max_ms`.
    pub backoff_base_ms: Millis,
    pub backoff_max_ms: Millis,
    /// The operation fails with `Timeout` after this long in total.
    pub op_timeout_ms: Millis,
}

impl Default for FeTiming {
    fn default() -> Self {
        FeTiming { attempt_timeout_ms: 500, backoff_base_ms: 5, backoff_max_ms: 200, op_timeout_ms: 10_000 }
    }
}

/// Why an operation failed, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeError {
    /// The cluster refused it, for a reason retrying cannot fix.
    Refused(ClientError),
    /// No answer within the operation timeout. A write may or may not have
    /// run; retrying it with the same front end cannot run it twice.
    Timeout { last_error: Option<String> },
    /// More operations are outstanding than the exactly-once window allows.
    TooManyOutstanding,
    /// The front end does not know the cluster map yet.
    NoClusterMap,
}

impl std::fmt::Display for FeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeError::Refused(e) => write!(f, "{e}"),
            FeError::Timeout { last_error: Some(e) } => write!(f, "timed out (last error: {e})"),
            FeError::Timeout { last_error: None } => write!(f, "timed out waiting for the cluster"),
            FeError::TooManyOutstanding => write!(f, "too many outstanding requests on this client"),
            FeError::NoClusterMap => write!(f, "the cluster map is not known yet (is the cluster bootstrapped?)"),
        }
    }
}

impl std::error::Error for FeError {}

impl FeError {
    /// Whether the operation certainly never took effect and never will:
    /// the front end never sent it, or the cluster refused it for a reason
    /// that would refuse every attempt alike (the request itself is
    /// invalid). A refusal that depends on the group's state is not: an
    /// earlier attempt of the same request (or a copy the network
    /// duplicated) may still be on its way and run once the state changes.
    /// The simulator found exactly that for `BelowMinMembers`: a put whose
    /// retry was refused below `min_members` was later committed by its
    /// first attempt. A timeout is not definite either, nor `SessionExpired`
    /// (it refuses a retry whose earlier attempt may have run). `OpenSession`
    /// is definite: only a request that names no session is answered so, and
    /// no such request ever runs (every attempt of it is refused alike).
    pub fn never_ran(&self) -> bool {
        match self {
            FeError::Refused(e) => match e {
                ClientError::KeyTooLarge { .. }
                | ClientError::ValueTooLarge { .. }
                | ClientError::InvalidTransaction { .. }
                | ClientError::Malformed { .. }
                | ClientError::UnknownGroup { .. }
                | ClientError::OpenSession { .. } => true,
                ClientError::SessionExpired
                | ClientError::BelowMinMembers { .. }
                | ClientError::NotLeader { .. }
                | ClientError::CutOff { .. }
                | ClientError::StaleEpoch { .. }
                | ClientError::Busy
                | ClientError::Unavailable { .. }
                | ClientError::OutOfOrder { .. }
                | ClientError::Overtaken { .. } => false,
            },
            FeError::TooManyOutstanding | FeError::NoClusterMap => true,
            FeError::Timeout { .. } => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeEffect {
    /// Send `msg` to node `to`; its answer comes back through `on_reply`.
    Send { to: NodeId, msg: ClientMsg },
    /// Ask node `to` for the cluster map and views (answer via `on_reply`).
    FetchViews { to: NodeId },
    /// The operation finished; `id` is the request id it was sent under
    /// last (a transaction's id is made of its commit's).
    Done { op: OpId, id: RequestId, result: Result<OpResult, FeError> },
    /// A voting front end saw these members of an active group answer the
    /// operation differently from the f+1 that agreed (reported just before
    /// its `Done`).
    Dissent { op: OpId, group: GroupId, members: Vec<NodeId> },
    /// A read at `Consistency::Session` or `Stale` was answered by member
    /// `by`, whose state was at most `stale_ms` old (stale reads) when it
    /// answered (reported just before its `Done`). Linearizable reads need
    /// no such note: they are never old.
    ReadServed { op: OpId, by: NodeId, stale_ms: Option<Millis> },
}

/// A front end's session token: per group, the highest index an answer it
/// got was covered by. A session or linearizable read is served only by a
/// member that applied at least that far, so a client never sees less than
/// it (or a client that handed it its token) saw before. Written
/// `GROUP:INDEX[,GROUP:INDEX...]` (`0:17,2:5`); empty: nothing seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionToken(pub BTreeMap<GroupId, Index>);

impl std::fmt::Display for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(g, i)| format!("{g}:{i}")).collect();
        write!(f, "{}", parts.join(","))
    }
}

impl std::str::FromStr for SessionToken {
    type Err = String;
    fn from_str(s: &str) -> Result<SessionToken, String> {
        let mut map = BTreeMap::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let bad = || format!("bad session token part `{part}`: expected GROUP:INDEX, e.g. 0:17");
            let (g, i) = part.split_once(':').ok_or_else(bad)?;
            let g: GroupId = g.parse().map_err(|_| bad())?;
            let i: Index = i.parse().map_err(|_| bad())?;
            let e = map.entry(g).or_insert(0);
            *e = i.max(*e);
        }
        Ok(SessionToken(map))
    }
}

#[derive(Debug)]
struct Pending {
    request: ClientRequest,
    target: Option<NodeId>,
    /// When the current attempt times out, or when a back-off ends.
    wake_ms: Millis,
    in_flight: bool,
    failures: u32,
    deadline_ms: Millis,
    last_error: Option<String>,
    /// Active groups in voting mode: each member's answer so far.
    votes: BTreeMap<NodeId, OpResult>,
}

pub struct FrontEnd {
    client_id: u64,
    /// Where this client's current session starts in each group that named
    /// a start (see `RequestId::session`).
    sessions: BTreeMap<GroupId, Index>,
    /// Sessions started over after `SessionExpired`.
    renewals: u64,
    /// A commit was refused as possibly forgotten by a participant: the
    /// next request starts a new session.
    renew: bool,
    next_seq: u64,
    timing: FeTiming,
    cluster: Option<ClusterMap>,
    views: BTreeMap<GroupId, View>,
    /// Nodes to ask for views when nothing better is known.
    seeds: Vec<NodeId>,
    pending: BTreeMap<OpId, Pending>,
    effects: Vec<FeEffect>,
    next_fetch_ms: Millis,
    /// Groups whose leader in the cached view went silent (an attempt timed
    /// out, or its connection failed) or said it is cut off from its
    /// backups, with that view's epoch and leader. Until a newer view is
    /// learned the front end keeps asking other nodes for views.
    suspects: BTreeMap<GroupId, (Epoch, NodeId)>,
    /// The session token: per group, the highest index an answer this
    /// front end got was covered by (`ClientReply::Response::at`), or that
    /// it was handed (`observe_token`). Session and linearizable reads carry
    /// it, and a member serves them only once it applied that far: what
    /// this client saw before, it never unsees, whichever member answers.
    /// Kept across session renewals: it names group positions, not requests.
    tokens: BTreeMap<GroupId, Index>,
    /// Send linearizable reads to any member too (a backup asks its primary
    /// for a read index), not only to the leader.
    spread_linearizable: bool,
    /// Groups a committed transaction of this front end wrote to since it
    /// last had a read answered there by the leader: a transaction's answer
    /// carries no index of the participants' logs, so the token does not
    /// cover its writes; the next read of such a group goes to its leader
    /// (which waits for the decision if the key is still locked), and that
    /// answer's index moves the token past the writes.
    txn_written: std::collections::BTreeSet<GroupId>,
}

impl FrontEnd {
    pub fn new(rng: &mut ChaCha8Rng, seeds: Vec<NodeId>, timing: FeTiming) -> FrontEnd {
        FrontEnd {
            // Client id 0 is reserved for no-op entries (`RequestId::NOOP`).
            client_id: rng.gen_range(1..=u64::MAX),
            sessions: BTreeMap::new(),
            renewals: 0,
            renew: false,
            next_seq: 1,
            timing,
            cluster: None,
            views: BTreeMap::new(),
            seeds,
            pending: BTreeMap::new(),
            effects: Vec::new(),
            next_fetch_ms: 0,
            suspects: BTreeMap::new(),
            tokens: BTreeMap::new(),
            spread_linearizable: false,
            txn_written: Default::default(),
        }
    }

    /// Whether linearizable reads go to any member of the view (a backup
    /// asks the primary for a read index) rather than to the leader only.
    /// Session and stale reads always go to any member.
    pub fn set_spread_linearizable(&mut self, spread: bool) {
        self.spread_linearizable = spread;
    }

    /// The session token: per group, the highest index this front end's
    /// answers were covered by.
    pub fn token(&self) -> SessionToken {
        SessionToken(self.tokens.clone())
    }

    /// Takes in a token another client handed over (`pactdb get --after`):
    /// this front end's later session and linearizable reads see at least
    /// what that client had seen (causal order across clients).
    pub fn observe_token(&mut self, token: &SessionToken) {
        for (&g, &i) in &token.0 {
            let t = self.tokens.entry(g).or_insert(0);
            *t = (*t).max(i);
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// How many times this front end started a new session after its
    /// requests were told `SessionExpired`.
    pub fn renewals(&self) -> u64 {
        self.renewals
    }

    /// The request id operation `op` goes out under now, while it is pending
    /// (its session may still be unnamed).
    pub fn request_id(&self, op: OpId) -> Option<RequestId> {
        self.pending.get(&op).map(|p| p.request.id)
    }

    pub fn cluster(&self) -> Option<&ClusterMap> {
        self.cluster.as_ref()
    }

    pub fn views(&self) -> &BTreeMap<GroupId, View> {
        &self.views
    }

    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Whether a new operation fits the exactly-once window: replicas keep
    /// the last `MAX_SESSION_RESPONSES` responses per client, so no request
    /// may be that many sequence numbers ahead of the oldest outstanding one.
    pub fn can_submit(&self) -> bool {
        self.pending.keys().next().is_none_or(|&oldest| self.next_seq < oldest + MAX_SESSION_RESPONSES as u64)
    }

    pub fn take_effects(&mut self) -> Vec<FeEffect> {
        std::mem::take(&mut self.effects)
    }

    /// Starts an operation (a read at `Consistency::Linearizable`) and
    /// returns its id.
    pub fn submit(&mut self, now: Millis, rng: &mut ChaCha8Rng, op: Op) -> OpId {
        self.submit_with(now, rng, op, Consistency::Linearizable)
    }

    /// Starts an operation whose read (if it is one) has `consistency`.
    pub fn submit_with(&mut self, now: Millis, rng: &mut ChaCha8Rng, op: Op, consistency: Consistency) -> OpId {
        if std::mem::take(&mut self.renew) {
            self.new_session(rng);
        }
        let seq = self.next_seq;
        // Judged before `next_seq` moves, so `submit` admits exactly what
        // `can_submit` promised: checking after the increment refused the
        // last slot of the window that `can_submit` had just offered.
        let admissible = self.can_submit();
        self.next_seq += 1;
        let id = RequestId { client: self.client_id, session: RequestId::NO_SESSION, seq };
        if !admissible {
            self.effects.push(FeEffect::Done { op: seq, id, result: Err(FeError::TooManyOutstanding) });
            return seq;
        }
        // Only reads have a consistency: a write always goes to the primary.
        let consistency = if op.is_read() { consistency } else { Consistency::Linearizable };
        let request = ClientRequest { id, group: 0, epoch: 0, op, consistency, after: 0, prev: 0 };
        self.pending.insert(
            seq,
            Pending {
                request,
                target: None,
                wake_ms: now,
                in_flight: false,
                failures: 0,
                deadline_ms: now + self.timing.op_timeout_ms,
                last_error: None,
                votes: BTreeMap::new(),
            },
        );
        self.try_send(now, rng, seq);
        seq
    }

    /// Sends (or re-sends) an operation to the leader its cached view names.
    fn try_send(&mut self, now: Millis, rng: &mut ChaCha8Rng, op: OpId) {
        let Some(cluster) = &self.cluster else {
            self.fetch_views(now, rng);
            let p = self.pending.get_mut(&op).expect("pending");
            p.in_flight = false;
            p.wake_ms = now + self.timing.backoff_base_ms.max(1) * 4;
            return;
        };
        let group = match &self.pending[&op].request.op {
            Op::TxnStatus { txn } => txn.home,
            Op::Scan { group, .. } => *group,
            Op::Commit(req) => match req.home_key() {
                Some(key) => cluster.group_of(key),
                // An empty transaction: the group refuses it, any will do.
                None => cluster.groups[0].id,
            },
            op => cluster.group_of(op.key().expect("a single-key operation")),
        };
        let Some(spec) = cluster.groups.iter().find(|g| g.id == group).cloned() else {
            // Only a status query or a scan names its group (a transaction id's home);
            // one the cluster does not have is refused, never routed.
            return self.finish(op, Err(FeError::Refused(ClientError::UnknownGroup { group })));
        };
        let view = self.views.get(&group).cloned();
        let start = self.sessions.get(&group).copied();
        let client = self.client_id;
        let p = self.pending.get_mut(&op).expect("pending");
        p.request.group = group;
        if let (RequestId::NO_SESSION, Some(start)) = (p.request.id.session, start) {
            // Named once, for good: a request that went out with no session
            // never ran, so it may still join the current session.
            p.request.id = RequestId { client, session: start, seq: p.request.id.seq };
        }
        let prev = self.fifo_prev(op);
        let p = self.pending.get_mut(&op).expect("pending");
        p.request.prev = prev;
        // A read that any member may serve goes to a random one of the
        // view on its first attempt; a retry goes to the leader (the member
        // was behind, or silent).
        // In an active group only reads weaker than linearizable are
        // spread: a linearizable one goes through the sequencer's order.
        let weak = p.request.consistency != Consistency::Linearizable;
        let spread = p.request.op.is_read()
            && p.failures == 0
            && !self.txn_written.contains(&group)
            && match spec.mode {
                Mode::Passive => weak || self.spread_linearizable,
                Mode::Active => weak,
            };
        if p.request.op.is_read() && !matches!(p.request.consistency, Consistency::Stale { .. }) {
            p.request.after = self.tokens.get(&group).copied().unwrap_or(0);
        }
        let target = match (&view, p.target) {
            (Some(v), _) if spread => {
                p.request.epoch = v.epoch;
                v.members[rng.gen_range(0..v.members.len())]
            }
            (Some(v), _) => {
                p.request.epoch = v.epoch;
                v.leader
            }
            (None, Some(t)) => t,
            (None, None) if !spec.placement.is_empty() => spec.placement[rng.gen_range(0..spec.placement.len())],
            // `RemoveNode` takes removed nodes out of the map's bootstrap
            // placements, so a group whose first nodes were all moved away
            // and removed has none left there: any node of the map can tell
            // the group's view (found by the simulator, mixed seed 255:
            // the front end panicked sampling an empty placement).
            (None, None) => {
                let nodes: Vec<NodeId> = cluster.nodes.keys().copied().collect();
                nodes[rng.gen_range(0..nodes.len())]
            }
        };
        p.target = Some(target);
        p.in_flight = true;
        p.wake_ms = now + self.timing.attempt_timeout_ms;
        if spec.mode == Mode::Active && !answered_by_leader_only(&p.request.op) && !spread {
            // Active replication: the request goes to every member; the
            // sequencer orders it and every member answers.
            let members = view.as_ref().map_or(&spec.placement, |v| &v.members);
            for &m in members {
                self.effects.push(FeEffect::Send { to: m, msg: ClientMsg::Request(p.request.clone()) });
            }
            return;
        }
        self.effects.push(FeEffect::Send { to: target, msg: ClientMsg::Request(p.request.clone()) });
    }

    /// FIFO order (`ClientRequest::prev`): for a single-key write, the
    /// newest earlier write of the same session to the same group that is
    /// still unanswered here, which the group must run first; 0 if none.
    /// Recomputed for every attempt: a write answered since (or given up,
    /// with a timeout) no longer holds the later ones back, and the group
    /// makes sure a given-up one never runs after them (`Overtaken`).
    fn fifo_prev(&self, op: OpId) -> u64 {
        let p = &self.pending[&op];
        if !p.request.op.is_fifo_write() {
            return 0;
        }
        let id = p.request.id;
        // An unnamed write is named into the current session (under the
        // current client id, whatever id it was submitted under) when it is
        // next sent: it counts if this one is of the current session.
        let current = id.client == self.client_id && self.sessions.get(&p.request.group) == Some(&id.session);
        let same_session = |q: &Pending| {
            (q.request.id.client == id.client && q.request.id.session == id.session)
                || (q.request.id.session == RequestId::NO_SESSION && current)
        };
        self.pending
            .range(..op)
            .rev()
            .find(|(_, q)| q.request.group == p.request.group && q.request.op.is_fifo_write() && same_session(q))
            .map_or(0, |(&seq, _)| seq)
    }

    fn fetch_views(&mut self, now: Millis, rng: &mut ChaCha8Rng) {
        if now < self.next_fetch_ms {
            return;
        }
        self.next_fetch_ms = now + self.timing.backoff_base_ms.max(1) * 4;
        let mut nodes: Vec<NodeId> = match &self.cluster {
            Some(c) => c.nodes.keys().copied().collect(),
            None => self.seeds.clone(),
        };
        // A suspected leader would only repeat the view it leads: ask the
        // others, who learn a newer one as soon as it is chosen.
        if nodes.iter().any(|n| !self.is_suspect(*n)) {
            nodes.retain(|n| !self.is_suspect(*n));
        }
        if nodes.is_empty() {
            return;
        }
        let to = nodes[rng.gen_range(0..nodes.len())];
        self.effects.push(FeEffect::FetchViews { to });
    }

    fn backoff(&mut self, now: Millis, rng: &mut ChaCha8Rng, op: OpId, error: String) {
        let timing = self.timing.clone();
        let p = self.pending.get_mut(&op).expect("pending");
        p.failures += 1;
        p.in_flight = false;
        p.last_error = Some(error);
        let exp = timing.backoff_base_ms.max(1).saturating_mul(1 << p.failures.min(16));
        let cap = exp.min(timing.backoff_max_ms.max(1));
        p.wake_ms = now + rng.gen_range(cap / 2..=cap);
    }

    /// Starts a new session (a new client id, starts to be named anew)
    /// after `op` learnt its session was forgotten, unless an earlier answer
    /// already did.
    fn renew_session(&mut self, rng: &mut ChaCha8Rng, op: OpId) {
        if self.pending[&op].request.id.client == self.client_id {
            self.new_session(rng);
        }
    }

    fn new_session(&mut self, rng: &mut ChaCha8Rng) {
        self.client_id = rng.gen_range(1..=u64::MAX);
        self.sessions.clear();
        self.renewals += 1;
        self.renew = false;
    }

    fn finish(&mut self, op: OpId, result: Result<OpResult, FeError>) {
        let Some(p) = self.pending.remove(&op) else { return };
        if let Ok(OpResult::Txn(TxnOutcome::Aborted { reason: AbortReason::SessionExpired })) = &result {
            // A participant refused the commit as one it may have resolved
            // and forgotten: the session is too old there, and every later
            // commit in it would be refused alike. The next request starts
            // a new session (`submit`).
            self.renew = self.renew || p.request.id.client == self.client_id;
        }
        if let (Op::Commit(req), Ok(OpResult::Txn(outcome)), Some(cluster)) = (&p.request.op, &result, &self.cluster) {
            if outcome.is_committed() {
                self.txn_written.extend(req.writes.iter().map(|w| cluster.group_of(&w.key)));
            }
        }
        self.effects.push(FeEffect::Done { op, id: p.request.id, result });
    }

    /// Learns a view if it is newer than the cached one; says whether it was.
    pub fn learn_view(&mut self, view: View) -> bool {
        if self.views.get(&view.group).is_none_or(|v| v.epoch < view.epoch) {
            if self.suspects.get(&view.group).is_some_and(|(e, _)| *e < view.epoch) {
                self.suspects.remove(&view.group);
            }
            // A view naming a node the cached map does not know (one that
            // joined since): the map is out of date, so fetch soon.
            if self.cluster.as_ref().is_some_and(|c| view.members.iter().any(|m| !c.nodes.contains_key(m))) {
                self.next_fetch_ms = 0;
            }
            self.views.insert(view.group, view);
            return true;
        }
        false
    }

    /// Whether `node` leads a group's cached view and went silent or said
    /// it is cut off.
    fn is_suspect(&self, node: NodeId) -> bool {
        self.suspects.values().any(|(_, n)| *n == node)
    }

    /// The leader `node` of `group`'s cached view went silent or said it is
    /// cut off from its backups: they may be replacing it. The view is kept
    /// (so a view fetched from that very node, no newer, is not taken for
    /// news), and other nodes are asked for views until a newer one comes.
    fn suspect(&mut self, now: Millis, rng: &mut ChaCha8Rng, group: GroupId, node: NodeId) {
        if let Some(v) = self.views.get(&group).filter(|v| v.leader == node) {
            if self.suspects.insert(group, (v.epoch, node)) != Some((v.epoch, node)) {
                // A new suspicion: ask at once, not at the next periodic fetch.
                self.next_fetch_ms = self.next_fetch_ms.min(now);
            }
        }
        self.fetch_views(now, rng);
    }

    /// The front end's current suspicion about `group`'s leader, if any:
    /// the epoch and leader of the view whose leader went silent.
    pub fn suspected(&self, group: GroupId) -> Option<(Epoch, NodeId)> {
        self.suspects.get(&group).copied()
    }

    /// A group got a new view: operations backing off after a failover go
    /// now, and attempts in flight to someone who no longer leads are resent
    /// to the new leader (same request id, so at most once), instead of
    /// waiting out a back-off or an attempt timeout.
    fn retry_on_new_views(&mut self, now: Millis, rng: &mut ChaCha8Rng, groups: &[GroupId]) {
        if groups.is_empty() {
            return;
        }
        let ops: Vec<OpId> = self
            .pending
            .iter()
            .filter(|(_, p)| groups.contains(&p.request.group))
            .filter(|(_, p)| {
                let leader = self.views.get(&p.request.group).map(|v| v.leader);
                !p.in_flight || p.target != leader
            })
            .map(|(&o, _)| o)
            .collect();
        for op in ops {
            self.try_send(now, rng, op);
        }
    }

    /// Handles an answer from node `from`.
    pub fn on_reply(&mut self, now: Millis, rng: &mut ChaCha8Rng, from: NodeId, reply: ClientReply) {
        match reply {
            ClientReply::Views { cluster, views } => {
                // Only a newer map: answers from several nodes arrive in
                // any order while the map changes.
                if let Some(c) = cluster.filter(|c| self.cluster.as_ref().is_none_or(|old| old.version <= c.version)) {
                    self.cluster = Some(c);
                }
                let mut changed = Vec::new();
                for v in views {
                    let group = v.group;
                    if self.learn_view(v) {
                        changed.push(group);
                    }
                }
                self.retry_on_new_views(now, rng, &changed);
            }
            ClientReply::Response { id, result, at, stale_ms } => {
                // An answer to the request as it is now: not to an attempt
                // sent before its session was named. Not only to the current
                // client id: requests sent before a renewal keep theirs, and
                // are still answered (ignoring those answers left them
                // retrying until their deadline, the simulator found).
                if self.pending.get(&id.seq).is_none_or(|p| p.request.id != id) {
                    return;
                }
                if result.is_ok() && at > 0 {
                    let group = self.pending[&id.seq].request.group;
                    let t = self.tokens.entry(group).or_insert(0);
                    *t = (*t).max(at);
                    if self.views.get(&group).is_some_and(|v| v.leader == from) {
                        self.txn_written.remove(&group);
                    }
                }
                if result.is_ok() {
                    // It answers again: no longer silent.
                    self.suspects.retain(|_, (_, n)| *n != from);
                }
                if let Ok(r) = &result {
                    if self.on_vote(id.seq, from, r) {
                        return;
                    }
                }
                let Some(p) = self.pending.get(&id.seq) else { return };
                let weak = p.request.op.is_read() && p.request.consistency != Consistency::Linearizable;
                if !p.in_flight || p.target != Some(from) {
                    // An answer to an attempt already given up on; a write's
                    // outcome is still the same, so accept successes. A
                    // refusal from elsewhere (in an active group, the new
                    // sequencer while the old one is silent) still teaches a
                    // newer view, and whatever waits on it is resent.
                    if let Err(ClientError::StaleEpoch { view } | ClientError::NotLeader { view: Some(view) }) = &result
                    {
                        let group = view.group;
                        if self.learn_view(view.clone()) {
                            self.retry_on_new_views(now, rng, &[group]);
                        }
                    }
                    if result.is_err() {
                        return;
                    }
                }
                if weak && result.is_ok() {
                    // A stale read with no age given was answered by a
                    // primary under its lease, or through the sequencer's
                    // order: as fresh as a read can be.
                    let stale = matches!(self.pending[&id.seq].request.consistency, Consistency::Stale { .. });
                    let stale_ms = if stale { stale_ms.or(Some(0)) } else { stale_ms };
                    self.effects.push(FeEffect::ReadServed { op: id.seq, by: from, stale_ms });
                }
                self.on_result(now, rng, id.seq, from, result);
            }
            ClientReply::Status(_)
            | ClientReply::Bootstrapped(_)
            | ClientReply::NodeInfo { .. }
            | ClientReply::TransferStarted(_)
            | ClientReply::MoveStarted(_)
            | ClientReply::ClusterChanged(_) => {}
            ClientReply::ProtocolError { reason } => {
                let ops: Vec<OpId> = self
                    .pending
                    .iter()
                    .filter(|(_, p)| p.in_flight && p.target == Some(from))
                    .map(|(&o, _)| o)
                    .collect();
                for op in ops {
                    self.finish(op, Err(FeError::Refused(ClientError::Malformed { reason: reason.clone() })));
                }
            }
        }
    }

    /// Counts an answer of a voting group. Returns true if the vote decided
    /// the operation's fate (done, or still waiting for agreement).
    fn on_vote(&mut self, op: OpId, from: NodeId, result: &OpResult) -> bool {
        let Some(cluster) = &self.cluster else { return false };
        let group = self.pending[&op].request.group;
        let Some(spec) = cluster.groups.iter().find(|g| g.id == group) else { return false };
        if spec.mode != Mode::Active || !spec.voting {
            return false;
        }
        let request = &self.pending[&op].request;
        if answered_by_leader_only(&request.op) {
            return false;
        }
        if request.op.is_read() && request.consistency != Consistency::Linearizable {
            // The client chose one member's answer: no vote.
            return false;
        }
        // 2f+1 members mask f wrong ones: f+1 identical answers decide. f
        // comes from the group's placement, not the current view: a view
        // shrinks when a member crashes, and counting its members made a
        // 2-member view of a 3-node group take the first answer, which could
        // come from the member whose state went wrong (found by an
        // active-group core test). Fewer than f+1 agreeing members left
        // means no answer, never a wrong one.
        let n = spec.placement.len();
        let needed = (n.saturating_sub(1)) / 2 + 1;
        let p = self.pending.get_mut(&op).expect("pending");
        p.votes.insert(from, result.clone());
        let agreeing = p.votes.values().filter(|v| *v == result).count();
        if agreeing < needed {
            return true;
        }
        let dissent: Vec<NodeId> = p.votes.iter().filter(|(_, v)| *v != result).map(|(n, _)| *n).collect();
        if !dissent.is_empty() {
            self.effects.push(FeEffect::Dissent { op, group, members: dissent });
        }
        self.finish(op, Ok(result.clone()));
        true
    }

    fn on_result(
        &mut self,
        now: Millis,
        rng: &mut ChaCha8Rng,
        op: OpId,
        from: NodeId,
        result: Result<OpResult, ClientError>,
    ) {
        match result {
            Ok(r) => self.finish(op, Ok(r)),
            Err(e) => match e {
                ClientError::StaleEpoch { ref view } => {
                    let (group, sent_epoch) = (self.pending[&op].request.group, self.pending[&op].request.epoch);
                    self.learn_view(view.clone());
                    if view.epoch < sent_epoch {
                        // The leader of our view has not heard of that view:
                        // it was chosen (proposed by it, say) just as it was
                        // cut off from the members who chose it, and they
                        // may be replacing it already. Resending to it only
                        // repeats this answer for the whole partition (the
                        // simulator, passive seed 540): suspect it and ask
                        // the others for a newer view.
                        self.suspect(now, rng, group, from);
                        self.backoff(now, rng, op, e.to_string());
                    } else {
                        self.retry_soon(now, rng, op, e.to_string());
                    }
                }
                ClientError::NotLeader { view: Some(ref view) } => {
                    self.learn_view(view.clone());
                    if view.leader == from {
                        // The node is named leader but not serving yet (it is
                        // still winning a fresh epoch): wait a little.
                        self.backoff(now, rng, op, e.to_string());
                    } else {
                        self.retry_soon(now, rng, op, e.to_string());
                    }
                }
                ClientError::NotLeader { view: None } | ClientError::UnknownGroup { .. } => {
                    self.views.retain(|_, v| v.leader != from);
                    self.pending.get_mut(&op).expect("pending").target = None;
                    self.fetch_views(now, rng);
                    self.backoff(now, rng, op, e.to_string());
                }
                ClientError::CutOff { ref view } => {
                    self.learn_view(view.clone());
                    let group = self.pending[&op].request.group;
                    self.suspect(now, rng, group, from);
                    self.backoff(now, rng, op, e.to_string());
                }
                ClientError::Busy | ClientError::Unavailable { .. } => self.backoff(now, rng, op, e.to_string()),
                ClientError::OutOfOrder { prev } => {
                    // The earlier write has not reached the group. Not a
                    // failure of this one: its back-off does not grow.
                    // If it waits to be resent (its back-off, or its own
                    // `OutOfOrder`), this one goes out in the same tick:
                    // `on_tick` sends due operations in sequence order, so
                    // the earlier write leads it down the same connection.
                    // Waiting a moment longer than it did instead added
                    // `backoff_base_ms` per link of a pipelined chain, and
                    // every write submitted meanwhile joined the chain's
                    // end: with 64 writes in flight a single refusal left
                    // every write ~100 ms late for good (a collapse from
                    // 35k to 2.4k puts/s). If it is in flight already, a
                    // moment after now, so that it arrives first.
                    let base = self.timing.backoff_base_ms.max(1);
                    let wake = match self.pending.get(&prev) {
                        Some(q) if !q.in_flight => q.wake_ms.max(now),
                        _ => now + base,
                    };
                    let p = self.pending.get_mut(&op).expect("pending");
                    p.in_flight = false;
                    p.last_error = Some(e.to_string());
                    p.wake_ms = wake;
                }
                ClientError::Overtaken { .. } => self.finish(op, Err(FeError::Refused(e))),
                ClientError::OpenSession { start } => {
                    let group = self.pending[&op].request.group;
                    self.sessions.entry(group).or_insert(start);
                    self.try_send(now, rng, op);
                }
                ClientError::SessionExpired => {
                    // Whether it ran cannot be told: the caller hears so, and
                    // this client's later requests go in a new session (the
                    // table forgot the old one, or will keep refusing it).
                    self.renew_session(rng, op);
                    self.finish(op, Err(FeError::Refused(e)));
                }
                ClientError::KeyTooLarge { .. }
                | ClientError::ValueTooLarge { .. }
                | ClientError::BelowMinMembers { .. }
                | ClientError::InvalidTransaction { .. }
                | ClientError::Malformed { .. } => self.finish(op, Err(FeError::Refused(e))),
            },
        }
    }

    /// Retries at once if the redirect names someone new; otherwise backs off.
    fn retry_soon(&mut self, now: Millis, rng: &mut ChaCha8Rng, op: OpId, error: String) {
        let p = self.pending.get_mut(&op).expect("pending");
        p.failures += 1;
        p.last_error = Some(error.clone());
        if p.failures > 3 {
            return self.backoff(now, rng, op, error);
        }
        self.try_send(now, rng, op);
    }

    /// The connection to `node` failed: every attempt in flight there is
    /// retried elsewhere after a back-off.
    pub fn on_unreachable(&mut self, now: Millis, rng: &mut ChaCha8Rng, node: NodeId) {
        let ops: Vec<OpId> =
            self.pending.iter().filter(|(_, p)| p.in_flight && p.target == Some(node)).map(|(&o, _)| o).collect();
        let led: Vec<GroupId> = self.views.values().filter(|v| v.leader == node).map(|v| v.group).collect();
        for group in led {
            self.suspect(now, rng, group, node);
        }
        for op in ops {
            self.pending.get_mut(&op).expect("pending").target = None;
            self.backoff(now, rng, op, format!("node {node} unreachable"));
        }
        self.fetch_views(now, rng);
    }

    /// Retries timed-out attempts, resumes backed-off ones, and fails
    /// operations past their deadline.
    pub fn on_tick(&mut self, now: Millis, rng: &mut ChaCha8Rng) {
        let due: Vec<OpId> =
            self.pending.iter().filter(|(_, p)| now >= p.wake_ms || now >= p.deadline_ms).map(|(&o, _)| o).collect();
        for op in due {
            let p = &self.pending[&op];
            if now >= p.deadline_ms {
                let last_error = p.last_error.clone();
                self.finish(op, Err(FeError::Timeout { last_error }));
                continue;
            }
            if p.in_flight {
                // No answer in time: the leader may be dead, or cut off from
                // its backups, who are replacing it. Ask the other nodes for
                // a newer view (it is resent the moment one comes), and try
                // again after a back-off meanwhile.
                let (target, group) = (p.target, p.request.group);
                if let Some(t) = target {
                    self.suspect(now, rng, group, t);
                }
                let p = self.pending.get_mut(&op).expect("pending");
                p.target = None;
                self.fetch_views(now, rng);
                self.backoff(now, rng, op, "no answer in time".to_string());
                continue;
            }
            self.try_send(now, rng, op);
        }
        if self.waiting_for_a_view() {
            self.fetch_views(now, rng);
        }
    }

    /// Whether an operation is backing off because its leader is unreachable
    /// or did not answer (its target was forgotten). While one is, the front
    /// end keeps asking for views (every `4 * backoff_base_ms`), so it
    /// resends as soon as a new view exists rather than when the grown
    /// back-off ends: that lag was up to `backoff_max_ms` of every failover.
    fn waiting_for_a_view(&self) -> bool {
        self.pending.values().any(|p| {
            (!p.in_flight && p.target.is_none() && p.failures > 0) || self.suspects.contains_key(&p.request.group)
        })
    }

    /// The earliest time `on_tick` has work to do.
    pub fn next_wake_ms(&self) -> Option<Millis> {
        let ops = self.pending.values().map(|p| p.wake_ms.min(p.deadline_ms)).min();
        let fetch = self.waiting_for_a_view().then_some(self.next_fetch_ms);
        ops.into_iter().chain(fetch).min()
    }
}

/// Operations only a group's leader answers, even in an active group, so
/// they go to it alone and are not voted on: a status query (which may have
/// to record an abort, and whose answer is read from the log) and a
/// consistent read (its coordinator answers once every group has read;
/// nothing is logged for the members to answer from).
fn answered_by_leader_only(op: &Op) -> bool {
    match op {
        Op::TxnStatus { .. } | Op::Scan { .. } => true,
        Op::Commit(req) => !req.reads.is_empty(),
        _ => false,
    }
}
