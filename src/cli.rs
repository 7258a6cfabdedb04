//! Command-line parsing and the client commands. Errors are printed for
//! people, and the exit code says what happened: 0 success, 1 error,
//! 2 bad usage, 3 not found, a failed compare-and-set or an aborted
//! transaction, 4 a transaction whose outcome is unknown.

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser, Subcommand};
use pactdb_client::{Client, Committed, Consistency, Error, Served, SessionToken, Txn, TxnError, TxnId, TxnOutcome};
use pactdb_core::fe::FeError;
use pactdb_core::types::NodeId;
use pactdb_http::json::JsonValue;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_DATA_DIR: &str = "pactdb-data";
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
/// A missing key, a failed compare-and-set, or a transaction that did not
/// commit: the command ran, and the answer is "no".
pub const EXIT_NOT_FOUND: i32 = 3;
/// The cluster did not say whether a transaction committed; `txn-status`
/// asks again later.
pub const EXIT_OUTCOME_UNKNOWN: i32 = 4;

#[derive(Parser, Debug)]
#[command(name = "pactdb", version, about = "pactdb: a replicated, transactional key-value store")]
pub struct Cli {
    /// Client addresses of nodes to contact (comma-separated). Default: the
    /// cluster that `pactdb demo` wrote to ./pactdb-data/cluster.json, else
    /// 127.0.0.1:7101-7103.
    #[arg(long, global = true, env = "PACTDB_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// TLS credentials: a dir with ca.crt and, for client commands,
    /// client.crt and client.key (`pactdb certs issue client`), for `node`
    /// node.crt and node.key (`pactdb certs issue node`). Default for client
    /// commands: the certs `pactdb demo` recorded in ./pactdb-data/cluster.json.
    #[arg(long, global = true, env = "PACTDB_CERTS_DIR", value_name = "DIR", conflicts_with = "insecure")]
    pub certs_dir: Option<PathBuf>,
    /// Plaintext connections, no TLS: only for nodes started with
    /// --insecure (and `demo --insecure` starts its nodes so).
    #[arg(long, global = true, env = "PACTDB_INSECURE", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The longest VALUE argument `put` and `cas` take: 128 KiB, what Linux
/// lets one argument carry (MAX_ARG_STRLEN), so a value that works on one
/// machine does not fail on another for its size. Larger values, up to the
/// value limit (`MAX_VALUE_BYTES`, 1 MiB), go through `--value-file`.
pub const MAX_VALUE_ARG_BYTES: usize = 128 * 1024;

/// A value to write: the VALUE argument or `--value-file` (exactly one).
#[derive(clap::Args, Debug, Clone)]
pub struct ValueArgs {
    /// The value, as text (at most 128 KiB; larger or binary values: --value-file).
    #[arg(required_unless_present = "value_file")]
    value: Option<String>,
    /// Read the value's bytes from FILE (`-`: stdin), unchanged: binary
    /// values and values up to the 1 MiB limit.
    #[arg(long, value_name = "FILE", conflicts_with = "value")]
    value_file: Option<PathBuf>,
}

/// `--token`, on every single-key command.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct TokenArgs {
    /// Also print `token=GROUP:INDEX`, this client's session token after
    /// the command: hand it to `pactdb get --after` and that read sees at
    /// least what this command did (printed to stderr with --json).
    #[arg(long = "token")]
    print: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one pactdb node (a replica manager and config-store member).
    /// Needs --certs-dir DIR (TLS: DIR/ca.crt, DIR/node.crt, DIR/node.key)
    /// or --insecure (plaintext).
    Node(NodeArgs),
    /// Certificates for a test cluster: `certs init --dir DIR` creates a CA,
    /// `certs issue node --dir DIR --id N --out OUT` and `certs issue
    /// client --dir DIR --out OUT` sign node and client certificates.
    Certs(crate::certs::CertsArgs),
    /// Start a local cluster on 127.0.0.1 as child processes, bootstrap it,
    /// and keep it running until Ctrl-C.
    Demo(crate::demo::DemoArgs),
    /// Initialise a cluster of nodes started by hand with `pactdb node`:
    /// asks every node of --endpoints (all of them, client addresses) who it
    /// is, checks they were started with the same --peers, and stores the
    /// cluster map and the groups' first views. Running it again with the
    /// same nodes and options is harmless; other options are refused.
    Bootstrap(crate::bootstrap::BootstrapArgs),
    /// Write a value: VALUE, or the bytes of --value-file (any bytes, up to
    /// the 1 MiB value limit).
    #[command(
        override_usage = "pactdb put [OPTIONS] <KEY> <VALUE>\n       pactdb put [OPTIONS] <KEY> --value-file <FILE>"
    )]
    Put {
        key: String,
        #[command(flatten)]
        value: ValueArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Read a value (exit code 3 if the key does not exist).
    Get {
        key: String,
        /// Print `{"key":..,"value":..,"version":..}`: the version is what
        /// `cas` and `txn --if` compare. A value that is not UTF-8 comes as
        /// `value_base64` instead of `value`; a missing key as value null,
        /// version 0. Session and stale reads add `served_by` (and
        /// `stale_ms`).
        #[arg(long)]
        json: bool,
        /// Write the value's bytes to stdout exactly as stored: no newline,
        /// no escaping, no version (like etcdctl's `--print-value-only`
        /// and redis-cli's `--raw`); for binary values and files. A missing
        /// key prints nothing on stdout (exit 3).
        #[arg(long, conflicts_with = "json")]
        raw: bool,
        /// How fresh the value must be. `linearizable`: never older than
        /// the latest write acknowledged before the read began (the primary
        /// answers, or a backup once it applied the primary's read index).
        /// `session`: any member that has applied what this client (and the
        /// token of --after) saw. `stale=MS` (`stale`: 1000): any member
        /// whose state is at most MS old; stderr says how old it was.
        #[arg(long, default_value = "linearizable", value_name = "LEVEL")]
        consistency: Consistency,
        /// A session token another client printed (`--token`): this read
        /// sees at least what that client had seen (causal order). Applies
        /// to linearizable and session reads.
        #[arg(long, value_name = "TOKEN")]
        after: Option<SessionToken>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Delete a key (exit code 3 if it did not exist).
    Delete {
        key: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Set a value only if the key's version is EXPECTED_VERSION (0: the key
    /// must not exist). Exit code 3 if the version differs.
    #[command(override_usage = "pactdb cas [OPTIONS] <KEY> <EXPECTED_VERSION> <VALUE>\n       \
                                pactdb cas [OPTIONS] <KEY> <EXPECTED_VERSION> --value-file <FILE>")]
    Cas {
        key: String,
        expected_version: u64,
        #[command(flatten)]
        value: ValueArgs,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Run one transaction: gets read at once (in order), puts and deletes
    /// are buffered, and the commit is atomic over every group. Exit 0
    /// committed, 3 aborted (nothing written), 4 outcome unknown.
    #[command(after_help = TXN_HELP)]
    Txn(TxnArgs),
    /// What became of a transaction: COMMITTED (exit 0) or ABORTED (exit 3).
    /// A transaction its coordinator has no record of is recorded as
    /// aborted first, so the answer is final either way.
    TxnStatus {
        /// The id `pactdb txn` printed (CLIENT-SESSION-SEQ@GROUP).
        txn: TxnId,
        /// Print `{"txn":..,"outcome":..,"reason":..,"versions":{..}}`.
        #[arg(long)]
        json: bool,
    },
    /// Show nodes, groups, views, per member its role, indexes and state
    /// digest, and per group the prepared (in-doubt) transactions and locks.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Operator commands that change a running cluster:
    /// `admin transfer-leader --group G --to N`,
    /// `admin move-replica --group G --from A --to B`,
    /// `admin rebalance [--dry-run]`.
    Admin(crate::admin::AdminArgs),
    /// Load generators: `workload run kv` (against pactdb or etcd) and
    /// `workload probe` (write unavailability).
    Workload(crate::workload::WorkloadArgs),
    /// Deterministic simulation: every protocol under faults, from seeds,
    /// with checkers (linearizability, durability, convergence, leadership,
    /// atomicity, serializability, bank, liveness, agreement). Prints `N passed, M failed`; exit 0 iff none failed.
    Sim(pactdb_sim::SimArgs),
    /// Faults across hosts, checked: a workload against the container
    /// cluster of deploy/up.sh while faults are injected one at a time
    /// (see RELIABILITY.md); prints `N ops, M faults, K anomalies`.
    Chaos(crate::chaos::ChaosArgs),
}

const TXN_HELP: &str = "\
Ops:
  get KEY          read KEY now; the commit succeeds only if it is still at that version
  put KEY VALUE    write VALUE to KEY at commit
  delete KEY       delete KEY at commit (`del` also works)

A key written twice in one transaction keeps its last write. A value that
starts with `-` goes after `--`: pactdb txn -- put k -5

With no OP, ops are read from stdin, one per line, and `commit` or `abort`
ends the transaction (end of input without `commit` discards it). On a line,
the key is one word and a put's value is the rest of the line after the
key and the spaces that follow it, kept as typed. Blank lines and lines
starting with # are skipped. A bad line discards the transaction (exit 2)
unless stdin is a terminal, where it is reported and you carry on.

Examples:
  pactdb txn get a get b put a 70 put b 35
  pactdb txn --if a=12 --if fresh=0 put a 1 put fresh 2
  printf 'get a\\nput a hello world\\ncommit\\n' | pactdb txn";

#[derive(clap::Args, Debug)]
pub struct TxnArgs {
    /// Commit only if KEY is at VERSION then (0: KEY must not exist).
    /// Repeatable; it wins over the version a get of KEY read.
    #[arg(long = "if", value_name = "KEY=VERSION", value_parser = parse_compare)]
    pub compares: Vec<Compare>,
    /// Print the outcome as one JSON object with "txn", "outcome",
    /// "reason", "reads" and "versions"; reading stdin, each get also
    /// prints its read as a JSON line when it runs.
    #[arg(long)]
    pub json: bool,
    /// `get KEY`, `put KEY VALUE` or `delete KEY`, as many as needed; none:
    /// read them from stdin.
    #[arg(value_name = "OP")]
    pub ops: Vec<String>,
}

/// One `--if KEY=VERSION`.
#[derive(Clone, Debug)]
pub struct Compare {
    key: String,
    version: u64,
}

fn parse_compare(s: &str) -> Result<Compare, String> {
    // The last `=` splits, so a key may contain `=` (a version never does).
    let (key, version) =
        s.rsplit_once('=').ok_or_else(|| "expected KEY=VERSION (VERSION 0: the key must not exist)".to_string())?;
    let version = version.parse().map_err(|_| format!("version `{version}` is not a number (expected KEY=VERSION)"))?;
    Ok(Compare { key: key.to_string(), version })
}

#[derive(clap::Args, Debug, Default)]
pub struct NodeArgs {
    /// A TOML file with the same settings (flags given on the command line win).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    pub id: Option<NodeId>,
    /// Where the WAL lives.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address for other nodes (peer traffic).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address for clients.
    #[arg(long)]
    pub client_listen: Option<SocketAddr>,
    /// Every node's peer address, this one included: `1=127.0.0.1:7001,2=...`.
    /// Needed only to bootstrap a new cluster: once a node knows the
    /// cluster map, the map says who its peers are.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Join a running cluster through any of its nodes' client addresses
    /// (`host:port,...`), after `pactdb admin add-node` added this node
    /// with the same --listen and --client-listen addresses.
    #[arg(long, value_delimiter = ',', conflicts_with = "peers")]
    pub join: Vec<String>,
    /// Committed log entries kept in memory to catch up backups; a member
    /// further behind gets a snapshot.
    #[arg(long)]
    pub log_retain_entries: Option<u64>,
    /// WAL bytes written between two snapshots of the node's state (after
    /// each, the WAL the older kept snapshot covers is deleted).
    #[arg(long)]
    pub snapshot_wal_bytes: Option<u64>,
    /// Size at which the WAL starts a new segment file.
    #[arg(long)]
    pub wal_segment_bytes: Option<u64>,
    /// Bytes per second a primary streams one snapshot to a member far
    /// behind (0: unthrottled; default 48 MiB/s), so the group keeps serving.
    #[arg(long)]
    pub snapshot_bytes_per_sec: Option<u64>,
    /// Bytes per chunk of a streamed snapshot (at most 1 MiB, the default).
    #[arg(long)]
    pub snapshot_chunk_bytes: Option<u64>,
    /// Also serve the HTTP API, `/metrics` and the web view on this address
    /// (HTTPS with client certificates under --certs-dir, plain HTTP with
    /// --insecure).
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Serve the Redis protocol (RESP2/RESP3) on this address: any key,
    /// routed to its group (TLS with a client certificate of the cluster CA
    /// unless the node runs --insecure).
    #[arg(long, value_name = "ADDR")]
    pub redis_listen: Option<SocketAddr>,
}

/// The TOML form of `NodeArgs`.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    id: Option<NodeId>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    client_listen: Option<SocketAddr>,
    peers: Option<BTreeMap<String, SocketAddr>>,
    log_retain_entries: Option<u64>,
    snapshot_wal_bytes: Option<u64>,
    wal_segment_bytes: Option<u64>,
    snapshot_bytes_per_sec: Option<u64>,
    snapshot_chunk_bytes: Option<u64>,
    /// `--http-listen`.
    http_listen: Option<SocketAddr>,
    /// `--redis-listen`.
    redis_listen: Option<SocketAddr>,
    /// `--certs-dir`.
    certs_dir: Option<PathBuf>,
    /// `--insecure`.
    insecure: Option<bool>,
}

fn parse_peers(list: &[String]) -> anyhow::Result<BTreeMap<NodeId, SocketAddr>> {
    let mut peers = BTreeMap::new();
    for p in list {
        let (id, addr) = p.split_once('=').with_context(|| format!("peer `{p}` is not of the form ID=HOST:PORT"))?;
        let id: NodeId = id.trim().parse().with_context(|| format!("peer id `{id}` is not a number"))?;
        let addr: SocketAddr =
            addr.trim().parse().with_context(|| format!("peer address `{addr}` is not HOST:PORT"))?;
        if peers.insert(id, addr).is_some() {
            bail!("peer {id} is listed twice");
        }
    }
    Ok(peers)
}

/// How a node secures its connections: `--certs-dir` or `--insecure` on the
/// command line, else `certs_dir` or `insecure = true` in the config file;
/// one of them is required.
fn node_security(
    certs_dir: Option<PathBuf>,
    insecure: bool,
    file: &NodeFile,
) -> anyhow::Result<(pactdb_node::tls::NodeSecurity, Option<PathBuf>)> {
    use pactdb_node::tls::{NodeSecurity, NodeTls};
    let (certs_dir, insecure) = match (certs_dir, insecure) {
        (None, false) => (file.certs_dir.clone(), file.insecure.unwrap_or(false)),
        given => given,
    };
    match (certs_dir, insecure) {
        (Some(_), true) => bail!("--certs-dir and --insecure exclude each other (the config file sets both)"),
        (Some(dir), false) => {
            let tls = NodeTls::load(&dir)?;
            Ok((NodeSecurity::Tls(tls), Some(dir)))
        }
        (None, true) => Ok((NodeSecurity::Insecure, None)),
        (None, false) => bail!(
            "a node needs --certs-dir DIR (TLS with DIR/ca.crt, DIR/node.crt and DIR/node.key; see `pactdb certs`) \
             or --insecure (plaintext connections, no authentication)"
        ),
    }
}

/// What `run_node` needs to start the HTTP server next to the node.
struct HttpPlan {
    listen: SocketAddr,
    certs_dir: Option<PathBuf>,
}

fn node_options(
    args: NodeArgs,
    certs_dir: Option<PathBuf>,
    insecure: bool,
) -> anyhow::Result<(pactdb_node::runtime::NodeOptions, Option<HttpPlan>)> {
    let file: NodeFile = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => NodeFile::default(),
    };
    let (security, certs_dir) = node_security(certs_dir, insecure, &file)?;
    let http = args.http_listen.or(file.http_listen).map(|listen| HttpPlan { listen, certs_dir: certs_dir.clone() });
    let id = args.id.or(file.id).context("--id is required")?;
    let mut peers = parse_peers(&args.peers)?;
    if peers.is_empty() {
        for (k, v) in file.peers.unwrap_or_default() {
            peers.insert(k.parse().with_context(|| format!("peer id `{k}` in the config file is not a number"))?, v);
        }
    }
    let listen = args.listen.or(file.listen).or_else(|| peers.get(&id).copied()).context("--listen is required")?;
    peers.entry(id).or_insert(listen);
    let client_listen = args.client_listen.or(file.client_listen).context("--client-listen is required")?;
    let join_map = if args.join.is_empty() {
        None
    } else {
        // The node talks to the endpoints' client ports as a client, with its
        // own certificate (a node certificate carries clientAuth).
        let client_security = match &certs_dir {
            Some(dir) => pactdb_client::ClientSecurity::Tls(pactdb_client::ClientTls::load_node_identity(dir)?),
            None => pactdb_client::ClientSecurity::Insecure,
        };
        Some(runtime().block_on(join_map(&args.join, id, listen, client_listen, &client_security))?)
    };
    let opts = pactdb_node::runtime::NodeOptions {
        id,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("{DEFAULT_DATA_DIR}/node-{id}"))),
        peer_listen: listen,
        client_listen,
        peers,
        join_map,
        log_retain_entries: args.log_retain_entries.or(file.log_retain_entries),
        snapshot_wal_bytes: args.snapshot_wal_bytes.or(file.snapshot_wal_bytes),
        wal_segment_bytes: args.wal_segment_bytes.or(file.wal_segment_bytes),
        snapshot_bytes_per_sec: args.snapshot_bytes_per_sec.or(file.snapshot_bytes_per_sec),
        snapshot_chunk_bytes: args.snapshot_chunk_bytes.or(file.snapshot_chunk_bytes),
        security,
    };
    Ok((opts, http))
}

