//! The wire side of the Redis front end: requests in, replies out, in
//! RESP2 or RESP3 as the connection chose (`HELLO`). Parsing and encoding
//! are the `redis-protocol` crate's; this module only picks the version,
//! guards the parser against hostile input and accepts inline commands
//! (`PING\r\n`, as typed into telnet).
//!
//! It must never panic or buffer without bound on bad input: a request
//! larger than `MAX_REQUEST_BYTES`, with more than `MAX_ARGS` arguments, or
//! that is not an array of bulk strings is a protocol error that closes the
//! connection (as Redis does).

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::types::{BytesFrame as Frame2, Resp2Frame};
use redis_protocol::resp3::types::BytesFrame as Frame3;

/// Bytes one request may take (the largest is an MSET, bounded by
/// `MAX_TXN_BYTES`; a SET carries at most `MAX_VALUE_BYTES`), with room for
/// the framing.
pub const MAX_REQUEST_BYTES: usize = pactdb_core::limits::MAX_TXN_BYTES + 1024 * 1024;
/// Arguments of one request: an MSET of `MAX_TXN_KEYS` keys, and its name.
pub const MAX_ARGS: usize = 2 * pactdb_core::limits::MAX_TXN_KEYS + 1;
/// Bytes of one inline command line.
const MAX_INLINE_BYTES: usize = 64 * 1024;

/// A reply, before it is encoded in the connection's RESP version.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Ok,
    Simple(String),
    /// An error line: its first word is the kind (`ERR`, `WRONGTYPE`,
    /// `EXECABORT`, `TRYAGAIN`...), as Redis words them.
    Err(String),
    Int(i64),
    Bulk(Bytes),
    Nil,
    Array(Vec<Reply>),
    /// A nil array (an EXEC whose watched keys changed).
    NilArray,
    /// A map in RESP3, a flat array of pairs in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn err(msg: impl Into<String>) -> Reply {
        Reply::Err(msg.into())
    }

    pub fn bulk(b: impl Into<Bytes>) -> Reply {
        Reply::Bulk(b.into())
    }

    pub fn text(s: &str) -> Reply {
        Reply::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    pub fn is_err(&self) -> bool {
        matches!(self, Reply::Err(_))
    }

    fn to_resp2(&self) -> Frame2 {
        match self {
            Reply::Ok => Frame2::SimpleString(Bytes::from_static(b"OK")),
            Reply::Simple(s) => Frame2::SimpleString(Bytes::copy_from_slice(s.as_bytes())),
            Reply::Err(e) => Frame2::Error(e.as_str().into()),
            Reply::Int(i) => Frame2::Integer(*i),
            Reply::Bulk(b) => Frame2::BulkString(b.clone()),
            Reply::Nil | Reply::NilArray => Frame2::Null,
            Reply::Array(a) => Frame2::Array(a.iter().map(Reply::to_resp2).collect()),
            Reply::Map(m) => Frame2::Array(m.iter().flat_map(|(k, v)| [k.to_resp2(), v.to_resp2()]).collect()),
        }
    }

    fn to_resp3(&self) -> Frame3 {
        match self {
            Reply::Ok => Frame3::SimpleString { data: Bytes::from_static(b"OK"), attributes: None },
            Reply::Simple(s) => Frame3::SimpleString { data: Bytes::copy_from_slice(s.as_bytes()), attributes: None },
            Reply::Err(e) => Frame3::SimpleError { data: e.as_str().into(), attributes: None },
            Reply::Int(i) => Frame3::Number { data: *i, attributes: None },
            Reply::Bulk(b) => Frame3::BlobString { data: b.clone(), attributes: None },
            Reply::Nil | Reply::NilArray => Frame3::Null,
            Reply::Array(a) => Frame3::Array { data: a.iter().map(Reply::to_resp3).collect(), attributes: None },
            Reply::Map(m) => {
                Frame3::Map { data: m.iter().map(|(k, v)| (k.to_resp3(), v.to_resp3())).collect(), attributes: None }
            }
        }
    }

    /// Appends the encoding of this reply in RESP3 (`resp3`) or RESP2 to `out`.
    pub fn encode(&self, resp3: bool, out: &mut BytesMut) {
        let r = if resp3 {
            redis_protocol::resp3::encode::complete::extend_encode(out, &self.to_resp3(), false).map(|_| ())
        } else {
            redis_protocol::resp2::encode::extend_encode(out, &self.to_resp2(), false).map(|_| ())
        };
        if let Err(e) = r {
            // Our own frames always encode; should one not, the client gets
            // an error in its place rather than a torn stream.
            tracing::error!("encoding a reply failed: {e:?}");
            let frame = Frame2::Error(format!("ERR internal error encoding the reply: {e:?}").into());
            let _ = redis_protocol::resp2::encode::extend_encode(out, &frame, false);
        }
    }
}

