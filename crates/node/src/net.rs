//! TCP transport: peer and client connections that carry opaque frames.
//!
//! This module owns every socket a node uses. It binds the peer and client listeners, accepts
//! inbound connections, dials one outbound connection per peer, and moves opaque payloads
//! between those sockets and the node's event loop. Inbound frames become [`NetEvent`]s on a
//! bounded channel, so a slow event loop pushes back on the socket readers instead of letting
//! memory grow. Outbound payloads are queued without blocking and written by one task per
//! connection, which batches everything queued into a single write.
//!
//! It must never interpret a payload (the protocol core serializes and understands its own
//! messages), never block or fail the caller when queueing a message, and never let one bad
//! connection affect another: a malformed frame closes only the connection it arrived on.
//! Delivery is best effort. A frame queued for a peer can be dropped when the queue is full or
//! when the connection breaks, and the protocol's retransmissions are what make that safe.
//!
//! Each pair of nodes uses two TCP connections, one per direction: outbound peer connections only
//! write and inbound peer connections only read. That keeps connection ownership obvious and
//! avoids having to decide which of two simultaneous dials wins.
//!
//! With TLS ([`NodeSecurity::Tls`], see `tls.rs`) every connection is a TLS stream: the
//! listeners complete the handshake (bounded by [`tls::HANDSHAKE_TIMEOUT`]) in the connection's
//! own task before reading a frame, and log a refused handshake once, at warn, with the remote
//! address and the reason. Plaintext and TLS connections share the framing code through
//! [`Stream`].
//!
//! Dropping the last clone of a [`Net`] shuts the transport down: the listeners close, every
//! connection is closed, and every task this module spawned ends.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, Weak};
use std::time::Duration;

use anyhow::Context as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::{lookup_host, TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};
use tokio::sync::{mpsc, oneshot, watch};

use crate::frame::{encode_frame, read_frame, FrameError, MAX_PAYLOAD_BYTES};
use crate::tls::{self, ClientSecurity, NodeSecurity};

/// Identifies one accepted client connection for as long as it is open. Ids are never reused
/// within one [`Net`], so a late reply to a closed connection cannot reach a newer one.
pub type ConnId = u64;

/// How many frames may wait for one peer before the newest are dropped.
pub const PEER_QUEUE_FRAMES: usize = 16384;

/// How many responses may wait for one client before the client is considered stuck and its
/// connection is closed (dropping responses silently would leave the client waiting forever).
pub const CLIENT_QUEUE_FRAMES: usize = 16384;

/// A writer stops adding frames to a batch once it holds this many bytes; bigger single writes
/// gain nothing and would only keep more memory alive per connection.
const BATCH_BYTES: usize = 1 << 20;

/// Read buffer per inbound connection, large enough that one system call picks up many frames.
const READ_BUFFER_BYTES: usize = 64 << 10;

/// The first retry delay after a failed dial; doubled on every further failure.
const BACKOFF_MIN: Duration = Duration::from_millis(20);

/// The longest delay between dials, so a peer that comes back is found within about a second.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A dial to an unreachable host would otherwise wait for the kernel's SYN retries (minutes).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause after a failed accept (for example when out of file descriptors) so the loop does not
/// spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Something that arrived from the network, for the node's event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A frame from a peer node's connection (peer messages carry their sender inside the
    /// payload). With TLS, `node` is the node id the connection's certificate names, which the
    /// sender inside the payload must match; `None` on a plaintext connection.
    Peer { payload: Vec<u8>, node: Option<u64> },
    /// A frame from a client connection, with the id to answer on.
    Client { conn: ConnId, payload: Vec<u8> },
    /// A client connection closed (so the caller can forget it).
    ClientClosed { conn: ConnId },
}

/// Where to listen and whom to talk to.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Address for connections from other nodes (port 0 picks a free port).
    pub peer_listen: SocketAddr,
    /// Address for connections from clients (port 0 picks a free port).
    pub client_listen: SocketAddr,
    /// Every peer this node may send to, by node id, at its peer listen address.
    pub peers: HashMap<u64, SocketAddr>,
    /// TLS on every connection, or plaintext (`--insecure`).
    pub security: NodeSecurity,
}

/// A running transport. Cheap to clone; all clones share the same sockets and queues.
#[derive(Clone)]
pub struct Net {
    inner: Arc<Inner>,
}

struct Inner {
    /// The peers, as `set_peers` last gave them: the cluster map changes while the node runs
    /// (nodes join and leave). Read on every send; written only when the map changes.
    peers: RwLock<HashMap<u64, Arc<PeerLink>>>,
    /// What writers spawned after start stop on.
    shutdown_rx: watch::Receiver<()>,
    clients: Mutex<HashMap<ConnId, ClientLink>>,
    next_conn: AtomicU64,
    local_peer_addr: SocketAddr,
    local_client_addr: SocketAddr,
    security: NodeSecurity,
    /// Nothing is ever sent on this. Every task holds a receiver and stops when this sender is
    /// dropped together with the last `Net` clone.
    _shutdown: watch::Sender<()>,
}

struct PeerLink {
    addr: SocketAddr,
    queue: mpsc::Sender<Vec<u8>>,
    dropped: AtomicU64,
    /// Dropping this (with the link) stops the link's writer, even one still redialing a peer
    /// that left the cluster.
    _kill: oneshot::Sender<()>,
}

struct ClientLink {
    queue: mpsc::Sender<Vec<u8>>,
    /// Dropping this (by removing the link from the map) tells the connection task to close the
    /// socket even if its writer is stuck on a client that stopped reading.
    _kill: oneshot::Sender<()>,
    remote: SocketAddr,
}

