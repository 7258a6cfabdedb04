//! On-disk snapshots of a node's durable state, written beside the WAL so
//! that the WAL they cover can be deleted.
//!
//! A snapshot file `snap-{covers:020}.snap` holds the records of a core
//! `Checkpoint` (`Node::checkpoint`): replaying them and then the WAL
//! records from position `covers` on rebuilds the node. Format: a header
//! `[8 B magic][u64 LE covers][u64 LE record count][u32 LE crc32c of the
//! 24 bytes before]`, then each record as `[u64 LE len][u32 LE
//! crc32c(payload)][payload]` (payload: a `WalRecord` in the wire encoding,
//! without the message limit: a group's state may be larger), and nothing
//! after the last record. A file that breaks any of that is invalid and
//! ignored in favour of an older snapshot.
//!
//! The magic is the format version: `PACTSNP2` (records in postcard) is
//! written; `PACTSNP1` (records in bincode, before format 2) is still read,
//! with the legacy decoder, so a node upgraded in place recovers from the
//! snapshots it had. Any other magic is not a snapshot this binary reads.
//!
//! This module owns writing a snapshot atomically (a temp file, fsync,
//! rename, fsync of the directory), reading and verifying one, and pruning:
//! the newest [`SNAPSHOTS_KEPT`] valid snapshots are kept, older ones go,
//! and so do the WAL segments that the oldest kept one covers wholly. So a
//! snapshot that turns out unreadable still has an older one and the WAL
//! after it to fall back on.
//!
//! It must never let a snapshot replace WAL that is not durable: the caller
//! installs a snapshot only once the WAL is durable up to its checkpoint.
//! It must never panic on bad file content.

use pactdb_core::wire::{self, WalRecord};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Snapshots kept: the newest, and one older to fall back on should the
/// newest turn out unreadable.
pub const SNAPSHOTS_KEPT: usize = 2;

/// The magic of the format written: records in postcard.
const MAGIC: &[u8; 8] = b"PACTSNP2";
/// The magic of format 1, read only: records in bincode.
const MAGIC_V1: &[u8; 8] = b"PACTSNP1";
const HEADER_BYTES: usize = 8 + 8 + 8 + 4;
const RECORD_HEADER_BYTES: usize = 8 + 4;

/// Where the snapshot covering the WAL before position `covers` lives.
pub fn snapshot_path(dir: &Path, covers: u64) -> PathBuf {
    dir.join(format!("snap-{covers:020}.snap"))
}

fn temp_path(dir: &Path, covers: u64) -> PathBuf {
    dir.join(format!("snap-{covers:020}.tmp"))
}

/// Parses `snap-{20 digits}.snap`; any other name is not a snapshot.
fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every snapshot file in `dir`, newest (largest `covers`) first.
pub fn list_snapshots(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    if !dir.exists() {
        return Ok(found);
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(covers) = entry.file_name().to_str().and_then(parse_snapshot_name) {
            found.push((covers, entry.path()));
        }
    }
    found.sort_unstable_by_key(|s| std::cmp::Reverse(s.0));
    Ok(found)
}

/// Writes `records` as the snapshot covering the WAL before `covers` into a
/// temp file and makes it durable; [`install`] makes it the snapshot.
/// Returns the temp file's path and size.
pub fn write_temp(dir: &Path, covers: u64, records: &[WalRecord]) -> io::Result<(PathBuf, u64)> {
    let path = temp_path(dir, covers);
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&covers.to_le_bytes());
    header.extend_from_slice(&(records.len() as u64).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&header).to_le_bytes());
    w.write_all(&header)?;
    let mut size = header.len() as u64;
    for r in records {
        let payload = wire::encode_stored(r);
        w.write_all(&(payload.len() as u64).to_le_bytes())?;
        w.write_all(&crc32c::crc32c(&payload).to_le_bytes())?;
        w.write_all(&payload)?;
        size += (RECORD_HEADER_BYTES + payload.len()) as u64;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok((path, size))
}

