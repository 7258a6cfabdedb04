//! pactdb-client: the Front End of a pactdb cluster as an async Rust
//! library.
//!
//! A [`Client`] hides replication: it finds the primary of each key's
//! replica group, follows failovers and redirects, and retries a lost
//! request under the same request id, so every write runs exactly once.
//! Every value carries a version (the log index of the write that produced
//! it), which [`Client::cas`] and transactions compare.
//!
//! # Quick start
//!
//! Connect (here to a `pactdb demo` started in the current directory, which
//! serves TLS and keeps its client certificate in `pactdb-data/certs/client`),
//! then put, get, compare-and-set, and commit a transaction:
//!
//! ```no_run
//! use pactdb_client::{Client, ClientOptions, ClientTls, TxnError};
//!
//! # async fn quickstart() -> anyhow::Result<()> {
//! let endpoints = vec!["127.0.0.1:7101".to_string(), "127.0.0.1:7102".to_string()];
//! let tls = ClientTls::load("pactdb-data/certs/client".as_ref())?;
//! // Nodes run with --insecure: ClientOptions::default().insecure()
//! let client = Client::connect_opts(&endpoints, ClientOptions::default().tls(tls)).await?;
//!
//! let version = client.put("greeting", "hello").await?; // the new version
//! let read = client.get("greeting").await?; // None: no such key
//! assert_eq!(read.map(|v| v.value), Some(b"hello".to_vec()));
//!
//! // Writes only if the key is still at `version`; Err(current) otherwise.
//! match client.cas("greeting", version, "bonjour").await? {
//!     Ok(new_version) => println!("bonjour at version {new_version}"),
//!     Err(current) => println!("someone else wrote version {current}"),
//! }
//!
//! // A transaction: reads now, buffered writes, one atomic commit over
//! // every group it touches, and only if nothing it read changed since.
//! let mut txn = client.begin();
//! let alice = txn.get("alice").await?;
//! txn.put("alice", "70");
//! txn.put("erin", "30");
//! match txn.commit().await {
//!     Ok(done) => println!("committed: {:?}", done.versions),
//!     Err(TxnError::Aborted { reason, .. }) => println!("aborted, nothing written: {reason}"),
//!     Err(e) => return Err(e.into()), // OutcomeUnknown: ask client.txn_status(id) later
//! }
//! # let _ = alice;
//! # Ok(())
//! # }
//! ```
//!
//! The same program, runnable against a demo, is
//! `cargo run -p pactdb-client --example quickstart` (`examples/quickstart.rs`).
//!
//! # What else
//!
//! - Reads at weaker consistency from any member: [`Client::get_with`] with
//!   [`Consistency`], and session tokens ([`Client::token`],
//!   [`Client::observe_token`]) for causal order across clients.
//! - Pipelining: [`Client::submit`] keeps many operations in flight from one
//!   task; one client's writes to a group apply in submission order.
//! - Transactions: [`Client::begin`] (interactive, [`Txn`]), [`Client::txn`]
//!   (one shot with compares, [`TxnBuilder`]), [`Client::consistent_read`]
//!   (many keys as of one instant) and [`Client::txn_status`].
//! - Security: connections use TLS when given a [`ClientSecurity::Tls`]
//!   (nodes require a client certificate of the cluster CA): pass it in
//!   [`ClientOptions`], or set it once for the process with
//!   [`set_default_security`], which [`call`], [`fetch_views`] and
//!   [`Client::connect`] use (plaintext until set).
//!
//! # Errors
//!
//! Operations fail with [`Error`]; a refusal by the cluster
//! ([`FeError::Refused`], e.g. a key over the 4 KiB or a value over the
//! 1 MiB limit) never ran. Commits fail with [`TxnError`]. Each error's
//! message is complete in its `Display`: no error repeats its cause's words.
//!
//! # Internals
//!
//! The library owns connections to the nodes and one task that drives the
//! core's `FrontEnd` logic (request ids, routing, redirects, retries,
//! back-off); see `txn.rs` for transactions. It must never invent a request
//! id for a retry: retries reuse the id, which is what makes them
//! exactly-once.

