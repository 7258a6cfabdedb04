//! The etcd driver of `pactdb workload`: a minimal etcd v3 client that makes
//! unary gRPC calls (`KV.Put`, `KV.Range`) directly over HTTP/2 (the `h2`
//! crate) with hand-encoded protobuf, so building it needs no `protoc`.
//!
//! Like etcd's own clients, one connection multiplexes every request its
//! callers have outstanding (one HTTP/2 stream each). Reads are etcd's
//! default: linearizable.

use bytes::{BufMut, Bytes, BytesMut};
use std::time::Duration;
use tokio::net::TcpStream;

/// One HTTP/2 connection to one etcd member. Cheap to clone.
#[derive(Clone)]
pub struct Conn {
    send: h2::client::SendRequest<Bytes>,
    base: String,
}

/// Connects to `addr` (`HOST:PORT` of an etcd client URL, plain http).
pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to etcd at {addr} timed out"))??;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake::<_, Bytes>(tcp)
        .await?;
    tokio::spawn(async move {
        // Ends when the connection closes; requests then fail and are counted.
        let _ = connection.await;
    });
    Ok(Conn { send, base: format!("http://{addr}") })
}

impl Conn {
    /// `KV.Put`: writes `value` under `key`.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let mut msg = Vec::with_capacity(key.len() + value.len() + 8);
        put_bytes_field(&mut msg, 1, key);
        put_bytes_field(&mut msg, 2, value);
        self.unary("Put", &msg).await.map(|_| ())
    }

    /// `KV.Range` of one key: its value, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, String> {
        let mut msg = Vec::with_capacity(key.len() + 4);
        put_bytes_field(&mut msg, 1, key);
        let reply = self.unary("Range", &msg).await?;
        range_value(&reply)
    }

    /// One unary call of `/etcdserverpb.KV/{method}`; returns the reply message.
    async fn unary(&self, method: &str, msg: &[u8]) -> Result<Bytes, String> {
        let mut body = BytesMut::with_capacity(5 + msg.len());
        body.put_u8(0);
        body.put_u32(msg.len() as u32);
        body.extend_from_slice(msg);
        let req = http::Request::builder()
            .method(http::Method::POST)
            .uri(format!("{}/etcdserverpb.KV/{method}", self.base))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| format!("building a request: {e}"))?;
        let mut send = self.send.clone().ready().await.map_err(|e| format!("etcd connection: {e}"))?;
        let (response, mut stream) = send.send_request(req, false).map_err(|e| format!("etcd send: {e}"))?;
        stream.send_data(body.freeze(), true).map_err(|e| format!("etcd send: {e}"))?;
        let response = response.await.map_err(|e| format!("etcd response: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("etcd answered HTTP {}", response.status()));
        }
        // A "trailers-only" answer carries the gRPC status in its headers.
        if let Some(status) = grpc_status(response.headers()) {
            if status != "0" {
                return Err(grpc_error(&status, response.headers()));
            }
        }
        let mut body = response.into_body();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("etcd response body: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = body.trailers().await.map_err(|e| format!("etcd response trailers: {e}"))?;
        match trailers.as_ref().and_then(grpc_status) {
            Some(status) if status == "0" => {}
            Some(status) => return Err(grpc_error(&status, trailers.as_ref().expect("trailers are present"))),
            None if data.is_empty() => return Err("etcd answered without a gRPC status".into()),
            None => {}
        }
        unframe(data.freeze())
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    headers.get("grpc-status").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn grpc_error(status: &str, headers: &http::HeaderMap) -> String {
    let message =
        headers.get("grpc-message").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    format!("etcd gRPC status {status}: {message}")
}

/// The one message of a gRPC reply body: `[u8 compressed = 0][u32 len][msg]`.
fn unframe(data: Bytes) -> Result<Bytes, String> {
    if data.len() < 5 {
        return Err(format!("etcd reply of {} bytes is shorter than a gRPC frame header", data.len()));
    }
    if data[0] != 0 {
        return Err("etcd sent a compressed reply".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    if data.len() < 5 + len {
        return Err(format!("etcd reply frame of {len} bytes is cut at {}", data.len() - 5));
    }
    Ok(data.slice(5..5 + len))
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A length-delimited protobuf field (wire type 2).
fn put_bytes_field(buf: &mut Vec<u8>, field: u32, data: &[u8]) {
    put_varint(buf, (u64::from(field) << 3) | 2);
    put_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("protobuf: truncated varint")?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("protobuf: varint too long".into())
}

/// Every field of a message as `(field number, wire type, payload)`; varint
/// and fixed payloads are returned as their raw bytes.
fn fields(msg: &Bytes) -> Result<Vec<(u32, u8, Bytes)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < msg.len() {
        let tag = get_varint(msg, &mut pos)?;
        let (field, wire) = ((tag >> 3) as u32, (tag & 7) as u8);
        let start = pos;
        let end = match wire {
            0 => {
                get_varint(msg, &mut pos)?;
                pos
            }
            1 => pos + 8,
            2 => {
                let len = get_varint(msg, &mut pos)? as usize;
                pos.checked_add(len).ok_or("protobuf: length overflows")?
            }
            5 => pos + 4,
            w => return Err(format!("protobuf: unsupported wire type {w}")),
        };
        if end > msg.len() {
            return Err("protobuf: truncated field".into());
        }
        let payload = if wire == 2 { msg.slice(pos..end) } else { msg.slice(start..end) };
        out.push((field, wire, payload));
        pos = end;
    }
    Ok(out)
}

/// The value of the first key in a `RangeResponse` (`kvs` = field 2, a
/// `KeyValue` whose `value` is field 5), or `None` when it has no keys.
fn range_value(reply: &Bytes) -> Result<Option<Bytes>, String> {
    for (field, wire, kv) in fields(reply)? {
        if field == 2 && wire == 2 {
            let value = fields(&kv)?.into_iter().find(|(f, w, _)| *f == 5 && *w == 2).map(|(_, _, v)| v);
            return Ok(Some(value.unwrap_or_default()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_put_request_as_protobuf() {
        let mut msg = Vec::new();
        put_bytes_field(&mut msg, 1, b"k1");
        put_bytes_field(&mut msg, 2, &[7u8; 200]);
        assert_eq!(&msg[..4], &[0x0a, 2, b'k', b'1']);
        // 200 needs a two-byte varint: 0xc8 0x01.
        assert_eq!(&msg[4..7], &[0x12, 0xc8, 0x01]);
        assert_eq!(msg.len(), 4 + 3 + 200);
    }

    #[test]
    fn decodes_the_value_of_a_range_response() {
        let mut kv = Vec::new();
        put_bytes_field(&mut kv, 1, b"key");
        put_varint(&mut kv, 2 << 3);
        put_varint(&mut kv, 300);
        put_bytes_field(&mut kv, 5, b"value");
        let mut header = Vec::new();
        put_varint(&mut header, 3 << 3);
        put_varint(&mut header, 12345);
        let mut reply = Vec::new();
        put_bytes_field(&mut reply, 1, &header);
        put_bytes_field(&mut reply, 2, &kv);
        put_varint(&mut reply, 4 << 3);
        put_varint(&mut reply, 1);
        assert_eq!(range_value(&Bytes::from(reply)).unwrap().as_deref(), Some(&b"value"[..]));
        let mut empty = Vec::new();
        put_bytes_field(&mut empty, 1, &header);
        assert_eq!(range_value(&Bytes::from(empty)).unwrap(), None);
    }

    #[test]
    fn unframes_a_grpc_message_and_rejects_short_ones() {
        let framed = Bytes::from_static(&[0, 0, 0, 0, 2, 9, 9]);
        assert_eq!(&unframe(framed).unwrap()[..], &[9, 9]);
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 3, 9])).is_err());
        assert!(unframe(Bytes::from_static(&[0, 0])).is_err());
    }
}