/// Starts the HTTP server (`--http-listen`) on a thread of its own, with the
/// node's security: HTTPS requiring a client certificate of the cluster CA
/// (the node's own client acceptor), and the embedded Front End connecting
/// with the node's certificate; plain HTTP only with --insecure. The metrics
/// recorder is installed first, so the node's counters are real.
fn start_http(plan: HttpPlan, opts: &pactdb_node::runtime::NodeOptions) -> anyhow::Result<()> {
    use pactdb_node::tls::NodeSecurity;
    let metrics = pactdb_http::metrics::install()?;
    let security = match (&opts.security, &plan.certs_dir) {
        (NodeSecurity::Tls(tls), Some(dir)) => pactdb_http::HttpSecurity::Tls {
            acceptor: tls.client_acceptor().clone(),
            client: pactdb_client::ClientTls::load_node_identity(dir)?,
        },
        (NodeSecurity::Insecure, _) => pactdb_http::HttpSecurity::Insecure,
        (NodeSecurity::Tls(_), None) => bail!("TLS without a certs dir: cannot give the HTTP front end an identity"),
    };
    // A node listening on every address is reached on loopback.
    let mut node_client = opts.client_listen;
    if node_client.ip().is_unspecified() {
        node_client.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let node_client = node_client.to_string();
    let addr = pactdb_http::spawn(pactdb_http::HttpConfig { listen: plan.listen, node_client, security, metrics })?;
    let scheme = if matches!(opts.security, NodeSecurity::Tls(_)) { "https" } else { "http" };
    tracing::info!(node = opts.id, "HTTP API, /metrics and the web view on {scheme}://{addr}/");
    Ok(())
}

/// How long `node --join` keeps asking the endpoints for the cluster map.
const JOIN_WAIT: Duration = Duration::from_secs(30);

/// The cluster map a joining node starts from, read from any endpoint; it
/// must name this node at the addresses it listens on (`admin add-node`).
async fn join_map(
    endpoints: &[String],
    id: NodeId,
    listen: SocketAddr,
    client_listen: SocketAddr,
    security: &pactdb_client::ClientSecurity,
) -> anyhow::Result<pactdb_core::types::ClusterMap> {
    use pactdb_core::wire::{ClientMsg, ClientReply};
    let deadline = std::time::Instant::now() + JOIN_WAIT;
    // The newest map any endpoint holds: one that has not heard of the
    // add-node yet may still answer with the map before it.
    let map = loop {
        let mut newest: Option<pactdb_core::types::ClusterMap> = None;
        let mut refused = None;
        for ep in endpoints {
            match pactdb_client::call_with(ep, &ClientMsg::GetViews, Duration::from_secs(2), security).await {
                Ok(ClientReply::Views { cluster: Some(c), .. })
                    if newest.as_ref().is_none_or(|n| n.version < c.version) =>
                {
                    newest = Some(c)
                }
                Err(e) if e.to_string().contains("refused the connection") => refused = Some(e),
                _ => {}
            }
        }
        match newest {
            Some(map) if map.nodes.contains_key(&id) || std::time::Instant::now() >= deadline => break map,
            // Refused by TLS: retrying changes nothing.
            None if refused.is_some() => {
                bail!("cannot join: {}", refused.expect("checked"))
            }
            None if std::time::Instant::now() >= deadline => {
                bail!("no node at {} answered with the cluster map; cannot join", endpoints.join(","))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let same = |a: &str, b: SocketAddr| a.parse::<SocketAddr>().is_ok_and(|a| a == b);
    match map.nodes.get(&id) {
        None => bail!(
            "node {id} is not in the cluster map (nodes {:?}); add it first: \
             pactdb admin add-node --id {id} --peer {listen} --client {client_listen}",
            map.nodes.keys().collect::<Vec<_>>()
        ),
        Some(a) if !same(&a.peer, listen) || !same(&a.client, client_listen) => bail!(
            "node {id} is in the cluster map at peer {} and client {}, but this node listens on {listen} and \
             {client_listen}",
            a.peer,
            a.client
        ),
        Some(_) => Ok(map),
    }
}

/// What `pactdb demo` recorded in ./pactdb-data/cluster.json about TLS: its
/// client certs dir, or `Err(())` for a demo started with --insecure.
fn demo_security() -> Option<Result<PathBuf, ()>> {
    let text = std::fs::read_to_string(PathBuf::from(DEFAULT_DATA_DIR).join("cluster.json")).ok()?;
    let info = serde_json::from_str::<crate::demo::ClusterInfo>(&text).ok()?;
    if info.insecure {
        return Some(Err(()));
    }
    info.certs_dir.map(Ok)
}

/// How client commands connect: `--certs-dir`, `--insecure`, else the certs
/// of the demo in ./pactdb-data; with none of these, an error that says
/// what to pass.
pub fn client_security(certs_dir: Option<&PathBuf>, insecure: bool) -> anyhow::Result<pactdb_client::ClientSecurity> {
    use pactdb_client::{ClientSecurity, ClientTls};
    if insecure {
        return Ok(ClientSecurity::Insecure);
    }
    let dir = match certs_dir.cloned().map(Ok).or_else(demo_security) {
        Some(Ok(dir)) => dir,
        Some(Err(())) => return Ok(ClientSecurity::Insecure),
        None => bail!(
            "no TLS credentials: pass --certs-dir DIR (a dir with ca.crt, client.crt and client.key; see `pactdb \
             certs issue client`), or --insecure for a cluster started with --insecure"
        ),
    };
    Ok(ClientSecurity::Tls(ClientTls::load(&dir)?))
}

/// Where client commands connect when `--endpoints` is not given.
pub fn default_endpoints() -> Vec<String> {
    let path = PathBuf::from(DEFAULT_DATA_DIR).join("cluster.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Ok(info) = serde_json::from_str::<crate::demo::ClusterInfo>(&text) {
            return info.nodes.iter().map(|n| n.client.clone()).collect();
        }
    }
    (1..=3).map(|i| format!("127.0.0.1:{}", crate::demo::client_port(i))).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a tokio runtime starts")
}

pub fn run(cli: Cli) -> i32 {
    let endpoints = if cli.endpoints.is_empty() { default_endpoints() } else { cli.endpoints.clone() };
    // Every command that talks to nodes as a client uses this security.
    let security = || client_security(cli.certs_dir.as_ref(), cli.insecure).map(pactdb_client::set_default_security);
    let result = match cli.command {
        Command::Node(args) => run_node(args, cli.certs_dir.clone(), cli.insecure),
        Command::Demo(args) => crate::demo::run(args, cli.insecure),
        Command::Certs(args) => crate::certs::run(args),
        Command::Sim(args) => Ok(pactdb_sim::run_cli(args)),
        // A workload against etcd needs no credentials; against pactdb
        // without them, the nodes' refusal says what to pass.
        Command::Workload(args) => match security() {
            Err(e) if cli.certs_dir.is_some() => Err(e),
            _ => crate::workload::run(args, endpoints),
        },
        cmd => match security() {
            Err(e) => Err(e),
            Ok(()) => match cmd {
                Command::Bootstrap(args) => runtime().block_on(crate::bootstrap::run(args, cli.endpoints.clone())),
                Command::Admin(args) => runtime().block_on(crate::admin::run(args, endpoints)),
                Command::Chaos(args) => crate::chaos::run(args, endpoints),
                cmd => runtime().block_on(client_command(endpoints, cmd)),
            },
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // `{:#}`: the message and its causes, `: `-separated. No error
            // type of ours repeats its source's words in its own message
            // (the client's are transparent or carry no source), so each
            // is said once; tests/cli_errors.rs checks every class.
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PACTDB_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run_node(args: NodeArgs, certs_dir: Option<PathBuf>, insecure: bool) -> anyhow::Result<i32> {
    init_tracing();
    let redis = redis_listen(&args, certs_dir.clone(), insecure)?;
    let (opts, http) = node_options(args, certs_dir, insecure)?;
    if let Some(plan) = http {
        start_http(plan, &opts)?;
    }
    if let Some((listener, certs_dir)) = redis {
        start_redis(listener, certs_dir, &opts)?;
    }
    // One thread runs the event loop and every connection task: the core is
    // single-threaded anyway, and keeping the transport on the same thread
    // saves a cross-thread wake-up per message (the WAL has its own thread).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        pactdb_node::runtime::run_node(opts, shutdown).await
    })?;
    Ok(0)
}

/// Worker threads of the Redis front end's own runtime: it parses, routes
/// and waits on hundreds of connections, off the node's event-loop thread.
const REDIS_THREADS: usize = 2;

/// `--redis-listen` (or `redis_listen` in the config file), bound now so a
/// busy port stops the node at start; with the certs dir the node uses.
fn redis_listen(
    args: &NodeArgs,
    certs_dir: Option<PathBuf>,
    insecure: bool,
) -> anyhow::Result<Option<(std::net::TcpListener, Option<PathBuf>)>> {
    let file: NodeFile = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => NodeFile::default(),
    };
    let Some(addr) = args.redis_listen.or(file.redis_listen) else { return Ok(None) };
    let (_, certs_dir) = node_security(certs_dir, insecure, &file)?;
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("binding the Redis listener (--redis-listen) on {addr}"))?;
    listener.set_nonblocking(true)?;
    Ok(Some((listener, certs_dir)))
}

/// Starts the Redis front end (crates/redis) on its own threads. Its
/// embedded front ends reach the cluster through this node's client port,
/// with the node's own certificate in TLS mode; Redis clients must present
/// a certificate of the cluster CA, as on the client port.
fn start_redis(
    listener: std::net::TcpListener,
    certs_dir: Option<PathBuf>,
    opts: &pactdb_node::runtime::NodeOptions,
) -> anyhow::Result<()> {
    let (tls, client) = match &certs_dir {
        Some(dir) => (
            Some(pactdb_node::tls::NodeTls::load(dir)?.client_acceptor().clone()),
            pactdb_client::ClientOptions::default().tls(pactdb_client::ClientTls::load_node_identity(dir)?),
        ),
        None => (None, pactdb_client::ClientOptions::default().insecure()),
    };
    let mut own = opts.client_listen;
    if own.ip().is_unspecified() {
        own.set_ip(if own.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let node_id = opts.id;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(REDIS_THREADS)
        .thread_name("redis")
        .enable_all()
        .build()?;
    std::thread::Builder::new().name("redis-accept".into()).spawn(move || {
        rt.block_on(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => {
                    let endpoints = vec![own.to_string()];
                    pactdb_redis::serve(pactdb_redis::RedisOptions { listener, endpoints, client, tls, node_id }).await
                }
                Err(e) => tracing::error!("the Redis listener failed: {e}"),
            }
        })
    })?;
    Ok(())
}

async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    Client::connect(endpoints)
        .await
        .with_context(|| format!("cannot reach the cluster at {} (is `pactdb demo` running?)", endpoints.join(",")))
}

/// Prints a usage error the way clap prints its own (message, usage line,
/// `--help` hint) and returns its exit code, 2.
fn usage_error(subcommand: &str, msg: impl std::fmt::Display) -> i32 {
    let mut cmd = Cli::command();
    // Building fills in the subcommand's full name (`pactdb txn`) for its usage line.
    cmd.build();
    let err = match cmd.find_subcommand_mut(subcommand) {
        Some(sub) => sub.error(clap::error::ErrorKind::InvalidValue, msg),
        None => cmd.error(clap::error::ErrorKind::InvalidValue, msg),
    };
    let _ = err.print();
    EXIT_USAGE
}

async fn client_command(endpoints: Vec<String>, cmd: Command) -> anyhow::Result<i32> {
    // Everything that can be checked without the cluster is checked before
    // connecting: bad usage changes nothing and needs no cluster.
    if let Command::Txn(args) = cmd {
        let ops = match parse_ops(&args.ops) {
            Ok(ops) => ops,
            Err(msg) => return Ok(usage_error("txn", msg)),
        };
        let mut compares: BTreeMap<&str, u64> = BTreeMap::new();
        for c in &args.compares {
            if compares.insert(&c.key, c.version).is_some_and(|v| v != c.version) {
                return Ok(usage_error("txn", format!("--if names key `{}` at two versions", c.key)));
            }
        }
        let client = connect(&endpoints).await?;
        let mut session = Session::new(&client, args.json);
        for c in &args.compares {
            session.txn.when(c.key.clone(), c.version);
        }
        return if ops.is_empty() { txn_from_stdin(session).await } else { txn_from_args(session, ops).await };
    }
    // The value to write is read (and its size checked) before connecting
    // too: a file over the limit is refused without a word to the cluster.
    let mut value = match &cmd {
        Command::Put { value, .. } | Command::Cas { value, .. } => match read_value(value) {
            Ok(bytes) => Some(bytes),
            Err(ValueError::Usage(msg)) => {
                return Ok(usage_error(if matches!(cmd, Command::Put { .. }) { "put" } else { "cas" }, msg))
            }
            Err(ValueError::Other(e)) => return Err(e),
        },
        _ => None,
    };
    let client = connect(&endpoints).await?;
    match cmd {
        Command::Put { key, token, .. } => {
            let value = value.take().expect("a put's value is read before connecting");
            let version = client.put(key, value).await?;
            println!("OK version={version}");
            print_token(&client, token, false).await?;
        }
        Command::Get { key, json, raw, consistency, after, token } => {
            if let Some(after) = after {
                client.observe_token(after).await?;
            }
            let read = client.get_with(key.clone(), consistency).await?;
            let found = read.value;
            if json {
                let version = found.as_ref().map_or(0, |v| v.version);
                let mut out = JsonRead::new(Some(&key), found.as_ref().map(|v| v.value.as_slice()), Some(version));
                out.served_by = read.served.map(|s| s.by);
                out.stale_ms = read.served.and_then(|s| s.stale_ms);
                println!("{}", serde_json::to_string(&out)?);
            } else {
                if let Some(v) = &found {
                    if raw {
                        use std::io::Write;
                        let mut out = std::io::stdout().lock();
                        out.write_all(&v.value).and_then(|()| out.flush()).context("writing the value to stdout")?;
                    } else {
                        println!("{}", show(&v.value));
                    }
                }
                match read.served {
                    Some(Served { by, stale_ms: Some(ms) }) => {
                        eprintln!("(served by node {by}; its state was at most {ms} ms old)")
                    }
                    Some(Served { by, stale_ms: None }) => eprintln!("(served by node {by})"),
                    None => {}
                }
                if found.is_none() {
                    eprintln!("key `{key}` not found");
                }
            }
            print_token(&client, token, json).await?;
            if found.is_none() {
                return Ok(EXIT_NOT_FOUND);
            }
        }
        Command::Delete { key, token } => {
            if !client.delete(key.clone()).await? {
                eprintln!("key `{key}` not found");
                return Ok(EXIT_NOT_FOUND);
            }
            println!("OK");
            print_token(&client, token, false).await?;
        }
        Command::Cas { key, expected_version, token, .. } => {
            let value = value.take().expect("a cas's value is read before connecting");
            match client.cas(key, expected_version, value).await? {
                Ok(version) => {
                    println!("OK version={version}");
                    print_token(&client, token, false).await?;
                }
                Err(current) => {
                    eprintln!("version mismatch: expected {expected_version}, current {current}");
                    return Ok(EXIT_NOT_FOUND);
                }
            }
        }
        Command::TxnStatus { txn, json } => return txn_status(&client, txn, json).await,
        Command::Status { json } => return crate::demo::print_status(&client, json).await,
        Command::Txn(_) => unreachable!("handled before connecting"),
        Command::Node(_)
        | Command::Certs(_)
        | Command::Demo(_)
        | Command::Bootstrap(_)
        | Command::Workload(_)
        | Command::Sim(_)
        | Command::Admin(_)
        | Command::Chaos(_) => {
            unreachable!("handled in run")
        }
    }
    Ok(0)
}

/// Why `put` or `cas` has no value to write; nothing was written.
enum ValueError {
    /// Bad usage (exit 2): a VALUE argument too long to be portable.
    Usage(String),
    /// The file could not be read, or holds more than the value limit.
    Other(anyhow::Error),
}

/// The value `put` or `cas` writes: the VALUE argument (at most
/// [`MAX_VALUE_ARG_BYTES`]) or the bytes of `--value-file` (`-`: stdin),
/// read up to one byte past the value limit so that an endless stdin or a
/// huge file is refused without being read whole.
fn read_value(args: &ValueArgs) -> Result<Vec<u8>, ValueError> {
    use pactdb_core::limits::MAX_VALUE_BYTES;
    use std::io::Read;
    let path = match (&args.value, &args.value_file) {
        (Some(v), _) if v.len() > MAX_VALUE_ARG_BYTES => {
            return Err(ValueError::Usage(format!(
                "a VALUE argument of {} bytes is longer than {MAX_VALUE_ARG_BYTES} bytes (128 KiB, what one \
                 argument can carry); pass the value with --value-file FILE (`-` reads stdin)",
                v.len()
            )))
        }
        (Some(v), _) => return Ok(v.as_bytes().to_vec()),
        (None, Some(path)) => path,
        // clap requires one of the two.
        (None, None) => return Err(ValueError::Usage("a VALUE or --value-file FILE is required".to_string())),
    };
    let stdin = path.as_os_str() == "-";
    let name = if stdin { "stdin".to_string() } else { path.display().to_string() };
    let place = if stdin { "on" } else { "in" };
    let mut bytes = Vec::new();
    let limit = MAX_VALUE_BYTES as u64 + 1;
    let read = if stdin {
        std::io::stdin().lock().take(limit).read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut bytes))
    };
    read.with_context(|| format!("reading the value from {name}")).map_err(ValueError::Other)?;
    if bytes.len() > MAX_VALUE_BYTES {
        return Err(ValueError::Other(anyhow::anyhow!(
            "the value {place} {name} is larger than the limit of {MAX_VALUE_BYTES} bytes (1 MiB); nothing was written"
        )));
    }
    Ok(bytes)
}

