//! The Redis commands, each mapped onto pactdb operations through an
//! embedded front end: single-key reads and writes as they are, read-modify-
//! writes (INCR, APPEND, SET GET/XX) as compare-and-set loops, multi-key
//! writes (MSET, DEL of several keys) and MULTI/EXEC as one pactdb
//! transaction, KEYS/SCAN/DBSIZE as `Op::Scan` pages of every group.
//!
//! It owns one connection's state. It must never answer a write it does not
//! know the outcome of as done (an unknown outcome is an error naming it),
//! never let a queued MULTI grow past `MAX_MULTI_QUEUE` or a CAS loop past
//! `MAX_CAS_ATTEMPTS`, and must word its errors as Redis does where Redis
//! has a word for them.

use crate::resp::Reply;
use crate::Shared;
use bytes::Bytes;
use pactdb_client::{AbortReason, Client, ScanCursor, Txn, TxnError};
use pactdb_core::limits::{MAX_KEY_BYTES, MAX_SCAN_KEYS, MAX_TXN_KEYS, MAX_VALUE_BYTES};
use pactdb_core::state::kv::Versioned;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Attempts of a compare-and-set loop (INCR, APPEND, SET XX/GET, GETSET)
/// against concurrent writers of the same key before it gives up; between
/// attempts it backs off (`backoff`), so the loop lasts a few seconds at most.
pub const MAX_CAS_ATTEMPTS: usize = 64;
/// Attempts of a transaction (MSET, DEL of several keys, EXEC) that lost to
/// a concurrent transaction's lock or to a write of a key it read inside
/// EXEC (not a WATCHed one: that ends the EXEC with nil, as in Redis).
pub const MAX_TXN_ATTEMPTS: usize = 16;
/// The longest back-off between two attempts of a loop above.
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// A random pause of up to 2^attempt ms (at most `MAX_BACKOFF`): contenders
/// that lost together do not retry together.
async fn backoff(attempt: usize) {
    let cap = (1u64 << attempt.min(16)).min(MAX_BACKOFF.as_millis() as u64);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let jitter = u64::from(nanos) % (cap * 1000 + 1);
    tokio::time::sleep(Duration::from_micros(jitter)).await;
}
/// Commands one MULTI may queue.
pub const MAX_MULTI_QUEUE: usize = MAX_TXN_KEYS;
/// Keys one connection may WATCH.
pub const MAX_WATCHED_KEYS: usize = MAX_TXN_KEYS;
/// SCAN cursors a connection remembers; the oldest is forgotten first.
pub const MAX_CURSORS: usize = 64;
/// Keys in the cluster past which KEYS refuses (and says to use SCAN).
pub const MAX_KEYS_LISTED: u64 = 100_000;
/// The Redis version the front end claims (INFO, HELLO): the commands it
/// serves behave as in this version.
const REDIS_VERSION: &str = "7.2.0";

/// One command's shape, as COMMAND tells it and as arity checks use it.
struct Spec {
    name: &'static str,
    /// Redis's convention: N exactly N words (name included), -N at least N.
    arity: i64,
    flags: &'static [&'static str],
    first_key: i64,
    last_key: i64,
    step: i64,
    /// Runs inside MULTI/EXEC as part of the pactdb transaction.
    in_multi: bool,
    summary: &'static str,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    in_multi: bool,
    summary: &'static str,
) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, in_multi, summary }
}

const NO_KEYS: (i64, i64, i64) = (0, 0, 0);
const ONE_KEY: (i64, i64, i64) = (1, 1, 1);
const ALL_KEYS: (i64, i64, i64) = (1, -1, 1);
const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];