#![warn(missing_docs)]

mod txn;

pub use pactdb_core::fe::SessionToken;
pub use pactdb_core::state::txn::{AbortReason, TxnId, TxnOutcome};
pub use pactdb_core::wire::Consistency;
pub use txn::{Committed, Txn, TxnBuilder, TxnError};
// The core's types that appear in this library's API, so callers need not
// depend on `pactdb-core` to name them.
pub use pactdb_core::fe::{FeError, FeTiming};
pub use pactdb_core::state::kv::Versioned;
pub use pactdb_core::state::op::{Op, OpResult};

use pactdb_core::fe::{FeEffect, FrontEnd, OpId};
use pactdb_core::types::{ClusterMap, NodeId, RequestId, View};
use pactdb_core::wire::{self, ClientMsg, ClientReply, NodeStatus};
use pactdb_node::net::FramedConn;
use pactdb_node::tls::refusal;
pub use pactdb_node::tls::{ClientSecurity, ClientTls};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Frames queued to one node's connection before callers wait.
const CONN_QUEUE: usize = 4096;
/// Commands queued to the front-end task before callers wait.
const CMD_QUEUE: usize = 4096;
/// Replies, and operations into the backlog, the front-end task takes in at
/// most per round.
const MAX_EVENTS_PER_ROUND: usize = 1024;

/// Why an operation failed. Each variant's message is complete by itself
/// (`Fe` is transparent: it says the front end's words once, and has no
/// separate source to print them again).
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// The front end gave up on the operation: the cluster refused it
    /// ([`FeError::Refused`]: it never ran), or no answer came in time
    /// ([`FeError::Timeout`]: a write may have run, exactly once).
    #[error(transparent)]
    Fe(#[from] FeError),
    /// No endpoint answered with the cluster map (connecting): the last
    /// endpoint's error.
    #[error("no endpoint answered: {0}")]
    NoEndpoint(String),
    /// The client's task has stopped (the runtime is shutting down).
    #[error("the client was shut down")]
    Closed,
    /// A connection failed or a node answered something unexpected.
    #[error("{0}")]
    Other(String),
}

/// An operation's outcome, with the request id it ran under and, for a
/// read at `Session` or `Stale`, who served it and how stale it may be.
type OpOutcome = (RequestId, Result<OpResult, FeError>, Option<Served>);
/// Where an operation's outcome goes.
type OpReplyTx = oneshot::Sender<OpOutcome>;

/// Who served a read weaker than linearizable, and how old its state may
/// have been (`Stale` reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// The member that answered.
    pub by: NodeId,
    /// `Stale` reads: how old the member's state was at most, in ms.
    pub stale_ms: Option<u64>,
}

/// A read's answer (`Client::get_with`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The value and its version; `None`: the key does not exist.
    pub value: Option<Versioned>,
    /// Set for `Session` and `Stale` reads; a linearizable read is never old.
    pub served: Option<Served>,
}

enum Cmd {
    Op(Op, Consistency, OpReplyTx),
    Views(oneshot::Sender<(Option<ClusterMap>, BTreeMap<u32, View>)>),
    Token(oneshot::Sender<SessionToken>),
    ObserveToken(SessionToken),
    SpreadLinearizable(bool),
}

enum Event {
    Reply(NodeId, ClientReply),
    Unreachable(NodeId),
}

/// A connected front end. Cheap to clone; clones share one client id, and
/// many operations may run at once.
#[derive(Clone)]
pub struct Client {
    cmds: mpsc::Sender<Cmd>,
    /// Shared: a client is cloned for every transaction (`begin`), and a
    /// deep copy of the map each time showed in the load generator's profile.
    cluster: std::sync::Arc<ClusterMap>,
    security: ClientSecurity,
}

/// The security `call`, `fetch_views` and `Client::connect` use.
static DEFAULT_SECURITY: std::sync::RwLock<Option<ClientSecurity>> = std::sync::RwLock::new(None);