/// A value for people: UTF-8 as it is, and each byte that is not part of
/// valid UTF-8 as `\xNN`, so a binary value prints as readable text rather
/// than as raw bytes (which `from_utf8_lossy` would turn into U+FFFD and
/// lose). `--json` gives the exact bytes.
fn show(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => {
            let mut out = String::new();
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            Cow::Owned(out)
        }
    }
}

/// What `get --json` prints, and each entry of a transaction's `reads`
/// (without `key`). A missing key: value null, version 0. `version` is null
/// only for a get of a key the transaction itself wrote (not committed yet).
#[derive(Serialize)]
struct JsonRead {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(flatten)]
    value: JsonValue,
    version: Option<u64>,
    /// Session and stale reads: the member that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    served_by: Option<NodeId>,
    /// Stale reads: how old the member's state was at most.
    #[serde(skip_serializing_if = "Option::is_none")]
    stale_ms: Option<u64>,
}

impl JsonRead {
    fn new(key: Option<&str>, value: Option<&[u8]>, version: Option<u64>) -> JsonRead {
        JsonRead {
            key: key.map(str::to_string),
            value: JsonValue::new(value),
            version,
            served_by: None,
            stale_ms: None,
        }
    }
}

/// Prints the client's session token if `--token` asked for it (to stderr
/// when stdout carries JSON).
async fn print_token(client: &Client, args: TokenArgs, json: bool) -> anyhow::Result<()> {
    if args.print {
        let token = client.token().await?;
        if json {
            eprintln!("token={token}");
        } else {
            println!("token={token}");
        }
    }
    Ok(())
}