static SPECS: &[Spec] = &[
    spec("ping", -1, CONN, NO_KEYS, true, "Returns the server's liveliness response."),
    spec("echo", 2, CONN, NO_KEYS, true, "Returns the given string."),
    spec("hello", -1, CONN, NO_KEYS, false, "Handshakes with the server (RESP2 or RESP3)."),
    spec("auth", -2, CONN, NO_KEYS, false, "Authenticates the connection (TLS client certificates secure pactdb)."),
    spec("select", 2, CONN, NO_KEYS, false, "Changes the selected database (only 0 exists)."),
    spec("quit", -1, CONN, NO_KEYS, false, "Closes the connection."),
    spec("get", 2, R, ONE_KEY, true, "Returns the string value of a key."),
    spec("set", -3, W, ONE_KEY, true, "Sets the string value of a key (NX, XX, GET; no expiry)."),
    spec("getset", 3, W, ONE_KEY, true, "Returns the previous string value of a key after setting it."),
    spec("setnx", 3, W, ONE_KEY, true, "Sets the string value of a key only when the key doesn't exist."),
    spec("del", -2, &["write"], ALL_KEYS, true, "Deletes one or more keys (atomically)."),
    spec("exists", -2, R, ALL_KEYS, true, "Determines whether one or more keys exist."),
    spec("mget", -2, R, ALL_KEYS, true, "Atomically returns the string values of one or more keys."),
    spec("mset", -3, W, (1, -1, 2), true, "Atomically creates or modifies the string values of one or more keys."),
    spec("incr", 2, W, ONE_KEY, true, "Increments the integer value of a key by one."),
    spec("decr", 2, W, ONE_KEY, true, "Decrements the integer value of a key by one."),
    spec("incrby", 3, W, ONE_KEY, true, "Increments the integer value of a key by a number."),
    spec("decrby", 3, W, ONE_KEY, true, "Decrements a number from the integer value of a key."),
    spec("append", 3, W, ONE_KEY, true, "Appends a string to the value of a key."),
    spec("strlen", 2, R, ONE_KEY, true, "Returns the length of a string value."),
    spec("keys", 2, &["readonly"], NO_KEYS, false, "Returns all key names that match a pattern (bounded)."),
    spec("scan", -2, &["readonly"], NO_KEYS, false, "Iterates over the key names in the database."),
    spec("dbsize", 1, R, NO_KEYS, false, "Returns the number of keys in the database."),
    spec("info", -1, &["loading", "stale"], NO_KEYS, false, "Returns information about the server and cluster."),
    spec("client", -2, &["loading", "stale"], NO_KEYS, false, "CLIENT SETNAME, GETNAME, ID, SETINFO, INFO."),
    spec("command", -1, &["loading", "stale"], NO_KEYS, false, "Returns details about the commands."),
    spec("config", -2, &["loading", "stale"], NO_KEYS, false, "CONFIG GET of a few fixed settings."),
    spec("watch", -2, CONN, ALL_KEYS, false, "Monitors changes to keys to determine the execution of a transaction."),
    spec("unwatch", 1, CONN, NO_KEYS, false, "Forgets about watched keys of a transaction."),
    spec("multi", 1, CONN, NO_KEYS, false, "Starts a transaction."),
    spec("exec", 1, &["noscript", "loading", "stale"], NO_KEYS, false, "Executes all commands in a transaction."),
    spec("discard", 1, CONN, NO_KEYS, false, "Discards a transaction."),
];

fn lookup(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

fn syntax() -> Reply {
    Reply::err("ERR syntax error")
}

fn not_integer() -> Reply {
    Reply::err("ERR value is not an integer or out of range")
}

/// A pactdb error as a Redis error line.
fn db_err(e: impl std::fmt::Display) -> Reply {
    match e.to_string() {
        s if s.starts_with("no endpoint answered") => Reply::err(format!("TRYAGAIN {s}")),
        s => Reply::err(format!("ERR {s}")),
    }
}

fn txn_err(e: TxnError) -> Reply {
    match e {
        TxnError::OutcomeUnknown { .. } => Reply::err(format!("ERR {e} (it may or may not have been applied)")),
        TxnError::Other(e) => db_err(e),
        TxnError::Aborted { .. } => db_err(e),
    }
}

fn check_key(key: &[u8]) -> Result<(), Reply> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Reply::err(format!("ERR key of {} bytes exceeds the limit of {MAX_KEY_BYTES} bytes", key.len())));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Reply> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Reply::err(format!(
            "ERR value of {} bytes exceeds the limit of {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

/// An integer as Redis parses one (no sign but '-', no spaces).
fn parse_int(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.starts_with('+') || s.is_empty() || s.len() > 20 {
        return None;
    }
    s.parse().ok()
}

fn upper(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_uppercase()
}

fn glob_matches(pattern: &Option<glob::Pattern>, key: &[u8]) -> bool {
    let opts = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: false,
        require_literal_leading_dot: false,
    };
    pattern.as_ref().is_none_or(|p| p.matches_with(&String::from_utf8_lossy(key), opts))
}

fn pattern(b: &[u8]) -> Result<Option<glob::Pattern>, Reply> {
    if b == b"*" {
        return Ok(None);
    }
    // Redis writes a negated class `[^...]`; the glob crate `[!...]`.
    let text = String::from_utf8_lossy(b).replace("[^", "[!");
    glob::Pattern::new(&text).map(Some).map_err(|e| Reply::err(format!("ERR invalid pattern: {e}")))
}

/// Where a key command runs: at once through the front end, or buffered
/// into the transaction of an EXEC (reads recorded and checked at commit).
enum Target<'a> {
    Direct(&'a Client),
    Txn(&'a mut Txn),
}

impl Target<'_> {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Versioned>, Reply> {
        match self {
            Target::Direct(c) => c.get(key.to_vec()).await.map_err(db_err),
            Target::Txn(t) => t.get(key.to_vec()).await.map_err(db_err),
        }
    }

    async fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Reply> {
        match self {
            Target::Direct(c) => c.put(key.to_vec(), value.to_vec()).await.map(|_| ()).map_err(db_err),
            Target::Txn(t) => {
                t.put(key.to_vec(), value.to_vec());
                Ok(())
            }
        }
    }

    /// Reads `key`, lets `f` decide what to write (if anything) and what to
    /// answer, and writes only if the key is still at the version read: a
    /// compare-and-set loop, or, in a transaction, a read the commit checks.
    async fn update<F>(&mut self, key: &[u8], mut f: F) -> Result<Reply, Reply>
    where
        F: FnMut(Option<&Versioned>) -> Result<(Option<Vec<u8>>, Reply), Reply>,
    {
        match self {
            Target::Txn(t) => {
                let cur = t.get(key.to_vec()).await.map_err(db_err)?;
                let (write, reply) = f(cur.as_ref())?;
                if let Some(v) = write {
                    check_value(&v)?;
                    t.put(key.to_vec(), v);
                }
                Ok(reply)
            }
            Target::Direct(c) => {
                for attempt in 0..MAX_CAS_ATTEMPTS {
                    let cur = c.get(key.to_vec()).await.map_err(db_err)?;
                    let (write, reply) = f(cur.as_ref())?;
                    let Some(v) = write else { return Ok(reply) };
                    check_value(&v)?;
                    let version = cur.as_ref().map_or(0, |v| v.version);
                    match c.cas(key.to_vec(), version, v).await.map_err(db_err)? {
                        Ok(_) => return Ok(reply),
                        Err(_) => backoff(attempt).await,
                    }
                }
                Err(Reply::err(format!(
                    "ERR too much contention on key '{}': gave up after {MAX_CAS_ATTEMPTS} attempts",
                    String::from_utf8_lossy(key)
                )))
            }
        }
    }
}