impl Net {
    /// Binds both listeners (failing fast, with the address in the error, if a port is taken),
    /// spawns the accept loops and per-peer writers on the current tokio runtime, and forwards
    /// every received frame as a [`NetEvent`] into `events`. When `events` is full, the socket
    /// readers wait, which pushes back on the remote senders through TCP.
    pub async fn start(cfg: NetConfig, events: mpsc::Sender<NetEvent>) -> anyhow::Result<Net> {
        let peer_listener = TcpListener::bind(cfg.peer_listen).await.with_context(|| {
            format!("cannot bind the peer listener on {} (is another process using that port?)", cfg.peer_listen)
        })?;
        let client_listener = TcpListener::bind(cfg.client_listen).await.with_context(|| {
            format!("cannot bind the client listener on {} (is another process using that port?)", cfg.client_listen)
        })?;
        let local_peer_addr = peer_listener.local_addr().context("reading the peer listener's bound address")?;
        let local_client_addr = client_listener.local_addr().context("reading the client listener's bound address")?;

        let (shutdown_tx, shutdown_rx) = watch::channel(());
        let peers =
            cfg.peers.iter().map(|(&id, &addr)| (id, PeerLink::spawn(id, addr, &shutdown_rx, &cfg.security))).collect();
        let inner = Arc::new(Inner {
            peers: RwLock::new(peers),
            shutdown_rx: shutdown_rx.clone(),
            clients: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(1),
            local_peer_addr,
            local_client_addr,
            security: cfg.security.clone(),
            _shutdown: shutdown_tx,
        });

        spawn_until_shutdown(
            &shutdown_rx,
            accept_peers(peer_listener, events.clone(), cfg.security.clone(), shutdown_rx.clone()),
        );
        spawn_until_shutdown(
            &shutdown_rx,
            accept_clients(client_listener, events, cfg.security.clone(), Arc::downgrade(&inner), shutdown_rx.clone()),
        );
        tracing::info!(
            tls = matches!(cfg.security, NodeSecurity::Tls(_)),
            peer_addr = %local_peer_addr,
            client_addr = %local_client_addr,
            peers = inner.peers().len(),
            "transport listening"
        );
        Ok(Net { inner })
    }

    /// Queues a payload for peer `to`. Never blocks and never fails.
    ///
    /// The connection is dialed on first use and redialed with capped exponential backoff
    /// whenever it breaks. When the peer's queue already holds [`PEER_QUEUE_FRAMES`] frames the
    /// new payload is dropped and counted (see [`Net::peer_frames_dropped`]); the protocol
    /// retransmits, so shedding load here is safe and keeps memory bounded.
    pub fn send_to_peer(&self, to: u64, payload: Vec<u8>) {
        let Some(link) = self.inner.peers().get(&to).cloned() else {
            tracing::warn!(peer = to, "dropping a frame for a peer that is not configured");
            return;
        };
        if payload.len() > MAX_PAYLOAD_BYTES {
            // The receiver would reject the frame and close the connection, taking every frame
            // queued behind it down too, so refuse it here.
            tracing::error!(
                peer = to,
                bytes = payload.len(),
                max = MAX_PAYLOAD_BYTES,
                "dropping a peer payload that exceeds the frame limit"
            );
            link.record_drop(to);
            return;
        }
        match link.queue.try_send(payload) {
            Ok(()) => {}
            // A closed queue means the writer task ended, which only happens during shutdown.
            Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => link.record_drop(to),
        }
    }

    /// Queues a payload for client connection `conn`; silently ignored if it has closed.
    ///
    /// If the client has stopped reading (its queue holds [`CLIENT_QUEUE_FRAMES`] responses) or
    /// the payload exceeds the frame limit, the connection is closed instead: a client that
    /// sees its connection close retries, whereas one whose response was silently dropped would
    /// wait forever.
    pub fn send_to_client(&self, conn: ConnId, payload: Vec<u8>) {
        let mut clients = self.inner.clients();
        let Some(link) = clients.get(&conn) else {
            return;
        };
        let reason = if payload.len() > MAX_PAYLOAD_BYTES {
            "response exceeds the frame limit"
        } else {
            match link.queue.try_send(payload) {
                // A closed queue means the connection is already being torn down.
                Ok(()) | Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(_)) => "client is not reading its responses",
            }
        };
        tracing::warn!(conn, remote = %link.remote, reason, "closing client connection");
        // Dropping the link drops its kill switch, which closes the socket.
        clients.remove(&conn);
    }

    /// How many frames for peer `to` were dropped because its queue was full (or the payload was
    /// too large). Zero for peers that are not configured.
    pub fn peer_frames_dropped(&self, to: u64) -> u64 {
        self.inner.peers().get(&to).map_or(0, |link| link.dropped.load(Ordering::Relaxed))
    }

    /// Makes `peers` the peer set: a new peer (or one at a new address) gets a new link and
    /// writer; a peer no longer named loses its link, and frames still queued for it are dropped.
    /// Links to peers that stay at the same address are kept, with their queues and connections.
    pub fn set_peers(&self, peers: &HashMap<u64, SocketAddr>) {
        let mut links = self.inner.peers.write().unwrap_or_else(PoisonError::into_inner);
        links.retain(|id, link| peers.get(id) == Some(&link.addr));
        for (&id, &addr) in peers {
            links.entry(id).or_insert_with(|| {
                tracing::info!(peer = id, %addr, "new peer");
                PeerLink::spawn(id, addr, &self.inner.shutdown_rx, &self.inner.security)
            });
        }
    }

    /// The peers and their addresses, as last set.
    pub fn peers(&self) -> HashMap<u64, SocketAddr> {
        self.inner.peers().iter().map(|(&id, link)| (id, link.addr)).collect()
    }

    /// The address the peer listener is actually bound to (useful when configured with port 0).
    pub fn local_peer_addr(&self) -> SocketAddr {
        self.inner.local_peer_addr
    }

    /// The address the client listener is actually bound to (useful when configured with port 0).
    pub fn local_client_addr(&self) -> SocketAddr {
        self.inner.local_client_addr
    }
}

impl fmt::Debug for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Net")
            .field("local_peer_addr", &self.inner.local_peer_addr)
            .field("local_client_addr", &self.inner.local_client_addr)
            .field("peers", &self.inner.peers().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The peer links. A panic while the lock was held cannot leave the map half-updated (each
    /// change is one insert or remove), so a poisoned lock is used as it is.
    fn peers(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Arc<PeerLink>>> {
        self.peers.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn clients(&self) -> MutexGuard<'_, HashMap<ConnId, ClientLink>> {
        // The map is only ever inserted into or removed from, so a panic elsewhere while the lock
        // was held cannot have left it half-updated; keep serving rather than propagating poison.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl PeerLink {
    /// A link to peer `id` at `addr`, with its writer running until the link is dropped or the
    /// transport shuts down.
    fn spawn(id: u64, addr: SocketAddr, shutdown: &watch::Receiver<()>, security: &NodeSecurity) -> Arc<PeerLink> {
        let (tx, rx) = mpsc::channel(PEER_QUEUE_FRAMES);
        let (kill, killed) = oneshot::channel::<()>();
        let security = security.clone();
        spawn_until_shutdown(shutdown, async move {
            tokio::select! {
                () = peer_writer(id, addr, rx, security) => {}
                _ = killed => {}
            }
        });
        Arc::new(PeerLink { addr, queue: tx, dropped: AtomicU64::new(0), _kill: kill })
    }

    fn record_drop(&self, to: u64) {
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Logging every drop would flood the log exactly when the node is overloaded, so log at
        // powers of two: the first drop is always visible and the volume stays logarithmic.
        if total.is_power_of_two() {
            tracing::warn!(
                peer = to,
                dropped_total = total,
                "peer queue full; dropping newest frames (the protocol retransmits)"
            );
        }
    }
}

/// Runs `fut` on the current runtime until it finishes or the transport shuts down.
fn spawn_until_shutdown<F>(shutdown: &watch::Receiver<()>, fut: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = fut => {}
            // Nothing is ever sent, so this only completes once the sender is dropped.
            _ = shutdown.changed() => {}
        }
    });
}