/// Renames a temp file written by [`write_temp`] into place and makes the
/// rename durable: from here on recovery may use it.
pub fn install(dir: &Path, temp: &Path, covers: u64) -> io::Result<PathBuf> {
    let path = snapshot_path(dir, covers);
    fs::rename(temp, &path)?;
    crate::wal::sync_dir(dir)?;
    Ok(path)
}

/// Deletes snapshots older than the newest [`SNAPSHOTS_KEPT`], leftover
/// temp files other than `keep_temp`, and the WAL segments that the oldest
/// kept snapshot covers wholly. Returns (snapshots, segments, bytes) removed.
pub fn prune(dir: &Path) -> io::Result<(usize, usize, u64)> {
    let snaps = list_snapshots(dir)?;
    let mut removed = (0, 0, 0);
    for (_, path) in snaps.iter().skip(SNAPSHOTS_KEPT) {
        removed.2 += fs::metadata(path)?.len();
        fs::remove_file(path)?;
        removed.0 += 1;
    }
    if removed.0 > 0 {
        crate::wal::sync_dir(dir)?;
    }
    if snaps.len() >= SNAPSHOTS_KEPT {
        let oldest_kept = snaps[SNAPSHOTS_KEPT - 1].0;
        let (segments, bytes) = crate::wal::remove_segments_before(dir, oldest_kept)?;
        removed.1 = segments;
        removed.2 += bytes;
    }
    Ok(removed)
}