/// A multi-key write run as one transaction (`in_txn`).
enum TxnBody<'a> {
    Mset(&'a [Bytes]),
    Del(&'a [Bytes]),
}

impl TxnBody<'_> {
    async fn run(&self, txn: &mut Txn) -> Result<Reply, Reply> {
        match self {
            TxnBody::Mset(args) => {
                for kv in args.chunks(2) {
                    txn.put(kv[0].to_vec(), kv[1].to_vec());
                }
                Ok(Reply::Ok)
            }
            TxnBody::Del(keys) => del_in(txn, keys).await.map(Reply::Int),
        }
    }
}

/// Runs `body` in a fresh transaction, committing it; retried (bounded)
/// while it aborts, as a concurrent transaction or writer won.
async fn in_txn(client: &Client, body: TxnBody<'_>) -> Reply {
    let mut last = String::new();
    for attempt in 0..MAX_TXN_ATTEMPTS {
        let mut txn = client.begin();
        let reply = match body.run(&mut txn).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        match txn.commit().await {
            Ok(_) => return reply,
            Err(TxnError::Aborted { reason, .. }) => last = reason.to_string(),
            Err(e) => return txn_err(e),
        }
        backoff(attempt).await;
    }
    Reply::err(format!("ERR the transaction aborted {MAX_TXN_ATTEMPTS} times, last because {last}"))
}

/// A key command (one that may run inside MULTI/EXEC), checked for arity.
async fn key_command(t: &mut Target<'_>, name: &str, args: &[Bytes]) -> Reply {
    match key_command_inner(t, name, args).await {
        Ok(r) | Err(r) => r,
    }
}

