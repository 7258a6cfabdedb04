//! The write-ahead log: the node's only durable record of what it has accepted.
//!
//! This module owns three things:
//!
//! * **The on-disk format.** The log is a directory of segment files named
//!   `wal-{first_record_seq:020}.log`, where `first_record_seq` is the
//!   position in the whole log of the first record stored in that segment.
//!   Each record is framed as `[u32 LE payload_len][u32 LE crc32c(payload)][payload]`.
//!   Records are opaque bytes; the caller serializes its own structures.
//! * **The format version.** A segment starts with a header
//!   `[8 B "PACTWAL\0"][u32 LE format][u32 LE crc32c of the 12 bytes
//!   before]`, and the format says how its records' payloads are encoded
//!   ([`WAL_FORMAT`], 2: postcard). A segment without the header is format
//!   1 (bincode, written before headers existed): its first four bytes are
//!   a record length of at most [`MAX_RECORD_BYTES`], so they can never
//!   read as "PACT". The version is per segment, not per record: every
//!   record of a segment is written by one binary (a node that opens a log
//!   whose newest segment is of an older format appends nothing to it and
//!   starts a new segment), the framing, torn-tail and preallocation rules
//!   below stay byte for byte what they were, and recovery hands the
//!   caller each record's format ([`Wal::format_of`]) to pick its decoder.
//!   A segment of a newer format than this binary knows is an error, never
//!   cut: the data may be good, only this binary is too old for it. A
//!   header that is torn (the last segment, zeros after it) or damaged is
//!   damage at offset 0, under the same rules as a damaged record.
//! * **Torn-tail recovery.** [`Wal::open`] replays every segment in order and
//!   stops at the first record whose header is short, whose length is
//!   impossible, or whose checksum does not match. Everything from that point
//!   on is cut away (the damaged segment is truncated, later segments are
//!   deleted) and a warning names exactly what was removed, so that the log
//!   always ends on a record boundary and new appends extend a clean prefix.
//!   It tells a torn tail from corruption: a damaged record at the very end
//!   of the last segment, followed by nothing but zeros, is a write whose
//!   fsync never returned (never acknowledged), and cutting it is the normal
//!   end of a crash; damage with anything after it, or in a segment that a
//!   later one follows (a segment is synced before the next is created), is
//!   corruption of what may have been acknowledged, and [`Wal::was_cut`]
//!   says so. A bit flip in the last record itself looks like a torn write
//!   and is taken for one: nothing on one disk tells them apart.
//! * **Preallocation.** The segment being appended to is kept zero-filled
//!   [`WAL_PREALLOCATE_BYTES`] ahead of the last record, written as real
//!   zeros rather than a hole, so that an `fdatasync` of an ordinary append
//!   flushes data only: the file's size and block allocation change once per
//!   preallocated chunk, not once per sync (on this project's machines that
//!   made a sync about a third cheaper). The zero tail is not part of the
//!   log: recovery treats a tail of nothing but zeros as the clean end of a
//!   segment, and a finished segment is truncated to its records.
//! * **Group commit.** [`WalWriter`] runs the log on a dedicated thread that
//!   batches every queued record behind a single `fdatasync`, so the node's
//!   event loop never blocks on the disk and many records share one flush.
//!
//! What this module must never do:
//!
//! * **Acknowledge a record before it is durable.** `on_durable` is only
//!   called after the `fdatasync` covering the record (and the directory
//!   `fsync` covering any new segment file) has succeeded. If a write or sync
//!   fails, the writer aborts the process instead of carrying on, because a
//!   node that cannot persist must not keep acknowledging.
//! * **Panic on bad disk content.** Whatever bytes are on disk, recovery
//!   either returns the valid prefix or an `io::Error`; lengths read from disk
//!   are checked against the file size before anything is allocated.
//!
//! One caveat of the framing: an empty payload has CRC32C `0`, so a record
//! header of all zero bytes would be a valid empty record. File systems can
//! leave zero-filled blocks at the end of a file after a crash, and replaying
//! those as thousands of empty records would be silent corruption. Empty
//! records are therefore rejected on append and a zero length on disk is
//! treated as damage.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

/// Largest payload a single record may carry. Appending a larger record is an
/// error, and a larger length read from disk is treated as corruption.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Default size at which the log rolls over to a new segment file.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Capacity of the [`WalWriter`] submission queue, in batches (one per
/// event-loop step, each bounded by the step's input limit). When it is
/// full, submitters wait; this is the back-pressure that keeps a slow disk
/// from turning into unbounded memory growth.
pub const WAL_QUEUE_BATCHES: usize = 256;

/// The writer thread stops draining its queue into one sync after this many
/// records (a step's batch is never split, so one sync may hold a few more).
pub const WAL_MAX_BATCH_RECORDS: usize = 8192;

/// The writer thread stops draining its queue into one sync after this many
/// payload bytes (a step's batch is never split).
pub const WAL_MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// How far ahead of the last record the current segment is zero-filled.
/// Each extension costs one `fdatasync` that also writes metadata, and that
/// sync is slower by the time to flush this many zeros (about 2-3 ms for
/// 1 MiB on a shared virtual disk), so the chunk is big enough to make
/// extensions rare and small enough to keep that one slow sync short.
pub const WAL_PREALLOCATE_BYTES: u64 = 1024 * 1024;

/// Zeros written per call while preallocating.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Size of the record header: payload length and payload checksum.
const HEADER_BYTES: usize = 8;

/// The format of the records this binary writes: 2, postcard (see
/// `pactdb_core::wire`). Format 1 (bincode) is read, never written.
pub const WAL_FORMAT: u32 = 2;

/// The oldest format this binary reads.
pub const OLDEST_WAL_FORMAT: u32 = 1;

/// What a segment of format 2 or later starts with.
pub const SEGMENT_MAGIC: &[u8; 8] = b"PACTWAL\0";

/// Size of a segment header: magic, format, checksum.
pub const SEGMENT_HEADER_BYTES: usize = 16;

/// The header a new segment starts with.
fn segment_header() -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&WAL_FORMAT.to_le_bytes());
    let crc = crc32c::crc32c(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Buffered bytes beyond which [`Wal::append`] hands the buffer to the kernel
/// early, so that many appends without a sync do not grow memory without
/// bound. Writing early does not make anything durable; only `sync` does.
const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// Tuning for a [`Wal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Once the current segment has reached this many bytes, the next append
    /// starts a new segment file. A segment always holds at least one record,
    /// so a record larger than this still fits.
    pub segment_bytes: u64,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions { segment_bytes: DEFAULT_SEGMENT_BYTES }
    }
}

/// Counters describing what a [`Wal`] has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Records appended since open.
    pub records_appended: u64,
    /// Bytes appended since open, including the 8-byte record headers.
    pub bytes_appended: u64,
    /// Calls to [`Wal::sync`] that made new data durable (group commits).
    pub syncs: u64,
    /// Segment files created since open, including the first one of an empty log.
    pub segments_created: u64,
}

/// Checks that `record` can be stored: non-empty and at most
/// [`MAX_RECORD_BYTES`] long. Returns `ErrorKind::InvalidInput` otherwise.
pub fn validate_record(record: &[u8]) -> io::Result<()> {
    if record.is_empty() {
        // See the module documentation: an empty record would be
        // indistinguishable from a zero-filled tail left behind by a crash.
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "wal: empty records are not allowed"));
    }
    if record.len() > MAX_RECORD_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("wal: record of {} bytes exceeds the limit of {} bytes", record.len(), MAX_RECORD_BYTES),
        ));
    }
    Ok(())
}

