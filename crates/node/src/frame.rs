//! Versioned, length-prefixed frames: the only byte format pactdb puts on a TCP stream.
//!
//! A frame on the wire is `[u32 big-endian len][u8 version][payload]`, where `len` counts the
//! version byte plus the payload, so `len == 1 + payload.len()`. The payload is opaque here: the
//! protocol core serializes its own messages, and this module never looks inside them.
//!
//! The version byte names the payload's encoding: 1 was bincode (pactdb before format 2), 2 is
//! postcard (`pactdb_core::wire`). A node speaks exactly one version and refuses a frame of any
//! other, closing the connection with an error that names both: nodes of two encodings cannot
//! understand each other, so an upgrade across an encoding change restarts every node (the data
//! on disk carries over; see ARCHITECTURE.md, "Formats and versions").
//!
//! This module owns the wire version and the single size bound ([`MAX_FRAME_BYTES`]). It must
//! never trust a length read from the network before checking it against that bound, and it
//! never allocates memory in proportion to a claimed length: the payload buffer grows only as
//! bytes actually arrive, so a peer that announces a large frame and then stalls costs us only
//! what it really sent. It does no I/O of its own beyond reading the frame it is asked for, and it
//! never logs; callers decide what a bad frame means for their connection.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The wire format version this node writes and the only one it accepts: 2, postcard payloads.
pub const WIRE_VERSION: u8 = 2;

/// What a version byte names, for the error that refuses it.
fn version_name(version: u8) -> &'static str {
    match version {
        1 => "bincode, written by pactdb before format 2: restart every node on this version",
        WIRE_VERSION => "postcard",
        _ => "not a version any pactdb wrote",
    }
}

/// The largest value the length prefix may hold (version byte plus payload).
///
/// This is the one place the bound is stated; everything else derives from it.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The largest payload that fits in one frame, derived from [`MAX_FRAME_BYTES`].
pub const MAX_PAYLOAD_BYTES: usize = MAX_FRAME_BYTES - 1;

/// How much payload buffer is reserved up front before any payload byte has arrived.
///
/// Frames up to this size get exactly one allocation (or none, when `buf` is reused), while larger
/// frames grow their buffer as data arrives instead of trusting the announced length.
const INITIAL_RESERVE: usize = 64 << 10;

/// Why a frame could not be read.
#[derive(thiserror::Error, Debug)]
pub enum FrameError {
    /// The length prefix announced more than [`MAX_FRAME_BYTES`].
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The version byte is not [`WIRE_VERSION`].
    #[error("unknown wire version {0} ({}; this node speaks {WIRE_VERSION}, postcard)", version_name(*.0))]
    UnknownVersion(u8),
    /// The length prefix was zero, so there is not even a version byte.
    #[error("empty frame")]
    Empty,
    /// The stream ended cleanly at a frame boundary.
    #[error("connection closed")]
    Closed,
    /// The underlying stream failed, or ended in the middle of a frame (`UnexpectedEof`).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the remote side sent bytes that violate the framing (as opposed to the
    /// connection simply ending or failing); such a connection should be closed and logged.
    pub fn is_malformed(&self) -> bool {
        matches!(self, FrameError::TooLarge { .. } | FrameError::UnknownVersion(_) | FrameError::Empty)
    }
}

/// Appends one frame carrying `payload` to `out`.
///
/// Appending (rather than returning a fresh buffer) lets a writer encode many frames into one
/// buffer and hand them to the socket in a single write.
///
/// # Panics
///
/// Panics if `payload` is longer than [`MAX_PAYLOAD_BYTES`], because the receiver would reject
/// the frame and close the connection; callers that take payloads from elsewhere check first.
pub fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(
        payload.len() <= MAX_PAYLOAD_BYTES,
        "payload of {} bytes exceeds the frame limit of {MAX_PAYLOAD_BYTES}",
        payload.len()
    );
    // The assertion above keeps this well inside u32, so the conversion cannot fail.
    let len = u32::try_from(payload.len() + 1).expect("bounded by MAX_FRAME_BYTES");
    out.reserve(4 + 1 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.push(WIRE_VERSION);
    out.extend_from_slice(payload);
}