async fn key_command_inner(t: &mut Target<'_>, name: &str, args: &[Bytes]) -> Result<Reply, Reply> {
    let spec = lookup(name).expect("a known command");
    if spec.first_key > 0 {
        let last = if spec.last_key < 0 { args.len() as i64 + spec.last_key } else { spec.last_key - 1 };
        let mut i = spec.first_key - 1;
        while i <= last && (i as usize) < args.len() {
            check_key(&args[i as usize])?;
            i += spec.step;
        }
    }
    let key = args.first().map_or(&[][..], |k| &k[..]);
    match name {
        "ping" => Ok(match args.first() {
            Some(m) => Reply::Bulk(m.clone()),
            None => Reply::Simple("PONG".into()),
        }),
        "echo" => Ok(Reply::Bulk(args[0].clone())),
        "get" => Ok(t.get(key).await?.map_or(Reply::Nil, |v| Reply::bulk(v.value))),
        "set" => set(t, args).await,
        "getset" => {
            let value = args[1].to_vec();
            check_value(&value)?;
            t.update(key, |cur| Ok((Some(value.clone()), cur.map_or(Reply::Nil, |v| Reply::bulk(v.value.clone())))))
                .await
        }
        "setnx" => {
            let value = args[1].to_vec();
            check_value(&value)?;
            t.update(key, |cur| {
                Ok(if cur.is_some() { (None, Reply::Int(0)) } else { (Some(value.clone()), Reply::Int(1)) })
            })
            .await
        }
        "strlen" => Ok(Reply::Int(t.get(key).await?.map_or(0, |v| v.value.len() as i64))),
        "append" => {
            let tail = args[1].clone();
            t.update(key, |cur| {
                let mut v = cur.map_or_else(Vec::new, |v| v.value.clone());
                v.extend_from_slice(&tail);
                let len = v.len() as i64;
                Ok((Some(v), Reply::Int(len)))
            })
            .await
        }
        "incr" | "decr" | "incrby" | "decrby" => {
            let by = match name {
                "incr" => 1,
                "decr" => -1,
                _ => {
                    let n = parse_int(&args[1]).ok_or_else(not_integer)?;
                    if name == "decrby" {
                        n.checked_neg().ok_or_else(|| Reply::err("ERR decrement would overflow"))?
                    } else {
                        n
                    }
                }
            };
            t.update(key, |cur| {
                let n = match cur {
                    None => 0,
                    Some(v) => parse_int(&v.value).ok_or_else(not_integer)?,
                };
                let n = n.checked_add(by).ok_or_else(|| Reply::err("ERR increment or decrement would overflow"))?;
                Ok((Some(n.to_string().into_bytes()), Reply::Int(n)))
            })
            .await
        }
        "exists" => {
            let mut n = 0;
            for k in args {
                if t.get(k).await?.is_some() {
                    n += 1;
                }
            }
            Ok(Reply::Int(n))
        }
        "mget" => match t {
            Target::Txn(txn) => {
                let mut out = Vec::with_capacity(args.len());
                for k in args {
                    let v = txn.get(k.to_vec()).await.map_err(db_err)?;
                    out.push(v.map_or(Reply::Nil, |v| Reply::bulk(v.value)));
                }
                Ok(Reply::Array(out))
            }
            Target::Direct(c) => {
                // One consistent read of every key (each named once).
                let mut unique: Vec<Vec<u8>> = args.iter().map(|k| k.to_vec()).collect();
                unique.sort();
                unique.dedup();
                let read = c.consistent_read(unique).await.map_err(txn_err)?;
                let by_key: std::collections::HashMap<Vec<u8>, Option<Versioned>> = read.into_iter().collect();
                Ok(Reply::Array(
                    args.iter()
                        .map(|k| by_key.get(&k[..]).cloned().flatten().map_or(Reply::Nil, |v| Reply::bulk(v.value)))
                        .collect(),
                ))
            }
        },
        "mset" => {
            if !args.len().is_multiple_of(2) {
                return Err(Reply::err("ERR wrong number of arguments for 'mset' command"));
            }
            for v in args.iter().skip(1).step_by(2) {
                check_value(v)?;
            }
            match t {
                Target::Txn(txn) => {
                    for kv in args.chunks(2) {
                        txn.put(kv[0].to_vec(), kv[1].to_vec());
                    }
                    Ok(Reply::Ok)
                }
                Target::Direct(c) => Ok(in_txn(c, TxnBody::Mset(args)).await),
            }
        }
        "del" => match t {
            Target::Txn(txn) => Ok(Reply::Int(del_in(txn, args).await?)),
            Target::Direct(c) if args.len() == 1 => {
                Ok(Reply::Int(c.delete(key.to_vec()).await.map_err(db_err)? as i64))
            }
            Target::Direct(c) => Ok(in_txn(c, TxnBody::Del(args)).await),
        },
        other => Err(Reply::err(format!("ERR command '{other}' cannot run here"))),
    }
}

async fn del_in(txn: &mut Txn, keys: &[Bytes]) -> Result<i64, Reply> {
    let mut n = 0;
    let mut seen = std::collections::HashSet::new();
    for k in keys {
        if seen.insert(k.clone()) && txn.get(k.to_vec()).await.map_err(db_err)?.is_some() {
            n += 1;
            txn.delete(k.to_vec());
        }
    }
    Ok(n)
}

/// SET key value [NX | XX] [GET]; the expiry options are refused.
async fn set(t: &mut Target<'_>, args: &[Bytes]) -> Result<Reply, Reply> {
    let (key, value) = (&args[0], args[1].to_vec());
    check_value(&value)?;
    let (mut nx, mut xx, mut get) = (false, false, false);
    for opt in &args[2..] {
        match upper(opt).as_str() {
            "NX" if !xx => nx = true,
            "XX" if !nx => xx = true,
            "GET" => get = true,
            "EX" | "PX" | "EXAT" | "PXAT" | "KEEPTTL" | "PERSIST" => {
                return Err(Reply::err(format!(
                    "ERR pactdb does not support key expiry: SET ... {} is refused (keys never expire)",
                    upper(opt)
                )))
            }
            _ => return Err(syntax()),
        }
    }
    if !(nx || xx || get) {
        t.put(key, &value).await?;
        return Ok(Reply::Ok);
    }
    t.update(key, |cur| {
        let write = match (nx, xx) {
            (true, _) => cur.is_none(),
            (_, true) => cur.is_some(),
            _ => true,
        };
        let reply = if get {
            cur.map_or(Reply::Nil, |v| Reply::bulk(v.value.clone()))
        } else if write {
            Reply::Ok
        } else {
            Reply::Nil
        };
        Ok((write.then(|| value.clone()), reply))
    })
    .await
}

