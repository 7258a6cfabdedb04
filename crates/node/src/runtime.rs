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
use crate::snapshot;
use crate::wal::{
    InlineDeclined, Wal, WalOptions, WalRecordBytes, WalSyncHandle, WalWriter, DEFAULT_SEGMENT_BYTES, WAL_FORMAT,
};
use anyhow::Context;
use pactdb_core::bugs::Bugs;
use pactdb_core::io::release_under_lease;
use pactdb_core::wire::{self, ClientMsg, ClientReply, PeerMsg, WalRecord};
use pactdb_core::{Effect, Input, Node, NodeConfig};
use std::collections::{BTreeMap, HashMap};
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
/// The node takes a snapshot once this many WAL bytes were written since
/// the last one (`--snapshot-wal-bytes`). With two snapshots kept (see
/// `snapshot.rs`), a node's data dir stays within about three snapshots
/// plus twice this plus two WAL segments.
pub const DEFAULT_SNAPSHOT_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// How long a node removed from the cluster map stays a peer (it learns of
/// its removal from its peers, when they refuse its rounds); bounded, so a
/// cluster whose nodes come and go keeps no link to every node it ever had.
const REMOVED_PEER_GRACE: Duration = Duration::from_secs(60);
/// While a snapshot waits for the WAL to be durable up to its checkpoint,
/// it asks for a sync after this long (a lazy record may be the last one).
const SNAPSHOT_SYNC_NUDGE_MS: u64 = 20;

#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub id: u64,
    pub data_dir: PathBuf,
    pub peer_listen: SocketAddr,
    pub client_listen: SocketAddr,
    /// Peer addresses of every node, this one included: until the node
    /// knows the cluster map, which then says who its peers are.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// The cluster map read from a running node (`pactdb node --join`), for
    /// a node added by `pactdb admin add-node`: its peers and config members
    /// until it reads the map from the config store itself.
    pub join_map: Option<pactdb_core::types::ClusterMap>,
    /// Overrides of the core's defaults (timing, log retention).
    pub log_retain_entries: Option<u64>,
    /// WAL bytes between snapshots (default `DEFAULT_SNAPSHOT_WAL_BYTES`).
    pub snapshot_wal_bytes: Option<u64>,
    /// Size at which the WAL starts a new segment (default
    /// `wal::DEFAULT_SEGMENT_BYTES`); segments are what snapshots free.
    pub wal_segment_bytes: Option<u64>,
    /// Per-stream throttle of snapshot transfers, bytes per second (0: none;
    /// default `DEFAULT_SNAPSHOT_BYTES_PER_SEC`).
    pub snapshot_bytes_per_sec: Option<u64>,
    /// Bytes per snapshot chunk (default and most `MAX_SNAPSHOT_CHUNK_BYTES`).
    pub snapshot_chunk_bytes: Option<u64>,
    /// TLS on every connection (the certs dir's CA and node certificate), or plaintext with an
    /// explicit `--insecure`.
    pub security: crate::tls::NodeSecurity,
}

/// What recovery read from the data dir: the records to replay, and where
/// the WAL's record positions stand against them.
struct Recovered {
    wal: Wal,
    records: Vec<WalRecord>,
    was_cut: bool,
}