/// A segmented, checksummed, append-only log of byte records.
///
/// Appends are buffered; nothing is durable until [`Wal::sync`] returns `Ok`.
/// After any write or sync error the `Wal` refuses further use, because the
/// state of the file (and of the kernel's page cache, after a failed
/// `fdatasync`) is unknown and retrying could report data as durable that is
/// not.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    /// The segment being appended to, written at explicit offsets.
    file: File,
    /// Bytes in the current segment, counting those still in `buf`.
    seg_len: u64,
    /// Size of the current segment file: its records, then zeros.
    file_len: u64,
    /// Bytes of the current segment before its first record (its header).
    seg_start: u64,
    /// The current segment is of an older format: the next append starts
    /// a new segment rather than mix formats in one.
    roll_pending: bool,
    /// The format of each segment `open` read, by its first record's seq.
    formats: Vec<(u64, u32)>,
    /// Position in the whole log that the next appended record will get.
    next_seq: u64,
    /// Position of the first record `open` returned (segments before it
    /// were deleted once a snapshot covered them).
    first_seq: u64,
    /// Framed records not yet handed to the kernel.
    buf: Vec<u8>,
    /// Bytes were written to `file` since its last `sync_data`.
    file_dirty: bool,
    /// A segment file was created since the directory was last synced.
    dir_dirty: bool,
    /// An earlier I/O error left the log in an unknown state.
    poisoned: bool,
    /// Recovery cut off something that may have been acknowledged (a gap,
    /// a corrupt record); a torn tail does not count.
    was_cut: bool,
    stats: WalStats,
}

impl Wal {
    /// Opens (creating it if missing) the log in `dir`, recovers it, and
    /// returns it together with every intact record in log order.
    ///
    /// At the first torn or corrupt record the log is cut: later segments are
    /// deleted, the damaged segment is truncated at the start of the bad
    /// record, and a warning says what was removed. I/O errors while reading
    /// are returned as errors and never cause anything to be cut, because an
    /// unreadable disk is not evidence that the data is bad.
    pub fn open(dir: &Path, opts: WalOptions) -> io::Result<(Wal, Vec<Vec<u8>>)> {
        fs::create_dir_all(dir)?;
        let segments = list_segments(dir)?;
        let mut records = Vec::new();
        // The current (last surviving) segment: its first seq, its path, the
        // length of its records and the length of the file (records and zeros).
        let mut current: Option<(u64, PathBuf, u64, u64)> = None;
        // The current segment's format and where its records start.
        let mut current_format = (WAL_FORMAT, 0u64, 0u64);
        let mut formats = Vec::new();
        let mut next_seq = 0;
        let first_seq = segments.first().map_or(0, |(seq, _)| *seq);
        let mut was_cut = false;

        for (i, (seq, path)) in segments.iter().enumerate() {
            if let Some((_, prev_path, _, _)) = &current {
                if *seq != next_seq {
                    // A gap or overlap means a segment is missing or foreign.
                    // Records after a hole cannot be replayed in order, so the
                    // log ends where the last consistent segment ends.
                    let later = &segments[i..];
                    let later_bytes = remove_segments(dir, later)?;
                    was_cut = true;
                    tracing::warn!(
                        "wal: segment {} starts at record {} but {} ends at record {}; \
                         deleted it and {} later segments ({} bytes)",
                        file_name(path),
                        seq,
                        file_name(prev_path),
                        next_seq,
                        later.len() - 1,
                        later_bytes
                    );
                    break;
                }
            }
            let scan = scan_segment(path, &mut records)?;
            next_seq = seq + scan.records;
            formats.push((*seq, scan.format));
            current_format = (scan.format, scan.start, scan.records);
            match scan.damage {
                None => current = Some((*seq, path.clone(), scan.good_len, scan.file_len)),
                Some(reason) => {
                    // A torn tail: the damaged record is the last thing in the
                    // last segment, nothing but zeros after it. Its write was
                    // never followed by a completed fsync (a finished segment
                    // is synced before the next one is created, and any later
                    // record would have been synced with it), so it was never
                    // acknowledged: cutting it loses no promise. Anything else
                    // (an intact-looking record after the damage, or damage
                    // in an older segment) is corruption of what may have
                    // been acknowledged.
                    let last = i + 1 == segments.len();
                    let torn = last && is_zero_from(path, scan.damage_end, scan.file_len)?;
                    // Delete later segments before truncating, so that a crash
                    // halfway through leaves the damage in place and the next
                    // open repeats the same repair instead of resurrecting
                    // segments that followed corrupt data.
                    let later = &segments[i + 1..];
                    let later_bytes = remove_segments(dir, later)?;
                    let f = OpenOptions::new().write(true).open(path)?;
                    f.set_len(scan.good_len)?;
                    f.sync_all()?;
                    if torn {
                        tracing::warn!(
                            "wal: torn tail in {} at offset {} ({}), never acknowledged: cut {} bytes",
                            file_name(path),
                            scan.good_len,
                            reason,
                            scan.file_len - scan.good_len,
                        );
                    } else {
                        was_cut = true;
                        tracing::warn!(
                            "wal: corrupt record in {} at offset {} ({}), \
                             cut {} bytes and {} later segments ({} bytes)",
                            file_name(path),
                            scan.good_len,
                            reason,
                            scan.file_len - scan.good_len,
                            later.len(),
                            later_bytes
                        );
                    }
                    current = Some((*seq, path.clone(), scan.good_len, scan.good_len));
                    break;
                }
            }
        }

        let mut stats = WalStats::default();
        let mut buf = Vec::with_capacity(WRITE_BUFFER_BYTES);
        let (file, seg_len, file_len, seg_start, roll_pending) = match current {
            Some((_, path, len, file_len)) => {
                let file = OpenOptions::new().write(true).open(path)?;
                match current_format {
                    (WAL_FORMAT, start, _) if len >= start && start > 0 => (file, len, file_len, start, false),
                    (_, _, 0) => {
                        // No record (an empty or torn segment, of whatever
                        // format): it becomes a segment of this format. Its
                        // header goes out with the first records; a crash
                        // before leaves an empty segment again.
                        buf.extend_from_slice(&segment_header());
                        let start = SEGMENT_HEADER_BYTES as u64;
                        (file, start, file_len, start, false)
                    }
                    // An older format's records: kept as they are, and
                    // the next append starts a new segment.
                    (_, start, _) => (file, len, file_len, start, true),
                }
            }
            None => {
                // An empty log still gets its first segment now, so the
                // directory always shows where appends go.
                next_seq = next_seq.max(first_seq);
                let file = create_segment(dir, next_seq)?;
                sync_dir(dir)?;
                stats.segments_created = 1;
                buf.extend_from_slice(&segment_header());
                let start = SEGMENT_HEADER_BYTES as u64;
                (file, start, 0, start, false)
            }
        };

        let wal = Wal {
            dir: dir.to_path_buf(),
            opts,
            file,
            seg_len,
            file_len,
            seg_start,
            roll_pending,
            formats,
            next_seq,
            first_seq,
            buf,
            file_dirty: false,
            dir_dirty: false,
            poisoned: false,
            was_cut,
            stats,
        };
        Ok((wal, records))
    }

