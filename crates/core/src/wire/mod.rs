//! Everything that crosses a wire or reaches the disk, split by who speaks
//! it: `client` (front ends and nodes), `peer` (node to node) and `wal`
//! (a node to its own disk), and the one encoding they all share: postcard
//! (serde's data model, varint integers, no field names or tags beyond
//! enum variant indices). This is format 2; the runtime's frames, WAL
//! segments, snapshots and stored map say so, and read format 1 (bincode)
//! with a legacy decoder of their own (see ARCHITECTURE.md, "Formats and
//! versions").
//!
//! Within one format, types evolve only additively: a new enum variant goes
//! at the end (variants are encoded by index), and nothing else changes
//! shape. Any other change (a field added, removed or reordered; a type
//! changed) is a new format version, with the old decoder kept for data at
//! rest. postcard encodes a struct as its fields in order, with nothing to
//! skip or default by, so attributes that need a self-describing format
//! (`untagged`, `flatten`, `skip_serializing_if`, `deserialize_any`) must
//! not appear in these types: the round-trip tests would catch most, the
//! rule catches the rest.
//!
//! Decoding is bounded by `MAX_MESSAGE_BYTES` and never panics: a malformed
//! message is an error the caller reports, nothing more. postcard reads
//! from the slice it is given, so a claimed length longer than the bytes
//! left fails before anything is allocated for it (serde's own collections
//! reserve at most about a megabyte for a claim, whatever it says).

pub mod client;
pub mod peer;
pub mod wal;

pub use client::{
    CatchUp, ClientError, ClientMsg, ClientReply, ClientRequest, Consistency, Handover, NodeStatus, PlacementChange,
    ReplicaStatus, SnapshotTransfer, TransferRefused,
};
pub use peer::{Ballot, ConfigValue, PeerBody, PeerMsg};
pub use wal::WalRecord;

use crate::limits::MAX_MESSAGE_BYTES;
use serde::{de::DeserializeOwned, Serialize};

/// The encoding's version, as frames, WAL segments, snapshots and the
/// stored map name it: 2, postcard (1 was bincode).
pub const FORMAT: u32 = 2;

/// Encodes any message. Infallible for our types: every sequence and map
/// they hold knows its length (postcard refuses one that does not).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    postcard::to_allocvec(msg).expect("pactdb messages always serialize")
}

/// Decodes a message, bounded by `MAX_MESSAGE_BYTES`; never panics.
/// Trailing bytes after the message are ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(format!("a message of {} bytes, over the limit of {MAX_MESSAGE_BYTES}", bytes.len()));
    }
    decode_stored(bytes)
}

/// Encodes a record of a snapshot file, in the same encoding but with no
/// message limit: a group's whole state may be larger than any message.
pub fn encode_stored<T: Serialize>(record: &T) -> Vec<u8> {
    encode(record)
}

/// Decodes a record read from a snapshot file, bounded by the bytes given
/// (which the file's framing already checked); never panics.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_decodes_to_an_error_not_a_panic() {
        for bytes in [&[][..], &[0xff; 3][..], &[7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..]] {
            assert!(decode::<ClientMsg>(bytes).is_err());
            assert!(decode::<PeerMsg>(bytes).is_err());
        }
        // A length prefix claiming a huge vector must not allocate it.
        let mut huge = encode(&ClientMsg::GetStatus);
        huge[0] = 0; // Request
        huge.extend_from_slice(&[0xfd; 9]);
        assert!(decode::<ClientMsg>(&huge).is_err());
    }

    #[test]
    fn a_message_over_the_limit_is_refused_before_decoding() {
        let mut big = encode(&ClientMsg::GetStatus);
        big.resize(MAX_MESSAGE_BYTES as usize + 1, 0);
        assert!(decode::<ClientMsg>(&big).unwrap_err().contains("over the limit"));
        // The same bytes are fine as a stored record (trailing bytes ignored).
        assert_eq!(decode_stored::<ClientMsg>(&big), Ok(ClientMsg::GetStatus));
    }

    #[test]
    fn round_trip() {
        let m = PeerMsg { from: 3, body: PeerBody::Join { group: 2, last_index: 9 } };
        assert_eq!(decode::<PeerMsg>(&encode(&m)).unwrap(), m);
    }
}