fn set_nodelay(stream: &TcpStream, remote: SocketAddr) {
    // Frames are already batched by the writers, so Nagle's algorithm would only add latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::warn!(%remote, error = %e, "cannot set TCP_NODELAY");
    }
}

/// Logs why reading from an inbound connection stopped, at a level matching who is at fault.
fn log_read_end(kind: &'static str, remote: SocketAddr, err: &FrameError) {
    if err.is_malformed() {
        tracing::warn!(%remote, kind, error = %err, "closing connection after a malformed frame");
    } else if let FrameError::Closed = err {
        tracing::debug!(%remote, kind, "connection closed by remote");
    } else {
        tracing::debug!(%remote, kind, error = %err, "connection failed");
    }
}

/// Moves queued payloads into `out` until the queue is empty or the batch is large enough.
/// Returns true if the queue is closed and empty.
fn drain_queue(queue: &mut mpsc::Receiver<Vec<u8>>, out: &mut Vec<u8>) -> bool {
    while out.len() < BATCH_BYTES {
        match queue.try_recv() {
            Ok(payload) => encode_frame(out, &payload),
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Writes the whole batch with one `write_all`, then empties `out` for reuse whatever happened.
async fn write_batch(wr: &mut WriteHalf<Stream>, out: &mut Vec<u8>) -> io::Result<()> {
    let result = async {
        wr.write_all(out).await?;
        wr.flush().await
    }
    .await;
    out.clear();
    // One oversized frame should not pin its buffer for the life of the connection.
    if out.capacity() > 2 * BATCH_BYTES {
        out.shrink_to(BATCH_BYTES);
    }
    result
}

async fn accept_peers(
    listener: TcpListener,
    events: mpsc::Sender<NetEvent>,
    security: NodeSecurity,
    shutdown: watch::Receiver<()>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a peer connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        set_nodelay(&stream, remote);
        tracing::debug!(%remote, "accepted peer connection");
        let events = events.clone();
        let security = security.clone();
        spawn_until_shutdown(&shutdown, async move {
            let Some((stream, node)) = accept_stream(stream, remote, &security, Port::Peer).await else {
                return;
            };
            read_peer(stream, remote, node, events).await
        });
    }
}

/// Which listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Port {
    Peer,
    Client,
}

impl Port {
    fn name(self) -> &'static str {
        match self {
            Port::Peer => "peer",
            Port::Client => "client",
        }
    }
}

/// Completes the server side of a connection's handshake (nothing to do in plaintext), bounded
/// by the handshake timeout. A refused handshake is logged once, with the remote address and
/// the reason, and yields `None`. With TLS on the peer port, also yields the node id the dialing
/// node's certificate names.
async fn accept_stream(
    tcp: TcpStream,
    remote: SocketAddr,
    security: &NodeSecurity,
    port: Port,
) -> Option<(Stream, Option<u64>)> {
    let tls = match security {
        NodeSecurity::Insecure => {
            // A connection that starts with a TLS handshake record comes from a client or node
            // configured for TLS: say so instead of reporting a malformed frame. (Clients speak
            // first in this protocol, so waiting for the first bytes delays nothing.)
            let mut first = [0u8; 2];
            if matches!(tcp.peek(&mut first).await, Ok(2)) && tls::looks_like_tls_hello(&first) {
                tracing::warn!(
                    "refused a TLS connection from {remote} on the {} port: this node runs with --insecure \
                     (plaintext)",
                    port.name()
                );
                return None;
            }
            return Some((Stream::Plain(tcp), None));
        }
        NodeSecurity::Tls(tls) => tls,
    };
    let acceptor = match port {
        Port::Peer => tls.peer_acceptor(),
        Port::Client => tls.client_acceptor(),
    };
    let handshake = async {
        // A connection closed before sending anything (a port probe: `demo` waits for the
        // listeners that way) is no refused client; leave it out of the warnings.
        let mut first = [0u8; 1];
        if matches!(tcp.peek(&mut first).await, Ok(0)) {
            return None;
        }
        Some(acceptor.accept(tcp).await)
    };
    let reason = match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, handshake).await {
        Ok(None) => {
            tracing::debug!(%remote, port = port.name(), "connection closed before the TLS handshake");
            return None;
        }
        Ok(Some(Ok(stream))) => {
            let node = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(tls::node_id_of);
            if port == Port::Peer && node.is_none() {
                // The peer verifier already requires a node certificate; this cannot happen.
                tracing::warn!(%remote, "refused a TLS connection on the peer port: its certificate names no node id");
                return None;
            }
            tracing::debug!(%remote, port = port.name(), ?node, "TLS handshake done");
            return Some((Stream::Server(Box::new(stream)), node));
        }
        Ok(Some(Err(e))) => tls::handshake_failure(&e),
        Err(_) => format!("the TLS handshake did not finish within {:?}", tls::HANDSHAKE_TIMEOUT),
    };
    tracing::warn!("refused a TLS connection from {remote} on the {} port: {reason}", port.name());
    None
}

/// Reads frames from an inbound peer connection until it ends. Inbound peer connections are
/// never written to; the reply path is this node's own outbound connection to that peer.
async fn read_peer(stream: Stream, remote: SocketAddr, node: Option<u64>, events: mpsc::Sender<NetEvent>) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    loop {
        // A fresh buffer per frame, because the payload's ownership moves into the event.
        let mut payload = Vec::new();
        if let Err(e) = read_frame(&mut reader, &mut payload).await {
            log_read_end("peer", remote, &e);
            return;
        }
        if events.send(NetEvent::Peer { payload, node }).await.is_err() {
            // Nobody consumes events any more, so there is no point in reading further.
            return;
        }
    }
}