/// Reads the newest valid snapshot and the WAL after it. A snapshot that is
/// invalid, or that the WAL does not continue (its segments after it are
/// gone), is passed over for an older one. With none usable and a WAL that
/// does not start at its first record, the node's state is lost: it starts
/// empty, as after a cut (amnesiac until a primary and the config store's
/// majority catch it up).
fn recover_data_dir(wal_dir: &std::path::Path, segment_bytes: u64) -> anyhow::Result<Recovered> {
    snapshot::remove_temps(wal_dir)
        .with_context(|| format!("removing snapshot temp files in {}", wal_dir.display()))?;
    let snapshots = snapshot::list_snapshots(wal_dir)?;
    let (mut wal, raw) = Wal::open(wal_dir, WalOptions { segment_bytes })
        .with_context(|| format!("opening the WAL in {}", wal_dir.display()))?;
    let first = wal.first_seq();
    let mut chosen = None;
    for (covers, path) in &snapshots {
        if *covers < first {
            tracing::warn!("snapshot {} is older than the WAL's first record {first}; passed over", path.display());
            continue;
        }
        match snapshot::read(path).with_context(|| format!("reading {}", path.display()))? {
            Ok((c, records)) if c == *covers => {
                chosen = Some((c, records));
                break;
            }
            Ok((c, _)) => tracing::warn!("snapshot {} says it covers {c}; ignored", path.display()),
            Err(reason) => tracing::warn!("snapshot {} is invalid ({reason}); ignored", path.display()),
        }
    }
    let mut was_cut = wal.was_cut();
    // Each record in its segment's format (see `wal.rs`).
    let formats: Vec<u32> = (first..wal.next_seq()).map(|i| wal.format_of(i)).collect();
    let decode = |i: u64, r: &[u8]| -> anyhow::Result<WalRecord> {
        decode_wal_record(formats[(i - first) as usize], r).map_err(|e| {
            anyhow::anyhow!("WAL record {i} in {} cannot be decoded ({e}); refusing to start", wal_dir.display())
        })
    };
    let mut records = Vec::new();
    match chosen {
        Some((covers, snap)) => {
            records = snap;
            let skip = (covers - first) as usize;
            for (i, r) in raw.iter().enumerate().skip(skip) {
                records.push(decode(first + i as u64, r)?);
            }
            if wal.next_seq() < covers {
                // The WAL ends before the snapshot (a cut or a lost lazy
                // tail): new records must not take positions it covers.
                wal.restart_at(covers)?;
            }
            tracing::info!(covers, "recovering from snapshot {}", snapshot::snapshot_path(wal_dir, covers).display());
        }
        None if first > 0 => {
            tracing::error!(
                "no usable snapshot covers the WAL before record {first}: this node's state is lost;                  it starts empty and amnesiac"
            );
            let next = wal.next_seq();
            wal.restart_at(next)?;
            was_cut = true;
        }
        None => {
            for (i, r) in raw.iter().enumerate() {
                records.push(decode(i as u64, r)?);
            }
        }
    }
    Ok(Recovered { wal, records, was_cut })
}

// One encoding at a time: the WAL's newest format and the frames' version
// are the core's encoding (`wire::FORMAT`).
const _: () = assert!(WAL_FORMAT == wire::FORMAT && crate::frame::WIRE_VERSION as u32 == wire::FORMAT);

/// Decodes a WAL record's payload in its segment's format: 2 (the one
/// written) in postcard, 1 (before format 2) with the legacy decoder.
pub fn decode_wal_record(format: u32, bytes: &[u8]) -> Result<WalRecord, String> {
    match format {
        WAL_FORMAT => wire::decode(bytes),
        1 => crate::legacy::decode_v1(bytes),
        other => Err(format!("WAL format {other} is not one this binary reads")),
    }
}

/// A snapshot for the snapshot thread: the checkpoint, and the WAL position
/// of the first record it does not cover.
struct SnapshotJob {
    checkpoint: pactdb_core::Checkpoint,
    covers: u64,
}