/// Sets the security that [`call`], [`fetch_views`] and [`Client::connect`]
/// use from now on in this process (the CLI sets it from `--certs-dir` or
/// `--insecure` once, at start).
pub fn set_default_security(security: ClientSecurity) {
    *DEFAULT_SECURITY.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(security);
}

/// The security set by [`set_default_security`]; plaintext until then.
pub fn default_security() -> ClientSecurity {
    DEFAULT_SECURITY.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone().unwrap_or_default()
}

/// How a [`Client`] connects.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    /// TLS with the cluster CA and a client certificate, or plaintext
    /// (the default; nodes that run TLS refuse it).
    pub security: ClientSecurity,
    /// The front end's timeouts and back-off (the operation timeout is
    /// 10 s by default).
    pub timing: FeTiming,
}

impl ClientOptions {
    /// TLS with the cluster CA and this client's certificate.
    pub fn tls(mut self, tls: ClientTls) -> Self {
        self.security = ClientSecurity::Tls(tls);
        self
    }

    /// Plaintext, for nodes started with `--insecure`.
    pub fn insecure(mut self) -> Self {
        self.security = ClientSecurity::Insecure;
        self
    }

    /// The front end's timeouts and back-off.
    pub fn timing(mut self, timing: FeTiming) -> Self {
        self.timing = timing;
        self
    }
}

/// A connection error for people: a node's refusal (TLS) says so.
fn conn_error(addr: &str, what: &str, e: &std::io::Error) -> Error {
    match refusal(e) {
        Some(r) => Error::Other(format!("{addr} refused the connection: {r}")),
        None => Error::Other(format!("{what} {addr}: {e}")),
    }
}

/// Sends one message to `addr` and waits for one reply (for admin calls),
/// with the process's default security (see [`set_default_security`]).
pub async fn call(addr: &str, msg: &ClientMsg, timeout: Duration) -> Result<ClientReply, Error> {
    call_with(addr, msg, timeout, &default_security()).await
}

/// Sends one message to `addr` and waits for one reply.
pub async fn call_with(
    addr: &str,
    msg: &ClientMsg,
    timeout: Duration,
    security: &ClientSecurity,
) -> Result<ClientReply, Error> {
    let fut = async {
        let mut conn = FramedConn::connect_with(addr, security).await.map_err(|e| conn_error(addr, "connect", &e))?;
        conn.send(&[wire::encode(msg)]).await.map_err(|e| conn_error(addr, "send to", &e))?;
        let mut buf = Vec::new();
        conn.recv(&mut buf).await.map_err(|e| match e {
            pactdb_node::frame::FrameError::Io(e) => conn_error(addr, "receive from", &e),
            e => Error::Other(format!("receive from {addr}: {e}")),
        })?;
        wire::decode::<ClientReply>(&buf).map_err(|e| Error::Other(format!("bad reply from {addr}: {e}")))
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| Error::Other(format!("{addr} did not answer in time")))?
}

/// Asks the endpoints in turn for the cluster map and views (with the
/// process's default security).
pub async fn fetch_views(endpoints: &[String]) -> Result<(ClusterMap, Vec<View>), Error> {
    fetch_views_with(endpoints, &default_security()).await
}

/// Asks the endpoints in turn for the cluster map and views.
pub async fn fetch_views_with(
    endpoints: &[String],
    security: &ClientSecurity,
) -> Result<(ClusterMap, Vec<View>), Error> {
    let mut last = String::from("no endpoints given");
    for ep in endpoints {
        match call_with(ep, &ClientMsg::GetViews, Duration::from_secs(2), security).await {
            Ok(ClientReply::Views { cluster: Some(c), views }) => return Ok((c, views)),
            Ok(ClientReply::Views { cluster: None, .. }) => last = format!("{ep}: the cluster is not bootstrapped yet"),
            Ok(other) => last = format!("{ep}: unexpected reply {other:?}"),
            Err(e) => last = e.to_string(),
        }
    }
    Err(Error::NoEndpoint(last))
}