async fn accept_clients(
    listener: TcpListener,
    events: mpsc::Sender<NetEvent>,
    security: NodeSecurity,
    inner: Weak<Inner>,
    shutdown: watch::Receiver<()>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        set_nodelay(&stream, remote);
        let events = events.clone();
        let security = security.clone();
        let inner = inner.clone();
        // The handshake runs in the connection's own task, so a slow one delays nobody else.
        spawn_until_shutdown(&shutdown, async move {
            let Some((stream, _)) = accept_stream(stream, remote, &security, Port::Client).await else {
                return;
            };
            let (queue_tx, queue_rx) = mpsc::channel(CLIENT_QUEUE_FRAMES);
            let (kill_tx, kill_rx) = oneshot::channel();
            let conn = {
                // Only a weak reference is kept across awaits so that dropping the last `Net`
                // really drops the shared state and shuts everything down.
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
                inner.clients().insert(conn, ClientLink { queue: queue_tx, _kill: kill_tx, remote });
                conn
            };
            tracing::debug!(%remote, conn, "accepted client connection");
            serve_client(conn, stream, remote, queue_rx, kill_rx, events, inner).await
        });
    }
}

/// Runs one client connection: reads requests into events and writes queued responses, until
/// either side fails, the client disconnects, or the server kills the connection.
async fn serve_client(
    conn: ConnId,
    stream: Stream,
    remote: SocketAddr,
    queue: mpsc::Receiver<Vec<u8>>,
    kill: oneshot::Receiver<()>,
    events: mpsc::Sender<NetEvent>,
    inner: Weak<Inner>,
) {
    let (rd, wr) = tokio::io::split(stream);
    tokio::select! {
        () = read_client(conn, rd, remote, &events) => {}
        () = write_client(conn, wr, remote, queue) => {}
        // `send_to_client` already logged why it removed the connection.
        _ = kill => {}
    }
    // Both socket halves were dropped with the futures above, so the socket is closed now.
    if let Some(inner) = inner.upgrade() {
        inner.clients().remove(&conn);
    }
    let _ = events.send(NetEvent::ClientClosed { conn }).await;
}

async fn read_client(conn: ConnId, rd: ReadHalf<Stream>, remote: SocketAddr, events: &mpsc::Sender<NetEvent>) {
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    loop {
        let mut payload = Vec::new();
        if let Err(e) = read_frame(&mut reader, &mut payload).await {
            log_read_end("client", remote, &e);
            return;
        }
        if events.send(NetEvent::Client { conn, payload }).await.is_err() {
            return;
        }
    }
}

async fn write_client(conn: ConnId, mut wr: WriteHalf<Stream>, remote: SocketAddr, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut out = Vec::new();
    while let Some(payload) = queue.recv().await {
        encode_frame(&mut out, &payload);
        drain_queue(&mut queue, &mut out);
        if let Err(e) = write_batch(&mut wr, &mut out).await {
            tracing::debug!(%remote, conn, error = %e, "writing to client failed");
            return;
        }
    }
}

/// Owns the single outbound connection to one peer for the life of the transport.
async fn peer_writer(to: u64, addr: SocketAddr, mut queue: mpsc::Receiver<Vec<u8>>, security: NodeSecurity) {
    let mut out = Vec::new();
    let mut backoff = BACKOFF_MIN;
    let mut failures: u32 = 0;
    let mut last_failure = String::new();
    loop {
        // Dial lazily: an idle link costs no socket, and a peer that is down costs no dial
        // attempts until there is something to tell it. Frames stay queued (in order) meanwhile.
        if out.is_empty() {
            match queue.recv().await {
                Some(payload) => encode_frame(&mut out, &payload),
                None => return,
            }
        }
        let stream = match dial(to, addr, &security).await {
            Ok(stream) => stream,
            Err(e) => {
                failures += 1;
                // Peers start in any order, so one warning per outage is enough; the retries
                // themselves are routine. A different reason (a peer that was down now refusing
                // the handshake) is news, and warned about again.
                let reason = e.to_string();
                if failures == 1 || reason != last_failure {
                    tracing::warn!(peer = to, %addr, error = %e, "cannot connect to peer; retrying with backoff");
                    last_failure = reason;
                } else {
                    tracing::debug!(peer = to, %addr, error = %e, failures, "still cannot connect to peer");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(peer = to, %addr, failures, "connected to peer");
        } else {
            tracing::debug!(peer = to, %addr, "connected to peer");
        }
        failures = 0;
        last_failure.clear();

        let (rd, wr) = tokio::io::split(stream);
        match pump_peer(&mut queue, rd, wr, &mut out, &mut backoff).await {
            Ok(()) => return,
            Err(e) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    tracing::info!(peer = to, %addr, "peer closed the connection; will redial");
                } else {
                    tracing::warn!(peer = to, %addr, error = %e, "connection to peer failed; will redial");
                }
                // The batch in flight is lost: we cannot know how much of it arrived, and the
                // protocol retransmits whatever matters.
                out.clear();
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Dials peer `to` at `addr`; with TLS, the peer's certificate must name `node-<to>`.
async fn dial(to: u64, addr: SocketAddr, security: &NodeSecurity) -> io::Result<Stream> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    set_nodelay(&stream, addr);
    match security {
        NodeSecurity::Insecure => Ok(Stream::Plain(stream)),
        NodeSecurity::Tls(tls) => {
            let tls =
                tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, tls.dialer().connect(tls::peer_server_name(to), stream))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
                    .map_err(|e| tls::explain_client_error(e, true))?;
            Ok(Stream::Client(Box::new(tls)))
        }
    }
}

/// Writes batches to a connected peer until the connection breaks (an error) or the queue
/// closes at shutdown (`Ok`). `out` holds at least one encoded frame on entry.
async fn pump_peer(
    queue: &mut mpsc::Receiver<Vec<u8>>,
    mut rd: ReadHalf<Stream>,
    mut wr: WriteHalf<Stream>,
    out: &mut Vec<u8>,
    backoff: &mut Duration,
) -> io::Result<()> {
    let mut scratch = [0u8; 64];
    loop {
        let closed = drain_queue(queue, out);
        write_batch(&mut wr, out).await?;
        // A successful write shows the connection works, so the next outage starts its backoff
        // from the minimum again.
        *backoff = BACKOFF_MIN;
        if closed {
            return Ok(());
        }
        // While idle, also watch the read side. The remote never writes on this connection, so a
        // read completing means it closed or failed; noticing that now means a restarted peer
        // gets a fresh connection instead of the next batch vanishing into a dead socket.
        loop {
            tokio::select! {
                next = queue.recv() => match next {
                    Some(payload) => {
                        encode_frame(out, &payload);
                        break;
                    }
                    None => return Ok(()),
                },
                read = rd.read(&mut scratch) => match read {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed the connection",
                        ))
                    }
                    // Stray bytes from a peer that should not write here are harmless; ignore them.
                    Ok(_) => {}
                    Err(e) => return Err(e),
                },
            }
        }
    }
}

