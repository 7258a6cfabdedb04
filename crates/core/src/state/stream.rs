//! A snapshot as a byte stream, for a member too far behind to be caught up
//! from the log: the sender's frozen state and the chunks cut from it, and
//! the receiver's one partial stream.
//!
//! It owns the stream's format and its checks. The stream is a header (the
//! encoded state machine without its key-value pairs: sessions, locks,
//! prepared records, decisions) followed by every key-value pair, one
//! encoded item after another, in the map's iteration order. A chunk is a
//! piece of the header or whole items, never both; its offset is a byte
//! offset into the stream, so a receiver acknowledges how many bytes it
//! holds and a sender resumes there. The sender freezes the state by
//! cloning it (the key-value map is persistent: O(1), nothing copied) and
//! encodes items only as it sends them. The digest announced with every
//! chunk is the header's hash combined with the key-value digest, which the
//! receiver recomputes from the items it applied. Header and items are in
//! the wire's encoding (`wire::FORMAT`, postcard): a stream crosses the wire
//! only inside peer messages, so the frame's version is its version too.
//!
//! It must never let a chunk that does not continue the stream (a gap, a
//! duplicate, another stream's piece, bytes that do not decode) change the
//! partial stream, never hand out a snapshot before every byte arrived and
//! the digest matched, and never panic on anything a peer sends.

use super::kv::{Key, KvStore, Versioned, Write};
use super::{Snapshot, StateMachine};
use crate::limits::{
    MAX_KEY_BYTES, MAX_SNAPSHOT_BYTES, MAX_SNAPSHOT_CHUNK_BYTES, MAX_SNAPSHOT_HEADER_BYTES, MAX_VALUE_BYTES,
};
use crate::types::{Epoch, Index};
use serde::{Deserialize, Serialize};

/// A snapshot's identity: the log position it stands for. Two senders with
/// the same id froze the same applied state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SnapshotId {
    pub index: Index,
    pub epoch: Epoch,
}

/// What every chunk of a stream says about the whole.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamMeta {
    pub id: SnapshotId,
    pub total_bytes: u64,
    pub header_bytes: u64,
    /// `stream_digest(header, kv digest)`.
    pub digest: u64,
}

/// The largest chunk a correct sender makes: its chunk size, or one item
/// that alone is larger.
pub const MAX_CHUNK_DATA_BYTES: u64 = MAX_SNAPSHOT_CHUNK_BYTES + (MAX_KEY_BYTES + MAX_VALUE_BYTES) as u64 + 64;

/// The header: the state machine with an empty key-value store, and what
/// the items that follow must add up to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    state: StateMachine,
    kv_len: u64,
}

/// One key-value pair as sent (borrowed, so the sender copies nothing).
#[derive(Serialize)]
struct ItemRef<'a> {
    #[serde(with = "serde_bytes")]
    key: &'a [u8],
    value: &'a Versioned,
}

/// One key-value pair as received.
#[derive(Deserialize)]
struct Item {
    #[serde(with = "serde_bytes")]
    key: Key,
    value: Versioned,
}

/// The digest a stream announces: the header's bytes hashed, combined
/// with the key-value digest (itself a hash of every pair).
pub fn stream_digest(header: &[u8], kv_digest: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(header) ^ kv_digest.rotate_left(17)
}

/// The sender's side: a state frozen at one index, cut into chunks on demand.
#[derive(Debug)]
pub struct Frozen {
    pub meta: StreamMeta,
    header: Vec<u8>,
    kv: KvStore,
}

/// Where the sender stands in a stream: a byte offset that is an item
/// boundary (or lies in the header), and the index of the item there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    pub item: usize,
}