/// An operation handed to the front end by `Client::submit`.
pub struct Submitted {
    rx: oneshot::Receiver<OpOutcome>,
}

impl Submitted {
    /// The operation's outcome, once it is known.
    pub async fn result(self) -> Result<OpResult, Error> {
        let (_, result, _) = self.rx.await.map_err(|_| Error::Closed)?;
        Ok(result?)
    }
}

impl Client {
    /// Connects through any of `endpoints` (client addresses of nodes),
    /// with the process's default security (see [`set_default_security`]).
    pub async fn connect(endpoints: &[String]) -> Result<Client, Error> {
        Self::connect_with(endpoints, FeTiming::default()).await
    }

    /// [`Client::connect`] with the front end's timing.
    pub async fn connect_with(endpoints: &[String], timing: FeTiming) -> Result<Client, Error> {
        Self::connect_opts(endpoints, ClientOptions { security: default_security(), timing }).await
    }

    /// Connects through any of `endpoints` as `opts` say (TLS or not).
    pub async fn connect_opts(endpoints: &[String], opts: ClientOptions) -> Result<Client, Error> {
        let ClientOptions { security, timing } = opts;
        let (cluster, views) = fetch_views_with(endpoints, &security).await?;
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (std::process::id() as u64).rotate_left(32));
        let mut fe = FrontEnd::new(&mut rng, cluster.nodes.keys().copied().collect(), timing);
        fe.on_reply(0, &mut rng, 0, ClientReply::Views { cluster: Some(cluster.clone()), views });
        let (cmds, cmd_rx) = mpsc::channel(CMD_QUEUE);
        tokio::spawn(drive(fe, rng, cluster.clone(), cmd_rx, security.clone()));
        let cluster = std::sync::Arc::new(cluster);
        Ok(Client { cmds, cluster, security })
    }

    /// The cluster map as it was when the client connected: nodes and
    /// their addresses, groups and their placements.
    pub fn cluster(&self) -> &ClusterMap {
        &self.cluster
    }

    /// Runs one operation (linearizable) and waits for its result: what
    /// `get`, `put`, `delete` and `cas` are built on.
    pub async fn execute(&self, op: Op) -> Result<OpResult, Error> {
        Ok(self.execute_with_id(op).await?.1?)
    }

    /// Pipelining: hands `op` to the front end now and returns its outcome
    /// to await later, so a caller keeps many operations in flight from
    /// one task. Operations submitted one after another are issued in that
    /// order, and a group applies one client's writes in the order they
    /// were issued (FIFO), across a failover too.
    pub async fn submit(&self, op: Op) -> Result<Submitted, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Op(op, Consistency::Linearizable, tx)).await.map_err(|_| Error::Closed)?;
        Ok(Submitted { rx })
    }

    /// Runs `op` and says which request id it ran under (a transaction's
    /// id is its commit's).
    pub(crate) async fn execute_with_id(&self, op: Op) -> Result<(RequestId, Result<OpResult, FeError>), Error> {
        let (id, result, _) = self.execute_at(op, Consistency::Linearizable).await?;
        Ok((id, result))
    }

    async fn execute_at(&self, op: Op, consistency: Consistency) -> Result<OpOutcome, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Op(op, consistency, tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// A linearizable read: never older than the latest write acknowledged
    /// before it began.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<Versioned>, Error> {
        Ok(self.get_with(key, Consistency::Linearizable).await?.value)
    }

    /// A read at `consistency`: `Session` and `Stale` reads may be served
    /// by any member of the key's group (a backup that is behind waits, or
    /// the read is retried at the primary).
    pub async fn get_with(&self, key: impl Into<Vec<u8>>, consistency: Consistency) -> Result<Read, Error> {
        let (_, result, served) = self.execute_at(Op::Get { key: key.into() }, consistency).await?;
        match result? {
            OpResult::Value(value) => Ok(Read { value, served }),
            other => Err(Error::Other(format!("unexpected result {other:?}"))),
        }
    }

    /// This client's session token: hand it to another client
    /// (`observe_token`, `pactdb get --after`) and that client's later
    /// session and linearizable reads see at least what this one saw.
    pub async fn token(&self) -> Result<SessionToken, Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Token(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Takes in another client's session token (causal order across
    /// clients): later reads see at least what that client had seen.
    pub async fn observe_token(&self, token: SessionToken) -> Result<(), Error> {
        self.cmds.send(Cmd::ObserveToken(token)).await.map_err(|_| Error::Closed)
    }

    /// Whether linearizable reads also go to any member (which asks its
    /// primary for a read index) rather than to the primary only.
    pub async fn spread_linearizable_reads(&self, spread: bool) -> Result<(), Error> {
        self.cmds.send(Cmd::SpreadLinearizable(spread)).await.map_err(|_| Error::Closed)
    }

    /// Writes a value; returns its new version.
    pub async fn put(&self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Result<u64, Error> {
        match self.execute(Op::Put { key: key.into(), value: value.into() }).await? {
            OpResult::Written { version } => Ok(version),
            other => Err(Error::Other(format!("unexpected result {other:?}"))),
        }
    }

    /// Deletes a key; returns whether it existed.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<bool, Error> {
        match self.execute(Op::Delete { key: key.into() }).await? {
            OpResult::Deleted { existed } => Ok(existed),
            other => Err(Error::Other(format!("unexpected result {other:?}"))),
        }
    }

    /// Sets `value` if the key's version is `expected_version` (0: absent).
    /// Returns `Ok(Ok(new_version))` or `Ok(Err(current_version))`.
    pub async fn cas(
        &self,
        key: impl Into<Vec<u8>>,
        expected_version: u64,
        value: impl Into<Vec<u8>>,
    ) -> Result<Result<u64, u64>, Error> {
        match self.execute(Op::Cas { key: key.into(), expected_version, value: value.into() }).await? {
            OpResult::Written { version } => Ok(Ok(version)),
            OpResult::CasFailed { current_version } => Ok(Err(current_version)),
            other => Err(Error::Other(format!("unexpected result {other:?}"))),
        }
    }

    /// The cluster map and the views this front end has cached.
    pub async fn views(&self) -> Result<(Option<ClusterMap>, BTreeMap<u32, View>), Error> {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(Cmd::Views(tx)).await.map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)
    }

    /// Every node's status (or why it could not be had).
    pub async fn status_all(&self) -> Vec<(NodeId, Result<NodeStatus, Error>)> {
        let mut out = Vec::new();
        for (&id, addrs) in &self.cluster.nodes {
            let r = match call_with(&addrs.client, &ClientMsg::GetStatus, Duration::from_secs(2), &self.security).await
            {
                Ok(ClientReply::Status(s)) => Ok(s),
                Ok(other) => Err(Error::Other(format!("unexpected reply {other:?}"))),
                Err(e) => Err(e),
            };
            out.push((id, r));
        }
        out
    }
}