/// The snapshot thread: serializes and writes each checkpoint off the event
/// loop, installs it once the WAL is durable up to it, then prunes.
fn run_snapshots(
    dir: PathBuf,
    wal: WalSyncHandle,
    jobs: std::sync::mpsc::Receiver<SnapshotJob>,
    done: mpsc::UnboundedSender<()>,
) {
    while let Ok(SnapshotJob { checkpoint, covers }) = jobs.recv() {
        let began = Instant::now();
        let upto_lsn = checkpoint.upto_lsn;
        let written = snapshot::write_temp(&dir, covers, &checkpoint.records);
        let m = crate::metrics::get();
        m.snapshot_write_seconds.record(began.elapsed().as_secs_f64());
        if written.is_ok() {
            m.snapshots_written.increment(1);
        }
        // The shared parts of the state go back to the event loop's sole
        // ownership as soon as they are written.
        drop(checkpoint);
        let (temp, size) = match written {
            Ok(t) => t,
            Err(e) => {
                // Not fatal: the WAL still holds everything; next time.
                tracing::error!("writing a snapshot failed: {e}");
                let _ = done.send(());
                continue;
            }
        };
        // Never let the snapshot stand for WAL that is not durable yet.
        let waiting = Instant::now();
        while wal.durable_lsn() < upto_lsn {
            if waiting.elapsed() >= Duration::from_millis(SNAPSHOT_SYNC_NUDGE_MS) && wal.sync_through(upto_lsn) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let installed = snapshot::install(&dir, &temp, covers).and_then(|path| Ok((path, snapshot::prune(&dir)?)));
        match installed {
            Ok((path, (snaps, segments, bytes))) => tracing::info!(
                took_ms = began.elapsed().as_millis() as u64,
                size,
                removed_snapshots = snaps,
                removed_segments = segments,
                removed_bytes = bytes,
                "snapshot {} installed",
                path.display()
            ),
            Err(e) => tracing::error!("installing a snapshot failed: {e}"),
        }
        let _ = done.send(());
    }
}

/// Runs a node until `shutdown` resolves.
pub async fn run_node(opts: NodeOptions, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    anyhow::ensure!(opts.peers.contains_key(&opts.id), "--peers must include this node ({})", opts.id);
    let wal_dir = opts.data_dir.join("wal");
    let snapshot_wal_bytes = opts.snapshot_wal_bytes.unwrap_or(DEFAULT_SNAPSHOT_WAL_BYTES).max(1);
    let recovery_began = Instant::now();
    let Recovered { wal, records, was_cut: cut_now } =
        recover_data_dir(&wal_dir, opts.wal_segment_bytes.unwrap_or(DEFAULT_SEGMENT_BYTES))?;
    // The core records a cut in its WAL (its first persist), but until that
    // record is durable only this marker file remembers it: a crash in
    // between would otherwise find a clean, shorter WAL and forget that
    // acknowledged entries may be gone.
    let cut_marker = opts.data_dir.join("wal-was-cut");
    let was_cut = cut_now || cut_marker.exists();
    if cut_now && !cut_marker.exists() {
        write_durably(&cut_marker, &opts.data_dir)
            .with_context(|| format!("recording the WAL cut in {}", cut_marker.display()))?;
    }
    // Once bootstrapped, the stored cluster map says who the peers and the
    // config store's acceptors are. Flags that disagree would make this node
    // count majorities of another set of acceptors (or talk to nodes at the
    // wrong addresses), so it refuses to start rather than guess.
    // The WAL's own copy goes with the segment that held it once snapshots
    // prune it (the checkpoint leaves the map out: the node relearns it from
    // the config store), so the map is also kept in a file of its own.
    let peer_list = peer_strings(&opts.peers);
    let map_file = opts.data_dir.join(CLUSTER_MAP_FILE);
    let stored_map = match records.iter().rev().find_map(|r| match r {
        WalRecord::Cluster { map } => Some(map.clone()),
        _ => None,
    }) {
        Some(map) => Some(map),
        None => read_stored_map(&map_file)?,
    };
    // The newest map this node can know of before it asks the config store.
    let known_map = match (stored_map, opts.join_map.clone()) {
        (Some(a), Some(b)) => Some(if a.version >= b.version { a } else { b }),
        (a, b) => a.or(b),
    };
    let mut cfg = NodeConfig::new(opts.id, opts.peers.keys().copied().collect());
    let mut peer_addrs: HashMap<u64, SocketAddr> =
        opts.peers.iter().filter(|(id, _)| **id != opts.id).map(|(id, a)| (*id, *a)).collect();
    if let Some(map) = &known_map {
        map.check_peers(&peer_list).map_err(|e| {
            anyhow::anyhow!(
                "node {}: {e} (stored in {}); refusing to start: give --peers as the map has them",
                opts.id,
                opts.data_dir.display()
            )
        })?;
        anyhow::ensure!(
            map.nodes.contains_key(&opts.id),
            "node {} was removed from the cluster (map version {}); its data dir {} is no longer used",
            opts.id,
            map.version,
            opts.data_dir.display()
        );
        cfg.follow_map(map);
        peer_addrs = map_peers(map, opts.id);
    }
    if let Some(n) = opts.log_retain_entries {
        cfg.log_retain_entries = n;
    }
    if let Some(n) = opts.snapshot_bytes_per_sec {
        cfg.snapshot_stream.bytes_per_sec = n;
    }
    if let Some(n) = opts.snapshot_chunk_bytes {
        cfg.snapshot_stream.chunk_bytes = n;
    }
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
        ^ (std::process::id() as u64) << 32;
    let n_records = records.len();
    // With a cut, the node's first record (lsn n + 1) is its `WalCut`.
    let mut cut_lsn = was_cut.then_some(n_records as u64 + 1);
    let mut node = Node::recover(cfg, seed, Bugs::default(), records, was_cut);
    // A node that learns the map while running checks its flags then too.
    let mut map_checked = node.cluster().is_some();
    // The map version the transport's peers follow.
    let mut peers_version = known_map.as_ref().map_or(0, |m| m.version);
    let mut result = Ok(());
    // Set once the map this node learned no longer names it.
    let mut removed = false;
    // Nodes removed from the map, kept as peers for `REMOVED_PEER_GRACE`.
    let mut removed_peers: HashMap<u64, (SocketAddr, Instant)> = HashMap::new();
    tracing::info!(
        node = opts.id,
        records = n_records,
        was_cut,
        took_ms = recovery_began.elapsed().as_millis() as u64,
        "recovered"
    );
    // The WAL position of this incarnation's lsn `l`: its first lsn goes to
    // the WAL's next record.
    let (first_lsn, first_seq) = (n_records as u64 + 1, wal.next_seq());
    let seq_of = move |lsn: u64| first_seq + (lsn - first_lsn);

    let (persisted_tx, mut persisted_rx) = mpsc::unbounded_channel::<u64>();
    let writer = WalWriter::spawn(
        wal,
        Box::new(move |lsn| {
            let _ = persisted_tx.send(lsn);
        }),
    );
    let (snapshot_done_tx, mut snapshot_done_rx) = mpsc::unbounded_channel::<()>();
    // At most one snapshot is in flight, so the queue never holds more.
    let (snapshot_tx, snapshot_rx) = std::sync::mpsc::sync_channel::<SnapshotJob>(1);
    let snapshot_thread = {
        let (dir, handle) = (wal_dir.clone(), writer.sync_handle());
        std::thread::Builder::new()
            .name("pactdb-snapshot".to_string())
            .spawn(move || run_snapshots(dir, handle, snapshot_rx, snapshot_done_tx))
            .context("starting the snapshot thread")?
    };
    let mut snapshot_in_flight = false;
    let mut wal_bytes_since_snapshot = 0u64;
    let (events_tx, mut events_rx) = mpsc::channel(NET_EVENT_QUEUE);
    let net = Net::start(
        NetConfig {
            peer_listen: opts.peer_listen,
            client_listen: opts.client_listen,
            peers: peer_addrs,
            security: opts.security.clone(),
        },
        events_tx,
    )
    .await?;
    tracing::info!(node = opts.id, peer = %net.local_peer_addr(), client = %net.local_client_addr(), "listening");

    let me = Identity { id: opts.id, peers: peer_list.clone() };
    let mut metrics = crate::metrics::RuntimeMetrics::default();
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
                Some(ev) = events_rx.recv() => push_event(&net, &me, &mut metrics, &mut inputs, ev),
                Some(()) = snapshot_done_rx.recv() => {
                    snapshot_in_flight = false;
                    continue;
                }
                _ = tick.tick() => {
                    last_tick = Instant::now();
                    inputs.push(Input::Tick);
                }
            }
        }
        while inputs.len() < MAX_INPUTS_PER_STEP {
            match events_rx.try_recv() {
                Ok(ev) => push_event(&net, &me, &mut metrics, &mut inputs, ev),
                Err(_) => break,
            }
        }
        let now = start.elapsed().as_millis() as u64;
        let effects = node.step_batch(now, inputs.drain(..));
        if !map_checked {
            if let Some(map) = node.cluster() {
                map_checked = true;
                if let Err(e) = map.check_peers(&peer_list) {
                    // The core already follows the map; the transport still
                    // follows the flags. Stop rather than run half of each.
                    tracing::error!(node = opts.id, "{e}; stopping: restart with --peers as the map has them");
                    result = Err(anyhow::anyhow!(
                        "node {}: {e}; stopped: restart with --peers as the map has them",
                        opts.id
                    ));
                }
            }
        }
        if let Some(map) = node.cluster().filter(|m| m.version > peers_version) {
            peers_version = map.version;
            let mut peers = map_peers(map, opts.id);
            // A node the map no longer names stays reachable a while: it
            // learns it was removed only from its peers' answers.
            for (id, addr) in net.peers() {
                if !peers.contains_key(&id) {
                    removed_peers.entry(id).or_insert((addr, Instant::now()));
                }
            }
            removed_peers.retain(|id, (_, since)| !peers.contains_key(id) && since.elapsed() < REMOVED_PEER_GRACE);
            peers.extend(removed_peers.iter().map(|(id, (addr, _))| (*id, *addr)));
            net.set_peers(&peers);
            if node.is_removed() {
                tracing::warn!(
                    node = opts.id,
                    version = map.version,
                    "this node was removed from the cluster; stopping"
                );
                removed = true;
            }
        }
        let mut records = Vec::new();
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => {
                    metrics.on_send(&msg);
                    net.send_to_peer(to, wire::encode(&msg))
                }
                Effect::Reply { token, reply } => {
                    metrics.on_reply(token, &reply);
                    net.send_to_client(token, wire::encode(&reply))
                }
                Effect::ReplyUnderLease { token, reply, lease_expires_ms } => {
                    // The clock is read again here, not taken from the
                    // batch's `now`: the batch may have taken long enough
                    // for the lease the read relied on to run out.
                    let now = start.elapsed().as_millis() as u64;
                    let reply = release_under_lease(reply, lease_expires_ms, now);
                    metrics.on_reply(token, &reply);
                    net.send_to_client(token, wire::encode(&reply))
                }
                Effect::Persist { lsn, record } => {
                    metrics.on_persist(&record);
                    if let WalRecord::Cluster { map } = &record {
                        // Once per node (the map is adopted once); a failure
                        // costs only the start-up check after the WAL's copy
                        // is pruned, so it is logged, not fatal.
                        if let Err(e) = store_map(&map_file, &opts.data_dir, map) {
                            tracing::error!("storing the cluster map in {}: {e}", map_file.display());
                        }
                    }
                    records.push(WalRecordBytes { lsn, bytes: wire::encode(&record), needs_sync: record.needs_sync() })
                }
            }
        }
        if records.is_empty() {
            if result.is_err() || removed {
                break;
            }
            continue;
        }
        wal_bytes_since_snapshot += records.iter().map(|r| r.bytes.len() as u64).sum::<u64>();
        if wal_bytes_since_snapshot >= snapshot_wal_bytes && !snapshot_in_flight {
            // Between steps, so the checkpoint covers exactly the records
            // issued so far (this step's included); a cheap clone, written
            // out by the snapshot thread while the loop carries on.
            let checkpoint = node.checkpoint();
            let covers = seq_of(checkpoint.upto_lsn) + 1;
            if snapshot_tx.try_send(SnapshotJob { checkpoint, covers }).is_ok() {
                snapshot_in_flight = true;
                wal_bytes_since_snapshot = 0;
            }
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
        if result.is_err() || removed {
            break;
        }
    }
    tracing::info!(node = opts.id, "shutting down");
    drop(net);
    // A snapshot in flight may wait for the WAL: let it finish first.
    drop(snapshot_tx);
    tokio::task::spawn_blocking(move || {
        let _ = snapshot_thread.join();
        writer.shutdown()
    })
    .await?;
    result
}

