//! Command-line parsing and the client commands. Errors are printed for
//! people, and the exit code says what happened: 0 success, 1 error,
//! 2 bad usage, 3 not found or a failed compare-and-set.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use pactdb_client::Client;
use pactdb_core::types::NodeId;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub const DEFAULT_DATA_DIR: &str = "pactdb-data";
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_NOT_FOUND: i32 = 3;

#[derive(Parser, Debug)]
#[command(name = "pactdb", version, about = "pactdb: a replicated, transactional key-value store")]
pub struct Cli {
    /// Client addresses of nodes to contact (comma-separated). Default: the
    /// cluster that `pactdb demo` wrote to ./pactdb-data/cluster.json, else
    /// 127.0.0.1:7101-7103.
    #[arg(long, global = true, env = "PACTDB_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run one pactdb node (a replica manager and config-store member).
    Node(NodeArgs),
    /// Start a local cluster on 127.0.0.1 as child processes, bootstrap it,
    /// and keep it running until Ctrl-C.
    Demo(crate::demo::DemoArgs),
    /// Write a value.
    Put { key: String, value: String },
    /// Read a value (exit code 3 if the key does not exist).
    Get {
        key: String,
        /// Print `{"key":..,"value":..,"version":..}`: the version is what
        /// `cas` compares. A value that is not UTF-8 comes as
        /// `value_base64` instead of `value`; a missing key as value null,
        /// version 0.
        #[arg(long)]
        json: bool,
    },
    /// Delete a key (exit code 3 if it did not exist).
    Delete { key: String },
    /// Set a value only if the key's version is EXPECTED_VERSION (0: the key
    /// must not exist). Exit code 3 if the version differs.
    Cas { key: String, expected_version: u64, value: String },
    /// Show nodes, groups, views, and per member its role, indexes and state digest.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Load generators: `workload run kv` (against pactdb or etcd) and
    /// `workload probe` (write unavailability).
    Workload(crate::workload::WorkloadArgs),
    /// Deterministic simulation: every protocol under faults, from seeds,
    /// with checkers (linearizability, durability, convergence, leadership,
    /// liveness). Prints `N passed, M failed`; exit 0 iff none failed.
    Sim(pactdb_sim::SimArgs),
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
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Committed log entries kept in memory to catch up backups; a member
    /// further behind gets a snapshot.
    #[arg(long)]
    pub log_retain_entries: Option<u64>,
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

fn node_options(args: NodeArgs) -> anyhow::Result<pactdb_node::runtime::NodeOptions> {
    let file: NodeFile = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", p.display()))?
        }
        None => NodeFile::default(),
    };
    let id = args.id.or(file.id).context("--id is required")?;
    let mut peers = parse_peers(&args.peers)?;
    if peers.is_empty() {
        for (k, v) in file.peers.unwrap_or_default() {
            peers.insert(k.parse().with_context(|| format!("peer id `{k}` in the config file is not a number"))?, v);
        }
    }
    let listen = args.listen.or(file.listen).or_else(|| peers.get(&id).copied()).context("--listen is required")?;
    peers.entry(id).or_insert(listen);
    Ok(pactdb_node::runtime::NodeOptions {
        id,
        data_dir: args
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(format!("{DEFAULT_DATA_DIR}/node-{id}"))),
        peer_listen: listen,
        client_listen: args.client_listen.or(file.client_listen).context("--client-listen is required")?,
        peers,
        log_retain_entries: args.log_retain_entries.or(file.log_retain_entries),
    })
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
    let result = match cli.command {
        Command::Node(args) => run_node(args),
        Command::Demo(args) => crate::demo::run(args),
        Command::Workload(args) => crate::workload::run(args, endpoints),
        Command::Sim(args) => Ok(pactdb_sim::run_cli(args)),
        cmd => runtime().block_on(client_command(endpoints, cmd)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            EXIT_ERROR
        }
    }
}

/// An error and its causes, `: `-separated like `{:#}`, except that a cause
/// whose message the text already ends with is left out: the client
/// library's errors wrap the front end's and display the same words, which
/// `{:#}` printed twice.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if out.ends_with(&msg) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&msg);
    }
    out
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