/// Deletes temp files a crash left behind (never valid snapshots).
pub fn remove_temps(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap-") && name.ends_with(".tmp") {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Reads and verifies a snapshot file: `Ok(Err(reason))` if its content is
/// invalid, `Err` only for an I/O error.
pub fn read(path: &Path) -> io::Result<Result<(u64, Vec<WalRecord>), String>> {
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    if bytes.len() as u64 != file_len {
        return Ok(Err("the file changed while it was read".to_string()));
    }
    Ok(parse(&bytes))
}

fn parse(bytes: &[u8]) -> Result<(u64, Vec<WalRecord>), String> {
    if bytes.len() < HEADER_BYTES {
        return Err(format!("{} bytes, shorter than a header", bytes.len()));
    }
    let (header, mut rest) = bytes.split_at(HEADER_BYTES);
    let decode: fn(&[u8]) -> Result<WalRecord, String> = match &header[..8] {
        m if m == MAGIC => wire::decode_stored::<WalRecord>,
        m if m == MAGIC_V1 => crate::legacy::decode_v1::<WalRecord>,
        _ => return Err("not a pactdb snapshot of a format this binary reads (bad magic)".to_string()),
    };
    let u64_at = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[24..28].try_into().expect("4 bytes"));
    if crc32c::crc32c(&header[..24]) != crc {
        return Err("header checksum mismatch".to_string());
    }
    let covers = u64_at(header, 8);
    let count = u64_at(header, 16);
    // Every record takes at least its header, so a count beyond that is
    // damage, found before anything is allocated for it.
    if count > (rest.len() / RECORD_HEADER_BYTES) as u64 {
        return Err(format!("{count} records cannot fit in {} bytes", rest.len()));
    }
    let mut records = Vec::with_capacity(count as usize);
    for i in 0..count {
        if rest.len() < RECORD_HEADER_BYTES {
            return Err(format!("record {i}: short header"));
        }
        let len = u64_at(rest, 0);
        let crc = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes"));
        let body = &rest[RECORD_HEADER_BYTES..];
        if len > body.len() as u64 {
            return Err(format!("record {i}: length {len} but {} bytes left", body.len()));
        }
        let (payload, after) = body.split_at(len as usize);
        if crc32c::crc32c(payload) != crc {
            return Err(format!("record {i}: checksum mismatch"));
        }
        records.push(decode(payload).map_err(|e| format!("record {i}: {e}"))?);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last record", rest.len()));
    }
    Ok((covers, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(n: u64) -> Vec<WalRecord> {
        (0..n).map(|i| WalRecord::Truncate { group: 1, index: i }).collect()
    }

    #[test]
    fn a_written_snapshot_reads_back_and_any_damage_makes_it_invalid() {
        let tmp = tempfile::tempdir().unwrap();
        let recs = records(50);
        let (temp, size) = write_temp(tmp.path(), 77, &recs).unwrap();
        assert!(list_snapshots(tmp.path()).unwrap().is_empty(), "a temp file is not a snapshot");
        let path = install(tmp.path(), &temp, 77).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), size);
        assert_eq!(list_snapshots(tmp.path()).unwrap(), vec![(77, path.clone())]);
        assert_eq!(read(&path).unwrap(), Ok((77, recs)));

        let good = fs::read(&path).unwrap();
        for at in [0, 9, 20, 30, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(parse(&bad).is_err(), "a flipped byte at {at} went unnoticed");
        }
        for len in [0, 10, HEADER_BYTES, good.len() - 1] {
            assert!(parse(&good[..len]).is_err(), "a file cut to {len} bytes went unnoticed");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
    }

    #[test]
    fn a_format_1_snapshot_is_read_with_the_legacy_decoder() {
        use bincode::Options;
        // Laid out as format 1 wrote it: `PACTSNP1`, records in bincode
        // (indexes past 250, which bincode and postcard encode differently).
        let recs: Vec<WalRecord> = (0..5).map(|i| WalRecord::Truncate { group: 1, index: 1000 + i }).collect();
        let mut bytes = MAGIC_V1.to_vec();
        bytes.extend_from_slice(&9u64.to_le_bytes());
        bytes.extend_from_slice(&(recs.len() as u64).to_le_bytes());
        let crc = crc32c::crc32c(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        for r in &recs {
            let payload = bincode::DefaultOptions::new().serialize(r).unwrap();
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            bytes.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        assert_eq!(parse(&bytes), Ok((9, recs.clone())));
        // The magic picks the decoder: the same records under the new magic
        // do not read as postcard.
        let mut relabelled = bytes.clone();
        relabelled[..8].copy_from_slice(MAGIC);
        let crc = crc32c::crc32c(&relabelled[..24]);
        relabelled[24..28].copy_from_slice(&crc.to_le_bytes());
        assert_ne!(parse(&relabelled), Ok((9, recs)));
        // And what is written now is format 2.
        let tmp = tempfile::tempdir().unwrap();
        let (temp, _) = write_temp(tmp.path(), 9, &records(1)).unwrap();
        assert!(fs::read(temp).unwrap().starts_with(b"PACTSNP2"));
    }

    #[test]
    fn pruning_keeps_two_snapshots_and_the_wal_after_the_older() {
        use crate::wal::{Wal, WalOptions};
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut wal, _) = Wal::open(dir, WalOptions { segment_bytes: 1 }).unwrap();
        for i in 0..10u8 {
            wal.append(&[i + 1]).unwrap();
        }
        wal.sync().unwrap();
        for covers in [3, 6, 8] {
            let (temp, _) = write_temp(dir, covers, &records(1)).unwrap();
            install(dir, &temp, covers).unwrap();
        }
        let (snaps, segments, _) = prune(dir).unwrap();
        assert_eq!(snaps, 1, "the oldest of three went");
        let kept: Vec<u64> = list_snapshots(dir).unwrap().into_iter().map(|(c, _)| c).collect();
        assert_eq!(kept, vec![8, 6]);
        // Segments hold one record each: those before record 6 went.
        assert_eq!(segments, 6);
        drop(wal);
        let (wal, got) = Wal::open(dir, WalOptions { segment_bytes: 1 }).unwrap();
        assert_eq!(wal.first_seq(), 6);
        assert_eq!(got, (7..=10u8).map(|b| vec![b]).collect::<Vec<_>>());
        assert!(!wal.was_cut());
    }
}