/// A connection's byte stream: plaintext TCP, or TLS over TCP as the dialing or the accepting
/// side. The framing code reads and writes all three alike.
pub enum Stream {
    Plain(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stream::Plain(_) => "Stream::Plain",
            Stream::Client(_) => "Stream::Client(TLS)",
            Stream::Server(_) => "Stream::Server(TLS)",
        })
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A framed client-side connection, for the client library and for tests.
///
/// It speaks the same frames as the server side: [`FramedConn::send`] batches any number of
/// payloads into one write, and [`FramedConn::recv`] reads one frame through a buffered reader.
/// Use [`FramedConn::into_split`] to read and write from different tasks. Errors caused by TLS
/// (a node refusing this client's certificate, a node whose certificate is not trusted, a
/// plaintext client meeting a TLS node) carry a [`tls::Refused`] explanation.
#[derive(Debug)]
pub struct FramedConn {
    reader: FrameReader,
    writer: FrameWriter,
    local: SocketAddr,
    remote: SocketAddr,
}

/// The read half of a [`FramedConn`].
#[derive(Debug)]
pub struct FrameReader {
    inner: BufReader<ReadHalf<Stream>>,
    /// Plaintext, and no frame read yet: a TLS alert in the first bytes means the node speaks TLS.
    sniff_tls: bool,
    tls: bool,
}

/// The write half of a [`FramedConn`].
#[derive(Debug)]
pub struct FrameWriter {
    inner: WriteHalf<Stream>,
    out: Vec<u8>,
    tls: bool,
}

impl FramedConn {
    /// Connects to `addr` in plaintext, with TCP_NODELAY set (nodes started with `--insecure`).
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<Self> {
        Self::connect_with(addr, &ClientSecurity::Insecure).await
    }

    /// Connects to `addr` with TCP_NODELAY set, over TLS when `security` says so (the node's
    /// certificate is verified for [`tls::NODE_NAME`]); the handshake is bounded by
    /// [`tls::HANDSHAKE_TIMEOUT`].
    pub async fn connect_with<A: ToSocketAddrs>(addr: A, security: &ClientSecurity) -> io::Result<Self> {
        let mut last = io::Error::new(io::ErrorKind::InvalidInput, "the address resolved to nothing");
        let mut tcp = None;
        for a in lookup_host(addr).await? {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = tcp.ok_or(last)?;
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        let (stream, tls) = match security {
            ClientSecurity::Insecure => (Stream::Plain(stream), false),
            ClientSecurity::Tls(tls) => {
                let s = tokio::time::timeout(
                    tls::HANDSHAKE_TIMEOUT,
                    tls.connector().connect(tls::node_server_name(), stream),
                )
                .await
                .map_err(|_| tls::explain_client_error(io::ErrorKind::TimedOut.into(), true))?
                .map_err(|e| tls::explain_client_error(e, true))?;
                (Stream::Client(Box::new(s)), true)
            }
        };
        let (rd, wr) = tokio::io::split(stream);
        Ok(FramedConn {
            reader: FrameReader { inner: BufReader::with_capacity(READ_BUFFER_BYTES, rd), sniff_tls: !tls, tls },
            writer: FrameWriter { inner: wr, out: Vec::new(), tls },
            local,
            remote,
        })
    }

    /// Sends all `payloads`, in order, as one batched write.
    pub async fn send<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> io::Result<()> {
        self.writer.send(payloads).await
    }

    /// Reads the next frame's payload into `buf`, reusing its capacity.
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        self.reader.recv(buf).await
    }

    /// Splits the connection so reading and writing can happen in different tasks.
    pub fn into_split(self) -> (FrameReader, FrameWriter) {
        (self.reader, self.writer)
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }

    /// The remote address of the connection.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.remote)
    }
}

impl FrameReader {
    /// Reads the next frame's payload into `buf`, reusing its capacity. Not cancellation safe
    /// (see [`read_frame`]).
    pub async fn recv(&mut self, buf: &mut Vec<u8>) -> Result<(), FrameError> {
        if self.sniff_tls {
            if let Ok(first) = self.inner.fill_buf().await {
                if tls::looks_like_tls_alert(first) {
                    return Err(FrameError::Io(tls::plaintext_refused()));
                }
            }
            self.sniff_tls = false;
        }
        match read_frame(&mut self.inner, buf).await {
            Err(FrameError::Io(e)) if self.tls => Err(FrameError::Io(tls::explain_client_error(e, false))),
            other => other,
        }
    }
}

