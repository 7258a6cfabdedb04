//! Every bound of the system, in one place.
//!
//! TigerBeetle's rule: put a limit on everything. Each queue, batch and message
//! in pactdb is bounded by one of these constants, so a reader can see the
//! worst case of memory and message size without reading the protocols.

/// Largest key a client may write, in bytes.
pub const MAX_KEY_BYTES: usize = 4 * 1024;
/// Largest value a client may write, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Largest encoded message the core will decode; the transport's frame limit
/// must be at least this.
pub const MAX_MESSAGE_BYTES: u64 = 64 * 1024 * 1024;
/// Most entries a primary puts into one `Append` message.
pub const MAX_APPEND_ENTRIES: usize = 4096;
/// Most payload bytes (keys plus values) a primary puts into one `Append`.
pub const MAX_APPEND_BYTES: usize = 4 * 1024 * 1024;
/// Most log entries a primary streams to one backup before it has heard an
/// acknowledgement for them (the pipelining window).
pub const MAX_INFLIGHT_ENTRIES: u64 = 64 * 1024;
/// Most write requests a primary holds uncommitted at once; beyond this it
/// answers `Busy` and the front end backs off.
pub const MAX_UNCOMMITTED_ENTRIES: u64 = 128 * 1024;
/// Requests an active-group member remembers it must answer once they
/// execute; the oldest is forgotten first (its client retries).
pub const MAX_AWAITING: usize = 64 * 1024;
/// Most reads a primary parks while they wait for a pending write to commit.
pub const MAX_PARKED_READS: usize = 64 * 1024;
/// Most writes a primary holds while it hands its leadership over; past it
/// a write gets `Busy`. The hand-over takes a few round trips, so a front
/// end's pipelined writes fit many times over.
pub const MAX_HELD_FOR_HANDOVER: usize = 16 * 1024;
/// How long a primary holds writes for a leader hand-over before it gives
/// up and serves them itself (the member it hands over to is slow or gone).
pub const HANDOVER_TIMEOUT_MS: u64 = 1_000;
/// Placement changes (`move-replica`) a group has under way at once: one.
/// A second move is refused until the first one's leaving member is
/// dropped, so a group never holds more than one extra member, and a
/// primary's view changes (admit, hand over, drop) stay one at a time.
pub const MAX_MOVES_PER_GROUP: usize = 1;
/// Log entries `status` walks to count the bytes a node catching up still
/// lacks; past it the count is a lower bound (`CatchUp::bytes_exact`), so a
/// status request never walks a whole long log.
pub const MAX_CATCHUP_SCAN_ENTRIES: u64 = 64 * 1024;
/// Committed entries a replica keeps in memory to catch backups up from its
/// log; older ones are dropped and a lagging member gets a snapshot instead.
pub const DEFAULT_LOG_RETAIN_ENTRIES: u64 = 50_000;
/// Responses a replica remembers per client for exactly-once retries. A
/// front end never has more than this many requests outstanding per client id.
pub const MAX_SESSION_RESPONSES: usize = 128;
/// Clients a replica remembers; the least recently active is forgotten first.
pub const MAX_SESSIONS: usize = 100_000;
/// Groups in one cluster.
pub const MAX_GROUPS: usize = 64;
/// Nodes in one cluster (and members in one group).
pub const MAX_NODES: usize = 64;
/// Acceptors of the config store: the first this many nodes by id. Five
/// survive two failures; more would only slow every proposal down.
pub const MAX_CONFIG_MEMBERS: usize = 5;
/// Config-store operations a node queues per register while one is running.
pub const MAX_CONFIG_QUEUE: usize = 64;
/// Effects a node holds back while they wait for a `Persisted` input.
pub const MAX_GATED_EFFECTS: usize = 1024 * 1024;
/// Keys (checked and written together) in one transaction. A bank audit of
/// 10,000 accounts fits.
pub const MAX_TXN_KEYS: usize = 16 * 1024;
/// Bytes of keys and values in one transaction: its prepare entries must fit
/// an append batch and its request a message with room to spare.
pub const MAX_TXN_BYTES: usize = 4 * 1024 * 1024;
/// Transactions one group holds prepared at once; a participant past it
/// votes no.
pub const MAX_PREPARED_TXNS: usize = 8 * 1024;
/// Keys one group holds locked at once; a participant past it votes no.
pub const MAX_LOCKED_KEYS: usize = 256 * 1024;
/// Transactions a coordinator drives at once (collecting votes, or telling
/// participants a decision); past it a commit gets `Busy`.
pub const MAX_COORDINATED_TXNS: usize = 16 * 1024;
/// Finished transactions one `Ended` entry retires.
pub const MAX_ENDED_PER_ENTRY: usize = 1024;
/// Requests a primary holds back while a key they need is locked by a
/// prepared transaction; past it they get `Busy`.
pub const MAX_LOCK_WAITERS: usize = 64 * 1024;
/// Largest chunk of a streamed snapshot (a chunk holds at least one whole
/// key-value pair, so one may be a pair's size beyond this).
pub const MAX_SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Chunks of a streamed snapshot a sender has out before the receiver
/// acknowledged them.
pub const MAX_SNAPSHOT_CHUNKS_IN_FLIGHT: u64 = 8;
/// Largest snapshot a receiver takes (its one partial stream is at most this).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;
/// Largest header of a streamed snapshot: the state machine's tables other
/// than the key-value pairs (sessions, locks, prepared records, decisions).
pub const MAX_SNAPSHOT_HEADER_BYTES: u64 = 4 << 30;
/// Entries beyond `log_retain_entries` a primary keeps while it streams a
/// snapshot, so that the member can continue from the log once it installed
/// it; past this the snapshot is taken again at a newer index.
pub const MAX_SNAPSHOT_PINNED_ENTRIES: u64 = 256 * 1024;
/// Reads a backup holds at once while it catches up to serve them; past it
/// a read gets `Busy`.
pub const MAX_HELD_READS: usize = 64 * 1024;
/// Times of its own acks a backup remembers, to learn from the primary's
/// appends how fresh its state is (stale reads).
pub const MAX_ACK_TIMES: usize = 1024;
/// Most keys one `Op::Scan` returns (a page of KEYS/SCAN/DBSIZE in the Redis
/// front end). Keys are at most `MAX_KEY_BYTES`, so a page is at most 4 MiB,
/// well within a message; the group walks its whole map once per page.
pub const MAX_SCAN_KEYS: usize = 1024;