/// One connection's state.
pub(crate) struct Conn {
    id: u64,
    pub(crate) resp3: bool,
    name: Option<Bytes>,
    client: Option<Client>,
    /// MULTI: the queued commands (name lowercased, then arguments).
    multi: Option<Vec<(String, Vec<Bytes>)>>,
    /// A command refused while queuing: EXEC answers EXECABORT.
    multi_failed: bool,
    /// WATCHed keys and the version each had when watched (0: absent).
    watched: Vec<(Vec<u8>, u64)>,
    cursors: VecDeque<(u64, ScanCursor)>,
    next_cursor: u64,
}

impl Conn {
    pub(crate) fn new(id: u64) -> Conn {
        Conn {
            id,
            resp3: false,
            name: None,
            client: None,
            multi: None,
            multi_failed: false,
            watched: Vec::new(),
            cursors: VecDeque::new(),
            next_cursor: 1,
        }
    }

    async fn client(&mut self, shared: &Shared) -> Result<Client, Reply> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c = shared.client().await?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// Runs one command, appending its reply to `out`; true: close the
    /// connection once `out` is written.
    pub(crate) async fn run(&mut self, shared: &Shared, argv: Vec<Bytes>, out: &mut bytes::BytesMut) -> bool {
        let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
        let args = &argv[1..];
        let reply = match self.check(&name, &argv[0], args) {
            Err(r) => {
                if self.multi.is_some() {
                    self.multi_failed = true;
                }
                r
            }
            Ok(spec)
                if self.multi.is_some()
                    && !matches!(name.as_str(), "exec" | "discard" | "multi" | "quit" | "watch") =>
            {
                if !spec.in_multi {
                    self.multi_failed = true;
                    Reply::err("ERR Command not allowed inside a transaction")
                } else if self.multi.as_ref().is_some_and(|q| q.len() >= MAX_MULTI_QUEUE) {
                    self.multi_failed = true;
                    Reply::err(format!("ERR a transaction queues at most {MAX_MULTI_QUEUE} commands"))
                } else {
                    self.multi.as_mut().expect("in MULTI").push((name.clone(), args.to_vec()));
                    Reply::Simple("QUEUED".into())
                }
            }
            Ok(_) => {
                if name == "quit" {
                    Reply::Ok.encode(self.resp3, out);
                    return true;
                }
                self.dispatch(shared, &name, args).await
            }
        };
        reply.encode(self.resp3, out);
        false
    }

