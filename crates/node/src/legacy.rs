//! The decoder of format 1: bincode 1.3 with its default options (varint
//! integers, little endian), which pactdb wrote before format 2 (postcard).
//!
//! Never written: kept only so that a node upgraded in place reads the WAL
//! segments, snapshots and stored cluster map written before format 2.
//! Remove it (and the `bincode` dependency, which RUSTSEC-2025-0141 lists
//! as unmaintained) when format 1 is no longer supported, that is once no
//! data dir of a supported upgrade path can still hold a format-1 file.
//! Peer and client frames of format 1 are refused, not decoded (see
//! `frame.rs`): only data at rest carries over an encoding change.

use bincode::Options;
use serde::de::DeserializeOwned;

/// Decodes one format-1 record or file, bounded by the bytes given (the
/// caller's framing already checked them); never panics.
pub fn decode_v1<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    bincode::DefaultOptions::new()
        .with_limit(bytes.len() as u64)
        .allow_trailing_bytes()
        .deserialize(bytes)
        .map_err(|e| format!("format 1 (bincode): {e}"))
}