    /// Buffers one record. It is not durable until [`Wal::sync`] succeeds.
    ///
    /// Returns `ErrorKind::InvalidInput` for an empty record or one larger
    /// than [`MAX_RECORD_BYTES`]; such an error leaves the log untouched.
    /// Rolling to a new segment or flushing a large buffer can do I/O here,
    /// and an error from that poisons the log.
    pub fn append(&mut self, record: &[u8]) -> io::Result<()> {
        self.check_usable()?;
        validate_record(record)?;
        if self.must_roll() {
            let rolled = self.roll();
            self.poison_on_err(rolled)?;
        }
        // The length fits in u32 because validate_record capped it at 64 MiB.
        let len = record.len() as u32;
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&crc32c::crc32c(record).to_le_bytes());
        self.buf.extend_from_slice(record);
        let framed = (HEADER_BYTES + record.len()) as u64;
        self.seg_len += framed;
        self.next_seq += 1;
        self.stats.records_appended += 1;
        self.stats.bytes_appended += framed;
        let m = crate::metrics::get();
        m.wal_records.increment(1);
        m.wal_bytes.increment(framed);
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            let written = self.write_buf();
            self.poison_on_err(written)?;
        }
        Ok(())
    }

    /// Writes everything buffered and makes it durable with `fdatasync`; if a
    /// segment file was created since the last sync, the directory is synced
    /// too so that the file's existence survives a crash. Once this returns
    /// `Ok`, every record appended before the call is durable.
    pub fn sync(&mut self) -> io::Result<()> {
        self.check_usable()?;
        let synced = self.sync_inner();
        self.poison_on_err(synced)
    }

    /// Whether appending `bytes` more (framed) would start a new segment or
    /// extend the zero-filled tail of this one.
    fn must_grow_for(&self, bytes: u64) -> bool {
        self.must_roll() || self.zero_tail_too_short(self.seg_len + bytes)
    }

    /// Whether the next record goes to a new segment: this one holds a
    /// record and is full, or is of an older format.
    fn must_roll(&self) -> bool {
        self.roll_pending || (self.seg_len > self.seg_start && self.seg_len >= self.opts.segment_bytes)
    }

    /// Whether records ending at `end` leave less than a record header of
    /// preallocated zeros after them, so the tail must be extended.
    fn zero_tail_too_short(&self, end: u64) -> bool {
        end > self.file_len.saturating_sub(HEADER_BYTES as u64)
    }

    /// Whether `open` had to cut away a part of the log that may have been
    /// acknowledged: a corrupt record or a missing segment. A torn tail (see
    /// the module documentation) is cut without setting this.
    pub fn was_cut(&self) -> bool {
        self.was_cut
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Total bytes appended since open, including record headers.
    pub fn bytes_written(&self) -> u64 {
        self.stats.bytes_appended
    }

    /// Position in the whole log that the next appended record will get
    /// (equal to the number of records in the log when it starts at 0).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The directory holding the segment files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Position in the whole log of the first record `open` returned.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The format of the record `open` returned at position `seq` (that
    /// of its segment): how its payload is encoded. [`WAL_FORMAT`] for
    /// positions `open` did not return.
    pub fn format_of(&self, seq: u64) -> u32 {
        match self.formats.partition_point(|(first, _)| *first <= seq) {
            0 => WAL_FORMAT,
            i => self.formats[i - 1].1,
        }
    }

    /// Drops every record and makes `seq` the position of the next one: all
    /// segments are deleted and an empty one named `seq` is created. For a
    /// log that a snapshot wholly covers but that ends before it (its
    /// records' positions must not be reused for records the snapshot does
    /// not hold). Must be called before anything is appended.
    pub fn restart_at(&mut self, seq: u64) -> io::Result<()> {
        self.check_usable()?;
        assert!(self.buf.is_empty() && !self.file_dirty, "wal: restart_at after appends");
        let segments = list_segments(&self.dir)?;
        // Oldest first: a crash halfway leaves a suffix, which a snapshot
        // still covers.
        for (_, path) in &segments {
            fs::remove_file(path)?;
        }
        self.file = create_segment(&self.dir, seq)?;
        sync_dir(&self.dir)?;
        self.start_segment();
        self.next_seq = seq;
        self.first_seq = seq;
        self.stats.segments_created += 1;
        Ok(())
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other("wal: unusable after an earlier I/O error"));
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Hands the buffered bytes to the kernel (no durability yet).
    fn write_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        use std::os::unix::fs::FileExt;
        // `seg_len` counts the buffered bytes too: they go right before it.
        let end = self.seg_len;
        self.file.write_all_at(&self.buf, end - self.buf.len() as u64)?;
        self.file_dirty = true;
        self.buf.clear();
        if self.zero_tail_too_short(end) {
            // Zeros past the records, so that the syncs of the next chunk's
            // appends find the blocks allocated and the size unchanged. Only
            // bytes past every record are written: nothing of the log moves.
            let target = end + WAL_PREALLOCATE_BYTES;
            let mut at = end.max(self.file_len);
            while at < target {
                let n = ZEROS.len().min((target - at) as usize);
                self.file.write_all_at(&ZEROS[..n], at)?;
                at += n as u64;
            }
            self.file_len = target;
        }
        // A single huge record can inflate the buffer to 64 MiB; do not keep
        // that much memory around for the ordinary small records that follow.
        if self.buf.capacity() > 4 * WRITE_BUFFER_BYTES {
            self.buf = Vec::with_capacity(WRITE_BUFFER_BYTES);
        }
        Ok(())
    }

    /// Closes the current segment and starts a new one named after the next
    /// record's seq.
    fn roll(&mut self) -> io::Result<()> {
        self.write_buf()?;
        // The old segment is synced right away rather than at the next
        // `sync`: rolls happen once per segment, so the extra flush is cheap,
        // and it avoids holding one open file per unsynced segment, which a
        // small segment size could otherwise turn into thousands of open files.
        if self.file_dirty {
            self.file.sync_data()?;
            self.file_dirty = false;
        }
        // A finished segment keeps only its records. The truncation need
        // not be durable: a crash before it leaves a zero tail, which
        // recovery reads as the segment's clean end.
        self.file.set_len(self.seg_len)?;
        self.file = create_segment(&self.dir, self.next_seq)?;
        self.dir_dirty = true;
        self.start_segment();
        self.stats.segments_created += 1;
        Ok(())
    }

    /// Makes the new, empty current segment one of this format: its header
    /// is buffered, to be written with the first records.
    fn start_segment(&mut self) {
        debug_assert!(self.buf.is_empty());
        self.buf.extend_from_slice(&segment_header());
        self.seg_start = SEGMENT_HEADER_BYTES as u64;
        self.seg_len = self.seg_start;
        self.file_len = 0;
        self.roll_pending = false;
    }

    fn sync_inner(&mut self) -> io::Result<()> {
        self.write_buf()?;
        if !self.file_dirty && !self.dir_dirty {
            return Ok(());
        }
        if self.file_dirty {
            let began = std::time::Instant::now();
            self.file.sync_data()?;
            crate::metrics::get().wal_fsync_seconds.record(began.elapsed().as_secs_f64());
            self.file_dirty = false;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.stats.syncs += 1;
        Ok(())
    }
}

/// [`WalWriter::write_inline`] left the batch to the writer thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InlineDeclined;

/// The result of reading one segment.
struct SegmentScan {
    /// The segment's format (1 for one without a header).
    format: u32,
    /// Where its records start: past its header, if it has one.
    start: u64,
    /// Records read intact from the segment.
    records: u64,
    /// Offset just past the last intact record.
    good_len: u64,
    /// Size of the file as found; past `good_len` it holds only zeros when
    /// there is no damage.
    file_len: u64,
    /// Why reading stopped before the records' end, if it did.
    damage: Option<String>,
    /// Where the damaged record ends, as far as its header tells: past its
    /// claimed payload if the length is plausible, else past its header.
    damage_end: u64,
}