/// One node's connection: a writer task fed by a queue, and a reader task
/// that forwards replies to the front-end task.
fn spawn_conn(
    node: NodeId,
    addr: String,
    events: mpsc::UnboundedSender<Event>,
    security: ClientSecurity,
) -> mpsc::Sender<Vec<u8>> {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONN_QUEUE);
    tokio::spawn(async move {
        let conn = match tokio::time::timeout(Duration::from_secs(1), FramedConn::connect_with(&addr, &security)).await
        {
            Ok(Ok(c)) => c,
            _ => {
                let _ = events.send(Event::Unreachable(node));
                return;
            }
        };
        let (mut reader, mut writer) = conn.into_split();
        let ev = events.clone();
        let read_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            while reader.recv(&mut buf).await.is_ok() {
                match wire::decode::<ClientReply>(&buf) {
                    Ok(r) => {
                        if ev.send(Event::Reply(node, r)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(node, "undecodable reply: {e}"),
                }
            }
            let _ = ev.send(Event::Unreachable(node));
        });
        let mut batch = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            // Let the tasks that are ready already run first: callers whose
            // replies just arrived send their next requests now, and these
            // join this write instead of each costing a packet of its own.
            // Nothing waits on a timer; the write goes out in this same
            // turn of the scheduler.
            tokio::task::yield_now().await;
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 256 {
                    break;
                }
            }
            if writer.send(&batch).await.is_err() {
                break;
            }
            batch.clear();
        }
        read_task.abort();
        let _ = events.send(Event::Unreachable(node));
    });
    tx
}