    fn check(&self, name: &str, argv0: &[u8], args: &[Bytes]) -> Result<&'static Spec, Reply> {
        let Some(spec) = lookup(name) else {
            let shown: String = args.iter().take(20).map(|a| format!("'{}' ", String::from_utf8_lossy(a))).collect();
            // As sent, like Redis (which shows at most 128 characters of it).
            let name = String::from_utf8_lossy(argv0).chars().take(128).collect::<String>();
            return Err(Reply::err(format!("ERR unknown command '{name}', with args beginning with: {shown}")));
        };
        let n = args.len() as i64 + 1;
        if (spec.arity > 0 && n != spec.arity) || (spec.arity < 0 && n < -spec.arity) {
            return Err(Reply::err(format!("ERR wrong number of arguments for '{name}' command")));
        }
        Ok(spec)
    }

    async fn dispatch(&mut self, shared: &Shared, name: &str, args: &[Bytes]) -> Reply {
        match name {
            "hello" => self.hello(args),
            "auth" => auth(args),
            "select" => match parse_int(&args[0]) {
                Some(0) => Reply::Ok,
                Some(_) => Reply::err("ERR DB index is out of range"),
                None => not_integer(),
            },
            "client" => self.client_cmd(args),
            "command" => command(args),
            "config" => config(args),
            "multi" if self.multi.is_some() => Reply::err("ERR MULTI calls can not be nested"),
            "multi" => {
                self.multi = Some(Vec::new());
                self.multi_failed = false;
                Reply::Ok
            }
            "discard" => match self.multi.take() {
                None => Reply::err("ERR DISCARD without MULTI"),
                Some(_) => {
                    self.watched.clear();
                    Reply::Ok
                }
            },
            "unwatch" => {
                self.watched.clear();
                Reply::Ok
            }
            "watch" if self.multi.is_some() => Reply::err("ERR WATCH inside MULTI is not allowed"),
            "watch" => self.watch(shared, args).await,
            "exec" => self.exec(shared).await,
            // Answered here, so they work before the cluster is ready.
            "ping" => args.first().map_or(Reply::Simple("PONG".into()), |m| Reply::Bulk(m.clone())),
            "echo" => Reply::Bulk(args[0].clone()),
            _ => {
                let client = match self.client(shared).await {
                    Ok(c) => c,
                    Err(r) => return r,
                };
                match name {
                    "keys" => keys(&client, &args[0]).await,
                    "scan" => self.scan(&client, args).await,
                    "dbsize" => client.key_count().await.map_or_else(db_err, |n| Reply::Int(n as i64)),
                    "info" => info(shared, &client, args).await,
                    _ => key_command(&mut Target::Direct(&client), name, args).await,
                }
            }
        }
    }

    fn hello(&mut self, args: &[Bytes]) -> Reply {
        let mut resp3 = self.resp3;
        let mut i = 0;
        if let Some(v) = args.first() {
            match parse_int(v) {
                Some(2) => resp3 = false,
                Some(3) => resp3 = true,
                Some(_) => return Reply::err("NOPROTO unsupported protocol version"),
                None => return Reply::err("ERR Protocol version is not an integer or out of range"),
            }
            i = 1;
        }
        let mut name = None;
        while i < args.len() {
            match upper(&args[i]).as_str() {
                "AUTH" if i + 2 < args.len() => {
                    let r = auth(&args[i + 1..i + 3]);
                    if r.is_err() {
                        return r;
                    }
                    i += 3;
                }
                "SETNAME" if i + 1 < args.len() => {
                    name = Some(args[i + 1].clone());
                    i += 2;
                }
                other => return Reply::err(format!("ERR Syntax error in HELLO option '{other}'")),
            }
        }
        if let Some(n) = name {
            if let Err(r) = valid_name(&n) {
                return r;
            }
            self.name = Some(n);
        }
        self.resp3 = resp3;
        Reply::Map(vec![
            (Reply::text("server"), Reply::text("redis")),
            (Reply::text("version"), Reply::text(REDIS_VERSION)),
            (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
            (Reply::text("id"), Reply::Int(self.id as i64)),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text("master")),
            (Reply::text("modules"), Reply::Array(Vec::new())),
        ])
    }

    fn client_cmd(&mut self, args: &[Bytes]) -> Reply {
        let sub = upper(&args[0]);
        match (sub.as_str(), args.len()) {
            ("SETNAME", 2) => match valid_name(&args[1]) {
                Ok(()) => {
                    self.name = (!args[1].is_empty()).then(|| args[1].clone());
                    Reply::Ok
                }
                Err(r) => r,
            },
            ("GETNAME", 1) => self.name.clone().map_or(Reply::Nil, Reply::Bulk),
            ("ID", 1) => Reply::Int(self.id as i64),
            // Client libraries announce themselves (redis-py does on connect).
            ("SETINFO", 3) => Reply::Ok,
            ("INFO", 1) => {
                let name = self.name.as_ref().map_or(String::new(), |n| String::from_utf8_lossy(n).into_owned());
                let multi = self.multi.as_ref().map_or(-1, |q| q.len() as i64);
                let resp = if self.resp3 { 3 } else { 2 };
                Reply::text(&format!(
                    "id={} name={name} db=0 multi={multi} watch={} resp={resp}\n",
                    self.id,
                    self.watched.len()
                ))
            }
            ("SETNAME" | "GETNAME" | "ID" | "SETINFO" | "INFO", _) => {
                Reply::err(format!("ERR wrong number of arguments for 'client|{}' command", sub.to_lowercase()))
            }
            _ => {
                Reply::err(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(&args[0])))
            }
        }
    }

    async fn watch(&mut self, shared: &Shared, keys: &[Bytes]) -> Reply {
        if self.watched.len() + keys.len() > MAX_WATCHED_KEYS {
            return Reply::err(format!("ERR a connection watches at most {MAX_WATCHED_KEYS} keys"));
        }
        let client = match self.client(shared).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        for k in keys {
            if let Err(r) = check_key(k) {
                return r;
            }
            if self.watched.iter().any(|(w, _)| w[..] == k[..]) {
                continue;
            }
            // The version now: EXEC commits only if the key is still at it.
            match client.get(k.to_vec()).await {
                Ok(v) => self.watched.push((k.to_vec(), v.map_or(0, |v| v.version))),
                Err(e) => return db_err(e),
            }
        }
        Reply::Ok
    }

    /// EXEC: the queued commands as one pactdb transaction, committed only
    /// if every WATCHed key is still at the version WATCH saw (else nil, as
    /// in Redis). Reads inside it are recorded and checked at commit too,
    /// so what they answered is what the transaction committed against; a
    /// transaction that lost to another on such a read (not a watched key)
    /// is run again, bounded by `MAX_TXN_ATTEMPTS`.
    async fn exec(&mut self, shared: &Shared) -> Reply {
        let Some(queued) = self.multi.take() else { return Reply::err("ERR EXEC without MULTI") };
        let watched = std::mem::take(&mut self.watched);
        if std::mem::take(&mut self.multi_failed) {
            return Reply::err("EXECABORT Transaction discarded because of previous errors.");
        }
        let client = match self.client(shared).await {
            Ok(c) => c,
            Err(r) => return r,
        };
        let is_watched = |key: &[u8]| watched.iter().any(|(k, _)| k[..] == *key);
        let mut last = String::new();
        for attempt in 0..MAX_TXN_ATTEMPTS {
            let mut txn = client.begin();
            for (k, v) in &watched {
                txn.when(k.clone(), *v);
            }
            let mut replies = Vec::with_capacity(queued.len());
            for (name, args) in &queued {
                replies.push(key_command(&mut Target::Txn(&mut txn), name, args).await);
            }
            match txn.commit().await {
                Ok(_) => return Reply::Array(replies),
                Err(TxnError::Aborted { reason: AbortReason::VersionChanged { key, .. }, .. }) if is_watched(&key) => {
                    return Reply::NilArray
                }
                Err(TxnError::Aborted { reason, .. }) => last = reason.to_string(),
                Err(e) => return txn_err(e),
            }
            backoff(attempt).await;
        }
        Reply::err(format!("ERR the transaction aborted {MAX_TXN_ATTEMPTS} times, last because {last}"))
    }

    /// SCAN cursor [MATCH pattern] [COUNT n] [TYPE t]. Cursors are numbers
    /// this connection hands out (clients parse them as integers), each
    /// standing for a position in the walk over every group's keys.
    async fn scan(&mut self, client: &Client, args: &[Bytes]) -> Reply {
        let Some(n) = std::str::from_utf8(&args[0]).ok().and_then(|s| s.parse::<u64>().ok()) else {
            return Reply::err("ERR invalid cursor");
        };
        let from = match n {
            0 => None,
            n => match self.cursors.iter().find(|(id, _)| *id == n) {
                Some((_, c)) => Some(c.clone()),
                None => return Reply::err("ERR invalid cursor"),
            },
        };
        let (mut count, mut pat, mut strings_only) = (10u32, None, true);
        let mut i = 1;
        while i < args.len() {
            let Some(v) = args.get(i + 1) else { return syntax() };
            match upper(&args[i]).as_str() {
                "COUNT" => match parse_int(v) {
                    Some(c) if c >= 1 => count = c.min(MAX_SCAN_KEYS as i64) as u32,
                    Some(_) => return syntax(),
                    None => return not_integer(),
                },
                "MATCH" => match pattern(v) {
                    Ok(p) => pat = p,
                    Err(r) => return r,
                },
                "TYPE" => strings_only = upper(v) == "STRING",
                _ => return syntax(),
            }
            i += 2;
        }
        let page = match client.scan_page(from, count).await {
            Ok(p) => p,
            Err(e) => return db_err(e),
        };
        let keys: Vec<Reply> =
            page.keys.into_iter().filter(|k| strings_only && glob_matches(&pat, k)).map(Reply::bulk).collect();
        let next = match page.next {
            None => 0,
            Some(c) => {
                let id = self.next_cursor;
                self.next_cursor += 1;
                if self.cursors.len() >= MAX_CURSORS {
                    self.cursors.pop_front();
                }
                self.cursors.push_back((id, c));
                id
            }
        };
        Reply::Array(vec![Reply::text(&next.to_string()), Reply::Array(keys)])
    }
}

