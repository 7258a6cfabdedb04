//! The node's counters and histograms: events the runtime sees (client
//! requests and their replies, commits, view changes, config-store rounds,
//! snapshot chunks) and the WAL's writes and fsyncs.
//!
//! It owns the metric handles, registered once with the process's global
//! `metrics` recorder (`pactdb-http` installs a Prometheus one before the
//! node starts; without one every handle is a no-op). It must never
//! allocate or take a lock per operation on the hot path: handles are
//! looked up once, labelled series are kept in fixed arrays or small maps
//! keyed by group, and the request-latency table is bounded. Gauges the core
//! already knows (roles, epochs, indexes, prepared transactions, locks,
//! sessions) are not kept here: the exporter reads them from the node's
//! status at scrape time.

use metrics::{counter, histogram, Counter, Histogram};
use pactdb_core::state::op::Op;
use pactdb_core::types::{GroupId, RequestId};
use pactdb_core::wire::{ClientMsg, ClientReply, PeerBody, PeerMsg, WalRecord};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Requests whose latency is being timed at most (from the client message
/// to the node's reply). Beyond it new requests are counted but not timed:
/// the table must not grow with a flood of requests that get no answer.
pub const MAX_TIMED_REQUESTS: usize = 64 * 1024;
/// A timed request with no reply after this long is forgotten (its group
/// redirected it elsewhere, or its connection closed).
pub const TIMED_REQUEST_MAX_AGE: Duration = Duration::from_secs(60);

/// Set by [`enable`]: without a recorder the runtime skips its bookkeeping
/// (request timing) altogether.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Says a recorder is installed (`pactdb-http` calls it right after): the
/// runtime then times requests too.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What a client message asks for, as the `op` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum OpKind {
    Get,
    Put,
    Delete,
    Cas,
    Txn,
    TxnStatus,
    Other,
    Admin,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::Get,
        OpKind::Put,
        OpKind::Delete,
        OpKind::Cas,
        OpKind::Txn,
        OpKind::TxnStatus,
        OpKind::Other,
        OpKind::Admin,
    ];

    pub fn label(self) -> &'static str {
        match self {
            OpKind::Get => "get",
            OpKind::Put => "put",
            OpKind::Delete => "delete",
            OpKind::Cas => "cas",
            OpKind::Txn => "txn",
            OpKind::TxnStatus => "txn_status",
            OpKind::Other => "other",
            OpKind::Admin => "admin",
        }
    }

    fn of_op(op: &Op) -> OpKind {
        match op {
            Op::Get { .. } => OpKind::Get,
            Op::Put { .. } => OpKind::Put,
            Op::Delete { .. } => OpKind::Delete,
            Op::Cas { .. } => OpKind::Cas,
            Op::Commit(_) => OpKind::Txn,
            Op::TxnStatus { .. } => OpKind::TxnStatus,
            #[allow(unreachable_patterns)]
            _ => OpKind::Other,
        }
    }
}

/// Per op: requests received, replies that carried a result, replies that
/// carried an error, and the latency histogram.
struct OpSeries {
    requests: Counter,
    ok: Counter,
    error: Counter,
    seconds: Histogram,
}

/// Every handle, registered once.
pub struct NodeMetrics {
    ops: Vec<OpSeries>,
    /// Client messages that are not operations (views, status, admin).
    other_msgs: Counter,
    pub wal_bytes: Counter,
    pub wal_records: Counter,
    pub wal_fsync_seconds: Histogram,
    pub snapshot_chunks_sent: Counter,
    pub snapshot_bytes_sent: Counter,
    pub snapshot_chunks_received: Counter,
    pub snapshot_bytes_received: Counter,
    pub snapshots_written: Counter,
    pub snapshot_write_seconds: Histogram,
    pub config_rounds: Counter,
}

/// The process's metric handles. The recorder must be installed before the
/// first call (handles taken earlier stay no-ops).
pub fn get() -> &'static NodeMetrics {
    static METRICS: OnceLock<NodeMetrics> = OnceLock::new();
    METRICS.get_or_init(NodeMetrics::register)
}