fn run_node(args: NodeArgs) -> anyhow::Result<i32> {
    init_tracing();
    let opts = node_options(args)?;
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

async fn connect(endpoints: &[String]) -> anyhow::Result<Client> {
    Client::connect(endpoints)
        .await
        .with_context(|| format!("cannot reach the cluster at {} (is `pactdb demo` running?)", endpoints.join(",")))
}

async fn client_command(endpoints: Vec<String>, cmd: Command) -> anyhow::Result<i32> {
    let client = connect(&endpoints).await?;
    match cmd {
        Command::Put { key, value } => {
            let version = client.put(key, value).await?;
            println!("OK version={version}");
        }
        Command::Get { key, json } => {
            let found = client.get(key.clone()).await?;
            if json {
                let version = found.as_ref().map_or(0, |v| v.version);
                let read = JsonRead::new(Some(&key), found.as_ref().map(|v| v.value.as_slice()), Some(version));
                println!("{}", serde_json::to_string(&read)?);
            } else if let Some(v) = &found {
                println!("{}", show(&v.value));
            } else {
                eprintln!("key `{key}` not found");
            }
            if found.is_none() {
                return Ok(EXIT_NOT_FOUND);
            }
        }
        Command::Delete { key } => {
            if !client.delete(key.clone()).await? {
                eprintln!("key `{key}` not found");
                return Ok(EXIT_NOT_FOUND);
            }
            println!("OK");
        }
        Command::Cas { key, expected_version, value } => match client.cas(key, expected_version, value).await? {
            Ok(version) => println!("OK version={version}"),
            Err(current) => {
                eprintln!("version mismatch: expected {expected_version}, current {current}");
                return Ok(EXIT_NOT_FOUND);
            }
        },
        Command::Status { json } => return crate::demo::print_status(&client, json).await,
        Command::Node(_) | Command::Demo(_) | Command::Workload(_) | Command::Sim(_) => {
            unreachable!("handled in run")
        }
    }
    Ok(0)
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

/// Standard base64 (RFC 4648, with padding): JSON strings must be Unicode,
/// so a value that is not UTF-8 is given in the encoding etcd's JSON uses.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            // A chunk of k bytes fills k+1 characters; the rest is padding.
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A value in JSON: a string if it is UTF-8, else base64 under another
/// name, so that `value` is always either the exact text or null.
#[derive(Serialize)]
enum JsonValue {
    #[serde(rename = "value")]
    Text(Option<String>),
    #[serde(rename = "value_base64")]
    Base64(String),
}

impl JsonValue {
    fn new(value: Option<&[u8]>) -> JsonValue {
        match value {
            None => JsonValue::Text(None),
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => JsonValue::Text(Some(s.to_string())),
                Err(_) => JsonValue::Base64(base64(v)),
            },
        }
    }
}

/// What `get --json` prints. A missing key: value null, version 0.
#[derive(Serialize)]
struct JsonRead {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(flatten)]
    value: JsonValue,
    version: Option<u64>,
}

impl JsonRead {
    fn new(key: Option<&str>, value: Option<&[u8]>, version: Option<u64>) -> JsonRead {
        JsonRead { key: key.map(str::to_string), value: JsonValue::new(value), version }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn values_that_are_not_utf8_show_their_bad_bytes_escaped() {
        assert_eq!(show("héllo".as_bytes()), "héllo");
        assert_eq!(show(&[b'a', 0xff, b'b', 0xc3]), "a\\xffb\\xc3");
    }

    #[test]
    fn a_cause_that_repeats_the_message_is_printed_once() {
        let refused = pactdb_client::Error::Fe(pactdb_core::fe::FeError::Refused(pactdb_core::wire::ClientError::Busy));
        assert_eq!(describe(&anyhow::Error::new(refused).context("putting")), "putting: node busy, retry later");
        let nested = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(describe(&nested), "outer: middle: inner");
    }
}