/// Reads the intact records of one segment into `out`, stopping at the first
/// damaged one. Lengths from disk are checked against the bytes actually left
/// in the file before anything is allocated, so garbage cannot cause a huge
/// allocation.
fn scan_segment(path: &Path, out: &mut Vec<Vec<u8>>) -> io::Result<SegmentScan> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut header = [0u8; SEGMENT_HEADER_BYTES];
    let has_magic = file_len >= SEGMENT_HEADER_BYTES as u64 && {
        file.read_exact_at(&mut header, 0)?;
        &header[..8] == SEGMENT_MAGIC
    };
    let (format, start) = if has_magic {
        let format = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if crc32c::crc32c(&header[..12]) != crc {
            let damage = Some("segment header checksum mismatch".to_string());
            let damage_end = SEGMENT_HEADER_BYTES as u64;
            return Ok(SegmentScan {
                format: WAL_FORMAT,
                start: 0,
                records: 0,
                good_len: 0,
                file_len,
                damage,
                damage_end,
            });
        }
        if !(OLDEST_WAL_FORMAT + 1..=WAL_FORMAT).contains(&format) {
            // Not damage: a newer binary wrote it (or a header claims the
            // headerless format 1). Cutting it could lose good data.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "wal: segment {} is in format {format}; this binary reads formats {OLDEST_WAL_FORMAT} to {WAL_FORMAT}",
                    file_name(path)
                ),
            ));
        }
        (format, SEGMENT_HEADER_BYTES as u64)
    } else {
        (1, 0)
    };
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::with_capacity(WRITE_BUFFER_BYTES, file);
    let mut offset = start;
    let mut records = 0u64;
    let mut damage_end = file_len;
    let damage = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < HEADER_BYTES as u64 {
            damage_end = file_len;
            break Some(format!("short header: {remaining} of {HEADER_BYTES} bytes"));
        }
        let mut header = [0u8; HEADER_BYTES];
        reader.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let available = remaining - HEADER_BYTES as u64;
        damage_end = offset + HEADER_BYTES as u64;
        if len == 0 {
            break Some("zero record length".to_string());
        }
        if len as usize > MAX_RECORD_BYTES {
            break Some(format!("record length {len} exceeds the limit of {MAX_RECORD_BYTES}"));
        }
        damage_end = (damage_end + u64::from(len)).min(file_len);
        if u64::from(len) > available {
            break Some(format!("record length {len} but only {available} bytes left in the file"));
        }
        let mut payload = vec![0u8; len as usize];
        reader.read_exact(&mut payload)?;
        let actual_crc = crc32c::crc32c(&payload);
        if actual_crc != stored_crc {
            break Some(format!("crc mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"));
        }
        out.push(payload);
        records += 1;
        offset += HEADER_BYTES as u64 + u64::from(len);
    };
    // Preallocated zeros after the last record are the segment's clean end,
    // not damage. Anything else after it is: a torn or corrupt record.
    let damage = match damage {
        Some(_) if is_zero_from(path, offset, file_len)? => None,
        damage => damage,
    };
    Ok(SegmentScan { format, start, records, good_len: offset, file_len, damage, damage_end })
}