async fn drive(
    mut fe: FrontEnd,
    mut rng: ChaCha8Rng,
    cluster: ClusterMap,
    mut cmds: mpsc::Receiver<Cmd>,
    security: ClientSecurity,
) {
    let start = Instant::now();
    let now = |s: Instant| s.elapsed().as_millis() as u64;
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut conns: HashMap<NodeId, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut waiting: HashMap<OpId, OpReplyTx> = HashMap::new();
    let mut backlog: std::collections::VecDeque<(Op, Consistency, OpReplyTx)> = Default::default();
    let mut served: HashMap<OpId, Served> = HashMap::new();
    let mut cmds_open = true;
    let mut events = Vec::with_capacity(MAX_EVENTS_PER_ROUND);
    loop {
        let wake = fe.next_wake_ms().map(|w| w.saturating_sub(now(start)).max(1)).unwrap_or(50);
        tokio::select! {
            cmd = cmds.recv(), if cmds_open && backlog.is_empty() => match cmd {
                Some(cmd) => on_cmd(&mut fe, &mut backlog, cmd),
                None => cmds_open = false,
            },
            Some(ev) = ev_rx.recv() => events.push(ev),
            _ = tokio::time::sleep(Duration::from_millis(wake)) => {}
        }
        // Everything else already waiting is handled in the same round:
        // one timer, one tick and one pass over the effects for the lot,
        // instead of one per reply.
        while events.len() < MAX_EVENTS_PER_ROUND {
            match ev_rx.try_recv() {
                Ok(ev) => events.push(ev),
                Err(_) => break,
            }
        }
        while cmds_open && backlog.len() < MAX_EVENTS_PER_ROUND {
            match cmds.try_recv() {
                Ok(cmd) => on_cmd(&mut fe, &mut backlog, cmd),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => cmds_open = false,
            }
        }
        let t = now(start);
        for ev in events.drain(..) {
            match ev {
                Event::Reply(node, reply) => fe.on_reply(t, &mut rng, node, reply),
                Event::Unreachable(node) => {
                    conns.remove(&node);
                    fe.on_unreachable(t, &mut rng, node);
                }
            }
        }
        // Admit queued operations while the exactly-once window allows.
        while fe.can_submit() {
            let Some((op, consistency, tx)) = backlog.pop_front() else { break };
            let seq = fe.submit_with(t, &mut rng, op, consistency);
            waiting.insert(seq, tx);
        }
        fe.on_tick(t, &mut rng);
        for effect in fe.take_effects() {
            match effect {
                FeEffect::Done { op, id, result } => {
                    let by = served.remove(&op);
                    if let Some(tx) = waiting.remove(&op) {
                        let _ = tx.send((id, result, by));
                    }
                }
                FeEffect::ReadServed { op, by, stale_ms } => {
                    served.insert(op, Served { by, stale_ms });
                }
                FeEffect::Dissent { group, members, .. } => {
                    tracing::warn!(
                        group,
                        ?members,
                        "members of an active group answered differently from the majority"
                    );
                }
                // The front end's map, newest it heard of: nodes join while
                // the client runs, and a group may come to be led by one.
                FeEffect::Send { to, msg } => {
                    send(fe.cluster().unwrap_or(&cluster), &mut conns, &ev_tx, &security, to, wire::encode(&msg))
                }
                FeEffect::FetchViews { to } => {
                    let map = fe.cluster().unwrap_or(&cluster);
                    send(map, &mut conns, &ev_tx, &security, to, wire::encode(&ClientMsg::GetViews))
                }
            }
        }
        if !cmds_open && waiting.is_empty() && backlog.is_empty() {
            return;
        }
    }
}