/// The peers a cluster map names, but `me`. An address that is not an IP
/// and port cannot be dialed and is left out (with an error logged).
fn map_peers(map: &pactdb_core::types::ClusterMap, me: u64) -> HashMap<u64, SocketAddr> {
    let mut peers = HashMap::new();
    for (&id, a) in map.nodes.iter().filter(|(id, _)| **id != me) {
        match a.peer.parse() {
            Ok(addr) => {
                peers.insert(id, addr);
            }
            Err(e) => tracing::error!(peer = id, addr = %a.peer, "the cluster map's peer address is unusable: {e}"),
        }
    }
    peers
}

/// The peer list as the cluster map writes addresses.
fn peer_strings(peers: &BTreeMap<u64, SocketAddr>) -> BTreeMap<u64, String> {
    peers.iter().map(|(id, a)| (*id, a.to_string())).collect()
}

/// What the runtime itself answers: who this node is.
struct Identity {
    id: u64,
    peers: BTreeMap<u64, String>,
}

/// Creates `path` and makes it and its directory entry durable.
/// The file beside the WAL that keeps the stored cluster map.
const CLUSTER_MAP_FILE: &str = "cluster-map";

/// What the stored cluster map starts with since format 2: this magic, then
/// `[u32 LE format][u32 LE crc32c(payload)][payload]`. A file without it
/// is format 1: the bare map in bincode, which begins with its node count;
/// one that began with these bytes would be a map of 80 nodes, the first
/// with id 65 and a 67-byte peer address starting "TMAP\0", not a map any
/// cluster has.
const CLUSTER_MAP_MAGIC: &[u8; 8] = b"PACTMAP\0";
/// The format of the map's payload: postcard.
const CLUSTER_MAP_FORMAT: u32 = 2;