/// What `txn --json` and `txn-status --json` print.
#[derive(Serialize)]
struct JsonTxn {
    txn: Option<String>,
    outcome: &'static str,
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reads: Option<BTreeMap<String, JsonRead>>,
    versions: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum TxnOp {
    Get(String),
    Put(String, String),
    Delete(String),
}

const OPS_EXPECTED: &str = "expected `get KEY`, `put KEY VALUE` or `delete KEY`";

/// The ops given as arguments, all checked before anything runs.
fn parse_ops(words: &[String]) -> Result<Vec<TxnOp>, String> {
    let mut ops = Vec::new();
    let mut words = words.iter();
    while let Some(op) = words.next() {
        let mut next = |what: &str| words.next().cloned().ok_or_else(|| format!("`{op}` needs {what}"));
        ops.push(match op.as_str() {
            "get" => TxnOp::Get(next("a KEY: get KEY")?),
            "put" => {
                let key = next("a KEY and a VALUE: put KEY VALUE")?;
                TxnOp::Put(key, next("a VALUE: put KEY VALUE")?)
            }
            "delete" | "del" => TxnOp::Delete(next("a KEY: delete KEY")?),
            other => return Err(format!("unknown op `{other}` ({OPS_EXPECTED})")),
        });
    }
    Ok(ops)
}

/// One line of a transaction read from stdin.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Op(TxnOp),
    Commit,
    Abort,
    Skip,
}