impl FrameWriter {
    /// Sends all `payloads`, in order, as one batched write. Fails with `InvalidInput`, before
    /// writing anything, if any payload exceeds the frame limit.
    pub async fn send<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> io::Result<()> {
        if let Some(p) = payloads.iter().find(|p| p.as_ref().len() > MAX_PAYLOAD_BYTES) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("payload of {} bytes exceeds the frame limit of {MAX_PAYLOAD_BYTES}", p.as_ref().len()),
            ));
        }
        for p in payloads {
            encode_frame(&mut self.out, p.as_ref());
        }
        let result = write_batch(&mut self.inner, &mut self.out).await;
        match result {
            Err(e) if self.tls => Err(tls::explain_client_error(e, false)),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::WIRE_VERSION;
    use tokio::time::timeout;

    const WAIT: Duration = Duration::from_secs(10);

    fn any_local() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// Finds a currently free port by binding and releasing it, for tests that need to know a
    /// node's address before that node exists.
    fn free_addr() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    async fn start_net(peer_listen: SocketAddr, peers: HashMap<u64, SocketAddr>) -> (Net, mpsc::Receiver<NetEvent>) {
        let (tx, rx) = mpsc::channel(1024);
        let cfg = NetConfig { peer_listen, client_listen: any_local(), peers, security: NodeSecurity::Insecure };
        (Net::start(cfg, tx).await.unwrap(), rx)
    }

    async fn next_event(rx: &mut mpsc::Receiver<NetEvent>) -> NetEvent {
        timeout(WAIT, rx.recv()).await.expect("timed out waiting for an event").expect("event channel closed")
    }

    async fn next_peer_payload(rx: &mut mpsc::Receiver<NetEvent>) -> Vec<u8> {
        match next_event(rx).await {
            NetEvent::Peer { payload, .. } => payload,
            other => panic!("expected a peer event, got {other:?}"),
        }
    }

    fn numbered(from: u64, i: u64) -> Vec<u8> {
        let mut p = from.to_be_bytes().to_vec();
        p.extend_from_slice(&i.to_be_bytes());
        // Vary the size so batches mix small and larger frames.
        p.resize(16 + (i as usize % 300), 0xAB);
        p
    }

    /// Waits until the server closes `stream`: EOF or a reset both count, data does not.
    async fn expect_closed_by_server(stream: &mut TcpStream) {
        let mut buf = [0u8; 64];
        match timeout(WAIT, stream.read(&mut buf)).await {
            Err(_) => panic!("server did not close the connection"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("server wrote {n} bytes instead of closing"),
        }
    }

    /// Answers every client frame with the same payload and reports client closures, standing in
    /// for the protocol layer.
    fn spawn_echo(
        net: Net,
        mut events: mpsc::Receiver<NetEvent>,
    ) -> (mpsc::UnboundedReceiver<ConnId>, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (closed_tx, closed_rx) = mpsc::unbounded_channel();
        let (peer_tx, peer_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                match ev {
                    NetEvent::Client { conn, payload } => net.send_to_client(conn, payload),
                    NetEvent::ClientClosed { conn } => {
                        let _ = closed_tx.send(conn);
                    }
                    NetEvent::Peer { payload, .. } => {
                        let _ = peer_tx.send(payload);
                    }
                }
            }
        });
        (closed_rx, peer_rx)
    }

    async fn echo_round_trip(conn: &mut FramedConn, payloads: &[&str]) {
        let payloads: Vec<&[u8]> = payloads.iter().map(|p| p.as_bytes()).collect();
        conn.send(&payloads).await.unwrap();
        let mut buf = Vec::new();
        for expected in payloads {
            timeout(WAIT, conn.recv(&mut buf)).await.expect("timed out waiting for an echo").unwrap();
            assert_eq!(&buf[..], expected);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peers_exchange_payloads_both_ways_in_order() {
        // A's address must be known before B starts, and B's before A starts.
        let a_addr = free_addr();
        let (b, mut b_rx) = start_net(any_local(), HashMap::from([(1, a_addr)])).await;
        let (a, mut a_rx) = start_net(a_addr, HashMap::from([(2, b.local_peer_addr())])).await;
        assert_eq!(a.local_peer_addr(), a_addr);

        const N: u64 = 3000;
        for i in 0..N {
            a.send_to_peer(2, numbered(1, i));
            b.send_to_peer(1, numbered(2, i));
            if i % 500 == 0 {
                // Yield now and then so some frames go out in small batches and some in large.
                tokio::task::yield_now().await;
            }
        }
        for i in 0..N {
            assert_eq!(next_peer_payload(&mut b_rx).await, numbered(1, i));
            assert_eq!(next_peer_payload(&mut a_rx).await, numbered(2, i));
        }
        assert_eq!(a.peer_frames_dropped(2), 0);
        assert_eq!(b.peer_frames_dropped(1), 0);
    }

    /// A peer that joins the cluster while the transport runs is reached
    /// once `set_peers` names it; one the cluster map no longer names is
    /// not, and frames for it are dropped rather than queued.
    #[tokio::test]
    async fn peers_set_while_running_are_reached_and_dropped_ones_are_not() {
        let (a, _a_rx) = start_net(any_local(), HashMap::new()).await;
        let (b, mut b_rx) = start_net(any_local(), HashMap::new()).await;
        a.send_to_peer(2, numbered(1, 0));
        assert!(a.peers().is_empty(), "no peer until one is set");
        a.set_peers(&HashMap::from([(2, b.local_peer_addr())]));
        assert_eq!(a.peers(), HashMap::from([(2, b.local_peer_addr())]));
        for i in 1..50 {
            a.send_to_peer(2, numbered(1, i));
        }
        for i in 1..50 {
            assert_eq!(next_peer_payload(&mut b_rx).await, numbered(1, i));
        }
        a.set_peers(&HashMap::new());
        assert!(a.peers().is_empty());
        a.send_to_peer(2, numbered(1, 99));
        assert!(timeout(Duration::from_millis(200), b_rx.recv()).await.is_err(), "a dropped peer gets nothing");
    }

    #[tokio::test]
    async fn peer_started_late_still_receives_queued_frames() {
        let late_addr = free_addr();
        let (a, _a_rx) = start_net(any_local(), HashMap::from([(7, late_addr)])).await;
        for i in 0..100 {
            a.send_to_peer(7, numbered(1, i));
        }
        // Let several dials fail and the backoff grow before the peer appears.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_late, mut late_rx) = start_net(late_addr, HashMap::new()).await;
        for i in 0..100 {
            assert_eq!(next_peer_payload(&mut late_rx).await, numbered(1, i));
        }
        assert_eq!(a.peer_frames_dropped(7), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn restarted_peer_gets_a_fresh_connection() {
        let b_addr = free_addr();
        let (a, _a_rx) = start_net(any_local(), HashMap::from([(2, b_addr)])).await;
        let (b, mut b_rx) = start_net(b_addr, HashMap::new()).await;
        a.send_to_peer(2, b"before".to_vec());
        assert_eq!(next_peer_payload(&mut b_rx).await, b"before");

        // Dropping the last handle shuts B down and closes its sockets, like a crash would.
        drop(b);
        drop(b_rx);
        // Give A time to notice the closed connection, and B's listener time to go away.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (_b2, mut b2_rx) = {
            let mut attempt = 0;
            loop {
                let (tx, rx) = mpsc::channel(16);
                let cfg = NetConfig {
                    peer_listen: b_addr,
                    client_listen: any_local(),
                    peers: HashMap::new(),
                    security: NodeSecurity::Insecure,
                };
                match Net::start(cfg, tx).await {
                    Ok(net) => break (net, rx),
                    Err(e) if attempt < 50 => {
                        attempt += 1;
                        eprintln!("restart attempt {attempt}: {e:#}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => panic!("could not restart B: {e:#}"),
                }
            }
        };
        a.send_to_peer(2, b"after".to_vec());
        assert_eq!(next_peer_payload(&mut b2_rx).await, b"after");
    }

    #[tokio::test]
    async fn full_peer_queue_drops_the_newest_frames_and_counts_them() {
        let down = free_addr();
        let (a, _a_rx) = start_net(any_local(), HashMap::from([(3, down)])).await;
        let extra = 100u64;
        // On this single-threaded runtime the writer cannot run between these sends, so exactly
        // PEER_QUEUE_FRAMES fit and the rest are dropped.
        let total = PEER_QUEUE_FRAMES as u64 + extra;
        for i in 0..total {
            a.send_to_peer(3, numbered(1, i));
        }
        assert_eq!(a.peer_frames_dropped(3), extra);
        assert_eq!(a.peer_frames_dropped(99), 0);
        a.send_to_peer(99, b"nobody".to_vec()); // An unknown peer is ignored, not a panic.

        // The oldest frames were kept: once the peer comes up it receives exactly those, in order.
        let (_b, mut b_rx) = start_net(down, HashMap::new()).await;
        for i in 0..PEER_QUEUE_FRAMES as u64 {
            assert_eq!(next_peer_payload(&mut b_rx).await, numbered(1, i));
        }
        a.send_to_peer(3, b"marker".to_vec());
        assert_eq!(next_peer_payload(&mut b_rx).await, b"marker");
    }

    #[tokio::test]
    async fn bad_version_closes_only_that_client_connection() {
        let (net, rx) = start_net(any_local(), HashMap::new()).await;
        let (mut closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);

        let mut good = FramedConn::connect(net.local_client_addr()).await.unwrap();
        echo_round_trip(&mut good, &["ping-1"]).await;

        let mut bad = TcpStream::connect(net.local_client_addr()).await.unwrap();
        bad.write_all(&[0, 0, 0, 2, 9, 0xAA]).await.unwrap();
        expect_closed_by_server(&mut bad).await;
        let closed = timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();

        // The well-behaved connection is unaffected, including batched requests.
        echo_round_trip(&mut good, &["ping-2", "", "ping-3"]).await;

        // The closed connection's id is forgotten: answering it is silently ignored.
        net.send_to_client(closed, b"late".to_vec());
        echo_round_trip(&mut good, &["ping-4"]).await;
        assert!(closed_rx.try_recv().is_err(), "only one connection closed");
    }

    #[tokio::test]
    async fn four_gib_length_claim_closes_the_connection_without_crashing() {
        let (net, rx) = start_net(any_local(), HashMap::new()).await;
        let (mut closed_rx, mut peer_rx) = spawn_echo(net.clone(), rx);
        let mut good = FramedConn::connect(net.local_client_addr()).await.unwrap();

        // On the client port.
        let mut bad = TcpStream::connect(net.local_client_addr()).await.unwrap();
        bad.write_all(&[0xFF, 0xFF, 0xFF, 0xFF, WIRE_VERSION, 1, 2, 3]).await.unwrap();
        expect_closed_by_server(&mut bad).await;
        timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();
        echo_round_trip(&mut good, &["still here"]).await;

        // On the peer port.
        let mut bad_peer = TcpStream::connect(net.local_peer_addr()).await.unwrap();
        bad_peer.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        expect_closed_by_server(&mut bad_peer).await;

        // An empty frame is malformed too.
        let mut empty_peer = TcpStream::connect(net.local_peer_addr()).await.unwrap();
        empty_peer.write_all(&[0, 0, 0, 0]).await.unwrap();
        expect_closed_by_server(&mut empty_peer).await;

        // Other peer connections still deliver.
        let mut peer = FramedConn::connect(net.local_peer_addr()).await.unwrap();
        peer.send(&[b"from a peer".to_vec()]).await.unwrap();
        let got = timeout(WAIT, peer_rx.recv()).await.unwrap().unwrap();
        assert_eq!(got, b"from a peer");
        echo_round_trip(&mut good, &["and still here"]).await;
    }

    #[tokio::test]
    async fn client_disconnect_is_reported_once() {
        let (net, rx) = start_net(any_local(), HashMap::new()).await;
        let (mut closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);
        let mut c = FramedConn::connect(net.local_client_addr()).await.unwrap();
        echo_round_trip(&mut c, &["hello"]).await;
        drop(c);
        timeout(WAIT, closed_rx.recv()).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(closed_rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn client_that_lets_responses_pile_up_is_disconnected() {
        let (net, mut rx) = start_net(any_local(), HashMap::new()).await;
        let mut stuck = FramedConn::connect(net.local_client_addr()).await.unwrap();
        stuck.send(&[b"hello".to_vec()]).await.unwrap();
        let conn = match next_event(&mut rx).await {
            NetEvent::Client { conn, payload } => {
                assert_eq!(payload, b"hello");
                conn
            }
            other => panic!("expected a client event, got {other:?}"),
        };
        // On this single-threaded runtime the connection's writer cannot drain between these
        // calls, so the queue overflows exactly as it would behind a client that stopped reading.
        for _ in 0..=CLIENT_QUEUE_FRAMES {
            net.send_to_client(conn, b"response".to_vec());
        }
        assert_eq!(
            next_event(&mut rx).await,
            NetEvent::ClientClosed { conn },
            "the overflowing connection is closed and reported"
        );
        // Further responses to the forgotten id are ignored without effect.
        net.send_to_client(conn, b"late".to_vec());

        // Everything queued before the overflow may or may not have been written, but the
        // connection must end rather than hang.
        let mut buf = Vec::new();
        let ended = timeout(WAIT, async {
            loop {
                if stuck.recv(&mut buf).await.is_err() {
                    break;
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the client connection was not closed");
    }

    #[tokio::test]
    async fn taken_ports_fail_fast_with_a_clear_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken_addr = taken.local_addr().unwrap();

        let (tx, _rx) = mpsc::channel(1);
        let cfg = NetConfig {
            peer_listen: taken_addr,
            client_listen: any_local(),
            peers: HashMap::new(),
            security: NodeSecurity::Insecure,
        };
        let err = Net::start(cfg, tx.clone()).await.unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("peer listener"), "{msg}");
        assert!(msg.contains(&taken_addr.to_string()), "{msg}");

        let cfg = NetConfig {
            peer_listen: any_local(),
            client_listen: taken_addr,
            peers: HashMap::new(),
            security: NodeSecurity::Insecure,
        };
        let msg = format!("{:#}", Net::start(cfg, tx).await.unwrap_err());
        assert!(msg.contains("client listener"), "{msg}");
    }

    #[tokio::test]
    async fn framed_conn_rejects_oversize_payloads_before_writing() {
        let (net, rx) = start_net(any_local(), HashMap::new()).await;
        let (_closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);
        let mut c = FramedConn::connect(net.local_client_addr()).await.unwrap();
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        let err = c.send(&[b"ok".to_vec(), big]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // Nothing was written, so the connection is still in step.
        echo_round_trip(&mut c, &["after"]).await;
    }

    async fn start_tls_net(
        peer_listen: SocketAddr,
        peers: HashMap<u64, SocketAddr>,
        tls: tls::NodeTls,
    ) -> (Net, mpsc::Receiver<NetEvent>) {
        let (tx, rx) = mpsc::channel(1024);
        let cfg = NetConfig { peer_listen, client_listen: any_local(), peers, security: NodeSecurity::Tls(tls) };
        (Net::start(cfg, tx).await.unwrap(), rx)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_peers_exchange_payloads_and_each_frame_names_its_authenticated_sender() {
        let ca = tls::test_certs::Ca::new("ca");
        let a_addr = free_addr();
        let (b, mut b_rx) = start_tls_net(any_local(), HashMap::from([(1, a_addr)]), ca.node_tls(2)).await;
        let (a, mut a_rx) = start_tls_net(a_addr, HashMap::from([(2, b.local_peer_addr())]), ca.node_tls(1)).await;
        for i in 0..500 {
            a.send_to_peer(2, numbered(1, i));
            b.send_to_peer(1, numbered(2, i));
        }
        for i in 0..500 {
            assert_eq!(next_event(&mut b_rx).await, NetEvent::Peer { payload: numbered(1, i), node: Some(1) });
            assert_eq!(next_event(&mut a_rx).await, NetEvent::Peer { payload: numbered(2, i), node: Some(2) });
        }
    }

    #[tokio::test]
    async fn tls_clients_are_served_and_plaintext_or_anonymous_ones_are_refused_with_a_reason() {
        let ca = tls::test_certs::Ca::new("ca");
        let (net, rx) = start_tls_net(any_local(), HashMap::new(), ca.node_tls(1)).await;
        let (_closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);
        let tls = ClientSecurity::Tls(ca.client_tls());
        let mut good = FramedConn::connect_with(net.local_client_addr(), &tls).await.unwrap();
        echo_round_trip(&mut good, &["over tls", "", "batched"]).await;

        // Plaintext: the node answers with a TLS alert, which the client recognises.
        let mut plain = FramedConn::connect(net.local_client_addr()).await.unwrap();
        plain.send(&[b"hello".to_vec()]).await.unwrap();
        let mut buf = Vec::new();
        match timeout(WAIT, plain.recv(&mut buf)).await.expect("the refusal is prompt") {
            Err(FrameError::Io(e)) => {
                assert!(tls::refusal(&e).is_some_and(|r| r.0.contains("the node speaks TLS")), "{e}")
            }
            other => panic!("expected a refusal, got {other:?}"),
        }

        // No client certificate.
        let anonymous = ClientSecurity::Tls(tls::ClientTls::from_pem(ca.pem().as_bytes(), None).unwrap());
        let result = async {
            let mut c = FramedConn::connect_with(net.local_client_addr(), &anonymous).await?;
            c.send(&[b"hello".to_vec()]).await?;
            c.recv(&mut buf).await.map_err(|e| match e {
                FrameError::Io(e) => e,
                other => io::Error::other(other.to_string()),
            })
        };
        let err = timeout(WAIT, result).await.expect("the refusal is prompt").unwrap_err();
        assert!(
            tls::refusal(&err).is_some_and(|r| r.0.contains("requires a client certificate from the cluster CA")),
            "{err}"
        );
        // The good connection is unaffected.
        echo_round_trip(&mut good, &["still here"]).await;
    }

    #[tokio::test]
    async fn a_tls_client_against_a_plaintext_node_is_told_so() {
        let ca = tls::test_certs::Ca::new("ca");
        let (net, rx) = start_net(any_local(), HashMap::new()).await;
        let (_closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);
        let tls = ClientSecurity::Tls(ca.client_tls());
        let err = timeout(WAIT, FramedConn::connect_with(net.local_client_addr(), &tls))
            .await
            .expect("the refusal is prompt")
            .unwrap_err();
        assert!(tls::refusal(&err).is_some_and(|r| r.0.contains("pass --insecure")), "{err}");
    }

    /// A connection that starts a handshake and then stalls is dropped once the handshake timeout
    /// passes (the paused clock jumps ahead while everything waits), and other clients are served.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_tls_handshake_is_dropped_after_the_timeout() {
        let ca = tls::test_certs::Ca::new("ca");
        let (net, rx) = start_tls_net(any_local(), HashMap::new(), ca.node_tls(1)).await;
        let (_closed_rx, _peer_rx) = spawn_echo(net.clone(), rx);
        let mut stalled = TcpStream::connect(net.local_client_addr()).await.unwrap();
        // The first bytes of a TLS record header, and then nothing.
        stalled.write_all(&[0x16, 0x03]).await.unwrap();
        let began = tokio::time::Instant::now();
        let mut buf = [0u8; 64];
        match timeout(tls::HANDSHAKE_TIMEOUT + Duration::from_secs(1), stalled.read(&mut buf)).await {
            Err(_) => panic!("the stalled handshake outlived the handshake timeout"),
            Ok(Ok(0)) | Ok(Err(_)) => {}
            Ok(Ok(n)) => panic!("the node wrote {n} bytes to a stalled handshake"),
        }
        assert!(began.elapsed() >= tls::HANDSHAKE_TIMEOUT, "closed after {:?}", began.elapsed());
        let mut good =
            FramedConn::connect_with(net.local_client_addr(), &ClientSecurity::Tls(ca.client_tls())).await.unwrap();
        echo_round_trip(&mut good, &["served"]).await;
    }
}