impl Frozen {
    /// Freezes `state` as the snapshot at `(index, epoch)`. The key-value
    /// map is shared, not copied; its items are sized (not encoded) once to
    /// announce the total.
    pub fn freeze(index: Index, epoch: Epoch, state: &StateMachine) -> Frozen {
        let kv = state.kv.clone();
        let mut rest = state.clone();
        rest.kv = KvStore::default();
        let header = crate::wire::encode_stored(&Header { state: rest, kv_len: kv.len() as u64 });
        let items: u64 = kv.iter().map(|(k, v)| item_size(k, v)).sum();
        let meta = StreamMeta {
            id: SnapshotId { index, epoch },
            total_bytes: header.len() as u64 + items,
            header_bytes: header.len() as u64,
            digest: stream_digest(&header, kv.digest()),
        };
        Frozen { meta, header, kv }
    }

    /// The chunk of at most `max_bytes` (or one item, if that alone is
    /// larger) at `offset`, and the cursor after it. `at` is a cursor the
    /// caller knows, used when it stands at `offset`; otherwise the items
    /// are counted from the start. `None` when `offset` is past the end or
    /// not an item boundary of this stream.
    pub fn chunk(&self, offset: u64, at: Cursor, max_bytes: u64) -> Option<(Vec<u8>, Cursor)> {
        let max_bytes = max_bytes.clamp(1, MAX_SNAPSHOT_CHUNK_BYTES);
        let header = self.meta.header_bytes;
        if offset >= self.meta.total_bytes {
            return None;
        }
        if offset < header {
            let end = (offset + max_bytes).min(header);
            let data = self.header[offset as usize..end as usize].to_vec();
            return Some((data, Cursor { offset: end, item: 0 }));
        }
        let start = if at.offset == offset && offset > header { at } else { self.find(offset)? };
        let mut data = Vec::new();
        let mut count = 0;
        for (k, v) in self.kv.iter().skip(start.item) {
            if count > 0 && data.len() as u64 + item_size(k, v) > max_bytes {
                break;
            }
            data = postcard::to_extend(&ItemRef { key: k, value: v }, data).ok()?;
            count += 1;
        }
        let next = Cursor { offset: offset + data.len() as u64, item: start.item + count };
        Some((data, next))
    }

    /// The cursor at byte `offset`, if an item starts there.
    fn find(&self, offset: u64) -> Option<Cursor> {
        let mut at = Cursor { offset: self.meta.header_bytes, item: 0 };
        for (k, v) in self.kv.iter() {
            if at.offset >= offset {
                break;
            }
            at.offset += item_size(k, v);
            at.item += 1;
        }
        (at.offset == offset).then_some(at)
    }
}

/// The encoded size of one item, without encoding it.
fn item_size(key: &[u8], value: &Versioned) -> u64 {
    let size = postcard::ser_flavors::Size::default();
    postcard::serialize_with_flavor(&ItemRef { key, value }, size).map_or(u64::MAX / 4, |n: usize| n as u64)
}

/// Why a chunk was refused.
pub type Refusal = String;

/// The receiver's one partial stream: the header so far (then decoded),
/// and the items applied so far. Bounded by `MAX_SNAPSHOT_BYTES`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partial {
    pub meta: StreamMeta,
    /// Bytes of the stream taken so far.
    pub received: u64,
    #[serde(with = "serde_bytes")]
    header: Vec<u8>,
    rest: Option<Box<Header>>,
    kv: KvStore,
    items: u64,
}

impl Partial {
    /// Starts a stream, if its announced shape is one a sender can make.
    pub fn new(meta: StreamMeta) -> Result<Partial, Refusal> {
        if meta.total_bytes > MAX_SNAPSHOT_BYTES {
            return Err(format!("a snapshot of {} bytes exceeds the limit of {MAX_SNAPSHOT_BYTES}", meta.total_bytes));
        }
        if meta.header_bytes == 0
            || meta.header_bytes > MAX_SNAPSHOT_HEADER_BYTES
            || meta.header_bytes > meta.total_bytes
        {
            return Err(format!("a header of {} bytes in a stream of {}", meta.header_bytes, meta.total_bytes));
        }
        Ok(Partial { meta, received: 0, header: Vec::new(), rest: None, kv: KvStore::default(), items: 0 })
    }