/// Splits off the first word (up to whitespace); the rest loses the
/// whitespace that follows the word.
fn first_word(s: &str) -> (&str, &str) {
    match s.find(char::is_whitespace) {
        Some(i) => (&s[..i], s[i..].trim_start()),
        None => (s, ""),
    }
}

/// Reads one stdin line (without its line ending). A key is one word; a
/// put's value is everything after the key and the whitespace after it,
/// kept as typed (inner and trailing spaces too), so values with spaces
/// need no quoting.
fn parse_line(line: &str) -> Result<Line, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(Line::Skip);
    }
    let (op, rest) = first_word(line);
    let one_key = |usage: &str| {
        let (key, extra) = first_word(rest);
        if key.is_empty() {
            Err(format!("`{op}` needs a KEY: {usage}"))
        } else if !extra.trim().is_empty() {
            Err(format!("`{op}` takes one KEY (a key is one word): {usage}"))
        } else {
            Ok(key.to_string())
        }
    };
    let nothing = |line: Line| {
        if rest.trim().is_empty() {
            Ok(line)
        } else {
            Err(format!("`{op}` takes nothing after it"))
        }
    };
    match op {
        "get" => Ok(Line::Op(TxnOp::Get(one_key("get KEY")?))),
        "delete" | "del" => Ok(Line::Op(TxnOp::Delete(one_key("delete KEY")?))),
        "put" => {
            let (key, value) = first_word(rest);
            if key.is_empty() {
                Err("`put` needs a KEY and a VALUE: put KEY VALUE".to_string())
            } else if value.is_empty() {
                Err("`put` needs a VALUE after the key: put KEY VALUE".to_string())
            } else {
                Ok(Line::Op(TxnOp::Put(key.to_string(), value.to_string())))
            }
        }
        "commit" => nothing(Line::Commit),
        "abort" => nothing(Line::Abort),
        other => Err(format!("unknown op `{other}` ({OPS_EXPECTED}, then `commit` or `abort`)")),
    }
}