/// Writes the map durably and atomically: a temporary file, fsync, rename,
/// fsync of the directory.
fn store_map(
    path: &std::path::Path,
    dir: &std::path::Path,
    map: &pactdb_core::types::ClusterMap,
) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    let payload = wire::encode(map);
    f.write_all(CLUSTER_MAP_MAGIC)?;
    f.write_all(&CLUSTER_MAP_FORMAT.to_le_bytes())?;
    f.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
    f.write_all(&payload)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    crate::wal::sync_dir(dir)
}

/// The map `store_map` kept, if any; a file that does not decode is an
/// error (the node will not start on a map it cannot read).
fn read_stored_map(path: &std::path::Path) -> anyhow::Result<Option<pactdb_core::types::ClusterMap>> {
    match std::fs::read(path) {
        Ok(bytes) => decode_stored_map(&bytes)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("the stored cluster map {} is unreadable: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("reading the stored cluster map {}: {e}", path.display())),
    }
}

/// The map in a stored map file of format 2, or of format 1 (legacy).
fn decode_stored_map(bytes: &[u8]) -> Result<pactdb_core::types::ClusterMap, String> {
    let Some(rest) = bytes.strip_prefix(CLUSTER_MAP_MAGIC) else {
        return crate::legacy::decode_v1(bytes);
    };
    if rest.len() < 8 {
        return Err("a header cut short".to_string());
    }
    let (format, crc) = (u32::from_le_bytes(rest[..4].try_into().unwrap()), &rest[4..8]);
    let payload = &rest[8..];
    if format != CLUSTER_MAP_FORMAT {
        return Err(format!("format {format}; this binary reads formats 1 and {CLUSTER_MAP_FORMAT}"));
    }
    if crc32c::crc32c(payload).to_le_bytes() != crc {
        return Err("checksum mismatch".to_string());
    }
    wire::decode(payload)
}

fn write_durably(path: &std::path::Path, dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::create(path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Decodes one network event into a core input. Undecodable peer messages
/// are logged and dropped; undecodable client messages get a clear error.
fn push_event(
    net: &Net,
    me: &Identity,
    metrics: &mut crate::metrics::RuntimeMetrics,
    inputs: &mut Vec<Input>,
    ev: NetEvent,
) {
    match ev {
        NetEvent::Peer { payload, node } => match wire::decode::<PeerMsg>(&payload) {
            // With TLS the connection's certificate names the node that dialled: a message
            // claiming another sender is dropped (a node cannot speak for another).
            Ok(m) if node.is_some_and(|n| n != m.from) => tracing::warn!(
                "dropping a peer message from node {} on a connection authenticated as node {}",
                m.from,
                node.unwrap_or_default()
            ),
            Ok(m) => {
                metrics.on_peer(&m);
                inputs.push(Input::Peer(m))
            }
            Err(e) => tracing::warn!("dropping an undecodable peer message ({} bytes): {e}", payload.len()),
        },
        NetEvent::Client { conn, payload } => match wire::decode::<ClientMsg>(&payload) {
            Ok(ClientMsg::GetNodeInfo) => {
                metrics.on_client_msg(conn, &ClientMsg::GetNodeInfo);
                let reply = ClientReply::NodeInfo { node: me.id, peers: me.peers.clone() };
                net.send_to_client(conn, wire::encode(&reply));
            }
            Ok(m) => {
                metrics.on_client_msg(conn, &m);
                inputs.push(Input::Client { token: conn, msg: m })
            }
            Err(e) => {
                tracing::warn!(conn, "undecodable client message ({} bytes): {e}", payload.len());
                let reply = ClientReply::ProtocolError { reason: format!("cannot decode the request: {e}") };
                net.send_to_client(conn, wire::encode(&reply));
            }
        },
        NetEvent::ClientClosed { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> WalRecord {
        WalRecord::Truncate { group: 1, index: i }
    }

    /// A record as format 1 wrote it: bincode, default options.
    fn v1(r: &WalRecord) -> Vec<u8> {
        use bincode::Options;
        bincode::DefaultOptions::new().serialize(r).unwrap()
    }

    /// A segment as format 1 wrote it: no header, framed bincode records.
    fn write_v1_segment(dir: &std::path::Path, first: u64, records: &[WalRecord]) {
        let mut bytes = Vec::new();
        for r in records {
            let payload = v1(r);
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        std::fs::write(dir.join(format!("wal-{first:020}.log")), bytes).unwrap();
    }

    #[test]
    fn recovery_reads_format_1_segments_and_appends_in_format_2() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir).unwrap();
        write_v1_segment(dir, 0, &[rec(0), rec(1)]);
        write_v1_segment(dir, 2, &[rec(2), rec(3), rec(1_000_000)]);
        let r = recover_data_dir(dir, 1 << 20).unwrap();
        let v1_records = vec![rec(0), rec(1), rec(2), rec(3), rec(1_000_000)];
        assert_eq!(r.records, v1_records);
        assert!(!r.was_cut);
        let mut wal = r.wal;
        for i in 5..8 {
            wal.append(&wire::encode(&rec(i))).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        // The new records went to a segment of their own, in format 2; the
        // format-1 segment was left as it was.
        let newest = std::fs::read(dir.join(format!("wal-{:020}.log", 5))).unwrap();
        assert!(newest.starts_with(crate::wal::SEGMENT_MAGIC));
        let r = recover_data_dir(dir, 1 << 20).unwrap();
        assert_eq!(r.records, v1_records.into_iter().chain((5..8).map(rec)).collect::<Vec<_>>());
        // Decoding a format-1 record as format 2 fails: the format matters.
        assert_ne!(decode_wal_record(WAL_FORMAT, &v1(&rec(1_000_000))), Ok(rec(1_000_000)));
        assert_eq!(decode_wal_record(1, &v1(&rec(1_000_000))), Ok(rec(1_000_000)));
    }

    #[test]
    fn a_stored_map_of_either_format_reads_back() {
        use pactdb_core::types::{ClusterMap, GroupSpec, Mode, NodeAddrs};
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(CLUSTER_MAP_FILE);
        let addrs = |i| NodeAddrs { peer: format!("10.0.0.{i}:7000"), client: format!("10.0.0.{i}:7001") };
        let map = ClusterMap::new(
            (1..=3).map(|i| (i, addrs(i))).collect(),
            vec![GroupSpec { id: 0, mode: Mode::Passive, placement: vec![1, 2, 3], min_members: 2, voting: false }],
        );
        {
            use bincode::Options;
            std::fs::write(&path, bincode::DefaultOptions::new().serialize(&map).unwrap()).unwrap();
        }
        assert_eq!(read_stored_map(&path).unwrap(), Some(map.clone()));
        store_map(&path, tmp.path(), &map).unwrap();
        assert!(std::fs::read(&path).unwrap().starts_with(CLUSTER_MAP_MAGIC));
        assert_eq!(read_stored_map(&path).unwrap(), Some(map));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(read_stored_map(&path).is_err());
    }

    #[test]
    fn recovery_passes_over_an_invalid_snapshot_for_an_older_one_and_more_wal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // One record per segment, so that pruning deletes some.
        let (mut wal, _) = Wal::open(dir, WalOptions { segment_bytes: 1 }).unwrap();
        for i in 0..10 {
            wal.append(&wire::encode(&rec(i))).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        for (covers, stands_for) in [(4, 100), (8, 200)] {
            let (temp, _) = snapshot::write_temp(dir, covers, &[rec(stands_for)]).unwrap();
            snapshot::install(dir, &temp, covers).unwrap();
        }
        // The WAL before the older snapshot goes; the rest stays for it.
        let (_, segments, _) = snapshot::prune(dir).unwrap();
        assert_eq!(segments, 4);

        let r = recover_data_dir(dir, 1).unwrap();
        assert_eq!(r.records, vec![rec(200), rec(8), rec(9)]);
        assert!(!r.was_cut);
        assert_eq!(r.wal.next_seq(), 10);
        drop(r);

        // The newest snapshot rots: the older one and more WAL stand in.
        let newest = snapshot::snapshot_path(dir, 8);
        let mut bytes = std::fs::read(&newest).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&newest, &bytes).unwrap();
        let r = recover_data_dir(dir, 1).unwrap();
        let expected: Vec<WalRecord> = std::iter::once(rec(100)).chain((4..10).map(rec)).collect();
        assert_eq!(r.records, expected);
        assert!(!r.was_cut);
    }
}