impl NodeMetrics {
    fn register() -> NodeMetrics {
        describe();
        let ops = OpKind::ALL
            .iter()
            .map(|k| {
                let op = k.label();
                OpSeries {
                    requests: counter!("pactdb_client_requests_total", "op" => op),
                    ok: counter!("pactdb_client_responses_total", "op" => op, "result" => "ok"),
                    error: counter!("pactdb_client_responses_total", "op" => op, "result" => "error"),
                    seconds: histogram!("pactdb_client_request_duration_seconds", "op" => op),
                }
            })
            .collect();
        NodeMetrics {
            ops,
            other_msgs: counter!("pactdb_client_messages_total", "kind" => "query"),
            wal_bytes: counter!("pactdb_wal_bytes_written_total"),
            wal_records: counter!("pactdb_wal_records_written_total"),
            wal_fsync_seconds: histogram!("pactdb_wal_fsync_duration_seconds"),
            snapshot_chunks_sent: counter!("pactdb_snapshot_chunks_total", "direction" => "sent"),
            snapshot_bytes_sent: counter!("pactdb_snapshot_bytes_total", "direction" => "sent"),
            snapshot_chunks_received: counter!("pactdb_snapshot_chunks_total", "direction" => "received"),
            snapshot_bytes_received: counter!("pactdb_snapshot_bytes_total", "direction" => "received"),
            snapshots_written: counter!("pactdb_snapshots_written_total"),
            snapshot_write_seconds: histogram!("pactdb_snapshot_write_duration_seconds"),
            config_rounds: counter!("pactdb_config_rounds_total"),
        }
    }

    fn op(&self, kind: OpKind) -> &OpSeries {
        &self.ops[kind as usize]
    }
}

fn describe() {
    use metrics::{describe_counter, describe_histogram, Unit};
    describe_counter!("pactdb_client_requests_total", "Client operations received by this node, by op");
    describe_counter!(
        "pactdb_client_responses_total",
        "Replies this node sent to timed client operations, by op and result (ok: an answer; error: a refusal \
         such as not-leader, which the front end retries elsewhere)"
    );
    describe_histogram!(
        "pactdb_client_request_duration_seconds",
        Unit::Seconds,
        "From a client operation's arrival at this node to its reply (a write: once every member holds it durably)"
    );
    describe_counter!("pactdb_client_messages_total", "Client messages that are not operations (views, status, admin)");
    describe_counter!("pactdb_wal_bytes_written_total", Unit::Bytes, "Record bytes appended to the WAL");
    describe_counter!("pactdb_wal_records_written_total", "Records appended to the WAL");
    describe_histogram!("pactdb_wal_fsync_duration_seconds", Unit::Seconds, "Time of each WAL fdatasync");
    describe_counter!("pactdb_commits_total", "Log entries this node's replica of the group saw committed");
    describe_counter!("pactdb_view_changes_total", "New views (epochs) of the group this node learned of");
    describe_counter!(
        "pactdb_elections_total",
        "Views of the group this node won in the config store and announced (it took the group over, or changed \
         its view as its leader)"
    );
    describe_counter!(
        "pactdb_config_rounds_total",
        "Config-store (CASPaxos) rounds this node's proposer started (reads and changes of views and the map)"
    );
    describe_counter!("pactdb_snapshot_chunks_total", "Snapshot stream chunks, sent to or received from a peer");
    describe_counter!("pactdb_snapshot_bytes_total", Unit::Bytes, "Snapshot stream bytes, sent or received");
    describe_counter!("pactdb_snapshots_written_total", "Local snapshots of the node's state written to disk");
    describe_histogram!(
        "pactdb_snapshot_write_duration_seconds",
        Unit::Seconds,
        "Time to serialize and write one local snapshot"
    );
}

/// The runtime's per-node bookkeeping for metrics that need state: request
/// timing, per-group commit and epoch marks, the last ballot.
pub struct RuntimeMetrics {
    /// Whether a recorder is installed (read once, at start).
    enabled: bool,
    m: &'static NodeMetrics,
    timed: HashMap<(u64, RequestId), (Instant, OpKind)>,
    last_sweep: Instant,
    /// Per group: the commit index last counted, and its counter.
    commits: HashMap<GroupId, (u64, Counter)>,
    /// Per group: the newest epoch seen, and its counter.
    views: HashMap<GroupId, (u64, Counter)>,
    /// Per group: the newest epoch this node announced, and its counter.
    won: HashMap<GroupId, (u64, Counter)>,
    last_ballot: Option<pactdb_core::wire::Ballot>,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        RuntimeMetrics {
            enabled: ENABLED.load(Ordering::Relaxed),
            m: get(),
            timed: HashMap::new(),
            last_sweep: Instant::now(),
            commits: HashMap::new(),
            views: HashMap::new(),
            won: HashMap::new(),
            last_ballot: None,
        }
    }
}