fn valid_name(n: &[u8]) -> Result<(), Reply> {
    if n.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Reply::err("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

/// AUTH: pactdb authenticates Redis clients by their TLS certificate, so
/// there is no password; like a Redis whose default user has none, a
/// username-password pair for `default` is accepted.
fn auth(args: &[Bytes]) -> Reply {
    match args {
        [_] => Reply::err(
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        [user, _] if &user[..] == b"default" => Reply::Ok,
        [_, _] => Reply::err("WRONGPASS invalid username-password pair or user is disabled."),
        _ => syntax(),
    }
}

async fn keys(client: &Client, pat: &[u8]) -> Reply {
    let pat = match pattern(pat) {
        Ok(p) => p,
        Err(r) => return r,
    };
    match client.key_count().await {
        Ok(n) if n > MAX_KEYS_LISTED => {
            return Reply::err(format!(
                "ERR KEYS refused: the database holds {n} keys, more than {MAX_KEYS_LISTED}; use SCAN"
            ))
        }
        Ok(_) => {}
        Err(e) => return db_err(e),
    }
    let mut out = Vec::new();
    let mut cursor = None;
    let mut examined = 0u64;
    loop {
        let page = match client.scan_page(cursor, MAX_SCAN_KEYS as u32).await {
            Ok(p) => p,
            Err(e) => return db_err(e),
        };
        examined += page.keys.len() as u64;
        if examined > MAX_KEYS_LISTED {
            // Keys were written while listing: the bound holds all the same.
            return Reply::err(format!("ERR KEYS refused: more than {MAX_KEYS_LISTED} keys; use SCAN"));
        }
        out.extend(page.keys.into_iter().filter(|k| glob_matches(&pat, k)).map(Reply::bulk));
        match page.next {
            Some(c) => cursor = Some(c),
            None => return Reply::Array(out),
        }
    }
}

fn command_info(s: &Spec) -> Reply {
    Reply::Array(vec![
        Reply::text(s.name),
        Reply::Int(s.arity),
        Reply::Array(s.flags.iter().map(|f| Reply::Simple((*f).into())).collect()),
        Reply::Int(s.first_key),
        Reply::Int(s.last_key),
        Reply::Int(s.step),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
        Reply::Array(Vec::new()),
    ])
}

fn command(args: &[Bytes]) -> Reply {
    let Some(sub) = args.first() else { return Reply::Array(SPECS.iter().map(command_info).collect()) };
    let names = || args[1..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase());
    match upper(sub).as_str() {
        "COUNT" => Reply::Int(SPECS.len() as i64),
        "LIST" => Reply::Array(SPECS.iter().map(|s| Reply::text(s.name)).collect()),
        "INFO" if args.len() == 1 => Reply::Array(SPECS.iter().map(command_info).collect()),
        "INFO" => Reply::Array(names().map(|n| lookup(&n).map_or(Reply::Nil, command_info)).collect()),
        "DOCS" => {
            let doc = |s: &Spec| {
                (
                    Reply::text(s.name),
                    Reply::Map(vec![
                        (Reply::text("summary"), Reply::text(s.summary)),
                        (Reply::text("since"), Reply::text("1.0.0")),
                        (Reply::text("group"), Reply::text(if s.first_key > 0 { "string" } else { "connection" })),
                    ]),
                )
            };
            if args.len() == 1 {
                Reply::Map(SPECS.iter().map(doc).collect())
            } else {
                Reply::Map(names().filter_map(|n| lookup(&n).map(doc)).collect())
            }
        }
        _ => Reply::err(format!("ERR unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(sub))),
    }
}

/// CONFIG GET of the few settings tools ask for (redis-benchmark reads
/// `save` and `appendonly`): pactdb's durability is fsync on every write.
fn config(args: &[Bytes]) -> Reply {
    const SETTINGS: &[(&str, &str)] =
        &[("appendonly", "yes"), ("appendfsync", "always"), ("save", ""), ("databases", "1")];
    if upper(&args[0]) != "GET" || args.len() < 2 {
        return Reply::err(format!(
            "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
            String::from_utf8_lossy(&args[0])
        ));
    }
    let mut out = Vec::new();
    for p in &args[1..] {
        let pat = match pattern(&p.to_ascii_lowercase()) {
            Ok(p) => p,
            Err(r) => return r,
        };
        for (k, v) in SETTINGS {
            if glob_matches(&pat, k.as_bytes()) {
                out.push((Reply::text(k), Reply::text(v)));
            }
        }
    }
    Reply::Map(out)
}

/// INFO [section ...]: server, clients, replication (every group's mode,
/// epoch, leader, members and this node's role in it) and keyspace.
async fn info(shared: &Shared, client: &Client, args: &[Bytes]) -> Reply {
    let wanted: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).to_ascii_lowercase()).collect();
    let all = wanted.is_empty() || wanted.iter().any(|w| w == "all" || w == "everything" || w == "default");
    let want = |s: &str| all || wanted.iter().any(|w| w == s);
    let mut text = String::new();
    if want("server") {
        text.push_str(&format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\npactdb_version:{}\r\n\
             pactdb_node:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nssl:{}\r\nuptime_in_seconds:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            shared.node_id,
            std::process::id(),
            shared.port,
            if shared.tls { "yes" } else { "no" },
            shared.started.elapsed().as_secs()
        ));
    }
    if want("clients") {
        text.push_str(&format!(
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
            shared.connections.load(Ordering::Relaxed),
            crate::MAX_CONNECTIONS
        ));
    }
    if want("replication") {
        let cluster = client.cluster().clone();
        let endpoints: Vec<String> = cluster.nodes.values().map(|a| a.client.clone()).collect();
        // Fresh views from the nodes; the front end's cached ones if none answers.
        let views = match pactdb_client::fetch_views_with(&endpoints, &shared.client_security()).await {
            Ok((_, views)) => views,
            Err(_) => client.views().await.map(|(_, v)| v.into_values().collect()).unwrap_or_default(),
        };
        text.push_str(&format!(
            "# Replication\r\nrole:master\r\nconnected_slaves:0\r\npactdb_node:{}\r\npactdb_nodes:{}\r\npactdb_groups:{}\r\n",
            shared.node_id,
            cluster.nodes.len(),
            views.len()
        ));
        for v in &views {
            let role = if v.leader == shared.node_id {
                "primary"
            } else if v.is_member(shared.node_id) {
                "backup"
            } else {
                "none"
            };
            let members = v.members.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("|");
            text.push_str(&format!(
                "group{}:mode={},epoch={},leader={},members={},role={role}\r\n",
                v.group, v.mode, v.epoch, v.leader, members
            ));
        }
        text.push_str("\r\n");
    }
    if want("keyspace") {
        text.push_str("# Keyspace\r\n");
        match client.key_count().await {
            Ok(n) => text.push_str(&format!("db0:keys={n},expires=0,avg_ttl=0\r\n")),
            Err(e) => return db_err(e),
        }
    }
    Reply::Bulk(Bytes::from(text))
}
