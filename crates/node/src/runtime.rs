//! The node runtime: one event loop that drives the sans-IO core.
//!
//! It owns the process's real resources: the WAL (through the group-commit
//! writer thread), the TCP transport and the clock. It turns them into core
//! inputs and carries out the core's effects, and nothing else: no protocol
//! decision is made here. It must never send an effect the core has not
//! released, never release a read answered under a lease after that lease
//! ran out by the clock at release (`Effect::ReplyUnderLease`), and never
//! tell the core a record is durable before the writer has fsynced it.

use crate::net::{Net, NetConfig, NetEvent};
use crate::wal::{InlineDeclined, Wal, WalOptions, WalRecordBytes, WalWriter};
use anyhow::Context;
use pactdb_core::bugs::Bugs;
use pactdb_core::io::release_under_lease;
use pactdb_core::wire::{self, ClientMsg, ClientReply, PeerMsg, WalRecord};
use pactdb_core::{Effect, Input, Node, NodeConfig};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Inputs the event loop feeds the core at most per step; a bound on the
/// batch keeps one step's latency small under a flood.
pub const MAX_INPUTS_PER_STEP: usize = 4096;
/// Network events waiting for the event loop (back-pressure beyond this).
pub const NET_EVENT_QUEUE: usize = 65536;
/// How often the core gets a tick.
pub const TICK_MS: u64 = 5;
/// A step that persists at most this many records, while the WAL writer
/// thread has nothing queued, syncs them on the event loop's own thread.
/// Under load steps persist more and go to the writer thread, which syncs
/// while the event loop carries on.
pub const INLINE_SYNC_MAX_RECORDS: usize = 2;
/// An inline fsync that took longer than this means the disk is slow right
/// now: while the event loop waits in fsync it sends no heartbeats and
/// answers nothing, so for the next `INLINE_SYNC_PAUSE_MS` every sync goes
/// to the writer thread and the loop stays responsive. Twice the heartbeat
/// period and a fifth of the time after which backups suspect the primary:
/// single fsyncs of a few milliseconds are common on a shared virtual disk
/// and harmless.
pub const INLINE_SYNC_SLOW_MS: u64 = 20;
pub const INLINE_SYNC_PAUSE_MS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: u64,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    pub client_listen: SocketAddr,
    /// Peer addresses of every node, this one included.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Overrides of the core's defaults (timing, log retention).
    pub log_retain_entries: Option<u64>,
}

