//! pactdb-redis: the Redis protocol (RESP2 and RESP3) front end of a node.
//!
//! It owns the `--redis-listen` listener, each Redis connection's state
//! (protocol version, name, WATCHed versions, the MULTI queue, SCAN
//! cursors) and a small pool of embedded pactdb front ends
//! (`pactdb_client::Client`) connected to the node's own client address.
//! Every key is served through them, so any node accepts any key (the
//! client routes it to its group and follows failovers) and a plain Redis
//! client needs to know one node only.
//!
//! It must never bypass the client library (no direct access to the
//! node's state: everything is a request like any other client's, with its
//! exactly-once ids), never serve plaintext on a node that runs TLS, never
//! panic on what a connection sends, and never hold unbounded state per
//! connection (see the bounds below and in `resp.rs`).

mod commands;
mod resp;

pub use resp::{Reply, MAX_ARGS, MAX_REQUEST_BYTES};

use bytes::BytesMut;
use pactdb_client::{Client, ClientOptions};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Connections served at once; past it a new one gets Redis's
/// "max number of clients reached" error and is closed.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Embedded front ends the connections share (round robin). One front end
/// admits at most `MAX_SESSION_RESPONSES` (128) operations in flight, and
/// measured with 256 connections, 4 front ends (64 writes in flight each)
/// collapsed from 25k to 2.4k writes/s after two seconds, as `pactdb
/// workload run kv --conns 4` does, where 16 (16 each) sustain 56k/s.
pub const CLIENT_POOL: usize = 16;
/// How long connecting the embedded front ends may take before a command
/// is answered `TRYAGAIN` (the next command tries again).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reply bytes a connection buffers before writing them out (pipelined
/// commands are answered in batches up to this).
const OUT_FLUSH_BYTES: usize = 64 * 1024;

/// How the front end is started (`pactdb node --redis-listen`).
pub struct RedisOptions {
    pub listener: TcpListener,
    /// The node's own client address(es): where the embedded front ends
    /// learn the cluster map.
    pub endpoints: Vec<String>,
    /// The embedded front ends' security: TLS with the node's identity
    /// when the node has `--certs-dir`.
    pub client: ClientOptions,
    /// TLS for Redis clients (the node's client acceptor: a certificate
    /// of the cluster CA is required); `None` only for an `--insecure` node.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub node_id: u64,
}

/// What every connection shares.
pub(crate) struct Shared {
    endpoints: Vec<String>,
    client_opts: ClientOptions,
    clients: tokio::sync::OnceCell<Vec<Client>>,
    next_client: AtomicUsize,
    next_conn_id: AtomicU64,
    pub(crate) connections: AtomicUsize,
    pub(crate) node_id: u64,
    pub(crate) started: Instant,
    pub(crate) tls: bool,
    pub(crate) port: u16,
}

impl Shared {
    pub(crate) fn client_security(&self) -> pactdb_client::ClientSecurity {
        self.client_opts.security.clone()
    }

    /// An embedded front end, connecting the pool first if need be. Until
    /// the cluster is bootstrapped (or while the node's client address does
    /// not answer) this is a `TRYAGAIN` error, and the next call tries again.
    pub(crate) async fn client(&self) -> Result<Client, Reply> {
        let pool = self
            .clients
            .get_or_try_init(|| async {
                let connect = async {
                    let mut pool = Vec::with_capacity(CLIENT_POOL);
                    for _ in 0..CLIENT_POOL {
                        pool.push(Client::connect_opts(&self.endpoints, self.client_opts.clone()).await?);
                    }
                    Ok::<_, pactdb_client::Error>(pool)
                };
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(Ok(pool)) => Ok(pool),
                    Ok(Err(e)) => Err(Reply::err(format!("TRYAGAIN cluster not ready: {e}"))),
                    Err(_) => Err(Reply::err(format!(
                        "TRYAGAIN cluster not ready: {} did not answer within {CONNECT_TIMEOUT:?}",
                        self.endpoints.join(",")
                    ))),
                }
            })
            .await?;
        let i = self.next_client.fetch_add(1, Ordering::Relaxed) % pool.len();
        Ok(pool[i].clone())
    }
}

/// Serves Redis connections until the process ends.
pub async fn serve(opts: RedisOptions) {
    let port = opts.listener.local_addr().map_or(0, |a| a.port());
    let shared = Arc::new(Shared {
        endpoints: opts.endpoints,
        client_opts: opts.client,
        clients: tokio::sync::OnceCell::new(),
        next_client: AtomicUsize::new(0),
        next_conn_id: AtomicU64::new(1),
        connections: AtomicUsize::new(0),
        node_id: opts.node_id,
        started: Instant::now(),
        tls: opts.tls.is_some(),
        port,
    });
    loop {
        let (stream, peer) = match opts.listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, typically: wait rather than spin.
                tracing::warn!("redis accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = opts.tls.clone();
        tokio::spawn(async move {
            let count = shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
            let id = shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
            match tls {
                Some(_) if speaks_plaintext(&stream).await => {
                    // A plaintext Redis client would only see a TLS alert
                    // ("Protocol error, got \x15"): tell it in its own words.
                    tracing::info!(%peer, "redis client without TLS refused");
                    let mut out = BytesMut::new();
                    Reply::err(PLAINTEXT_REFUSED).encode(false, &mut out);
                    let mut stream = stream;
                    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.write_all(&out)).await;
                }
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => serve_conn(s, &shared, id, count).await,
                    Ok(Err(e)) => tracing::info!(%peer, "redis TLS handshake refused: {e}"),
                    Err(_) => tracing::info!(%peer, "redis TLS handshake timed out"),
                },
                None => serve_conn(stream, &shared, id, count).await,
            }
            shared.connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// What a client that speaks plaintext RESP to a TLS node is told before
/// the connection is closed.
const PLAINTEXT_REFUSED: &str = "ERR this pactdb node serves Redis over TLS only, with a client certificate of \
                                 the cluster CA (redis-cli --tls --cacert ca.crt --cert client.crt --key client.key)";

/// Whether a new connection's first byte is not a TLS handshake record
/// (0x16): a plaintext client on a TLS port. Waits at most the handshake
/// timeout for that byte; a connection that sends nothing is left to the
/// TLS handshake's own timeout.
async fn speaks_plaintext(stream: &tokio::net::TcpStream) -> bool {
    let mut first = [0u8; 1];
    matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await,
        Ok(Ok(1)) if first[0] != 0x16
    )
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared, id: u64, count: usize) {
    let mut out = BytesMut::new();
    if count > MAX_CONNECTIONS {
        Reply::err("ERR max number of clients reached").encode(false, &mut out);
        let _ = stream.write_all(&out).await;
        return;
    }
    let mut conn = commands::Conn::new(id);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        // Every complete command in the buffer is run in order (a client
        // may pipeline), and their replies go out together.
        loop {
            match resp::take_command(&mut buf) {
                Ok(Some(argv)) if argv.is_empty() => continue,
                Ok(Some(argv)) => {
                    let close = conn.run(shared, argv, &mut out).await;
                    if close {
                        let _ = stream.write_all(&out).await;
                        return;
                    }
                    if out.len() >= OUT_FLUSH_BYTES {
                        if stream.write_all(&out).await.is_err() {
                            return;
                        }
                        out.clear();
                    }
                }
                Ok(None) => break,
                Err(msg) => {
                    Reply::Err(format!("ERR {msg}")).encode(conn.resp3, &mut out);
                    let _ = stream.write_all(&out).await;
                    return;
                }
            }
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        buf.reserve(16 * 1024);
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