    /// Takes the chunk at `offset`: it must continue the stream exactly.
    /// With `accept_gaps` (the bug `install-incomplete-snapshot`) a chunk of
    /// items past a gap is taken as if the gap held nothing.
    pub fn take(&mut self, offset: u64, data: &[u8], accept_gaps: bool) -> Result<(), Refusal> {
        let len = data.len() as u64;
        if len == 0 || len > MAX_CHUNK_DATA_BYTES {
            return Err(format!("a chunk of {len} bytes"));
        }
        let end = offset.checked_add(len).filter(|e| *e <= self.meta.total_bytes);
        let Some(end) = end else {
            return Err(format!("a chunk at {offset} of {len} bytes passes the end {}", self.meta.total_bytes));
        };
        let gap_taken = accept_gaps && offset > self.received && self.rest.is_some();
        if offset != self.received && !gap_taken {
            return Err(format!("a chunk at {offset} while {} bytes are held", self.received));
        }
        let header = self.meta.header_bytes;
        if offset < header {
            if end > header {
                return Err("a chunk straddles the header's end".into());
            }
            if header == end {
                let mut bytes = std::mem::take(&mut self.header);
                bytes.extend_from_slice(data);
                match crate::wire::decode_stored::<Header>(&bytes) {
                    Ok(h) if h.state.kv.is_empty() => self.rest = Some(Box::new(h)),
                    Ok(_) => return Err("a header that holds key-value pairs".into()),
                    Err(e) => return Err(format!("a header that does not decode: {e}")),
                }
                self.header = bytes;
            } else {
                self.header.extend_from_slice(data);
            }
            self.received = end;
            return Ok(());
        }
        let Some(rest) = &self.rest else { return Err("items before the header".into()) };
        let mut items = Vec::new();
        // The chunk's length was checked against `MAX_CHUNK_DATA_BYTES`
        // above; each item is decoded from what is left of it.
        let mut reader = data;
        while !reader.is_empty() {
            match postcard::take_from_bytes::<Item>(reader) {
                Ok((item, rest)) => {
                    items.push(item);
                    reader = rest;
                }
                Err(e) => return Err(format!("items that do not decode: {e}")),
            }
        }
        if self.items + items.len() as u64 > rest.kv_len {
            return Err(format!("more items than the {} announced", rest.kv_len));
        }
        self.items += items.len() as u64;
        for Item { key, value } in items {
            self.kv.apply(&Write::Put { key, value: value.value, version: value.version });
        }
        self.received = end;
        Ok(())
    }

    pub fn is_complete(&self) -> bool {
        self.received == self.meta.total_bytes
    }

    /// Whether the header arrived (the key-value pairs follow it).
    pub fn has_header(&self) -> bool {
        self.rest.is_some()
    }