/// Takes one complete command off the front of `buf`: `Ok(None)` until one
/// is complete, `Err` (the connection is closed) for input that is not a
/// command or is over a bound.
pub fn take_command(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] != b'*' {
        return take_inline(buf);
    }
    // The crate's decoder recurses into nested arrays; a request of nested
    // arrays would recurse once per four bytes. A command is one array of
    // bulk strings: that shape is checked first, and the lengths bounded.
    if !shape_ok(buf)? {
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(format!("Protocol error: a request exceeds {MAX_REQUEST_BYTES} bytes"));
        }
        return Ok(None);
    }
    match redis_protocol::resp2::decode::decode_bytes_mut(buf) {
        Ok(Some((Frame2::Array(items), _, _))) => items
            .into_iter()
            .map(|f| match f {
                Frame2::BulkString(b) => Ok(b),
                other => Err(format!("Protocol error: expected a bulk string, got {:?}", other.kind())),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Ok(Some((Frame2::Null, _, _))) => Ok(Some(Vec::new())),
        Ok(Some((other, _, _))) => Err(format!("Protocol error: expected an array, got {:?}", other.kind())),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("Protocol error: {}", e.details())),
    }
}

/// Whether `buf` holds a whole array of bulk strings (`Ok(false)`: not
/// yet); `Err` if it is not shaped like one or a length is over a bound.
fn shape_ok(buf: &[u8]) -> Result<bool, String> {
    let line = |at: usize| -> Option<(usize, usize)> {
        let end = buf[at..].windows(2).position(|w| w == b"\r\n")?;
        Some((at, at + end))
    };
    let number = |from: usize, to: usize| -> Result<i64, String> {
        std::str::from_utf8(&buf[from..to])
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| "Protocol error: invalid length".to_string())
    };
    let Some((_, end)) = line(0) else {
        return if buf.len() > 32 { Err("Protocol error: invalid multibulk length".into()) } else { Ok(false) };
    };
    let n = number(1, end)?;
    if n > MAX_ARGS as i64 {
        return Err(format!("Protocol error: more than {MAX_ARGS} arguments"));
    }
    let mut at = end + 2;
    for _ in 0..n.max(0) {
        if at >= buf.len() {
            return Ok(false);
        }
        if buf[at] != b'$' {
            return Err(format!("Protocol error: expected '$', got '{}'", buf[at].escape_ascii()));
        }
        let Some((_, end)) = line(at) else {
            return if buf.len() - at > 32 { Err("Protocol error: invalid bulk length".into()) } else { Ok(false) };
        };
        let len = number(at + 1, end)?;
        if len < 0 || len as usize > MAX_REQUEST_BYTES {
            return Err("Protocol error: invalid bulk length".into());
        }
        at = end + 2 + len as usize + 2;
        if at > buf.len() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An inline command: one line, arguments separated by spaces.
fn take_inline(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, String> {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE_BYTES {
            Err("Protocol error: too big inline request".into())
        } else {
            Ok(None)
        };
    };
    let line = buf.split_to(end + 1);
    let text = line.strip_suffix(b"\n").unwrap_or(&line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    Ok(Some(text.split(|b| *b == b' ' || *b == b'\t').filter(|w| !w.is_empty()).map(Bytes::copy_from_slice).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_taken_whole_and_hostile_input_is_refused() {
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPI"[..]);
        assert_eq!(take_command(&mut buf).unwrap(), Some(vec![Bytes::from("GET"), Bytes::from("k")]));
        assert_eq!(take_command(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"NG\r\n");
        assert_eq!(take_command(&mut buf).unwrap(), Some(vec![Bytes::from("PING")]));
        assert!(buf.is_empty());

        let mut inline = BytesMut::from(&b"SET  a b\r\n"[..]);
        let cmd = take_command(&mut inline).unwrap().unwrap();
        assert_eq!(cmd, vec![Bytes::from("SET"), Bytes::from("a"), Bytes::from("b")]);

        // Nested arrays (a stack-depth bomb for a recursive parser) and
        // lengths over the bounds are protocol errors, not waits or panics.
        let mut nested = BytesMut::from("*1\r\n".repeat(100_000).as_str());
        assert!(take_command(&mut nested).is_err());
        let mut huge = BytesMut::from(&b"*1\r\n$99999999999\r\n"[..]);
        assert!(take_command(&mut huge).is_err());
        let mut many = BytesMut::from(format!("*{}\r\n", MAX_ARGS + 1).as_str());
        assert!(take_command(&mut many).is_err());
    }

    #[test]
    fn replies_encode_in_either_version() {
        let mut out = BytesMut::new();
        Reply::Map(vec![(Reply::text("proto"), Reply::Int(3))]).encode(true, &mut out);
        assert_eq!(&out[..], b"%1\r\n$5\r\nproto\r\n:3\r\n");
        out.clear();
        Reply::Map(vec![(Reply::text("proto"), Reply::Int(2))]).encode(false, &mut out);
        assert_eq!(&out[..], b"*2\r\n$5\r\nproto\r\n:2\r\n");
        out.clear();
        Reply::Nil.encode(true, &mut out);
        Reply::Nil.encode(false, &mut out);
        Reply::err("ERR x").encode(false, &mut out);
        assert_eq!(&out[..], b"_\r\n$-1\r\n-ERR x\r\n");
    }
}