/// A transaction being built from the command line or stdin, and what the
/// CLI remembers to print about it.
struct Session {
    txn: Txn,
    json: bool,
    /// Keys this transaction wrote, in first-write order, and whether the
    /// last write was a delete: a get of one reads the buffered write, and
    /// the commit's versions are printed in this order.
    writes: Vec<(String, bool)>,
    /// Where each written key is in `writes` (a transaction may have
    /// thousands of keys).
    written: HashMap<String, usize>,
}

impl Session {
    fn new(client: &Client, json: bool) -> Session {
        Session { txn: client.begin(), json, writes: Vec::new(), written: HashMap::new() }
    }

    /// Runs (a get) or buffers (a put or delete) one op. A get prints what
    /// it read, unless `quiet` (the JSON object at the end has it).
    async fn apply(&mut self, op: TxnOp, quiet: bool) -> Result<(), Error> {
        match op {
            TxnOp::Get(key) => {
                let own = self.written.contains_key(&key);
                let read = self.txn.get(key.clone()).await?;
                if quiet {
                    return Ok(());
                }
                if self.json {
                    let version = if own { None } else { Some(read.as_ref().map_or(0, |v| v.version)) };
                    let line = JsonRead::new(Some(&key), read.as_ref().map(|v| v.value.as_slice()), version);
                    println!("{}", serde_json::to_string(&line).expect("a read serializes"));
                } else {
                    match (&read, own) {
                        (Some(v), false) => println!("{key} = {} (version {})", show(&v.value), v.version),
                        (None, false) => println!("{key} not found"),
                        (Some(v), true) => println!("{key} = {} (written by this transaction)", show(&v.value)),
                        (None, true) => println!("{key} not found (deleted by this transaction)"),
                    }
                }
            }
            TxnOp::Put(key, value) => {
                self.note_write(&key, false);
                self.txn.put(key, value);
            }
            TxnOp::Delete(key) => {
                self.note_write(&key, true);
                self.txn.delete(key);
            }
        }
        Ok(())
    }