    /// The snapshot, once every byte arrived and the digest matches (with
    /// `skip_digest`, the bug, whatever arrived).
    pub fn finish(self, skip_digest: bool) -> Result<Snapshot, Refusal> {
        let complete = self.is_complete();
        let Some(rest) = self.rest else { return Err("the stream ended without a header".into()) };
        if !skip_digest {
            if !complete || self.items != rest.kv_len {
                return Err(format!(
                    "{} of {} bytes, {} of {} items",
                    self.received, self.meta.total_bytes, self.items, rest.kv_len
                ));
            }
            let digest = stream_digest(&self.header, self.kv.digest());
            if digest != self.meta.digest {
                return Err(format!("digest {digest:016x}, announced {:016x}", self.meta.digest));
            }
        }
        let mut state = rest.state;
        state.kv = self.kv;
        Ok(Snapshot { index: self.meta.id.index, epoch: self.meta.id.epoch, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(keys: u64, value_bytes: usize) -> StateMachine {
        let mut s = StateMachine::default();
        for i in 0..keys {
            s.kv.apply(&Write::Put { key: format!("k{i}").into(), value: vec![i as u8; value_bytes], version: i + 1 });
        }
        s
    }

    /// Streams `frozen` into a fresh partial, `chunk` bytes at a time.
    fn stream(frozen: &Frozen, chunk: u64) -> Partial {
        let mut p = Partial::new(frozen.meta).unwrap();
        let mut at = Cursor::default();
        while at.offset < frozen.meta.total_bytes {
            let (data, next) = frozen.chunk(at.offset, at, chunk).unwrap();
            p.take(at.offset, &data, false).unwrap();
            at = next;
        }
        p
    }

    #[test]
    fn a_streamed_snapshot_is_the_state_it_froze() {
        let s = state(200, 100);
        let frozen = Frozen::freeze(7, 2, &s);
        for chunk in [1, 50, 1000, MAX_SNAPSHOT_CHUNK_BYTES] {
            let snap = stream(&frozen, chunk).finish(false).unwrap();
            assert_eq!((snap.index, snap.epoch), (7, 2));
            assert_eq!(snap.state, s, "chunks of {chunk} bytes");
        }
    }

    #[test]
    fn a_gap_a_duplicate_or_a_foreign_piece_is_refused_and_changes_nothing() {
        let frozen = Frozen::freeze(7, 2, &state(50, 100));
        let h = frozen.meta.header_bytes;
        let mut p = Partial::new(frozen.meta).unwrap();
        let (head, at) = frozen.chunk(0, Cursor::default(), MAX_SNAPSHOT_CHUNK_BYTES).unwrap();
        assert_eq!(at.offset, h);
        p.take(0, &head, false).unwrap();
        let (first, at) = frozen.chunk(h, at, 300).unwrap();
        let (second, _) = frozen.chunk(at.offset, at, 300).unwrap();
        let before = p.clone();
        assert!(p.take(at.offset, &second, false).is_err(), "a gap");
        assert!(p.take(0, &head, false).is_err(), "a duplicate");
        assert!(p.take(h, &first[1..], false).is_err(), "bytes that are not whole items");
        assert!(p.take(h, &[], false).is_err(), "an empty chunk");
        assert!(p.take(u64::MAX, &first, false).is_err(), "an offset past every end");
        assert_eq!(p, before);
        p.take(h, &first, false).unwrap();
        assert_eq!(p.received, at.offset);
    }

    #[test]
    fn an_incomplete_or_altered_stream_is_not_installed() {
        let frozen = Frozen::freeze(7, 2, &state(50, 100));
        let mut p = stream(&frozen, 200);
        assert!(p.is_complete());
        p.received -= 1;
        assert!(p.clone().finish(false).is_err(), "incomplete");
        let mut meta = frozen.meta;
        meta.digest ^= 1;
        let mut p = stream(&frozen, 200);
        p.meta = meta;
        assert!(p.finish(false).is_err(), "a digest that does not match");
    }

    #[test]
    fn a_sender_resumes_at_any_item_boundary_and_nowhere_else() {
        let frozen = Frozen::freeze(7, 2, &state(20, 10));
        let h = frozen.meta.header_bytes;
        let (_, at) = frozen.chunk(h, Cursor { offset: h, item: 0 }, 1).unwrap();
        let (from_cursor, _) = frozen.chunk(at.offset, at, 1).unwrap();
        let (counted, _) = frozen.chunk(at.offset, Cursor::default(), 1).unwrap();
        assert_eq!(from_cursor, counted);
        assert!(frozen.chunk(at.offset + 1, Cursor::default(), 1).is_none());
        assert!(frozen.chunk(frozen.meta.total_bytes, Cursor::default(), 1).is_none());
    }

    #[test]
    fn an_announced_shape_no_sender_makes_is_refused() {
        let meta = StreamMeta { total_bytes: MAX_SNAPSHOT_BYTES + 1, header_bytes: 1, ..Default::default() };
        assert!(Partial::new(meta).is_err());
        let meta = StreamMeta { total_bytes: 10, header_bytes: 11, ..Default::default() };
        assert!(Partial::new(meta).is_err());
        let meta = StreamMeta { total_bytes: 10, header_bytes: 0, ..Default::default() };
        assert!(Partial::new(meta).is_err());
    }
}