/// Whether every byte of the file from `offset` to `file_len` is zero.
fn is_zero_from(path: &Path, offset: u64, file_len: u64) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let file = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = offset;
    while at < file_len {
        let n = buf.len().min((file_len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("wal-{first_seq:020}.log"))
}

/// Parses `wal-{20 digits}.log`; any other name is not a segment.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("wal-")?.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// All segment files in `dir`, sorted by first seq. Other files are ignored.
fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(seq) = name.to_str().and_then(parse_segment_name) {
            segments.push((seq, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segments)
}

/// Deletes `segments` newest first, syncs the directory, and returns how many
/// bytes they held. Newest first means an interrupted deletion still leaves a
/// prefix of the log.
fn remove_segments(dir: &Path, segments: &[(u64, PathBuf)]) -> io::Result<u64> {
    let mut bytes = 0;
    for (_, path) in segments.iter().rev() {
        bytes += fs::metadata(path)?.len();
        fs::remove_file(path)?;
    }
    if !segments.is_empty() {
        sync_dir(dir)?;
    }
    Ok(bytes)
}

fn create_segment(dir: &Path, first_seq: u64) -> io::Result<File> {
    // `create_new` because a segment with this name can only exist if the
    // log's bookkeeping is wrong, and appending into it would corrupt it.
    OpenOptions::new().write(true).create_new(true).open(segment_path(dir, first_seq))
}

/// Deletes, oldest first, the segments of the log in `dir` whose records
/// all lie before position `upto_seq` (a snapshot holds them), never the
/// newest segment, and syncs the directory. Returns how many segments and
/// bytes went. Safe while a [`Wal`] appends to the same directory: a
/// segment is judged by the name of the one after it, and the segment
/// being appended to is always the newest.
pub fn remove_segments_before(dir: &Path, upto_seq: u64) -> io::Result<(usize, u64)> {
    let segments = list_segments(dir)?;
    let mut removed = (0, 0);
    for pair in segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first > upto_seq {
            break;
        }
        removed.1 += fs::metadata(path)?.len();
        fs::remove_file(path)?;
        removed.0 += 1;
    }
    if removed.0 > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// Makes file creations and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// Logs a durability failure and aborts the process.
///
/// This is deliberate: once a write or `fdatasync` has failed, the records in
/// flight may or may not be on disk (and after a failed `fdatasync` Linux may
/// already have dropped the dirty pages), so the node can neither acknowledge
/// them nor retry safely. Continuing would let the node acknowledge writes it
/// cannot persist; aborting lets recovery start from what is really on disk.
fn fatal(what: &str, detail: &dyn std::fmt::Display) -> ! {
    tracing::error!("wal: {what}: {detail}; aborting because the log can no longer persist");
    // Also to stderr, in case the tracing subscriber buffers and the abort
    // below would swallow the message.
    eprintln!("wal: {what}: {detail}; aborting because the log can no longer persist");
    std::process::abort();
}

/// One record handed to the [`WalWriter`].
#[derive(Debug)]
pub struct WalRecordBytes {
    pub lsn: u64,
    pub bytes: Vec<u8>,
    /// Whether the record needs an fsync of its own. A record that does not
    /// waits, unsynced, for the next one that does (and a crash may lose it).
    pub needs_sync: bool,
}

/// Handle to the group-commit thread that owns a [`Wal`].
///
/// Records are handed over in batches (one per event-loop step) and
/// appended in submission order; `on_durable(lsn)` is called after every
/// sync with the highest lsn now durable, which also covers every lsn
/// submitted before it. A batch of records none of which needs a sync is
/// appended without one.
///
/// When the caller is lightly loaded it may instead write a batch itself
/// ([`WalWriter::write_inline`]): a hand-off to the writer thread and the
/// wake-up back cost two thread switches, which on a virtual machine are a
/// large part of one request's latency. Both paths share one [`Wal`] behind a
/// lock, and the inline path is only taken when the thread has nothing left
/// to append, so records still reach the log in lsn order.
///
/// Dropping the handle without calling [`WalWriter::shutdown`] closes the
/// queue; the thread then still syncs what was queued, but nobody waits for
/// it.
#[derive(Debug)]
pub struct WalWriter {
    tx: mpsc::Sender<Vec<WalRecordBytes>>,
    thread: JoinHandle<()>,
    wal: Arc<Mutex<Wal>>,
    marks: Arc<LsnMarks>,
    /// The highest lsn handed to the thread.
    queued_lsn: AtomicU64,
    /// The highest lsn the thread has appended (synced or, if lazy, not).
    appended_lsn: Arc<AtomicU64>,
}

/// How far the log has got, by lsn: appended (under the log's lock) and
/// made durable, whichever path wrote it.
#[derive(Debug, Default)]
struct LsnMarks {
    appended: AtomicU64,
    durable: AtomicU64,
}

/// A handle for another thread (the snapshot writer) that must know when
/// the log is durable up to an lsn, and may ask for a sync to get there.
#[derive(Clone, Debug)]
pub struct WalSyncHandle {
    wal: Arc<Mutex<Wal>>,
    marks: Arc<LsnMarks>,
}

impl WalSyncHandle {
    /// The highest lsn known durable.
    pub fn durable_lsn(&self) -> u64 {
        self.marks.durable.load(Ordering::Acquire)
    }

    /// Makes the log durable up to `lsn` if it has been appended that far
    /// (a lazy record may sit unsynced while nothing else is written);
    /// returns whether it is durable that far now. Whoever waits for the
    /// records that need a sync is still told by its own path.
    pub fn sync_through(&self, lsn: u64) -> bool {
        if self.durable_lsn() >= lsn {
            return true;
        }
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let appended = self.marks.appended.load(Ordering::Acquire);
        if appended < lsn {
            return false;
        }
        if let Err(e) = wal.sync() {
            fatal(&format!("sync up to lsn {appended} failed"), &e);
        }
        self.marks.durable.fetch_max(appended, Ordering::AcqRel);
        true
    }
}

impl WalWriter {
    /// Spawns a dedicated thread that owns `wal`. `on_durable(lsn)` is called
    /// from that thread after every sync with the highest lsn now durable.
    ///
    /// # Panics
    ///
    /// Panics if the operating system refuses to start a thread.
    pub fn spawn(wal: Wal, on_durable: Box<dyn Fn(u64) + Send + 'static>) -> WalWriter {
        let (tx, rx) = mpsc::channel(WAL_QUEUE_BATCHES);
        let wal = Arc::new(Mutex::new(wal));
        let appended_lsn = Arc::new(AtomicU64::new(0));
        let marks = Arc::new(LsnMarks::default());
        let (thread_wal, thread_appended, thread_marks) =
            (Arc::clone(&wal), Arc::clone(&appended_lsn), Arc::clone(&marks));
        let thread = std::thread::Builder::new()
            .name("pactdb-wal".to_string())
            .spawn(move || run_writer(thread_wal, rx, on_durable, thread_appended, thread_marks))
            .expect("failed to spawn the WAL writer thread");
        WalWriter { tx, thread, wal, marks, queued_lsn: AtomicU64::new(0), appended_lsn }
    }

    /// A handle that tells another thread how durable the log is.
    pub fn sync_handle(&self) -> WalSyncHandle {
        WalSyncHandle { wal: Arc::clone(&self.wal), marks: Arc::clone(&self.marks) }
    }

    /// Queues one record with its lsn; lsns must strictly increase across
    /// calls. Blocks while the queue is full.
    ///
    /// Must not be called from inside a tokio runtime (tokio panics on
    /// blocking there); use [`WalWriter::submit_batch`] instead.
    ///
    /// An empty or oversized record (see [`validate_record`]) aborts the
    /// process: skipping it would leave a hole below a later durable lsn,
    /// which would acknowledge a record that was never written. Callers that
    /// cannot rule this out should call [`validate_record`] first.
    pub fn submit(&self, lsn: u64, record: Vec<u8>) {
        let batch = vec![WalRecordBytes { lsn, bytes: record, needs_sync: true }];
        self.note_queued(&batch);
        if self.tx.blocking_send(batch).is_err() {
            writer_gone(lsn);
        }
    }

    /// Queues a batch of records for the thread, in order, waiting (without
    /// blocking the runtime thread) while the queue is full.
    pub async fn submit_batch(&self, batch: Vec<WalRecordBytes>) {
        let Some(last) = batch.last().map(|r| r.lsn) else { return };
        self.note_queued(&batch);
        if self.tx.send(batch).await.is_err() {
            writer_gone(last);
        }
    }

    /// Whether the thread has appended everything handed to it, so that a
    /// batch written by the caller now lands after it.
    pub fn is_idle(&self) -> bool {
        self.appended_lsn.load(Ordering::Acquire) >= self.queued_lsn.load(Ordering::Relaxed)
    }

    /// Appends `batch` on the calling thread and, if any record needs it,
    /// syncs. Returns the highest lsn now durable (`None` if nothing was
    /// synced). Blocks for the fsync: only for callers that have nothing
    /// better to do meanwhile.
    ///
    /// # Panics
    ///
    /// Panics if the thread still has records to append ([`Self::is_idle`]
    /// is false): writing now would put records out of order.
    ///
    /// Declines, writing nothing, when the batch would make the log grow its
    /// zero-filled tail or start a segment: that is slow (a megabyte to
    /// write and sync, or a file and directory to sync), and the writer
    /// thread does it while the caller carries on. Otherwise one slow sync
    /// in every megabyte would stall the caller, and look like a slow disk.
    pub fn write_inline(&self, batch: &[WalRecordBytes]) -> Result<Option<u64>, InlineDeclined> {
        assert!(self.is_idle(), "wal: an inline write must not overtake queued records");
        let mut wal = self.wal.lock().unwrap_or_else(|e| e.into_inner());
        let bytes = batch.iter().map(|r| (HEADER_BYTES + r.bytes.len()) as u64).sum();
        if wal.must_grow_for(bytes) {
            return Err(InlineDeclined);
        }
        Ok(append_and_sync(&mut wal, batch, &self.marks))
    }

    /// Counters of the owned [`Wal`].
    pub fn stats(&self) -> WalStats {
        self.wal.lock().unwrap_or_else(|e| e.into_inner()).stats()
    }

    /// Closes the queue, lets the thread append and sync everything already
    /// queued (calling `on_durable` for it), and joins the thread. This
    /// blocks; from async code call it via `spawn_blocking`.
    pub fn shutdown(self) {
        let WalWriter { tx, thread, wal, .. } = self;
        drop(tx);
        if let Err(panic) = thread.join() {
            // The only way the thread panics is a panic inside `on_durable`;
            // re-raise it rather than hide a bug in the caller's callback.
            std::panic::resume_unwind(panic);
        }
        // Lazy records written inline after the thread's last sync.
        let mut wal = wal.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = wal.sync() {
            fatal("the final sync failed", &e);
        }
    }

    fn note_queued(&self, batch: &[WalRecordBytes]) {
        for r in batch {
            check_submission(r.lsn, &r.bytes);
        }
        if let Some(r) = batch.last() {
            self.queued_lsn.fetch_max(r.lsn, Ordering::Relaxed);
        }
    }
}

fn check_submission(lsn: u64, record: &[u8]) {
    if let Err(e) = validate_record(record) {
        fatal(&format!("invalid record submitted for lsn {lsn}"), &e);
    }
}

fn writer_gone(lsn: u64) -> ! {
    // The queue only closes early if the writer thread died, which happens
    // only when `on_durable` panicked. Nothing submitted can become durable
    // any more, so this is as fatal as a failed sync.
    fatal(&format!("cannot submit lsn {lsn}"), &"the writer thread has exited");
}

/// Appends the records and syncs if any needs it; returns the highest lsn
/// made durable. Aborts the process on an I/O error (see [`fatal`]).
fn append_and_sync(wal: &mut Wal, batch: &[WalRecordBytes], marks: &LsnMarks) -> Option<u64> {
    let mut needs_sync = false;
    for r in batch {
        if let Err(e) = wal.append(&r.bytes) {
            fatal(&format!("append of lsn {} failed", r.lsn), &e);
        }
        needs_sync |= r.needs_sync;
    }
    let last = batch.last()?.lsn;
    marks.appended.fetch_max(last, Ordering::AcqRel);
    if !needs_sync {
        return None;
    }
    if let Err(e) = wal.sync() {
        fatal(&format!("sync up to lsn {last} failed"), &e);
    }
    marks.durable.fetch_max(last, Ordering::AcqRel);
    Some(last)
}

/// The writer thread: block for one batch, drain whatever else is already
/// queued up to the batch limits, append it all, sync once, report.
fn run_writer(
    wal: Arc<Mutex<Wal>>,
    mut rx: mpsc::Receiver<Vec<WalRecordBytes>>,
    on_durable: Box<dyn Fn(u64) + Send + 'static>,
    appended_lsn: Arc<AtomicU64>,
    marks: Arc<LsnMarks>,
) {
    let mut last_lsn: Option<u64> = None;
    let mut records = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        records.clear();
        let mut batch_bytes = 0usize;
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            for r in batch {
                if let Some(last) = last_lsn {
                    debug_assert!(r.lsn > last, "wal: lsn {} submitted after lsn {}", r.lsn, last);
                }
                last_lsn = Some(r.lsn);
                batch_bytes += r.bytes.len();
                records.push(r);
            }
            if records.len() >= WAL_MAX_BATCH_RECORDS || batch_bytes >= WAL_MAX_BATCH_BYTES {
                break;
            }
            // `try_recv` fails when the queue is empty or closed; either way
            // the batch is complete and gets synced now.
            next = rx.try_recv().ok();
        }
        let durable = {
            let mut wal = wal.lock().unwrap_or_else(|e| e.into_inner());
            let durable = append_and_sync(&mut wal, &records, &marks);
            if let Some(r) = records.last() {
                appended_lsn.store(r.lsn, Ordering::Release);
            }
            durable
        };
        if let Some(lsn) = durable {
            on_durable(lsn);
        }
    }
    // Lazy records still buffered are synced by `shutdown`.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn opts(segment_bytes: u64) -> WalOptions {
        WalOptions { segment_bytes }
    }

    /// Deterministic records of varying length, all distinct.
    fn record(i: usize) -> Vec<u8> {
        let len = 1 + (i * 7) % 40;
        let mut r = format!("rec-{i}-").into_bytes();
        r.extend((0..len).map(|j| (i + j) as u8));
        r
    }

    fn segment_files(dir: &Path) -> Vec<PathBuf> {
        list_segments(dir).unwrap().into_iter().map(|(_, p)| p).collect()
    }

    /// A segment's header: its records start after it.
    const SEG: u64 = SEGMENT_HEADER_BYTES as u64;

    fn framed_len(records: &[Vec<u8>]) -> u64 {
        records.iter().map(|r| (HEADER_BYTES + r.len()) as u64).sum()
    }

    /// Writes `records` into a fresh log with the given segment size and syncs.
    fn write_log(dir: &Path, segment_bytes: u64, records: &[Vec<u8>]) {
        let (mut wal, existing) = Wal::open(dir, opts(segment_bytes)).unwrap();
        assert!(existing.is_empty());
        for r in records {
            wal.append(r).unwrap();
        }
        wal.sync().unwrap();
    }

    /// Reopens, appends `extra`, syncs, reopens again, and checks the result
    /// is `expected_prefix` followed by `extra`.
    fn assert_appends_after_recovery(dir: &Path, segment_bytes: u64, expected_prefix: &[Vec<u8>]) {
        let extra: Vec<Vec<u8>> = (1000..1003).map(record).collect();
        let (mut wal, got) = Wal::open(dir, opts(segment_bytes)).unwrap();
        assert_eq!(got, expected_prefix);
        for r in &extra {
            wal.append(r).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        let (_, got) = Wal::open(dir, opts(segment_bytes)).unwrap();
        let mut expected = expected_prefix.to_vec();
        expected.extend(extra);
        assert_eq!(got, expected);
    }

    /// A segment as format 1 wrote it: no header, the records framed.
    fn write_v1_segment(dir: &Path, first: u64, records: &[Vec<u8>]) -> PathBuf {
        let mut bytes = Vec::new();
        for r in records {
            bytes.extend_from_slice(&(r.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(r).to_le_bytes());
            bytes.extend_from_slice(r);
        }
        fs::create_dir_all(dir).unwrap();
        let path = segment_path(dir, first);
        fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn format_1_segments_are_read_and_never_appended_to() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..8).map(record).collect();
        write_v1_segment(tmp.path(), 0, &records[..3]);
        let last_v1 = write_v1_segment(tmp.path(), 3, &records[3..5]);
        let v1_bytes = fs::read(&last_v1).unwrap();
        let (mut wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records[..5]);
        assert!(!wal.was_cut());
        assert_eq!((0..5).map(|i| wal.format_of(i)).collect::<Vec<_>>(), [1; 5]);
        for r in &records[5..] {
            wal.append(r).unwrap();
        }
        wal.sync().unwrap();
        drop(wal);
        // The newest format-1 segment is as it was; a new one took the rest.
        assert_eq!(fs::read(&last_v1).unwrap(), v1_bytes);
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 3);
        assert!(fs::read(&files[2]).unwrap().starts_with(&segment_header()));
        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records);
        assert_eq!((0..8).map(|i| wal.format_of(i)).collect::<Vec<_>>(), [1, 1, 1, 1, 1, 2, 2, 2]);
        assert!(!wal.was_cut());
    }

    #[test]
    fn an_empty_format_1_segment_becomes_format_2() {
        for zeros in [0, 4096] {
            let tmp = tempfile::tempdir().unwrap();
            let path = segment_path(tmp.path(), 7);
            fs::write(&path, vec![0u8; zeros]).unwrap();
            let (mut wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
            assert!(got.is_empty());
            assert_eq!(wal.next_seq(), 7);
            wal.append(&record(1)).unwrap();
            wal.sync().unwrap();
            drop(wal);
            assert!(fs::read(&path).unwrap().starts_with(&segment_header()));
            let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
            assert_eq!(got, [record(1)]);
            assert_eq!(wal.format_of(7), WAL_FORMAT);
        }
    }

    #[test]
    fn a_segment_of_a_newer_format_is_an_error_and_is_not_cut() {
        let tmp = tempfile::tempdir().unwrap();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &[record(1)]);
        let seg = segment_files(tmp.path()).remove(0);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[8..12].copy_from_slice(&(WAL_FORMAT + 1).to_le_bytes());
        let crc = crc32c::crc32c(&bytes[..12]);
        bytes[12..16].copy_from_slice(&crc.to_le_bytes());
        fs::write(&seg, &bytes).unwrap();
        let err = Wal::open(tmp.path(), WalOptions::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("format 3"), "{err}");
        assert_eq!(fs::read(&seg).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn a_torn_segment_header_is_cut_quietly_and_an_older_damaged_one_is_corruption() {
        // A roll whose new segment got only part of its header (then
        // zeros) before the crash: nothing in it was acknowledged.
        for torn in [&b"PACTWA"[..], &segment_header()[..14], &b"PACTWAL\0\x02\0"[..]] {
            let tmp = tempfile::tempdir().unwrap();
            let records: Vec<Vec<u8>> = (0..3).map(record).collect();
            write_log(tmp.path(), 1, &records);
            let mut bytes = torn.to_vec();
            bytes.resize(4096, 0);
            fs::write(segment_path(tmp.path(), 3), &bytes).unwrap();
            let (mut wal, got) = Wal::open(tmp.path(), opts(1)).unwrap();
            assert_eq!(got, records, "{torn:?}");
            assert!(!wal.was_cut(), "{torn:?}");
            assert_eq!(wal.next_seq(), 3);
            wal.append(&record(3)).unwrap();
            wal.sync().unwrap();
            drop(wal);
            assert!(fs::read(segment_path(tmp.path(), 3)).unwrap().starts_with(&segment_header()));
            let (_, got) = Wal::open(tmp.path(), opts(1)).unwrap();
            assert_eq!(got.len(), 4);
        }
        // The header of a segment that another follows was synced: damage
        // to it is corruption, and the log ends before it.
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..3).map(record).collect();
        write_log(tmp.path(), 1, &records);
        let files = segment_files(tmp.path());
        let mut bytes = fs::read(&files[1]).unwrap();
        bytes[9] ^= 0x40;
        fs::write(&files[1], &bytes).unwrap();
        let (wal, got) = Wal::open(tmp.path(), opts(1)).unwrap();
        assert_eq!(got, records[..1]);
        assert!(wal.was_cut());
    }

    #[test]
    fn empty_dir_creates_first_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested").join("wal");
        let (wal, records) = Wal::open(&dir, WalOptions::default()).unwrap();
        assert!(records.is_empty());
        assert_eq!(wal.next_seq(), 0);
        assert_eq!(wal.stats().segments_created, 1);
        let files = segment_files(&dir);
        assert_eq!(files.len(), 1);
        assert_eq!(file_name(&files[0]), "wal-00000000000000000000.log");
    }

    #[test]
    fn append_sync_reopen_returns_records_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..100).map(record).collect();
        let (mut wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        for r in &records {
            wal.append(r).unwrap();
        }
        wal.sync().unwrap();
        let stats = wal.stats();
        assert_eq!(stats.records_appended, 100);
        assert_eq!(stats.bytes_appended, framed_len(&records));
        assert_eq!(wal.bytes_written(), framed_len(&records));
        assert_eq!(stats.syncs, 1);
        // A sync with nothing new to flush is not a group commit.
        wal.sync().unwrap();
        assert_eq!(wal.stats().syncs, 1);
        drop(wal);

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records);
        assert_eq!(wal.next_seq(), 100);
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 1);
        // The records, then the preallocated zeros.
        assert_eq!(fs::metadata(&files[0]).unwrap().len(), SEG + framed_len(&records) + WAL_PREALLOCATE_BYTES);
        assert!(!wal.was_cut());
    }

    #[test]
    fn records_span_several_segments_and_survive_reopen() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..200).map(record).collect();
        write_log(tmp.path(), 100, &records);

        let files = segment_files(tmp.path());
        assert!(files.len() > 5, "expected many segments, got {}", files.len());
        // Each segment is named after the seq of its first record.
        let mut seq = 0usize;
        for (i, path) in files.iter().enumerate() {
            assert_eq!(file_name(path), format!("wal-{seq:020}.log"));
            let mut in_segment = Vec::new();
            let scan = scan_segment(path, &mut in_segment).unwrap();
            assert!(scan.damage.is_none());
            assert!(!in_segment.is_empty());
            if i + 1 < files.len() {
                // A finished segment was truncated to its records.
                assert_eq!(scan.file_len, scan.good_len, "{}", file_name(path));
            }
            assert_eq!(in_segment, records[seq..seq + in_segment.len()]);
            seq += in_segment.len();
        }
        assert_eq!(seq, records.len());

        // Appending after reopen continues the numbering across more rolls.
        let (mut wal, got) = Wal::open(tmp.path(), opts(100)).unwrap();
        assert_eq!(got, records);
        assert_eq!(wal.next_seq(), 200);
        let more: Vec<Vec<u8>> = (200..260).map(record).collect();
        for r in &more {
            wal.append(r).unwrap();
        }
        wal.sync().unwrap();
        assert!(wal.stats().segments_created > 0);
        drop(wal);
        let (wal, got) = Wal::open(tmp.path(), opts(100)).unwrap();
        let mut all = records.clone();
        all.extend(more);
        assert_eq!(got, all);
        assert_eq!(wal.next_seq(), 260);
    }

    #[test]
    fn oversize_and_empty_records_are_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        wal.append(b"before").unwrap();
        let big = vec![7u8; MAX_RECORD_BYTES + 1];
        let err = wal.append(&big).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = wal.append(b"").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        // Rejected input does not poison the log.
        wal.append(b"after").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, vec![b"before".to_vec(), b"after".to_vec()]);
    }

    #[test]
    fn record_of_exactly_max_size_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        let big = vec![0xabu8; MAX_RECORD_BYTES];
        wal.append(&big).unwrap();
        wal.append(b"small").unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0] == big);
        assert_eq!(got[1], b"small");
    }

    #[test]
    fn torn_last_record_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        let full = framed_len(&records);
        let good = SEG + framed_len(&records[..4]);
        // Cut into the middle of the last record's payload.
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(full - 3).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records[..4]);
        assert_eq!(wal.next_seq(), 4);
        assert!(!wal.was_cut(), "a torn tail was never acknowledged: not corruption");
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        drop(wal);
        assert_appends_after_recovery(tmp.path(), DEFAULT_SEGMENT_BYTES, &records[..4]);
    }

    #[test]
    fn torn_header_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        let good = SEG + framed_len(&records[..4]);
        // Leave only 5 bytes of the last record's 8-byte header.
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(good + 5).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records[..4]);
        assert!(!wal.was_cut());
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        assert_appends_after_recovery(tmp.path(), DEFAULT_SEGMENT_BYTES, &records[..4]);
    }

    #[test]
    fn garbage_after_last_record_is_cut() {
        // (bytes, whether it is corruption rather than a torn write)
        let cases: [(&[u8], bool); 4] = [
            // A header whose length exceeds MAX_RECORD_BYTES, and bytes
            // after it: no write of ours leaves that.
            (&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5], true),
            // A plausible length and part of its payload: a torn write.
            (&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9], false),
            // A header-like start and then zeros: a torn write.
            (&[9, 0, 0, 0, 0, 0, 0, 0], false),
            // A record's header whose write did not land, then the rest of
            // the record and more: damage with something after it.
            (&[0, 0, 0, 0, 0, 0, 0, 0, 7, 7, 7, 7], true),
        ];
        for (garbage, corrupt) in cases {
            use std::os::unix::fs::FileExt;
            let tmp = tempfile::tempdir().unwrap();
            let records: Vec<Vec<u8>> = (0..5).map(record).collect();
            write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
            let seg = segment_files(tmp.path()).remove(0);
            let good = SEG + framed_len(&records);
            // Over the preallocated zeros, right after the last record.
            OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(garbage, good).unwrap();

            let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
            assert_eq!(got, records);
            assert_eq!(wal.was_cut(), corrupt, "{garbage:?}");
            assert_eq!(fs::metadata(&seg).unwrap().len(), good);
            drop(wal);
            assert_appends_after_recovery(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        }
    }

    #[test]
    fn zero_tail_is_the_clean_end_of_a_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        let len = fs::metadata(&seg).unwrap().len();
        assert!(len > framed_len(&records), "the segment is preallocated");
        // More zeros than preallocation wrote, as a crash can also leave.
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len + 4096).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records);
        assert!(!wal.was_cut(), "zeros after the last record are not damage");
        assert_eq!(fs::metadata(&seg).unwrap().len(), len + 4096, "nothing was cut");
        drop(wal);
        assert_appends_after_recovery(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
    }

    #[test]
    fn records_after_a_run_of_zeros_are_cut() {
        use std::os::unix::fs::FileExt;
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        // A valid-looking record 100 bytes past the end: its write reached
        // the disk, the writes before it did not, so no sync covered it.
        let mut stray = Vec::new();
        let payload = record(77);
        stray.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        stray.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
        stray.extend_from_slice(&payload);
        let good = SEG + framed_len(&records);
        OpenOptions::new().write(true).open(&seg).unwrap().write_all_at(&stray, good + 100).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records);
        assert!(wal.was_cut());
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    }

    #[test]
    fn zero_tail_in_a_finished_segment_does_not_end_the_log() {
        // A crash between a roll and the old segment's truncation leaves
        // zeros after its records; the next segment still follows.
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..10).map(record).collect();
        write_log(tmp.path(), 100, &records);
        let files = segment_files(tmp.path());
        assert!(files.len() > 2);
        let len = fs::metadata(&files[0]).unwrap().len();
        OpenOptions::new().write(true).open(&files[0]).unwrap().set_len(len + 1000).unwrap();

        let (wal, got) = Wal::open(tmp.path(), opts(100)).unwrap();
        assert_eq!(got, records);
        assert!(!wal.was_cut());
        drop(wal);
        assert_appends_after_recovery(tmp.path(), 100, &records);
    }

    #[test]
    fn flipped_byte_in_last_record_is_cut() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        let good = SEG + framed_len(&records[..4]);
        let mut bytes = fs::read(&seg).unwrap();
        let idx = good as usize + HEADER_BYTES + 2;
        bytes[idx] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records[..4]);
        // Indistinguishable from a torn write of the last record.
        assert!(!wal.was_cut());
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
        drop(wal);
        assert_appends_after_recovery(tmp.path(), DEFAULT_SEGMENT_BYTES, &records[..4]);
    }

    #[test]
    fn damage_before_an_intact_record_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..5).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        let seg = segment_files(tmp.path()).remove(0);
        let good = SEG + framed_len(&records[..2]);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[good as usize + HEADER_BYTES + 1] ^= 0x01;
        fs::write(&seg, &bytes).unwrap();

        let (wal, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records[..2]);
        assert!(wal.was_cut(), "records 3 and 4 were synced after record 2: it was acknowledged");
        assert_eq!(fs::metadata(&seg).unwrap().len(), good);
    }

    #[test]
    fn a_torn_end_of_an_older_segment_is_corruption() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..10).map(record).collect();
        write_log(tmp.path(), 100, &records);
        let files = segment_files(tmp.path());
        assert!(files.len() > 2);
        // The first segment loses its last 3 bytes: it was synced before the
        // second was created, so this is not a write that never returned.
        let len = fs::metadata(&files[0]).unwrap().len();
        OpenOptions::new().write(true).open(&files[0]).unwrap().set_len(len - 3).unwrap();

        let (wal, _) = Wal::open(tmp.path(), opts(100)).unwrap();
        assert!(wal.was_cut());
        assert_eq!(segment_files(tmp.path()), files[..1]);
    }

    #[test]
    fn corruption_in_middle_segment_deletes_later_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..10).map(record).collect();
        // A one-byte segment size puts every record in its own segment.
        write_log(tmp.path(), 1, &records);
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 10);

        // Corrupt the payload of record 4, which lives in segment 4.
        let mut bytes = fs::read(&files[4]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&files[4], &bytes).unwrap();

        let (wal, got) = Wal::open(tmp.path(), opts(1)).unwrap();
        assert_eq!(got, records[..4]);
        assert_eq!(wal.next_seq(), 4);
        assert!(wal.was_cut());
        drop(wal);
        let remaining = segment_files(tmp.path());
        assert_eq!(remaining, files[..5]);
        assert_eq!(fs::metadata(&files[4]).unwrap().len(), SEG, "its header stays");
        for gone in &files[5..] {
            assert!(!gone.exists(), "{} should be deleted", gone.display());
        }
        assert_appends_after_recovery(tmp.path(), 1, &records[..4]);
    }

    #[test]
    fn missing_middle_segment_ends_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..6).map(record).collect();
        write_log(tmp.path(), 1, &records);
        let files = segment_files(tmp.path());
        assert_eq!(files.len(), 6);
        fs::remove_file(&files[2]).unwrap();

        let (_, got) = Wal::open(tmp.path(), opts(1)).unwrap();
        assert_eq!(got, records[..2]);
        assert_eq!(segment_files(tmp.path()), files[..2]);
        assert_appends_after_recovery(tmp.path(), 1, &records[..2]);
    }

    #[test]
    fn unrelated_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let records: Vec<Vec<u8>> = (0..3).map(record).collect();
        write_log(tmp.path(), DEFAULT_SEGMENT_BYTES, &records);
        fs::write(tmp.path().join("wal-1.log"), b"junk").unwrap();
        fs::write(tmp.path().join("notes.txt"), b"junk").unwrap();
        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, records);
        assert!(tmp.path().join("wal-1.log").exists());
    }

    #[test]
    fn segment_names_parse_strictly() {
        assert_eq!(parse_segment_name("wal-00000000000000000042.log"), Some(42));
        assert_eq!(parse_segment_name("wal-42.log"), None);
        assert_eq!(parse_segment_name("wal-0000000000000000004x.log"), None);
        assert_eq!(parse_segment_name("wal-00000000000000000042.tmp"), None);
        assert_eq!(parse_segment_name("wal-99999999999999999999.log"), None);
    }

    #[test]
    fn writer_group_commits_10000_records() {
        const N: u64 = 10_000;
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();

        let calls = Arc::new(AtomicU64::new(0));
        let (durable_tx, durable_rx) = std::sync::mpsc::channel::<u64>();
        let cb_calls = Arc::clone(&calls);
        let writer = WalWriter::spawn(
            wal,
            Box::new(move |lsn| {
                // Make the first commit slow, as a real disk would be, so the
                // producer's records pile up and must share later syncs.
                if cb_calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                durable_tx.send(lsn).unwrap();
            }),
        );

        std::thread::scope(|s| {
            s.spawn(|| {
                for lsn in 1..=N {
                    writer.submit(lsn, format!("record-{lsn}").into_bytes());
                }
            });
        });

        // on_durable reports strictly increasing lsns and eventually N.
        let mut last = 0;
        while last < N {
            let lsn =
                durable_rx.recv_timeout(Duration::from_secs(60)).expect("writer did not report lsn 10000 in time");
            assert!(lsn > last, "durable lsn went from {last} to {lsn}");
            last = lsn;
        }
        assert_eq!(last, N);

        let stats = writer.stats();
        writer.shutdown();
        let syncs = calls.load(Ordering::SeqCst);
        assert_eq!(stats.records_appended, N);
        assert_eq!(stats.syncs, syncs, "one on_durable call per sync");
        assert!(syncs < N, "group commit expected, got {syncs} syncs for {N} records");
        assert!(durable_rx.try_recv().is_err(), "no report after lsn {N}");

        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got.len(), N as usize);
        for (i, r) in got.iter().enumerate() {
            assert_eq!(r, format!("record-{}", i + 1).as_bytes());
        }
    }

    #[test]
    fn writer_accepts_async_submissions_and_syncs_on_shutdown() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(tmp.path(), opts(256)).unwrap();
        let durable = Arc::new(AtomicU64::new(0));
        let cb_durable = Arc::clone(&durable);
        let writer = WalWriter::spawn(wal, Box::new(move |lsn| cb_durable.store(lsn, Ordering::SeqCst)));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            for lsn in 1..=500u64 {
                writer
                    .submit_batch(vec![WalRecordBytes { lsn: lsn * 10, bytes: record(lsn as usize), needs_sync: true }])
                    .await;
            }
        });
        // Shutdown must flush everything queued before it returns.
        writer.shutdown();
        assert_eq!(durable.load(Ordering::SeqCst), 5000);

        let (_, got) = Wal::open(tmp.path(), opts(256)).unwrap();
        let expected: Vec<Vec<u8>> = (1..=500).map(record).collect();
        assert_eq!(got, expected);
        assert!(segment_files(tmp.path()).len() > 1);
    }

    #[test]
    fn inline_writes_leave_growing_the_segment_to_the_writer_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        let (durable_tx, durable_rx) = std::sync::mpsc::channel::<u64>();
        let writer = WalWriter::spawn(wal, Box::new(move |lsn| durable_tx.send(lsn).unwrap()));
        let big = |lsn: u64| WalRecordBytes { lsn, bytes: vec![lsn as u8; 300 * 1024], needs_sync: true };
        // A fresh segment has no zero tail yet: the first write must grow it.
        assert_eq!(writer.write_inline(&[big(1)]), Err(InlineDeclined));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(writer.submit_batch(vec![big(1)]));
        assert_eq!(durable_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        // Now 1 MiB of zeros lies ahead: three more fit, the fourth does not.
        for lsn in 2..=4 {
            assert_eq!(writer.write_inline(&[big(lsn)]), Ok(Some(lsn)));
        }
        assert_eq!(writer.write_inline(&[big(5)]), Err(InlineDeclined));
        writer.shutdown();
        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn lazy_records_wait_for_the_next_sync_and_inline_writes_keep_order() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        let (durable_tx, durable_rx) = std::sync::mpsc::channel::<u64>();
        let writer = WalWriter::spawn(wal, Box::new(move |lsn| durable_tx.send(lsn).unwrap()));
        let rec = |lsn: u64, needs_sync: bool| WalRecordBytes { lsn, bytes: record(lsn as usize), needs_sync };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(writer.submit_batch(vec![rec(1, true), rec(2, false)]));
        assert_eq!(durable_rx.recv_timeout(Duration::from_secs(10)).unwrap(), 2);
        // A batch of lazy records alone is appended but neither synced nor reported.
        rt.block_on(writer.submit_batch(vec![rec(3, false)]));
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !writer.is_idle() {
            assert!(std::time::Instant::now() < deadline, "the thread never appended lsn 3");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(writer.stats().syncs, 1);
        assert!(durable_rx.try_recv().is_err(), "no report for a lazy record");
        // An inline write lands after it and its sync covers both.
        assert_eq!(writer.write_inline(&[rec(4, true)]), Ok(Some(4)));
        assert_eq!(writer.write_inline(&[rec(5, false)]), Ok(None));
        assert_eq!(writer.stats().syncs, 2);
        writer.shutdown();
        let (_, got) = Wal::open(tmp.path(), WalOptions::default()).unwrap();
        assert_eq!(got, (1..=5).map(record).collect::<Vec<_>>());
    }
}
