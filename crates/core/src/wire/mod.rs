//! Everything that crosses a wire or reaches the disk, split by who speaks
//! it: `client` (front ends and nodes), `peer` (node to node) and `wal`
//! (a node to its own disk), and the one encoding they all share.
//!
//! Decoding is bounded by `MAX_MESSAGE_BYTES` and never panics: a malformed
//! message is an error the caller reports, nothing more.

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
use bincode::Options;
use serde::{de::DeserializeOwned, Serialize};

fn options() -> impl Options {
    bincode::DefaultOptions::new().with_limit(MAX_MESSAGE_BYTES).allow_trailing_bytes()
}

/// Encodes any message. Infallible for our types (they hold no maps with
/// non-string keys that bincode could refuse).
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    options().serialize(msg).expect("pactdb messages always serialize")
}

/// Decodes a message, bounded by `MAX_MESSAGE_BYTES`; never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    options().deserialize(bytes).map_err(|e| e.to_string())
}

/// Encodes a record of a snapshot file, in the same encoding but with no
/// message limit: a group's whole state may be larger than any message.
pub fn encode_stored<T: Serialize>(record: &T) -> Vec<u8> {
    bincode::DefaultOptions::new().allow_trailing_bytes().serialize(record).expect("pactdb records always serialize")
}

/// Decodes a record read from a snapshot file, bounded by the bytes given
/// (which the file's framing already checked); never panics.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::DefaultOptions::new()
        .with_limit(bytes.len() as u64)
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| e.to_string())
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
    fn round_trip() {
        let m = PeerMsg { from: 3, body: PeerBody::Join { group: 2, last_index: 9 } };
        assert_eq!(decode::<PeerMsg>(&encode(&m)).unwrap(), m);
    }
}