    fn note_write(&mut self, key: &str, delete: bool) {
        match self.written.get(key) {
            Some(&i) => self.writes[i].1 = delete,
            None => {
                self.written.insert(key.to_string(), self.writes.len());
                self.writes.push((key.to_string(), delete));
            }
        }
    }

    /// Every key the transaction read from the store, for `--json`.
    fn reads(&self) -> BTreeMap<String, JsonRead> {
        self.txn
            .reads()
            .iter()
            .map(|(k, v)| {
                let read = JsonRead::new(
                    None,
                    v.as_ref().map(|v| v.value.as_slice()),
                    Some(v.as_ref().map_or(0, |v| v.version)),
                );
                (show(k).into_owned(), read)
            })
            .collect()
    }

    /// Ends the transaction without sending anything: `abort`, or stdin
    /// ended before `commit`.
    fn discard(self, why: &str) -> i32 {
        if self.json {
            let out = JsonTxn {
                txn: None,
                outcome: "aborted",
                reason: Some(why.to_string()),
                reads: Some(self.reads()),
                versions: BTreeMap::new(),
            };
            println!("{}", serde_json::to_string(&out).expect("an outcome serializes"));
        } else {
            println!("ABORTED: {why}; nothing was written");
        }
        EXIT_NOT_FOUND
    }

    /// Commits and reports the outcome: exit 0 committed, 3 aborted, 4
    /// unknown; a refusal is an error (exit 1).
    async fn commit(self) -> anyhow::Result<i32> {
        let reads = if self.json { Some(self.reads()) } else { None };
        let writes = self.writes;
        let result = self.txn.commit().await;
        let json = |txn: Option<TxnId>, outcome, reason: Option<String>, versions| JsonTxn {
            txn: txn.map(|t| t.to_string()),
            outcome,
            reason,
            reads,
            versions,
        };
        match result {
            Ok(Committed { txn, versions }) => {
                let printed: BTreeMap<String, u64> = versions.iter().map(|(k, v)| (show(k).into_owned(), *v)).collect();
                if self.json {
                    let out = json(txn, "committed", None, printed);
                    println!("{}", serde_json::to_string(&out)?);
                } else {
                    match txn {
                        Some(id) => println!("COMMITTED (txn {id})"),
                        None => println!("COMMITTED (nothing to commit: no get, put, delete or --if)"),
                    }
                    for (key, deleted) in &writes {
                        if let Some(v) = printed.get(key) {
                            println!("{key} {}version={v}", if *deleted { "deleted " } else { "" });
                        }
                    }
                }
                Ok(0)
            }
            Err(TxnError::Aborted { txn, reason }) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::to_string(&json(Some(txn), "aborted", Some(reason.to_string()), BTreeMap::new()))?
                    );
                } else {
                    println!("ABORTED: {reason} (txn {txn}); nothing was written");
                }
                Ok(EXIT_NOT_FOUND)
            }
            Err(TxnError::OutcomeUnknown { txn, last_error }) => {
                if self.json {
                    println!(
                        "{}",
                        serde_json::to_string(&json(Some(txn), "unknown", Some(last_error.clone()), BTreeMap::new()))?
                    );
                } else {
                    println!("UNKNOWN: the cluster did not say whether transaction {txn} committed ({last_error})");
                }
                eprintln!("ask later with: pactdb txn-status {txn}");
                Ok(EXIT_OUTCOME_UNKNOWN)
            }
            Err(TxnError::Other(e)) => {
                Err(anyhow::Error::new(e).context("the transaction did not run, nothing was written"))
            }
        }
    }
}

async fn txn_from_args(mut session: Session, ops: Vec<TxnOp>) -> anyhow::Result<i32> {
    let quiet = session.json;
    for op in ops {
        session.apply(op, quiet).await.context("the transaction did not run, nothing was written")?;
    }
    session.commit().await
}