/// Runs a node until `shutdown` resolves.
pub async fn run_node(opts: NodeOptions, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(opts.peers.contains_key(&opts.id), "--peers must include this node ({})", opts.id);
    let wal_dir = opts.data_dir.join("wal");
    let (wal, raw) = Wal::open(&wal_dir, WalOptions::default())
        .with_context(|| format!("opening the WAL in {}", wal_dir.display()))?;
    // The core records a cut in its WAL (its first persist), but until that
    // record is durable only this marker file remembers it: a crash in
    // between would otherwise find a clean, shorter WAL and forget that
    // acknowledged entries may be gone.
    let cut_marker = opts.data_dir.join("wal-was-cut");
    let was_cut = wal.was_cut() || cut_marker.exists();
    if wal.was_cut() && !cut_marker.exists() {
        write_durably(&cut_marker, &opts.data_dir)
            .with_context(|| format!("recording the WAL cut in {}", cut_marker.display()))?;
    }
    let mut records = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let rec: WalRecord = wire::decode(r).map_err(|e| {
            anyhow::anyhow!("WAL record {i} in {} cannot be decoded ({e}); refusing to start", wal_dir.display())
        })?;
        records.push(rec);
    }
    let mut cfg = NodeConfig::new(opts.id, opts.peers.keys().copied().collect());
    if let Some(n) = opts.log_retain_entries {
        cfg.log_retain_entries = n;
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ (std::process::id() as u64) << 32;
    let n_records = records.len();
    // With a cut, the node's first record (lsn n + 1) is its `WalCut`.
    let mut cut_lsn = was_cut.then_some(n_records as u64 + 1);
    let mut node = Node::recover(cfg, seed, Bugs::default(), records, was_cut);
    tracing::info!(node = opts.id, records = n_records, was_cut, "recovered from the WAL");

    let (persisted_tx, mut persisted_rx) = mpsc::unbounded_channel::<u64>();
    let writer = WalWriter::spawn(
        wal,
        Box::new(move |lsn| {
            let _ = persisted_tx.send(lsn);
        }),
    );
    let (events_tx, mut events_rx) = mpsc::channel(NET_EVENT_QUEUE);
    let net = Net::start(
        NetConfig {
            peer_listen: opts.peer_listen,
            client_listen: opts.client_listen,
            peers: opts.peers.iter().filter(|(id, _)| **id != opts.id).map(|(id, a)| (*id, *a)).collect(),
        },
        events_tx,
    )
    .await?;
    tracing::info!(node = opts.id, peer = %net.local_peer_addr(), client = %net.local_client_addr(), "listening");

    let start = Instant::now();
    let mut inline_paused_until = start;
    let mut last_tick = start;
    let mut tick = tokio::time::interval(Duration::from_millis(TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tokio::pin!(shutdown);
    let mut inputs = Vec::with_capacity(MAX_INPUTS_PER_STEP);
    let mut durable = |lsn: u64, inputs: &mut Vec<Input>| {
        if cut_lsn.is_some_and(|c| lsn >= c) {
            // The WAL itself now says it was cut.
            cut_lsn = None;
            if let Err(e) = std::fs::remove_file(&cut_marker) {
                tracing::warn!("could not remove {}: {e}", cut_marker.display());
            }
        }
        inputs.push(Input::Persisted { lsn });
    };
    loop {
        // After an inline sync the step's own `Persisted` input is waiting;
        // it is handled at once, with whatever else has arrived meanwhile.
        // Such steps can follow each other without passing the `select!`,
        // so the tick is checked here too: heartbeats must not starve.
        if !inputs.is_empty() && last_tick.elapsed() >= Duration::from_millis(TICK_MS) {
            last_tick = Instant::now();
            inputs.push(Input::Tick);
        }
        if inputs.is_empty() {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                Some(lsn) = persisted_rx.recv() => {
                    // Only the newest durable lsn matters; older ones are implied.
                    let mut lsn = lsn;
                    while let Ok(l) = persisted_rx.try_recv() { lsn = lsn.max(l); }
                    durable(lsn, &mut inputs);
                }
                Some(ev) = events_rx.recv() => push_event(&net, &mut inputs, ev),
                _ = tick.tick() => {
                    last_tick = Instant::now();
                    inputs.push(Input::Tick);
                }
            }
        }
        while inputs.len() < MAX_INPUTS_PER_STEP {
            match events_rx.try_recv() {
                Ok(ev) => push_event(&net, &mut inputs, ev),
                Err(_) => break,
            }
        }
        let now = start.elapsed().as_millis() as u64;
        let effects = node.step_batch(now, inputs.drain(..));
        let mut records = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => net.send_to_peer(to, wire::encode(&msg)),
                Effect::Reply { token, reply } => net.send_to_client(token, wire::encode(&reply)),
                Effect::ReplyUnderLease { token, reply, lease_expires_ms } => {
                    // The clock is read again here, not taken from the
                    // batch's `now`: the batch may have taken long enough
                    // for the lease the read relied on to run out.
                    let now = start.elapsed().as_millis() as u64;
                    let reply = release_under_lease(reply, lease_expires_ms, now);
                    net.send_to_client(token, wire::encode(&reply))
                }
                Effect::Persist { lsn, record } => {
                    records.push(WalRecordBytes { lsn, bytes: wire::encode(&record), needs_sync: record.needs_sync() })
                }
            }
        }
        if records.is_empty() {
            continue;
        }
        if records.len() <= INLINE_SYNC_MAX_RECORDS && writer.is_idle() && Instant::now() >= inline_paused_until {
            // A light step: sync here rather than wake the writer thread
            // and be woken back (two thread switches, a large part of one
            // request's latency). First let the transport's tasks send what
            // this step produced, so backups get their appends before this
            // thread blocks in fsync.
            tokio::task::yield_now().await;
            let began = Instant::now();
            match writer.write_inline(&records) {
                Ok(durable_lsn) => {
                    let took = began.elapsed();
                    if took > Duration::from_millis(INLINE_SYNC_SLOW_MS) {
                        tracing::debug!(?took, "slow inline fsync; syncing on the writer thread for a while");
                        inline_paused_until = Instant::now() + Duration::from_millis(INLINE_SYNC_PAUSE_MS);
                    }
                    if let Some(lsn) = durable_lsn {
                        durable(lsn, &mut inputs);
                    }
                }
                Err(InlineDeclined) => writer.submit_batch(records).await,
            }
        } else {
            writer.submit_batch(records).await;
        }
    }
    tracing::info!(node = opts.id, "shutting down");
    drop(net);
    tokio::task::spawn_blocking(move || writer.shutdown()).await?;
    Ok(())
}

/// Creates `path` and makes it and its directory entry durable.
fn write_durably(path: &std::path::Path, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::create(path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Decodes one network event into a core input. Undecodable peer messages
/// are logged and dropped; undecodable client messages get a clear error.
fn push_event(net: &Net, inputs: &mut Vec<Input>, ev: NetEvent) {
    match ev {
        NetEvent::Peer { payload } => match wire::decode::<PeerMsg>(&payload) {
            Ok(m) => inputs.push(Input::Peer(m)),
            Err(e) => tracing::warn!("dropping an undecodable peer message ({} bytes): {e}", payload.len()),
        },
        NetEvent::Client { conn, payload } => match wire::decode::<ClientMsg>(&payload) {
            Ok(m) => inputs.push(Input::Client { token: conn, msg: m }),
            Err(e) => {
                tracing::warn!(conn, "undecodable client message ({} bytes): {e}", payload.len());
                let reply = ClientReply::ProtocolError { reason: format!("cannot decode the request: {e}") };
                net.send_to_client(conn, wire::encode(&reply));
            }
        },
        NetEvent::ClientClosed { .. } => {}
    }
}