/// Reads one frame from `r` and leaves its payload in `buf`, replacing what was there but
/// reusing its capacity.
///
/// Returns [`FrameError::Closed`] if the stream ends exactly at a frame boundary, and
/// [`FrameError::Io`] with `UnexpectedEof` if it ends inside a frame. After any error the
/// contents of `buf` are unspecified, and the stream position is unspecified too, so the caller
/// should stop reading from it.
///
/// The frame is read in three small steps (length, version, payload), so `r` should be buffered,
/// e.g. a [`tokio::io::BufReader`] around a socket, to keep this at one system call per batch of
/// frames rather than three per frame.
///
/// This function is not cancellation safe: dropping the future part way through a frame loses
/// the bytes already consumed, leaving the stream out of step.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<(), FrameError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        let n = r.read(&mut header[filled..]).await?;
        if n == 0 {
            // Zero bytes at a boundary is an orderly close; anything else is a cut-off frame.
            return Err(if filled == 0 {
                FrameError::Closed
            } else {
                FrameError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a frame header"))
            });
        }
        filled += n;
    }

    // Validate the claimed length before it influences any allocation.
    let len = u32::from_be_bytes(header) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_BYTES });
    }

    let version = r.read_u8().await?;
    if version != WIRE_VERSION {
        return Err(FrameError::UnknownVersion(version));
    }

    let payload_len = len - 1;
    buf.clear();
    if buf.capacity() < payload_len {
        buf.reserve_exact(payload_len.min(INITIAL_RESERVE));
    }
    // `take` stops the reads at the frame boundary so the next frame stays in the reader.
    let mut body = (&mut *r).take(payload_len as u64);
    while buf.len() < payload_len {
        if buf.len() == buf.capacity() {
            // Grow geometrically but never past the announced size, so memory tracks the bytes
            // that really arrived.
            let remaining = payload_len - buf.len();
            buf.reserve_exact(remaining.min(buf.capacity().max(INITIAL_RESERVE)));
        }
        let n = body.read_buf(buf).await?;
        if n == 0 {
            return Err(FrameError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a frame payload",
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, BufReader};

    fn payload_for(i: usize) -> Vec<u8> {
        // Sizes vary from empty to a few KiB so the batch mixes tiny and buffer-crossing frames.
        (0..(i * 37) % 5000).map(|b| (b ^ i) as u8).collect()
    }

    #[tokio::test]
    async fn many_frames_batched_in_one_buffer_round_trip() {
        let mut wire = Vec::new();
        for i in 0..1000 {
            encode_frame(&mut wire, &payload_for(i));
        }
        let mut r = BufReader::new(&wire[..]);
        let mut buf = Vec::new();
        for i in 0..1000 {
            read_frame(&mut r, &mut buf).await.unwrap();
            assert_eq!(buf, payload_for(i), "frame {i}");
        }
        assert!(matches!(read_frame(&mut r, &mut buf).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn frames_survive_arbitrary_split_points() {
        let mut wire = Vec::new();
        for i in 0..200 {
            encode_frame(&mut wire, &payload_for(i));
        }
        // A 7-byte pipe forces headers, versions and payloads to arrive in fragments.
        let (mut tx, rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            tx.write_all(&wire).await.unwrap();
        });
        let mut r = BufReader::new(rx);
        let mut buf = Vec::new();
        for i in 0..200 {
            read_frame(&mut r, &mut buf).await.unwrap();
            assert_eq!(buf, payload_for(i), "frame {i}");
        }
        writer.await.unwrap();
        assert!(matches!(read_frame(&mut r, &mut buf).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn encoding_matches_the_documented_layout() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, b"ab");
        encode_frame(&mut wire, b"");
        assert_eq!(wire, [0, 0, 0, 3, WIRE_VERSION, b'a', b'b', 0, 0, 0, 1, WIRE_VERSION]);
    }

    #[tokio::test]
    async fn oversize_length_is_rejected_without_allocating() {
        let mut buf = Vec::new();
        let wire = [0xFF, 0xFF, 0xFF, 0xFF, WIRE_VERSION];
        let err = read_frame(&mut &wire[..], &mut buf).await.unwrap_err();
        match &err {
            FrameError::TooLarge { len, max } => {
                assert_eq!(*len, u32::MAX as usize);
                assert_eq!(*max, MAX_FRAME_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err.is_malformed());
        assert_eq!(buf.capacity(), 0, "nothing may be allocated for a rejected frame");

        // One byte over the bound is already too much.
        let over = u32::try_from(MAX_FRAME_BYTES + 1).unwrap().to_be_bytes();
        let err = read_frame(&mut &over[..], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }), "{err:?}");
        assert_eq!(buf.capacity(), 0);
    }

    #[tokio::test]
    async fn a_large_claim_that_stalls_costs_only_what_arrived() {
        let mut wire = u32::try_from(MAX_FRAME_BYTES).unwrap().to_be_bytes().to_vec();
        wire.push(WIRE_VERSION);
        wire.extend_from_slice(&[7; 10]);
        let mut buf = Vec::new();
        let err = read_frame(&mut &wire[..], &mut buf).await.unwrap_err();
        match err {
            FrameError::Io(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("expected Io(UnexpectedEof), got {other:?}"),
        }
        assert!(buf.capacity() <= INITIAL_RESERVE, "allocated {} bytes for 10 received", buf.capacity());
    }

    #[tokio::test]
    async fn unknown_version_is_rejected() {
        let wire = [0, 0, 0, 2, 9, 0xAA];
        let mut buf = Vec::new();
        let err = read_frame(&mut &wire[..], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::UnknownVersion(9)), "{err:?}");
        assert!(err.is_malformed());
        assert_eq!(
            err.to_string(),
            "unknown wire version 9 (not a version any pactdb wrote; this node speaks 2, postcard)"
        );
    }

    #[tokio::test]
    async fn a_frame_of_the_bincode_version_is_refused_by_name() {
        let wire = [0, 0, 0, 2, 1, 0x00];
        let err = read_frame(&mut &wire[..], &mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, FrameError::UnknownVersion(1)), "{err:?}");
        assert!(err.is_malformed());
        let said = err.to_string();
        assert!(said.contains("version 1 (bincode") && said.contains("speaks 2, postcard"), "{said}");
    }

    #[tokio::test]
    async fn empty_frame_is_rejected() {
        let wire = [0, 0, 0, 0];
        let mut buf = Vec::new();
        let err = read_frame(&mut &wire[..], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::Empty), "{err:?}");
        assert!(err.is_malformed());
    }

    #[tokio::test]
    async fn truncated_streams_are_reported() {
        let mut full = Vec::new();
        encode_frame(&mut full, b"hello");
        let mut buf = Vec::new();

        // Nothing at all is an orderly close.
        let err = read_frame(&mut &full[..0], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::Closed), "{err:?}");
        assert!(!err.is_malformed());

        // Every cut inside the frame is an unexpected EOF, never a silent short payload.
        for cut in 1..full.len() {
            let err = read_frame(&mut &full[..cut], &mut buf).await.unwrap_err();
            match err {
                FrameError::Io(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}")
                }
                other => panic!("cut at {cut}: expected Io(UnexpectedEof), got {other:?}"),
            }
        }

        read_frame(&mut &full[..], &mut buf).await.unwrap();
        assert_eq!(buf, b"hello");
    }

    #[tokio::test]
    async fn buffer_capacity_is_reused() {
        let mut wire = Vec::new();
        encode_frame(&mut wire, &[1; 1000]);
        encode_frame(&mut wire, &[2; 10]);
        let mut r = &wire[..];
        let mut buf = Vec::new();
        read_frame(&mut r, &mut buf).await.unwrap();
        let cap = buf.capacity();
        let ptr = buf.as_ptr();
        read_frame(&mut r, &mut buf).await.unwrap();
        assert_eq!(buf, [2; 10]);
        assert_eq!(buf.capacity(), cap);
        assert_eq!(buf.as_ptr(), ptr, "a smaller frame must not reallocate");
    }

    #[test]
    #[should_panic(expected = "exceeds the frame limit")]
    fn encoding_an_oversize_payload_panics() {
        let big = vec![0u8; MAX_PAYLOAD_BYTES + 1];
        encode_frame(&mut Vec::new(), &big);
    }
}