/// Reads ops from stdin until `commit` or `abort`. On a terminal a bad
/// line or a failed read is reported and the person carries on; from a
/// pipe or file it ends the transaction unwritten, since committing the
/// rest of a script that had a mistake in it would write what nobody meant.
async fn txn_from_stdin(mut session: Session) -> anyhow::Result<i32> {
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    if interactive {
        eprintln!("one op per line: get KEY, put KEY VALUE, delete KEY; then commit (or abort)");
    }
    let mut input = stdin.lock();
    let mut buf = Vec::new();
    let mut number = 0;
    loop {
        buf.clear();
        // A blocking read is fine here: this future runs on the thread that
        // called `block_on`, and the client's tasks run on the runtime's
        // worker threads meanwhile.
        if input.read_until(b'\n', &mut buf).context("reading stdin")? == 0 {
            return Ok(session.discard("the input ended without `commit`"));
        }
        number += 1;
        let text = match std::str::from_utf8(&buf) {
            Ok(text) => text.strip_suffix('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).unwrap_or(text),
            Err(_) => {
                eprintln!("error: line {number} is not UTF-8 text");
                if interactive {
                    continue;
                }
                eprintln!("the transaction was discarded, nothing was written");
                return Ok(EXIT_USAGE);
            }
        };
        let line = match parse_line(text) {
            Ok(line) => line,
            Err(msg) if interactive => {
                eprintln!("error: {msg}");
                continue;
            }
            Err(msg) => {
                eprintln!("error: line {number}: {msg}");
                eprintln!("the transaction was discarded, nothing was written");
                return Ok(EXIT_USAGE);
            }
        };
        match line {
            Line::Skip => {}
            Line::Op(op) => match session.apply(op, false).await {
                Ok(()) => {}
                Err(e) if interactive => eprintln!("error: {e}"),
                Err(e) => bail!("line {number}: {e}; the transaction was discarded, nothing was written"),
            },
            Line::Commit => return session.commit().await,
            Line::Abort => return Ok(session.discard("abort requested")),
        }
    }
}

async fn txn_status(client: &Client, txn: TxnId, json: bool) -> anyhow::Result<i32> {
    // The id's group must exist: the front end routes the query to it.
    if !client.cluster().groups.iter().any(|g| g.id == txn.home) {
        let groups = client.cluster().groups.iter().map(|g| g.id.to_string()).collect::<Vec<_>>().join(", ");
        return Ok(usage_error(
            "txn-status",
            format!("transaction {txn} names group {}, and the cluster's groups are {groups}", txn.home),
        ));
    }
    let outcome = match client.txn_status(txn).await {
        Ok(outcome) => outcome,
        Err(Error::Fe(FeError::Timeout { last_error })) => {
            let why = last_error.unwrap_or_else(|| "no answer".to_string());
            eprintln!("error: the cluster did not answer ({why}); the outcome of {txn} is still unknown, ask again");
            return Ok(EXIT_OUTCOME_UNKNOWN);
        }
        Err(e) => return Err(e).with_context(|| format!("asking for the outcome of transaction {txn}")),
    };
    let (name, reason, versions, code) = match outcome {
        TxnOutcome::Committed { versions, .. } => ("committed", None, versions, 0),
        TxnOutcome::Aborted { reason } => ("aborted", Some(reason.to_string()), Vec::new(), EXIT_NOT_FOUND),
    };
    let versions: BTreeMap<String, u64> = versions.iter().map(|(k, v)| (show(k).into_owned(), *v)).collect();
    if json {
        let out = JsonTxn { txn: Some(txn.to_string()), outcome: name, reason, reads: None, versions };
        println!("{}", serde_json::to_string(&out)?);
    } else if let Some(reason) = reason {
        println!("ABORTED: {reason} (txn {txn})");
    } else {
        println!("COMMITTED (txn {txn})");
        for (key, v) in &versions {
            println!("{key} version={v}");
        }
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_are_not_utf8_show_their_bad_bytes_escaped() {
        assert_eq!(show("héllo".as_bytes()), "héllo");
        assert_eq!(show(&[b'a', 0xff, b'b', 0xc3]), "a\\xffb\\xc3");
    }

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn ops_parse_in_order_and_bad_ones_are_named() {
        assert_eq!(
            parse_ops(&words("get a put b x del c delete d")),
            Ok(vec![
                TxnOp::Get("a".into()),
                TxnOp::Put("b".into(), "x".into()),
                TxnOp::Delete("c".into()),
                TxnOp::Delete("d".into())
            ])
        );
        assert!(parse_ops(&words("frob a")).unwrap_err().contains("unknown op `frob`"));
        assert!(parse_ops(&words("put a")).unwrap_err().contains("needs a VALUE"));
        assert!(parse_ops(&words("get")).unwrap_err().contains("needs a KEY"));
    }

    #[test]
    fn a_line_keeps_the_rest_after_the_key_as_the_value() {
        assert_eq!(parse_line("put k hello  world "), Ok(Line::Op(TxnOp::Put("k".into(), "hello  world ".into()))));
        assert_eq!(parse_line("  get k  "), Ok(Line::Op(TxnOp::Get("k".into()))));
        assert_eq!(parse_line("# a comment"), Ok(Line::Skip));
        assert_eq!(parse_line(""), Ok(Line::Skip));
        assert_eq!(parse_line("commit"), Ok(Line::Commit));
        for bad in ["put k", "put k   ", "put", "get a b", "delete", "commit now", "frob"] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_client_error_in_a_context_is_said_once() {
        let refused = Error::Fe(FeError::Refused(pactdb_core::wire::ClientError::Busy));
        assert_eq!(format!("{:#}", anyhow::Error::new(refused).context("putting")), "putting: node busy, retry later");
        let txn = TxnError::Other(Error::Fe(FeError::Timeout { last_error: None }));
        assert_eq!(format!("{:#}", anyhow::Error::new(txn)), "timed out waiting for the cluster");
    }

    #[test]
    fn a_value_argument_over_128_kib_points_at_value_file() {
        let args = |value: Option<String>, file: Option<&str>| ValueArgs { value, value_file: file.map(PathBuf::from) };
        match read_value(&args(Some("x".repeat(MAX_VALUE_ARG_BYTES + 1)), None)) {
            Err(ValueError::Usage(msg)) => assert!(msg.contains("--value-file"), "{msg}"),
            _ => panic!("a VALUE argument over 128 KiB is bad usage"),
        }
        assert!(
            matches!(read_value(&args(Some("x".repeat(MAX_VALUE_ARG_BYTES)), None)), Ok(v) if v.len() == MAX_VALUE_ARG_BYTES)
        );
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big");
        std::fs::write(&big, vec![7u8; pactdb_core::limits::MAX_VALUE_BYTES + 1]).unwrap();
        match read_value(&args(None, big.to_str())) {
            Err(ValueError::Other(e)) => assert!(e.to_string().contains("limit of 1048576 bytes"), "{e}"),
            _ => panic!("a file over the value limit is refused"),
        }
        std::fs::write(&big, vec![7u8; pactdb_core::limits::MAX_VALUE_BYTES]).unwrap();
        assert!(
            matches!(read_value(&args(None, big.to_str())), Ok(v) if v.len() == pactdb_core::limits::MAX_VALUE_BYTES)
        );
    }

    #[test]
    fn the_config_file_takes_http_listen_and_refuses_unknown_keys() {
        let file: NodeFile = toml::from_str("id = 1\nhttp_listen = \"127.0.0.1:8101\"\n").unwrap();
        assert_eq!(file.http_listen, Some("127.0.0.1:8101".parse().unwrap()));
        assert!(toml::from_str::<NodeFile>("http_listn = \"127.0.0.1:8101\"\n").is_err());
    }

    #[test]
    fn compares_split_at_the_last_equals_sign() {
        let c = parse_compare("a=b=7").unwrap();
        assert_eq!((c.key.as_str(), c.version), ("a=b", 7));
        assert!(parse_compare("k=abc").is_err());
        assert!(parse_compare("k").is_err());
        assert!(parse_compare("k=").is_err());
    }
}