impl RuntimeMetrics {
    /// A client message arrived on connection `token`.
    pub fn on_client_msg(&mut self, token: u64, msg: &ClientMsg) {
        if !self.enabled {
            return;
        }
        match msg {
            ClientMsg::Request(req) => {
                let kind = OpKind::of_op(&req.op);
                self.m.op(kind).requests.increment(1);
                if self.timed.len() < MAX_TIMED_REQUESTS {
                    self.timed.insert((token, req.id), (Instant::now(), kind));
                }
            }
            ClientMsg::GetViews | ClientMsg::GetStatus | ClientMsg::GetNodeInfo => self.m.other_msgs.increment(1),
            _ => self.m.op(OpKind::Admin).requests.increment(1),
        }
    }

    /// The node replies on connection `token`.
    pub fn on_reply(&mut self, token: u64, reply: &ClientReply) {
        if !self.enabled {
            return;
        }
        if let ClientReply::Response { id, result, .. } = reply {
            if let Some((began, kind)) = self.timed.remove(&(token, *id)) {
                let op = self.m.op(kind);
                op.seconds.record(began.elapsed().as_secs_f64());
                if result.is_ok() {
                    op.ok.increment(1)
                } else {
                    op.error.increment(1)
                }
            }
        }
        if self.timed.len() > MAX_TIMED_REQUESTS / 2 && self.last_sweep.elapsed() > TIMED_REQUEST_MAX_AGE / 4 {
            self.last_sweep = Instant::now();
            self.timed.retain(|_, (began, _)| began.elapsed() < TIMED_REQUEST_MAX_AGE);
        }
    }

    /// A peer message this node sends.
    pub fn on_send(&mut self, msg: &PeerMsg) {
        if !self.enabled {
            return;
        }
        match &msg.body {
            PeerBody::SnapshotChunk { data, .. } => {
                self.m.snapshot_chunks_sent.increment(1);
                self.m.snapshot_bytes_sent.increment(data.len() as u64);
            }
            // One round asks every acceptor: count it once.
            PeerBody::Prepare { ballot, .. } if self.last_ballot != Some(*ballot) => {
                self.last_ballot = Some(*ballot);
                self.m.config_rounds.increment(1);
            }
            PeerBody::ViewAnnounce { view } => {
                // Sent to every peer: count the view once.
                let (won, counter) = self
                    .won
                    .entry(view.group)
                    .or_insert_with(|| (0, counter!("pactdb_elections_total", "group" => view.group.to_string())));
                if view.epoch > *won {
                    *won = view.epoch;
                    counter.increment(1);
                }
                self.on_view(view.group, view.epoch)
            }
            _ => {}
        }
    }

    /// A peer message this node received.
    pub fn on_peer(&mut self, msg: &PeerMsg) {
        if !self.enabled {
            return;
        }
        match &msg.body {
            PeerBody::SnapshotChunk { data, .. } => {
                self.m.snapshot_chunks_received.increment(1);
                self.m.snapshot_bytes_received.increment(data.len() as u64);
            }
            PeerBody::ViewAnnounce { view } => self.on_view(view.group, view.epoch),
            _ => {}
        }
    }

    fn on_view(&mut self, group: GroupId, epoch: u64) {
        let (seen, counter) = self
            .views
            .entry(group)
            .or_insert_with(|| (0, counter!("pactdb_view_changes_total", "group" => group.to_string())));
        if epoch > *seen {
            // The first view heard of is a change too (the node started, or
            // the group is new to it).
            counter.increment(1);
            *seen = epoch;
        }
    }

    /// A record the node persists.
    pub fn on_persist(&mut self, record: &WalRecord) {
        if !self.enabled {
            return;
        }
        if let WalRecord::Commit { group, index } = record {
            // The first mark after a start is the base: what was committed
            // before it (before a restart, in a replayed WAL) is not counted.
            let (counted, counter) = self
                .commits
                .entry(*group)
                .or_insert_with(|| (*index, counter!("pactdb_commits_total", "group" => group.to_string())));
            if *index > *counted {
                counter.increment(*index - *counted);
                *counted = *index;
            }
        }
    }
}