fn on_cmd(fe: &mut FrontEnd, backlog: &mut std::collections::VecDeque<(Op, Consistency, OpReplyTx)>, cmd: Cmd) {
    match cmd {
        Cmd::Op(op, consistency, tx) => backlog.push_back((op, consistency, tx)),
        Cmd::Token(tx) => {
            let _ = tx.send(fe.token());
        }
        Cmd::ObserveToken(token) => fe.observe_token(&token),
        Cmd::SpreadLinearizable(spread) => fe.set_spread_linearizable(spread),
        Cmd::Views(tx) => {
            let _ = tx.send((fe.cluster().cloned(), fe.views().clone()));
        }
    }
}

fn send(
    cluster: &ClusterMap,
    conns: &mut HashMap<NodeId, mpsc::Sender<Vec<u8>>>,
    events: &mpsc::UnboundedSender<Event>,
    security: &ClientSecurity,
    to: NodeId,
    payload: Vec<u8>,
) {
    let Some(addrs) = cluster.nodes.get(&to) else { return };
    let tx = conns.entry(to).or_insert_with(|| spawn_conn(to, addrs.client.clone(), events.clone(), security.clone()));
    if tx.try_send(payload).is_err() {
        // A full or dead queue: the attempt times out and is retried.
        conns.remove(&to);
    }
}

/// One page of a cluster-wide key listing (`Client::scan_page`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys of one group, in byte order.
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts: `None` once every group was listed.
    pub next: Option<ScanCursor>,
    /// How many keys the group just listed holds.
    pub group_total: u64,
}

/// A position in a cluster-wide key listing: the group (by its position in
/// the cluster map) and the last key listed there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanCursor {
    /// The group being listed, by its position in the cluster map's groups.
    pub group_index: usize,
    /// The last key listed in that group (`None`: start at its first key).
    pub after: Option<Vec<u8>>,
}

// Key listing (the Redis front end's KEYS, SCAN and DBSIZE): each group's
// leader lists a page of its keys (`Op::Scan`); these walk every group of
// the map in turn. Not a snapshot: keys written during a listing may or may
// not appear.
impl Client {
    /// A page of at most `limit` keys (at most `limits::MAX_SCAN_KEYS`),
    /// starting at `from` (`None`: the first group's first key).
    pub async fn scan_page(&self, from: Option<ScanCursor>, limit: u32) -> Result<ScanPage, Error> {
        let cursor = from.unwrap_or(ScanCursor { group_index: 0, after: None });
        let groups = &self.cluster.groups;
        let Some(spec) = groups.get(cursor.group_index) else {
            return Ok(ScanPage { keys: Vec::new(), next: None, group_total: 0 });
        };
        let op = Op::Scan { group: spec.id, after: cursor.after.clone(), limit };
        let (keys, total) = match self.execute(op).await? {
            OpResult::Scanned { keys, total } => (keys.into_iter().map(|k| k.into_vec()).collect::<Vec<_>>(), total),
            other => return Err(Error::Other(format!("unexpected result {other:?}"))),
        };
        let next = if (keys.len() as u64) < limit as u64 {
            // The group is done: the next page starts at the next group.
            (cursor.group_index + 1 < groups.len())
                .then_some(ScanCursor { group_index: cursor.group_index + 1, after: None })
        } else {
            Some(ScanCursor { group_index: cursor.group_index, after: keys.last().cloned() })
        };
        Ok(ScanPage { keys, next, group_total: total })
    }

    /// How many keys the cluster holds: the sum of every group's count, as
    /// each group's leader knows it when asked.
    pub async fn key_count(&self) -> Result<u64, Error> {
        let mut total = 0;
        for g in &self.cluster.groups {
            match self.execute(Op::Scan { group: g.id, after: None, limit: 0 }).await? {
                OpResult::Scanned { total: n, .. } => total += n,
                other => return Err(Error::Other(format!("unexpected result {other:?}"))),
            }
        }
        Ok(total)
    }
}
